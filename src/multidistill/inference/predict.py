"""Label a file of texts with a saved model folder or an ONNX export: CSV / TSV / JSONL in, JSONL / CSV out.

The whole input is read and checked before anything is written: a missing column, a non-UTF-8 byte or
(without ``skip_bad_rows``) a row with a missing or empty text stops the run with a `DataError` naming the
file and lines. The output is written to a temporary sibling and renamed into place, so a partial output
file never exists. Rows are batched longest first (by token count), as evaluation batches them, so each batch is
padded little; the output keeps the input's order. Input and output are regular files: stdin/stdout, pipes and
devices are refused up front (the input's rows are all held, and the output is renamed into place).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch

from multidistill.data.collate import encode_texts
from multidistill.data.convert import surrogate_problem
from multidistill.data.formats import csv_records, decode_lines, json_object_line
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, DataError, ModelError, UnknownTaskError
from multidistill.evaluation.thresholds import Thresholds, saved_thresholds, shift
from multidistill.training.run_dir import refuse_output_over_a_run
from multidistill.utils.atomic import atomic_file, refuse_special_file
from multidistill.utils.progress import progress_bar
from multidistill.utils.quiet import bars_disabled

if TYPE_CHECKING:
    from tqdm.auto import tqdm

SINGLE_TEXT_COLUMNS: tuple[str, ...] = ("text", "sentence", "text_a")
PAIR_TEXT_COLUMNS: tuple[tuple[str, str], ...] = (("text_a", "text_b"), ("sentence1", "sentence2"),
                                                  ("question", "sentence"))
ID_COLUMNS: tuple[str, ...] = ("id", "idx", "index")
INPUT_FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
OUTPUT_FORMATS: tuple[str, ...] = ("jsonl", "csv")
# An output name says its format: .tsv or .json holding JSON Lines would be misread by whatever opens them next.
OUTPUT_EXTENSIONS: dict[str, str] = {".jsonl": "jsonl", ".csv": "csv"}
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
DEFAULT_MAX_LENGTH = 128
SHOW_BAD_LINES = 5  # how many bad line numbers an error message lists
COUNT_CHUNK = 1024  # rows tokenised at a time to count lengths: one call over 200k rows peaked at 1.3 GB
PROGRESS_DELAY_S = 1.0  # reading and counting bars appear only when they take this long
EXPORT_INFO_FILE = "export.json"
STDIN_NAMES: tuple[str, ...] = ("-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0")  # even when a file is behind


class PredictSummary(TypedDict):
    """What `predict_file` returns: rows read, predicted and skipped (with the skipped lines), the rows cut at the
    model's length (``truncated``, as training cut them) and those whose every token is the tokenizer's unknown
    token (``unknown_only``: text in a script the vocabulary lacks, so the prediction reads nothing of it), the text
    columns read and where they came from (``given``, ``task`` or ``default``), the output path and format."""

    task: str
    rows: int
    predicted: int
    skipped: int
    skipped_lines: list[int]
    truncated: int
    unknown_only: int
    text_columns: list[str]
    columns_from: str
    output: str
    format: str


def parse_text_columns(text: str) -> tuple[str, str | None]:
    """``--text-columns`` as `predict_file` takes it: ``"a"`` -> ("a", None); ``"a,b"`` -> ("a", "b")."""
    names = [name.strip() for name in text.split(",")]
    if not 1 <= len(names) <= 2 or not all(names):
        raise ConfigError(f"--text-columns takes one column name or two separated by a comma "
                          f"(e.g. 'sentence' or 'question,sentence'), got {text!r}")
    return names[0], names[1] if len(names) == 2 else None


def predict_file(source: str | Path, task: str, input_path: str | Path, output_path: str | Path, *,
                 text_columns: tuple[str, str | None] | str | None = None, batch_size: int = 64,
                 skip_bad_rows: bool = False, output_format: str | None = None, precision: str = "fp32",
                 progress: bool = True) -> PredictSummary:
    """Predict ``task`` for every row of ``input_path`` and write one record per row to ``output_path``.

    ``source`` is a multidistill model folder or an ONNX export folder (``export.json`` with kind
    ``onnx``). The input format follows the extension (.csv, .tsv, .jsonl/.json); CSV and TSV need a
    header. Text columns are, unless ``text_columns`` names them (``(text_a, text_b or None)``, or a str as
    ``--text-columns`` takes it: ``"sentence"``, ``"question,sentence"``), the ones the task was trained on (its
    spec's column map) when the file has them, else the usual names (``text``/``sentence``/``text_a``, or
    ``text_a``+``text_b``, ``sentence1``+``sentence2``, ``question``+``sentence`` for pairs). The output
    format follows its extension (.jsonl or .csv; others are refused) unless ``output_format`` names it.
    ``progress`` False: no bars (they also follow $TQDM_DISABLE); `multidistill.predict` labels texts held in
    memory instead. Returns counts: rows read, predicted and skipped, the skipped lines, the text columns read
    and where they came from (``given``, ``task`` or ``default``), with the output path and format.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if isinstance(text_columns, str):
        text_columns = parse_text_columns(text_columns)
    elif text_columns is not None and not isinstance(text_columns, tuple | list):
        raise TypeError(f"text_columns takes (text_a, text_b or None) or a str like 'text_a,text_b', not "
                        f"{type(text_columns).__name__}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    _check_paths(input_path, output_path, Path(source))
    fmt = _output_format(output_path, output_format)
    predictor = open_predictor(Path(source), precision)
    spec = predictor.task(task)

    rows, bad, (columns, origin), id_column = _load_rows(input_path, spec, text_columns, progress)
    if bad and (not skip_bad_rows or not rows):  # skipping every row would write an empty file and "succeed"
        message = _bad_rows_message(bad, columns)
        raise DataError(f"{message} (every row is bad: --skip-bad-rows leaves nothing to predict)" if skip_bad_rows
                        else message, path=input_path)

    outputs, tokens = predict_rows(predictor, spec, rows, batch_size, progress)
    labels = spec.labels if spec.has_labels else []
    with atomic_file(output_path) as handle:
        writer = _Writer(handle, fmt, labels, with_id=id_column is not None, multilabel=spec.is_multilabel,
                         thresholds=predictor.thresholds.get(spec.name))
        for row, values in zip(rows, outputs, strict=True):
            writer.write(row, values)
    return {"task": spec.name, "rows": len(rows) + len(bad), "predicted": len(rows), "skipped": len(bad),
            "skipped_lines": [line for line, _ in bad], "truncated": int(tokens.cut.sum()),
            "unknown_only": int(tokens.unknown_only.sum()), "text_columns": [c for c in columns if c],
            "columns_from": origin, "output": str(output_path), "format": fmt}


def _load_rows(path: Path, spec: Task, given: tuple[str, str | None] | None, progress: bool
               ) -> tuple[list[InputRow], list[tuple[int, str]], tuple[tuple[str, str | None], str], str | None]:
    """The input's usable rows, its bad rows, the text columns read (with their origin) and the id column.
    The parsed table is dropped on return: only the rows' texts and ids stay in memory."""
    table = read_table(path, progress=progress)
    _refuse_unreadable(table)
    columns, origin = _text_columns(table, spec, given)
    id_column = next((name for name in ID_COLUMNS if name in table.columns and name not in columns), None)
    rows, bad = _extract(table, columns, id_column)
    return rows, bad, (columns, origin), id_column


def predict_rows(predictor: _Predictor, spec: Task, rows: list[InputRow], batch_size: int,
                 progress: bool) -> tuple[np.ndarray, TokenCounts]:
    """Each row's logits, in the rows' order, and its `TokenCounts`; run longest first (a batch pads to its
    longest row, so rows of like length together waste least compute)."""
    texts_a = [r.text_a for r in rows]
    texts_b = [r.text_b or "" for r in rows] if spec.pair else None
    tokens = predictor.token_counts(texts_a, texts_b, progress=progress)
    order = np.argsort(-tokens.counts, kind="stable")
    outputs: np.ndarray | None = None  # one array, not one per row: 200k small arrays cost tens of MB
    bar = progress_bar(total=len(rows), desc="predict", unit="row", disable=bars_disabled(progress))
    try:
        for start in range(0, len(rows), batch_size):
            batch = order[start:start + batch_size]
            logits = predictor.logits(spec, [texts_a[i] for i in batch],
                                      [texts_b[i] for i in batch] if texts_b is not None else None)
            if outputs is None:
                outputs = np.empty((len(rows), *logits.shape[1:]), dtype=logits.dtype)
            outputs[batch] = logits
            bar.update(len(batch))
    finally:
        bar.close()
    assert outputs is not None  # rows is never empty here: an input without rows is refused earlier
    return outputs, tokens


@dataclass(frozen=True)
class TokenCounts:
    """Per row: its token count as the model reads it (cut at its length), whether it was cut, and whether its
    every token (special tokens aside) is the tokenizer's unknown token."""

    counts: np.ndarray
    cut: np.ndarray
    unknown_only: np.ndarray


# ------------------------------------------------------------------------------------------ the model


def _only_unknown(ids: list[int], special: list[int], unk: int, specials: set[int]) -> bool:
    """Whether every token of a row that is no special token is ``unk`` (and there is one). A tokenizer whose
    special-token mask does not match its ids (an old-style slow one) is read by ``specials``, its special ids:
    a diagnostic count must never stop a prediction."""
    if len(special) == len(ids):
        words = [token for token, is_special in zip(ids, special, strict=True) if not is_special]
    else:
        words = [token for token in ids if token not in specials]
    return bool(words) and all(token == unk for token in words)


class _Predictor:
    """A model folder or an ONNX export behind one interface: its tasks, and logits for texts."""

    def __init__(self, source: Path, tasks: dict[str, Task], tokenizer, max_length: int,
                 thresholds: Thresholds) -> None:
        self.source = source
        self.tasks = tasks
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.thresholds = thresholds  # multilabel tasks' decision thresholds, as saved (`evaluation.thresholds`)

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise UnknownTaskError(f"{self.source}: the model has no head for task '{name}'; it has: "
                                   f"{', '.join(self.tasks)}")
        return self.tasks[name]

    def encode(self, texts_a: list[str], texts_b: list[str] | None) -> dict[str, torch.Tensor]:
        """Model inputs for texts, tokenised and padded as in training (`encode_texts`)."""
        return encode_texts(self.tokenizer, texts_a, texts_b, self.max_length)

    def token_counts(self, texts_a: list[str], texts_b: list[str] | None, *, progress: bool = False) -> TokenCounts:
        """Each row's `TokenCounts` (its count as `encode` truncates it: the whole count, capped at the model's
        length), tokenising COUNT_CHUNK rows at a time and keeping only the counts, so memory stays flat however
        long the input."""
        rows = len(texts_a)
        counts, cut, unknown = np.zeros(rows, dtype=np.int64), np.zeros(rows, bool), np.zeros(rows, bool)
        unk = getattr(self.tokenizer, "unk_token_id", None)  # None: a vocabulary without an unknown token
        specials = set(self.tokenizer.all_special_ids) - {unk} if unk is not None else set()
        bar = progress_bar(total=rows, desc="count tokens", unit="row", disable=bars_disabled(progress),
                   delay=PROGRESS_DELAY_S)
        try:
            for start in range(0, rows, COUNT_CHUNK):
                stop = start + COUNT_CHUNK
                # Untruncated, to see which rows the model's length cuts (verbose off: no "longer than" warning).
                encoded = self.tokenizer(texts_a[start:stop], texts_b[start:stop] if texts_b is not None else None,
                                         return_attention_mask=False, return_token_type_ids=False,
                                         return_special_tokens_mask=unk is not None, verbose=False)
                lengths = np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)
                counts[start:stop] = np.minimum(lengths, self.max_length)
                cut[start:stop] = lengths > self.max_length
                if unk is not None:
                    unknown[start:stop] = [_only_unknown(ids, special, unk, specials) for ids, special in
                                           zip(encoded["input_ids"], encoded["special_tokens_mask"], strict=True)]
                bar.update(len(encoded["input_ids"]))
        finally:
            bar.close()
        return TokenCounts(counts, cut, unknown)

    def logits(self, task: Task, texts_a: list[str], texts_b: list[str] | None) -> np.ndarray:
        raise NotImplementedError


