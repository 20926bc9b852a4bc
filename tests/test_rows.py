"""ArrowRows: positional row reads give what `datasets` gives through its memory map, and never map the file."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multidistill.data.rows import ArrowRows, UnsupportedLayout

FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "label": datasets.Value("float32"),
    "input_ids": datasets.Sequence(datasets.Value("int32")),
    "mask": datasets.Sequence(datasets.Value("int8")),
    "logits": datasets.Array2D(shape=(2, 3), dtype="float32"),
    "mean": datasets.Sequence(datasets.Value("float32"), length=3),
})


def _rows(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 9, n)  # empty lists included
    return {
        "id": [f"ex-{i}-é{'x' * int(rng.integers(0, 4))}" for i in range(n)],  # non-ASCII, varying length
        "label": rng.normal(size=n).astype(np.float32),
        "input_ids": [rng.integers(-5, 30_000, k).astype(np.int32) for k in lengths],
        "mask": [np.ones(k, dtype=np.int8) for k in lengths],
        "logits": rng.normal(size=(n, 2, 3)).astype(np.float32),
        "mean": rng.normal(size=(n, 3)).astype(np.float32),
    }


def _saved(tmp_path, n: int, seed: int, shard: str | None = None) -> datasets.Dataset:
    folder = tmp_path / f"ds-{n}-{seed}-{shard}"
    datasets.Dataset.from_dict(_rows(n, seed), features=FEATURES).save_to_disk(str(folder), max_shard_size=shard)
    return datasets.load_from_disk(str(folder)).with_format("numpy")


def _write_stream(path, table, max_chunksize: int | None = None):
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write(table) if max_chunksize is None else writer.write_table(table, max_chunksize=max_chunksize)
    return path


def _assert_same(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    assert list(got["id"]) == list(expected["id"])
    for name in ("label", "logits", "mean"):
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(expected[name]))
    for name, stored in (("input_ids", np.int32), ("mask", np.int8)):
        assert len(got[name]) == len(expected[name])
        for a, b in zip(got[name], expected[name], strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == stored  # the file's own type (datasets' numpy format widens to int64)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 200), seed=st.integers(0, 10_000),
       picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=40), sharded=st.booleans())
def test_rows_equal_the_mapped_dataset(tmp_path, n, seed, picks, sharded):
    dataset = _saved(tmp_path, n, seed, "8KB" if sharded else None)
    rows = ArrowRows([f["filename"] for f in dataset.cache_files])
    assert len(rows) == len(dataset) == n
    indices = [p % n for p in picks]  # repeats and any order
    _assert_same(rows[indices], dataset[indices])
    lengths = [len(x) for x in dataset[:]["input_ids"]]
    np.testing.assert_array_equal(rows.list_lengths("input_ids"), lengths)


def test_many_record_batches_and_files(tmp_path):
    dataset = _saved(tmp_path, 5_000, 1, "40KB")
    assert len(dataset.cache_files) > 3
    rows = ArrowRows([f["filename"] for f in dataset.cache_files])
    indices = np.random.default_rng(0).integers(0, 5_000, 500)
    _assert_same(rows[indices], dataset[indices])
    assert sum(b.num_rows for b in rows.record_batches()) == 5_000


def test_reads_never_map_the_file(tmp_path):
    table = pa.table({"id": [str(i) for i in range(20_000)], "x": pa.array([[i] * 5 for i in range(20_000)])})
    path = _write_stream(tmp_path / "rows.arrow", table, max_chunksize=1_000)
    rows = ArrowRows([path])
    got = rows[[0, 19_999, 7_777]]
    assert got["id"] == ["0", "19999", "7777"]
    assert [list(x) for x in got["x"]] == [[0] * 5, [19_999] * 5, [7_777] * 5]
    with open("/proc/self/maps") as maps:
        assert str(path) not in maps.read()


def test_sliced_arrays_in_the_file(tmp_path):
    """Arrays with non-zero offsets (a writer that keeps slices) are read at their offsets."""
    ids = pa.array([[1, 2], [3], [], [4, 5, 6], [7]], type=pa.list_(pa.int32()))
    batch = pa.record_batch({"ids": ids, "y": pa.array([10, 11, 12, 13, 14], type=pa.int64())}).slice(1, 4)
    got = ArrowRows([_write_stream(tmp_path / "sliced.arrow", batch)])[[0, 1, 2, 3]]
    assert [list(x) for x in got["ids"]] == [[3], [], [4, 5, 6], [7]]
    assert list(got["y"]) == [11, 12, 13, 14]


def test_unsupported_layouts_are_refused(tmp_path):
    for name, column in {"nulls": pa.array([1, None], type=pa.int64()),
                         "booleans": pa.array([True, False]),
                         "deep lists": pa.array([[[[1]]], [[[2]]]])}.items():
        with pytest.raises(UnsupportedLayout):
            ArrowRows([_write_stream(tmp_path / f"{name}.arrow", pa.table({"x": column}))])


def test_out_of_range_and_truncated(tmp_path):
    dataset = _saved(tmp_path, 50, 3)
    path = dataset.cache_files[0]["filename"]
    rows = ArrowRows([path])
    with pytest.raises(IndexError):
        rows[[50]]
    data = Path(path).read_bytes()
    truncated = tmp_path / "truncated.arrow"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's own error for a cut stream
        ArrowRows([truncated])
