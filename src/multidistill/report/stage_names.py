"""How a run's stage folders are named and grouped: seeds of one stage (``student-books-seed-2``), the label
of their mean (``student-books (mean of 3 seeds)``), and families of stages (``student-books``, ``student-dvd``
-> ``student``). The training-curves figure and the report's time table group stages the same way."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_SEED_SUFFIX = re.compile(r"-seed-\d+$")
_MEAN_LABEL = re.compile(r"^(?P<core>.*?)(?P<seeds> \(mean of \d+ seeds\))?$")  # parses what mean_label writes


def mean_label(name: str, seeds: int) -> str:
    """The label of the mean of ``seeds`` seeds of stage ``name``."""
    return f"{name} (mean of {seeds} seeds)"


def without_seeds_label(label: str) -> str:
    """``student-books (mean of 3 seeds)`` -> ``student-books``; other labels as they are."""
    return _MEAN_LABEL.match(label)["core"]


def without_seed(stage: str) -> str:
    """``student-books-seed-2`` -> ``student-books``; other names as they are."""
    return _SEED_SUFFIX.sub("", stage)


def stage_families(stages: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Stages grouped by what they are: ``student-books`` and ``student-dvd`` form the family ``student``, with
    members ``books`` and ``dvd``. A stage's family is the longest ``-``-bounded prefix of its name that another
    stage's name also starts with (so ``finetune-mitkd-mnli-genre`` joins ``finetune-mitkd``, and
    ``student-nokd-books`` does not join ``student``); a family that would have one member is that stage alone. A
    ``(mean of k seeds)`` label stays on the member.

    Returns family -> [(stage, member label)], families and members in first-seen order.
    """
    cores = {stage: without_seeds_label(stage) for stage in stages}

    def family_of(stage: str) -> str | None:
        parts = cores[stage].split("-")
        for cut in range(len(parts) - 1, 0, -1):
            prefix = "-".join(parts[:cut]) + "-"
            if any(other != stage and cores[other].startswith(prefix) for other in stages):
                return prefix[:-1]
        return None

    family_by_stage = {stage: family_of(stage) for stage in stages}
    sizes = Counter(family_by_stage.values())
    families: dict[str, list[tuple[str, str]]] = {}
    for stage in stages:
        family = family_by_stage[stage]
        if family is not None and sizes[family] > 1:
            families.setdefault(family, []).append((stage, stage[len(family) + 1:]))
        else:
            families.setdefault(cores[stage], []).append((stage, stage))
    return families
