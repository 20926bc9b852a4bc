"""MKD (Liu et al. 2019, arXiv 1911.03588) as stages over the shared parts.

teacher-seed-<s> -> transfer (training examples + Tang et al. augmentations, unlabelled) -> signals (the
teacher's logits on the whole transfer set) -> student (all tasks jointly; logit_mse + hard by default)
-> finetune-<task> (optional, per task, from the joint student) -> baseline-<task> (optional single-task
students with the same budget) -> summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal, Protocol

import datasets
from pydantic import Field

from multidistill.config import DataConfig, LossTerm, ObjectiveConfig, TaskRef, changed_fields
from multidistill.data import label_sets
from multidistill.data.augment import (
    AugmentConfig,
    augment_examples,
    load_pos_tagger,
    pos_fallback_note,
    pos_tagger_fallback,
)
from multidistill.data.prepare import open_example_store
from multidistill.data.tasks import Columns, DataFile, Task
from multidistill.evaluation.metrics import average_score
from multidistill.models.backbone import load_tokenizer
from multidistill.recipes.common import (
    by_task_rows,
    data_fingerprints,
    ensemble_metrics,
    read_metrics,
    recipe_data,
    resolve_teacher_ref,
    signals_stage,
    teacher_rows,
    teacher_stages,
    train_stage,
    trivial_baselines,
)
from multidistill.recipes.config import BaselineSection, FinetuneSection, RecipeBase, StudentSection
from multidistill.recipes.preflight import refuse_mask_readers
from multidistill.recipes.registry import register_recipe
from multidistill.recipes.stages import (
    STAGE_MANIFEST,
    StageRunner,
    print_note,
    settings_payload,
    stage_fingerprint,
    stood_in,
    stop_if_checking,
)
from multidistill.recipes.summary import count_parameters, write_summary
from multidistill.training.loop import BEST_MODEL
from multidistill.training.objective import objective_for_tasks
from multidistill.utils.atomic import atomic_dir
from multidistill.utils.paths import inside


def mkd_objective() -> ObjectiveConfig:
    """The paper's objective, used when student.objective is omitted."""
    # Liu et al. 2019 (MKD): L = MSE(z_S, z_T) + CE(y, P_S), CE only where a gold label exists.
    return ObjectiveConfig(classification=[LossTerm(loss="logit_mse"), LossTerm(loss="hard")],
                           multilabel=[LossTerm(loss="logit_mse"), LossTerm(loss="hard")],
                           regression=[LossTerm(loss="logit_mse"), LossTerm(loss="hard")])


class MKDRecipe(RecipeBase):
    """MKD: a multi-task teacher -> augmented, teacher-labelled transfer set -> a model-agnostic student,
    distilled jointly over all tasks, optionally fine-tuned per task (arXiv 1911.03588)."""

    default_objective: ClassVar = staticmethod(mkd_objective)
    labelled_tasks_only: ClassVar[bool] = True  # the teacher, its transfer set and the student read labelled tasks
    recipe: Literal["mkd"] = Field(description="Recipe name.")
    augment: AugmentConfig | None = Field(default_factory=AugmentConfig, description="Transfer-set augmentation "
                                          "(Tang et al. 2019); null trains on the original examples only.")
    student: StudentSection = Field(description="The student (bilstm or a small Transformer).")
    finetune: FinetuneSection = Field(default_factory=FinetuneSection, description="Per-task fine-tuning.")
    baseline: BaselineSection = Field(default_factory=BaselineSection, description="Single-task baseline.")


class TransferSettings(Protocol):
    """What `transfer_stage` reads from its caller's settings (an MKD recipe, or the demo's)."""

    augment: AugmentConfig | None
    max_examples_per_task: int | None
    subset_seed: int


def transfer_task(task: Task, folder: Path) -> Task:
    """``task`` with its training split replaced by the transfer set saved in ``folder/<task>``."""
    columns = Columns(text_a="text_a", text_b="text_b" if task.pair else None, label="label", id="id",
                      domain="domain")
    train = DataFile(path=str(inside(folder, task.name).resolve()), format="hf_disk", columns=columns)
    return task.model_copy(update={"files": {**task.files, "train": train}})


def domain_set_folder(folder: Path, task: Task, index: int) -> Path:
    """Where `save_domain_transfer_sets` writes the transfer rows of ``task``'s ``index``-th domain (in
    `Task.domains` order; an index, not the name, so any domain name makes a safe folder name)."""
    return inside(folder, task.name, f"domain-{index}")


