"""The teacher-signal store: outputs of one or several teachers per (task, split, example), on disk.

Layout of a store folder (written to a temporary folder, then renamed):

    manifest.json            fingerprint, teachers, tasks, splits, max length
    <task>/<split>/          a `save_to_disk` Arrow dataset, read back memory-mapped, with columns
        id                   example id (rows are in the example store's order)
        teacher_logits       (K, C) float32: each teacher's raw outputs (regression: C = 1, the score)
        teacher_mean         (C,) float32: mean of the teachers' *probabilities* (MT-DNN-KD's soft
                             targets); regression: the mean score

The fingerprint covers every teacher's weights and task specs, each split's data, the tokenizers and the
max length: a store whose fingerprint matches is reused by every student, and one that does not is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from multidistill.config import DataConfig
from multidistill.data.prepare import open_example_store
from multidistill.errors import DataError, ModelError
from multidistill.evaluation.evaluate import predict
from multidistill.models import MultiTaskModel
from multidistill.models.backbone import load_tokenizer
from multidistill.models.multitask import MODEL_CONFIG_FILE, WEIGHTS_FILE
from multidistill.utils.atomic import atomic_dir
from multidistill.utils.hashing import hash_json, hash_path, hash_tokenizer
from multidistill.utils.manifest import read_versioned_json

MANIFEST = "manifest.json"
STORE_VERSION = 1


def teacher_fingerprint(model_dir: str | Path) -> str:
    """Hash of a saved teacher's weights and its task specs."""
    model_dir = Path(model_dir)
    return hash_json({"weights": hash_path(model_dir / WEIGHTS_FILE),
                      "config": hash_path(model_dir / MODEL_CONFIG_FILE)})


