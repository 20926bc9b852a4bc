"""Meta-KD (Pan et al., arXiv 2012.01266) as stages over the shared parts.

prototypes (t_i: a frozen encoder over every domain's training rows, a per-example column) -> meta-teacher (the
task model with a domain branch: hard + gamma1 domain_adversarial, each example weighted by t_i) -> per target
domain d, on d's rows only: signals-d (the meta-teacher's probabilities) -> weights-d (lambda_i) ->
intermediate-d (stage A: lambda-weighted hidden_mse + attention_mse + gamma2 transferable_mse, the meta-teacher
online) -> student-d (stage B: soft_ce from A's checkpoint) -> the baselines asked for -> report (every model on
the report split, per domain) -> summary.

With ``data.fraction`` < 1 the target domain keeps that seeded fraction of its training rows in every stage that
reads it (the other domains keep theirs), so the stages over all domains are made once per target
(`prototypes-d`, `meta-teacher-d`); at 1 they are shared by every target.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from multidistill.config import (
    DataConfig,
    ExampleWeightsConfig,
    LossTerm,
    ModelConfig,
    ObjectiveConfig,
    Seed,
    TaskRef,
    TrainConfig,
    _Strict,
)
from multidistill.data.collate import collate, to_device
from multidistill.data.prepare import open_example_store, prepare_data
from multidistill.data.sampler import MultiTaskBatchPlanner
from multidistill.errors import ConfigError, DataError
from multidistill.evaluation.evaluate import evaluate
from multidistill.models.backbone import load_tokenizer
from multidistill.models.build import load_encoder
from multidistill.models.domain_branch import DomainBranchSpec
from multidistill.models.loading import load_model
from multidistill.models.multitask import MODEL_CONFIG_FILE, read_model_config
from multidistill.recipes.common import TEACHER_REF, resolve_teacher_ref, signals_stage, train_stage
from multidistill.recipes.config import RecipeBase
from multidistill.recipes.registry import register_recipe
from multidistill.recipes.stages import StageRunner, settings_payload, stage_fingerprint
from multidistill.recipes.summary import count_parameters, write_summary
from multidistill.teachers.columns import open_column_store, write_column_store
from multidistill.teachers.fingerprint import teacher_fingerprint
from multidistill.teachers.prototypes import encoder_embeddings, expertise_weights, prototype_scores
from multidistill.teachers.store import open_signal_store
from multidistill.training.device import accelerator_for
from multidistill.training.loop import BEST_MODEL
from multidistill.training.schedule import epoch_steps, planned_steps
from multidistill.utils.atomic import write_json

PROTOTYPE_SCORE = "prototype_score"  # t_i
EXPERTISE_WEIGHT = "expertise_weight"  # lambda_i
COLUMNS = "columns"  # a prototypes / weights stage's column store, inside its stage folder
SCORES = "scores.json"  # the report stage's per-model, per-domain scores
BASELINES = ("no_kd", "single_domain", "mixed", "meta_without_target")
Baseline = Literal["no_kd", "single_domain", "mixed", "meta_without_target"]


class MetaKDData(DataConfig):
    """The recipe's data (exactly one task, with domains), plus the data-scarce setting."""

    fraction: float = Field(1.0, gt=0, le=1, description="The data-scarce setting: each target domain keeps this "
                            "seeded fraction (round half up; data.subset_seed) of its own training rows in every "
                            "stage that reads them (prototypes, teachers, students); the other domains' rows and "
                            "every dev/test split are untouched. Below 1, the stages over all domains are made "
                            "once per target (prototypes-<d>, meta-teacher-<d>, teacher-mixed-<d>).")


class PrototypeSection(_Strict):
    """Stage 0: prototype scores t_i from a frozen encoder."""

    encoder: str | None = Field(None, description="The frozen encoder (name, folder, pkg: path, or a multidistill "
                                "model folder: its encoder); default teacher.model.name_or_path (the teacher's "
                                "pretrained encoder), or the given meta-teacher with teacher.model_dirs.")
    mode: Literal["class", "domain"] = Field("class", description="Centroids per (domain, class) (default: the "
                                             "later port and the docs) or per domain (the authors' first code).")
    batch_size: int = Field(64, gt=0, description="Rows per encoder batch.")
    max_seq_length: int | None = Field(None, gt=0, description="Tokens per row; default the teacher's "
                                       "max_seq_length.")


class MetaTeacherSection(_Strict):
    """Stage 1: the meta-teacher's domain-adversarial term."""

    gamma1: float = Field(0.5, ge=0, description="Weight of domain_adversarial beside hard (the authors' 0.5).")
    adversarial_seed: int = Field(0, ge=0, description="Seed of the random permutation of the batch's domains.")


def _intermediate_train() -> TrainConfig:
    return TrainConfig(epochs=10, lr=5e-5, lr_scheduler="constant", warmup_ratio=0.0, select="last")


