"""Does a speed comparison's order bias its rows? One int8 ONNX graph in two sessions, timed one after the other.

`multidistill.evaluation.speed.compare_speed` times contenders in turn, round after round. This script gives it
PyTorch fp32 (the reference) and the same int8 graph loaded twice: session A runs right after PyTorch, session B
right after A. A and B compute the same thing with the same code, so any gap between them is the timing's own
error. It runs the comparison once per pause (``--settle-ms``, the pause before each turn; 0 = none) and writes the
table:

    OMP_NUM_THREADS=2 python benchmarks/speed_order.py --model runs/demo/student-transformer/model \\
        --export runs/onnx_int8/exports/plain --settle-ms 0 50 --rounds 9

Writes OUT/speed_order.json and OUT/speed_order.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from multidistill.config import DataConfig
from multidistill.data.prepare import prepare_data
from multidistill.evaluation.benchmark import _onnx_forward
from multidistill.evaluation.speed import compare_speed, torch_forward
from multidistill.export.onnx import OnnxModel
from multidistill.models.backbone import load_tokenizer
from multidistill.models.loading import load_model, saved_data_root
from multidistill.utils.atomic import write_json

sys.path.insert(0, str(Path(__file__).parent))
from onnx_int8 import REFERENCE, _commit, cpu_info  # noqa: E402

RATES = {"b32": "throughput_examples_per_s", "b32 sorted": "throughput_longest_first_examples_per_s"}


def run(model_dir: Path, export: Path, out: Path, *, settles_ms: list[float], rounds: int, cache_dir: str) -> dict:
    model = load_model(model_dir).eval()
    tokenizer = load_tokenizer(str(model_dir))
    pad = tokenizer.pad_token_id or 0
    task = next(iter(model.tasks.values()))
    data = DataConfig(tasks=[task.name], data_root=saved_data_root(model_dir), cache_dir=cache_dir, task_specs=[task])
    rows = prepare_data(data, tokenizer, model.max_length or 128, max_examples_per_task=None, seed=0,
                        need_train=False).eval_sets[task.name]
    contenders = {REFERENCE: (torch_forward(model, task), rows, pad)}
    for name in ("int8 session A", "int8 session B"):  # two sessions of one graph
        contenders[name] = (_onnx_forward(OnnxModel.load(export, "int8", with_tokenizer=False), task.name), rows, pad)
    runs = []
    for settle in settles_ms:
        speeds = compare_speed(contenders, task, rounds=rounds, latency_runs=30, throughput_batches=4, batch_size=32,
                               longest_first=True, settle_s=settle / 1000)
        rates = {name: {kind: getattr(result, field) for kind, field in RATES.items()}
                 for name, result in speeds.items()}
        runs.append({"settle_ms": settle, "rates": rates})
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": _commit(), "cpu": cpu_info(),
              "threads": torch.get_num_threads(), "model": str(model_dir), "export": str(export),
              "task": task.name, "rounds": rounds, "runs": runs}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "speed_order.json", report)
    (out / "speed_order.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    """One row per pause: each contender's batch-32 rate, the int8 sessions' speedups and B against A."""
    lines = [f"{report['date']}, commit {report['commit']}, CPU \"{report['cpu']['model_name']}\", "
             f"{report['threads']} thread(s); {report['task']} dev inputs, {report['rounds']} rounds, batch 32 "
             "(4 batches a turn): consecutive rows, then longest first (sorted).", "",
             "| pause before each turn | rows | torch fp32 ex/s | int8 A ex/s (speedup) | int8 B ex/s (speedup) | "
             "B / A |", "|---:|---|---:|---:|---:|---:|"]
    for entry in report["runs"]:
        rates = entry["rates"]
        for kind in RATES:
            torch_rate, a, b = rates[REFERENCE][kind], rates["int8 session A"][kind], rates["int8 session B"][kind]
            lines.append(f"| {entry['settle_ms']:.0f} ms | {kind} | {torch_rate:.0f} | {a:.0f} ({a / torch_rate:.2f}x) "
                         f"| {b:.0f} ({b / torch_rate:.2f}x) | {b / a:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("runs/demo/student-transformer/model"),
                        help="the saved Transformer student (the PyTorch reference)")
    parser.add_argument("--export", type=Path, default=Path("runs/onnx_int8/exports/plain"),
                        help="its ONNX export folder with an int8 graph (`multidistill export --quantize int8`)")
    parser.add_argument("--out", type=Path, default=Path("runs/speed_order"))
    parser.add_argument("--settle-ms", type=float, nargs="+", default=[0.0, 50.0],
                        help="pauses before each turn to compare, in milliseconds")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cache-dir", default=".cache/multidistill")
    args = parser.parse_args(argv)
    if not all(settle >= 0 for settle in args.settle_ms):
        parser.error(f"--settle-ms takes pauses >= 0, got {args.settle_ms}")
    for folder, what in ((args.model, "model folder"), (args.export, "export folder")):
        if not folder.is_dir():
            print(f"{folder} is not a {what}; run `multidistill demo` and benchmarks/onnx_int8.py first, or pass it",
                  file=sys.stderr)
            return 2
    print(markdown(run(args.model, args.export, args.out, settles_ms=args.settle_ms, rounds=args.rounds,
                       cache_dir=args.cache_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
