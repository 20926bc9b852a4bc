"""Loading and running an ONNX export (`OnnxModel`): export.json validated, each graph checked against it.

Folder layout (written by `multidistill.export.onnx.export_onnx`)::

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
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from multidistill.data.batches import map_batches
from multidistill.data.tasks import Task
from multidistill.errors import ModelError, UnknownTaskError, require_choice
from multidistill.evaluation.thresholds import read_thresholds
from multidistill.models.backbone import load_tokenizer
from multidistill.utils.manifest import read_versioned_json
from multidistill.utils.paths import not_a_folder

EXPORT_FILE = "export.json"
FORMAT_VERSION = 1
# An export whose multilabel heads carry decision thresholds (`evaluation.thresholds`): older versions refuse it
# instead of predicting at 0.5.
THRESHOLDS_EXPORT_VERSION = 2
EXPORT_VERSIONS = (FORMAT_VERSION, THRESHOLDS_EXPORT_VERSION)  # what this version reads
MODEL_FILES: dict[str, str] = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
DEFAULT_OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# onnxruntime's session-level graph optimisation (`OnnxModel.load(..., optimization=...)`) and execution modes.
OPTIMIZATION_LEVELS = ("all", "extended", "basic", "disabled")
EXECUTION_MODES = ("sequential", "parallel")

Precision = Literal["fp32", "int8"]


def onnx_modules() -> tuple[Any, Any]:
    """The onnx and onnxruntime modules, or a ModelError saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - both are dependencies; guards a broken install
        raise ModelError(f"ONNX export needs the onnx and onnxruntime packages ({exc}); "
                         "install them with `pip install onnx onnxruntime`") from exc
    return onnx, onnxruntime


def expected_stamp(meta: dict, precision: str) -> dict[str, str]:
    """The metadata that ties a graph to its export.json (written into the graph at export, checked on load)."""
    return {f"multidistill.{key}": value for key, value in (
        ("source", meta["source"]), ("model_kind", meta["model_kind"]), ("precision", precision),
        ("tasks", json.dumps([task["name"] for task in meta["tasks"]])))}


def read_export_config(directory: str | Path) -> dict:
    """Validate ``directory/export.json`` and return it; problems raise a ModelError naming the file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"export directory {directory} {not_a_folder(directory)}")
    path = directory / EXPORT_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing (is {directory} a folder written by `multidistill export`?)")
    meta = read_versioned_json(path, EXPORT_VERSIONS, ModelError)
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
    read_thresholds(meta, {task.name: task for task in tasks}, str(path))
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
        # multilabel decision thresholds saved with the source model (none: 0.5), checked by read_export_config
        self.thresholds = read_thresholds(meta, self.tasks, str(directory / EXPORT_FILE))
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
    _, ort = onnx_modules()
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
    expected = expected_stamp(meta, precision)
    wrong = [key.split(".", 1)[1] for key, value in expected.items() if stamp.get(key) != value]
    if wrong:
        found = ", ".join(f"{key.split('.', 1)[1]}={value}" for key, value in stamp.items()
                          if key.startswith("multidistill.")) or "no multidistill metadata"
        problems.append(f"its {', '.join(wrong)} differ ({found})")
    if problems:
        raise ModelError(f"{path} does not match {config_path}: {'; '.join(problems)} "
                         "(was it copied from another export?)")
