"""`MultiTaskModel`: one shared encoder, one head per task, saved as safetensors + JSON.

Loading never unpickles: weights come from safetensors, the architecture from JSON configs.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError, UnknownTaskError
from multidistill.models.backbone import backbone_from_config, load_backbone, max_positions
from multidistill.models.domain_branch import DomainBranch, DomainBranchSpec, content_embedding
from multidistill.models.extract import Wanted, check_wanted, encode_with_features, with_features, without_features
from multidistill.models.families import model_dims
from multidistill.models.features import DOMAIN_FEATURES, FEATURE_NAMES, EncoderFeatures, ModelDims
from multidistill.models.heads import build_head, check_activation
from multidistill.utils.atomic import atomic_dir
from multidistill.utils.interrupt import raise_if_interrupted
from multidistill.utils.manifest import read_versioned_json
from multidistill.utils.paths import name_problem, not_a_folder

MODEL_CONFIG_FILE = "multidistill_model.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
# A model whose heads carry a stock classifier's dense layer (head_activation) is written as version 2, so that a
# multidistill that predates such heads refuses the folder by its format instead of failing on unexpected weights.
STOCK_HEAD_FORMAT_VERSION = 2
# A model whose multilabel heads have decision thresholds saved beside them (`evaluation.thresholds`) is written as
# version 3, so that a multidistill that predates them refuses the folder instead of predicting at 0.5.
THRESHOLDS_FORMAT_VERSION = 3
READ_FORMAT_VERSIONS = (FORMAT_VERSION, STOCK_HEAD_FORMAT_VERSION, THRESHOLDS_FORMAT_VERSION)

Pooling = Literal["cls", "mean"]


def format_version(head_activation: str | None) -> int:
    """The format version a model folder is written with (without saved thresholds)."""
    return STOCK_HEAD_FORMAT_VERSION if head_activation else FORMAT_VERSION


@dataclass
class MultiTaskOutput:
    """What every backbone + head returns; losses read these fields by name.

    ``logits``: the task head's output, (batch, num_labels) (a regression head: (batch, 1)); ``pooled``: the
    vector the head read ([CLS] or mean pooling); ``last_hidden_state``: the encoder's token vectors;
    ``hidden_states`` / ``attentions``: per layer, when the encoder returned them; ``features``: what a feature loss
    asked for (`EncoderFeatures`)."""

    logits: torch.Tensor
    pooled: torch.Tensor
    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    # Set when the forward was asked for features (``want``); then ``last_hidden_state`` may be None.
    features: EncoderFeatures | None = None


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """First-token ([CLS]) vector or the mask-weighted mean of the token vectors."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class SavedModel(nn.Module):
    """Shared by every model kind: `save_pretrained` writes the kind's files (`write_to`) atomically."""

    # The data root the model was trained with (absolute, or a `pkg:` root), saved in MODEL_CONFIG_FILE so that
    # evaluate/benchmark/export find the same files without --data-root while the folder still exists.
    data_root: str | None = None

    # Inputs are truncated at the training length (`max_length`); a model that records none at this many tokens,
    # or fewer where its positions end.
    DEFAULT_INFERENCE_LENGTH = 128

    @property
    def inference_length(self) -> int:
        """The length evaluation, prediction and the exports truncate inputs at (`DEFAULT_INFERENCE_LENGTH`)."""
        return self.max_length or min(self.DEFAULT_INFERENCE_LENGTH, self.max_seq_length
                                      or self.DEFAULT_INFERENCE_LENGTH)

    def _saved_data_root(self) -> dict:
        return {"data_root": self.data_root} if self.data_root else {}

    def _load_data_root(self, config: dict) -> None:
        recorded = config.get("data_root")
        self.data_root = recorded if isinstance(recorded, str) and recorded else None

    def write_to(self, folder: Path, tokenizer=None) -> None:
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path, tokenizer=None) -> None:
        """Save atomically: a crash mid-save leaves the previous folder (if any) intact. Decision thresholds a loaded
        folder had (`evaluation.thresholds`) are not written: they belong to the folder they were chosen in."""
        with atomic_dir(directory) as tmp:
            self.write_to(tmp, tokenizer)


