"""The recipe's closing table: every teacher and student on the dev sets, with retention vs the teacher."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from safetensors import safe_open

from multidistill.evaluation.baseline import (
    AT_BASELINE_MARK,
    BASELINE_MARGIN,
    TrivialBaseline,
    at_baseline,
    retention_above_baseline,
)
from multidistill.evaluation.metrics import average_score
from multidistill.evaluation.retention import retention
from multidistill.evaluation.seeds import seed_averages, spread_text
from multidistill.models.domain_branch import is_training_only
from multidistill.models.multitask import WEIGHTS_FILE
from multidistill.recipes.stages import SUMMARY, stop_if_checking
from multidistill.report.build import fmt_count
from multidistill.utils.atomic import write_json

console = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes get a readable table
BASELINE_ROW = "trivial baseline"
HEADER_WIDTH = 12  # a value column's header wraps to this width where its values are narrower
MODEL_WIDTH = 30  # the model column's width at most: longer names wrap


def count_parameters(model_dir: Path) -> int:
    """Parameters stored in a model folder's safetensors file (read from the header, no tensors loaded), without
    a Meta-KD domain branch (training only: exports drop it)."""
    total = 0
    with safe_open(str(model_dir / WEIGHTS_FILE), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
            if is_training_only(key):
                continue
            size = 1
            for dim in handle.get_slice(key).get_shape():
                size *= dim
            total += size
    return total


def write_summary(out: Path, rows: dict[str, dict], reference: str, tasks: list[str],
                  notes: list[str] | None = None, baselines: dict[str, TrivialBaseline] | None = None,
                  split: str = "dev") -> dict:
    """Write ``out/summary.json`` and print the table; ``rows`` maps a name to {metrics, params?}.

    Each row's average (``average``) is taken over the same tasks: those of ``tasks`` (the recipe's) that every
    row has (``average_tasks``; a teacher scored on more tasks than the recipe uses is averaged on these only, and
    a task no teacher was trained on is shown but not averaged, with a note); retention over the tasks the row and
    the reference both have. ``notes`` (settings that were chosen for the user, e.g. a missing POS tagger) go into
    the JSON and under the table. ``baselines`` (task -> its trivial predictor's scores on ``split``) add a
    `BASELINE_ROW`, each row's retention above it, and the tasks where a row is no better than it (marked in the
    table: not retention).
    ``split`` names the split the scores come from (the table's title; Meta-KD reports test where there is one).
    """
    stop_if_checking()  # a check pass (`StageRunner.run_all`) shows nothing: some of its stages have not run
    base = rows[reference]["metrics"]["main"]
    common = [t for t in tasks if all(t in row["metrics"]["main"] for row in rows.values())]
    averaged = common or list(tasks)
    notes = list(notes or [])
    if not common and len(rows) > 1:  # e.g. the run folders of teachers trained one task each
        notes.append("average: no task has a score in every row, so each row's average is over the tasks it was "
                     "scored on and averages of different rows are not comparable")
    elif averaged != list(tasks):
        left_out = [t for t in tasks if t not in averaged]
        notes.append(f"average: over {', '.join(averaged)}, the tasks every row was scored on; "
                     f"{', '.join(left_out)} shown but not averaged (not every row has a score there)")
    summary: dict = {"reference": reference, "split": split, "tasks": tasks, "average_tasks": averaged, "rows": {},
                     "notes": notes}
    trivial = {t: b.main for t, b in (baselines or {}).items()}
    for name, row in rows.items():
        kept = retention(row["metrics"]["main"], base, tasks)
        shown = {t: row["metrics"]["main"][t] for t in averaged if t in row["metrics"]["main"]}
        summary["rows"][name] = {**row, "average": average_score(shown) if shown else None,
                                 "retention": kept.ratio if kept else None,
                                 "retention_tasks": list(kept.tasks) if kept else []}
        if baselines:
            main = row["metrics"]["main"]
            summary["rows"][name]["retention_above_baseline"] = retention_above_baseline(main, base, trivial, tasks)
            summary["rows"][name]["at_baseline"] = [t for t in tasks if at_baseline(main.get(t), trivial.get(t))]
    if baselines:
        kept = retention(trivial, base, tasks)
        summary["baseline"] = {
            "name": BASELINE_ROW, "margin": BASELINE_MARGIN, "retention": kept.ratio if kept else None,
            "tasks": {t: {"predictor": b.predictor, "metrics": b.metrics, "main": b.main}
                      for t, b in baselines.items()},
            "main": trivial, "average": average_score({t: trivial[t] for t in averaged if t in trivial})}
    write_json(out / SUMMARY, summary)
    _print_table(summary)
    for note in summary["notes"]:
        console.print(f"note: {note}", style="yellow", markup=False)  # notes hold brackets: `multidistill[pos]`
    console.print(f"summary: {out / SUMMARY}")
    return summary


def _wrap_name(name: str, width: int) -> str:
    """``name`` on lines of at most ``width`` characters, broken after a space, ``_``, ``-`` or ``.`` (rich breaks
    on spaces only, so ``customer_support_ticket_routing_a_production`` would be cut); a longer part is left to
    the column to fold."""
    lines = [""]
    for part in re.findall(r"[^ _.-]+[ _.-]*|[ _.-]+", name):
        if lines[-1] and cell_len(lines[-1] + part.rstrip()) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(line.rstrip() for line in lines)


def _column_chunks(widths: list[int], tasks: int, room: int) -> list[list[int]]:
    """The value columns (by index; the first ``tasks`` are tasks, the rest average, retention, ...) split into
    tables that each fit ``room`` characters beside the model names (a column takes its width, 2 of padding and 1 of
    border); the columns after the tasks stay together where they fit."""
    tail = list(range(tasks, len(widths)))
    units = [[k] for k in range(tasks)] + ([tail] if sum(widths[k] + 3 for k in tail) <= room else
                                           [[k] for k in tail])
    chunks: list[list[int]] = [[]]
    for unit in units:
        if chunks[-1] and sum(widths[k] + 3 for k in chunks[-1] + unit) > room:
            chunks.append([])
        chunks[-1] += unit
    return chunks


def _print_table(summary: dict) -> None:
    tasks, baseline = summary["tasks"], summary.get("baseline")
    averaged = summary.get("average_tasks", tasks)
    over = "the tasks shown" if averaged == tasks else ", ".join(averaged)
    caption = f"average: over {over}; retention: over those the row shares with the reference"
    if baseline:
        caption += (f"; above baseline: (row - baseline) / (reference - baseline) on those averages; "
                    f"{AT_BASELINE_MARK}: below the trivial baseline or within {baseline['margin']} above it, which a "
                    f"constant predictor also reaches: not retention")
    columns = [*tasks, "average", "retention %", *(["above baseline %"] if baseline else []), "parameters"]

    def pct(value: float | None) -> str:
        return f"{100 * value:.1f}" if value is not None else ""

    cells: dict[str, list[str]] = {}
    for name, row in summary["rows"].items():
        main = row["metrics"]["main"]
        runs = row["metrics"].get("runs") or {}
        shown = {t: main[t] for t in averaged if t in main}
        flagged = set(row.get("at_baseline", []))
        params = row.get("params")
        cells[name] = [*(f"{main[t]:.4f}{spread_text(runs.get(t))}{AT_BASELINE_MARK if t in flagged else ''}"
                         if t in main else "" for t in tasks),
                       f"{average_score(shown):.4f}{spread_text(seed_averages(runs, list(shown)))}" if shown else "",
                       pct(row["retention"]),
                       *([pct(row.get("retention_above_baseline"))] if baseline else []),
                       fmt_count(params) if params else ""]
    if baseline:
        main = baseline["main"]
        cells[BASELINE_ROW] = [*(f"{main[t]:.4f}" if t in main else "" for t in tasks), f"{baseline['average']:.4f}",
                               pct(baseline["retention"]), "0.0", ""]
    # Each value column is exactly as wide as its widest value (its header wraps to that, or to HEADER_WIDTH), so a
    # score is never cut; columns that do not fit beside the model names go to a further table, not squeezed.
    widths = [max([min(cell_len(column), HEADER_WIDTH), *(cell_len(row[k]) for row in cells.values())])
              for k, column in enumerate(columns)]
    # The names give way first on a narrow terminal: at most a third of it, so values keep their full width.
    model_width = min(max(cell_len(name) for name in ["model", *cells]), MODEL_WIDTH, max(8, console.width // 3))
    room = console.width - (model_width + 3) - 1  # a column takes 2 of padding and 1 of border; 1 more closes it
    chunks = _column_chunks(widths, len(tasks), room)
    title = f"{summary.get('split', 'dev')} scores (retention vs {summary['reference']})"
    for n, chunk in enumerate(chunks):
        table = Table(title=title + (f" ({n + 1}/{len(chunks)})" if len(chunks) > 1 else ""),
                      caption=caption if n == len(chunks) - 1 else None)
        table.add_column("model", width=model_width, overflow="fold")
        for k in chunk:
            table.add_column(_wrap_name(columns[k], widths[k]), justify="right", width=widths[k], overflow="fold")
        for name, row in cells.items():
            table.add_row(name, *(row[k] for k in chunk))
        console.print(table)
    if baseline:
        for task, entry in baseline["tasks"].items():
            console.print(f"{BASELINE_ROW} on {task}: {entry['predictor']}", markup=False)
