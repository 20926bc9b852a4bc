"""Recipe configs: one YAML file describes every stage of a method (`multidistill run RECIPE.yaml`).

This module holds what recipes share (`RecipeBase` and its sections) and the loader; each recipe's own schema
lives in its module beside its run function, so a new recipe edits nothing here.

The stage sections reuse the run configs (`ModelConfig`, `TrainConfig`, `ObjectiveConfig`), so a recipe's
student section reads exactly like a `distill` config. Data and the training subset are set once, at the
top, so teachers, soft targets and students always see the same examples.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, ValidationError, field_validator, model_validator

from multidistill.config import (
    DataConfig,
    ModelConfig,
    ObjectiveConfig,
    Seed,
    TrainConfig,
    _Strict,
    load_config,
    read_yaml,
)
from multidistill.data.tasks import BUILTIN_TASKS
from multidistill.errors import ConfigError


def refuse_replaced_seed(train: TrainConfig | None, key: str, seeds_key: str) -> None:
    """A stage whose seed comes from a `seeds` list never reads its train.seed: a value given there would be
    ignored, so it is refused, naming both keys (the default is accepted: a recorded recipe.yaml holds it)."""
    default = TrainConfig.model_fields["seed"].default
    if train is not None and train.seed != default:
        raise ValueError(f"{key}.seed: {train.seed} is not used; each run's seed is one of {seeds_key}, set "
                         "those instead")


def check_distinct_seeds(seeds: list[int], key: str) -> None:
    """A repeated seed would train (or reuse) the same run twice and count it as two: refuse it, naming ``key``."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{key} must be distinct, got {seeds}")


class TeacherSection(_Strict):
    """The teacher(s): trained here (one per seed; several seeds = an ensemble) or given as folders."""

    model: ModelConfig | None = Field(None, description="Encoder to fine-tune multi-task (omit with model_dirs).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Teacher training settings.")
    seeds: list[Seed] = Field(default_factory=lambda: [42], min_length=1,
                             description="One teacher per seed; K seeds give a K-teacher ensemble "
                             "(train.seed is not read: leave it unset).")
    model_dirs: list[str] = Field(default_factory=list, description="Already trained multidistill teacher "
                                  "folders to use instead of training (their task heads must cover data.tasks).")

    @field_validator("model_dirs")
    @classmethod
    def _each_folder_once(cls, model_dirs: list[str]) -> list[str]:
        """The same folder twice is an "ensemble" that averages nothing and costs twice: refused as the recipe
        loads, not after the stages before the signals. Compared as written (normalised): both resolve alike."""
        seen: set[str] = set()
        for folder in model_dirs:
            if os.path.normpath(folder) in seen:
                raise ValueError(f"names the folder {folder!r} twice: list each teacher once")
            seen.add(os.path.normpath(folder))
        return model_dirs

    @model_validator(mode="after")
    def _one_source(self) -> TeacherSection:
        if (self.model is None) == (not self.model_dirs):
            raise ValueError("give either teacher.model (train teachers here) or teacher.model_dirs, not both")
        check_distinct_seeds(self.seeds, "teacher.seeds")
        if self.model is not None:
            refuse_replaced_seed(self.train, "teacher.train", "teacher.seeds")
        return self


class SignalsSection(_Strict):
    """Teacher inference that fills the signal store."""

    batch_size: int = Field(64, gt=0, description="Teacher inference batch size.")
    bf16: bool = Field(False, description="Run the teachers under bf16 autocast (fast only with native bf16).")


class StudentSection(_Strict):
    """The student: its model, training settings and distillation objective."""

    model: ModelConfig = Field(description="Student model (hf encoder, some teacher layers, or bilstm).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Student training settings.")
    objective: ObjectiveConfig = Field(description="Loss terms per task type / task.")


class FinetuneSection(_Strict):
    """Optional per-task fine-tuning of the jointly distilled student (MKD stage 3)."""

    enabled: bool = Field(False, description="Fine-tune one copy of the student per task.")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=1),
                               description="Settings of each per-task run (same objective as the student).")


class BaselineSection(_Strict):
    """Optional single-task baseline: one student per task, distilled alone with the same budget."""

    enabled: bool = Field(False, description="Train one student per task on that task only.")


