"""`distill`: the `multidistill distill` run, a student trained on teacher signals (a config of kind distill)."""

from __future__ import annotations

from collections.abc import Callable

from multidistill.errors import ConfigError
from multidistill.training.loop import LoopState, TrainResult
from multidistill.training.run import RunConfigSource, run_config, train_model


def distill(config: RunConfigSource, overrides: list[str] | str | None = None, *, resume: bool = False,
            overwrite: bool = False, on_step: Callable[[LoopState], None] | None = None,
            progress: bool = True) -> TrainResult:
    """Train a student from a config of kind distill, as `multidistill distill` does; the best model lands in
    ``output_dir/model`` (a general, text-only run also writes ``output_dir/encoder``).

    ``config`` is a `TeacherRunConfig`, a mapping of its keys or a YAML file's path, with ``--set``-style
    ``overrides`` applied as `load_config` does; a teacher config is refused (`train_teacher` trains it). The
    other arguments are `train_model`'s, which this calls: it reseeds the process-wide random generators and
    refuses a second run from another thread while it goes.
    """
    config = run_config(config, overrides)
    if config.kind != "distill":
        raise ConfigError(f"key 'kind' must be 'distill' for `multidistill distill` (this config is kind: "
                          f"{config.kind}); train a teacher config with `multidistill train-teacher` "
                          "(multidistill.train_teacher)")
    return train_model(config, resume=resume, overwrite=overwrite, on_step=on_step, progress=progress)
