"""Export a saved model folder to ONNX: one graph with every task head as its own output.

The encoder runs once per batch and each head reads its output, so one session serves every task.
``quantize="int8"`` adds a quantised copy: by default dynamic (int8 weights with one scale per output channel,
embedding tables kept fp32; activations are quantised on the fly), or static QDQ calibrated on training rows;
the graph may first go through onnxruntime's transformer fusion (`multidistill.export.onnx_variants`). A parity
check on each task's real dev rows compares PyTorch with the fp32 graph (logits) and with the int8 graph (main
metric, judged against its sampling error on that many rows; agreement recorded); an export that fails it is not
written (`multidistill.export.parity`). The folder's layout, and loading it (`OnnxModel`), are in
`multidistill.export.onnx_runtime`; both are re-exported here.
"""


from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
import torch
from torch import nn

from multidistill.config import DataConfig
from multidistill.data.collate import encode_texts, pad_id
from multidistill.errors import ConfigError, ModelError, require_choice
from multidistill.evaluation.evaluate import predict
from multidistill.evaluation.thresholds import saved_form, saved_thresholds
from multidistill.export.card import write_card
from multidistill.export.card_record import model_card_record
from multidistill.export.checks import (
    DEFAULT_MAX_METRIC_DROP_INT8,
    DEFAULT_PARITY_EXAMPLES,
    DEFAULT_TOLERANCE_FP32,
    check_onnx_options,
    check_parity_options,
    own_data,
)
from multidistill.export.onnx_runtime import (
    EXECUTION_MODES,
    EXPORT_FILE,
    FORMAT_VERSION,
    INPUT_NAMES,
    MODEL_FILES,
    OPTIMIZATION_LEVELS,
    THRESHOLDS_EXPORT_VERSION,
    OnnxModel,
    Precision,
    expected_stamp,
    onnx_modules,
    read_export_config,
)
from multidistill.export.onnx_variants import (
    ATTENTION_CHOICES,
    ATTENTION_MASK_VALUE,
    DEFAULT_CALIBRATION_EXAMPLES,
    GRAPH_CHOICES,
    INT8_METHODS,
    Attention,
    Graph,
    Int8Method,
    attention_implementation,
    calibration_batches,
    check_attention_mask_value,
    eager_attention,
    fused_variant,
    fusion_model_type,
    quantize_dynamic_int8,
    quantize_static_int8,
    soften_attention_mask,
)
from multidistill.export.parity import (
    NOISE_Z,
    ParityError,
    allowed_drop,
    compare_predictions,
    paired_delta_se,
    parity_failures,
    parity_sets,
)
from multidistill.export.tokenizer import for_export
from multidistill.models.backbone import load_tokenizer
from multidistill.models.bilstm import BiLSTMModel
from multidistill.models.families import quirks_of, unmet_need
from multidistill.models.loading import load_model
from multidistill.models.multitask import MultiTaskModel, pool
from multidistill.teachers.fingerprint import teacher_fingerprint
from multidistill.training.run_dir import refuse_foreign_overwrite
from multidistill.utils.arguments import as_list
from multidistill.utils.atomic import atomic_dir
from multidistill.utils.entry import api_call

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
QUANTIZE_CHOICES = ("none", "int8")
Quantize = Literal["none", "int8"]

# Re-exported: code that loads exports or reads parity numbers imports them from here.
__all__ = ["DEFAULT_OPSET", "EXECUTION_MODES", "EXPORT_FILE", "FORMAT_VERSION", "MODEL_FILES", "NOISE_Z",
           "OPTIMIZATION_LEVELS", "QUANTIZE_CHOICES", "AllHeads", "OnnxModel", "ParityError", "Precision", "Quantize",
           "allowed_drop", "compare_predictions", "export_onnx", "input_names", "paired_delta_se", "parity_failures",
           "read_export_config"]


# --- the exported module -------------------------------------------------------------------------