class MultiTaskModel(SavedModel):
    """A Hugging Face encoder shared by all tasks, with one head per task in ``heads``, and optionally Meta-KD's
    domain branch (``domain_branch``: trained and saved with the model, never exported)."""

    def __init__(self, backbone: PreTrainedModel, tasks: list[Task], *, pooling: Pooling = "cls",
                 dropout: float = 0.1, max_length: int | None = None,
                 domain_branch: DomainBranchSpec | None = None, head_activation: str | None = None) -> None:
        super().__init__()
        # None: linear heads (ours); an activation name: the stock classifiers' dense layer + that activation first
        # (a classifier brought in by `import-classifier`, or a student given its heads by heads_from).
        self.head_activation = check_activation(head_activation)
        self.max_length = max_length  # the truncation length used in training; the default for inference
        self.backbone = backbone
        self.tasks = {task.name: task for task in tasks}
        self.pooling = pooling
        self.dropout = dropout
        # DistilBERT-style encoders take no segment ids; RoBERTa-style ones have a single segment.
        self._uses_token_types = ("token_type_ids" in inspect.signature(backbone.forward).parameters
                                  and getattr(backbone.config, "type_vocab_size", 2) > 1)
        hidden = backbone.config.hidden_size
        # Text tasks (unlabelled corpora) feed feature losses through `features`; they get no head.
        self.heads = nn.ModuleDict({task.name: build_head(task, hidden, dropout, self.head_activation)
                                    for task in tasks if task.has_head})
        self.domain_branch = DomainBranch(domain_branch, hidden) if domain_branch is not None else None

    @classmethod
    def from_backbone(cls, name_or_path: str, tasks: list[Task], *, pooling: Pooling = "cls",
                      dropout: float = 0.1, max_length: int | None = None, trust_remote_code: bool = False,
                      domain_branch: DomainBranchSpec | None = None) -> MultiTaskModel:
        """Fresh heads (and domain branch, if given) on a pretrained encoder loaded with `AutoModel.from_pretrained`."""
        return cls(load_backbone(name_or_path, trust_remote_code=trust_remote_code), tasks,
                   pooling=pooling, dropout=dropout, max_length=max_length, domain_branch=domain_branch)

    @property
    def max_seq_length(self) -> int | None:
        return max_positions(self.backbone.config)

    def check_max_length(self, length: int, setting: str) -> None:
        """Refuse a truncation length beyond the encoder's positions; ``setting`` names where it came from."""
        limit = self.max_seq_length
        if limit is not None and length > limit:
            raise ModelError(f"{setting}: {length} exceeds the model's limit of {limit} positions; "
                             f"set it to {limit} or less")

    def head_type(self, task: str) -> nn.Module:
        if task in self.tasks and not self.tasks[task].has_head:
            raise ConfigError(f"task '{task}' is a text task (unlabelled text): it has no head and no logits; "
                              "only feature losses can train on it")
        if task not in self.heads:
            raise UnknownTaskError(f"the model has no head for task '{task}'; it has: {', '.join(self.heads)}")
        return self.heads[task]

    def forward(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False, want: Wanted | None = None,
                domain_ids: torch.Tensor | None = None) -> MultiTaskOutput:
        """``task``'s logits. With ``want`` (feature names, see `features`) the same single forward also fills
        ``features``; the objective asks this way so that a DDP wrapper's forward hooks see the whole pass.
        ``domain_ids`` (B,) feed the domain branch when ``want`` names its outputs."""
        if want and task in self.tasks and not self.tasks[task].has_head:
            # A text task (general distillation): the features its terms asked for, no head, no logits.
            return output_with_features(self.features(None, input_ids, attention_mask, token_type_ids, want=want,
                                                      domain_ids=domain_ids))
        head = self.head_type(task)
        if want:
            return output_with_features(self.features(task, input_ids, attention_mask, token_type_ids,
                                                      want=with_features(want, "logits", "pooled"),
                                                      domain_ids=domain_ids))
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None and self._uses_token_types else {}
        encoded = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                output_hidden_states=output_hidden_states,
                                output_attentions=output_attentions, **kwargs)
        pooled = pool(encoded.last_hidden_state, attention_mask, self.pooling)
        return MultiTaskOutput(
            logits=head(pooled), pooled=pooled, last_hidden_state=encoded.last_hidden_state,
            hidden_states=encoded.hidden_states if output_hidden_states else None,
            attentions=encoded.attentions if output_attentions else None,
        )

    # --- feature distillation ----------------------------------------------------------------

    def model_dims(self) -> ModelDims:
        """The encoder's sizes, read from its config through the family table (`models/families.py`)."""
        return model_dims(self.backbone.config)

    def features(self, task: str | None, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None, *, want: Wanted,
                 domain_ids: torch.Tensor | None = None) -> EncoderFeatures:
        """The wanted features (any of FEATURE_NAMES and, with a domain branch, DOMAIN_FEATURES, or a mapping of
        them to layer numbers) of one batch, from one forward pass.

        ``logits`` are ``task``'s head output; ``pooled`` is the vector the heads read. ``task`` may be None
        when neither is wanted (unlabelled text). ``transferable`` and ``domain_logits`` come from the domain
        branch on the batch's ``domain_ids`` (B,). Everything not wanted is None and is not computed.
        """
        requested, want = want, check_wanted(want, FEATURE_NAMES + DOMAIN_FEATURES, "MultiTaskModel")
        if "logits" in want and task is None:
            raise ConfigError("the 'logits' feature needs a task (whose head gives them); unlabelled text has none")
        head = self.head_type(task) if "logits" in want else None
        from_branch = sorted(want & set(DOMAIN_FEATURES))
        branch = self.require_domain_branch(from_branch) if from_branch else None
        encoded, features = encode_with_features(self.backbone, input_ids, attention_mask, token_type_ids,
                                                 want=without_features(requested, "logits", "pooled",
                                                                       *DOMAIN_FEATURES))
        if want & {"logits", "pooled"}:
            pooled = pool(encoded.last_hidden_state, attention_mask, self.pooling)
            features.pooled = pooled if "pooled" in want else None
            features.logits = head(pooled) if head is not None else None
        if branch is not None:
            transferable, domain_logits = branch(content_embedding(encoded.last_hidden_state, attention_mask),
                                                 domain_ids)
            features.transferable = transferable if "transferable" in want else None
            features.domain_logits = domain_logits if "domain_logits" in want else None
        return features

    def require_domain_branch(self, wanted: list[str]) -> DomainBranch:
        """The domain branch, or a clear error naming what to configure (``wanted``: the outputs asked for)."""
        if self.domain_branch is None:
            raise ConfigError(f"{wanted} come from a Meta-KD domain branch, and this model has none: configure "
                              "`model.domain_branch: {domains: [...]}` (the task's domains, sorted) when training "
                              "it, or use a model folder saved with one (a meta-teacher)")
        return self.domain_branch

    # --- persistence -------------------------------------------------------------------------

    def _config_dict(self) -> dict:
        return {
            "format_version": format_version(self.head_activation),
            "kind": "multitask",
            "backbone": {"type": "hf", "pooling": self.pooling, "dropout": self.dropout,
                         # only when set, so the config of a model with linear heads is what it always was
                         **({"head_activation": self.head_activation} if self.head_activation else {})},
            "max_length": self.max_length,
            "tasks": [task.model_dump(mode="json") for task in self.tasks.values()],
            **self._saved_data_root(),
            # Meta-KD's domain branch (weights under `domain_branch.`): recorded so that loading rebuilds it.
            **({"domain_branch": self.domain_branch.spec.model_dump(mode="json")} if self.domain_branch else {}),
        }

    def write_to(self, folder: Path, tokenizer=None) -> None:
        """Write weights, configs and tokenizer into an existing (temporary) folder."""
        save_model(self, str(folder / WEIGHTS_FILE))
        self.backbone.config.save_pretrained(folder)
        (folder / MODEL_CONFIG_FILE).write_text(json.dumps(self._config_dict(), indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, trust_remote_code: bool = False) -> MultiTaskModel:
        """Load a folder written by `save_pretrained`; validates it first, never unpickles."""
        directory = Path(directory)
        config = read_model_config(directory, kind="multitask")
        try:
            backbone_config = AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{directory / 'config.json'}: unreadable backbone config: {exc}") from exc
        try:
            tasks = [Task.model_validate(spec) for spec in config["tasks"]]
            pooling, dropout = config["backbone"]["pooling"], float(config["backbone"]["dropout"])
            if pooling not in ("cls", "mean"):
                raise ValueError(f"backbone.pooling must be 'cls' or 'mean', not {pooling!r}")
            activation = check_activation(config["backbone"].get("head_activation"))
            branch = config.get("domain_branch")
            branch = DomainBranchSpec.model_validate(branch) if branch is not None else None
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise ModelError(f"{directory / MODEL_CONFIG_FILE}: invalid model config: {type(exc).__name__}: "
                             f"{exc}") from exc
        model = build_and_load(
            lambda: cls(backbone_from_config(backbone_config), tasks, pooling=pooling, dropout=dropout,
                        max_length=config.get("max_length"), domain_branch=branch, head_activation=activation),
            directory / WEIGHTS_FILE)
        model._load_data_root(config)
        return model


def output_with_features(features: EncoderFeatures) -> MultiTaskOutput:
    """A forward's output built from features that include logits and pooled."""
    hidden = features.hidden_states[-1] if features.hidden_states is not None else None
    return MultiTaskOutput(logits=features.logits, pooled=features.pooled, last_hidden_state=hidden,
                           features=features)


# Files every folder of a model kind needs besides MODEL_CONFIG_FILE; the kind is read from that file.
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "multitask": (WEIGHTS_FILE, "config.json"),  # config.json: the Hugging Face backbone config
    "bilstm": (WEIGHTS_FILE,),
}


