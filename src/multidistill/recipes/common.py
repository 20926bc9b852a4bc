"""Stage builders shared by the recipes: train teachers, fill a signal store, train a model, summarise.

Each builder turns recipe settings into one `StageRunner.run` call over the shared parts (`train_model`,
`build_signal_store`, `evaluate`); no recipe has its own training or inference code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from multidistill.config import (
    DataConfig,
    ExampleWeightsConfig,
    ModelConfig,
    ObjectiveConfig,
    TeacherRunConfig,
    TrainConfig,
    changed_fields,
)
from multidistill.config_messages import format_validation_error
from multidistill.data.prepare import open_example_store, resolve_tasks
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError
from multidistill.evaluation.baseline import TrivialBaseline, store_baselines
from multidistill.evaluation.metrics import average_score, compute_metrics
from multidistill.models.multitask import SavedModel, read_model_config, read_model_tasks
from multidistill.recipes.config import RecipeBase
from multidistill.recipes.stages import StageRunner, print_note, settings_payload, stage_fingerprint
from multidistill.teachers.coverage import task_teachers
from multidistill.teachers.fingerprint import teacher_fingerprint
from multidistill.teachers.generate import build_signal_store
from multidistill.teachers.store import open_signal_store
from multidistill.training.device import bf16_accelerator
from multidistill.training.loop import BEST_MODEL
from multidistill.training.objective import (
    check_domain_branch,
    check_terms_fit,
    reads_domain_branch,
    reads_inputs,
    unused_type_lists,
)
from multidistill.training.run import train_model


def recipe_data(recipe: RecipeBase) -> DataConfig:
    """The recipe's data config with its subset seed applied (every stage sees the same examples)."""
    return recipe.data.model_copy(update={"subset_seed": recipe.subset_seed})


TEACHER_REF = "@teacher"


def data_fingerprints(data: DataConfig, splits: tuple[str, ...], max_examples: int | None, *,
                      run_dir: Path) -> dict[str, str]:
    """The data of each task split a stage reads (file contents, subset, domain selection: `rows_fingerprint`),
    keyed "<task>/<split>": recorded beside a stage's fingerprint so a finished stage is never reused on edited
    data. The task spec is left out (the stage's settings hold it, with paths in the run folder made portable, so
    a moved run folder is not taken for edited data), and so are splits whose files all lie in ``run_dir`` (a
    transfer set an earlier stage wrote: that stage is among the inputs)."""
    store = open_example_store(data, max_examples_per_task=max_examples, seed=data.subset_seed or 0)
    inside = run_dir.resolve()

    def made_here(task: Task, split: str) -> bool:
        files = [Path(f.path) for _, f in task.split_files(split)]
        paths = [(path if path.is_absolute() else store.data_root / path).resolve() for path in files]
        return bool(paths) and all(path.is_relative_to(inside) for path in paths)

    return {f"{name}/{split}": store.rows_fingerprint(name, split) for name, task in store.tasks.items()
            for split in splits if split in task.splits and not made_here(task, split)}


def resolve_teacher_ref(model: ModelConfig, teacher_dirs: list[Path]) -> ModelConfig:
    """Replace `@teacher` in a student's name_or_path/tokenizer/heads_from by the first teacher's model folder
    (a student cut from the teacher's layers and starting from its heads, or a BiLSTM using its tokenizer and
    word embeddings)."""
    update = {key: str(teacher_dirs[0]) for key in ("name_or_path", "tokenizer", "heads_from")
              if getattr(model, key) == TEACHER_REF}
    return model.model_copy(update=update) if update else model


def feature_teachers(objective: ObjectiveConfig | None, data: DataConfig,
                     teacher_dirs: list[Path]) -> list[str] | None:
    """The recipe's teachers as online teachers for a stage on ``data`` when a term of ``objective`` for one of its
    tasks reads teacher features (hidden states, attention), which a logit store cannot give; None otherwise, so
    the stage keeps its fingerprint and loads no teacher."""
    tasks = {task.name: task for task in resolve_tasks(data)}
    wanted = reads_inputs(objective or ObjectiveConfig(), tasks, frozenset({"teacher_features"}))
    return [str(folder) for folder in teacher_dirs] if wanted else None


