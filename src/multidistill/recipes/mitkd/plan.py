"""What a MITKD run reads: the views of its data (the corpus, the fine-tune tasks), each arm's online teachers, and
the checks that run before the first stage writes (`check_inputs`)."""

from __future__ import annotations

import re
from collections.abc import Callable

from multidistill.config import DataConfig, LossTerm, ObjectiveConfig, TrainConfig
from multidistill.data.prepare import open_example_store
from multidistill.errors import ConfigError, UnknownTaskError
from multidistill.losses.registry import LOSSES
from multidistill.recipes.common import TEACHER_REF, given_teachers, recipe_data
from multidistill.recipes.mitkd.config import MITKDRecipe
from multidistill.recipes.preflight import check_model_path, check_teacher_positions, teacher_sources, tokenizer_of
from multidistill.recipes.stages import print_note
from multidistill.training.loop import check_one_step
from multidistill.training.objective import (
    TEACHER_LOGIT_INPUTS,
    objective_for_tasks,
    reads_inputs,
    refuse_head_losses,
    term_reads_domain_branch,
)
from multidistill.utils.hashing import hash_tokenizer


def corpus_data(recipe: MITKDRecipe) -> DataConfig:
    """The recipe's data with the corpus as its only task (for the general distillation)."""
    return recipe_data(recipe).model_copy(update={"tasks": [recipe.corpus]})


def finetune_data(recipe: MITKDRecipe) -> DataConfig:
    return recipe_data(recipe).model_copy(update={"tasks": recipe.finetune.tasks or recipe.data.tasks})


def check_inputs(recipe: MITKDRecipe) -> None:
    """Everything the later stages read, checked before the first stage writes: the corpus (its files, text
    task, feature-only objective), given teachers' heads, the fine-tune tasks (labelled, and an objective without
    feature or domain-branch terms), data for one optimizer step per stage, and the online teachers' tokenizers
    and positions against the general student's."""
    if recipe.student.train.select == "best_metric":
        raise ConfigError("key 'student.train.select': the general distillation has no labelled dev data, so "
                          "best_metric has nothing to compare; use lowest_loss (default) or last")
    corpus = corpus_data(recipe)
    try:
        store = open_example_store(corpus, max_examples_per_task=None, seed=recipe.subset_seed)
    except ConfigError as exc:  # the corpus is data.tasks[0] of its own view; the user wrote it as `corpus`
        raise ConfigError(str(exc).replace("key 'data.tasks.0", "key 'corpus")) from exc
    task = store.tasks[recipe.corpus.name]
    if task.has_head:
        raise ConfigError(f"key 'corpus': task '{task.name}' is a {task.type} task; the general distillation needs "
                          "unlabelled text (a task of type: text)")
    store.validate(["train"])
    refuse_head_losses({task.name: task}, general_objective(recipe), key="student.objective")
    check_model_path(recipe.baseline.encoder, "baseline.encoder")
    if recipe.teacher.model_dirs:
        given_teachers(recipe, every_task=True)  # models with a head for every task of data.tasks
    _check_one_step(recipe.student.train, {task.name: len(store.examples(task.name, "train"))}, "student.train")
    _check_finetune_tasks(recipe)
    _check_tokenizers(recipe)
    model = recipe.student.model
    if model.architecture == "hf":  # the general distillation feeds its online teachers the student's tokens
        check_teacher_positions(arm_teachers(recipe), model.max_seq_length, "student.model.max_seq_length",
                                model.trust_remote_code)


