"""Names that print the same but are other strings: Unicode forms (a precomposed 'é' or 'e' and a combining accent)
and other white space (a no-break space). Rows read them as different names, and messages printed them alike."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable


def _shown(name: str) -> str:
    """How ``name`` reads: its composed form (NFC) with white space runs, no-break spaces included, as one space.
    Case is kept, and so are compatibility characters (NFKC would merge `m²` with `m2`): those differ visibly."""
    return " ".join(unicodedata.normalize("NFC", name).split())


def lookalike_pair(names: Iterable[str]) -> tuple[str, str] | None:
    """The first two distinct ``names`` that read the same (`_shown`), or None."""
    seen: dict[str, str] = {}
    for name in names:
        first = seen.setdefault(_shown(name), name)
        if first != name:
            return first, name
    return None


def spelled(text: str, like: Iterable[str]) -> str:
    """`` (spelled 'caf\\xe9', ...)`` where ``text`` reads as one of ``like`` but is another string, so that a message
    quoting both shows where they differ; empty otherwise."""
    alike = [name for name in like if name != text and _shown(name) == _shown(text)]
    if not alike:
        return ""
    return f" (spelled {ascii(text)}; the task's {', '.join(ascii(name) for name in alike)}: write them one way)"
