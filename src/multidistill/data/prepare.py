"""Resolve a data config into tasks and tokenised train/eval datasets, validating everything first."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from pydantic import ValidationError

from multidistill.config import DataConfig
from multidistill.data.domains import DomainSelection
from multidistill.data.roots import resolve_data_root
from multidistill.data.store import ExampleStore
from multidistill.data.tasks import HeldOutFromDev, Task, get_task
from multidistill.errors import ConfigError, UnknownTaskError


def resolve_tasks(data: DataConfig) -> list[Task]:
    """The Task specs named by ``data.tasks`` (user-declared specs first, then built-ins)."""
    declared = {spec.name: spec for spec in data.task_specs}
    seen: set[str] = set()
    tasks = []
    for i, ref in enumerate(data.tasks):
        if ref.name in seen:
            raise ConfigError(f"key 'data.tasks': task '{ref.name}' is listed twice")
        seen.add(ref.name)
        task = get_task(ref.name, declared)
        if ref.keep_pairs:
            if task.type != "text" or not task.from_tasks:
                raise ConfigError(f"key 'data.tasks.{i}.keep_pairs': task '{ref.name}' is not a text task built "
                                  "from_tasks (a corpus of other tasks' texts); remove keep_pairs")
            task = task.model_copy(update={"keep_pairs": True})  # its data fingerprint says so (fingerprint_spec)
        if task.keep_pairs and not any(source.pair for source in task.sources):  # given here or in the spec
            where = f"key 'data.tasks.{i}.keep_pairs'" if ref.keep_pairs else f"task '{ref.name}' (its spec)"
            raise ConfigError(f"{where}: none of the from_tasks of task '{ref.name}' "
                              f"({', '.join(task.from_tasks)}) is a pair task, so there is no pair to keep; remove "
                              "keep_pairs")
        if data.test_from_dev is not None and ref.name in data.test_from_dev.tasks:
            task = _carved(task, data)
        tasks.append(task)
    if data.test_from_dev is not None:
        for name in data.test_from_dev.tasks:
            if name not in seen:  # a name that is no task (a typo) is refused; another stage's task is fine
                try:
                    get_task(name, declared)
                except UnknownTaskError as exc:
                    raise ConfigError(f"key 'data.test_from_dev.tasks': {exc}") from exc
    return tasks


def _carved(task: Task, data: DataConfig) -> Task:
    """``task`` with `Task.test_from_dev` from data.test_from_dev, checked as a spec would be."""
    carve = HeldOutFromDev(**data.test_from_dev.model_dump(exclude={"tasks"}))
    if task.test_from_dev is not None and task.test_from_dev != carve:
        raise ConfigError(f"key 'data.test_from_dev': task '{task.name}' already carves its test split "
                          f"({task.test_from_dev.model_dump()}, from its spec); set test_from_dev in one place")
    try:
        return Task.model_validate({**task.model_dump(), "test_from_dev": carve.model_dump()})
    except ValidationError as exc:
        raise ConfigError(f"key 'data.test_from_dev.tasks': {exc.errors()[0]['msg'].removeprefix('Value error, ')}"
                          ) from exc


def domain_selections(data: DataConfig) -> dict[str, DomainSelection]:
    """Each task's domain options (`data.tasks[i]`), keyed by task name; errors name `data.tasks.<i>`."""
    return {ref.name: DomainSelection(key=f"data.tasks.{i}", include=tuple(ref.domains_include or ()),
                                      exclude=tuple(ref.domains_exclude or ()),
                                      fraction=dict(ref.domain_fraction or {}),
                                      holdout=None if ref.domain_holdout is None else (
                                          ref.domain_holdout.domain, ref.domain_holdout.folds,
                                          ref.domain_holdout.fold))
            for i, ref in enumerate(data.tasks)}


def open_example_store(data: DataConfig, *, max_examples_per_task: int | None, seed: int) -> ExampleStore:
    """An ExampleStore over the config's tasks, with per-task training caps and domain selections (the seed
    picks capped subsets and domain fractions)."""
    caps = {ref.name: ref.max_examples or max_examples_per_task for ref in data.tasks}
    return ExampleStore(resolve_tasks(data), resolve_data_root(data.data_root), data.cache_dir, caps, seed=seed,
                        selections=domain_selections(data))


def check_min_length(tokenizer, max_length: int, tasks: list[Task]) -> None:
    """Refuse a max length that leaves no room for text: the tokenizer cannot truncate below its special
    tokens ([CLS] ... [SEP]), so `max_seq_length: 1` would not truncate at all and fail later, mid-run."""
    pair = any(task.pair for task in tasks)
    special = tokenizer.num_special_tokens_to_add(pair=pair)
    need = special + (2 if pair else 1)  # one token of each text
    if max_length < need:
        kind = "a pair of texts" if pair else "a text"
        raise ConfigError(f"key 'model.max_seq_length' (--max-seq-length): {max_length} is too short; the tokenizer "
                          f"adds {special} special tokens to {kind}, so it must be at least {need}")


@dataclass
class PreparedData:
    tasks: dict[str, Task]
    store: ExampleStore
    train_sets: dict
    eval_sets: dict


def prepare_data(data: DataConfig, tokenizer, max_length: int, *, max_examples_per_task: int | None,
                 seed: int, need_train: bool = True, labelled_train: Collection[str] = ()) -> PreparedData:
    """Read (and validate) every split first, then build or reuse the cached tokenised views.

    The eval split of every task with a head must hold labelled rows (it is scored), and so must the training
    split of each task in ``labelled_train`` (those whose loss terms read gold labels,
    `training.objective.tasks_reading_labels`): otherwise a `DataError`, before any view is built.
    """
    store = open_example_store(data, max_examples_per_task=max_examples_per_task, seed=seed)
    check_min_length(tokenizer, max_length, list(store.tasks.values()))
    store.validate((["train"] if need_train else []) + [data.eval_split])
    for name, task in store.tasks.items():
        if task.has_head:
            store.require_labels(name, data.eval_split, f"split '{data.eval_split}' is scored against its labels "
                                 "(data.eval_split)")
        if need_train and name in labelled_train:
            store.require_labels(name, "train", "the task's loss terms read gold labels (e.g. hard)")
    tasks = list(store.tasks.values())  # after reading: a domain column's names are known now (`Task.domains`)
    # Training reads rows at random: positional reads keep memory flat however large the views are.
    train_sets = ({t.name: store.tokenized_rows(t.name, "train", tokenizer, max_length) for t in tasks}
                  if need_train else {})
    # Text tasks (unlabelled corpora) are not evaluated: nothing to score.
    eval_sets = {t.name: store.tokenized(t.name, data.eval_split, tokenizer, max_length) for t in tasks
                 if t.has_head}
    return PreparedData({t.name: t for t in tasks}, store, train_sets, eval_sets)
