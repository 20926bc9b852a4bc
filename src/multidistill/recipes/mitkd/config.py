"""MITKD's recipe config: the corpus, the general student (stage b), the per-task fine-tunes (stage c) and the
plain-teacher arm."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from multidistill.config import LossTerm, ModelConfig, ObjectiveConfig, Seed, TaskRef, TrainConfig, _Strict
from multidistill.recipes.config import RecipeBase, check_distinct_seeds, refuse_replaced_seed


class GeneralStudentSection(_Strict):
    """The general student and its task-agnostic distillation on the corpus (stage b)."""

    model: ModelConfig = Field(description="The student: some layers of a pretrained encoder (student_layers), or a "
                               "random one from backbone_config (without model_type: the name_or_path family). "
                               "`@teacher` = this arm's teacher encoder. Only its encoder is trained (no heads).")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(select="lowest_loss"),
                               description="Settings of the general distillation (no labelled dev data: select "
                               "lowest_loss or last).")
    objective: list[LossTerm] = Field(
        default_factory=lambda: [LossTerm(loss="relation_kl")], min_length=1,
        description="Feature loss terms on the corpus: relation_kl (MiniLMv2, the default), or e.g. hidden_mse + "
        "attention_kl. Several teachers: each term averages its per-teacher losses.")


class MITKDFinetune(_Strict):
    """Per-task fine-tuning of the general student (stage c), each task alone."""

    tasks: list[TaskRef] | None = Field(None, description="Tasks to fine-tune on (names or {name, max_examples}), "
                                        "resolved like data.tasks; default: data.tasks. Tasks no teacher saw "
                                        "(out-of-domain) are allowed unless the objective reads soft targets.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Settings of each per-task run.")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig, description="Loss terms (default: hard "
                                       "labels only); soft_ce etc. read the teachers' soft targets from a store "
                                       "this recipe fills (the same store in both arms). No feature terms "
                                       "(hidden_mse, ...): a fine-tune runs no teacher; they belong in "
                                       "student.objective.")
    seeds: list[Seed] = Field(default_factory=lambda: [42], min_length=1, description="One fine-tune per task and "
                              "seed (train.seed is not read: leave it unset); the summary shows the mean over seeds.")

    @model_validator(mode="after")
    def _distinct_seeds(self) -> MITKDFinetune:
        check_distinct_seeds(self.seeds, "finetune.seeds")
        names = [ref.name for ref in self.tasks or []]
        if len(set(names)) != len(names):  # said here, not as `data.tasks` by the fine-tunes' data view
            raise ValueError(f"finetune.tasks must be distinct, got {names}")
        if self.tasks == []:  # it fine-tuned on data.tasks, as if left out
            raise ValueError("finetune.tasks is empty; list the tasks to fine-tune on, or leave it out (data.tasks)")
        refuse_replaced_seed(self.train, "finetune.train", "finetune.seeds")
        return self


class MITKDBaseline(_Strict):
    """The comparison arm: the same stages (b)-(c) from the plain pretrained encoder."""

    plain_teacher: bool = Field(False, description="Run the general distillation from the plain pretrained encoder "
                                "(not the multi-task teacher), into stages of their own (general-plain, "
                                "finetune-plain-...).")
    encoder: str | None = Field(None, description="The plain encoder (name, folder or pkg: path); default: "
                                "teacher.model.name_or_path, the encoder the teachers were fine-tuned from. Read "
                                "by the plain arm only (plain_teacher: true).")


class MITKDRecipe(RecipeBase):
    """MITKD: multi-task teacher -> task-agnostic general student on unlabelled text -> per-task fine-tunes."""

    default_objective: ClassVar = None
    # Its plan compares each arm's online teachers' tokenizers with the student's (`plan._check_tokenizers`: the
    # plain arm's teacher is baseline.encoder), which preflight's one-teacher check would get wrong.
    checks_own_tokenizers: ClassVar[bool] = True
    labelled_tasks_only: ClassVar[bool] = True  # data.tasks are the teachers' tasks; unlabelled text is `corpus`
    # RecipeBase's, said for MITKD: the general distillation reads the corpus, which corpus.max_examples caps.
    max_examples_per_task: int | None = Field(None, gt=0, description="Seeded cap on training examples per "
                                              "labelled task (the teachers', their soft targets' and the "
                                              "fine-tunes'; stage train sections must not set their own). It does "
                                              "not cap the corpus: corpus.max_examples does.")
    recipe: Literal["mitkd"] = Field(description="Recipe name.")
    corpus: TaskRef = Field(description="The unlabelled corpus: a text task (data.task_specs or built in), e.g. "
                            "{name: corpus, max_examples: 100000} with a from_tasks spec. Its rows are capped by "
                            "its own max_examples only (max_examples_per_task caps the labelled tasks).")
    student: GeneralStudentSection = Field(description="The general student (stage b).")
    finetune: MITKDFinetune = Field(default_factory=MITKDFinetune, description="Per-task fine-tunes (stage c).")
    baseline: MITKDBaseline = Field(default_factory=MITKDBaseline, description="The plain-teacher arm.")

    @model_validator(mode="after")
    def _caps_set_once(self) -> MITKDRecipe:  # replaces RecipeBase's: student.train's rows are the corpus's
        for section in ("teacher", "finetune"):
            if getattr(self, section).train.max_examples_per_task is not None:
                raise ValueError(f"set max_examples_per_task at the top of the recipe, not in {section}.train")
        if self.student.train.max_examples_per_task is not None:
            raise ValueError("student.train.max_examples_per_task: the general distillation reads the corpus, whose "
                             "rows are capped by corpus.max_examples (e.g. corpus: {name: corpus, max_examples: "
                             "100000}); set that instead (the top-level max_examples_per_task caps the labelled "
                             "tasks only)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _corpus_name(cls, data):
        if isinstance(data, dict) and isinstance(data.get("corpus"), str):
            data = {**data, "corpus": {"name": data["corpus"]}}
        return data

    @model_validator(mode="after")
    def _plain_encoder_known(self) -> MITKDRecipe:
        if self.baseline.plain_teacher and self.baseline.encoder is None and self.teacher.model is None:
            raise ValueError("baseline.plain_teacher with teacher.model_dirs: name the plain encoder in "
                             "baseline.encoder")
        if self.corpus.name in self.data.task_names:
            raise ValueError(f"corpus '{self.corpus.name}' must not be one of data.tasks (the teachers' tasks)")
        if self.student.model.heads_from is not None:  # the general student has no head; its fine-tunes start fresh
            raise ValueError("student.model.heads_from: the general student is an encoder without task heads (the "
                             "corpus has no labels), so there are no heads to start from; drop it")
        return self
