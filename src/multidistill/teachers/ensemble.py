"""Ensembles for MT-DNN-KD: K multi-task teachers that differ only in their seed."""

from __future__ import annotations

from pathlib import Path

from multidistill.config import TeacherRunConfig
from multidistill.errors import ConfigError
from multidistill.teachers.train import train_teacher
from multidistill.training.loop import TrainResult


def seed_output_dir(output_dir: str | Path, seed: int) -> Path:
    return Path(output_dir) / f"seed-{seed}"


def train_ensemble(config: TeacherRunConfig, seeds: list[int], *, resume: bool = False,
                   overwrite: bool = False) -> dict[int, TrainResult]:
    """Train one teacher per seed into ``output_dir/seed-<s>``; a finished member is kept on --resume."""
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"--seeds: give distinct seeds, got {seeds}")
    results = {}
    for seed in seeds:
        member = config.model_copy(deep=True)
        member.output_dir = str(seed_output_dir(config.output_dir, seed))
        member.train.seed = seed
        # Members differ in initialisation and batch order only, never in their training examples.
        if member.data.subset_seed is None:
            member.data.subset_seed = config.train.seed
        results[seed] = train_teacher(member, resume=resume, overwrite=overwrite)
    return results
