"""Backbones, task heads, the multi-task Transformer model and the BiLSTM student.

Names are imported on first use, so a config module that needs only `models.specs` loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multidistill.models.bilstm import BiLSTMModel
    from multidistill.models.loading import load_model
    from multidistill.models.multitask import MultiTaskModel, MultiTaskOutput
    from multidistill.models.specs import BiLSTMSpec

_EXPORTS = {
    "BiLSTMModel": "multidistill.models.bilstm",
    "BiLSTMSpec": "multidistill.models.specs",
    "MultiTaskModel": "multidistill.models.multitask",
    "MultiTaskOutput": "multidistill.models.multitask",
    "load_model": "multidistill.models.loading",
}

__all__ = ["BiLSTMModel", "BiLSTMSpec", "MultiTaskModel", "MultiTaskOutput", "load_model"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'multidistill.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
