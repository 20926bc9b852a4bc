"""Bring a classifier fine-tuned elsewhere (a stock Hugging Face `AutoModelForSequenceClassification` folder or hub
name, e.g. the output of transformers' Trainer) into a multidistill model folder, so that it can teach:
`soft-targets --teacher`, a recipe's `teacher.model_dirs`, `evaluate`, `predict`, `benchmark`, and a student's
`model.heads_from`.

The encoder's weights are taken as they are. The stock head (BERT's pooler and classifier, RoBERTa's dense + tanh +
out_proj, DistilBERT's pre_classifier + ReLU, ...; `models/families.py` says where each family keeps it) becomes a
head with the same dense layer and activation (`MultiTaskModel.head_activation`), its outputs put in the task's
label order. Before anything is written, the new model's logits are compared with the classifier's own on a few
sentences (sentence pairs for a pair task): a head laid out otherwise than the table says is refused, never written.
"""

from __future__ import annotations

import copy
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers.activations import ACT2FN

from multidistill.config import DataConfig
from multidistill.data.collate import encode_texts
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError
from multidistill.evaluation.thresholds import Thresholds, read_thresholds, save_thresholds, saved_form
from multidistill.models.backbone import backbone_from_config, load_tokenizer, resolve_model_path
from multidistill.models.families import FAMILIES, StockHead
from multidistill.models.multitask import MODEL_CONFIG_FILE, MultiTaskModel
from multidistill.utils.atomic import atomic_dir, write_json
from multidistill.utils.entry import api_call

IMPORT_INFO_FILE = "import.json"
# Largest accepted |classifier's logits - imported model's logits| on the check rows (float32 on both sides).
TOLERANCE = 1e-4
IMPORTABLE = tuple(name for name, family in FAMILIES.items() if family.stock_head is not None)


def import_classifier(source: str | os.PathLike, out: str | os.PathLike, *, task: str | Task,
                      data: DataConfig | None = None, labels: Sequence[str] | str | None = None,
                      max_length: int | None = None, trust_remote_code: bool = False, overwrite: bool = False,
                      progress: bool = True) -> Path:
    """Write the stock Hugging Face classifier ``source`` (a folder or hub name) as a multidistill model folder
    ``out`` with one head, for ``task``, and return ``out``; `multidistill import-classifier` does the same.

    ``task``: a `Task`, or a task name: a built-in one (`multidistill tasks`) or one ``data`` declares
    (``data.task_specs``; its ``data_root`` is recorded in the model for evaluate/benchmark). The classifier's
    outputs are matched to the task's labels by the names in its ``id2label``; ``labels`` (a list, or one
    comma-separated str) names its outputs in order instead, with the task's labels (a classifier whose config
    says ``LABEL_0, LABEL_1, ...`` is read by position where the task's labels are the integers 0..n-1, or its
    files' ``int_label_names`` give the order, and a note says so; otherwise ``labels`` is needed). A regression
    task takes a classifier with one output. ``max_length`` is the length the model truncates inputs at
    (recorded, as a trained model records its training length; default 128, or fewer where the encoder's
    positions end).

    Weights are read from safetensors only, and custom model code runs only with ``trust_remote_code``. Raises
    `ModelError` for a classifier of a family without a stock head in the table, with other labels, without
    trained head weights, or whose imported logits differ from its own by more than 1e-4; `UnknownTaskError` for
    an unknown task; `ConfigError` for a non-empty ``out`` (``overwrite`` replaces a folder holding a multidistill
    model). Nothing is written on an error; the
    write is atomic. ``progress`` False: no bars or library notes."""
    with api_call("import_classifier", progress=progress):
        spec = task if isinstance(task, Task) else _task_spec(task, data)
        path = resolve_model_path(str(source))
        out = Path(out)
        _check_out(out, Path(path), overwrite)
        config = _source_config(str(source), path, trust_remote_code)
        head, activation = stock_layout(config, str(source))
        order, how = label_order(spec, config, labels, str(source))
        classifier = _load_classifier(str(source), path, config, trust_remote_code)
        tokenizer = load_tokenizer(str(source), trust_remote_code=trust_remote_code)
        model = _imported_model(classifier, config, spec, head, activation, order, max_length, str(source))
        if not isinstance(task, Task):  # as a trained model records it, so evaluate etc. need no --data-root
            from multidistill.data.roots import recorded_data_root

            model.data_root = recorded_data_root(data.data_root if data is not None else None)
        worst, rows = _parity(classifier, model, spec, tokenizer, order)
        if worst > TOLERANCE:
            raise ModelError(f"{source}: the imported model's logits differ from the classifier's by {worst:.2e} "
                             f"(more than {TOLERANCE:g}) on the check sentences: its '{config.model_type}' head is "
                             "laid out otherwise than multidistill's family table says; nothing was written")
        record = {"source": str(source), "source_weights": _weights(path), "model_type": config.model_type,
                  "task": spec.name, "labels": {"order": [spec.labels[i] for i in range(len(order))]
                                                if spec.has_labels else [], "read_from": how,
                                                "classifier_outputs": order},
                  "head": {"dense": head.dense, "activation": activation, "out": head.out},
                  "parity": {"rows": rows, "max_abs_diff": worst, "tolerance": TOLERANCE}}
        thresholds = _saved_thresholds(config, spec, str(source), record["source_weights"])
        if thresholds:
            record["thresholds"] = "read from the classifier's config.json (multidistill_thresholds)"
        with atomic_dir(out) as tmp:
            model.write_to(tmp, tokenizer)
            if thresholds:
                save_thresholds(tmp, {spec.name: spec}, thresholds)
            write_json(tmp / IMPORT_INFO_FILE, record)
            _write_card(tmp, model, spec, config, str(source), activation, how, thresholds)
        return out


