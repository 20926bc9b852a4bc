"""The closest known name to a mistyped one, for "did you mean" hints in error messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name that differs from ``name`` only in case, else the closest by `difflib`, else None."""
    known = sorted(set(known))
    same = [k for k in known if k.lower() == str(name).lower()]
    close = same or difflib.get_close_matches(str(name), known, n=1)
    return close[0] if close else None
