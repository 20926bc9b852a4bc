"""Typed run configs (pydantic), loaded from YAML with ``--set a.b=c`` overrides.

The same objects drive the CLI and the Python API; unknown keys are rejected with their path.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, TypeVar, overload

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from yaml.constructor import ConstructorError

from multidistill.config_messages import format_validation_error, refuse_joined_overrides
from multidistill.data.tasks import HeldOutFromDev, Task
from multidistill.errors import ConfigError, MultidistillError
from multidistill.limits import MAX_SEED
from multidistill.models.specs import BiLSTMSpec, DomainBranchSpec
from multidistill.utils.arguments import as_list
from multidistill.utils.paths import PACKAGE_PREFIX, resolve_path


class RefusedValue(ConstructorError):
    """Valid YAML that the project's loader refuses on purpose (a YAML 1.1 octal or base-60 number)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `3e-5` as a float (YAML 1.1 wants a dot: `3.0e-5`) and refuses a mapping
    key given twice (plain PyYAML keeps the last one silently), naming both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                    seen.setdefault(key, key_node.start_mark.line)
                except TypeError:  # an unhashable key: the base constructor reports it
                    continue
                if first is not None:
                    raise ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"key {key!r} is given twice (first on line {first + 1}); keep one of them",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """YAML 1.1's octal (`017` = 15) and base-60 (`1:30` = 90) integers are refused: nobody writes a seed or
        a step count so on purpose; the user meant 17, or the text."""
        text = str(self.construct_scalar(node)).replace("_", "")
        kind = "base-60" if ":" in text else "octal" if re.fullmatch(r"[-+]?0[0-7]+", text) else None
        if kind is not None:
            raise RefusedValue(None, None, f"the unquoted value {text} is a YAML 1.1 {kind} number "
                                   f"({super().construct_yaml_int(node)}); write the number in decimal, or quote "
                                   "it if you meant the text", node.start_mark)
        return super().construct_yaml_int(node)


_FLOAT_WITHOUT_DOT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_WITHOUT_DOT, list("-+0123456789."))
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes what `_Loader` would read as a float (`1e5`): a recorded config must load back
    as it was (a folder named 1e5 came back as the number 100000.0 and the run could not be resumed)."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_WITHOUT_DOT, list("-+0123456789."))


def dump_yaml(data: Any, stream: Any) -> None:
    """Write ``data`` as YAML that `parse_yaml` reads back equal (keys in their given order)."""
    yaml.dump(data, stream, Dumper=_Dumper, sort_keys=False)
# PyYAML raises more than YAMLError on hostile input (bad dates, `!!float abc`, deep nesting).
_YAML_ERRORS = (yaml.YAMLError, ValueError, TypeError, IndexError, RecursionError)


def parse_yaml(text: str):
    """Parse YAML text with the project's loader (safe: no arbitrary object construction)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader


class _Strict(BaseModel):
    # allow_inf_nan=False: `lr: .inf` or `epochs: .nan` is refused at load, not met as a crash mid-run.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_yes_no_for_numbers(cls, data: Any) -> Any:
        """pydantic takes true/false for a number (1/0); in YAML that is most often an unquoted yes/no/on/off."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(name)
                if isinstance(value, bool) and _numbers_only(field.annotation):
                    raise ValueError(f"'{name}' takes a number, not {str(value).lower()} (YAML reads an unquoted "
                                     "yes/no/on/off/true/false as true or false)")
        return data

    @model_validator(mode="before")
    @classmethod
    def _sections_keep_their_defaults(cls, data: Any) -> Any:
        """A section given in part keeps what its field's default sets; the keys given win.

        Without this, `student: {prediction: {epochs: 5}}` would build a bare TrainConfig(epochs=5) and drop the
        recipe's own stage-B settings (lr, warm-up, step floor) without a word.
        """
        if not isinstance(data, dict):
            return data
        # Paths as text (every path field is a str, for YAML): `output_dir=Path(...)` from Python is accepted.
        data = {key: _path_text(value) for key, value in data.items()}
        merged = data
        for name, field in cls.model_fields.items():
            given = data.get(name)
            if not isinstance(given, dict) or field.default_factory is None:
                continue
            default = field.default_factory()
            preset = default.model_dump(exclude_unset=True) if isinstance(default, BaseModel) else {}
            if preset:
                merged = {**merged, name: {**preset, **given}}  # a copy: the caller's mapping stays as given
        return merged


def _numbers_only(annotation: Any) -> bool:
    """Whether a field annotation takes int or float and not bool (Annotated, Optional and unions opened up)."""
    from multidistill.config_messages import _unwrapped

    kinds = set(_unwrapped([annotation]))
    return bool(kinds & {int, float}) and bool not in kinds


