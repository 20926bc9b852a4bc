"""int8 ONNX inference, step by step (issue 16, part 2): what each onnxruntime option buys on one student.

One command: exports a saved student (default: the demo's 3-layer MiniLM-cut student) in every variant that
`multidistill export` offers, each parity-checked on the same first --parity-examples dev rows of every task, then
times all of them in one process, alternating round by round (`multidistill.evaluation.speed.compare_speed`): batch-1
latency and batch-32 throughput on the first task's dev inputs, medians over the rounds. Batch-32 throughput is
timed on consecutive rows (each batch padded to its longest row) and on the same rows batched longest first (as
`multidistill predict`, evaluation and the parity check batch them: less padding, for PyTorch and ONNX alike), in
wall time and in process CPU time (steadier than wall time on a shared machine). Rows:

  torch fp32 eager            the reference (PyTorch with the model's own SDPA attention)
  onnx fp32                   plain graph (TorchScript export), the export's defaults
  onnx fp32 fused             onnxruntime.transformers optimizer: Attention / SkipLayerNorm / BiasGelu fusion
  int8 dynamic, SDPA trace     the default before issue 16's second pass: the graph traced with the model's SDPA
                              attention (IsNaN / Where guards on each layer's mask)
  int8 dynamic, float32-lowest mask   the default before issue 16's third pass: the eager trace's padding mask
                              keeps float32's lowest value, which sends onnxruntime's Softmax into a slow path
  int8 dynamic                the default of `export --quantize int8`: traced with eager attention (one additive
                              mask for every layer, -60 for padded keys), per-channel 7-bit weights
  int8 dynamic, second session   a control: the default graph again, in its own session, timed right after the
                              first; their gap is session-to-session noise (both follow an onnxruntime turn, so
                              it cannot show an order bias: benchmarks/speed_order.py measures that)
  int8 dynamic per-tensor     one weight scale per tensor
  int8 dynamic fused          the fused graph, then dynamic int8
  int8 static QDQ             activation ranges calibrated on seeded training rows
  int8 dynamic, ORT extended / basic   the default graph loaded with a lower session optimisation level

Each row's score is the average main metric over the checked tasks from its export's parity check (torch: the
PyTorch side of the same check); a session-option row runs the same graph as its export and reuses its score.
A row whose graph fails its parity gate is reported as failed, not timed.

    OMP_NUM_THREADS=1 python benchmarks/onnx_int8.py --model runs/demo/student-transformer/model --out runs/onnx_int8

Writes OUT/onnx_int8.json and OUT/onnx_int8.md (the table, with the CPU, its int8 flags and the settings).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from multidistill.config import DataConfig
from multidistill.data.collate import pad_id
from multidistill.data.prepare import prepare_data
from multidistill.data.tasks import Task
from multidistill.evaluation.benchmark import _onnx_forward
from multidistill.evaluation.speed import SETTLE_S, compare_speed, torch_forward
from multidistill.export.onnx import OnnxModel, export_onnx
from multidistill.models.backbone import load_tokenizer
from multidistill.models.loading import load_model, saved_data_root
from multidistill.models.multitask import read_model_config
from multidistill.utils.atomic import write_json

# export name -> export_onnx keywords
EXPORTS = {
    "plain": {},
    "sdpa": {"attention": "sdpa"},
    "lowest-mask": {"attention_mask_value": None},
    "per-tensor": {"per_channel": False},
    "fused": {"graph": "fused"},
    "static": {"int8_method": "static"},
}
# row -> (export, precision, session optimisation level)
ROWS = {
    "onnx fp32, float32-lowest mask": ("lowest-mask", "fp32", "all"),
    "onnx fp32": ("plain", "fp32", "all"),
    "onnx fp32 fused": ("fused", "fp32", "all"),
    "int8 dynamic, SDPA trace": ("sdpa", "int8", "all"),
    "int8 dynamic, float32-lowest mask": ("lowest-mask", "int8", "all"),
    "int8 dynamic": ("plain", "int8", "all"),
    "int8 dynamic, second session": ("plain", "int8", "all"),
    "int8 dynamic per-tensor": ("per-tensor", "int8", "all"),
    "int8 dynamic fused": ("fused", "int8", "all"),
    "int8 static QDQ": ("static", "int8", "all"),
    "int8 dynamic, ORT extended": ("plain", "int8", "extended"),
    "int8 dynamic, ORT basic": ("plain", "int8", "basic"),
}
REFERENCE = "torch fp32 eager"
# speedup key -> SpeedResult throughput it is the ratio of (batch 32)
SPEEDUPS = {"speedup_b32": "throughput_examples_per_s",
            "speedup_b32_longest_first": "throughput_longest_first_examples_per_s",
            "speedup_b32_cpu": "throughput_cpu_examples_per_s",
            "speedup_b32_longest_first_cpu": "throughput_longest_first_cpu_examples_per_s"}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_info() -> dict:
    """The CPU's model name (as lscpu prints it) and which int8/bf16 instruction sets it has."""
    from multidistill.training.device import cpu_name

    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                flags = set(value.split())
                break
    return {"model_name": cpu_name(), "flags": {flag: flag in flags for flag in CPU_FLAGS}}


