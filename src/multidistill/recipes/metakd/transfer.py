"""Stage B's augmented transfer set (`student.augment`): the target's training rows plus Tang et al. variants of
them, one set per target shared by every arm, each arm's teacher labelling it.

With 10% of a domain, stage B distils 160 rows that the meta-teacher trained on: the student sees few inputs and
targets close to the gold labels. Variants are inputs the teacher did not train on, so its soft targets there say
more (MKD's lesson, docs/recipes/mkd.md). Stage A and the lambda weights keep the target's labelled rows unless
student.augment_intermediate (stage A on the set, each variant weighted by its source row's lambda).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

from multidistill.config import DataConfig, TaskRef
from multidistill.data.tasks import Task
from multidistill.recipes.metakd.config import MetaKDRecipe
from multidistill.recipes.metakd.plan import target_data
from multidistill.recipes.mkd import transfer_stage, transfer_task
from multidistill.recipes.stages import STAGE_MANIFEST, StageRunner
from multidistill.utils.paths import inside


@dataclass(frozen=True)
class Transfer:
    """A target's transfer set: the data config that reads it, its stage's fingerprint, its rows, and the tag of
    the students' stage names (`-augmented`: stage B on it; `-augmented-ab`: stages A and B)."""

    data: DataConfig
    fingerprint: str
    rows: int
    tag: str


def domain_transfer_task(task: Task, folder: Path, target: str) -> Task:
    """``task`` reading its training rows from the transfer set in ``folder/<task>`` (their domain in its
    ``domain`` column) and its other splits from the target's files; a spec with one file per domain
    (`domain_files`) becomes one with `files`, each of the target's evaluation files tagged with its domain. The
    domain list stays the task's, so domain ids (and a domain branch's embeddings) mean what they meant."""
    train = transfer_task(task.model_copy(update={"files": {}}), folder).files["train"]
    if task.domain_files:
        splits = {split: data_file.model_copy(update={"domain": target})
                  for split, data_file in task.domain_files[target].items() if split != "train"}
    else:
        splits = {split: data_file for split, data_file in task.files.items() if split != "train"}
    return Task.model_validate({**task.model_dump(exclude={"domain_files", "files", "sources"}),
                                "files": {**splits, "train": train}, "domains": task.domains})


def target_transfer(runner: StageRunner, recipe: MetaKDRecipe, target: str, teacher_folder: Path,
                    notes: list[str]) -> Transfer:
    """The stage `transfer-<target>` (``teacher_folder``'s tokenizer gives the mask token) and the data config of
    the target's view that reads its training rows from it; appends to ``notes`` what it chose for the user."""
    data = target_data(recipe, target)
    settings = SimpleNamespace(augment=recipe.student.augment, max_examples_per_task=None,
                               subset_seed=recipe.subset_seed)
    name = f"transfer-{target}"
    transfer, made = transfer_stage(runner, settings, data, [teacher_folder], {}, notes, name=name,
                                    make_task=partial(domain_transfer_task, target=target), key="student.augment")
    # The rows are the target's at data.fraction already: the view keeps the domain filter (for evaluation
    # splits that hold every domain) and drops the fraction, which would cut them again.
    view = transfer.model_copy(update={"tasks": [TaskRef(name=data.task_names[0], domains_include=[target])]})
    sizes = json.loads((inside(runner.root, name) / STAGE_MANIFEST).read_text())["sizes"]
    tag = "-augmented-ab" if recipe.student.augment_intermediate else "-augmented"
    return Transfer(view, made["transfer"], sizes[data.task_names[0]]["transfer"], tag)
