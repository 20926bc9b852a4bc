"""Per-label decision thresholds of multilabel heads: chosen on the selection split after training
(``train.thresholds: per_label``), saved in the model folder, and read wherever a saved model decides a set.

Without saved thresholds a label is predicted where its probability is over 0.5 (its logit over 0). Every decision
in the package compares logits with 0, so a threshold t is applied by subtracting its logit, log(t / (1 - t)),
from that label's logits (`shift`): metrics, agreement checks and predictions then need no other change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from multidistill.data import label_sets
from multidistill.data.tasks import Task
from multidistill.errors import ModelError

# The thresholds `choose_thresholds` tries for each label: 0.05, 0.10, ..., 0.95.
GRID = tuple(round(0.05 * step, 2) for step in range(1, 20))
KEY = "thresholds"  # in multidistill_model.json: task -> {label: threshold}; in an export's record the same

Thresholds = dict[str, tuple[float, ...]]  # task -> one threshold per label, in the task's label order


def choose_thresholds(logits: np.ndarray, labels: np.ndarray) -> tuple[float, ...]:
    """For each label, the threshold of `GRID` with the highest F1 of that label on the labelled rows (logits
    (N, C) against gold bit masks (N,)). Ties go to the threshold nearest 0.5 (then the lower one); a label no
    row holds keeps 0.5 (its F1 is 0 at every threshold)."""
    labels = np.asarray(labels)
    keep = labels >= 0
    logits = np.asarray(logits)[keep]
    gold = label_sets.decode(labels[keep], logits.shape[1]).astype(bool)
    steps = np.arange(1, len(GRID) + 1)  # GRID[i] = 0.05 x steps[i]; whole numbers, so the ties are exact
    order = np.lexsort((steps, np.abs(steps - 10)))  # nearest 0.5 first, then the lower: argmax keeps the first
    grid = np.asarray(GRID)
    chosen = []
    for j in range(logits.shape[1]):
        if not gold[:, j].any():
            chosen.append(0.5)
            continue
        # (rows, thresholds), decided as everything else decides (`shift`)
        predicted = np.stack([shift(logits[:, j:j + 1], (t,))[:, 0] > 0 for t in grid[order]], axis=1)
        hits = (predicted & gold[:, j, None]).sum(0)
        f1 = 2 * hits / (predicted.sum(0) + gold[:, j].sum())
        chosen.append(float(grid[order][int(np.argmax(f1))]))
    return tuple(chosen)


def offsets(thresholds: Sequence[float]) -> np.ndarray:
    """Each threshold's logit: a label's probability is over t where its logit is over log(t / (1 - t))."""
    t = np.asarray(thresholds, dtype=np.float64)
    return np.log(t) - np.log1p(-t)


def shift(logits: np.ndarray, thresholds: Sequence[float] | None) -> np.ndarray:
    """``logits`` (N, C) with each label's threshold moved to 0 (unchanged without thresholds), so that "logit over
    0" decides as the thresholds do."""
    if thresholds is None:
        return logits
    # in float64 whatever the logits' type, so that every caller (metrics on float32 logits, a prediction record on
    # float64 ones, the choice itself) decides a value at the boundary alike
    return np.asarray(logits, dtype=np.float64) - offsets(thresholds)


def by_label(task: Task, thresholds: Sequence[float]) -> dict[str, float]:
    """A task's thresholds as saved: label -> threshold."""
    return dict(zip(task.labels, (float(t) for t in thresholds), strict=True))


