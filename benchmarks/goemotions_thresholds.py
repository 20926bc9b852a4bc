"""Per-label decision thresholds on GoEmotions: the models of a finished `benchmarks/goemotions.py` run, scored on
test at 0.5 and at thresholds chosen on the selection rows.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/goemotions_thresholds.py --work runs/goemotions_teacher10

Reads WORK/TAXONOMY (the folder `goemotions.py` wrote; its settings and rows are used as they are) and writes
WORK/TAXONOMY/thresholds:

- each student run (KD and gold-only, every seed) is copied there and resumed with ``train.thresholds=per_label``
  (a setting a resume may change): the finished run trains no step, and its end chooses each label's threshold
  on the selection rows (the run's eval split) and saves them in the model folder, as a run with the setting
  from the start would;
- the teacher (an imported classifier: no run to resume) is copied there and gets its thresholds from the same
  functions the run's end calls (`choose_for` on the selection rows, `save_thresholds`);
- every model, with and without thresholds, is scored on the test rows by `evaluate_model_dir`, which applies the
  saved thresholds.

Finished steps are reused on a re-run. Results: thresholds/results.json and markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

TASK = "goemotions"


def copy_of(source: Path, target: Path) -> Path:
    """``source`` copied to ``target`` (kept if a finished copy is there)."""
    if not target.is_dir():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial)
        partial.rename(target)
    return target


def student_thresholds(run: Path, target: Path) -> Path:
    """A copy of the finished student run ``run``, resumed with train.thresholds=per_label; its model folder."""
    import yaml

    from multidistill import distill, train_model
    from multidistill.evaluation.thresholds import saved_thresholds

    copy = copy_of(run, target)
    if not saved_thresholds(copy / "model"):
        kind = yaml.safe_load((copy / "config.yaml").read_text())["kind"]
        (distill if kind == "distill" else train_model)(
            copy / "config.yaml", ["train.thresholds=per_label", f"output_dir={copy}"], resume=True, progress=False)
    return copy / "model"


def teacher_thresholds(teacher: Path, target: Path, data: dict) -> Path:
    """A copy of the imported teacher with thresholds chosen on the selection rows; the copy."""
    import torch

    from multidistill.config import DataConfig
    from multidistill.data.collate import pad_id
    from multidistill.data.prepare import prepare_data
    from multidistill.evaluation.thresholds import choose_for, save_thresholds, saved_thresholds
    from multidistill.models import load_model
    from multidistill.models.backbone import load_tokenizer

    copy = copy_of(teacher, target)
    if not saved_thresholds(copy):
        model, tokenizer = load_model(copy), load_tokenizer(str(copy))
        prepared = prepare_data(DataConfig(tasks=[TASK], data_root=data["data_root"], cache_dir=data["cache_dir"],
                                           task_specs=[model.tasks[TASK]]),
                                tokenizer, model.inference_length, max_examples_per_task=None, seed=0,
                                need_train=False)
        save_thresholds(copy, model.tasks, choose_for(model, prepared.tasks, prepared.eval_sets, batch_size=64,
                                                      pad_token_id=pad_id(tokenizer), device=torch.device("cpu")))
    return copy


def test_scores(model_dir: Path, data: dict, cache: Path) -> dict[str, float]:
    from multidistill import evaluate_model_dir

    if cache.is_file():
        return json.loads(cache.read_text())
    scores = evaluate_model_dir(model_dir, split="test", data_root=data["data_root"], cache_dir=data["cache_dir"],
                                progress=False)["tasks"][TASK]
    cache.write_text(json.dumps(scores))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "goemotions")
    parser.add_argument("--taxonomy", choices=["ekman", "all"], default="ekman")
    parser.add_argument("--student-seeds", default="1,2,3")
    args = parser.parse_args()
    from multidistill.evaluation.thresholds import describe

    work = args.work / args.taxonomy
    if not (work / "results.json").is_file():
        sys.exit(f"{work} holds no finished goemotions.py run (results.json); run benchmarks/goemotions.py first")
    out = work / "thresholds"
    out.mkdir(exist_ok=True)
    data = {"data_root": str(work / "data"), "cache_dir": str(work / "cache")}
    seeds = [int(s) for s in args.student_seeds.split(",")]
    started = time.time()
    models = {"teacher": (work / "teacher", teacher_thresholds(work / "teacher", out / "teacher", data))}
    for arm in ("kd", "no-kd"):
        for seed in seeds:
            run = work / f"{arm}-seed-{seed}"
            if not (run / "metrics.json").is_file():
                sys.exit(f"{run} has not finished training (no metrics.json): finish benchmarks/goemotions.py")
            models[f"{arm}-seed-{seed}"] = (run / "model", student_thresholds(run, out / run.name))
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.processor()
               or platform.machine(), "work": str(work), "models": {}}
    for name, (plain, tuned) in models.items():
        results["models"][name] = {
            "fixed": test_scores(plain, data, out / f"{name}.fixed.json"),
            "per_label": test_scores(tuned, data, out / f"{name}.per_label.json"),
            "thresholds": json.loads((tuned / "multidistill_model.json").read_text())["thresholds"][TASK]}
    results["seconds"] = round(time.time() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1))

    def cell(names: list[str], setting: str, metric: str) -> str:
        values = [results["models"][n][setting][metric] for n in names]
        if len(values) == 1:
            return f"{values[0]:.4f}"
        return f"{statistics.median(values):.4f} ({min(values):.4f}..{max(values):.4f})"

    rows = {"teacher (imported)": ["teacher"], "KD student, 3 seeds": [f"kd-seed-{s}" for s in seeds],
            "gold-only student, 3 seeds": [f"no-kd-seed-{s}" for s in seeds]}
    print(f"GoEmotions ({args.taxonomy}), test; thresholds chosen on the selection rows\n")
    print("| model | micro F1 at 0.5 | micro F1, per-label | macro F1 at 0.5 | macro F1, per-label |")
    print("|---|---:|---:|---:|---:|")
    for label, names in rows.items():
        print(f"| {label} | {cell(names, 'fixed', 'micro_f1')} | {cell(names, 'per_label', 'micro_f1')} | "
              f"{cell(names, 'fixed', 'macro_f1')} | {cell(names, 'per_label', 'macro_f1')} |")
    print("\nthresholds:")
    for name, entry in results["models"].items():
        print(f"  {name}: {describe(entry['thresholds'])}")
    print(f"\n{results['seconds']} s")


if __name__ == "__main__":
    main()
