"""The example store: one `datasets.Dataset` per task and split, and cached tokenised views of it.

A tokenised view is keyed by (data fingerprint, tokenizer fingerprint, max length), saved as Arrow
with `save_to_disk` into a temporary folder that is renamed into place, and read back memory-mapped.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from multidistill.data.readers import read_split
from multidistill.data.tasks import Task
from multidistill.errors import DataError
from multidistill.utils.atomic import atomic_dir
from multidistill.utils.hashing import hash_json, hash_path, hash_tokenizer
from multidistill.utils.paths import resolve_path

datasets.disable_progress_bars()


class ExampleStore:
    """Reads task splits once and hands out raw or tokenised datasets."""

    def __init__(self, tasks: list[Task], data_root: str | Path, cache_dir: str | Path,
                 max_examples: dict[str, int | None] | None = None, seed: int = 0) -> None:
        self.tasks = {task.name: task for task in tasks}
        self.data_root = Path(resolve_path(str(data_root)))
        self.cache_dir = Path(cache_dir)
        self.max_examples = max_examples or {}
        self.seed = seed
        self._examples: dict[tuple[str, str], datasets.Dataset] = {}

    def _limit(self, task: str, split: str) -> int | None:
        # Caps apply to training data only; evaluation always uses the full split.
        return self.max_examples.get(task) if split == "train" else None

    def examples(self, task: str, split: str) -> datasets.Dataset:
        """Columns id, text_a, text_b, label, domain (validated by the reader)."""
        key = (task, split)
        if key not in self._examples:
            self._examples[key] = read_split(self.tasks[task], split, self.data_root,
                                             max_examples=self._limit(task, split), seed=self.seed)
        return self._examples[key]

    def has_split(self, task: str, split: str) -> bool:
        return split in self.tasks[task].files

    def validate(self, splits: list[str] | tuple[str, ...]) -> None:
        """Read every task's ``splits`` now, so bad data stops a run before anything is written."""
        for task in self.tasks:
            for split in splits:
                if not self.has_split(task, split):
                    raise DataError(f"task '{task}' has no '{split}' split; add files.{split} to its spec")
                self.examples(task, split)

    def data_fingerprint(self, task: str, split: str) -> str:
        """Changes whenever the source file, the task spec or the subset changes."""
        spec = self.tasks[task]
        source = spec.files[split]
        path = Path(source.path)
        if not path.is_absolute():
            path = self.data_root / path
        content = hash_path(path) if path.exists() else source.path
        return hash_json({"task": spec.model_dump(mode="json"), "split": split, "content": content,
                          "limit": self._limit(task, split), "seed": self.seed})

    def tokenized(self, task: str, split: str, tokenizer, max_length: int) -> datasets.Dataset:
        """A memory-mapped tokenised view (input_ids, attention_mask[, token_type_ids], label, id)."""
        key = hash_json({"data": self.data_fingerprint(task, split), "tokenizer": hash_tokenizer(tokenizer),
                         "max_length": max_length})
        folder = self.cache_dir / "tokenized" / task / split / key[:16]
        if (folder / "dataset_info.json").is_file():
            return datasets.load_from_disk(str(folder))
        view = tokenize(self.examples(task, split), tokenizer, max_length, pair=self.tasks[task].pair)
        with atomic_dir(folder) as tmp:
            view.save_to_disk(str(tmp))
        return datasets.load_from_disk(str(folder))


def tokenize(examples: datasets.Dataset, tokenizer, max_length: int, *, pair: bool) -> datasets.Dataset:
    """Tokenise without padding (batches are padded to their own longest row)."""

    def encode(batch: dict) -> dict:
        return tokenizer(batch["text_a"], batch["text_b"] if pair else None, truncation=True,
                         max_length=max_length)

    keep = {"id", "label"}
    return examples.map(encode, batched=True, batch_size=1000,
                        remove_columns=[c for c in examples.column_names if c not in keep],
                        load_from_cache_file=False, desc="tokenising")
