"""A run folder's files as the report reads them: summary.json (required; a single training run's metrics.json
stands in for it), benchmark.json, each stage's training logs and its stage.json. Optional inputs that are missing
or unreadable give a note saying why instead of an error; stage folders that summary.json no longer describes
(re-made, failed or stopped after it was written) give a warning.
"""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from multidistill.errors import DataError
from multidistill.evaluation.baseline import BASELINE_MARGIN, at_baseline, retention_above_baseline
from multidistill.evaluation.metrics import average_score
from multidistill.evaluation.retention import retention

SUMMARY_FILE = "summary.json"
BENCHMARK_FILE = "benchmark.json"
METRICS_FILE = "metrics.json"  # a single training run's scores (training.loop)
HISTORY_FILE = "train_history.json"
STAGE_FILE = "stage.json"  # recipes.stages.STAGE_MANIFEST: a finished stage's record
STAGE_VERSION = 1  # recipes.stages.STAGE_VERSION (not imported: recipes pull in the training code)
PENDING_DIR = ".pending"  # recipes.stages.PENDING: a record per stage that started and has not finished
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
BENCHMARK_VERSION = 1
_ENSEMBLE_ROW = re.compile(r"^ensemble of (\d+)$")  # the row recipes/mtdnn_kd.py writes for its teachers' ensemble


def json_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite JSON number (bools and NaN do not count)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", path=path) from exc


def is_ensemble(name: str, row: dict) -> bool:
    """Whether a summary row holds the score of the teachers' ensemble (their averaged predictions): marked so by
    the recipe (``ensemble``), or named as recipes/mtdnn_kd.py names it."""
    return bool(row.get("ensemble")) or bool(_ENSEMBLE_ROW.match(name))


def row_stages(row: dict) -> list[str]:
    """The stage folders a summary row's scores come from, when the recipe recorded them (``stages``)."""
    stages = row.get("stages")
    return [str(s) for s in stages] if isinstance(stages, list) else []


