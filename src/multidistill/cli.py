"""The `multidistill` command line. Every command takes the same YAML configs as the Python API."""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from multidistill.errors import ConfigError, MultidistillError, require_distinct
from multidistill.limits import MAX_SEED
from multidistill.utils.arguments import as_list
from multidistill.utils.command import set_cli_command
from multidistill.utils.console import stderr_console, stdout_console
from multidistill.utils.interrupt import (
    Interrupted,
    add_note,
    raise_if_interrupted,
    rerun_note,
    resume_command,
    signals_raise_interrupted,
)


def unwrap_help(text: str | None, *, keep_mark: bool = False) -> str | None:
    """A help text as rich should render it: the single newlines inside a paragraph (the source wraps its lines
    at 120 characters) become spaces, so the terminal wraps the paragraph at its own width; blank lines between
    paragraphs stay. A paragraph whose first line is ``\\b`` (click's "do not rewrap" mark) keeps its lines as
    written; the mark itself is dropped unless ``keep_mark`` (typer's rich help prints it as an empty line, click's
    plain help needs it)."""
    if not text:
        return text
    paragraphs = []
    for paragraph in re.split(r"\n[ \t]*\n", inspect.cleandoc(text)):
        if paragraph.startswith("\b"):
            paragraphs.append(paragraph if keep_mark else paragraph.removeprefix("\b").removeprefix("\n"))
        else:
            paragraphs.append(" ".join(line.strip() for line in paragraph.splitlines()))
    return "\n\n".join(paragraphs)


SWITCHES_PANEL = "Switches"


def _tidy_help(command: click.Command, keep_mark: bool) -> None:
    """`unwrap_help` on a command's help, short help and every parameter's help, and the same for its subcommands;
    and every ``--x/--no-x`` switch into the SWITCHES_PANEL of its command's help.

    The switches get a panel of their own because of how rich sizes typer's options table: it gives no column a
    minimum width, and when the table is too wide it narrows the widest wrapping column (the help text) down to
    the next widest (the option names), then both together. The ``--no-x`` names fill a column of their own
    (``--no-per-channel``: 18 wide with padding) in every row of the table they are in, so at 80 columns the help
    text shrank to the option names' width and names were cut (``--attention-mask-va…``). In their own panel
    they widen only a short table."""
    command.help = unwrap_help(command.help, keep_mark=keep_mark)
    command.short_help = unwrap_help(command.short_help, keep_mark=keep_mark)
    for param in command.params:
        if getattr(param, "help", None):
            param.help = unwrap_help(param.help, keep_mark=keep_mark)
        if getattr(param, "secondary_opts", None) and getattr(param, "rich_help_panel", "") is None:
            param.rich_help_panel = SWITCHES_PANEL
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub, keep_mark)


class _TidyHelpGroup(TyperGroup):
    """The app's click group, which tidies the help of itself and of every command (`_tidy_help`) once, when typer
    builds it (on each run, after every command is registered). typer (0.29, rich mode) prints the line breaks
    of a help paragraph's source as they are, which broke docstrings mid-sentence."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _tidy_help(self, keep_mark=self.rich_markup_mode != "rich")


app = typer.Typer(
    cls=_TidyHelpGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Multi-task, multi-teacher and multi-domain knowledge distillation for Hugging Face encoders.",
)
console = stdout_console()  # logs and pipes get a readable table
err_console = stderr_console()

# Each command's --set example names a key of the config that command reads (tests/test_examples.py checks them).
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE",
                 help="Override a config value, e.g. --set train.lr=3e-5 (repeatable; values are YAML)."),
]
RecipeSetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE",
                 help="Override a recipe value, e.g. --set student.train.lr=3e-5 (repeatable; values "
                      "are YAML)."),
]
DemoSetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE",
                 help="Override a demo setting, e.g. --set teacher_train.lr=3e-5 (repeatable; values are "
                      "YAML; the keys are listed above)."),
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from multidistill import __version__

        try:
            installed = version("multidistill")
        except PackageNotFoundError:  # run from a source tree that is not installed
            installed = __version__
        console.print(f"multidistill {installed}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


def _help_or_version(args: list[str]) -> bool:
    """Whether the command line only asks for help or the version, which need none of the heavy libraries: they
    answer at once instead of after 5-8 s of imports (2-core machine). A value that is literally "--help" would
    only leave the libraries' own logs on."""
    return not args or bool({"--help", "--version"} & set(args))


# Options users bring from other training scripts, for the commands that read everything from a config file: the
# parser's "No such option" would leave them guessing where the setting goes.
_CONFIG_COMMANDS = ("train-teacher", "distill", "run")
_OUTPUT_SPELLINGS = ("--output-dir", "--output_dir", "--out", "--output", "--out-dir")


