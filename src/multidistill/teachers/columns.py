"""Named per-example columns beside the teacher signals (Meta-KD's prototype scores and expertise weights), and
the loop's `enrich` that hands one of them to the objective as per-example ``weights``.

A column store has the signal store's layout (`teachers/store.py`): ``manifest.json`` (fingerprint, task, its
domains, each column's name, what it was made from and the data fingerprint of the rows) and ``<task>/train/``,
a `save_to_disk` Arrow dataset with ``id``, ``domain_id`` and one float32 column per name, rows in the example
store's order. A run reads it through `TeacherRunConfig.example_weights` (`{store, column}`); its rows, data
fingerprint and domains are checked against the run's training data before anything is written, and every
batch's ids and domain ids against the stored ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from multidistill.errors import ConfigError, DataError
from multidistill.teachers.store import saved_files
from multidistill.utils.atomic import atomic_dir, write_json
from multidistill.utils.hashing import hash_json
from multidistill.utils.interrupt import raise_if_interrupted
from multidistill.utils.manifest import read_versioned_json
from multidistill.utils.paths import inside

MANIFEST = "manifest.json"
COLUMNS_VERSION = 1
SPLIT = "train"  # per-example weights weight training rows only


@dataclass
class ColumnStore:
    """An opened column store: its manifest and the columns, read whole (N float32 values each)."""

    root: Path
    manifest: dict
    table: dict[str, np.ndarray]

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def domains(self) -> list[str]:
        return list(self.manifest["domains"])

    def column(self, name: str) -> np.ndarray:
        """(N,) float32 values of one named column, in row order."""
        if name not in self.manifest["columns"]:
            raise ConfigError(f"column store {self.root} has no column '{name}' (it has "
                              f"{', '.join(self.manifest['columns'])})")
        return self.table[name]


def write_column_store(folder: Path, *, task: str, domains: Sequence[str], ids: Sequence[str],
                       domain_ids: np.ndarray, columns: Mapping[str, np.ndarray], data_fingerprint: str,
                       made_from: Mapping[str, object]) -> str:
    """Write ``columns`` (name -> (N,) values) of ``task``'s N training rows atomically; returns the fingerprint,
    a hash of ``made_from`` (models, settings), the rows' data fingerprint and the domains."""
    if not columns or any(len(values) != len(ids) for values in columns.values()) or len(domain_ids) != len(ids):
        raise ValueError(f"every column needs one value per row ({len(ids)} rows)")
    fingerprint = hash_json({"version": COLUMNS_VERSION, "made_from": dict(made_from), "data": data_fingerprint,
                             "domains": list(domains), "columns": sorted(columns)})
    features = datasets.Features({"id": datasets.Value("string"), "domain_id": datasets.Value("int32"),
                                  **{name: datasets.Value("float32") for name in columns}})
    table = {"id": [str(i) for i in ids], "domain_id": np.asarray(domain_ids, dtype=np.int32),
             **{name: np.asarray(values, dtype=np.float32) for name, values in columns.items()}}
    with atomic_dir(folder) as tmp:
        datasets.Dataset.from_dict(table, features=features).save_to_disk(str(inside(tmp, task, SPLIT)))
        write_json(tmp / MANIFEST, {"format_version": COLUMNS_VERSION, "fingerprint": fingerprint, "task": task,
                                    "domains": list(domains), "columns": sorted(columns), "split": SPLIT,
                                    "data": {f"{task}/{SPLIT}": data_fingerprint}, "made_from": dict(made_from)})
    return fingerprint


def open_column_store(root: str | Path) -> ColumnStore:
    """Open a column store read-only (a missing or damaged one is a DataError naming it)."""
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise DataError(f"{root} is not a per-example column store (no {MANIFEST})")
    manifest = read_versioned_json(root / MANIFEST, COLUMNS_VERSION, DataError)
    if not (isinstance(manifest.get("task"), str) and isinstance(manifest.get("columns"), list)
            and isinstance(manifest.get("domains"), list) and isinstance(manifest.get("fingerprint"), str)):
        raise DataError(f"{root / MANIFEST}: not a valid column-store manifest (task, domains, columns, fingerprint)")
    try:
        folder = inside(root, manifest["task"], SPLIT)
        saved_files(folder)  # datasets reads whatever state.json names: only files inside the folder
        rows = datasets.load_from_disk(str(folder)).with_format("numpy")
        table = {"id": np.asarray([str(i) for i in rows["id"]]), "domain_id": np.asarray(rows["domain_id"]),
                 **{name: np.asarray(rows[name], dtype=np.float32) for name in manifest["columns"]}}
    except Exception as exc:  # a missing or truncated Arrow file, an edited state.json, a missing column
        raise_if_interrupted(exc)
        raise DataError(f"column store {root}: cannot read its rows ({type(exc).__name__}: {exc}); it is damaged, "
                        "remake it (remove the stage folder and run the recipe again)") from exc
    for name in manifest["columns"]:
        if not np.isfinite(table[name]).all():
            raise DataError(f"column store {root}: column '{name}' holds NaN/inf; remake it")
    return ColumnStore(root, manifest, table)