def load_summary(run_dir: Path) -> dict:
    """Read ``run_dir/summary.json`` into {reference, tasks, rows: {name: {main, average, params, models, stages,
    ensemble, retention, kept}}, notes, baseline, split, intro} (split: the split the scores are on, dev unless the
    summary names another; models: how many models ``params`` counts, when more than one; intro: paragraphs the
    report opens with; averaged: the tasks every row's average is over, the summary's ``average_tasks``).

    Rows may hold their scores under ``metrics`` (recipe summaries) or directly (benchmark-script summaries); a
    summary without a ``reference`` is compared against its first row, with a note. When a row holds the teachers'
    ensemble (the students learned from it), ``intro`` says what each student keeps of it too.
    Averages are over the summary's tasks; retention (``kept``: a `Retention`) is recomputed with `retention` over
    the tasks a row shares with the reference, whatever an older summary.json recorded. A folder without
    summary.json but with a metrics.json (a single `train-teacher` or `distill` run) is one row.
    """
    path = run_dir / SUMMARY_FILE
    intro = []
    if path.is_file():
        payload = _read_json(path)
    elif (run_dir / METRICS_FILE).is_file():
        path = run_dir / METRICS_FILE
        payload = _single_run_summary(run_dir)
        intro.append(payload.pop("intro"))
    else:
        raise DataError("missing: the report needs the run's summary.json (written at the end of `multidistill "
                        "run`), or for a single training run (`multidistill train-teacher` or `distill`) its "
                        "metrics.json (written when it ends); is this the run's output folder, and has it finished?",
                        path=path)
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), dict) or not payload["rows"]:
        raise DataError("expected an object with a non-empty 'rows' mapping", path=path, field="rows")
    notes = [str(note) for note in payload.get("notes") or [] if isinstance(note, str)]
    listed = payload.get("tasks")
    listed = listed if isinstance(listed, list) and all(isinstance(t, str) for t in listed) else None
    # Every row is averaged over the same tasks (MITKD shows an out-of-domain task its teacher was never scored on
    # but leaves it out of the averages: `average_tasks`); older summaries average over their listed tasks.
    averaged = payload.get("average_tasks")
    averaged = averaged if isinstance(averaged, list) and all(isinstance(t, str) for t in averaged) else listed
    rows: dict[str, dict] = {}
    for name, row in payload["rows"].items():
        if not isinstance(row, dict):
            raise DataError("expected an object", path=path, field=f"rows.{name}")
        metrics = row["metrics"] if isinstance(row.get("metrics"), dict) else row
        main = metrics.get("main")
        if not isinstance(main, dict):
            raise DataError("expected a {task: score} mapping", path=path, field=f"rows.{name}.metrics.main")
        scores = {task: v for task, v in ((t, json_number(s)) for t, s in main.items()) if v is not None}
        # The average the table shows is over the summary's tasks (a teacher may have been scored on more).
        shown = {t: v for t, v in scores.items() if averaged is None or t in averaged}
        average = average_score(shown) if shown else json_number(metrics.get("average"))
        params = row.get("params")
        stages = row_stages(row)
        counted = _ENSEMBLE_ROW.match(str(name))  # "ensemble of 3": its params are the 3 teachers'
        models = row.get("models") if type(row.get("models")) is int else int(counted[1]) if counted else len(stages)
        rows[str(name)] = {"main": scores, "average": average,
                           "params": int(params) if json_number(params) else None, "models": max(models, 1),
                           "stages": stages, "ensemble": is_ensemble(str(name), row),
                           "runs": _load_runs(metrics.get("runs"), path, f"rows.{name}.metrics.runs"),
                           "domains": _domain_scores(metrics)}
    reference = payload.get("reference")
    if reference is None:
        reference = next(iter(rows))
        notes.append(f"summary.json names no reference row; retention is measured against the first row, "
                     f"'{reference}'.")
    elif reference not in rows:
        raise DataError(f"reference {reference!r} is not one of the rows ({', '.join(rows)})", path=path,
                        field="reference")
    tasks = listed or list(dict.fromkeys(t for row in rows.values() for t in row["main"]))
    # Recomputed, not read: retention is always over the tasks a row and the reference share.
    for row in rows.values():
        row["kept"] = retention(row["main"], rows[reference]["main"], tasks)
        row["retention"] = row["kept"].ratio if row["kept"] else None
    ensemble = next((name for name, row in rows.items() if row["ensemble"]), None)
    if ensemble is not None and ensemble != reference:
        # The recipe's table (and its CLI output) measure against its reference; the students learned from the
        # ensemble, so what they keep of it is said too, and the card's third reference is named.
        against = {name: retention(row["main"], rows[ensemble]["main"], tasks) for name, row in rows.items()
                   if name not in (reference, ensemble)}
        kept = "; ".join(f"{name} {100 * value.ratio:.1f}%" for name, value in against.items() if value)
        intro.append(f"Retention is measured against **{reference}**, summary.json's reference, as in the recipe's "
                     f"own table. The students were distilled from **{ensemble}**, the teachers' ensemble (their "
                     f"averaged predictions){f'; against it they keep: {kept}' if kept else ''}. A student's model "
                     "card compares it with the mean of its teachers' own scores, a third number.")
    by_task = [str(name) for name, row in payload["rows"].items() if isinstance(row, dict) and row.get("by_task")]
    if by_task:  # teachers of different tasks: no ensemble, each task has its own teachers
        intro.append(f"**{by_task[0]}**: each task is scored from the teachers with a head for it (one classifier "
                     "per task, e.g. brought in with `import-classifier`), not from one ensemble of teachers of every "
                     "task; the students were distilled from those teachers, task by task.")
    baseline = _load_baseline(payload.get("baseline"), rows[reference]["main"], tasks)
    if baseline:
        for row in rows.values():
            row["above_baseline"] = retention_above_baseline(row["main"], rows[reference]["main"], baseline["main"],
                                                             tasks)
            row["at_baseline"] = [t for t in tasks
                                  if at_baseline(row["main"].get(t), baseline["main"].get(t), baseline["margin"])]
    split = payload.get("split")
    split = split if isinstance(split, str) and split.isidentifier() else "dev"  # older summaries: dev
    return {"reference": reference, "tasks": tasks, "rows": rows, "notes": notes, "baseline": baseline,
            "split": split, "intro": intro, "averaged": averaged or tasks}


