"""Resumable checkpoints: weights (safetensors), optimizer/scheduler/RNG (`weights_only` torch file),
loop position (JSON). Each checkpoint is a folder written atomically; the newest complete one wins.

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

from multidistill.errors import ModelError
from multidistill.utils.atomic import atomic_dir, remove_stale_temps, remove_tree

STATE_FILE = "loop_state.json"
WEIGHTS_FILE = "trainables.safetensors"
TRAINING_FILE = "training_state.pt"
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
                    loop_state: dict, keep: int = 1) -> Path:
    """Write ``root/step-N`` atomically, then prune all but the newest ``keep`` checkpoints."""
    final = root / f"{PREFIX}{step:09d}"
    remove_stale_temps(root, f"{PREFIX}*")
    with atomic_dir(final) as tmp:
        save_model(trainables, str(tmp / WEIGHTS_FILE))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rng_state()}, tmp / TRAINING_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(loop_state, indent=2))
    for old in list_checkpoints(root)[:-keep]:
        remove_tree(old)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders start with '.' and are ignored)."""
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: p.name)


def load_checkpoint(folder: Path, trainables: nn.Module, optimizer, scheduler) -> dict:
    """Restore everything saved by `save_checkpoint`; returns the loop state.

    Resuming also deletes what writers killed in this folder left behind (their process is gone): the
    resumed run may never write a checkpoint again, e.g. when it was killed while pruning the last one.
    """
    remove_stale_temps(folder.parent, f"{PREFIX}*")
    try:
        load_model(trainables, str(folder / WEIGHTS_FILE), strict=True)
        training = torch.load(folder / TRAINING_FILE, map_location="cpu", weights_only=True)
        loop_state = json.loads((folder / STATE_FILE).read_text())
    except Exception as exc:
        raise ModelError(f"checkpoint {folder} is unreadable ({exc}); delete it to resume from an older one") from exc
    optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    set_rng_state(training["rng"])
    return loop_state