def _what_folder(directory: Path) -> str:
    """A hint for a folder given where a model folder was wanted: a run folder or an export is a common slip."""
    if (directory / "model" / MODEL_CONFIG_FILE).is_file():
        return f"a run folder: its model is {directory / 'model'}"
    export = directory / "export.json"
    if export.is_file():
        try:
            meta = json.loads(export.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        source = f" of {meta['source']}" if isinstance(meta, dict) and meta.get("source") else ""
        kind = meta.get("kind") if isinstance(meta, dict) else None
        back = "; a Hugging Face classifier comes back with `multidistill import-classifier`" if kind == "hf" else ""
        return (f"an {kind or 'export'} export{source}; this command takes the multidistill model folder "
                f"(predict also takes an ONNX export){back}")
    return "is this a multidistill model folder?"


def read_model_config(directory: Path, kind: str | None = None) -> dict:
    """Check a model folder has every file its kind needs and return its multidistill config.

    ``kind``, when given, is the kind the caller can load; a folder holding another kind is refused.
    """
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} {not_a_folder(directory)}")
    config_path = directory / MODEL_CONFIG_FILE
    if not config_path.is_file():
        # Without the config the kind is unknown: name what the caller's kind (if any) would need too.
        expected = (MODEL_CONFIG_FILE, *REQUIRED_FILES.get(kind or "", (WEIGHTS_FILE,)))
        missing = [name for name in expected if not (directory / name).is_file()]
        raise ModelError(f"model directory {directory} is missing {', '.join(missing)} "
                         f"({_what_folder(directory)})")
    config = read_versioned_json(config_path, READ_FORMAT_VERSIONS, ModelError)
    found = config.get("kind", "multitask")  # older folders may predate the field
    if found not in REQUIRED_FILES:
        raise ModelError(f"{config_path}: unknown model kind {found!r} (known: {', '.join(REQUIRED_FILES)})")
    if kind is not None and found != kind:
        raise ModelError(f"{config_path}: the folder holds a {found!r} model, not a {kind!r} one; "
                         "load it with multidistill.models.load_model")
    missing = [name for name in REQUIRED_FILES[found] if not (directory / name).is_file()]
    if missing:
        raise ModelError(f"model directory {directory} is missing {', '.join(missing)}")
    if not isinstance(config.get("tasks"), list) or not all(isinstance(spec, dict) for spec in config["tasks"]):
        raise ModelError(f"{config_path}: key 'tasks' must be a list of task specs (the model's heads)")
    for spec in config["tasks"]:  # task names become folder names (caches, signal stores): checked as they enter
        if (problem := name_problem(spec.get("name"))) is not None:
            raise ModelError(f"{config_path}: key 'tasks', task name {problem}")
    return config