class _TorchPredictor(_Predictor):
    def __init__(self, source: Path) -> None:
        from multidistill.models import load_model
        from multidistill.models.backbone import load_tokenizer

        model = load_model(source)
        max_length = model.inference_length
        super().__init__(source, dict(model.tasks), load_tokenizer(str(source)), max_length,
                         saved_thresholds(source))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def logits(self, task: Task, texts_a: list[str], texts_b: list[str] | None) -> np.ndarray:
        encoded = {k: v.to(self.device) for k, v in self.encode(texts_a, texts_b).items()}
        out = self.model(task=task.name, input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                         token_type_ids=encoded.get("token_type_ids")).logits
        return out.float().cpu().numpy()


class _OnnxPredictor(_Predictor):
    def __init__(self, source: Path, precision: str) -> None:
        try:
            from multidistill.export.onnx import OnnxModel
        except ImportError as exc:
            raise ModelError(f"{source} is an ONNX export but ONNX support is unavailable ({exc}); install "
                             "onnxruntime or predict with the multidistill model folder") from exc
        self.model = OnnxModel.load(source, precision=precision)
        super().__init__(source, dict(self.model.tasks), self.model.tokenizer,
                         self.model.max_length or DEFAULT_MAX_LENGTH, self.model.thresholds)

    def logits(self, task: Task, texts_a: list[str], texts_b: list[str] | None) -> np.ndarray:
        encoded = {name: value.numpy() for name, value in self.encode(texts_a, texts_b).items()}
        out = self.model.logits(task.name, encoded["input_ids"], encoded["attention_mask"],
                                encoded.get("token_type_ids"))
        return np.asarray(out, dtype=np.float32)