def _saved_thresholds(config, spec: Task, source: str, weights: str | None) -> Thresholds:
    """The decision thresholds a multidistill Hugging Face export keeps in its config (``multidistill_thresholds``),
    for a multilabel task: brought in, so that an export imported back predicts the sets it did; left out, with a
    note, where the weights are not the ones they were chosen for (``multidistill_thresholds_weights``: a model
    fine-tuned further keeps its config's attributes)."""
    saved = getattr(config, "multidistill_thresholds", None)
    if saved is None:
        return {}
    if not spec.is_multilabel:
        raise ModelError(f"classifier '{source}': its config.json has multidistill_thresholds (a multilabel "
                         f"classifier's), but task '{spec.name}' is {spec.type}")
    thresholds = read_thresholds({"thresholds": {spec.name: saved}}, {spec.name: spec},
                                 f"classifier '{source}' config.json (multidistill_thresholds)")
    if weights is None or getattr(config, "multidistill_thresholds_weights", None) != weights:
        from multidistill.utils.console import stderr_console

        stderr_console().print(f"note: classifier '{source}' has decision thresholds in its config.json "
                               "(multidistill_thresholds), chosen for other weights than it holds now (trained "
                               "further since its export): left out, so every label is predicted over 0.5",
                               style="yellow", markup=False)
        return {}
    return thresholds


def _task_spec(name: str, data: DataConfig | None) -> Task:
    from multidistill.data.prepare import resolve_tasks

    base = data.model_dump() if data is not None else {}
    return resolve_tasks(DataConfig.model_validate({**base, "tasks": [name], "test_from_dev": None}))[0]


