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

Generation is resumable. Rows are labelled in shards (``shard_size`` rows of one task and split, rounded up
to whole inference batches so the stored floats never depend on the shard size) in a work folder beside the
store, ``<out>.partial/``:

    progress.json            the store fingerprint and the shard plan
    shard-000000.npz ...     one per shard, written atomically: ids (str) and logits (K, n, C) float32

A re-run with the same fingerprint and plan skips the shards already on disk; a work folder made for another
fingerprint (or shard plan) is discarded with a warning, as its rows cannot be reused. When every shard is
there, `merge_shards` writes the store (layout above) in one atomic step and deletes the work folder. The
shard loop (`generate_shards`) takes ``(rank, world)`` and labels only shards ``i % world == rank``, so several
processes can share one plan; `prepare_partial` runs once before them and `merge_shards` once after.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from multidistill.config import DataConfig
from multidistill.data.prepare import open_example_store
from multidistill.data.rows import ArrowRows
from multidistill.data.store import ExampleStore
from multidistill.errors import DataError, ModelError
from multidistill.evaluation.evaluate import predict
from multidistill.models import MultiTaskModel
from multidistill.models.backbone import load_tokenizer
from multidistill.models.multitask import MODEL_CONFIG_FILE, WEIGHTS_FILE
from multidistill.utils.atomic import atomic_dir, atomic_file, glob_escape, remove_stale_temps, remove_tree
from multidistill.utils.hashing import hash_json, hash_path, hash_tokenizer
from multidistill.utils.lock import hold_lock
from multidistill.utils.manifest import read_versioned_json
from multidistill.utils.paths import inside, name_problem

MANIFEST = "manifest.json"
STORE_VERSION = 1
PROGRESS = "progress.json"
PARTIAL_VERSION = 1
DEFAULT_SHARD_SIZE = 2048


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

    def _folder(self, task: str, split: str) -> Path:
        if task not in self.manifest["tasks"] or split not in self.manifest["splits"]:
            raise DataError(f"signal store {self.root} has no signals for task '{task}' split '{split}' "
                            f"(it has tasks {sorted(self.manifest['tasks'])}, splits {self.manifest['splits']})")
        return inside(self.root, task, split)

    def _damaged(self, task: str, split: str, exc: Exception) -> DataError:
        return DataError(f"signal store {self.root}: cannot read the signals of task '{task}' split '{split}' "
                         f"in {self._folder(task, split)} ({type(exc).__name__}: {exc}); the store is damaged "
                         "(a truncated copy?): rebuild it with `multidistill soft-targets`")

    def signals(self, task: str, split: str) -> datasets.Dataset:
        """One split's signals as a memory-mapped dataset (numpy format)."""
        folder = self._folder(task, split)
        try:
            return datasets.load_from_disk(str(folder)).with_format("numpy")
        except Exception as exc:  # pyarrow/datasets raise OSError, ArrowInvalid, JSON errors... for damaged files
            raise self._damaged(task, split, exc) from exc

    def signal_rows(self, task: str, split: str) -> ArrowRows:
        """The same signals for random row access by positional reads (training; memory stays flat)."""
        folder = self._folder(task, split)
        try:
            state = json.loads((folder / "state.json").read_text())
            rows = ArrowRows([folder / part["filename"] for part in state["_data_files"]])
            datasets.Features.from_arrow_schema(rows.schema)  # the features record must parse, as on load
            missing = {"id", "teacher_logits", "teacher_mean"} - set(rows.column_names)
            if missing:
                raise KeyError(f"no column {sorted(missing)}")
            return rows
        except Exception as exc:  # a missing or damaged file, a truncated Arrow stream, an edited state.json
            raise self._damaged(task, split, exc) from exc


