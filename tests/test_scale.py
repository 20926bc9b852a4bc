"""Flat memory at scale: raw examples and tokenised views are memory-mapped Arrow files, written atomically and
reused; duplicate ids are found in bounded memory; batch plans are compact. benchmarks/scale.py measures the
whole run at 10k-1M rows (docs/benchmarks.md); the traced-memory test here is a small sanity check of the same."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from datasets.table import MemoryMappedTable
from transformers import AutoTokenizer

from multidistill.data import convert, split_cache
from multidistill.data.readers import read_split
from multidistill.data.sampler import MultiTaskBatchPlanner
from multidistill.data.store import ExampleStore
from multidistill.data.tasks import Columns, DataFile, Task
from multidistill.errors import DataError
from multidistill.utils.atomic import SLOW_WRITES_ENV
from tests.conftest import REPO, write_tiny_tasks


def _task(path: str, *, with_id: bool = False) -> Task:
    columns = Columns(text_a="text", label="label", id="id" if with_id else None)
    return Task(name="t", type="classification", labels=["0", "1"],
                files={"train": DataFile(path=path, columns=columns)})


def _write_rows(path: Path, n: int, *, ids: list[str] | None = None, bad_label_at: int | None = None,
               filler: str = "") -> None:
    header = "id\ttext\tlabel\n" if ids is not None else "text\tlabel\n"
    rows = []
    for i in range(n):
        label = "7" if i == bad_label_at else str(i % 2)
        rows.append((f"{ids[i]}\t" if ids is not None else "") + f"row number {i}{filler}\t{label}\n")
    path.write_text(header + "".join(rows))


@pytest.fixture
def store(tmp_path):
    specs = [Task.model_validate(s) for s in write_tiny_tasks(tmp_path / "data")]
    return ExampleStore(specs, tmp_path / "data", tmp_path / "cache", {"toy_sent": 10})


def test_raw_examples_are_memory_mapped_from_the_cache(store, tmp_path):
    train = store.examples("toy_pair", "train")
    assert isinstance(train.data, MemoryMappedTable)
    (arrow,) = [Path(f["filename"]) for f in train.cache_files]
    assert arrow.is_relative_to(tmp_path / "cache" / "examples" / "toy_pair" / "train")
    assert train.column_names == ["id", "text_a", "text_b", "label", "domain"] and len(train) == 96
    # The in-memory reader gives exactly the same rows (the capped subset included).
    assert train[:] == read_split(store.tasks["toy_pair"], "train", tmp_path / "data")[:]
    capped = read_split(store.tasks["toy_sent"], "train", tmp_path / "data", max_examples=10, seed=0)
    assert store.examples("toy_sent", "train")[:] == capped[:]


def test_tokenised_views_are_memory_mapped(store, tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    view = store.tokenized("toy_pair", "train", tokenizer, 32)
    assert isinstance(view.data, MemoryMappedTable)
    assert all(Path(f["filename"]).is_relative_to(tmp_path / "cache" / "tokenized") for f in view.cache_files)
    # The compact types datasets.map gives tokenizer outputs, and the same ids as tokenising in memory.
    assert view.features["input_ids"].feature.dtype == "int32"
    assert view.features["attention_mask"].feature.dtype == "int8"
    row = view[0]
    examples = store.examples("toy_pair", "train")
    expected = tokenizer(examples[0]["text_a"], examples[0]["text_b"], truncation=True, max_length=32)
    assert row["input_ids"] == expected["input_ids"] and row["id"] == examples[0]["id"]


def test_the_raw_cache_is_reused_without_reading_the_source(store, tmp_path, monkeypatch):
    first = store.examples("toy_sent", "dev")
    fresh = ExampleStore(list(store.tasks.values()), tmp_path / "data", tmp_path / "cache")

    def no_second_read(*args, **kwargs):
        raise AssertionError("the source was read again")

    monkeypatch.setattr(convert.Converter, "chunks", no_second_read)
    again = fresh.examples("toy_sent", "dev")
    assert again.cache_files == first.cache_files and again[:] == first[:]
    # A changed file gets a new cache entry (its fingerprint changed), so it is read.
    path = tmp_path / "data" / "toy_sent" / "dev.tsv"
    path.write_text(path.read_text() + "a fine new row\t1\n")
    with pytest.raises(AssertionError, match="read again"):
        ExampleStore(list(store.tasks.values()), tmp_path / "data", tmp_path / "cache").examples("toy_sent", "dev")


def test_bad_data_leaves_no_cache_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(convert, "CHUNK_ROWS", 8)  # the bad row comes after several written batches
    _write_rows(tmp_path / "a.tsv", 50, bad_label_at=40)
    folder = tmp_path / "cache" / "split"
    with pytest.raises(DataError, match="line 42"):
        read_split(_task("a.tsv"), "train", tmp_path, cache_dir=folder)
    assert not folder.parent.exists() or list(folder.parent.iterdir()) == []


def test_a_killed_cache_write_leaves_no_half_cache(tmp_path):
    """SIGKILL inside the write window (after the rows are written, before the rename): no cache appears."""
    _write_rows(tmp_path / "a.tsv", 30)
    folder = tmp_path / "cache" / "split"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "src")!r})
        from multidistill.data.readers import write_split_cache
        from multidistill.data.tasks import Columns, DataFile, Task
        task = Task(name="t", type="classification", labels=["0", "1"],
                    files={{"train": DataFile(path="a.tsv", columns=Columns(text_a="text", label="label"))}})
        print("writing", flush=True)
        write_split_cache(task, "train", {str(folder)!r}, {str(tmp_path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, SLOW_WRITES_ENV: "30"})
    try:
        assert proc.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 20
        while not any(p.name.startswith(".split.tmp-") and (p / split_cache.EXAMPLES_META).is_file()
                      for p in folder.parent.glob(".*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert time.monotonic() < deadline, "the writer never reached its write window"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not folder.exists()  # only the dot-named temporary folder of the dead writer
    assert [p.name.startswith(".split.tmp-") for p in folder.parent.iterdir()] == [True]
    # The next writer builds the cache, and the dead writer's leftover is cleaned up beside it.
    ds = read_split(_task("a.tsv"), "train", tmp_path, cache_dir=folder)
    assert len(ds) == 30 and [p.name for p in folder.parent.iterdir()] == ["split"]


@pytest.mark.parametrize("cached", [False, True])
def test_subsets_are_the_seeded_rows_of_the_whole_split(tmp_path, cached):
    _write_rows(tmp_path / "a.tsv", 2500)
    keep = np.sort(np.random.default_rng(5).choice(2500, size=300, replace=False))  # what read_split always kept
    kw = {"cache_dir": tmp_path / "cache"} if cached else {}
    ds = read_split(_task("a.tsv"), "train", tmp_path, max_examples=300, seed=5, **kw)
    assert ds["id"] == [str(i + 2) for i in keep]  # ids are line numbers (header = line 1)
    assert ds["text_a"] == [f"row number {i}" for i in keep]


def test_subsets_span_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(convert, "CHUNK_ROWS", 7)
    _write_rows(tmp_path / "a.tsv", 100)
    keep = np.sort(np.random.default_rng(1).choice(100, size=30, replace=False))
    ds = read_split(_task("a.tsv"), "train", tmp_path, max_examples=30, seed=1, cache_dir=tmp_path / "cache")
    assert ds["id"] == [str(i + 2) for i in keep]
    assert len(list(split_cache.read_batches(ds.cache_files[0]["filename"]))) > 1


def test_duplicate_ids_across_chunks_name_both_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(convert, "CHUNK_ROWS", 4)
    ids = [f"x{i}" for i in range(20)]
    ids[13] = "x2"
    _write_rows(tmp_path / "a.tsv", 20, ids=ids)
    err = pytest.raises(DataError, read_split, _task("a.tsv", with_id=True), "train", tmp_path).value
    assert err.line == 15 and "duplicate id 'x2' (first seen at line 4)" in str(err)


def test_the_first_problem_in_file_order_is_reported(tmp_path, monkeypatch):
    """A duplicate id before a bad label is the error, as before ids were checked a chunk at a time."""
    monkeypatch.setattr(convert, "CHUNK_ROWS", 100)
    ids = [f"x{i}" for i in range(20)]
    ids[9] = "x3"
    _write_rows(tmp_path / "a.tsv", 20, ids=ids, bad_label_at=12)
    err = pytest.raises(DataError, read_split, _task("a.tsv", with_id=True), "train", tmp_path).value
    assert err.line == 11 and "duplicate id 'x3'" in str(err)
    _write_rows(tmp_path / "a.tsv", 20, ids=ids, bad_label_at=5)
    err = pytest.raises(DataError, read_split, _task("a.tsv", with_id=True), "train", tmp_path).value
    assert err.line == 7 and "label '7'" in str(err)
    _write_rows(tmp_path / "a.tsv", 20, ids=ids, bad_label_at=9)  # the same row: its id is checked first
    err = pytest.raises(DataError, read_split, _task("a.tsv", with_id=True), "train", tmp_path).value
    assert err.line == 11 and "duplicate id 'x3'" in str(err)
    # A problem the reader itself finds (here a stray tab on line 14) comes after the duplicate too.
    lines = (tmp_path / "a.tsv").read_text().splitlines(keepends=True)
    lines[13] = "x99\tsome\ttext\t1\n"
    (tmp_path / "a.tsv").write_text("".join(lines).replace("\t7\n", "\t1\n"))
    err = pytest.raises(DataError, read_split, _task("a.tsv", with_id=True), "train", tmp_path).value
    assert err.line == 11 and "duplicate id 'x3'" in str(err)
    lines[10] = "x9\trow number 9\t1\n"  # no duplicate any more: the stray tab is the first problem
    (tmp_path / "a.tsv").write_text("".join(lines).replace("\t7\n", "\t1\n"))
    err = pytest.raises(DataError, read_split, _task("a.tsv", with_id=True), "train", tmp_path).value
    assert err.line == 14 and "tab-separated fields" in str(err)


def test_hash_collisions_never_make_false_duplicates(tmp_path, monkeypatch):
    monkeypatch.setattr(convert, "CHUNK_ROWS", 3)
    monkeypatch.setattr(convert, "hash", lambda value: 42, raising=False)  # every id collides
    ids = [f"id{i}" for i in range(10)]
    _write_rows(tmp_path / "a.tsv", 10, ids=ids)
    assert read_split(_task("a.tsv", with_id=True), "train", tmp_path)["id"] == ids
    ids[8] = "id1"
    _write_rows(tmp_path / "a.tsv", 10, ids=ids)
    err = pytest.raises(DataError, read_split, _task("a.tsv", with_id=True), "train", tmp_path).value
    assert err.line == 10 and "first seen at line 3" in str(err)


def test_an_epoch_plan_is_about_four_bytes_a_row():
    planner = MultiTaskBatchPlanner({"big": 1_000_000, "small": 1000}, 32, "round_robin", seed=0)
    plan = planner.epoch(0)
    held = sum(a.nbytes for a in plan._rows) + plan._task_of.nbytes + plan._start.nbytes
    assert held < 4.5 * 2 * 1_000_000  # round robin: the small task cycles through as many rows as the big one
    batch = plan[len(plan) - 1]
    assert batch.indices.dtype == np.int64 and len(batch.indices) <= 32
    share = plan[1::2][:10]
    assert len(share) == 10 and [b.task for b in share] == ["small"] * 10


def _traced_peak(folder: Path, rows: int, tokenizer) -> int:
    """Peak bytes of Python allocations while a split of ``rows`` rows is read, validated, tokenised, sampled."""
    folder.mkdir()
    _write_rows(folder / "a.tsv", rows, filler=" and the film was fine and the plot was very good" * 5)
    rng = np.random.default_rng(0)
    tracemalloc.start()
    try:
        store = ExampleStore([_task("a.tsv")], folder, folder / "cache")
        store.validate(["train"])
        view = store.tokenized("t", "train", tokenizer, 32)
        for _ in range(20):
            view[rng.integers(0, len(view), 32)]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_python_memory_does_not_grow_with_the_data(tmp_path, tiny_model_dir, monkeypatch):
    """Reading 5x more rows peaks at the same Python memory: one chunk of rows lives as Python objects at a time
    (reading whole splits into lists costs ~300 bytes a row here). Traced allocations, not RSS: deterministic,
    where RSS drifts by a few MiB between runs in one process; benchmarks/scale.py measures whole runs' RSS."""
    monkeypatch.setattr(convert, "CHUNK_ROWS", 2000)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    small = _traced_peak(tmp_path / "small", 4_000, tokenizer)
    large = _traced_peak(tmp_path / "large", 20_000, tokenizer)
    assert large < small * 1.1 + 256 * 1024, f"traced peak {small / 2**20:.2f} MiB at 4k rows, {large / 2**20:.2f} 20k"
