"""Stored teacher signals as the loop's `enrich`: each batch gets its rows' signals from a signal store.

The stored counterpart of `multidistill.teachers.online.OnlineSignals`: both add ``teacher_logits`` (B, K, C)
and ``teacher_mean`` (B, C) to a batch, the store's made once by `multidistill.teachers.generate`; and, from a
store that holds hidden states (`multidistill.teachers.feature_store`), both add the ``teacher_features`` the
objective asked for (`request`): K `EncoderFeatures`, the same a loss reads from online teachers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from multidistill.errors import DataError
from multidistill.teachers.feature_store import HIDDEN_COLUMN, batch_features, check_request
from multidistill.teachers.store import SignalStore, check_finite

LOGIT_COLUMNS = ("id", "teacher_logits", "teacher_mean")


class StoredSignals:
    """`enrich` for the training loop: adds each batch's stored teacher signals by row index.

    Rows of a store follow the example store, so the batch's ``rows`` index them directly; the ids are
    compared on every batch, so a store that does not belong to the data can never be used silently.
    """

    def __init__(self, store: SignalStore, tasks: list[str], split: str = "train") -> None:
        self.store = store
        self.split = split
        self.features = store.features
        self.want: dict[str, tuple[int, ...]] = {}  # per task, the hidden-state layers asked (`request`)
        self.datasets = {task: store.signal_rows(task, split) for task in tasks}
        for task, rows in self.datasets.items():
            check_finite(rows, f"signal store {store.root}: task '{task}' split '{split}'")

    def request(self, want: Mapping[str, Mapping[str, tuple[int, ...]]]) -> StoredSignals:
        """Give, per task, these teacher features at these layers (the objective's ``teacher_want``); a feature or
        layer the store does not hold is a `ConfigError` (key 'signals') saying what to do."""
        for task, asked in want.items():
            if asked:
                check_request(self.features, self.store.root, task, asked)
        self.want = {task: tuple(asked["hidden_states"]) for task, asked in want.items() if asked}
        return self

    def __call__(self, batch: dict) -> dict:
        task = batch["task"]
        layers = self.want.get(task)
        # A batch that needs no features reads no feature bytes.
        found = self.datasets[task].read(batch["rows"], [*LOGIT_COLUMNS, HIDDEN_COLUMN] if layers else LOGIT_COLUMNS)
        if list(found["id"]) != list(batch["ids"]):
            raise DataError(f"teacher signals for task '{task}' split '{self.split}' do not line up with "
                            "the training data (different ids); rebuild the store for this data")
        out = {**batch, "teacher_logits": torch.from_numpy(np.asarray(found["teacher_logits"])),
               "teacher_mean": torch.from_numpy(np.asarray(found["teacher_mean"]))}
        if layers:  # float16 here; the loop moves them to the device with the batch, the losses compute in float32
            out["teacher_features"] = batch_features(
                found[HIDDEN_COLUMN], found["id"], batch["attention_mask"], self.features, layers,
                f"signal store {self.store.root}: task '{task}' split '{self.split}'")
        return out