def combine_teachers(task_type: str, logits: np.ndarray) -> np.ndarray:
    """Per-example soft targets from (K, N, C) teacher outputs: mean probabilities, or mean score."""
    if task_type == "regression":
        return logits.mean(0)
    shifted = logits - logits.max(-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    return probs.mean(0)


@dataclass
class SignalStore:
    """An opened store: the manifest and memory-mapped per-(task, split) datasets."""

    root: Path
    manifest: dict

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def signals(self, task: str, split: str) -> datasets.Dataset:
        if task not in self.manifest["tasks"] or split not in self.manifest["splits"]:
            raise DataError(f"signal store {self.root} has no signals for task '{task}' split '{split}' "
                            f"(it has tasks {sorted(self.manifest['tasks'])}, splits {self.manifest['splits']})")
        return datasets.load_from_disk(str(self.root / task / split)).with_format("numpy")


def build_signal_store(teacher_dirs: list[str | Path], data: DataConfig, out_dir: str | Path, *,
                       splits: tuple[str, ...] = ("train",), max_length: int | None = None,
                       max_examples_per_task: int | None = None, seed: int = 0, batch_size: int = 64,
                       device: torch.device | None = None, autocast=None) -> SignalStore:
    """Run every teacher over every (task, split) and store the signals; reuse a valid existing store."""
    if not teacher_dirs:
        raise ModelError("at least one teacher model folder is needed")
    out_dir = Path(out_dir)
    device = device or torch.device("cpu")
    teachers = [MultiTaskModel.from_pretrained(d) for d in teacher_dirs]
    tokenizers = [load_tokenizer(str(d)) for d in teacher_dirs]
    for model_dir, teacher in zip(teacher_dirs, teachers, strict=True):
        missing = [t for t in data.task_names if t not in teacher.tasks]
        if missing:
            raise ModelError(f"teacher {model_dir} has no head for task(s) {missing}; it has {list(teacher.tasks)}")
    length = max_length or teachers[0].max_length or 128
    store = open_example_store(data, max_examples_per_task=max_examples_per_task, seed=seed)
    store.validate(splits)  # bad data stops us before any teacher runs
    fingerprint = hash_json({
        "version": STORE_VERSION,
        "teachers": [teacher_fingerprint(d) for d in teacher_dirs],
        "tokenizers": [hash_tokenizer(t) for t in tokenizers],
        "data": {f"{t}/{s}": store.data_fingerprint(t, s) for t in data.task_names for s in splits},
        "max_length": length,
    })
    if (out_dir / MANIFEST).is_file():
        existing = open_signal_store(out_dir)
        if existing.fingerprint == fingerprint:
            return existing
        raise DataError(f"signal store {out_dir} was built for other teachers, data, tokenizer or max length "
                        f"(fingerprint {existing.fingerprint[:12]} != {fingerprint[:12]}); choose another --out "
                        f"or delete it to rebuild")
    tasks = store.tasks
    with atomic_dir(out_dir) as tmp:
        for task_name in data.task_names:
            task = tasks[task_name]
            for split in splits:
                # Each teacher reads its own tokenizer's view of the same rows.
                views = [store.tokenized(task_name, split, tok, length) for tok in tokenizers]
                logits = np.stack([
                    predict(teacher.to(device), task, view, batch_size=batch_size,
                            pad_token_id=tok.pad_token_id or 0, device=device, autocast=autocast,
                            progress=True).reshape(len(view), task.num_labels)
                    for teacher, tok, view in zip(teachers, tokenizers, views, strict=True)
                ]).astype(np.float32)
                if not np.isfinite(logits).all():
                    raise DataError(f"teacher outputs for task '{task_name}' split '{split}' contain NaN/inf; "
                                    "check the teacher (a diverged run?) before distilling from it")
                mean = combine_teachers(task.type, logits).astype(np.float32)
                _write_split(tmp / task_name / split, list(store.examples(task_name, split)["id"]), logits, mean)
        manifest = {"format_version": STORE_VERSION, "fingerprint": fingerprint,
                    "teachers": [str(Path(d).resolve()) for d in teacher_dirs], "splits": list(splits),
                    "tasks": {t: {"type": tasks[t].type, "num_labels": tasks[t].num_labels} for t in data.task_names},
                    "max_length": length}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return open_signal_store(out_dir)


def _write_split(folder: Path, ids, logits: np.ndarray, mean: np.ndarray) -> None:
    k, n, c = logits.shape
    features = datasets.Features({
        "id": datasets.Value("string"),
        "teacher_logits": datasets.Array2D(shape=(k, c), dtype="float32"),
        "teacher_mean": datasets.Sequence(datasets.Value("float32"), length=c),
    })
    table = {"id": list(ids), "teacher_logits": logits.transpose(1, 0, 2), "teacher_mean": mean}
    datasets.Dataset.from_dict(table, features=features).save_to_disk(str(folder))


def open_signal_store(root: str | Path, expected_fingerprint: str | None = None) -> SignalStore:
    """Open a store read-only; refuse it if it is incomplete or built for something else."""
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise DataError(f"{root} is not a signal store (no {MANIFEST})")
    manifest = read_versioned_json(root / MANIFEST, STORE_VERSION, DataError)
    if expected_fingerprint is not None and manifest["fingerprint"] != expected_fingerprint:
        raise DataError(f"signal store {root} is stale: built for other teachers, data, tokenizer or max length; "
                        "rebuild it with `multidistill soft-targets`")
    return SignalStore(root, manifest)


class StoredSignals:
    """`enrich` for the training loop: adds each batch's stored teacher signals by row index.

    Rows of a store follow the example store, so the batch's ``rows`` index them directly; the ids are
    compared on every batch, so a store that does not belong to the data can never be used silently.
    """

    def __init__(self, store: SignalStore, tasks: list[str], split: str = "train") -> None:
        self.split = split
        self.datasets = {task: store.signals(task, split) for task in tasks}

    def __call__(self, batch: dict) -> dict:
        found = self.datasets[batch["task"]][batch["rows"]]
        if list(found["id"]) != list(batch["ids"]):
            raise DataError(f"teacher signals for task '{batch['task']}' split '{self.split}' do not line up with "
                            "the training data (different ids); rebuild the store for this data")
        return {**batch, "teacher_logits": torch.from_numpy(np.asarray(found["teacher_logits"])),
                "teacher_mean": torch.from_numpy(np.asarray(found["teacher_mean"]))}