def open_predictor(source: Path, precision: str) -> _Predictor:
    """What labels rows for ``source``: a saved model folder (PyTorch) or an ONNX export at ``precision``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    info_path = source / EXPORT_INFO_FILE
    if info_path.is_file():
        try:
            kind = json.loads(info_path.read_text(encoding="utf-8")).get("kind")
        except (ValueError, AttributeError) as exc:
            raise ModelError(f"{info_path}: not a valid export description ({exc})") from exc
        if kind == "onnx":
            return _OnnxPredictor(source, precision)
        if kind == "hf":
            raise ModelError(f"{source} is a Hugging Face export; load it with "
                             "AutoModelForSequenceClassification.from_pretrained, or predict with the "
                             "multidistill model folder it was exported from (or an ONNX export)")
        raise ModelError(f"{info_path}: unknown export kind {kind!r} (expected 'onnx')")
    if precision != "fp32":
        what = ("is a model folder, which runs in fp32" if source.is_dir() else
                "is a file; give the export's folder" if source.exists() else "does not exist")
        raise ConfigError(f"--precision {precision} needs an ONNX export (see multidistill.export.onnx); "
                          f"{source} {what}")
    return _TorchPredictor(source)


# -------------------------------------------------------------------------------------------- input


@dataclass
class Table:
    """The rows of an input file: a record (column -> value) per data line, or why the line is unusable."""

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, Any] | None, str | None]] = field(default_factory=list)


def read_table(path: Path, *, progress: bool = False) -> Table:
    """Read a CSV / TSV (with header) or JSONL file, by extension; malformed rows are kept with a reason."""
    fmt = _input_format(path)
    bar = progress_bar(desc="read", unit="row", disable=bars_disabled(progress), delay=PROGRESS_DELAY_S)
    try:
        table = _read_jsonl(path, bar) if fmt == "jsonl" else _read_delimited(path, fmt, bar)
    finally:
        bar.close()
    if not table.rows:
        raise DataError("no data rows to predict", path=path)
    return table


def _input_format(path: Path) -> str:
    """The input's format; refuses stdin, a missing path and anything but a regular file (a pipe, a device)."""
    if str(path) in STDIN_NAMES:
        raise ConfigError(f"--input {path}: reading stdin is not supported; save the texts to a file and give its "
                          "path")
    if not path.exists():
        raise DataError("input file not found", path=path)
    if path.is_dir():
        raise DataError("input file is a folder, not a file", path=path)
    if not path.is_file():  # a FIFO, /dev/stdin, <(...): no extension to go by, and reading consumes it
        raise DataError("is not a regular file (a pipe or device); save the texts to a file and give its path",
                        path=path)
    fmt = INPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        what = f"unknown input format '{path.suffix}'" if path.suffix else "no extension to tell the input format"
        raise DataError(f"{what}; use .csv, .tsv or .jsonl", path=path)
    return fmt


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    return decode_lines(path, "the input")