def _path_text(value: Any) -> Any:
    """A `pathlib` path (or a list of them) as the text the str fields hold; anything else as given."""
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, list) and any(isinstance(item, PurePath) for item in value):
        return [str(item) if isinstance(item, PurePath) else item for item in value]
    return value


# Seeds go to numpy / torch / random, which take 0 .. 2**32 - 1.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class ModelConfig(_Strict):
    """The model to train: a Hugging Face encoder (whole, or some of its layers) or a BiLSTM student."""

    architecture: Literal["hf", "bilstm"] = Field(
        "hf", description="hf: a Hugging Face encoder + task heads; bilstm: the MKD BiLSTM student (it uses "
        "name_or_path's tokenizer, and its word embeddings when bilstm.init_embeddings is on).")
    name_or_path: str = Field(description="Hugging Face model name, local folder, a multidistill model folder "
                              "(its encoder is used), or `pkg:<module>/<dir>` for weights shipped in a package.")
    tokenizer: str | None = Field(None, description="Tokenizer name/path; defaults to name_or_path.")
    backbone_config: dict[str, Any] | None = Field(
        None, description="Build a randomly initialised encoder from this HF config dict instead of loading "
        "pretrained weights; with `model_type`, that family's defaults plus these keys, without it name_or_path's "
        "config (e.g. the teacher's family and vocabulary) with these keys replaced. name_or_path then supplies "
        "the tokenizer (and the base config). Transformer models only (a BiLSTM's sizes are bilstm's).")
    pooling: Literal["cls", "mean"] = Field("cls", description="How heads pool token vectors: [CLS] or mean.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout before each classification head.")
    max_seq_length: int = Field(128, gt=0, description="Truncate inputs to this many tokens; must not exceed "
                                "the model's position limit.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub/folder to run. Off by "
                                    "default: only turn on for models you trust.")
    student_layers: list[int] | None = Field(
        None, description="Keep only these 0-based encoder layers of name_or_path, in order (DistilBERT-style "
        "students, e.g. [0, 2, 4] = every 2nd layer of a 6-layer teacher); None keeps all.")
    init_from: str | None = Field(
        None, description="Start from a saved multidistill model folder (encoder and heads), e.g. the joint "
        "student before per-task fine-tuning; architecture settings then come from that folder (one beside it that "
        "contradicts the saved model, e.g. other pooling or another layer count, is refused).")
    heads_from: str | None = Field(
        None, description="A saved multidistill model folder whose task heads start this model's (each task's head "
        "of the same name, type and size), e.g. the teacher a student is cut from (`@teacher` in a recipe), so the "
        "heads start where the teacher's ended instead of at random; the heads take its layout too (a classifier "
        "brought in with import-classifier has a dense layer and activation before its linear layer). Transformer "
        "models only, not with init_from.")
    bilstm: BiLSTMSpec = Field(default_factory=BiLSTMSpec, description="BiLSTM student sizes (architecture: bilstm).")
    domain_branch: DomainBranchSpec | None = Field(
        None, description="Meta-KD's domain branch (a meta-teacher, or a student in meta-distillation): a learned "
        "domain embedding, tau = W_c (e_k + h_mean(x)) + b_c and domain logits on tanh(tau); `{domains: [...]}` "
        "lists the task's domains, sorted. Saved with the model, never exported. Transformer models only; with "
        "init_from, the saved model's branch is kept and must list the same domains. A run's objective must have a "
        "term on its outputs (domain_adversarial, transferable_mse), or nothing trains it.")

    @model_validator(mode="after")
    def _valid_layers(self) -> ModelConfig:
        layers = self.student_layers
        if layers is not None and (not layers or any(i < 0 for i in layers) or sorted(set(layers)) != layers):
            raise ValueError("student_layers must be distinct, increasing, non-negative layer indices")
        if self.architecture == "bilstm":  # never silently: these shape a Transformer, which a BiLSTM is not
            # (by value, not by "was it set": saved run configs write every field out)
            given = [key for key, value in (("student_layers", self.student_layers), ("pooling", self.pooling))
                     if value != type(self).model_fields[key].default]
            if given:
                raise ValueError(f"{' and '.join(given)} apply to a Transformer model (architecture: hf); the BiLSTM "
                                 "student pools with attention over its own layers: drop them")
            if self.dropout != type(self).model_fields["dropout"].default:
                raise ValueError("dropout is a Transformer model's head dropout; a BiLSTM's is bilstm.dropout: set "
                                 "that instead")
            if self.backbone_config is not None:  # it only turned bilstm.init_embeddings off, without a word
                raise ValueError("backbone_config builds a Transformer encoder (architecture: hf); a BiLSTM student's "
                                 "sizes are bilstm's (embedding_dim, hidden_size, ...): drop it (and set "
                                 "bilstm.init_embeddings: false for random word embeddings)")
        elif self.bilstm != BiLSTMSpec():
            raise ValueError("bilstm sets a BiLSTM student's sizes (architecture: bilstm); this model is a "
                             "Transformer: drop it, or set architecture: bilstm")
        if self.domain_branch is not None and self.architecture == "bilstm":
            raise ValueError("domain_branch needs a Transformer model (architecture: hf); the BiLSTM student has none")
        if self.heads_from is not None and (self.architecture == "bilstm" or self.init_from is not None):
            raise ValueError("heads_from needs a Transformer model (architecture: hf) built from name_or_path; "
                             "drop it (init_from brings its own heads; a BiLSTM's heads have other sizes)")
        return self


