"""Run a model over tokenised eval sets and score every task with its metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import torch

from multidistill.data.batches import map_batches
from multidistill.data.collate import to_device
from multidistill.data.tasks import Task
from multidistill.evaluation.metrics import average_score, compute_metrics, labelled
from multidistill.evaluation.thresholds import Thresholds


class _TaskScores(TypedDict):
    tasks: dict[str, dict[str, float]]
    main: dict[str, float]
    average: float


class EvalMetrics(_TaskScores, total=False):
    """`EvalResult.to_dict`, as `evaluate_model_dir` returns it and eval_<split>.json holds it: ``tasks`` (task ->
    metric -> value), ``main`` (task -> its main metric), ``average`` (their unweighted mean), for tasks with
    domains ``domains`` (task -> domain -> metric -> value) and ``domain_average`` (task -> metric -> mean), and
    for multilabel tasks scored at the decision thresholds saved with the model ``thresholds`` (task -> label ->
    threshold; a task not there was decided at 0.5)."""

    domains: dict[str, dict[str, dict[str, float]]]
    domain_average: dict[str, dict[str, float]]
    thresholds: dict[str, dict[str, float]]


@dataclass
class EvalResult:
    """Per-task metric dicts, each task's main score, and their unweighted average; for tasks with domains also
    each domain's metrics (task -> domain -> metric) and their unweighted mean over the domains scored."""

    metrics: dict[str, dict[str, float]]
    main: dict[str, float] = field(default_factory=dict)
    average: float = float("nan")
    domains: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    domain_average: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> EvalMetrics:
        out: EvalMetrics = {"tasks": self.metrics, "main": self.main, "average": self.average}
        if self.domains:  # only tasks with domains add these keys: other outputs stay as they were
            out["domains"], out["domain_average"] = self.domains, self.domain_average
        return out


def domain_metrics(task: Task, predictions: np.ndarray, labels: np.ndarray, domain_ids: np.ndarray,
                   thresholds: tuple[float, ...] | None = None,
                   ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """``task``'s metrics on the rows of each of its domains that has labelled rows (by name, in `Task.domains`
    order), and each metric's unweighted mean over those domains (a domain with none would make it NaN)."""
    scored = labelled(labels)
    per_domain = {name: compute_metrics(task.metrics, predictions[domain_ids == i], labels[domain_ids == i],
                                        task.type, thresholds)
                  for i, name in enumerate(task.domains) if ((domain_ids == i) & scored).any()}
    average = {metric: float(np.mean([scores[metric] for scores in per_domain.values()])) for metric in task.metrics}
    return per_domain, average


@torch.no_grad()
def predict(model: torch.nn.Module, task: Task, dataset, *, batch_size: int, pad_token_id: int,
            device: torch.device, autocast: Callable | None = None, progress: bool = False) -> np.ndarray:
    """Raw head outputs (logits or scores) for every row, in dataset order (batched longest first)."""
    model.eval()

    def forward(batch: dict) -> torch.Tensor:
        batch = to_device(batch, device)
        with autocast() if autocast is not None else torch.autocast("cpu", enabled=False):
            return model(task=task.name, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         token_type_ids=batch.get("token_type_ids")).logits

    return map_batches(task, dataset, forward, batch_size=batch_size, pad_token_id=pad_token_id, progress=progress)


def evaluate(model: torch.nn.Module, tasks: dict[str, Task], eval_sets: dict, *, batch_size: int,
             pad_token_id: int, device: torch.device, autocast: Callable | None = None,
             progress: bool = False, thresholds: Thresholds | None = None) -> EvalResult:
    """Score ``model`` on every task in ``eval_sets`` (task name -> tokenised dataset); a multilabel task with
    ``thresholds`` (`evaluation.thresholds`, as saved with the model) decides its labels at them, else at 0.5."""
    thresholds = thresholds or {}
    result = EvalResult(metrics={})
    for name, dataset in eval_sets.items():
        task = tasks[name]
        if not task.has_head:
            continue  # unlabelled text: nothing to score
        predictions = predict(model, task, dataset, batch_size=batch_size, pad_token_id=pad_token_id,
                              device=device, autocast=autocast, progress=progress)
        labels = np.asarray(dataset["label"])
        result.metrics[name] = compute_metrics(task.metrics, predictions, labels, task.type, thresholds.get(name))
        result.main[name] = result.metrics[name][task.main_metric]
        if task.domains and "domain_id" in dataset.column_names:
            result.domains[name], result.domain_average[name] = domain_metrics(
                task, predictions, labels, np.asarray(dataset["domain_id"]), thresholds.get(name))
    result.average = average_score(result.main)
    return result
