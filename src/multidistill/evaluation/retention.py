"""Retention: how much of a reference model's dev score another model keeps, over the tasks both were scored on.

Every retention figure (recipe summaries, report.md and its plot, benchmark scripts) comes from `retention`,
so a student over fewer tasks than its teacher is compared with the teacher's scores on those tasks only,
never with the teacher's average over tasks the student does not have.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from multidistill.evaluation.metrics import average_score

# Retention % past this band is read as "the reference's score is near 0", not as retention: a pearson of 0.011 on a
# tiny model makes ratios of thousands of %. The report's bars are cut at its edges and hatched; its table marks
# such cells (`OUT_OF_RANGE_MARK`).
RETENTION_RANGE = (-50.0, 200.0)
OUT_OF_RANGE_MARK = "‡"


def out_of_range(ratio: float | None) -> bool:
    """Whether a retention ratio (0.973 for 97.3%) lies outside `RETENTION_RANGE`."""
    return ratio is not None and not RETENTION_RANGE[0] <= 100 * ratio <= RETENTION_RANGE[1]


@dataclass(frozen=True)
class Retention:
    """A model's mean main score over ``tasks`` divided by the reference's mean over the same tasks."""

    ratio: float
    score: float
    reference_score: float
    tasks: tuple[str, ...]


def retention(scores: Mapping[str, float | None], reference: Mapping[str, float | None],
              tasks: Iterable[str] | None = None) -> Retention | None:
    """Retention of ``scores`` ({task: main score}) against ``reference`` over the tasks both have.

    ``tasks`` limits (and orders) the tasks considered (default: those of ``scores``). None when the two
    share no scored task, or when the reference's mean over them is not positive (a ratio against a CoLA
    MCC at or below 0 means nothing).
    """
    wanted = list(tasks) if tasks is not None else list(scores)
    shared = tuple(t for t in dict.fromkeys(wanted) if scores.get(t) is not None and reference.get(t) is not None)
    if not shared:
        return None
    score = average_score({t: float(scores[t]) for t in shared})  # type: ignore[arg-type]
    reference_score = average_score({t: float(reference[t]) for t in shared})  # type: ignore[arg-type]
    if not reference_score > 0:
        return None
    return Retention(score / reference_score, score, reference_score, shared)
