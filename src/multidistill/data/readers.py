"""Read one split of a task into a `datasets.Dataset` with a fixed schema.

`multidistill.data.formats` splits each file into records, `multidistill.data.convert` turns them into validated
rows of the fixed schema and `multidistill.data.split_cache` keeps them in an Arrow folder; this module picks a
split's files (resolved against the data root), streams their rows and keeps a seeded subset.

Nothing holds a whole split as Python objects: records are converted and validated ``CHUNK_ROWS`` at a time
into Arrow record batches, which `write_split_cache` streams into an Arrow file (read back memory-mapped) and
`read_split` without a cache folder gathers into one in-memory table.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from multidistill.data.convert import Converter, features_for
from multidistill.data.dev_test import missing_test_hint
from multidistill.data.formats import Source
from multidistill.data.roots import resolve_data_root
from multidistill.data.split_cache import (
    CACHE_VERSION,
    EXAMPLES_FILE,
    EXAMPLES_META,
    cached_rows,
    open_split_cache,
    read_batches,
    write_batches,
)
from multidistill.data.tasks import DataFile, Task
from multidistill.errors import DataError
from multidistill.utils.atomic import atomic_dir, remove_stale_temps


def read_split(task: Task, split: str, data_root: str | Path | None = None,
               max_examples: int | None = None, seed: int = 0, *,
               cache_dir: str | Path | None = None) -> datasets.Dataset:
    """Read ``task``'s ``split`` and return a Dataset with columns ``id, text_a, text_b, label, domain``.

    Relative paths in ``task.files[split]`` resolve against ``data_root`` (None: ``$MULTIDISTILL_DATA_ROOT``,
    else the current folder; see `multidistill.data.roots`).
    ``label`` is a class index into ``task.labels`` (int64, -1 when the file has no label) or a float32
    score for regression (NaN when unlabelled). Every row is validated; then, if ``max_examples`` is
    smaller than the split, a random subset chosen with ``numpy.random.default_rng(seed)`` is kept in file
    order. Any problem with the data raises `DataError` naming the file, line and field.

    With ``cache_dir`` (a folder for this split alone, which the caller keys on the data's fingerprint, as
    `ExampleStore` does) the rows go to an Arrow file there (`write_split_cache`) and the Dataset memory-maps it;
    a folder already holding the split is mapped without reading the source again. Without it the Dataset is
    an in-memory Arrow table.
    """
    if cache_dir is not None:
        return open_split_cache(write_split_cache(task, split, cache_dir, data_root, max_examples, seed), task)
    _check_split(task, split, max_examples)
    schema = features_for(task).arrow_schema
    batches = list(split_batches(task, split, data_root))
    n_rows = sum(batch.num_rows for batch in batches)
    _check_not_empty(task, split, data_root, n_rows)
    table = pa.Table.from_batches(batches, schema=schema)
    keep = _subset(n_rows, max_examples, seed)
    if keep is not None:
        table = table.take(pa.array(keep))
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features_for(task)))


def write_split_cache(task: Task, split: str, cache_dir: str | Path, data_root: str | Path | None = None,
                      max_examples: int | None = None, seed: int = 0, *,
                      select: Callable[[Path], np.ndarray | None] | None = None) -> Path:
    """Validate ``task``'s ``split`` into the Arrow cache folder ``cache_dir``, unless it already holds it.

    Rows are streamed chunk by chunk into ``examples.arrow`` (Arrow IPC stream, the format `datasets` maps),
    then ``select`` (given the file of every validated row: the sorted rows to keep, or None for all; the
    domain selection of `multidistill.data.domains`) and after it ``max_examples`` pick their subset from that
    file batch by batch, so memory stays flat whatever the split's size. The folder is written beside its final
    name and renamed into place once complete: a kill never leaves a half-written cache. Returns ``cache_dir``;
    `open_split_cache` maps it.
    """
    _check_split(task, split, max_examples)
    folder = Path(cache_dir)
    if cached_rows(folder) is not None:
        return folder
    schema = features_for(task).arrow_schema
    remove_stale_temps(folder.parent)  # killed writers of any key: a run with another key never reuses their names
    with atomic_dir(folder) as tmp:
        everything = tmp / f"all-{EXAMPLES_FILE}"
        n_rows = write_batches(everything, split_batches(task, split, data_root), schema)
        _check_not_empty(task, split, data_root, n_rows)
        selected = select(everything) if select is not None else None
        if selected is not None:
            _check_not_empty(task, split, data_root, len(selected))
        keep = _subset(n_rows if selected is None else len(selected), max_examples, seed)
        if selected is not None:
            keep = selected if keep is None else selected[keep]
        if keep is None:
            everything.rename(tmp / EXAMPLES_FILE)
        else:
            write_batches(tmp / EXAMPLES_FILE, _take_rows(everything, keep), schema)
            everything.unlink()
        meta = {"format_version": CACHE_VERSION, "rows": n_rows if keep is None else len(keep),
                "bytes": (tmp / EXAMPLES_FILE).stat().st_size}
        (tmp / EXAMPLES_META).write_text(json.dumps(meta))
    return folder


def _take_rows(path: Path, keep: np.ndarray) -> Iterator[pa.RecordBatch]:
    """Rows ``keep`` (sorted) of the Arrow file at ``path``, batch by batch."""
    start = 0
    for batch in read_batches(path):
        stop = start + batch.num_rows
        lo, hi = np.searchsorted(keep, [start, stop])
        if hi > lo:
            yield batch.take(pa.array(keep[lo:hi] - start))
        start = stop


def split_batches(task: Task, split: str, data_root: str | Path | None = None) -> Iterator[pa.RecordBatch]:
    """The validated rows of ``task``'s ``split`` as Arrow record batches in `features_for` ``task``'s schema,
    one chunk at a time; a from_tasks text task's training split is its deduplicated corpus (`corpus`)."""
    if task.from_tasks and split == "train" and "train" not in task.files:
        from multidistill.data.corpus import corpus_batches  # corpus reads its sources through this module

        return corpus_batches(task, data_root)
    _check_split(task, split, None)
    schema = features_for(task).arrow_schema
    # A test split carved out of dev (`Task.test_from_dev`) reads dev's rows, as dev: an hf dataset without
    # hf_split reads the split named so, and errors name the files.dev it came from.
    read_as = "dev" if split == "test" and task.test_from_dev is not None else split
    # domain_files: each domain's file in name order, its rows given that domain (ids prefixed by it).
    return itertools.chain.from_iterable(Converter(_source(task, read_as, data_root, domain, data_file)).batches(schema)
                                         for domain, data_file in task.split_files(split))