def _check_out(out: Path, source: Path, overwrite: bool) -> None:
    from multidistill.training.run_dir import refuse_foreign_overwrite

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if source.exists() and (out.resolve() in (source.resolve(), *source.resolve().parents)
                            or source.resolve() in out.resolve().parents):
        raise ConfigError(f"--out {out} is, holds or lies inside the classifier's folder {source}; choose another "
                          "folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    refuse_foreign_overwrite(out, "--out", (MODEL_CONFIG_FILE,))


def _source_config(source: str, path: str, trust_remote_code: bool):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the config of classifier '{source}': {exc}") from exc


def stock_layout(config, source: str) -> tuple[StockHead, str | None]:
    """Where ``config``'s family keeps its stock head, and the activation after its dense layer (None: the head is
    linear on the first token's vector, as XLM's summary); a family or setting the table cannot read is refused."""
    family = FAMILIES.get(getattr(config, "model_type", None))
    if family is None or family.stock_head is None:
        raise ModelError(f"cannot import classifier '{source}': multidistill does not know where a "
                         f"'{getattr(config, 'model_type', '?')}' classifier keeps its head (importable families: "
                         f"{', '.join(IMPORTABLE)})")
    head = family.stock_head.under(config)  # MobileBERT's default head is another layout than the export's
    activation = head.activation_in(config)
    for key, value in head.config:
        have = getattr(config, key, None)
        if key != head.activation_key and have != value:
            raise ModelError(f"cannot import classifier '{source}': its config sets {key} to {have!r}, and a stock "
                             f"'{config.model_type}' head is read only with {key} {value!r} (its head under that "
                             "setting has no counterpart in multidistill's heads)")
    if activation == "identity":
        return head, None
    if not isinstance(activation, str) or activation not in ACT2FN:
        raise ModelError(f"cannot import classifier '{source}': its head applies {activation!r}, which is not an "
                         "activation transformers names")
    return head, activation


def label_order(task: Task, config, labels: Sequence[str] | str | None, source: str) -> tuple[list[int], str]:
    """For each of ``task``'s labels (one score for regression), the classifier output that gives it; and how the
    match was made (for import.json and the card)."""
    outputs = int(config.num_labels)
    problem = getattr(config, "problem_type", None)
    if problem == "multi_label_classification" and task.type != "multilabel":
        raise ModelError(f"classifier '{source}' is a multi_label_classification model (config problem_type): its "
                         f"outputs are independent scores, one per label; task '{task.name}' is a {task.type} task "
                         "(give a task of type multilabel)")
    if task.is_multilabel and problem != "multi_label_classification":
        raise ModelError(f"task '{task.name}' is multilabel, and classifier '{source}' is not a "
                         f"multi_label_classification model (config problem_type: {problem}): its outputs would "
                         "be read as independent scores; if it was trained with a sigmoid per label, set "
                         "\"problem_type\": \"multi_label_classification\" in its config.json")
    if problem not in (None, "single_label_classification", "multi_label_classification", "regression"):
        raise ModelError(f"classifier '{source}' is a {problem} model (config problem_type); multidistill reads "
                         "single- and multi-label classifiers and regressions")
    if task.type == "regression":
        if labels:
            raise ConfigError(f"--labels: task '{task.name}' is a regression (one score) and has no labels")
        if outputs != 1:
            raise ModelError(f"classifier '{source}' has {outputs} outputs; task '{task.name}' is a regression and "
                             "needs a classifier with one (num_labels 1)")
        return [0], "one score"
    if not task.has_labels:
        raise ConfigError(f"task '{task.name}' is a text task (unlabelled text): a classifier cannot teach it")
    wanted = list(task.labels)
    if outputs != len(wanted):
        raise ModelError(f"classifier '{source}' has {outputs} outputs; task '{task.name}' has {len(wanted)} labels "
                         f"{wanted}")
    if isinstance(labels, str):
        labels = [part.strip() for part in labels.split(",")]
    names = [str((config.id2label or {}).get(i, f"LABEL_{i}")) for i in range(outputs)]
    if labels:
        given = list(labels)
        if len(given) != outputs or sorted(given) != sorted(wanted):
            raise ConfigError(f"--labels {','.join(given)}: name the classifier's {outputs} outputs in order, each "
                              f"with one of task '{task.name}''s labels {wanted}, each once")
        return [given.index(label) for label in wanted], "--labels"
    if sorted(names) == sorted(wanted):
        return [names.index(label) for label in wanted], "the classifier's id2label"
    folded = [name.casefold() for name in names]
    if len(set(folded)) == outputs and sorted(folded) == sorted(label.casefold() for label in wanted):
        return [folded.index(label.casefold()) for label in wanted], "the classifier's id2label (case aside)"
    if names == [f"LABEL_{i}" for i in range(outputs)]:
        # Unnamed outputs are the integer labels the classifier was trained on: "i" where the task's labels are
        # the integers 0..n-1, or the task files' int_label_names (a Hugging Face dataset's ClassLabel order).
        order = position_labels(task, outputs)
        if order is not None:
            from multidistill.utils.console import stderr_console

            note = (f"note: classifier '{source}' names its outputs LABEL_0..LABEL_{outputs - 1}: output i is read as "
                    f"task '{task.name}''s label {order[0]!r}, ... ({', '.join(order)}); give --labels if it was "
                    "trained on other label ids")
            stderr_console().print(note, style="yellow", markup=False)
            return [order.index(label) for label in wanted], "positions (id2label has no names)"
        raise ModelError(f"classifier '{source}' names its outputs LABEL_0..LABEL_{outputs - 1}, and task "
                         f"'{task.name}''s labels {wanted} are not the integers 0..{outputs - 1}: give --labels with "
                         f"the task's label for each output in order (e.g. --labels {','.join(wanted)})")
    raise ModelError(f"classifier '{source}' names its outputs {names}, task '{task.name}' has labels {wanted}: "
                     f"give --labels with the task's label for each output in order (e.g. --labels "
                     f"{','.join(wanted)})")


def position_labels(task: Task, outputs: int) -> list[str] | None:
    """The task's label of each integer class id 0..outputs-1, where the data says it: the labels are those
    integers, or every file of the task names its integer labels' order (``int_label_names``); else None."""
    if sorted(task.labels) == sorted(str(i) for i in range(outputs)):
        return [str(i) for i in range(outputs)]
    names = {tuple(f.int_label_names) for _, f in task.all_files() if f.int_label_names}
    if len(names) == 1 and sorted(next(iter(names))) == sorted(task.labels):
        return list(next(iter(names)))
    return None


def _load_classifier(source: str, path: str, config, trust_remote_code: bool) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    folder = Path(path)
    if (folder / MODEL_CONFIG_FILE).is_file():
        raise ModelError(f"cannot import classifier '{source}': it is a multidistill model folder already (it has "
                         f"{MODEL_CONFIG_FILE}); give it to soft-targets or a recipe as it is")
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        raise ModelError(f"cannot import classifier '{source}': {folder} has no .safetensors weights"
                         + (f" (only {', '.join(pickled)}: a pickle file, which is never unpickled as it could run "
                            "code; convert it to model.safetensors with a tool you trust)" if pickled else ""))
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, config=config, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=torch.float32,
            output_loading_info=True)
    except Exception as exc:
        from multidistill.utils.interrupt import raise_if_interrupted

        raise_if_interrupted(exc)
        if isinstance(exc, (OSError, ValueError, KeyError, RuntimeError)) or type(exc).__name__ == "SafetensorError":
            raise ModelError(f"cannot load classifier '{source}': {exc}") from exc
        raise
    # transformers fills weights the checkpoint lacks with random ones: a plain encoder (no fine-tuned head) would
    # pass the parity check, as both sides hold the same random head. Only fine-tuned classifiers are taken.
    unread = sorted(info.get("missing_keys") or []) + sorted(str(m[0]) if isinstance(m, tuple) else str(m)
                                                             for m in info.get("mismatched_keys") or [])
    if unread:
        raise ModelError(f"cannot import classifier '{source}': its checkpoint lacks {len(unread)} of the classifier's "
                         f"weights ({', '.join(unread[:4])}{', ...' if len(unread) > 4 else ''}), which transformers "
                         "would fill at random: it is no fine-tuned classifier (a plain encoder has no trained head)")
    return model.eval()