def build_signal_store(teacher_dirs: list[str | Path], data: DataConfig, out_dir: str | Path, *,
                       splits: tuple[str, ...] = ("train",), max_length: int | None = None,
                       max_examples_per_task: int | None = None, seed: int = 0, batch_size: int = 64,
                       device: torch.device | None = None, autocast=None,
                       shard_size: int = DEFAULT_SHARD_SIZE) -> SignalStore:
    """Run every teacher over every (task, split) and store the signals; reuse a valid existing store.

    Work is saved shard by shard in ``<out_dir>.partial/``: an interrupted run resumes from its last
    completed shard when called again with the same inputs. The store is written by one process at a time (a
    lock beside it, `multidistill.utils.lock`), and a non-empty ``out_dir`` that is not a store is refused.
    """
    from multidistill.training.loop import process_state

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file())):
        raise DataError(f"--out {out_dir} is not empty and is not a signal store (no {MANIFEST}); it is never "
                        "overwritten: choose an empty or new folder")
    lock = hold_lock(out_dir, "signal store --out") if process_state().is_main_process else contextlib.nullcontext()
    with lock:
        return _build_store(teacher_dirs, data, out_dir, splits=splits, max_length=max_length,
                            max_examples_per_task=max_examples_per_task, seed=seed, batch_size=batch_size,
                            device=device, autocast=autocast, shard_size=shard_size)


def _build_store(teacher_dirs: list[str | Path], data: DataConfig, out_dir: Path, *, splits: tuple[str, ...],
                 max_length: int | None, max_examples_per_task: int | None, seed: int, batch_size: int,
                 device: torch.device | None, autocast, shard_size: int) -> SignalStore:
    """`build_signal_store` under the store's lock."""
    if not teacher_dirs:
        raise ModelError("at least one teacher model folder is needed")
    if shard_size < 1:
        raise DataError(f"shard size must be at least 1 row, got {shard_size}")
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
    data_fingerprints = {f"{t}/{s}": store.data_fingerprint(t, s) for t in data.task_names for s in splits}
    fingerprint = hash_json({
        "version": STORE_VERSION,
        "teachers": [teacher_fingerprint(d) for d in teacher_dirs],
        "tokenizers": [hash_tokenizer(t) for t in tokenizers],
        "data": data_fingerprints,
        "max_length": length,
    })
    partial = partial_dir(out_dir)
    if (out_dir / MANIFEST).is_file():
        existing = open_signal_store(out_dir)
        if existing.fingerprint == fingerprint:
            _drop_finished_partial(partial, fingerprint)  # left by a run killed between its merge and clean-up
            return existing
        raise DataError(f"signal store {out_dir} was built for other teachers, data, tokenizer or max length "
                        f"(fingerprint {existing.fingerprint[:12]} != {fingerprint[:12]}); choose another --out "
                        f"or delete it to rebuild")
    tasks = store.tasks
    sizes = {(t, s): len(store.examples(t, s)) for t in data.task_names for s in splits}
    plan = plan_shards(sizes, shard_rows(shard_size, batch_size))
    manifest = {"format_version": STORE_VERSION, "fingerprint": fingerprint,
                "teachers": [str(Path(d).resolve()) for d in teacher_dirs], "splits": list(splits),
                "tasks": {t: {"type": tasks[t].type, "num_labels": tasks[t].num_labels} for t in data.task_names},
                "max_length": length, "data": data_fingerprints}
    # Under torchrun / accelerate launch every process labels its share of the shards (index % world);
    # the main process prepares the work folder first and merges the shards into one store at the end.
    from multidistill.training.loop import process_state

    state = process_state()
    if state.is_main_process:
        prepare_partial(partial, fingerprint, plan)
    with state.main_process_first():  # one process writes each tokenised cache; the others then read it
        for task_name, split in sizes:
            for tokenizer in tokenizers:
                store.tokenized(task_name, split, tokenizer, length)
    labeler = ShardLabeler(teachers, tokenizers, store, length, batch_size, device, autocast)
    generate_shards(labeler, partial, plan, rank=state.process_index, world=state.num_processes)
    state.wait_for_everyone()
    if state.is_main_process:
        merge_shards(partial, out_dir, plan, manifest)
    state.wait_for_everyone()
    return open_signal_store(out_dir)


@dataclass(frozen=True)
class Shard:
    """Rows ``start:stop`` of one task's split: shard ``index`` of the plan."""

    index: int
    task: str
    split: str
    start: int
    stop: int

    @property
    def file_name(self) -> str:
        return f"shard-{self.index:06d}.npz"


