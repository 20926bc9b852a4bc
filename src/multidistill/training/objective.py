"""An objective: a weighted sum of registered loss terms, per task.

The loop calls ``objective(model, batch)`` and never knows which terms are in play; an objective
is an `nn.Module` so terms with parameters (projections) are trained and checkpointed with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from multidistill.data.tasks import Task
from multidistill.losses import build_loss


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


class SupervisedObjective(nn.Module):
    """Gold labels only: the `hard` term (used to train teachers and baselines)."""

    def __init__(self, tasks: dict[str, Task]) -> None:
        super().__init__()
        self.tasks = tasks
        self.hard = build_loss("hard")

    def forward(self, model: nn.Module, batch: dict) -> ObjectiveOutput:
        task = self.tasks[batch["task"]]
        outputs = model(task=task.name, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch.get("token_type_ids"))
        per_example = self.hard(outputs.logits, batch["labels"], task)
        weights = batch.get("weights")
        if weights is not None:
            per_example = per_example * weights
        loss = per_example.mean()
        return ObjectiveOutput(loss=loss, terms={"hard": float(loss.detach())})
