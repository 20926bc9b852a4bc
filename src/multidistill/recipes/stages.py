"""Stages: a recipe step that writes one artifact folder, with a manifest that makes re-runs cheap.

Each finished stage folder holds `stage.json`: the stage's name, a fingerprint of its config and of its
inputs' fingerprints, and what it produced. Running a recipe again:

* a stage whose manifest matches is skipped (its artifact is reused as is);
* a stage that was cut (its folder exists, no manifest yet, a matching `.pending/<stage>.json`) resumes:
  training continues from its last checkpoint, a signal store from its last finished shard, and other
  atomic stages (transfer sets, benchmarks) start over;
* a stage whose manifest or pending record does not match is refused, naming the folder to remove,
  so nothing made from other settings is ever reused or overwritten silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from multidistill.errors import ConfigError
from multidistill.utils.atomic import write_json
from multidistill.utils.hashing import hash_json
from multidistill.utils.manifest import read_versioned_json

STAGE_MANIFEST = "stage.json"
PENDING = ".pending"
STAGE_VERSION = 1

console = Console(stderr=True)


@dataclass
class StageOutcome:
    name: str
    folder: Path
    fingerprint: str
    skipped: bool
    seconds: float


def settings_payload(settings) -> dict | None:
    """A config section as a stage's JSON settings. Fields at their defaults are left out, so a later version
    that adds a setting (at a default that keeps the old behaviour) does not invalidate finished stages."""
    return settings.model_dump(mode="json", exclude_defaults=True) if settings is not None else None


def stage_fingerprint(folder: Path) -> str:
    """The fingerprint recorded by a finished stage folder."""
    return read_versioned_json(folder / STAGE_MANIFEST, STAGE_VERSION, ConfigError)["fingerprint"]


class StageRunner:
    """Runs a recipe's stages under one output folder, skipping finished ones and resuming a cut one."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.outcomes: list[StageOutcome] = []

    def run(self, name: str, config: dict, inputs: dict[str, str], work: Callable[[Path, bool], dict | None]
            ) -> Path:
        """Run ``work(folder, resume)`` for stage ``name`` unless it is already done.

        ``config`` is the JSON-able settings of the stage; ``inputs`` maps each input's role to its
        fingerprint (another stage's, or a hash of a user-supplied folder). ``work`` may return extra
        manifest fields.
        """
        folder = self.root / name
        fingerprint = hash_json({"stage": name, "config": config, "inputs": inputs})
        manifest = folder / STAGE_MANIFEST
        if manifest.is_file():
            if stage_fingerprint(folder) == fingerprint:
                console.print(f"[green]stage {name}: done, reusing {folder}[/green]")
                self.outcomes.append(StageOutcome(name, folder, fingerprint, True, 0.0))
                return folder
            raise ConfigError(f"stage '{name}': {folder} was made with other settings or inputs; remove it "
                              f"(and the stages after it) or choose another output_dir")
        pending = self.root / PENDING / f"{name}.json"
        resume = False
        if folder.exists():
            if pending.is_file() and read_versioned_json(pending, STAGE_VERSION, ConfigError)["fingerprint"] \
                    == fingerprint:
                resume = True
            else:
                raise ConfigError(f"stage '{name}': {folder} exists but is not an unfinished run of this stage "
                                  "with these settings; remove it or choose another output_dir")
        pending.parent.mkdir(parents=True, exist_ok=True)
        write_json(pending, {"format_version": STAGE_VERSION, "fingerprint": fingerprint})
        console.print(f"[bold]stage {name}: {'resuming' if resume else 'running'}[/bold] -> {folder}")
        started = time.perf_counter()
        extra = work(folder, resume) or {}
        seconds = time.perf_counter() - started
        folder.mkdir(parents=True, exist_ok=True)
        write_json(manifest, {"format_version": STAGE_VERSION, "name": name, "fingerprint": fingerprint,
                              "config": config, "inputs": inputs, "seconds": seconds,
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})
        pending.unlink(missing_ok=True)
        self.outcomes.append(StageOutcome(name, folder, fingerprint, False, seconds))
        return folder
