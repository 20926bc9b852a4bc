"""The learning-rate schedule, a config choice (``train.lr_scheduler``) made through `transformers.get_scheduler`."""

from __future__ import annotations

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
