"""Resumable checkpoints: weights (safetensors), optimizer/scheduler/RNG (`weights_only` torch file),
loop position (JSON), the run's settings (JSON, checked by `run_settings.check_resume`). Each checkpoint is a
folder written atomically, so a `step-*` folder that lacks one of its files was damaged afterwards (or written by
an older version): resuming refuses it by name (`latest_checkpoint`) rather than silently starting over.

Old checkpoints are pruned by renaming them out of the way first (`remove_tree`), so a kill during the
pruning never leaves a half-deleted `step-*` folder; temporary folders of writes that a kill cut short
(`.step-*.tmp-<pid>-*`) are ignored by `list_checkpoints` and deleted by the next save or resume."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from multidistill.errors import ConfigError, ModelError
from multidistill.utils.atomic import atomic_dir, remove_stale_temps, remove_tree
from multidistill.utils.interrupt import raise_if_interrupted

STATE_FILE = "loop_state.json"
WEIGHTS_FILE = "trainables.safetensors"
TRAINING_FILE = "training_state.pt"
RUN_FILE = "run_settings.json"
FILES = (WEIGHTS_FILE, TRAINING_FILE, STATE_FILE, RUN_FILE)  # a complete checkpoint has all of them
PREFIX = "step-"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy and python states go through plain lists so loading needs no unpickling.
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": json.dumps(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(root: Path, step: int, trainables: nn.Module, optimizer, scheduler,
                    loop_state: dict, keep: int = 1, run_settings: dict | None = None,
                    rng_states: list[dict[str, Any]] | None = None,
                    windows: list[dict[str, Any]] | None = None) -> Path:
    """Write ``root/step-N`` atomically, then prune all but the newest ``keep`` checkpoints.

    ``run_settings`` (`multidistill.training.run_settings`) is recorded for the resume check; ``{}`` without.
    ``rng_states``: each process's random state, by process index (default: this process's only); ``windows``:
    each process's open log window (what it has summed since the last logged step), by process index."""
    final = root / f"{PREFIX}{step:09d}"
    remove_stale_temps(root, f"{PREFIX}*")
    rngs = rng_states or [rng_state()]
    with atomic_dir(final) as tmp:
        save_model(trainables, str(tmp / WEIGHTS_FILE))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rngs[0], "rng_per_process": rngs, "window_per_process": windows or []},
                   tmp / TRAINING_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(loop_state, indent=2))
        (tmp / RUN_FILE).write_text(json.dumps(run_settings or {}, indent=1))
    for old in list_checkpoints(root)[:-keep]:
        remove_tree(old)
    return final


def checkpoint_folders(root: Path) -> list[Path]:
    """Every checkpoint folder, complete or not, oldest first (temporary folders start with '.': ignored)."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.name.startswith(PREFIX) and p.is_dir()), key=lambda p: p.name)


def missing_files(folder: Path) -> list[str]:
    """The files a complete checkpoint has that ``folder`` lacks."""
    return [name for name in FILES if not (folder / name).is_file()]


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    return [p for p in checkpoint_folders(root) if not missing_files(p)]


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint to resume from; None when there is none. A newest folder that is not complete
    is refused by name: resuming from an older state or from step 0 without a word would lose training."""
    folders = checkpoint_folders(root)
    if not folders:
        return None
    newest = folders[-1]
    missing = missing_files(newest)
    if not missing:
        return newest
    complete = [p for p in folders if not missing_files(p)]
    fix = (f"delete it to resume from the previous complete checkpoint {complete[-1]}" if complete else
           "delete it to start this training over from step 0, or start the run again with --overwrite")
    raise ConfigError(f"checkpoint {newest} is incomplete: {', '.join(missing)} missing (checkpoints are written "
                      "whole, so it was damaged afterwards or written by an older multidistill); resume refused "
                      f"rather than silently starting elsewhere: {fix}")


def load_checkpoint(folder: Path, trainables: nn.Module, optimizer, scheduler,
                    process: int = 0) -> tuple[dict, dict | None]:
    """Restore everything saved by `save_checkpoint`, with process ``process``'s random state; returns the loop
    state and that process's open log window (None: the checkpoint has none recorded).

    Resuming also deletes what writers killed in this folder left behind (their process is gone): the
    resumed run may never write a checkpoint again, e.g. when it was killed while pruning the last one.
    """
    remove_stale_temps(folder.parent, f"{PREFIX}*")
    try:
        load_model(trainables, str(folder / WEIGHTS_FILE), strict=True)
        training = torch.load(folder / TRAINING_FILE, map_location="cpu", weights_only=True)
        loop_state = json.loads((folder / STATE_FILE).read_text())
    except Exception as exc:
        raise_if_interrupted(exc)  # a Ctrl-C inside torch.load surfaces as a read error: never "delete it"
        raise ModelError(f"checkpoint {folder} is unreadable ({exc}); delete it to resume from an older one") from exc
    optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    per_process = training.get("rng_per_process") or [training["rng"]]  # older checkpoints: one state
    set_rng_state(per_process[process] if process < len(per_process) else training["rng"])
    windows = training.get("window_per_process") or []
    return loop_state, (windows[process] if process < len(windows) else None)
