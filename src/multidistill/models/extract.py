"""Features of one batch from any Hugging Face encoder in the family table (`families.py`).

Hidden states come from the model (``output_hidden_states``). Q/K/V come from forward hooks on the family's
projection modules. Attention scores are captured where the model computes them: each attention module's
forward runs in eager mode under a `TorchFunctionMode` that records the tensor it passes to softmax, so the
score is exactly what the model softmaxes (rotary embeddings, relative-position terms, sliding-window masks and
the family's own scale included) without copying any family's attention code. Only what is asked is computed:
no hooks, no eager switch and no hidden-state tuple unless wanted. Hooks, the capture mode and the model's
attention implementation are restored afterwards, also when the forward raises.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from transformers import PreTrainedModel

from multidistill.errors import ConfigError
from multidistill.models.families import EncoderFamily, family_of, model_dims
from multidistill.models.features import DOMAIN_FEATURES, FEATURE_NAMES, EncoderFeatures

# What an encoder without heads can give; `logits` and `pooled` need a model with heads (MultiTaskModel.features).
ENCODER_FEATURES = ("hidden_states", "attention_scores", "queries", "keys", "values")
QKV_FEATURES = ("queries", "keys", "values")
_SOFTMAX = {torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax, torch.special.softmax}


def check_wanted(want: Iterable[str], allowed: Iterable[str], who: str) -> frozenset[str]:
    """``want`` as a set, refusing names outside FEATURE_NAMES or outside what ``who`` can give."""
    want = frozenset(want)
    unknown = sorted(want - set(FEATURE_NAMES) - set(DOMAIN_FEATURES))
    if unknown:
        raise ConfigError(f"unknown feature name(s) {unknown}; known: {', '.join(FEATURE_NAMES + DOMAIN_FEATURES)}")
    missing = sorted(want - set(allowed))
    if missing:
        raise ConfigError(f"{who} cannot give the feature(s) {missing}; it gives: {', '.join(allowed)}")
    return want


# What to compute: feature names (every layer), or names mapped to the layer numbers wanted (1..L; as in
# EncoderFeatures). Layers restrict the captured scores and Q/K/V; hidden states always come whole from the model.
Wanted = Iterable[str] | Mapping[str, Iterable[int]]


def wanted_layers(want: Wanted) -> dict[str, frozenset[int]] | None:
    """The layer numbers per feature of a mapping ``want``; None when ``want`` names features only."""
    if not isinstance(want, Mapping):
        return None
    return {name: frozenset(layers) for name, layers in want.items()}


def with_features(want: Wanted, *names: str) -> Wanted:
    """``want`` plus whole-model features ``names`` (logits, pooled), keeping its layer numbers if it has any."""
    if isinstance(want, Mapping):
        return {**want, **{name: () for name in names}}
    return {*want, *names}


def without_features(want: Wanted, *names: str) -> Wanted:
    """``want`` without ``names``, keeping its layer numbers if it has any."""
    if isinstance(want, Mapping):
        return {name: layers for name, layers in want.items() if name not in names}
    return frozenset(want) - set(names)


def _encoder_inputs(model: PreTrainedModel, token_type_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
    # DistilBERT/ModernBERT take no segment ids; RoBERTa/DeBERTa-style ones have at most one segment type.
    if (token_type_ids is None or "token_type_ids" not in inspect.signature(model.forward).parameters
            or getattr(model.config, "type_vocab_size", 2) <= 1):
        return {}
    return {"token_type_ids": token_type_ids}


class _SoftmaxInputs(TorchFunctionMode):
    """Records the input of every softmax called while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SOFTMAX:
            self.inputs.append(args[0] if args else kwargs["input"])
        return func(*args, **kwargs)


def _capture_scores(stack: ExitStack, family: EncoderFamily, layers: nn.ModuleList,
                    scores: list[torch.Tensor | None], indices: frozenset[int]) -> None:
    """Hooks that fill ``scores[i]`` with the softmax input of layer i's attention module."""
    active: dict[int, _SoftmaxInputs] = {}

    def enter(index: int):
        def hook(module, args):
            mode = _SoftmaxInputs()
            mode.__enter__()
            active[index] = mode
        return hook

    def leave(index: int):
        def hook(module, args, output):
            mode = active.pop(index, None)
            if mode is None:
                return
            mode.__exit__(None, None, None)
            if output is None:  # the forward raised; its exception propagates
                return
            if len(mode.inputs) != 1:
                raise RuntimeError(f"'{family.model_type}' layer {index}: its attention module '{family.attention}' "
                                   f"called softmax {len(mode.inputs)} times, expected once: the model must run "
                                   "eager attention, and the family's `attention` entry in "
                                   "multidistill/models/families.py must name the module that softmaxes the scores")
            scores[index] = mode.inputs[0]
        return hook

    def close_left_open() -> None:
        for mode in reversed(list(active.values())):
            mode.__exit__(None, None, None)
        active.clear()

    for index, layer in enumerate(layers):
        if index not in indices:
            continue
        module = layer.get_submodule(family.attention)
        stack.callback(module.register_forward_pre_hook(enter(index)).remove)
        stack.callback(module.register_forward_hook(leave(index), always_call=True).remove)
    stack.callback(close_left_open)


