"""The `multidistill report` command (registered in multidistill.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from multidistill.utils.console import stdout_console

console = stdout_console()


def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run folder holding summary.json (a recipe's output_dir), or a "
                                                 "single training run's metrics.json; benchmark.json and stage "
                                                 "folders are used when present.")],
    out: Annotated[Path | None, typer.Option(help="Folder to write the report to (default: RUN_DIR/report); "
                                                  "an existing one is replaced once the new report is complete.")]
    = None,
) -> None:
    """Write a report of a run: report.md with quality and speed tables, and PNG figures.

    Reads RUN_DIR/summary.json (required; a single train-teacher or distill run's metrics.json stands in for it as
    one row), RUN_DIR/benchmark.json (optional: speed table and the score vs latency/throughput figure) and each
    stage folder's train_history.json, tensorboard events and stage.json (optional: training curves, time per
    stage). Sections whose inputs are missing are replaced by a note saying why; a summary.json that stages made
    since no longer describe is flagged at the top of the report and on stderr.
    """
    from multidistill.report.build import build_report

    console.print(f"report: {build_report(run_dir, out)}")
