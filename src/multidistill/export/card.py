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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from multidistill.evaluation.retention import retention
from multidistill.utils.atomic import atomic_file

CARD_FILE = "README.md"
# The folder a card describes: a multidistill model folder, a stock Hugging Face classifier (one task), a plain
# encoder (a general student's encoder/), or an ONNX export.
Form = Literal["multidistill", "hf", "encoder", "onnx"]
LIBRARY: dict[str, str] = {"multidistill": "multidistill", "hf": "transformers", "encoder": "transformers",
                           "onnx": "onnx"}


@dataclass(frozen=True)
class TaskInfo:
    """One task the model was trained on, as its saved task spec and the run describe it."""

    name: str
    type: str  # classification, regression or text (an unlabelled corpus)
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
    initialised_from: str | None = None  # what the run's model.name_or_path named (a Hub id or a folder)
    method: str | None = None  # the recipe or command, e.g. "mkd recipe, stage student-transformer"
    objective: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # task -> loss term names
    tasks: tuple[TaskInfo, ...] = ()
    eval_split: str = "dev"
    data_root: str | None = None
    run_dir: str | None = None
    metrics: Mapping | None = None  # the run's metrics.json
    teachers: tuple[TeacherInfo, ...] = ()
    signals: str | None = None
    command: str | None = None
    command_unrecorded: bool = False  # a resumed run whose first command was not recorded (command.json)
    resumed_by: tuple[str | None, ...] = ()  # the commands that resumed the run (None: from Python)
    config_file: str | None = None
    export: Mapping | None = None  # the export's export.json (its parity check numbers)
    max_length: int | None = None
    domain_branch: tuple[str, ...] = ()  # the domains of a saved Meta-KD domain branch (never in an export)
    folders: Mapping[str, str] = field(default_factory=dict)  # multi-task HF export: task -> sub-folder
    # Inference speed measured by `multidistill benchmark` (its benchmark.json): runtime -> latency_ms_median,
    # latency_ms_p95, throughput_examples_per_s, score; and how it was measured (batch size, threads, machine).
    speed: Mapping[str, Mapping] = field(default_factory=dict)
    speed_setting: str | None = None


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
    return ModelCardData(library_name=LIBRARY[record.form], tags=tags, base_model=record.base_model,
                         pipeline_tag=pipeline, model_name=record.title, eval_results=results or None,
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
               if record.domain_branch else "A model trained on gold labels only (a teacher run)")
    role = {"teacher": teacher, "student": "A distilled student",
            "general student": "A general (task-agnostic) student distilled on unlabelled text"}[record.role]
    return f"{role} ({_size(record)}) for {tasks}, made with multidistill; this is {what}."


def _model_section(record: CardRecord) -> str:
    rows = [("role", record.role), ("architecture", record.architecture),
            ("layers", record.layers), ("hidden size", record.hidden_size),
            ("parameters", f"{record.parameters:,}" if record.parameters is not None else None),
            ("max sequence length", record.max_length), ("initialised from", record.initialised_from),
            ("made by", record.method)]
    if record.domain_branch:
        rows.append(("domain branch", f"{', '.join(record.domain_branch)} (Meta-KD's domain embedding and "
                                      "classifier: used in training, left out of ONNX and Hugging Face exports)"))
    for i, teacher in enumerate(record.teachers):
        rows.append(("teacher" if len(record.teachers) == 1 else f"teacher {i + 1}", f"`{teacher.path}`"))
    if record.signals:
        rows.append(("teacher signals", f"`{record.signals}`"))
    if record.objective:
        terms = {" + ".join(terms) for terms in record.objective.values()}
        if len(terms) == 1:
            rows.append(("objective", f"{terms.pop()} (every task)"))
        else:
            rows.append(("objective", "; ".join(f"{t}: {' + '.join(v)}" for t, v in record.objective.items())))
    lines = ["## Model", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows if value is not None]
    return "\n".join(lines)


def _data_section(record: CardRecord) -> str:
    if not record.tasks:
        return ""
    lines = ["## Data and tasks", "", "| task | type | labels | text pairs | training rows | dev metrics |",
             "|---|---|---|---|---|---|"]
    for task in record.tasks:
        labels = ", ".join(task.labels) if task.labels else "-"
        rows = str(task.train_examples) if task.train_examples is not None else "-"
        lines.append(f"| {task.name} | {task.type} | {labels} | {'yes' if task.pair else 'no'} | {rows} | "
                     f"{', '.join(task.metrics) or '-'} |")
    where = f" Data root: `{record.data_root}`." if record.data_root else ""
    lines += ["", f"Trained on each task's `train` split and scored on its `{record.eval_split}` split.{where}"]
    return "\n".join(lines)


def _teacher_cells(value: float | None, theirs: float | None, main_metric: bool) -> str:
    """A score row's teacher and retention cells; retention for the task's main metric only."""
    kept = retention({"task": value}, {"task": theirs}) if main_metric else None
    return f" {_num(theirs)} | {_num(100 * kept.ratio, 1) + '%' if kept else '-'} |"


