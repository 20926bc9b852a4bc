"""Unlabelled text corpora built from other tasks: the texts of their training splits, labels dropped, deduplicated.

A text task with ``from_tasks: [sst2, mrpc]`` reads each source's training split through the ordinary readers
(so a bad source file fails with its own file, line and field), takes ``text_a`` and, for a pair task, ``text_b``
as separate texts, and keeps the first occurrence of each exact text, in the order the sources are listed. Ids
name where a text was first seen, ``<task>:<id>`` (``:a`` / ``:b`` for the two texts of a pair), so they stay the
same whatever the cap, the seed or the tokenizer, and reordering ``from_tasks`` only changes which copy is kept.

With ``keep_pairs`` a pair task's row stays one example (``text_a``, ``text_b``; id ``<task>:<id>``, deduplicated
as a pair), which the store tokenises as a pair, as the task's own rows: a student distilled on such a corpus sees
the cross-text attention its pair tasks will need (in a probe of the issue 12 benchmark, in-domain retention rose
from 90.4% to 99.9%: docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from multidistill.data.convert import features_for
from multidistill.data.readers import split_batches
from multidistill.data.tasks import Task
from multidistill.errors import DataError


def corpus_batches(task: Task, data_root: str | Path | None = None) -> Iterator[pa.RecordBatch]:
    """The deduplicated texts of ``task.sources``' training splits as record batches of ``task``'s schema
    (label -1, text_b empty, the source row's domain kept)."""
    if len(task.sources) != len(task.from_tasks):
        raise DataError(f"task '{task.name}': from_tasks {task.from_tasks} are not resolved; look the task up with "
                        "multidistill.data.tasks.get_task")
    schema = features_for(task).arrow_schema
    # Exact dedup needs every text seen so far: a set of str (about 100 bytes a text, ~100 MB at a million).
    seen: set[str | tuple[str, str]] = set()
    for source in task.sources:
        if source.pair and task.keep_pairs:
            yield from _pair_batches(source, data_root, schema, seen)
            continue
        fields = ("text_a", "text_b") if source.pair else ("text_a",)
        for batch in split_batches(source, "train", data_root):
            ids = batch.column("id").to_pylist()
            domains = batch.column("domain").to_pylist()
            out: dict[str, list] = {"id": [], "text_a": [], "domain": []}
            # Pair texts interleave (a, b of row 1, then of row 2): the corpus follows the source's row order.
            texts = {field: batch.column(field).to_pylist() for field in fields}
            for row, example_id in enumerate(ids):
                for field in fields:
                    text = texts[field][row]
                    if text in seen:
                        continue
                    seen.add(text)
                    suffix = f":{field[-1]}" if source.pair else ""
                    out["id"].append(f"{source.name}:{example_id}{suffix}")
                    out["text_a"].append(text)
                    out["domain"].append(domains[row])
            n = len(out["id"])
            if n:
                yield pa.RecordBatch.from_pydict({**out, "text_b": [""] * n, "label": [-1] * n}, schema=schema)


def _pair_batches(source: Task, data_root, schema: pa.Schema, seen: set) -> Iterator[pa.RecordBatch]:
    """A pair task's training rows as one example each (text_a, text_b), the first occurrence of each pair kept."""
    for batch in split_batches(source, "train", data_root):
        out: dict[str, list] = {"id": [], "text_a": [], "text_b": [], "domain": []}
        columns = [batch.column(name).to_pylist() for name in ("id", "text_a", "text_b", "domain")]
        for example_id, text_a, text_b, domain in zip(*columns, strict=True):
            if (text_a, text_b) in seen:
                continue
            seen.add((text_a, text_b))
            for name, value in zip(out, (f"{source.name}:{example_id}", text_a, text_b, domain), strict=True):
                out[name].append(value)
        if out["id"]:
            yield pa.RecordBatch.from_pydict({**out, "label": [-1] * len(out["id"])}, schema=schema)
