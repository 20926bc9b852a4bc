"""Run a model over tokenised eval sets and score every task with its metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from multidistill.data.batches import map_batches
from multidistill.data.collate import to_device
from multidistill.data.tasks import Task
from multidistill.evaluation.metrics import average_score, compute_metrics


@dataclass
class EvalResult:
    """Per-task metric dicts, each task's main score, and their unweighted average."""

    metrics: dict[str, dict[str, float]]
    main: dict[str, float] = field(default_factory=dict)
    average: float = float("nan")

    def to_dict(self) -> dict:
        return {"tasks": self.metrics, "main": self.main, "average": self.average}


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
             progress: bool = False) -> EvalResult:
    """Score ``model`` on every task in ``eval_sets`` (task name -> tokenised dataset)."""
    metrics, main = {}, {}
    for name, dataset in eval_sets.items():
        task = tasks[name]
        if not task.has_head:
            continue  # unlabelled text: nothing to score
        predictions = predict(model, task, dataset, batch_size=batch_size, pad_token_id=pad_token_id,
                              device=device, autocast=autocast, progress=progress)
        metrics[name] = compute_metrics(task.metrics, predictions, np.asarray(dataset["label"]))
        main[name] = metrics[name][task.main_metric]
    return EvalResult(metrics=metrics, main=main, average=average_score(main))
