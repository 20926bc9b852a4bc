"""Multi-task batch plans: which task's which rows form each batch of an epoch.

A plan is a pure function of (task sizes, batch size, strategy, seed, epoch), so a run resumes
exactly from (epoch, position) without saving the plan itself. It is held compactly (`EpochPlan`: the task of
each batch and each task's shuffled row order, 4 bytes a row) and makes its batches on demand: a list of one
index array per batch costs ~17 MB an epoch at a million rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

Strategy = Literal["proportional", "temperature", "round_robin"]


@dataclass(frozen=True)
class PlannedBatch:
    task: str
    indices: np.ndarray


class MultiTaskBatchPlanner:
    """Cuts each task into shuffled batches and orders them by a mixing strategy.

    - ``proportional`` (MT-DNN Algorithm 1): every batch of every task once per epoch, shuffled
      together, so tasks are seen in proportion to their size.
    - ``temperature``: the same number of batches, each drawn from task t with probability
      proportional to n_t ** tau (tau < 1 up-samples small tasks; tasks cycle through reshuffled data).
    - ``round_robin``: one batch per task in turn until the largest task is exhausted; smaller
      tasks cycle through reshuffled data, so all tasks get the same number of batches.
    """

    def __init__(self, sizes: dict[str, int], batch_size: int, strategy: Strategy = "proportional",
                 tau: float = 0.5, seed: int = 0, lengths: dict[str, np.ndarray] | None = None,
                 group_size: int = 50) -> None:
        if not sizes or min(sizes.values()) <= 0:
            raise ValueError(f"every task needs at least one example, got sizes {sizes}")
        if lengths is not None and any(len(lengths[t]) != n for t, n in sizes.items()):
            raise ValueError("lengths must give one length per row of every task")
        self.lengths = lengths
        self.group_size = group_size
        self.sizes = dict(sizes)
        self.batch_size = batch_size
        self.strategy = strategy
        self.tau = tau
        self.seed = seed

    def _batches_per_task(self) -> dict[str, int]:
        return {t: -(-n // self.batch_size) for t, n in self.sizes.items()}

    def __len__(self) -> int:
        per_task = self._batches_per_task()
        if self.strategy == "round_robin":
            return len(per_task) * max(per_task.values())
        return sum(per_task.values())

    def epoch(self, epoch: int) -> EpochPlan:
        """The full batch order of one epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        tasks = sorted(self.sizes)
        per_task = self._batches_per_task()
        if self.strategy == "proportional":
            order = np.concatenate([np.full(per_task[t], i) for i, t in enumerate(tasks)])
            rng.shuffle(order)
        elif self.strategy == "temperature":
            weights = np.array([self.sizes[t] ** self.tau for t in tasks], dtype=np.float64)
            order = rng.choice(len(tasks), size=len(self), p=weights / weights.sum())
        else:
            order = np.tile(np.arange(len(tasks)), max(per_task.values()))
        # Each task's batches cut its rows in a shuffled order, reshuffled whenever a pass runs out; the shuffles
        # are drawn from `rng` at the moment the plan first needs them, in plan order.
        passes: list[list[np.ndarray]] = [[] for _ in tasks]
        taken = [0] * len(tasks)
        starts = np.empty(len(order), dtype=np.int64)
        for j, i in enumerate(order.tolist()):
            size = self.sizes[tasks[i]]
            done, batch = divmod(taken[i], per_task[tasks[i]])
            taken[i] += 1
            if done == len(passes[i]):
                rows = _permutation(size, rng)
                if self.lengths is not None:
                    rows = _group_by_length(rows, self.lengths[tasks[i]], self.batch_size, self.group_size, rng)
                passes[i].append(rows)
            starts[j] = done * size + batch * self.batch_size
        rows = [np.concatenate(p) if p else np.empty(0, dtype=np.int32) for p in passes]
        return EpochPlan(tasks, {t: self.sizes[t] for t in tasks}, self.batch_size, rows,
                         order.astype(np.int16 if len(tasks) < 2**15 else np.int64), starts)


def _permutation(size: int, rng: np.random.Generator) -> np.ndarray:
    """``rng.permutation(size)`` (the same draws and values) in int32 where the rows fit."""
    rows = np.arange(size, dtype=np.int32 if size < 2**31 else np.int64)
    rng.shuffle(rows)
    return rows


def _group_by_length(rows: np.ndarray, lengths: np.ndarray, batch_size: int, group_size: int,
                     rng: np.random.Generator) -> np.ndarray:
    """``rows`` (one shuffled pass) re-cut so each batch holds rows of similar length, batches in random order.

    The short last batch stays last: a pass's batches start every ``batch_size`` rows.
    """
    mega = batch_size * group_size
    grouped = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                              for chunk in np.split(rows, range(mega, len(rows), mega))])
    full = len(grouped) // batch_size
    batches = grouped[:full * batch_size].reshape(full, batch_size)[rng.permutation(full)]
    return np.concatenate([batches.reshape(-1), grouped[full * batch_size:]])


class EpochPlan(Sequence[PlannedBatch]):
    """One epoch's batches (or a slice of them), made on demand from compact arrays.

    Batch ``j`` is task ``tasks[task_of[j]]`` and rows ``rows[task][start[j]:start[j] + n]`` of that task's
    shuffled passes, n being the batch size, or less at the end of a pass. Slicing gives another plan over the
    same arrays; indexing gives a `PlannedBatch` with int64 indices.
    """

    def __init__(self, tasks: list[str], sizes: dict[str, int], batch_size: int, rows: list[np.ndarray],
                 task_of: np.ndarray, start: np.ndarray) -> None:
        self._tasks, self._sizes, self._batch_size, self._rows = tasks, sizes, batch_size, rows
        self._task_of, self._start = task_of, start

    def __len__(self) -> int:
        return len(self._task_of)

    @overload
    def __getitem__(self, index: int) -> PlannedBatch: ...

    @overload
    def __getitem__(self, index: slice) -> EpochPlan: ...

    def __getitem__(self, index: int | slice) -> PlannedBatch | EpochPlan:
        if isinstance(index, slice):
            return EpochPlan(self._tasks, self._sizes, self._batch_size, self._rows, self._task_of[index],
                             self._start[index])
        i = int(self._task_of[index])
        task = self._tasks[i]
        start = int(self._start[index])
        # A pass of a task ends every `size` rows: a batch never runs into the next pass.
        stop = min(start + self._batch_size, (start // self._sizes[task] + 1) * self._sizes[task])
        return PlannedBatch(task, self._rows[i][start:stop].astype(np.int64))