# Stage B's step floor: the authors' 3 epochs over a full Amazon domain (1,600 rows, batch 32). Their epoch count
# alone gives 15 steps at 10% of a domain, too few to train the head (docs/benchmarks.md, Issue 13 at 10%).
PREDICTION_MIN_STEPS = 150


def _prediction_train() -> TrainConfig:
    return TrainConfig(epochs=3, lr=3e-5, warmup_ratio=0.1, min_steps=PREDICTION_MIN_STEPS)


class MetaStudentSection(_Strict):
    """Stage 3: one student per target domain (and the baselines' students)."""

    model: ModelConfig = Field(description="The student: layers of a pretrained encoder (student_layers), or a "
                               "given encoder folder (e.g. a MITKD general student's encoder/). `@teacher` = the "
                               "arm's teacher folder. Stage A adds a domain branch over the task's domains.")
    intermediate: TrainConfig = Field(default_factory=_intermediate_train, description="Stage A (the authors': 10 "
                                      "epochs, lr 5e-5 constant, no warm-up); the kept model is the last.")
    prediction: TrainConfig = Field(default_factory=_prediction_train, description="Stage B from A's checkpoint "
                                    "(the authors' 3 epochs, lr 3e-5, warm-up 0.1; and at least 150 steps, "
                                    "min_steps, so a data-scarce target still trains the head).")
    baseline: TrainConfig | None = Field(None, description="Settings of every baseline student (no-KD, KD). "
                                         "Default: stage B's with epochs = the passes stage A and stage B make "
                                         "together (min_steps included), so a baseline makes as many passes over "
                                         "the target's rows as the Meta-KD student.")
    gamma2: float = Field(0.5, ge=0, description="Weight of transferable_mse in stage A.")
    temperature: float = Field(1.0, gt=0, description="Soft cross-entropy temperature T of stage B and the KD "
                               "baselines.")
    weighted: bool = Field(False, description="Weight stage B's soft_ce by lambda_i too (the authors' code does "
                           "not: lambda weights stage A only).")
    seeds: list[Seed] = Field(default_factory=lambda: [42], min_length=1, description="One student per target and "
                              "seed (train.seed replaced); the summary shows the mean and spread over seeds. With "
                              "more than one, stage names end in -seed-<s>.")


class MetaKDRecipe(RecipeBase):
    """Meta-KD: prototype scores -> a meta-teacher across domains -> one student per target domain."""

    default_objective: ClassVar = None
    recipe: Literal["metakd"] = Field(description="Recipe name.")
    data: MetaKDData = Field(description="Exactly one task with domains (e.g. amazon, mnli-genre); "
                             "data.tasks[0]'s domains_include/exclude and domain_fraction apply to every stage.")
    targets: list[str] | None = Field(None, min_length=1, description="Target domains (one student each); "
                                      "default every domain of the task.")
    prototypes: PrototypeSection = Field(default_factory=PrototypeSection, description="Stage 0.")
    meta_teacher: MetaTeacherSection = Field(default_factory=MetaTeacherSection, description="Stage 1.")
    student: MetaStudentSection = Field(description="Stage 3: the students.")
    baselines: list[Baseline] = Field(default_factory=list, description="Baselines with the same student, data and "
                                      f"budget, each its own stages: any of {list(BASELINES)}.")
    report_split: Literal["dev", "test"] | None = Field(None, description="Split of the summary's scores; default "
                                                       "test when the task has one (dev selects models), else "
                                                       "data.eval_split.")

    @model_validator(mode="after")
    def _caps_set_once(self) -> MetaKDRecipe:  # replaces RecipeBase's: the student has two train sections
        for key, train in (("teacher.train", self.teacher.train), ("student.intermediate", self.student.intermediate),
                           ("student.prediction", self.student.prediction)):
            if train.max_examples_per_task is not None:
                raise ValueError(f"{key}.max_examples_per_task: Meta-KD selects rows by domain; use data.fraction "
                                 "or data.tasks[0].domain_fraction")
        return self

    @model_validator(mode="after")
    def _one_task(self) -> MetaKDRecipe:
        if len(self.data.tasks) != 1:
            raise ValueError(f"data.tasks: Meta-KD takes exactly one task with domains, got {self.data.task_names}")
        if self.max_examples_per_task is not None or self.data.tasks[0].max_examples is not None:
            raise ValueError("max_examples_per_task: a cap would pick other rows over all domains than over one; "
                             "use data.fraction or data.tasks[0].domain_fraction instead")
        if len(self.teacher.seeds) != 1:
            raise ValueError("teacher.seeds: Meta-KD trains one teacher per arm; give one seed")
        for name in ("targets", "baselines"):
            values = getattr(self, name) or []
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct, got {values}")
        return self


# ------------------------------------------------------------------------------------------------- data views