def _check_split(task: Task, split: str, max_examples: int | None) -> None:
    if split not in task.splits:
        have = ", ".join(task.splits) or "none"
        raise DataError(f"task '{task.name}' has no '{split}' split (configured splits: {have}); "
                        f"add files.{split} to the task to read it{missing_test_hint(task, split)}")
    if max_examples is not None and max_examples < 1:
        raise DataError(f"max_examples must be a positive integer or None, got {max_examples}")


def _resolve(data_file: DataFile, data_root: str | Path | None) -> tuple[Path, Path | None]:
    """The file's path and the data root it was resolved against (None for an absolute path)."""
    relative = Path(data_file.path).expanduser()
    root = None if relative.is_absolute() else resolve_data_root(data_root)
    return (relative if root is None else root / relative), root


def _source(task: Task, split: str, data_root: str | Path | None, domain: str | None,
            data_file: DataFile) -> Source:
    path, root = _resolve(data_file, data_root)
    return Source(task=task, split=split, data_file=data_file, path=path, root=root, domain=domain)


def _check_not_empty(task: Task, split: str, data_root: str | Path | None, n_rows: int) -> None:
    if n_rows == 0:
        files = task.split_files(split)
        path = _resolve(files[0][1], data_root)[0] if len(files) == 1 else None
        raise DataError(f"empty split: no examples for task '{task.name}' split '{split}'", path=path)


def _subset(n_rows: int, max_examples: int | None, seed: int) -> np.ndarray | None:
    """The sorted rows a ``max_examples`` cap keeps, or None to keep them all."""
    if max_examples is None or n_rows <= max_examples:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=max_examples, replace=False))
