"""The learning-rate schedule, a config choice (``train.lr_scheduler``) made through `transformers.get_scheduler`."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_scheduler

from multidistill.config import TrainConfig

# Our names -> transformers' schedule names. Every one warms up linearly over warmup_ratio of the steps.
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def make_scheduler(optimizer: Optimizer, config: TrainConfig, total_steps: int) -> LambdaLR:
    """``config.lr_scheduler`` over ``total_steps`` optimizer steps, after ``config.warmup_ratio`` of them warming up.

    linear (the default) is `get_linear_schedule_with_warmup`'s schedule, step for step; cosine decays to 0 along
    half a cosine; constant holds the peak rate. All are `LambdaLR`s, so checkpoints restore them exactly.
    """
    return get_scheduler(SCHEDULES[config.lr_scheduler], optimizer,
                         num_warmup_steps=int(config.warmup_ratio * total_steps), num_training_steps=total_steps)


def epoch_steps(config: TrainConfig, batches: int) -> int:
    """Optimizer steps in one epoch of ``batches`` batches (per process): whole groups of grad_accum_steps."""
    return batches // config.grad_accum_steps


def planned_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """The optimizer steps a training makes: ``config.epochs`` x ``steps_per_epoch`` (rounded up), raised to
    ``config.min_steps`` where that is set and more. The product is rounded to 9 decimals first, so that float
    error (0.1 x 30 = 3.0000000000000004) does not add a step."""
    return max(math.ceil(round(config.epochs * steps_per_epoch, 9)), config.min_steps or 0)
