"""Random row access to Arrow IPC stream files by positional reads, without a memory map.

Training reads rows at random. Through a memory map, every touched page-cache folio (up to 2 MiB on recent
kernels) stays mapped and counts in the process's RSS, so a run over a large view or signal store grows
towards the files' size. `ArrowRows` reads the file's layout once (record-batch by record-batch, nothing kept
but positions), then serves each row with `os.pread` of exactly its bytes: memory stays flat however large the
files are, and the page cache still serves the reads. The files themselves are unchanged Arrow files that
`datasets` opens memory-mapped as before (evaluation, inspection).

Supported columns hold no nulls and are integers or floats, strings, variable lists of those, or (nested)
fixed-size lists such as the `datasets` Array2D/Sequence(length=...) features; anything else raises
`UnsupportedLayout`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa


class UnsupportedLayout(ValueError):
    """A column this reader cannot serve by positional reads (nulls, booleans, nested variable lists...)."""


@dataclass(frozen=True)
class _Column:
    """Where one column of one record batch lives in the file."""

    kind: str                 # "fixed" (a value or a fixed-size block per row), "list" or "string"
    dtype: np.dtype           # the leaf values' type
    shape: tuple[int, ...]    # a fixed row's shape (() for a scalar)
    count: int                # leaf values per fixed row (the product of shape)
    values_at: int            # file position of the row-0 leaf value
    # list and string columns: (file position of offsets[0], offsets type) per level, outermost first
    offsets: tuple[tuple[int, np.dtype], ...] = ()


@dataclass(frozen=True)
class _Batch:
    path: Path
    rows: int
    columns: tuple[_Column, ...]


def _no_nulls(array: pa.Array, where: str) -> None:
    if array.null_count:
        raise UnsupportedLayout(f"{where}: null values")


def _leaf_dtype(array: pa.Array, where: str) -> np.dtype:
    if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        raise UnsupportedLayout(f"{where}: values of type {array.type}")
    _no_nulls(array, where)
    return np.dtype(array.type.to_pandas_dtype())


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _column(array: pa.Array, position, where: str) -> _Column:
    """Layout of one column; ``position(buffer)`` is the buffer's file position."""
    if isinstance(array.type, pa.ExtensionType):
        array = array.storage
    if _is_string(array.type) or _is_list(array.type):
        offsets = []
        while _is_string(array.type) or _is_list(array.type):  # strings, lists, lists of lists (Array2D)
            _no_nulls(array, where)
            if len(offsets) == 2:
                raise UnsupportedLayout(f"{where}: lists nested more than twice")
            wide = pa.types.is_large_list(array.type) or pa.types.is_large_string(array.type)
            step = np.dtype(np.int64 if wide else np.int32)
            offsets.append((position(array.buffers()[1]) + array.offset * step.itemsize, step))
            if _is_string(array.type):
                return _Column("string", np.dtype(np.uint8), (), 0, position(array.buffers()[2]), tuple(offsets))
            array = array.values
        dtype = _leaf_dtype(array, where)
        return _Column("list", dtype, (), 0, position(array.buffers()[1]) + array.offset * dtype.itemsize,
                       tuple(offsets))
    shape, start = [], array.offset  # leaf index of row r: r * prod(shape) + start
    while pa.types.is_fixed_size_list(array.type):
        _no_nulls(array, where)
        size = array.type.list_size
        array = array.values
        shape.append(size)
        start = start * size + array.offset
    dtype = _leaf_dtype(array, where)
    count = int(np.prod(shape, dtype=np.int64))
    return _Column("fixed", dtype, tuple(shape), count, position(array.buffers()[1]) + start * dtype.itemsize)


def _scan(path: Path) -> tuple[pa.Schema, list[_Batch]]:
    """Every record batch's column layout, reading the file once through a plain (unmapped) file."""
    batches = []
    with pa.OSFile(str(path), "rb") as source:
        reader = pa.ipc.MessageReader.open_stream(source)
        schema = pa.ipc.read_schema(reader.read_next_message())
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                break
            if message.type != "record batch":
                raise UnsupportedLayout(f"{path}: a {message.type} message")
            body = message.body
            body_at = source.tell() - body.size  # the body is the last thing read

            def position(buffer: pa.Buffer, body=body, body_at=body_at) -> int:
                return body_at + (buffer.address - body.address)

            batch = pa.ipc.read_record_batch(message, schema)
            columns = tuple(_column(batch.column(i), position, f"{path}: column '{name}'")
                            for i, name in enumerate(schema.names))
            batches.append(_Batch(path, batch.num_rows, columns))
    return schema, batches


