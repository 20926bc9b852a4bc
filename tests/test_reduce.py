"""The one K-teacher reduction (`teachers/reduce.py`): hand-computed targets, and the store and online teachers
giving the very same targets from the same teacher outputs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from multidistill.teachers.online import OnlineSignals
from multidistill.teachers.reduce import mean_teacher_logits, teacher_mean
from multidistill.teachers.shards import merge_shards, partial_dir, plan_shards, write_shard
from multidistill.teachers.stored import StoredSignals


def test_three_teachers_by_hand():
    # (2 examples, 3 teachers, 2 classes). Example 0: [0, 0] -> [1/2, 1/2]; [ln 3, 0] -> [3/4, 1/4];
    # [0, ln 4] -> [1/5, 4/5]; mean = [(0.5 + 0.75 + 0.2) / 3, (0.5 + 0.25 + 0.8) / 3] = [0.48333, 0.51667].
    # Example 1: three times [ln 9, 0] -> [9/10, 1/10] each, so the mean is [0.9, 0.1].
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, math.log(4.0)]],
                           [[math.log(9.0), 0.0]] * 3])
    assert teacher_mean("classification", logits).tolist() == [pytest.approx([1.45 / 3, 1.55 / 3]),
                                                               pytest.approx([0.9, 0.1])]
    # The mean of the logits is another target: example 0 -> [ln 3 / 3, ln 4 / 3].
    assert mean_teacher_logits(logits)[0].tolist() == pytest.approx([math.log(3.0) / 3, math.log(4.0) / 3])
    # Regression: the mean score, (1 + 2 + 6) / 3 = 3 and (-1 + 0 + 4) / 3 = 1.
    scores = torch.tensor([[[1.0], [2.0], [6.0]], [[-1.0], [0.0], [4.0]]])
    assert teacher_mean("regression", scores).tolist() == [[3.0], [1.0]]
    assert teacher_mean("classification", logits).dtype == torch.float32


class FixedTeacher(nn.Module):
    """Stands in for a teacher: returns given logits for the rows of a batch (by their first token id)."""

    def __init__(self, logits: torch.Tensor, task_type: str) -> None:
        super().__init__()
        self.outputs = logits
        self.tasks = {"toy": SimpleNamespace(type=task_type)}

    def forward(self, task: str, input_ids: torch.Tensor, **inputs) -> SimpleNamespace:
        return SimpleNamespace(logits=self.outputs[input_ids[:, 0]])


@pytest.mark.parametrize("task_type, classes", [("classification", 3), ("regression", 1)])
def test_stored_and_online_targets_are_identical(tmp_path, task_type, classes):
    """The same teacher outputs give bit-identical teacher_logits and teacher_mean through a merged store read
    by `StoredSignals` and through `OnlineSignals`: both reduce with `teacher_mean`."""
    generator = torch.Generator().manual_seed(0)
    k, n = 3, 6
    logits = (torch.randn(k, n, classes, generator=generator) * 4).numpy().astype(np.float32)  # as shards hold them
    ids = np.asarray([str(i) for i in range(n)], dtype=np.str_)
    plan = plan_shards({("toy", "train"): n}, rows=4)  # two shards, so the merge concatenates
    partial = partial_dir(tmp_path / "store")
    partial.mkdir()
    for shard in plan:
        write_shard(partial, shard, ids[shard.start:shard.stop], logits[:, shard.start:shard.stop])
    manifest = {"format_version": 1, "fingerprint": "f" * 64, "teachers": [], "splits": ["train"],
                "tasks": {"toy": {"type": task_type, "num_labels": classes}}, "max_length": 8, "data": {}}
    store = merge_shards(partial, tmp_path / "store", plan, manifest)

    rows = [4, 0, 5, 2]
    batch = {"task": "toy", "rows": rows, "ids": [str(r) for r in rows],
             "input_ids": torch.tensor([[r, 1] for r in rows]), "attention_mask": torch.ones(len(rows), 2)}
    stored = StoredSignals(store, ["toy"])(dict(batch))
    online = OnlineSignals([], None, ["toy"])
    online.teachers = [FixedTeacher(torch.from_numpy(logits[i]), task_type) for i in range(k)]
    live = online(dict(batch))

    assert torch.equal(live["teacher_logits"], stored["teacher_logits"])
    assert torch.equal(live["teacher_mean"], stored["teacher_mean"])
    expected = teacher_mean(task_type, torch.from_numpy(logits).transpose(0, 1)[rows])
    assert torch.equal(stored["teacher_mean"], expected)
