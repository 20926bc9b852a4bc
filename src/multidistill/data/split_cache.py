"""The Arrow cache folder of one validated split: its layout and format version, streaming and mapping it.

A folder holds ``examples.arrow`` (an Arrow IPC stream, the format `datasets` maps) and ``examples.json`` (format
version, row count, file size). `multidistill.data.readers.write_split_cache` fills it; `open_split_cache` maps
it and `read_cached_examples` streams it. A folder that is incomplete, truncated or of another version does not
count as a cache (it is rebuilt); one that cannot be read is a `DataError` naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets
import pyarrow as pa

from multidistill.data.convert import features_for
from multidistill.data.tasks import Task
from multidistill.errors import DataError
from multidistill.utils.interrupt import raise_if_interrupted

EXAMPLES_FILE = "examples.arrow"
EXAMPLES_META = "examples.json"
# 2: ClassLabel names, -1 scores and stricter text (surrogates, CR ends, scores): rows read by 1 may be wrong.
# 3: a NaN domain cell is no domain (2 named it 'nan'), and a row without one among rows with one is refused.
# 4: a plain int label of an HF dataset whose task labels are integers at other positions is refused as
#    ambiguous (3 read it as a position, silently): a cache made by 3 must not keep that reading.
CACHE_VERSION = 4


def open_split_cache(folder: str | Path, task: Task) -> datasets.Dataset:
    """The memory-mapped Dataset of a folder written by `write_split_cache`."""
    folder = Path(folder)
    try:
        dataset = datasets.Dataset.from_file(str(folder / EXAMPLES_FILE),
                                             info=datasets.DatasetInfo(features=features_for(task)))
    except Exception as exc:  # pyarrow raises OSError, ArrowInvalid... for a damaged file
        raise_if_interrupted(exc)  # an interrupted read is not a damaged cache (which is rebuilt)
        dataset = None
        problem = f"{type(exc).__name__}: {exc}"
    if dataset is not None and len(dataset) == cached_rows(folder) and dataset.features == features_for(task):
        return dataset
    if dataset is not None:
        problem = f"{len(dataset)} rows where {EXAMPLES_META} says {cached_rows(folder)}, or another schema"
    raise _damaged_cache(folder, problem)


def read_cached_examples(folder: str | Path) -> Iterator[pa.RecordBatch]:
    """The record batches of a folder written by `write_split_cache`, read one at a time (not mapped); a file
    that cannot be read is a `DataError` naming the folder."""
    folder = Path(folder)
    try:
        yield from read_batches(folder / EXAMPLES_FILE)
    except Exception as exc:  # pyarrow raises OSError, ArrowInvalid... mid-stream for a damaged file
        raise_if_interrupted(exc)
        raise _damaged_cache(folder, f"{type(exc).__name__}: {exc}") from exc


def _damaged_cache(folder: Path, problem: str) -> DataError:
    return DataError(f"the example cache {folder} is damaged ({problem}); delete the folder to rebuild it",
                     path=folder / EXAMPLES_FILE)


def cached_rows(folder: Path) -> int | None:
    """The row count of a complete cache folder, or None when there is none, it is not readable or its file is
    not the size it was written with (truncated by a full disk or a cut copy: it is then rebuilt)."""
    try:
        meta = json.loads((folder / EXAMPLES_META).read_text())
        size = (folder / EXAMPLES_FILE).stat().st_size
    except (OSError, ValueError):
        return None
    complete = isinstance(meta, dict) and meta.get("format_version") == CACHE_VERSION and meta.get("bytes") == size
    return meta.get("rows") if complete else None


def write_batches(path: Path, batches: Iterable[pa.RecordBatch], schema: pa.Schema | None = None) -> int:
    """Stream record batches into an Arrow IPC stream file (the first batch's schema unless given); row count.

    Batches whose types differ from the schema are cast to it; nothing but the current batch is held.
    """
    rows = 0
    writer = None
    with pa.OSFile(str(path), "wb") as sink:
        try:
            for batch in batches:
                if writer is None:
                    schema = schema or batch.schema
                    writer = pa.ipc.new_stream(sink, schema)
                if batch.schema != schema:
                    batch = batch.cast(schema)
                writer.write_batch(batch)
                rows += batch.num_rows
            if writer is None and schema is not None:
                writer = pa.ipc.new_stream(sink, schema)
        finally:
            if writer is not None:
                writer.close()
    return rows


def read_batches(path: str | Path) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow IPC stream file, read one at a time (not memory-mapped)."""
    with pa.OSFile(str(path), "rb") as source:
        yield from pa.ipc.open_stream(source)
