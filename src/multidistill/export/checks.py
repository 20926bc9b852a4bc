"""What an export is checked on by default (the model's own dev rows, as `multidistill export` reads them) and
which export options go together: an option is refused where it would have no effect, never silently ignored.
The CLI and the Python API refuse alike, since the CLI passes its options through unchanged (None: not given)."""

from __future__ import annotations

import os
from pathlib import Path

from multidistill.config import DataConfig
from multidistill.errors import ConfigError
from multidistill.export.onnx_variants import ATTENTION_MASK_VALUE

DEFAULT_PARITY_EXAMPLES = 500
DEFAULT_TOLERANCE_FP32 = 1e-4  # the largest |logit difference| allowed to the fp32 graph
DEFAULT_MAX_METRIC_DROP_INT8 = 0.01  # the int8 parity gate's always-allowed drop (docs/export.md)
# Python keyword -> the CLI option, for messages that name both.
FLAGS = {"int8_method": "--int8-method", "per_channel": "--per-channel/--no-per-channel",
         "min_agreement_int8": "--min-agreement-int8", "max_metric_drop_int8": "--max-metric-drop-int8",
         "calibration_examples": "--calibration-examples", "calibration_seed": "--calibration-seed",
         "parity_examples": "--parity-examples", "tolerance_fp32": "--tolerance-fp32"}
INT8_OPTIONS = ("int8_method", "per_channel", "min_agreement_int8", "max_metric_drop_int8")
STATIC_OPTIONS = ("calibration_examples", "calibration_seed")
PARITY_OPTIONS = ("parity_examples", "tolerance_fp32", "min_agreement_int8", "max_metric_drop_int8")


def _named(keys: list[str]) -> str:
    return ", ".join(f"{FLAGS[key]} ({key})" for key in keys)


def say(names: list[str], one: str, several: str) -> str:
    """``one`` for a single option named, ``several`` for more (refusals agree with what was given)."""
    return one if len(names) == 1 else several


def own_data(model_dir: str | os.PathLike, data_root: str | None, cache_dir: str) -> DataConfig:
    """Every task of the model in ``model_dir``, read with its own specs under ``data_root`` or else the data root
    it was trained with (while it exists): exactly the data it was built for."""
    from multidistill.models.loading import saved_data_root
    from multidistill.models.multitask import read_model_tasks

    specs = read_model_tasks(Path(model_dir))
    return DataConfig(tasks=[spec.name for spec in specs], cache_dir=cache_dir, task_specs=specs,
                      data_root=data_root if data_root is not None else saved_data_root(model_dir))


def check_parity_options(*, skip_parity: bool, parity_data: DataConfig | None, data_root: str | None,
                         options: dict[str, object], reads_training_rows: bool = False) -> None:
    """Refuse parity-check settings (``options``: keyword -> value, None where not given) and data with
    ``skip_parity``, and ``data_root`` beside ``parity_data`` (which names its own root). ``reads_training_rows``:
    the export reads the training data anyway (static int8's calibration), so ``data_root`` still applies."""
    given = [key for key in PARITY_OPTIONS if options.get(key) is not None]
    if skip_parity and given:
        raise ConfigError(f"{_named(given)} {say(given, 'sets', 'set')} the parity check, which --skip-parity "
                          f"skips (skip_parity=True): leave {say(given, 'it', 'them')} out, or drop --skip-parity")
    if skip_parity and parity_data is not None:
        raise ConfigError("parity_data is the data of the parity check, which skip_parity skips: give one of them")
    if skip_parity and data_root is not None and not reads_training_rows:
        raise ConfigError("--data-root is where the parity check (or static int8's calibration) reads its rows, "
                          "which --skip-parity skips: leave it out, or drop --skip-parity")
    if parity_data is not None and data_root is not None:
        raise ConfigError("data_root (--data-root) is where the model's own data is read; parity_data names its "
                          "own data_root: give one of them")
    parity_examples = options.get("parity_examples")
    if parity_examples is not None and parity_examples < 1:
        raise ConfigError(f"--parity-examples (parity_examples) must be at least 1, got {parity_examples}")


def check_onnx_options(*, quantize: str, int8_method: str | None, attention: str,
                       attention_mask_value: float | None, options: dict[str, object]) -> None:
    """Refuse ONNX options that shape a graph not written (``options``: keyword -> value, None where not given)
    and values out of range."""
    if attention != "eager" and attention_mask_value != ATTENTION_MASK_VALUE:
        raise ConfigError("--attention-mask-value (attention_mask_value) is the mask of an eager trace; the sdpa "
                          "trace keeps PyTorch's")
    given = [key for key in (*INT8_OPTIONS, *STATIC_OPTIONS) if options.get(key) is not None]
    if quantize != "int8" and given:
        raise ConfigError(f"{_named(given)} {say(given, 'shapes', 'shape')} the int8 graph: "
                          f"{say(given, 'it applies', 'they apply')} with --quantize int8 (quantize='int8'); or "
                          f"leave {say(given, 'it', 'them')} out")
    given = [key for key in STATIC_OPTIONS if options.get(key) is not None]
    if int8_method != "static" and given:
        raise ConfigError(f"{_named(given)} {say(given, 'chooses', 'choose')} the rows static int8 calibrates "
                          f"on: add --int8-method static (int8_method='static'), or leave "
                          f"{say(given, 'it', 'them')} out")
    for key in ("tolerance_fp32", "max_metric_drop_int8"):
        value = options.get(key)
        if value is not None and not value >= 0:
            raise ConfigError(f"{FLAGS[key]} ({key}) must be >= 0, got {value}")
    agreement = options.get("min_agreement_int8")
    if agreement is not None and not 0 <= agreement <= 1:
        raise ConfigError(f"--min-agreement-int8 (min_agreement_int8) is a fraction of rows from 0 to 1, got "
                          f"{agreement}")
    examples = options.get("calibration_examples")
    if examples is not None and examples < 1:
        raise ConfigError(f"--calibration-examples (calibration_examples) must be at least 1, got {examples}")
