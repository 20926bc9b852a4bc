"""Meta-KD (Pan et al., arXiv 2012.01266) as stages over the shared parts.

prototypes (t_i: a frozen encoder over every domain's training rows, a per-example column) -> meta-teacher (the
task model with a domain branch: hard + gamma1 domain_adversarial, each example weighted by t_i) -> per target
domain d, on d's rows only: signals-d (the meta-teacher's probabilities) -> weights-d (lambda_i) ->
intermediate-d (stage A: lambda-weighted hidden_mse + attention_mse + gamma2 transferable_mse, the meta-teacher
online) -> student-d (stage B: soft_ce from A's checkpoint) -> the baselines asked for -> report (every model on
the report split, per domain) -> summary.

With ``data.fraction`` < 1 the target domain keeps that seeded fraction of its training rows in every stage that
reads it (the other domains keep theirs), so the stages over all domains are made once per target
(`prototypes-d`, `meta-teacher-d`); at 1 they are shared by every target.

Modules: `config` (the recipe's YAML schema), `plan` (data views and the checks before any stage), `stages` (each
stage's work), `report` (per-domain scores and summary rows), `recipe` (the order; registers `recipe: metakd`).
"""

from __future__ import annotations

from multidistill.recipes.metakd.config import (
    BASELINES,
    PREDICTION_MIN_STEPS,
    MetaKDData,
    MetaKDRecipe,
    MetaStudentSection,
    MetaTeacherSection,
    PrototypeSection,
)
from multidistill.recipes.metakd.plan import Plan, check_inputs, target_data, union_data
from multidistill.recipes.metakd.recipe import run_metakd
from multidistill.recipes.metakd.report import ROWS, SCORES, domain_scores, summary_rows
from multidistill.recipes.metakd.stages import COLUMNS, EXPERTISE_WEIGHT, PROTOTYPE_SCORE, baseline_train, passes

__all__ = ["BASELINES", "COLUMNS", "EXPERTISE_WEIGHT", "PREDICTION_MIN_STEPS", "PROTOTYPE_SCORE", "ROWS", "SCORES",
           "MetaKDData", "MetaKDRecipe", "MetaStudentSection", "MetaTeacherSection", "Plan", "PrototypeSection",
           "baseline_train", "check_inputs", "domain_scores", "passes", "run_metakd", "summary_rows", "target_data",
           "union_data"]