def train_stage(runner: StageRunner, name: str, *, kind: str, model: ModelConfig, train: TrainConfig,
                data: DataConfig, max_examples: int | None, objective: ObjectiveConfig | None = None,
                signals: Path | None = None, inputs: dict[str, str] | None = None,
                online_teachers: list[str] | None = None, feature_teachers_of: list[Path] | None = None,
                example_weights: ExampleWeightsConfig | None = None) -> Path:
    """Train (or resume, or reuse) one model; the stage folder is a normal run folder (model/, metrics.json).

    ``online_teachers`` (model folders or encoder names) run on every batch for feature terms;
    ``feature_teachers_of`` (a recipe's teachers) run so only when ``objective`` has feature terms for ``data``'s
    tasks (`feature_teachers`); ``example_weights`` (a column of a per-example column store) weight each training
    example's loss."""
    if feature_teachers_of is not None and not online_teachers:
        online_teachers = feature_teachers(objective, data, feature_teachers_of)
    train = train.model_copy(update={"max_examples_per_task": max_examples})
    objective_payload = settings_payload(objective)
    try:
        resolved = resolve_tasks(data)
    except ConfigError:  # a task the data cannot resolve: the stage's own checks name it
        resolved = []
    for unused in unused_type_lists(resolved) if objective_payload is not None else ():
        objective_payload.pop(unused, None)
    config_payload = {"kind": kind, "model": settings_payload(model), "train": settings_payload(train),
                      "data": settings_payload(data), "objective": objective_payload}
    if online_teachers:  # only when given, so stages without them keep their fingerprints
        config_payload["online_teachers"] = list(online_teachers)
    if example_weights is not None:  # likewise
        config_payload["example_weights"] = example_weights.model_dump(mode="json")

    def run_config(folder: Path) -> TeacherRunConfig:
        return TeacherRunConfig(kind=kind, output_dir=str(folder), model=model, data=data, train=train,
                                objective=objective or ObjectiveConfig(),
                                signals=str(signals) if signals is not None else None,
                                online_teachers=list(online_teachers or []), example_weights=example_weights)

    try:  # what the stage's objective would refuse once the tasks' types are read: before any stage runs
        check_terms_fit(objective, resolved)
    except ConfigError as exc:
        raise runner.refused(ConfigError(f"stage '{name}': {exc}")) from None
    # Validated before the stage is reached, so a recipe's check pass (and --dry-run) refuses what the stage's run
    # config would refuse (e.g. a domain branch no term trains) before any stage runs, not after those before it.
    try:
        run_config(runner.root / name)
    except ValidationError as exc:
        raise runner.refused(ConfigError(format_validation_error(exc, f"stage '{name}'"))) from None
    # Likewise the run's domain-branch check, which needs the tasks' domains (a domain column's are read from the
    # files): once per data in a run (runner.memo), as a Meta-KD run has up to 22 such stages. A saved model's own
    # branch (init_from) is checked when the stage loads it.
    if reads_domain_branch(objective, data.task_names) and (model.init_from is None or model.domain_branch):
        key = ("task domains", data.model_dump_json())
        if key not in runner.memo:
            store = open_example_store(data, max_examples_per_task=None, seed=0)  # (domain names need no seed)
            for task in data.task_names:
                store.domains(task)  # a domain column's names, read into store.tasks
            runner.memo[key] = list(store.tasks.values())
        try:
            check_domain_branch(objective, runner.memo[key],
                                model.domain_branch.domains if model.domain_branch else None,
                                architecture=model.architecture)
        except ConfigError as exc:
            raise runner.refused(ConfigError(f"stage '{name}': {exc}")) from None

    def work(folder: Path, resume: bool) -> dict:
        result = train_model(run_config(folder), resume=resume)
        return {"best_average": result.best_score, "train_seconds": result.train_seconds,
                "examples_per_second": result.examples_per_second}

    return runner.run(name, config_payload, inputs or {}, work,
                      rerun="continues its training from the last checkpoint (from step 0 if it has none)",
                      data=data_fingerprints(data, ("train", data.eval_split), max_examples, run_dir=runner.root))


def note_unused_teacher_settings(recipe: RecipeBase, also: tuple[str, ...] = ()) -> None:
    """With given teachers (teacher.model_dirs), say which teacher-training settings the user gave are not used
    (never silently: a config that trains teachers, pointed at given ones, as the README does). ``also``: a
    recipe's own top-level sections that only shape the teachers it trains (Meta-KD's meta_teacher). A note
    (`print_note`): a dry run shows it too, and a run says it once."""
    unused = [f"teacher.{key}" for key in sorted({"seeds", "train"} & changed_fields(recipe.teacher))]
    unused += [key for key in also if key in changed_fields(recipe)]
    if unused:
        print_note(f"{' and '.join(unused)} not used: the teachers are the given teacher.model_dirs")


