"""Distillation loss terms against teacher signals. Each returns one loss per example.

Each term declares in ``inputs`` the named tensors it reads (see `training.objective`), so a loss
never needs to know which model produced the logits or where the teacher signals came from.

Teacher classification signals are probabilities (the mean over an ensemble's members, as MT-DNN-KD
prescribes) or logits (the mean of the members' logits); for a single teacher both give the same targets, since
softmax(log(softmax(z)) / T) == softmax(z / T).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from multidistill.losses.registry import register_loss

_EPS = 1e-12


def teacher_targets(teacher: torch.Tensor, temperature: float, *, is_probs: bool) -> torch.Tensor:
    """Teacher class distribution at temperature T, from probabilities or logits."""
    log_p = torch.log(teacher.clamp_min(_EPS)) if is_probs else teacher
    return F.softmax(log_p.float() / temperature, dim=-1)


class _SoftenedLoss(nn.Module):
    """Shared by soft_ce and soft_kl: both compare distributions softened by the same temperature.

    ``teacher_is_probs`` (default true) reads ``teacher_mean``, the teachers' mean probabilities (MT-DNN-KD); false
    reads ``teacher_logits``, the mean of their logits, and softens that (for one teacher the same targets).
    """

    inputs = ("student_logits", "teacher_mean")
    task_types = ("classification",)  # one distribution over classes: multilabel heads take soft_bce

    def __init__(self, temperature: float = 1.0, teacher_is_probs: bool = True,
                 temperature_end: float | None = None) -> None:
        super().__init__()
        for name, value in (("temperature", temperature), ("temperature_end", temperature_end)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value) or value <= 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not isinstance(teacher_is_probs, bool):
            raise ValueError(f"teacher_is_probs must be true or false, got {teacher_is_probs!r}")
        self.temperature = self.temperature_start = temperature
        self.temperature_end = temperature_end
        self.teacher_is_probs = teacher_is_probs
        if not teacher_is_probs:  # targets from the teachers' mean logits (teacher_mean holds probabilities)
            self.inputs = ("student_logits", "teacher_logits")

    def set_progress(self, fraction: float) -> None:
        """Linear temperature schedule from `temperature` to `temperature_end` over training."""
        if self.temperature_end is not None:
            self.temperature = self.temperature_start + (self.temperature_end - self.temperature_start) * fraction

    def softened(self, student_logits: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(teacher targets q_T, student log-probabilities log p_S,T)."""
        targets = teacher_targets(teacher, self.temperature, is_probs=self.teacher_is_probs)
        return targets, F.log_softmax(student_logits.float() / self.temperature, dim=-1)


@register_loss("soft_ce")
class SoftCrossEntropy(_SoftenedLoss):
    """-sum_c q_c log p_S(c), with q the teacher distribution (MT-DNN-KD; T = 1 in the paper).

    At T != 1 both sides are softened and the loss is multiplied by T^2 so its gradients keep their
    scale as T changes (Hinton et al. 2015).
    """

    def forward(self, student_logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        targets, log_p = self.softened(student_logits, teacher)
        return -(targets * log_p).sum(-1) * self.temperature**2


@register_loss("soft_kl")
class SoftKL(_SoftenedLoss):
    """T^2 * KL(q_T || p_S,T): soft cross-entropy minus the teacher's entropy (same gradients)."""

    def forward(self, student_logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        targets, log_p = self.softened(student_logits, teacher)
        return (targets * (torch.log(targets.clamp_min(_EPS)) - log_p)).sum(-1) * self.temperature**2


@register_loss("soft_bce")
class SoftBinaryCrossEntropy(_SoftenedLoss):
    """Multilabel soft targets: the mean over labels of the binary cross-entropy between each label's teacher
    probability q and the student's sigmoid, both at temperature T (q_T = sigmoid(logit(q) / T)), times T^2.

    ``teacher_mean`` holds the teachers' mean sigmoid probabilities (`teachers.reduce`); ``teacher_is_probs``
    false reads the mean logits instead. Like soft_kl for classes, minus the teacher's entropy it is a KL
    divergence, so its minimum is at the teacher's probabilities, not at 0.
    """

    task_types = ("multilabel",)

    def forward(self, student_logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        teacher = teacher.float()
        logits = torch.logit(teacher.clamp(1e-7, 1 - 1e-7)) if self.teacher_is_probs else teacher
        targets = torch.sigmoid(logits / self.temperature)
        per_label = F.binary_cross_entropy_with_logits(student_logits.float() / self.temperature, targets,
                                                       reduction="none")
        return per_label.mean(-1) * self.temperature**2


@register_loss("logit_mse")
class LogitMSE(nn.Module):
    """Mean over classes of (z_S - z_T)^2: MKD's distillation term, on raw logits (mean over teachers)."""

    inputs = ("student_logits", "teacher_logits")

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return (student_logits.float() - teacher_logits.float()).pow(2).mean(-1)


@register_loss("score_mse")
class ScoreMSE(nn.Module):
    """(s_S - s_T)^2 for regression tasks, against the teacher's (mean) score."""

    inputs = ("student_logits", "teacher_mean")
    task_types = ("regression",)  # a classifier's teacher_mean is probabilities, not one score

    def forward(self, student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
        return (student_scores.float().reshape(-1) - teacher_scores.float().reshape(-1)).pow(2)
