#!/usr/bin/env python
"""Write docs/config.md: every config key of every command and recipe, from the pydantic models themselves.

Each settings class gets one table (key, type, default, description); a key whose value is another class links
to that class's table. `tests/test_config_reference.py` checks the committed page equals what this prints, so
the reference cannot fall behind the code.

    python scripts/config_reference.py [--out docs/config.md]
"""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

HEADER = """# Configuration reference

Generated from the settings classes by `python scripts/config_reference.py` (a test fails when this page and the
code disagree). A YAML file (or `--set key.path=value`, values read as YAML) sets these keys; unknown keys are
refused. A section given in part keeps its other keys' defaults, and `--set section={{...}}` is merged into it
(`--set section={{}}` empties it). One `--set` is one override: `--set output_dir=runs/a,train.epochs=2` is refused
(output_dir would take the whole text) unless its value is quoted as YAML text (`--set 'output_dir="a,b=c"'`).

The demo's defaults are shown as on a CPU with native bf16 (AVX512-BF16 or AMX); elsewhere its `bf16` keys
default to false.

Where the config file starts:

| command | settings class |
|---|---|
{roots}

Layer numbers: `model.student_layers` counts the encoder's Transformer layers from 0 (the first layer); the
feature losses' `layer_map` and `soft-targets --hidden-layers` count hidden states, where 0 is the embedding
output and l the output of Transformer layer l (so `student_layers: [0, 2, 4]` keeps the layers whose outputs
are hidden states 1, 3 and 5).
"""


def roots() -> list[tuple[str, type[BaseModel]]]:
    """(command, class) for every entry point that reads a settings file."""
    from multidistill.config import TeacherRunConfig
    from multidistill.recipes.demo import DemoConfig
    from multidistill.recipes.registry import discover_recipes

    found = [("`train-teacher`, `distill`", TeacherRunConfig)]
    for name, entry in sorted(discover_recipes().items()):
        if entry.schema.__module__.startswith("multidistill."):  # the package's own (not a plugin's, a test's)
            found.append((f"`run` with `recipe: {name}`", entry.schema))
    found.append(("`demo` (`--config`, `--set`)", DemoConfig))
    return found


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The settings classes an annotation refers to (inside Optional, unions, lists and dicts)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _models(get_args(annotation)[0])
    if origin in (Union, types.UnionType, list, tuple, dict):
        return [model for arg in get_args(annotation) for model in _models(arg)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def type_text(annotation: Any) -> str:
    """A short, readable type: `int`, `list of str`, `[ModelConfig](#modelconfig) or null`, `'a' or 'b'`."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return type_text(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        rest = " or ".join(type_text(arg) for arg in args if arg is not type(None))
        return f"{rest} or null" if type(None) in args else rest
    if origin is Literal:
        return " or ".join(f"`{value!r}`" for value in get_args(annotation))
    if origin in (list, tuple):
        return f"list of {type_text(get_args(annotation)[0])}" if get_args(annotation) else "list"
    if origin is dict:
        args = get_args(annotation)
        return f"map of {type_text(args[0])} to {type_text(args[1])}" if args else "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: Any) -> str:
    """The default as YAML-ish text; a settings class at its own defaults says so."""
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        preset = value.model_dump(mode="json", exclude_defaults=True)
        return "its defaults" if not preset else f"its defaults, with `{json.dumps(preset)}`"
    if isinstance(value, list) and value and all(isinstance(item, BaseModel) for item in value):
        value = [item.model_dump(mode="json", exclude_defaults=True) for item in value]
    return f"`{json.dumps(value)}`"


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def reference() -> str:
    """The whole page; the demo's machine-dependent defaults as on a CPU with native bf16 (as the header says)."""
    from unittest import mock

    with mock.patch("multidistill.recipes.demo.cpu_has_fast_bf16", return_value=True):
        return _reference()


def _reference() -> str:
    entry_points = roots()
    lines = [HEADER.format(roots="\n".join(f"| {command} | [{model.__name__}](#{model.__name__.lower()}) |"
                                           for command, model in entry_points))]
    seen: set[type[BaseModel]] = set()
    queue = [model for _, model in entry_points]
    while queue:
        model = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        lines += [f"## {model.__name__}", "", cell(doc), "", "| key | type | default | description |",
                  "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            lines.append(f"| `{name}` | {cell(type_text(field.annotation))} | {cell(default_text(field))} | "
                         f"{cell(field.description or '')} |")
            queue += [found for found in _models(field.annotation) if found not in seen]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "config.md")
    args = parser.parse_args()
    args.out.write_text(reference())
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
