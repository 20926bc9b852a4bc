"""Batch prediction on files of texts, with a saved model folder or an ONNX export.

Names are imported on first use: the command line registers `predict` without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multidistill.inference.predict import predict_file, read_table

__all__ = ["predict_file", "read_table"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("multidistill.inference.predict"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
