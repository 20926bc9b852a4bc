"""Turn rows of a tokenised view into padded tensors (padded to the batch's longest row)."""

from __future__ import annotations

import numpy as np
import torch

from multidistill.data.tasks import Task
from multidistill.models.features import EncoderFeatures

TOKEN_FIELDS = ("input_ids", "attention_mask", "token_type_ids")


def collate(task: Task, rows: dict[str, list], pad_token_id: int) -> dict:
    """``rows`` is a column dict as returned by `Dataset.__getitem__` with a list of indices. The batch holds
    ``task``, ``ids``, the padded token tensors, ``labels`` and, for a task with domains, ``domain_ids``
    (LongTensor [B], indices into `Task.domains`)."""
    lengths = [len(ids) for ids in rows["input_ids"]]
    width = max(lengths)
    batch: dict = {"task": task.name, "ids": list(rows["id"])}
    for name in TOKEN_FIELDS:
        if name not in rows:
            continue
        fill = pad_token_id if name == "input_ids" else 0
        out = np.full((len(lengths), width), fill, dtype=np.int64)
        for i, values in enumerate(rows[name]):
            out[i, : len(values)] = values
        batch[name] = torch.from_numpy(out)
    label_dtype = torch.float32 if task.type == "regression" else torch.int64
    batch["labels"] = torch.tensor(rows["label"], dtype=label_dtype)
    if "domain_id" in rows:  # a task with domains: index into Task.domains
        batch["domain_ids"] = torch.as_tensor(np.asarray(rows["domain_id"]), dtype=torch.int64)
    return batch


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device``; so are stored teacher features (a list of `EncoderFeatures`)."""
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=True)
        if isinstance(value, list) and value and all(isinstance(v, EncoderFeatures) for v in value):
            return [v.to(device) for v in value]
        return value

    return {k: move(v) for k, v in batch.items()}
