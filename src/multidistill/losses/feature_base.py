"""What every feature loss shares: its inputs and declared needs, layer maps, checks and masked means.

Feature losses read two `EncoderFeatures` (``inputs = ("student_features", "teacher_features")``) and return
one value per example. Each declares which features it reads from each side (``student_features`` /
``teacher_features``) and at which layers (``student_layers`` / ``teacher_layers``), so an extractor computes
only those. Layers are numbered as in `EncoderFeatures`: 0 is the embedding output (hidden states only),
l in 1..L the output, scores or Q/K/V of the l-th Transformer layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from multidistill.errors import ConfigError
from multidistill.models.features import EncoderFeatures, ModelDims

LAYER_MAPS = ("uniform", "last")
LAYER_REDUCTIONS = ("sum", "mean")


class FeatureLoss(nn.Module):
    """Base of the losses that compare features inside the student and the teacher."""

    inputs = ("student_features", "teacher_features")
    needs_dims = True
    student_features: frozenset[str] = frozenset()
    teacher_features: frozenset[str] = frozenset()
    loss_name = "feature loss"  # replaced by register_loss

    def __init__(self, student_dims: ModelDims, teacher_dims: ModelDims) -> None:
        super().__init__()
        self.student_dims = student_dims
        self.teacher_dims = teacher_dims
        self.student_layers: tuple[int, ...] = ()
        self.teacher_layers: tuple[int, ...] = ()

    def feature_request(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """{"student": {feature: layers}, "teacher": {feature: layers}}: what an extractor must compute."""
        return {"student": {name: self.student_layers for name in sorted(self.student_features)},
                "teacher": {name: self.teacher_layers for name in sorted(self.teacher_features)}}

    def config_error(self, key: str, problem: str) -> ConfigError:
        """A ConfigError naming this loss and the parameter at fault."""
        return ConfigError(f"loss '{self.loss_name}', key '{key}': {problem}")

    def layer(self, features: EncoderFeatures, name: str, layer: int) -> torch.Tensor:
        """Feature ``name`` at layer number ``layer`` (hidden states count the embedding output as layer 0)."""
        tensors = features.require(name, self.loss_name)
        return tensors[layer if name == "hidden_states" else layer - 1]

    def real_tokens(self, student: EncoderFeatures, teacher: EncoderFeatures) -> torch.Tensor:
        """(B, T) bool mask of real tokens, shared by both sides (token-level losses need one tokenization)."""
        if student.attention_mask.shape != teacher.attention_mask.shape:
            raise ValueError(f"{self.loss_name} compares token by token, so student and teacher need the same "
                             f"tokenization; got masks {tuple(student.attention_mask.shape)} and "
                             f"{tuple(teacher.attention_mask.shape)}")
        return student.attention_mask.bool()

    def check_has_attention(self) -> None:
        """Refuse a model without attention (a BiLSTM student): it has no scores and no Q/K/V to compare."""
        for side, dims in (("student", self.student_dims), ("teacher", self.teacher_dims)):
            if dims.num_attention_heads == 0:
                raise ConfigError(f"loss '{self.loss_name}': the {side} has no attention (e.g. a BiLSTM student), "
                                  "so it cannot give attention scores or Q/K/V; use hidden_mse or cosine_hidden, "
                                  "which read hidden states")

    def check_heads_match(self) -> None:
        """Attention maps compare head by head, so both models need the same head count."""
        self.check_has_attention()
        if self.student_dims.num_attention_heads != self.teacher_dims.num_attention_heads:
            raise self.config_error(
                "num_attention_heads", f"the student has {self.student_dims.num_attention_heads} attention heads "
                f"and the teacher {self.teacher_dims.num_attention_heads}; attention maps compare head by head, so "
                "they must match (use relation_kl, which re-splits heads, for models with other head counts)")

    def reduce_layers(self, per_layer: list[torch.Tensor], how: str) -> torch.Tensor:
        """Sum or mean of the per-layer (B,) values."""
        total = torch.stack(per_layer).sum(0)
        return total / len(per_layer) if how == "mean" else total

    def check_reduction(self, how: str) -> None:
        if how not in LAYER_REDUCTIONS:
            raise self.config_error("layer_reduction", f"{how!r} is not one of {list(LAYER_REDUCTIONS)}")


def resolve_layer_map(loss: FeatureLoss, spec: Any, *, first_layer: int,
                      include_embeddings: bool = True) -> tuple[tuple[int, int], ...]:
    """(student layer, teacher layer) pairs from ``spec``: "uniform", "last" or an explicit list of pairs.

    "uniform" maps student layer m to teacher layer m * L_T // L_S (TinyBERT's g(m); the last layer maps to the
    last), for m from ``first_layer`` (0: the embedding output, only when ``include_embeddings``) to L_S.
    Explicit pairs are checked against both models: ``first_layer``..L on each side.
    """
    student_top, teacher_top = loss.student_dims.num_layers, loss.teacher_dims.num_layers
    if spec == "uniform":
        start = first_layer if include_embeddings else max(first_layer, 1)
        return tuple((m, m * teacher_top // student_top) for m in range(start, student_top + 1))
    if spec == "last":
        return ((student_top, teacher_top),)
    if isinstance(spec, str) or not isinstance(spec, Sequence) or not spec:
        raise loss.config_error("layer_map", f"{spec!r} is neither one of {list(LAYER_MAPS)} nor a non-empty list of "
                                "[student layer, teacher layer] pairs")
    pairs = []
    for pair in spec:
        if (isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2
                or not all(isinstance(n, int) and not isinstance(n, bool) for n in pair)):
            raise loss.config_error("layer_map", f"{pair!r} is not a [student layer, teacher layer] pair of integers")
        student_layer, teacher_layer = pair
        for side, layer, top in (("student", student_layer, student_top), ("teacher", teacher_layer, teacher_top)):
            if not first_layer <= layer <= top:
                raise loss.config_error("layer_map", f"{side} layer {layer} in {list(pair)} is outside the {side}, "
                                        f"whose layers here are {first_layer}..{top}")
        pairs.append((student_layer, teacher_layer))
    return tuple(pairs)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dims: tuple[int, ...], count: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` holds over ``dims``, divided by ``count`` (clamped to 1 for empty rows).

    Masked entries are replaced, not multiplied, so padding holding inf or NaN cannot leak into the result.
    """
    kept = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return kept.sum(dims) / count.clamp_min(1)
