"""`relation_kl`: MiniLMv2's multi-head self-attention relation distillation (Wang et al. 2021).

For X in {queries, keys, values} of one teacher layer and one student layer, the concatenated heads (B, T, W) are
re-split into R relation heads of size d_r = W / R on each side (W is X's own width, `ModelDims.qkv_width`: keys and
values are narrower than queries under grouped-query attention, and A * head size is not always H),
R = softmax(X X^T / sqrt(d_r)) per relation head, and the loss is KL(R_T || R_S). Since R is the same on both sides,
student and teacher may differ in width and in attention heads; each side is scaled by its own d_r.
"""

from __future__ import annotations

import math

import torch

from multidistill.losses.attention import masked_log_softmax, row_kl
from multidistill.losses.feature_base import FeatureLoss, masked_mean
from multidistill.losses.registry import register_loss
from multidistill.models.features import EncoderFeatures, ModelDims

RELATIONS = ("queries", "keys", "values")


def relation_log_probs(states: torch.Tensor, heads: int, key_mask: torch.Tensor) -> torch.Tensor:
    """log softmax(X X^T / sqrt(d_r)) per relation head: (B, T, W) -> (B, heads, T, T), padded keys masked."""
    batch, tokens, width = states.shape
    if width % heads:
        raise ValueError(f"relation_kl: {heads} relation heads do not divide the Q/K/V width {width}")
    split = states.float().reshape(batch, tokens, heads, width // heads).transpose(1, 2)  # (B, R, T, d_r)
    scores = split @ split.transpose(-1, -2) / math.sqrt(width // heads)
    return masked_log_softmax(scores, key_mask)


def _widths(dims: ModelDims) -> str:
    """The Q/K/V widths of one side, in words: one number where the three are equal."""
    widths = [dims.qkv_width(name) for name in RELATIONS]
    if len(set(widths)) == 1:
        return f"width {widths[0]}"
    return ", ".join(f"{name} {width}" for name, width in zip(RELATIONS, widths, strict=True)) + " wide"


@register_loss("relation_kl")
class RelationKL(FeatureLoss):
    """sum over Q-Q, K-K, V-V of mean over relation heads and real rows of KL(R_T || R_S) (weight 1 each).

    Padded tokens are cropped on both axes: padded columns are masked out of the softmax and padded rows
    contribute nothing. Parameters: ``relation_heads`` (default 48, MiniLMv2's for base teachers; must divide
    each side's query, key and value widths, `ModelDims.qkv_width`), ``teacher_layer`` / ``student_layer`` (1..L;
    default the last layer of each).
    """

    student_features = frozenset(RELATIONS)
    teacher_features = frozenset(RELATIONS)

    def __init__(self, student_dims: ModelDims, teacher_dims: ModelDims, relation_heads: int = 48,
                 teacher_layer: int | None = None, student_layer: int | None = None) -> None:
        super().__init__(student_dims, teacher_dims)
        self.check_has_attention()
        # Each relation re-splits its own Q/K/V feature, whose width is not always H (MobileBERT's narrower
        # attention, DeBERTa-v2's attention_head_size, grouped-query keys and values): R must divide all six.
        widths = [dims.qkv_width(name) for dims in (student_dims, teacher_dims) for name in RELATIONS]
        if isinstance(relation_heads, bool) or not isinstance(relation_heads, int) or relation_heads < 1 or any(
                width % relation_heads for width in widths):
            common = [n for n in range(1, math.gcd(*widths) + 1) if math.gcd(*widths) % n == 0]
            raise self.config_error("relation_heads", f"{relation_heads!r} must divide each Q/K/V width it re-splits: "
                                    f"the student's {_widths(student_dims)} and the teacher's "
                                    f"{_widths(teacher_dims)}; choose one of {common}")
        self.relation_heads = relation_heads
        self.student_layers = (self._layer("student_layer", student_layer, student_dims),)
        self.teacher_layers = (self._layer("teacher_layer", teacher_layer, teacher_dims),)

    def _layer(self, key: str, layer: int | None, dims: ModelDims) -> int:
        if layer is None:
            return dims.num_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= dims.num_layers:
            raise self.config_error(key, f"{layer!r} is not a layer of a {dims.num_layers}-layer model; "
                                    f"choose 1..{dims.num_layers} (default: the last)")
        return layer

    def forward(self, student: EncoderFeatures, teacher: EncoderFeatures) -> torch.Tensor:
        real = self.real_tokens(student, teacher)
        key_mask = real[:, None, None, :]
        count = real.sum(1) * self.relation_heads
        total = torch.zeros(real.shape[0], dtype=torch.float32, device=real.device)
        for name in RELATIONS:
            student_log_probs = relation_log_probs(self.layer(student, name, self.student_layers[0]),
                                                   self.relation_heads, key_mask)
            teacher_log_probs = relation_log_probs(self.layer(teacher, name, self.teacher_layers[0]),
                                                   self.relation_heads, key_mask)
            kl = row_kl(teacher_log_probs, student_log_probs, key_mask)  # (B, R, T)
            total = total + masked_mean(kl, real[:, None, :], (1, 2), count)
        return total
