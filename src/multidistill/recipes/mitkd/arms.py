"""The two arms (the multi-task teacher's, the plain encoder's) in one output folder: the other arm's finished
fine-tunes, the settings the two arms' stages differ in (and the summary's note on them), and an arm's summary
row."""

from __future__ import annotations

import json
import re
from pathlib import Path

from multidistill.evaluation.metrics import average_score
from multidistill.recipes.common import TEACHER_REF, read_metrics
from multidistill.recipes.mitkd.config import MITKDRecipe
from multidistill.recipes.mitkd.plan import finetune_data
from multidistill.recipes.stages import DEFAULTS_KEY, STAGE_MANIFEST, portable, without_defaults
from multidistill.recipes.summary import count_parameters
from multidistill.training.loop import BEST_MODEL
from multidistill.training.run_settings import flatten

ARMS = {"mitkd": "MITKD student (multi-task teacher)", "plain": "plain-teacher student (pretrained encoder)"}


def finished_arm(root: Path, arm: str, recipe: MITKDRecipe) -> dict[str, list[Path]] | None:
    """The other arm's fine-tune folders when all of them finished earlier in this output folder, else None."""
    names = [ref.name for ref in finetune_data(recipe).tasks]
    folders = {name: [root / f"finetune-{arm}-{name}-seed-{seed}" for seed in recipe.finetune.seeds]
               for name in names}
    done = all((f / STAGE_MANIFEST).is_file() for runs in folders.values() for f in runs)
    return folders if done else None


# A stage's recorded settings -> the recipe keys they come from (general-<arm>, then finetune-<arm>-...).
GENERAL_KEYS = (("model.", "student.model."), ("train.", "student.train."), ("data.tasks.0.", "corpus."))
FINETUNE_KEYS = (("model.", "student.model."), ("train.", "finetune.train."), ("objective.", "finetune.objective."),
                 ("data.tasks", "finetune.tasks"))


def _settings(folder: Path, root: Path, ignore: tuple[str, ...], teacher_refs: tuple[str, ...]) -> tuple[dict, bool]:
    """A finished stage's settings as dotted keys, defaults included (they are recorded apart), paths inside the run
    folder written as `@run/...`, the first online teacher as `@teacher` in ``teacher_refs`` (the keys the recipe
    gives as `@teacher`: each arm resolves them to its own teacher); and whether every section recorded its defaults
    (stages made before they were did not)."""
    config = json.loads((folder / STAGE_MANIFEST).read_text())["config"]
    flat, complete = {}, True
    for section, value in config.items():
        if isinstance(value, dict):
            complete = complete and DEFAULTS_KEY in value
            flat.update({f"{section}.{key}": v for key, v in (value.get(DEFAULTS_KEY) or {}).items()})
            flat.update(flatten(without_defaults(value), f"{section}."))
        else:
            flat[section] = value
    teachers = config.get("online_teachers") or [None]
    flat = {key: TEACHER_REF if key in teacher_refs and value == teachers[0] else value
            for key, value in flat.items() if value != {} and key not in ignore}
    return portable(flat, root), complete


def _recipe_key(key: str, names: tuple[tuple[str, str], ...], corpus: str) -> str:
    """A stage's settings key as the recipe key it comes from (``names``: stage prefix -> recipe prefix)."""
    key = re.sub(rf"^objective\.tasks\.{re.escape(corpus)}\b", "student.objective", key)
    return next((to + key[len(start):] for start, to in names if key.startswith(start)), key)


def arm_differences(root: Path, recipe: MITKDRecipe, this: str, other: str,
                    arms: dict[str, dict[str, list[Path]]]) -> dict[str, list]:
    """The settings (recipe key -> [the other arm's, this run's]) that the other arm's finished stages were made with
    and this run's were not: the general distillation's (but its teachers: each arm's own) and each fine-tune's (but
    its start: each arm's general student)."""
    found: dict[str, list] = {}
    model = recipe.student.model
    refs = tuple(f"model.{key}" for key in ("name_or_path", "tokenizer") if getattr(model, key) == TEACHER_REF)

    def compare(mine: Path, theirs: Path, ignore: tuple[str, ...], names: tuple[tuple[str, str], ...]) -> None:
        (a, a_complete), (b, b_complete) = (_settings(folder, root, ignore, refs) for folder in (mine, theirs))
        keys = set(a) | set(b) if a_complete and b_complete else set(a) & set(b)  # unrecorded defaults: unknown
        for key in sorted(keys):
            if a.get(key) != b.get(key):
                found.setdefault(_recipe_key(key, names, recipe.corpus.name), [b.get(key), a.get(key)])

    compare(root / f"general-{this}", root / f"general-{other}", ("online_teachers",), GENERAL_KEYS)
    for task, folders in arms[this].items():
        for mine, theirs in zip(folders, arms[other][task], strict=True):
            compare(mine, theirs, ("model.name_or_path",), FINETUNE_KEYS)
    return found


def differences_note(this: str, other: str, found: dict[str, list]) -> str:
    """The summary's note on a row made with other settings than this run's."""
    def value(setting: object) -> str:
        return "unset" if setting is None else repr(setting)

    shown = [f"{key} {value(theirs)} there, {value(mine)} here" for key, (theirs, mine) in list(found.items())[:8]]
    more = f" and {len(found) - 8} more" if len(found) > 8 else ""
    return (f"the {ARMS[other]} row comes from stages made with other settings than this run's {ARMS[this]} row "
            f"({'; '.join(shown)}{more}): the two rows differ in more than their teachers; to compare them, remove "
            f"general-{other} and finetune-{other}-* and run that arm again with these settings")


def finetune_row(folders: dict[str, list[Path]]) -> dict:
    """One summary row: per task, each metric's mean over the seeds' runs. Each task has its own fine-tuned
    model, so the row stands for one model per task: ``params`` sums theirs (a seed's run of each task), and
    ``stages`` names every run its scores come from (as MKD's per-task rows)."""
    tasks, main = {}, {}
    for task, runs in folders.items():
        metrics = [read_metrics(folder) for folder in runs]
        tasks[task] = {key: sum(m["tasks"][task][key] for m in metrics) / len(metrics)
                       for key in metrics[0]["tasks"][task]}
        main[task] = sum(m["main"][task] for m in metrics) / len(metrics)
    params = sum(count_parameters(runs[0] / BEST_MODEL) for runs in folders.values())
    return {"metrics": {"tasks": tasks, "main": main, "average": average_score(main)}, "params": params,
            "models": len(folders), "stages": [folder.name for runs in folders.values() for folder in runs],
            "seeds": len(next(iter(folders.values())))}
