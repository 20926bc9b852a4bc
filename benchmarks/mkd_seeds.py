"""Are an MKD run's results more than seed noise? Re-train its students with other seeds.

    HF_HUB_OFFLINE=1 python benchmarks/mkd_seeds.py [--run runs/bench_kd/mkd_bilstm] [--seeds 43]

Takes a finished MKD run (`configs/mkd_bilstm.yaml` or `configs/mkd_transformer.yaml`; kd_glue.py makes both)
and re-runs its student, and its per-task fine-tunes and single-task baselines where the run has them, from
their own saved `config.yaml`, changing only the training seed
(initialisation, dropout and batch order). The teacher, the augmented transfer set and the signal store are
the run's own, unchanged. Runs go to RUN/seed-<s>/<stage>, resume if cut, and are reused once finished. Prints
each seed's averages and the mean over seeds (the run's own seed, 42, included) as a markdown table.
"""

from __future__ import annotations

import argparse
import functools
import statistics
from pathlib import Path

TASKS = ["sst2", "mrpc", "cola", "stsb"]
ROWS = {"student (joint)": "student", "student + per-task fine-tune": "finetune-{task}",
        "single-task baseline": "baseline-{task}"}


def _train(source: Path, out: Path, seed: int, init_from: Path | None = None) -> Path:
    from multidistill.config import load_config
    from multidistill.training.loop import BEST_MODEL
    from multidistill.training.run import train_model

    if (out / "metrics.json").is_file():
        return out
    config = load_config(source / "config.yaml")
    model = config.model if init_from is None else config.model.model_copy(update={"init_from": str(init_from)})
    config = config.model_copy(update={"output_dir": str(out), "model": model,
                                       "train": config.train.model_copy(update={"seed": seed})})
    train_model(config, resume=(out / "checkpoints").is_dir())
    assert (out / BEST_MODEL).is_dir()
    return out


def scores(folder: Path, rows: dict[str, str]) -> dict[str, dict[str, float]]:
    """Row name -> task -> main dev metric, for one seed's folders."""
    from multidistill.recipes.common import read_metrics

    main = functools.cache(lambda path: read_metrics(path)["main"])  # the joint student's folder serves every task
    return {row: {t: main(folder / pattern.format(task=t))[t] for t in TASKS} for row, pattern in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/bench_kd/mkd_bilstm"))
    parser.add_argument("--seeds", type=int, nargs="*", default=[43])
    args = parser.parse_args()
    from multidistill.training.loop import BEST_MODEL
    from multidistill.utils.atomic import write_json

    # The Transformer recipe has no fine-tune or baseline stages: only the rows the run has.
    rows = {row: pattern for row, pattern in ROWS.items() if (args.run / pattern.format(task=TASKS[0])).is_dir()}
    per_seed = {42: scores(args.run, rows)}
    for seed in args.seeds:
        folder = args.run / f"seed-{seed}"
        student = _train(args.run / "student", folder / "student", seed)
        for task in TASKS:
            if "student + per-task fine-tune" in rows:
                _train(args.run / f"finetune-{task}", folder / f"finetune-{task}", seed,
                       init_from=student / BEST_MODEL)
            if "single-task baseline" in rows:
                _train(args.run / f"baseline-{task}", folder / f"baseline-{task}", seed)
        per_seed[seed] = scores(folder, rows)
    write_json(args.run / "seeds.json", {str(s): v for s, v in per_seed.items()})

    compare = len(rows) == len(ROWS)
    print("| seed | " + " | ".join(rows) + (" | fine-tuned minus baseline |" if compare else " |"))
    print("|---|" + "---:|" * (len(rows) + compare))
    lines = {str(seed): {row: statistics.mean(by_task.values()) for row, by_task in found.items()}
             for seed, found in per_seed.items()}
    lines["mean"] = {row: statistics.mean(line[row] for line in lines.values()) for row in rows}
    for label, value in lines.items():
        margin = (f" {value['student + per-task fine-tune'] - value['single-task baseline']:+.4f} |"
                  if compare else "")
        print(f"| {label} | " + " | ".join(f"{value[row]:.4f}" for row in rows) + " |" + margin)


if __name__ == "__main__":
    main()
