"""Hugging Face encoder backbones: load any `AutoModel` by name or path, or build one from a config."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel

from multidistill.errors import ModelError, MultidistillError
from multidistill.utils.interrupt import raise_if_interrupted
from multidistill.utils.paths import resolve_path


def resolve_model_path(name_or_path: str) -> str:
    """A model folder or hub name; `pkg:<module>/<dir>` resolves into an installed package. A name that can only
    be a local path (absolute, ./ ../ ~, or more than one '/': a hub id is <owner>/<name>) must exist as a folder;
    otherwise Hugging Face would answer with a hub error about a repo id."""
    try:
        path = resolve_path(name_or_path)
    except MultidistillError as exc:
        raise ModelError(f"model {exc}") from exc
    local = Path(path).expanduser()
    try:
        is_file, exists = local.is_file(), local.exists()
    except OSError as exc:  # ENAMETOOLONG and the like: it cannot name a folder (and is no hub id either)
        raise ModelError(f"model '{name_or_path[:60]}...': not a usable folder name ({exc.strerror})") from exc
    if is_file:
        raise ModelError(f"model '{name_or_path}': {local} is a file, not a model folder")
    if not exists and (local.is_absolute() or path.startswith(("./", "../", "~")) or path.count("/") > 1):
        raise ModelError(f"model '{name_or_path}': no such folder ({local.absolute()})")
    return str(local) if path.startswith("~") else path  # transformers does not expand ~


def _not_found_hint(name_or_path: str, path: str) -> str:
    """For a name that could be a hub id or a relative folder and is neither here: say the folder is missing too."""
    try:
        return "" if Path(path).exists() else f" (and there is no local folder {Path(path).absolute()})"
    except OSError:
        return ""


def _model_kwargs(model_cls: type) -> dict[str, Any]:
    # The BERT-style pooler is never used (heads pool themselves); leaving it out avoids
    # parameters without gradients, which DDP rejects.
    if "add_pooling_layer" in inspect.signature(model_cls.__init__).parameters:
        return {"add_pooling_layer": False}
    return {}


def load_backbone(name_or_path: str, *, trust_remote_code: bool = False) -> PreTrainedModel:
    """Load pretrained encoder weights with `AutoModel.from_pretrained`."""
    path = resolve_model_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        from multidistill.models.families import quirks_of, unmet_need  # families imports this module

        problem = unmet_need(config, quirks_of(config).needs)
        if problem:  # it would fail on its first batch, inside transformers
            raise ModelError(f"cannot use backbone '{name_or_path}': {problem}")
        model_cls = AutoModel._model_mapping[type(config)]
        return own_storage(AutoModel.from_pretrained(
            path, config=config, trust_remote_code=trust_remote_code, **_model_kwargs(model_cls)
        ))
    except Exception as exc:
        raise_if_interrupted(exc)
        # A folder with only pickled weights is refused by torch's weights_only loader (UnpicklingError);
        # say so plainly instead of a traceback. Other errors are bugs and propagate.
        if type(exc).__name__ == "UnpicklingError":
            pickled = sorted(p.name for p in Path(path).glob("*.bin")) if Path(path).is_dir() else []
            raise ModelError(f"cannot load backbone '{name_or_path}': its weights ({', '.join(pickled) or 'a .bin'}) "
                             "are a pickle file, which is never unpickled (it could run code); convert them to "
                             "model.safetensors with a tool you trust") from exc
        if type(exc).__name__ == "SafetensorError":  # a corrupt header or a truncated file
            files = sorted(p.name for p in Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
            where = Path(path) / files[0] if len(files) == 1 else f"'{name_or_path}' ({', '.join(files)})"
            raise ModelError(f"cannot load backbone '{name_or_path}': {where}: cannot read weights ({exc}); the "
                             "file is corrupt or not safetensors") from exc
        if isinstance(exc, (OSError, ValueError, KeyError)):
            raise ModelError(f"cannot load backbone '{name_or_path}': {exc}{_not_found_hint(name_or_path, path)}") \
                from exc
        raise


def own_storage(model: nn.Module) -> nn.Module:
    """``model`` with every parameter in a storage of its own. transformers' loading splits a checkpoint's fused
    tensors (GTE's, NomicBERT's and Jina-v3's ``qkv_proj`` / ``up_gate_proj``) into views of one storage, which
    safetensors refuses to save ("found no suitable name to keep"): the first checkpoint of a run then failed."""
    for parameter in model.parameters():
        if parameter.untyped_storage().nbytes() != parameter.numel() * parameter.element_size():
            parameter.data = parameter.data.clone()
    return model


def backbone_from_config(config: PretrainedConfig) -> PreTrainedModel:
    """A randomly initialised encoder of the given architecture (tiny models in tests, loading)."""
    model_cls = AutoModel._model_mapping[type(config)]
    return AutoModel.from_config(config, **_model_kwargs(model_cls))


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    """The tokenizer that belongs to a model folder or hub name."""
    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load tokenizer '{name_or_path}': {exc}{_not_found_hint(name_or_path, path)}") \
            from exc
    # Without its vocabulary file (tokenizer.json / vocab.txt) transformers builds a tokenizer of special tokens
    # only: every word becomes [UNK] and training, evaluation and prediction run on nothing, without an error.
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise ModelError(f"tokenizer '{name_or_path}' has no vocabulary (only its {len(tokenizer)} special tokens): "
                         "its folder lacks tokenizer.json / vocab.txt (or the tokenizer's own vocabulary files); "
                         "copy them from the model the folder was made from")
    return tokenizer


def max_positions(config: PretrainedConfig) -> int | None:
    """The longest input the encoder accepts, read from its config."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return None
    from multidistill.models.families import quirks_of

    if quirks_of(config).position_offset:  # RoBERTa-style position ids start after the padding index
        limit -= (getattr(config, "pad_token_id", 1) or 0) + 1
    return int(limit)
