"""The work folder of a signal store being generated: a shard plan and one file per finished shard.

Generation is resumable. Rows are labelled in shards (``shard_size`` rows of one task and split, rounded up
to whole inference batches so the stored floats never depend on the shard size) in a work folder beside the
store, ``<out>.partial/``:

    progress.json            the store fingerprint and the shard plan
    shard-000000.npz ...     one per shard, written atomically: ids (str) and logits (K, n, C) float32; with
                             features also lengths (n,) int32 and hidden (sum T, K, S, H) float16

A re-run with the same fingerprint and plan skips the shards already on disk; a work folder made for another
fingerprint (or shard plan) is discarded with a warning, as its rows cannot be reused. When every shard is
there, `merge_shards` writes the store (`multidistill.teachers.store`) in one atomic step and deletes the work
folder. `prepare_partial` runs once before the shard loop (`multidistill.teachers.generate`), `merge_shards`
once after.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from multidistill.errors import DataError
from multidistill.teachers.feature_store import FeatureSpec, hidden_column
from multidistill.teachers.reduce import teacher_mean
from multidistill.teachers.store import MANIFEST, SignalStore, open_signal_store, split_dataset, write_split
from multidistill.utils.atomic import atomic_dir, atomic_file, glob_escape, remove_stale_temps, remove_tree
from multidistill.utils.manifest import read_versioned_json
from multidistill.utils.paths import inside

PROGRESS = "progress.json"
PARTIAL_VERSION = 1
DEFAULT_SHARD_SIZE = 2048


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
        reason = ("other teachers, data, tokenizer, max length or hidden layers"
                  if found.get("fingerprint") != fingerprint else "another shard size, task or split list")
        warnings.warn(f"discarding {partial}: its finished shards were made for {reason}; starting over",
                      stacklevel=3)
        remove_tree(partial)
    with atomic_dir(partial) as tmp:
        (tmp / PROGRESS).write_text(json.dumps(record, indent=2))


def drop_finished_partial(partial: Path, fingerprint: str) -> None:
    """Delete the work folder of a store that is already complete (a run killed between its merge and clean-up)."""
    found = _read_progress(partial) if partial.is_dir() else None
    if found is not None and found.get("fingerprint") == fingerprint:
        remove_tree(partial)
    remove_stale_temps(partial.parent, glob_escape(partial.name))  # a deletion that a kill cut short



def write_shard(partial: Path, shard: Shard, ids: np.ndarray, logits: np.ndarray,
                features: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Write one labelled shard: ``ids`` (n,) str and ``logits`` (K, n, C) float32, and the optional ``features``
    (lengths (n,) int32, hidden (sum T, K, S, H) float16), atomically, so a shard file exists only once complete."""
    extra = {} if features is None else {"lengths": features[0], "hidden": features[1]}
    with atomic_file(partial / shard.file_name, "wb") as handle:
        np.savez(handle, ids=ids, logits=logits, **extra)


def read_shard(partial: Path, shard: Shard, *, features: bool = False
               ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """(ids, logits (K, n, C), features) of a finished shard, features (lengths, hidden) when asked, else None;
    a missing, unreadable or wrong-sized file is refused."""
    path = partial / shard.file_name
    try:
        with np.load(path, allow_pickle=False) as content:
            ids, logits = content["ids"], content["logits"]
            found = (content["lengths"], content["hidden"]) if features else None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"shard {path} is missing or unreadable ({exc}); delete {partial} to start over") from exc
    if len(ids) != shard.stop - shard.start or logits.ndim != 3 or logits.shape[1] != len(ids):
        raise DataError(f"shard {path} holds {len(ids)} rows where the plan expects {shard.stop - shard.start}; "
                        f"delete {partial} to start over")
    if found is not None and (len(found[0]) != len(ids) or int(found[0].sum()) != len(found[1])):
        raise DataError(f"shard {path}: its hidden states do not match its rows' token counts; delete {partial} "
                        "to start over")
    return ids, logits, found


def merge_shards(partial: Path, out_dir: Path, plan: list[Shard], manifest: dict) -> SignalStore:
    """Concatenate every shard into the store at ``out_dir`` (one atomic write), then delete ``partial``.

    Runs once, after every shard of the plan exists (in a multi-process run: on one process).
    """
    groups: dict[tuple[str, str], list[Shard]] = {}
    for shard in plan:
        groups.setdefault((shard.task, shard.split), []).append(shard)
    with_features = FeatureSpec.from_manifest(manifest, out_dir / MANIFEST) is not None
    with atomic_dir(out_dir) as tmp:
        for (task_name, split), shards in groups.items():
            task_type = manifest["tasks"][task_name]["type"]
            if with_features:
                _merge_with_features(partial, shards, inside(tmp, task_name, split), tmp / ".pieces", task_type)
                continue
            parts = [read_shard(partial, s) for s in shards]
            ids = np.concatenate([p[0] for p in parts])
            logits = np.concatenate([p[1] for p in parts], axis=1)
            write_split(inside(tmp, task_name, split), ids.tolist(), logits, _mean(task_type, logits))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    remove_tree(partial)
    return open_signal_store(out_dir)


def _mean(task_type: str, logits: np.ndarray) -> np.ndarray:
    """The teachers' reduced target of each row; the store's shards hold (K, n, C), the reduction takes (n, K, C)."""
    return teacher_mean(task_type, torch.from_numpy(logits).transpose(0, 1)).numpy()


def _merge_with_features(partial: Path, shards: list[Shard], folder: Path, scratch: Path, task_type: str) -> None:
    """One split of a store with hidden states, written shard by shard: each shard's rows are saved as an Arrow
    piece, and the pieces, read back memory-mapped, are concatenated into the split, so memory holds one shard."""
    pieces = []
    for shard in shards:
        ids, logits, (lengths, hidden) = read_shard(partial, shard, features=True)
        piece = scratch / shard.file_name.removesuffix(".npz")
        column = hidden_column(lengths, hidden.reshape(len(hidden), -1))
        split_dataset(ids.tolist(), logits, _mean(task_type, logits), column).save_to_disk(str(piece))
        pieces.append(datasets.load_from_disk(str(piece)))
    datasets.concatenate_datasets(pieces).save_to_disk(str(folder))
    remove_tree(scratch)