def _check_finetune_tasks(recipe: MITKDRecipe) -> None:
    """The fine-tune tasks: labelled, their soft targets (if read) from a teacher that has them, and data enough
    for one optimizer step each, said with the recipe's keys."""
    tuned = finetune_data(recipe)
    # A per-task entry of no fine-tune task is refused here (each fine-tune keeps its own task's entry only).
    objective_for_tasks(recipe.finetune.objective, tuned.task_names, tuned.task_names, key="finetune.objective")
    try:
        store = open_example_store(tuned, max_examples_per_task=recipe.max_examples_per_task, seed=recipe.subset_seed)
    except ConfigError as exc:  # finetune.tasks is data.tasks of the fine-tunes' own view
        if recipe.finetune.tasks is None:
            raise
        raise ConfigError(str(exc).replace("key 'data.tasks", "key 'finetune.tasks")) from exc
    except UnknownTaskError as exc:
        if recipe.finetune.tasks is None:
            raise
        raise ConfigError(f"key 'finetune.tasks': {exc}") from exc
    key = "finetune.tasks" if recipe.finetune.tasks is not None else "data.tasks"
    for name, task in store.tasks.items():
        if not task.has_head:
            raise ConfigError(f"key '{key}': task '{name}' is a {task.type} task (unlabelled, as the corpus is); a "
                              "fine-tune needs labels: list labelled tasks")
    _refuse_finetune_features(recipe, store.tasks)
    _refuse_finetune_branch_terms(recipe, store.tasks)
    unseen = [name for name, task in store.tasks.items() if name not in recipe.data.task_names
              and reads_inputs(recipe.finetune.objective, {name: task}, TEACHER_LOGIT_INPUTS)]
    if unseen:
        raise ConfigError(f"key 'finetune.objective': it reads the teachers' soft targets on task(s) {unseen}, which "
                          "no teacher was trained on (they are not in data.tasks); give them terms of their own "
                          "without teacher logits (finetune.objective.tasks.<task>: [{loss: hard}]), or add them "
                          "to data.tasks")
    store.validate(["train", tuned.eval_split])
    for name in store.tasks:
        rows = {name: len(store.examples(name, "train"))}
        for seed in recipe.finetune.seeds:
            _check_one_step(recipe.finetune.train.model_copy(update={"seed": seed}), rows, "finetune.train",
                            f" (task '{name}': {rows[name]} training rows)")


def _finetune_terms(recipe: MITKDRecipe, tasks: dict, matches: Callable[[LossTerm], bool]
                    ) -> tuple[list[str], list[str]]:
    """The losses of finetune.objective's terms that ``matches`` picks, and the tasks that get them (both sorted)."""
    found = {(task.name, term.loss) for task in tasks.values() for term in recipe.finetune.objective.terms_for(task)
             if matches(term)}
    return sorted({loss for _, loss in found}), sorted({name for name, _ in found})


def _refuse_finetune_features(recipe: MITKDRecipe, tasks: dict) -> None:
    """Feature terms (hidden_mse, relation_kl, ...) compare the student's features with a teacher's, but a fine-tune
    runs no teacher (it reads at most the teachers' soft targets, a store of their logits): such a term was refused
    when the first fine-tune built its objective, naming the run key 'online_teachers', after the teachers and the
    general distillation had trained. Refused here, by the recipe's key."""
    losses, names = _finetune_terms(recipe, tasks,
                                    lambda term: "teacher_features" in getattr(LOSSES.get(term.loss), "inputs", ()))
    if losses:
        raise ConfigError(f"key 'finetune.objective': {', '.join(losses)} "
                          f"{'compares' if len(losses) == 1 else 'compare'} the student's features with a teacher's "
                          f"(task(s) {names}), but a fine-tune runs no teacher: it reads at most the teachers' soft "
                          "targets (soft_ce, score_mse, ...), a store of their logits, so there are no teacher "
                          "features to compare. Features are distilled in the general distillation "
                          "(student.objective); drop these terms from finetune.objective")


def _refuse_finetune_branch_terms(recipe: MITKDRecipe, tasks: dict) -> None:
    """Terms on a domain branch (domain_adversarial; transferable_mse is refused above, as a feature term) read the
    student's own branch, but a fine-tune's model is the general student's encoder with new task heads, which has
    none: such a term failed on the first fine-tune's first batch, after the teachers and the general distillation
    had trained, and a dry run passed. Refused here, by the recipe's key."""
    losses, names = _finetune_terms(recipe, tasks, term_reads_domain_branch)
    if losses:
        raise ConfigError(f"key 'finetune.objective': {', '.join(losses)} {'reads' if len(losses) == 1 else 'read'} "
                          f"the model's domain branch (task(s) {names}), but a fine-tune's model is the general "
                          "student's encoder with new task heads, which has no domain branch (Meta-KD's, recipe "
                          "metakd); drop these terms from finetune.objective")


