"""Split each data file format (tsv, csv, jsonl, txt, Hugging Face datasets) into records.

Every reader yields ``(position, record)`` pairs (position = 1-based physical line for text files, 0-based
row index for Hugging Face datasets; record = mapping from source column to raw value); one shared converter
(`multidistill.data.convert`) turns the records into rows, so each format only has to know how to split its
input into records. Problems with the file itself (a missing file, bad bytes, quoting, column counts) raise
`DataError` naming the file and line.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import datasets

from multidistill.data.roots import HOW_TO_SET, describe_data_root
from multidistill.data.sample import SAMPLE_DATA_ROOT, SAMPLE_ROOT_SPEC
from multidistill.data.tasks import BUILTIN_TASKS, SPLITS, DataFile, Task
from multidistill.errors import DataError
from multidistill.utils.interrupt import raise_if_interrupted

HF_FORMATS = ("hf_disk", "hf_hub")
CHUNK_ROWS = 10_000  # rows held as Python objects at a time (one Arrow record batch each)

Record = Mapping[Any, Any]


@dataclass(frozen=True)
class Source:
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


def _missing(source: Source, kind: str = "data file") -> DataError:
    if kind == "data file" and source.path.is_dir():
        return DataError(f"{kind} for {source.what} is a folder, not a file; check {source.key}.path in the task "
                         "spec", path=source.path)
    if source.root is None:
        return DataError(f"{kind} for {source.what} not found; check {source.key}.path in the task spec",
                         path=source.path)
    return DataError(f"{kind} for {source.what} not found: '{source.data_file.path}' is read from the data root "
                     f"{source.root} ({describe_data_root(source.root)}); {HOW_TO_SET} at the folder that holds "
                     f"it{_where_to_get(source)}", path=source.path)


@cache
def _builtin_files() -> frozenset[str]:
    """The relative paths the built-in tasks read (the layout of the shipped configs' data root)."""
    return frozenset(data_file.path for task in BUILTIN_TASKS.values() for split in SPLITS
                     for _, data_file in task.split_files(split) if data_file.format not in HF_FORMATS)


def _where_to_get(source: Source) -> str:
    """For a missing file of a built-in task's layout: where that layout is described, and the package's sample
    when it holds the same file (it is read with the sample as data root, never instead of the file asked for)."""
    relative = source.data_file.path
    if relative not in _builtin_files():
        return ""
    hint = "; the layout and where to get each file: docs/data.md, 'Getting the benchmark data'"
    if (SAMPLE_DATA_ROOT / relative).is_file():
        hint += (f"; the package ships a small sample of '{relative}' (for trying the tool out, not for benchmarks), "
                 f"read with data.data_root={SAMPLE_ROOT_SPEC} (or --data-root {SAMPLE_ROOT_SPEC})")
    return hint


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


def _decoded_lines(source: Source) -> Iterator[tuple[int, str]]:
    if not source.path.is_file():
        raise _missing(source)
    return decode_lines(source.path, f"the data file for {source.what}")


def _read_tsv(source: Source) -> Iterator[tuple[int, Record]]:
    """GLUE TSV: split on tabs with no quote processing (GLUE text has unbalanced ``"``); with ``quoting: csv``
    CSV-style quotes, as pandas' ``to_csv(sep="\\t")`` writes them."""
    if source.data_file.quoting == "csv":
        rows = csv_records((line for _, line in _decoded_lines(source)), source.path, delimiter="\t")
        yield from _rows_to_records(source, rows, "tab")
        return
    lines = ((n, line.rstrip("\r\n")) for n, line in _decoded_lines(source))
    yield from _rows_to_records(source, ((n, line.split("\t")) for n, line in lines if line), "tab")


def _read_csv(source: Source) -> Iterator[tuple[int, Record]]:
    """Standard quoted CSV; quoted fields may span lines, and a record's position is its first line."""
    rows = csv_records((line for _, line in _decoded_lines(source)), source.path)
    yield from _rows_to_records(source, rows, "comma")


def _rows_to_records(source: Source, rows: Iterator[tuple[int, list[str]]],
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


def _check_named_columns(source: Source, needed: dict[str, str | int], names: list[Any], where: str) -> None:
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


def _check_index_columns(source: Source, needed: dict[str, str | int], width: int, line: int) -> None:
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


def _read_jsonl(source: Source) -> Iterator[tuple[int, Record]]:
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


def _read_txt(source: Source) -> Iterator[tuple[int, Record]]:
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


def _load_hf(source: Source) -> datasets.Dataset:
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


def _read_hf(source: Source) -> Iterator[tuple[int, Record]]:
    """Rows of a Hugging Face dataset, keyed by column name; the position is the 0-based row index. A
    classification task's ClassLabel label column yields `ClassIndex` values."""
    dataset = _load_hf(source)
    needed = source.needed_columns()
    _check_named_columns(source, needed, list(dataset.column_names), "the dataset")
    names = sorted(set(needed.values()), key=str)
    columns = dataset.select_columns(names)
    label = needed.get("label")
    feature = dataset.features[label] if label is not None and source.task.has_labels else None
    # A multilabel column is a sequence: its items' ClassLabel names say what each index is.
    listed = source.task.is_multilabel and isinstance(getattr(feature, "feature", None), datasets.ClassLabel)
    feature = feature.feature if listed else feature
    class_names = tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    # Column-wise conversion to Python is far faster than iterating rows one by one; a chunk at a time.
    for start in range(0, len(columns), CHUNK_ROWS):
        values = columns[start:start + CHUNK_ROWS]
        if class_names is not None:
            if listed:
                values[label] = [[ClassIndex(i, class_names) for i in v] if isinstance(v, list) else v
                                 for v in values[label]]
            else:
                values[label] = [ClassIndex(v, class_names) if isinstance(v, int) else v for v in values[label]]
        for i in range(len(values[names[0]])):
            yield start + i, {name: values[name][i] for name in names}


_READERS = {"tsv": _read_tsv, "csv": _read_csv, "jsonl": _read_jsonl, "hf_disk": _read_hf, "hf_hub": _read_hf,
            "txt": _read_txt}
