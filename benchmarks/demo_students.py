"""The demo's students alone: its teacher, transfer set and signals stages, then the named students, no benchmark.

    HF_HUB_OFFLINE=1 python benchmarks/demo_students.py --student student-bilstm [--quick] [--set KEY=VALUE ...]

Runs the stages `multidistill demo` runs (`recipes.demo.train_stages`: same settings, same fingerprints, so a
later `multidistill demo` in the same output_dir reuses them and adds the benchmark, summary and report), in the
order asked, and prints each student's dev scores. For measuring students where a whole demo would not finish in
time: a finished demo's `teacher/` folder copied into output_dir is reused when its settings match (a teacher
trained in fp32 before the demo chose bf16 on CPUs with native bf16: add `--set teacher_train.bf16=false`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from multidistill.recipes.demo import STUDENTS, load_demo_config, train_stages
from multidistill.recipes.stages import StageRunner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", action="append", choices=STUDENTS,
                        help="A student to train; repeat for several, in that order (default: both).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="A demo setting KEY=VALUE.")
    parser.add_argument("--quick", action="store_true", help="Start from the --quick settings.")
    args = parser.parse_args()
    config = load_demo_config(overrides=args.overrides, quick=args.quick)
    start = time.perf_counter()
    stages = train_stages(StageRunner(Path(config.output_dir)), config, args.student or STUDENTS)
    for name, folder in stages.students.items():
        metrics = json.loads((folder / "metrics.json").read_text())
        print(json.dumps({"student": name, "seconds": round(time.perf_counter() - start), "main": metrics["main"],
                          "average": metrics["average"]}), flush=True)


if __name__ == "__main__":
    main()
