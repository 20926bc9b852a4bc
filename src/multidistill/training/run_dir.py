"""Run folders: one writer at a time, never clobber what is not a run, and an `--overwrite` that cannot lose both.

A run folder carries a marker file (``.multidistill-run``) written when it is claimed; only a folder with the
marker (or the layout of a run made before markers existed: ``config.yaml`` beside our model record or a checkpoint)
may be resumed or overwritten. A non-empty folder without it (a data folder, a home directory) is refused.

`--overwrite` moves the old run aside to ``.<name>.old-<pid>`` beside it and deletes it only after the new run
finished. If the new run stops (error, Ctrl-C, SIGTERM) before its first checkpoint, there is nothing of it to
continue: it is deleted and the old run is put back. If it stops later, it stays (``--resume`` continues it) and
the old run stays aside until a later run of the folder finishes. A SIGKILL leaves the same state on disk, and
the next claim of the folder applies the same rule.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from multidistill.config import dump_yaml
from multidistill.errors import ConfigError
from multidistill.utils.atomic import atomic_file, glob_escape, remove_tree, write_json
from multidistill.utils.console import stderr_console
from multidistill.utils.interrupt import add_note
from multidistill.utils.lock import hold_lock
from multidistill.utils.runlog import RUN_MARKER

CHECKPOINTS = "checkpoints"  # the loop's checkpoint folder (training/loop.py), named here to avoid a cycle

_TEMP = re.compile(r"^\..+\.tmp-\d+-")  # a temporary sibling of utils/atomic.py
console = stderr_console()  # off a terminal (a pipe, log.txt) 160 columns: rich's 80 split long lines


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a multidistill run folder (our marker, or a run made before markers existed)."""
    if (path / RUN_MARKER).is_file():
        return True
    # Before markers: config.yaml beside a model of ours or a checkpoint of ours (config.yaml beside a `model/`
    # folder alone is what many tools write, and --overwrite must never take such a folder for a run).
    return (path / "config.yaml").is_file() and (
        (path / "model" / "multidistill_model.json").is_file()
        or any((step / "loop_state.json").is_file() and (step / "trainables.safetensors").is_file()
               for step in (path / CHECKPOINTS).glob("step-*")))


def _has_checkpoint(path: Path) -> bool:
    folder = path / CHECKPOINTS
    return folder.is_dir() and any(folder.iterdir())


