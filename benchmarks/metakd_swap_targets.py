"""Meta-KD's two stages, crossed between the two meta-teachers: which stage makes the without-target arm win?

    HF_HUB_OFFLINE=1 python benchmarks/metakd_swap_targets.py runs/bench_metakd/fraction-0.1 [--seeds 1 2 3]

At 10% of the target's rows the Meta-KD student of the meta-teacher trained *without* the target beat the Meta-KD
student of the meta-teacher trained with it, in every seed (docs/benchmarks.md, issue 13). Each student is two
stages: A (intermediate: features of that meta-teacher, lambda-weighted) and B (prediction: soft cross-entropy
against that meta-teacher's probabilities on the target's rows). This script trains the two crossed students from a
finished `benchmarks/metakd_amazon.py` fraction folder, per target and seed:

- "A with, B without": stage B from the Meta-KD stage-A model (`intermediate-<d>-seed-<s>`), against the
  without-target teacher's signals (`signals-without-<d>`);
- "A without, B with": stage B from the without-target stage-A model, against the meta-teacher's signals.

Each is the recipe's own stage B (the student-<d>-seed-<s> stage's saved settings, only the start model and the
signal store swapped), run as a `StageRunner` stage under FOLDER/swap (resumable; a finished one is reused), then
scored on the target's test split like the recipe's report. Prints the 2x2 table (test accuracy, mean over seeds and
targets; the diagonal is the recipe's own two students from summary.json) and the per-target cells.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from multidistill.config import DataConfig, ModelConfig, ObjectiveConfig, TrainConfig, read_yaml
from multidistill.recipes.common import train_stage
from multidistill.recipes.metakd import ROWS, domain_scores
from multidistill.recipes.stages import StageRunner, stage_fingerprint
from multidistill.utils.atomic import write_json

# (stage A's arm, stage B's arm) -> (stage-A folder prefix, signal store prefix)
CROSSED = {("with", "without"): ("intermediate", "signals-without"),
           ("without", "with"): ("intermediate-without", "signals")}
DIAGONAL = {("with", "with"): ROWS["student"], ("without", "without"): ROWS["without_kd"]}


def seed_suffix(folder: Path, target: str, seed: int) -> str:
    """The recipe's stage-name suffix: `-seed-<s>` with several student seeds, none with one."""
    return f"-seed-{seed}" if (folder / f"student-{target}-seed-{seed}").is_dir() else ""


def crossed_student(runner: StageRunner, folder: Path, target: str, seed: int, arms: tuple[str, str]) -> Path:
    """Stage B of the recipe's student-<target>[-seed-<seed>], from the other arm's stage A or signals."""
    suffix = seed_suffix(folder, target, seed)
    saved = read_yaml(folder / f"student-{target}{suffix}" / "config.yaml")
    stage_a, store = CROSSED[arms]
    start = str(folder / f"{stage_a}-{target}{suffix}" / "model")
    signals = folder / f"{store}-{target}"
    model = ModelConfig.model_validate({**saved["model"], "name_or_path": start, "init_from": start})
    return train_stage(runner, f"A-{arms[0]}-B-{arms[1]}-{target}{suffix}", kind="distill", model=model,
                       train=TrainConfig.model_validate(saved["train"]), data=DataConfig.model_validate(saved["data"]),
                       max_examples=None, objective=ObjectiveConfig.model_validate(saved["objective"]),
                       signals=signals, inputs={"signals": stage_fingerprint(signals),
                                                "stage_a": stage_fingerprint(Path(start).parent)})


def score_on_test(model_folder: Path, data: DataConfig, target: str) -> float:
    """Accuracy on the target's test rows, scored as the recipe's report scores a student."""
    return domain_scores(model_folder, data.model_copy(update={"eval_split": "test"}), batch_size=64)[target][
        "accuracy"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a finished metakd_amazon.py fraction folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args(argv)
    summary_path = args.folder / "summary.json"
    if not summary_path.is_file():
        print(f"error: {summary_path} not found: run benchmarks/metakd_amazon.py to the end first", file=sys.stderr)
        return 2
    summary = json.loads(summary_path.read_text())["rows"]
    targets = list(summary[DIAGONAL[("with", "with")]]["metrics"]["main"])
    if len(args.seeds) > 1 and not seed_suffix(args.folder, targets[0], args.seeds[0]):
        print(f"error: {args.folder} has one student per target (no -seed-<s> stages); give one --seeds value",
              file=sys.stderr)
        return 2
    runner = StageRunner(args.folder / "swap")
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    for arms, row in DIAGONAL.items():
        cells[arms] = {d: list(summary[row]["metrics"]["runs"][d]) for d in targets}
    scores_path = args.folder / "swap" / "scores.json"
    scores = json.loads(scores_path.read_text()) if scores_path.is_file() else {}
    for target in targets:
        for seed in args.seeds:
            for arms in CROSSED:
                stage = crossed_student(runner, args.folder, target, seed, arms)
                key = stage.name
                if key not in scores:
                    data = DataConfig.model_validate(read_yaml(stage / "config.yaml")["data"])
                    scores[key] = score_on_test(stage / "model", data, target)
                    write_json(scores_path, scores)
                cells.setdefault(arms, {}).setdefault(target, []).append(scores[key])
    print(f"Test accuracy (%), mean over seeds {args.seeds} and targets {targets}; rows: stage A's meta-teacher, "
          "columns: stage B's targets")
    print("| stage A from \\ stage B against | meta-teacher (with target) | meta-teacher without target |")
    print("|---|---:|---:|")
    for a in ("with", "without"):
        means = [statistics.fmean(v for d in targets for v in cells[(a, b)][d]) for b in ("with", "without")]
        print(f"| meta-teacher {'with' if a == 'with' else 'without'} target | {100 * means[0]:.1f} | "
              f"{100 * means[1]:.1f} |")
    print("\n| target | A with, B with | A with, B without | A without, B with | A without, B without |")
    print("|---|---:|---:|---:|---:|")
    for d in targets:
        row = [cells[(a, b)][d] for a, b in (("with", "with"), ("with", "without"), ("without", "with"),
                                              ("without", "without"))]
        print(f"| {d} | " + " | ".join(f"{100 * statistics.fmean(v):.1f} ± {100 * statistics.stdev(v):.1f}"
                                      if len(v) > 1 else f"{100 * v[0]:.1f}" for v in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
