"""Model cards: the ``README.md`` in Hugging Face model-card form that every saved or exported model folder carries.

`card_text` is a pure function of a typed `CardRecord` (what the model is, what it was trained and scored on, its
teacher's scores, its measured speed, how to load it, the command that made it); `write_card` writes it
atomically. The YAML front matter is made by `huggingface_hub.ModelCardData` (library_name, tags, base_model,
pipeline_tag, and a ``model-index`` with every dev metric), so the Hub reads it as it reads any model card.
Every number comes from the record, which `multidistill.export.card_record` fills from the run's
``metrics.json``: a card never holds a number the run did not write.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from multidistill.evaluation.baseline import AT_BASELINE_MARK, BASELINE_MARGIN, at_baseline
from multidistill.evaluation.retention import retention
from multidistill.evaluation.thresholds import describe
from multidistill.utils.atomic import atomic_file
from multidistill.utils.markdown import table_cell

CARD_FILE = "README.md"
# The method a card names for a classifier brought in by `multidistill import-classifier` (no training run).
IMPORT_METHOD = "import-classifier (a stock Hugging Face classifier brought in unchanged)"
# The folder a card describes: a multidistill model folder, a stock Hugging Face classifier (one task), a plain
# encoder (a general student's encoder/), or an ONNX export.
Form = Literal["multidistill", "hf", "encoder", "onnx"]
LIBRARY: dict[str, str] = {"multidistill": "multidistill", "hf": "transformers", "encoder": "transformers",
                           "onnx": "onnx"}


@dataclass(frozen=True)
class TaskInfo:
    """One task the model was trained on, as its saved task spec and the run describe it."""

    name: str
    type: str  # classification, multilabel, regression or text (an unlabelled corpus)
    labels: tuple[str, ...] = ()
    pair: bool = False
    metrics: tuple[str, ...] = ()
    train_examples: int | None = None


@dataclass(frozen=True)
class TeacherInfo:
    """A teacher of a student: its folder and, when its run recorded them, its dev metrics (task -> metric ->
    value, as in its ``metrics.json``), and per domain for tasks with domains (task -> domain -> metric -> value)."""

    path: str
    metrics: Mapping[str, Mapping[str, float | None]] | None = None
    main: Mapping[str, float | None] | None = None
    domains: Mapping[str, Mapping[str, Mapping[str, float | None]]] | None = None
    note: str | None = None  # why its scores are not shown (its folder now holds other weights)


@dataclass(frozen=True)
class CardRecord:
    """Everything a card says; every score is copied from the run's ``metrics.json`` (``metrics``)."""

    title: str
    form: Form
    role: Literal["teacher", "student", "general student"]
    architecture: str  # e.g. "bert encoder, [CLS] pooling" or "BiLSTM"
    parameters: int | None
    layers: int | None = None
    hidden_size: int | None = None
    base_model: str | None = None  # a Hub id, for the front matter
    initialised_from: str | None = None  # what the run's model started from, in words (weights, heads, random init)
    method: str | None = None  # the recipe or command, e.g. "mkd recipe, stage student-transformer"
    objective: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # task -> loss term names
    tasks: tuple[TaskInfo, ...] = ()
    eval_split: str = "dev"
    carved: Mapping[str, Mapping] = field(default_factory=dict)  # task -> its Task.test_from_dev (fraction, seed)
    data_root: str | None = None
    train_files: Mapping[str, str] = field(default_factory=dict)  # task -> its training file, as the config names it
    run_dir: str | None = None
    in_progress: bool = False  # a best model saved mid-run: the run had not ended (no final metrics.json yet)
    metrics: Mapping | None = None  # the run's metrics.json
    teachers: tuple[TeacherInfo, ...] = ()
    signals: str | None = None
    command: str | None = None
    command_cwd: str | None = None  # the folder the command was run in (its relative paths read from there)
    command_unrecorded: bool = False  # a resumed run whose first command was not recorded (command.json)
    resumed_by: tuple[str | None, ...] = ()  # the commands that resumed the run (None: from Python)
    resumed_in: tuple[str | None, ...] = ()  # the folder each of them was run in
    config_file: str | None = None
    export: Mapping | None = None  # the export's export.json (its parity check numbers)
    max_length: int | None = None
    domain_branch: tuple[str, ...] = ()  # the domains of a saved Meta-KD domain branch (never in an export)
    # multilabel tasks' decision thresholds saved with the model (task -> label -> threshold; none: 0.5)
    thresholds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    folders: Mapping[str, str] = field(default_factory=dict)  # multi-task HF export: task -> sub-folder
    # Inference speed measured by `multidistill benchmark` (its benchmark.json): runtime -> latency_ms_median,
    # latency_ms_p95, throughput_examples_per_s, score; and how it was measured (batch size, threads, machine).
    speed: Mapping[str, Mapping] = field(default_factory=dict)
    speed_setting: str | None = None