def _delimited_rows(path: Path, fmt: str) -> Iterator[tuple[int, list[str]]]:
    if fmt == "tsv":  # GLUE style: split on tabs, no quote processing
        for number, line in _decoded_lines(path):
            line = line.rstrip("\r\n")
            if line:
                yield number, line.split("\t")
        return
    yield from csv_records((line for _, line in _decoded_lines(path)), path)


def _read_delimited(path: Path, fmt: str, bar: tqdm) -> Table:
    rows = _delimited_rows(path, fmt)
    first = next(rows, None)
    if first is None:
        raise DataError("empty file: a header line naming the columns is required", path=path)
    names = [name.strip() for name in first[1]]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"the header names column(s) {', '.join(map(repr, duplicates))} more than once", path=path,
                        line=first[0])
    table = Table(path, names)
    sep = "tab" if fmt == "tsv" else "comma"
    for number, values in rows:
        bar.update()
        if len(values) != len(names):
            table.rows.append((number, None, f"has {len(values)} {sep}-separated fields but the header has "
                                             f"{len(names)}"))
        else:
            table.rows.append((number, dict(zip(names, values, strict=True)), None))
    return table


def _read_jsonl(path: Path, bar: tqdm) -> Table:
    table = Table(path, [])
    seen: dict[str, None] = {}
    for number, line in _decoded_lines(path):
        if not line.strip():
            continue
        bar.update()
        if not table.rows and line.lstrip().startswith("["):
            raise DataError("expected JSON Lines (one JSON object per line), not a JSON array", path=path,
                            line=number)
        try:
            obj = json_object_line(line)
        except (ValueError, RecursionError) as e:
            table.rows.append((number, None, f"invalid JSON ({e})"))
            continue
        if not isinstance(obj, dict):
            table.rows.append((number, None, f"expected a JSON object, got {type(obj).__name__}"))
            continue
        seen.update(dict.fromkeys(obj))
        table.rows.append((number, obj, None))
    table.columns = list(seen)
    return table


