"""Fill a model card's `CardRecord` from what is on disk: the model folder, its run folder (``config.yaml``,
``metrics.json``, ``command.json``) and its teachers' run folders.

Nothing is recomputed: the scores are the run's ``metrics.json`` as written, so a card always agrees with it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml

from multidistill.errors import ModelError
from multidistill.evaluation.thresholds import saved_thresholds
from multidistill.export.card import CardRecord, Form, TaskInfo, TeacherInfo, write_card
from multidistill.models.multitask import WEIGHTS_FILE
from multidistill.training.run_dir import is_run_dir
from multidistill.utils.atomic import read_json_object
from multidistill.utils.command import read_command

T = TypeVar("T")
METRICS_FILE = "metrics.json"
BEST_MODEL = "model"  # multidistill.training.loop.BEST_MODEL (the loop pulls in accelerate and tensorboard)
RUN_CONFIG_FILE = "config.yaml"
STORE_MANIFEST = "manifest.json"  # multidistill.teachers.store.MANIFEST (not imported: the store pulls in datasets)


def _read_yaml(path: Path) -> dict | None:
    try:
        payload = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return payload if isinstance(payload, dict) else None


def run_folder(model_dir: str | Path) -> Path | None:
    """The run folder a model folder was saved in (``RUN/model``), or None for a model saved elsewhere."""
    model_dir = Path(model_dir).resolve()
    return model_dir.parent if model_dir.name == BEST_MODEL and is_run_dir(model_dir.parent) else None


OTHER_WEIGHTS = "now holds other weights than this student was distilled from; its scores are not shown"
GONE = "not found when this card was written; its scores are not shown"


def _located(path: str, cwd: str | None) -> str:
    """``path`` as the run read it: a relative one from the folder the run's command ran in (a card may be
    rewritten from elsewhere, e.g. by `benchmark`), where that folder holds it."""
    if cwd is None or path.startswith("pkg:") or Path(path).is_absolute():
        return path
    return str(Path(cwd) / path) if (Path(cwd) / path).exists() else path


def _teacher(path: str, distilled_from: str | None, cwd: str | None = None) -> TeacherInfo:
    """The teacher at ``path`` with its run's dev scores, unless the run recorded the weights it was distilled from
    (``distilled_from``, a `weights_fingerprint`) and the folder now holds others (retrained in place) or is gone:
    then no scores, and a note that says why."""
    from multidistill.teachers.fingerprint import weights_fingerprint

    if distilled_from is not None:
        try:
            now = weights_fingerprint(_located(path, cwd))  # None: no weights there any more
        except ModelError:  # no folder there any more
            now = None
        if now != distilled_from:
            return TeacherInfo(path=path, note=GONE if now is None else OTHER_WEIGHTS)
    where = Path(_located(path, cwd))
    run = run_folder(where) if where.is_dir() else None
    metrics = read_json_object(run / METRICS_FILE) if run is not None else None
    if not metrics:
        return TeacherInfo(path=path)
    return TeacherInfo(path=path, metrics=metrics.get("tasks"), main=metrics.get("main"),
                       domains=metrics.get("domains") or None)


def _teachers(config: dict, metrics: dict | None, *, scores: bool = True,
              cwd: str | None = None) -> tuple[TeacherInfo, ...]:
    """The run's teachers: those its signal store was made from, and its online teachers; each with the weights
    fingerprint the store's manifest or the run's metrics.json recorded for it (runs and stores made before that
    record have none, and their teachers' scores are shown as they are now). Without ``scores`` (a card with no
    scores of its own to compare) their paths only: no teacher's weights are hashed."""
    paths: list[str] = []
    recorded: dict[str, str] = {}
    if config.get("signals"):
        manifest = read_json_object(Path(config["signals"]) / STORE_MANIFEST) or {}
        teachers = [str(p) for p in manifest.get("teachers", [])]
        paths += teachers
        weights = manifest.get("teacher_weights") or []
        if len(weights) == len(teachers):  # a merged store (cross-fitting) records none: nothing to compare
            recorded.update(zip(teachers, weights, strict=True))
    paths += [str(p) for p in config.get("online_teachers") or []]
    recorded.update((metrics or {}).get("teacher_weights") or {})
    return tuple(_teacher(p, recorded.get(p), cwd) if scores else TeacherInfo(path=p) for p in dict.fromkeys(paths))


def _is_local(name: str) -> bool:
    return name.startswith(("pkg:", "/", ".", "~")) or Path(name).exists()


