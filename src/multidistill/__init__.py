"""multidistill: multi-task, multi-teacher and multi-domain knowledge distillation.

The Python API, driven by the same YAML configs as the CLI (a config is a YAML path, a mapping or a config
object wherever one is taken; the shipped configs are files of the package, `pkg:multidistill/configs/<file>`,
also `configs/<file>` in a clone)::

    import multidistill as md

    summary = md.run("pkg:multidistill/configs/mtdnn_kd.yaml", ["teacher.seeds=[1]"])  # like `multidistill run`
    result = md.train_model("pkg:multidistill/configs/tiny.yaml", progress=False)      # train-teacher / distill
    metrics = md.evaluate_model_dir("runs/tiny/model")                                  # like `multidistill evaluate`
    labels = md.predict("runs/tiny/model", "sst2", ["a fine film"])                     # texts in memory

Names are imported on first use, so `import multidistill` stays light (no torch until a function needs it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # the real objects, for type checkers and IDEs (imported lazily at run time, below)
    from multidistill.config import (
        DataConfig,
        ModelConfig,
        ObjectiveConfig,
        TaskRef,
        TeacherRunConfig,
        TrainConfig,
        load_config,
    )
    from multidistill.errors import (
        ConfigError,
        DataError,
        ModelError,
        MultidistillError,
        OutputError,
        RunInProgress,
        TrainingDiverged,
        UnknownTaskError,
    )
    from multidistill.evaluation.benchmark import BenchmarkReport, benchmark
    from multidistill.evaluation.evaluate import EvalMetrics
    from multidistill.evaluation.run import evaluate_model_dir
    from multidistill.export.hf import export_hf
    from multidistill.export.onnx import ExportInfo, OnnxModel, export_onnx
    from multidistill.export.parity import ParityError
    from multidistill.inference.predict import PredictSummary, predict_file
    from multidistill.inference.texts import Prediction, predict
    from multidistill.models.loading import load_model
    from multidistill.models.stock_import import import_classifier
    from multidistill.pipeline import plan_recipe, run, run_recipe
    from multidistill.recipes.config import load_recipe
    from multidistill.recipes.stages import RunPlan
    from multidistill.report.build import build_report
    from multidistill.teachers.ensemble import train_ensemble
    from multidistill.teachers.generate import build_signal_store
    from multidistill.teachers.store import SignalStore, open_signal_store
    from multidistill.teachers.train import train_teacher
    from multidistill.training.distill import distill
    from multidistill.training.loop import TrainResult
    from multidistill.training.run import train_model

# Public name -> the module that defines it.
_EXPORTS = {
    # configs
    "load_config": "multidistill.config",
    "TeacherRunConfig": "multidistill.config",
    "DataConfig": "multidistill.config",
    "TaskRef": "multidistill.config",
    "ModelConfig": "multidistill.config",
    "TrainConfig": "multidistill.config",
    "ObjectiveConfig": "multidistill.config",
    "load_recipe": "multidistill.recipes.config",
    # runs
    "run": "multidistill.pipeline",
    "run_recipe": "multidistill.pipeline",
    "plan_recipe": "multidistill.pipeline",
    "RunPlan": "multidistill.recipes.stages",
    "train_model": "multidistill.training.run",
    "train_teacher": "multidistill.teachers.train",
    "train_ensemble": "multidistill.teachers.ensemble",
    "distill": "multidistill.training.distill",
    "TrainResult": "multidistill.training.loop",
    "build_signal_store": "multidistill.teachers.generate",
    "open_signal_store": "multidistill.teachers.store",
    "SignalStore": "multidistill.teachers.store",
    # models, scores, exports, predictions, reports
    "load_model": "multidistill.models.loading",
    "evaluate_model_dir": "multidistill.evaluation.run",
    "EvalMetrics": "multidistill.evaluation.evaluate",
    "benchmark": "multidistill.evaluation.benchmark",
    "BenchmarkReport": "multidistill.evaluation.benchmark",
    "export_onnx": "multidistill.export.onnx",
    "ExportInfo": "multidistill.export.onnx",
    "OnnxModel": "multidistill.export.onnx",
    "ParityError": "multidistill.export.parity",
    "export_hf": "multidistill.export.hf",
    "import_classifier": "multidistill.models.stock_import",
    "predict": "multidistill.inference.texts",
    "Prediction": "multidistill.inference.texts",
    "predict_file": "multidistill.inference.predict",
    "PredictSummary": "multidistill.inference.predict",
    "build_report": "multidistill.report.build",
    # errors
    "MultidistillError": "multidistill.errors",
    "ConfigError": "multidistill.errors",
    "DataError": "multidistill.errors",
    "ModelError": "multidistill.errors",
    "UnknownTaskError": "multidistill.errors",
    "OutputError": "multidistill.errors",
    "RunInProgress": "multidistill.errors",
    "TrainingDiverged": "multidistill.errors",
}

# Spelt out for linters and type checkers; tests/test_api.py checks it lists _EXPORTS.
__all__ = [
    "__version__", "load_config", "TeacherRunConfig", "DataConfig", "TaskRef", "ModelConfig", "TrainConfig",
    "ObjectiveConfig", "load_recipe", "run", "run_recipe", "plan_recipe", "RunPlan", "train_model", "train_teacher",
    "train_ensemble", "distill", "TrainResult", "build_signal_store", "open_signal_store", "SignalStore", "load_model",
    "evaluate_model_dir", "EvalMetrics", "benchmark", "BenchmarkReport", "export_onnx", "ExportInfo",
    "OnnxModel", "ParityError", "export_hf", "import_classifier", "predict", "Prediction", "predict_file",
    "PredictSummary",
    "build_report", "MultidistillError", "ConfigError", "DataError", "ModelError", "UnknownTaskError",
    "OutputError", "RunInProgress", "TrainingDiverged",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'multidistill' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
