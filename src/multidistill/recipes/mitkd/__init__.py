"""MITKD (ERNIE 3.0 Tiny, arXiv 2301.03416) as stages over the shared parts.

teacher-seed-<s> (multi-task teachers, as in MT-DNN) -> general-mitkd (their encoders distilled task-agnostically
into a small general student on an unlabelled corpus, a text task; relation_kl by default; K teachers: the mean
of the per-teacher losses) -> signals (optional: the teachers' soft targets, when the fine-tune objective reads
them) -> finetune-mitkd-<task>-seed-<s> (the general student fine-tuned on each task alone) -> summary.

``baseline.plain_teacher: true`` runs the same general and fine-tune stages from the plain pretrained encoder
the teachers started from (``general-plain``, ``finetune-plain-...``), so both arms share one output folder,
the teachers and the soft targets, and never each other's stages. The summary shows every arm that has
finished there.

Modules: `config` (the recipe's YAML schema), `plan` (data views, each arm's teachers and the checks before any
stage), `stages` (the general distillation and the fine-tunes), `arms` (the other arm's finished stages, the
settings the arms differ in, an arm's summary row), `recipe` (the order; registers `recipe: mitkd`).
"""

from __future__ import annotations

from multidistill.recipes.mitkd.arms import (
    ARMS,
    FINETUNE_KEYS,
    GENERAL_KEYS,
    arm_differences,
    differences_note,
    finetune_row,
    finished_arm,
)
from multidistill.recipes.mitkd.config import GeneralStudentSection, MITKDBaseline, MITKDFinetune, MITKDRecipe
from multidistill.recipes.mitkd.plan import (
    arm_teachers,
    check_inputs,
    corpus_data,
    finetune_data,
    general_objective,
    note_unread_settings,
    plain_encoder,
)
from multidistill.recipes.mitkd.recipe import run_mitkd
from multidistill.recipes.mitkd.stages import finetune_stages, general_stage

__all__ = ["ARMS", "FINETUNE_KEYS", "GENERAL_KEYS", "GeneralStudentSection", "MITKDBaseline", "MITKDFinetune",
           "MITKDRecipe", "arm_differences", "arm_teachers", "check_inputs", "corpus_data", "differences_note",
           "finetune_data", "finetune_row", "finetune_stages", "finished_arm", "general_objective", "general_stage",
           "note_unread_settings", "plain_encoder", "run_mitkd"]
