"""The teacher-signal store's format: outputs of one or several teachers per (task, split, example), on disk.

Layout of a store folder (written to a temporary folder, then renamed; `multidistill.teachers.generate` makes it):

    manifest.json            fingerprint, teachers, tasks, splits, max length; task_teachers (task -> indices into
                             teachers) where the teachers have heads for different tasks (`teachers/coverage.py`)
    <task>/<split>/          a `save_to_disk` Arrow dataset, read back memory-mapped, with columns
        id                   example id (rows are in the example store's order)
        teacher_logits       (K, C) float32: each teacher's raw outputs (regression: C = 1, the score), K the
                             teachers with a head for the task (every teacher, unless task_teachers says otherwise)
        teacher_mean         (C,) float32: mean of the teachers' *probabilities* (MT-DNN-KD's soft
                             targets); regression: the mean score (`multidistill.teachers.reduce`)
        teacher_hidden_states  only in a store built with hidden layers: (T, K * S * H) float16, the teachers'
                             hidden states at S layers for the row's T real tokens (`teachers/feature_store.py`)

The fingerprint (`multidistill.teachers.fingerprint`) covers every teacher's weights and task specs, each split's
data, the tokenizers, the max length and, in a store with features, their layers and dtype: a store whose
fingerprint matches is reused by every student, and one that does not is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from multidistill.data.rows import ArrowRows
from multidistill.errors import DataError
from multidistill.teachers.feature_store import HIDDEN_COLUMN, FeatureSpec
from multidistill.utils.interrupt import raise_if_interrupted
from multidistill.utils.manifest import read_versioned_json
from multidistill.utils.paths import inside, name_problem

MANIFEST = "manifest.json"
STORE_VERSION = 1


@dataclass
class SignalStore:
    """An opened store: the manifest and memory-mapped per-(task, split) datasets."""

    root: Path
    manifest: dict

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def features(self) -> FeatureSpec | None:
        """What its feature column holds (layers, sizes, tokenisation); None for a store of logits only."""
        return FeatureSpec.from_manifest(self.manifest, self.root / MANIFEST)

    def _folder(self, task: str, split: str) -> Path:
        if task not in self.manifest["tasks"] or split not in self.manifest["splits"]:
            raise DataError(f"signal store {self.root} has no signals for task '{task}' split '{split}' "
                            f"(it has tasks {sorted(self.manifest['tasks'])}, splits {self.manifest['splits']})")
        return inside(self.root, task, split)

    def _damaged(self, task: str, split: str, exc: Exception) -> DataError:
        # pyarrow reading a 0-byte shard raises a bare StopIteration: say what that means instead of nothing
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__}: an empty or truncated file"
        return DataError(f"signal store {self.root}: cannot read the signals of task '{task}' split '{split}' "
                         f"in {self._folder(task, split)} ({cause}); the store is damaged "
                         "(a truncated copy?): rebuild it with `multidistill soft-targets`")

    def signals(self, task: str, split: str) -> datasets.Dataset:
        """One split's signals as a memory-mapped dataset (numpy format)."""
        folder = self._folder(task, split)
        try:
            saved_files(folder)  # datasets reads whatever state.json names
            return datasets.load_from_disk(str(folder)).with_format("numpy")
        except Exception as exc:  # pyarrow/datasets raise OSError, ArrowInvalid, JSON errors... for damaged files
            raise_if_interrupted(exc)
            raise self._damaged(task, split, exc) from exc

    def signal_rows(self, task: str, split: str) -> ArrowRows:
        """The same signals for random row access by positional reads (training; memory stays flat)."""
        folder = self._folder(task, split)
        try:
            rows = ArrowRows(saved_files(folder))
            datasets.Features.from_arrow_schema(rows.schema)  # the features record must parse, as on load
            needed = {"id", "teacher_logits", "teacher_mean"} | ({HIDDEN_COLUMN} if self.features else set())
            missing = needed - set(rows.column_names)
            if missing:
                raise KeyError(f"no column {sorted(missing)}")
            return rows
        except Exception as exc:  # a missing or damaged file, a truncated Arrow stream, an edited state.json
            raise_if_interrupted(exc)
            raise self._damaged(task, split, exc) from exc


def saved_files(folder: Path) -> list[Path]:
    """The Arrow files a `save_to_disk` folder's state.json names, each a plain file name inside ``folder``: a
    crafted ``../`` or absolute name would make the store read a file from elsewhere (ValueError, as a damage)."""
    names = [part["filename"] for part in json.loads((folder / "state.json").read_text())["_data_files"]]
    for name in names:
        if name_problem(name) is not None:
            raise ValueError(f"state.json names the data file {name!r}, which is not a file in this folder")
    return [folder / name for name in names]