class DomainHoldout(_Strict):
    """One fold of a domain's training rows left out (cross-fitting: a model trained without the fold labels it)."""

    domain: str = Field(description="The domain whose training rows are split into folds.")
    folds: int = Field(ge=2, description="Number of seeded folds of its training rows (after domain_fraction; "
                       "balanced: sizes differ by at most one row; seeded by data.subset_seed).")
    fold: int = Field(ge=0, description="The fold left out, 0-based (below folds).")

    @model_validator(mode="after")
    def _fold_in_range(self) -> DomainHoldout:
        if self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} is not one of the {self.folds} folds (0..{self.folds - 1})")
        return self


class TaskRef(_Strict):
    """A task to use: a built-in name or one declared under `data.task_specs`."""

    @model_validator(mode="before")
    @classmethod
    def _a_name_alone(cls, data: Any) -> Any:  # `sst2` wherever a reference is taken, as `{name: sst2}`
        return {"name": data} if isinstance(data, str) else data

    name: str = Field(description="Task name.")
    max_examples: int | None = Field(None, gt=0, description="Cap on training examples for this task "
                                     "(overrides train.max_examples_per_task).")
    domains_include: list[str] | None = Field(
        None, min_length=1, description="A task with domains: keep only these domains' rows, in every split "
        "(domain ids stay indices into all of the task's domains).")
    domains_exclude: list[str] | None = Field(
        None, min_length=1, description="A task with domains: drop these domains' rows, in every split.")
    domain_fraction: dict[str, Annotated[float, Field(gt=0, le=1)]] | None = Field(
        None, min_length=1, description="A task with domains: domain -> fraction in (0, 1] of its training rows to "
        "keep (round half up; seeded by data.subset_seed, each domain's subset independent of the others'); dev "
        "and test are untouched, and max_examples then caps what is left.")
    domain_holdout: DomainHoldout | None = Field(
        None, description="A task with domains: leave one seeded fold of one domain's training rows out (after "
        "domain_fraction; dev and test untouched), e.g. Meta-KD's cross-fitted teachers.")
    keep_pairs: bool = Field(False, description="A text task built from_tasks (a corpus): keep each pair task's "
                             "row as one example, tokenised as a pair, as the task spec's keep_pairs does, for this "
                             "use only (e.g. MITKD's corpus: the teachers' stages, which name the same spec, keep "
                             "their fingerprints).")

    @model_validator(mode="after")
    def _one_way_to_select(self) -> TaskRef:
        if self.domains_include and self.domains_exclude:
            raise ValueError("give domains_include or domains_exclude, not both")
        return self


class CarvedTasks(_Strict, HeldOutFromDev):
    """`Task.test_from_dev` for tasks named here (built-in ones too): a test split carved out of their dev rows."""

    tasks: list[str] = Field(min_length=1, description="Tasks whose test split is carved out of their dev rows "
                             "(each needs dev files and no test files). A name that is no task is refused; a task "
                             "that is not in this config's tasks is left as it is.")


