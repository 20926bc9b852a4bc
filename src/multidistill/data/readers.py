"""Read one split of a task into a `datasets.Dataset` with a fixed schema.

Every reader yields ``(position, record)`` pairs (position = 1-based physical line for text files, 0-based
row index for Hugging Face datasets; record = mapping from source column to raw value). One shared
converter turns the records into the columns ``id, text_a, text_b, label, domain`` and validates them, so
each format only has to know how to split its input into records.

Nothing holds a whole split as Python objects: records are converted and validated ``CHUNK_ROWS`` at a time
into Arrow record batches, which `write_split_cache` streams into an Arrow file (read back memory-mapped) and
`read_split` without a cache folder gathers into one in-memory table.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from multidistill.data.roots import HOW_TO_SET, describe_data_root, resolve_data_root
from multidistill.data.tasks import DataFile, Task
from multidistill.errors import DataError
from multidistill.utils.atomic import atomic_dir, remove_stale_temps
from multidistill.utils.interrupt import raise_if_interrupted

COLUMN_ORDER: tuple[str, ...] = ("id", "text_a", "text_b", "label", "domain")
HF_FORMATS = ("hf_disk", "hf_hub")
CHUNK_ROWS = 10_000  # rows held as Python objects at a time (one Arrow record batch each)
EXAMPLES_FILE = "examples.arrow"
EXAMPLES_META = "examples.json"
# 2: ClassLabel names, -1 scores and stricter text (surrogates, CR ends, scores): rows read by 1 may be wrong.
# 3: a NaN domain cell is no domain (2 named it 'nan'), and a row without one among rows with one is refused.
CACHE_VERSION = 3
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the largest regression score a float32 head can be trained on

Record = Mapping[Any, Any]


def features_for(task: Task) -> datasets.Features:
    """The exact schema `read_split` returns for ``task`` (label is float32 for regression, else int64)."""
    return datasets.Features({
        "id": datasets.Value("string"),
        "text_a": datasets.Value("string"),
        "text_b": datasets.Value("string"),
        "label": datasets.Value("float32" if task.type == "regression" else "int64"),
        "domain": datasets.Value("string"),
    })


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
    if _cached_rows(folder) is not None:
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
    if dataset is not None and len(dataset) == _cached_rows(folder) and dataset.features == features_for(task):
        return dataset
    if dataset is not None:
        problem = f"{len(dataset)} rows where {EXAMPLES_META} says {_cached_rows(folder)}, or another schema"
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


def _cached_rows(folder: Path) -> int | None:
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
    # domain_files: each domain's file in name order, its rows given that domain (ids prefixed by it).
    return itertools.chain.from_iterable(_Converter(_source(task, split, data_root, domain, data_file)).batches(schema)
                                         for domain, data_file in task.split_files(split))


def _check_split(task: Task, split: str, max_examples: int | None) -> None:
    if split not in task.splits:
        have = ", ".join(task.splits) or "none"
        raise DataError(f"task '{task.name}' has no '{split}' split (configured splits: {have}); "
                        f"add files.{split} to the task to read it")
    if max_examples is not None and max_examples < 1:
        raise DataError(f"max_examples must be a positive integer or None, got {max_examples}")


def _resolve(data_file: DataFile, data_root: str | Path | None) -> tuple[Path, Path | None]:
    """The file's path and the data root it was resolved against (None for an absolute path)."""
    relative = Path(data_file.path).expanduser()
    root = None if relative.is_absolute() else resolve_data_root(data_root)
    return (relative if root is None else root / relative), root


def _source(task: Task, split: str, data_root: str | Path | None, domain: str | None,
            data_file: DataFile) -> _Source:
    path, root = _resolve(data_file, data_root)
    return _Source(task=task, split=split, data_file=data_file, path=path, root=root, domain=domain)


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


