"""Export a saved model folder to ONNX: one graph with every task head as its own output.

The encoder runs once per batch and each head reads its output, so one session serves every task.
``quantize="int8"`` adds a quantised copy: by default dynamic (int8 weights with one scale per output channel,
embedding tables kept fp32; activations are quantised on the fly), or static QDQ calibrated on training rows;
the graph may first go through onnxruntime's transformer fusion (`multidistill.export.onnx_variants`). A parity
check on each task's real dev rows compares PyTorch with the fp32 graph (logits) and with the int8 graph (main
metric, judged against its sampling error on that many rows; agreement recorded); an export that fails it is not
written.

Folder layout (read by `OnnxModel.load`)::

    export.json        format_version, kind "onnx", source, model_kind, tasks, max_length, inputs,
                       outputs (task -> output name), files (precision -> file), parity, opset,
                       parity_failures (precision -> reasons; only for graphs left out by on_parity_failure="omit"),
                       variant (graph plain | fused with its fused ops or why not; the attention traced; int8 method,
                       scales, calibration)
    model.onnx         fp32 graph
    model.int8.onnx    int8 graph (quantize="int8" only)
    tokenizer files    as written by `tokenizer.save_pretrained`
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from multidistill.config import DataConfig
from multidistill.data.batches import map_batches
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError, UnknownTaskError, require_choice
from multidistill.evaluation.evaluate import predict
from multidistill.evaluation.metrics import compute_metrics
from multidistill.export.card import write_card
from multidistill.export.card_record import model_card_record
from multidistill.export.onnx_variants import (
    ATTENTION_CHOICES,
    DEFAULT_CALIBRATION_EXAMPLES,
    GRAPH_CHOICES,
    INT8_METHODS,
    Attention,
    Graph,
    Int8Method,
    attention_implementation,
    calibration_batches,
    eager_attention,
    fuse_graph,
    fusion_model_type,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from multidistill.models.backbone import load_tokenizer
from multidistill.models.bilstm import BiLSTMModel
from multidistill.models.loading import load_model
from multidistill.models.multitask import MultiTaskModel, pool
from multidistill.training.run_dir import refuse_foreign_overwrite
from multidistill.utils.atomic import atomic_dir
from multidistill.utils.manifest import read_versioned_json

logger = logging.getLogger(__name__)

EXPORT_FILE = "export.json"
FORMAT_VERSION = 1
MODEL_FILES: dict[str, str] = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
DEFAULT_OPSET = 17
QUANTIZE_CHOICES = ("none", "int8")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# onnxruntime's session-level graph optimisation (`OnnxModel.load(..., optimization=...)`) and execution modes.
OPTIMIZATION_LEVELS = ("all", "extended", "basic", "disabled")
EXECUTION_MODES = ("sequential", "parallel")

Precision = Literal["fp32", "int8"]
Quantize = Literal["none", "int8"]


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - both are dependencies; guards a broken install
        raise ModelError(f"ONNX export needs the onnx and onnxruntime packages ({exc}); "
                         "install them with `pip install onnx onnxruntime`") from exc
    return onnx, onnxruntime


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
    """The graph's inputs: token types only when the model reads them (BERT-style encoders; a BiLSTM whose
    tokenizer emits them, to split pairs)."""
    if isinstance(model, BiLSTMModel):
        token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    else:
        token_types = bool(model._uses_token_types)
    return list(INPUT_NAMES if token_types else INPUT_NAMES[:2])


def _example_inputs(tokenizer, names: list[str]) -> dict[str, torch.Tensor]:
    """A small pair batch to trace with, ending in two padding columns: a mask without padding could let the
    encoder drop masking from the traced graph."""
    encoded = tokenizer(["an example sentence to trace the graph", "a"], ["and its second text", "b"],
                        padding=True, truncation=True, max_length=16, return_tensors="pt")
    ids = encoded["input_ids"].long()
    token_types = encoded.get("token_type_ids")
    example = {"input_ids": ids, "attention_mask": encoded["attention_mask"].long(),
               "token_type_ids": torch.zeros_like(ids) if token_types is None else token_types.long()}
    padding = {"input_ids": tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0}
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
    onnx, _ = _onnx_modules()
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ModelError(f"{source}: the exported ONNX graph is invalid: {exc}") from exc


def _stamp(path: Path, stamp: dict[str, str]) -> None:
    """Record which export a graph belongs to in its metadata (`OnnxModel.load` checks it against export.json,
    so a graph copied over from another export is refused) and drop the shapes the quantiser left in the graph
    (onnxruntime infers them again on load)."""
    onnx, _ = _onnx_modules()
    model = onnx.load(str(path))
    model.graph.ClearField("value_info")
    del model.metadata_props[:]
    for key, value in stamp.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _expected_stamp(meta: dict, precision: str) -> dict[str, str]:
    return {f"multidistill.{key}": value for key, value in (
        ("source", meta["source"]), ("model_kind", meta["model_kind"]), ("precision", precision),
        ("tasks", json.dumps([task["name"] for task in meta["tasks"]])))}


# --- loading and running an export ---------------------------------------------------------------


def read_export_config(directory: str | Path) -> dict:
    """Validate ``directory/export.json`` and return it; problems raise a ModelError naming the file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"export directory {directory} does not exist")
    path = directory / EXPORT_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing (is {directory} a folder written by `multidistill export`?)")
    meta = read_versioned_json(path, FORMAT_VERSION, ModelError)
    if meta.get("kind") != "onnx":
        raise ModelError(f"{path}: kind {meta.get('kind')!r} is not 'onnx'")
    try:
        tasks = [Task.model_validate(spec) for spec in meta["tasks"]]
        inputs, outputs, files = meta["inputs"], meta["outputs"], meta["files"]
        if not tasks:
            raise ValueError("no tasks")
        if list(inputs[:2]) != list(INPUT_NAMES[:2]) or any(name not in INPUT_NAMES for name in inputs) \
                or len(set(inputs)) != len(inputs):
            raise ValueError(f"inputs {inputs!r} must be input_ids, attention_mask[, token_type_ids]")
        if not isinstance(outputs, dict) or sorted(outputs) != sorted(task.name for task in tasks) \
                or not all(isinstance(name, str) for name in outputs.values()):
            raise ValueError(f"outputs must map each task ({', '.join(t.name for t in tasks)}) to an output name")
        if not isinstance(files, dict) or not files or any(key not in MODEL_FILES for key in files) \
                or not all(isinstance(name, str) and name and Path(name).name == name for name in files.values()):
            raise ValueError(f"files must map precisions ({', '.join(MODEL_FILES)}) to file names in the folder")
        if not isinstance(meta["source"], str) or meta["model_kind"] not in ("multitask", "bilstm"):
            raise ValueError("source must be a path and model_kind multitask or bilstm")
        max_length = meta.get("max_length")
        if max_length is not None and (not isinstance(max_length, int) or max_length <= 0):
            raise ValueError(f"max_length {max_length!r} is not a positive integer")
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise ModelError(f"{path}: invalid export config: {exc}") from exc
    return meta


