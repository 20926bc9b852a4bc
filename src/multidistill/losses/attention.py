"""Attention-map losses: `attention_mse` (TinyBERT / Meta-KD stage A, on pre-softmax scores) and `attention_kl`
(MiniLM: KL between attention distributions). Both compare head by head, so the head counts must match.

Scores arrive with the model's additive mask applied (`EncoderFeatures.attention_scores`); both losses mask again
from the attention mask, so the value never depends on which very negative number a family uses for padding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from multidistill.losses.feature_base import FeatureLoss, masked_mean, resolve_layer_map
from multidistill.losses.registry import register_loss
from multidistill.models.features import EncoderFeatures, ModelDims


class _AttentionLoss(FeatureLoss):
    """Layer map over Transformer layers 1..L and the head-count check shared by the attention losses."""

    student_features = frozenset({"attention_scores"})
    teacher_features = frozenset({"attention_scores"})

    def __init__(self, student_dims: ModelDims, teacher_dims: ModelDims, layer_map: Any = "uniform",
                 layer_reduction: str = "sum") -> None:
        super().__init__(student_dims, teacher_dims)
        self.check_heads_match()
        self.layer_map = resolve_layer_map(self, layer_map, first_layer=1)
        self.student_layers = tuple(sorted({s for s, _ in self.layer_map}))
        self.teacher_layers = tuple(sorted({t for _, t in self.layer_map}))
        self.check_reduction(layer_reduction)
        self.layer_reduction = layer_reduction

    def scores(self, student: EncoderFeatures, teacher: EncoderFeatures):
        """(student scores, teacher scores), each (B, A, T, T) float32, per mapped layer."""
        for student_layer, teacher_layer in self.layer_map:
            yield (self.layer(student, "attention_scores", student_layer).float(),
                   self.layer(teacher, "attention_scores", teacher_layer).float())


@register_loss("attention_mse")
class AttentionMSE(_AttentionLoss):
    """sum over mapped layers of mean over heads and real (query, key) pairs of (A_S - A_T)^2, pre-softmax.

    As TinyBERT, entries of padded keys and padded query rows are zeroed on both sides; the mean is over the
    A * n^2 real entries of the example (n real tokens), so it does not depend on the batch's padded length.
    Parameters: ``layer_map`` ("uniform" over layers 1..L, "last" or explicit pairs), ``layer_reduction``.
    """

    def forward(self, student: EncoderFeatures, teacher: EncoderFeatures) -> torch.Tensor:
        real = self.real_tokens(student, teacher)
        pairs = real[:, None, :, None] & real[:, None, None, :]  # (B, 1, T, T): real query and real key
        count = real.sum(1) ** 2 * self.student_dims.num_attention_heads
        per_layer = [masked_mean((s - t).pow(2), pairs, (1, 2, 3), count) for s, t in self.scores(student, teacher)]
        return self.reduce_layers(per_layer, self.layer_reduction)


def masked_log_softmax(scores: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """log softmax over the last axis with masked keys given probability exactly 0 (finite logs, no NaN)."""
    return F.log_softmax(scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min), dim=-1)


def row_kl(teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of each row, summed over real keys only."""
    terms = teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)
    return torch.where(key_mask, terms, torch.zeros((), dtype=terms.dtype, device=terms.device)).sum(-1)


@register_loss("attention_kl")
class AttentionKL(_AttentionLoss):
    """sum over mapped layers of mean over heads and real query rows of KL(softmax A_T || softmax A_S).

    Padded keys are masked out of both softmaxes; padded query rows contribute nothing.
    Parameters: ``layer_map`` ("uniform" over layers 1..L, "last" or explicit pairs), ``layer_reduction``.
    """

    def forward(self, student: EncoderFeatures, teacher: EncoderFeatures) -> torch.Tensor:
        real = self.real_tokens(student, teacher)
        key_mask = real[:, None, None, :]
        count = real.sum(1) * self.student_dims.num_attention_heads
        per_layer = []
        for s, t in self.scores(student, teacher):
            kl = row_kl(masked_log_softmax(t, key_mask), masked_log_softmax(s, key_mask), key_mask)  # (B, A, T)
            per_layer.append(masked_mean(kl, real[:, None, :], (1, 2), count))
        return self.reduce_layers(per_layer, self.layer_reduction)