def partial_dir(out_dir: str | Path) -> Path:
    """The work folder of a store being generated: ``<out_dir>.partial`` beside it."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f"{out_dir.name}.partial")


def shard_rows(shard_size: int, batch_size: int) -> int:
    """Rows per shard: ``shard_size`` rounded up to whole inference batches.

    Batches then never straddle a shard boundary and are the very batches of one unsharded pass, so every
    stored float is the same whatever the shard size (padding, and so the arithmetic, follows the batch).
    """
    return math.ceil(shard_size / batch_size) * batch_size


def plan_shards(sizes: dict[tuple[str, str], int], rows: int) -> list[Shard]:
    """Cut each (task, split) of ``sizes`` (in order) into shards of ``rows`` rows, numbered across all."""
    plan: list[Shard] = []
    for (task, split), n in sizes.items():
        for start in range(0, n, rows):
            plan.append(Shard(len(plan), task, split, start, min(start + rows, n)))
    return plan


def _progress_record(fingerprint: str, plan: list[Shard]) -> dict:
    return {"format_version": PARTIAL_VERSION, "fingerprint": fingerprint,
            "shards": [[s.task, s.split, s.start, s.stop] for s in plan]}


def _read_progress(partial: Path) -> dict | None:
    try:
        return read_versioned_json(partial / PROGRESS, PARTIAL_VERSION, DataError)
    except (OSError, DataError):
        return None


def prepare_partial(partial: Path, fingerprint: str, plan: list[Shard]) -> None:
    """Make ``partial`` the work folder of this fingerprint and plan, keeping the shards it already holds.

    A work folder of another fingerprint or plan is discarded with a warning: its rows belong to other
    teachers, data or shard sizes. A folder without a readable progress.json is not ours and is refused.
    Runs once, before any `generate_shards` (in a multi-process run: on one process, before the others start).
    """
    record = _progress_record(fingerprint, plan)
    if partial.exists():
        found = _read_progress(partial)
        if found is None:
            raise DataError(f"{partial} exists but is not the work folder of a signal store (no valid {PROGRESS}); "
                            "delete it to generate the store")
        if found == record:
            remove_stale_temps(partial)
            return
        reason = ("other teachers, data, tokenizer or max length" if found.get("fingerprint") != fingerprint
                  else "another shard size, task or split list")
        warnings.warn(f"discarding {partial}: its finished shards were made for {reason}; starting over",
                      stacklevel=3)
        remove_tree(partial)
    with atomic_dir(partial) as tmp:
        (tmp / PROGRESS).write_text(json.dumps(record, indent=2))


def _drop_finished_partial(partial: Path, fingerprint: str) -> None:
    found = _read_progress(partial) if partial.is_dir() else None
    if found is not None and found.get("fingerprint") == fingerprint:
        remove_tree(partial)
    remove_stale_temps(partial.parent, glob_escape(partial.name))  # a deletion that a kill cut short


@dataclass
class ShardLabeler:
    """What labelling a shard needs: the teachers, their tokenizers and the example store."""

    teachers: list[MultiTaskModel]
    tokenizers: list
    store: ExampleStore
    length: int
    batch_size: int
    device: torch.device
    autocast: Callable | None = None
    _views: dict = field(default_factory=dict, repr=False)

    def _view(self, task: str, split: str, which: int) -> datasets.Dataset:
        key = (task, split, which)
        if key not in self._views:
            self._views[key] = self.store.tokenized(task, split, self.tokenizers[which], self.length)
        return self._views[key]

    def label(self, shard: Shard) -> tuple[np.ndarray, np.ndarray]:
        """(ids, logits (K, n, C) float32) of the shard's rows; NaN/inf teacher outputs are refused."""
        task = self.store.tasks[shard.task]
        rows = range(shard.start, shard.stop)
        logits = []
        for which, (teacher, tokenizer) in enumerate(zip(self.teachers, self.tokenizers, strict=True)):
            # Each teacher reads its own tokenizer's view of the same rows.
            view = self._view(shard.task, shard.split, which).select(rows)
            logits.append(predict(teacher.to(self.device), task, view, batch_size=self.batch_size,
                                  pad_token_id=tokenizer.pad_token_id or 0, device=self.device,
                                  autocast=self.autocast).reshape(len(view), task.num_labels))
        stacked = np.stack(logits).astype(np.float32)
        if not np.isfinite(stacked).all():
            raise DataError(f"teacher outputs for task '{shard.task}' split '{shard.split}' contain NaN/inf; "
                            "check the teacher (a diverged run?) before distilling from it")
        ids = self.store.examples(shard.task, shard.split).select(rows)["id"]
        return np.asarray([str(i) for i in ids], dtype=np.str_), stacked


