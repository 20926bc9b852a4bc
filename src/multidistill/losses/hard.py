"""`hard`: the task type's own supervised loss on gold labels (cross-entropy or MSE)."""

from __future__ import annotations

import torch
from torch import nn

from multidistill.data.tasks import Task
from multidistill.losses.registry import register_loss
from multidistill.models.heads import HEAD_TYPES


@register_loss("hard")
class HardLoss(nn.Module):
    """Per-example CE against class indices (classification), binary CE per label (multilabel: the mean over the
    labels) or squared error (regression).

    Rows without a gold label (index or mask -1 / NaN, e.g. augmented examples) get zero loss.
    """

    inputs = ("student_logits", "labels", "task")

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, task: Task) -> torch.Tensor:
        if task.has_labels:
            has_label = labels >= 0
            safe = torch.where(has_label, labels, torch.zeros_like(labels))
        else:
            has_label = ~torch.isnan(labels)
            safe = torch.where(has_label, labels, torch.zeros_like(labels))
        per_example = HEAD_TYPES[task.type].hard_loss(logits, safe)
        return per_example * has_label.to(per_example.dtype)
