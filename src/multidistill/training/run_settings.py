"""What a resumed run must share with the run that wrote its checkpoint.

Every checkpoint records the run's settings (`run_settings`): its whole resolved config as dotted keys, the
keys that were at their defaults, and each task's training-data fingerprint (file contents, task spec, subset).
`check_resume` compares them with the run about to resume, before anything is written: a changed key is
refused with its old and new values, unless it is listed in `SAFE_TO_CHANGE` (it does not change what is
trained), which is said and accepted. A key a newer version added is accepted while it is at its default
(the rule every new setting follows: its default keeps the old behaviour).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from multidistill.errors import ConfigError
from multidistill.training.checkpoint import RUN_FILE, latest_checkpoint

SETTINGS_VERSION = 1

# The one list of settings a resumed run may change: where things are, and how often the loop reports.
SAFE_TO_CHANGE: dict[str, str] = {
    "output_dir": "where the run folder is (a moved run folder resumes)",
    "data.data_root": "where the data files are (their contents are compared through the data fingerprints)",
    "data.cache_dir": "where tokenised views are cached (a cache entry is keyed by its data)",
    "train.eval_every_steps": "how often the model is evaluated",
    "train.eval_each_epoch": "whether the model is evaluated at each epoch end",
    "train.eval_batch_size": "the batch size of evaluation only",
    "train.log_every_steps": "how often the loss is logged",
    "train.checkpoint_every_steps": "how often a checkpoint is written",
    "train.keep_checkpoints": "how many checkpoints are kept",
    "train.thresholds": "how multilabel decision thresholds are set once training ends (no weight changes)",
}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts, and lists of dicts, as ``{"a.b": leaf, "a.c.0.d": leaf}`` (other lists and empty ones are
    leaves), so that a change is named by its own key."""
    if isinstance(value, dict) and value:
        return {key: leaf for k, v in value.items() for key, leaf in flatten(v, f"{prefix}{k}.").items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return {key: leaf for i, v in enumerate(value) for key, leaf in flatten(v, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def at_defaults(config: BaseModel) -> list[str]:
    """The dotted keys of ``config`` whose values are their fields' defaults."""
    explicit = flatten(config.model_dump(mode="json", exclude_defaults=True))
    return sorted(key for key in flatten(config.model_dump(mode="json")) if key not in explicit)


def run_settings(config: BaseModel, data_fingerprints: dict[str, str], signals: str | None = None,
                 online_teachers: list[str | None] | None = None, unused: tuple[str, ...] = ()) -> dict:
    """The settings a checkpoint records: everything that shapes the run (``data_fingerprints``: task -> the
    fingerprint of its training data; ``signals``: the signal store's fingerprint, as the store at the same path
    can be rebuilt from other teachers; ``online_teachers``: each online teacher's weights fingerprint, None for a
    hub name, as a folder can be retrained in place). ``unused``: dotted key prefixes that shape nothing in this
    run (``objective.multilabel`` without a multilabel task), left out so that a checkpoint written before such a
    key existed resumes."""
    def used(key: str) -> bool:
        return not any(key == prefix or key.startswith(prefix + ".") for prefix in unused)

    settings = {"format_version": SETTINGS_VERSION,
                "config": {k: v for k, v in flatten(config.model_dump(mode="json")).items() if used(k)},
                "defaults": [k for k in at_defaults(config) if used(k)], "data": dict(data_fingerprints)}
    if signals is not None:
        settings["signals"] = signals
    if online_teachers:
        settings["online_teachers"] = list(online_teachers)
    return settings


_MISSING = object()


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(not set)"
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def compare(recorded: dict, current: dict) -> tuple[list[str], list[str]]:
    """(refused changes, safe changes) between a checkpoint's settings and the current run's, as messages."""
    old, new = recorded.get("config", {}), current["config"]
    new_defaults = set(current.get("defaults", []))
    refused, safe = [], []
    for key in sorted(set(old) | set(new)):
        if key not in old and key in new_defaults:
            continue  # a setting added since the checkpoint, at its default (which keeps the old behaviour)
        before, after = old.get(key, _MISSING), new.get(key, _MISSING)
        if before == after:
            continue
        line = f"key '{key}' was {_show(before)} in the checkpoint, now {_show(after)}"
        (safe if key in SAFE_TO_CHANGE else refused).append(line)
    old_data, new_data = recorded.get("data", {}), current.get("data", {})
    for task in sorted(set(old_data) | set(new_data)):
        if task in old_data and task in new_data and old_data[task] != new_data[task]:
            refused.append(f"the training data of task '{task}' changed (file contents, task spec or subset)")
    old_store, new_store = recorded.get("signals"), current.get("signals")
    if old_store is not None and new_store is not None and old_store != new_store:  # older checkpoints: no record
        refused.append(f"the signal store at key 'signals' was rebuilt (fingerprint {old_store[:12]} in the "
                       f"checkpoint, now {new_store[:12]}): its teachers' targets are not the ones trained on so far")
    old_online, new_online = recorded.get("online_teachers"), current.get("online_teachers")
    if old_online is not None and new_online is not None and len(old_online) == len(new_online):
        refused += [f"the weights of the teacher at key 'online_teachers.{index}' changed since the checkpoint"
                    for index, (before, after) in enumerate(zip(old_online, new_online, strict=True))
                    if before is not None and after is not None and before != after]
    return refused, safe


def check_resume(checkpoint_root: Path, current: dict) -> list[str]:
    """Refuse to resume the newest checkpoint under ``checkpoint_root`` with other settings; returns the
    safe changes (to be printed). Nothing is written; no checkpoint at all passes (training starts at 0)."""
    folder = latest_checkpoint(checkpoint_root)
    if folder is None:
        return []
    try:
        recorded = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"checkpoint {folder}: {RUN_FILE} is unreadable ({exc}); delete the checkpoint to "
                          "resume from an older one, or start the run again with --overwrite") from exc
    if not isinstance(recorded, dict) or not isinstance(recorded.get("config"), dict):
        raise ConfigError(f"checkpoint {folder}: {RUN_FILE} holds no recorded settings; delete the checkpoint to "
                          "resume from an older one, or start the run again with --overwrite")
    refused, safe = compare(recorded, current)
    if refused:
        raise ConfigError(f"--resume: checkpoint {folder} was written by a run with other settings: "
                          + "; ".join(refused) + ". Resume with the settings it was made with (changing only "
                          f"{', '.join(sorted(SAFE_TO_CHANGE))}), or start a new run (another output_dir, "
                          "or --overwrite)")
    return safe
