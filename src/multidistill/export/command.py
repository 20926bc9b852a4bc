"""`multidistill export`: write a saved model folder as ONNX (fp32, optionally int8) or as plain Hugging Face
folders (one per task), after a parity check whose numbers are always printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from multidistill.errors import ConfigError, require_choice
from multidistill.utils.console import stdout_console

FORMATS = ("onnx", "hf")
console = stdout_console()


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_parity(title: str, parity: dict) -> None:
    """Render export.json's ``parity`` ({precision: {task: numbers}}) as a table."""
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for column in ("task", "graph", "rows", "max |Δ|", "agree", "metric", "torch", "onnx", "Δ"):
        left = column in ("task", "graph", "metric")
        table.add_column(column, justify="left" if left else "right", no_wrap=column == "task")
    for precision, tasks in parity.items():
        for task, numbers in tasks.items():
            agreement = numbers["agreement"]
            table.add_row(task, precision, str(numbers["examples"]), f"{numbers['max_abs_diff']:.1e}",
                          "-" if agreement is None else f"{agreement:.1%}", numbers["metric"],
                          _number(numbers["metric_torch"]), _number(numbers["metric_onnx"]),
                          f"{numbers['metric_delta']:+.4f}")
    console.print(table)


def print_hf_check(title: str, info: dict) -> None:
    """Render a Hugging Face export's checks (export.json's ``check``, or ``checks`` of a per-task export) as a
    table, one row per task."""
    checks = info["checks"] if "checks" in info else {info["task"]: info["check"]}
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for column in ("task", "checked on", "rows", "max |Δ|", "limit", "agree"):
        table.add_column(column, justify="left" if column in ("task", "checked on") else "right")
    for task, check in checks.items():
        agreement = check["agreement"]
        table.add_row(task, check["source"], str(check["rows"]), f"{check['max_abs_diff']:.1e}",
                      f"{check['tolerance']:.0e}", "-" if agreement is None else f"{agreement:.1%}")
    console.print(table)


def _mask_value(text: str) -> float | None:
    """--attention-mask-value: a number, checked, or 'lowest' (None: float32's lowest, as the trace builds it)."""
    from multidistill.export.onnx_variants import check_attention_mask_value

    if text.strip().lower() == "lowest":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--attention-mask-value {text!r}: give a number <= -20 or 'lowest'") from None
    check_attention_mask_value(value)
    return value


