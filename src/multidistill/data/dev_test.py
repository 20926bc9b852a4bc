"""A test split carved out of a task's dev rows (`Task.test_from_dev`, set in a task spec or by data.test_from_dev).

GLUE and most fine-tuning data have labelled train and dev splits only, so dev both selects the models and scores
them. Carving splits each domain's dev rows (the whole dev split for a task without domains) into two parts with a
seeded draw: dev keeps one and selects, test gets the other and is scored. The draw reads every validated dev row
(before any domain selection), so a row's part never depends on what else a run selects, and both splits see the
same draw. Rows equal in text, label and domain (ids aside) join the part of the first of them, so no scored row
is also a selecting one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from multidistill.data.domains import draw_rows
from multidistill.data.split_cache import read_batches
from multidistill.data.tasks import HeldOutFromDev, Task
from multidistill.errors import ConfigError

CARVED_SPLITS = ("dev", "test")
KEY_FIELDS = ("text_a", "text_b", "label", "domain")  # what makes two rows twins; the id is left out


def row_keys(batch: pa.RecordBatch) -> np.ndarray:
    """An 8-byte digest per row of its text, label and domain (equal rows, equal keys; the id is ignored)."""
    columns = [batch.column(name).to_pylist() for name in KEY_FIELDS]
    return np.array([int.from_bytes(hashlib.blake2b(repr(cells).encode(), digest_size=8).digest(), "little")
                     for cells in zip(*columns, strict=True)], dtype=np.uint64)


def carve_test(domains: np.ndarray, keys: np.ndarray, carve: HeldOutFromDev, task: str) -> np.ndarray:
    """Which dev rows go to test (a boolean mask), given each row's domain (a string) and `row_keys`.

    Of each domain's n rows, floor(fraction x n) are drawn with ``numpy.random.default_rng([seed, crc32(domain)])``
    (``rng.choice(n, size, replace=False)`` over the domain's rows in file order); then every row takes the part of
    the first row with its key. Raises `ConfigError` when a domain's draw or its twins leave a part empty.
    """
    test = np.zeros(len(domains), dtype=bool)
    names = sorted(set(domains.tolist()))
    for name in names:
        rows = np.flatnonzero(domains == name)
        count = math.floor(carve.fraction * len(rows) + 1e-9)  # 1e-9: 0.29 x 100 is 28.999...
        if count in (0, len(rows)):
            raise ConfigError(f"task '{task}' test_from_dev.fraction: {carve.fraction} of {_domain(name)}'s "
                              f"{len(rows)} dev row(s) draws {'no test row' if count == 0 else 'every row: no dev row'}"
                              f"; {'raise' if count == 0 else 'lower'} the fraction, or give "
                              f"{'the domain' if name else 'the task'} more dev rows")
        test[rows[draw_rows(len(rows), count, carve.seed, name)]] = True
    if len(keys):
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        test = test[first[inverse.reshape(-1)]]
    for name in names:
        part = test[domains == name]
        if part.all() or not part.any():
            raise ConfigError(f"task '{task}' test_from_dev: every dev row of {_domain(name)} is equal to another "
                              f"row (ids aside) that went to {'test' if part.all() else 'dev'}, so the other split "
                              f"gets none of its rows; give {'the domain' if name else 'the task'} dev rows that "
                              "differ")
    return test


def _domain(name: str) -> str:
    return f"domain {name!r}" if name else "the dev split"


def _carve_of(task: Task, split: str) -> HeldOutFromDev | None:
    """``task``'s carve when it shapes ``split`` (dev or test), else None."""
    return task.test_from_dev if split in CARVED_SPLITS else None


def carved_rows(task: Task, split: str) -> Callable[[Path], np.ndarray] | None:
    """For `readers.write_split_cache`'s ``select``: the sorted rows of the dev file that ``split`` keeps (test:
    the drawn part; dev: the rest); None when ``task`` carves nothing or ``split`` is train."""
    carve = _carve_of(task, split)
    if carve is None:
        return None

    def select(path: Path) -> np.ndarray:
        domains, keys = [], []
        for batch in read_batches(path):
            domains.append(np.asarray(batch.column("domain").to_pylist(), dtype=object))
            keys.append(row_keys(batch))
        test = carve_test(np.concatenate(domains) if domains else np.zeros(0, dtype=object),
                          np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64), carve, task.name)
        return np.flatnonzero(test if split == "test" else ~test)

    return select


def missing_test_hint(task: Task, split: str) -> str:
    """For an error about a split the task lacks: carving, when that split is test and the task has dev rows."""
    return " (or carve one out of dev: data.test_from_dev)" if split == "test" and "dev" in task.splits else ""


def carve_payload(task: Task, split: str) -> dict | None:
    """What of the carve shapes ``split``'s rows, for its fingerprints (None: not carved)."""
    carve = _carve_of(task, split)
    return None if carve is None else {"part": split, **carve.model_dump()}