class DataConfig(_Strict):
    """Which tasks to train on and where their files are."""

    tasks: list[TaskRef] = Field(min_length=1, description="Tasks to train on (names, or {name, max_examples, "
                                 "domains_include / domains_exclude, domain_fraction, domain_holdout, keep_pairs}).")
    data_root: str | None = Field(None, description="Folder that relative task file paths (all built-in tasks) "
                                  "resolve against; default: the MULTIDISTILL_DATA_ROOT environment variable, else "
                                  "the current folder. `pkg:multidistill/sample_data` is the sample shipped with the "
                                  "package. Trained models record it (absolute) for evaluate/benchmark/export.")
    task_specs: list[Task] = Field(default_factory=list, description="User-declared tasks (same schema as "
                                   "built-ins: name, type, labels, pair, metrics, files).")
    cache_dir: str = Field(".cache/multidistill", description="Where tokenised Arrow views are cached.")
    subset_seed: Seed | None = Field(None, description="Seed that picks the capped training subset "
                                    "(train.max_examples_per_task); default train.seed. Ensembles fix it so every "
                                    "member trains on the same examples.")
    eval_split: Literal["dev", "test"] = Field("dev", description="Split used for evaluation and model selection.")
    test_from_dev: CarvedTasks | None = Field(
        None, description="Carve a test split out of the dev rows of these tasks ({tasks, fraction, seed}): dev "
        "keeps the rest and selects models, test is scored (evaluate --split test; Meta-KD's report_split). For "
        "data whose test labels are hidden, as GLUE's are. Trained models record it in their task specs.")

    @model_validator(mode="before")
    @classmethod
    def _names_to_refs(cls, data: Any) -> Any:
        # Allow `tasks: [sst2, mrpc]` or `tasks: sst2,mrpc` as shorthand for [{name: sst2}, ...].
        if isinstance(data, dict) and isinstance(data.get("task_specs"), list):
            _refuse_duplicate_specs(data["task_specs"])
        if isinstance(data, dict) and "tasks" in data:
            tasks = data["tasks"]
            if isinstance(tasks, str):
                tasks = [t.strip() for t in tasks.split(",") if t.strip()]
            if isinstance(tasks, list):
                data = {**data, "tasks": [{"name": t} if isinstance(t, str) else t for t in tasks]}
        return data

    @property
    def task_names(self) -> list[str]:
        return [ref.name for ref in self.tasks]


def _refuse_duplicate_specs(specs: list) -> None:
    """Two `task_specs` entries with one name: refuse, naming both, instead of keeping the last silently."""
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        name = spec.get("name") if isinstance(spec, dict) else getattr(spec, "name", None)
        if isinstance(name, str):
            first = seen.setdefault(name, i)
            if first != i:
                raise ValueError(f"task_specs.{first} and task_specs.{i} both declare task {name!r}; "
                                 "give each task one spec (or rename one)")


class TrainConfig(_Strict):
    """Optimisation and the training loop."""

    epochs: float = Field(3.0, gt=0, le=1e6, description="Passes over the multi-task batch plan (may be fractional).")
    min_steps: int | None = Field(None, gt=0, le=10**9, description="Train at least this many optimizer steps: "
                                  "where epochs x steps per epoch falls short (a small data set), the run makes "
                                  "more passes. None: epochs alone decide. The schedule (warm-up, decay) spans "
                                  "the steps actually made.")
    batch_size: int = Field(32, gt=0, description="Examples per batch (per process).")
    eval_batch_size: int = Field(64, gt=0, description="Examples per evaluation batch.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and LayerNorm).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Fraction of steps with linear warm-up.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clipping threshold.")
    grad_accum_steps: int = Field(1, gt=0, description="Batches accumulated per optimizer step.")
    bf16: bool = Field(False, description="bf16 autocast (CPU and recent GPUs).")
    fp16: bool = Field(False, description="fp16 autocast with loss scaling (GPU only).")
    sampling: Literal["proportional", "temperature", "round_robin"] = Field(
        "proportional", description="Multi-task batch mixing: proportional (MT-DNN), temperature (size^tau), "
        "round_robin (one batch per task in turn).")
    temperature_tau: float = Field(0.5, gt=0, le=1, description="Exponent tau for temperature sampling.")
    group_by_length: bool = Field(False, description="Batch rows of similar length together (batch order stays "
                                  "random): much less padding, faster epochs; off reproduces earlier runs exactly.")
    max_examples_per_task: int | None = Field(None, gt=0, description="Seeded random cap on training examples "
                                              "per task (None = all).")
    eval_every_steps: int | None = Field(None, gt=0, description="Evaluate every N optimizer steps "
                                         "(and at the end of each epoch unless eval_each_epoch is off).")
    eval_each_epoch: bool = Field(True, description="Evaluate at the end of every epoch. Off: only every "
                                  "eval_every_steps and once at the end, for a stage whose evaluations select "
                                  "nothing (select: last), e.g. Meta-KD's stage A, whose head is not trained yet.")
    checkpoint_every_steps: int = Field(200, gt=0, description="Write a resumable checkpoint every N steps.")
    keep_checkpoints: int = Field(1, gt=0, description="How many recent checkpoints to keep.")
    log_every_steps: int = Field(10, gt=0, description="TensorBoard/log cadence in optimizer steps.")
    seed: Seed = Field(42, description="Seed for initialisation, sampling and dropout (0 .. 2**32 - 1).")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="When a step's loss or gradient is NaN/inf: stop (the error names the step, the task "
        "and the last checkpoint; no update is applied) or skip (drop that step's update, count it, report the "
        "count at the end and in train_summary.json).")
    lr_scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Learning-rate schedule after the warm-up (warmup_ratio), via "
        "transformers.get_scheduler: linear decay to 0, cosine decay to 0, or constant.")
    select: Literal["best_metric", "lowest_loss", "last"] = Field(
        "best_metric", description="Which evaluated model is kept in model/: best_metric (highest eval average), "
        "lowest_loss (lowest objective loss on a held-out slice of the training rows, holdout_fraction of each "
        "task, which is then not trained on; for runs without labelled eval data), or last.")
    holdout_fraction: float = Field(0.05, gt=0, lt=1, description="select: lowest_loss: the seeded fraction of "
                                    "each task's training rows held out to measure the loss (at least one row).")
    thresholds: Literal["fixed", "per_label"] = Field(
        "fixed", description="Multilabel tasks' decision thresholds. fixed: a label is predicted where its "
        "probability is over 0.5. per_label: once training ends, each label's threshold is chosen on the eval split "
        "(data.eval_split): the one of 0.05, 0.10, ..., 0.95 with the highest F1 "
        "of that label (0.5 for a label no eval row holds); they are saved in the model folder and used by "
        "evaluate, predict, the model card and the exports. The eval scores in metrics.json stay those at 0.5 (the "
        "chosen thresholds would score their own rows optimistically): score other rows (evaluate --split test). "
        "Changes no weight, so a resumed run may change it.")

    @model_validator(mode="after")
    def _one_precision(self) -> TrainConfig:
        if self.bf16 and self.fp16:
            raise ValueError("choose at most one of bf16 and fp16")
        return self

    @model_validator(mode="after")
    def _no_setting_of_another_choice(self) -> TrainConfig:
        # A value given for a choice not made would be ignored (a default value is not "given").
        defaults = type(self).model_fields
        if self.select != "lowest_loss" and self.holdout_fraction != defaults["holdout_fraction"].default:
            raise ValueError(f"holdout_fraction applies to select: lowest_loss (the held-out slice it scores), and "
                             f"select is {self.select}; drop it, or select lowest_loss")
        if self.sampling != "temperature" and self.temperature_tau != defaults["temperature_tau"].default:
            raise ValueError(f"temperature_tau applies to sampling: temperature, and sampling is {self.sampling}; "
                             "drop it, or sample by temperature")
        return self

    @model_validator(mode="after")
    def _something_to_select(self) -> TrainConfig:
        if not self.eval_each_epoch and self.eval_every_steps is None and self.select != "last":
            raise ValueError(f"eval_each_epoch: false without eval_every_steps evaluates only once, at the end, so "
                             f"select: {self.select} has nothing to choose from; set select: last, or "
                             "eval_every_steps")
        return self


