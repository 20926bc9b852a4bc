"""A multilabel row's set of labels as one int64 bit mask (bit i set: the row has ``labels[i]``; -1: no label).

One scalar per row keeps every row-level path (Arrow views, caches, signal stores, samplers) as it is for
classification; heads, losses and metrics turn the masks into (rows, labels) 0/1 matrices here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

NO_LABEL = -1


def encode(indices: Iterable[int]) -> int:
    """The bit mask of a set of label indices (each in 0..62)."""
    mask = 0
    for index in indices:
        mask |= 1 << int(index)
    return mask


def decode(masks: np.ndarray, num_labels: int) -> np.ndarray:
    """(N,) int64 masks -> (N, num_labels) int64 0/1 matrix (a row without a label decodes to garbage: select
    labelled rows first)."""
    masks = np.asarray(masks, dtype=np.int64).reshape(-1, 1)
    return (masks >> np.arange(num_labels, dtype=np.int64)) & 1


def decode_torch(masks: torch.Tensor, num_labels: int) -> torch.Tensor:
    """`decode` for a tensor: (B,) int64 -> (B, num_labels) float32 0/1 targets on the masks' device."""
    bits = torch.arange(num_labels, device=masks.device, dtype=torch.int64)
    return ((masks.long().unsqueeze(-1) >> bits) & 1).float()


def indices(mask: int, num_labels: int) -> list[int]:
    """The label indices a mask holds, in order."""
    return [i for i in range(num_labels) if mask >> i & 1]


def names(mask: int, labels: list[str] | tuple[str, ...]) -> list[str]:
    """The labels a mask holds, in the task's label order."""
    return [labels[i] for i in indices(mask, len(labels))]