def split_dataset(ids, logits: np.ndarray, mean: np.ndarray, hidden: pa.Array | None = None) -> datasets.Dataset:
    """Rows of a store in memory: ``logits`` (K, N, C) and ``mean`` (N, C) float32, rows as ``ids``, and optionally
    the hidden-state column (`feature_store.hidden_column`)."""
    k, n, c = logits.shape
    features = datasets.Features({
        "id": datasets.Value("string"),
        "teacher_logits": datasets.Array2D(shape=(k, c), dtype="float32"),
        "teacher_mean": datasets.Sequence(datasets.Value("float32"), length=c),
    })
    table = {"id": list(ids), "teacher_logits": logits.transpose(1, 0, 2), "teacher_mean": mean}
    rows = datasets.Dataset.from_dict(table, features=features)
    return rows if hidden is None else datasets.Dataset(rows.data.table.append_column(HIDDEN_COLUMN, hidden))


def write_split(folder: Path, ids, logits: np.ndarray, mean: np.ndarray) -> None:
    """Write one (task, split) of a store: ``logits`` (K, N, C) and ``mean`` (N, C) float32, rows as ``ids``."""
    split_dataset(ids, logits, mean).save_to_disk(str(folder))


def _check_manifest(path: Path, manifest: dict) -> None:
    """A manifest must say what the store holds: fingerprint, splits, and each task's type and label count."""
    tasks, splits = manifest.get("tasks"), manifest.get("splits")
    valid = (isinstance(manifest.get("fingerprint"), str)
             and isinstance(splits, list) and all(isinstance(split, str) for split in splits)
             and isinstance(tasks, dict)
             and all(isinstance(spec, dict) and spec.get("type") in ("classification", "multilabel", "regression")
                     and type(spec.get("num_labels")) is int for spec in tasks.values()))
    if valid:
        FeatureSpec.from_manifest(manifest, path)  # a store with features must say what they are
    if not valid:
        raise DataError(f"{path}: not a valid signal-store manifest (it needs a fingerprint, a list of splits and "
                        "tasks with their type and num_labels); rebuild the store with `multidistill soft-targets`")
    for name in [*tasks, *splits]:  # they name the store's folders: a hostile manifest must not lead out of it
        if (problem := name_problem(name)) is not None:
            raise DataError(f"{path}: task or split name {problem}; rebuild the store with `multidistill soft-targets`")


def open_signal_store(root: str | Path, expected_fingerprint: str | None = None) -> SignalStore:
    """Open a store read-only; refuse it if it is incomplete or built for something else."""
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise DataError(f"{root} is not a signal store (no {MANIFEST})")
    manifest = read_versioned_json(root / MANIFEST, STORE_VERSION, DataError)
    _check_manifest(root / MANIFEST, manifest)
    if expected_fingerprint is not None and manifest["fingerprint"] != expected_fingerprint:
        raise DataError(f"signal store {root} is stale: built for other teachers, data, tokenizer or max length; "
                        "rebuild it with `multidistill soft-targets`")
    return SignalStore(root, manifest)


def check_finite(rows: ArrowRows, what: str) -> None:
    """Refuse stored teacher signals holding NaN/inf (a diverged teacher, a damaged or edited store).
    Streams the store record batch by record batch, so it never holds (or maps) more than one batch."""
    start = 0
    for batch in rows.record_batches():
        ids = batch.column("id")
        for column in ("teacher_logits", "teacher_mean"):
            values = _leaf_values(batch.column(column)).reshape(batch.num_rows, -1)
            bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
            if bad.size:
                raise DataError(f"{what}: {column} of example id '{ids[int(bad[0])].as_py()}' (row "
                                f"{start + bad[0]}) is NaN/inf ({bad.size} affected of rows {start}.."
                                f"{start + batch.num_rows - 1}); rebuild the store with `multidistill soft-targets` "
                                "from a sound teacher")
        if HIDDEN_COLUMN in batch.schema.names:
            _check_hidden_finite(batch.column(HIDDEN_COLUMN), ids, start, what)
        start += batch.num_rows


def _check_hidden_finite(column: pa.Array, ids: pa.Array, start: int, what: str) -> None:
    """Refuse NaN/inf among a record batch's stored hidden states, naming the first example that holds one."""
    tokens = column.flatten()
    values = tokens.flatten().to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        values_before_row = np.cumsum(column.value_lengths().to_numpy(zero_copy_only=False)) * (
            len(values) // max(len(tokens), 1))
        row = int(np.searchsorted(values_before_row, bad[0], side="right"))
        raise DataError(f"{what}: {HIDDEN_COLUMN} of example id '{ids[row].as_py()}' (row {start + row}) holds "
                        "NaN/inf; rebuild the store with `multidistill soft-targets` from a sound teacher")


def _leaf_values(array) -> np.ndarray:
    """The float values under (nested) list or extension columns, flattened."""
    if isinstance(array.type, pa.ExtensionType):
        array = array.storage
    while hasattr(array, "flatten") and not pa.types.is_floating(array.type):
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)