def _as_int64(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(values), dtype=np.int64)


class OnnxModel:
    """An exported model run by onnxruntime on CPU; `logits` mirrors ``MultiTaskModel(...).logits``."""

    def __init__(self, session, meta: dict, directory: Path, precision: str, tokenizer=None) -> None:
        self.session = session
        self.meta = meta
        self.directory = directory
        self.precision = precision
        self.path = directory / meta["files"][precision]
        self.tasks: dict[str, Task] = {spec["name"]: Task.model_validate(spec) for spec in meta["tasks"]}
        self.max_length: int | None = meta.get("max_length")
        self.inputs: list[str] = list(meta["inputs"])
        self.outputs: dict[str, str] = dict(meta["outputs"])
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, export_dir: str | Path, precision: Precision = "fp32", *, threads: int | None = None,
             with_tokenizer: bool = True, optimization: str = "all", execution_mode: str = "sequential") -> OnnxModel:
        """Open ``export_dir``'s ``precision`` graph after checking it matches export.json.

        ``threads`` sets onnxruntime's intra-op threads (default: ``torch.get_num_threads()``). ``optimization``
        is onnxruntime's graph optimisation level when it loads the graph (one of `OPTIMIZATION_LEVELS`; "all",
        its default, was as fast as any at batch 32 in docs/benchmarks.md) and ``execution_mode`` runs independent
        nodes one after another ("sequential") or side by side ("parallel"). The tokenizer is loaded now unless
        ``with_tokenizer`` is False (then on first use of `tokenizer`).
        """
        directory = Path(export_dir)
        require_choice("precision", precision, MODEL_FILES)
        require_choice("optimization", optimization, OPTIMIZATION_LEVELS)
        require_choice("execution_mode", execution_mode, EXECUTION_MODES)
        meta = read_export_config(directory)
        config_path = directory / EXPORT_FILE
        if precision in (meta.get("parity_failures") or {}):
            raise ModelError(f"{config_path}: the {precision} graph failed its parity check and was not kept: "
                             + "; ".join(meta["parity_failures"][precision]))
        if precision not in meta["files"]:
            raise ModelError(f"{config_path}: the export has no {precision} model (it has: "
                             f"{', '.join(meta['files'])}); export with --quantize int8 to get one")
        path = directory / meta["files"][precision]
        if not path.is_file():
            raise ModelError(f"{path} is missing (listed in {config_path})")
        session = _session(path, threads, optimization, execution_mode)
        _check_signature(session, meta, precision, path, config_path)
        model = cls(session, meta, directory, precision)
        if with_tokenizer:
            model._tokenizer = load_tokenizer(str(directory))
        return model

    @property
    def tokenizer(self):
        """The tokenizer saved with the export."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(str(self.directory))
        return self._tokenizer

    def _feed(self, input_ids, attention_mask, token_type_ids) -> dict[str, np.ndarray]:
        ids, mask = _as_int64(input_ids), _as_int64(attention_mask)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(f"input_ids {ids.shape} and attention_mask {mask.shape} must be equal (batch, length)")
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            # Zeros are what the PyTorch model assumes without token types (BERT and the BiLSTM alike).
            feed["token_type_ids"] = np.zeros_like(ids) if token_type_ids is None else _as_int64(token_type_ids)
        return feed

    def logits(self, task: str, input_ids, attention_mask, token_type_ids=None) -> np.ndarray:
        """``task``'s head outputs (batch, labels) for int64 token arrays (numpy or torch) of shape (batch, length)."""
        if task not in self.outputs:
            raise UnknownTaskError(f"the export has no head for task '{task}'; it has: {', '.join(self.outputs)}")
        return self._run([self.outputs[task]], self._feed(input_ids, attention_mask, token_type_ids))[0]

    def all_logits(self, input_ids, attention_mask, token_type_ids=None) -> dict[str, np.ndarray]:
        """Every task's head outputs from one run of the graph."""
        names = list(self.outputs)
        values = self._run([self.outputs[n] for n in names], self._feed(input_ids, attention_mask, token_type_ids))
        return dict(zip(names, values, strict=True))

    def _run(self, outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(outputs, feed)
        except Exception as exc:  # onnxruntime's own error types: a graph it loads but cannot run, bad shapes
            raise ModelError(f"{self.path}: onnxruntime failed to run it: {exc}") from exc

    def predict(self, task: str | Task, dataset, *, batch_size: int = 64,
                pad_token_id: int | None = None) -> np.ndarray:
        """Head outputs for every row of a tokenised view, in order (like `multidistill.evaluation.predict`)."""
        spec = self.tasks.get(task if isinstance(task, str) else task.name)
        if spec is None:
            raise UnknownTaskError(f"the export has no head for task '{task}'; it has: {', '.join(self.outputs)}")
        if pad_token_id is None:
            pad_token_id = (self._tokenizer.pad_token_id if self._tokenizer is not None else 0) or 0
        return map_batches(spec, dataset, lambda batch: self.logits(
            spec.name, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")),
            batch_size=batch_size, pad_token_id=pad_token_id)


def _session(path: Path, threads: int | None, optimization: str = "all", execution_mode: str = "sequential"):
    _, ort = _onnx_modules()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1 if execution_mode == "sequential" else options.intra_op_num_threads
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[optimization]
    options.execution_mode = (ort.ExecutionMode.ORT_SEQUENTIAL if execution_mode == "sequential"
                              else ort.ExecutionMode.ORT_PARALLEL)
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for corrupt or unsupported graphs
        raise ModelError(f"{path}: onnxruntime cannot load it ({exc}); the file is corrupt or not an ONNX "
                         "model") from exc


def _check_signature(session, meta: dict, precision: str, path: Path, config_path: Path) -> None:
    inputs = {arg.name: arg.type for arg in session.get_inputs()}
    outputs = [arg.name for arg in session.get_outputs()]
    problems = []
    if sorted(inputs) != sorted(meta["inputs"]):
        problems.append(f"inputs {sorted(inputs)} != {sorted(meta['inputs'])}")
    elif any(kind != "tensor(int64)" for kind in inputs.values()):
        problems.append(f"input types {inputs} are not all int64")
    if sorted(outputs) != sorted(meta["outputs"].values()):
        problems.append(f"outputs {sorted(outputs)} != {sorted(meta['outputs'].values())}")
    stamp = session.get_modelmeta().custom_metadata_map
    expected = _expected_stamp(meta, precision)
    wrong = [key.split(".", 1)[1] for key, value in expected.items() if stamp.get(key) != value]
    if wrong:
        found = ", ".join(f"{key.split('.', 1)[1]}={value}" for key, value in stamp.items()
                          if key.startswith("multidistill.")) or "no multidistill metadata"
        problems.append(f"its {', '.join(wrong)} differ ({found})")
    if problems:
        raise ModelError(f"{path} does not match {config_path}: {'; '.join(problems)} "
                         "(was it copied from another export?)")


# --- the parity check ----------------------------------------------------------------------------


def _parity_sets(model: MultiTaskModel | BiLSTMModel, tokenizer, parity_data: DataConfig,
                 parity_tasks: list[str] | None, parity_examples: int | None) -> dict[str, Any]:
    """Each checked task's tokenised eval rows (the first ``parity_examples``), read with the model's own specs."""
    from multidistill.data.prepare import prepare_data

    names = list(parity_tasks) if parity_tasks else parity_data.task_names
    missing = [name for name in names if name not in model.tasks]
    if missing:
        raise ConfigError(f"parity check: the model has no head for {missing}; it has {list(model.tasks)}")
    # The model carries its task specs (label order included), so the check reads the data it was built for.
    data = DataConfig(tasks=names, data_root=parity_data.data_root, cache_dir=parity_data.cache_dir,
                      eval_split=parity_data.eval_split, task_specs=[model.tasks[name] for name in names])
    max_length = model.max_length or min(128, model.max_seq_length or 128)
    model.check_max_length(max_length, "max_length")
    prepared = prepare_data(data, tokenizer, max_length, max_examples_per_task=None, seed=0, need_train=False)
    sets = {}
    for name, dataset in prepared.eval_sets.items():
        if parity_examples is not None and len(dataset) > parity_examples:
            dataset = dataset.select(range(parity_examples))
        sets[name] = dataset
    return sets


# The int8 gate's noise allowance: a drop is a failure only when it exceeds this many standard errors of the paired
# metric delta (one-sided, about a 2% false alarm per task when int8 is in truth no worse).
NOISE_Z = 2.0
BOOTSTRAP_ROUNDS = 200


def paired_delta_se(metric: str, expected: np.ndarray, got: np.ndarray, labels: np.ndarray,
                    rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> float:
    """Standard error of ``metric(got) - metric(expected)`` on these rows, by a paired bootstrap.

    Both sides are scored on the same resampled rows, so the error reflects the rows where they differ: zero
    when every prediction agrees, about sqrt(flips)/rows for accuracy. Works for every metric (F1, Matthews,
    Pearson). Seeded, so the same numbers give the same gate.
    """
    rng = np.random.default_rng(seed)
    rows = len(labels)
    if rows < 2:
        return 0.0
    deltas = []
    for _ in range(rounds):
        pick = rng.integers(0, rows, rows)
        scores = [compute_metrics([metric], side[pick], labels[pick])[metric] for side in (expected, got)]
        deltas.append(scores[1] - scores[0])
    return float(np.std(deltas, ddof=1))


def compare_predictions(task: Task, expected: np.ndarray, got: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Parity numbers of one task: max |difference|, prediction agreement (classification only; None for
    regression), the main metric of both, its change (got - expected) and that change's paired standard error."""
    metric = task.main_metric
    finite = bool(np.isfinite(got).all())
    diff = float(np.abs(expected.astype(np.float64) - got.astype(np.float64)).max()) if finite else float("inf")
    agreement = (float(np.mean(expected.argmax(-1) == got.argmax(-1)))
                 if task.type == "classification" else None)
    metric_torch = compute_metrics([metric], expected, labels)[metric]
    metric_onnx = compute_metrics([metric], got, labels)[metric] if finite else float("-inf")
    unchanged = agreement == 1.0 or diff == 0.0
    se = 0.0 if unchanged or not finite else paired_delta_se(metric, expected, got, np.asarray(labels))
    return {"examples": int(len(labels)), "metric": metric, "max_abs_diff": diff, "agreement": agreement,
            "metric_torch": metric_torch, "metric_onnx": metric_onnx, "metric_delta": metric_onnx - metric_torch,
            "metric_delta_se": se}


# Agreement and metrics are ratios of row counts: a result exactly at a tolerance (2 flips in 200 rows against a
# 0.01 drop) must pass, whatever the last bit of the float division says.
_COUNT_SLACK = 1e-9


def allowed_drop(numbers: dict, max_metric_drop: float) -> float:
    """The int8 gate: the largest main-metric drop that passes, max(``max_metric_drop``, NOISE_Z x paired SE).

    On a small dev set a few rows changing class move the metric by more than a fixed tolerance although int8
    is no worse in expectation (7 flips in 200 rows differ between CPUs with and without VNNI); the allowance
    grows with that sampling error and shrinks back to ``max_metric_drop`` on large sets or when nothing flips.
    """
    return max(max_metric_drop, NOISE_Z * float(numbers.get("metric_delta_se") or 0.0))


def parity_failures(precision: str, report: dict[str, dict], *, tolerance_fp32: float,
                    min_agreement_int8: float | None = None, max_metric_drop_int8: float) -> list[str]:
    """What in ``report`` (task -> `compare_predictions`) breaks the tolerances of ``precision``; NaN fails.

    fp32: max |logit difference| <= ``tolerance_fp32``. int8: main-metric drop <= `allowed_drop`; agreement is
    information unless ``min_agreement_int8`` is given. Each failure names the task and all its parity numbers.
    """
    failures = []
    for name, numbers in report.items():
        agreement = numbers.get("agreement")
        seen = (f"predictions agree on {agreement:.2%} of {numbers['examples']} rows, "
                if agreement is not None else f"{numbers['examples']} rows, ")
        seen += f"max |logit difference| {numbers.get('max_abs_diff', float('nan')):.3g}"
        if precision == "fp32":
            if not numbers["max_abs_diff"] <= tolerance_fp32:
                failures.append(f"{name} (fp32): max |logit difference| {numbers['max_abs_diff']:.3g} > "
                                f"tolerance {tolerance_fp32:g}")
            continue
        if min_agreement_int8 is not None and agreement is not None \
                and not agreement >= min_agreement_int8 - _COUNT_SLACK:
            failures.append(f"{name} ({precision}): predictions agree on {agreement:.2%} of "
                            f"{numbers['examples']} rows < {min_agreement_int8:.2%}")
        drop, allowed = -numbers["metric_delta"], allowed_drop(numbers, max_metric_drop_int8)
        if not drop <= allowed + _COUNT_SLACK:
            before, after = numbers["metric_torch"], numbers["metric_onnx"]
            se = float(numbers.get("metric_delta_se") or 0.0)
            failures.append(f"{name} ({precision}): {numbers['metric']} drops by {drop:.4f} ({before:.4f} -> "
                            f"{after:.4f}) > allowed {allowed:.4f} = max(tolerance {max_metric_drop_int8:g}, "
                            f"{NOISE_Z:g} x paired standard error {se:.4f}); {seen}")
    return failures


class ParityError(ModelError):
    """An export failed its parity check; ``parity`` holds the numbers, ``failures`` the reasons by precision."""

    def __init__(self, message: str, parity: dict, failures: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.parity = parity
        self.failures = failures


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
    max_length = model.max_length or min(128, model.max_seq_length or 128)
    prepared = prepare_data(config, tokenizer, max_length, max_examples_per_task=None, seed=0, need_train=True)
    train_sets = {name: prepared.store.tokenized(name, "train", tokenizer, max_length) for name in names}
    batches = calibration_batches(prepared.tasks, train_sets, tokenizer.pad_token_id or 0, examples=examples,
                                  seed=seed, batch_size=batch_size)
    rows = sum(min(examples, len(dataset)) for dataset in train_sets.values())
    return batches, {"rows": rows, "per_task": examples, "seed": seed, "tasks": names, "split": "train"}


def _write_meta(folder: Path, meta: dict) -> None:
    (folder / EXPORT_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def export_onnx(model_dir: str | Path, out_dir: str | Path, *, quantize: Quantize = "none", opset: int = DEFAULT_OPSET,
                parity_data: DataConfig | None = None, parity_tasks: list[str] | None = None,
                tolerance_fp32: float = 1e-4, min_agreement_int8: float | None = None,
                max_metric_drop_int8: float = 0.01, parity_examples: int | None = 500, overwrite: bool = False,
                batch_size: int = 32, on_parity_failure: Literal["raise", "omit"] = "raise",
                graph: Graph = "plain", int8_method: Int8Method = "dynamic", per_channel: bool = True,
                attention: Attention = "eager",
                calibration_data: DataConfig | None = None,
                calibration_examples: int = DEFAULT_CALIBRATION_EXAMPLES, calibration_seed: int = 0) -> dict:
    """Export the model in ``model_dir`` to ``out_dir`` and return the export.json written there.

    With ``parity_data`` (its data_root, cache_dir and eval_split; the tasks are ``parity_tasks`` or its task
    list, read with the model's own specs), the first ``parity_examples`` eval rows of each task (None = all)
    are run through PyTorch and every exported graph: fp32 logits must be within ``tolerance_fp32``; the int8
    graph's main metric must not drop by more than `allowed_drop` (``max_metric_drop_int8``, or twice the paired
    standard error of the drop on that many rows when larger); with ``min_agreement_int8`` its predictions must
    also agree with PyTorch on at least that share of rows.

    A failure raises `ParityError` (a ModelError) with the numbers. With ``on_parity_failure="omit"`` (the
    benchmark's choice) the failing precisions are left out of the folder instead, and export.json records
    why under ``parity_failures``; only when no precision passes is ParityError raised.

    The graph variant (`multidistill.export.onnx_variants`): ``graph="fused"`` traces with eager attention and
    runs onnxruntime's transformer optimizer (attention / LayerNorm / GELU fusion) on the fp32 graph that both
    precisions come from; a model it has no fusions for (a BiLSTM, another encoder family) is exported plain,
    with a warning and the reason in export.json. ``int8_method`` "dynamic" (the default) quantises activations
    on the fly; "static" writes a QDQ graph whose activation ranges are calibrated on ``calibration_examples``
    training rows per task drawn with ``calibration_seed`` from ``calibration_data`` (default: ``parity_data``).
    ``per_channel`` False uses one weight scale per tensor. ``attention`` is the attention a Transformer encoder is
    traced with: "eager" (the default: one additive mask for all layers) or "sdpa" (the model's usual kernel, whose
    trace guards each layer's mask against NaN; a fused graph needs eager). export.json's ``variant`` records what
    was done.

    The folder is written atomically: on any error nothing is left at ``out_dir`` (an existing folder, which
    needs ``overwrite=True`` unless empty, stays as it was).
    """
    _onnx_modules()
    require_choice("quantize", quantize, QUANTIZE_CHOICES)
    require_choice("graph", graph, GRAPH_CHOICES)
    require_choice("int8_method", int8_method, INT8_METHODS)
    require_choice("attention", attention, ATTENTION_CHOICES)
    if graph == "fused" and attention != "eager":
        raise ConfigError("a fused graph is traced with eager attention (onnxruntime's attention fusion matches its "
                          "mask, not SDPA's): use attention 'eager' (--attention eager) or graph 'plain'")
    if calibration_examples < 1:
        raise ConfigError(f"calibration_examples must be at least 1, got {calibration_examples}")
    calibration_data = calibration_data or parity_data
    if quantize == "int8" and int8_method == "static" and calibration_data is None:
        raise ConfigError("static int8 quantisation calibrates on training rows: give the data (--data-root; "
                          "calibration_data / parity_data in Python) or use --int8-method dynamic")
    if on_parity_failure not in ("raise", "omit"):
        raise ConfigError(f"on_parity_failure {on_parity_failure!r}: choose raise or omit")
    if parity_examples is not None and parity_examples < 1:
        raise ConfigError(f"parity_examples must be at least 1 (or None for all rows), got {parity_examples}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_out_dir(model_dir, out_dir, overwrite)
    model = load_model(model_dir).eval()  # safetensors + JSON; never unpickles
    tokenizer = load_tokenizer(str(model_dir))
    # Read (and validate) the parity data before any export work, so bad data fails fast.
    eval_sets = _parity_sets(model, tokenizer, parity_data, parity_tasks, parity_examples) if parity_data else None

    inputs = input_names(model, tokenizer)
    outputs = {name: f"logits_{name}" for name in model.tasks}
    files = {"fp32": MODEL_FILES["fp32"]}
    variant: dict[str, Any] = {"graph": "plain"}
    traced = attention_implementation(model)
    if traced is not None:  # a Transformer (a BiLSTM has no attention)
        variant["attention"] = "eager" if attention == "eager" else traced
    optimizer_type = None
    if graph == "fused":
        optimizer_type, reason = fusion_model_type(model)
        if optimizer_type is None:  # never silently: the export says it is plain, and why
            variant["graph_note"] = f"fused graph requested but exported plain: {reason}"
            logger.warning("%s: %s", model_dir, variant["graph_note"])
    calibration = None
    if quantize == "int8" and int8_method == "static":
        calibration = _calibration_batches(model, tokenizer, calibration_data, calibration_examples,
                                           calibration_seed, batch_size)
    with atomic_dir(out_dir) as tmp:
        _export_graph(model, tokenizer, tmp / files["fp32"], inputs, outputs, opset, model_dir,
                      eager=attention == "eager")
        if optimizer_type is not None:
            config = model.backbone.config
            variant.update(graph="fused", optimizer_model_type=optimizer_type,
                           fused_ops=fuse_graph(tmp / files["fp32"], optimizer_type, config.num_attention_heads,
                                                config.hidden_size))
        if quantize == "int8":
            files["int8"] = MODEL_FILES["int8"]
            if calibration is None:
                variant["int8"] = quantize_dynamic_int8(tmp / files["fp32"], tmp / files["int8"],
                                                        per_channel=per_channel)
            else:
                variant["int8"] = quantize_static_int8(tmp / files["fp32"], tmp / files["int8"], calibration[0],
                                                       inputs, per_channel=per_channel)
                variant["int8"]["calibration_rows"] = calibration[1]
        tokenizer.save_pretrained(tmp)
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "kind": "onnx", "source": str(model_dir.resolve()),
            "model_kind": "bilstm" if isinstance(model, BiLSTMModel) else "multitask",
            "tasks": [task.model_dump(mode="json") for task in model.tasks.values()],
            "max_length": model.max_length, "inputs": inputs, "outputs": outputs, "files": dict(files),
            "variant": variant,
        }
        for precision, name in files.items():
            _stamp(tmp / name, _expected_stamp(meta, precision))
        _write_meta(tmp, {**meta, "opset": opset})
        if eval_sets is not None:
            pad_token_id = tokenizer.pad_token_id or 0
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
                        np.asarray(dataset["label"]))
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
            if failures:
                meta["parity_failures"] = failures
        meta["opset"] = opset
        _write_meta(tmp, meta)
        write_card(tmp, model_card_record(model_dir, "onnx", export=meta))
    return meta