def domain_files_transfer_task(task: Task, folder: Path) -> Task:
    """MKD's `transfer_task`: a task with one file set per domain (`domain_files`, e.g. Amazon) keeps them, each
    domain's training file replaced by its rows of the transfer set (`save_domain_transfer_sets`), so every
    domain's evaluation files stay as they are; any other task is `transfer_task`'s."""
    if not task.domain_files:
        return transfer_task(task, folder)
    # No domain column: domain_files give each row its file's domain (and ids their `<domain>:` prefix back).
    columns = Columns(text_a="text_a", text_b="text_b" if task.pair else None, label="label", id="id")
    domain_files = {
        domain: {**{split: data_file for split, data_file in task.domain_files[domain].items() if split != "train"},
                 "train": DataFile(path=str(domain_set_folder(folder, task, i).resolve()), format="hf_disk",
                                   columns=columns)}
        for i, domain in enumerate(sorted(task.domain_files))}
    return Task.model_validate({**task.model_dump(exclude={"domain_files", "sources"}), "domain_files": domain_files})


def _save_set(rows: datasets.Dataset, task: Task, path: Path) -> None:
    if task.type == "classification":
        rows = rows.cast_column("label", datasets.ClassLabel(names=list(task.labels)))
    elif task.is_multilabel:  # each row's set as a list of class indices; a variant without labels: [-1], the
        masks = rows["label"][:]  # ClassLabel mark of a missing label, as a classification column holds -1
        sets = [[-1] if mask < 0 else label_sets.indices(mask, task.num_labels) for mask in masks]
        rows = rows.remove_columns("label").add_column(
            "label", sets, feature=datasets.Sequence(datasets.ClassLabel(names=list(task.labels))))  # datasets 3
    rows.save_to_disk(str(path), num_shards=None if len(rows) else 1)  # no rows: one empty shard, not none (unreadable)


def save_transfer_set(augmented: datasets.Dataset, task: Task, folder: Path) -> None:
    """Write ``task``'s transfer set where `transfer_task` reads it. A classification label column is saved with
    the task's class names (a multilabel one as lists of them, [-1] for a variant without labels), so the
    variants' -1 reads back as "no label" even where "-1" is one of the labels (a plain integer -1 would then be
    ambiguous, and refused)."""
    _save_set(augmented, task, inside(folder, task.name))


def save_domain_transfer_sets(augmented: datasets.Dataset, task: Task, folder: Path) -> None:
    """Write the transfer set of a task with `domain_files` one set per domain, where `domain_files_transfer_task`
    reads them (a domain without training rows gets an empty set). Each row's id loses the `<domain>:` prefix its
    domain's files gave it, which reading the set as that domain's file adds back."""
    domains = augmented["domain"]
    for i, domain in enumerate(sorted(task.domain_files)):
        columns = augmented.select([row for row, name in enumerate(domains) if name == domain]).to_dict()
        prefix = f"{domain}:"
        columns["id"] = [value[len(prefix):] if value.startswith(prefix) else value for value in columns["id"]]
        _save_set(datasets.Dataset.from_dict(columns, features=augmented.features), task,
                  domain_set_folder(folder, task, i))


def transfer_notes(folder: Path) -> list[str]:
    """What the finished transfer stage in ``folder`` chose for the user (a missing POS tagger), for the summary."""
    record = json.loads((folder / STAGE_MANIFEST).read_text())
    settings = record.get("augment_settings") or {}
    if settings.get("p_swap") == 0:  # no word was swapped, so no tagger was missed (older stages noted one anyway)
        return []
    if record.get("pos_tagger_note"):
        return [record["pos_tagger_note"]]
    if record.get("pos_tagger") is False and settings.get("pos_tagger") == "auto" and settings.get("p_swap"):
        return [pos_fallback_note("no POS tagger was found")]  # a stage recorded before the note was
    return []