# ------------------------------------------------------------------------------------------------ table cells




def _code(text: str) -> str:
    """``text`` as an inline code span that reads back as written: fenced by one backtick more than its longest run
    of backticks, padded with a space where it starts or ends with a backtick or a space (CommonMark strips one
    such pair)."""
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if not text or text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _labels(labels: tuple[str, ...]) -> str:
    """A task's labels for the data table: each in a code span, so a label with a comma (`bad, awful`) or a pipe
    stays one label; ``-`` for none (regression, text)."""
    return ", ".join(_code(label) for label in labels) if labels else "-"


# ------------------------------------------------------------------------------------------------ numbers


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def task_scores(record: CardRecord) -> dict[str, dict[str, float | None]]:
    """The model's dev metrics per task (task -> metric -> value), as in ``metrics.json``, for the card's tasks."""
    scored = (record.metrics or {}).get("tasks", {})
    return {task.name: dict(scored[task.name]) for task in record.tasks if task.name in scored}


def main_scores(record: CardRecord) -> dict[str, float | None]:
    """Each task's main dev score, as in ``metrics.json`` (``main``), for the card's tasks."""
    main = (record.metrics or {}).get("main", {})
    return {task.name: main[task.name] for task in record.tasks if task.name in main}


def other_domains(record: CardRecord) -> set[str]:
    """The tasks this model was scored on other domains than a teacher (a domain expert of a meta-teacher): their
    task-level dev scores are over other rows, so they are compared per domain only."""
    mine = (record.metrics or {}).get("domains", {})
    return {task for task, scores in mine.items()
            if any(set((t.domains or {}).get(task, scores)) != set(scores) for t in record.teachers if t.metrics)}


def teacher_domain_score(record: CardRecord, task: str, domain: str, metric: str) -> float | None:
    """The teachers' mean dev ``metric`` on one domain of ``task``; None unless every teacher with scores has it."""
    values = [((t.domains or {}).get(task, {}).get(domain) or {}).get(metric) for t in record.teachers if t.metrics]
    return sum(values) / len(values) if values and None not in values else None  # type: ignore[arg-type]


def teacher_main(record: CardRecord) -> dict[str, float] | None:
    """The teacher's main score per task (the mean over the teachers when there are several, each task over the
    teachers that scored it), or None when no teacher recorded scores."""
    known = [t.main for t in record.teachers if t.main]
    if not known:
        return None
    out = {}
    for task in record.tasks:
        values = [m[task.name] for m in known if m.get(task.name) is not None]
        if values:
            out[task.name] = sum(values) / len(values)
    return out or None


# ------------------------------------------------------------------------------------------------ the card


def card_data(record: CardRecord) -> ModelCardData:
    """The front matter: library, tags, base model, pipeline and a model-index of every dev metric."""
    classifies = any(task.type != "text" for task in record.tasks)
    pipeline = "text-classification" if classifies and record.form != "encoder" else "feature-extraction"
    tags = ["multidistill", "knowledge-distillation", record.role.replace(" ", "-")]
    if len(record.tasks) > 1 and record.form != "hf":
        tags.append("multi-task")
    if record.form == "onnx":
        tags.append("onnx")
    if record.form != "encoder":
        tags += [task.name for task in record.tasks]
    results = []
    for task_name, metrics in task_scores(record).items():
        for metric, value in metrics.items():
            if value is None:
                continue
            results.append(EvalResult(task_type=pipeline, dataset_type=task_name, dataset_name=task_name,
                                      dataset_split=record.eval_split, metric_type=metric, metric_value=value,
                                      metric_name=metric))
    # A multi-task HF root holds one loadable folder per task but is not one itself: no pipeline to declare.
    return ModelCardData(library_name=LIBRARY[record.form], tags=tags, base_model=record.base_model,
                         pipeline_tag=None if record.folders else pipeline, model_name=record.title,
                         eval_results=results or None,
                         metrics=sorted({r.metric_type for r in results}) or None)