@dataclass(frozen=True)
class Plan:
    """What the checks found: the task, its domains (all, and those the run keeps) and the targets."""

    task: str
    domains: tuple[str, ...]
    kept: tuple[str, ...]
    targets: tuple[str, ...]
    report_split: str
    main_metric: str
    train_rows: dict[str, int]  # target -> its training rows after data.fraction


def _data(recipe: MetaKDRecipe, ref: TaskRef, eval_split: str | None = None) -> DataConfig:
    """A plain DataConfig (no fraction) over one view of the task, with the recipe's subset seed."""
    given = {key: getattr(recipe.data, key) for key in DataConfig.model_fields
             if key in recipe.data.model_fields_set and key != "tasks"}
    return DataConfig(**{**given, "tasks": [ref], "subset_seed": recipe.subset_seed,
                         **({"eval_split": eval_split} if eval_split else {})})


def _fractions(recipe: MetaKDRecipe, target: str | None) -> dict[str, float] | None:
    fractions = dict(recipe.data.tasks[0].domain_fraction or {})
    if target is not None and recipe.data.fraction < 1:
        fractions[target] = recipe.data.fraction
    return fractions or None


def union_data(recipe: MetaKDRecipe, target: str | None = None, without: str | None = None) -> DataConfig:
    """Every kept domain (``target`` at data.fraction; ``without`` left out entirely)."""
    ref = recipe.data.tasks[0]
    include, exclude = ref.domains_include, ref.domains_exclude
    if without is not None:
        if include:
            include = [d for d in include if d != without]
        else:
            exclude = [*(exclude or []), without]
    fractions = {d: f for d, f in (_fractions(recipe, target) or {}).items() if d != without} or None
    return _data(recipe, TaskRef(name=ref.name, domains_include=include, domains_exclude=exclude,
                                 domain_fraction=fractions))


def target_data(recipe: MetaKDRecipe, target: str, eval_split: str | None = None) -> DataConfig:
    """The target domain's rows only (training rows at data.fraction)."""
    fraction = (_fractions(recipe, target) or {}).get(target)
    return _data(recipe, TaskRef(name=recipe.data.tasks[0].name, domains_include=[target],
                                 domain_fraction={target: fraction} if fraction is not None else None), eval_split)


def union_suffix(recipe: MetaKDRecipe, target: str) -> str:
    """The stages over all domains are shared by the targets at fraction 1, one per target below."""
    return "" if recipe.data.fraction == 1 else f"-{target}"


def seed_suffix(recipe: MetaKDRecipe, seed: int) -> str:
    return f"-seed-{seed}" if len(recipe.student.seeds) > 1 else ""


# ------------------------------------------------------------------------------------------------- checks


def check_inputs(recipe: MetaKDRecipe) -> Plan:
    """Everything the stages read, checked before the first stage writes: a task with domains and labels, the
    targets, each domain's training rows after the fraction (and of every class, for class prototypes), a given
    meta-teacher's domain branch, and what the baselines need."""
    ref = recipe.data.tasks[0]
    store = open_example_store(union_data(recipe), max_examples_per_task=None, seed=recipe.subset_seed)
    store.validate(["train"])
    task = store.tasks[ref.name]
    if not task.domains:
        raise ConfigError(f"key 'data.tasks': task '{task.name}' has no domains; Meta-KD needs one task over "
                          "several domains (domain_files, or a mapped columns.domain), e.g. amazon or mnli-genre")
    if task.type != "classification":
        raise ConfigError(f"key 'data.tasks': task '{task.name}' is a {task.type} task; Meta-KD's expertise weights "
                          "need the teacher's probability of the gold class (a classification task)")
    counts = _domain_counts(store, task)
    kept = tuple(d for d in task.domains if counts.get(d, 0) or _selected(ref, d))
    for domain in kept:
        if counts.get(domain, 0) == 0:
            raise ConfigError(f"key 'data.tasks': domain '{domain}' of task '{task.name}' has no training rows; "
                              "exclude it (domains_exclude) or give it data")
    if len(kept) < 2:
        raise ConfigError(f"key 'data.tasks': Meta-KD needs at least two domains with training rows, task "
                          f"'{task.name}' keeps {list(kept)}")
    targets = tuple(recipe.targets or kept)
    train_rows = {}
    for target in targets:
        if target not in kept:
            raise ConfigError(f"key 'targets': domain {target!r} is not in the data (task '{task.name}' keeps "
                              f"domains: {', '.join(kept)})")
        left = int(recipe.data.fraction * counts[target] + 0.5)
        if left == 0:
            raise ConfigError(f"key 'data.fraction': {recipe.data.fraction} of domain '{target}''s "
                              f"{counts[target]} training rows keeps no row; raise the fraction")
        train_rows[target] = left
    if recipe.prototypes.mode == "class":
        views = [union_data(recipe, t) for t in targets] if recipe.data.fraction < 1 else [union_data(recipe)]
        for view in views:
            _check_classes(view, recipe, task)
    _check_given_teachers(recipe, task.domains)
    if "meta_without_target" in recipe.baselines and len(kept) < 3:
        raise ConfigError(f"key 'baselines': meta_without_target trains a meta-teacher on the other domains, whose "
                          f"prototype scores need at least two of them; task '{task.name}' keeps only "
                          f"{len(kept)} domains")
    needs_model = sorted({"single_domain", "mixed", "meta_without_target"} & set(recipe.baselines))
    if needs_model and recipe.teacher.model is None:
        raise ConfigError(f"key 'baselines': {needs_model} train teachers of their own from teacher.model; with "
                          "teacher.model_dirs give teacher.model too, or drop them")
    student = recipe.student.model
    if "no_kd" in recipe.baselines and TEACHER_REF in (student.name_or_path, student.tokenizer):
        raise ConfigError("key 'student.model.name_or_path': the no_kd baseline has no teacher to resolve "
                          "`@teacher`; name the encoder every student starts from (the same start for all arms)")
    split = recipe.report_split or ("test" if "test" in task.splits else recipe.data.eval_split)
    if split not in task.splits:
        raise ConfigError(f"key 'report_split': task '{task.name}' has no '{split}' split (it has "
                          f"{', '.join(task.splits)})")
    report = open_example_store(_data(recipe, TaskRef(name=ref.name, domains_include=list(targets))),
                                max_examples_per_task=None, seed=recipe.subset_seed)
    report.validate([recipe.data.eval_split, split])
    return Plan(task.name, tuple(task.domains), kept, targets, split, task.main_metric, train_rows)