def _refuse_unreadable(table: Table) -> None:
    """A file none of whose rows parse is the wrong file or format: say why its lines failed, not that it lacks
    a text column (it has no columns at all when no JSON line parses)."""
    if any(record is not None for _, record, _ in table.rows):
        return
    first = table.rows[:SHOW_BAD_LINES]
    reasons = "; ".join(f"line {line}: {problem}" for line, _, problem in first)
    more = f"; and {len(table.rows) - len(first)} more" if len(table.rows) > len(first) else ""
    hint = ("each line must be one JSON object (JSON Lines); a pretty-printed JSON document or CSV text is not"
            if table.path.suffix.lower() in (".jsonl", ".json") else "check the delimiter and the header line")
    raise DataError(f"no row could be read ({reasons}{more}); {hint}", path=table.path)


def _text_columns(table: Table, task: Task,
                  given: tuple[str, str | None] | None) -> tuple[tuple[str, str | None], str]:
    """The text column(s) to read and where they came from: ``given``, ``task`` (the column map the task was
    trained with) or ``default`` (the usual names)."""
    have = ", ".join(repr(c) for c in table.columns) or "none"
    kind = "pair" if task.pair else "single-text"
    if given is not None:
        if not 1 <= len(given) <= 2:
            raise ConfigError(f"text_columns must be (text_a, text_b or None) or 'text_a,text_b', got {given!r}")
        first, second = given[0], (given[1] if len(given) == 2 else None)
        if task.pair and not second:
            raise ConfigError(f"task '{task.name}' takes text pairs: give two --text-columns, e.g. 'text_a,text_b'")
        if not task.pair and second:
            raise ConfigError(f"task '{task.name}' takes one text: give one --text-columns, not two")
        missing = [c for c in (first, second) if c and c not in table.columns]
        if missing:
            raise DataError(f"no column {', '.join(map(repr, missing))} (from --text-columns); the file has: {have}",
                            path=table.path)
        return (first, second), "given"
    ours = _task_columns(task)
    defaults = list(PAIR_TEXT_COLUMNS) if task.pair else [(name, None) for name in SINGLE_TEXT_COLUMNS]
    for candidates, origin in ((ours, "task"), (defaults, "default")):
        for first, second in candidates:
            if first in table.columns and (second is None or second in table.columns):
                return (first, second), origin
    wanted = " or ".join(f"{a!r}+{b!r}" if b else repr(a) for a, b in dict.fromkeys([*ours, *defaults]))
    raise DataError(f"no text column for {kind} task '{task.name}': expected {wanted} (or pass --text-columns); "
                    f"the file has: {have}", path=table.path)


