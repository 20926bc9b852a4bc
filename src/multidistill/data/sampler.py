"""Multi-task batch plans: which task's which rows form each batch of an epoch.

A plan is a pure function of (task sizes, batch size, strategy, seed, epoch), so a run resumes
exactly from (epoch, position) without saving the plan itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
                 tau: float = 0.5, seed: int = 0) -> None:
        if not sizes or min(sizes.values()) <= 0:
            raise ValueError(f"every task needs at least one example, got sizes {sizes}")
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

    def _task_stream(self, task: str, rng: np.random.Generator):
        """Endless batches of one task: reshuffled each time it runs out."""
        size = self.sizes[task]
        while True:
            order = rng.permutation(size)
            for start in range(0, size, self.batch_size):
                yield order[start:start + self.batch_size]

    def epoch(self, epoch: int) -> list[PlannedBatch]:
        """The full batch order of one epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        tasks = sorted(self.sizes)
        streams = {t: self._task_stream(t, rng) for t in tasks}
        per_task = self._batches_per_task()
        if self.strategy == "proportional":
            order = np.concatenate([np.full(per_task[t], i) for i, t in enumerate(tasks)])
            rng.shuffle(order)
        elif self.strategy == "temperature":
            weights = np.array([self.sizes[t] ** self.tau for t in tasks], dtype=np.float64)
            order = rng.choice(len(tasks), size=len(self), p=weights / weights.sum())
        else:
            order = np.tile(np.arange(len(tasks)), max(per_task.values()))
        return [PlannedBatch(tasks[i], next(streams[tasks[i]])) for i in order]