def _selected(ref: TaskRef, domain: str) -> bool:
    return (not ref.domains_include or domain in ref.domains_include) and domain not in (ref.domains_exclude or [])


def _domain_counts(store, task) -> dict[str, int]:
    """Training rows per domain name (after the task's selection)."""
    column = store.examples(task.name, "train").with_format("arrow")["domain"].to_pylist()
    counts: dict[str, int] = {}
    for name in column:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _check_classes(data: DataConfig, recipe: MetaKDRecipe, task) -> None:
    """Class prototypes compare a row with the same class's centroids in the other domains: every domain needs
    rows of every class that has rows (checked here, before the prototype stage, so nothing is written)."""
    store = open_example_store(data, max_examples_per_task=None, seed=recipe.subset_seed)
    store.validate(["train"])
    rows = store.examples(task.name, "train").with_format("arrow")
    pairs = set(zip(rows["domain"].to_pylist(), rows["label"].to_pylist(), strict=True))
    domains = sorted({d for d, _ in pairs})
    for label in sorted({y for _, y in pairs}):
        for domain in domains:
            if (domain, label) not in pairs:
                raise ConfigError(f"key 'prototypes.mode': 'class' compares each row with its class's centroids in "
                                  f"the other domains, but domain '{domain}' has no training row of class "
                                  f"'{task.labels[label]}' (after data.fraction); use mode: domain, or more rows")


def _check_given_teachers(recipe: MetaKDRecipe, domains: tuple[str, ...]) -> None:
    """A given meta-teacher (teacher.model_dirs) must carry a domain branch over the task's domains: stage A's
    transferable_mse reads its tau."""
    for i, folder in enumerate(recipe.teacher.model_dirs):
        config = read_model_config(Path(folder))
        branch = config.get("domain_branch")
        if branch is None:
            raise ConfigError(f"key 'teacher.model_dirs.{i}': {folder} has no domain branch; Meta-KD's stage A "
                              "matches the meta-teacher's transferable vector, so give a model trained with "
                              "model.domain_branch (or let the recipe train it from teacher.model)")
        if list(branch.get("domains", [])) != list(domains):
            raise ConfigError(f"key 'teacher.model_dirs.{i}': {folder}'s domain branch is over domains "
                              f"{branch.get('domains')}, the data's are {list(domains)}; domain ids would disagree")


# ------------------------------------------------------------------------------------------------- stages


def prototype_encoder(recipe: MetaKDRecipe) -> str:
    if recipe.prototypes.encoder is not None:
        return recipe.prototypes.encoder
    return recipe.teacher.model.name_or_path if recipe.teacher.model is not None else recipe.teacher.model_dirs[0]


def _encoder_fingerprint(encoder: str) -> str:
    folder = Path(encoder)
    return teacher_fingerprint(folder) if (folder / MODEL_CONFIG_FILE).is_file() else encoder


def _max_length(recipe: MetaKDRecipe) -> int:
    if recipe.prototypes.max_seq_length is not None:
        return recipe.prototypes.max_seq_length
    return recipe.teacher.model.max_seq_length if recipe.teacher.model is not None else 128


