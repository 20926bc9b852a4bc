"""Build the model a run config asks for: a HF encoder (whole or some layers), a BiLSTM, or a saved model."""

from __future__ import annotations

from pathlib import Path

import transformers
from torch import nn
from transformers import PreTrainedModel

from multidistill.config import ModelConfig
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError
from multidistill.models.backbone import backbone_from_config, load_backbone, resolve_model_path
from multidistill.models.bilstm import BiLSTMModel
from multidistill.models.domain_branch import DomainBranch
from multidistill.models.heads import build_head
from multidistill.models.layers import LAYER_COUNT_KEYS, keep_layers, layer_count
from multidistill.models.loading import load_model
from multidistill.models.multitask import MODEL_CONFIG_FILE, MultiTaskModel
from multidistill.utils.suggest import closest_name


def load_encoder(name_or_path: str, *, trust_remote_code: bool = False) -> PreTrainedModel:
    """A pretrained HF encoder, or the encoder inside a multidistill model folder (e.g. a trained teacher)."""
    folder = Path(name_or_path)
    if (folder / MODEL_CONFIG_FILE).is_file():
        model = load_model(folder, trust_remote_code=trust_remote_code)
        if not isinstance(model, MultiTaskModel):
            raise ConfigError(f"key 'model.name_or_path': {folder} holds a {type(model).__name__}, "
                              "not a Transformer encoder")
        return model.backbone
    return load_backbone(name_or_path, trust_remote_code=trust_remote_code)


def _from_saved(config: ModelConfig, tasks: list[Task]) -> nn.Module:
    model = load_model(config.init_from, trust_remote_code=config.trust_remote_code)
    refuse_contradicting_settings(config, model)
    for task in tasks:
        have = model.tasks.get(task.name)
        if have is None:
            raise ConfigError(f"key 'model.init_from': {config.init_from} has no head for task '{task.name}' "
                              f"(it has {sorted(model.tasks)})")
        if have.num_labels != task.num_labels:
            raise ConfigError(f"task '{task.name}': {config.init_from} has {have.num_labels} outputs, the run's "
                              f"task has {task.num_labels}")
        if have.type != task.type:  # a softmax-trained head read as sigmoids (or the reverse) would pass unnoticed
            raise ConfigError(f"key 'model.init_from': task '{task.name}' is {task.type} here, but its head in "
                              f"{config.init_from} is {have.type}")
    wanted = {task.name for task in tasks}
    for name in [n for n in model.heads if n not in wanted]:
        del model.heads[name]
    model.tasks = {task.name: task for task in tasks}
    model.max_length = config.max_seq_length
    if config.domain_branch is not None:
        _attach_domain_branch(model, config)
    return model


def refuse_contradicting_settings(config: ModelConfig, model: nn.Module) -> None:
    """init_from brings the saved model's architecture, so a setting beside it that says otherwise would be
    ignored: it is refused by key instead. A setting at its default, or equal to the saved model's, passes
    (recipes copy a student's whole config into its fine-tune stage, and saved run configs write every field)."""
    defaults = ModelConfig.model_fields
    where = f"model.init_from {config.init_from}"
    keeps = "a saved model keeps the architecture it was built with: drop the key, or build a new one without init_from"

    def refuse(key: str, given, saved) -> None:
        raise ConfigError(f"key 'model.{key}': {given!r}, but {where} holds a model with {key} {saved!r}; {keeps}")

    if isinstance(model, BiLSTMModel):
        if config.architecture != defaults["architecture"].default and config.architecture != "bilstm":
            refuse("architecture", config.architecture, "bilstm")
        if config.bilstm != defaults["bilstm"].default_factory() and config.bilstm != model.spec:
            refuse("bilstm", config.bilstm.model_dump(), model.spec.model_dump())
        return
    if config.architecture == "bilstm":
        refuse("architecture", config.architecture, "hf")
    if config.pooling != defaults["pooling"].default and config.pooling != model.pooling:
        refuse("pooling", config.pooling, model.pooling)
    if config.dropout != defaults["dropout"].default and config.dropout != model.dropout:
        refuse("dropout", config.dropout, model.dropout)
    saved = model.backbone.config
    if config.student_layers is not None and len(config.student_layers) != layer_count(saved):
        kept, have = len(config.student_layers), layer_count(saved)
        raise ConfigError(f"key 'model.student_layers': {config.student_layers} keeps {kept} layer{'s' * (kept != 1)}, "
                          f"but {where} holds a model of {have} layer{'s' * (have != 1)}; {keeps}")
    for key, value in (config.backbone_config or {}).items():
        have = getattr(saved, key, None)
        if config.student_layers is not None and key in LAYER_COUNT_KEYS:
            continue  # the stack was cut to student_layers after it was built (checked above)
        # Scalars only: HF rewrites some list/dict settings on load (per-layer lists shrink with the stack).
        if isinstance(value, (bool, int, float, str)) and value != have:
            refuse(f"backbone_config.{key}", value, have)


def _attach_domain_branch(model: nn.Module, config: ModelConfig) -> None:
    """Keep a saved model's domain branch when it lists the configured domains; add a fresh one when it has none."""
    if not isinstance(model, MultiTaskModel):
        raise ConfigError(f"key 'model.domain_branch': {config.init_from} holds a {type(model).__name__}, which "
                          "cannot carry a domain branch")
    saved = model.domain_branch
    if saved is None:
        model.domain_branch = DomainBranch(config.domain_branch, model.backbone.config.hidden_size)
    elif saved.spec.domains != config.domain_branch.domains:
        raise ConfigError(f"key 'model.domain_branch.domains': {config.domain_branch.domains}, but "
                          f"{config.init_from} has a domain branch over {saved.spec.domains}; drop the key to keep "
                          "the saved branch, or list the same domains")