def card_text(record: CardRecord) -> str:
    """The whole ``README.md``: YAML front matter, then the sections."""
    sections = [f"# {record.title}", _summary(record), _model_section(record), _data_section(record),
                _scores_section(record), _domains_section(record), _speed_section(record), _export_section(record),
                _usage_section(record), _made_by_section(record)]
    body = "\n\n".join(section for section in sections if section)
    return str(ModelCard(f"---\n{card_data(record).to_yaml()}\n---\n\n{body}\n"))


def write_card(folder: str | Path, record: CardRecord) -> Path:
    """Write ``folder/README.md`` atomically (a reader sees the old card or the new one, never half of one)."""
    path = Path(folder) / CARD_FILE
    with atomic_file(path) as handle:
        handle.write(card_text(record))
    return path


# ------------------------------------------------------------------------------------------------ sections


def _size(record: CardRecord) -> str:
    parts = [record.architecture]
    if record.layers is not None:
        parts.append(f"{record.layers} layer{'s' if record.layers != 1 else ''}")
    if record.hidden_size is not None:
        parts.append(f"hidden size {record.hidden_size}")
    if record.parameters is not None:
        count = record.parameters
        parts.append(f"{count / 1e6:.1f}M parameters" if count >= 100_000 else f"{count:,} parameters")
    return ", ".join(parts)


def _summary(record: CardRecord) -> str:
    stock = "one plain Hugging Face `AutoModelForSequenceClassification` folder per task" if record.folders else \
        "a plain Hugging Face `AutoModelForSequenceClassification` folder"
    what = {"multidistill": "a multidistill model folder", "hf": stock,
            "encoder": "a plain Hugging Face encoder folder (`AutoModel`)",
            "onnx": "an ONNX export (one graph, every task head as an output)"}[record.form]
    tasks = ", ".join(task.name for task in record.tasks) or "no task"
    teacher = ("A meta-teacher trained on gold labels with a domain-adversarial branch (Meta-KD)"
               if record.domain_branch else
               "A classifier fine-tuned elsewhere and brought in unchanged (`multidistill import-classifier`)"
               if record.method == IMPORT_METHOD else
               "A model trained on gold labels only (a teacher run)")
    role = {"teacher": teacher, "student": "A distilled student",
            "general student": "A general (task-agnostic) student distilled on unlabelled text"}[record.role]
    text = f"{role} ({_size(record)}) for {tasks}, made with multidistill; this is {what}."
    if record.in_progress:
        text += ("\n\n**Training had not finished when this card was written.** This is the best model so far, saved "
                 "mid-run: the run is still going or was cut. It has no final scores yet; the card written when the "
                 "run ends replaces this one and quotes them from its `metrics.json`.")
    return text


