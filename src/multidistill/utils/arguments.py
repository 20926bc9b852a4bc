"""One reading of the list arguments of the Python API: a bare string is one item (or a CLI-style comma list of
names), never a list of its characters."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from multidistill.errors import ConfigError


def as_list(value: Any, argument: str, *, commas: bool = False) -> list | None:
    """``value`` as a list, for the argument named ``argument``: None stays None, one str or path is one item,
    and with ``commas`` a str is comma-separated names as the CLI's options take them (`"sst2,mrpc"`; an empty
    item between names is refused). Any other iterable is listed; anything else is a TypeError naming the argument."""
    if value is None:
        return None
    if isinstance(value, str) and commas:
        names = [name.strip() for name in value.split(",")]
        if any(names) and not all(names):
            raise ConfigError(f"{argument} {value!r} has an empty item between its commas; give names like a,b")
        return [name for name in names if name]  # "" or "," names nothing: the caller says what is missing
    if isinstance(value, str | bytes | os.PathLike):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, dict):
        return list(value)
    raise TypeError(f"{argument} takes a list, not {type(value).__name__}: {value!r}")
