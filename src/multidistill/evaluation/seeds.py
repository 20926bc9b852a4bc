"""Seed spread of a summary row: a recipe that trains each student with several seeds (Meta-KD) records every
seed's score per task (``metrics.runs``); these turn them into the mean ± standard deviation the report shows and
each seed's average over the tasks (the number a method is judged by)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def seed_averages(runs: Mapping[str, Sequence[float]], tasks: Sequence[str]) -> list[float] | None:
    """Each seed's average over ``tasks``: seed i's average is the mean of ``runs[t][i]`` over the tasks.

    None unless every task has runs and all have the same number of them (the i-th entries are then one seed's
    models), or when there is only one seed.
    """
    counts = {len(runs[t]) for t in tasks if t in runs}
    if not tasks or any(t not in runs for t in tasks) or len(counts) != 1 or counts.pop() < 2:
        return None
    return [statistics.fmean(runs[t][i] for t in tasks) for i in range(len(runs[tasks[0]]))]


def has_seeds(row: Mapping) -> bool:
    """Whether a report row holds more than one seed's score for some task."""
    return any(len(values) > 1 for values in (row.get("runs") or {}).values())


def spread_text(values: Sequence[float] | None) -> str:
    """" ± sd" (4 decimals) of several seeds' scores, for a table cell after the mean; "" for one or none."""
    return f" ± {mean_sd(values)[1]:.4f}" if values and len(values) > 1 else ""
