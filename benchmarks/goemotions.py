"""GoEmotions, a multilabel task on real data: a stock multi-label classifier fine-tuned elsewhere, brought in
with `import-classifier`, then distilled into a 3-layer student.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/goemotions.py

Data: benchmarks/data/goemotions (GoEmotions' public dev and test splits, 5,426 and 5,427 Reddit comments, each
with the set of emotions its raters agreed on; README.md there gives the source). The labels are Ekman's six
emotions plus neutral, by the dataset's own mapping (``--taxonomy ekman``, the default), or all 28
(``--taxonomy all``). GoEmotions' 43,410-row train split is not in the repository, so:

1. The public dev split is cut in two with a seeded draw (numpy ``default_rng(--seed)``): --selection rows (1,000)
   select checkpoints, the rest (4,426) train; the public test split is only scored.
2. "Elsewhere": transformers' own `Trainer` fine-tunes `AutoModelForSequenceClassification` over MiniLM-L6
   (``problem_type: multi_label_classification``: a sigmoid and binary cross-entropy per label) on the training
   rows, and saves it with its tokenizer. No multidistill code runs in this step.
3. The stock classifier is scored on test by plain transformers and scikit-learn code (a label is predicted where
   its logit is over 0).
4. `import_classifier` brings it in; `evaluate_model_dir` scores the imported folder on test, and the rows where
   `predict` gives the stock classifier's set are counted (all of them, if the import is exact).
5. `build_signal_store` + `distill`: a 3-layer student (the teacher's layers 0, 2, 4, its head by ``heads_from``)
   with L = 1/2 hard + 1/2 soft_bce (the teacher's sigmoids), against the same student on the gold sets alone, each
   with --student-seeds; checkpoints selected on the selection rows, scored on test.

Everything lands under --work (default runs/goemotions) / the taxonomy; finished steps are reused on a re-run
(the classifier, the store, each student whose training ended), and a student cut mid-run resumes from its last
checkpoint, so an interrupted run continues; a re-run with another --selection,
--seed, --epochs, --teacher-epochs or --lr is refused there (WORK/settings.json): its finished steps were made with
other settings. Results: WORK/results.json and markdown on stdout.
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

from trainer_classifier import train_stock_classifier  # noqa: E402  (benchmarks/ is on the path above)

DATA = REPO / "benchmarks" / "data" / "goemotions"
METRICS = ["micro_f1", "macro_f1", "samples_f1", "exact_match"]


def labels_of(taxonomy: str) -> tuple[list[str], dict[int, str]]:
    """The task's labels and, for each GoEmotions emotion id, the label it counts as."""
    emotions = (DATA / "emotions.txt").read_text(encoding="utf-8").split("\n")
    if taxonomy == "all":
        return emotions, dict(enumerate(emotions))
    ekman = json.loads((DATA / "ekman_mapping.json").read_text(encoding="utf-8"))
    to_ekman = {emotion: group for group, members in ekman.items() for emotion in members}
    to_ekman["neutral"] = "neutral"
    return [*ekman, "neutral"], {i: to_ekman[name] for i, name in enumerate(emotions)}


def read_split(name: str, mapping: dict[int, str]) -> list[tuple[str, str, list[str]]]:
    """(id, text, labels) of GoEmotions' ``name`` split (text, comma-separated emotion ids, id; no header)."""
    rows = []
    for line in (DATA / f"{name}.tsv").read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        text, ids, comment = line.split("\t")
        rows.append((comment, text, sorted({mapping[int(i)] for i in ids.split(",")})))
    return rows


def prepare(work: Path, taxonomy: str, selection: int, seed: int) -> tuple[dict, dict[str, list]]:
    """Write train / dev (selection) / test as JSON lines under WORK/data; the task spec and the rows."""
    import numpy as np

    labels, mapping = labels_of(taxonomy)
    public_dev = read_split("dev", mapping)
    picked = set(np.random.default_rng(seed).permutation(len(public_dev))[:selection].tolist())
    splits = {"train": [row for i, row in enumerate(public_dev) if i not in picked],
              "dev": [row for i, row in enumerate(public_dev) if i in picked],
              "test": read_split("test", mapping)}
    folder = work / "data" / "goemotions"
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        text = "".join(json.dumps({"id": i, "text": t, "labels": ls}, ensure_ascii=False) + "\n" for i, t, ls in rows)
        path = folder / f"{split}.jsonl"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    columns = {"id": "id", "text_a": "text", "label": "labels"}
    spec = {"name": "goemotions", "type": "multilabel", "labels": labels, "metrics": METRICS,
            "files": {split: {"path": f"goemotions/{split}.jsonl", "format": "jsonl", "columns": columns}
                      for split in splits}}
    return spec, splits