class LossTerm(_Strict):
    """One weighted term of an objective."""

    loss: str = Field(description="Registered loss name: hard, soft_ce, soft_kl, logit_mse, score_mse; feature "
                      "losses (online teachers): hidden_mse, cosine_hidden, attention_mse, attention_kl, relation_kl; "
                      "Meta-KD's domain branch: domain_adversarial, transferable_mse.")
    weight: float = Field(1.0, ge=0, description="Weight of this term in the sum (at the start of training).")
    weight_end: float | None = Field(None, ge=0, description="If set, the weight moves linearly from `weight` to "
                                     "this value over training (an alpha schedule).")
    params: dict = Field(default_factory=dict, description="Constructor arguments, e.g. {temperature: 2}; "
                         "soft_ce/soft_kl also take temperature_end for a linear temperature schedule.")

    @model_validator(mode="after")
    def _params_build(self) -> LossTerm:
        """Build the term once, so bad parameters are refused with the config (and its key), not at the stage that
        first trains with it. Feature losses need the models' sizes: they are checked when the run builds them."""
        from multidistill.losses import LOSSES, build_loss  # importing the package registers the built-in losses
        from multidistill.losses.registry import check_registered

        try:  # a misspelt name is refused here, not at the stage that first builds it (after a teacher's training)
            check_registered(self.loss)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        loss = LOSSES.get(self.loss)
        if loss is not None and not getattr(loss, "needs_dims", False):
            try:
                build_loss(self.loss, **self.params)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        elif loss is not None:  # without the sizes, at least the parameter names (a misspelt one is a typo)
            signature = inspect.signature(loss.__init__).parameters
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
                takes = sorted(set(signature) - {"self", "student_dims", "teacher_dims"})
                unknown = sorted(set(self.params) - set(takes))
                if unknown:
                    raise ValueError(f"loss '{self.loss}': unknown parameter(s) {unknown}; it takes {takes}")
        return self


