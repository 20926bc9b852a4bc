"""Issue 2 acceptance: MiniLM teacher trained multi-task vs. one task at a time on GLUE.

Runs `multidistill train-teacher configs/teacher_glue.yaml` (all four tasks together), then the same
config once per task, and prints a markdown table of dev scores, training time and examples/s.
Finished runs (those with a metrics.json) are not re-run, so the script also just re-prints the table.

    HF_HUB_OFFLINE=1 python benchmarks/teacher_glue.py --single-lanes 2 --single-set train.epochs=3

`--set` applies to every run, `--multi-set` only to the multi-task run, `--single-set` only to the single-task runs
(the shipped config trains 4 epochs: in 3 the multi-task teacher's CoLA was still rising; see docs/benchmarks.md).

With `--single-lanes N` the single-task runs go N at a time, each process on one thread
(OMP_NUM_THREADS=1): on a 2-core CPU two one-thread runs finish sooner than two two-thread runs in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

TASKS = ["sst2", "mrpc", "cola", "stsb"]


def command(output_dir: Path, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "multidistill.cli", "train-teacher", "configs/teacher_glue.yaml",
           "--set", f"output_dir={output_dir}", *sum((["--set", s] for s in extra), [])]
    return [*cmd, "--resume"] if output_dir.exists() else cmd


def run_all(jobs: list[tuple[Path, list[str]]], lanes: int, env: dict) -> None:
    """Run the unfinished jobs, at most `lanes` at a time."""
    pending = [(out, extra) for out, extra in jobs if not (out / "metrics.json").is_file()]
    running: list[subprocess.Popen] = []
    while pending or running:
        while pending and len(running) < lanes:
            out, extra = pending.pop(0)
            cmd = command(out, extra)
            print("+", " ".join(cmd), flush=True)
            running.append(subprocess.Popen(cmd, env=env))
        time.sleep(2)
        for proc in [p for p in running if p.poll() is not None]:
            running.remove(proc)
            if proc.returncode != 0:
                raise SystemExit(f"run failed ({proc.returncode}): {' '.join(proc.args)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench_teacher"))
    parser.add_argument("--single-lanes", type=int, default=1, help="single-task runs at once (1 thread each if > 1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override for every run")
    parser.add_argument("--multi-set", action="append", default=[], help="override for the multi-task run only")
    parser.add_argument("--single-set", action="append", default=[], help="override for the single-task runs only")
    args = parser.parse_args()
    started = time.time()
    run_all([(args.runs_dir / "multitask", [*args.overrides, *args.multi_set])], 1, dict(os.environ))
    single_env = dict(os.environ, **({"OMP_NUM_THREADS": "1"} if args.single_lanes > 1 else {}))
    single = [(args.runs_dir / f"single_{t}", [*args.overrides, *args.single_set, f"data.tasks=[{t}]"]) for t in TASKS]
    run_all(single, args.single_lanes, single_env)

    rows = {"multi-task": json.loads((args.runs_dir / "multitask" / "metrics.json").read_text())}
    rows |= {f"single: {t}": json.loads((args.runs_dir / f"single_{t}" / "metrics.json").read_text()) for t in TASKS}
    summary = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "overrides": args.overrides, "multi_overrides": args.multi_set,
               "single_overrides": args.single_set, "single_lanes": args.single_lanes,
               "rows": rows, "wall_seconds_this_invocation": time.time() - started}
    (args.runs_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print("| run | " + " | ".join(TASKS) + " | average | train examples | train time (s) | examples/s |")
    print("|---|" + "---|" * (len(TASKS) + 4))
    for name, m in rows.items():
        cells = [f"{m['main'][t]:.4f}" if t in m["main"] else "" for t in TASKS]
        print(f"| {name} | " + " | ".join(cells) + f" | {m['average']:.4f} | {sum(m['train_examples'].values())} "
              f"| {m['train_seconds']:.0f} | {m['examples_per_second']:.1f} |")


if __name__ == "__main__":
    main()
