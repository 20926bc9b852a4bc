"""Evaluate a saved model folder on its tasks' data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import get_args

from multidistill.config import DataConfig
from multidistill.data.collate import pad_id
from multidistill.data.prepare import prepare_data
from multidistill.data.roots import existing_data_root
from multidistill.errors import ConfigError, require_choice, require_distinct
from multidistill.evaluation.evaluate import EvalMetrics, evaluate
from multidistill.evaluation.thresholds import saved_form, saved_thresholds
from multidistill.models import load_model
from multidistill.models.backbone import load_tokenizer
from multidistill.training.device import bf16_accelerator
from multidistill.utils.arguments import as_list
from multidistill.utils.entry import api_call
from multidistill.utils.quiet import bars_disabled

EVAL_SPLITS = get_args(DataConfig.model_fields["eval_split"].annotation)  # ("dev", "test")


def evaluate_model_dir(model_dir: str | os.PathLike, *, tasks: list[str] | str | None = None,
                       data_root: str | None = None, split: str = "dev", batch_size: int = 64,
                       max_seq_length: int | None = None, bf16: bool = False,
                       cache_dir: str = ".cache/multidistill", output: str | os.PathLike | None = None,
                       progress: bool = True) -> EvalMetrics:
    """Metrics of the model in ``model_dir`` on ``split`` of ``tasks`` (default: all its tasks), as
    `multidistill evaluate` scores them; a multilabel task decides its labels at the thresholds saved with the model
    (`train.thresholds: per_label`), else at 0.5.

    ``tasks`` is a list of names or one comma-separated str (`"sst2,mrpc"`). ``data_root`` None: the root the
    model was trained with while it still exists, else ``$MULTIDISTILL_DATA_ROOT``, else the current folder
    (`multidistill.data.roots`). ``output``: also write the metrics there as JSON (a folder, a file inside a
    model folder or one of a run's own records is refused before scoring); the CLI writes
    ``eval_<split>.json`` beside a run's model. ``progress`` False: no bars or library notes. An output that
    cannot be written raises `OutputError`. It sets accelerate's process-wide precision (``bf16``), so a call
    from another thread while a run goes is refused (`RunInProgress`).
    """
    output = Path(output) if output is not None else None
    with api_call("evaluate_model_dir", progress=progress, exclusive=True):
        require_choice("--split", split, EVAL_SPLITS)
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
        tasks = as_list(tasks, "--tasks (tasks)", commas=True)
        if tasks is not None and not tasks:  # [] is not "all of them" (None is)
            raise ConfigError("--tasks: no task given; name at least one, or leave it out for all the model's tasks")
        require_distinct("--tasks", tasks or [])
        if output is not None:  # checked before scoring: the metrics would have nowhere to go
            from multidistill.models.multitask import read_model_config

            # The folder first: an export given for a model would otherwise be told about a default output inside it.
            read_model_config(Path(model_dir))
            _check_output(output)
        metrics = _evaluate(Path(model_dir), tasks, data_root, split, batch_size, max_seq_length, bf16, cache_dir,
                            progress)
        if output is not None:
            from multidistill.utils.atomic import write_json

            write_json(output, metrics)
    return metrics


def _check_output(output: Path) -> None:
    from multidistill.training.run_dir import refuse_output_over_a_run

    if output.is_dir():
        raise ConfigError(f"--output {output} is a folder; give the path of the JSON file to write")
    refuse_output_over_a_run(output, "--output")


def _evaluate(model_dir: Path, tasks: list[str] | None, data_root: str | None, split: str, batch_size: int,
              max_seq_length: int | None, bf16: bool, cache_dir: str, progress: bool) -> EvalMetrics:
    """`evaluate_model_dir` once its arguments are checked."""
    model = load_model(model_dir)  # a Transformer + heads or a BiLSTM student
    tokenizer = load_tokenizer(str(model_dir))
    names = tasks or list(model.tasks)
    missing = [t for t in names if t not in model.tasks]
    if missing:
        raise ConfigError(f"--tasks: model {model_dir} has no head for {missing}; it has {list(model.tasks)}")
    setting = "--max-seq-length"
    if max_seq_length is None:  # 0 is not "unset": the length check below refuses it
        max_seq_length = model.inference_length
        setting = f"the length recorded in {model_dir} (give --max-seq-length)"
    model.check_max_length(max_seq_length, setting)
    # The model carries its own task specs, so evaluation reads exactly the data it was built for.
    if data_root is None:
        data_root = existing_data_root(model.data_root)
    data_config = DataConfig(tasks=names, data_root=data_root, cache_dir=cache_dir, eval_split=split,
                             task_specs=[model.tasks[t] for t in names])
    data = prepare_data(data_config, tokenizer, max_seq_length, max_examples_per_task=None, seed=0,
                        need_train=False)
    accelerator = bf16_accelerator(bf16, "--bf16", "leaving it out")
    model.to(accelerator.device)
    thresholds = {name: values for name, values in saved_thresholds(model_dir).items() if name in names}
    result = evaluate(model, data.tasks, data.eval_sets, batch_size=batch_size,
                      pad_token_id=pad_id(tokenizer), device=accelerator.device,
                      autocast=accelerator.autocast, progress=not bars_disabled(progress), thresholds=thresholds)
    metrics = result.to_dict()
    if thresholds:  # the scores say what decided them
        metrics["thresholds"] = saved_form(model.tasks, thresholds)
    return metrics
