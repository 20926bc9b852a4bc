"""Length-aware batching: row lengths from Arrow, and inference that runs longest first but answers in order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from multidistill.data.batches import longest_first, map_batches, row_lengths
from multidistill.data.tasks import Task

ROWS = [[5, 6, 7], [5], [5, 6, 7, 8, 9], [5, 6], [5, 6, 7, 8]]


def _dataset() -> Dataset:
    return Dataset.from_dict({"input_ids": ROWS, "attention_mask": [[1] * len(r) for r in ROWS],
                              "label": [0, 1, 0, 1, 0], "id": ["a", "b", "c", "d", "e"]})


def _task(kind: str) -> Task:
    if kind == "regression":
        return Task(name="t", type="regression", metrics=["pearson"])
    return Task(name="t", type="classification", labels=["a", "b"], metrics=["accuracy"])


def test_row_lengths_follow_row_order_also_after_select() -> None:
    data = _dataset()
    assert row_lengths(data).tolist() == [3, 1, 5, 2, 4]
    assert row_lengths(data.select([4, 1])).tolist() == [4, 1]
    assert longest_first(data).tolist() == [2, 4, 0, 3, 1]


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_map_batches_runs_longest_first_and_returns_dataset_order(kind: str) -> None:
    task = _task(kind)
    seen_widths = []

    def forward(batch: dict) -> torch.Tensor:
        seen_widths.append(batch["input_ids"].shape[1])
        real = batch["attention_mask"].sum(1, keepdim=True).float()  # each row's own length
        return real.repeat(1, task.num_labels)

    out = map_batches(task, _dataset(), forward, batch_size=2, pad_token_id=0)
    expected = np.array([len(r) for r in ROWS], dtype=np.float32)
    if kind == "regression":
        assert out.shape == (5,) and out.tolist() == expected.tolist()
    else:
        assert out.shape == (5, 2) and out[:, 0].tolist() == expected.tolist()
    assert seen_widths == [5, 3, 1]  # batches are cut from the length-sorted order: little padding


def test_map_batches_on_no_rows() -> None:
    empty = _dataset().select([])
    assert map_batches(_task("classification"), empty, lambda b: None, batch_size=4, pad_token_id=0).shape == (0, 2)
