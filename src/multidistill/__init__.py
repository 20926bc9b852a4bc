"""multidistill: multi-task, multi-teacher and multi-domain knowledge distillation.

The Python API, driven by the same YAML configs as the CLI::

    import multidistill as md

    summary = md.run("configs/mtdnn_kd.yaml", ["teacher.seeds=[1]"])     # a whole recipe, like `multidistill run`
    result = md.train_model(md.load_config("configs/tiny.yaml"))          # one stage (train-teacher / distill)
    metrics = md.evaluate_model_dir("runs/tiny/model", tasks=None)         # like `multidistill evaluate`

Names are imported on first use, so `import multidistill` stays light (no torch until a function needs it).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "load_config": "multidistill.config",
    "TeacherRunConfig": "multidistill.config",
    "load_recipe": "multidistill.recipes.config",
    "run_recipe": "multidistill.recipes",
    "train_model": "multidistill.training.run",
    "train_teacher": "multidistill.teachers.train",
    "build_signal_store": "multidistill.teachers.generate",
    "open_signal_store": "multidistill.teachers.store",
    "load_model": "multidistill.models.loading",
    "evaluate_model_dir": "multidistill.evaluation.run",
    "benchmark": "multidistill.evaluation.benchmark",
    "export_onnx": "multidistill.export.onnx",
    "export_hf": "multidistill.export.hf",
    "predict_file": "multidistill.inference.predict",
}

__all__ = ["__version__", "run", *_EXPORTS]


def run(recipe: str | Path, overrides: list[str] | None = None) -> dict:
    """Run (or continue) every stage of the recipe file ``recipe`` with ``--set``-style ``overrides``, as
    `multidistill run` does; returns the recipe's summary."""
    from multidistill.recipes import load_recipe, run_recipe

    return run_recipe(load_recipe(recipe, overrides))


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'multidistill' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