def _linear(model: nn.Module, dotted: str, source: str) -> nn.Linear:
    try:
        layer = model.get_submodule(dotted)
    except AttributeError:
        layer = None
    if not isinstance(layer, nn.Linear):
        raise ModelError(f"classifier '{source}' ({type(model).__name__}) has no linear layer '{dotted}' in this "
                         "transformers version")
    return layer


def _imported_model(classifier: nn.Module, config, task: Task, head: StockHead, activation: str | None,
                    order: list[int], max_length: int | None, source: str) -> MultiTaskModel:
    backbone_config = copy.deepcopy(config)
    backbone_config.architectures = None  # the folder holds an encoder with our heads, not the stock classifier
    backbone_config.dtype = torch.float32  # a classifier saved in fp16/bf16 is read in float32, as training does
    backbone = backbone_from_config(backbone_config)
    loaded = backbone.load_state_dict(classifier.base_model.state_dict(), strict=False)
    unexpected = [key for key in loaded.unexpected_keys if not key.startswith("pooler.")]  # ours pools itself
    if loaded.missing_keys or unexpected:
        raise ModelError(f"classifier '{source}': its encoder's weights do not fit {type(backbone).__name__}: "
                         f"missing {list(loaded.missing_keys)[:5]}, unexpected {unexpected[:5]}")
    model = MultiTaskModel(backbone, [task], pooling="cls", max_length=max_length, head_activation=activation)
    if max_length is not None:
        model.check_max_length(max_length, "--max-length")
    model.max_length = model.inference_length  # recorded, as a trained model records its training length
    ours, out = model.heads[task.name], _linear(classifier, head.out, source)
    rows = torch.tensor(order)
    if tuple(out.weight.shape) != (int(config.num_labels), ours.out.in_features):
        raise ModelError(f"classifier '{source}': its {head.out} is {tuple(out.weight.shape)}, not "
                         f"({config.num_labels}, {ours.out.in_features}) as a head on the encoder's vector")
    with torch.no_grad():
        ours.out.weight.copy_(out.weight[rows])
        ours.out.bias.copy_(out.bias[rows])
        if ours.hidden is not None:
            dense = _linear(classifier, head.dense, source)
            if dense.weight.shape != ours.hidden.dense.weight.shape:
                raise ModelError(f"classifier '{source}': its {head.dense} is {tuple(dense.weight.shape)}, not "
                                 f"{tuple(ours.hidden.dense.weight.shape)} as the encoder's width")
            ours.hidden.dense.weight.copy_(dense.weight)
            ours.hidden.dense.bias.copy_(dense.bias)
    return model.eval()


