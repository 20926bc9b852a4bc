"""Run folders: refuse to clobber a finished run unless asked; keep the resolved config beside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from pydantic import BaseModel

from multidistill.errors import ConfigError
from multidistill.utils.atomic import atomic_file


def claim_output_dir(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Fail if ``path`` holds another run, unless resuming it or explicitly overwriting it."""
    if path.exists() and any(path.iterdir()) and not resume:
        if not overwrite:
            raise ConfigError(f"output_dir {path} already holds a run; pass --resume to continue it "
                              f"or --overwrite to replace it")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def save_config(config: BaseModel, path: Path) -> None:
    with atomic_file(path) as handle:
        yaml.safe_dump(config.model_dump(mode="json"), handle, sort_keys=False)