def _spelling_hint(args: list[str]) -> str | None:
    """What to write instead of ``--config FILE`` or ``--output-dir DIR`` after a config command, else None."""
    if not args or args[0] not in _CONFIG_COMMANDS:
        return None
    command, given = args[0], {arg.split("=", 1)[0] for arg in args[1:]}
    if "--config" in given:
        return (f"{command} takes its config file as its first argument, not --config: "
                f"multidistill {command} CONFIG.yaml")
    spelled = next((option for option in _OUTPUT_SPELLINGS if option in given), None)
    if spelled:
        return (f"{command} has no {spelled}: the output folder is the config's output_dir; set it there, or "
                f"give --set output_dir=DIR")
    return None


def _seed_in_range(value: int) -> int:
    """--seed: a seed numpy takes. Checked here rather than with typer's min/max, whose range ("[0<=x<=4294967295]")
    would widen the type column of the help table until option names are cut at 80 columns."""
    if not 0 <= value <= MAX_SEED:
        raise typer.BadParameter(f"{value} is not a seed from 0 to {MAX_SEED}")
    return value


def _split_names(text: str | None, option: str) -> list[str] | None:
    """``--option a,b`` as its names (`as_list`, as the Python API reads a str); a name given twice is refused."""
    if not text:
        return None
    names = as_list(text, option, commas=True)
    require_distinct(option, names)
    return names


def print_metrics(title: str, metrics: dict, baselines: dict | None = None) -> None:
    """Render {'tasks': {task: {metric: v}}, 'main': {...}, 'average': x} as a table. ``baselines`` (metrics.json's
    ``trivial_baselines``, scored on the same rows) marks a main score no better than its task's constant predictor
    and says which predictor that is: a teacher at 0.54 on SST-2 is the majority class, not a poor model."""
    from multidistill.evaluation.baseline import AT_BASELINE_MARK, BASELINE_MARGIN, at_baseline

    table = Table(title=title)
    table.add_column("task", overflow="fold")
    table.add_column("metrics", overflow="fold")
    table.add_column("main", justify="right")
    constant = {}
    for task, values in metrics["tasks"].items():
        baseline = (baselines or {}).get(task) or {}
        flat = at_baseline(metrics["main"][task], baseline.get("main"))
        if flat:
            constant[task] = baseline
        table.add_row(task, "  ".join(f"{k}={v:.4f}" for k, v in values.items()),
                      f"{metrics['main'][task]:.4f}{AT_BASELINE_MARK if flat else ''}")
    table.add_row("[bold]average[/bold]", "", f"[bold]{metrics['average']:.4f}[/bold]")
    console.print(table)
    if constant:
        console.print(Text(f"{AT_BASELINE_MARK} no better than a constant predictor (within {BASELINE_MARGIN}): "
                           + "; ".join(f"{task}: {b.get('predictor', 'a constant')} scores {b['main']:.4f}"
                                       for task, b in constant.items())))


def print_domain_metrics(title: str, metrics: dict) -> None:
    """Render the per-domain part of an evaluation ({'domains': {task: {domain: {metric: v}}},
    'domain_average': {task: {metric: v}}}): one row per domain, then the task's average over its domains."""
    domains = metrics.get("domains") or {}
    if not domains:
        console.print("no task with domains among those evaluated: nothing to show per domain")
        return
    table = Table(title=title)
    table.add_column("task", overflow="fold")
    table.add_column("domain", overflow="fold")
    names = list(dict.fromkeys(metric for per_domain in domains.values() for scores in per_domain.values()
                               for metric in scores))
    for metric in names:
        table.add_column(metric, justify="right")

    def cells(scores: dict) -> list[str]:
        return [f"{scores[m]:.4f}" if m in scores else "" for m in names]

    for task, per_domain in domains.items():
        for domain, scores in per_domain.items():
            table.add_row(task, Text(domain), *cells(scores))
        table.add_row(task, "[bold]average[/bold]", *cells(metrics["domain_average"][task]))
    console.print(table)


def _reports() -> bool:
    """Whether this process prints results: under torchrun / accelerate launch, only the first one does."""
    return os.environ.get("RANK", "0") == "0"


def print_result(name: str, result) -> None:
    """A finished run: its best dev metrics, where the model is, how long training took."""
    if not _reports():
        return
    held_out = getattr(result, "holdout_loss", None)
    if result.best_metrics.get("tasks"):
        print_metrics(f"{name}: best dev metrics (step {result.best_step})", result.best_metrics,
                      _recorded_baselines(Path(result.model_dir).parent))
    if held_out is not None:  # select: lowest_loss (the only measure of a run whose tasks are all unlabelled text)
        console.print(f"{name}: kept the model of step {result.best_step}, lowest held-out loss {held_out:.4f}")
    console.print(f"model: {result.model_dir}   training: {result.train_seconds:.0f}s, "
                  f"{result.examples_per_second:.1f} examples/s")


def _recorded_baselines(run_dir: Path) -> dict | None:
    """The trivial baselines a finished run recorded in its metrics.json (None if it has none, or none readable)."""
    try:
        recorded = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get("trivial_baselines")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, dict) else None


