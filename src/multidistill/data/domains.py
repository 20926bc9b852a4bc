"""Domains of a task's rows: their names, the integer id each row carries, and selection by domain.

A task has domains when it declares one file set per domain (`Task.domain_files`) or maps a domain column
(`columns.domain`). Its domains are `Task.domains`, sorted; a row's domain id is the index of its domain there,
so ids never depend on which domains a run selects. Selection (`DomainSelection`, from `data.tasks[i]`) keeps the
rows of some domains (include / exclude, every split), a seeded fraction of some domains' training rows (dev
and test untouched) and, for cross-fitting, all but one seeded fold of one domain's training rows; it is
applied when the example store caches a split, so views, signal stores and row indices all see the same rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from multidistill.data.split_cache import read_batches
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, DataError
from multidistill.utils.lookalike import lookalike_pair, spelled


def read_domains(task: Task, batches_of_split: Mapping[str, Iterable[pa.RecordBatch]]) -> tuple[str, ...]:
    """The sorted distinct values of the ``domain`` column over the given splits' record batches (a task whose
    domain column is mapped but whose `domains` are not declared)."""
    found: set[str] = set()
    for batches in batches_of_split.values():
        for batch in batches:
            found.update(pc.unique(batch.column("domain")).to_pylist())
    found.discard("")  # no domain; a task whose rows all have none has no domains (a row without one among
    # rows with domains is refused by the reader, naming its line; `domain_codes` checks again)
    pair = lookalike_pair(sorted(found))
    if pair is not None:  # two domains that every table and figure would print alike
        raise DataError(f"task '{task.name}': domains {pair[0]!r} and {pair[1]!r} read the same but are other "
                        f"strings ({ascii(pair[0])} and {ascii(pair[1])}: Unicode form or white space), so their rows "
                        f"would be two domains; write them one way in the data's domain column")
    return tuple(sorted(found))


def domain_codes(column: pa.Array | pa.ChunkedArray, ids: pa.Array | pa.ChunkedArray, domains: tuple[str, ...],
                 what: str) -> np.ndarray:
    """Each row's domain id (index into ``domains``) as int32; a value outside ``domains`` raises `DataError`
    naming the row's id and the known domains (``what`` names the task and split)."""
    codes = pc.index_in(column, value_set=pa.array(domains, type=pa.string()))
    if codes.null_count:
        first = pc.index(pc.is_null(codes), True).as_py()
        raise DataError(f"{what}: row '{ids[first].as_py()}' has domain {column[first].as_py()!r}, which is not one of "
                        f"the task's domains ({', '.join(domains)}){spelled(column[first].as_py(), domains)}; fix the "
                        "row, or add the domain to the task's `domains` (a saved model's task keeps the domains it "
                        "was trained with: score it on rows of those)")
    return codes.to_numpy(zero_copy_only=False).astype(np.int32)


def draw_rows(rows: int, count: int, seed: int, domain: str) -> np.ndarray:
    """``count`` of a domain's ``rows`` (positions, in draw order), drawn without replacement by
    ``numpy.random.default_rng([seed, crc32(domain)])``: a domain's draw depends on the seed and its own rows only
    (`domain_fraction`'s subsets, `test_from_dev`'s test parts)."""
    return np.random.default_rng([seed, zlib.crc32(domain.encode())]).choice(rows, size=count, replace=False)


def fold_assignment(count: int, folds: int, seed: int, domain: str) -> np.ndarray:
    """The fold (0..folds-1) of each of a domain's ``count`` kept training rows, in row order: a seeded
    permutation dealt round-robin, so fold sizes differ by at most one row. Seeded by ``[seed, crc32(domain),
    folds]``: the same rows get the same folds in every view that keeps them (the domain's own or the union)."""
    order = np.random.default_rng([seed, zlib.crc32(domain.encode()), folds]).permutation(count)
    assignment = np.empty(count, dtype=np.int64)
    assignment[order] = np.arange(count) % folds
    return assignment