@dataclass(frozen=True)
class _Source:
    """Everything a reader needs to know about the split it reads (and to word its errors)."""

    task: Task
    split: str
    data_file: DataFile
    path: Path
    root: Path | None = None  # the data root a relative ``data_file.path`` was resolved against
    domain: str | None = None  # domain_files: the domain of every row of this file

    @property
    def what(self) -> str:
        where = f" (domain '{self.domain}')" if self.domain is not None else ""
        return f"task '{self.task.name}' split '{self.split}'{where}"

    @property
    def key(self) -> str:
        """The file's place in the task spec: ``files.<split>`` or ``domain_files.<domain>.<split>``."""
        return f"files.{self.split}" if self.domain is None else f"domain_files.{self.domain}.{self.split}"

    def records(self) -> Iterator[tuple[int, Record]]:
        """A fresh pass over the source's records."""
        return _READERS[self.data_file.format](self)

    def needed_columns(self) -> dict[str, str | int]:
        """Example field -> source column, for the columns this split actually reads."""
        cols = self.data_file.columns
        wanted: dict[str, str | int | None] = {
            "text_a": cols.text_a,
            "text_b": cols.text_b if self.task.pair else None,  # single-sentence tasks get text_b ""
            "label": cols.label,
            "id": cols.id,
            "domain": cols.domain,
        }
        return {field: col for field, col in wanted.items() if col is not None}


def _missing(source: _Source, kind: str = "data file") -> DataError:
    if kind == "data file" and source.path.is_dir():
        return DataError(f"{kind} for {source.what} is a folder, not a file; check {source.key}.path in the task "
                         "spec", path=source.path)
    if source.root is None:
        return DataError(f"{kind} for {source.what} not found; check {source.key}.path in the task spec",
                         path=source.path)
    return DataError(f"{kind} for {source.what} not found: '{source.data_file.path}' is read from the data root "
                     f"{source.root} ({describe_data_root(source.root)}); {HOW_TO_SET} at the folder that holds "
                     "it", path=source.path)


# ---------------------------------------------------------------------------------------------- text files


UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def decode_lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` with line endings kept, decoding UTF-8 one line at a time so a bad
    byte is reported with its line number (the first line may start with a BOM, as MRPC's does).
    ``what`` names the file in a read error ("the data file for ...", "the input"). A UTF-16 file and one
    with lone-CR line ends (old Mac, Excel for Mac) are refused by name: read as UTF-8 lines they would be
    "bad bytes" or, worse, one line holding the whole file."""
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                if number == 1 and raw.startswith(UTF16_BOMS):
                    raise DataError("the file is UTF-16 (it starts with a UTF-16 byte-order mark); re-save it as "
                                    "UTF-8", path=path, line=1)
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    # e.object is the line after any BOM was removed, so index it rather than raw.
                    bad = e.object[e.start:e.end].hex(" ")
                    raise DataError(f"not valid UTF-8 (bytes {bad} at byte offset {e.start}); re-save the "
                                    "file as UTF-8", path=path, line=number) from e
                # No \n at all (the first line is the whole file) but CRs inside it: CR line ends.
                if number == 1 and not line.endswith("\n") and "\r" in line.rstrip("\r"):
                    raise DataError("the file uses CR line ends (no LF anywhere); convert them to LF, e.g. "
                                    "tr '\\r' '\\n' < in > out", path=path)
                yield number, line
    except OSError as e:
        raise DataError(f"cannot read {what}: {e.strerror or e}", path=path) from e


# csv's default field limit (131,072 characters) refuses a long review as "malformed"; the tokenizer truncates
# texts anyway, and every reader here holds a whole split in memory already.
CSV_FIELD_LIMIT = 2**31 - 1


def csv_records(lines: Iterator[str], path: Path, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """Quoted CSV records as ``(first line number, fields)``; a record may span lines, blank lines are skipped.
    ``delimiter`` "\\t" reads TSV written with CSV quoting (`DataFile.quoting` csv)."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    # csv.reader counts the lines it pulls from ``lines``, which are exactly the file's physical lines.
    reader = csv.reader(lines, strict=True, delimiter=delimiter)
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"malformed CSV in the record starting here ({e}, detected at line "
                            f"{reader.line_num}); check for unbalanced quotes", path=path, line=start) from e
        if fields:  # csv yields [] for blank lines
            yield start, fields


def _decoded_lines(source: _Source) -> Iterator[tuple[int, str]]:
    if not source.path.is_file():
        raise _missing(source)
    return decode_lines(source.path, f"the data file for {source.what}")


def _read_tsv(source: _Source) -> Iterator[tuple[int, Record]]:
    """GLUE TSV: split on tabs with no quote processing (GLUE text has unbalanced ``"``); with ``quoting: csv``
    CSV-style quotes, as pandas' ``to_csv(sep="\\t")`` writes them."""
    if source.data_file.quoting == "csv":
        rows = csv_records((line for _, line in _decoded_lines(source)), source.path, delimiter="\t")
        yield from _rows_to_records(source, rows, "tab")
        return
    lines = ((n, line.rstrip("\r\n")) for n, line in _decoded_lines(source))
    yield from _rows_to_records(source, ((n, line.split("\t")) for n, line in lines if line), "tab")


def _read_csv(source: _Source) -> Iterator[tuple[int, Record]]:
    """Standard quoted CSV; quoted fields may span lines, and a record's position is its first line."""
    rows = csv_records((line for _, line in _decoded_lines(source)), source.path)
    yield from _rows_to_records(source, rows, "comma")


def _rows_to_records(source: _Source, rows: Iterator[tuple[int, list[str]]],
                     sep: str) -> Iterator[tuple[int, Record]]:
    """Apply header semantics: with a header, records are keyed by column name; without, by 0-based
    index. Every row must have as many fields as the header (or, headerless, the first line)."""
    first = next(rows, None)
    if first is None:
        raise DataError(f"empty file: no lines (empty split for {source.what})", path=source.path)
    needed = source.needed_columns()
    if source.data_file.header:
        keys: list[str | int] = [name.strip() for name in first[1]]
        _check_named_columns(source, needed, keys, "the header")
        data_rows = rows
    else:
        keys = list(range(len(first[1])))
        _check_index_columns(source, needed, len(keys), first[0])
        data_rows = itertools.chain([first], rows)
    width_of = "the header" if source.data_file.header else f"line {first[0]} (the first line)"
    any_rows = False
    for number, fields in data_rows:
        if len(fields) != len(keys):
            quoted = sep == "tab" and source.data_file.quoting == "none" and any('"' in field for field in fields)
            hint = ("; if the file quotes its fields as CSV does (pandas' to_csv(sep='\\t')), set quoting: csv"
                    if quoted else "")
            raise DataError(f"has {len(fields)} {sep}-separated fields but {width_of} has {len(keys)}; "
                            f"a field probably contains a stray {sep} or the row is truncated{hint}",
                            path=source.path, line=number)
        any_rows = True
        yield number, dict(zip(keys, fields, strict=True))
    if not any_rows:
        raise DataError(f"empty split: the file has a header line but no data rows ({source.what})",
                        path=source.path)


def _check_named_columns(source: _Source, needed: dict[str, str | int], names: list[Any], where: str) -> None:
    listing = ", ".join(repr(n) for n in names)
    for field, col in needed.items():
        if isinstance(col, int):
            hint = "; set header: false to use 0-based indexes" if where == "the header" else ""
            raise DataError(f"columns.{field} is the index {col}, but columns of this file are referenced by "
                            f"name: {listing}{hint}", path=source.path)
        if col not in names:
            raise DataError(f"{where} lacks column '{col}' (columns.{field}); it has: {listing}",
                            path=source.path)
        if names.count(col) > 1:
            raise DataError(f"{where} has column '{col}' (columns.{field}) more than once; rename one",
                            path=source.path)


def _check_index_columns(source: _Source, needed: dict[str, str | int], width: int, line: int) -> None:
    for field, col in needed.items():
        if not isinstance(col, int):
            raise DataError(f"the file has no header (header: false), so columns.{field} must be a 0-based "
                            f"column index, not '{col}'; or set header: true", path=source.path)
        if not 0 <= col < width:
            raise DataError(f"columns.{field} is index {col} but the line has only {width} fields "
                            f"(indexes 0..{width - 1})", path=source.path, line=line)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """`json.loads`'s object hook: a key given twice is an error (json keeps the last one silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"key {twice!r} appears twice in one object")
    return obj


def json_object_line(line: str) -> object:
    """One JSON Lines line, refusing a key given twice (ValueError, as any invalid JSON)."""
    return json.loads(line, object_pairs_hook=_unique_keys)


def _read_jsonl(source: _Source) -> Iterator[tuple[int, Record]]:
    """One JSON object per line, keyed by name; blank lines are skipped."""
    for number, line in _decoded_lines(source):
        if not line.strip():
            continue
        try:
            obj = json_object_line(line)
        except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
            hint = ("; a raw tab or other control character inside a string must be escaped (\\t, \\n)"
                    if "control character" in str(e) else "")
            raise DataError(f"invalid JSON ({e}){hint}; each line must be one JSON object", path=source.path,
                            line=number) from e
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=source.path,
                            line=number)
        yield number, obj


def _read_txt(source: _Source) -> Iterator[tuple[int, Record]]:
    """One text a line, keyed by column 0; blank lines are skipped. A file with no text at all is an error here,
    naming the file, since a corpus that reads as nothing is a wrong path or a wrong file."""
    any_rows = False
    for number, line in _decoded_lines(source):
        text = line.rstrip("\r\n")
        if text.strip():
            any_rows = True
            yield number, {0: text}
    if not any_rows:
        raise DataError(f"empty corpus file: no text on any line ({source.what}); a txt file holds one text a "
                        "line", path=source.path)


# ------------------------------------------------------------------------------------ Hugging Face datasets


def _is_saved_dataset(path: Path) -> bool:
    """True for a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _load_hf(source: _Source) -> datasets.Dataset:
    data_file = source.data_file
    hf_split = data_file.hf_split or source.split
    # hf_hub falls back to load_from_disk for a local save_to_disk folder, so it also works offline.
    if data_file.format == "hf_disk" or _is_saved_dataset(source.path):
        if not source.path.exists():
            raise _missing(source, "dataset folder")
        try:
            loaded = datasets.load_from_disk(str(source.path))
        except Exception as e:  # datasets raises several types for a folder it cannot read
            raise_if_interrupted(e)
            raise DataError(f"cannot load a save_to_disk dataset for {source.what}: {e}",
                            path=source.path) from e
    else:
        # A local folder (e.g. of data files) is passed by its resolved path; anything else is a hub name.
        target = str(source.path) if source.path.exists() else data_file.path
        try:
            loaded = datasets.load_dataset(target, data_file.hf_name, split=hf_split)
        except Exception as e:  # network, missing dataset/config/split, ... all become one user error
            raise_if_interrupted(e)
            raise DataError(f"load_dataset({target!r}, {data_file.hf_name!r}, split={hf_split!r}) failed for "
                            f"{source.what}: {type(e).__name__}: {e}", path=target) from e
    if isinstance(loaded, datasets.DatasetDict):
        if hf_split not in loaded:
            raise DataError(f"the dataset has no split '{hf_split}' (it has: {', '.join(loaded)}); set "
                            f"{source.key}.hf_split", path=source.path)
        loaded = loaded[hf_split]
    if not isinstance(loaded, datasets.Dataset):
        raise DataError(f"expected a datasets.Dataset for {source.what}, got {type(loaded).__name__}",
                        path=source.path)
    return loaded


class ClassIndex:
    """A class index read from a `datasets.ClassLabel` column, with that column's names: it stands for the
    class the dataset names, not for a position in the task's labels."""

    __slots__ = ("index", "names")

    def __init__(self, index: int, names: tuple[str, ...]) -> None:
        self.index = index
        self.names = names


def _read_hf(source: _Source) -> Iterator[tuple[int, Record]]:
    """Rows of a Hugging Face dataset, keyed by column name; the position is the 0-based row index. A
    classification task's ClassLabel label column yields `ClassIndex` values."""
    dataset = _load_hf(source)
    needed = source.needed_columns()
    _check_named_columns(source, needed, list(dataset.column_names), "the dataset")
    names = sorted(set(needed.values()), key=str)
    columns = dataset.select_columns(names)
    label = needed.get("label")
    feature = dataset.features[label] if label is not None and source.task.type == "classification" else None
    class_names = tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    # Column-wise conversion to Python is far faster than iterating rows one by one; a chunk at a time.
    for start in range(0, len(columns), CHUNK_ROWS):
        values = columns[start:start + CHUNK_ROWS]
        if class_names is not None:
            values[label] = [ClassIndex(v, class_names) if isinstance(v, int) else v for v in values[label]]
        for i in range(len(values[names[0]])):
            yield start + i, {name: values[name][i] for name in names}


_READERS = {"tsv": _read_tsv, "csv": _read_csv, "jsonl": _read_jsonl, "hf_disk": _read_hf, "hf_hub": _read_hf,
            "txt": _read_txt}


# ------------------------------------------------------------------------------- record -> example columns


class _Converter:
    """Validate records and convert them into the output columns, for one split."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.task = source.task
        self.columns = source.data_file.columns
        self.is_hf = source.data_file.format in HF_FORMATS
        self.by_row = self.is_hf  # HF positions are row indexes, not file lines
        self.regression = self.task.type == "regression"
        self.label_index = {label: i for i, label in enumerate(self.task.labels)}
        self.no_label: float | int = math.nan if self.regression else -1
        self.fixed_domain = source.domain or source.data_file.domain or self.task.domain or ""
        self.id_prefix = f"{source.domain}:" if source.domain is not None else ""
        # A domain column: where the first row without a domain is, and whether a row had one.
        self.first_without_domain: int | None = None
        self.some_domain = False
        self._check_int_label_names()

    def chunks(self, size: int | None = None) -> Iterator[dict[str, list[Any]]]:
        """The validated rows as column dicts of at most ``size`` rows (default `CHUNK_ROWS`); the first problem
        in file order raises `DataError`."""
        size = size or CHUNK_ROWS
        seen = _SeenIds(self) if self.columns.id is not None else None
        out: dict[str, list[Any]] = {name: [] for name in COLUMN_ORDER}
        positions: list[int] = []
        records = enumerate(self.source.records())
        while True:
            try:
                item = next(records, None)  # the readers' own errors (bad bytes, column counts...) come from here
                if item is None:
                    break
                row_index, (pos, record) = item
                out["id"].append(self._id(pos, record, row_index))
                positions.append(pos)
                text_a = self._text(pos, record, "text_a")
                text_b = self._text(pos, record, "text_b") if self.task.pair else ""
                label = self._label(pos, record)
                domain = self.fixed_domain
                if self.columns.domain is not None:
                    domain = self._domain(pos, record)
            except DataError:
                if seen is not None:  # ids are checked a chunk at a time: a duplicate before this problem wins
                    seen.check(out["id"], positions)
                raise
            out["text_a"].append(text_a)
            out["text_b"].append(text_b)
            out["label"].append(label)
            out["domain"].append(domain)
            if len(positions) == size:
                if seen is not None:
                    seen.add(seen.check(out["id"], positions))
                yield out
                out, positions = {name: [] for name in COLUMN_ORDER}, []
        if positions:
            if seen is not None:
                seen.check(out["id"], positions)
            yield out

    def batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """`chunks` as Arrow record batches: only one chunk is ever held as Python objects."""
        for chunk in self.chunks():
            batch = pa.RecordBatch.from_pydict(chunk, schema=schema)
            del chunk  # the consumer holds the batch, not the lists, while the next chunk is read
            yield batch

    def _id(self, pos: int, record: Record, row_index: int) -> str:
        if self.columns.id is not None:
            return self.id_prefix + self._scalar(pos, record, "id", required=True)
        # ids default to the line number for tsv/csv/txt and to the row index for jsonl / HF: unique by construction.
        return self.id_prefix + str(pos if self.source.data_file.format in ("tsv", "csv", "txt") else row_index)

    def first_position(self, example_id: str, rows: int) -> int | None:
        """The position of ``example_id`` among the first ``rows`` rows (a second pass over the source)."""
        for row_index, (pos, record) in enumerate(self.source.records()):
            if row_index >= rows:
                return None
            if self._id(pos, record, row_index) == example_id:
                return pos
        return None

    def duplicate(self, pos: int, example_id: str, first: int) -> DataError:
        where = "row" if self.by_row else "line"
        return self._error(pos, f"duplicate id '{example_id}' (first seen at {where} {first}); ids must be "
                                "unique within a split", "id")

    # -- helpers ------------------------------------------------------------------------------------------

    def _error(self, pos: int, message: str, field: str | None = None) -> DataError:
        # Name the file's own column too: users know `score`, not our `label`.
        column = getattr(self.columns, field, None) if field else None
        if self.by_row:
            return DataError(f"row {pos}: {message}", path=self.source.path, field=field, column=column)
        return DataError(message, path=self.source.path, line=pos, field=field, column=column)

    def _raw(self, pos: int, record: Record, field: str) -> Any:
        column = getattr(self.columns, field)
        if column not in record:
            raise self._error(pos, f"missing key '{column}' (columns.{field}); add it or fix the column map",
                              field)
        return record[column]

    def _text(self, pos: int, record: Record, field: str) -> str:
        value = self._raw(pos, record, field)
        column = getattr(self.columns, field)
        if value is None:
            raise self._error(pos, f"missing text (column '{column}' is null)", field)
        if not isinstance(value, str):
            raise self._error(pos, f"text must be a string, got {type(value).__name__} (column '{column}')",
                              field)
        value = value.rstrip("\r\n")
        if not value.strip():
            raise self._error(pos, f"empty text (column '{column}'); drop the row or fill it in", field)
        self._check_utf8(pos, value, field)
        return value

    def _check_utf8(self, pos: int, value: str, field: str) -> None:
        # A JSON "\ud83d" escape without its pair (a cut emoji) decodes to a lone surrogate, which Arrow, the
        # tokenizer and every file written later refuse. isascii() is O(1): only other text is encoded.
        problem = None if value.isascii() else surrogate_problem(value)
        if problem is not None:
            raise self._error(pos, f"{problem}; fix or drop the row", field)

    def _scalar(self, pos: int, record: Record, field: str, *, required: bool) -> str:
        value = self._raw(pos, record, field)
        if isinstance(value, (list, dict)):
            raise self._error(pos, f"expected a single value, got {type(value).__name__}", field)
        text = "" if value is None else str(value).strip()
        self._check_utf8(pos, text, field)
        if required and not text:
            raise self._error(pos, f"empty {field} (column '{getattr(self.columns, field)}')", field)
        return text

    def _domain(self, pos: int, record: Record) -> str:
        """A domain column's cell. Every cell empty is a task without domains (the transfer set of one); an empty
        or NaN cell (a missing value of an HF / pandas column) among cells with domains is refused, naming the
        first such row: its row would fail later, far from the file, and 'nan' must not become a domain."""
        value = self._raw(pos, record, "domain")
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        domain = "" if missing else self._scalar(pos, record, "domain", required=False)
        if domain:
            self.some_domain = True
        elif self.first_without_domain is None:
            self.first_without_domain = pos
        if self.some_domain and self.first_without_domain is not None:
            column = self.columns.domain
            raise self._error(self.first_without_domain, f"no domain (column '{column}' is empty or NaN) where "
                              "other rows have one; give every row its domain, or drop the row", "domain")
        return domain

    def _check_int_label_names(self) -> None:
        names = self.source.data_file.int_label_names
        if names is None or self.regression:
            return
        unknown = [name for name in names if name not in self.label_index]
        if unknown:
            raise DataError(f"{self.source.key}.int_label_names has {unknown}, which are not labels "
                            f"of task '{self.task.name}' (labels: {self.task.labels})", path=self.source.path)

    def _label(self, pos: int, record: Record) -> float | int:
        if self.columns.label is None:
            return self.no_label
        value = self._raw(pos, record, "label")
        if isinstance(value, ClassIndex):
            return self._class_index(pos, value)
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if self.is_hf and isinstance(value, float) and math.isnan(value):
            return self.no_label  # our own saved datasets (augmented transfer sets) mark missing scores with NaN
        if value is None or str(value).strip() == "":
            raise self._error(pos, f"empty label (column '{self.columns.label}'); every row of a labelled "
                                   "file needs one", "label")
        if self.regression:
            return self._score(pos, value)
        if self.is_hf and is_int:
            return self._int_label(pos, value)
        text = str(value).strip()
        if text not in self.label_index:
            allowed = ", ".join(repr(label) for label in self.task.labels)
            raise self._error(pos, f"label {text!r} is not one of the task's labels: {allowed}", "label")
        return self.label_index[text]

    def _score(self, pos: int, value: Any) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            score = float(value)  # a number column (hf_disk / hf_hub, JSON numbers)
        else:
            text = str(value).strip()
            # float() also takes "1_000", Arabic-Indic digits and other Unicode numerals: plain decimals only.
            score = float(text) if not isinstance(value, bool) and _DECIMAL.fullmatch(text) else math.nan
        if not math.isfinite(score):
            raise self._error(pos, f"regression label {str(value)!r} is not a finite number (plain decimal "
                                   "digits, e.g. 3.8 or 1e-3)", "label")
        if abs(score) > FLOAT32_MAX:  # scores are trained as float32: 1e300 would become inf there
            raise self._error(pos, f"regression label {str(value)!r} is outside the float32 range "
                                   f"(|score| <= {FLOAT32_MAX:.4g}); rescale the scores", "label")
        if score == self.source.data_file.no_label_value:
            return self.no_label
        return score

    def _class_index(self, pos: int, value: ClassIndex) -> int:
        """A ClassLabel's index: the class its own names give it (or int_label_names, when set); -1 is the
        `datasets` mark of a row without a label."""
        if value.index == -1:
            return self.no_label
        if self.source.data_file.int_label_names is not None:
            return self._int_label(pos, value.index)
        if not 0 <= value.index < len(value.names):
            raise self._error(pos, f"class index {value.index} is out of range for the dataset's ClassLabel "
                                   f"({len(value.names)} names)", "label")
        name = value.names[value.index]
        if name not in self.label_index:
            raise self._error(pos, f"class {value.index} of the dataset's ClassLabel is named {name!r}, which is not "
                                   f"one of the task's labels {self.task.labels}; rename the task's labels, or set "
                                   f"{self.source.key}.int_label_names to the task label each class index stands for",
                              "label")
        return self.label_index[name]

    def _int_label(self, pos: int, value: int) -> int:
        """A plain integer (no class names in the data): a position in int_label_names or in the task's labels;
        -1, which is no position, marks a row without a label (as in our own transfer sets)."""
        names = self.source.data_file.int_label_names
        if value == -1:
            if "-1" in self.label_index:
                raise self._error(pos, "integer label -1: integers of a column without class names are positions "
                                       "in the task's labels (or int_label_names), and -1 means 'no label', but "
                                       "'-1' is one of the task's labels; store the column as text "
                                       "(dataset.cast_column(name, Value('string'))) or as a ClassLabel", "label")
            return self.no_label
        size = len(names) if names is not None else len(self.task.labels)
        if not 0 <= value < size:
            what = "int_label_names" if names is not None else "the task's labels"
            raise self._error(pos, f"integer label {value} is out of range for {what} ({size} entries)",
                              "label")
        return self.label_index[names[value]] if names is not None else value


_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def surrogate_problem(text: str) -> str | None:
    """What is wrong with ``text`` if it holds an unpaired UTF-16 surrogate (which no UTF-8 file, Arrow column or
    tokenizer takes), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"unpaired surrogate U+{ord(text[e.start]):04X} at character {e.start} (half of a \\uXXXX pair, "
                "e.g. a cut emoji)")
    return None


class _SeenIds:
    """The ids of the rows converted so far, for duplicate detection in bounded memory.

    Held as a sorted array of their 64-bit hashes: 8 bytes a row, where a set of the strings costs ~100 (about
    100 MB at a million rows). A hash match is only a candidate: it is confirmed on the strings themselves (in
    the current chunk, or by a second pass over the source for earlier chunks, which only an actual duplicate or
    a 1-in-2^64 collision triggers), so a collision can never report a false duplicate.
    """

    def __init__(self, converter: _Converter) -> None:
        self.converter = converter
        self.hashes = np.empty(0, dtype=np.int64)
        self.rows = 0

    def check(self, ids: list[str], positions: list[int]) -> np.ndarray:
        """Raise for the first id of this chunk that repeats an earlier one; returns the chunk's hashes."""
        hashes = np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))
        earlier = np.zeros(len(ids), dtype=bool)
        if self.hashes.size:
            at = np.minimum(np.searchsorted(self.hashes, hashes), self.hashes.size - 1)
            earlier = self.hashes[at] == hashes
        order = np.argsort(hashes, kind="stable")
        repeated = np.zeros(len(ids), dtype=bool)
        repeated[order[1:][hashes[order[1:]] == hashes[order[:-1]]]] = True
        for k in np.flatnonzero(earlier | repeated).tolist():
            first = self.converter.first_position(ids[k], self.rows) if earlier[k] else None
            if first is None and repeated[k]:
                first = next((positions[j] for j in range(k) if ids[j] == ids[k]), None)
            if first is not None:
                raise self.converter.duplicate(positions[k], ids[k], first)
        return hashes

    def add(self, hashes: np.ndarray) -> None:
        # Two sorted runs: the stable sort (timsort) merges them in linear time.
        self.hashes = np.sort(np.concatenate([self.hashes, hashes]), kind="stable")
        self.rows += len(hashes)