@app.command("tasks")
def tasks_command() -> None:
    """List the built-in tasks with their type, labels, metrics and data files."""
    import os

    from multidistill.data.roots import DATA_ROOT_ENV
    from multidistill.data.tasks import BUILTIN_TASKS

    table = Table(title="built-in tasks (paths relative to the data root)",
                  caption=f"data root: data.data_root / --data-root, else ${DATA_ROOT_ENV} "
                          f"({os.environ.get(DATA_ROOT_ENV) or 'not set'}), else the current folder")
    for column in ("name", "type", "labels", "texts", "metrics", "train file"):
        table.add_column(column, overflow="fold")
    for task in BUILTIN_TASKS.values():
        source = " + ".join(f"{train.path} [{train.format}]" for _, train in task.split_files("train")) or "-"
        if task.domains:
            source += f"; domains: {', '.join(task.domains)}"
        if task.from_tasks:
            source = f"texts of: {', '.join(task.from_tasks)}"
        labels = ",".join(task.labels) or ("(score)" if task.type == "regression" else "(none)")
        # Text, not markup: "[tsv]" would otherwise be read as a style tag and vanish.
        table.add_row(task.name, task.type, labels, "2" if task.pair else "1", ",".join(task.metrics) or "-",
                      Text(source))
    console.print(table)


@app.command("run")
def run_command(
    recipe: Annotated[Path, typer.Argument(help="Recipe config (YAML whose `recipe:` names a registered recipe: "
                                                "mtdnn_kd, mkd, mitkd, metakd), e.g. "
                                                "configs/mtdnn_kd.yaml in a clone; a shipped one from anywhere: "
                                                "pkg:multidistill/configs/mtdnn_kd.yaml.")],
    overrides: RecipeSetOption = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check the recipe, its data and its output folder and list what a run would do with each "
                          "stage (reuse, run, resume, make again), running nothing and writing nothing in "
                          "output_dir; a stage a run would refuse is refused here too (exit 2). Stages that read "
                          "what an earlier stage not made yet writes are checked when it has run (said at the "
                          "end).")] = False,
) -> None:
    """Run a whole distillation method: every stage in order, each writing one folder under output_dir.

    Finished stages (a matching stage.json) are reused, a cut stage resumes from its last checkpoint, and a
    stage made with other settings is refused rather than overwritten. Ends with a table of every teacher
    and student on the recipe's report split (dev; Meta-KD: test where the task has one) and
    OUTPUT_DIR/summary.json; OUTPUT_DIR/log.txt keeps what was printed.
    """
    from multidistill.recipes import load_recipe

    recipe_config = load_recipe(recipe, overrides)  # a bad recipe is refused before the training stack is imported
    from multidistill.pipeline import plan_recipe, run_recipe
    from multidistill.utils.runlog import run_log

    if dry_run:
        _print_plan(plan_recipe(recipe_config), recipe_config.output_dir, "run")
        return
    with run_log(recipe_config.output_dir):
        run_recipe(recipe_config)
        if _reports():
            bench = Path(recipe_config.output_dir) / "benchmark.json"
            console.print(Text(f"next: multidistill report {recipe_config.output_dir} (report.md with the tables and "
                               f"figures); for its speed section first multidistill benchmark TEACHER/model "
                               f"STUDENT/model --tasks TASKS --out {bench}"), soft_wrap=True)


def _print_plan(plan, output_dir: str, command: str) -> None:
    """The table of `multidistill run --dry-run` (`demo --dry-run`: ``command``): each stage checked and what a
    run would do with it."""
    console.print(Text(f"output_dir: {output_dir}"))  # on its own line: whole, to copy
    table = Table(title=f"what `multidistill {command}` would do")
    table.add_column("stage", no_wrap=True)  # a stage name is a folder name: never split
    table.add_column("a run would", no_wrap=True)
    table.add_column("why", overflow="fold")
    styles = {"reuse": "green", "run": "bold", "resume": "yellow", "make again": "yellow"}
    for row in plan.stages:
        table.add_row(Text(row.name), Text(row.action, style=styles.get(row.action, "")), Text(row.why))
    console.print(table)
    counts = Counter(row.action for row in plan.stages)
    console.print(f"{len(plan.stages)} stage{'s' * (len(plan.stages) != 1)} checked: "
                  + ", ".join(f"{counts[action]} {action}" for action in styles if counts[action]))
    if plan.stopped:
        console.print(Text(f"checked as far as a run can be told in advance: {plan.stopped}"))
    else:
        console.print("every stage checked")
    console.print("nothing was run or written")


