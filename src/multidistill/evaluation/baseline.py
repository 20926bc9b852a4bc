"""Trivial baselines: what a predictor that ignores its input scores, so retention can be read against it.

A classification task's baseline always answers the training split's majority class; a regression task's always
answers the training mean. Both are scored on the dev labels with the task's own metrics
(`evaluation.metrics`), so on MRPC "always paraphrase" earns its real F1 (0.81 on the sample's dev), and a constant
score has no correlation (Pearson/Spearman undefined, reported as 0). A student whose score a constant also
reaches has kept nothing of its teacher on that task: `at_baseline` flags it and `retention_above_baseline`
measures what is kept beyond it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from multidistill.data import label_sets
from multidistill.data.tasks import Task
from multidistill.evaluation.metrics import average_score, compute_metrics, labelled

BASELINE_MARGIN = 0.01
"""A task's score within this of its trivial baseline (main metric, absolute) is flagged: not retention."""
AT_BASELINE_MARK = "†"
"""Marks such a score in tables."""


def _labelled(labels: np.ndarray) -> np.ndarray:
    return labels[labelled(labels)]


@dataclass(frozen=True)
class TrivialBaseline:
    """One task's constant predictor and its dev scores."""

    predictor: str
    metrics: dict[str, float]
    main: float


def trivial_baseline(task: Task, train_labels: Iterable, eval_labels: Iterable) -> TrivialBaseline:
    """Score ``task``'s trivial predictor, fitted on ``train_labels``, on ``eval_labels`` with the task's metrics.

    Classification: the most frequent training class (the lowest index on a tie). Multilabel: the most frequent
    training label set. Regression: the training mean.
    """
    regression = task.type == "regression"
    dtype = np.float64 if regression else np.int64
    train = _labelled(np.asarray(list(train_labels), dtype=dtype))
    gold = _labelled(np.asarray(list(eval_labels), dtype=dtype))
    if not len(train) or not len(gold):
        raise ValueError(f"task '{task.name}': a trivial baseline needs labelled training and dev rows")
    if regression:
        value = float(train.mean())
        predictions = np.full(len(gold), value)
        predictor = f"constant {value:.3g} (training mean; no correlation)"
    elif task.is_multilabel:  # the most frequent training label set (the smallest mask on a tie), as logits
        sets, counts = np.unique(train, return_counts=True)
        majority = int(sets[counts.argmax()])
        predictions = np.where(label_sets.decode(np.full(len(gold), majority), task.num_labels), 1.0, -1.0)
        names = label_sets.names(majority, task.labels)
        predictor = (f"always {{{', '.join(names)}}} (most frequent label set, {counts.max() / len(train):.0%} of "
                     "training)")
    else:
        counts = np.bincount(train, minlength=task.num_labels)
        majority = int(counts.argmax())
        predictions = np.full(len(gold), majority)
        name = task.labels[majority] if majority < len(task.labels) else str(majority)
        predictor = f"always '{name}' (majority class, {counts[majority] / len(train):.0%} of training)"
    metrics = compute_metrics(task.metrics, predictions, gold, task.type)
    return TrivialBaseline(predictor, metrics, metrics[task.main_metric])


def store_baselines(store, tasks: Iterable[str], eval_split: str) -> dict[str, TrivialBaseline]:
    """`trivial_baseline` of each of ``tasks`` from an example store (`data.store.ExampleStore`): fitted on the
    training rows it holds (a run's capped subset), scored on its ``eval_split`` rows. A task without labelled
    rows on either side (a transfer set of teacher signals only) has none."""
    out = {}
    for name in tasks:
        try:
            out[name] = trivial_baseline(store.tasks[name], store.examples(name, "train")["label"],
                                         store.examples(name, eval_split)["label"])
        except ValueError:
            continue
    return out


def at_baseline(score: float | None, baseline: float | None, margin: float = BASELINE_MARGIN) -> bool:
    """True when ``score`` is no better than ``baseline`` + ``margin``: a constant predictor does as well."""
    return score is not None and baseline is not None and score <= baseline + margin + 1e-12


def retention_above_baseline(scores: Mapping[str, float | None], reference: Mapping[str, float | None],
                             baseline: Mapping[str, float | None], tasks: Iterable[str]) -> float | None:
    """(score - baseline) / (reference - baseline), each the mean over the ``tasks`` all three have.

    1 is the reference's quality, 0 a constant predictor's. None when they share no task or the reference is no
    better than the baseline (the ratio would mean nothing).
    """
    shared = [t for t in dict.fromkeys(tasks)
              if all(side.get(t) is not None for side in (scores, reference, baseline))]
    if not shared:
        return None
    score, ref, base = (average_score({t: float(side[t]) for t in shared})  # type: ignore[arg-type]
                        for side in (scores, reference, baseline))
    if not ref - base > 0:
        return None
    return (score - base) / (ref - base)
