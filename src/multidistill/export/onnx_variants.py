"""The graph variants an ONNX export can take, all from onnxruntime itself: the transformer graph optimizer
(attention / LayerNorm / GELU fusion), dynamic int8 and static (QDQ, calibrated) int8 quantisation, and the attention
the encoder is traced with.

`export_onnx` picks among them; each choice, and any fallback, is recorded in export.json under ``variant``
and printed by `multidistill export`, so an export always says what it holds. Measured on the demo's 3-layer
student in docs/benchmarks.md ("Issue 16: int8 inference"), which is why the defaults are a plain graph and
dynamic per-channel int8, traced with eager attention whose padding mask is -60 rather than float32's lowest.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import nn

from multidistill.data.collate import collate
from multidistill.errors import ConfigError, ModelError
from multidistill.models.families import FAMILIES

Graph = Literal["plain", "fused"]
Int8Method = Literal["dynamic", "static"]
Attention = Literal["eager", "sdpa"]
GRAPH_CHOICES = ("plain", "fused")
INT8_METHODS = ("dynamic", "static")
# The attention a Transformer is traced with. Eager: the padding mask becomes one additive (batch, 1, len, len)
# tensor built once and added in every layer; SDPA's trace adds IsNaN / Where guards per layer (7% of the int8
# graph's time in docs/benchmarks.md). Both compute the same function (the fp32 parity check holds either way).
ATTENTION_CHOICES = ("eager", "sdpa")
# The eager trace's additive mask gives padded keys float32's lowest value. onnxruntime's Softmax takes a slow path
# when inputs lie far below their row's largest (by about 87, where exp underflows float32): on a batch of
# 32x12x54x54 scores with a quarter of the keys masked it took 2.1 ms against 0.4 ms unmasked, a fifth of the int8
# graph's time (docs/benchmarks.md, "Third round"). A mask of -60 keeps Softmax on its fast path and still gives a
# padded key exp(-60), about 1e-26, of its row's largest weight: below float32's resolution (6e-8) unless its raw
# score exceeds every real key's by about 40 or more. The parity check compares the graph with PyTorch's own mask.
ATTENTION_MASK_VALUE = -60.0
ATTENTION_MASK_CEILING = -20.0  # higher, a padded key could keep a visible weight (exp(-20) = 2e-9)
# Hugging Face model type -> onnxruntime optimizer model type, from the family table's `ort_fusion` (its "bert"
# fusions match BERT-style encoder blocks; a pattern that does not match is left as it was, and the parity check
# runs on the result).
FUSION_MODEL_TYPES: dict[str, str] = {name: family.ort_fusion for name, family in FAMILIES.items()
                                      if family.ort_fusion is not None}
# The operators one layer's self-attention is fused into (`fused_variant` counts them against the layers).
FUSED_ATTENTION_OPS = ("Attention", "MultiHeadAttention")
# Dynamic int8 rewrites these ops: the Transformer's MatMuls (or fused Attention) and the BiLSTM's LSTM. Embedding
# tables (Gather) stay fp32: quantising them too cut a 6-layer MiniLM from 58 to 22 MB but moved its CoLA Matthews
# score by 0.016, past the parity check's default 0.01.
DYNAMIC_OPS = ["MatMul", "Attention", "LSTM"]
# Static QDQ quantises the MatMuls only: the heads (Gemm) read the mean-pooled vector, whose division has no
# calibrated range in a fused graph, and they are a negligible share of the time.
STATIC_OPS = ["MatMul"]
DEFAULT_CALIBRATION_EXAMPLES = 256


@contextmanager
def _quiet_quantiser() -> Iterator[None]:
    """The quantiser logs advice at WARNING on the root logger and warns through `warnings`: keep the CLI clean."""
    root = logging.getLogger()
    level = root.level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root.setLevel(max(level, logging.ERROR))
            yield
    finally:
        root.setLevel(level)


# --- transformer fusion ----------------------------------------------------------------------------


def fusion_model_type(model: nn.Module) -> tuple[str | None, str]:
    """onnxruntime's optimizer model type for ``model`` (None when it has no fusions for it) and a sentence
    saying why."""
    backbone = getattr(model, "backbone", None)
    model_type = getattr(getattr(backbone, "config", None), "model_type", None)
    if model_type is None:
        return None, (f"onnxruntime's transformer optimizer has no fusions for a {type(model).__name__} "
                      "(it fuses Transformer encoders)")
    if model_type not in FUSION_MODEL_TYPES:
        return None, (f"onnxruntime's transformer optimizer has no fusions for model_type '{model_type}' "
                      f"(supported here: {', '.join(FUSION_MODEL_TYPES)})")
    return FUSION_MODEL_TYPES[model_type], f"model_type '{model_type}' fused as '{FUSION_MODEL_TYPES[model_type]}'"


def attention_implementation(model: nn.Module) -> str | None:
    """The attention implementation ``model``'s encoder runs ("sdpa", "eager", ...); None for a model without
    one (a BiLSTM)."""
    backbone = getattr(model, "backbone", None)
    return getattr(getattr(backbone, "config", None), "_attn_implementation", None)


@contextmanager
def eager_attention(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Trace ``model``'s encoder with eager attention: its additive mask is built once for every layer, with none
    of the SDPA trace's NaN guards, and it is the pattern onnxruntime's attention fusion matches."""
    backbone = getattr(model, "backbone", None)
    previous = getattr(getattr(backbone, "config", None), "_attn_implementation", None)
    if not enabled or previous in (None, "eager"):
        yield
        return
    backbone.set_attn_implementation("eager")
    try:
        yield
    finally:
        backbone.set_attn_implementation(previous)


