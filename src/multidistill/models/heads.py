"""Task heads. A task type brings its head, its hard loss and its prediction rule in one place."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multidistill.data.tasks import Task
from multidistill.errors import ConfigError


class ClassificationHead(nn.Module):
    """Dropout + linear over the pooled vector; trained with cross-entropy."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(pooled))

    @staticmethod
    def hard_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-example cross-entropy against class indices."""
        return F.cross_entropy(logits.float(), labels.long(), reduction="none")

    @staticmethod
    def predict(logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)


class RegressionHead(nn.Module):
    """Linear layer to one score; trained with mean squared error."""

    def __init__(self, hidden_size: int, num_labels: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(pooled)

    @staticmethod
    def hard_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-example squared error against the gold score."""
        return F.mse_loss(logits.float().squeeze(-1), labels.float(), reduction="none")

    @staticmethod
    def predict(logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1)


HEAD_TYPES: dict[str, type[nn.Module]] = {
    "classification": ClassificationHead,
    "regression": RegressionHead,
}


def build_head(task: Task, hidden_size: int, dropout: float) -> nn.Module:
    """The head for ``task``'s type, sized from the task's label count; a text task has none (ConfigError)."""
    if not task.has_head:
        raise ConfigError(f"task '{task.name}' is a text task (unlabelled text): it has no head; train it with a "
                          "feature loss only")
    return HEAD_TYPES[task.type](hidden_size, task.num_labels, dropout)