def _domain_scores(metrics: dict) -> dict[str, dict]:
    """Per task with domains (`evaluate`'s ``domains`` / ``domain_average``): its main metric's name, that metric on
    each domain and their unweighted mean; tasks, domains or values that are not there, or not numbers, are left
    out (a row scored without domains has none)."""
    out: dict[str, dict] = {}
    tasks, domains, averages = (metrics.get(key) for key in ("tasks", "domains", "domain_average"))
    if not (isinstance(tasks, dict) and isinstance(domains, dict)):
        return out
    for task, per_domain in domains.items():
        names = list(tasks.get(task) or {}) if isinstance(tasks.get(task), dict) else []
        if not names or not isinstance(per_domain, dict):
            continue
        metric = names[0]  # evaluate writes a task's metrics in its spec's order: the first is the main one
        scores = {str(d): v for d, m in per_domain.items()
                  if isinstance(m, dict) and (v := json_number(m.get(metric))) is not None}
        average = (averages or {}).get(task) if isinstance(averages, dict) else None
        if scores:
            out[str(task)] = {"metric": metric, "scores": scores,
                              "average": json_number(average.get(metric)) if isinstance(average, dict) else None}
    return out


def _single_run_summary(run_dir: Path) -> dict:
    """A summary.json-shaped record of a single training run (no recipe): its metrics.json as one row, its trivial
    baselines, and a note saying what the report of a teacher-student comparison needs instead."""
    import yaml

    path = run_dir / METRICS_FILE
    metrics = _read_json(path)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("main"), dict):
        raise DataError("expected a finished run's scores (a 'main' {task: score} mapping)", path=path, field="main")
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        config = None
    config = config if isinstance(config, dict) else {}
    name = run_dir.resolve().name
    teachers = list(metrics.get("teacher_weights") or {}) if isinstance(metrics.get("teacher_weights"), dict) else []
    made_by = {"teacher": "`multidistill train-teacher`", "distill": "`multidistill distill`"}.get(
        config.get("kind"), "one training run")
    note = (f"No summary.json here: `{name}` is a single training run ({made_by}), reported as one row from its "
            "metrics.json, with nothing to compare it with. A report that compares students with their teacher "
            "comes from a recipe: `multidistill run recipe.yaml`, then `multidistill report` on its output_dir.")
    if teachers:
        note += (f" This student's teacher{'s' * (len(teachers) > 1)}: {', '.join(f'`{t}`' for t in teachers)} "
                 "(a report of its own run gives its scores).")
    trivial = {t: b for t, b in (metrics.get("trivial_baselines") or {}).items() if isinstance(b, dict)}
    baseline = {"name": "trivial baseline", "main": {t: b.get("main") for t, b in trivial.items()},
                "tasks": {t: {"predictor": b["predictor"]} for t, b in trivial.items() if "predictor" in b}}
    split = (config.get("data") or {}).get("eval_split") if isinstance(config.get("data"), dict) else None
    return {"reference": name, "tasks": list(metrics["main"]), "split": split or "dev", "intro": note,
            "rows": {name: {"metrics": metrics, "params": _parameters(run_dir / "model")}},
            **({"baseline": baseline} if trivial else {})}


def _parameters(model_dir: Path) -> int | None:
    """A saved model's parameter count, or None when its folder holds no weights."""
    from multidistill.recipes.summary import count_parameters

    try:
        return count_parameters(model_dir)
    except Exception:  # noqa: BLE001 - a count the report can do without: no weights, or a file it cannot read
        return None


def _load_runs(entry: Any, path: Path, field: str) -> dict[str, list[float]]:
    """A row's per-seed scores ({task: [score of each seed's model]}, written by recipes with several student
    seeds); {} when the row has none."""
    if entry is None:
        return {}
    if not isinstance(entry, dict):
        raise DataError("expected a {task: [score per seed]} mapping", path=path, field=field)
    runs = {}
    for task, values in entry.items():
        numbers = [json_number(v) for v in values] if isinstance(values, list) else [None]
        if not numbers or any(v is None for v in numbers):
            raise DataError("expected a non-empty list of finite scores", path=path, field=f"{field}.{task}")
        runs[str(task)] = numbers
    return runs


