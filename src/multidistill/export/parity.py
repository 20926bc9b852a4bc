"""The parity check of an ONNX export: PyTorch against each exported graph on real dev rows.

fp32 graphs must match PyTorch's logits within a tolerance; the int8 graph's main metric must not drop by more
than a tolerance or its own sampling error on those rows (`allowed_drop`), with agreement recorded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from multidistill.config import DataConfig
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError
from multidistill.evaluation.metrics import compute_metrics, same_predictions
from multidistill.models.bilstm import BiLSTMModel
from multidistill.models.multitask import MultiTaskModel


def parity_sets(model: MultiTaskModel | BiLSTMModel, tokenizer, parity_data: DataConfig,
                 parity_tasks: list[str] | None, parity_examples: int | None) -> dict[str, Any]:
    """Each checked task's tokenised eval rows (the first ``parity_examples``), read with the model's own specs."""
    from multidistill.data.prepare import prepare_data

    names = list(parity_tasks) if parity_tasks else parity_data.task_names
    missing = [name for name in names if name not in model.tasks]
    if missing:
        raise ConfigError(f"parity check: the model has no head for {missing}; it has {list(model.tasks)}")
    # The model carries its task specs (label order included), so the check reads the data it was built for.
    data = DataConfig(tasks=names, data_root=parity_data.data_root, cache_dir=parity_data.cache_dir,
                      eval_split=parity_data.eval_split, task_specs=[model.tasks[name] for name in names])
    max_length = model.inference_length
    model.check_max_length(max_length, "max_length")
    prepared = prepare_data(data, tokenizer, max_length, max_examples_per_task=None, seed=0, need_train=False)
    sets = {}
    for name, dataset in prepared.eval_sets.items():
        if parity_examples is not None and len(dataset) > parity_examples:
            dataset = dataset.select(range(parity_examples))
        sets[name] = dataset
    return sets


# The int8 gate's noise allowance: a drop is a failure only when it exceeds this many standard errors of the paired
# metric delta (one-sided, about a 2% false alarm per task when int8 is in truth no worse).
NOISE_Z = 2.0
BOOTSTRAP_ROUNDS = 200


def paired_delta_se(metric: str, expected: np.ndarray, got: np.ndarray, labels: np.ndarray,
                    rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0, task_type: str | None = None,
                    thresholds: tuple[float, ...] | None = None) -> float:
    """Standard error of ``metric(got) - metric(expected)`` on these rows, by a paired bootstrap.

    Both sides are scored on the same resampled rows, so the error reflects the rows where they differ: zero
    when every prediction agrees, about sqrt(flips)/rows for accuracy. Works for every metric (F1, Matthews,
    Pearson). Seeded, so the same numbers give the same gate.
    """
    rng = np.random.default_rng(seed)
    rows = len(labels)
    if rows < 2:
        return 0.0
    deltas = []
    for _ in range(rounds):
        pick = rng.integers(0, rows, rows)
        scores = [compute_metrics([metric], side[pick], labels[pick], task_type, thresholds)[metric]
                  for side in (expected, got)]
        deltas.append(scores[1] - scores[0])
    return float(np.std(deltas, ddof=1))


def compare_predictions(task: Task, expected: np.ndarray, got: np.ndarray, labels: np.ndarray,
                        thresholds: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Parity numbers of one task: max |difference|, prediction agreement (classification: the same class;
    multilabel: the same label set, at the model's ``thresholds``; None for regression), the main metric of both,
    its change (got - expected) and that change's paired standard error."""
    metric = task.main_metric
    finite = bool(np.isfinite(got).all())
    diff = float(np.abs(expected.astype(np.float64) - got.astype(np.float64)).max()) if finite else float("inf")
    agreement = float(np.mean(same_predictions(task.type, expected, got, thresholds))) if task.has_labels else None
    metric_torch = compute_metrics([metric], expected, labels, task.type, thresholds)[metric]
    metric_onnx = compute_metrics([metric], got, labels, task.type, thresholds)[metric] if finite else float("-inf")
    unchanged = agreement == 1.0 or diff == 0.0
    se = 0.0 if unchanged or not finite else paired_delta_se(metric, expected, got, np.asarray(labels),
                                                                      task_type=task.type, thresholds=thresholds)
    return {"examples": int(len(labels)), "metric": metric, "max_abs_diff": diff, "agreement": agreement,
            "metric_torch": metric_torch, "metric_onnx": metric_onnx, "metric_delta": metric_onnx - metric_torch,
            "metric_delta_se": se}


# Agreement and metrics are ratios of row counts: a result exactly at a tolerance (2 flips in 200 rows against a
# 0.01 drop) must pass, whatever the last bit of the float division says.
_COUNT_SLACK = 1e-9


def allowed_drop(numbers: dict, max_metric_drop: float) -> float:
    """The int8 gate: the largest main-metric drop that passes, max(``max_metric_drop``, NOISE_Z x paired SE).

    On a small dev set a few rows changing class move the metric by more than a fixed tolerance although int8
    is no worse in expectation (7 flips in 200 rows differ between CPUs with and without VNNI); the allowance
    grows with that sampling error and shrinks back to ``max_metric_drop`` on large sets or when nothing flips.
    """
    return max(max_metric_drop, NOISE_Z * float(numbers.get("metric_delta_se") or 0.0))


def parity_failures(precision: str, report: dict[str, dict], *, tolerance_fp32: float,
                    min_agreement_int8: float | None = None, max_metric_drop_int8: float) -> list[str]:
    """What in ``report`` (task -> `compare_predictions`) breaks the tolerances of ``precision``; NaN fails.

    fp32: max |logit difference| <= ``tolerance_fp32``. int8: main-metric drop <= `allowed_drop`; agreement is
    information unless ``min_agreement_int8`` is given. Each failure names the task and all its parity numbers.
    """
    failures = []
    for name, numbers in report.items():
        agreement = numbers.get("agreement")
        seen = (f"predictions agree on {agreement:.2%} of {numbers['examples']} rows, "
                if agreement is not None else f"{numbers['examples']} rows, ")
        seen += f"max |logit difference| {numbers.get('max_abs_diff', float('nan')):.3g}"
        if precision == "fp32":
            if not numbers["max_abs_diff"] <= tolerance_fp32:
                failures.append(f"{name} (fp32): max |logit difference| {numbers['max_abs_diff']:.3g} > "
                                f"tolerance {tolerance_fp32:g}")
            continue
        if min_agreement_int8 is not None and agreement is not None \
                and not agreement >= min_agreement_int8 - _COUNT_SLACK:
            failures.append(f"{name} ({precision}): predictions agree on {agreement:.2%} of "
                            f"{numbers['examples']} rows < {min_agreement_int8:.2%}")
        drop, allowed = -numbers["metric_delta"], allowed_drop(numbers, max_metric_drop_int8)
        if not drop <= allowed + _COUNT_SLACK:
            before, after = numbers["metric_torch"], numbers["metric_onnx"]
            se = float(numbers.get("metric_delta_se") or 0.0)
            failures.append(f"{name} ({precision}): {numbers['metric']} drops by {drop:.4f} ({before:.4f} -> "
                            f"{after:.4f}) > allowed {allowed:.4f} = max(tolerance {max_metric_drop_int8:g}, "
                            f"{NOISE_Z:g} x paired standard error {se:.4f}); {seen}")
    return failures


class ParityError(ModelError):
    """An export failed its parity check; ``parity`` holds the numbers, ``failures`` the reasons by precision."""

    def __init__(self, message: str, parity: dict, failures: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.parity = parity
        self.failures = failures
