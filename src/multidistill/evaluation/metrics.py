"""GLUE metrics (and multilabel ones) on top of scikit-learn and scipy, plus the per-task main score and the
average."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from multidistill.data import label_sets
from multidistill.errors import ConfigError
from multidistill.evaluation.thresholds import shift


def _classes(predictions: np.ndarray) -> np.ndarray:
    return predictions.argmax(-1) if predictions.ndim == 2 else predictions


def _scores(predictions: np.ndarray) -> np.ndarray:
    return predictions.reshape(-1).astype(np.float64)


def _correlation(fn: Callable, predictions: np.ndarray, labels: np.ndarray) -> float:
    scores, gold = _scores(predictions), labels.astype(np.float64)
    # A constant prediction has no defined correlation; report 0 instead of NaN so averages stay usable.
    if np.ptp(scores) == 0 or np.ptp(gold) == 0:
        return 0.0
    return float(fn(scores, gold)[0])


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda p, y: float(accuracy_score(y, _classes(p))),
    # Binary F1 of the positive class (index 1), as GLUE reports it for MRPC and QQP.
    "f1": lambda p, y: float(f1_score(y, _classes(p), pos_label=1, average="binary", zero_division=0)),
    # Over the classes the gold rows hold: scikit-learn's default adds the classes a model predicts, so two models
    # were averaged over other classes (a class absent from dev counted only for the model that predicted it).
    "macro_f1": lambda p, y: float(f1_score(y, _classes(p), labels=np.unique(y), average="macro", zero_division=0)),
    "matthews": lambda p, y: float(matthews_corrcoef(y, _classes(p))),
    "pearson": lambda p, y: _correlation(pearsonr, p, y),
    "spearman": lambda p, y: _correlation(spearmanr, p, y),
}


def _label_sets(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multilabel logits (N, C) and gold bit masks (N,) -> (predicted, gold) 0/1 matrices: a label is predicted
    when its logit is over 0 (its probability over 0.5; other thresholds are applied by `thresholds.shift`)."""
    predictions = predictions.reshape(len(labels), -1)
    return (predictions > 0).astype(np.int64), label_sets.decode(labels, predictions.shape[1])


def _macro_over_gold_labels(predicted: np.ndarray, gold: np.ndarray) -> float:
    present = np.flatnonzero(gold.any(0))  # as for classes: the labels the scored rows hold, the same for all models
    if not len(present):
        return 0.0
    return float(f1_score(gold, predicted, labels=present, average="macro", zero_division=0))


def _samples_f1(predicted: np.ndarray, gold: np.ndarray) -> float:
    hits = (predicted & gold).sum(1)
    denominator = predicted.sum(1) + gold.sum(1)  # 2TP + FP + FN
    # A row with no gold label and none predicted is right: F1 1 (scikit-learn would need zero_division=1 here).
    return float(np.mean(np.where(denominator > 0, 2 * hits / np.maximum(denominator, 1), 1.0)))


# Multilabel rows: logits (N, C) against gold bit masks (`data.label_sets`).
MULTILABEL_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "micro_f1": lambda p, y: float(f1_score(*_label_sets(p, y)[::-1], average="micro", zero_division=0)),
    "macro_f1": lambda p, y: _macro_over_gold_labels(*_label_sets(p, y)),
    "samples_f1": lambda p, y: _samples_f1(*_label_sets(p, y)),
    "exact_match": lambda p, y: float(np.mean((np.equal(*_label_sets(p, y))).all(1))),
}


def same_predictions(task_type: str, a: np.ndarray, b: np.ndarray,
                     thresholds: tuple[float, ...] | None = None) -> np.ndarray:
    """Per row, whether two models' logits (N, C) predict the same: the same class, or for multilabel the same
    set (each label on the same side of its threshold: 0.5 without ``thresholds``)."""
    a, b = np.asarray(a), np.asarray(b)
    if task_type == "multilabel":
        return ((shift(a, thresholds) > 0) == (shift(b, thresholds) > 0)).all(-1)
    return a.argmax(-1) == b.argmax(-1)


def labelled(labels: np.ndarray) -> np.ndarray:
    """Which rows carry a gold label: unlabelled ones hold -1 (class indices) or NaN (scores, where -1 is one)."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "f":
        return ~np.isnan(labels)
    return labels >= 0 if labels.dtype.kind in "iu" else np.ones(labels.shape, dtype=bool)


def compute_metrics(names: list[str], predictions: np.ndarray, labels: np.ndarray,
                    task_type: str | None = None, thresholds: tuple[float, ...] | None = None) -> dict[str, float]:
    """Compute each named metric over the labelled rows (`labelled`): a row without a label is neither right
    nor wrong. ``predictions`` are logits/probabilities (N, C) or scores (N,); for ``task_type`` multilabel, logits
    (N, C) against bit masks (N,) (`MULTILABEL_METRICS`), a label predicted where its probability is over its
    threshold (``thresholds``, one per label; default 0.5). With no labelled row at all every metric is NaN
    (nothing to score; `data.prepare` refuses such an eval split up front)."""
    table = MULTILABEL_METRICS if task_type == "multilabel" else METRICS
    if thresholds is not None and task_type != "multilabel":
        raise ValueError(f"decision thresholds are for multilabel tasks, not {task_type}")
    if thresholds is not None:
        predictions = shift(predictions, thresholds)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ConfigError(f"unknown {'multilabel ' * (table is MULTILABEL_METRICS)}metric(s) {unknown}; known: "
                          f"{sorted(table)}")
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    keep = labelled(labels)
    if not keep.any():
        return {name: float("nan") for name in names}
    if not keep.all():
        predictions, labels = predictions[keep], labels[keep]
    return {name: table[name](predictions, labels) for name in names}


def average_score(main_scores: Mapping[str, float]) -> float:
    """Unweighted mean of the tasks' main scores (the GLUE-style average)."""
    return float(np.mean(list(main_scores.values()))) if main_scores else float("nan")