def _load_baseline(entry: Any, reference: dict, tasks: list[str]) -> dict | None:
    """summary.json's trivial baseline ({main, average, retention, margin, predictors}), or None if it has none."""
    if not isinstance(entry, dict) or not isinstance(entry.get("main"), dict):
        return None
    main = {t: v for t, v in ((t, json_number(s)) for t, s in entry["main"].items()) if v is not None}
    shown = {t: v for t, v in main.items() if t in tasks}
    if not shown:
        return None
    kept = retention(main, reference, tasks)
    described = entry.get("tasks") if isinstance(entry.get("tasks"), dict) else {}
    predictors = {t: str(v["predictor"]) for t, v in described.items() if isinstance(v, dict) and "predictor" in v}
    margin = json_number(entry.get("margin"))
    return {"name": str(entry.get("name") or "trivial baseline"), "main": main, "average": average_score(shown),
            "retention": kept.ratio if kept else None, "margin": BASELINE_MARGIN if margin is None else margin,
            "predictors": predictors}


def load_benchmark(run_dir: Path) -> tuple[dict | None, str | None]:
    """Read ``run_dir/benchmark.json``; returns (benchmark, None) or (None, why the speed section is missing)."""
    path = run_dir / BENCHMARK_FILE
    if not path.is_file():
        return None, (f"No speed section: {BENCHMARK_FILE} was not found in the run folder. To add one, run "
                      f"`multidistill benchmark TEACHER/model STUDENT/model ... --tasks TASKS --out {path}` (the "
                      "reference first), then this report again.")
    try:
        payload = _read_json(path)
    except DataError as exc:
        return None, f"No speed section: {BENCHMARK_FILE} could not be read ({exc})."
    if not isinstance(payload, dict) or payload.get("format_version") != BENCHMARK_VERSION:
        found = payload.get("format_version") if isinstance(payload, dict) else None
        return None, (f"No speed section: {BENCHMARK_FILE} has format_version {found!r}; this version of "
                      f"multidistill reads version {BENCHMARK_VERSION}.")
    models = {}
    listed = payload.get("models") if isinstance(payload.get("models"), dict) else {}
    for name, model in listed.items():
        if not isinstance(model, dict):
            continue
        raw = {r: stats for r, stats in (model.get("runtimes") or {}).items() if isinstance(stats, dict)}
        runtimes = {r: {k: json_number(v) for k, v in stats.items()} for r, stats in raw.items()}
        models[str(name)] = {**model, "score": json_number(model.get("score")), "runtimes": runtimes,
                             "raw_runtimes": raw,
                             "parameters": json_number(model.get("parameters")),
                             "disk_bytes": json_number(model.get("disk_bytes"))}
    if not models:
        return None, f"No speed section: {BENCHMARK_FILE} lists no models."
    speedup = payload.get("speedup") if isinstance(payload.get("speedup"), dict) else {}
    settings = payload.get("settings") if isinstance(payload.get("settings"), dict) else {}
    return {**payload, "models": models, "speedup": speedup, "settings": settings}, None


def _stage_folders(run_dir: Path, skip: Path) -> list[Path]:
    """Folders that may hold a training run: the run folder itself, its children and grandchildren.

    Grandchildren cover ensembles (``<stage>/seed-<s>``); hidden folders (pending records, temporary
    report folders) and the report output are ignored.
    """
    found = []
    for candidate in [run_dir, *sorted(run_dir.glob("*")), *sorted(run_dir.glob("*/*"))]:
        if not candidate.is_dir() or candidate == skip or candidate.name.startswith("."):
            continue
        if (candidate / HISTORY_FILE).is_file() or (candidate / TENSORBOARD_DIR).is_dir():
            found.append(candidate)
    return found