@app.command("demo")
def demo_command(
    quick: Annotated[bool, typer.Option(
        help="A reduced run of the same pipeline (2 minutes on a 2-core Xeon).")] = False,
    config: Annotated[Path | None, typer.Option(help="Demo settings (YAML); default: the built-in demo. With "
                                                      "--quick, what the file sets wins over the quick preset; "
                                                      "--set wins over both.")] = None,
    overrides: DemoSetOption = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check the settings, the data and the output folder and list what the demo would do "
                          "with each stage (reuse, run, resume, make again), running nothing and writing nothing "
                          "in output_dir, as run --dry-run does: from an empty folder that is the teacher alone, "
                          "since the next stages read its files.")] = False,
) -> None:
    """Run the whole pipeline on the real data sample shipped in the package, with no arguments.

    A multi-task MiniLM teacher (SST-2, MRPC, STS-B, Amazon electronics) -> an augmented transfer set and its
    soft targets -> a 3-layer Transformer student and a BiLSTM student -> benchmark (PyTorch and ONNX Runtime
    fp32/int8) -> report with plots. About 15 minutes on a 2-core Xeon with native bf16; interrupted runs
    resume; prints the final table and the report's path; OUTPUT_DIR/log.txt keeps what was printed. Needs
    the `demo` extra (pip install 'multidistill\\[demo]', or pip install -e '.\\[demo]' in a clone).

    Settings (--config FILE or --set KEY=VALUE; each documented in multidistill.recipes.demo.DemoConfig):
    output_dir, max_examples_per_task, subset_seed, data.tasks, data.data_root,
    teacher.* (name_or_path, pooling, max_seq_length, ...), teacher_train.* (epochs, lr, batch_size, ...),
    augment.* (max_examples, n_iter, n_iter_pair, ...; augment=null: no transfer set), signals.batch_size,
    signals.bf16, transformer.model.*, transformer.train.*, transformer.objective, bilstm.model.*,
    bilstm.train.*, bilstm.objective, benchmark.* (runtimes, rounds, latency_runs, memory, max_eval_examples,
    parity_examples, max_metric_drop_int8).

    \b
    Examples:
      multidistill demo --quick
      multidistill demo --quick --dry-run   # what it would run or reuse; runs nothing, writes nothing in its folder
      multidistill demo --set teacher_train.lr=3e-5 --set bilstm.train.epochs=1
      # a Transformer student that also exports with --format hf:
      multidistill demo --set transformer.model.pooling=cls
    """
    from multidistill.recipes.demo import load_demo_config, plan_demo, run_demo
    from multidistill.utils.runlog import run_log

    demo = load_demo_config(config, overrides, quick=quick)
    if dry_run:
        _print_plan(plan_demo(demo), demo.output_dir, "demo")
        return
    with run_log(demo.output_dir):
        result = run_demo(demo)
        bench = json.loads(Path(result["benchmark"]).read_text())
        print_benchmark(bench)
        console.print(f"[bold]report:[/bold] {result['report']}")
        exit_if_gate_failed(bench, "benchmark.json, summary and report")


@app.command("train-teacher")
def train_teacher_command(
    config: Annotated[Path, typer.Argument(help="Teacher run config (YAML), e.g. configs/teacher_glue.yaml "
                                                "in a clone; a shipped one from anywhere: "
                                                "pkg:multidistill/configs/teacher_glue.yaml.")],
    overrides: SetOption = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in output_dir from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in output_dir.")] = False,
    seeds: Annotated[str | None, typer.Option(
        help="Train an ensemble: one teacher per seed (e.g. 1,2,3) into OUTPUT_DIR/seed-<s>.")] = None,
) -> None:
    """Train a multi-task teacher: a shared encoder with one head per task (MT-DNN).

    Prints per-task dev metrics of the best checkpoint and writes them to OUTPUT_DIR/metrics.json;
    the model is saved to OUTPUT_DIR/model (safetensors + configs + tokenizer); OUTPUT_DIR/log.txt keeps
    what was printed.
    """
    from multidistill.config import load_config

    run_config = load_config(config, overrides)  # a bad config is refused before the training stack is imported
    from multidistill.teachers.ensemble import ensemble_seeds, train_ensemble
    from multidistill.teachers.train import train_teacher
    from multidistill.utils.runlog import run_log

    seed_list = ensemble_seeds(seeds, "--seeds") if seeds else None  # checked before the log is opened
    with run_log(run_config.output_dir):
        if seed_list:
            results = train_ensemble(run_config, seeds=seed_list, resume=resume, overwrite=overwrite)
        else:
            results = {run_config.train.seed: train_teacher(run_config, resume=resume, overwrite=overwrite)}
        for seed, result in results.items():
            print_result(f"seed {seed}", result)
        if _reports():
            models = [str(result.model_dir) for result in results.values()]
            tasks = ",".join(run_config.data.task_names)
            console.print(Text("next: the teacher's soft targets for a student, multidistill soft-targets "
                               + " ".join(f"--teacher {model}" for model in models)
                               + f" --tasks {tasks} --out SIGNALS_DIR (with the student's --max-examples-per-task "
                               "and --seed where it caps its rows), then `signals: SIGNALS_DIR` in a distill config "
                               "(configs/mtdnn_kd_student.yaml)"), soft_wrap=True)