def note_unread_settings(recipe: MITKDRecipe) -> None:
    """Say which settings the user gave that this run does not read as they may expect (never silently): the
    top-level cap, which does not reach the corpus, and the plain arm's encoder in the MITKD arm."""
    if recipe.max_examples_per_task is not None and recipe.corpus.max_examples is None:
        print_note(f"max_examples_per_task ({recipe.max_examples_per_task}) caps the labelled tasks' training "
                   "rows (the teachers', their soft targets' and the fine-tunes'), not the corpus: its rows are "
                   "capped by corpus.max_examples, which is unset, so the general distillation reads all of corpus "
                   f"'{recipe.corpus.name}'")
    if recipe.baseline.encoder is not None and not recipe.baseline.plain_teacher:
        print_note("baseline.encoder not used: it is read by the plain arm only (baseline.plain_teacher: true); "
                   "this run is the MITKD arm, whose general distillation reads the multi-task teachers")


def _check_one_step(train: TrainConfig, rows: dict[str, int], key: str, where: str = "") -> None:
    """`check_one_step` for one stage, its message naming the recipe's ``key`` for the stage's train section."""
    try:
        check_one_step(train, rows, 1)  # recipes run in one process (`refuse_several_processes`)
    except ConfigError as exc:
        raise ConfigError(re.sub(r"\btrain\.", f"{key}.", str(exc)) + where) from exc


def arm_teachers(recipe: MITKDRecipe) -> list[tuple[str, str]]:
    """This run's online teachers in its general distillation, each with the key naming it: the teachers (the
    encoder they are trained from, or each given folder), or the plain encoder."""
    if not recipe.baseline.plain_teacher:
        return teacher_sources(recipe)
    return [(plain_encoder(recipe), "baseline.encoder" if recipe.baseline.encoder else "teacher.model.name_or_path")]


def _tokenizer_hash(source: str, trust_remote_code: bool) -> str | None:
    """What the tokenizer turns text into (`same_tokenization`'s fingerprint); None where it cannot be loaded here
    (a hub name offline: its stage says so)."""
    tokenizer = tokenizer_of(source, trust_remote_code)
    return None if tokenizer is None else hash_tokenizer(tokenizer, with_class=False)


def _check_tokenizers(recipe: MITKDRecipe) -> None:
    """The general distillation runs its teachers on the student's tokens and its token-level losses compare
    position by position, so every teacher must split text as the student does: refused by the teacher's key,
    before the teachers train."""
    model, teacher = recipe.student.model, recipe.teacher.model
    source = model.tokenizer or model.name_or_path
    if source == TEACHER_REF or model.architecture != "hf":
        return
    if recipe.baseline.plain_teacher or teacher is None:
        teachers = arm_teachers(recipe)
    else:  # a teacher trained here keeps the tokenizer it was trained with
        teachers = [(teacher.tokenizer, "teacher.model.tokenizer") if teacher.tokenizer
                    else (teacher.name_or_path, "teacher.model.name_or_path")]
    student = _tokenizer_hash(source, model.trust_remote_code)
    for name, key in teachers:
        found = _tokenizer_hash(name, model.trust_remote_code)
        if student is not None and found is not None and found != student:
            raise ConfigError(f"key '{key}': {name} uses another tokenizer than the general student ({source}); the "
                              "general distillation runs it on the student's tokens, and its token-level losses "
                              "compare position by position, which only line up when both split text the same way: "
                              "give a teacher and a student with the same tokenizer")


def general_objective(recipe: MITKDRecipe) -> ObjectiveConfig:
    return ObjectiveConfig(tasks={recipe.corpus.name: list(recipe.student.objective)})


def plain_encoder(recipe: MITKDRecipe) -> str:
    return recipe.baseline.encoder or recipe.teacher.model.name_or_path
