"""Stored teacher signals as the loop's `enrich`: each batch gets its rows' signals from a signal store.

The stored counterpart of `multidistill.teachers.online.OnlineSignals`: both add ``teacher_logits`` (B, K, C)
and ``teacher_mean`` (B, C) to a batch, the store's made once by `multidistill.teachers.generate`.
"""

from __future__ import annotations

import numpy as np
import torch

from multidistill.errors import DataError
from multidistill.teachers.store import SignalStore, check_finite


class StoredSignals:
    """`enrich` for the training loop: adds each batch's stored teacher signals by row index.

    Rows of a store follow the example store, so the batch's ``rows`` index them directly; the ids are
    compared on every batch, so a store that does not belong to the data can never be used silently.
    """

    def __init__(self, store: SignalStore, tasks: list[str], split: str = "train") -> None:
        self.split = split
        self.datasets = {task: store.signal_rows(task, split) for task in tasks}
        for task, rows in self.datasets.items():
            check_finite(rows, f"signal store {store.root}: task '{task}' split '{split}'")

    def __call__(self, batch: dict) -> dict:
        found = self.datasets[batch["task"]][batch["rows"]]
        if list(found["id"]) != list(batch["ids"]):
            raise DataError(f"teacher signals for task '{batch['task']}' split '{self.split}' do not line up with "
                            "the training data (different ids); rebuild the store for this data")
        return {**batch, "teacher_logits": torch.from_numpy(np.asarray(found["teacher_logits"])),
                "teacher_mean": torch.from_numpy(np.asarray(found["teacher_mean"]))}
