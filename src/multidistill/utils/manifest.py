"""Read the versioned JSON files that describe our artifacts (model configs, store manifests)."""

from __future__ import annotations

import json
from pathlib import Path

from multidistill.errors import MultidistillError


def read_versioned_json(path: Path, version: int, error: type[MultidistillError]) -> dict:
    """Parse ``path`` and check its ``format_version``; problems raise ``error`` naming the file."""
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != version:
        found = payload.get("format_version") if isinstance(payload, dict) else None
        raise error(f"{path}: unsupported format_version {found!r} (expected {version})")
    return payload