def _task_columns(task: Task) -> list[tuple[str, str | None]]:
    """The named text column(s) of the task's data files, any split (a headerless file's indexes cannot name an
    input's column)."""
    found: dict[tuple[str, str | None], None] = {}
    for _, data_file in task.all_files():
        first, second = data_file.columns.text_a, data_file.columns.text_b
        if isinstance(first, str) and (isinstance(second, str) if task.pair else True):
            found[(first, second if task.pair else None)] = None
    return list(found)


@dataclass
class InputRow:
    """One text (or pair) to label: its line in the input (its index for in-memory texts) and its id."""

    line: int
    text_a: str
    text_b: str | None
    id: str | None


def _text(record: dict[str, Any], column: str) -> tuple[str | None, str | None]:
    """The text in ``column`` or why there is none."""
    value = record.get(column)
    if value is None:
        return None, f"missing text in '{column}'"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None, f"text in '{column}' is {_json_kind(value)}, not a string or a number"
    value = str(value)  # a JSON number is text as the same CSV cell would be: 123 -> "123"
    if not value.strip():
        return None, f"empty text in '{column}'"
    problem = None if value.isascii() else surrogate_problem(value)  # a cut emoji: the tokenizer would raise
    if problem is not None:
        return None, f"{problem} in '{column}'"
    return value, None


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    return {dict: "an object", list: "a list"}.get(type(value), f"a {type(value).__name__}")


def _extract(table: Table, columns: tuple[str, str | None],
             id_column: str | None) -> tuple[list[InputRow], list[tuple[int, str]]]:
    rows: list[InputRow] = []
    bad: list[tuple[int, str]] = []
    for line, record, problem in table.rows:
        if record is None:
            bad.append((line, problem or "unreadable row"))
            continue
        text_a, problem = _text(record, columns[0])
        text_b = None
        if problem is None and columns[1] is not None:
            text_b, problem = _text(record, columns[1])
        if problem is not None:
            bad.append((line, problem))
            continue
        example_id = None
        if id_column is not None and record.get(id_column) is not None:
            example_id = str(record[id_column])
        rows.append(InputRow(line, text_a or "", text_b, example_id))
    return rows, bad


def _bad_rows_message(bad: Sequence[tuple[int, str]], columns: tuple[str, str | None]) -> str:
    first = bad[:SHOW_BAD_LINES]
    lines = ", ".join(str(line) for line, _ in first) + (", ..." if len(bad) > len(first) else "")
    reasons = "; ".join(f"line {line}: {problem}" for line, problem in first)
    wanted = " and ".join(repr(c) for c in columns if c)
    return (f"{len(bad)} row(s) without usable text in {wanted} (lines {lines}): {reasons}; "
            "fix them or pass --skip-bad-rows to skip them")


# ------------------------------------------------------------------------------------------- output


