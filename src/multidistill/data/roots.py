"""Where relative task file paths resolve: the data root, its documented defaults and what a model records.

Order: the config key `data.data_root` (or a command's `--data-root`); for a command given a saved model,
the root that model was trained with, while it still exists; the environment variable
`MULTIDISTILL_DATA_ROOT`; the current folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from multidistill.errors import MultidistillError
from multidistill.utils.paths import PACKAGE_PREFIX, resolve_path

DATA_ROOT_ENV = "MULTIDISTILL_DATA_ROOT"
HOW_TO_SET = ("point data.data_root (in the config, or --set data.data_root=DIR), --data-root (commands that read a "
              f"saved model) or the {DATA_ROOT_ENV} environment variable (read when the config sets no data_root)")


def resolve_data_root(data_root: str | Path | None) -> Path:
    """The absolute folder for ``data_root`` (None: ``$MULTIDISTILL_DATA_ROOT``, else the current folder);
    ``pkg:<module>/<dir>`` roots are resolved to the installed package's folder."""
    if data_root is None:
        data_root = os.environ.get(DATA_ROOT_ENV) or Path.cwd()
    return Path(resolve_path(str(data_root))).expanduser().absolute()


def recorded_data_root(data_root: str | Path | None) -> str:
    """What a model folder records as the root it was trained with: a ``pkg:`` root as written (it moves with
    the installation), anything else as the absolute folder it resolved to."""
    if data_root is not None and str(data_root).startswith(PACKAGE_PREFIX):
        return str(data_root)
    resolved = resolve_data_root(data_root)
    normal = os.path.normpath(resolved)  # `runs/../data` recorded as `data`, unless `runs` is a link elsewhere
    try:
        return normal if os.path.samefile(normal, resolved) else str(resolved)
    except OSError:  # not there (yet): as written
        return str(resolved)


def existing_data_root(recorded: object) -> str | None:
    """``recorded`` (a model's saved data root) when it still names an existing folder, else None."""
    if not isinstance(recorded, str) or not recorded:
        return None
    try:
        return recorded if resolve_data_root(recorded).is_dir() else None
    except MultidistillError:  # a pkg: root whose package is no longer installed
        return None


def describe_data_root(root: Path) -> str:
    """Where ``root`` came from, as far as can be told, for a file-not-found message."""
    from_env = os.environ.get(DATA_ROOT_ENV)
    if from_env and resolve_data_root(from_env) == root:
        return f"from {DATA_ROOT_ENV}"
    unset = "" if from_env else f"; {DATA_ROOT_ENV} is not set"
    if root == Path.cwd().absolute():
        return f"the current folder{unset}"
    return f"from data.data_root, --data-root or the model folder{unset}"
