"""Issue 3 acceptance: MT-DNN-KD and MKD students vs their MiniLM teachers on four GLUE tasks.

    HF_HUB_OFFLINE=1 python benchmarks/kd_glue.py [--runs-dir runs/bench_kd]

1. `multidistill run configs/mtdnn_kd.yaml`: 3 multi-task teachers (seeds 1, 2, 3) -> soft targets -> a
   same-size multi-task student. Teacher seed 1 is "the single teacher" of the table.
2. `multidistill run configs/mkd_transformer.yaml` and `configs/mkd_bilstm.yaml` with that teacher
   (`teacher.model_dirs`), so every row shares one teacher; the BiLSTM recipe also trains the single-task
   BiLSTM baseline (same architecture and budget, one model per task).
3. Speed: every model on SST-2 dev sentences, measured in this process, alternating (evaluation.speed).
4. Distillation cost: examples/s of the same 3-layer student run reading the store, with the teacher
   computed online each step, and with no teacher at all (plain fine-tuning), medians of --repeats runs.

All runs are resumable stages: re-running the script skips what is done. Results go to RUNS/results.json
and a markdown table on stdout (copied into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from multidistill.evaluation.retention import retention

TASKS = ["sst2", "mrpc", "cola", "stsb"]


def run(*args: str) -> None:
    cmd = [sys.executable, "-m", "multidistill.cli", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def recipes(runs: Path, args) -> dict[str, Path]:
    mtdnn = runs / "mtdnn_kd"
    if args.keep_mtdnn and (mtdnn / "summary.json").is_file():
        print(f"reusing the finished MT-DNN-KD run in {mtdnn} as is (--keep-mtdnn)", flush=True)
    else:
        run("run", "configs/mtdnn_kd.yaml", "--set", f"output_dir={mtdnn}")
    teacher = mtdnn / "teacher-seed-1" / "model"
    shared = ["--set", "teacher.model=null", "--set", f"teacher.model_dirs=[{teacher}]"]
    run("run", "configs/mkd_bilstm.yaml", "--set", f"output_dir={runs / 'mkd_bilstm'}", *shared,
        "--set", f"augment.n_iter={args.n_iter}", "--set", f"augment.n_iter_pair={args.n_iter_pair}")
    # The Transformer student trains ~4x slower than the BiLSTM: a smaller transfer set keeps it in budget.
    run("run", "configs/mkd_transformer.yaml", "--set", f"output_dir={runs / 'mkd_transformer'}", *shared,
        "--set", f"augment.n_iter={args.n_iter_transformer}",
        "--set", f"augment.n_iter_pair={args.n_iter_pair_transformer}")
    return {"mtdnn": mtdnn, "transformer": runs / "mkd_transformer", "bilstm": runs / "mkd_bilstm"}


def quality_rows(dirs: dict[str, Path]) -> dict[str, dict]:
    """Table rows: name -> {metrics, model dir (for speed), params}."""
    mtdnn = json.loads((dirs["mtdnn"] / "summary.json").read_text())["rows"]
    transformer = json.loads((dirs["transformer"] / "summary.json").read_text())["rows"]
    bilstm = json.loads((dirs["bilstm"] / "summary.json").read_text())["rows"]
    return {
        "multi-task teacher (seed 1)": {**mtdnn["teacher teacher-seed-1"],
                                        "model": dirs["mtdnn"] / "teacher-seed-1" / "model"},
        "3-teacher ensemble": {**mtdnn["ensemble of 3"], "model": None},
        "MT-DNN-KD student (6 layers)": {**mtdnn["student"], "model": dirs["mtdnn"] / "student" / "model"},
        "MKD Transformer student (3 layers)": {**transformer["student (joint)"],
                                               "model": dirs["transformer"] / "student" / "model"},
        "MKD BiLSTM student (joint)": {**bilstm["student (joint)"], "model": dirs["bilstm"] / "student" / "model"},
        "MKD BiLSTM + per-task fine-tune": {**bilstm["student + per-task fine-tune"],
                                            "model": dirs["bilstm"] / "finetune-sst2" / "model"},
        "single-task BiLSTM baseline": {**bilstm["single-task baseline"],
                                        "model": dirs["bilstm"] / "baseline-sst2" / "model"},
    }


def speed(rows: dict[str, dict], data_root: str, rounds: int) -> dict[str, dict]:
    import torch

    from multidistill.config import DataConfig
    from multidistill.data.collate import pad_id
    from multidistill.data.prepare import prepare_data
    from multidistill.evaluation.speed import compare_speed, torch_forward
    from multidistill.models import load_model
    from multidistill.models.backbone import load_tokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    models = {}
    task = None
    for name, row in rows.items():
        if row["model"] is None:
            continue
        model = load_model(row["model"])
        tokenizer = load_tokenizer(str(row["model"]))
        data = prepare_data(DataConfig(tasks=["sst2"], data_root=data_root,
                                       task_specs=[model.tasks["sst2"]]), tokenizer, 128,
                            max_examples_per_task=None, seed=0, need_train=False)
        task = data.tasks["sst2"]
        models[name] = (torch_forward(model, data.tasks["sst2"]), data.eval_sets["sst2"], pad_id(tokenizer))
    results = compare_speed(models, task, rounds=rounds, latency_runs=10 * rounds, throughput_batches=4)
    return {name: r.to_dict() for name, r in results.items()}


def distillation_cost(runs: Path, dirs: dict[str, Path], repeats: int, examples: int) -> dict[str, list[float]]:
    """The 3-layer student on SST-2: store-backed vs online teacher vs no teacher, 3 epochs each."""
    from multidistill.config import TeacherRunConfig, load_config
    from multidistill.training.run import train_model

    teacher = dirs["mtdnn"] / "teacher-seed-1" / "model"
    base = load_config("configs/mtdnn_kd_student.yaml")  # only used for its data section
    store = runs / "cost_signals"
    from multidistill.config import DataConfig
    from multidistill.teachers.generate import build_signal_store

    data = DataConfig(tasks=["sst2"], data_root=base.data.data_root, subset_seed=42)
    build_signal_store([teacher], data, store, max_examples_per_task=examples, seed=42)
    model = {"name_or_path": str(teacher), "student_layers": [1, 3, 5], "pooling": "mean", "max_seq_length": 128}
    train = {"epochs": 3, "batch_size": 32, "lr": 1e-4, "max_examples_per_task": examples, "seed": 42,
             "checkpoint_every_steps": 10_000}
    kd = {"classification": [{"loss": "logit_mse"}, {"loss": "hard"}]}
    variants = {
        "store": {"kind": "distill", "signals": str(store), "objective": kd},
        "online teacher": {"kind": "distill", "online_teachers": [str(teacher)], "objective": kd},
        "no teacher (plain fine-tuning)": {"kind": "teacher"},
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(repeats):
        for name, extra in variants.items():  # alternate variants within each repeat
            out = runs / "cost" / f"{name.split()[0]}-{repeat}"
            config = TeacherRunConfig.model_validate({"output_dir": str(out), "model": model,
                                                      "data": data.model_dump(), "train": train, **extra})
            result = train_model(config, overwrite=True)
            rates[name].append(result.examples_per_second)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench_kd"))
    parser.add_argument("--n-iter", type=int, default=4, help="BiLSTM: augmented variants per single-text example")
    parser.add_argument("--n-iter-pair", type=int, default=2, help="BiLSTM: augmented variants per pair example")
    parser.add_argument("--n-iter-transformer", type=int, default=2, help="3-layer student: variants per example")
    parser.add_argument("--n-iter-pair-transformer", type=int, default=1, help="3-layer student: per pair example")
    parser.add_argument("--speed-rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="runs per distillation-cost variant")
    parser.add_argument("--cost-examples", type=int, default=500, help="SST-2 examples of the cost runs")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--keep-mtdnn", action="store_true",
                        help="reuse a finished MT-DNN-KD folder (its summary.json and teacher) without re-running its "
                             "recipe, e.g. after a version whose stage fingerprints differ")
    parser.add_argument("--keep-cost", action="store_true",
                        help="reuse the distillation-cost medians of the previous RUNS/results.json")
    args = parser.parse_args()
    from multidistill.training.device import cpu_name

    started = time.time()
    dirs = recipes(args.runs_dir, args)
    rows = quality_rows(dirs)
    speeds = speed(rows, args.data_root, args.speed_rounds)
    previous = args.runs_dir / "results.json"
    if args.keep_cost and previous.is_file():
        cost = json.loads(previous.read_text())["distillation_cost"]
    else:
        cost = distillation_cost(args.runs_dir, dirs, args.repeats, args.cost_examples)
    teacher_name = "multi-task teacher (seed 1)"
    results = {"date": time.strftime("%Y-%m-%d"), "machine": cpu_name(),
               "cpus": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()},
               "rows": {n: {k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()} for n, r in rows.items()},
               "speed": speeds, "distillation_cost": cost, "wall_seconds": time.time() - started}
    (args.runs_dir / "results.json").write_text(json.dumps(results, indent=2))

    base = rows[teacher_name]["metrics"]["main"]
    t_speed = speeds[teacher_name]
    print("| model | " + " | ".join(TASKS) + " | average | retention % | parameters | latency b=1 (ms) "
          "| throughput b=32 (ex/s) | speedup |")
    print("|---|" + "---|" * (len(TASKS) + 6))
    for name, row in rows.items():
        main_scores = row["metrics"]["main"]
        s = speeds.get(name)
        cells = [f"{main_scores[t]:.4f}" for t in TASKS]
        speed_cells = ([f"{s['latency_ms_median']:.1f}", f"{s['throughput_examples_per_s']:.0f}",
                        f"{s['throughput_examples_per_s'] / t_speed['throughput_examples_per_s']:.2f}x"]
                       if s else ["-", "-", "-"])
        params = f"{row['params'] / 1e6:.1f}M" if row.get("params") else "-"
        kept = retention(main_scores, base, TASKS)  # over the tasks both rows have, as everywhere
        kept_cell = f"{100 * kept.ratio:.1f}" if kept else "-"
        print(f"| {name} | " + " | ".join(cells) + f" | {row['metrics']['average']:.4f} | "
              f"{kept_cell} | {params} | " + " | ".join(speed_cells) + " |")
    print("\n| distillation run (3-layer student, SST-2) | examples/s (median) | runs | vs plain fine-tuning |")
    print("|---|---|---|---|")
    plain = statistics.median(cost["no teacher (plain fine-tuning)"])
    for name, values in cost.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} "
              f"| {statistics.median(values) / plain:.2f}x |")


if __name__ == "__main__":
    main()