class StoredWeights:
    """`enrich` for the training loop: adds the batch rows' values of one column as ``weights`` (B,) float32.

    Rows follow the example store, so the batch's ``rows`` index the column; the ids and the domain ids of every
    batch are compared with the stored ones, so weights never land on other examples silently."""

    def __init__(self, store: ColumnStore, column: str) -> None:
        self.store = store
        self.name = column
        self.values = store.column(column)

    def __call__(self, batch: dict) -> dict:
        rows = np.asarray(batch["rows"], dtype=np.int64)
        if list(self.store.table["id"][rows]) != [str(i) for i in batch["ids"]]:
            raise DataError(f"per-example column store {self.store.root} does not line up with the training data "
                            "(different ids); remake it for this data")
        domain_ids = batch.get("domain_ids")
        if domain_ids is not None and not np.array_equal(self.store.table["domain_id"][rows],
                                                         np.asarray(domain_ids)):
            raise DataError(f"per-example column store {self.store.root}: its domain ids disagree with the training "
                            "data's for the same rows; remake it for this data")
        return {**batch, "weights": torch.from_numpy(self.values[rows].copy())}


def example_weights_enrich(config, data, enrich: Callable[[dict], dict] | None) -> Callable[[dict], dict] | None:
    """``enrich`` followed by the run's per-example weights (``config.example_weights``: {store, column}), checked
    against the run's training data first (`ConfigError` naming the key); ``enrich`` itself when none are set."""
    if config.example_weights is None:
        return enrich
    key = "key 'example_weights.store'"
    store = open_column_store(config.example_weights.store)
    if list(data.tasks) != [store.task]:
        raise ConfigError(f"{key}: {store.root} holds weights of task '{store.task}', the run trains on "
                          f"{sorted(data.tasks)}; per-example weights need a run of that one task")
    task = data.tasks[store.task]
    if store.domains != list(task.domains):
        raise ConfigError(f"{key}: {store.root} was made for domains {store.domains}, the data has "
                          f"{list(task.domains)}: its domain ids disagree with the data's; remake it for this data")
    if len(store.table["id"]) != len(data.train_sets[task.name]):
        raise ConfigError(f"{key}: {store.root} holds {len(store.table['id'])} training rows, the run has "
                          f"{len(data.train_sets[task.name])}; remake it for this data (same domains and fraction)")
    ids, domain_ids = [], []
    for batch in data.train_sets[task.name].record_batches():  # streamed: one record batch at a time
        ids += [str(i) for i in batch.column("id").to_pylist()]
        if "domain_id" in batch.schema.names:
            domain_ids.append(batch.column("domain_id").to_numpy(zero_copy_only=False))
    if ids != list(store.table["id"]):
        raise ConfigError(f"{key}: {store.root} holds other rows than the run's training data (ids differ); remake "
                          "it for this data")
    data_domains = np.concatenate(domain_ids) if domain_ids else None
    if data_domains is not None and not np.array_equal(data_domains, store.table["domain_id"]):
        first = int(np.flatnonzero(data_domains != store.table["domain_id"])[0])
        raise ConfigError(f"{key}: the domain ids in {store.root} disagree with the data's (first at row "
                          f"'{ids[first]}': stored {int(store.table['domain_id'][first])}, data "
                          f"{int(data_domains[first])}); remake it for this data")
    recorded = store.manifest.get("data", {}).get(f"{task.name}/{SPLIT}")
    if recorded != data.store.data_fingerprint(task.name, SPLIT):
        raise ConfigError(f"{key}: {store.root} was made from other training data (files, task spec, domain "
                          "selection or fraction differ from this run's); remake it for this data")
    weights = StoredWeights(store, config.example_weights.column)
    return weights if enrich is None else (lambda batch: weights(enrich(batch)))
