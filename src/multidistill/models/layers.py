"""Smaller encoders cut from bigger ones: keep some of a teacher's layers (DistilBERT-style students).

Works on any Hugging Face encoder whose layers sit in one `nn.ModuleList` (BERT, RoBERTa, ELECTRA,
DistilBERT, MiniLM, ...), or in parallel lists that `QUIRKS` names (XLM, FlauBERT): the student is a fresh
model of the same architecture with fewer layers, and it receives the teacher's embeddings, the chosen layers
(renumbered) and every other weight unchanged.
"""

from __future__ import annotations

import copy
import re

from torch import nn
from transformers import PreTrainedModel

from multidistill.errors import ModelError
from multidistill.models.backbone import backbone_from_config
from multidistill.models.families import quirks_of

LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layers", "num_layers")


def _layer_count_key(config) -> str:
    for key in LAYER_COUNT_KEYS:
        if isinstance(getattr(config, key, None), int):
            return key
    raise ModelError(f"cannot tell how many layers a '{config.model_type}' encoder has "
                     f"(its config has none of {LAYER_COUNT_KEYS})")


def layer_list_name(backbone: PreTrainedModel) -> str:
    """Dotted name of the `ModuleList` that holds the encoder's transformer layers."""
    count = getattr(backbone.config, _layer_count_key(backbone.config))
    for name, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count and name:
            return name
    raise ModelError(f"cannot find the {count} transformer layers of this '{backbone.config.model_type}' encoder")


def layer_count(config) -> int:
    """How many transformer layers an encoder config describes."""
    return int(getattr(config, _layer_count_key(config)))


def num_layers(backbone: PreTrainedModel) -> int:
    return layer_count(backbone.config)


def valid_layers(layers: list[int], total: int) -> bool:
    """Whether ``layers`` are increasing indices into a stack of ``total`` layers (what `keep_layers` keeps)."""
    return bool(layers) and sorted(set(layers)) == list(layers) and layers[0] >= 0 and layers[-1] < total


def keep_layers(backbone: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """A copy of ``backbone`` with only ``layers`` (0-based, increasing) of its transformer stack."""
    total = num_layers(backbone)
    if not valid_layers(layers, total):
        raise ModelError(f"key 'model.student_layers': {layers} must be increasing indices in 0..{total - 1} "
                         f"(the encoder has {total} layers)")
    quirks = quirks_of(backbone.config)
    if quirks.no_cut is not None:
        raise ModelError(f"key 'model.student_layers': a '{backbone.config.model_type}' encoder cannot be cut: "
                         f"{quirks.no_cut}")
    prefix = layer_list_name(backbone)
    config = copy.deepcopy(backbone.config)
    setattr(config, _layer_count_key(config), len(layers))
    # Per-layer settings (`layer_types`, Longformer's `attention_window`) must shrink with the stack; a list that
    # merely has as many entries (DeBERTa's pos_att_type) must not.
    for key, value in list(vars(config).items()):
        per_layer = key.startswith("layer") or key in quirks.per_layer_keys
        if per_layer and isinstance(value, list | tuple) and len(value) == total:
            setattr(config, key, [value[i] for i in layers])
    try:
        student = backbone_from_config(config)
    except (AssertionError, ValueError, NotImplementedError) as exc:  # the family's own config checks
        raise ModelError(f"key 'model.student_layers': a '{config.model_type}' encoder with layers {layers} kept "
                         f"cannot be built ({type(exc).__name__}: {exc})") from exc
    source = backbone.state_dict()
    # The layer list, and the lists that hold one part of each layer beside it (XLM's ffns and layer norms).
    lists = "|".join(re.escape(name) for name in (prefix, *quirks.parallel_layer_lists))
    pattern = re.compile(rf"^({lists})\.(\d+)\.(.*)$")
    mapped = {}
    for key in student.state_dict():
        match = pattern.match(key)
        mapped[key] = source[f"{match.group(1)}.{layers[int(match.group(2))]}.{match.group(3)}" if match else key]
    student.load_state_dict(mapped, strict=True)
    return student


def every_kth_layer(total: int, k: int) -> list[int]:
    """The k-th, 2k-th, ... layers, 0-based (6 layers, k=2 -> [1, 3, 5]): the top layer, which fed the
    teacher's heads, is always kept."""
    if k < 1:
        raise ModelError(f"k must be >= 1, got {k}")
    return list(range(k - 1, total, k))
