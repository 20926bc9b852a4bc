"""The `multidistill` command line. Every command takes the same YAML configs as the Python API."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from multidistill.errors import MultidistillError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Multi-task, multi-teacher and multi-domain knowledge distillation for Hugging Face encoders.",
)
console = Console()
err_console = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value, e.g. --set train.lr=3e-5 (repeatable; values are YAML)."),
]


def _split_names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def print_metrics(title: str, metrics: dict) -> None:
    """Render {'tasks': {task: {metric: v}}, 'main': {...}, 'average': x} as a table."""
    table = Table(title=title)
    table.add_column("task", overflow="fold")
    table.add_column("metrics", overflow="fold")
    table.add_column("main", justify="right")
    for task, values in metrics["tasks"].items():
        table.add_row(task, "  ".join(f"{k}={v:.4f}" for k, v in values.items()), f"{metrics['main'][task]:.4f}")
    table.add_row("[bold]average[/bold]", "", f"[bold]{metrics['average']:.4f}[/bold]")
    console.print(table)


@app.command("tasks")
def tasks_command() -> None:
    """List the built-in tasks with their type, labels, metrics and data files."""
    from multidistill.data.tasks import BUILTIN_TASKS

    table = Table(title="built-in tasks (paths relative to data_root)")
    for column in ("name", "type", "labels", "texts", "metrics", "train file"):
        table.add_column(column, overflow="fold")
    for task in BUILTIN_TASKS.values():
        train = task.files.get("train")
        source = f"{train.path} [{train.format}]" if train else "-"
        table.add_row(task.name, task.type, ",".join(task.labels) or "(score)", "2" if task.pair else "1",
                      ",".join(task.metrics), source)
    console.print(table)


@app.command("train-teacher")
def train_teacher_command(
    config: Annotated[Path, typer.Argument(help="Teacher run config (YAML), e.g. configs/teacher_glue.yaml.")],
    overrides: SetOption = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in output_dir from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in output_dir.")] = False,
) -> None:
    """Train a multi-task teacher: a shared encoder with one head per task (MT-DNN).

    Prints per-task dev metrics of the best checkpoint and writes them to OUTPUT_DIR/metrics.json;
    the model is saved to OUTPUT_DIR/model (safetensors + configs + tokenizer).
    """
    from multidistill.config import load_config
    from multidistill.teachers.train import train_teacher

    run_config = load_config(config, overrides)
    result = train_teacher(run_config, resume=resume, overwrite=overwrite)
    print_metrics(f"best dev metrics (step {result.best_step})", result.best_metrics)
    console.print(f"model: {result.model_dir}   training: {result.train_seconds:.0f}s, "
                  f"{result.examples_per_second:.1f} examples/s")


@app.command("evaluate")
def evaluate_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder written by multidistill.")],
    tasks: Annotated[str | None, typer.Option(help="Comma-separated tasks (default: all the model's tasks).")] = None,
    data_root: Annotated[str, typer.Option(help="Folder that relative task file paths resolve against.")]
    = "../shared/data",
    split: Annotated[str, typer.Option(help="Split to score: dev or test.")] = "dev",
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 64,
    max_seq_length: Annotated[int | None, typer.Option(
        help="Truncation length in tokens (default: the length the model was trained with).")] = None,
    bf16: Annotated[bool, typer.Option(help="Run under bf16 autocast.")] = False,
    output: Annotated[Path | None, typer.Option(help="JSON file for the metrics "
                                                "(default: eval_<split>.json beside the model folder).")] = None,
    cache_dir: Annotated[str, typer.Option(help="Cache for tokenised views.")] = ".cache/multidistill",
) -> None:
    """Score a saved model on its tasks' dev (or test) split; prints a table and writes JSON."""
    from multidistill.evaluation.run import evaluate_model_dir
    from multidistill.utils.atomic import write_json

    metrics = evaluate_model_dir(model_dir, tasks=_split_names(tasks), data_root=data_root, split=split,
                                 batch_size=batch_size, max_seq_length=max_seq_length, bf16=bf16,
                                 cache_dir=cache_dir)
    out = output or model_dir.resolve().parent / f"eval_{split}.json"
    write_json(out, metrics)
    print_metrics(f"{model_dir} on {split}", metrics)
    console.print(f"written: {out}")


def main() -> None:
    """Entry point: user-input errors print one clear message and exit with code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    # Load reports list the unused BERT pooler as "unexpected"; that is by design (heads pool themselves).
    transformers.logging.set_verbosity_error()
    try:
        app()
    except MultidistillError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True, markup=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
