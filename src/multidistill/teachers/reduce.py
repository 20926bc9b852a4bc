"""The K-teacher reduction: the one place where several teachers' outputs become one target.

The signal store (when it merges its shards), online teachers (on each batch) and the objective (for logit
terms) all call these functions, so stored and online runs train on the same targets bit for bit.
Teachers are on axis 1: ``teacher_logits`` is (N, K, C), as a batch holds it.
"""

from __future__ import annotations

import torch


def teacher_mean(task_type: str, teacher_logits: torch.Tensor) -> torch.Tensor:
    """(N, K, C) teachers' raw outputs -> (N, C) float32: the mean of the teachers' *probabilities*
    (MT-DNN-KD's soft targets; averaging logits first would give another target): softmax over the classes, or
    for multilabel each label's sigmoid; for regression the mean score."""
    logits = teacher_logits.float().contiguous()  # one memory layout, so one summation order, whoever calls
    if task_type == "regression":
        return logits.mean(1)
    if task_type == "multilabel":
        return torch.sigmoid(logits).mean(1)
    return torch.softmax(logits, dim=-1).mean(1)


def mean_teacher_logits(teacher_logits: torch.Tensor) -> torch.Tensor:
    """(N, K, C) -> (N, C): the teachers' mean logits, the target of logit-matching terms (MKD's `logit_mse`)."""
    return teacher_logits.mean(1)
