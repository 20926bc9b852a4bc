"""`multidistill import-classifier`: a stock Hugging Face classifier as a multidistill teacher folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from multidistill.errors import ConfigError
from multidistill.utils.console import stdout_console

console = stdout_console()


def import_classifier_command(
    source: Annotated[str, typer.Argument(help="A fine-tuned AutoModelForSequenceClassification: its folder "
                                               "(e.g. what transformers' Trainer saved) or a hub name.")],
    task: Annotated[str, typer.Option(help="The task its head answers: a built-in task (multidistill tasks) or "
                                           "one the --config file's data section declares.")],
    out: Annotated[Path, typer.Option(help="Folder to write the multidistill model to; it must not exist or be "
                                           "empty (see --overwrite).")],
    config: Annotated[Path | None, typer.Option(
        help="A YAML file with a data section (any multidistill run config will do) that declares --task "
             "(data.task_specs) and its data_root, which the model records for evaluate and benchmark.")] = None,
    data_root: Annotated[str | None, typer.Option(
        help="Folder the task's relative file paths resolve against (default: --config's data_root, else "
             "$MULTIDISTILL_DATA_ROOT, else the current folder); recorded in the model.")] = None,
    labels: Annotated[str | None, typer.Option(
        help="The classifier's outputs in order, each named with one of the task's labels (comma-separated); "
             "default: matched by the names in its config's id2label (LABEL_0, LABEL_1, ...: by position where "
             "the task's labels are 0..n-1 or its files name the order).")] = None,
    max_length: Annotated[int | None, typer.Option(
        min=1, metavar="N", help="The length the model truncates inputs at, recorded as a trained model records "
                                 "its training length (default: 128, or fewer where the encoder's positions "
                                 "end).")] = None,
    trust_remote_code: Annotated[bool, typer.Option(
        "--trust-remote-code",
        help="Run the model's own code from its folder or the hub (off: only transformers' own families).")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace --out when it holds a multidistill model.")] = False,
) -> None:
    """Bring a classifier fine-tuned elsewhere into multidistill, so it can teach.

    The encoder and the stock head (BERT's pooler and classifier, RoBERTa's dense + tanh + out_proj, ...) are
    taken as they are, the outputs put in the task's label order; the new folder's logits are checked against
    the classifier's own before anything is written. Then: multidistill evaluate OUT, soft-targets --teacher OUT,
    or a recipe's teacher.model_dirs.
    """
    import json

    from pydantic import ValidationError

    from multidistill.config import DataConfig, read_yaml
    from multidistill.config_messages import format_validation_error
    from multidistill.models.stock_import import IMPORT_INFO_FILE, import_classifier

    data = None
    if config is not None:
        raw = read_yaml(config)
        section = raw.get("data") if isinstance(raw, dict) else None
        if not isinstance(section, dict):
            raise ConfigError(f"--config {config}: no data section (a mapping under the key 'data')")
        try:
            data = DataConfig.model_validate({**section, "tasks": [task], "test_from_dev": None})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"{config} (data)", [], DataConfig)) from exc
    if data_root is not None:
        data = DataConfig.model_validate({**(data.model_dump() if data is not None else {"tasks": [task]}),
                                          "data_root": data_root})
    folder = import_classifier(source, out, task=task, data=data, labels=labels, max_length=max_length,
                               trust_remote_code=trust_remote_code, overwrite=overwrite)
    record = json.loads((folder / IMPORT_INFO_FILE).read_text())
    parity = record["parity"]
    console.print(f"imported {source} as task '{record['task']}' -> {folder} (labels from "
                  f"{record['labels']['read_from']}; logits within {parity['max_abs_diff']:.1e} of the classifier's "
                  f"on {parity['rows']} check rows)", markup=False)
    console.print(f"next: multidistill evaluate {folder}", markup=False)