def fine_tune(folder: Path, rows: list, labels: list[str], seed: int, epochs: float, lr: float) -> float:
    """transformers' Trainer, multi-label (a sigmoid and binary cross-entropy per label), on ``rows``; saved with its
    tokenizer in ``folder``; the seconds it took (read back when the folder holds one already)."""
    if (folder / "model.safetensors").is_file():
        return json.loads((folder / "elsewhere.json").read_text())["seconds"]
    targets = [[float(label in row_labels) for label in labels] for _, _, row_labels in rows]
    return train_stock_classifier(folder, [t for _, t, _ in rows], None, targets, seed=seed, epochs=epochs, lr=lr,
                                  work=folder.parent / "trainer-work", num_labels=len(labels),
                                  problem_type="multi_label_classification", id2label=dict(enumerate(labels)),
                                  label2id={label: i for i, label in enumerate(labels)})


def stock_scores(folder: Path, rows: list, labels: list[str]) -> tuple[dict[str, float], list[list[str]]]:
    """The stock classifier on ``rows`` by transformers + scikit-learn alone: metrics and each row's set."""
    import numpy as np
    import torch
    from sklearn.metrics import f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    predicted = []
    with torch.no_grad():
        for start in range(0, len(rows), 64):
            encoded = tokenizer([t for _, t, _ in rows[start:start + 64]], truncation=True, max_length=128,
                                padding=True, return_tensors="pt")
            predicted.append((model(**encoded).logits > 0).numpy())
    pred = np.concatenate(predicted).astype(int)
    gold = np.array([[int(label in row_labels) for label in labels] for _, _, row_labels in rows])
    scores = {"micro_f1": float(f1_score(gold, pred, average="micro", zero_division=0)),
              "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0,
                                         labels=np.flatnonzero(gold.any(0)))),
              "exact_match": float((pred == gold).all(1).mean())}
    return scores, [[labels[i] for i in np.flatnonzero(row)] for row in pred]