def student_config(config: ModelConfig) -> transformers.PretrainedConfig:
    """The HF config of a randomly initialised encoder (``model.backbone_config``): with a `model_type`, that
    family's defaults plus the given sizes; without one, name_or_path's own config (a teacher's family, its
    vocabulary and position limit) with the given sizes replacing its own (e.g. fewer layers, a smaller width)."""
    built = _student_config(config)
    from multidistill.models.families import quirks_of, unmet_need  # families imports the model modules

    problem = unmet_need(built, quirks_of(built).needs)
    if problem:  # it would fail on its first batch, inside transformers
        raise ConfigError(f"key 'model.backbone_config': a '{built.model_type}' encoder built from it cannot run on "
                          f"text batches: {problem}")
    return built


def _student_config(config: ModelConfig) -> transformers.PretrainedConfig:
    spec = dict(config.backbone_config or {})
    model_type = spec.pop("model_type", None)
    if model_type is not None:
        if model_type not in transformers.CONFIG_MAPPING:  # transformers' error lists ~500 names; no ConfigError
            close = closest_name(str(model_type), transformers.CONFIG_MAPPING.keys())
            raise ConfigError(f"key 'model.backbone_config.model_type': '{model_type}' is not a model family of the "
                              f"installed transformers {transformers.__version__}"
                              + (f"; did you mean '{close}'?" if close else "; a newer transformers may have it (a "
                                 "family with code of its own: leave model_type out and name the model in "
                                 "model.name_or_path, with model.trust_remote_code)"))
        return transformers.AutoConfig.for_model(model_type, **spec)
    path = resolve_model_path(config.name_or_path)
    try:
        base = transformers.AutoConfig.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"key 'model.backbone_config': no model_type given, so the family comes from "
                          f"model.name_or_path '{config.name_or_path}', whose config cannot be read ({exc}); "
                          "add model_type (e.g. bert)") from exc
    unknown = sorted(key for key in spec if not hasattr(base, key))
    if unknown:
        raise ConfigError(f"key 'model.backbone_config': {unknown} are not settings of a '{base.model_type}' "
                          f"config (from {config.name_or_path})")
    for key, value in spec.items():
        setattr(base, key, value)
    return base


def build_model(config: ModelConfig, tasks: list[Task], tokenizer=None) -> nn.Module:
    """The model for a run; ``tokenizer`` sizes a BiLSTM's vocabulary."""
    if config.init_from is not None:
        return _from_saved(config, tasks)
    if config.architecture == "bilstm":
        if tokenizer is None:
            raise ConfigError("a BiLSTM student needs a tokenizer (model.name_or_path or model.tokenizer)")
        embeddings = None
        if config.bilstm.init_embeddings:  # (ModelConfig refuses a BiLSTM's backbone_config)
            encoder = load_encoder(config.name_or_path, trust_remote_code=config.trust_remote_code)
            embeddings = encoder.get_input_embeddings().weight.detach()
        return BiLSTMModel.from_tokenizer(config.bilstm, tasks, tokenizer, max_length=config.max_seq_length,
                                          teacher_embeddings=embeddings)
    if config.backbone_config is not None:
        backbone = backbone_from_config(student_config(config))
    else:
        backbone = load_encoder(config.name_or_path, trust_remote_code=config.trust_remote_code)
    if config.student_layers is not None:
        backbone = keep_layers(backbone, config.student_layers)
    model = MultiTaskModel(backbone, tasks, pooling=config.pooling, dropout=config.dropout,
                           max_length=config.max_seq_length, domain_branch=config.domain_branch)
    if config.heads_from is not None:
        copy_heads(model, config.heads_from, trust_remote_code=config.trust_remote_code)
    return model


def copy_heads(model: MultiTaskModel, source: str, *, trust_remote_code: bool = False) -> None:
    """Start each of ``model``'s task heads from the same task's head in the saved model ``source``
    (``model.heads_from``); a task it lacks, or a head of another type or size, is a ConfigError. The heads
    take the source's layout: a classifier brought in with `import-classifier` has a dense layer and an
    activation before its linear layer, and the student's heads get them too."""
    saved = load_model(source, trust_remote_code=trust_remote_code)
    if not isinstance(saved, MultiTaskModel):
        raise ConfigError(f"key 'model.heads_from': {source} holds a {type(saved).__name__}, not a Transformer "
                          "model with task heads")
    if saved.head_activation != model.head_activation:
        hidden = model.backbone.config.hidden_size
        model.head_activation = saved.head_activation
        for name in list(model.heads):
            model.heads[name] = build_head(model.tasks[name], hidden, model.dropout, saved.head_activation)
    for name, head in model.heads.items():
        theirs = saved.tasks.get(name)
        ours = model.tasks[name]
        if theirs is None or name not in saved.heads:
            raise ConfigError(f"key 'model.heads_from': {source} has no head for task '{name}' (it has "
                              f"{sorted(saved.heads)}); drop heads_from or give a model trained on that task")
        if (theirs.type, theirs.num_labels) != (ours.type, ours.num_labels):
            raise ConfigError(f"key 'model.heads_from': task '{name}' is {ours.type} with {ours.num_labels} "
                              f"outputs here, but {theirs.type} with {theirs.num_labels} in {source}")
        try:
            head.load_state_dict(saved.heads[name].state_dict())
        except RuntimeError as exc:  # e.g. another hidden size
            raise ConfigError(f"key 'model.heads_from': the '{name}' head of {source} does not fit this model "
                              f"({str(exc).splitlines()[-1].strip()}); its encoder must have the same width") from exc
