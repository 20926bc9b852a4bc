"""Which teachers label which task: an ensemble has every teacher on every task; teachers fine-tuned one task
each (e.g. brought in with `import-classifier`) label their own. The signal store, online teachers and the
recipes' given teachers all read it from here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError


def head_mismatch(head: Task, task: Task) -> str | None:
    """Why a teacher's head (its saved task spec) cannot give ``task``'s targets (another type, or other labels
    or another order of them); None when it can."""
    if head.type != task.type:
        return f"is a {head.type} head, and the data's task is {task.type}"
    if task.has_labels and head.labels and task.labels and list(head.labels) != list(task.labels):
        return (f"has labels {list(head.labels)}, the data's are {list(task.labels)}: its outputs would be read as "
                "other classes")
    return None


def head_names(heads: Mapping[str, Task]) -> list[str]:
    """The tasks a teacher's specs give a head (text tasks have none)."""
    return [name for name, spec in heads.items() if spec.has_head]


def heads_of(names: Sequence[str], heads: Sequence[Mapping[str, Task]]) -> str:
    """Each teacher and the tasks it has heads for, for messages."""
    return "; ".join(f"{name} has {head_names(h)}" for name, h in zip(names, heads, strict=True))


def task_teachers(names: Sequence[str], heads: Sequence[Mapping[str, Task]], tasks: Mapping[str, Task | None], *,
                  key: str | None = None, every_task: bool = False, why: str | None = None) -> dict[str, list[int]]:
    """For each of ``tasks``, the teachers (indices into ``names`` / ``heads``: each teacher's task specs by name)
    with a head for it, in order. Refused, naming ``key`` (a config key; ModelError without one): with
    ``every_task`` a teacher without a head for each task (a recipe whose teachers run on every task); a task no
    teacher has a head for; a teacher with a head for none of them (a wrong folder); a head that `head_mismatch`es.
    ``why`` says why a head is needed (in the refusal of a task without one); a task given as None is only checked
    for coverage."""
    error = ConfigError if key else ModelError
    where = f"key '{key}': " if key else ""
    covering = {name: [i for i, h in enumerate(heads) if name in h and h[name].has_head] for name in tasks}
    mine = [[task for task, found in covering.items() if i in found] for i in range(len(names))]
    if every_task:
        for name, h, have in zip(names, heads, mine, strict=True):
            missing = [task for task in tasks if task not in have]
            if missing:
                raise error(f"{where}{name} has no head for task(s) {missing}; this recipe runs each teacher on every "
                            f"task, so each needs a head for all of them (it has {head_names(h)}; a general student, "
                            "trained on a corpus, has none)")
    orphans = [name for name, found in covering.items() if not found]
    if orphans:
        raise error(f"{where}no head for task(s) {orphans} in any teacher ({heads_of(names, heads)})"
                    + (f", and {why}" if why else "; give a teacher trained on each task (one teacher may cover "
                       "several)"))
    for name, h, have in zip(names, heads, mine, strict=True):
        if not have:
            raise error(f"{where}teacher {name} has a head for none of the tasks {list(tasks)} (it has "
                        f"{head_names(h)}): is it the right folder?")
    for task, found in covering.items():
        for i in found:
            problem = head_mismatch(heads[i][task], tasks[task]) if tasks[task] is not None else None
            if problem:
                raise error(f"{where}{names[i]}'s head for task '{task}' {problem}")
    return covering