@torch.no_grad()
def _parity(classifier: nn.Module, model: MultiTaskModel, task: Task, tokenizer, order: list[int]) -> tuple[float, int]:
    """The largest |difference| of the two models' logits on the check sentences (pairs for a pair task)."""
    from multidistill.export.hf import CHECK_SENTENCES  # the export's own check sentences, checked the same way

    texts_b = list(reversed(CHECK_SENTENCES)) if task.pair else None
    encoded = encode_texts(tokenizer, list(CHECK_SENTENCES), texts_b, model.inference_length)
    if not model._uses_token_types:  # a segment id its embeddings have no row for (a RoBERTa-style encoder)
        encoded.pop("token_type_ids", None)
    theirs = classifier(**encoded).logits[:, order]
    ours = model(task=task.name, input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                 token_type_ids=encoded.get("token_type_ids")).logits
    return float((theirs.float() - ours.float()).abs().max()), len(CHECK_SENTENCES)


def _weights(path: str) -> str | None:
    from multidistill.teachers.fingerprint import weights_fingerprint

    return weights_fingerprint(path)


def _write_card(folder: Path, model: MultiTaskModel, task: Task, config, source: str, activation: str | None,
                how: str, thresholds: Thresholds) -> None:
    from multidistill.export.card import IMPORT_METHOD, CardRecord, TaskInfo, write_card
    from multidistill.models.layers import num_layers

    head = f"a dense layer and {activation}, then a linear layer" if activation else "one linear layer"
    record = CardRecord(
        title=f"{task.name}: classifier imported from {source}", form="multidistill", role="teacher",
        architecture=f"{config.model_type} encoder, [CLS] pooling, stock head ({head} from [CLS] to the labels)",
        parameters=sum(p.numel() for p in model.parameters()), layers=num_layers(model.backbone),
        hidden_size=config.hidden_size,
        base_model=source if not Path(source).exists() and source.count("/") == 1 else None,
        initialised_from=f"the weights of {source}, as they are (labels read from {how})",
        method=IMPORT_METHOD,
        tasks=(TaskInfo(task.name, task.type, tuple(task.labels), task.pair, tuple(task.metrics)),),
        data_root=model.data_root, max_length=model.max_length,
        thresholds=saved_form({task.name: task}, thresholds) or {},
        command=shlex.join(["multidistill", *sys.argv[1:]]) if Path(sys.argv[0]).name == "multidistill" else None,
        command_cwd=os.getcwd())
    write_card(folder, record)
