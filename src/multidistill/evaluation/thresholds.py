"""Per-label decision thresholds of multilabel heads: chosen on the selection split after training
(``train.thresholds: per_label``), saved in the model folder, and read wherever a saved model decides a set.

Without saved thresholds a label is predicted where its probability is over 0.5 (its logit over 0). Every decision
in the package compares logits with 0, so a threshold t is applied by subtracting its logit, log(t / (1 - t)),
from that label's logits (`shift`): metrics, agreement checks and predictions then need no other change.
"""

from __future__ import annotations

import math
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
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    keep = labels >= 0
    probabilities = 1 / (1 + np.exp(-logits[keep]))
    gold = label_sets.decode(labels[keep], logits.shape[1]).astype(bool)
    grid = np.asarray(GRID)
    order = np.lexsort((grid, np.abs(grid - 0.5)))  # nearest 0.5 first, then the lower: argmax keeps the first
    chosen = []
    for j in range(logits.shape[1]):
        if not gold[:, j].any():
            chosen.append(0.5)
            continue
        predicted = probabilities[:, j, None] > grid[order]  # (rows, thresholds)
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
    return np.asarray(logits) - offsets(thresholds).astype(np.asarray(logits).dtype)


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


def save_thresholds(model_dir: str | Path, tasks: Mapping[str, Task], thresholds: Thresholds) -> None:
    """Set a model folder's saved thresholds to ``thresholds`` (empty: none), in one atomic write of its config.
    With thresholds the folder's format version becomes `THRESHOLDS_FORMAT_VERSION`, which older versions refuse;
    without, it goes back to the version its heads need."""
    from multidistill.models.multitask import (
        MODEL_CONFIG_FILE,
        THRESHOLDS_FORMAT_VERSION,
        format_version,
        read_model_config,
    )
    from multidistill.utils.atomic import write_json

    folder = Path(model_dir)
    config = read_model_config(folder)
    config.pop(KEY, None)
    config["format_version"] = format_version((config.get("backbone") or {}).get("head_activation"))
    if thresholds:
        config["format_version"] = THRESHOLDS_FORMAT_VERSION
        config[KEY] = {name: by_label(tasks[name], values) for name, values in thresholds.items()}
    write_json(folder / MODEL_CONFIG_FILE, config)


def describe(task: Task, thresholds: Sequence[float] | None) -> str:
    """One line for cards and notes: each label's threshold, or "0.5 for every label"."""
    if thresholds is None:
        return "0.5 for every label"
    return ", ".join(f"{label} {t:g}" for label, t in by_label(task, thresholds).items())


def is_default(thresholds: Sequence[float]) -> bool:
    return all(math.isclose(t, 0.5) for t in thresholds)
