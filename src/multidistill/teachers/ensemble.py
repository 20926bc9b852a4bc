"""Ensembles for MT-DNN-KD: K multi-task teachers that differ only in their seed (`train-teacher --seeds`,
`train_ensemble` in Python: one code path)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral
from pathlib import Path

from multidistill.errors import ConfigError, require_distinct
from multidistill.limits import MAX_SEED
from multidistill.teachers.train import train_teacher
from multidistill.training.loop import LoopState, TrainResult
from multidistill.training.run import RunConfigSource, run_config
from multidistill.utils.arguments import as_list
from multidistill.utils.entry import api_call


def seed_output_dir(output_dir: str | Path, seed: int) -> Path:
    return Path(output_dir) / f"seed-{seed}"


def ensemble_seeds(seeds: Sequence[int] | str, argument: str = "seeds") -> list[int]:
    """``seeds`` as distinct seeds from 0 to MAX_SEED: a sequence of ints, or one str of comma-separated ones as
    `--seeds` takes them (``argument`` names the option or argument in messages). An item that is no int is a
    TypeError naming it."""
    if isinstance(seeds, str):
        try:
            values = [int(name) for name in as_list(seeds, argument, commas=True) or []]
        except ValueError as exc:
            raise ConfigError(f"{argument} '{seeds}': expected comma-separated integers") from exc
    else:
        values = as_list(seeds, argument) or []
        for index, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise TypeError(f"{argument}[{index}] is a {type(value).__name__} ({value!r}); a seed is an int")
        values = [int(value) for value in values]
    if not values or any(not 0 <= value <= MAX_SEED for value in values):
        raise ConfigError(f"{argument} {seeds!r}: expected seeds from 0 to {MAX_SEED}")
    require_distinct(argument, [str(value) for value in values])
    return values


def train_ensemble(config: RunConfigSource, overrides: list[str] | str | None = None, *,
                   seeds: Sequence[int] | str, resume: bool = False, overwrite: bool = False,
                   on_step: Callable[[LoopState], None] | None = None,
                   progress: bool = True) -> dict[int, TrainResult]:
    """Train one teacher per seed into ``output_dir/seed-<s>``, as `multidistill train-teacher --seeds` does;
    returns each member's result by seed.

    ``config`` is a teacher config (a `TeacherRunConfig`, a mapping of its keys or a YAML file's path) with
    ``--set``-style ``overrides``; ``seeds`` distinct ints, or one str as ``--seeds`` takes it (``"1,2,3"``).
    The members differ in their seed (initialisation, batch order) only: all train on the subset that
    ``data.subset_seed`` picks, else the config's ``train.seed``, so a folder made here or by the CLI is taken
    up by either with ``resume`` (a finished member is kept). The other arguments are `train_teacher`'s; each
    member reseeds the process-wide random generators, so a run from another thread meanwhile is refused
    (`RunInProgress`).
    """
    with api_call("train_ensemble", progress=progress, exclusive=True):
        config, seed_list = run_config(config, overrides), ensemble_seeds(seeds)
        results = {}
        for seed in seed_list:
            member = config.model_copy(deep=True)
            member.output_dir = str(seed_output_dir(config.output_dir, seed))
            member.train.seed = seed
            # Members differ in initialisation and batch order only, never in their training examples.
            if member.data.subset_seed is None:
                member.data.subset_seed = config.train.seed
            results[seed] = train_teacher(member, resume=resume, overwrite=overwrite, on_step=on_step,
                                          progress=progress)
        return results
