"""Attention-map losses: `attention_mse` (TinyBERT / Meta-KD stage A, on pre-softmax scores) and `attention_kl`
(MiniLM: KL between attention distributions). Both compare head by head, so the head counts must match.

Scores arrive with the model's additive mask applied (`EncoderFeatures.attention_scores`); both losses mask again
from the attention mask, so the value never depends on which very negative number a family uses for padding.
Entries a model masks itself (ModernBERT's sliding-window layers leave the dtype's minimum on keys outside the
window; at or below `MASKED_SCORE`) are left out where either side masks them: a global layer mapped to a local
one compares the keys both see (the values were inf before).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from multidistill.losses.feature_base import FeatureLoss, masked_mean, resolve_layer_map
from multidistill.losses.registry import register_loss
from multidistill.models.features import EncoderFeatures, ModelDims

# A pre-softmax score at or below this is a mask, not a score (BERT's old additive mask was -10000; transformers
# now uses the dtype's minimum); real scores are within a few hundred of 0.
MASKED_SCORE = -1e4


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
        """(student scores, teacher scores, visible), per mapped layer: the scores (B, A, T, T) in float32, and
        where both sides see the key from the query: real tokens, not masked by either model."""
        real = self.real_tokens(student, teacher)
        pairs = real[:, None, :, None] & real[:, None, None, :]  # (B, 1, T, T): real query and real key
        for student_layer, teacher_layer in self.layer_map:
            s = self.layer(student, "attention_scores", student_layer).float()
            t = self.layer(teacher, "attention_scores", teacher_layer).float()
            yield s, t, pairs & (s > MASKED_SCORE) & (t > MASKED_SCORE)


@register_loss("attention_mse")
class AttentionMSE(_AttentionLoss):
    """sum over mapped layers of mean over heads and real (query, key) pairs of (A_S - A_T)^2, pre-softmax.

    As TinyBERT, entries of padded keys and padded query rows are left out on both sides; the mean is over the
    A * n^2 real entries of the example (n real tokens; fewer where a model masks more, as a sliding window), so it
    does not depend on the batch's padded length.
    Parameters: ``layer_map`` ("uniform" over layers 1..L, "last" or explicit pairs), ``layer_reduction``.
    """

    def forward(self, student: EncoderFeatures, teacher: EncoderFeatures) -> torch.Tensor:
        # Masked entries are zeroed before the difference: (min - t)^2 is inf, and its gradient times the mask's
        # 0 is NaN, which a mask applied after the square would not stop.
        zero = torch.zeros((), dtype=torch.float32, device=student.attention_mask.device)
        per_layer = [masked_mean((torch.where(visible, s, zero) - torch.where(visible, t, zero)).pow(2), visible,
                                 (1, 2, 3), visible.sum((1, 2, 3)))
                     for s, t, visible in self.scores(student, teacher)]
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

    Padded keys (and keys either model masks itself) are masked out of both softmaxes; padded query rows
    contribute nothing.
    Parameters: ``layer_map`` ("uniform" over layers 1..L, "last" or explicit pairs), ``layer_reduction``.
    """

    def forward(self, student: EncoderFeatures, teacher: EncoderFeatures) -> torch.Tensor:
        real = self.real_tokens(student, teacher)
        count = real.sum(1) * self.student_dims.num_attention_heads
        per_layer = []
        for s, t, visible in self.scores(student, teacher):
            kl = row_kl(masked_log_softmax(t, visible), masked_log_softmax(s, visible), visible)  # (B, A, T)
            per_layer.append(masked_mean(kl, real[:, None, :], (1, 2), count))
        return self.reduce_layers(per_layer, self.layer_reduction)