def _dedupe(pairs: list[tuple[int, float]]) -> list[tuple[int, float]]:
    # A resumed run logs again from its last checkpoint; the later value of a step is the one that counts.
    return sorted(dict(pairs).items())


def _read_history(path: Path) -> tuple[list[tuple[int, float]], list[str]]:
    """(step, dev average) pairs of a train_history.json, and the tasks the averages are over."""
    payload = _read_json(path)
    if not isinstance(payload, list):
        raise DataError("expected a list of evaluations", path=path)
    pairs, tasks = [], {}
    for entry in payload:
        if not isinstance(entry, dict):
            continue
        step, average = entry.get("step"), json_number(entry.get("average"))
        if isinstance(step, int) and average is not None:
            pairs.append((step, average))
            tasks.update(dict.fromkeys(entry["main"] if isinstance(entry.get("main"), dict) else []))
    return _dedupe(pairs), [str(t) for t in tasks]


class _ResumePurgeFilter(logging.Filter):
    """Drops tensorboard's "Detected out of order event.step ... Purging expired events" warning: a resumed
    stage's writer marks its restart (purge_step) so that the steps the cut run logged after its checkpoint go;
    dropping them is what the reader should do, not something to warn the user about."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Detected out of order event.step")


def _read_scalars(folder: Path, tags: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of ``tags`` in a tensorboard folder (all event files, in order)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    # size_guidance 0 keeps every point; the default reservoir would thin long runs at random.
    accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    logger, quiet = logging.getLogger("tensorboard"), _ResumePurgeFilter()
    logger.addFilter(quiet)  # this read only: whatever else logs through "tensorboard" is left as it is
    try:
        accumulator.Reload()
    finally:
        logger.removeFilter(quiet)
    available = set(accumulator.Tags().get("scalars", []))
    return {tag: _dedupe([(e.step, e.value) for e in accumulator.Scalars(tag)]) for tag in tags if tag in available}


def load_training(run_dir: Path, skip: Path) -> dict:
    """Train loss (tensorboard) and dev average (train_history.json, else tensorboard) per stage folder.

    Returns {"loss": {stage: pairs}, "dev": {stage: pairs}, "tasks": {stage: [tasks its dev average is over]},
    "files": [inputs read], "notes": [...]} (tasks: known from train_history.json only).
    """
    loss: dict[str, list] = {}
    dev: dict[str, list] = {}
    tasks: dict[str, list[str]] = {}
    files: list[str] = []
    notes: list[str] = []
    for folder in _stage_folders(run_dir, skip):
        stage = folder.name if folder == run_dir else folder.relative_to(run_dir).as_posix()
        history = folder / HISTORY_FILE
        if history.is_file():
            try:
                dev[stage], tasks[stage] = _read_history(history)
                files.append(history.relative_to(run_dir).as_posix())
            except DataError as exc:
                notes.append(f"Skipped {history.relative_to(run_dir).as_posix()}: {exc}")
        events = sorted((folder / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
        if not events:
            continue
        try:
            scalars = _read_scalars(folder / TENSORBOARD_DIR, ("train/loss", "eval/average"))
        except Exception as exc:  # noqa: BLE001 - a corrupt event file must not sink the whole report
            notes.append(f"Skipped {(folder / TENSORBOARD_DIR).relative_to(run_dir).as_posix()}: {exc}")
            continue
        files.append(f"{(folder / TENSORBOARD_DIR).relative_to(run_dir).as_posix()}/")
        if scalars.get("train/loss"):
            loss[stage] = scalars["train/loss"]
        if not dev.get(stage) and scalars.get("eval/average"):
            dev[stage] = scalars["eval/average"]
    return {"loss": loss, "dev": dev, "tasks": tasks, "files": files, "notes": notes}


def load_stage_times(run_dir: Path, skip: Path) -> dict:
    """Wall time of each finished recipe stage, from the `stage.json` its folder holds (the run folder's children).

    Returns {"seconds": {stage: seconds}, "last_part_only": [stages recorded before a stage's time was added up
    over its runs: their seconds cover only the run that finished them], "files": [...], "notes": [...]}. A
    stage.json of a newer format than this version reads is an error: its fields may mean something else.
    """
    seconds: dict[str, float] = {}
    last_part_only, files, notes = [], [], []
    for folder in sorted(run_dir.glob("*")):
        path = folder / STAGE_FILE
        if folder == skip or folder.name.startswith(".") or not path.is_file():
            continue
        name = path.relative_to(run_dir).as_posix()
        try:
            payload = _read_json(path)
        except DataError as exc:
            notes.append(f"Skipped {name}: {exc}")
            continue
        version = payload.get("format_version") if isinstance(payload, dict) else None
        if type(version) is int and version > STAGE_VERSION:
            raise DataError(f"format_version {version} is newer than this multidistill reads ({STAGE_VERSION}): a "
                            "newer multidistill made this run; upgrade multidistill to report it", path=path,
                            field="format_version")
        if version != STAGE_VERSION:
            notes.append(f"Skipped {name}: format_version {version!r}, expected {STAGE_VERSION}")
            continue
        value = json_number(payload.get("seconds"))
        if value is None or value < 0:
            notes.append(f"Skipped {name}: no 'seconds' recorded")
            continue
        seconds[folder.name] = value
        files.append(name)
        if "parts" not in payload:
            last_part_only.append(folder.name)
    return {"seconds": seconds, "last_part_only": last_part_only, "files": files, "notes": notes}


def _finished_after(record: Path, moment: float) -> bool:
    """Whether the stage ``record`` describes finished after ``moment`` (a timestamp): its file is newer and so is
    the time it records (a copied run folder gives every file a new mtime, not a new ``finished``)."""
    if record.stat().st_mtime <= moment:
        return False
    try:
        finished = json.loads(record.read_text(encoding="utf-8")).get("finished")
        return datetime.strptime(finished, "%Y-%m-%dT%H:%M:%S").timestamp() > moment
    except (OSError, ValueError, TypeError, AttributeError):  # unreadable or no time recorded: the mtime decides
        return True


def _names(stages: list[str]) -> str:
    return ", ".join(f"`{stage}`" for stage in stages)


def stale_summary(run_dir: Path, skip: Path) -> list[str]:
    """Why summary.json may no longer describe a recipe's run folder, one warning per reason ([] when it does).

    A recipe writes summary.json after its last stage. A stage folder with training logs or a pending record but no
    stage.json is a stage that failed, was stopped or is still running, made again after summary.json was written
    (it was removed, or its settings changed); a stage.json newer than summary.json is a stage made again since.
    Either way summary.json's rows may describe models that are no longer there. Folders made without the recipe
    runner (no stage.json, no pending record anywhere) are not checked.
    """
    summary = run_dir / SUMMARY_FILE
    pending = {p.stem for p in (run_dir / PENDING_DIR).glob("*.json")}
    children = [f for f in sorted(run_dir.glob("*")) if f.is_dir() and f != skip and not f.name.startswith(".")]
    finished = {f.name for f in children if (f / STAGE_FILE).is_file()}
    if not summary.is_file() or not (finished or pending):
        return []
    written = summary.stat().st_mtime
    logs = (CHECKPOINTS_DIR, TENSORBOARD_DIR, HISTORY_FILE)
    unfinished = sorted((pending - finished) | {f.name for f in children if f.name not in finished
                                                and any((f / log).exists() for log in logs)})
    remade = [name for name in sorted(finished) if _finished_after(run_dir / name / STAGE_FILE, written)]
    warnings = []
    if unfinished:
        warnings.append(f"summary.json may be stale: stage{'s' * (len(unfinished) > 1)} {_names(unfinished)} "
                        "started but did not finish (no stage.json: failed, stopped, or still running) after "
                        "summary.json was written, so its rows may describe models that are no longer there. Run "
                        "the recipe again to finish them and rewrite summary.json.")
    if remade:
        warnings.append(f"summary.json is stale: stage{'s' * (len(remade) > 1)} {_names(remade)} finished after "
                        "it was written (its stage.json is newer), so its rows may describe the models made before. "
                        "Run the recipe again to rewrite summary.json.")
    return warnings
