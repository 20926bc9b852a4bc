"""Meta-KD's report stage and summary: every model scored per domain on the report split, then one summary row
per arm (mean and spread over the student seeds)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from multidistill.config import DataConfig, TaskRef
from multidistill.data.collate import pad_id
from multidistill.data.prepare import open_example_store, prepare_data
from multidistill.evaluation.baseline import TrivialBaseline, store_baselines
from multidistill.evaluation.evaluate import evaluate
from multidistill.evaluation.metrics import average_score
from multidistill.models.backbone import load_tokenizer
from multidistill.models.loading import load_model
from multidistill.recipes.common import data_fingerprints
from multidistill.recipes.metakd.config import MetaKDRecipe
from multidistill.recipes.metakd.plan import Plan, target_data, task_view
from multidistill.recipes.metakd.stages import Model
from multidistill.recipes.stages import StageRunner, stop_if_checking
from multidistill.recipes.summary import count_parameters
from multidistill.training.device import accelerator_for
from multidistill.utils.atomic import write_json

SCORES = "scores.json"  # the report stage's per-model, per-domain scores


@dataclass(frozen=True)
class Scored:
    """One model the report scores: its summary row and the domains it is scored on."""

    row: str
    domains: tuple[str, ...]
    model: Model

    @property
    def key(self) -> str:
        return f"{self.model.name}@{','.join(self.domains)}"


def domain_scores(model_folder: Path, data: DataConfig, batch_size: int) -> dict[str, dict[str, float]]:
    """A saved model's metrics per domain of ``data``'s one task, on ``data.eval_split`` (the report's scoring)."""
    device = accelerator_for("no").device
    model = load_model(model_folder).to(device)
    tokenizer = load_tokenizer(str(model_folder))
    prepared = prepare_data(data, tokenizer, model.max_length or model.DEFAULT_INFERENCE_LENGTH,
                            max_examples_per_task=None, seed=data.subset_seed, need_train=False)
    result = evaluate(model, prepared.tasks, prepared.eval_sets, batch_size=batch_size,
                      pad_token_id=pad_id(tokenizer), device=device)
    return result.domains[data.tasks[0].name]


def report_stage(runner: StageRunner, recipe: MetaKDRecipe, plan: Plan, scored: list[Scored]) -> dict:
    """Every model's per-domain metrics on the report split (the target's rows for a student); returns them."""
    payload = {"split": plan.report_split, "models": {s.key: str(s.model.folder) for s in scored}}

    def work(folder: Path, resume: bool) -> dict:
        out = {item.key: domain_scores(item.model.folder, task_view(recipe, TaskRef(
            name=plan.task, domains_include=list(item.domains)), plan.report_split), recipe.signals.batch_size)
            for item in scored}
        write_json(folder / SCORES, out)
        return {}

    # Not "report": that is where `multidistill report RUN_DIR` writes report.md by default.
    view = task_view(recipe, TaskRef(name=plan.task, domains_include=list(plan.targets)), plan.report_split)
    folder = runner.run("scores", payload, {s.key: s.model.fingerprint for s in scored}, work, derived=True,
                        data=data_fingerprints(view, (plan.report_split,), None, run_dir=runner.root))
    stop_if_checking()  # every stage is checked: the rest reads what they wrote
    return json.loads((folder / SCORES).read_text())


def target_baselines(recipe: MetaKDRecipe, plan: Plan) -> dict[str, TrivialBaseline]:
    """Each target's constant predictor, fitted on the target's training rows (at data.fraction: what its student
    trains on) and scored on its report-split rows, keyed by target (the summary's columns)."""
    out = {}
    for target in plan.targets:
        data = target_data(recipe, target, plan.report_split)
        store = open_example_store(data, max_examples_per_task=None, seed=recipe.subset_seed)
        found = store_baselines(store, [plan.task], plan.report_split)
        if plan.task in found:  # none where the target has no labelled rows on either side
            out[target] = found[plan.task]
    return out


def summary_rows(plan: Plan, scored: list[Scored], scores: dict, main_metric: str) -> dict[str, dict]:
    """One row per arm: each target's main metric (mean over the row's models), its spread and the seeds."""
    values: dict[str, dict[str, list[float]]] = {}
    params: dict[str, int] = {}
    for item in scored:
        for domain in item.domains:
            values.setdefault(item.row, {}).setdefault(domain, []).append(scores[item.key][domain][main_metric])
        params.setdefault(item.row, count_parameters(item.model.folder))
    rows = {}
    for row, per_domain in values.items():
        main = {d: statistics.fmean(per_domain[d]) for d in plan.targets if d in per_domain}
        spread = {d: statistics.stdev(per_domain[d]) if len(per_domain[d]) > 1 else 0.0 for d in main}
        rows[row] = {"metrics": {"main": main, "average": average_score(main), "spread": spread,
                                 "runs": {d: per_domain[d] for d in main}},
                     "params": params[row], "seeds": max(len(v) for v in per_domain.values())}
    return rows


ROWS = {"meta": "meta-teacher", "single": "single-domain teachers", "mixed": "mixed-domain teacher",
        "without": "meta-teacher without target", "student": "Meta-KD student", "nokd": "no-KD student",
        "single_kd": "single-domain KD student", "mixed_kd": "mixed-domain KD student",
        "without_kd": "Meta-KD student (teacher without target)"}
