"""The command function of `multidistill predict` (registered in cli.py).

User errors are raised as `MultidistillError` subclasses; `cli.main` prints them and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from multidistill.errors import ConfigError
from multidistill.utils.console import stdout_console

console = stdout_console()


def parse_text_columns(text: str | None) -> tuple[str, str | None] | None:
    """``"a"`` -> ("a", None); ``"a,b"`` -> ("a", "b"); None -> None (use the task's default columns)."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not 1 <= len(names) <= 2 or not all(names):
        raise ConfigError(f"--text-columns takes one column name or two separated by a comma "
                          f"(e.g. 'sentence' or 'question,sentence'), got {text!r}")
    return names[0], names[1] if len(names) == 2 else None


def predict_command(
    source: Annotated[Path, typer.Argument(help="A multidistill model folder, or an ONNX export folder "
                                                "(one with export.json of kind 'onnx').")],
    task: Annotated[str, typer.Option(help="The task (head) to predict, e.g. sst2.")],
    input_path: Annotated[Path, typer.Option("--input", help="Texts to label: .csv or .tsv with a header line, or "
                                                             ".jsonl / .json (one JSON object per line).")],
    output: Annotated[Path, typer.Option(help="Predictions file: .csv for CSV, anything else is JSON Lines. "
                                              "Written atomically; never left half-written.")],
    text_columns: Annotated[str | None, typer.Option(
        help="Text column(s), e.g. 'review' or 'question,answer' (default: text / sentence / text_a, or for "
             "pair tasks text_a,text_b / sentence1,sentence2 / question,sentence).")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 64,
    skip_bad_rows: Annotated[bool, typer.Option(
        help="Skip bad rows (a missing or empty text, a wrong number of fields, invalid JSON) and count them, "
             "instead of stopping with their line numbers.")] = False,
    precision: Annotated[str, typer.Option(
        help="fp32, or int8 for the quantised model of an ONNX export (model folders run in fp32).")] = "fp32",
) -> None:
    """Label every row of a CSV / TSV / JSONL file with one task of a saved model or ONNX export.

    Each output record has the input's line number, its id (when the input has an id column), the label
    and its probability (or the score of a regression task) and every label's probability. The whole input
    is checked before anything is written.
    """
    from multidistill.inference.predict import predict_file

    result = predict_file(source, task, input_path, output, text_columns=parse_text_columns(text_columns),
                          batch_size=batch_size, skip_bad_rows=skip_bad_rows, precision=precision)
    skipped = f", skipped {result['skipped']} bad row(s)" if result["skipped"] else ""
    console.print(f"task {result['task']}: predicted {result['predicted']} of {result['rows']} row(s){skipped}")
    console.print(f"written: {result['output']} ({result['format']})")
