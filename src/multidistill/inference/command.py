"""The command function of `multidistill predict` (registered in cli.py).

User errors are raised as `MultidistillError` subclasses; `cli.main` prints them and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from multidistill.utils.console import stdout_console

console = stdout_console()
SHOW_SKIPPED_LINES = 10  # skipped line numbers the summary lists before "and N more"
COLUMNS_FROM = {"given": "--text-columns", "task": "the task's columns", "default": "the default columns"}
FORMAT_NAMES = {"jsonl": "JSON Lines", "csv": "CSV"}


def predict_command(
    source: Annotated[Path, typer.Argument(help="A multidistill model folder, or an ONNX export folder "
                                                "(one with export.json of kind 'onnx').")],
    task: Annotated[str, typer.Option(help="The task (head) to predict, e.g. sst2.")],
    input_path: Annotated[Path, typer.Option("--input", help="Texts to label: .csv or .tsv with a header line, or "
                                                             ".jsonl / .json (one JSON object per line).")],
    output: Annotated[Path, typer.Option(
        "--output", "--out", help="Predictions file: .jsonl for JSON Lines or .csv for CSV (other extensions are "
                                  "refused). Written atomically; never left half-written. Not '-': stdout is not "
                                  "supported.")],
    text_columns: Annotated[str | None, typer.Option(
        help="Text column(s), e.g. 'review' or 'question,answer' (default: the columns the task was trained on "
             "when the file has them, else text / sentence / text_a, or for pair tasks text_a,text_b / "
             "sentence1,sentence2 / question,sentence).")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 64,
    skip_bad_rows: Annotated[bool, typer.Option(
        help="Skip bad rows (a missing or empty text, a wrong number of fields, invalid JSON) and count them, "
             "instead of stopping with their line numbers.")] = False,
    precision: Annotated[str, typer.Option(
        help="fp32, or int8 for the quantised model of an ONNX export (model folders run in fp32).")] = "fp32",
) -> None:
    """Label every row of a CSV / TSV / JSONL file with one task of a saved model or ONNX export.

    Each output record has the input's line number, its id (when the input has an id column), the label
    and its probability (the score of a regression task; a multilabel task's set of labels over their
    thresholds: 0.5, or those saved with the model) and every label's probability. The whole input is checked
    before anything is written.
    """
    from multidistill.inference.predict import predict_file

    result = predict_file(source, task, input_path, output, text_columns=text_columns,
                          batch_size=batch_size, skip_bad_rows=skip_bad_rows, precision=precision)
    # markup off: column names and paths are the user's text, and "[...]" in them is not rich markup.
    console.print(summary_line(result), markup=False, soft_wrap=True)
    console.print(f"written: {result['output']} ({FORMAT_NAMES.get(result['format'], result['format'])})",
                  markup=False, soft_wrap=True)


def summary_line(result: dict) -> str:
    """What was predicted from which column(s), and which lines were skipped (the first few)."""
    columns = " + ".join(repr(c) for c in result["text_columns"])
    line = (f"task {result['task']}: predicted {result['predicted']} of {result['rows']} row(s) from {columns} "
            f"({COLUMNS_FROM[result['columns_from']]})")
    if result["skipped"]:
        lines = result["skipped_lines"]
        shown = ", ".join(str(n) for n in lines[:SHOW_SKIPPED_LINES])
        more = f" and {len(lines) - SHOW_SKIPPED_LINES} more" if len(lines) > SHOW_SKIPPED_LINES else ""
        line += f", skipped {result['skipped']} bad row(s): line{'s' if len(lines) > 1 else ''} {shown}{more}"
    if result.get("truncated"):
        line += f"; {result['truncated']} row(s) longer than the model's length were cut to it, as in training"
    if result.get("unknown_only"):
        line += (f"; {result['unknown_only']} row(s) hold only tokens the tokenizer does not know (a script or "
                 "symbols outside its vocabulary): their predictions read nothing of the text")
    return line
