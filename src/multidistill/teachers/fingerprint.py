"""Fingerprints of teacher signals: what a signal store was made from, so that it is reused only for that."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from multidistill.evaluation.thresholds import without_thresholds
from multidistill.models.multitask import MODEL_CONFIG_FILE, WEIGHTS_FILE
from multidistill.utils.hashing import hash_json, hash_path, hash_tokenizer


def teacher_fingerprint(model_dir: str | Path, *, with_thresholds: bool = False) -> str:
    """Hash of a saved teacher's weights and its task specs. Multilabel decision thresholds saved in its config
    are left out (they change no logit: signal stores and the stages made from the teacher stay valid), unless
    ``with_thresholds`` (an export, which carries them)."""
    model_dir = Path(model_dir)
    config = model_dir / MODEL_CONFIG_FILE
    base = None if with_thresholds else without_thresholds(config)
    # with thresholds left out: hash_path of the file as it was before they were added
    config_hash = hash_path(config) if base is None else hashlib.sha256(config.name.encode() + base).hexdigest()
    return hash_json({"weights": hash_path(model_dir / WEIGHTS_FILE), "config": config_hash})


def weights_fingerprint(name_or_path: str) -> str | None:
    """Hash of the weight files of a local model folder (a multidistill model or a plain HF encoder), for a resume
    to see a teacher replaced in place; None for a hub name (its revision is the hub's business)."""
    from multidistill.models.backbone import resolve_model_path

    folder = Path(resolve_model_path(name_or_path))
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return hash_json({file.name: hash_path(file) for file in files}) if files else None


def store_fingerprint(version: int, teacher_dirs: Sequence[str | Path], tokenizers: Sequence,
                      data_fingerprints: Mapping[str, str], max_length: int | Sequence[int],
                      features: Mapping[str, object] | None = None) -> str:
    """Hash of everything a store's signals depend on: its format ``version``, every teacher's weights and task
    specs, their tokenizers, each (task/split)'s data fingerprint, the max length (one int when every teacher's
    rows are truncated at it, as in every store made before per-teacher lengths; else each teacher's, in order)
    and, for a store that holds teacher features, what it holds (``features``: layers, dtype). A store of logits
    only hashes as before."""
    made_from = {
        "version": version,
        "teachers": [teacher_fingerprint(d) for d in teacher_dirs],
        "tokenizers": [hash_tokenizer(t) for t in tokenizers],
        "data": dict(data_fingerprints),
        "max_length": max_length if isinstance(max_length, int) else list(max_length),
    }
    if features is not None:
        made_from["features"] = dict(features)
    return hash_json(made_from)
