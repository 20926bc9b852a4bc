"""multidistill: multi-task, multi-teacher and multi-domain knowledge distillation."""

__version__ = "0.1.0"
