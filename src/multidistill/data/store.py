"""The example store: one memory-mapped `datasets.Dataset` per task and split, and cached tokenised views of it.

Both live under the cache folder as Arrow files, streamed to disk batch by batch (so memory stays flat whatever
the data's size), written into a temporary folder that is renamed into place, and read back memory-mapped:

    <cache_dir>/examples/<task>/<split>/<data key>/             the validated rows (`readers.write_split_cache`)
    <cache_dir>/tokenized/<task>/<split>/<view key>/            view.arrow + dataset_info.json

The data key hashes the source file, the task spec and the subset; the view key adds the reader's version, the
tokenizer (with the settings its serialisation leaves out: truncation and padding side, input names) and the max
length. Each folder records the size of its Arrow file: one found shorter or longer (a full disk, a cut copy) is
rebuilt, and temporary folders that killed writers left beside it are removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from multidistill.data.dev_test import carve_payload, carved_rows, missing_test_hint
from multidistill.data.domains import DomainSelection, domain_codes, read_domains
from multidistill.data.readers import split_batches, write_split_cache
from multidistill.data.rows import ArrowRows
from multidistill.data.split_cache import CACHE_VERSION, open_split_cache, read_cached_examples, write_batches
from multidistill.data.tasks import Task, fingerprint_spec
from multidistill.errors import DataError
from multidistill.utils.atomic import atomic_dir, remove_stale_temps
from multidistill.utils.hashing import hash_json, hash_path, hash_tokenizer
from multidistill.utils.interrupt import raise_if_interrupted
from multidistill.utils.paths import inside, resolve_path

VIEW_FILE = "view.arrow"
VIEW_META = "view.json"
VIEW_LAYOUT = 2  # 1 was a save_to_disk folder; part of the view key, so old views are never misread
TOKENIZE_ROWS = 1000  # per tokenizer call: its Encoding objects cost ~3 KB a row while they live
# The compact types `datasets.map` gives these tokenizer outputs; any other output keeps its inferred type.
TOKEN_TYPES = {"input_ids": pa.int32(), "attention_mask": pa.int8(), "token_type_ids": pa.int8(),
               "special_tokens_mask": pa.int8()}


class ExampleStore:
    """Reads task splits once (into the Arrow cache) and hands out raw or tokenised datasets, memory-mapped."""

    def __init__(self, tasks: list[Task], data_root: str | Path, cache_dir: str | Path,
                 max_examples: dict[str, int | None] | None = None, seed: int = 0,
                 selections: dict[str, DomainSelection] | None = None) -> None:
        self.tasks = {task.name: task for task in tasks}
        self.data_root = Path(resolve_path(str(data_root)))
        self.cache_dir = Path(cache_dir)
        self.max_examples = max_examples or {}
        self.seed = seed
        # Domain selections that change rows; each is checked against its task's spec now, its names later
        # (a domain column's names are known once read).
        self.selections = {name: s for name, s in (selections or {}).items() if s.active}
        for name, selection in self.selections.items():
            selection.check_task(self.tasks[name])
        self._examples: dict[tuple[str, str], datasets.Dataset] = {}
        self._fingerprints: dict[tuple[str, str], str] = {}
        self._payloads: dict[tuple[str, str], dict] = {}  # `_rows_payload`: its files hashed once per store
        self._domains_read: set[str] = set()

    def _limit(self, task: str, split: str) -> int | None:
        # Caps apply to training data only; evaluation always uses the full split.
        return self.max_examples.get(task) if split == "train" else None

    def _selection(self, task: str, split: str) -> DomainSelection | None:
        selection = self.selections.get(task)
        return selection if selection is not None and selection.applies_to(split) else None

    def domains(self, task: str) -> tuple[str, ...]:
        """`Task.domains` of ``task``: from its spec, or (a domain column without declared names) the sorted
        non-empty values of every split, read once; the store's task is then updated with them, so `tasks`
        (and the models built from it) carry them. A split cached whole is read from its cache; a capped or
        selected one from its source (its cache lacks rows)."""
        spec = self.tasks[task]
        if not spec.has_domains or spec.domains or task in self._domains_read:
            return spec.domains
        batches = {split: read_cached_examples(self._examples_folder(task, split))
                   if self._limit(task, split) is None and self._selection(task, split) is None
                   else split_batches(spec, split, self.data_root) for split in spec.splits}
        found = read_domains(spec, batches)
        self.tasks[task] = spec.model_copy(update={"domains": found})
        self._domains_read.add(task)
        return found

    def _rows_of(self, task: str, split: str) -> str:
        """Where a split's rows come from, for errors about one row: the task, the split and, from a domain column,
        its file (with one file set per domain a row's domain is its file's, so no row can disagree)."""
        found = self.tasks[task].split_files(split)
        source = found[0][1] if len(found) == 1 and found[0][0] is None else None
        return f"task '{task}' split '{split}'" + (f" ({source.path})" if source is not None else "")

    def _examples_folder(self, task: str, split: str) -> Path:
        """The split's validated rows in the Arrow cache (the run's domain selection applied), written now if
        missing."""
        selection = self._selection(task, split)
        select = None
        if selection is not None:
            domains = self.domains(task)
            selection.check_names(self.tasks[task])
            select = selection.row_selector(domains, split, self.seed, self._rows_of(task, split))
        carve = carved_rows(self.tasks[task], split)
        if carve is not None:
            select = carve if select is None else _both(select, carve)
        folder = inside(self.cache_dir, "examples", task, split, self.data_fingerprint(task, split)[:16])
        return write_split_cache(self.tasks[task], split, folder, self.data_root,
                                 max_examples=self._limit(task, split), seed=self.seed, select=select)

    def examples(self, task: str, split: str) -> datasets.Dataset:
        """Columns id, text_a, text_b, label, domain (validated by the reader), memory-mapped."""
        key = (task, split)
        if key not in self._examples:
            self._examples[key] = open_split_cache(self._examples_folder(task, split), self.tasks[task])
        return self._examples[key]

    def has_split(self, task: str, split: str) -> bool:
        return split in self.tasks[task].splits

    def labelled_rows(self, task: str, split: str) -> int:
        """How many rows of the split carry a gold label (unlabelled ones hold -1, or NaN for a score)."""
        label = self.examples(task, split).data.column("label")
        has_label = pc.invert(pc.is_nan(label)) if pa.types.is_floating(label.type) else pc.greater_equal(label, 0)
        return int(pc.sum(has_label).as_py() or 0)

    def require_labels(self, task: str, split: str, why: str) -> None:
        """Refuse a split without a single labelled row (``why`` says what needs them), naming task and split."""
        if self.labelled_rows(task, split):
            return
        spec = self.tasks[task]
        unmapped = any(f.columns.label is None for _, f in spec.split_files(split))
        cause = ("its file maps no label column (columns.label)" if unmapped
                 else "every row's label is missing (-1, or NaN for a score)")
        files = [Path(f.path) for _, f in spec.split_files(split)]
        path = (files[0] if files[0].is_absolute() else self.data_root / files[0]) if len(files) == 1 else None
        raise DataError(f"task '{task}' split '{split}' has no labelled rows: {cause}, but {why}; map the label "
                        "column, or give a split with labels", path=path)

    def validate(self, splits: list[str] | tuple[str, ...]) -> None:
        """Read every task's ``splits`` now, so bad data stops a run before anything is written (a text task's
        training split only: it is never evaluated); afterwards `tasks` hold every task's `Task.domains`."""
        for task in self.tasks:
            for split in splits:
                if split != "train" and not self.tasks[task].has_head:
                    continue
                if not self.has_split(task, split):
                    raise DataError(f"task '{task}' has no '{split}' split; add files.{split} to its spec"
                                    f"{missing_test_hint(self.tasks[task], split)}")
                self._examples_folder(task, split)  # validated into the cache, not mapped until needed
            self.domains(task)  # a domain column's names are known once its splits are read

    def data_fingerprint(self, task: str, split: str) -> str:
        """Changes whenever the source file, the task spec or the subset changes (hashed once per store)."""
        key = (task, split)
        if key not in self._fingerprints:
            payload = {"task": fingerprint_spec(self.tasks[task]), **self._rows_payload(task, split)}
            self._fingerprints[key] = hash_json(payload)
        return self._fingerprints[key]

    def data_parts(self, task: str, split: str) -> dict:
        """What `data_fingerprint` hashes, part by part: the task spec's and the files' hashes, the row cap and the
        seed that drew the rows, and the rest (domain selection, a carved split). A signal store records them so
        that a run refusing it can say which part differs."""
        payload = self._rows_payload(task, split)
        rest = {key: value for key, value in payload.items() if key not in ("split", "content", "limit", "seed")}
        return {"spec": hash_json(fingerprint_spec(self.tasks[task])), "content": payload["content"],
                "limit": payload["limit"], "seed": payload["seed"], "rest": hash_json(rest) if rest else None}

    def rows_fingerprint(self, task: str, split: str) -> str:
        """The data of a split without its task spec: its files' bytes, the subset and the domain selection. A
        recipe stage records it (its settings hold the spec, with paths inside the run folder made portable), so
        an edited file is seen while a moved run folder is not taken for one."""
        return hash_json(self._rows_payload(task, split))

    def _rows_payload(self, task: str, split: str) -> dict:
        key = (task, split)
        if key not in self._payloads:
            self._payloads[key] = self._make_rows_payload(task, split)
        return self._payloads[key]

    def _make_rows_payload(self, task: str, split: str) -> dict:
        limit = self._limit(task, split)
        selection = self._selection(task, split)
        seeded = limit is not None or (selection is not None and split == "train"
                                       and bool(selection.fraction or selection.holdout))
        # The seed only picks a capped subset, a domain's fraction or its folds: otherwise any seed is alike.
        payload = {"split": split, "content": self._content_hash(self.tasks[task], split), "limit": limit,
                   "seed": self.seed if seeded else None}
        if selection is not None:  # only then: the fingerprints of unselected data stay as they were
            payload["domains"] = selection.payload(split)
        carve = carve_payload(self.tasks[task], split)
        if carve is not None:  # likewise
            payload["carved"] = carve
        return payload

    def source_fingerprint(self, task: str, split: str) -> str | None:
        """The hash of the bytes of ``task``'s ``split`` file(s), whatever their path or the task spec: two
        models whose recorded data roots hold the same dev file agree on it (and on a part carved from it:
        `Task.test_from_dev`). None when a file is missing."""
        spec = self.tasks[task]
        sources = [] if split not in spec.files and spec.from_tasks else spec.split_files(split)
        for _, source in sources:
            path = Path(source.path)
            if not (path if path.is_absolute() else self.data_root / path).exists():
                return None
        carve = carve_payload(spec, split)
        content = self._content_hash(spec, split)
        return content if carve is None else hash_json([content, carve])

    def _content_hash(self, spec: Task, split: str) -> str:
        """The source file's hash (its path if missing); a from_tasks corpus hashes each source's training file."""
        if split not in spec.files and spec.from_tasks:
            return hash_json([self._content_hash(source, "train") for source in spec.sources])
        hashes = []
        for _, source in spec.split_files(split):
            path = Path(source.path)
            if not path.is_absolute():
                path = self.data_root / path
            hashes.append(hash_path(path) if path.exists() else source.path)
        if not hashes:
            raise DataError(f"task '{spec.name}' has no file for split '{split}' (it has: {', '.join(spec.splits)})")
        # One file (every task without domain_files) hashes as before; a domain per file, as the list.
        return hashes[0] if not spec.domain_files else hash_json(hashes)

    def _view(self, task: str, split: str, tokenizer, max_length: int) -> Path:
        """The folder of the tokenised view, built first if the cache does not hold it yet."""
        domains = self.domains(task)
        payload = {"data": self.data_fingerprint(task, split), "tokenizer": hash_tokenizer(tokenizer),
                   "max_length": max_length, "layout": VIEW_LAYOUT, "reader": CACHE_VERSION,
                   # Not in the tokenizer's serialisation, yet they change the ids (truncation_side) or columns.
                   "tokenizer_settings": [getattr(tokenizer, name, None) for name in
                                          ("truncation_side", "padding_side", "model_input_names")]}
        if domains:  # the view holds domain ids: indices into these names
            payload["domains"] = list(domains)
        key = hash_json(payload)
        folder = inside(self.cache_dir, "tokenized", task, split, key[:16])
        if not _view_complete(folder):
            # Streamed from the raw Arrow file (read, not mapped), so building a view never maps the raw rows.
            raw = self._examples_folder(task, split)
            remove_stale_temps(folder.parent)  # killed writers of any key: a later run may never use theirs
            with atomic_dir(folder) as tmp:
                rows = write_batches(tmp / VIEW_FILE, tokenize_batches(
                    read_cached_examples(raw), tokenizer, max_length, pair=_pairing(self.tasks[task]),
                    domains=domains or None, what=self._rows_of(task, split)))
                with pa.OSFile(str(tmp / VIEW_FILE), "rb") as written:
                    schema = pa.ipc.open_stream(written).schema
                datasets.DatasetInfo(features=datasets.Features.from_arrow_schema(schema)).write_to_directory(str(tmp))
                (tmp / VIEW_META).write_text(json.dumps({"rows": rows, "bytes": (tmp / VIEW_FILE).stat().st_size}))
        return folder

    def tokenized(self, task: str, split: str, tokenizer, max_length: int) -> datasets.Dataset:
        """A memory-mapped tokenised view (id, label[, domain_id], input_ids, attention_mask[, token_type_ids])."""
        folder = self._view(task, split, tokenizer, max_length)
        try:
            return datasets.Dataset.from_file(str(folder / VIEW_FILE),
                                              info=datasets.DatasetInfo.from_directory(str(folder)))
        except Exception as exc:  # pyarrow/datasets raise OSError, ArrowInvalid, JSON errors... for damaged files
            raise_if_interrupted(exc)
            raise _damaged_view(folder, exc) from exc

    def tokenized_rows(self, task: str, split: str, tokenizer, max_length: int) -> ArrowRows:
        """The same view for random row access by positional reads (training): memory stays flat however
        large the view is, where touched pages of a memory map would count in the process's RSS."""
        folder = self._view(task, split, tokenizer, max_length)
        try:
            return ArrowRows([folder / VIEW_FILE])
        except Exception as exc:
            raise_if_interrupted(exc)
            raise _damaged_view(folder, exc) from exc