def prototypes_stage(runner: StageRunner, recipe: MetaKDRecipe, name: str, data: DataConfig) -> Path:
    """Stage 0: t_i of every training row of ``data`` (all its domains), a column store in ``<stage>/columns``."""
    encoder, length = prototype_encoder(recipe), _max_length(recipe)
    section = recipe.prototypes
    payload = {"data": settings_payload(data), "encoder": encoder, "mode": section.mode, "max_length": length,
               "batch_size": section.batch_size}

    def work(folder: Path, resume: bool) -> dict:
        task_name = data.task_names[0]
        store = open_example_store(data, max_examples_per_task=None, seed=recipe.subset_seed)
        store.validate(["train"])
        task = store.tasks[task_name]
        tokenizer = load_tokenizer(encoder)
        device = accelerator_for("no").device
        model = load_encoder(encoder).to(device).eval()
        view = store.tokenized(task_name, "train", tokenizer, length)
        embeddings = torch.zeros(len(view), model.config.hidden_size)
        pad = tokenizer.pad_token_id or 0
        for start in range(0, len(view), section.batch_size):
            rows = list(range(start, min(start + section.batch_size, len(view))))
            batch = to_device(collate(task, view[rows], pad), device)
            embeddings[rows] = encoder_embeddings(model, batch["input_ids"], batch["attention_mask"],
                                                  batch.get("token_type_ids")).cpu()
        domain_ids = torch.as_tensor(np.asarray(view["domain_id"]), dtype=torch.long)
        labels = torch.as_tensor(np.asarray(view["label"]), dtype=torch.long)
        scores = prototype_scores(embeddings, domain_ids, labels, section.mode, domain_names=task.domains,
                                  class_names=task.labels)
        fingerprint = write_column_store(
            folder / COLUMNS, task=task_name, domains=task.domains, ids=list(view["id"]),
            domain_ids=domain_ids.numpy(), columns={PROTOTYPE_SCORE: scores.numpy()},
            data_fingerprint=store.data_fingerprint(task_name, "train"),
            made_from={"encoder": _encoder_fingerprint(encoder), "mode": section.mode, "max_length": length})
        return {"store_fingerprint": fingerprint, "rows": len(view)}

    return runner.run(name, payload, {"encoder": _encoder_fingerprint(encoder)}, work)


def _weights(folder: Path, column: str) -> ExampleWeightsConfig:
    return ExampleWeightsConfig(store=str(folder / COLUMNS), column=column)


def meta_teacher_stage(runner: StageRunner, recipe: MetaKDRecipe, plan: Plan, name: str, data: DataConfig,
                       prototypes: Path) -> Path:
    """Stage 1: the task model with a domain branch, hard + gamma1 domain_adversarial, weighted by t_i."""
    model = recipe.teacher.model
    if model.domain_branch is None:
        model = model.model_copy(update={"domain_branch": DomainBranchSpec(domains=list(plan.domains))})
    adversarial = LossTerm(loss="domain_adversarial", weight=recipe.meta_teacher.gamma1,
                           params={"seed": recipe.meta_teacher.adversarial_seed} if recipe.meta_teacher.adversarial_seed
                           else {})
    objective = ObjectiveConfig(classification=[LossTerm(loss="hard"), adversarial])
    train = recipe.teacher.train.model_copy(update={"seed": recipe.teacher.seeds[0]})
    return train_stage(runner, name, kind="teacher", model=model, train=train, data=data, max_examples=None,
                       objective=objective, inputs={"prototypes": stage_fingerprint(prototypes)},
                       example_weights=_weights(prototypes, PROTOTYPE_SCORE))


def plain_teacher_stage(runner: StageRunner, recipe: MetaKDRecipe, name: str, data: DataConfig) -> Path:
    """A baseline teacher: teacher.model fine-tuned on ``data`` with gold labels (no branch, no weights)."""
    train = recipe.teacher.train.model_copy(update={"seed": recipe.teacher.seeds[0]})
    return train_stage(runner, name, kind="teacher", model=recipe.teacher.model, train=train, data=data,
                       max_examples=None)


