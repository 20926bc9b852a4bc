"""The recipe's closing table: every teacher and student on the dev sets, with retention vs the teacher."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from safetensors import safe_open

from multidistill.evaluation.metrics import average_score
from multidistill.evaluation.retention import retention
from multidistill.models.domain_branch import is_training_only
from multidistill.models.multitask import WEIGHTS_FILE
from multidistill.utils.atomic import write_json

console = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes get a readable table


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
                  notes: list[str] | None = None) -> dict:
    """Write ``out/summary.json`` and print the table; ``rows`` maps a name to {metrics, params?}.

    Each row's average and retention are taken over ``tasks`` (the recipe's), and retention over the tasks the
    row and the reference both have: a teacher scored on more tasks than the recipe uses is compared on these
    only. ``notes`` (settings that were chosen for the user, e.g. a missing POS tagger) go into the JSON and
    under the table.
    """
    base = rows[reference]["metrics"]["main"]
    summary: dict = {"reference": reference, "tasks": tasks, "rows": {}, "notes": list(notes or [])}
    for name, row in rows.items():
        kept = retention(row["metrics"]["main"], base, tasks)
        summary["rows"][name] = {**row, "retention": kept.ratio if kept else None,
                                 "retention_tasks": list(kept.tasks) if kept else []}
    write_json(out / "summary.json", summary)
    table = Table(title=f"dev scores (retention vs {reference})",
                  caption="average: over the tasks shown; retention: over those the row shares with the reference")
    for column in ("model", *tasks, "average", "retention %", "parameters"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, row in summary["rows"].items():
        main = row["metrics"]["main"]
        shown = {t: main[t] for t in tasks if t in main}
        params = row.get("params")
        table.add_row(name, *(f"{main[t]:.4f}" if t in main else "" for t in tasks),
                      f"{average_score(shown):.4f}" if shown else "",
                      f"{100 * row['retention']:.1f}" if row["retention"] is not None else "",
                      f"{params / 1e6:.1f}M" if params else "")
    console.print(table)
    for note in summary["notes"]:
        console.print(f"note: {note}", style="yellow", markup=False)  # notes hold brackets: `multidistill[pos]`
    console.print(f"summary: {out / 'summary.json'}")
    return summary
