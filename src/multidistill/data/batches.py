"""Length-aware batching over tokenised rows: each row's token count, read from Arrow without decoding the
token lists, and batched inference that runs rows longest first and returns outputs in row order.

Batches are padded to their longest row, so random order wastes compute on padding; sorted order (inference)
or length-grouped batches (training, `data.sampler`) remove most of it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow.compute as pc
import torch

from multidistill.data.collate import collate
from multidistill.data.rows import ArrowRows
from multidistill.data.tasks import Task
from multidistill.utils.progress import progress_bar


def row_lengths(dataset) -> np.ndarray:
    """Number of tokens (``input_ids`` entries) of each row of a tokenised dataset, in row order."""
    if isinstance(dataset, ArrowRows):
        return dataset.list_lengths("input_ids").astype(np.int32)
    table = dataset.select_columns(["input_ids"]).with_format("arrow")[:]
    return pc.list_value_length(table.column("input_ids")).to_numpy().astype(np.int32)


def longest_first(dataset) -> np.ndarray:
    """Row indices ordered by length, longest first (stable)."""
    return np.argsort(-row_lengths(dataset), kind="stable")


def map_batches(task: Task, dataset, forward: Callable[[dict], object], *, batch_size: int, pad_token_id: int,
                progress: bool = False) -> np.ndarray:
    """``forward`` (a collated batch -> logits, tensor or array) over every row, batched longest first;
    float32 outputs in dataset order, flattened for regression tasks."""
    order = longest_first(dataset) if len(dataset) else np.zeros(0, dtype=np.int64)
    outputs = []
    starts = range(0, len(order), batch_size)
    for start in progress_bar(starts, desc=f"eval {task.name}", disable=not progress, leave=False):
        logits = forward(collate(task, dataset[order[start:start + batch_size]], pad_token_id))
        outputs.append(logits.float().cpu().numpy() if isinstance(logits, torch.Tensor)
                       else np.asarray(logits, dtype=np.float32))
    result = np.zeros((len(order), task.num_labels), dtype=np.float32)
    if outputs:
        result[order] = np.concatenate(outputs).reshape(len(order), task.num_labels)
    return result.reshape(-1) if task.type == "regression" else result
