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


def _teacher(path: str) -> TeacherInfo:
    run = run_folder(path) if Path(path).is_dir() else None
    metrics = read_json_object(run / METRICS_FILE) if run is not None else None
    if not metrics:
        return TeacherInfo(path=path)
    return TeacherInfo(path=path, metrics=metrics.get("tasks"), main=metrics.get("main"),
                       domains=metrics.get("domains") or None)


def _teachers(config: dict) -> tuple[TeacherInfo, ...]:
    """The run's teachers: those its signal store was made from, and its online teachers."""
    paths: list[str] = []
    if config.get("signals"):
        manifest = read_json_object(Path(config["signals"]) / STORE_MANIFEST) or {}
        paths += [str(p) for p in manifest.get("teachers", [])]
    paths += [str(p) for p in config.get("online_teachers") or []]
    return tuple(_teacher(p) for p in dict.fromkeys(paths))


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


def _objective(config: dict, tasks: list[TaskInfo]) -> dict[str, tuple[str, ...]]:
    objective = config.get("objective") or {}
    out = {}
    for task in tasks:
        terms = (objective.get("tasks") or {}).get(task.name) or objective.get(task.type) or [{"loss": "hard"}]
        out[task.name] = tuple(term.get("loss", "?") if isinstance(term, dict) else str(term) for term in terms)
    return out


def model_card_record(model_dir: str | Path, form: Form, *, tasks: list[str] | None = None,
                      export: dict | None = None, title: str | None = None, folders: dict[str, str] | None = None,
                      parameters: int | None = None, benchmark: dict | None = None) -> CardRecord:
    """The card record of the multidistill model folder ``model_dir`` as written in ``form``.

    ``tasks`` limits the card to those tasks (a one-task Hugging Face export); ``export`` is the export's
    ``export.json`` (its check numbers); ``folders`` maps each task to its sub-folder (a multi-task HF export);
    ``parameters`` is the written model's count when it differs from the folder's (a stock head adds a layer);
    ``benchmark`` is a `multidistill benchmark` report that measured this model (its speed goes on the card).
    """
    from multidistill.models.multitask import read_model_config
    from multidistill.recipes.summary import count_parameters

    model_dir = Path(model_dir)
    model_config = read_model_config(model_dir)
    run = run_folder(model_dir)
    config = (_read_yaml(run / RUN_CONFIG_FILE) if run is not None else None) or {}
    metrics = (read_json_object(run / METRICS_FILE) if run is not None else None) or None
    command = read_command(run) if run is not None else None
    train_examples = (metrics or {}).get("train_examples", {})
    infos = [TaskInfo(name=spec["name"], type=spec.get("type", "classification"), labels=tuple(spec.get("labels", [])),
                      pair=bool(spec.get("pair", False)), metrics=tuple(spec.get("metrics", [])),
                      train_examples=train_examples.get(spec["name"]))
             for spec in model_config.get("tasks", [])]
    if tasks is not None:
        infos = [info for info in infos if info.name in tasks]
    general = bool(infos) and all(info.type == "text" for info in infos)
    role = "general student" if general else ("student" if config.get("kind") == "distill" else "teacher")
    architecture, layers, hidden = _size(model_dir, model_config)
    name = (config.get("model") or {}).get("name_or_path")
    data = config.get("data") or {}
    if parameters is None and (model_dir / WEIGHTS_FILE).is_file():
        parameters = count_parameters(model_dir)
    if title is None:
        title = run.name if run is not None else model_dir.resolve().name
    return CardRecord(
        title=title, form=form, role=role, architecture=architecture, parameters=parameters, layers=layers,
        hidden_size=hidden, base_model=name if name and not _is_local(name) else None, initialised_from=name,
        method=_method(run, config) if run is not None else None, objective=_objective(config, infos) if config else {},
        tasks=tuple(infos), eval_split=data.get("eval_split", "dev"), data_root=model_config.get("data_root"),
        run_dir=str(run) if run is not None else None, metrics=metrics,
        teachers=_teachers(config) if config.get("kind") == "distill" or general else (),
        signals=config.get("signals"), command=(command or {}).get("command"),
        command_unrecorded=bool((command or {}).get("first_unrecorded")),
        resumed_by=tuple(entry.get("command") for entry in (command or {}).get("resumed_by", [])
                         if isinstance(entry, dict)),
        config_file=str(run / RUN_CONFIG_FILE) if run is not None and config else None, export=export,
        max_length=model_config.get("max_length"), folders=folders or {}, **_speed(model_dir, benchmark),
        domain_branch=tuple((model_config.get("domain_branch") or {}).get("domains", ())) if form == "multidistill"
        else (),
    )


def _speed(model_dir: Path, report: dict | None) -> dict:
    """``speed`` and ``speed_setting`` of a card from a benchmark report's entry for ``model_dir`` (if any)."""
    entry = next((e for e in (report or {}).get("models", {}).values()
                  if Path(e.get("path", "")).resolve() == model_dir.resolve()), None)
    if entry is None:
        return {}
    keys = ("latency_ms_median", "latency_ms_p95", "throughput_examples_per_s", "score")
    speed = {runtime: {key: numbers.get(key) for key in keys} for runtime, numbers in entry["runtimes"].items()
             if numbers.get("status") == "ok" and "latency_ms_median" in numbers}
    settings = report.get("settings", {})
    threads = report.get("threads")
    setting = (f"task {report.get('task')}, throughput at batch {settings.get('batch_size')}, "
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
