"""What `build_signal_store` is given, read as `multidistill soft-targets` reads it: the teacher folders, the data
to label (task names filled in with the first teacher's own specs and data root) and the hidden layers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from multidistill.config import DataConfig, TaskRef
from multidistill.config_messages import format_validation_error
from multidistill.errors import ConfigError, require_distinct
from multidistill.utils.arguments import as_list

DEFAULT_CACHE_DIR = ".cache/multidistill"
TaskNames = Sequence[str | TaskRef | dict] | str


def teacher_folders(teacher_dirs: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """The teacher folders (one path is one teacher); the same folder twice is refused: an "ensemble" of one
    teacher twice averages nothing and costs twice."""
    folders = [Path(d) for d in as_list(teacher_dirs, "teacher_dirs (--teacher)") or []]
    same = [str(d) for i, d in enumerate(folders) if d.resolve() in {e.resolve() for e in folders[:i]}]
    if same:
        raise ConfigError(f"--teacher names the same folder twice: {', '.join(same)} (teacher_dirs lists each "
                          "teacher once)")
    return folders


def store_data(teachers: Path | Sequence[Path], data: DataConfig | TaskNames | None, data_root: str | None,
               cache_dir: str) -> DataConfig:
    """The data to label: ``data`` itself when it is a DataConfig; else these tasks (names, `TaskRef`s or their
    mappings, or one comma-separated str; None: every task with a head in a teacher, in the teachers' order) read
    with the task specs of the first teacher that has each (teachers fine-tuned one task each bring their own),
    under ``data_root`` or else the data root the teachers were trained with (as soft-targets does), so the store
    reads exactly the data the teachers were built for. Teachers that bring tasks from different data roots need
    ``data_root``."""
    from multidistill.models.loading import saved_data_root
    from multidistill.models.multitask import read_model_tasks

    if isinstance(data, DataConfig):
        given = [name for name, value, default in (("data_root", data_root, None),
                                                   ("cache_dir", cache_dir, DEFAULT_CACHE_DIR)) if value != default]
        if given:
            raise ConfigError(f"{' and '.join(given)} apply to tasks given by name; the DataConfig given as data "
                              "holds its own: set them there")
        return data
    teachers = [teachers] if isinstance(teachers, str | os.PathLike) else list(teachers)
    specs, source = {}, {}  # each task's spec and the teacher it comes from: the first that has it
    for folder in teachers:
        for spec in read_model_tasks(folder):
            if spec.name not in specs:
                specs[spec.name], source[spec.name] = spec, folder
    refs = as_list(data, "data (--tasks)", commas=True)
    if refs is None:
        refs = [name for name, spec in specs.items() if spec.has_head]
    try:
        refs = [ref if isinstance(ref, TaskRef) else TaskRef.model_validate(ref) for ref in refs]
        names = [ref.name for ref in refs]
        require_distinct("--tasks", names)
        if data_root is None:
            roots = {saved_data_root(source.get(name, teachers[0])) for name in names}
            if len(roots) > 1:
                shown = sorted(root or "none recorded, or no longer there" for root in roots)
                raise ConfigError(f"the tasks {names} come from teachers trained under different data roots "
                                  f"({'; '.join(shown)}): give --data-root (data_root), the folder their task files "
                                  "are read from")
            data_root = saved_data_root(source.get(names[0], teachers[0])) if names else None
        return DataConfig(tasks=refs, data_root=data_root, cache_dir=cache_dir,
                          task_specs=[specs[name] for name in names if name in specs])
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "the tasks given to build_signal_store",
                                                  schema=DataConfig)) from exc


def layer_numbers(hidden_layers: Sequence[int | str] | str | None) -> list[int] | None:
    """The hidden layers to store as numbers (a str is comma-separated, `"0,2,4"`); a word that is not a layer
    number, or a layer given twice, is refused."""
    layers = as_list(hidden_layers, "hidden_layers (--hidden-layers)", commas=True)
    if layers is None:
        return None
    bad = [n for n in layers if not (isinstance(n, str) and n.isdigit()) and (isinstance(n, bool) or
                                                                               not isinstance(n, int))]
    if bad:
        raise ConfigError(f"--hidden-layers (hidden_layers): {bad} are not layer numbers; give them like 0,2,4,6")
    numbers = [int(n) for n in layers]
    require_distinct("--hidden-layers (hidden_layers)", [str(n) for n in numbers])
    return numbers


def split_names(splits: Sequence[str] | str) -> tuple[str, ...]:
    """The splits to label (a str is comma-separated, `"train,dev"`), each once."""
    names = as_list(splits, "splits (--splits)", commas=True) or []
    if not names:
        raise ConfigError("--splits (splits) is empty; name the splits to label, e.g. train")
    require_distinct("--splits", names)
    return tuple(names)