class RecipeBase(_Strict):
    output_dir: str = Field(description="Recipe folder; each stage writes one sub-folder with a stage.json.")
    data: DataConfig = Field(description="Tasks and data shared by every stage.")
    max_examples_per_task: int | None = Field(None, gt=0, description="Seeded cap on training examples per task, "
                                              "for every stage (stage train sections must not set their own).")
    subset_seed: Seed = Field(42, description="Seed that picks the capped training subset for every stage.")
    teacher: TeacherSection = Field(description="Teacher(s).")
    signals: SignalsSection = Field(default_factory=SignalsSection, description="Teacher inference settings.")

    default_objective: ClassVar = None  # each recipe's paper objective, used when student.objective is omitted
    # Whether every stage trains on data.tasks' labels (teachers, then a student on the same tasks): a text task
    # there is refused as the recipe loads (`_labelled_tasks`), not in the first stage with advice of no key it has.
    labelled_tasks_only: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _default_objective(cls, data):
        if cls.default_objective is not None and isinstance(data, dict) and isinstance(data.get("student"), dict):
            data["student"].setdefault("objective", cls.default_objective().model_dump())
        return data

    @model_validator(mode="after")
    def _caps_set_once(self) -> RecipeBase:
        for section in ("teacher", "student", "finetune"):  # a recipe's stages all read the top-level cap
            train = getattr(getattr(self, section, None), "train", None)
            if train is not None and train.max_examples_per_task is not None:
                raise ValueError(f"set max_examples_per_task at the top of the recipe, not in {section}.train")
        return self

    @model_validator(mode="after")
    def _one_subset_seed(self) -> RecipeBase:  # every stage reads the top-level one (`recipe_data`)
        if self.data.subset_seed is not None:
            raise ValueError("data.subset_seed: a recipe's stages share the top-level subset_seed; set that instead")
        return self

    @model_validator(mode="after")
    def _labelled_tasks(self) -> RecipeBase:
        if not self.labelled_tasks_only:
            return self
        declared = {spec.name: spec for spec in self.data.task_specs}
        for ref in self.data.tasks:  # a spec first, then the built-ins, as `get_task`; unknown: refused later
            task = declared[ref.name] if ref.name in declared else BUILTIN_TASKS.get(ref.name)
            if task is not None and not task.has_head:
                message = (f"task '{ref.name}' is a {task.type} task (unlabelled); the {getattr(self, 'recipe', '')} "
                           "recipe trains its teachers and students on the labels of data.tasks: list labelled tasks "
                           "only. Unlabelled text is MITKD's corpus (recipe: mitkd, corpus: <task>) or the data of a "
                           "general distillation (`multidistill distill`, text tasks only)")
                # Said by its key, `data.tasks`, as a check of that field would (this one needs task_specs too).
                raise ValidationError.from_exception_data(type(self).__name__, [
                    {"type": "value_error", "loc": ("data", "tasks"), "input": self.data.task_names,
                     "ctx": {"error": ValueError(message)}}])
        return self


def load_recipe(path: RecipeBase | Mapping[str, Any] | str | os.PathLike,
                overrides: list[str] | str | None = None) -> RecipeBase:
    """``path`` as a checked recipe config with ``--set``-style ``overrides`` applied: a recipe YAML file's path,
    a mapping of the same keys (for both, the `recipe:` key picks the registered schema) or a recipe config
    (checked again, so one edited in Python is validated too). Anything else is a TypeError."""
    from multidistill.recipes.registry import recipe_entry

    if isinstance(path, RecipeBase):
        return load_config(path, overrides, schema=type(path))
    if isinstance(path, Mapping):
        return load_config(path, overrides, schema=recipe_entry(path.get("recipe"), "the recipe mapping").schema)
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"a recipe is a YAML file's path, a mapping or a recipe config (load_recipe), not "
                        f"{type(path).__name__}")
    raw = read_yaml(path)
    if "recipe" not in raw and ("kind" in raw or {"model", "train"} <= set(raw)):
        from multidistill.recipes.registry import discover_recipes

        # A single run's config given to `run`: name the commands that take it, not only the missing key.
        raise ConfigError(f"{path}: key 'recipe' is missing: this looks like the config of a single training run; "
                          "run it with `multidistill train-teacher` (kind: teacher) or `multidistill distill`, or "
                          f"name a method with recipe: one of {sorted(discover_recipes())} (configs/*.yaml)")
    return load_config(path, overrides, schema=recipe_entry(raw.get("recipe"), str(path)).schema)