def fuse_graph(path: Path, optimizer_type: str, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Run onnxruntime's transformer optimizer on ``path`` in place (Python fusions only: the result runs on any
    CPU) and return the count of each fused operator."""
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet_quantiser():
        optimized = optimize_model(str(path), model_type=optimizer_type, num_heads=num_heads,
                                   hidden_size=hidden_size, opt_level=0)
        optimized.save_model_to_file(str(path))
    return {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}


def fused_variant(path: Path, model: nn.Module, optimizer_type: str) -> dict[str, Any]:
    """Fuse the graph of ``model`` at ``path`` in place (`fuse_graph`) and return what export.json's ``variant``
    records of it: graph "fused", the optimizer model type, the fused operators and, when the optimizer fused the
    self-attention of fewer layers than the encoder has, a ``graph_note`` that says so.

    onnxruntime leaves a pattern it does not match as it was, so a fused graph can hold some layers' attention
    unfused (BigBird without Q/K/V biases matches none; Megatron-BERT's first layer does not match): the graph is
    still exact (the parity check runs on it), but its record must not read as a whole fusion."""
    config = model.backbone.config
    family = FAMILIES[config.model_type]
    layers = int(getattr(config, family.num_layers_key))
    fused_ops = fuse_graph(path, optimizer_type, int(getattr(config, family.num_heads_key)),
                           int(getattr(config, family.hidden_size_key)))
    record: dict[str, Any] = {"graph": "fused", "optimizer_model_type": optimizer_type, "fused_ops": fused_ops}
    attention = sum(fused_ops.get(name, 0) for name in FUSED_ATTENTION_OPS)
    if attention < layers:
        record["graph_note"] = (f"attention fused in {attention or 'none'} of {layers} layers: onnxruntime's "
                                f"'{optimizer_type}' attention pattern did not match the other "
                                f"{layers - attention}, which run unfused")
    return record


# --- attention mask ---------------------------------------------------------------------------------


def check_attention_mask_value(value: float) -> None:
    """Refuse a padding mask value that would leave padded keys a visible weight, or one float32 cannot hold
    (NaN, an infinity, or beyond float32's lowest, which becomes -inf: 0 x -inf is NaN in a (1 - mask) x value
    mask)."""
    lowest = float(np.finfo(np.float32).min)
    if not (lowest <= value <= ATTENTION_MASK_CEILING):
        raise ConfigError(f"attention mask value {value:g}: use a number from {lowest:g} to {ATTENTION_MASK_CEILING:g} "
                          "(a padded key keeps a weight of exp(value) of its row's largest), or 'lowest' (None in "
                          "Python) for float32's lowest")


def soften_attention_mask(path: Path, value: float) -> int:
    """Give the additive attention mask of the graph at ``path`` the value ``value`` for padded keys instead of
    float32's lowest, in place, and return how many constants were changed.

    Only scalar constants (or initializers) at or below -1e38 that a Softmax's input is computed from change: the
    mask of an eager trace, not a masked max-pooling (it comes after the encoder) nor anything else."""
    import onnx
    from onnx import numpy_helper

    check_attention_mask_value(value)
    model = onnx.load(str(path))
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    seen: set[str] = set()
    pending = [name for node in graph.node if node.op_type == "Softmax" for name in node.input]
    while pending:  # every tensor the Softmax inputs are computed from
        name = pending.pop()
        if name in seen or name not in producers and name not in initializers:
            continue
        seen.add(name)
        if name in producers:
            pending.extend(producers[name].input)

    def lowest(tensor) -> bool:
        array = numpy_helper.to_array(tensor)
        return array.dtype == np.float32 and array.size == 1 and float(array.reshape(())) <= -1e38

    def softened(tensor):
        array = np.full(numpy_helper.to_array(tensor).shape, value, dtype=np.float32)
        return numpy_helper.from_array(array, tensor.name)

    changed = 0
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] in seen:
            for attribute in node.attribute:
                if attribute.name == "value" and lowest(attribute.t):
                    attribute.t.CopyFrom(softened(attribute.t))
                    changed += 1
    for name in seen & set(initializers):
        if lowest(initializers[name]):
            initializers[name].CopyFrom(softened(initializers[name]))
            changed += 1
    if changed:
        onnx.save(model, str(path))
    return changed


# --- int8 ------------------------------------------------------------------------------------------


def quantize_dynamic_int8(source: Path, target: Path, *, per_channel: bool = True) -> dict[str, Any]:
    """Dynamic int8: int8 weights (one scale per output channel unless ``per_channel`` is False; one scale per
    tensor loses accuracy on these models), activations quantised on the fly. Returns what was done.

    ``reduce_range`` keeps weights to 7 bits: x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply
    uint8 activations by int8 weights with saturating 16-bit sums, which full 8-bit weights can overflow (on a
    tiny BERT it moved logits by 0.5 instead of 0.01). onnxruntime's pre-processing (`quant_pre_process`) is
    not needed for dynamic quantisation, and its symbolic shape inference fails on Hugging Face graphs.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet_quantiser():
            # DefaultTensorType: a fused graph's contrib ops (Attention, SkipLayerNormalization) have no ONNX shape
            # inference, and their outputs are float.
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=True, op_types_to_quantize=DYNAMIC_OPS,
                             extra_options={"DefaultTensorType": TensorProto.FLOAT})
    except Exception as exc:
        raise ModelError(f"{source}: dynamic int8 quantisation failed: {type(exc).__name__}: {exc}") from exc
    return {"method": "dynamic", "per_channel": per_channel, "reduce_range": True, "ops": DYNAMIC_OPS}