def _size(model_dir: Path, model_config: dict) -> tuple[str, int | None, int | None]:
    """(architecture, layers, hidden size) from the folder's configs, without loading weights."""
    if model_config.get("kind") == "bilstm":
        spec = model_config.get("spec", {})
        layers = spec.get("num_layers")
        return "BiLSTM", layers, 2 * spec["hidden_size"] if "hidden_size" in spec else None
    from transformers import AutoConfig

    from multidistill.models.families import model_dims

    config = AutoConfig.from_pretrained(model_dir)
    pooling = (model_config.get("backbone") or {}).get("pooling", "cls")  # multidistill_model.json's backbone
    architecture = f"{config.model_type} encoder, {'[CLS]' if pooling == 'cls' else pooling} pooling"
    try:
        dims = model_dims(config)
    except Exception:  # a family without a size table: the card simply leaves the sizes out
        return architecture, None, None
    return architecture, dims.num_layers, dims.hidden_size


def _method(run: Path, config: dict) -> str:
    recipe = _read_yaml(run.parent / "recipe.yaml")
    if recipe and recipe.get("recipe"):
        return f"the {recipe['recipe']} recipe, stage {run.name}"
    if (run / "stage.json").is_file() or (run.parent / ".pending" / f"{run.name}.json").is_file():
        return f"stage {run.name} of the multi-stage run in {run.parent}"
    return "a distillation run (kind: distill)" if config.get("kind") == "distill" else \
        "a gold-label run (kind: teacher)"


def _initialisation(model: dict) -> tuple[str | None, str | None]:
    """(what the run's model started from, in words; its Hub base model for the front matter, None for a local
    folder or random weights), from the run's ``model`` settings."""
    name = model.get("name_or_path")
    if not name:
        return None, None
    if model.get("init_from"):
        return f"`{model['init_from']}` (a saved multidistill model: encoder and task heads)", None
    heads = f"; task heads from `{model['heads_from']}`" if model.get("heads_from") else ""
    tokenizer = model.get("tokenizer") or name
    if model.get("architecture") == "bilstm":
        embeddings = (model.get("bilstm") or {}).get("init_embeddings", True) and not model.get("backbone_config")
        return (f"random weights (a BiLSTM), with the tokenizer of `{tokenizer}`"
                + (f" and the word embeddings of `{name}`" if embeddings else "")), None
    layers = model.get("student_layers")
    cut = f" (its layer{'s' * (len(layers) != 1)} {', '.join(map(str, layers))})" if layers else ""
    if model.get("backbone_config") is not None:
        family = model["backbone_config"].get("model_type")
        shape = f"a {family} encoder sized by `model.backbone_config`" if family else \
            f"`{name}`'s architecture resized by `model.backbone_config`"
        return f"random weights (no pretrained weights): {shape}{cut}, with the tokenizer of `{tokenizer}`{heads}", None
    return f"`{name}`{cut}{heads}", name if not _is_local(name) else None


def _train_files(data: dict) -> dict[str, str]:
    """Each task's training file as the run's config names it (a transfer set is a folder outside the data root):
    of a task with domains, only the domains the run kept (``domains_include`` / ``domains_exclude``), each with the
    share of its rows it kept (``domain_fraction``) and the fold it left out (``domain_holdout``)."""
    from multidistill.data.tasks import Task, get_task

    try:
        declared = {spec["name"]: Task.model_validate(spec) for spec in data.get("task_specs") or []}
        refs = [{"name": ref} if isinstance(ref, str) else dict(ref) for ref in data.get("tasks") or []]
        tasks = [(get_task(ref["name"], declared), ref) for ref in refs]
    except Exception:  # a config this version cannot read: the card names the data root only
        return {}
    files = {}
    for task, ref in tasks:
        kept = _kept_domains(task.domains, ref)
        left_out = [d for d in task.domains if d not in kept]
        if "train" in task.files:
            train = task.files["train"]
            files[task.name] = f"`{train.path}`" + (f" ({train.format})" if train.format != "tsv" else "")
            if left_out:  # one file, a domain column: the rows of the kept domains
                files[task.name] += f", the rows of domain{'s' * (len(kept) > 1)} {', '.join(kept)} only"
            shares = [f"{domain}{share}" for domain in kept if (share := _domain_share(domain, ref))]
            files[task.name] += f" ({'; '.join(shares)})" if shares else ""
        elif task.domain_files:
            files[task.name] = ", ".join(f"{domain} `{split['train'].path}`{_domain_share(domain, ref)}"
                                         for domain, split in task.domain_files.items()
                                         if "train" in split and domain in kept)
            if left_out:
                files[task.name] += f" (domain{'s' * (len(left_out) > 1)} {', '.join(left_out)} left out)"
        elif task.from_tasks:
            files[task.name] = f"the `train` texts of {', '.join(task.from_tasks)}"
    return files