def generate_shards(labeler: ShardLabeler, partial: Path, plan: list[Shard], rank: int = 0,
                    world: int = 1) -> list[int]:
    """Label this process's missing shards (``index % world == rank``); returns the indices it labelled.

    Each shard file is written atomically, so it exists only once complete; shards on disk are skipped.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    todo = [s for s in plan if s.index % world == rank and not (partial / s.file_name).is_file()]
    done = []
    for shard in tqdm(todo, desc="soft-target shards", disable=len(todo) < 2, dynamic_ncols=True):
        ids, logits = labeler.label(shard)
        with atomic_file(partial / shard.file_name, "wb") as handle:
            np.savez(handle, ids=ids, logits=logits)
        done.append(shard.index)
    return done


def _read_shard(partial: Path, shard: Shard) -> tuple[np.ndarray, np.ndarray]:
    path = partial / shard.file_name
    try:
        with np.load(path, allow_pickle=False) as content:
            ids, logits = content["ids"], content["logits"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"shard {path} is missing or unreadable ({exc}); delete {partial} to start over") from exc
    if len(ids) != shard.stop - shard.start or logits.ndim != 3 or logits.shape[1] != len(ids):
        raise DataError(f"shard {path} holds {len(ids)} rows where the plan expects {shard.stop - shard.start}; "
                        f"delete {partial} to start over")
    return ids, logits


def merge_shards(partial: Path, out_dir: Path, plan: list[Shard], manifest: dict) -> SignalStore:
    """Concatenate every shard into the store at ``out_dir`` (one atomic write), then delete ``partial``.

    Runs once, after every shard of the plan exists (in a multi-process run: on one process).
    """
    groups: dict[tuple[str, str], list[Shard]] = {}
    for shard in plan:
        groups.setdefault((shard.task, shard.split), []).append(shard)
    with atomic_dir(out_dir) as tmp:
        for (task_name, split), shards in groups.items():
            parts = [_read_shard(partial, s) for s in shards]
            ids = np.concatenate([p[0] for p in parts])
            logits = np.concatenate([p[1] for p in parts], axis=1)
            mean = combine_teachers(manifest["tasks"][task_name]["type"], logits).astype(np.float32)
            _write_split(inside(tmp, task_name, split), ids.tolist(), logits, mean)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    remove_tree(partial)
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


def _check_manifest(path: Path, manifest: dict) -> None:
    """A manifest must say what the store holds: fingerprint, splits, and each task's type and label count."""
    tasks, splits = manifest.get("tasks"), manifest.get("splits")
    valid = (isinstance(manifest.get("fingerprint"), str)
             and isinstance(splits, list) and all(isinstance(split, str) for split in splits)
             and isinstance(tasks, dict)
             and all(isinstance(spec, dict) and spec.get("type") in ("classification", "regression")
                     and type(spec.get("num_labels")) is int for spec in tasks.values()))
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
        start += batch.num_rows


def _leaf_values(array) -> np.ndarray:
    """The float values under (nested) list or extension columns, flattened."""
    if isinstance(array.type, pa.ExtensionType):
        array = array.storage
    while hasattr(array, "flatten") and not pa.types.is_floating(array.type):
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)


class StoredSignals:
    """`enrich` for the training loop: adds each batch's stored teacher signals by row index.

    Rows of a store follow the example store, so the batch's ``rows`` index them directly; the ids are
    compared on every batch, so a store that does not belong to the data can never be used silently.
    """

    def __init__(self, store: SignalStore, tasks: list[str], split: str = "train") -> None:
        self.split = split
        self.datasets = {task: store.signal_rows(task, split) for task in tasks}
        for task, rows in self.datasets.items():
            check_finite(rows, f"signal store {store.root}: task '{task}' split '{split}'")

    def __call__(self, batch: dict) -> dict:
        found = self.datasets[batch["task"]][batch["rows"]]
        if list(found["id"]) != list(batch["ids"]):
            raise DataError(f"teacher signals for task '{batch['task']}' split '{self.split}' do not line up with "
                            "the training data (different ids); rebuild the store for this data")
        return {**batch, "teacher_logits": torch.from_numpy(np.asarray(found["teacher_logits"])),
                "teacher_mean": torch.from_numpy(np.asarray(found["teacher_mean"]))}
