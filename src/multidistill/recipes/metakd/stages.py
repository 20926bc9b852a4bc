"""Meta-KD's stages: prototype scores (0), the meta-teacher (1), signals and expertise weights (2), stage A and
stage B per target and seed (3), and the baselines' teachers and students with the same budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from multidistill.config import DataConfig, ExampleWeightsConfig, LossTerm, ModelConfig, ObjectiveConfig, TrainConfig
from multidistill.data.augment import variant_source
from multidistill.data.collate import collate, pad_id, to_device
from multidistill.data.prepare import open_example_store
from multidistill.data.sampler import MultiTaskBatchPlanner
from multidistill.errors import DataError
from multidistill.models.backbone import load_tokenizer
from multidistill.models.build import load_encoder
from multidistill.models.domain_branch import DomainBranchSpec
from multidistill.models.multitask import MODEL_CONFIG_FILE
from multidistill.recipes.common import data_fingerprints, resolve_teacher_ref, signals_stage, train_stage
from multidistill.recipes.metakd.config import MetaKDRecipe
from multidistill.recipes.metakd.plan import Plan, prototype_encoder, prototype_length, seed_suffix, target_data
from multidistill.recipes.metakd.transfer import Transfer
from multidistill.recipes.stages import StageRunner, settings_payload, stage_fingerprint
from multidistill.teachers.columns import open_column_store, write_column_store
from multidistill.teachers.fingerprint import teacher_fingerprint
from multidistill.teachers.prototypes import encoder_embeddings, expertise_weights, prototype_scores
from multidistill.teachers.store import open_signal_store
from multidistill.training.device import accelerator_for
from multidistill.training.loop import BEST_MODEL
from multidistill.training.schedule import epoch_steps, planned_steps

PROTOTYPE_SCORE = "prototype_score"  # t_i
EXPERTISE_WEIGHT = "expertise_weight"  # lambda_i
COLUMNS = "columns"  # a prototypes / weights stage's column store, inside its stage folder


def _encoder_fingerprint(encoder: str) -> str:
    folder = Path(encoder)
    return teacher_fingerprint(folder) if (folder / MODEL_CONFIG_FILE).is_file() else encoder


def prototypes_stage(runner: StageRunner, recipe: MetaKDRecipe, name: str, data: DataConfig) -> Path:
    """Stage 0: t_i of every training row of ``data`` (all its domains), a column store in ``<stage>/columns``."""
    encoder, length = prototype_encoder(recipe), prototype_length(recipe)
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
        pad = pad_id(tokenizer)
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

    return runner.run(name, payload, {"encoder": _encoder_fingerprint(encoder)}, work,
                      data=data_fingerprints(data, ("train",), None, run_dir=runner.root))


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
    return train_stage(runner, name, kind="teacher", model=without_branch(recipe.teacher.model), train=train,
                       data=data, max_examples=None)


def without_branch(model: ModelConfig) -> ModelConfig:
    """A baseline's model: the meta-teacher's or student's settings without a domain branch, which no baseline
    term trains (a run config refuses an untrained branch). Unchanged (and so its fingerprint) when it has none."""
    return model if model.domain_branch is None else model.model_copy(update={"domain_branch": None})


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
                      {"prototypes": stage_fingerprint(prototypes), "signals": stage_fingerprint(signals)}, work,
                      data=data_fingerprints(data, ("train",), None, run_dir=runner.root))


def transfer_weights_stage(runner: StageRunner, recipe: MetaKDRecipe, name: str, weights: Path,
                           transfer: Transfer) -> Path:
    """lambda_i (and t_i) of every row of an augmented transfer set: a variant takes its source row's, looked
    up by id in ``weights`` (`weights_stage`); a column store in ``<stage>/columns``."""

    def work(folder: Path, resume: bool) -> dict:
        task_name = transfer.data.task_names[0]
        store = open_example_store(transfer.data, max_examples_per_task=None, seed=recipe.subset_seed)
        ids = [str(i) for i in store.examples(task_name, "train").with_format("arrow")["id"].to_pylist()]
        source = open_column_store(weights / COLUMNS)
        where = {example: i for i, example in enumerate(source.table["id"])}
        try:
            index = np.asarray([where[variant_source(example, where)] for example in ids], dtype=np.int64)
        except ValueError as e:
            raise DataError(f"{source.root}: the transfer set's {e}; remake the transfer and weights stages") from e
        fingerprint = write_column_store(
            folder / COLUMNS, task=task_name, domains=source.domains, ids=ids,
            domain_ids=source.table["domain_id"][index],
            columns={column: source.column(column)[index] for column in (EXPERTISE_WEIGHT, PROTOTYPE_SCORE)},
            data_fingerprint=store.data_fingerprint(task_name, "train"), made_from={"weights": source.fingerprint})
        return {"store_fingerprint": fingerprint, "rows": len(ids)}

    # derived: it only copies the weights of the rows, so one made from other weights is made again.
    return runner.run(name, {"data": settings_payload(transfer.data)},
                      {"weights": stage_fingerprint(weights), "transfer": transfer.fingerprint}, work, derived=True)


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


def transfer_signals(runner: StageRunner, recipe: MetaKDRecipe, arm: str, target: str, teacher: Model,
                     transfer: Transfer) -> Path:
    """The teacher's probabilities on the target's augmented transfer set (stage signals<arm>-augmented-<target>)."""
    return signals_stage(runner, recipe, [teacher.folder], {"teacher": teacher.fingerprint,
                                                            "transfer": transfer.fingerprint},
                         transfer.data, max_examples=None, name=f"signals{arm}-augmented-{target}",
                         with_eval_split=False)


def meta_distill_stages(runner: StageRunner, recipe: MetaKDRecipe, plan: Plan, arm: str, target: str,
                        teacher: Model, prototypes: Path, held_out: Path | None = None,
                        transfer: Transfer | None = None) -> list[Model]:
    """Stages 2-3 for one target and one meta-teacher: signals, lambda weights, then per seed stage A
    (intermediate) and stage B (the student). ``arm`` goes into the stage names. ``held_out``: a signal store
    of cross-fitted targets (`cross_fit.cross_fitted_signals`) that stage B distils instead of the teacher's own
    (its students are named student<arm>-crossfit-<target>). ``transfer``: stage B distils on that augmented
    transfer set instead of the target's rows (students named student<arm>[-crossfit]-augmented-<target>)."""
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
    data_a, weights_a, name_a = data, weights, f"intermediate{arm}-{target}"
    if transfer and section.augment_intermediate:
        weights_a = transfer_weights_stage(runner, recipe, f"weights{arm}-augmented-{target}", weights, transfer)
        data_a, name_a = transfer.data, f"intermediate{arm}-augmented-{target}"
    # What stage B distils, and on which rows.
    targets = held_out or (transfer_signals(runner, recipe, arm, target, teacher, transfer) if transfer else signals)
    data_b = transfer.data if transfer else data
    name_b = f"student{arm}{'-crossfit' if held_out else ''}{transfer.tag if transfer else ''}-{target}"
    students = []
    for seed in section.seeds:
        suffix = seed_suffix(recipe, seed)
        stage_a = train_stage(runner, f"{name_a}{suffix}", kind="distill", model=student_model,
                              train=section.intermediate.model_copy(update={"seed": seed}), data=data_a,
                              max_examples=None, objective=intermediate_objective,
                              inputs={**inputs, "weights": stage_fingerprint(weights_a)},
                              online_teachers=[str(teacher.folder)],
                              example_weights=_weights(weights_a, EXPERTISE_WEIGHT))
        start = str(stage_a / BEST_MODEL)
        model_b = ModelConfig(name_or_path=start, init_from=start, max_seq_length=section.model.max_seq_length,
                              trust_remote_code=section.model.trust_remote_code)
        students.append(Model.of_stage(train_stage(
            runner, f"{name_b}{suffix}", kind="distill",
            model=model_b, train=section.prediction.model_copy(update={"seed": seed}), data=data_b,
            max_examples=None, objective=prediction_objective, signals=targets,
            inputs={"intermediate": stage_fingerprint(stage_a), "signals": stage_fingerprint(targets),
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


def baseline_train(recipe: MetaKDRecipe, plan: Plan, target: str, seed: int, transfer_rows: int | None = None,
                   own_rows: int | None = None) -> TrainConfig:
    """A baseline student's settings: the same budget as A + B together, in passes over the target's rows, or
    with an augmented transfer set (B, and A with student.augment_intermediate, over its ``transfer_rows``) in
    examples, spread over the baseline's ``own_rows`` (the transfer set for a KD baseline, the target's rows for
    no-KD)."""
    section = recipe.student
    if section.baseline is not None:
        return section.baseline.model_copy(update={"seed": seed})
    rows = plan.train_rows[target]
    if transfer_rows is None:
        epochs = passes(section.intermediate, rows) + passes(section.prediction, rows)
    else:
        rows_a = transfer_rows if section.augment_intermediate else rows
        examples = passes(section.intermediate, rows_a) * rows_a
        examples += passes(section.prediction, transfer_rows) * transfer_rows
        epochs = examples / (own_rows or rows)
    # The floor is spent in `epochs` already; min_steps is dropped so that where it does not bite (full data)
    # the settings, and so the finished stages' fingerprints, stay what they were.
    return section.prediction.model_copy(update={"seed": seed, "epochs": epochs, "min_steps": None})


def kd_students(runner: StageRunner, recipe: MetaKDRecipe, plan: Plan, arm: str, target: str,
                teacher: Model, transfer: Transfer | None = None) -> list[Model]:
    """A KD baseline: the teacher's probabilities on the target's rows (or on its augmented ``transfer`` set,
    stages named -augmented-), then soft_ce students (`baseline_train`)."""
    if transfer is None:
        data = target_data(recipe, target)
        signals = signals_stage(runner, recipe, [teacher.folder], {"teacher": teacher.fingerprint}, data,
                                max_examples=None, name=f"signals-{arm}-{target}", with_eval_split=False)
        name, sizes = f"student-{arm}-{target}", {}
    else:
        data, signals = transfer.data, transfer_signals(runner, recipe, f"-{arm}", target, teacher, transfer)
        name, sizes = f"student-{arm}{transfer.tag}-{target}", {"transfer_rows": transfer.rows,
                                                                 "own_rows": transfer.rows}
    objective = ObjectiveConfig(classification=[
        LossTerm(loss="soft_ce", params={"temperature": recipe.student.temperature})])
    model = without_branch(resolve_teacher_ref(recipe.student.model, [teacher.folder]))
    return [Model.of_stage(train_stage(
        runner, f"{name}{seed_suffix(recipe, seed)}", kind="distill", model=model,
        train=baseline_train(recipe, plan, target, seed, **sizes), data=data, max_examples=None,
        objective=objective, signals=signals, inputs={"signals": stage_fingerprint(signals)}))
        for seed in recipe.student.seeds]


def no_kd_students(runner: StageRunner, recipe: MetaKDRecipe, plan: Plan, target: str,
                   transfer: Transfer | None = None) -> list[Model]:
    """The no-KD baseline: the student fine-tuned on the target's gold labels (`baseline_train`; with an
    augmented ``transfer`` set, the same examples as the Meta-KD student, spread over the labelled rows)."""
    sizes = {"transfer_rows": transfer.rows} if transfer else {}
    name = f"student-nokd{transfer.tag if transfer else ''}-{target}"  # the tag names the budget, not the rows
    return [Model.of_stage(train_stage(
        runner, f"{name}{seed_suffix(recipe, seed)}", kind="teacher", model=without_branch(recipe.student.model),
        train=baseline_train(recipe, plan, target, seed, **sizes), data=target_data(recipe, target),
        max_examples=None))
        for seed in recipe.student.seeds]