def transfer_stage(runner: StageRunner, recipe: TransferSettings, data: DataConfig, teacher_dirs: list[Path],
                   inputs: dict[str, str], notes: list[str], *, name: str = "transfer",
                   make_task: Callable[[Task, Path], Task] = transfer_task,
                   key: str = "augment", domain_sets: bool = False) -> tuple[DataConfig, dict[str, str]]:
    """The augmented transfer set (stage ``name``) and the data config that reads it (dev sets unchanged;
    ``make_task`` swaps a task's training split for its transfer set); appends to ``notes`` what it chose for
    the user. ``key``: the augmentation section's key, which a refusal names. ``domain_sets``: a task with
    `domain_files` gets its set saved one per domain (`save_domain_transfer_sets`, which
    `domain_files_transfer_task` reads); otherwise every task's is one set (`save_transfer_set`)."""
    store = open_example_store(data, max_examples_per_task=recipe.max_examples_per_task, seed=recipe.subset_seed)
    split = {task for task in data.task_names if domain_sets and store.tasks[task].domain_files}

    # The first teacher's mask token: the teachers label the variants (the students read the same text), so each
    # teacher's tokenizer must read it as its own; preflight's check_mask_tokens says so before the teachers, and
    # for the students too.
    first = load_tokenizer(str(teacher_dirs[0]))
    if recipe.augment.p_mask > 0:
        refuse_mask_readers([(str(folder), f"teacher {i + 1} of {len(teacher_dirs)}",
                              load_tokenizer(str(folder)) if i else first) for i, folder in enumerate(teacher_dirs)],
                            f"{key}.p_mask")
    mask_token = first.mask_token or "[MASK]"  # p_mask 0: never written into a variant

    def work(folder: Path, resume: bool) -> dict:
        store.validate(["train"])
        # A tagger only guides swaps: without swaps none is looked for, so `auto` cannot fall back (or say so).
        swaps = recipe.augment.p_swap > 0
        settings = recipe.augment if swaps else recipe.augment.model_copy(update={"pos_tagger": "none"})
        tagger = load_pos_tagger(settings.pos_tagger)
        sizes = {}
        with atomic_dir(folder) as tmp:
            for task in data.task_names:
                original = store.examples(task, "train")
                augmented = augment_examples(original, store.tasks[task], settings, mask_token=mask_token,
                                             tagger=tagger)
                save = save_domain_transfer_sets if task in split else save_transfer_set
                save(augmented, store.tasks[task], tmp)
                sizes[task] = {"original": len(original), "transfer": len(augmented)}
        # The fingerprint leaves defaults out; the manifest says in full what made this transfer set.
        return {"sizes": sizes, "pos_tagger": tagger is not None,
                "pos_tagger_note": pos_tagger_fallback(settings.pos_tagger),
                "augment_settings": recipe.augment.model_dump(mode="json")}

    payload = {"augment": settings_payload(recipe.augment), "data": settings_payload(data),
               "max_examples": recipe.max_examples_per_task}
    if split:  # another layout: a set saved whole (before domain sets) is not taken for one
        payload["domain_sets"] = sorted(split)
    if mask_token != "[MASK]":  # the variants' text holds it (left out where default, as fingerprints leave defaults)
        payload["mask_token"] = mask_token
    folder = runner.run(name, payload, inputs, work,
                        data=data_fingerprints(data, ("train",), recipe.max_examples_per_task,
                                                     run_dir=runner.root))
    if not stood_in(folder):  # a check pass stood in for it: no record to read, and no summary shows the notes
        notes.extend(transfer_notes(folder))
    # `store.domains` reads a domain column's names when `work` did not run (a reused stage): the spec then says
    # what it said when the stage was made, and so do the fingerprints of the stages that read it.
    specs = [make_task(store.tasks[task].model_copy(update={"domains": store.domains(task)}), folder)
             for task in data.task_names]
    # The transfer set is the capped subset already: per-task caps, domain fractions and hold-outs must not cut it
    # again. The domain filter stays: it keeps the evaluation splits to the domains the teachers were scored on (the
    # transfer set holds those domains' rows only, so its training rows stay as they are).
    refs = [TaskRef(name=ref.name, domains_include=ref.domains_include, domains_exclude=ref.domains_exclude)
            for ref in data.tasks]
    transfer_data = data.model_copy(update={"task_specs": specs, "tasks": refs})
    return transfer_data, {"transfer": stage_fingerprint(folder)}


def _per_task_row(folders: dict[str, Path]) -> dict:
    """One summary row of per-task models: each task's scores from its own model; the parameters of them all."""
    main = {task: read_metrics(folder)["main"][task] for task, folder in folders.items()}
    tasks = {task: read_metrics(folder)["tasks"][task] for task, folder in folders.items()}
    return {"metrics": {"tasks": tasks, "main": main, "average": average_score(main)},
            "params": sum(count_parameters(f / BEST_MODEL) for f in folders.values()), "models": len(folders),
            "stages": [f.name for f in folders.values()]}