def _saved_heads(folder: Path, key: str) -> dict[str, Task]:
    """The task specs a given teacher folder was saved with (by name), or a ModelError naming ``key``."""
    try:
        return {task.name: task for task in read_model_tasks(folder)}
    except ModelError as exc:
        raise ModelError(f"key '{key}': {exc}") from exc


def check_teacher_heads(folder: Path, tasks: list[Task], key: str) -> None:
    """Refuse, by ``key``, a given teacher folder that is no multidistill model, or that lacks a head for one of
    ``tasks`` or has one of another type or with other labels (`teachers.coverage`), before any stage: a MITKD
    general student has a head for its corpus only, and a missing head was found by the first stage that read it,
    after the stages before."""
    task_teachers([str(folder)], [_saved_heads(folder, key)], {task.name: task for task in tasks}, key=key,
                  every_task=True)


def given_teachers(recipe: RecipeBase, *, every_task: bool = False) -> list[Path]:
    """The given teacher folders (teacher.model_dirs), each checked to be a model whose heads fit data.tasks,
    before any stage. Each task needs a head in at least one teacher and each teacher a head for one task at least:
    teachers fine-tuned one task each (e.g. brought in with `import-classifier`) label their own tasks in the signal
    store (`teachers.coverage`); ``every_task`` asks every teacher for every task (a recipe whose teachers also
    run online on every task). A student given ``heads_from: @teacher`` (the first teacher) needs that teacher to
    have every task's head."""
    tasks = {task.name: task for task in resolve_tasks(recipe_data(recipe))}
    dirs = [Path(d) for d in recipe.teacher.model_dirs]
    if every_task:  # each folder by its own key
        for i, folder in enumerate(dirs):
            check_teacher_heads(folder, list(tasks.values()), f"teacher.model_dirs.{i}")
    heads = [_saved_heads(folder, f"teacher.model_dirs.{i}") for i, folder in enumerate(dirs)]
    covering = task_teachers([str(d) for d in dirs], heads, tasks, key="teacher.model_dirs")
    student = getattr(getattr(recipe, "student", None), "model", None)
    missing = [name for name, found in covering.items() if 0 not in found]
    if missing and getattr(student, "heads_from", None) == TEACHER_REF:
        raise ConfigError(f"key 'student.model.heads_from': {TEACHER_REF} is the first teacher, {dirs[0]}, which has "
                          f"no head for task(s) {missing}; drop heads_from (the student's heads then start at random), "
                          "or list first a teacher with every task's head")
    return dirs


def teacher_stages(runner: StageRunner, recipe: RecipeBase) -> tuple[list[Path], dict[str, str]]:
    """The teachers' model folders and their fingerprints: trained here (one stage per seed) or given."""
    section = recipe.teacher
    if section.model_dirs:
        dirs = given_teachers(recipe)
        note_unused_teacher_settings(recipe)
        return dirs, {f"teacher-{i}": teacher_fingerprint(d) for i, d in enumerate(dirs)}
    dirs, fingerprints = [], {}
    for seed in section.seeds:
        name = f"teacher-seed-{seed}"
        folder = train_stage(runner, name, kind="teacher", model=section.model,
                             train=section.train.model_copy(update={"seed": seed}), data=recipe_data(recipe),
                             max_examples=recipe.max_examples_per_task)
        dirs.append(folder / BEST_MODEL)
        fingerprints[name] = stage_fingerprint(folder)
    return dirs, fingerprints


