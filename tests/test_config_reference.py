"""docs/config.md is generated from the settings classes; it must equal what the generator prints now."""

from __future__ import annotations

import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_config_reference_is_current() -> None:
    generator = runpy.run_path(str(REPO / "scripts" / "config_reference.py"))
    committed = (REPO / "docs" / "config.md").read_text()
    assert committed == generator["reference"](), (
        "docs/config.md is out of date: run `python scripts/config_reference.py` and commit the result")


def test_every_key_of_every_shipped_config_is_in_the_reference() -> None:
    """Each key a shipped config sets appears as a row of the reference (keys from Hugging Face's own configs,
    under backbone_config, and mapping keys such as task names aside)."""
    import yaml

    committed = (REPO / "docs" / "config.md").read_text()
    documented = {line.split("`")[1] for line in committed.splitlines() if line.startswith("| `")}
    free = {"backbone_config", "tasks", "task_specs", "params", "columns", "files", "domains"}

    def keys(node, parent=""):
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                if key not in free:
                    yield from keys(value, key)
        elif isinstance(node, list):
            for item in node:
                yield from keys(item, parent)

    for path in sorted((REPO / "configs").glob("*.yaml")):
        missing = sorted({key for key in keys(yaml.safe_load(path.read_text())) if key not in documented})
        assert not missing, f"{path.name}: {missing} not in docs/config.md"