def export_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder written by multidistill (Transformer + heads, "
                                                   "or BiLSTM).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the export to; it must not exist or be "
                                                    "empty (see --overwrite).")],
    format: Annotated[str, typer.Option("--format", help="onnx (every model, every task; one multi-output graph) or "
                                                         "hf (a Transformer model with [CLS] pooling, i.e. trained "
                                                         "with model.pooling: cls, as plain Hugging Face "
                                                         "AutoModelForSequenceClassification folders: one per task, "
                                                         "OUT/<task>/, or OUT itself for one task).")] = "onnx",
    task: Annotated[str | None, typer.Option(help="--format hf: export only this task, as OUT itself (default: "
                                                  "every task, one folder each; an ONNX export holds every task "
                                                  "in one graph).")] = None,
    quantize: Annotated[str, typer.Option(help="none, or int8: also write model.int8.onnx (by default dynamically "
                                               "quantised: int8 weights with one scale per output channel; "
                                               "embeddings stay fp32; see --int8-method).")] = "none",
    int8_method: Annotated[str | None, typer.Option(
        help="With --quantize int8: dynamic (default; activations quantised on the fly) or static (QDQ graph, "
             "activation ranges calibrated on --calibration-examples training rows per task; needs the training "
             "data).")] = None,
    graph: Annotated[str, typer.Option(help="plain (default) or fused: run onnxruntime's transformer optimizer "
                                            "(attention / LayerNorm / GELU fusion) on the graph both precisions "
                                            "come from; a model it has no fusions for is exported plain, and the "
                                            "export says so.")] = "plain",
    per_channel: Annotated[bool | None, typer.Option(
        "--per-channel/--no-per-channel", help="With --quantize int8: int8 weights with one scale per output "
                                               "channel (default) or one per tensor.")] = None,
    attention: Annotated[str, typer.Option(help="The attention a Transformer is traced with: eager (default; one "
                                                "additive mask for every layer) or sdpa (the model's kernel, whose "
                                                "trace guards each layer's mask against NaN; not with --graph "
                                                "fused).")] = "eager",
    attention_mask_value: Annotated[str, typer.Option(help="The additive attention mask an eager trace gives "
                                                           "padded keys: -60 (default; keeps onnxruntime's "
                                                           "Softmax on its fast path, about 1.2x the int8 graph) "
                                                           "or any number from float32's lowest to -20, or "
                                                           "'lowest' for float32's lowest (PyTorch's own "
                                                           "mask).")] = "-60",
    calibration_examples: Annotated[int | None, typer.Option(
        help="--int8-method static: training rows per task to calibrate activation ranges on (default 256).")
    ] = None,
    calibration_seed: Annotated[int | None, typer.Option(
        help="--int8-method static: seed that draws the calibration rows (default 0).")] = None,
    data_root: Annotated[str | None, typer.Option(
        help="Folder that relative task file paths resolve against, for the parity check (default: the one the "
             "model was trained with, while it exists; else $MULTIDISTILL_DATA_ROOT; else the current folder).")
    ] = None,
    parity_examples: Annotated[int | None, typer.Option(help="Dev rows per task for the parity check (default "
                                                            "500).")] = None,
    skip_parity: Annotated[bool, typer.Option(help="Skip the parity check on dev data (no dev data needed); "
                                                   "--format hf then checks a few built-in sentences.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing, non-empty --out folder.")] = False,
    cache_dir: Annotated[str, typer.Option(help="Cache for tokenised views.")] = ".cache/multidistill",
    tolerance_fp32: Annotated[float | None, typer.Option(
        help="--format onnx: largest |logit difference| allowed between PyTorch and the fp32 ONNX graph "
             "(default 0.0001).")] = None,
    min_agreement_int8: Annotated[float | None, typer.Option(
        help="Also require the int8 graph to predict the PyTorch class on at least this fraction of dev rows "
             "(default: agreement is only reported).")] = None,
    max_metric_drop_int8: Annotated[float | None, typer.Option(
        help="Drop of each task's main metric always allowed for the int8 graph; more passes only within twice its "
             "sampling error (default 0.01; docs/export.md).")] = None,
) -> None:
    """Export a saved model for serving, after a parity check whose numbers are printed.

    --format onnx (any model): OUT/model.onnx, one graph whose outputs are every task head's logits (and
    OUT/model.int8.onnx with --quantize int8: dynamic per-channel int8 by default, static QDQ with
    --int8-method static; --graph fused adds onnxruntime's transformer fusion; --attention chooses the
    attention the encoder is traced with), the tokenizer and
    OUT/export.json, whose "variant" (also printed) says which variant was written. Unless --skip-parity, each
    task's first --parity-examples dev rows are run through PyTorch and every exported graph: fp32 logits must
    match within --tolerance-fp32; the int8 main metric must not drop by more than --max-metric-drop-int8 or
    twice the drop's sampling error on those rows, whichever is larger (agreement is reported, and gated only
    with --min-agreement-int8). Load it with multidistill.export.onnx.OnnxModel.

    --format hf: each task as a stock Hugging Face folder (OUT/<task>/ for a multi-task model, OUT itself for
    one task or --task), for Transformer models with [CLS] pooling (model.pooling: cls) over an encoder whose
    family has a stock classification head (BERT, RoBERTa, XLM-R, DeBERTa, ELECTRA, MPNet and 26 more: the list
    in docs/export.md); BiLSTM and mean-pooled models (the demo's defaults) export to ONNX. Each folder is loaded
    back with AutoModelForSequenceClassification and its logits must match ours within 1e-4 on the task's dev rows.

    Every export folder has a model card (README.md) with the run's dev scores, its teacher's and the
    command that made it. An export that fails its check is not written.
    """
    mask_value = _mask_value(attention_mask_value)  # before any work: a bad value fails fast
    from multidistill.export.checks import say
    from multidistill.export.onnx import QUANTIZE_CHOICES, export_onnx
    from multidistill.export.onnx_variants import (
        ATTENTION_CHOICES,
        ATTENTION_MASK_VALUE,
        GRAPH_CHOICES,
        INT8_METHODS,
        describe,
    )

    # The choices are named by their options here; which options go together, export_onnx / export_hf check.
    require_choice("--format", format, FORMATS)
    require_choice("--quantize", quantize, QUANTIZE_CHOICES)
    if int8_method is not None:
        require_choice("--int8-method", int8_method, INT8_METHODS)
    require_choice("--graph", graph, GRAPH_CHOICES)
    require_choice("--attention", attention, ATTENTION_CHOICES)
    if format == "hf" and (graph != "plain" or attention != "eager" or mask_value != ATTENTION_MASK_VALUE
                           or tolerance_fp32 is not None):
        raise ConfigError("--graph, --attention, --attention-mask-value and --tolerance-fp32 apply to --format onnx")
    if format == "hf" and quantize != "none":
        raise ConfigError("--quantize applies to --format onnx; a Hugging Face export keeps the model's fp32 weights")
    int8_options = {"--int8-method": int8_method, "--per-channel/--no-per-channel": per_channel,
                    "--min-agreement-int8": min_agreement_int8, "--max-metric-drop-int8": max_metric_drop_int8,
                    "--calibration-examples": calibration_examples, "--calibration-seed": calibration_seed}
    given = [name for name, value in int8_options.items() if value is not None]
    if format == "hf" and given:
        raise ConfigError(f"{', '.join(given)} {say(given, 'shapes', 'shape')} the int8 graph: "
                          f"{say(given, 'it applies', 'they apply')} with --format onnx --quantize int8; or leave "
                          f"{say(given, 'it', 'them')} out")
    if format == "onnx" and task is not None:
        raise ConfigError("--task applies to --format hf; an ONNX export holds every task of the model")
    parity = {"skip_parity": skip_parity, "data_root": data_root, "cache_dir": cache_dir,
              "parity_examples": parity_examples}  # None (not given): the library's default, and refusable
    if format == "hf":
        from multidistill.export.hf import EXPORT_INFO_FILE, export_hf

        path = export_hf(model_dir, out, task=task, overwrite=overwrite, **parity)
        info = json.loads((path / EXPORT_INFO_FILE).read_text())
        print_hf_check(f"{model_dir} -> Hugging Face ({info['model_type']}): parity of the reloaded model", info)
        for folder in [path / name for name in info.get("folders", {}).values()] or [path]:
            console.print(f"written: {folder}; load it with AutoModelForSequenceClassification.from_pretrained"
                          f"({str(folder)!r})")
        return
    meta = export_onnx(model_dir, out, quantize=quantize, overwrite=overwrite, graph=graph, attention=attention,
                       attention_mask_value=mask_value, int8_method=int8_method, per_channel=per_channel,
                       calibration_examples=calibration_examples, calibration_seed=calibration_seed,
                       tolerance_fp32=tolerance_fp32, min_agreement_int8=min_agreement_int8,
                       max_metric_drop_int8=max_metric_drop_int8, **parity)
    console.print(f"exported variant: {describe(meta['variant'])}", markup=False)
    if "parity" in meta:
        print_parity(f"{model_dir} -> ONNX: parity on dev data", meta["parity"])
    else:
        console.print("parity check skipped")
    console.print(f"written: {out} ({', '.join(meta['files'].values())}, opset {meta['opset']})")