def student(work: Path, name: str, teacher: Path, signals: Path | None, data: dict, seed: int, epochs: float,
            lr: float) -> dict:
    """One 3-layer student (KD from the store, or gold sets alone); its test metrics."""
    from multidistill import distill, evaluate_model_dir, train_model
    from multidistill.config import load_config

    out = work / f"{name}-seed-{seed}"
    scores = out / "eval_test.json"
    # metrics.json is written when training ends: the best model so far is saved mid-run too, so model/ alone
    # would pass a run cut in the middle as finished
    finished = (out / "metrics.json").is_file()
    if finished and scores.is_file():
        return json.loads(scores.read_text())
    objective = ({"multilabel": [{"loss": "hard", "weight": 0.5},
                                 {"loss": "soft_bce", "weight": 0.5, "params": {"temperature": 1.0}}]}
                 if signals is not None else {"multilabel": [{"loss": "hard", "weight": 1.0}]})
    config = {"kind": "distill" if signals is not None else "teacher", "output_dir": str(out),
              **({"signals": str(signals)} if signals is not None else {}),
              "model": {"name_or_path": str(teacher), "student_layers": [0, 2, 4], "heads_from": str(teacher),
                        "pooling": "cls", "max_seq_length": 128},
              "data": data,
              "train": {"epochs": epochs, "batch_size": 32, "lr": lr, "seed": seed},
              "objective": objective}
    if not finished:  # a cut run resumes from its last checkpoint (from step 0 without one)
        scores.unlink(missing_ok=True)
        (distill if signals is not None else train_model)(
            config if signals is not None else load_config(config), resume=out.is_dir(), progress=False)
    result = evaluate_model_dir(out / "model", split="test", data_root=data["data_root"],
                                cache_dir=data["cache_dir"], output=scores, progress=False)
    return json.loads(scores.read_text()) if scores.is_file() else dict(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "goemotions")
    parser.add_argument("--taxonomy", choices=["ekman", "all"], default="ekman")
    parser.add_argument("--selection", type=int, default=1000, help="public dev rows kept to select checkpoints")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split and of the fine-tuning")
    parser.add_argument("--student-seeds", default="1,2,3")
    parser.add_argument("--epochs", type=float, default=4.0, help="epochs of each student (and of the fine-tuning, "
                        "unless --teacher-epochs)")
    parser.add_argument("--teacher-epochs", type=float, default=None, help="epochs of the fine-tuning")
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    from multidistill import build_signal_store, evaluate_model_dir, import_classifier, predict
    from multidistill.config import DataConfig
    from multidistill.data.tasks import Task
    from multidistill.evaluation.baseline import trivial_baseline

    work = args.work / args.taxonomy
    work.mkdir(parents=True, exist_ok=True)
    teacher_epochs = args.teacher_epochs if args.teacher_epochs is not None else args.epochs
    settings = {"selection": args.selection, "seed": args.seed, "epochs": args.epochs, "lr": args.lr,
                **({"teacher_epochs": teacher_epochs} if teacher_epochs != args.epochs else {})}
    recorded = work / "settings.json"
    if recorded.is_file() and json.loads(recorded.read_text()) != settings:
        sys.exit(f"{work} holds a run with {recorded.read_text().strip()}, not {json.dumps(settings)}: give another "
                 "--work (its finished steps would be reused)")
    recorded.write_text(json.dumps(settings))
    spec, splits = prepare(work, args.taxonomy, args.selection, args.seed)
    task = Task.model_validate(spec)
    data = {"data_root": str(work / "data"), "tasks": ["goemotions"], "task_specs": [spec],
            "cache_dir": str(work / "cache")}
    elsewhere = work / "elsewhere"
    seconds = fine_tune(elsewhere, splits["train"], task.labels, args.seed, teacher_epochs, args.lr)
    stock, stock_sets = stock_scores(elsewhere, splits["test"], task.labels)

    teacher = work / "teacher"
    if not (teacher / "import.json").is_file():
        import_classifier(str(elsewhere), teacher, task=task, max_length=128, progress=False)
    imported = evaluate_model_dir(teacher, split="test", data_root=data["data_root"], cache_dir=data["cache_dir"],
                                  progress=False)["tasks"]["goemotions"]
    ours = [p.labels for p in predict(teacher, "goemotions", [t for _, t, _ in splits["test"]], progress=False)]
    same = sum(a == b for a, b in zip(ours, stock_sets, strict=True))

    signals = work / "signals"
    build_signal_store([teacher], DataConfig.model_validate(data), signals, splits="train,dev", progress=False)
    seeds = [int(s) for s in args.student_seeds.split(",")]
    arms = {"KD (1/2 hard + 1/2 soft_bce)": [student(work, "kd", teacher, signals, data, s, args.epochs, args.lr)
                                             for s in seeds],
            "gold sets only": [student(work, "no-kd", teacher, None, data, s, args.epochs, args.lr) for s in seeds]}
    index = {label: i for i, label in enumerate(task.labels)}
    masks = [sum(1 << index[label] for label in ls) for _, _, ls in splits["train"]]
    gold = [sum(1 << index[label] for label in ls) for _, _, ls in splits["test"]]
    baseline = trivial_baseline(task, masks, gold)
    students = {name: [run["tasks"]["goemotions"] for run in runs] for name, runs in arms.items()}
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": platform.processor() or platform.machine(), "taxonomy": args.taxonomy,
              "labels": task.labels, "rows": {split: len(rows) for split, rows in splits.items()},
              "seed": args.seed, "epochs": args.epochs, "teacher_epochs": teacher_epochs, "lr": args.lr,
              "fine_tune_seconds": round(seconds, 1),
              "stock_test": stock, "imported_test": imported, "same_sets": same, "test_rows": len(splits["test"]),
              "import": json.loads((teacher / "import.json").read_text()),
              "baseline": {"predictor": baseline.predictor, "metrics": baseline.metrics},
              "students": students, "student_seeds": seeds}
    (work / "results.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"GoEmotions ({args.taxonomy}: {len(task.labels)} labels), test ({len(splits['test'])} rows)\n")
    print("| model | micro F1 | macro F1 | exact match |\n|---|---:|---:|---:|")
    print(f"| stock classifier (Trainer, {len(splits['train'])} rows) | {stock['micro_f1']:.4f} | "
          f"{stock['macro_f1']:.4f} | {stock['exact_match']:.4f} |")
    print(f"| imported (multidistill evaluate) | {imported['micro_f1']:.4f} | {imported['macro_f1']:.4f} | "
          f"{imported['exact_match']:.4f} |")
    for name, runs in students.items():
        cells = []
        for metric in ("micro_f1", "macro_f1", "exact_match"):
            values = [run[metric] for run in runs]
            cells.append(f"{statistics.median(values):.4f} ({min(values):.4f}..{max(values):.4f})")
        print(f"| 3-layer student, {name}, median of {len(runs)} seeds | {' | '.join(cells)} |")
    print(f"| trivial: {baseline.predictor} | {baseline.metrics['micro_f1']:.4f} | {baseline.metrics['macro_f1']:.4f}"
          f" | {baseline.metrics['exact_match']:.4f} |")
    print(f"\nsame predicted set on {same} of {len(splits['test'])} test rows; fine-tuning {seconds:.0f} s")


if __name__ == "__main__":
    main()
