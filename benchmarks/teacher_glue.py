"""Issue 2 acceptance: MiniLM teacher trained multi-task vs. one task at a time on GLUE.

Runs `multidistill train-teacher configs/teacher_glue.yaml` (all four tasks together), then the same
config once per task, and prints a markdown table of dev scores, training time and examples/s.

    HF_HUB_OFFLINE=1 python benchmarks/teacher_glue.py [--runs-dir runs/bench_teacher] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

TASKS = ["sst2", "mrpc", "cola", "stsb"]


def train(output_dir: Path, extra: list[str]) -> dict:
    metrics = output_dir / "metrics.json"
    if not metrics.is_file():
        cmd = [sys.executable, "-m", "multidistill.cli", "train-teacher", "configs/teacher_glue.yaml",
               "--set", f"output_dir={output_dir}", *sum((["--set", s] for s in extra), [])]
        if output_dir.exists():
            cmd.append("--resume")
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return json.loads(metrics.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench_teacher"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    started = time.time()
    rows = {"multi-task": train(args.runs_dir / "multitask", args.overrides)}
    for task in TASKS:
        rows[f"single: {task}"] = train(args.runs_dir / f"single_{task}", [*args.overrides, f"data.tasks=[{task}]"])
    summary = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
               "overrides": args.overrides, "rows": rows, "wall_seconds": time.time() - started}
    (args.runs_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print("| run | " + " | ".join(TASKS) + " | train s | ex/s |")
    print("|---|" + "---|" * (len(TASKS) + 2))
    for name, m in rows.items():
        cells = [f"{m['main'][t]:.4f}" if t in m["main"] else "" for t in TASKS]
        print(f"| {name} | " + " | ".join(cells) + f" | {m['train_seconds']:.0f} | {m['examples_per_second']:.1f} |")


if __name__ == "__main__":
    main()
