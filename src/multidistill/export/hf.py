"""Export a student as plain Hugging Face `AutoModelForSequenceClassification` folders: one task, or one folder
per task of a multi-task model, each with its model card (README.md).

Our heads are linear on the pooled [CLS] vector (those of a classifier brought in with `import-classifier` keep
its stock dense layer and activation, and map onto the stock head as they are), but every stock Hugging Face
classification head puts a non-linearity between that vector and the classifier. The export makes the
non-linearity act as the identity on every input the encoder can produce, so the stock model computes our logits:

* tanh (BERT pooler; RoBERTa / XLM-R / CamemBERT / MPNet heads): the dense layer scales by a small ``eps`` so
  ``tanh(eps x) = eps x`` to float precision (the error is about ``(eps x)^3 / 3``), and the classifier
  weights are divided by ``eps``.
* GELU (ELECTRA head, DeBERTa's pooler, EuroBERT's head) and ReLU (DistilBERT), or whichever activation of
  `OFFSET_ACTIVATIONS` the encoder's ``hidden_act`` names (BigBird's and RoFormer's heads apply it): the dense
  layer adds a large offset ``c`` so ``act(x + c) = x + c`` exactly, and the classifier bias absorbs ``-W c``.
* no activation at all (XLM / FlauBERT's first-token summary, MobileBERT's pooler without
  ``classifier_activation``, Ultrabert's identity head): the classifier takes our weights as they are.

How large ``|x|`` can get comes from the encoder's final LayerNorm: a LayerNorm output is bounded by
``|gamma| sqrt(H - 1) + |beta|`` per dimension whatever the input (an RMSNorm's by ``|gamma| sqrt(H)``), so the
mapping holds for any text, not only for the rows it is checked on. After writing, the folder is loaded back with
`AutoModelForSequenceClassification` and its logits are compared with ours (on the task's dev rows, or a
few built-in sentences); a mismatch leaves nothing on disk.

Which models export: Transformer models with [CLS] pooling (`model.pooling: cls`) over one of the encoder
families with a ``stock_head`` in `models/families.py` (`STOCK_FAMILIES`), one stock folder per task. Mean-pooled
models and BiLSTM students (everything the demo trains by default) have no stock Hugging Face counterpart and
export to ONNX instead.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from multidistill.config import DataConfig
from multidistill.data.collate import encode_texts
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError, UnknownTaskError
from multidistill.evaluation.metrics import same_predictions
from multidistill.evaluation.thresholds import by_label, saved_thresholds
from multidistill.export.card import write_card
from multidistill.export.card_record import model_card_record
from multidistill.export.checks import DEFAULT_PARITY_EXAMPLES, check_parity_options, own_data
from multidistill.export.tokenizer import for_export
from multidistill.models.families import FAMILIES, StockHead
from multidistill.training.run_dir import refuse_foreign_overwrite
from multidistill.utils.atomic import atomic_dir
from multidistill.utils.entry import api_call

EXPORT_INFO_FILE = "export.json"
# Largest accepted |our logits - exported logits| on the check rows.
TOLERANCE = 1e-4
# tanh families: keep the relative cubic error (eps * max|x|)^2 / 3 below this ...
TANH_RELATIVE_ERROR = 1e-6
# ... without letting eps (and so the dense weights) get small enough to lose float32 precision.
MIN_EPS = 1e-6
MAX_EPS = 1e-3
# ReLU / GELU families: every pre-activation is at least this far above zero (GELU(z) = z for z >= 10
# in float32: 1 - Phi(10) is about 8e-24).
OFFSET_MARGIN = 10.0
# Activations (transformers' ACT2FN names) that give act(z) = z exactly in float32 for every z >= OFFSET_MARGIN: a
# head that applies one of them takes the offset mapping. (SiLU does not: silu(10) is 10 - 4.5e-4.)
OFFSET_ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_fast", "gelu_python", "gelu_pytorch_tanh", "gelu_python_tanh",
                      "gelu_accurate", "quick_gelu", "mish", "leaky_relu", "linear")

CHECK_SENTENCES: tuple[str, ...] = (
    "the movie was great and the actors were fun",
    "this was the worst film i have seen , very boring",
    "a",
    "It is fine.",
    "nothing about the plot made any sense, but the music was nice !",
)


# The families whose stock classifier can carry our head (the table in models/families.py says how).
STOCK_FAMILIES = tuple(name for name, family in FAMILIES.items() if family.stock_head is not None)

# Rows per forward pass of the check.
CHECK_BATCH = 64

ONNX_HINT = "export it with `multidistill export --format onnx` instead, which keeps the model as it is (all tasks)"
# What can export, and the config option that trains such a model; every refusal of an unsuitable model says it.
EXPORTABLE = ("only Transformer models with [CLS] pooling over an encoder of a family with a stock classification "
              "head (" + ", ".join(STOCK_FAMILIES) + ") export to "
              "Hugging Face: train one with `model.pooling: cls` (a recipe's student: "
              "`--set student.model.pooling=cls`; the demo's Transformer student: "
              "`--set transformer.model.pooling=cls`)")


def export_hf(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, task: str | None = None,
              overwrite: bool = False, check_rows: Sequence[tuple[str, str | None]] | None = None,
              parity_data: DataConfig | None = None, parity_examples: int | None = None,
              skip_parity: bool = False, data_root: str | None = None,
              cache_dir: str = ".cache/multidistill", progress: bool = True) -> Path:
    """Write the model in ``model_dir`` as Hugging Face classifier folders in ``out_dir`` and return it, as
    `multidistill export --format hf` does.

    One task (``task``, or the model's only task): ``out_dir`` is a folder that loads with
    ``AutoModelForSequenceClassification.from_pretrained(out_dir)`` (no remote code). A multi-task model
    without ``task``: one such folder per task with a head, ``out_dir/<task>/``, beside an ``export.json``
    and a ``README.md`` listing them. Each folder gives the same logits as our model for its task, checked on
    ``check_rows`` ((text_a, text_b) pairs; text_b is None for single-text tasks) when given, else on the task's
    first ``parity_examples`` eval rows (default 500): by default the model's own dev rows (its task specs, under
    ``data_root`` or else the data root it was trained with; tokenised views cached in ``cache_dir``), or those of
    ``parity_data`` (its data_root, cache_dir and eval_split). ``skip_parity=True`` checks a few built-in
    sentences instead (no data needed). The check's numbers go to its export.json (``check``), and its model
    card (README.md) quotes the run's dev scores. Raises `ModelError` for a model it cannot express this way
    (BiLSTM, mean pooling, another encoder family) or when a check fails; nothing is left on disk then. The
    write is atomic; an existing non-empty ``out_dir`` is refused unless ``overwrite``. ``progress`` False: no
    bars or library notes (transformers' "Writing model shards", "Loading weights").
    """
    with api_call("export_hf", progress=progress):
        check_parity_options(skip_parity=skip_parity, parity_data=parity_data, data_root=data_root,
                             options={"parity_examples": parity_examples})
        parity_examples = DEFAULT_PARITY_EXAMPLES if parity_examples is None else parity_examples
        from multidistill.models import load_model
        from multidistill.models.backbone import load_tokenizer
        from multidistill.models.multitask import MultiTaskModel

        model_dir, out_dir = Path(model_dir), Path(out_dir)
        _check_out_dir(model_dir, out_dir, overwrite)
        if parity_data is None and check_rows is None and not skip_parity:
            parity_data = own_data(model_dir, data_root, cache_dir)  # as the CLI reads it: the model's own rows
        model = load_model(model_dir)
        if not isinstance(model, MultiTaskModel):
            kind = "BiLSTM student" if type(model).__name__ == "BiLSTMModel" else type(model).__name__
            raise ModelError(f"{model_dir}: a {kind} has no Hugging Face counterpart; {EXPORTABLE}; or {ONNX_HINT}")
        family = _family(model, model_dir)  # the refusals no --task can fix come first
        specs = _pick_tasks(model, model_dir, task)
        tokenizer = load_tokenizer(str(model_dir))
        max_length = model.inference_length
        tokenizer = _restrict_inputs(tokenizer, model, max_length)
        checks = {}
        for spec in specs:  # every task's check rows are read (and validated) before anything is built
            rows, source = check_rows, "given rows" if check_rows is not None else "built-in sentences"
            if check_rows is None and parity_data is not None:
                rows, source = _eval_rows(spec, parity_data, parity_examples), f"{parity_data.eval_split} rows"
            checks[spec.name] = (_check_rows(spec, rows), source)
        model.eval()

        with atomic_dir(out_dir) as tmp:
            if len(specs) == 1 and (task is not None or len(model.tasks) == 1):
                _write_task(model, model_dir, specs[0], family, tokenizer, *checks[specs[0].name], max_length, tmp)
            else:
                _write_task_folders(model, model_dir, specs, family, tokenizer, checks, max_length, tmp)
        return out_dir


def _write_task_folders(model, model_dir: Path, specs: list[Task], family: StockHead, tokenizer, checks: dict,
                        max_length: int, out: Path) -> dict:
    """A multi-task model as one stock classifier folder per task (``out/<task>/``), with an export.json that
    lists them and their checks, and a README.md; returns that export.json."""
    from multidistill.utils.paths import inside

    folders = {}
    for spec in specs:
        folder = inside(out, spec.name)
        folder.mkdir()
        _write_task(model, model_dir, spec, family, tokenizer, *checks[spec.name], max_length, folder)
        folders[spec.name] = spec.name
    info = {"kind": "hf", "source": str(model_dir.resolve()), "tasks": list(folders), "folders": folders,
            "model_type": model.backbone.config.model_type, "max_length": max_length,
            "checks": {name: json.loads((out / folder / EXPORT_INFO_FILE).read_text())["check"]
                       for name, folder in folders.items()}}
    (out / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    write_card(out, model_card_record(model_dir, "hf", export=info, folders=folders))
    return info


def _drop_remote_code_pointers(folder: Path) -> None:
    """A stock export names no custom code: `auto_map` (copied from a source folder's config or tokenizer config)
    would point `trust_remote_code=True` loaders downstream at code this export does not hold."""
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            record = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(record, dict) and record.pop("auto_map", None) is not None:
                path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _write_task(model, model_dir: Path, spec: Task, family: StockHead, tokenizer, rows, source: str, max_length: int,
                folder: Path) -> dict:
    """Write ``spec``'s stock classifier into ``folder`` (weights, config, tokenizer, export.json, README.md)
    and check it against ``model`` on ``rows``; returns its export.json."""
    config = _hf_config(model, spec, family)
    thresholds = saved_thresholds(model_dir).get(spec.name)
    if thresholds is not None:  # in config.json too, for code that reads them (the card's snippet quotes them)
        config.multidistill_thresholds = by_label(spec, thresholds)
    hf_model = _build_hf_model(model, spec, family, config, tokenizer, rows, max_length)
    hf_model.save_pretrained(folder, **_safetensors_kwargs(hf_model))
    tokenizer.save_pretrained(folder)
    _drop_remote_code_pointers(folder)
    if not (folder / "model.safetensors").is_file():
        raise ModelError(f"{folder.name}: the export wrote no model.safetensors (sharded or pickled weights)")
    if thresholds is not None:  # and the weights they were chosen for: import-classifier reads them only with these
        from multidistill.teachers.fingerprint import weights_fingerprint

        written = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        written["multidistill_thresholds_weights"] = weights_fingerprint(str(folder))
        (folder / "config.json").write_text(json.dumps(written, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    check = {"rows": len(rows), "source": source, **_verify(model, spec, folder, rows, max_length, thresholds),
             "tolerance": TOLERANCE}
    info = {"kind": "hf", "source": str(model_dir.resolve()), "task": spec.name, "type": spec.type,
            "labels": spec.labels, "model_type": config.model_type, "max_length": max_length,
            "check_rows": len(rows), "max_abs_diff": check["max_abs_diff"], "check": check,
            **({"thresholds": by_label(spec, thresholds)} if thresholds is not None else {})}
    (folder / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    write_card(folder, model_card_record(model_dir, "hf", tasks=[spec.name], export=info,
                                         title=f"{_title(model_dir)}-{spec.name}",
                                         parameters=sum(p.numel() for p in hf_model.parameters())))
    return info


def _title(model_dir: Path) -> str:
    resolved = model_dir.resolve()
    return resolved.parent.name if resolved.name == "model" else resolved.name


# --------------------------------------------------------------------------------------------- checks


def _check_out_dir(model_dir: Path, out_dir: Path, overwrite: bool) -> None:
    target, source = out_dir.resolve(), model_dir.resolve()
    if target == source:
        raise ConfigError(f"--out {out_dir} is the model folder itself; choose another folder")
    if target in source.parents:  # replacing --out would delete the model being exported
        raise ConfigError(f"--out {out_dir} holds the model folder {model_dir}; replacing it would delete the model: "
                          "choose another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out_dir} exists and is not empty; pass --overwrite to replace it")
    refuse_foreign_overwrite(out_dir, "--out", (EXPORT_INFO_FILE,))


def _pick_tasks(model, model_dir: Path, task: str | None) -> list[Task]:
    """``task``, or every task with a head (one folder each)."""
    names = list(model.tasks)
    if task is None:
        specs = [spec for spec in model.tasks.values() if spec.has_head]
        if not specs:
            raise ModelError(f"{model_dir}: the model has no task head ({', '.join(names)} are unlabelled text); a "
                             "general student's encoder is exported as a plain encoder folder (encoder/ of its run)")
        return specs
    if task not in model.tasks:
        raise UnknownTaskError(f"{model_dir}: the model has no head for task '{task}'; it has: {', '.join(names)}")
    if not model.tasks[task].has_head:
        raise ModelError(f"{model_dir}: task '{task}' is unlabelled text and has no head to export")
    return [model.tasks[task]]


def _family(model, model_dir: Path) -> StockHead:
    model_type = getattr(model.backbone.config, "model_type", "?")
    if model.pooling != "cls":
        raise ModelError(f"{model_dir}: the model pools the {model.pooling} of the token vectors (model.pooling: "
                         f"{model.pooling}) and no stock Hugging Face classification head does; {EXPORTABLE}; "
                         f"or {ONNX_HINT}")
    if model_type not in STOCK_FAMILIES:
        raise ModelError(f"{model_dir}: cannot export a '{model_type}' encoder as a plain Hugging Face "
                         f"classifier (supported: {', '.join(STOCK_FAMILIES)}); {ONNX_HINT}")
    family = FAMILIES[model_type].stock_head
    if model.head_activation is not None:  # an imported head keeps the layout it came with (MobileBERT's pooler)
        family = family.under(model.backbone.config)
    activation = head_activation(family, _stock_config(model, family))
    # a stock-layout head (import-classifier) maps onto the stock one as it is, whatever its activation
    if model.head_activation is None and activation not in ("tanh", "identity", *OFFSET_ACTIVATIONS):
        key = family.activation.removeprefix("config.")
        raise ModelError(f"{model_dir}: the stock '{model_type}' classification head applies the encoder's "
                         f"{key} ({activation!r}), which no choice of its weights turns into the identity on the "
                         f"[CLS] vector (supported: tanh, {', '.join(OFFSET_ACTIVATIONS)}); {ONNX_HINT}")
    return family


def head_activation(family: StockHead, config) -> str:
    """The activation ``family``'s stock head applies under ``config`` (`StockHead.activation_in`)."""
    return family.activation_in(config)


def _eval_rows(task: Task, data: DataConfig, limit: int) -> list[tuple[str, str | None]]:
    """The task's first ``limit`` eval rows as (text_a, text_b), read with the model's own task spec."""
    from multidistill.data.prepare import open_example_store

    if limit < 1:
        raise ConfigError(f"--parity-examples must be at least 1, got {limit}")
    # The model carries its task specs (label order included, and a test split carved out of dev), so the check
    # reads the data it was built for; the config's own carve named the other tasks too.
    data = DataConfig.model_validate({**data.model_dump(), "tasks": [task.name], "task_specs": [task.model_dump()],
                                      "test_from_dev": None})
    store = open_example_store(data, max_examples_per_task=None, seed=0)
    examples = store.examples(task.name, data.eval_split)
    examples = examples.select(range(min(limit, len(examples))))
    return list(zip(examples["text_a"], examples["text_b"], strict=True))


def _check_rows(task: Task, rows: Sequence[tuple[str, str | None]] | None) -> list[tuple[str, str | None]]:
    if rows is None:
        sentences = list(CHECK_SENTENCES)
        if task.pair:
            return list(zip(sentences, sentences[1:] + sentences[:1], strict=True))
        return [(text, None) for text in sentences]
    out = []
    for i, (text_a, text_b) in enumerate(rows):
        if task.pair and text_b is None:
            raise ConfigError(f"check row {i}: task '{task.name}' takes text pairs but text_b is None")
        out.append((text_a, text_b if task.pair else None))
    if not out:
        raise ConfigError("check_rows is empty; give at least one row (or None for the built-in sentences)")
    return out


# ------------------------------------------------------------------------------------------ building


def _restrict_inputs(tokenizer, model, max_length: int):
    """The tokenizer to save, giving the stock model exactly what our model reads (`for_export`, and no segment ids
    where our model reads none)."""
    tokenizer = for_export(tokenizer, max_length)
    if not model._uses_token_types and "token_type_ids" in tokenizer.model_input_names:
        # Our model ignores segment ids for this encoder; the stock one would read them (and RoBERTa-style
        # encoders with a single segment type would fail on a pair's second segment).
        names = [name for name in tokenizer.model_input_names if name != "token_type_ids"]
        tokenizer.model_input_names = names
        tokenizer.init_kwargs["model_input_names"] = names
    return tokenizer


def _stock_config(model, family: StockHead):
    """The encoder's config with the values the stock head is read under (``family.config``); a stock-layout head
    (import-classifier) keeps its own activation where the family's config names it."""
    config = copy.deepcopy(model.backbone.config)
    for key, value in family.config:
        setattr(config, key, model.head_activation if key == family.activation_key and model.head_activation
                else value)
    return config


def _hf_config(model, task: Task, family: StockHead):
    config = _stock_config(model, family)
    if task.type == "regression":
        config.num_labels = 1
        config.id2label = {0: task.name}
        config.label2id = {task.name: 0}
        config.problem_type = "regression"
    else:
        config.num_labels = len(task.labels)
        config.id2label = dict(enumerate(task.labels))
        config.label2id = {label: i for i, label in enumerate(task.labels)}
        config.problem_type = "multi_label_classification" if task.is_multilabel else "single_label_classification"
    return config


def _build_hf_model(model, task: Task, family: StockHead, config, tokenizer, rows, max_length: int) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    hf_model = AutoModelForSequenceClassification.from_config(config)
    loaded = hf_model.base_model.load_state_dict(model.backbone.state_dict(), strict=False)
    missing = [key for key in loaded.missing_keys if not key.startswith("pooler.")]
    if missing or loaded.unexpected_keys:
        raise ModelError(f"the encoder's weights do not fit {type(hf_model).__name__}: missing {missing[:5]}, "
                         f"unexpected {list(loaded.unexpected_keys)[:5]}; {ONNX_HINT}")
    out = _layer(hf_model, family.out)
    head = model.heads[task.name].out
    weight = head.weight.detach().double()
    bias = head.bias.detach().double()
    hidden = weight.shape[1]
    if tuple(out.weight.shape) != tuple(weight.shape):  # e.g. an XLM summary projecting to hidden_size
        raise ModelError(f"the stock head's {family.out} is {tuple(out.weight.shape)}, not {tuple(weight.shape)} "
                         f"as the task's head; {ONNX_HINT}")
    activation = head_activation(family, config)
    ours = model.heads[task.name].hidden
    if ours is not None:  # a stock-layout head (import-classifier): its dense layer maps onto the stock one as it is
        if family.dense is None or model.head_activation != activation:
            raise ModelError(f"task '{task.name}': the model's heads apply a dense layer and {model.head_activation} "
                             f"(a classifier's head brought in by import-classifier), the stock "
                             f"'{config.model_type}' head {activation if family.dense else 'has no dense layer'}; "
                             f"{ONNX_HINT}")
        dense = _layer(hf_model, family.dense)
        with torch.no_grad():
            dense.weight.copy_(ours.dense.weight)
            dense.bias.copy_(ours.dense.bias)
            out.weight.copy_(weight)
            out.bias.copy_(bias)
        return hf_model.eval()
    if activation == "identity":  # the [CLS] vector goes straight to the stock classifier
        with torch.no_grad():
            out.weight.copy_(weight)
            out.bias.copy_(bias)
        return hf_model.eval()
    dense = _layer(hf_model, family.dense)
    if tuple(dense.weight.shape) != (hidden, hidden):  # e.g. a DeBERTa config with another pooler_hidden_size
        raise ModelError(f"the stock head's {family.dense} is {tuple(dense.weight.shape)}, not ({hidden}, {hidden}) "
                         f"as the encoder's [CLS] vector needs; {ONNX_HINT}")
    bound = _pooled_bound(model, task, tokenizer, rows[:CHECK_BATCH], max_length)
    with torch.no_grad():
        if activation == "tanh":
            eps = min(MAX_EPS, max(MIN_EPS, math.sqrt(3 * TANH_RELATIVE_ERROR) / float(bound.max())))
            dense.weight.copy_(torch.eye(hidden, dtype=torch.float64) * eps)
            dense.bias.zero_()
            out.weight.copy_(weight / eps)
            out.bias.copy_(bias)
        else:
            offset = bound + OFFSET_MARGIN
            dense.weight.copy_(torch.eye(hidden, dtype=torch.float64))
            dense.bias.copy_(offset)
            out.weight.copy_(weight)
            out.bias.copy_(bias - weight @ offset)  # in float64, rounded once
    return hf_model.eval()


def _layer(hf_model: nn.Module, path: str) -> nn.Linear:
    layer = hf_model
    for part in path.split("."):
        layer = getattr(layer, part, None)
    if not isinstance(layer, nn.Linear):
        raise ModelError(f"{type(hf_model).__name__} has no linear layer '{path}' in this transformers version; "
                         f"{ONNX_HINT}")
    return layer


def _encode(tokenizer, rows, max_length: int) -> dict[str, torch.Tensor]:
    texts_a = [a for a, _ in rows]
    texts_b = [b for _, b in rows] if rows[0][1] is not None else None
    return encode_texts(tokenizer, texts_a, texts_b, max_length)


@torch.no_grad()
def _our_logits(model, task: Task, encoded: dict[str, torch.Tensor]):
    return model(task=task.name, input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                 token_type_ids=encoded.get("token_type_ids"))


def _is_norm(module: nn.Module) -> bool:
    """torch's LayerNorm or RMSNorm, or a module named like a norm with a per-dimension weight (DeBERTa's LayerNorm,
    EuroBERT's RMSNorm); what such a module computes is checked on its captured call (`_norm_bound`)."""
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return True
    weight = getattr(module, "weight", None)
    return type(module).__name__.endswith("Norm") and isinstance(weight, torch.Tensor) and weight.dim() == 1


def _norm_bound(layer: nn.Module, inputs, out: torch.Tensor, hidden: int) -> torch.Tensor | None:
    """Per-dimension bound on |output| of a norm whatever its input: ``|gamma| sqrt(H - 1) + |beta|`` for a
    LayerNorm (``(x - mean) / sqrt(var + eps)`` has no component beyond sqrt(H - 1)), ``|gamma| sqrt(H) + |beta|``
    for an RMSNorm (``x / sqrt(mean(x^2) + eps)``). A module other than torch's must have computed one of the two on
    its captured call; another computation (MobileBERT's NoNorm, a ``(1 + weight)`` variant) gives None."""
    weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
    gamma = weight.detach().double().abs() if isinstance(weight, torch.Tensor) else torch.ones(hidden).double()
    beta = bias.detach().double().abs() if isinstance(bias, torch.Tensor) else torch.zeros(hidden).double()
    layer_norm = gamma * math.sqrt(max(hidden - 1, 1)) + beta
    if isinstance(layer, nn.LayerNorm):
        return layer_norm
    if not isinstance(inputs, torch.Tensor) or inputs.shape != out.shape:
        return None
    eps = getattr(layer, "variance_epsilon", None) or getattr(layer, "eps", None) or 1e-6
    scale = weight.detach().double() if isinstance(weight, torch.Tensor) else 1.0
    shift = bias.detach().double() if isinstance(bias, torch.Tensor) else 0.0
    x, got = inputs.detach().double(), out.detach().double()
    centred = x - x.mean(-1, keepdim=True)
    if not isinstance(layer, nn.RMSNorm) and torch.allclose(
            got, scale * centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps) + shift,
            rtol=1e-4, atol=1e-5):
        return layer_norm
    if torch.allclose(got, scale * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) + shift,
                      rtol=1e-4, atol=1e-5):
        return gamma * math.sqrt(hidden) + beta
    return None