def read_thresholds(config: Mapping, tasks: Mapping[str, Task], where: str) -> Thresholds:
    """The thresholds saved in a model's config (key `KEY`), checked against its ``tasks``; ``where`` names the
    file in errors. Missing key: none (every label at 0.5)."""
    saved = config.get(KEY)
    if saved is None:
        return {}
    if not isinstance(saved, dict):
        raise ModelError(f"{where}: key '{KEY}' must map task names to {{label: threshold}}")
    out: Thresholds = {}
    for name, values in saved.items():
        task = tasks.get(name)
        if task is None or not task.is_multilabel:
            raise ModelError(f"{where}: key '{KEY}.{name}': the model has no multilabel task {name!r}")
        if not isinstance(values, dict) or sorted(values) != sorted(task.labels):
            raise ModelError(f"{where}: key '{KEY}.{name}' must give one threshold for each of the task's labels "
                             f"{task.labels}")
        for label, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ModelError(f"{where}: key '{KEY}.{name}.{label}' must be a number between 0 and 1 "
                                 f"(exclusive), got {value!r}")
        out[name] = tuple(float(values[label]) for label in task.labels)
    return out


def saved_thresholds(model_dir: str | Path) -> Thresholds:
    """The decision thresholds saved in a model folder (none: every label at 0.5)."""
    from multidistill.models.multitask import MODEL_CONFIG_FILE, read_model_config

    folder = Path(model_dir)
    config = read_model_config(folder)
    tasks = {spec["name"]: Task.model_validate(spec) for spec in config["tasks"] if spec.get("type") == "multilabel"}
    return read_thresholds(config, tasks, str(folder / MODEL_CONFIG_FILE))


def saved_form(tasks: Mapping[str, Task], thresholds: Thresholds) -> dict[str, dict[str, float]] | None:
    """``thresholds`` as a model config holds them under `KEY` (None: no key)."""
    return {name: by_label(tasks[name], values) for name, values in thresholds.items()} or None


def _without_key(config: dict) -> dict:
    """``config`` with no thresholds and the format version its heads alone need (what `write_to` wrote)."""
    from multidistill.models.multitask import format_version

    config.pop(KEY, None)
    config["format_version"] = format_version((config.get("backbone") or {}).get("head_activation"))
    return config


def save_thresholds(model_dir: str | Path, tasks: Mapping[str, Task], thresholds: Thresholds) -> None:
    """Set a model folder's saved thresholds to ``thresholds`` (empty: none), in one atomic write of its config.
    With thresholds the folder's format version becomes `THRESHOLDS_FORMAT_VERSION`, which older versions refuse;
    without, it goes back to the version its heads need."""
    from multidistill.models.multitask import MODEL_CONFIG_FILE, THRESHOLDS_FORMAT_VERSION, read_model_config
    from multidistill.utils.atomic import write_json

    folder = Path(model_dir)
    config = _without_key(read_model_config(folder))
    if thresholds:
        config["format_version"] = THRESHOLDS_FORMAT_VERSION
        config[KEY] = saved_form(tasks, thresholds)
    write_json(folder / MODEL_CONFIG_FILE, config)


def describe(chosen: Mapping[str, float]) -> str:
    """One line for notes, cards and tables: each label's threshold (label -> threshold, as saved)."""
    return ", ".join(f"{label} {t:g}" for label, t in chosen.items())


def choose_for(model, tasks: Mapping[str, Task], eval_sets: Mapping, *, batch_size: int, pad_token_id: int,
               device, autocast=None) -> Thresholds:
    """`choose_thresholds` for each multilabel task of ``tasks`` that has rows in ``eval_sets`` (task -> tokenised
    dataset), from ``model``'s logits on them."""
    from multidistill.evaluation.evaluate import predict  # evaluate imports this module

    return {name: choose_thresholds(predict(model, task, eval_sets[name], batch_size=batch_size,
                                            pad_token_id=pad_token_id, device=device, autocast=autocast),
                                    np.asarray(eval_sets[name]["label"]))
            for name, task in tasks.items() if task.is_multilabel and name in eval_sets}


def without_thresholds(config_path: Path) -> bytes | None:
    """The bytes a model config file had before `save_thresholds` added thresholds to it (None: it holds none, or
    is unreadable): what a teacher's fingerprint hashes, since thresholds change no weight and no logit."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or KEY not in config:
        return None
    return (json.dumps(_without_key(config), indent=2) + "\n").encode()  # as `write_to` and `write_json` write it
