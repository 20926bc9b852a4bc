"""General (task-agnostic) students: the encoder a distillation on unlabelled text produces, exported so that
it is a plain Hugging Face encoder folder.

A run whose tasks are all text tasks trains a `MultiTaskModel` without heads; its kept model is exported
beside it as ``encoder/``: the encoder's `save_pretrained` output (config.json + model.safetensors, which
`AutoModel.from_pretrained` loads), the tokenizer, and ``multidistill_encoder.json`` (what made it). Setting
a later run's ``model.name_or_path`` to that folder fine-tunes it like any pretrained encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

from multidistill.models.multitask import MultiTaskModel
from multidistill.utils.atomic import atomic_dir

ENCODER_DIR = "encoder"
ENCODER_META_FILE = "multidistill_encoder.json"
ENCODER_FORMAT_VERSION = 1
CARD_FILE = "README.md"  # multidistill.export.card.CARD_FILE


def is_general_run(tasks: dict) -> bool:
    """Whether a run trains a general student: every task is unlabelled text (no heads, no labels)."""
    return bool(tasks) and all(not task.has_head for task in tasks.values())


def export_general_encoder(model: MultiTaskModel, folder: str | Path, tokenizer=None,
                           metadata: dict | None = None, card: str | None = None) -> Path:
    """Write ``model``'s encoder to ``folder`` as a plain HF encoder folder (safetensors), atomically, with the
    tokenizer, ``metadata`` (teachers, corpus, objective, ...) in ENCODER_META_FILE and ``card`` (the model
    card's text, `multidistill.export.card`) as README.md."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        model.backbone.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        meta = {"format_version": ENCODER_FORMAT_VERSION, "kind": "general_student",
                "model_type": model.backbone.config.model_type, "max_length": model.max_length,
                **(metadata or {})}
        (tmp / ENCODER_META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if card is not None:
            (tmp / CARD_FILE).write_text(card)
    return folder