class ArrowRows:
    """Rows of one or more Arrow stream files (in order) served by positional reads.

    ``rows[indices]`` returns a column dict like `datasets.Dataset.__getitem__`: a 1-D array for a scalar
    column, an ``(n, *shape)`` array for a fixed-size list column, a list of ``str`` for a string column and,
    for a list column, one array per row in the file's own type (2-D for a list of equal-length lists, as
    `datasets` stores Array2D).
    """

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]
        schema, self._batches = None, []
        for path in self.paths:
            file_schema, batches = _scan(path)
            if schema is not None and not file_schema.equals(schema):
                raise UnsupportedLayout(f"{path}: a different schema from {self.paths[0]}")
            schema = file_schema
            self._batches.extend(batches)
        if schema is None:
            raise UnsupportedLayout("no files")
        self.schema = schema
        self.column_names = list(schema.names)
        sizes = np.array([b.rows for b in self._batches], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])
        self._fds: dict[Path, int] = {}

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _fd(self, path: Path) -> int:
        # Opened on first use; pread takes no file offset, so a forked process may share the descriptor.
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def _read(self, fd: int, size: int, at: int) -> bytes:
        data = os.pread(fd, size, at)
        if len(data) != size:
            raise OSError(f"{self.paths}: short read at byte {at} (the file changed or was truncated)")
        return data

    def __getitem__(self, indices) -> dict:
        return self.read(indices)

    def read(self, indices, columns: Sequence[str] | None = None) -> dict:
        """``rows[indices]`` restricted to ``columns`` (default all): the others' bytes are not read."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        names = self.column_names if columns is None else list(columns)
        positions = [self.column_names.index(name) for name in names]
        which = np.searchsorted(self._starts, indices, side="right") - 1
        local = indices - self._starts[which]
        out: dict[str, list] = {name: [] for name in names}
        for b, r in zip(which.tolist(), local.tolist(), strict=True):
            batch = self._batches[b]
            fd = self._fd(batch.path)
            for name, at in zip(names, positions, strict=True):
                out[name].append(self._row(fd, batch.columns[at], r))
        first = self._batches[0].columns
        for name, at in zip(names, positions, strict=True):
            column = first[at]
            if column.kind == "fixed":
                values = np.frombuffer(bytearray(b"".join(out[name])), dtype=column.dtype)  # writable
                out[name] = values.reshape(len(indices), *column.shape)
        return out

    def _row(self, fd: int, column: _Column, r: int):
        item = column.dtype.itemsize
        if column.kind == "fixed":
            return self._read(fd, column.count * item, column.values_at + r * column.count * item)
        (outer_at, step), inner = column.offsets[0], column.offsets[1:]
        start, end = np.frombuffer(self._read(fd, 2 * step.itemsize, outer_at + r * step.itemsize),
                                   dtype=step).tolist()
        lengths = None
        if inner:  # a list of lists: its leaf range runs from the first inner row's start to the last one's end
            inner_at, inner_step = inner[0]
            bounds = np.frombuffer(self._read(fd, (end - start + 1) * inner_step.itemsize,
                                              inner_at + start * inner_step.itemsize), dtype=inner_step)
            start, end, lengths = int(bounds[0]), int(bounds[-1]), np.diff(bounds)
        data = self._read(fd, (end - start) * item, column.values_at + start * item) if end > start else b""
        if column.kind == "string":
            return data.decode("utf-8")
        values = np.frombuffer(data, dtype=column.dtype)
        if lengths is not None and lengths.size and (lengths == lengths[0]).all():
            return values.reshape(lengths.size, int(lengths[0]))
        return values if lengths is None else np.split(values, np.cumsum(lengths)[:-1])

    def list_lengths(self, name: str) -> np.ndarray:
        """Entries per row of a list (or string) column, from its offsets only."""
        i = self.column_names.index(name)
        parts = []
        for batch in self._batches:
            column = batch.columns[i]
            if column.kind == "fixed":
                raise UnsupportedLayout(f"column '{name}' is not a list")
            at, step = column.offsets[0]
            offsets = np.frombuffer(self._read(self._fd(batch.path), (batch.rows + 1) * step.itemsize, at),
                                    dtype=step)
            parts.append(np.diff(offsets))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def record_batches(self) -> Iterator[pa.RecordBatch]:
        """Every record batch in order, each read into memory and dropped after use (a full scan)."""
        for path in self.paths:
            with pa.OSFile(str(path), "rb") as source:
                yield from pa.ipc.open_stream(source)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown there is nothing to report to
            self.close()