def _average(parity: dict, side: str) -> float:
    return statistics.mean(float(numbers[side]) for numbers in parity.values())


def run(model_dir: Path, out: Path, *, parity_examples: int, rounds: int, latency_runs: int,
        throughput_batches: int, calibration_examples: int, data_root: str | None, cache_dir: str,
        reuse_exports: bool = False, settle_s: float = SETTLE_S) -> dict:
    """Export every variant, time every row alternately and return the report (also written under ``out``)."""
    specs = [Task.model_validate(spec) for spec in read_model_config(model_dir)["tasks"]]
    root = data_root if data_root is not None else saved_data_root(model_dir)
    data = DataConfig(tasks=[s.name for s in specs], data_root=root, cache_dir=cache_dir, task_specs=specs)
    exports: dict[str, dict] = {}
    for name, options in EXPORTS.items():
        previous = out / "exports" / name / "export.json"
        if reuse_exports and previous.is_file():
            meta = json.loads(previous.read_text())
            if meta["source"] == str(model_dir.resolve()) and meta.get("parity", {}).get("fp32", {}).get(
                    specs[0].name, {}).get("examples") == parity_examples:
                exports[name] = {"meta": meta, "seconds": 0.0}
                print(f"reused {name}: {meta['variant']}", flush=True)
                continue
        started = time.perf_counter()
        extra = {"calibration_examples": calibration_examples} if "int8_method" in options else {}
        meta = export_onnx(model_dir, out / "exports" / name, quantize="int8", parity_data=data,
                           parity_examples=parity_examples, overwrite=True, on_parity_failure="omit",
                           **options, **extra)
        exports[name] = {"meta": meta, "seconds": time.perf_counter() - started}
        print(f"exported {name}: {meta['variant']} ({exports[name]['seconds']:.0f} s)", flush=True)

    model = load_model(model_dir).eval()
    tokenizer = load_tokenizer(str(model_dir))
    pad = pad_id(tokenizer)
    task = specs[0]
    speed_data = prepare_data(DataConfig(tasks=[task.name], data_root=root, cache_dir=cache_dir, task_specs=[task]),
                              tokenizer, model.max_length or 128, max_examples_per_task=None, seed=0,
                              need_train=False).eval_sets[task.name]
    plain_parity = exports["plain"]["meta"]["parity"]
    rows: dict[str, dict] = {REFERENCE: {"export": None, "precision": "fp32", "session": "-",
                                         "score": _average(plain_parity["fp32"], "metric_torch"), "status": "ok"}}
    contenders = {REFERENCE: (torch_forward(model, task), speed_data, pad)}
    for row, (export, precision, level) in ROWS.items():
        meta = exports[export]["meta"]
        entry = {"export": export, "precision": precision, "session": level, "variant": meta["variant"]}
        parity = meta["parity"][precision]
        if precision not in meta["files"]:  # failed its parity gate: the export left the graph out
            rows[row] = {**entry, "status": "failed", "score": _average(parity, "metric_onnx"),
                         "reasons": meta.get("parity_failures", {}).get(precision)}
            continue
        entry.update(status="ok", score=_average(parity, "metric_onnx"),
                     agreement_min=min((n["agreement"] for n in parity.values() if n["agreement"] is not None),
                                       default=None),
                     disk_mb=(out / "exports" / export / meta["files"][precision]).stat().st_size / 1e6)
        rows[row] = entry
        onnx_model = OnnxModel.load(out / "exports" / export, precision, optimization=level, with_tokenizer=False)
        contenders[row] = (_onnx_forward(onnx_model, task.name), speed_data, pad)

    speeds = compare_speed(contenders, task, rounds=rounds, latency_runs=latency_runs,
                           throughput_batches=throughput_batches, batch_size=32, longest_first=True, cpu_time=True,
                           settle_s=settle_s)
    base = speeds[REFERENCE]
    for row, result in speeds.items():
        rows[row].update(result.to_dict(), speedup_b1=base.latency_ms_median / result.latency_ms_median,
                         score_delta_points=100 * (rows[row]["score"] - rows[REFERENCE]["score"]))
        for key, field in SPEEDUPS.items():
            rows[row][key] = getattr(result, field) / getattr(base, field)
    import onnxruntime

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_info(),
        "threads": torch.get_num_threads(), "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
        "commit": _commit(), "model": str(model_dir), "speed_task": task.name, "tasks": [s.name for s in specs],
        "settings": {"parity_examples": parity_examples, "rounds": rounds, "latency_runs": latency_runs,
                     "throughput_batches": throughput_batches, "batch_size": 32,
                     "calibration_examples": calibration_examples, "settle_s": settle_s},
        "export_seconds": {name: round(e["seconds"], 1) for name, e in exports.items()},
        "rows": rows,
    }
    write_json(out / "onnx_int8.json", report)
    table = markdown(report)
    (out / "onnx_int8.md").write_text(table)
    return report


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def markdown(report: dict) -> str:
    """The report as a markdown table with its setting lines."""
    cpu = report["cpu"]
    flags = ", ".join(f"{flag} {'yes' if has else 'no'}" for flag, has in cpu["flags"].items())
    settings = report["settings"]
    lines = [
        f"{report['date']}, commit {report['commit']}, CPU \"{cpu['model_name']}\" ({flags}), "
        f"{report['threads']} thread(s), onnxruntime {report['onnxruntime']}, torch {report['torch']}.",
        f"Scores: average main metric over {', '.join(report['tasks'])} on the first {settings['parity_examples']} "
        f"dev rows of each (the parity check's rows). Speed: {report['speed_task']} dev inputs, "
        f"{settings['rounds']} interleaved rounds{_settle(settings)}, batch-1 latency median of "
        f"{settings['latency_runs']} calls, "
        f"batch-32 throughput median of the rounds ({settings['throughput_batches']} batches each): consecutive "
        "rows, then the same rows batched longest first (sorted); wall time, and process CPU time (cpu).",
        "",
        "| row | score | Δ points | min agreement | latency ms b1 (p95) | b1 speedup | ex/s b32 | b32 speedup | "
        "b32 sorted ex/s | b32 sorted speedup | b32 speedup (cpu) | b32 sorted speedup (cpu) | MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["rows"].items():
        if row["status"] != "ok":
            lines.append(f"| {name} | {row['score']:.4f} | failed its parity gate, not timed: "
                         f"{'; '.join(row.get('reasons') or [])} |||||||||||")
            continue
        agreement, disk = row.get("agreement_min"), row.get("disk_mb")
        lines.append(
            f"| {name} | {row['score']:.4f} | {row['score_delta_points']:+.2f} | "
            f"{'-' if agreement is None else f'{agreement:.1%}'} | {row['latency_ms_median']:.1f} "
            f"({row['latency_ms_p95']:.1f}) | {row['speedup_b1']:.2f}x | {row['throughput_examples_per_s']:.0f} | "
            f"{row['speedup_b32']:.2f}x | {_number(row.get('throughput_longest_first_examples_per_s'), '.0f')} | "
            f"{_number(row.get('speedup_b32_longest_first'), '.2f', 'x')} | "
            f"{_number(row.get('speedup_b32_cpu'), '.2f', 'x')} | "
            f"{_number(row.get('speedup_b32_longest_first_cpu'), '.2f', 'x')} | "
            f"{'-' if disk is None else f'{disk:.1f}'} |")
    return "\n".join(lines) + "\n"


def _settle(settings: dict) -> str:
    settle = settings.get("settle_s")
    if settle is None:  # a report from before the pause existed
        return ""
    return f" ({settle * 1000:.0f} ms pause before each turn)" if settle else " (no pause between turns)"


def _number(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("runs/demo/student-transformer/model"),
                        help="a saved Transformer student (default: the one `multidistill demo` writes)")
    parser.add_argument("--out", type=Path, default=Path("runs/onnx_int8"), help="folder for exports and results")
    parser.add_argument("--parity-examples", type=int, default=200, help="dev rows per task checked and scored")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--throughput-batches", type=int, default=4)
    parser.add_argument("--calibration-examples", type=int, default=256, help="static int8: training rows per task")
    parser.add_argument("--data-root", default=None, help="default: the data root the model was trained with")
    parser.add_argument("--cache-dir", default=".cache/multidistill")
    parser.add_argument("--settle-ms", type=float, default=SETTLE_S * 1000,
                        help="pause before each row's turn in a round, so the previous row's threads are idle "
                             "(0: none, as before 2026-12-06's fourth round)")
    parser.add_argument("--reuse-exports", action="store_true",
                        help="time the exports already under OUT/exports (same model, same parity rows)")
    args = parser.parse_args(argv)
    if not args.settle_ms >= 0:
        parser.error(f"--settle-ms must be >= 0, got {args.settle_ms}")
    if not args.model.is_dir():
        print(f"{args.model} is not a model folder; run `multidistill demo` first or pass --model", file=sys.stderr)
        return 2
    report = run(args.model, args.out, parity_examples=args.parity_examples, rounds=args.rounds,
                 latency_runs=args.latency_runs, throughput_batches=args.throughput_batches,
                 calibration_examples=args.calibration_examples, data_root=args.data_root, cache_dir=args.cache_dir,
                 reuse_exports=args.reuse_exports, settle_s=args.settle_ms / 1000)
    print(markdown(report))
    print(json.dumps(report["export_seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