def _projection_parts(family: EncoderFamily, output: torch.Tensor, heads: int) -> dict[str, torch.Tensor]:
    """The Q/K/V parts of a fused projection's output, each (B, T, A * head size) (`EncoderFamily.fused_layout`)."""
    if family.fused_layout == "per_head":  # head after head [q | k | v] (DeBERTa v1)
        parts = output.unflatten(-1, (heads, -1)).chunk(3, dim=-1)
        return {name: part.flatten(-2) for name, part in zip(QKV_FEATURES, parts, strict=True)}
    return dict(zip(QKV_FEATURES, output.chunk(3, dim=-1), strict=True))


def _capture_qkv(stack: ExitStack, family: EncoderFamily, layers: nn.ModuleList, wanted: frozenset[str],
                 captured: dict[str, list[torch.Tensor | None]], indices: dict[str, frozenset[int]],
                 heads: int) -> None:
    """Forward hooks on the projections that fill ``captured[name][i]`` for each wanted Q/K/V name."""
    by_module: dict[str, list[str]] = {}
    for name, module_name in family.projections().items():
        if name in wanted:
            by_module.setdefault(module_name, []).append(name)
    added = dict(family.added_bias)

    def hook_for(index: int, layer: nn.Module, names: list[str], fused: bool):
        def hook(module, args, output):
            if isinstance(output, tuple):  # (output, scale): I-BERT's QuantLinear
                output = output[0]
            parts = _projection_parts(family, output, heads) if fused else None
            for name in names:
                tensor = parts[name] if parts else output
                captured[name][index] = tensor + layer.get_parameter(added[name]) if name in added else tensor
        return hook

    for index, layer in enumerate(layers):
        for module_name, names in by_module.items():
            names = [name for name in names if index in indices[name]]
            if not names:
                continue
            handle = layer.get_submodule(module_name).register_forward_hook(
                hook_for(index, layer, names, fused=module_name == family.fused_qkv))
            stack.callback(handle.remove)


@contextmanager
def _eager_attention(model: PreTrainedModel) -> Iterator[None]:
    """Run ``model`` with eager attention (SDPA and flash kernels never materialise the scores), then restore."""
    previous = model.config._attn_implementation
    if previous == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def encode_with_features(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         token_type_ids: torch.Tensor | None = None, *,
                         want: Wanted) -> tuple[Any, EncoderFeatures]:
    """Run ``model`` once; return its own output (``last_hidden_state`` etc.) and the wanted features.

    ``want`` is a subset of ENCODER_FEATURES, or a mapping of such names to layer numbers (1..L): then only those
    layers' scores and Q/K/V are captured and the other layers' entries are None. Every other field is None.
    """
    family = family_of(model.config)  # also refuses a config without a value the family needs
    dims = model_dims(model.config)
    by_layer = wanted_layers(want)
    want = check_wanted(want, ENCODER_FEATURES, f"a '{family.model_type}' encoder without heads")
    layers = model.base_model.get_submodule(family.layers)
    every = frozenset(range(len(layers)))
    indices = {name: every if by_layer is None else frozenset(n - 1 for n in by_layer[name]) for name in want}
    for name, wanted_indices in indices.items():
        outside = sorted(n + 1 for n in wanted_indices - every)
        if outside and name != "hidden_states":
            raise ConfigError(f"'{name}' of layer(s) {outside} asked of a {len(layers)}-layer "
                              f"'{family.model_type}' encoder, whose layers are 1..{len(layers)}")
    scores: list[torch.Tensor | None] = [None] * len(layers)
    qkv: dict[str, list[torch.Tensor | None]] = {name: [None] * len(layers) for name in QKV_FEATURES if name in want}
    with ExitStack() as stack:
        if "attention_scores" in want:
            stack.enter_context(_eager_attention(model))
            _capture_scores(stack, family, layers, scores, indices["attention_scores"])
        if qkv:
            _capture_qkv(stack, family, layers, want, qkv, indices, dims.num_attention_heads)
        output = model(input_ids=input_ids, attention_mask=attention_mask,
                       output_hidden_states="hidden_states" in want, **_encoder_inputs(model, token_type_ids))
    features = EncoderFeatures(attention_mask=attention_mask, dims=dims)
    if "hidden_states" in want:
        features.hidden_states = tuple(output.hidden_states)
    if "attention_scores" in want:
        features.attention_scores = tuple(scores)
    for name, tensors in qkv.items():
        setattr(features, name, tuple(tensors))
    for name in want - {"hidden_states"}:
        if any(getattr(features, name)[index] is None for index in indices[name]):
            raise RuntimeError(f"'{family.model_type}': some layers gave no '{name}'; check the family's module "
                               "names in multidistill/models/families.py")
    return output, features


def extract_features(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None = None, *, want: Wanted) -> EncoderFeatures:
    """The wanted ENCODER_FEATURES of one batch from any encoder in the family table (see `encode_with_features`)."""
    return encode_with_features(model, input_ids, attention_mask, token_type_ids, want=want)[1]
