"""Backbones, task heads and the multi-task model."""

from multidistill.models.multitask import MultiTaskModel, MultiTaskOutput

__all__ = ["MultiTaskModel", "MultiTaskOutput"]