def _asides(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{glob_escape(path.name)}.old-*"), key=lambda p: p.stat().st_mtime)


def _settle_cut_overwrite(path: Path) -> None:
    """An `--overwrite` killed before it finished left the old run aside: put it back if the new run never
    reached a checkpoint (nothing to continue), else keep it aside until the new run finishes.

    Runs under the folder's lock, so an aside found here belongs to a process that is gone."""
    asides = _asides(path)
    if not asides or _has_checkpoint(path):
        return
    if path.exists():
        remove_tree(path)
    os.replace(asides[-1], path)
    console.print(f"[yellow]{path}: an --overwrite was cut before its first checkpoint; the previous run it was "
                  "replacing is back[/yellow]")


def _check_claimable(path: Path, *, resume: bool, overwrite: bool) -> bool:
    """Refuse a folder this command may not write; returns whether the old run must be moved aside."""
    if not path.exists():
        return False
    if not path.is_dir():
        raise ConfigError(f"output_dir {path} is a file, not a folder; choose another output_dir")
    if not any(not _TEMP.match(p.name) for p in path.iterdir()):
        return False  # empty, or only what a write killed before its rename left (e.g. of the marker itself)
    if not is_run_dir(path):
        raise ConfigError(f"output_dir {path} is not empty and is not a multidistill run (no {RUN_MARKER}); "
                          "it is never resumed or overwritten: choose an empty or new output_dir")
    if resume:
        return False
    if not overwrite:
        raise ConfigError(f"output_dir {path} already holds a run; pass --resume to continue it "
                          f"or --overwrite to replace it")
    return True


@contextlib.contextmanager
def claim_output_dir(path: Path, *, resume: bool, overwrite: bool) -> Iterator[None]:
    """Hold run folder ``path`` for the block: lock it, refuse what is not ours, mark it, replace an old run.

    Refuses (ConfigError) a folder another process is writing, a non-empty folder that is not a run, and an
    existing run unless resuming or overwriting it. See the module docstring for what `--overwrite` does with
    the old run when the block finishes or raises.
    """
    path = Path(path)
    with hold_lock(path, "output_dir"):
        _settle_cut_overwrite(path)
        aside = None
        if _check_claimable(path, resume=resume, overwrite=overwrite):
            aside = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, aside)
        path.mkdir(parents=True, exist_ok=True)
        if not (path / RUN_MARKER).is_file():
            write_json(path / RUN_MARKER, {"format_version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        try:
            yield
        except BaseException as exc:
            if aside is not None:
                _stopped_overwrite(exc, path, aside)
            raise
        for old in _asides(path):  # this run and any earlier cut overwrite of it are replaced now
            remove_tree(old)


@contextlib.contextmanager
def claim_run_root(root: Path, *, legacy: tuple[str, ...]) -> Iterator[None]:
    """Hold a recipe's or the demo's output folder for the block: lock it, refuse a non-empty folder that is not a
    multidistill run (no marker, and none of the ``legacy`` entries of a root made before markers), then create
    it and mark it. Stage folders inside are claimed by the stage runner and by `claim_output_dir`."""
    root = Path(root)
    with hold_lock(root, "output_dir"):
        check_run_root(root, legacy=legacy)
        root.mkdir(parents=True, exist_ok=True)
        if not (root / RUN_MARKER).is_file():
            write_json(root / RUN_MARKER, {"format_version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        yield


def check_run_root(root: Path, *, legacy: tuple[str, ...]) -> None:
    """Refuse an output folder a run may not use: a file, or a non-empty folder that is not a multidistill run (no
    marker, and none of the ``legacy`` entries of a root made before markers). Reads only."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"output_dir {root} is a file, not a folder; choose another output_dir")
    ours = (root / RUN_MARKER).is_file() or any((root / name).exists() for name in legacy)
    if root.is_dir() and any(root.iterdir()) and not ours:
        raise ConfigError(f"output_dir {root} is not empty and is not a multidistill run (no {RUN_MARKER}); "
                          "choose an empty or new output_dir")


def refuse_foreign_overwrite(folder: Path, what: str, markers: tuple[str, ...]) -> None:
    """Before ``folder`` is replaced (an export's `--overwrite`): refuse it unless it is empty or holds one of
    ``markers`` (the files our writers put there), so a folder of other files is never deleted."""
    if folder.is_dir() and any(folder.iterdir()) and not any(_our_marker(folder / name) for name in markers):
        raise ConfigError(f"{what} {folder} is not empty and holds no multidistill output ({' or '.join(markers)}); "
                          "--overwrite replaces only our own folders: choose an empty or new folder")


def _our_marker(path: Path) -> bool:
    """Whether ``path`` is a marker our writers put there: an export.json must also say it is an export of ours
    (any tool may write a file of that name)."""
    if not path.is_file():
        return False
    if path.name != "export.json":
        return True
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("kind") in ("onnx", "hf") and "source" in record


def _stopped_overwrite(exc: BaseException, path: Path, aside: Path) -> None:
    if _has_checkpoint(path):
        add_note(exc, f"the run this --overwrite replaces is kept in {aside} until this one finishes "
                      "(--resume continues it)")
        return
    remove_tree(path)
    os.replace(aside, path)
    add_note(exc, f"--overwrite stopped before its first checkpoint: {path} holds the previous run again")


def save_config(config: BaseModel, path: Path) -> None:
    with atomic_file(path) as handle:
        dump_yaml(config.model_dump(mode="json"), handle)


# What a run or a model folder holds of its own: an output option must not replace it (a model that no longer
# loads, metrics that no longer match the model card).
RUN_RECORDS = frozenset({"metrics.json", "config.yaml", "command.json", "stage.json", "summary.json", "recipe.yaml",
                         "train_summary.json", "log.txt", "README.md", RUN_MARKER})
# models.multitask.MODEL_CONFIG_FILE and export's EXPORT_FILE, named here so that this light module imports neither
MODEL_MARKERS = ("multidistill_model.json", "export.json")


def refuse_output_over_a_run(path: Path, option: str, suffix: str | None = ".json") -> None:
    """Refuse, naming ``option``, an output file that is not a ``suffix`` file (a data file would be replaced),
    that lies inside a model or export folder, or that would replace one of a run folder's own records."""
    if suffix is not None and path.suffix.lower() != suffix:
        raise ConfigError(f"{option} {path}: give a {suffix} file (it is written as {suffix[1:].upper()})")
    for folder in path.resolve().parents:
        if any((folder / marker).is_file() for marker in MODEL_MARKERS):
            raise ConfigError(f"{option} {path} is inside the model folder {folder}; writing there could replace "
                              "its weights or settings: write it elsewhere")
    if path.name in RUN_RECORDS and (path.resolve().parent / RUN_MARKER).is_file():
        raise ConfigError(f"{option} {path} would replace the run's own {path.name}; choose another file name")