def _scores_section(record: CardRecord) -> str:
    scores = task_scores(record)
    if not scores:
        return ""
    known, elsewhere = teacher_main(record), other_domains(record)
    single_teacher = record.teachers[0] if len(record.teachers) == 1 and record.teachers[0].metrics else None
    with_teacher = known is not None
    teacher = {task: value for task, value in (known or {}).items() if task not in elsewhere}
    header = "| task | metric | this model |" + (" teacher | retention |" if with_teacher else "")
    lines = ["## Dev scores", "", header,
             "|---|---|---:|" + ("---:|---:|" if with_teacher else "")]
    main = main_scores(record)
    for task in record.tasks:
        if task.name not in scores:
            continue
        for metric, value in scores[task.name].items():
            row = f"| {task.name} | {metric} | {_num(value)} |"
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
            lines.append(row)
    average = (record.metrics or {}).get("average")
    if average is not None and len(main) > 1:
        row = f"| average of main scores | | {_num(average)} |"
        if with_teacher:
            kept = retention(main, teacher)
            row += (f" {_num(kept.reference_score)} | {_num(100 * kept.ratio, 1)}% |" if kept else " - | - |")
        lines.append(row)
    notes = [f"Scored on each task's `{record.eval_split}` split."]
    if with_teacher:
        whose = "the teacher's" if single_teacher else f"the mean of the {len(record.teachers)} teachers'"
        notes.append(f"Teacher: {whose} dev scores from its run's `metrics.json`. Retention: this model's main "
                     "score (each task's first metric) over the teacher's; the average row over the tasks both were "
                     "scored on. A teacher score at or below 0 gives no retention.")
        if elsewhere:
            notes.append(f"This model was scored on other domains than its teacher (task "
                         f"{', '.join(sorted(elsewhere))}): the teacher's scores on this model's domains are in the "
                         "next section.")
    best_step = (record.metrics or {}).get("best_step")
    if best_step is not None:
        notes.append(f"Scores of the kept model (step {best_step}), from `metrics.json` in `{record.run_dir}`.")
    return "\n".join([*lines, "", *notes])


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
                row = f"| {task.name} | {domain} | {metric} | {_num(value)} |"
                if with_teacher:
                    theirs = teacher_domain_score(record, task.name, domain, metric)
                    row += _teacher_cells(value, theirs, metric == main_metric)
                lines.append(row)
        lines += [f"| {task.name} | mean over domains | {metric} | {_num(value)} |" + (" | |" if with_teacher else "")
                  for metric, value in means.get(task.name, {}).items()]
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
        lines.append("- inference speed: not measured yet; `multidistill benchmark` measures latency and throughput "
                     "in PyTorch and ONNX Runtime (fp32, int8) side by side and adds them to this card")
    return "## Measured speed\n\n" + "\n".join(lines) if lines else ""


def _export_section(record: CardRecord) -> str:
    export = record.export or {}
    if record.form == "onnx" and export.get("parity"):
        lines = ["## Export check (ONNX Runtime against PyTorch, first dev rows)", "",
                 "| graph | task | rows | max abs logit diff | agreement | metric | PyTorch | ONNX |",
                 "|---|---|---:|---:|---:|---|---:|---:|"]
        for precision, tasks in export["parity"].items():
            for task, n in tasks.items():
                agreement = n.get("agreement")
                lines.append(f"| {precision} | {task} | {n['examples']} | {n['max_abs_diff']:.1e} | "
                             f"{'-' if agreement is None else f'{agreement:.1%}'} | {n['metric']} | "
                             f"{_num(n['metric_torch'])} | {_num(n['metric_onnx'])} |")
        return "\n".join(lines)
    check = export.get("check")
    if record.form == "hf" and check:
        agreement = check.get("agreement")
        return ("## Export check\n\nLoaded back with `AutoModelForSequenceClassification` and compared with the "
                f"multidistill model on {check['rows']} {check['source']}: max |logit difference| "
                f"{check['max_abs_diff']:.1e} (limit {check['tolerance']:.0e})"
                + (f", same predicted class on {agreement:.1%} of rows." if agreement is not None else "."))
    return ""


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
batch = model.tokenizer([{text_a}], return_tensors="np")
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
    answer = "score = float(logits[0, 0])  # a regression head: the score itself" if regression else \
        "print(model.config.id2label[int(logits.argmax(-1))])"
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
        lines += ["```bash", record.command, "```", ""]
    elif record.command_unrecorded:
        lines += ["Started by a command that was not recorded (a version that kept no command.json).", ""]
    else:
        lines += ["Made from Python (no command line recorded).", ""]
    if record.resumed_by:
        lines += ["Resumed by:", "", "```bash", *(c or "# (from Python)" for c in record.resumed_by), "```", ""]
    if record.config_file:
        lines.append(f"Full resolved configuration: `{record.config_file}`.")
    if record.run_dir:
        lines.append(f"Run folder: `{record.run_dir}` (metrics.json, train_history.json, checkpoints).")
    if record.export and record.export.get("source"):
        lines.append(f"Exported from `{record.export['source']}`.")
    return "\n".join(lines).rstrip()