def _output_format(path: Path, given: str | None) -> str:
    if given is not None:
        fmt = given.lower().lstrip(".")
        if fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {given!r}")
        return fmt
    fmt = OUTPUT_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        what = f"'{path.suffix}' is not a predictions format" if path.suffix else "it has no extension"
        raise ConfigError(f"--output {path}: {what}; name it .jsonl (JSON Lines) or .csv (CSV)")
    return fmt


def _check_paths(input_path: Path, output_path: Path, source: Path | None = None) -> None:
    """Refuse, before the model is loaded or anything read, an unusable input and an output that would replace
    something other than a predictions file."""
    if str(output_path) == "-":
        raise ConfigError("--output -: writing to stdout is not supported; give a file path")
    _input_format(input_path)
    if output_path.exists() and output_path.is_dir():
        raise ConfigError(f"--output {output_path} is a folder; give a file path")
    refuse_special_file(output_path)  # as atomic_file would after the whole run: a pipe, a device, a link
    if output_path.exists() and input_path.exists() and output_path.resolve() == input_path.resolve():
        raise ConfigError(f"--output {output_path} is the input file; choose another path")
    if source is not None and source.is_dir() and source.resolve() in output_path.resolve().parents:
        # Writing there could replace the weights, tokenizer or export.json the predictions are made with.
        raise ConfigError(f"--output {output_path} is inside the model folder {source}; write it elsewhere")
    refuse_output_over_a_run(output_path, "--output", suffix=None)  # another model's folder, a run's records


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - np.max(logits)
    exp = np.exp(shifted)
    return exp / exp.sum()


def prediction_record(logits: np.ndarray, labels: list[str], multilabel: bool = False,
                      thresholds: tuple[float, ...] | None = None) -> dict[str, Any]:
    """One row's prediction from its logits: with ``labels`` (classification) the most probable ``label``, its
    probability as ``score`` and every label's ``probabilities``; with ``multilabel``, ``labels``: every label whose
    own (sigmoid) probability is over its threshold (``thresholds``, as saved with the model; default 0.5), in the
    task's order, and each label's ``probabilities``; else (regression) the value as ``score`` (None when not
    finite)."""
    if labels and multilabel:
        logits = np.asarray(logits, dtype=np.float64)
        probs = 1.0 / (1.0 + np.exp(-logits))
        over = shift(logits, thresholds) > 0  # decided on logits, as evaluate decides
        return {"labels": [label for label, hit in zip(labels, over, strict=True) if hit],
                "probabilities": {label: float(p) for label, p in zip(labels, probs, strict=True)}}
    if labels:
        probs = _softmax(logits)
        best = int(np.argmax(probs))
        return {"label": labels[best], "score": float(probs[best]),
                "probabilities": {label: float(p) for label, p in zip(labels, probs, strict=True)}}
    score = float(np.asarray(logits).reshape(-1)[0])
    return {"score": score if math.isfinite(score) else None}


class _Writer:
    """One output record per predicted row, as JSON lines or CSV."""

    def __init__(self, handle, fmt: str, labels: list[str], *, with_id: bool, multilabel: bool = False,
                 thresholds: tuple[float, ...] | None = None) -> None:
        self.handle = handle
        self.fmt = fmt
        self.labels = labels
        self.with_id = with_id
        self.multilabel = multilabel
        self.thresholds = thresholds
        if fmt == "csv":
            self.csv = csv.writer(handle, lineterminator="\n")
            answer = ["labels"] if multilabel else [*(["label"] if labels else []), "score"]
            header = ["line", *(["id"] if with_id else []), *answer, *(f"p_{label}" for label in labels)]
            self.csv.writerow(header)

    def write(self, row: InputRow, logits: np.ndarray) -> None:
        record: dict[str, Any] = {"line": row.line}
        if self.with_id:
            record["id"] = row.id
        record |= prediction_record(logits, self.labels, self.multilabel, self.thresholds)
        if self.fmt == "jsonl":
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        probabilities = record.pop("probabilities", {})
        if self.multilabel:  # a JSON list, as a multilabel data cell may hold (a label may contain a comma)
            record["labels"] = json.dumps(record["labels"], ensure_ascii=False)
        self.csv.writerow([*record.values(), *(probabilities[label] for label in self.labels)])