@app.command("distill")
def distill_command(
    config: Annotated[Path, typer.Argument(help="Distillation config (YAML, kind: distill), e.g. "
                                                "configs/mtdnn_kd_student.yaml in a clone; a shipped one from "
                                                "anywhere: pkg:multidistill/configs/mtdnn_kd_student.yaml.")],
    overrides: SetOption = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in output_dir from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in output_dir.")] = False,
) -> None:
    """Train a student on teacher signals and gold labels, or an encoder by general distillation.

    Teacher logits come from a store (`soft-targets`) or from online teachers (`online_teachers:`), which also
    give the feature terms (hidden states, attention, relations). A corpus task (type text) has no labels: its
    run writes the distilled encoder to OUTPUT_DIR/encoder (configs/general_distill.yaml). The objective is a
    weighted sum of loss terms per task type or task (`objective:` in the config); the loop, checkpoints,
    evaluation and outputs are the same as for `train-teacher` (log.txt included).
    """
    from multidistill.config import load_config

    run_config = load_config(config, overrides)  # a bad config is refused before the training stack is imported
    from multidistill.training.distill import distill
    from multidistill.utils.runlog import run_log

    with run_log(run_config.output_dir):
        result = distill(run_config, resume=resume, overwrite=overwrite)
        print_result("student", result)
    encoder = Path(run_config.output_dir) / "encoder"
    if encoder.is_dir():  # a general (text-only) run: its student as a plain HF encoder folder
        console.print(f"general student (plain Hugging Face encoder): {encoder}")
    elif _reports():
        console.print(Text(f"next: multidistill export {result.model_dir} --format onnx --out EXPORT_DIR (serving; "
                           f"then multidistill predict EXPORT_DIR), or multidistill benchmark TEACHER/model "
                           f"{result.model_dir} --tasks {','.join(run_config.data.task_names)} (speed and scores "
                           "side by side)"), soft_wrap=True)


