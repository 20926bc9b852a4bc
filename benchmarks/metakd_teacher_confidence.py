"""How sure is each arm's teacher on the rows its students are distilled on? (Meta-KD, issue 13)

    HF_HUB_OFFLINE=1 python benchmarks/metakd_teacher_confidence.py runs/bench_metakd/fraction-0.1

Reads a finished `benchmarks/metakd_amazon.py` fraction folder (its recipe.yaml, the arms' signal stores and
summary.json) and prints, per target domain and arm, the stored teacher probabilities on the target's training
rows (the transfer set of that arm's students): mean top probability, mean probability of the gold label,
accuracy, and the mean test accuracy of the arm's KD student (from summary.json) beside them. Arms: the
meta-teacher (`signals-<d>`, trained with the target's rows), the meta-teacher without the target
(`signals-without-<d>`, never saw them), the mixed-domain teacher and the single-domain one, and in a run with
`student.cross_fit_folds` the cross-fitted targets (`signals-crossfit-<d>`: each row from the fold teacher that
did not see it), whose students are then the summary's Meta-KD row (the meta-teacher's own arm has none there).

Why: at 10% the student of the meta-teacher *without* the target beat the Meta-KD student in every seed. A teacher
that trained on the very rows it labels gives near one-hot targets there (it has fit them), which carry less
than soft targets on rows it has not seen; this script measures whether that is what differs. It reads stores
only (seconds, no model runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from multidistill.data.prepare import open_example_store
from multidistill.recipes.config import load_recipe
from multidistill.recipes.metakd import ROWS
from multidistill.teachers.store import open_signal_store

ARMS = {  # signal-store folder prefix -> summary.json row of its students
    "signals": ROWS["student"],
    "signals-without": ROWS["without_kd"],
    "signals-mixed": ROWS["mixed_kd"],
    "signals-single": ROWS["single_kd"],
}


def arms(cross_fitted: bool) -> dict[str, str | None]:
    """With cross-fitting the summary's Meta-KD row is the cross-fitted students (the meta-teacher's own arm then
    has no students in the summary)."""
    if not cross_fitted:
        return ARMS
    return {"signals": None, "signals-crossfit": ROWS["student"], **{k: v for k, v in ARMS.items() if k != "signals"}}


def arm_rows(folder: Path) -> list[dict]:
    recipe = load_recipe(folder / "recipe.yaml")
    task = recipe.data.tasks[0].name
    examples = open_example_store(recipe.data, max_examples_per_task=None, seed=recipe.subset_seed)
    train = examples.examples(task, "train")
    labels = dict(zip(train["id"], train["label"], strict=True))
    summary = json.loads((folder / "summary.json").read_text())["rows"]
    rows = []
    for domain in recipe.targets or examples.domains(task):
        for prefix, student in arms(bool(recipe.student.cross_fit_folds)).items():
            if recipe.student.augment is not None:
                student = None  # the summary's students distilled the augmented transfer sets, not these rows
            store_dir = folder / f"{prefix}-{domain}"
            if not store_dir.is_dir():
                continue
            signals = open_signal_store(store_dir).signals(task, "train")
            probs = np.asarray(signals["teacher_mean"], dtype=np.float64)  # the mean of the teachers' softmax
            gold = np.array([labels[str(i)] for i in signals["id"]])
            rows.append({"domain": domain, "arm": prefix, "rows": len(gold),
                         "top_p": float(probs.max(-1).mean()),
                         "gold_p": float(probs[np.arange(len(gold)), gold].mean()),
                         "accuracy": float((probs.argmax(-1) == gold).mean()),
                         "student_test": None if student is None else
                         summary.get(student, {}).get("metrics", {}).get("main", {}).get(domain)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a finished metakd_amazon.py fraction folder")
    args = parser.parse_args(argv)
    if not (args.folder / "summary.json").is_file():
        print(f"error: {args.folder}/summary.json not found: run benchmarks/metakd_amazon.py to the end first",
              file=sys.stderr)
        return 2
    print("| target | teacher's arm | transfer rows | mean top p | mean p(gold) | teacher acc | student test |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in arm_rows(args.folder):
        test = "" if row["student_test"] is None else f"{100 * row['student_test']:.1f}"
        print(f"| {row['domain']} | {row['arm']} | {row['rows']} | {row['top_p']:.3f} | {row['gold_p']:.3f} | "
              f"{100 * row['accuracy']:.1f} | {test} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
