"""`train_teacher`: fine-tune a shared encoder with one head per task on labelled data (MT-DNN)."""

from __future__ import annotations

from collections.abc import Callable

from multidistill.config import TeacherRunConfig
from multidistill.errors import ConfigError
from multidistill.training.loop import LoopState, TrainResult
from multidistill.training.run import train_model


def train_teacher(config: TeacherRunConfig, *, resume: bool = False, overwrite: bool = False,
                  on_step: Callable[[LoopState], None] | None = None) -> TrainResult:
    """Train a multi-task teacher on gold labels; the best model lands in ``output_dir/model``.

    ``on_step`` is called after every optimizer step (and its eval/checkpoint) with the loop state.
    """
    if config.kind != "teacher" or config.signals is not None:
        raise ConfigError("key 'kind': train-teacher takes a teacher config (kind: teacher, no signals); "
                          "use `multidistill distill` for distillation configs")
    return train_model(config, resume=resume, overwrite=overwrite, on_step=on_step)
