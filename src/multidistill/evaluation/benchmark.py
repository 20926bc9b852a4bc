"""`multidistill benchmark`: quality, size, memory and speed of a teacher and its students, side by side.

For every model and runtime (PyTorch eager fp32, bf16 autocast, ONNX Runtime fp32 and int8) it records
the dev (or ``split``: test) score of each task, parameters, size on disk, peak memory (fresh subprocess per
model/runtime), latency at batch 1 (median, p95) and throughput at batch 32. Speed is measured on the first task's
scored inputs, every contender in the same process and alternating (`evaluation.speed`), so the speedups vs the
reference (the first model, PyTorch fp32) are measured, not estimated.

A fresh ONNX export is parity-checked on the rows scored here, so its PyTorch fp32, ONNX fp32 and int8 scores
come from that check instead of three more passes over the scored data (``scored_by`` says which).

A runtime whose export fails its parity check is not lost with the run: its row has ``status: failed``, the
parity numbers and the reasons, the other rows are measured as usual, and ``gate_failures`` lists every reason
(the CLI then exits with `GATE_FAILED_EXIT`). ``speedup`` is the throughput ratio to the reference,
``latency_speedup`` the batch-1 latency ratio (reference / row); both are > 1 when a row is faster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from multidistill.config import DataConfig
from multidistill.data.batches import map_batches
from multidistill.data.collate import pad_id
from multidistill.data.prepare import prepare_data
from multidistill.errors import ConfigError, UnknownTaskError, require_distinct
from multidistill.evaluation.memory import measure_report
from multidistill.evaluation.metrics import compute_metrics
from multidistill.evaluation.speed import SETTLE_S, Forward, compare_speed, torch_forward
from multidistill.evaluation.thresholds import saved_form, saved_thresholds
from multidistill.export.card_record import refresh_cards
from multidistill.export.checks import DEFAULT_MAX_METRIC_DROP_INT8, DEFAULT_PARITY_EXAMPLES
from multidistill.export.onnx import NOISE_Z
from multidistill.models.domain_branch import is_training_only
from multidistill.models.loading import load_model, saved_data_root
from multidistill.models.multitask import WEIGHTS_FILE
from multidistill.training.device import cpu_has_fast_bf16, cpu_name
from multidistill.utils.arguments import as_list
from multidistill.utils.atomic import write_json
from multidistill.utils.entry import api_call
from multidistill.utils.progress import progress_bar
from multidistill.utils.quiet import bars_disabled

RUNTIMES = ("pytorch_fp32", "pytorch_bf16", "onnx_fp32", "onnx_int8")
GATE_FAILED_EXIT = 1  # exit code of `benchmark` / `demo` when a parity gate failed (2 is a user error)
FORMAT_VERSION = 1


def model_name(model_dir: Path) -> str:
    """`runs/x/student/model` -> `student`; other folders keep their own name."""
    model_dir = Path(model_dir)
    return model_dir.parent.name if model_dir.name == "model" else model_dir.name


def model_names(model_dirs: list[Path]) -> list[str]:
    """Each folder's `model_name`; names shared by several folders take their parents' names in front until they
    differ (`a/student/model`, `b/student/model` -> `a-student`, `b-student`: every recipe names its student so)."""
    dirs = [Path(d).resolve() for d in model_dirs]
    if len(set(dirs)) != len(dirs):
        raise ConfigError(f"the same model folder is given twice: {[str(d) for d in model_dirs]}")
    parts = [[p for p in (d.parent if d.name == "model" else d).parts if p != d.anchor] for d in dirs]
    depth = [1] * len(dirs)
    names = [model_name(d) for d in model_dirs]
    while len(set(names)) != len(names):
        deeper = False
        for i, name in enumerate(names):
            if names.count(name) > 1 and depth[i] < len(parts[i]):
                depth[i] += 1
                deeper = True
        if not deeper:  # whole paths that still read alike once joined (`a/b-c` and `a-b/c`): numbered
            return [f"{name}-{i + 1}" if names.count(name) > 1 else name for i, name in enumerate(names)]
        names = ["-".join(p[-n:]) for p, n in zip(parts, depth, strict=True)]
    return names


def model_data(folder: Path, model, tasks: list[str], data_root: str | None, cache_dir: str,
               split: str = "dev") -> DataConfig:
    """The data a model is scored on (its ``split``): its own task specs, under ``data_root`` or, without one, the
    data root its run recorded (if still there)."""
    root = data_root if data_root is not None else saved_data_root(folder)
    return DataConfig(tasks=tasks, data_root=root, cache_dir=cache_dir, task_specs=[model.tasks[t] for t in tasks],
                      eval_split=split)


def check_same_dev_rows(models: dict[str, tuple[Path, object]], tasks: list[str], data_root: str | None,
                        cache_dir: str, split: str = "dev") -> None:
    """Refuse models that would be scored on different dev files: without --data-root each reads the data root
    its run recorded, and a teacher scored on the full SST-2 dev (872 rows) beside a student scored on a 500-row
    sample gave a retention that compared nothing."""
    from multidistill.data.prepare import open_example_store

    seen: dict[str, tuple[str, str, str | None, object]] = {}
    for name, (folder, model) in models.items():
        config = model_data(folder, model, tasks, data_root, cache_dir, split)
        store = open_example_store(config, max_examples_per_task=None, seed=0)
        for task in tasks:
            fingerprint = store.source_fingerprint(task, config.eval_split)
            if fingerprint is None:  # a missing file: preparing the data names it
                continue
            carve = store.tasks[task].test_from_dev
            first = seen.setdefault(task, (fingerprint, name, store.data_root, carve))
            if first[0] != fingerprint and first[3] != carve:  # same files, other rows: --data-root cannot help

                def said(c) -> str:
                    return "keeps all its dev rows" if c is None else \
                        f"carves a test split out of them (test_from_dev: {c.model_dump()})"

                raise ConfigError(f"task {task}: models {first[1]} and {name} would be scored on different "
                                  f"{config.eval_split} rows: {first[1]}'s task spec {said(first[3])}, {name}'s "
                                  f"{said(carve)}; benchmark models trained on the same dev rows together")
            if first[0] != fingerprint:
                raise ConfigError(f"task {task}: models {first[1]} and {name} would be scored on different "
                                  f"{config.eval_split} files (read from the data roots {first[2]} and "
                                  f"{store.data_root}, as their runs recorded); give --data-root so that every "
                                  "model is scored on the same rows")


def _onnx_forward(onnx_model, task_name: str) -> Forward:
    def forward(batch: dict):
        types = batch.get("token_type_ids")
        return onnx_model.logits(task_name, batch["input_ids"].numpy(), batch["attention_mask"].numpy(),
                                 types.numpy() if types is not None else None)

    return forward


def _score(forward: Forward, task, dataset, pad: int, thresholds: tuple[float, ...] | None,
           batch_size: int = 64) -> float:
    predictions = map_batches(task, dataset, forward, batch_size=batch_size, pad_token_id=pad)
    return compute_metrics(task.metrics, predictions, np.asarray(dataset["label"][:]),
                           task.type, thresholds)[task.main_metric]


def _refuse_another_models_export(out: Path, model_dir: Path) -> None:
    """Refuse an export folder ``out`` that holds another model's export (its recorded ``source`` is another folder,
    with other weights): `exports/<model name>` is shared by every model of that name (two runs' `student/model`),
    and benchmarking one replaced the other's export without a word."""
    from multidistill.export.onnx_runtime import EXPORT_VERSIONS
    from multidistill.teachers.fingerprint import teacher_fingerprint
    from multidistill.utils.manifest import read_versioned_json

    manifest = out / "export.json"
    if not manifest.is_file():
        return
    existing = read_versioned_json(manifest, EXPORT_VERSIONS, ConfigError)
    source = existing.get("source")
    if not source or Path(source).resolve() == model_dir.resolve() \
            or existing.get("source_fingerprint") == teacher_fingerprint(model_dir):  # the same weights, moved
        return
    raise ConfigError(f"{out} holds the export of another model ({source}); benchmarking {model_dir} would replace "
                      "it: give another folder with --export-root (export_root=), or delete that export first")


def _ensure_onnx(model_dir: Path, export_root: Path, data: DataConfig, parity_examples: int,
                 max_metric_drop_int8: float, name: str | None = None,
                 ) -> tuple[Path | None, dict | None, dict[str, list[str]]]:
    """An int8 + fp32 ONNX export of ``model_dir`` (reused when it is already there, from this model and complete),
    the parity numbers of a fresh export (None for a reused one: its check may have read other data), and the
    reasons of each precision that failed its parity check (those graphs are not kept; the folder is None when
    none passed). ``name``: the export's folder under ``export_root`` (default: `model_name`)."""
    from multidistill.export.onnx import ParityError, export_onnx
    from multidistill.export.onnx_runtime import EXPORT_VERSIONS
    from multidistill.teachers.fingerprint import teacher_fingerprint
    from multidistill.utils.manifest import read_versioned_json
    from multidistill.utils.paths import inside

    out = inside(export_root, name or model_name(model_dir))
    manifest = out / "export.json"
    if manifest.is_file():
        existing = read_versioned_json(manifest, EXPORT_VERSIONS, ConfigError)
        same_model = (Path(existing.get("source", "")).resolve() == model_dir.resolve()
                      and existing.get("source_fingerprint") == teacher_fingerprint(model_dir, with_thresholds=True))
        # a model retrained in the same folder (or given other thresholds) is exported again
        if same_model and "int8" in existing["files"]:
            return out, None, {}
    try:
        meta = export_onnx(model_dir, out, quantize="int8", parity_data=data, parity_examples=parity_examples,
                           max_metric_drop_int8=max_metric_drop_int8, overwrite=True, on_parity_failure="omit")
    except ParityError as exc:
        return None, exc.parity, exc.failures
    return out, meta.get("parity"), meta.get("parity_failures", {})


def _parity_scores(parity: dict | None, runtime: str, eval_sets: dict) -> dict[str, float] | None:
    """The scores of ``runtime`` that the export's parity check already measured on exactly the rows
    benchmarked here (its PyTorch fp32 side, its ONNX fp32 and int8 sides), or None when it did not."""
    if parity is None or runtime == "pytorch_bf16":
        return None
    checked = parity.get("fp32" if runtime == "pytorch_fp32" else runtime.split("_")[1], {})
    if any(checked.get(t, {}).get("examples") != len(rows) for t, rows in eval_sets.items()):
        return None
    side = "metric_torch" if runtime == "pytorch_fp32" else "metric_onnx"
    return {t: float(checked[t][side]) for t in eval_sets}


class BenchmarkReport(TypedDict, total=False):
    """What `benchmark` returns and writes (benchmark.json; docs/benchmarks.md has every field): per model
    (``models``: name -> path, parameters, ``runtimes`` -> scores, sizes, latency and throughput), the ratios to
    the reference (``speedup``, ``latency_speedup``), the settings and machine, and ``gate_failures`` (each
    parity check a runtime failed; empty when all passed)."""

    format_version: int
    date: str
    machine: str
    cpus: int | None
    threads: int
    task: str
    tasks: list[str]
    split: str  # the split scored: dev (reports of older files, which lack the key, read dev too) or test
    native_bf16: bool
    settings: dict[str, Any]
    reference: str
    models: dict[str, dict[str, Any]]
    speedup: dict[str, dict[str, float]]
    latency_speedup: dict[str, dict[str, float]]
    gate: dict[str, float]
    gate_failures: list[str]


def benchmark(model_dirs: Sequence[str | os.PathLike] | str | os.PathLike, tasks: Sequence[str] | str, *,
              data_root: str | None = None, out: str | os.PathLike | None = None,
              runtimes: Sequence[str] | str = RUNTIMES, export_root: str | os.PathLike | None = None,
              rounds: int = 5, latency_runs: int = 50, batch_size: int = 32, max_length: int | None = None,
              memory: bool = True, cache_dir: str = ".cache/multidistill", max_eval_examples: int | None = None,
              parity_examples: int = DEFAULT_PARITY_EXAMPLES,
              max_metric_drop_int8: float = DEFAULT_MAX_METRIC_DROP_INT8,
              split: str = "dev", strict: bool = False, progress: bool = True) -> BenchmarkReport:
    """Measure every model on every runtime; the first model is the reference. Writes ``out`` (JSON) when given.

    The ONNX runtimes export each model to ``export_root/<model name>`` (`model_names`: `runs/a/student/model` is
    `student`), by default an ``exports`` folder beside ``out`` (with ``out`` None: ``./exports``); a later call
    reuses an export of the same model there, and refuses (ConfigError) one of another model, which it would
    otherwise replace: give that call another ``export_root``.

    ``model_dirs`` (one path is one model), ``tasks`` and ``runtimes`` take lists, or comma-separated strs as the
    CLI does. Scores use each task's whole ``split`` (dev, or test: a task's own, or one carved out of dev by
    `Task.test_from_dev`), or its first ``max_eval_examples`` rows; ONNX exports are
    parity-checked on ``parity_examples`` rows of it per task (int8: a main-metric drop up to the larger of
    ``max_metric_drop_int8`` and twice its paired standard error passes).

    A runtime whose export fails its parity check does not stop the benchmark: its row has ``status: failed``
    with the reasons, ``gate_failures`` lists every reason, and the other rows are measured and written as usual.
    The call then returns normally (check ``gate_failures``); with ``strict`` it raises `ParityError` listing
    them once everything is measured and ``out`` written, as the CLI then exits with code 1.
    ``data_root`` None: each model's recorded data root, then ``$MULTIDISTILL_DATA_ROOT`` (`multidistill.data.roots`).
    ``progress`` False: no bars or library notes. An output that cannot be written raises `OutputError`. Its
    timings need the process to itself: a call from another thread while a run goes is refused (`RunInProgress`).
    """
    with api_call("benchmark", progress=progress, exclusive=True):
        report = _benchmark(
            [Path(d) for d in as_list(model_dirs, "model_dirs") or []], as_list(tasks, "tasks (--tasks)", commas=True),
            tuple(as_list(runtimes, "runtimes (--runtimes)", commas=True) or ()), data_root=data_root, out=out,
            export_root=export_root, rounds=rounds, latency_runs=latency_runs, batch_size=batch_size,
            max_length=max_length, memory=memory, cache_dir=cache_dir, max_eval_examples=max_eval_examples,
            parity_examples=parity_examples, max_metric_drop_int8=max_metric_drop_int8, split=split,
            progress=progress)
    if strict and report["gate_failures"]:
        from multidistill.export.parity import ParityError

        written = f" and {out} written" if out is not None else ""
        raise ParityError(f"{len(report['gate_failures'])} parity check(s) failed (the other rows were measured"
                          f"{written}):\n  " + "\n  ".join(report["gate_failures"]), {}, {})
    return report


def _benchmark(model_dirs: list[Path], tasks: list[str], runtimes: tuple[str, ...], *, data_root: str | None,
               out: str | os.PathLike | None, export_root: str | os.PathLike | None, rounds: int,
               latency_runs: int, batch_size: int, max_length: int | None, memory: bool, cache_dir: str,
               max_eval_examples: int | None, parity_examples: int, max_metric_drop_int8: float,
               split: str, progress: bool) -> BenchmarkReport:
    """`benchmark` with its arguments read."""
    from multidistill.evaluation.run import EVAL_SPLITS

    if split not in EVAL_SPLITS:
        raise ConfigError(f"--split: {split!r} is not a split to score; choose from {', '.join(EVAL_SPLITS)}")
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ConfigError(f"--runtimes: unknown {unknown}; choose from {list(RUNTIMES)}")
    if not runtimes:  # measuring nothing would also blank the speed section of the models' cards
        raise ConfigError(f"--runtimes is empty; choose from {list(RUNTIMES)}")
    if not tasks:
        raise ConfigError("--tasks is empty; give the tasks to score (speed is measured on the first)")
    # Options of runtimes that are not measured would be ignored: refused instead (a default value is not given).
    if export_root is not None and not any(r.startswith("onnx") for r in runtimes):
        raise ConfigError("--export-root applies to the ONNX runtimes, and --runtimes has none; add onnx_fp32 / "
                          "onnx_int8, or drop it")
    if not max_metric_drop_int8 >= 0:  # as export refuses it (a negative drop no int8 graph could pass)
        raise ConfigError(f"--max-metric-drop-int8 must be >= 0, got {max_metric_drop_int8}")
    if max_metric_drop_int8 != DEFAULT_MAX_METRIC_DROP_INT8 and "onnx_int8" not in runtimes:
        raise ConfigError("--max-metric-drop-int8 applies to the onnx_int8 runtime, which --runtimes leaves out; "
                          "add it, or drop the option")
    if not model_dirs:
        raise ConfigError("give at least one model folder")
    for option, value in (("--rounds", rounds), ("--latency-runs", latency_runs), ("--batch-size", batch_size)):
        if value < 1:  # checked before any export or scoring pass
            raise ConfigError(f"{option} must be at least 1, got {value}")
    require_distinct("--tasks", tasks)
    names = model_names(model_dirs)
    if out is not None and Path(out).is_dir():
        raise ConfigError(f"--out {out} is a folder; give the path of the JSON file to write (e.g. "
                          f"{Path(out) / 'benchmark.json'})")
    if out is not None:  # not a data file, nor inside a model folder, nor a run's own record
        from multidistill.training.run_dir import refuse_output_over_a_run

        refuse_output_over_a_run(Path(out), "--out")
    export_root = Path(export_root) if export_root else Path(out or "benchmark.json").resolve().parent / "exports"
    models = {}
    for name, folder in zip(names, model_dirs, strict=True):
        model = load_model(folder).eval()
        missing = [t for t in tasks if t not in model.tasks]
        if missing:
            raise UnknownTaskError(f"--tasks: model {folder} has no head for {missing}; it has {list(model.tasks)}")
        models[name] = (folder, model)
    if any(r.startswith("onnx") for r in runtimes):  # before any export is written or any model measured
        from multidistill.utils.paths import inside

        for name, (folder, _) in models.items():
            _refuse_another_models_export(inside(export_root, name), folder)
    for folder, model in models.values():
        lacking = [t for t in tasks if split not in model.tasks[t].splits]
        if lacking:
            raise ConfigError(f"--split {split}: task {lacking[0]} of model {folder} has no {split} split (its spec "
                              f"reads {', '.join(model.tasks[lacking[0]].splits)}); score dev, or train with "
                              "data.test_from_dev to carve a test split out of dev (docs/data.md)")
    check_same_dev_rows(models, tasks, data_root, cache_dir, split)
    torch.set_num_threads(torch.get_num_threads())

    report: BenchmarkReport = {"format_version": FORMAT_VERSION, "date": time.strftime("%Y-%m-%d %H:%M"),
                    "machine": cpu_name(), "cpus": os.cpu_count(),
                    "threads": torch.get_num_threads(), "task": tasks[0], "tasks": tasks, "split": split,
                    "native_bf16": cpu_has_fast_bf16(),
                    "settings": {"latency_runs": latency_runs, "batch_size": batch_size, "rounds": rounds,
                                 "settle_s": SETTLE_S,
                                 "max_length": max_length, "max_eval_examples": max_eval_examples,
                                 "parity_examples": max_eval_examples or parity_examples},
                    "reference": names[0], "models": {}, "speedup": {}, "latency_speedup": {},
                    "gate": {"max_metric_drop_int8": max_metric_drop_int8, "noise_z": NOISE_Z},
                    "gate_failures": []}
    contenders: dict[str, tuple[Forward, object, int]] = {}
    for name, (folder, model) in progress_bar(models.items(), desc="benchmark: preparing models",
                                       disable=bars_disabled(progress)):
        from multidistill.models.backbone import load_tokenizer

        tokenizer = load_tokenizer(str(folder))
        pad = pad_id(tokenizer)
        length = max_length or model.max_length or model.DEFAULT_INFERENCE_LENGTH
        data_config = model_data(folder, model, tasks, data_root, cache_dir, split)
        data = prepare_data(data_config, tokenizer, length, max_examples_per_task=None, seed=0, need_train=False)
        if max_eval_examples is not None:
            data.eval_sets = {t: d.select(range(min(len(d), max_eval_examples))) for t, d in data.eval_sets.items()}
        forwards: dict[str, Forward] = {}
        disk = {"pytorch_fp32": (folder / WEIGHTS_FILE).stat().st_size}
        disk["pytorch_bf16"] = disk["pytorch_fp32"]
        for runtime in runtimes:
            if runtime.startswith("pytorch"):
                forwards[runtime] = torch_forward(model, model.tasks[tasks[0]], bf16=runtime == "pytorch_bf16")
        onnx_runtimes = [r for r in runtimes if r.startswith("onnx")]
        export_dir, parity, failed = None, None, {}
        if onnx_runtimes:
            from multidistill.export.onnx import OnnxModel

            # Parity on the rows scored here (first max_eval_examples) lets the scores below reuse its numbers.
            export_dir, parity, failed = _ensure_onnx(folder, export_root, data_config,
                                                      max_eval_examples or parity_examples, max_metric_drop_int8,
                                                      name=name)
            for runtime in onnx_runtimes:
                precision = runtime.split("_")[1]
                if precision in failed or export_dir is None:
                    continue  # reported below as a failed row; the other rows go on
                onnx_model = OnnxModel.load(export_dir, precision=precision)
                forwards[runtime] = (onnx_model, precision)
                onnx_file = "model.int8.onnx" if precision == "int8" else "model.onnx"
                disk[runtime] = (export_dir / onnx_file).stat().st_size
        thresholds = {t: values for t, values in saved_thresholds(folder).items() if t in tasks}
        entry = {"path": str(folder), "kind": type(model).__name__, "export": str(export_dir) if export_dir else None,
                 "parameters": sum(p.numel() for name, p in model.named_parameters() if not is_training_only(name)),
                 "max_length": length,
                 "disk_bytes": disk["pytorch_fp32"], "runtimes": {},
                 # multilabel tasks scored at the decision thresholds saved with the model (the others at 0.5)
                 **({"thresholds": saved_form(model.tasks, thresholds)} if thresholds else {})}
        for runtime in runtimes:
            checked = (parity or {}).get(runtime.split("_")[1]) if runtime.startswith("onnx") else None
            if runtime not in forwards:
                reasons = failed.get(runtime.split("_")[1]) or [reason for r in failed.values() for reason in r]
                scores = _parity_scores(parity, runtime, data.eval_sets)
                entry["runtimes"][runtime] = {
                    "status": "failed", "parity_failures": reasons, "parity": checked, "scores": scores,
                    "score": float(np.mean(list(scores.values()))) if scores else None,
                    "scored_by": "export parity check" if scores else None, "disk_bytes": None}
                report["gate_failures"] += [f"{name} {runtime}: {reason}" for reason in reasons]
                continue
            forward = forwards[runtime]
            scores = _parity_scores(parity, runtime, data.eval_sets)
            source = "export parity check" if scores is not None else "benchmark"
            if scores is None:
                scores = {t: _score(_onnx_forward(forward[0], t) if isinstance(forward, tuple)
                                    else torch_forward(model, data.tasks[t], bf16=runtime == "pytorch_bf16"),
                                    data.tasks[t], data.eval_sets[t], pad, thresholds.get(t))
                          for t in tasks}
            entry["runtimes"][runtime] = {"status": "ok", "scores": scores,
                                          "score": float(np.mean(list(scores.values()))),
                                          "scored_by": source, "disk_bytes": disk[runtime],
                                          **({"parity": checked} if checked else {})}
            speed_fn = _onnx_forward(forward[0], tasks[0]) if isinstance(forward, tuple) else forward
            contenders[f"{name}\t{runtime}"] = (speed_fn, data.eval_sets[tasks[0]], pad)
        scored = [v["score"] for v in entry["runtimes"].values() if v["status"] == "ok"]
        entry["score"] = entry["runtimes"].get("pytorch_fp32", {}).get("score", scored[0] if scored else None)
        report["models"][name] = entry

    speeds = compare_speed(contenders, next(iter(models.values()))[1].tasks[tasks[0]], rounds=rounds,
                           latency_runs=latency_runs, batch_size=batch_size)
    timed_rows = len(data.eval_sets[tasks[0]])
    if timed_rows < batch_size:  # the throughput batches hold every timed row: say the batch they really were
        report["settings"].update(batch_size=timed_rows, batch_size_asked=batch_size)
    for key, result in speeds.items():
        name, runtime = key.split("\t")
        report["models"][name]["runtimes"][runtime].update(result.to_dict())
    if memory:
        measure_report(report)
    reference = report["models"][names[0]]["runtimes"].get("pytorch_fp32")
    if reference is not None:
        # Two ratios, both > 1 when faster: examples/s at batch_size over the reference's, and the reference's
        # median batch-1 latency over this row's. They differ (ONNX can halve latency yet batch no faster).
        base, base_ms = reference["throughput_examples_per_s"], reference["latency_ms_median"]
        for ratio, of in (("speedup", lambda v: v["throughput_examples_per_s"] / base),
                          ("latency_speedup", lambda v: base_ms / v["latency_ms_median"])):
            report[ratio] = {name: {runtime: of(values) for runtime, values in entry["runtimes"].items()
                                    if values["status"] == "ok"}
                             for name, entry in report["models"].items()}
    if out is not None:
        write_json(out, report)
    refresh_cards(report)  # the measured speed goes on the models' and exports' model cards
    return report