def _kept_domains(domains: tuple[str, ...], ref: dict) -> list[str]:
    """The domains a task reference keeps: its ``domains_include``, or all but its ``domains_exclude``."""
    include, exclude = ref.get("domains_include"), ref.get("domains_exclude") or []
    return [d for d in domains if (include is None or d in include) and d not in exclude]


def _domain_share(domain: str, ref: dict) -> str:
    """What of one domain's training rows a run kept, when not all: its ``domain_fraction`` and ``domain_holdout``."""
    notes = []
    fraction = (ref.get("domain_fraction") or {}).get(domain)
    if fraction is not None and fraction < 1:
        notes.append(f"{fraction:.0%} of its rows, seeded")
    holdout = ref.get("domain_holdout") or {}
    if holdout.get("domain") == domain:
        notes.append(f"fold {holdout.get('fold')} of {holdout.get('folds')} left out")
    return f" ({'; '.join(notes)})" if notes else ""


def _objective(config: dict, tasks: list[TaskInfo]) -> dict[str, tuple[str, ...]]:
    objective = config.get("objective") or {}
    out = {}
    for task in tasks:
        terms = (objective.get("tasks") or {}).get(task.name) or objective.get(task.type) or [{"loss": "hard"}]
        out[task.name] = tuple(term.get("loss", "?") if isinstance(term, dict) else str(term) for term in terms)
    return out


def model_card_record(model_dir: str | Path, form: Form, *, tasks: list[str] | None = None,
                      export: dict | None = None, title: str | None = None, folders: dict[str, str] | None = None,
                      parameters: int | None = None, benchmark: dict | None = None,
                      in_progress: bool = False, saved_as: Path | None = None) -> CardRecord:
    """The card record of the multidistill model folder ``model_dir`` as written in ``form``.

    ``tasks`` limits the card to those tasks (a one-task Hugging Face export); ``export`` is the export's
    ``export.json`` (its check numbers); ``folders`` maps each task to its sub-folder (a multi-task HF export);
    ``parameters`` is the written model's count when it differs from the folder's (a stock head adds a layer);
    ``benchmark`` is a `multidistill benchmark` report that measured this model (its speed goes on the card);
    ``in_progress`` marks a best model saved mid-run, whose run has no final metrics.json yet (one on disk is an
    earlier end's, so it is not read); ``saved_as`` is the folder ``model_dir`` is about to become (a temporary
    folder of an atomic save: the card is written with the model, never after it).
    """
    from multidistill.models.multitask import read_model_config
    from multidistill.recipes.summary import count_parameters

    model_dir = Path(model_dir)
    model_config = read_model_config(model_dir)
    run = run_folder(saved_as or model_dir)
    config = (_read_yaml(run / RUN_CONFIG_FILE) if run is not None else None) or {}
    metrics = (read_json_object(run / METRICS_FILE) if run is not None and not in_progress else None) or None
    command = read_command(run) if run is not None else None
    train_examples = (metrics or {}).get("train_examples", {})
    resumes = [entry for entry in (command or {}).get("resumed_by", []) if isinstance(entry, dict)]
    infos = [TaskInfo(name=spec["name"], type=spec.get("type", "classification"), labels=tuple(spec.get("labels", [])),
                      pair=bool(spec.get("pair", False)), metrics=tuple(spec.get("metrics", [])),
                      train_examples=train_examples.get(spec["name"]))
             for spec in model_config.get("tasks", [])]
    if tasks is not None:
        infos = [info for info in infos if info.name in tasks]
    general = bool(infos) and all(info.type == "text" for info in infos)
    role = "general student" if general else ("student" if config.get("kind") == "distill" else "teacher")
    architecture, layers, hidden = _size(model_dir, model_config)
    initialised_from, base_model = _initialisation(config.get("model") or {})
    data = config.get("data") or {}
    if parameters is None and (model_dir / WEIGHTS_FILE).is_file():
        parameters = count_parameters(model_dir)
    if title is None:
        title = run.name if run is not None else (saved_as or model_dir).resolve().name
    train_files = {name: where for name, where in _train_files(data).items() if name in {i.name for i in infos}}
    method = _method(run, config) if run is not None else None
    imported = _imported(saved_as or model_dir, model_dir) if run is None else None
    if imported is not None:  # a classifier brought in by import-classifier: no run, its source says what it is
        method, initialised_from = imported
    thresholds = saved_thresholds(model_dir)
    return CardRecord(
        title=title, form=form, role=role, architecture=architecture, parameters=parameters, layers=layers,
        hidden_size=hidden, base_model=base_model, initialised_from=initialised_from,
        method=method, objective=_objective(config, infos) if config else {},
        tasks=tuple(infos), eval_split=data.get("eval_split", "dev"),
        carved={spec["name"]: spec["test_from_dev"] for spec in model_config.get("tasks", [])
                if isinstance(spec.get("test_from_dev"), dict) and spec["name"] in {i.name for i in infos}},
        data_root=model_config.get("data_root") or data.get("data_root"), train_files=train_files,
        run_dir=str(run) if run is not None else None, metrics=metrics, in_progress=in_progress,
        teachers=_teachers(config, metrics, scores=not in_progress, cwd=(command or {}).get("cwd"))
        if config.get("kind") == "distill" or general
        else (),
        signals=config.get("signals"), command=(command or {}).get("command"),
        command_cwd=(command or {}).get("cwd"), command_unrecorded=bool((command or {}).get("first_unrecorded")),
        resumed_by=tuple(entry.get("command") for entry in resumes),
        resumed_in=tuple(entry.get("cwd") for entry in resumes),
        config_file=str(run / RUN_CONFIG_FILE) if run is not None and config else None, export=export,
        max_length=model_config.get("max_length"), folders=folders or {}, **_speed(model_dir, benchmark),
        domain_branch=tuple((model_config.get("domain_branch") or {}).get("domains", ())) if form == "multidistill"
        else (),
        thresholds={info.name: dict(zip(info.labels, thresholds[info.name], strict=True)) for info in infos
                    if info.name in thresholds},
    )