def _pooled_bound(model, task: Task, tokenizer, rows, max_length: int) -> torch.Tensor:
    """Per-dimension bound on |pooled vector| (float64): the bound of the LayerNorm (or RMSNorm) whose output the
    pooled vector is (the last one that gives it; DeBERTa registers its relative-embedding LayerNorm after the
    layers), else (unknown layout) a generous multiple of what the check rows show."""
    norms = [module for module in model.backbone.modules() if _is_norm(module)]
    captured: list[tuple[nn.Module, object, object]] = []
    # I-BERT's IntLayerNorm returns (output, scaling factor)
    handles = [norm.register_forward_hook(lambda m, i, out: captured.append(
        (m, i[0] if i else None, out[0] if isinstance(out, tuple) and out else out))) for norm in norms]
    try:
        pooled = _our_logits(model, task, _encode(tokenizer, rows, max_length)).pooled
    finally:
        for handle in handles:
            handle.remove()
    seen = float(pooled.abs().max())
    for layer, inputs, out in reversed(captured):
        if isinstance(out, torch.Tensor) and out.dim() == 3 and out.shape[0] == pooled.shape[0] \
                and out.shape[-1] == pooled.shape[-1] and torch.equal(out[:, 0], pooled):
            bound = _norm_bound(layer, inputs, out, pooled.shape[-1])
            if bound is None:
                break
            return torch.clamp(bound, min=seen)
    return torch.full((pooled.shape[-1],), 50.0 + 10.0 * seen, dtype=torch.float64)


