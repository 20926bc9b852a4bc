"""Read the versioned JSON files that describe our artifacts (model configs, store manifests)."""

from __future__ import annotations

import json
from pathlib import Path

from multidistill.errors import MultidistillError


def read_versioned_json(path: Path, version: int | tuple[int, ...], error: type[MultidistillError]) -> dict:
    """Parse ``path`` and check its ``format_version`` (one, or any of several); problems raise ``error`` naming
    the file."""
    versions = version if isinstance(version, tuple) else (version,)
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from exc
    found = payload.get("format_version") if isinstance(payload, dict) else None
    if not isinstance(payload, dict) or type(found) is not int or found not in versions:
        expected = " or ".join(map(str, versions))
        newer = " (written by a newer multidistill: upgrade it)" if type(found) is int and found > max(versions) else ""
        raise error(f"{path}: unsupported format_version {found!r} (expected {expected}){newer}")
    return payload