@dataclass(frozen=True)
class DomainSelection:
    """Which rows of a task with domains a run keeps (the config's `domains_include`, `domains_exclude`,
    `domain_fraction`, `domain_holdout` of one `data.tasks` entry, whose key ``key`` names it in errors)."""

    key: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    fraction: Mapping[str, float] = field(default_factory=dict)
    holdout: tuple[str, int, int] | None = None  # (domain, folds, fold left out)

    @property
    def active(self) -> bool:
        return bool(self.include or self.exclude or self.fraction or self.holdout)

    def applies_to(self, split: str) -> bool:
        """Whether the selection changes ``split``'s rows (fractions and hold-outs cut training rows only)."""
        return bool(self.include or self.exclude or (split == "train" and (self.fraction or self.holdout)))

    def payload(self, split: str) -> dict:
        """What of the selection shapes ``split``'s rows, for its data fingerprint."""
        out: dict = {"include": sorted(self.include), "exclude": sorted(self.exclude)}
        if split == "train":
            out["fraction"] = dict(sorted(self.fraction.items()))
            if self.holdout is not None:  # only when set: the data without one keeps its fingerprint
                out["holdout"] = list(self.holdout)
        return out

    def _no_domains(self, task: Task, why: str) -> ConfigError:
        option = ("domains_include" if self.include else "domains_exclude" if self.exclude
                  else "domain_fraction" if self.fraction else "domain_holdout")
        return ConfigError(f"key '{self.key}.{option}': task '{task.name}' has no domains ({why}); remove the "
                           "domain options")

    def check_task(self, task: Task) -> None:
        """Refuse domain options on a task whose spec gives no domains."""
        if self.active and not task.has_domains:
            raise self._no_domains(task, "it has neither domain_files nor a mapped columns.domain")

    def check_names(self, task: Task) -> None:
        """Every domain named must be one of the task's (read by now), and the options must leave some domain."""
        if not task.domains:
            raise self._no_domains(task, "every row's domain cell is empty")
        known = ", ".join(task.domains)
        for option, names in (("domains_include", self.include), ("domains_exclude", self.exclude),
                              ("domain_fraction", tuple(self.fraction)),
                              ("domain_holdout.domain", (self.holdout[0],) if self.holdout else ())):
            for name in names:
                if name not in task.domains:
                    raise ConfigError(f"key '{self.key}.{option}': task '{task.name}' has no domain {name!r}; its "
                                      f"domains are: {known}")
        kept = [d for d in task.domains if (not self.include or d in self.include) and d not in self.exclude]
        if not kept:
            raise ConfigError(f"key '{self.key}.domains_exclude': the domain options leave no domain of task "
                              f"'{task.name}' (domains: {known}); keep at least one")
        dropped = sorted(set(self.fraction) - set(kept))
        if dropped:
            raise ConfigError(f"key '{self.key}.domain_fraction': domain {dropped[0]!r} is not selected (it is "
                              "excluded, or not in domains_include); remove its fraction or select it")
        if self.holdout is not None and self.holdout[0] not in kept:
            raise ConfigError(f"key '{self.key}.domain_holdout.domain': domain {self.holdout[0]!r} is not selected "
                              "(it is excluded, or not in domains_include); select it or remove the hold-out")

    def keep_rows(self, codes: np.ndarray, domains: tuple[str, ...], split: str, seed: int) -> np.ndarray | None:
        """The sorted rows of a split (``codes``: each row's domain id) this selection keeps; None for all.

        A fraction f of a domain's n training rows keeps round(f * n) of them (half up), chosen with
        ``numpy.random.default_rng([seed, crc32(domain)])``: a domain's subset depends on the seed and its own
        rows only, not on the other domains' options. A hold-out then drops one fold (`fold_assignment`) of what
        its domain kept.
        """
        if not self.applies_to(split):
            return None
        wanted = [i for i, d in enumerate(domains) if (not self.include or d in self.include) and d not in self.exclude]
        mask = np.isin(codes, wanted)
        if split == "train":
            for name, fraction in sorted(self.fraction.items()):
                rows = np.flatnonzero(codes == domains.index(name))
                count = int(fraction * len(rows) + 0.5)
                if count == 0:
                    raise ConfigError(f"key '{self.key}.domain_fraction.{name}': {fraction} of domain {name!r}'s "
                                      f"{len(rows)} training rows keeps no row; raise the fraction, or drop the "
                                      "domain with domains_exclude")
                mask[rows] = False
                mask[rows[draw_rows(len(rows), count, seed, name)]] = True
            if self.holdout is not None:
                name, folds, fold = self.holdout
                rows = np.flatnonzero(mask & (codes == domains.index(name)))
                mask[rows[fold_assignment(len(rows), folds, seed, name) == fold]] = False
        if not mask.any():
            raise ConfigError(f"key '{self.key}': the selected domains have no rows in split '{split}'; select "
                              "domains that have data")
        return np.flatnonzero(mask)

    def row_selector(self, domains: tuple[str, ...], split: str, seed: int, what: str):
        """`keep_rows` over an Arrow examples file, as `readers.write_split_cache` calls it."""
        def select(path: Path) -> np.ndarray | None:
            codes = [domain_codes(b.column("domain"), b.column("id"), domains, what) for b in read_batches(path)]
            return self.keep_rows(np.concatenate(codes) if codes else np.zeros(0, np.int32), domains, split, seed)

        return select