def _imported(*folders: Path) -> tuple[str, str] | None:
    """(method, initialised_from) of a folder written by `import-classifier`, from its import.json."""
    from multidistill.export.card import IMPORT_METHOD
    from multidistill.models.stock_import import IMPORT_INFO_FILE

    for folder in folders:
        record = read_json_object(folder / IMPORT_INFO_FILE) if (folder / IMPORT_INFO_FILE).is_file() else None
        if record and isinstance(record.get("source"), str):
            labels = (record.get("labels") or {}).get("read_from", "?")
            return IMPORT_METHOD, f"the weights of {record['source']}, as they are (labels read from {labels})"
    return None


def _speed(model_dir: Path, report: dict | None) -> dict:
    """``speed`` and ``speed_setting`` of a card from a benchmark report's entry for ``model_dir`` (if any)."""
    entry = next((e for e in (report or {}).get("models", {}).values()
                  if Path(e.get("path", "")).resolve() == model_dir.resolve()), None)
    if entry is None:
        return {}
    keys = ("latency_ms_median", "latency_ms_p95", "throughput_examples_per_s", "score")
    speed = {runtime: {key: numbers.get(key) for key in keys} for runtime, numbers in entry["runtimes"].items()
             if numbers.get("status") == "ok" and "latency_ms_median" in numbers}
    from multidistill.report.build import score_label

    settings = report.get("settings", {})
    threads = report.get("threads")
    # The score column says what report.md's does: one task's main metric, or the mean over the benchmark's tasks.
    setting = (f"score: {score_label(report)}; throughput at batch {settings.get('batch_size')}, "
               f"{threads} thread{'' if threads == 1 else 's'} on {report.get('machine')}, {report.get('date')}")
    return {"speed": speed, "speed_setting": setting} if speed else {}


def card_or_warning(folder: Path, make: Callable[..., T], *args, **kwargs) -> T | None:
    """``make(*args, **kwargs)``, or None with a warning naming ``folder`` when it fails: a card summarises a
    model and its metrics.json that are already saved, so a card that cannot be made never fails a finished run."""
    try:
        return make(*args, **kwargs)
    except Exception as exc:
        warnings.warn(f"{folder}: no model card written ({type(exc).__name__}: {exc})", stacklevel=2)
        return None


def write_model_card(folder: Path, model_dir: Path, form: Form, **options) -> Path:
    """Write ``folder``'s card: `model_card_record` of ``model_dir`` in ``form`` (``options`` as there)."""
    return write_card(folder, model_card_record(model_dir, form, **options))


def refresh_cards(report: dict) -> list[Path]:
    """Rewrite the cards of the models a benchmark ``report`` measured, adding their speed: each model folder
    saved by a run (``RUN/model``; a folder of someone else's is left alone) and the ONNX export the benchmark
    used. Returns the card files written."""
    written = []
    for entry in report.get("models", {}).values():
        model_dir = Path(entry["path"])
        if run_folder(model_dir) is not None:
            written.append(card_or_warning(model_dir, write_model_card, model_dir, model_dir, "multidistill",
                                           benchmark=report))
        export = Path(entry["export"]) if entry.get("export") else None
        meta = read_json_object(export / "export.json") if export is not None else None
        if meta is not None and meta.get("kind") == "onnx":
            written.append(card_or_warning(export, write_model_card, export, model_dir, "onnx", export=meta,
                                           benchmark=report))
    return [path for path in written if path is not None]