def weights_stage(runner: StageRunner, recipe: MetaKDRecipe, name: str, prototypes: Path, signals: Path,
                  data: DataConfig) -> Path:
    """lambda_i = (1 + t_i) / (1 + exp((1 - p_T(y_i|x_i))^2)) of the target's rows: t_i from the prototype
    column (by id), p_T from the teacher's stored probabilities; a column store in ``<stage>/columns``."""

    def work(folder: Path, resume: bool) -> dict:
        task_name = data.task_names[0]
        store = open_example_store(data, max_examples_per_task=None, seed=recipe.subset_seed)
        store.validate(["train"])
        task = store.tasks[task_name]
        rows = store.examples(task_name, "train").with_format("arrow")
        ids = [str(i) for i in rows["id"].to_pylist()]
        domain_ids = np.asarray([task.domains.index(d) for d in rows["domain"].to_pylist()], dtype=np.int32)
        columns = open_column_store(prototypes / COLUMNS)
        if columns.domains != list(task.domains):
            raise DataError(f"{columns.root}: made for domains {columns.domains}, the data has {list(task.domains)}")
        where = {example: i for i, example in enumerate(columns.table["id"])}
        missing = [example for example in ids if example not in where]
        if missing:
            raise DataError(f"{columns.root} has no prototype score of row '{missing[0]}' ({len(missing)} missing); "
                            "remake the prototypes stage for this data")
        index = np.asarray([where[example] for example in ids], dtype=np.int64)
        if not np.array_equal(columns.table["domain_id"][index], domain_ids):
            raise DataError(f"{columns.root}: the domain ids of its rows disagree with the data's; remake it")
        teacher = open_signal_store(signals)
        stored = teacher.signals(task_name, "train")
        if [str(i) for i in stored["id"]] != ids:
            raise DataError(f"signal store {signals} does not line up with the target's training rows; remake it")
        scores = torch.from_numpy(columns.column(PROTOTYPE_SCORE)[index])
        probs = torch.from_numpy(np.asarray(stored["teacher_mean"], dtype=np.float32))
        labels = torch.as_tensor(np.asarray(rows["label"].to_pylist()), dtype=torch.long)
        weights = expertise_weights(scores, probs, labels)
        fingerprint = write_column_store(
            folder / COLUMNS, task=task_name, domains=task.domains, ids=ids, domain_ids=domain_ids,
            columns={EXPERTISE_WEIGHT: weights.numpy(), PROTOTYPE_SCORE: scores.numpy()},
            data_fingerprint=store.data_fingerprint(task_name, "train"),
            made_from={"prototypes": columns.fingerprint, "signals": teacher.fingerprint})
        return {"store_fingerprint": fingerprint, "mean_weight": float(weights.mean()) if len(weights) else None}

    return runner.run(name, {"data": settings_payload(data)},
                      {"prototypes": stage_fingerprint(prototypes), "signals": stage_fingerprint(signals)}, work)


@dataclass(frozen=True)
class Model:
    """A trained model the later stages read: its folder (``model/`` of a stage, or a given folder), its
    fingerprint (the stage's, or the given folder's weights) and a name for the report."""

    folder: Path
    fingerprint: str
    name: str

    @classmethod
    def of_stage(cls, stage: Path) -> Model:
        return cls(stage / BEST_MODEL, stage_fingerprint(stage), stage.name)

    @classmethod
    def given(cls, folder: Path) -> Model:
        return cls(folder, teacher_fingerprint(folder), str(folder))


def meta_distill_stages(runner: StageRunner, recipe: MetaKDRecipe, plan: Plan, arm: str, target: str,
                        teacher: Model, prototypes: Path) -> list[Model]:
    """Stages 2-3 for one target and one meta-teacher: signals, lambda weights, then per seed stage A
    (intermediate) and stage B (the student). ``arm`` goes into the stage names."""
    data = target_data(recipe, target)
    inputs = {"teacher": teacher.fingerprint}
    signals = signals_stage(runner, recipe, [teacher.folder], inputs, data, max_examples=None,
                            name=f"signals{arm}-{target}", with_eval_split=False)
    weights = weights_stage(runner, recipe, f"weights{arm}-{target}", prototypes, signals, data)
    section = recipe.student
    student_model = resolve_teacher_ref(section.model, [teacher.folder])
    if student_model.domain_branch is None:
        student_model = student_model.model_copy(
            update={"domain_branch": DomainBranchSpec(domains=list(plan.domains))})
    intermediate_objective = ObjectiveConfig(classification=[
        LossTerm(loss="hidden_mse"), LossTerm(loss="attention_mse"),
        LossTerm(loss="transferable_mse", weight=section.gamma2)])
    prediction_objective = ObjectiveConfig(classification=[
        LossTerm(loss="soft_ce", params={"temperature": section.temperature})])
    students = []
    for seed in section.seeds:
        suffix = seed_suffix(recipe, seed)
        stage_a = train_stage(runner, f"intermediate{arm}-{target}{suffix}", kind="distill", model=student_model,
                              train=section.intermediate.model_copy(update={"seed": seed}), data=data,
                              max_examples=None, objective=intermediate_objective,
                              inputs={**inputs, "weights": stage_fingerprint(weights)},
                              online_teachers=[str(teacher.folder)],
                              example_weights=_weights(weights, EXPERTISE_WEIGHT))
        start = str(stage_a / BEST_MODEL)
        model_b = ModelConfig(name_or_path=start, init_from=start, max_seq_length=section.model.max_seq_length,
                              trust_remote_code=section.model.trust_remote_code)
        students.append(Model.of_stage(train_stage(
            runner, f"student{arm}-{target}{suffix}", kind="distill", model=model_b,
            train=section.prediction.model_copy(update={"seed": seed}), data=data, max_examples=None,
            objective=prediction_objective, signals=signals,
            inputs={"intermediate": stage_fingerprint(stage_a), "signals": stage_fingerprint(signals),
                    **({"weights": stage_fingerprint(weights)} if section.weighted else {})},
            example_weights=_weights(weights, EXPERTISE_WEIGHT) if section.weighted else None)))
    return students