class ObjectiveConfig(_Strict):
    """Loss terms by task type, overridable per task name."""

    classification: list[LossTerm] = Field(default_factory=lambda: [LossTerm(loss="hard")],
                                           description="Terms for classification tasks.")
    multilabel: list[LossTerm] = Field(default_factory=lambda: [LossTerm(loss="hard")],
                                       description="Terms for multilabel tasks (soft_ce and soft_kl are for one "
                                       "distribution over classes; soft_bce is their multilabel counterpart).")
    regression: list[LossTerm] = Field(default_factory=lambda: [LossTerm(loss="hard")],
                                       description="Terms for regression tasks.")
    tasks: dict[str, list[LossTerm]] = Field(default_factory=dict, description="Per-task overrides by name.")

    @model_validator(mode="after")
    def _terms_fit_their_lists(self) -> ObjectiveConfig:
        from multidistill.losses.registry import check_task_type

        lists = {"classification": self.classification, "multilabel": self.multilabel, "regression": self.regression,
                 **{f"tasks.{name}": terms for name, terms in self.tasks.items()}}
        for key, terms in lists.items():
            if terms and not any(term.weight or term.weight_end for term in terms):
                raise ValueError(f"every term of objective.{key} has weight 0: nothing would be learned")
        # Per-task lists are checked where task types are known.
        for task_type in ("classification", "multilabel", "regression"):
            for i, term in enumerate(getattr(self, task_type)):
                try:
                    check_task_type(term.loss, task_type, f"objective.{task_type}.{i}")
                except ConfigError as exc:
                    raise ValueError(str(exc)) from exc
        return self

    def terms_for(self, task: Task) -> list[LossTerm]:
        by_type = {"classification": self.classification, "multilabel": self.multilabel}
        return self.tasks.get(task.name) or by_type.get(task.type, self.regression)


class ExampleWeightsConfig(_Strict):
    """Per-example weights of a run's training rows: one column of a per-example column store."""

    store: str = Field(description="A per-example column store (`teachers/columns.py`; Meta-KD's prototypes or "
                       "expertise-weights stage writes one) made from this run's training rows.")
    column: str = Field(description="The column to weight each example's loss with, e.g. prototype_score or "
                        "expertise_weight.")


class TeacherRunConfig(_Strict):
    """A training run: `train-teacher` (gold labels) or `distill` (teacher signals + labels).

    Both go through the same loop; they differ only in the objective and whether a signal store is read.
    """

    kind: Literal["teacher", "distill"] = Field("teacher", description="teacher: gold labels only; "
                                                "distill: the objective may read teacher signals.")
    output_dir: str = Field(description="Run folder: model/, checkpoints/, metrics.json, tensorboard/.")
    model: ModelConfig = Field(description="The model trained: a teacher's encoder, or the student.")
    data: DataConfig = Field(description="Tasks, data files and the training subset.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training settings.")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig,
                                       description="Loss terms per task type / task (default: hard only).")
    signals: str | None = Field(None, description="Teacher-signal store (from `soft-targets`) for distillation.")
    online_teachers: list[str] = Field(default_factory=list, description="Teachers run on every training batch "
                                       "(model folders, or plain encoder folders/hub names when they only give "
                                       "features); they must share the student's tokenizer. They give the "
                                       "feature terms' teacher features, and the teacher logits unless `signals` "
                                       "(a store) gives those.")
    example_weights: ExampleWeightsConfig | None = Field(
        None, description="Weight each training example's loss (every term, before the batch mean) by a stored "
        "per-example column (Meta-KD's t_i or lambda_i); its rows, domains and data are checked against the run's.")

    @model_validator(mode="after")
    def _domain_branch_trained(self) -> TeacherRunConfig:
        if self.model.domain_branch is None:
            return self
        from multidistill.training.objective import reads_domain_branch  # it imports this module (and torch)

        if not reads_domain_branch(self.objective, self.data.task_names):
            raise ValueError("model.domain_branch: no term of the objective reads the domain branch's outputs (as "
                             "domain_adversarial and transferable_mse do), so the branch would be saved untrained "
                             "and its domains never checked; add such a term to the objective, or drop "
                             "model.domain_branch")
        return self