def calibration_batches(tasks: dict, train_sets: dict, pad_token_id: int, *, examples: int, seed: int,
                        batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    """Token batches of ``examples`` training rows per task, drawn with ``seed`` (the same seed, the same rows).

    ``tasks`` maps a task name to its Task and ``train_sets`` to its tokenised training rows. Rows are sorted by
    length before batching, as inference batches them.
    """
    rng = np.random.default_rng(seed)
    batches = []
    for name, dataset in train_sets.items():
        picked = np.sort(rng.choice(len(dataset), size=min(examples, len(dataset)), replace=False))
        rows = dataset[[int(i) for i in picked]]
        order = np.argsort([-len(ids) for ids in rows["input_ids"]], kind="stable")
        rows = {key: [values[i] for i in order] for key, values in rows.items()}
        for start in range(0, len(order), batch_size):
            chunk = {key: values[start:start + batch_size] for key, values in rows.items()}
            batch = collate(tasks[name], chunk, pad_token_id)
            batches.append({key: batch[key].numpy() for key in ("input_ids", "attention_mask", "token_type_ids")
                            if key in batch})
    return batches


def quantize_static_int8(source: Path, target: Path, batches: list[dict[str, np.ndarray]], input_names: list[str],
                         *, per_channel: bool = True) -> dict[str, Any]:
    """Static int8 in QDQ form: activation ranges calibrated (min/max) on ``batches`` of training rows, int8
    weights (per output channel unless ``per_channel`` is False), uint8 activations."""
    from onnx import TensorProto
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not batches:
        raise ConfigError("static int8 quantisation needs training rows to calibrate on; none were found")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{name: batch[name] for name in input_names} for batch in batches])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    try:
        with _quiet_quantiser():
            quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=STATIC_OPS, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"DefaultTensorType": TensorProto.FLOAT})
    except Exception as exc:
        raise ModelError(f"{source}: static int8 quantisation failed: {type(exc).__name__}: {exc}") from exc
    import onnx

    if not any(node.op_type == "QuantizeLinear" for node in onnx.load(str(target)).graph.node):
        # The quantiser leaves activations whose type it cannot infer in float, as it does after the fused
        # graph's contrib ops: the result would hold int8 weights but compute in fp32.
        raise ModelError(f"{source}: static int8 quantisation found no activation it could quantise (only weights "
                         "would be int8); onnxruntime cannot type the outputs of a fused graph's operators, so use "
                         "--graph plain with --int8-method static, or --int8-method dynamic")
    return {"method": "static", "format": "QDQ", "per_channel": per_channel, "reduce_range": True, "ops": STATIC_OPS,
            "calibration": "minmax"}


def describe(variant: dict[str, Any]) -> str:
    """One line saying which variant an export holds (printed by `multidistill export`)."""
    graph = variant.get("graph", "plain")
    text = f"graph: {graph}"
    if variant.get("attention"):
        text += f", {variant['attention']} attention"
    mask = variant.get("attention_mask")
    if mask:
        text += (f" (padding mask {mask['value']:g})" if mask["constants_changed"] else
                 f" (padding mask {mask['value']:g} requested; the graph has no float32-lowest mask to change)")
    if variant.get("fused_ops"):
        text += " (" + ", ".join(f"{name} x{count}" for name, count in variant["fused_ops"].items()) + ")"
    if variant.get("graph_note"):
        text += f" [{variant['graph_note']}]"
    int8 = variant.get("int8")
    if int8:
        scale = "per-channel" if int8["per_channel"] else "per-tensor"
        text += f"; int8: {int8['method']}{' QDQ' if int8['method'] == 'static' else ''}, {scale} weights"
        calibration = int8.get("calibration_rows")
        if calibration:
            text += f", calibrated on {calibration['rows']} training rows (seed {calibration['seed']})"
    return text