def _safetensors_kwargs(hf_model) -> dict:
    # transformers 4 takes safe_serialization (default True); transformers 5 always writes safetensors.
    parameters = inspect.signature(hf_model.save_pretrained).parameters
    return {"safe_serialization": True} if "safe_serialization" in parameters else {}


def _verify(model, task: Task, folder: Path, rows, max_length: int,
            thresholds: tuple[float, ...] | None = None) -> dict:
    """Load the written folder as a stock model and compare its logits with ours on ``rows``: returns the
    largest |logit difference| and, for classification, the share of rows with the same predicted class. The stock
    model reads what a user's ``tokenizer(texts, padding=True, truncation=True)`` gives with the saved tokenizer, so
    its settings (padding side, pad token, length) are checked too."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        hf_model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    except (OSError, ValueError) as exc:
        raise ModelError(f"the exported folder does not load with AutoModelForSequenceClassification: {exc}") from exc
    diff, same = 0.0, 0
    for start in range(0, len(rows), CHECK_BATCH):
        batch = rows[start:start + CHECK_BATCH]
        ours = _our_logits(model, task, _encode(tokenizer, batch, max_length)).logits.double()
        stock = tokenizer([a for a, _ in batch], [b for _, b in batch] if batch[0][1] is not None else None,
                          padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            theirs = hf_model(**stock).logits.double()
        if ours.shape != theirs.shape:
            raise ModelError(f"the exported model gives logits of shape {tuple(theirs.shape)}, ours "
                             f"{tuple(ours.shape)}")
        batch_diff = float((ours - theirs).abs().max())
        if not batch_diff <= TOLERANCE:  # also catches NaN
            raise ModelError(f"the exported model's logits differ from ours by up to {batch_diff:.3g} "
                             f"(> {TOLERANCE}) on the check rows; nothing was written; {ONNX_HINT}")
        diff = max(diff, batch_diff)
        same += int(same_predictions(task.type, ours.numpy(), theirs.numpy(), thresholds).sum())
    agreement = same / len(rows) if task.type != "regression" else None
    return {"max_abs_diff": diff, "agreement": agreement}
