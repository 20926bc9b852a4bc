"""`multidistill report`: a run folder's quality and speed results as report.md plus PNG figures.

Names are imported on first use (and plotting, matplotlib, only when a report is built), so importing this package
stays cheap: the command line registers `report` without loading torch or scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multidistill.report.build import build_report

__all__ = ["build_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("multidistill.report.build"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
