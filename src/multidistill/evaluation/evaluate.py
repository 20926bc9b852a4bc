"""Run a model over tokenised eval sets and score every task with its metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from multidistill.data.collate import collate, to_device
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
    """Raw head outputs (logits or scores) for every row, in dataset order."""
    model.eval()
    outputs = []
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc=f"eval {task.name}", disable=not progress, leave=False):
        batch = to_device(collate(task, dataset[start:start + batch_size], pad_token_id), device)
        context = autocast() if autocast is not None else torch.autocast("cpu", enabled=False)
        with context:
            logits = model(task=task.name, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch.get("token_type_ids")).logits
        outputs.append(logits.float().cpu().numpy())
    result = np.concatenate(outputs)
    return result.reshape(-1) if task.type == "regression" else result


def evaluate(model: torch.nn.Module, tasks: dict[str, Task], eval_sets: dict, *, batch_size: int,
             pad_token_id: int, device: torch.device, autocast: Callable | None = None,
             progress: bool = False) -> EvalResult:
    """Score ``model`` on every task in ``eval_sets`` (task name -> tokenised dataset)."""
    metrics, main = {}, {}
    for name, dataset in eval_sets.items():
        task = tasks[name]
        predictions = predict(model, task, dataset, batch_size=batch_size, pad_token_id=pad_token_id,
                              device=device, autocast=autocast, progress=progress)
        metrics[name] = compute_metrics(task.metrics, predictions, np.asarray(dataset["label"]))
        main[name] = metrics[name][task.main_metric]
    return EvalResult(metrics=metrics, main=main, average=average_score(main))
