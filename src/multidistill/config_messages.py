"""Config validation errors as users read them: the key at fault, where its value came from, and a hint.

pydantic's messages are right but terse ("Input should be a valid string"); the cause is most often YAML reading
an unquoted value as something else (`no` as false, `007` as 7, `2024-01-01` as a date), a list written the
shell's way (`a,b`), or a misspelt key. Each line here names the key, says `(from --set)` where an override gave
it, and adds the hint that fits.
"""

from __future__ import annotations

import datetime
import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from multidistill.errors import ConfigError
from multidistill.utils.suggest import closest_name

_WRONG_TYPE = frozenset({"string_type", "int_type", "float_type", "int_from_float", "bool_type", "literal_error",
                         "model_type", "dict_type", "model_attributes_type"})
# A comma or space then `key.path=` inside one override's value: several overrides joined into one str.
_JOINED = re.compile(r"[,\s]\s*(?=[A-Za-z_][\w.-]*=)")


def format_validation_error(exc: ValidationError, source: str, overrides: Sequence[str] = (),
                            schema: type[BaseModel] | None = None) -> str:
    """One line per error: ``key '<dotted key>': <message>[ (from --set)][; hint]``, under ``<source>``.

    ``overrides`` are the run's `--set` items (an error on a key one of them set says so); ``schema`` is the
    validated model, whose field names give the suggestion for an unknown key.
    """
    set_keys = [item.partition("=")[0].strip() for item in overrides]
    lines = [f"{source}: invalid config"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check spelling)" + _suggestion(schema, loc)
        else:
            msg = err["msg"] + _hint(err)
        related = [item for item, set_key in zip(overrides, set_keys, strict=True) if _related(key, set_key)]
        if related:
            msg += " (from --set)" + "".join(_joined_hint(item) for item in related)
        lines.append(f"  key '{key}': {msg}")
    return "\n".join(lines)


def _related(key: str, set_key: str) -> bool:
    """Whether ``set_key`` (an override's path) gave the value at ``key``, or a section holding it."""
    return key == set_key or key.startswith(set_key + ".") or set_key.startswith(key + ".")


def _joined_hint(item: str) -> str:
    """A hint for an override whose value holds further ``key=value`` items after a comma (one str is one
    override, so the rest became part of the first one's value); empty otherwise."""
    if not _JOINED.search(item.partition("=")[2]):
        return ""
    return (f"; '{item}' holds several overrides in one: give each its own --set, or in Python its own list "
            f"item: {_JOINED.split(item)!r}")


def refuse_joined_overrides(config: BaseModel, overrides: Sequence[str]) -> None:
    """Refuse an override whose value holds further ``key=value`` items, each naming a field of ``config`` (the
    validated config): `output_dir=runs/a,train.epochs=2` set output_dir to the whole text and left train.epochs as
    it was, silently, whenever the first key takes any str. A value whose later items name no field is kept, and
    so is a YAML-quoted one: quotes say the text is meant (a folder named `sweeps/lr=1e-3,train.epochs=3`)."""
    for item in overrides:
        key, _, value = item.partition("=")
        pieces = _JOINED.split(value)
        if value.strip()[:1] in ("'", '"') or len(pieces) < 2:
            continue
        if all(_names_field(config, piece.partition("=")[0].strip()) for piece in pieces[1:]):
            raise ConfigError(f"--set '{item}': holds several overrides in one, so key '{key.strip()}' would be set to "
                              f"the whole text {value!r}: give each its own --set, or in Python its own list item: "
                              f"{_JOINED.split(item)!r}; if that text is meant, quote it in YAML (inside the "
                              f"shell's own quotes): --set '{key.strip()}=\"{value}\"'")


def _names_field(config: BaseModel, dotted: str) -> bool:
    """Whether ``dotted`` (``a.b.c``) is a path of fields through ``config``'s nested sections."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            return False
        node = getattr(node, part)
    return True


def _hint(err: dict) -> str:
    """What most likely went wrong, for type errors whose input YAML read as another type."""
    value = err.get("input")
    if err["type"] == "list_type" and isinstance(value, str) and "," in value:
        return f"; write a list in brackets: [{value}]"
    if err["type"] not in _WRONG_TYPE or isinstance(value, str | dict | list):
        return ""
    if isinstance(value, bool):
        return (f"; YAML read an unquoted yes/no/on/off/true/false as {str(value).lower()}: quote it (\"no\") if "
                "you meant the text")
    if isinstance(value, int | float) and err["type"] not in ("int_type", "int_from_float", "float_type"):
        return f"; YAML read the unquoted value as the number {value!r}: quote it if you meant the text"
    if isinstance(value, datetime.date):
        return f"; YAML read the unquoted value as the date {value.isoformat()}: quote it if you meant the text"
    return ""


def _suggestion(schema: type[BaseModel] | None, loc: tuple) -> str:
    """`` (did you mean 'x'?)`` with the closest key the section at ``loc[:-1]`` has, when one is close."""
    if schema is None or not loc or not isinstance(loc[-1], str):
        return ""
    names = _field_names(schema, loc[:-1])
    close = closest_name(loc[-1], names) if names else None
    if close:
        return f"; did you mean '{close}'?"
    # A key one section too high (student.lr for student.train.lr): the sections below that hold it.
    deeper = sorted(name for name in names if loc[-1] in _field_names(schema, (*loc[:-1], name)))
    if deeper:
        return "; did you mean " + " or ".join(f"'{'.'.join(map(str, (*loc[:-1], name, loc[-1])))}'"
                                               for name in deeper) + "?"
    return ""


def _field_names(schema: type[BaseModel], path: tuple) -> set[str]:
    """The field names of the section at ``path`` under ``schema`` (empty where the path leads elsewhere)."""
    candidates: list[Any] = [schema]
    for part in path:
        following: list[Any] = []
        for node in _unwrapped(candidates):
            if isinstance(node, type) and issubclass(node, BaseModel):
                if isinstance(part, str) and part in node.model_fields:
                    following.append(node.model_fields[part].annotation)
            elif get_origin(node) in (list, tuple) and isinstance(part, int):
                following.extend(get_args(node)[:1])
            elif get_origin(node) is dict and isinstance(part, str):
                following.extend(get_args(node)[1:2])
        candidates = following
    return {name for node in _unwrapped(candidates) if isinstance(node, type) and issubclass(node, BaseModel)
            for name in node.model_fields}


def _unwrapped(annotations: list[Any]) -> list[Any]:
    """The annotations with Annotated, Optional and unions opened up."""
    out: list[Any] = []
    for annotation in annotations:
        origin = get_origin(annotation)
        if origin is Annotated:
            out.extend(_unwrapped([get_args(annotation)[0]]))
        elif origin in (Union, types.UnionType):
            out.extend(_unwrapped(list(get_args(annotation))))
        else:
            out.append(annotation)
    return out
