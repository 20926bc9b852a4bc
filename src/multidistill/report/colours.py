"""One colour per model in every figure of a report.

A model has several names in one run folder: its summary.json row (``teacher teacher-seed-1``, ``student (joint)``),
its benchmark.json entry (``teacher-seed-1``, named after its folder) and its stage folder (``teacher-seed-1``).
`model_keys` maps them all to one key, and `model_colours` gives each key a colour, hue-distinct ones first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from matplotlib import colormaps
from matplotlib.colors import to_rgb

from multidistill.report.inputs import is_ensemble, row_stages

# tab20 pairs a dark and a light shade of each hue: its even entries (the tab10 hues) first, so the first ten
# models never share a hue; the light shades only past ten.
_TAB20 = colormaps["tab20"].colors
PALETTE: tuple = (*_TAB20[0::2], *_TAB20[1::2])
_TRAILING_NOTE = re.compile(r"\s*\([^()]*\)$")  # "student (joint)" -> "student"


def palette(count: int) -> list:
    """``count`` colours from `PALETTE` (repeating past its 20)."""
    return [PALETTE[i % len(PALETTE)] for i in range(count)]


def text_colour(fill: Any) -> str:
    """Black or white, whichever contrasts more with ``fill`` (WCAG's contrast ratio of relative luminances)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(fill)]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) else "white"


def _stage_of(name: str, stages: set[str]) -> str | None:
    """The stage folder a name refers to: itself, itself without a trailing "(...)" note, or its last word
    (``teacher teacher-seed-1``)."""
    for candidate in (name, _TRAILING_NOTE.sub("", name), name.rsplit(" ", 1)[-1]):
        if candidate in stages:
            return candidate
    return None


def _folder_stage(path: Any, stages: set[str]) -> str | None:
    """The stage folder a benchmark model's path lies in (``runs/x/student/model`` -> ``student``)."""
    if not isinstance(path, str) or not path:
        return None
    parts = PurePath(path).parts
    return next((part for part in reversed(parts) if part in stages), None)


def model_keys(rows: Mapping[str, dict], stages: Sequence[str], models: Mapping[str, Mapping]) -> dict[str, str]:
    """The key of every summary row, stage folder and benchmark model: names of one model share a key.

    A row's key is the stage folder it comes from (its recorded ``stages`` when it has one, else by name); a row
    made of several stages (per-task fine-tunes) keys those stages to itself. A benchmark model's key is the stage
    folder its path lies in, else its name read as a row's. Anything else is its own key.
    """
    known = set(stages)
    keys: dict[str, str] = {}
    owner: dict[str, str] = {}  # stage -> the one row made of it with others
    for name, row in rows.items():
        recorded = [s for s in row_stages(row) if s in known]
        if len(recorded) == 1:
            keys[name] = recorded[0]
        elif len(recorded) > 1 and not is_ensemble(name, row):
            keys[name] = name
            for stage in recorded:
                owner.setdefault(stage, name)
        else:
            keys[name] = _stage_of(name, known) or name
    for stage in stages:
        keys.setdefault(stage, owner.get(stage, stage))
    for name, model in models.items():
        stage = _folder_stage(model.get("path"), known) or _stage_of(name, known)
        keys.setdefault(name, keys.get(stage, stage) if stage else keys.get(name, name))
    return keys


def model_colours(rows: Mapping[str, dict], reference: str, stages: Sequence[str],
                  models: Mapping[str, Mapping]) -> dict[str, Any]:
    """name -> colour for every row, stage and benchmark model, one colour per key (`model_keys`).

    Keys are coloured in this order: the reference, the other rows, the stage folders, then benchmark models
    that are none of those; so adding benchmark.json recolours nothing already drawn.
    """
    keys = model_keys(rows, stages, models)
    order = [keys[reference], *(keys[n] for n in rows), *(keys[s] for s in stages), *(keys[m] for m in models)]
    unique = list(dict.fromkeys(order))
    colour_of = dict(zip(unique, palette(len(unique)), strict=True))
    return {name: colour_of[key] for name, key in keys.items()}