class AllHeads(nn.Module):
    """``forward(input_ids, attention_mask[, token_type_ids])`` -> one logits tensor per task, in ``tasks`` order.

    The encoder runs once: a Transformer's pooled vector feeds every head; a BiLSTM encodes the whole text once
    for all single-text heads and the two texts once for all pair heads.
    """

    def __init__(self, model: MultiTaskModel | BiLSTMModel, tasks: list[str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.task_names = list(tasks or model.tasks)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        model = self.model
        if isinstance(model, BiLSTMModel):
            return self._bilstm_heads(input_ids, attention_mask, token_type_ids)
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = model.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        pooled = pool(hidden, attention_mask, model.pooling)
        return tuple(model.heads[name](pooled) for name in self.task_names)

    def _bilstm_heads(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      token_type_ids: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        # Every text a head needs (the whole input for single-text tasks; text a and text b for pair tasks)
        # is encoded in ONE stacked batch: rows are independent, and the graph then holds each LSTM weight
        # once instead of once per encoding.
        model = self.model
        pairs = [model.tasks[name].pair for name in self.task_names]
        mask = attention_mask.bool()
        segments = [mask] if not all(pairs) else []
        if any(pairs):
            segment_b = model._segment_b(input_ids, mask, token_type_ids)
            segments += [mask & ~segment_b, segment_b]
        pooled = model._encode(input_ids.repeat(len(segments), 1), torch.cat(segments, 0))[0]
        pooled = pooled.reshape(len(segments), -1, pooled.shape[-1])  # (segments, batch, 2H)
        features = {False: pooled[0]} if not all(pairs) else {}
        if any(pairs):
            features[True] = model.pair_features(pooled[-2], pooled[-1])
        return tuple(model.heads[name](features[pair]) for name, pair in zip(self.task_names, pairs, strict=True))


def input_names(model: MultiTaskModel | BiLSTMModel, tokenizer) -> list[str]:
    """The graph's inputs: token types only when the model reads them (BERT-style encoders; a BiLSTM with a pair
    task whose tokenizer emits them, to split pairs: without one the exporter drops the unread input)."""
    if isinstance(model, BiLSTMModel):
        token_types = ("token_type_ids" in getattr(tokenizer, "model_input_names", ())
                       and any(task.pair for task in model.tasks.values()))
    else:
        token_types = bool(model._uses_token_types)
    return list(INPUT_NAMES if token_types else INPUT_NAMES[:2])


def _example_inputs(tokenizer, names: list[str]) -> dict[str, torch.Tensor]:
    """A small pair batch to trace with, ending in two padding columns: a mask without padding could let the
    encoder drop masking from the traced graph."""
    encoded = encode_texts(tokenizer, ["an example sentence to trace the graph", "a"], ["and its second text", "b"],
                           16)
    ids = encoded["input_ids"]
    example = {"input_ids": ids, "attention_mask": encoded["attention_mask"],
               "token_type_ids": encoded.get("token_type_ids", torch.zeros_like(ids))}
    padding = {"input_ids": pad_id(tokenizer), "attention_mask": 0, "token_type_ids": 0}
    return {name: torch.cat([example[name], torch.full((ids.shape[0], 2), padding[name])], 1) for name in names}


def _export_graph(model: MultiTaskModel | BiLSTMModel, tokenizer, path: Path, inputs: list[str],
                  outputs: dict[str, str], opset: int, source: Path, eager: bool = False) -> None:
    wrapper = AllHeads(model, list(outputs)).eval()
    example = _example_inputs(tokenizer, inputs)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in inputs}
    dynamic.update({name: {0: "batch"} for name in outputs.values()})
    packed = getattr(model, "pack_sequences", None)
    try:
        if packed is not None:
            model.pack_sequences = False  # the exportable BiLSTM path (also chosen inside torch.onnx.export)
        # The TorchScript exporter traces Hugging Face encoders reliably and keeps batch and sequence dynamic.
        with torch.no_grad(), warnings.catch_warnings(), eager_attention(model, eager):
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, tuple(example[name] for name in inputs), str(path), dynamo=False,
                              opset_version=opset, input_names=inputs, output_names=list(outputs.values()),
                              dynamic_axes=dynamic, do_constant_folding=True)
    except Exception as exc:
        raise ModelError(f"{source}: ONNX export (opset {opset}) failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if packed is not None:
            model.pack_sequences = packed
    onnx, _ = onnx_modules()
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ModelError(f"{source}: the exported ONNX graph is invalid: {exc}") from exc


def _stamp(path: Path, stamp: dict[str, str]) -> None:
    """Record which export a graph belongs to in its metadata (`OnnxModel.load` checks it against export.json,
    so a graph copied over from another export is refused) and drop the shapes the quantiser left in the graph
    (onnxruntime infers them again on load)."""
    onnx, _ = onnx_modules()
    model = onnx.load(str(path))
    model.graph.ClearField("value_info")
    del model.metadata_props[:]
    for key, value in stamp.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


# --- export ----------------------------------------------------------------------------------------


def _check_out_dir(model_dir: Path, out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"output folder {out_dir} is a file")
    target, source = out_dir.resolve(), model_dir.resolve()
    if source == target or target in source.parents:
        raise ConfigError(f"output folder {out_dir} would replace the model folder {model_dir}; choose another")
    if any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(f"output folder {out_dir} already exists and is not empty; "
                          "pass --overwrite (overwrite=True) to replace it")
    refuse_foreign_overwrite(out_dir, "output folder", (EXPORT_FILE,))


def _calibration_batches(model: MultiTaskModel | BiLSTMModel, tokenizer, data: DataConfig, examples: int,
                         seed: int, batch_size: int) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Static int8's calibration feed: ``examples`` training rows per task of the model (seeded), read with the
    model's own task specs, and what export.json records about them."""
    from multidistill.data.prepare import prepare_data

    names = [name for name in data.task_names if name in model.tasks and model.tasks[name].has_head]
    if not names:
        raise ConfigError(f"static int8 calibration: none of the data's tasks ({', '.join(data.task_names)}) is a "
                          f"head of the model ({', '.join(model.tasks)})")
    config = DataConfig(tasks=names, data_root=data.data_root, cache_dir=data.cache_dir, eval_split=data.eval_split,
                        task_specs=[model.tasks[name] for name in names])
    max_length = model.inference_length
    prepared = prepare_data(config, tokenizer, max_length, max_examples_per_task=None, seed=0, need_train=True)
    train_sets = {name: prepared.store.tokenized(name, "train", tokenizer, max_length) for name in names}
    batches = calibration_batches(prepared.tasks, train_sets, pad_id(tokenizer), examples=examples,
                                  seed=seed, batch_size=batch_size)
    rows = sum(min(examples, len(dataset)) for dataset in train_sets.values())
    return batches, {"rows": rows, "per_task": examples, "seed": seed, "tasks": names, "split": "train"}


def _write_meta(folder: Path, meta: dict) -> None:
    (folder / EXPORT_FILE).write_text(json.dumps(meta, indent=2) + "\n")


class ExportInfo(TypedDict, total=False):
    """export.json of an ONNX export, as `export_onnx` returns it (docs/export.md has every field): the graph
    ``files`` per precision, the ``variant`` written, the model's ``tasks`` and graph ``inputs`` / ``outputs``, and
    with a parity check (``parity_checked``) its numbers per precision and task (``parity``) and the reasons of
    any precision left out (``parity_failures``, with ``on_parity_failure="omit"``)."""

    format_version: int
    kind: str
    source: str
    source_fingerprint: str
    model_kind: str
    tasks: list[dict[str, Any]]
    max_length: int | None
    inputs: list[str]
    outputs: dict[str, str]
    files: dict[str, str]
    variant: dict[str, Any]
    opset: int
    parity_checked: bool
    parity: dict[str, dict[str, dict[str, Any]]]
    parity_failures: dict[str, list[str]]
    thresholds: dict[str, dict[str, float]]


def export_onnx(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, quantize: Quantize = "none",
                opset: int = DEFAULT_OPSET, parity_data: DataConfig | None = None,
                parity_tasks: list[str] | str | None = None, skip_parity: bool = False, data_root: str | None = None,
                cache_dir: str = ".cache/multidistill", tolerance_fp32: float | None = None,
                min_agreement_int8: float | None = None, max_metric_drop_int8: float | None = None,
                parity_examples: int | None = None, overwrite: bool = False, batch_size: int = 32,
                on_parity_failure: Literal["raise", "omit"] = "raise", graph: Graph = "plain",
                int8_method: Int8Method | None = None, per_channel: bool | None = None, attention: Attention = "eager",
                attention_mask_value: float | None = ATTENTION_MASK_VALUE, calibration_data: DataConfig | None = None,
                calibration_examples: int | None = None, calibration_seed: int | None = None,
                progress: bool = True) -> ExportInfo:
    """Export the model in ``model_dir`` to ``out_dir`` and return the export.json written there, as
    `multidistill export` does.

    Parity check (on by default, as in the CLI): the first ``parity_examples`` eval rows of each task (default 500)
    are run through PyTorch and every exported graph. They are read from ``parity_data`` (its data_root, cache_dir
    and eval_split; the tasks are ``parity_tasks`` or its task list, read with the model's own specs), or by
    default from the model's own tasks and dev files, under ``data_root`` or else the data root the model was
    trained with, caching tokenised views in ``cache_dir``. fp32 logits must be within ``tolerance_fp32``
    (default 1e-4); the int8 graph's main metric must not drop by more than `allowed_drop`
    (``max_metric_drop_int8``, default 0.01, or twice the paired standard error of the drop on that many rows when
    larger); with ``min_agreement_int8`` its predictions must also agree with PyTorch on at least that share of
    rows. ``skip_parity=True`` skips the check (export.json then says ``parity_checked: false``); a setting of
    the check given with it is refused.

    A failure raises `ParityError` (a ModelError) with the numbers. With ``on_parity_failure="omit"`` (the
    benchmark's choice) the failing precisions are left out of the folder instead, and export.json records
    why under ``parity_failures``; only when no precision passes is ParityError raised.

    The graph variant (`multidistill.export.onnx_variants`): ``graph="fused"`` traces with eager attention and
    runs onnxruntime's transformer optimizer (attention / LayerNorm / GELU fusion) on the fp32 graph that both
    precisions come from; a model it has no fusions for (a BiLSTM, another encoder family) is exported plain,
    with a warning and the reason in export.json. ``int8_method`` "dynamic" (the default) quantises activations
    on the fly; "static" writes a QDQ graph whose activation ranges are calibrated on ``calibration_examples``
    (default 256) training rows per task drawn with ``calibration_seed`` (default 0) from ``calibration_data``
    (default: the parity data). ``per_channel`` False uses one weight scale per tensor. ``attention`` is the
    attention a Transformer encoder is traced with: "eager" (the default: one additive mask for all layers) or
    "sdpa" (the model's usual kernel, whose trace guards each layer's mask against NaN; a fused graph needs
    eager). ``attention_mask_value`` is the additive mask an eager trace gives padded keys (default -60, which
    keeps onnxruntime's Softmax on its fast path; None keeps float32's lowest, PyTorch's own). export.json's
    ``variant`` records what was done. An option that would have no effect (an int8 setting without
    ``quantize="int8"``, a calibration setting without static int8, ...) is refused, as the CLI refuses it.

    The folder is written atomically: on any error nothing is left at ``out_dir`` (an existing folder, which
    needs ``overwrite=True`` unless empty, stays as it was). ``progress`` False: no bars or library notes.
    """
    with api_call("export_onnx", progress=progress):
        onnx_modules()
        require_choice("quantize", quantize, QUANTIZE_CHOICES)
        require_choice("graph", graph, GRAPH_CHOICES)
        if int8_method is not None:
            require_choice("int8_method", int8_method, INT8_METHODS)
        require_choice("attention", attention, ATTENTION_CHOICES)
        if attention_mask_value is not None:
            check_attention_mask_value(attention_mask_value)
        options = {"int8_method": int8_method, "per_channel": per_channel, "min_agreement_int8": min_agreement_int8,
                   "max_metric_drop_int8": max_metric_drop_int8, "calibration_examples": calibration_examples,
                   "calibration_seed": calibration_seed, "tolerance_fp32": tolerance_fp32,
                   "parity_examples": parity_examples}
        check_onnx_options(quantize=quantize, int8_method=int8_method, attention=attention,
                           attention_mask_value=attention_mask_value, options=options)
        static = quantize == "int8" and int8_method == "static"
        check_parity_options(skip_parity=skip_parity, parity_data=parity_data, data_root=data_root, options=options,
                             reads_training_rows=static)
        if graph == "fused" and attention != "eager":
            raise ConfigError("a fused graph is traced with eager attention (onnxruntime's attention fusion matches "
                              "its mask, not SDPA's): use attention 'eager' (--attention eager) or graph 'plain'")
        if on_parity_failure not in ("raise", "omit"):
            raise ConfigError(f"on_parity_failure {on_parity_failure!r}: choose raise or omit")
        tolerance_fp32 = DEFAULT_TOLERANCE_FP32 if tolerance_fp32 is None else tolerance_fp32
        parity_examples = DEFAULT_PARITY_EXAMPLES if parity_examples is None else parity_examples
        max_metric_drop_int8 = DEFAULT_MAX_METRIC_DROP_INT8 if max_metric_drop_int8 is None else max_metric_drop_int8
        per_channel = True if per_channel is None else per_channel
        calibration_examples = calibration_examples or DEFAULT_CALIBRATION_EXAMPLES
        calibration_seed = calibration_seed or 0
        parity_tasks = as_list(parity_tasks, "parity_tasks", commas=True)
        model_dir, out_dir = Path(model_dir), Path(out_dir)
        _check_out_dir(model_dir, out_dir, overwrite)
        if parity_data is None and (not skip_parity or (static and calibration_data is None)):
            parity_data = own_data(model_dir, data_root, cache_dir)  # as the CLI reads it: the model's own rows
        calibration_data = calibration_data or parity_data
        if skip_parity:
            parity_data = None
        model = load_model(model_dir).eval()  # safetensors + JSON; never unpickles
        thresholds = saved_thresholds(model_dir)
        backbone = getattr(model, "backbone", None)
        if backbone is not None:
            problem = unmet_need(backbone.config, quirks_of(backbone.config).onnx_needs, "its ONNX export needs")
            if problem:
                raise ModelError(f"{model_dir}: cannot export this '{backbone.config.model_type}' encoder to ONNX: "
                                 f"{problem}")
        tokenizer = load_tokenizer(str(model_dir))
        # Read (and validate) the parity data before any export work, so bad data fails fast.
        eval_sets = parity_sets(model, tokenizer, parity_data, parity_tasks, parity_examples) if parity_data else None

        inputs = input_names(model, tokenizer)
        outputs = {name: f"logits_{name}" for name in model.tasks}
        files = {"fp32": MODEL_FILES["fp32"]}
        variant: dict[str, Any] = {"graph": "plain"}
        traced = attention_implementation(model)
        if traced is not None:  # a Transformer (a BiLSTM has no attention)
            variant["attention"] = "eager" if attention == "eager" else traced
        elif attention != "eager" or attention_mask_value != ATTENTION_MASK_VALUE:  # None: 'lowest', given
            raise ConfigError(f"{model_dir} is a BiLSTM, which has no self-attention: --attention and "
                              "--attention-mask-value apply to Transformer encoders; leave them out")
        optimizer_type = None
        if graph == "fused":
            optimizer_type, reason = fusion_model_type(model)
            if optimizer_type is None:  # never silently: the export says it is plain, and why
                variant["graph_note"] = f"fused graph requested but exported plain: {reason}"
                logger.warning("%s: %s", model_dir, variant["graph_note"])
        calibration = None
        if static:
            calibration = _calibration_batches(model, tokenizer, calibration_data, calibration_examples,
                                               calibration_seed, batch_size)
        with atomic_dir(out_dir) as tmp:
            _export_graph(model, tokenizer, tmp / files["fp32"], inputs, outputs, opset, model_dir,
                          eager=attention == "eager")
            if optimizer_type is not None:
                variant.update(fused_variant(tmp / files["fp32"], model, optimizer_type))
                if "graph_note" in variant:  # attention fused in only some layers: never read as a whole fusion
                    logger.warning("%s: %s", model_dir, variant["graph_note"])
            if attention_mask_value is not None and variant.get("attention") == "eager":
                # after fusion: a fused Attention op takes the mask itself, and what is left of it is not changed
                variant["attention_mask"] = {"value": attention_mask_value,
                                             "constants_changed": soften_attention_mask(tmp / files["fp32"],
                                                                                        attention_mask_value)}
            if quantize == "int8":
                files["int8"] = MODEL_FILES["int8"]
                if calibration is None:
                    variant["int8"] = quantize_dynamic_int8(tmp / files["fp32"], tmp / files["int8"],
                                                            per_channel=per_channel)
                else:
                    variant["int8"] = quantize_static_int8(tmp / files["fp32"], tmp / files["int8"], calibration[0],
                                                           inputs, per_channel=per_channel)
                    variant["int8"]["calibration_rows"] = calibration[1]
            for_export(tokenizer, model.inference_length).save_pretrained(tmp)
            meta: ExportInfo = {
                "format_version": FORMAT_VERSION, "kind": "onnx", "source": str(model_dir.resolve()),
                # what the source held (weights and specs), so a reuse can tell a retrained model in the same folder
                "source_fingerprint": teacher_fingerprint(model_dir, with_thresholds=True),
                "model_kind": "bilstm" if isinstance(model, BiLSTMModel) else "multitask",
                "tasks": [task.model_dump(mode="json") for task in model.tasks.values()],
                # the length its tokenizer truncates at, which `predict` over the export reads
                "max_length": model.inference_length, "inputs": inputs, "outputs": outputs, "files": dict(files),
                "variant": variant,
            }
            if thresholds:  # multilabel decision thresholds saved with the model: `predict` over the export reads them
                meta["format_version"] = THRESHOLDS_EXPORT_VERSION
                meta["thresholds"] = saved_form(model.tasks, thresholds)
            for precision, name in files.items():
                _stamp(tmp / name, expected_stamp(meta, precision))
            _write_meta(tmp, {**meta, "opset": opset})
            if eval_sets is not None:
                pad_token_id = pad_id(tokenizer)
                expected = {name: predict(model, model.tasks[name], dataset, batch_size=batch_size,
                                          pad_token_id=pad_token_id, device=torch.device("cpu"))
                            for name, dataset in eval_sets.items()}
                parity, failures = {}, {}
                for precision in files:
                    # Loading through OnnxModel also proves the folder reads back as written.
                    exported = OnnxModel.load(tmp, precision, with_tokenizer=False)
                    parity[precision] = {
                        name: compare_predictions(
                            model.tasks[name], expected[name],
                            exported.predict(name, dataset, batch_size=batch_size, pad_token_id=pad_token_id),
                            np.asarray(dataset["label"]), thresholds.get(name))
                        for name, dataset in eval_sets.items()}
                    found = parity_failures(precision, parity[precision], tolerance_fp32=tolerance_fp32,
                                            min_agreement_int8=min_agreement_int8,
                                            max_metric_drop_int8=max_metric_drop_int8)
                    if found:
                        failures[precision] = found
                if failures and (on_parity_failure == "raise" or len(failures) == len(files)):
                    listed = [reason for reasons in failures.values() for reason in reasons]
                    raise ParityError(f"ONNX export of {model_dir} failed its parity check on "
                                      f"{parity_data.eval_split} data, so nothing was written to {out_dir}:\n  "
                                      + "\n  ".join(listed), parity, failures)
                for precision in failures:  # "omit": a graph that failed is not served from this folder
                    (tmp / files.pop(precision)).unlink()
                meta["files"] = dict(files)
                meta["parity"] = parity
                meta["parity_split"] = parity_data.eval_split  # the rows it checked: dev, or benchmark --split test
                if failures:
                    meta["parity_failures"] = failures
            meta["opset"] = opset
            meta["parity_checked"] = parity_data is not None  # without parity_data nothing compared the graphs
            _write_meta(tmp, meta)
            write_card(tmp, model_card_record(model_dir, "onnx", export=meta))
        return meta