@app.command("soft-targets")
def soft_targets_command(
    teacher: Annotated[list[Path], typer.Option(metavar="DIR", help="A teacher model folder; repeat for an "
                                                                                "ensemble.")],
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks to label.")],
    out: Annotated[Path, typer.Option(help="Folder of the signal store to write (or reuse if valid).")],
    data_root: Annotated[str | None, typer.Option(
        help="Folder that relative task file paths resolve against (default: the one the teachers were trained "
             "with, while it exists; else $MULTIDISTILL_DATA_ROOT; else the current folder; needed when the tasks "
             "come from teachers trained under different roots).")] = None,
    splits: Annotated[str, typer.Option(help="Comma-separated splits to label.")] = "train",
    max_examples_per_task: Annotated[int | None, typer.Option(
        min=1, metavar="N", help="Seeded cap on training examples per task (use the student's value).")] = None,
    seed: Annotated[int, typer.Option(
        metavar="SEED", callback=_seed_in_range,
        help=f"Seed of the training subset, 0 to {MAX_SEED} (use the student's value).")] = 42,
    max_seq_length: Annotated[int | None, typer.Option(
        min=1, metavar="N",
        help="Truncation length for every teacher (default: each teacher its own training length).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, metavar="N", help="Teacher inference batch size.")] = 64,
    bf16: Annotated[bool, typer.Option(help="Run the teachers under bf16 autocast.")] = False,
    cache_dir: Annotated[str, typer.Option(help="Cache for tokenised views.")] = ".cache/multidistill",
    shard_size: Annotated[int, typer.Option(
        min=1, metavar="N", help="Rows labelled and saved per shard (rounded up to whole batches); an interrupted "
                                 "run resumes from its last complete shard.")] = 2048,
    hidden_layers: Annotated[str | None, typer.Option(
        help="Also store the teachers' hidden states at these layers (comma-separated; 0 = embedding output), per "
             "real token in float16, for feature losses (hidden_mse, cosine_hidden) without an online teacher; "
             "e.g. 0,2,4,6 for a 3-layer student of a 6-layer teacher.")] = None,
    domains: Annotated[str | None, typer.Option(
        help="Tasks with domains: label only these domains' rows (comma-separated), as a student's "
             "domains_include (in data.tasks) does; the student must select the same.")] = None,
    exclude_domains: Annotated[str | None, typer.Option(
        help="Tasks with domains: leave these domains' rows out (comma-separated), as domains_exclude does.")] = None,
) -> None:
    """Run one or several teachers over tasks and store their logits and mean probabilities.

    The store is fingerprinted by the teachers' weights, the data, the tokenizers and the max length:
    a valid store is reused as is, a stale one is refused. Work is saved shard by shard in OUT.partial/;
    running the same command again after an interruption continues from the last complete shard.
    """
    from multidistill.config import TaskRef
    from multidistill.teachers.generate import build_signal_store

    names = _split_names(tasks, "--tasks") or []
    if domains and exclude_domains:
        raise ConfigError("give --domains or --exclude-domains, not both")
    selection = {"domains_include": _split_names(domains, "--domains"),
                 "domains_exclude": _split_names(exclude_domains, "--exclude-domains")}
    store = build_signal_store(teacher, [TaskRef(name=n, **selection) for n in names], out, splits=splits,
                               max_seq_length=max_seq_length, max_examples_per_task=max_examples_per_task, seed=seed,
                               batch_size=batch_size, bf16=bf16, data_root=data_root, cache_dir=cache_dir,
                               shard_size=shard_size, hidden_layers=hidden_layers)
    if not _reports():
        return
    table = Table(title=f"signal store {out} (fingerprint {store.fingerprint[:12]})")
    for column in ("task", "split", "examples", "teachers"):
        table.add_column(column)
    for name in names:
        for split in store.manifest["splits"]:
            labelled_by = (store.manifest.get("task_teachers") or {}).get(name, teacher)  # teachers of this task
            table.add_row(name, split, str(len(store.signals(name, split))), str(len(labelled_by)))
    console.print(table)


@app.command("evaluate")
def evaluate_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder written by multidistill.")],
    tasks: Annotated[str | None, typer.Option(help="Comma-separated tasks (default: all the model's tasks).")] = None,
    data_root: Annotated[str | None, typer.Option(
        help="Folder that relative task file paths resolve against (default: the one the model was trained with, "
             "while it exists; else $MULTIDISTILL_DATA_ROOT; else the current folder).")] = None,
    split: Annotated[str, typer.Option(help="Split to score: dev or test.")] = "dev",
    batch_size: Annotated[int, typer.Option(min=1, metavar="N", help="Evaluation batch size.")] = 64,
    max_seq_length: Annotated[int | None, typer.Option(
        min=1, metavar="N",
        help="Truncation length in tokens (default: the length the model was trained with).")] = None,
    bf16: Annotated[bool, typer.Option(help="Run under bf16 autocast.")] = False,
    output: Annotated[Path | None, typer.Option(
        "--output", "--out", help="JSON file for the metrics (default: a run's model: eval_<split>.json in its run "
                                  "folder; another folder: eval_<folder name>_<split>.json beside it).")] = None,
    cache_dir: Annotated[str, typer.Option(help="Cache for tokenised views.")] = ".cache/multidistill",
    per_domain: Annotated[bool, typer.Option(
        "--per-domain", help="Also print each domain's metrics and their average, for tasks with domains (the JSON "
                             "always holds them).")] = False,
) -> None:
    """Score a saved model on its tasks' dev (or test) split; prints a table and writes JSON."""
    from multidistill.evaluation.run import evaluate_model_dir

    if tasks is not None and not _split_names(tasks, "--tasks"):
        raise ConfigError("--tasks is empty: name the tasks to score, or leave the option out for all of them")
    # Two model folders side by side (not RUN/model) would otherwise write over each other's scores.
    resolved = model_dir.resolve()
    out = output or resolved.parent / (f"eval_{split}.json" if resolved.name == "model"
                                       else f"eval_{resolved.name}_{split}.json")
    metrics = evaluate_model_dir(model_dir, tasks=_split_names(tasks, "--tasks"), data_root=data_root, split=split,
                                 batch_size=batch_size, max_seq_length=max_seq_length, bf16=bf16,
                                 cache_dir=cache_dir, output=out)
    print_metrics(f"{model_dir} on {split}", metrics)
    from multidistill.evaluation.thresholds import describe

    for task, chosen in (metrics.get("thresholds") or {}).items():
        console.print(f"{task}: labels decided at the thresholds saved with the model: {describe(chosen)}",
                      markup=False)
    if per_domain:
        print_domain_metrics(f"{model_dir} on {split}, per domain", metrics)
    console.print(f"written: {out}")


@app.command("benchmark")
def benchmark_command(
    model_dirs: Annotated[list[Path], typer.Argument(help="Model folders; the first is the reference (the teacher).")],
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks to score; speed is measured on the first.")],
    out: Annotated[Path, typer.Option(help="JSON file for the results.")] = Path("benchmark.json"),
    data_root: Annotated[str | None, typer.Option(
        help="Folder that relative task file paths resolve against (default: the one each model was trained with, "
             "while it exists; else $MULTIDISTILL_DATA_ROOT; else the current folder).")] = None,
    runtimes: Annotated[str, typer.Option(
        help="Comma-separated runtimes: pytorch_fp32, pytorch_bf16, onnx_fp32, onnx_int8 (default: all four).",
        show_default=False)] = "pytorch_fp32,pytorch_bf16,onnx_fp32,onnx_int8",
    export_root: Annotated[Path | None, typer.Option(
        help="Where ONNX exports are written or reused, one folder per model name (default: exports/ beside "
             "--out); another model's export there is refused, not replaced.")] = None,
    rounds: Annotated[int, typer.Option(min=1, metavar="N", help="Alternating measurement rounds.")] = 5,
    latency_runs: Annotated[int, typer.Option(
        min=1, metavar="N", help="Batch-1 calls per model/runtime (after warm-up).")] = 50,
    batch_size: Annotated[int, typer.Option(min=1, metavar="N", help="Batch size of the throughput measurement.")] = 32,
    memory: Annotated[bool, typer.Option(help="Measure peak memory (one subprocess per model/runtime).")] = True,
    cache_dir: Annotated[str, typer.Option(help="Cache for tokenised views.")] = ".cache/multidistill",
    max_metric_drop_int8: Annotated[float, typer.Option(
        help="Drop of a task's main metric always allowed to the int8 export in its parity check; a larger one "
             "passes only within twice its sampling error on those rows (docs/export.md).")] = 0.01,
    split: Annotated[str, typer.Option(
        help="Split to score: dev, or test (a task's own, or one carved out of dev: data.test_from_dev).")] = "dev",
) -> None:
    """Compare a teacher and its students: dev (or --split test) scores, parameters, disk size, peak memory, latency at
    batch 1 (median, p95) and throughput at --batch-size (default 32), for each runtime, with throughput and
    latency ratios vs the first model.

    Every model and runtime is measured in one process, alternating, so the ratios are measured side by side.
    A runtime whose ONNX export fails its parity check is reported as failed and the others are measured;
    the command then exits with code 1.
    """
    from multidistill.evaluation.benchmark import benchmark

    report = benchmark(model_dirs, _split_names(tasks, "--tasks") or [], data_root=data_root, out=out,
                       runtimes=_split_names(runtimes, "--runtimes") or [], export_root=export_root, rounds=rounds,
                       latency_runs=latency_runs, batch_size=batch_size, memory=memory, cache_dir=cache_dir,
                       max_metric_drop_int8=max_metric_drop_int8, split=split)
    print_benchmark(report)
    console.print(f"written: {out}")
    exports = sorted({entry["export"] for entry in report["models"].values() if entry.get("export")})
    if exports:  # written (or reused) beside the report unless --export-root said where: say so
        console.print(Text(f"ONNX exports: {', '.join(exports)}"), soft_wrap=True)
    exit_if_gate_failed(report, str(out))


def print_benchmark(report: dict) -> None:
    """The benchmark JSON as a table: one row per model and runtime, a caption saying what each column measures,
    and the reasons of any runtime that failed its parity check."""
    from multidistill.report.build import column_meanings, latency_speedup, parity_status

    with_rss = any(v.get("peak_rss_mb") for m in report["models"].values() for v in m["runtimes"].values())
    table = Table(title=f"benchmark ({report['threads']} threads, {report['machine']}); speed timed on "
                        f"{report['task']}", caption="; ".join(f"{column}: {meaning}" for column, meaning
                                                               in column_meanings(report, with_rss)),
                  caption_justify="left")
    batch = report.get("settings", {}).get("batch_size", 32)
    # Each header starts with the name its caption entry explains.
    columns = ("model", "runtime", "score", "parameters", "disk MB", *(("peak RSS MiB",) if with_rss else ()),
               "latency ms median (p95)", f"throughput ex/s @{batch}", "throughput ×", "latency ×", "parity")
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "runtime", "parity") else "right")
    for name, entry in report["models"].items():
        for runtime, values in entry["runtimes"].items():
            peak, score = values.get("peak_rss_mb"), values.get("score")
            timed = values.get("latency_ms_median") is not None
            throughput_ratio = report["speedup"].get(name, {}).get(runtime)
            latency_ratio = latency_speedup(report, name, runtime) if timed else None
            table.add_row(name, runtime, "-" if score is None else f"{score:.4f}",
                          f"{entry['parameters'] / 1e6:.1f}M",
                          f"{values['disk_bytes'] / 1e6:.1f}" if values.get("disk_bytes") else "-",
                          *((f"{peak:.0f}" if peak else "-",) if with_rss else ()),
                          f"{values['latency_ms_median']:.1f} ({values['latency_ms_p95']:.1f})" if timed else "-",
                          f"{values['throughput_examples_per_s']:.0f}" if timed else "-",
                          "-" if throughput_ratio is None else f"{throughput_ratio:.2f}x",
                          "-" if latency_ratio is None else f"{latency_ratio:.2f}x",
                          "[bold red]FAILED[/bold red]" if parity_status(runtime, values) == "FAILED"
                          else parity_status(runtime, values).replace("–", "-"))
    console.print(table)
    for reason in report.get("gate_failures") or []:
        console.print(f"[bold red]parity check failed:[/bold red] {reason}", highlight=False, soft_wrap=True)