def _set_path(raw: dict, dotted: str, value: Any) -> None:
    """Set ``dotted`` in ``raw``; a mapping given for a section is merged into what the section already holds
    (`--set 'student.augment={max_examples: 1600}'` keeps the file's other augment settings); `{}` empties it."""
    parts = dotted.split(".")
    node = raw
    for i, key in enumerate(parts[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if isinstance(child, list):
            raise ConfigError(f"--set {dotted}: '{'.'.join(parts[: i + 1])}' is a list, whose items cannot be set "
                              f"one by one; give the whole list: --set {'.'.join(parts[: i + 1])}=[...]")
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    current = node.get(parts[-1])
    merge = isinstance(current, dict) and isinstance(value, dict) and value  # `{}` empties: the way to clear one
    node[parts[-1]] = merge_mappings(current, value) if merge else value


def merge_mappings(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, mappings inside merged the same way (lists, values and an empty mapping
    replace); `--set` and the demo's settings file both merge so."""
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        deeper = isinstance(current, dict) and isinstance(value, dict) and value
        merged[key] = merge_mappings(current, value) if deeper else value
    return merged


# One word with nothing YAML could read as structure (no space, bracket, brace, comma, quote, colon or comment).
_PLAIN_WORD = re.compile(r"[^\s\[\]{},'\"#:]+")


def parse_override_value(text: str):
    """The value of a ``--set key.path=value``, read as YAML (numbers, bools, lists, mappings); an empty value is
    the empty string. One plain word that YAML cannot read at all is that word as a string: ``@teacher`` (YAML
    reserves '@' and '`', so an unquoted ``@teacher`` is a scanner error there), ``|x``, ``%x``, ``*x``. A value
    YAML reads but refuses (``2021-02-30``, a ``!!tag``) stays an error."""
    if not text.strip():
        return ""
    try:
        return parse_yaml(text)
    except (yaml.scanner.ScannerError, yaml.parser.ParserError, yaml.composer.ComposerError):
        if _PLAIN_WORD.fullmatch(text.strip()):
            return text.strip()
        raise


def _quoting_hint(key: str, text: str) -> str:
    """How to give ``text`` as a string: in YAML's double quotes, inside the shell's single quotes."""
    if any(char in text for char in "'\"\\"):
        hint = "To set it as text, quote the value in YAML (inside the shell's own quotes), escaping its quotes."
    else:
        hint = f"To set it as text, quote the value in YAML (inside the shell's own quotes): --set '{key}=\"{text}\"'"
    if any(char in text for char in "@`"):  # YAML reserves both: no unquoted item may start with one
        hint += " An item of a list or mapping that starts with '@' or '`' needs its own quotes: [\"@teacher\"]."
    return hint


def apply_overrides(raw: dict, overrides: list[str] | str) -> dict:
    """Apply ``key.path=value`` strings (one str is one override); values are parsed as YAML (numbers, bools,
    lists) by `parse_override_value`. A key given twice is refused, naming both overrides (the last one won
    silently, as a YAML key given twice did); a key and one inside it (`a={...}` then `a.b=...`) merge in order."""
    seen: dict[str, str] = {}
    for index, item in enumerate(as_list(overrides, "overrides") or []):
        if not isinstance(item, str):
            raise TypeError(f"overrides[{index}] is a {type(item).__name__} ({item!r}); each override is one "
                            "\"key.path=value\" str, e.g. [\"train.lr=1e-3\"]")
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}': expected key.path=value")
        first = seen.get(key.strip())
        seen.setdefault(key.strip(), item)
        if first is not None:
            raise ConfigError(f"--set '{item}': key '{key.strip()}' is given twice (first by --set '{first}'); "
                              "keep one of them")
        try:
            value = parse_override_value(text)
        except RefusedValue as exc:
            raise ConfigError(f"--set '{item}': {exc.problem}") from exc
        except _YAML_ERRORS as exc:
            raise ConfigError(f"--set '{item}': value is not valid YAML: {exc}\n"
                              f"{_quoting_hint(key.strip(), text.strip())}") from exc
        _set_path(raw, key.strip(), value)
    return raw


MAX_CONFIG_VALUES = 100_000  # mappings, lists and scalars a config file may expand to through its aliases


def _unshared(value: Any, path: str, within: tuple[int, ...] = (), count: list[int] | None = None) -> Any:
    """``value`` with every mapping and list its own copy: YAML anchors and aliases (``&t`` ... ``*t``) load as one
    shared object, so a --set on one path would also change every path that aliases it. A container that holds
    itself, or aliases that expand past `MAX_CONFIG_VALUES` values, are refused (``path`` names the file)."""
    count = [0] if count is None else count
    count[0] += 1
    if count[0] > MAX_CONFIG_VALUES:
        raise ConfigError(f"{path}: its aliases expand to more than {MAX_CONFIG_VALUES:,} values; write the "
                          "config out without nesting aliases")
    if not isinstance(value, Mapping | list):
        return value
    if id(value) in within:
        raise ConfigError(f"{path}: an alias refers to a mapping or list that contains it (a recursive alias)")
    within = (*within, id(value))
    if isinstance(value, Mapping):  # a Python caller's mapping may be another Mapping than dict
        return {key: _unshared(item, path, within, count) for key, item in value.items()}
    return [_unshared(item, path, within, count) for item in value]


SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"
"""The configs shipped in the package (a clone's `configs/` links here); `pkg:multidistill/configs/<file>`."""


def _shipped_config_hint(path: Path) -> str:
    """For a config file that does not exist: the shipped config of the same name, in its `pkg:` form."""
    if path.name and (SHIPPED_CONFIGS / path.name).is_file():
        return f"; the package ships it as {PACKAGE_PREFIX}multidistill/configs/{path.name}"
    if str(path).startswith(f"{PACKAGE_PREFIX}multidistill/configs/"):
        names = ", ".join(sorted(p.name for p in SHIPPED_CONFIGS.glob("*.yaml")))
        return f"; the package ships: {names}"
    return ""


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with errors that name the file and line. ``pkg:<package>/<file>`` names a file
    inside an installed package (`pkg:multidistill/configs/tiny.yaml`: a shipped config)."""
    spec = str(path)
    try:
        path = Path(resolve_path(spec, file=True))
    except MultidistillError as exc:
        raise ConfigError(f"config file {exc}{_shipped_config_hint(Path(spec))}") from exc
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give the YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist{_shipped_config_hint(path)}")
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from exc
    except _YAML_ERRORS as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(raw).__name__}")
    return _unshared(raw, str(path))


ConfigT = TypeVar("ConfigT", bound=BaseModel)
ConfigSource = str | os.PathLike | Mapping | BaseModel


@overload
def load_config(source: ConfigSource, overrides: list[str] | str | None = None) -> TeacherRunConfig: ...


@overload
def load_config(source: ConfigSource, overrides: list[str] | str | None = None, *,
                schema: type[ConfigT]) -> ConfigT: ...


def load_config(source: ConfigSource, overrides: list[str] | str | None = None,
                schema: type[BaseModel] = TeacherRunConfig) -> BaseModel:
    """Load ``source`` into ``schema`` (a `TeacherRunConfig` unless another is given) after applying
    ``--set``-style ``overrides``; raises ConfigError naming bad keys. ``source`` is a YAML file's path, a mapping
    of the same keys, or a config object (checked again, so one edited in Python is validated too); anything else
    is a TypeError, as is an override that is not a ``"key.path=value"`` str."""
    overrides = as_list(overrides, "overrides") or []
    if isinstance(source, str | os.PathLike):
        raw, label = read_yaml(source), str(source)
    elif isinstance(source, BaseModel):
        raw, label = given_settings(source), f"the {type(source).__name__} given"
    elif isinstance(source, Mapping):  # copied: overrides never change the caller's mapping
        raw, label = _unshared(source, "the config mapping"), "the config mapping"
    else:
        raise TypeError(f"a config is a YAML file's path, a mapping or a {schema.__name__}, not "
                        f"{type(source).__name__}")
    raw = apply_overrides(raw, overrides)
    try:
        config = schema.model_validate(raw)
    except ValidationError as exc:
        if "recipe" in raw and "recipe" not in schema.model_fields:  # not a line per recipe key it does not know
            what = ("the config of a single training run (train-teacher, distill)" if schema is TeacherRunConfig
                    else f"a {schema.__name__}")
            raise ConfigError(f"{label}: a recipe config (top-level key 'recipe: {raw['recipe']}'), not {what}; "
                              "run it with `multidistill run` (multidistill.run in Python)") from exc
        raise ConfigError(format_validation_error(exc, label, overrides, schema)) from exc
    refuse_joined_overrides(config, overrides)
    return config


def changed_fields(config: BaseModel) -> set[str]:
    """The fields of ``config`` given a value other than their default: what a "not used" note may name. A config
    read back from a run's recorded YAML gives every field, most at their defaults; those are not the user's
    choice, so a note naming them would be noise."""
    fields = type(config).model_fields
    return {name for name in config.model_fields_set
            if getattr(config, name) != fields[name].get_default(call_default_factory=True)}


def given_settings(config: BaseModel) -> dict:
    """What ``config`` holds that was given or is not a default, at every level: validated again, it is the same
    config with the same `model_fields_set` ("not used" notes read it: a full `model_dump` would count every field
    as given). A default changed in place (`recipe.signals.batch_size = 7`, signals left out) is kept, as given."""
    return _union(config.model_dump(exclude_unset=True), config.model_dump(exclude_defaults=True))


def _union(given: Any, changed: Any) -> Any:
    """``given`` plus what only ``changed`` holds, mappings merged at every level."""
    if not (isinstance(given, dict) and isinstance(changed, dict)):
        return given
    return {**changed, **{key: _union(value, changed[key]) if key in changed else value
                          for key, value in given.items()}}


def revalidated(config: ConfigT) -> ConfigT:
    """``config`` checked again as a whole: `model_copy(update=...)` (the usual way to edit a config in Python)
    skips pydantic's validation, so a run would start with settings that its own recorded config.yaml then refuses.
    The fields it was given stay its given ones (`given_settings`). Raises ConfigError naming each bad key."""
    try:
        return type(config).model_validate(given_settings(config))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{type(config).__name__} given to the run",
                                                  schema=type(config))) from exc