def passes(train: TrainConfig, rows: int) -> float:
    """Passes over ``rows`` training rows (one task, one process) that ``train`` makes, min_steps included; the
    batches are counted by the loop's own planner."""
    planner = MultiTaskBatchPlanner({"target": rows}, train.batch_size, train.sampling, train.temperature_tau,
                                    train.seed)
    per_epoch = epoch_steps(train, len(planner))
    return planned_steps(train, per_epoch) / per_epoch if per_epoch else train.epochs


def baseline_train(recipe: MetaKDRecipe, plan: Plan, target: str, seed: int) -> TrainConfig:
    """A baseline student's settings: the same budget (passes over the target's rows) as A + B together."""
    section = recipe.student
    if section.baseline is not None:
        return section.baseline.model_copy(update={"seed": seed})
    rows = plan.train_rows[target]
    epochs = passes(section.intermediate, rows) + passes(section.prediction, rows)
    # The floor is spent in `epochs` already; min_steps is dropped so that where it does not bite (full data)
    # the settings, and so the finished stages' fingerprints, stay what they were.
    return section.prediction.model_copy(update={"seed": seed, "epochs": epochs, "min_steps": None})


def kd_students(runner: StageRunner, recipe: MetaKDRecipe, plan: Plan, arm: str, target: str,
                teacher: Model) -> list[Model]:
    """A KD baseline: the teacher's probabilities on the target's rows, then soft_ce students (`baseline_train`)."""
    data = target_data(recipe, target)
    signals = signals_stage(runner, recipe, [teacher.folder], {"teacher": teacher.fingerprint}, data,
                            max_examples=None, name=f"signals-{arm}-{target}", with_eval_split=False)
    objective = ObjectiveConfig(classification=[
        LossTerm(loss="soft_ce", params={"temperature": recipe.student.temperature})])
    model = resolve_teacher_ref(recipe.student.model, [teacher.folder])
    return [Model.of_stage(train_stage(
        runner, f"student-{arm}-{target}{seed_suffix(recipe, seed)}", kind="distill", model=model,
        train=baseline_train(recipe, plan, target, seed), data=data, max_examples=None,
        objective=objective, signals=signals, inputs={"signals": stage_fingerprint(signals)}))
        for seed in recipe.student.seeds]


def no_kd_students(runner: StageRunner, recipe: MetaKDRecipe, plan: Plan, target: str) -> list[Model]:
    """The no-KD baseline: the student fine-tuned on the target's gold labels (`baseline_train`)."""
    return [Model.of_stage(train_stage(
        runner, f"student-nokd-{target}{seed_suffix(recipe, seed)}", kind="teacher", model=recipe.student.model,
        train=baseline_train(recipe, plan, target, seed), data=target_data(recipe, target),
        max_examples=None))
        for seed in recipe.student.seeds]


@dataclass(frozen=True)
class Scored:
    """One model the report scores: its summary row and the domains it is scored on."""

    row: str
    domains: tuple[str, ...]
    model: Model

    @property
    def key(self) -> str:
        return f"{self.model.name}@{','.join(self.domains)}"


def domain_scores(model_folder: Path, data: DataConfig, batch_size: int) -> dict[str, dict[str, float]]:
    """A saved model's metrics per domain of ``data``'s one task, on ``data.eval_split`` (the report's scoring)."""
    device = accelerator_for("no").device
    model = load_model(model_folder).to(device)
    tokenizer = load_tokenizer(str(model_folder))
    prepared = prepare_data(data, tokenizer, model.max_length or 128, max_examples_per_task=None,
                            seed=data.subset_seed, need_train=False)
    result = evaluate(model, prepared.tasks, prepared.eval_sets, batch_size=batch_size,
                      pad_token_id=tokenizer.pad_token_id or 0, device=device)
    return result.domains[data.tasks[0].name]


def report_stage(runner: StageRunner, recipe: MetaKDRecipe, plan: Plan, scored: list[Scored]) -> dict:
    """Every model's per-domain metrics on the report split (the target's rows for a student); returns them."""
    payload = {"split": plan.report_split, "models": {s.key: str(s.model.folder) for s in scored}}

    def work(folder: Path, resume: bool) -> dict:
        out = {item.key: domain_scores(item.model.folder, _data(recipe, TaskRef(
            name=plan.task, domains_include=list(item.domains)), plan.report_split), recipe.signals.batch_size)
            for item in scored}
        write_json(folder / SCORES, out)
        return {}

    folder = runner.run("report", payload, {s.key: s.model.fingerprint for s in scored}, work)
    return json.loads((folder / SCORES).read_text())


