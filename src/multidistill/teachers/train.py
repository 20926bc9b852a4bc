"""`train_teacher`: fine-tune a shared encoder with one head per task on labelled data (MT-DNN)."""

from __future__ import annotations

from collections.abc import Callable

from multidistill.errors import ConfigError
from multidistill.training.loop import LoopState, TrainResult
from multidistill.training.run import RunConfigSource, run_config, train_model


def train_teacher(config: RunConfigSource, overrides: list[str] | str | None = None, *, resume: bool = False,
                  overwrite: bool = False, on_step: Callable[[LoopState], None] | None = None,
                  progress: bool = True) -> TrainResult:
    """Train a multi-task teacher on gold labels; the best model lands in ``output_dir/model``.

    ``config`` is a `TeacherRunConfig` of kind teacher (no signals), a mapping of its keys or a YAML file's path,
    with ``--set``-style ``overrides`` applied as `load_config` does (`train_ensemble` trains one per seed, as
    ``--seeds``). ``on_step`` is called after every optimizer step (and its eval/checkpoint) with the loop state;
    ``progress`` False: no bars, tables or notes. As `train_model`, it reseeds the process-wide random generators
    and refuses a second run from another thread while it goes.
    """
    config = run_config(config, overrides)
    if config.kind != "teacher" or config.signals is not None:
        raise ConfigError("key 'kind': train-teacher takes a teacher config (kind: teacher, no signals); "
                          "use `multidistill distill` (multidistill.distill) for distillation configs")
    return train_model(config, resume=resume, overwrite=overwrite, on_step=on_step, progress=progress)