def _model_section(record: CardRecord) -> str:
    rows = [("role", record.role), ("architecture", record.architecture),
            ("layers", record.layers), ("hidden size", record.hidden_size),
            ("parameters", f"{record.parameters:,}" if record.parameters is not None else None),
            ("max sequence length", record.max_length), ("initialised from", record.initialised_from),
            ("made by", record.method)]
    if record.domain_branch:
        rows.append(("domain branch", f"{', '.join(record.domain_branch)} (Meta-KD's domain embedding and "
                                      "classifier: used in training, left out of ONNX and Hugging Face exports)"))
    for task, chosen in record.thresholds.items():
        rows.append((f"decision thresholds ({task})" if len(record.thresholds) > 1 else "decision thresholds",
                     describe(chosen) + (
                         f" (each label's, chosen on the {record.eval_split} rows once training ended; the run's "
                         f"{record.eval_split} scores are at 0.5;" if record.run_dir is not None else
                         " (each label's, saved with the model;") + " `predict`, `evaluate` and the exports use them)"))
    for i, teacher in enumerate(record.teachers):
        note = f" ({teacher.note})" if teacher.note else ""
        rows.append(("teacher" if len(record.teachers) == 1 else f"teacher {i + 1}", f"{_code(teacher.path)}{note}"))
    if record.signals:
        rows.append(("teacher signals", _code(record.signals)))
    if record.objective:
        terms = {" + ".join(terms) for terms in record.objective.values()}
        if len(terms) == 1:
            rows.append(("objective", f"{terms.pop()} (every task)"))
        else:
            rows.append(("objective", "; ".join(f"{t}: {' + '.join(v)}" for t, v in record.objective.items())))
    lines = ["## Model", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {table_cell(value)} |" for name, value in rows if value is not None]
    return "\n".join(lines)


def _data_section(record: CardRecord) -> str:
    if not record.tasks:
        return ""
    lines = ["## Data and tasks", "", "| task | type | labels | text pairs | training rows | dev metrics |",
             "|---|---|---|---|---|---|"]
    for task in record.tasks:
        rows = str(task.train_examples) if task.train_examples is not None else "-"
        lines.append(f"| {table_cell(task.name)} | {task.type} | {table_cell(_labels(task.labels))} | "
                     f"{'yes' if task.pair else 'no'} | {rows} | "
                     f"{', '.join(task.metrics) or '-'} |")
    lines += ["", _data_source(record)]
    return "\n".join(lines)


def _data_source(record: CardRecord) -> str:
    """Where the training rows came from, as the run's config names them (a transfer set lives elsewhere than the
    data root), and what the row counts are."""
    root = f"`{record.data_root}`" if record.data_root else "the default data root (MULTIDISTILL_DATA_ROOT)"
    if record.run_dir is None:
        return "Saved outside a run folder: where its training rows came from is not recorded." + (
            f" Data root recorded with the model: `{record.data_root}`." if record.data_root else "")
    text = "Trained on each task's `train` split as the run's config names it"
    if record.train_files:
        files = "; ".join(f"{task}: {where}" for task, where in record.train_files.items())
        text += f" ({files}; relative paths are under the data root {root})."
    else:
        text += f", under the data root {root}."
    if any(task.train_examples is not None for task in record.tasks):
        text += " The training rows are `train_examples` in the run's `metrics.json`: the rows it trained on."
    return f"{text} {_scored_on(record)}"


def _scored_on(record: CardRecord) -> str:
    """The split the card's scores come from; for a task whose test split was carved out of dev (`test_from_dev`),
    which part of its dev rows that split is."""
    text = f"Scored on each task's `{record.eval_split}` split."
    for task, carve in sorted(record.carved.items()):  # a run that carves selects on dev (eval_split: test refused)
        text += (f" {task}'s `dev` is its dev rows but the seeded {100 * float(carve.get('fraction', 0.5)):g}% that "
                 f"went to test (`test_from_dev`, seed {carve.get('seed', 0)}).")
    return text


def _teacher_cells(value: float | None, theirs: float | None, main_metric: bool) -> str:
    """A score row's teacher and retention cells; retention for the task's main metric only."""
    kept = retention({"task": value}, {"task": theirs}) if main_metric else None
    return f" {_num(theirs)} | {_num(100 * kept.ratio, 1) + '%' if kept else '-'} |"


def baselines(record: CardRecord) -> dict[str, Mapping]:
    """Each card task's trivial baseline as the run recorded it (``trivial_baselines`` in ``metrics.json``: its
    constant predictor, main score and metrics), for the tasks the model was scored on."""
    recorded = (record.metrics or {}).get("trivial_baselines") or {}
    return {task: recorded[task] for task in task_scores(record) if task in recorded}


def _score_row(task: TaskInfo, metric: str, value: float | None, baseline: Mapping | None) -> str:
    """The first cells of a score row; a main score no better than the constant predictor's is marked."""
    mark = ""
    if baseline is not None and task.metrics and metric == task.metrics[0] and at_baseline(value, baseline["main"]):
        mark = f" {AT_BASELINE_MARK}"
    return f"| {table_cell(task.name)} | {metric} | {_num(value)}{mark} |"


def _scores_section(record: CardRecord) -> str:
    scores = task_scores(record)
    if not scores:
        return ""
    known, elsewhere = teacher_main(record), other_domains(record)
    single_teacher = record.teachers[0] if len(record.teachers) == 1 and record.teachers[0].metrics else None
    with_teacher = known is not None
    trivial = baselines(record)
    teacher = {task: value for task, value in (known or {}).items() if task not in elsewhere}
    header = "| task | metric | this model |" + (" teacher | retention |" if with_teacher else "") + \
        (" constant predictor |" if trivial else "")
    lines = ["## Dev scores", "", header,
             "|---|---|---:|" + ("---:|---:|" if with_teacher else "") + ("---:|" if trivial else "")]
    main = main_scores(record)
    for task in record.tasks:
        if task.name not in scores:
            continue
        for metric, value in scores[task.name].items():
            row = _score_row(task, metric, value, trivial.get(task.name))
            if with_teacher:
                main_metric = bool(task.metrics) and metric == task.metrics[0]
                theirs = None
                if task.name in elsewhere:
                    pass  # other rows than the teacher's: compared per domain below
                elif single_teacher is not None:
                    theirs = (single_teacher.metrics or {}).get(task.name, {}).get(metric)
                elif main_metric:
                    theirs = teacher.get(task.name)
                row += _teacher_cells(value, theirs, main_metric)
            if trivial:
                row += f" {_num((trivial.get(task.name) or {}).get('metrics', {}).get(metric))} |"
            lines.append(row)
    average = (record.metrics or {}).get("average")
    if average is not None and len(main) > 1:
        row = f"| average of main scores | | {_num(average)} |"
        if with_teacher:
            kept = retention(main, teacher)
            row += (f" {_num(kept.reference_score)} | {_num(100 * kept.ratio, 1)}% |" if kept else " - | - |")
        lines.append(row + (" - |" if trivial else ""))
    notes = [_scored_on(record)]
    if with_teacher:
        notes.append(f"Teacher: {_whose(record)} dev scores from its run's `metrics.json`. Retention is against "
                     "that column: this model's main score (each task's first metric) over the teacher's; the average "
                     "row over the tasks both were scored on. A teacher score at or below 0 gives no retention."
                     + _not_the_ensemble(record))
        if elsewhere:
            notes.append(f"This model was scored on other domains than its teacher (task "
                         f"{', '.join(sorted(elsewhere))}): the teacher's scores on this model's domains are in the "
                         "next section.")
    if trivial:
        notes.append(_baseline_note(trivial))
    best_step = (record.metrics or {}).get("best_step")
    if best_step is not None:
        notes.append(f"Scores of the kept model (step {best_step}), from `metrics.json` in `{record.run_dir}`.")
    return "\n".join([*lines, "", *notes])


def _whose(record: CardRecord) -> str:
    """Whose scores the teacher column holds: the teacher's, or the mean over the teachers whose scores are shown."""
    shown = sum(1 for t in record.teachers if t.metrics)
    if len(record.teachers) == 1:
        return "the teacher's"
    if shown == len(record.teachers):
        return f"the mean of the {shown} teachers'"
    return f"the mean over the teachers whose scores are shown ({shown} of {len(record.teachers)}; see Model)"


def _not_the_ensemble(record: CardRecord) -> str:
    """With several teachers, why this card's retention differs from a recipe report's: the report's reference is
    the ensemble's score (their averaged predictions), this card's the mean of each teacher's own score."""
    if sum(1 for t in record.teachers if t.metrics) < 2:
        return ""
    return (" The teachers' mean score is not their ensemble's score (the averaged predictions this student learned "
            "from): a recipe's report.md measures retention against the ensemble where its summary.json records it, "
            "so its numbers differ from these.")


def _baseline_note(trivial: Mapping[str, Mapping]) -> str:
    predictors = "; ".join(f"{task}: {baseline['predictor']}" for task, baseline in trivial.items())
    return (f"Constant predictor: the task's trivial baseline, which ignores its input ({predictors}), fitted on the "
            "training rows the run saw and scored on the same dev rows (`trivial_baselines` in `metrics.json`). "
            f"{AT_BASELINE_MARK}: this model's main score is no better than the constant predictor's (within "
            f"{BASELINE_MARGIN} above it): a constant predictor does as well, so it is not retention.")


def _domains_section(record: CardRecord) -> str:
    """Tasks with domains: each domain's metrics and their unweighted mean, as in ``metrics.json``; beside them the
    teacher's on the same domain (the mean over the teachers) and, for the main metric, the retention."""
    domains = (record.metrics or {}).get("domains", {})
    means = (record.metrics or {}).get("domain_average", {})
    with_teacher = any(t.domains for t in record.teachers)
    lines = []
    for task in record.tasks:
        main_metric = task.metrics[0] if task.metrics else None
        for domain, scores in domains.get(task.name, {}).items():
            for metric, value in scores.items():
                row = f"| {table_cell(task.name)} | {table_cell(domain)} | {metric} | {_num(value)} |"
                if with_teacher:
                    theirs = teacher_domain_score(record, task.name, domain, metric)
                    row += _teacher_cells(value, theirs, metric == main_metric)
                lines.append(row)
        lines += [f"| {table_cell(task.name)} | mean over domains | {metric} | {_num(value)} |"
                  + (" | |" if with_teacher else "") for metric, value in means.get(task.name, {}).items()]
    if not lines:
        return ""
    columns = "| task | domain | metric | this model |" + (" teacher | retention |" if with_teacher else "")
    header = ["## Dev scores per domain", "", columns, "|---|---|---|---:|" + ("---:|---:|" if with_teacher else "")]
    return "\n".join(header + lines)


def _speed_section(record: CardRecord) -> str:
    metrics = record.metrics or {}
    rate, seconds = metrics.get("examples_per_second"), metrics.get("train_seconds")
    lines = []
    if rate is not None:
        lines.append(f"- training throughput: {_num(rate, 1)} examples/s over {_num(seconds, 1)} s of training "
                     "(measured by the training loop, evaluation excluded)")
    if record.speed:
        lines += ["", f"Inference, measured by `multidistill benchmark` ({record.speed_setting}):", "",
                  "| runtime | latency at batch 1, median (ms) | p95 (ms) | throughput (examples/s) | "
                  "score on the benchmark's rows |",
                  "|---|---:|---:|---:|---:|"]
        for runtime, numbers in record.speed.items():
            lines.append(f"| {runtime} | {_num(numbers.get('latency_ms_median'), 2)} | "
                         f"{_num(numbers.get('latency_ms_p95'), 2)} | "
                         f"{_num(numbers.get('throughput_examples_per_s'), 1)} | {_num(numbers.get('score'))} |")
    elif lines:
        lines.append(f"- inference speed: not measured yet; {_benchmark_offer(record)}")
    return "## Measured speed\n\n" + "\n".join(lines) if lines else ""


def _benchmark_offer(record: CardRecord) -> str:
    """What `multidistill benchmark` would do for this folder: it rewrites the card of a run's model folder (and of
    the ONNX export it makes itself) with its numbers, never those of other exports or encoders."""
    measures = "measures latency and throughput in PyTorch and ONNX Runtime (fp32, int8) side by side"
    if record.form == "multidistill" and record.run_dir is not None:
        return f"`multidistill benchmark` {measures} and adds them to this card"
    source = (record.export or {}).get("source") or (
        str(Path(record.run_dir) / "model") if record.run_dir is not None else None)
    on = f" run on the model folder `{source}`" if source else ""
    return f"`multidistill benchmark`{on} {measures}, in its benchmark.json (this card is not updated)"


def _export_section(record: CardRecord) -> str:
    export = record.export or {}
    if record.form == "onnx" and export.get("parity"):
        return _onnx_check(export)
    if record.form != "hf":
        return ""
    if export.get("checks"):  # a multi-task root: each task folder's own check
        return "## Export check\n\n" + "\n".join(f"- `{record.folders.get(task, task)}/`: {_hf_check(check)}"
                                                   for task, check in export["checks"].items())
    return f"## Export check\n\n{_hf_check(export['check'])}" if export.get("check") else ""


def _hf_check(check: Mapping) -> str:
    agreement = check.get("agreement")
    return ("Loaded back with `AutoModelForSequenceClassification` and compared with the multidistill model on "
            f"{check['rows']} {check['source']}: max |logit difference| {check['max_abs_diff']:.1e} (limit "
            f"{check['tolerance']:.0e})" + (f", same predicted class on {agreement:.1%} of rows."
                                           if agreement is not None else "."))


def _onnx_check(export: Mapping) -> str:
    """export.json's parity numbers per graph; a graph that failed its check was removed from the folder (the
    benchmark's ``on_parity_failure="omit"``), which its rows and the reasons below say."""
    failures = export.get("parity_failures") or {}
    lines = [f"## Export check (ONNX Runtime against PyTorch, first {export.get('parity_split', 'dev')} rows)", "",
             "| graph | task | rows | max abs logit diff | agreement | metric | PyTorch | ONNX | check |",
             "|---|---|---:|---:|---:|---|---:|---:|---|"]
    for precision, tasks in export["parity"].items():
        result = "FAILED: graph removed" if precision in failures else "passed"
        for task, n in tasks.items():
            agreement = n.get("agreement")
            lines.append(f"| {precision} | {table_cell(task)} | {n['examples']} | {n['max_abs_diff']:.1e} | "
                         f"{'-' if agreement is None else f'{agreement:.1%}'} | {n['metric']} | "
                         f"{_num(n['metric_torch'])} | {_num(n['metric_onnx'])} | {result} |")
    for precision, reasons in failures.items():
        lines += ["", f"The {precision} graph failed its parity check and was removed from this folder "
                      "(`parity_failures` in `export.json`):", "", *(f"- {reason}" for reason in reasons)]
    return "\n".join(lines)


_PREDICT = "multidistill predict PATH --task {task} --input rows.csv --output predictions.jsonl"
# How to load each form; PATH is the folder the card is in. Filled with str.format (no other braces here).
USAGE: dict[str, str] = {
    "multidistill": """```bash
""" + _PREDICT + """
multidistill evaluate PATH --tasks {task}{per_domain}
multidistill export PATH --format onnx --out exports/onnx --quantize int8
```

```python
from multidistill.models import load_model

model = load_model("PATH")  # this folder
```""",
    "onnx": """```python
from multidistill.export.onnx import OnnxModel

model = OnnxModel.load("PATH", precision="fp32")  # or "int8" when model.int8.onnx is here
# truncated as in training and `multidistill predict` (a longer text would overrun the position table)
batch = model.tokenizer([{text_a}], truncation=True, max_length={max_length}, return_tensors="np")
logits = model.logits("{task}", batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
```

With ONNX Runtime alone: `onnxruntime.InferenceSession("PATH/model.onnx")`; its inputs are `input_ids`,
`attention_mask` (and `token_type_ids` when `export.json` lists them), int64, and it has one output per task,
`logits_<task>`.

```bash
""" + _PREDICT + """
```""",
    "hf": """```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model = AutoModelForSequenceClassification.from_pretrained("PATH")  # this folder
tokenizer = AutoTokenizer.from_pretrained("PATH")
with torch.no_grad():
    # truncated as in training and `multidistill predict` (a longer text would overrun the position table)
    logits = model(**tokenizer({text}, truncation=True, max_length={max_length}, return_tensors="pt")).logits
{answer}
```""",
    "hf folders": """One stock `AutoModelForSequenceClassification` folder per task:

{folders}

```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model = AutoModelForSequenceClassification.from_pretrained("PATH/{first}")
tokenizer = AutoTokenizer.from_pretrained("PATH/{first}")
```""",
    "encoder": """```python
from transformers import AutoModel, AutoTokenizer

encoder = AutoModel.from_pretrained("PATH")  # this folder
tokenizer = AutoTokenizer.from_pretrained("PATH")
```

To fine-tune it with multidistill, set a run's `model.name_or_path` to this folder.""",
}


def _usage_section(record: CardRecord) -> str:
    pair = any(task.pair for task in record.tasks)
    regression = bool(record.tasks) and all(task.type == "regression" for task in record.tasks)
    form = "hf folders" if record.form == "hf" and record.folders else record.form
    texts = '"first text", "second text"' if pair else '"a fine film"'
    multilabel = bool(record.tasks) and all(task.type == "multilabel" for task in record.tasks)
    chosen = next(iter(record.thresholds.values()), None) if len(record.tasks) == 1 else None
    answer = ("score = float(logits[0, 0])  # a regression head: the score itself" if regression else
              f"thresholds = torch.tensor({[float(t) for t in chosen.values()]})  # each label's, chosen on "
              f"{record.eval_split}\nprint([model.config.id2label[i] for i in (torch.sigmoid(logits[0]) > thresholds)"
              ".nonzero().flatten().tolist()])" if multilabel and chosen else
              "print([model.config.id2label[i] for i in (logits[0] > 0).nonzero().flatten().tolist()])  # each "
              "label's own sigmoid over 0.5" if multilabel else "print(model.config.id2label[int(logits.argmax(-1))])")
    usage = USAGE[form].format(
        task=next((t.name for t in record.tasks if t.type != "text"), "TASK"), text=texts,
        text_a=texts.split(", ")[0], answer=answer,
        folders="\n".join(f"- `{folder}/`: task {name}" for name, folder in record.folders.items()),
        first=next(iter(record.folders.values()), ""), max_length=record.max_length or 512,
        per_domain=" --per-domain" if (record.metrics or {}).get("domains") else "")
    return "## How to use\n\n" + usage


def _made_by_section(record: CardRecord) -> str:
    lines = ["## How it was made", ""]
    if record.command:
        # The cd goes in the block: the command's relative paths (config, data) read from that folder.
        lines += ["```bash", _in_folder(record.command, record.command_cwd), "```", ""]
    elif record.command_unrecorded:
        lines += ["Started by a command that was not recorded (a version that kept no command.json).", ""]
    else:
        lines += ["Made from Python (no command line recorded).", ""]
    if record.resumed_by:
        folders = record.resumed_in or (None,) * len(record.resumed_by)
        resumes = [_in_folder(command, cwd) if command else "# (from Python)"
                   for command, cwd in zip(record.resumed_by, folders, strict=False)]
        lines += ["Resumed by:", "", "```bash", *resumes, "```", ""]
    if record.config_file:
        lines.append(f"Full resolved configuration: `{record.config_file}`.")
    if record.run_dir:
        lines.append(f"Run folder: `{record.run_dir}` (metrics.json, train_history.json, checkpoints).")
    if record.export and record.export.get("source"):
        settings = _export_settings(record)
        lines.append(f"Exported from `{record.export['source']}`" + (f"; {settings}." if settings else "."))
    return "\n".join(lines).rstrip()


def _in_folder(command: str, cwd: str | None) -> str:
    """``command`` as one line to paste into a shell: ``cd '<cwd>' && <command>`` when its folder is known."""
    return f"cd {shlex.quote(cwd)} && {command}" if cwd else command


def _export_settings(record: CardRecord) -> str:
    """The export's own settings, as its ``export.json`` records them."""
    export = record.export or {}
    if record.form == "hf":
        tasks = f"task {export['task']}" if export.get("task") else f"tasks {', '.join(export.get('tasks', []))}"
        return (f"export settings (`export.json`): format Hugging Face `AutoModelForSequenceClassification`, {tasks}, "
                f"model type {export.get('model_type')}, max length {export.get('max_length')}")
    if record.form != "onnx":
        return ""
    variant = export.get("variant") or {}
    parts = [f"format ONNX, opset {export.get('opset')}", f"{variant.get('graph', 'plain')} graph"]
    if variant.get("attention"):
        parts.append(f"{variant['attention']} attention")
    int8 = variant.get("int8")
    if int8:
        channel = "per-channel" if int8.get("per_channel") else "per-tensor"
        removed = " (graph removed: failed its parity check)" if "int8" in (export.get("parity_failures") or {}) \
            else ""
        parts.append(f"quantize int8, {int8.get('method')} method, {channel} weight scales{removed}")
    else:
        parts.append("quantize none (fp32 only)")
    if not export.get("parity_checked", True):
        parts.append("no parity check against PyTorch")
    return "export settings (`export.json`): " + ", ".join(parts)