@register_recipe("mkd", MKDRecipe)
def run_mkd(recipe: MKDRecipe, runner: StageRunner) -> dict:
    data = recipe_data(recipe)
    # A per-task entry of no task here is refused before any stage (the one-task stages keep their task's only).
    objective_for_tasks(recipe.student.objective, data.task_names, data.task_names, key="student.objective")
    teacher_dirs, teacher_inputs = teacher_stages(runner, recipe)
    notes: list[str] = []
    if recipe.augment is not None:
        student_data, transfer_inputs = transfer_stage(runner, recipe, data, teacher_dirs, teacher_inputs, notes,
                                                       make_task=domain_files_transfer_task, domain_sets=True)
        # The transfer set is already capped (its originals are the capped subset): no second cap.
        cap = None
    else:
        student_data, transfer_inputs, cap = data, {}, recipe.max_examples_per_task
    signals = signals_stage(runner, recipe, teacher_dirs, {**teacher_inputs, **transfer_inputs}, student_data,
                            max_examples=cap)
    student_inputs = {"signals": stage_fingerprint(signals)}
    section = recipe.student.model_copy(update={"model": resolve_teacher_ref(recipe.student.model, teacher_dirs)})
    student = train_stage(runner, "student", kind="distill", model=section.model, train=section.train,
                          data=student_data, max_examples=cap, objective=section.objective, signals=signals,
                          inputs=student_inputs, feature_teachers_of=teacher_dirs)

    def single(name: str) -> DataConfig:
        return student_data.model_copy(update={"tasks": [ref for ref in student_data.tasks if ref.name == name]})

    def one_task(name: str) -> ObjectiveConfig | None:  # a one-task stage: objective.tasks of that task only
        return objective_for_tasks(section.objective, [name], student_data.task_names, key="student.objective")

    finetuned, baseline = {}, {}
    if not recipe.finetune.enabled and "train" in changed_fields(recipe.finetune):
        print_note("finetune.train not used: finetune.enabled is false")
    if recipe.finetune.enabled:
        # The fine-tune starts from the saved student, heads included (those heads_from started are in it,
        # trained): heads_from, which a model with init_from refuses, has nothing left to do.
        init = section.model.model_copy(update={"init_from": str(student / BEST_MODEL),
                                                **({"heads_from": None} if section.model.heads_from else {})})
        for name in data.task_names:
            finetuned[name] = train_stage(
                runner, f"finetune-{name}", kind="distill", model=init, train=recipe.finetune.train,
                data=single(name), max_examples=cap, objective=one_task(name), signals=signals,
                inputs={**student_inputs, "student": stage_fingerprint(student)},
                feature_teachers_of=teacher_dirs)
    if recipe.baseline.enabled:
        for name in data.task_names:
            baseline[name] = train_stage(runner, f"baseline-{name}", kind="distill", model=section.model,
                                         train=section.train, data=single(name), max_examples=cap,
                                         objective=one_task(name), signals=signals, inputs=student_inputs,
                                         feature_teachers_of=teacher_dirs)

    stop_if_checking()  # every stage is checked: the rest reads what they wrote
    rows = teacher_rows(teacher_dirs)
    by_task = by_task_rows(signals, student_data, teacher_dirs, rows)  # one classifier per task: the reference
    if by_task is not None:
        rows = by_task
    elif not rows:
        rows["teacher"] = {"metrics": ensemble_metrics(signals, student_data)}
        if len(teacher_dirs) > 1:
            rows["teacher"].update(ensemble=True, models=len(teacher_dirs))
    rows["student (joint)"] = {"metrics": read_metrics(student), "params": count_parameters(student / BEST_MODEL),
                               "stages": [student.name]}
    if finetuned:
        rows["student + per-task fine-tune"] = _per_task_row(finetuned)
    if baseline:
        rows["single-task baseline"] = _per_task_row(baseline)
    # Fitted on the training subset the teachers saw (not the transfer set: its augmented rows have no labels).
    return write_summary(runner.root, rows, next(iter(rows)), data.task_names, notes,
                         baselines=trivial_baselines(data, recipe.max_examples_per_task))
