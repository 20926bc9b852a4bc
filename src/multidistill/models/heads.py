"""Task heads. A task type brings its head, its hard loss and its prediction rule in one place.

A head is linear on the pooled vector, or, with ``activation`` (a transformers activation name), a dense layer
and that activation before the linear layer: the layout of the stock Hugging Face classifiers (BERT's pooler,
RoBERTa's classification head), which `multidistill import-classifier` brings over as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from multidistill.data import label_sets
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError


def check_activation(name: str | None) -> str | None:
    """``name`` when it is None or an activation transformers knows (ValueError otherwise)."""
    if name is not None and name not in ACT2FN:
        raise ValueError(f"head activation {name!r} is not one transformers knows ({', '.join(sorted(ACT2FN))})")
    return name


class DenseActivation(nn.Module):
    """The stock classifiers' hidden layer: dense (hidden -> hidden), then the named activation."""

    def __init__(self, hidden_size: int, activation: str) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = ACT2FN[check_activation(activation)]

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(pooled))


class ClassificationHead(nn.Module):
    """Dropout + linear over the pooled vector (with ``activation``: dense + activation, dropout, linear, as BERT's
    pooler and classifier; RoBERTa's head adds a dropout before its dense layer, which matters in training only);
    trained with cross-entropy."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, activation: str | None = None) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = DenseActivation(hidden_size, activation) if activation is not None else None
        self.out = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.hidden(pooled) if self.hidden is not None else pooled))

    @staticmethod
    def hard_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-example cross-entropy against class indices."""
        return F.cross_entropy(logits.float(), labels.long(), reduction="none")

    @staticmethod
    def predict(logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)


class MultiLabelHead(ClassificationHead):
    """The classification head's layers, one independent score per label: trained with binary cross-entropy on
    each label's sigmoid, a label predicted when its logit is over 0 (probability over 0.5)."""

    @staticmethod
    def hard_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-example binary cross-entropy, the mean over the labels, against the rows' label bit masks."""
        targets = label_sets.decode_torch(labels, logits.shape[-1])
        return F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none").mean(-1)

    @staticmethod
    def predict(logits: torch.Tensor) -> torch.Tensor:
        return (logits > 0).long()


class RegressionHead(nn.Module):
    """Linear layer to one score (with ``activation``: dense + activation first, no dropout); trained with mean
    squared error."""

    def __init__(self, hidden_size: int, num_labels: int = 1, dropout: float = 0.0,
                 activation: str | None = None) -> None:
        super().__init__()
        self.hidden = DenseActivation(hidden_size, activation) if activation is not None else None
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(pooled) if self.hidden is not None else pooled)

    @staticmethod
    def hard_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-example squared error against the gold score."""
        return F.mse_loss(logits.float().squeeze(-1), labels.float(), reduction="none")

    @staticmethod
    def predict(logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1)


HEAD_TYPES: dict[str, type[nn.Module]] = {
    "classification": ClassificationHead,
    "multilabel": MultiLabelHead,
    "regression": RegressionHead,
}


def build_head(task: Task, hidden_size: int, dropout: float, activation: str | None = None) -> nn.Module:
    """The head for ``task``'s type, sized from the task's label count (``activation``: with the stock
    classifiers' dense layer and that activation before it); a text task has none (ConfigError)."""
    if not task.has_head:
        raise ConfigError(f"task '{task.name}' is a text task (unlabelled text): it has no head; train it with a "
                          "feature loss only")
    return HEAD_TYPES[task.type](hidden_size, task.num_labels, dropout, activation)