def _both(first, second):
    """The rows two ``select`` callables both keep (None from one: all rows)."""
    def select(path: Path):
        a, b = first(path), second(path)
        return b if a is None else a if b is None else np.intersect1d(a, b)

    return select


def _view_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished view whose file is the size it was written with."""
    try:
        meta = json.loads((folder / VIEW_META).read_text())
        return isinstance(meta, dict) and meta.get("bytes") == (folder / VIEW_FILE).stat().st_size
    except (OSError, ValueError):
        return False


def _damaged_view(folder: Path, exc: Exception) -> DataError:
    return DataError(f"the tokenised view {folder} is damaged ({type(exc).__name__}: {exc}); delete the "
                     "folder to rebuild it")


def _pairing(task: Task) -> bool | None:
    """How a task's rows are tokenised: a text task row by row (a `keep_pairs` corpus mixes pairs and single
    texts; every other text task has no second text), other tasks as the spec says."""
    return None if task.type == "text" else task.pair


def _encode(tokenizer, texts_a: list[str], texts_b: list[str] | None, pair: bool | None, max_length: int) -> dict:
    """The tokenizer's output for these rows; ``pair`` None: the rows with a non-empty second text as pairs,
    the others alone (in the rows' order)."""
    if pair is not None:
        return dict(tokenizer(texts_a, texts_b if pair else None, truncation=True, max_length=max_length))
    paired = [i for i, text in enumerate(texts_b) if text]
    if not paired:
        return dict(tokenizer(texts_a, truncation=True, max_length=max_length))
    alone = [i for i, text in enumerate(texts_b) if not text]
    parts = [(paired, tokenizer([texts_a[i] for i in paired], [texts_b[i] for i in paired], truncation=True,
                                max_length=max_length))]
    if alone:
        parts.append((alone, tokenizer([texts_a[i] for i in alone], truncation=True, max_length=max_length)))
    merged: dict[str, list] = {name: [None] * len(texts_a) for name in parts[0][1]}
    for rows, encoded in parts:
        for name in merged:
            for row, value in zip(rows, encoded[name], strict=True):
                merged[name][row] = value
    return merged


def tokenize_batches(batches: Iterable[pa.RecordBatch], tokenizer, max_length: int, *,
                     pair: bool | None, domains: tuple[str, ...] | None = None,
                     what: str = "the examples") -> Iterator[pa.RecordBatch]:
    """Tokenise record batches of examples without padding (batches are padded to their own longest row).

    Each input batch gives one output batch (few, large batches: opening a mapped file reads every batch's
    header) with the input's ``id`` and ``label``, with ``domains`` (a task with domains) each row's
    ``domain_id`` (int32 index into them; a row of another domain raises `DataError` naming ``what``), and every
    tokenizer output, in the compact integer types of `TOKEN_TYPES`; the tokenizer sees ``TOKENIZE_ROWS`` rows
    at a time. ``pair`` None (text tasks): each row with a second text is a pair, the others single texts.
    """
    for batch in batches:
        parts = []
        for start in range(0, batch.num_rows, TOKENIZE_ROWS):
            part = batch.slice(start, TOKENIZE_ROWS)
            encoded = _encode(tokenizer, part.column("text_a").to_pylist(),
                              part.column("text_b").to_pylist() if pair is not False else None, pair, max_length)
            columns = {"id": part.column("id"), "label": part.column("label")}
            if domains is not None:
                columns["domain_id"] = pa.array(domain_codes(part.column("domain"), part.column("id"), domains, what))
            for name, values in encoded.items():
                kind = TOKEN_TYPES.get(name)
                columns[name] = pa.array(values, type=pa.list_(kind) if kind is not None else None)
            parts.append(pa.RecordBatch.from_pydict(columns))
        if parts:
            yield pa.concat_batches([p if p.schema == parts[0].schema else p.cast(parts[0].schema) for p in parts])


def tokenize(examples: datasets.Dataset, tokenizer, max_length: int, *, pair: bool,
             domains: tuple[str, ...] | None = None) -> datasets.Dataset:
    """An in-memory tokenised view of ``examples`` (the store's views are the same, on disk and mapped)."""
    batches = (table for piece in examples.with_format("arrow").iter(batch_size=TOKENIZE_ROWS)
               for table in piece.to_batches())
    table = pa.Table.from_batches(list(tokenize_batches(batches, tokenizer, max_length, pair=pair,
                                                        domains=domains)))
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=datasets.Features.from_arrow_schema(
        table.schema)))
