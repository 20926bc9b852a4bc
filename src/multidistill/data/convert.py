"""Turn a split's records into typed, validated rows of one fixed schema (`features_for`).

One converter serves every format of `multidistill.data.formats`: it maps the task's columns onto ``id, text_a,
text_b, label, domain``, validates every value (texts, labels, scores, domains, unique ids) and hands the rows
on ``CHUNK_ROWS`` at a time as Arrow record batches; the first problem in file order raises `DataError` naming
the file, line and field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from multidistill.data import label_sets
from multidistill.data.formats import CHUNK_ROWS, HF_FORMATS, ClassIndex, Record, Source
from multidistill.data.tasks import Task
from multidistill.errors import DataError
from multidistill.utils.lookalike import spelled

COLUMN_ORDER: tuple[str, ...] = ("id", "text_a", "text_b", "label", "domain")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the largest regression score a float32 head can be trained on


def features_for(task: Task) -> datasets.Features:
    """The exact schema `read_split` returns for ``task`` (label is float32 for regression, else int64)."""
    return datasets.Features({
        "id": datasets.Value("string"),
        "text_a": datasets.Value("string"),
        "text_b": datasets.Value("string"),
        "label": datasets.Value("float32" if task.type == "regression" else "int64"),
        "domain": datasets.Value("string"),
    })


class Converter:
    """Validate records and convert them into the output columns, for one split."""

    def __init__(self, source: Source) -> None:
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
        # Task labels that spell an integer other than their own position (labels ["1", ..., "5"], ["1", "0"]):
        # with them, an integer of a column without class names could be a label as written or a position.
        self.not_their_positions = [label for i, label in enumerate(self.task.labels)
                                    if _INTEGER.fullmatch(label) and label != str(i)]

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
        if self.task.is_multilabel:
            return self._label_set(pos, [value] if isinstance(value, ClassIndex) else value)  # one class: a set of one
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
        return self._named_label(pos, str(value).strip())

    def _label_set(self, pos: int, value: Any) -> int:
        """A multilabel row's labels as a bit mask (`data.label_sets`): a list (JSON, an HF sequence) of labels, or
        a text cell holding a JSON list or the labels joined by the file's label_separator. An empty list is a
        row with none of the labels; an empty cell is a missing label, refused as for every labelled file."""
        items = value
        if value is None:
            raise self._error(pos, f"empty label (column '{self.columns.label}' is null); every row of a labelled "
                                   "file needs one (a row with none of the labels: an empty list)", "label")
        if isinstance(value, str):
            text = value.strip()
            if not text:
                raise self._error(pos, f"empty label (column '{self.columns.label}'); every row of a labelled file "
                                       "needs one (a row with none of the labels: [])", "label")
            if text.startswith("["):
                try:
                    items = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise self._error(pos, f"label cell {text[:60]!r} starts with '[' but is not a JSON list "
                                           f"({exc.msg})", "label") from None
            else:
                separator = self.source.data_file.label_separator
                items = [item.strip() for item in text.split(separator)]
                if "" in items:
                    raise self._error(pos, f"label cell {text[:60]!r} has an empty label between its "
                                           f"separators ({separator!r})", "label")
        if not isinstance(items, (list, tuple)):
            raise self._error(pos, f"a multilabel task's label is a list of labels (or labels joined by "
                                   f"{self.source.data_file.label_separator!r}), got {type(items).__name__} "
                                   f"{str(items)[:40]!r}", "label")
        if items and all(isinstance(item, ClassIndex) and item.index == -1 for item in items):
            return self.no_label  # [-1]: the ClassLabel "no label" mark (our transfer sets' augmented variants)
        indices = [self._label_index(pos, item) for item in items]
        if len(set(indices)) != len(indices):
            repeated = next(self.task.labels[i] for i in indices if indices.count(i) > 1)
            hint = (" (a 0/1 vector, one entry per label? write the labels it marks instead: [\"joy\", \"love\"])"
                    if all(isinstance(item, int) and item in (0, 1) for item in items) else "")
            raise self._error(pos, f"label {repeated!r} is given twice in one row's labels{hint}", "label")
        return label_sets.encode(indices)

    def _label_index(self, pos: int, item: Any) -> int:
        """One label of a multilabel row: a ClassLabel index, an HF integer (read as `_int_label` reads a
        classification label), or a label as written (a JSON number: the label it spells)."""
        if isinstance(item, ClassIndex):
            if item.index == -1:
                raise self._error(pos, "class index -1 ('no label') among other labels; a row without labels is "
                                       "[-1] alone, a row with none of them an empty list", "label")
            return self._class_index(pos, item)
        if self.is_hf and isinstance(item, int) and not isinstance(item, bool):
            if item == -1:
                raise self._error(pos, "label -1 inside a list of labels; an empty list is a row with none of the "
                                       "labels, and a row without a label needs a ClassLabel sequence holding [-1]",
                                  "label")
            return self._int_label(pos, item)
        if isinstance(item, (dict, list, tuple)) or item is None or isinstance(item, bool):
            raise self._error(pos, f"a label in the list is {item!r}; each must be a label of the task", "label")
        return self._named_label(pos, str(item).strip())

    def _named_label(self, pos: int, text: str) -> int:
        """The index of the label ``text`` names (a cell as written, stripped)."""
        if text not in self.label_index:
            allowed = ", ".join(repr(label) for label in self.task.labels)
            raise self._error(pos, f"label {text!r} is not one of the task's labels: {allowed}"
                                   f"{spelled(text, self.task.labels)}", "label")
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
        if self.source.data_file.int_labels is not None:
            raise self._error(pos, f"{self.source.key}.int_labels says how to read a plain integer column, but "
                                   f"column '{self.columns.label}' is a ClassLabel, whose own names say what each "
                                   "index is; remove int_labels (int_label_names maps the indexes to other labels)",
                              "label")
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
        -1, which is no position, marks a row without a label (as in our own transfer sets). With int_labels
        `values` the integer is instead the label it spells, as in a JSONL file. Where a task label spells an
        integer other than its own position the two readings differ: without int_label_names or int_labels, the
        integer is refused as ambiguous."""
        names = self.source.data_file.int_label_names
        how = self.source.data_file.int_labels
        if how == "values":
            text = str(value)
            if text in self.label_index:
                return self.label_index[text]
            if value == -1:
                return self.no_label
            allowed = ", ".join(repr(label) for label in self.task.labels)
            raise self._error(pos, f"label {text!r} is not one of the task's labels: {allowed} ({self.source.key}"
                                   ".int_labels is values: an integer is the label it spells)", "label")
        if value == -1:
            if "-1" in self.label_index and how is None:
                raise self._error(pos, "integer label -1: integers of a column without class names are positions "
                                       "in the task's labels (or int_label_names), and -1 means 'no label', but "
                                       "'-1' is one of the task's labels; set "
                                       f"{self.source.key}.int_labels to values (the integer is the label) or "
                                       "positions (-1 is no label), or store the column as text "
                                       "(dataset.cast_column(name, Value('string'))) or as a ClassLabel", "label")
            return self.no_label
        if names is None and how is None and self.not_their_positions:
            shown = ", ".join(f"{label!r} at position {self.label_index[label]}"
                              for label in self.not_their_positions[:3])
            more = ", ..." if len(self.not_their_positions) > 3 else ""
            as_position = (f"position {value}, the label {self.task.labels[value]!r}"
                           if 0 <= value < len(self.task.labels) else f"position {value}, which is out of range")
            raise self._error(pos, f"integer label {value} is ambiguous: integers of a column without class names "
                                   f"are read as positions in the task's labels, but the task's labels spell "
                                   f"integers that are not their positions ({shown}{more}), so {value} could be "
                                   f"the label {str(value)!r} or {as_position}; set {self.source.key}.int_labels "
                                   "to values (the integer is the label, as in a JSONL file) or positions, or "
                                   f"{self.source.key}.int_label_names to the task label each integer stands for, "
                                   "or store the column as text (dataset.cast_column(name, Value('string')))",
                              "label")
        size = len(names) if names is not None else len(self.task.labels)
        if not 0 <= value < size:
            what = "int_label_names" if names is not None else "the task's labels"
            hint = "" if names is not None or how is not None else (
                f"; if the column's integers are the labels themselves, set {self.source.key}.int_labels to "
                f"values, or set {self.source.key}.int_label_names to the task label each integer stands for")
            raise self._error(pos, f"integer label {value} is out of range for {what} ({size} entries): it is read "
                                   f"as a position (0 to {size - 1}) in {what}{hint}", "label")
        return self.label_index[names[value]] if names is not None else value


_INTEGER = re.compile(r"0|-?[1-9][0-9]*", re.ASCII)  # an integer as str(int) writes it
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

    def __init__(self, converter: Converter) -> None:
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
