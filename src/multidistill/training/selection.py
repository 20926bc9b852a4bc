"""Model selection (``train.select``): which evaluated model the loop keeps in ``model/``.

best_metric keeps the highest eval average (the default); last keeps the latest; lowest_loss keeps the lowest
objective loss on a held-out slice of the training rows (``train.holdout_fraction`` of each task, seeded, never
trained on). The held-out loss is the objective itself, teacher signals included, so it works for runs without
labelled eval data (general distillation on text) and always reads signals for rows that the store holds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from multidistill.data.collate import collate, to_device
from multidistill.data.tasks import Task


def holdout_split(sizes: dict[str, int], fraction: float, seed: int) -> tuple[dict, dict]:
    """Per task, (training rows, held-out rows) as sorted index arrays: ``fraction`` held out, at least one row,
    at least one left to train on."""
    rng = np.random.default_rng(seed)
    train, held = {}, {}
    for task, size in sizes.items():
        order = rng.permutation(size)
        count = min(max(1, round(fraction * size)), size - 1)
        held[task], train[task] = np.sort(order[:count]), np.sort(order[count:])
    return train, held


@torch.no_grad()
def holdout_loss(trainables: nn.Module, tasks: dict[str, Task], train_sets: dict, held: dict[str, np.ndarray],
                 batch_size: int, pad_token_id: int, device: torch.device, autocast: Callable,
                 enrich: Callable[[dict], dict] | None = None) -> float:
    """The objective's mean loss per held-out example (in eval mode: no dropout), over all tasks."""
    was_training = trainables.training
    trainables.eval()
    total, count = 0.0, 0
    try:
        for name, rows in held.items():
            for start in range(0, len(rows), batch_size):
                indices = rows[start:start + batch_size].tolist()
                batch = collate(tasks[name], train_sets[name][indices], pad_token_id)
                batch["rows"] = indices  # row-aligned with the store, like training batches
                if enrich is not None:
                    batch = enrich(batch)
                with autocast():
                    loss = trainables(to_device(batch, device)).loss
                total += float(loss) * len(indices)
                count += len(indices)
    finally:
        trainables.train(was_training)
    return total / max(count, 1)