def signals_stage(runner: StageRunner, recipe: RecipeBase, teacher_dirs: list[Path], inputs: dict[str, str],
                  data: DataConfig, *, max_examples: int | None, name: str = "signals",
                  with_eval_split: bool = True) -> Path:
    """Every teacher over the training split (and the eval split, to score the ensemble) -> one store."""
    splits = ("train", data.eval_split) if with_eval_split else ("train",)
    config_payload = {"data": settings_payload(data), "max_examples": max_examples, "splits": list(splits),
                      "bf16": recipe.signals.bf16}
    lengths = [_training_length(folder) for folder in teacher_dirs]
    if None not in lengths and len(set(lengths)) > 1:
        # Each teacher reads its rows cut at its own length (`build_signal_store`; a store made before that cut
        # them all at the first one's). Recorded only when they differ, so stores of one length keep their
        # fingerprints; teachers a run trains (not there yet in its check pass) share one config, one length.
        config_payload["teacher_lengths"] = lengths

    def work(folder: Path, resume: bool) -> dict:
        accelerator = bf16_accelerator(recipe.signals.bf16, "signals.bf16", "signals.bf16=false")
        store = build_signal_store(teacher_dirs, data, folder, splits=splits, max_examples_per_task=max_examples,
                                   seed=data.subset_seed or 0, batch_size=recipe.signals.batch_size,
                                   device=accelerator.device, autocast=accelerator.autocast)
        return {"store_fingerprint": store.fingerprint, "teachers": len(teacher_dirs)}

    return runner.run(name, config_payload, inputs, work,
                      rerun="keeps the signal shards already written and labels the rest",
                      data=data_fingerprints(data, splits, max_examples, run_dir=runner.root))


def _training_length(folder: Path) -> int | None:
    """The length a teacher folder's rows are cut at (its recorded training length, 128 without one, as
    `build_signal_store` reads it); None while the folder holds no model yet."""
    try:
        return read_model_config(Path(folder)).get("max_length") or SavedModel.DEFAULT_INFERENCE_LENGTH
    except ModelError:
        return None


def ensemble_metrics(signals_dir: Path, data: DataConfig) -> dict:
    """Dev metrics of the teachers' combined prediction (mean probabilities / mean score) from the store."""
    store = open_signal_store(signals_dir)
    examples = open_example_store(data, max_examples_per_task=None, seed=0)
    metrics, main = {}, {}
    for name in data.task_names:
        task = examples.tasks[name]
        mean = np.asarray(store.signals(name, data.eval_split)["teacher_mean"])
        predictions = mean.reshape(-1) if task.type == "regression" else mean
        if task.is_multilabel:  # multilabel metrics read logits (a label is predicted over 0): the mean's logits
            predictions = np.log(np.clip(mean, 1e-7, 1)) - np.log(np.clip(1 - mean, 1e-7, 1))
        labels = np.asarray(examples.examples(name, data.eval_split)["label"][:])
        metrics[name] = compute_metrics(task.metrics, predictions, labels, task.type)
        main[name] = metrics[name][task.main_metric]
    return {"tasks": metrics, "main": main, "average": average_score(main)}


def trivial_baselines(data: DataConfig, max_examples: int | None,
                      split: str | None = None) -> dict[str, TrivialBaseline]:
    """Each task's constant predictor, fitted on the training rows the models saw (``data`` capped at
    ``max_examples``) and scored on ``split`` (default data.eval_split): the summary's trivial baseline."""
    store = open_example_store(data, max_examples_per_task=max_examples, seed=data.subset_seed or 0)
    return store_baselines(store, data.task_names, split or data.eval_split)


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def by_task_rows(signals_dir: Path, data: DataConfig, teacher_dirs: list[Path],
                 rows: dict[str, dict]) -> dict[str, dict] | None:
    """``rows`` with the row of teachers of different tasks first (the summary's reference), when the store says
    each task was labelled by its own teachers (`task_teachers`): each task scored from the mean of the teachers
    with its head. None for teachers of every task (an ensemble, or one teacher)."""
    if not open_signal_store(signals_dir).manifest.get("task_teachers"):
        return None
    row = {**combined_row(signals_dir, data, teacher_dirs), "by_task": True}
    return {f"{len(teacher_dirs)} teachers by task": row, **rows}


def combined_row(signals_dir: Path, data: DataConfig, teacher_dirs: list[Path]) -> dict:
    """The summary row of several teachers' combined prediction (`ensemble_metrics`): their parameters together."""
    from multidistill.recipes.summary import count_parameters

    return {"metrics": ensemble_metrics(signals_dir, data), "params": sum(count_parameters(d) for d in teacher_dirs),
            "models": len(teacher_dirs)}


def teacher_rows(teacher_dirs: list[Path]) -> dict[str, dict]:
    """Summary rows of the teachers this recipe trained (given teachers have no run folder: the recipe scores
    them through the signal store instead)."""
    from multidistill.recipes.summary import count_parameters

    return {f"teacher {folder.parent.name}": {"metrics": read_metrics(folder.parent),
                                              "params": count_parameters(folder), "stages": [folder.parent.name]}
            for folder in teacher_dirs if (folder.parent / "metrics.json").is_file()}

