"""Hidden-state losses: `hidden_mse` (TinyBERT / Meta-KD stage A) and `cosine_hidden` (DistilBERT's cosine).

Both map student layers to teacher layers, project the student's hidden states to the teacher's width with a
learned linear map (an `nn.Linear` inside the loss, so the objective optimises and checkpoints it and the
exported student never carries it), and average over real tokens only, per example.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from multidistill.losses.feature_base import FeatureLoss, masked_mean, resolve_layer_map
from multidistill.losses.registry import register_loss
from multidistill.models.features import EncoderFeatures, ModelDims


class _HiddenLoss(FeatureLoss):
    """Layer map, projection and per-layer reduction shared by the hidden-state losses."""

    student_features = frozenset({"hidden_states"})
    teacher_features = frozenset({"hidden_states"})

    def __init__(self, student_dims: ModelDims, teacher_dims: ModelDims, *, layer_map: Any,
                 include_embeddings: bool, layer_reduction: str, projection: bool | None) -> None:
        """``projection`` None: learned only when a mapped pair of layers differs in width."""
        super().__init__(student_dims, teacher_dims)
        self.layer_map = resolve_layer_map(self, layer_map, first_layer=0, include_embeddings=include_embeddings)
        self.student_layers = tuple(sorted({s for s, _ in self.layer_map}))
        self.teacher_layers = tuple(sorted({t for _, t in self.layer_map}))
        self.check_reduction(layer_reduction)
        self.layer_reduction = layer_reduction
        # One map for every layer pair (as TinyBERT's W_h and Meta-KD's W); a student whose embedding output has
        # another width (a BiLSTM's word embeddings) gets a second one for layer 0.
        own_width = 0 in self.student_layers and student_dims.width(0) != student_dims.hidden_size
        groups = {"projection": [(s, t) for s, t in self.layer_map if not (s == 0 and own_width)],
                  "embedding_projection": [(s, t) for s, t in self.layer_map if s == 0 and own_width]}
        for name, pairs in groups.items():
            differ = [(s, t) for s, t in pairs if student_dims.width(s) != teacher_dims.width(t)]
            learned = bool(pairs) and (bool(differ) if projection is None else projection)
            if differ and not learned:
                (s, t) = differ[0]
                raise self.config_error("projection", f"student layer {s} is {student_dims.width(s)} wide and teacher "
                                        f"layer {t} {teacher_dims.width(t)}; a projection is needed to compare them: "
                                        "set projection: true")
            setattr(self, name, nn.Linear(student_dims.width(pairs[0][0]), teacher_dims.hidden_size)
                    if learned else None)

    def pairs(self, student: EncoderFeatures, teacher: EncoderFeatures):
        """(projected student states, teacher states) per mapped layer, in float32."""
        for student_layer, teacher_layer in self.layer_map:
            student_states = self.layer(student, "hidden_states", student_layer).float()
            projection = self.embedding_projection if student_layer == 0 and self.embedding_projection is not None \
                else self.projection  # (layer 0 has its own only where its width is not the other layers')
            if projection is not None:
                student_states = projection(student_states.to(projection.weight.dtype)).float()
            yield student_states, self.layer(teacher, "hidden_states", teacher_layer).float()


@register_loss("hidden_mse")
class HiddenMSE(_HiddenLoss):
    """sum over mapped layers (m, g(m)) of mean over real tokens and teacher units of (W h_S^m - h_T^g(m))^2.

    Parameters: ``layer_map`` ("uniform", "last" or [[student, teacher], ...]; layer 0 = embedding output),
    ``include_embeddings`` (uniform map starts at m = 0; default true), ``layer_reduction`` ("sum" over mapped
    layers, as Meta-KD and TinyBERT; or "mean"), ``projection`` (learned W, default true; false needs equal widths).
    """

    def __init__(self, student_dims: ModelDims, teacher_dims: ModelDims, layer_map: Any = "uniform",
                 include_embeddings: bool = True, layer_reduction: str = "sum", projection: bool = True) -> None:
        super().__init__(student_dims, teacher_dims, layer_map=layer_map, include_embeddings=include_embeddings,
                         layer_reduction=layer_reduction, projection=projection)

    def forward(self, student: EncoderFeatures, teacher: EncoderFeatures) -> torch.Tensor:
        real = self.real_tokens(student, teacher)
        count = real.sum(1)
        per_layer = [masked_mean((s - t).pow(2).mean(-1), real, (1,), count) for s, t in self.pairs(student, teacher)]
        return self.reduce_layers(per_layer, self.layer_reduction)


@register_loss("cosine_hidden")
class CosineHidden(_HiddenLoss):
    """sum over mapped layers of mean over real tokens of 1 - cos(W h_S^m, h_T^g(m)).

    Parameters as `hidden_mse`, except ``projection``: by default (null) a projection is learned only when the
    widths differ; true always learns one, false never (then the widths must match).
    """

    def __init__(self, student_dims: ModelDims, teacher_dims: ModelDims, layer_map: Any = "uniform",
                 include_embeddings: bool = True, layer_reduction: str = "sum",
                 projection: bool | None = None) -> None:
        super().__init__(student_dims, teacher_dims, layer_map=layer_map, include_embeddings=include_embeddings,
                         layer_reduction=layer_reduction, projection=projection)

    def forward(self, student: EncoderFeatures, teacher: EncoderFeatures) -> torch.Tensor:
        real = self.real_tokens(student, teacher)
        count = real.sum(1)
        per_layer = [masked_mean(1 - F.cosine_similarity(s, t, dim=-1), real, (1,), count)
                     for s, t in self.pairs(student, teacher)]
        return self.reduce_layers(per_layer, self.layer_reduction)
