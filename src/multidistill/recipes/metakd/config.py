"""Meta-KD's recipe config: the data-scarce setting, stages 0 (prototypes), 1 (meta-teacher) and 3 (students),
and the baselines."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from multidistill.config import DataConfig, ModelConfig, Seed, TrainConfig, _Strict
from multidistill.data.augment import AugmentConfig
from multidistill.recipes.config import RecipeBase, refuse_replaced_seed

BASELINES = ("no_kd", "single_domain", "mixed", "meta_without_target")
Baseline = Literal["no_kd", "single_domain", "mixed", "meta_without_target"]


class MetaKDData(DataConfig):
    """The recipe's data (exactly one task, with domains), plus the data-scarce setting."""

    fraction: float = Field(1.0, gt=0, le=1, description="The data-scarce setting: each target domain keeps this "
                            "seeded fraction (round half up; the recipe's subset_seed) of all its own training rows "
                            "(replacing a data.tasks[0].domain_fraction of the target there) in every "
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
    adversarial_seed: Seed = Field(0, description="Seed of the random permutation of the batch's domains.")


def _intermediate_train() -> TrainConfig:
    # Stage A trains features only: its head is untrained, so an evaluation per epoch scores noise and costs time.
    return TrainConfig(epochs=10, lr=5e-5, lr_scheduler="constant", warmup_ratio=0.0, select="last",
                       eval_each_epoch=False)


# Stage B's step floor: the authors' 3 epochs over a full Amazon domain (1,600 rows, batch 32). Their epoch count
# alone gives 15 steps at 10% of a domain, too few to train the head (docs/benchmarks.md, Issue 13 at 10%).
PREDICTION_MIN_STEPS = 150


def _prediction_train() -> TrainConfig:
    return TrainConfig(epochs=3, lr=3e-5, warmup_ratio=0.1, min_steps=PREDICTION_MIN_STEPS)


class MetaStudentSection(_Strict):
    """Stage 3: one student per target domain (and the baselines' students)."""

    model: ModelConfig = Field(description="The student: layers of a pretrained encoder (student_layers), or a "
                               "given encoder folder (e.g. a MITKD general student's encoder/). `@teacher` = the "
                               "arm's teacher folder. Stage A adds a domain branch over the task's domains, so it "
                               "is a Transformer (architecture: hf; a BiLSTM is refused).")
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
    cross_fit_folds: int | None = Field(None, ge=2, description="Stage B's soft targets from held-out teachers: "
                                        "the target's training rows are split into this many folds (seeded by "
                                        "subset_seed; the data model's domain_holdout), one meta-teacher per fold "
                                        "is trained without that fold (its own prototype scores, otherwise the "
                                        "meta-teacher's settings), "
                                        "and each row's targets come from the one that did not see it. Stage A and "
                                        "lambda still read the meta-teacher. Costs this many more meta-teachers per "
                                        "target. Default off (the authors' way: the meta-teacher's targets on rows "
                                        "it trained on; docs/metakd for when it matters).")
    augment: AugmentConfig | None = Field(None, description="Stage B's transfer set: the target's training rows "
                                          "plus Tang et al. variants of them (MKD's augmentation), every row "
                                          "labelled by the arm's teacher; the KD baselines distil on the same set "
                                          "(the no-KD baseline keeps the gold rows). Stage A and lambda keep the "
                                          "target's rows (see augment_intermediate). Default off (the authors' "
                                          "way); docs/recipes/metakd.md for what it buys at 10%.")
    augment_intermediate: bool = Field(False, description="With student.augment: stage A distils on the "
                                       "augmented transfer set too (as TinyBERT's intermediate-layer distillation "
                                       "does), each variant weighted by its source row's lambda_i. Mind "
                                       "student.intermediate.epochs: 1 epoch over a set 10x the rows is about the "
                                       "authors' 10 over the rows.")
    seeds: list[Seed] = Field(default_factory=lambda: [42], min_length=1, description="One student per target and "
                              "seed (the stages' train.seed is not read: leave it unset); the summary shows "
                              "the mean and spread over seeds. With more than one, stage names end in -seed-<s>.")


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
                                                       "test when the task has one with labelled rows (dev selects "
                                                       "models), else data.eval_split (with a note).")

    @model_validator(mode="after")
    def _caps_set_once(self) -> MetaKDRecipe:  # replaces RecipeBase's: the student has two train sections
        student = self.student
        for key, train in (("teacher.train", self.teacher.train), ("student.intermediate", student.intermediate),
                           ("student.prediction", student.prediction), ("student.baseline", student.baseline)):
            if key.startswith("student."):
                refuse_replaced_seed(train, key, "student.seeds")
            if train is not None and train.max_examples_per_task is not None:
                raise ValueError(f"{key}.max_examples_per_task: Meta-KD selects rows by domain; use data.fraction "
                                 "or data.tasks[0].domain_fraction")
        return self

    @model_validator(mode="after")
    def _transformer_models(self) -> MetaKDRecipe:
        # Refused as the recipe loads: `ModelConfig` refused the domain branch the stages add to both only when the
        # model was built, after the stages before it (for the student: four of them, up to its stage A).
        model = self.student.model
        if model.architecture != "hf":
            raise ValueError(f"student.model.architecture: Meta-KD's stage A gives every student a domain branch and "
                             "distils the meta-teacher's hidden states, attention and transferable vector into it, "
                             f"which a {model.architecture} student has none of; give a Transformer student "
                             "(architecture: hf), e.g. layers cut from the meta-teacher (name_or_path '@teacher' "
                             "with student_layers)")
        teacher = self.teacher.model
        if teacher is not None and teacher.architecture != "hf":
            raise ValueError(f"teacher.model.architecture: the meta-teacher is trained with a domain branch (stage 1), "
                             f"which a {teacher.architecture} model has none of; give a Transformer (architecture: "
                             "hf)")
        return self

    @model_validator(mode="after")
    def _one_task(self) -> MetaKDRecipe:
        if len(self.data.tasks) != 1:
            raise ValueError(f"data.tasks: Meta-KD takes exactly one task with domains, got {self.data.task_names}")
        if self.data.tasks[0].domain_holdout is not None:
            raise ValueError("data.tasks.0.domain_holdout: Meta-KD makes its own folds of a target's rows; use "
                             "student.cross_fit_folds")
        if self.max_examples_per_task is not None or self.data.tasks[0].max_examples is not None:
            raise ValueError("max_examples_per_task: a cap would pick other rows over all domains than over one; "
                             "use data.fraction or data.tasks[0].domain_fraction instead")
        if self.student.augment_intermediate and self.student.augment is None:
            raise ValueError("student.augment_intermediate: there is no augmented transfer set; set student.augment "
                             "too, or drop it")
        if self.student.augment is not None and self.student.weighted:
            raise ValueError("student.weighted: lambda_i needs each row's gold label and the augmented rows of "
                             "student.augment have none; drop one of the two")
        if len(self.teacher.seeds) != 1:
            raise ValueError("teacher.seeds: Meta-KD trains one teacher per arm; give one seed")
        if len(self.teacher.model_dirs) > 1:  # only the first would be read
            raise ValueError(f"teacher.model_dirs: Meta-KD distils from one meta-teacher; give one folder, got "
                             f"{len(self.teacher.model_dirs)}")
        for name in ("targets", "baselines"):
            values = getattr(self, name) or []
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct, got {values}")
        return self