def summary_rows(plan: Plan, scored: list[Scored], scores: dict, main_metric: str) -> dict[str, dict]:
    """One row per arm: each target's main metric (mean over the row's models), its spread and the seeds."""
    values: dict[str, dict[str, list[float]]] = {}
    params: dict[str, int] = {}
    for item in scored:
        for domain in item.domains:
            values.setdefault(item.row, {}).setdefault(domain, []).append(scores[item.key][domain][main_metric])
        params.setdefault(item.row, count_parameters(item.model.folder))
    rows = {}
    for row, per_domain in values.items():
        main = {d: statistics.fmean(per_domain[d]) for d in plan.targets if d in per_domain}
        spread = {d: statistics.stdev(per_domain[d]) if len(per_domain[d]) > 1 else 0.0 for d in main}
        rows[row] = {"metrics": {"main": main, "spread": spread, "runs": {d: per_domain[d] for d in main}},
                     "params": params[row], "seeds": max(len(v) for v in per_domain.values())}
    return rows


ROWS = {"meta": "meta-teacher", "single": "single-domain teachers", "mixed": "mixed-domain teacher",
        "without": "meta-teacher without target", "student": "Meta-KD student", "nokd": "no-KD student",
        "single_kd": "single-domain KD student", "mixed_kd": "mixed-domain KD student",
        "without_kd": "Meta-KD student (teacher without target)"}


@register_recipe("metakd", MetaKDRecipe)
def run_metakd(recipe: MetaKDRecipe, runner: StageRunner) -> dict:
    plan = check_inputs(recipe)
    scored: list[Scored] = []
    shared: dict[str, tuple[Path, Model]] = {}  # union suffix -> (prototypes stage, meta-teacher)
    for target in plan.targets:
        suffix = union_suffix(recipe, target)
        if suffix not in shared:
            view = union_data(recipe, target)
            prototypes = prototypes_stage(runner, recipe, f"prototypes{suffix}", view)
            teacher = Model.given(Path(recipe.teacher.model_dirs[0])) if recipe.teacher.model_dirs else \
                Model.of_stage(meta_teacher_stage(runner, recipe, plan, f"meta-teacher{suffix}", view, prototypes))
            shared[suffix] = (prototypes, teacher)
            scored.append(Scored(ROWS["meta"], plan.targets if not suffix else (target,), teacher))
        prototypes, teacher = shared[suffix]
        scored += [Scored(ROWS["student"], (target,), student)
                   for student in meta_distill_stages(runner, recipe, plan, "", target, teacher, prototypes)]
    mixed: dict[str, Model] = {}
    for target in plan.targets:
        suffix = union_suffix(recipe, target)
        if "no_kd" in recipe.baselines:
            scored += [Scored(ROWS["nokd"], (target,), s) for s in no_kd_students(runner, recipe, plan, target)]
        if "single_domain" in recipe.baselines:
            teacher = Model.of_stage(plain_teacher_stage(runner, recipe, f"teacher-single-{target}",
                                                         target_data(recipe, target)))
            scored.append(Scored(ROWS["single"], (target,), teacher))
            scored += [Scored(ROWS["single_kd"], (target,), s)
                       for s in kd_students(runner, recipe, plan, "single", target, teacher)]
        if "mixed" in recipe.baselines:
            if suffix not in mixed:
                mixed[suffix] = Model.of_stage(plain_teacher_stage(runner, recipe, f"teacher-mixed{suffix}",
                                                                   union_data(recipe, target)))
                scored.append(Scored(ROWS["mixed"], plan.targets if not suffix else (target,), mixed[suffix]))
            scored += [Scored(ROWS["mixed_kd"], (target,), s)
                       for s in kd_students(runner, recipe, plan, "mixed", target, mixed[suffix])]
        if "meta_without_target" in recipe.baselines:
            view = union_data(recipe, without=target)
            prototypes = prototypes_stage(runner, recipe, f"prototypes-without-{target}", view)
            teacher = Model.of_stage(meta_teacher_stage(runner, recipe, plan, f"meta-teacher-without-{target}",
                                                        view, prototypes))
            scored.append(Scored(ROWS["without"], (target,), teacher))
            # lambda's t_i of the target's rows come from the main prototypes, as for the Meta-KD student.
            scored += [Scored(ROWS["without_kd"], (target,), s) for s in meta_distill_stages(
                runner, recipe, plan, "-without", target, teacher, shared[suffix][0])]
    scores = report_stage(runner, recipe, plan, scored)
    rows = summary_rows(plan, scored, scores, plan.main_metric)
    order = [name for name in ROWS.values() if name in rows]
    notes = [f"scores: {plan.main_metric} on the {plan.report_split} split of each target domain (columns); "
             f"students on their own domain, mean over {len(recipe.student.seeds)} seed(s) (summary.json: spread, "
             "runs)", f"prototype scores: {recipe.prototypes.mode} centroids from {prototype_encoder(recipe)}"]
    if recipe.data.fraction < 1:
        notes.append(f"data-scarce: each target keeps {recipe.data.fraction} of its training rows")
    return write_summary(runner.root, {name: rows[name] for name in order}, order[0], list(plan.targets), notes,
                         split=plan.report_split)