def exit_if_gate_failed(report: dict, outputs: str) -> None:
    """Exit with GATE_FAILED_EXIT (1, not 2: the input was fine) when a runtime failed its parity check; every
    output was written first."""
    from multidistill.evaluation.benchmark import GATE_FAILED_EXIT

    failures = report.get("gate_failures") or []
    if failures:
        err_console.print(f"[bold red]{len(failures)} parity check(s) failed[/bold red] (see the table; the other "
                          f"rows were measured and {outputs} written); exit code {GATE_FAILED_EXIT}",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(GATE_FAILED_EXIT)


def _register_stage_commands() -> None:
    """Commands that live beside the code they drive (export, predict, report); imports here are cheap."""
    from multidistill.export.command import export_command
    from multidistill.inference.command import predict_command
    from multidistill.models.import_command import import_classifier_command
    from multidistill.report.command import report_command

    app.command("import-classifier")(import_classifier_command)
    app.command("export")(export_command)
    app.command("predict")(predict_command)
    app.command("report")(report_command)


_register_stage_commands()


def _quiet_libraries() -> None:
    """Import the heavy libraries once and turn their chatter down, for the command's process only."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from multidistill.utils.quiet import quiet_libraries

    # For the command's process, not on import: a Python user's own transformers logs and datasets bars stay as
    # they were (the API quietens them only for a call made with progress=False).
    quiet_libraries()
    # No tqdm monitor thread: it only tunes refresh rates, and a thread that Ctrl-C can leave waiting on a lock is
    # one more way for an interrupted run to hang at exit (tqdm's own workaround for its monitor deadlocks).
    import tqdm.std

    tqdm.std.tqdm.monitor_interval = 0


def main() -> None:
    """Entry point: user-input errors print one clear message and exit with code 2."""
    if (hint := _spelling_hint(sys.argv[1:])) is not None:
        err_console.print("[bold red]error:[/bold red]", Text(hint), highlight=False, soft_wrap=True)
        sys.exit(2)
    try:
        if not _help_or_version(sys.argv[1:]):
            _quiet_libraries()
    except KeyboardInterrupt:  # Ctrl-C during the seconds of imports, before the handlers below exist
        err_console.print("interrupted while starting; nothing was done")
        sys.exit(130)
    set_cli_command(sys.argv[1:])  # model cards name the command that made a model
    arrived: list[int] = []  # the signals that arrived during the command (filled by the block below)
    try:
        with signals_raise_interrupted() as signals:
            arrived = signals
            app()
    except Interrupted as exc:
        _report_interrupt(exc)
        sys.exit(exc.exit_code)
    except MultidistillError as exc:
        if (echo := _interrupt_echo(exc, arrived)) is not None:  # a read cut short by Ctrl-C, not a damaged file
            _report_interrupt(echo)
            sys.exit(echo.exit_code)
        # The message as plain text: as markup, `multidistill[pos]` in an install hint lost its `[pos]`.
        err_console.print("[bold red]error:[/bold red]", Text(str(exc)), highlight=False, soft_wrap=True)
        _print_notes(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if (echo := _interrupt_echo(exc, arrived)) is not None:  # e.g. pyarrow's ArrowInvalid from a cut read
            _report_interrupt(echo)
            sys.exit(echo.exit_code)
        if not isinstance(exc, OSError):
            raise
        # Disk full, read-only or forbidden folder outside the atomic writers (which already say so): one line.
        from multidistill.utils.entry import as_output_error

        error = as_output_error(exc)
        if error is None:
            raise
        err_console.print("[bold red]error:[/bold red]", Text(str(error)), highlight=False, soft_wrap=True)
        _print_notes(exc)
        sys.exit(error.exit_code)
    finally:
        set_cli_command(None)


def _interrupt_echo(exc: BaseException, arrived: list[int]) -> Interrupted | None:
    """The interrupt behind ``exc`` when Ctrl-C / SIGTERM arrived during this command: library code (torch,
    safetensors, pyarrow) can turn the `Interrupted` raised inside it into its own error, which would then read as
    a damaged file. The notes the run added on the way out are kept."""
    try:
        raise_if_interrupted(exc, arrived)
    except Interrupted as interrupted:
        for note in getattr(exc, "__notes__", []):
            add_note(interrupted, note)
        return interrupted
    return None


def _print_notes(exc: BaseException) -> None:
    """The notes stages and the training loop added on the way out: where each stopped, what a re-run does."""
    for note in getattr(exc, "__notes__", []):
        err_console.print(f"  {note}", highlight=False, soft_wrap=True, markup=False)


def _report_interrupt(exc: Interrupted) -> None:
    """Ctrl-C / SIGTERM: where the run stopped and the exact command that continues it."""
    how = f"{exc}, Ctrl-C" if exc.signum == signal.SIGINT else str(exc)
    err_console.print(f"[bold yellow]interrupted[/bold yellow] ({how})", highlight=False)
    _print_notes(exc)
    command = resume_command(sys.argv[1:])
    if command is None:
        err_console.print(rerun_note(sys.argv[1:]), highlight=False)
    else:
        err_console.print(f"to resume: {command}", highlight=False, soft_wrap=True, markup=False)


if __name__ == "__main__":
    main()