def read_model_tasks(directory: Path) -> list[Task]:
    """The task specs (heads) of the model folder ``directory``, validated; a bad spec is a ModelError naming the
    file and the task."""
    config_path = Path(directory) / MODEL_CONFIG_FILE
    tasks = []
    for index, spec in enumerate(read_model_config(Path(directory))["tasks"]):
        try:
            tasks.append(Task.model_validate(spec))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ModelError(f"{config_path}: key 'tasks.{index}' is not a valid task spec: {exc}") from exc
    return tasks


def build_and_load(build: Callable[[], nn.Module], path: Path) -> nn.Module:
    """``build()`` with the safetensors weights at ``path``, after their shapes were checked without memory.

    The model is first built on the meta device: a config that names, say, a vocabulary of 10^9 rows is refused by
    the shape check before anything of that size is allocated (a crafted or mixed-up folder cannot exhaust memory).
    """
    with torch.device("meta"):
        check_weight_shapes(build(), path)
    model = build()
    load_weights(model, path, shapes_checked=True)  # the same build: its shapes were just checked
    return model


def check_weight_shapes(model: nn.Module, path: Path) -> None:
    """Refuse a safetensors file whose tensors do not fit ``model`` (reads only the file's header)."""
    try:
        with safe_open(str(path), framework="pt") as handle:  # reads only the header: names, shapes
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise_if_interrupted(exc)
        raise ModelError(f"{path}: cannot read weights ({exc}); the file is corrupt or not safetensors") from exc
    # In the model's own order, so the first mismatches named are the first layers (embeddings, encoder).
    wrong = [f"size mismatch for {name}: {list(shapes[name])} in the file, {list(tensor.shape)} in the model"
             for name, tensor in model.state_dict().items() if name in shapes and tuple(tensor.shape) != shapes[name]]
    if wrong:
        more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
        raise ModelError(f"{path}: weights do not match the model that {MODEL_CONFIG_FILE} describes: "
                         f"{'; '.join(wrong[:3])}{more}; were the weights copied from another model?")


def load_weights(model: nn.Module, path: Path, *, shapes_checked: bool = False) -> None:
    """Load safetensors weights strictly, turning corrupt or mismatched files into a ModelError."""
    if not shapes_checked:
        check_weight_shapes(model, path)
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as exc:  # a file cut inside its tensor data fails here, after its header read fine
        raise_if_interrupted(exc)
        raise ModelError(f"{path}: cannot read weights ({exc}); the file is corrupt or not safetensors") from exc
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not match the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
