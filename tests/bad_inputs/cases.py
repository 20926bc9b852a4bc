"""The bad-input catalogue: one entry per broken input a user can plausibly hand to the CLI.

Every case is run by tests/test_bad_inputs.py in a fresh workspace holding

    {data}      the three toy tasks (tests/conftest.py `write_tiny_tasks`): toy_sent, toy_pair, toy_reg (TSV)
    {config}    the run config (YAML) the command reads: a teacher run, a distill run or a recipe
    {out}       the run's output folder, which already holds a guard file (precious.txt)
    {teacher}   a saved multidistill model over the toy tasks (copy; safe to damage)
    {teacher_b} the same architecture and tasks with other weights (another teacher)
    {other}     a saved model whose toy_sent head has 3 labels instead of 2
    {store}     a signal store built from {teacher} over the toy tasks' training split (copy)
    {bert}      the tiny Hugging Face BERT the toy models are built on (read-only: copy it to damage it)
    {cache}     the tokenised-view cache (the only folder a failed command may write to)

and must exit with code 2, print exactly one `error:` message containing every `expect` fragment (the file /
line / key at fault), print no traceback, and leave every file of the workspace outside {cache} as it was.

A case says how to break things declaratively:
    files   data-root-relative path -> new content (str or bytes), or None to delete the file
    patch   dotted config key -> value (list items by index; DELETE removes the key); strings may use {names}
    damage  steps on workspace files (models, stores, the config file), from the helpers below
    args    extra CLI arguments
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DELETE = object()  # patch value: remove the key
PAYLOAD_MARKER = "PWNED"  # a pickle payload below would create this file in the workspace if ever unpickled


# ------------------------------------------------------------------------------------------ damage steps


@dataclass(frozen=True)
class Damage:
    """One step that breaks a workspace file; ``what`` describes it for the catalogue."""

    what: str
    apply: Callable[[dict[str, Path]], None]

    def __call__(self, ws: dict[str, Path]) -> None:
        self.apply(ws)


def resolve(template: str, ws: dict[str, Path]) -> Path:
    return Path(template.format(**{k: str(v) for k, v in ws.items()}))


def write(template: str, content: str | bytes) -> Damage:
    def apply(ws):
        path = resolve(template, ws)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return Damage(f"overwrite {template}", apply)


def delete(template: str) -> Damage:
    def apply(ws):
        path = resolve(template, ws)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    return Damage(f"delete {template}", apply)


def truncate(template: str, keep: float = 0.5) -> Damage:
    def apply(ws):
        path = resolve(template, ws)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return Damage(f"truncate {template} to {keep:.0%}", apply)


def zero_bytes(template: str, start: int, length: int) -> Damage:
    def apply(ws):
        path = resolve(template, ws)
        data = bytearray(path.read_bytes())
        data[start:start + length] = bytes(length)
        path.write_bytes(bytes(data))

    return Damage(f"zero bytes {start}..{start + length} of {template}", apply)


def copy(src: str, dst: str) -> Damage:
    def apply(ws):
        source, target = resolve(src, ws), resolve(dst, ws)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)

    return Damage(f"copy {src} to {dst}", apply)


class _Payload:
    """Unpickling this creates a file: proof that a loader ran pickle code."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


def pickle_payload(template: str, *, state_dict_of: str | None = None) -> Damage:
    """Write a `torch.save` file (a pickle) whose unpickling would create {ws}/PWNED; with ``state_dict_of``,
    it also holds that safetensors file's real tensors, like a genuine pytorch_model.bin."""

    def apply(ws):
        import torch
        from safetensors.torch import load_file

        tensors: dict[str, Any] = dict(load_file(resolve(state_dict_of, ws))) if state_dict_of else {}
        tensors["payload"] = _Payload(ws["ws"] / PAYLOAD_MARKER)
        torch.save(tensors, resolve(template, ws), pickle_protocol=pickle.HIGHEST_PROTOCOL)

    return Damage(f"write a torch.save pickle with a code payload as {template}", apply)


def remote_code(template: str, model_type: str = "evil-bert") -> Damage:
    """Make an HF folder's config.json name a model type only code in the folder defines (`auto_map`);
    importing that code would create {ws}/PWNED."""

    def apply(ws):
        folder = resolve(template, ws)
        config = json.loads((folder / "config.json").read_text())
        config.update(model_type=model_type, auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "evil.py").write_text(
            f"open({str(ws['ws'] / PAYLOAD_MARKER)!r}, 'w').close()\n"
            "from transformers import BertConfig, BertModel\n"
            f"class EvilConfig(BertConfig):\n    model_type = {model_type!r}\n"
            "class EvilModel(BertModel):\n    config_class = EvilConfig\n")

    return Damage(f"give {template} an auto_map to its own code", apply)


def reverse_rows(template: str) -> Damage:
    """Reverse a data file's rows under its header: other data, same row count."""

    def apply(ws):
        path = resolve(template, ws)
        header, *rows = path.read_text().splitlines(keepends=True)
        path.write_text(header + "".join(reversed(rows)))

    return Damage(f"reverse the rows of {template}", apply)


def edit_json(template: str, changes: dict[str, Any]) -> Damage:
    def apply(ws):
        path = resolve(template, ws)
        payload = json.loads(path.read_text())
        for key, value in changes.items():
            set_path(payload, key, value)
        path.write_text(json.dumps(payload))

    return Damage(f"edit {template}: {changes}", apply)


def poison_signals(folder: str, column: str, value: float, row: int = 0) -> Damage:
    """Rewrite a stored Arrow shard of a signal store with ``value`` in ``column`` at ``row``."""

    def apply(ws):
        import datasets
        import numpy as np

        path = resolve(folder, ws)
        stored = datasets.load_from_disk(str(path))
        columns = {name: np.array(stored.with_format("numpy")[name]) for name in stored.column_names}
        columns[column].reshape(len(stored), -1)[row, 0] = value
        rewritten = path.with_name(path.name + ".new")
        datasets.Dataset.from_dict(columns, features=stored.features).save_to_disk(str(rewritten))
        del stored
        shutil.rmtree(path)
        rewritten.rename(path)

    return Damage(f"set {column}[{row}] of {folder} to {value}", apply)


def set_path(node: Any, dotted: str, value: Any) -> None:
    """Set (or with DELETE remove) ``a.b.0.c`` in nested dicts/lists, creating dicts on the way."""
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(last)] = value
    elif value is DELETE:
        del node[last]
    else:
        node[last] = value


# ------------------------------------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    id: str
    category: str  # data | config | model | store
    broken: str  # what is wrong, in a user's words
    command: str  # a key of COMMANDS (it also picks the config the command reads)
    expect: tuple[str, ...]  # fragments the error message must contain
    files: dict[str, str | bytes | None] = field(default_factory=dict)
    patch: dict[str, Any] = field(default_factory=dict)
    damage: tuple[Damage, ...] = ()
    args: tuple[str, ...] = ()
    xfail: str | None = None  # a known gap, with what would fix it


EVALUATE = ("evaluate", "{teacher}", "--data-root", "{data}", "--cache-dir", "{cache}", "--output", "{out}/eval.json")
COMMANDS: dict[str, tuple[str, ...]] = {
    "train-teacher": ("train-teacher", "{config}", "--overwrite"),  # --overwrite: only validation protects {out}
    "distill": ("distill", "{config}", "--overwrite"),
    "evaluate": EVALUATE,
    "soft-targets": ("soft-targets", "--teacher", "{teacher_b}", "--tasks", "toy_sent,toy_pair,toy_reg",
                     "--data-root", "{data}", "--cache-dir", "{cache}", "--out", "{store}", "--seed", "7"),
    "run": ("run", "{config}"),
}

SENT_HEADER = "sentence\tlabel\n"
TO_CSV = {"data.task_specs.0.files.train.format": "csv", "data.task_specs.0.files.train.path": "toy_sent/train.csv"}
TO_JSONL = {"data.task_specs.0.files.train.format": "jsonl",
            "data.task_specs.0.files.train.path": "toy_sent/train.jsonl"}
SHARD = "data-00000-of-00001.arrow"
# toy_sent becomes a multilabel task over the same labels: a cell "0,1" is the set {0, 1}.
TO_MULTILABEL = {"data.task_specs.0.type": "multilabel", "data.task_specs.0.metrics": ["micro_f1"]}
# toy_sent becomes an unlabelled text corpus read from {data}/corpus.txt (a `text` task: no labels, no head).
TO_CORPUS = {"data.task_specs.0": {"name": "toy_sent", "type": "text",
                                   "files": {"train": {"path": "corpus.txt", "format": "txt"}}}}

CASES: list[Case] = [
    # --- data files -----------------------------------------------------------------------------------------
    Case("csv-malformed-quoting", "data", "CSV with an unclosed quote", "train-teacher",
         ("toy_sent/train.csv", "line 3", "malformed CSV", "unbalanced quotes"), patch=TO_CSV,
         files={"toy_sent/train.csv": 'sentence,label\ngood film,1\n"unclosed,0\nmore,1\n'}),
    Case("tsv-wrong-column-count", "data", "a row with an extra tab-separated field", "train-teacher",
         ("toy_sent/train.tsv", "line 3", "3 tab-separated fields", "header has 2"),
         files={"toy_sent/train.tsv": SENT_HEADER + "good film\t1\nbad\t0\textra\n"}),
    Case("empty-file", "data", "a 0-byte training file", "train-teacher",
         ("toy_sent/train.tsv", "empty file"), files={"toy_sent/train.tsv": ""}),
    Case("header-only", "data", "a header line and no rows", "train-teacher",
         ("toy_sent/train.tsv", "empty split", "header line but no data rows"),
         files={"toy_sent/train.tsv": SENT_HEADER}),
    Case("unknown-label", "data", "a label outside the task's label list", "train-teacher",
         ("toy_sent/train.tsv", "line 3", "field 'label'", "label '7' is not one of the task's labels"),
         files={"toy_sent/train.tsv": SENT_HEADER + "good film\t1\nbad film\t7\n"}),
    Case("regression-text-score", "data", "a regression score that is text", "train-teacher",
         ("toy_reg/train.tsv", "line 2", "field 'label' (column 'score')", "'five' is not a finite number"),
         files={"toy_reg/train.tsv": "s1\ts2\tscore\na film\tthe film\tfive\n"}),
    Case("non-utf8", "data", "Latin-1 bytes in a UTF-8 file", "train-teacher",
         ("toy_sent/train.tsv", "line 3", "not valid UTF-8", "ff"),
         files={"toy_sent/train.tsv": b"sentence\tlabel\ngood film\t1\nbad \xff film\t0\n"}),
    Case("missing-text-field", "data", "a JSONL record without its text key", "train-teacher",
         ("toy_sent/train.jsonl", "line 2", "missing key 'sentence'"), patch=TO_JSONL,
         files={"toy_sent/train.jsonl": '{"sentence": "good film", "label": "1"}\n{"label": "0"}\n'}),
    Case("empty-text", "data", "an empty text cell", "train-teacher",
         ("toy_sent/train.tsv", "line 3", "field 'text_a' (column 'sentence')", "empty text"),
         files={"toy_sent/train.tsv": SENT_HEADER + "good film\t1\n\t0\n"}),
    Case("duplicate-ids", "data", "the id column repeats an id", "train-teacher",
         ("toy_sent/train.tsv", "line 4", "duplicate id 'a'", "first seen at line 2"),
         patch={"data.task_specs.0.files.train.columns.id": "id"},
         files={"toy_sent/train.tsv": "id\tsentence\tlabel\na\tgood film\t1\nb\tbad film\t0\na\tnice film\t1\n"}),
    Case("header-lacks-column", "data", "the header misses the mapped text column", "train-teacher",
         ("toy_sent/train.tsv", "the header lacks column 'sentence' (columns.text_a)", "'text', 'label'"),
         files={"toy_sent/train.tsv": "text\tlabel\ngood film\t1\n"}),
    Case("missing-data-file", "data", "the training file does not exist", "train-teacher",
         ("toy_sent/train.tsv", "not found", "task 'toy_sent' split 'train'"), files={"toy_sent/train.tsv": None}),
    Case("invalid-jsonl", "data", "a JSONL line that is not JSON", "train-teacher",
         ("toy_sent/train.jsonl", "line 2", "invalid JSON"), patch=TO_JSONL,
         files={"toy_sent/train.jsonl": '{"sentence": "good film", "label": "1"}\n{"sentence": "bad", "label": \n'}),
    Case("bad-dev-file", "data", "the dev split (not train) has an unknown label", "train-teacher",
         ("toy_pair/dev.tsv", "line 2", "label 'yes'"), files={"toy_pair/dev.tsv": "s1\ts2\tlabel\na\tb\tyes\n"}),

    # --- configs --------------------------------------------------------------------------------------------
    Case("unknown-key", "config", "a misspelt key (model.poolng)", "train-teacher",
         ("config.yaml", "key 'model.poolng'", "unknown key"), patch={"model.poolng": "cls"}),
    Case("wrong-type", "config", "batch_size is a word", "train-teacher",
         ("key 'train.batch_size'", "valid integer"), patch={"train.batch_size": "eight"}),
    Case("negative-size", "config", "batch_size: -1", "train-teacher",
         ("key 'train.batch_size'", "greater than 0"), patch={"train.batch_size": -1}),
    Case("unknown-task", "config", "a task name that is neither built in nor declared", "train-teacher",
         ("unknown task 'nope'", "known tasks"), patch={"data.tasks": ["toy_sent", "nope"]}),
    Case("task-listed-twice", "config", "the same task twice in data.tasks", "train-teacher",
         ("key 'data.tasks'", "'toy_sent' is listed twice"), patch={"data.tasks": ["toy_sent", "toy_sent"]}),
    Case("max-seq-length-too-long", "config", "max_seq_length above the model's 64 positions", "train-teacher",
         ("key 'model.max_seq_length'", "100 exceeds the model's limit of 64"),
         patch={"model.max_seq_length": 100}),
    Case("init-from-label-count", "config", "model.init_from has a 3-label head, the task has 2 labels",
         "train-teacher", ("task 'toy_sent'", "has 3 outputs, the run's task has 2"),
         patch={"model.init_from": "{other}"}),
    Case("unknown-loss", "config", "an objective term names no registered loss", "train-teacher",
         ("unknown loss 'sof_ce'", "registered"), patch={"objective.classification": [{"loss": "sof_ce"}]}),
    Case("two-precisions", "config", "bf16 and fp16 both on", "train-teacher",
         ("key 'train'", "choose at most one of bf16 and fp16"), patch={"train.bf16": True, "train.fp16": True}),
    Case("invalid-yaml", "config", "a tab used for indentation (YAML syntax error)", "train-teacher",
         ("config.yaml", "line 3", "invalid YAML"),
         damage=(write("{config}", "output_dir: run\nmodel:\n\tname_or_path: x\n"),)),
    Case("missing-config-file", "config", "the config file does not exist", "train-teacher",
         ("config file", "config.yaml", "does not exist"), damage=(delete("{config}"),)),
    Case("bad-override", "config", "a --set without '='", "train-teacher",
         ("--set 'train.lr'", "expected key.path=value"), args=("--set", "train.lr")),
    Case("soft-loss-without-store", "config", "a soft objective but no signals", "distill",
         ("key 'signals'", "soft-targets"), patch={"signals": None}),
    Case("recipe-bad-name", "config", "recipe: mtdnn (not a recipe)", "run",
         ("key 'recipe'", "'mkd', 'mtdnn_kd'", "'mtdnn'"), patch={"recipe": "mtdnn"}),
    Case("recipe-name-not-a-string", "config", "recipe: [mkd] (a list, not a name)", "run",
         ("key 'recipe'",), patch={"recipe": ["mkd"]}),
    Case("recipe-unknown-key", "config", "a misspelt key inside a recipe's student section", "run",
         ("key 'student.model.poolng'", "unknown key"), patch={"student.model.poolng": "mean"}),

    # --- model folders --------------------------------------------------------------------------------------
    Case("missing-weights", "model", "model.safetensors deleted", "evaluate",
         ("is missing model.safetensors",), damage=(delete("{teacher}/model.safetensors"),)),
    Case("missing-model-config", "model", "multidistill_model.json deleted", "evaluate",
         ("is missing multidistill_model.json", "is this a multidistill model folder?"),
         damage=(delete("{teacher}/multidistill_model.json"),)),
    Case("missing-backbone-config", "model", "config.json (the encoder config) deleted", "evaluate",
         ("is missing config.json",), damage=(delete("{teacher}/config.json"),)),
    Case("corrupt-model-config", "model", "multidistill_model.json is not JSON", "evaluate",
         ("multidistill_model.json", "not valid JSON"), damage=(write("{teacher}/multidistill_model.json", "{kind:"),)),
    Case("model-config-without-tasks", "model", "multidistill_model.json without its task list", "evaluate",
         ("multidistill_model.json", "key 'tasks' must be a list of task specs"),
         damage=(edit_json("{teacher}/multidistill_model.json", {"tasks": DELETE}),)),
    Case("model-config-bad-pooling", "model", "multidistill_model.json with an unknown pooling", "evaluate",
         ("multidistill_model.json", "invalid model config", "'max'"),
         damage=(edit_json("{teacher}/multidistill_model.json", {"backbone.pooling": "max"}),)),
    Case("model-unknown-kind", "model", "multidistill_model.json names an unknown model kind", "evaluate",
         ("multidistill_model.json", "unknown model kind 'gpt'"),
         damage=(edit_json("{teacher}/multidistill_model.json", {"kind": "gpt"}),)),
    Case("truncated-weights", "model", "model.safetensors cut in half", "evaluate",
         ("model.safetensors", "cannot read weights", "corrupt or not safetensors"),
         damage=(truncate("{teacher}/model.safetensors"),)),
    Case("garbage-weights", "model", "model.safetensors is random text", "evaluate",
         ("model.safetensors", "cannot read weights", "corrupt or not safetensors"),
         damage=(write("{teacher}/model.safetensors", b"\x13\x00\x00\x00\x00\x00\x00\x00{garbage" * 40),)),
    Case("other-models-weights", "model", "model.safetensors of a model with other heads", "evaluate",
         ("model.safetensors", "weights do not match the model",
          "size mismatch for heads.toy_sent.out.weight: [3, 32] in the file, [2, 32] in the model"),
         damage=(copy("{other}/model.safetensors", "{teacher}/model.safetensors"),)),
    Case("pickle-as-safetensors", "model", "a torch.save pickle (with a code payload) named model.safetensors",
         "evaluate", ("model.safetensors", "cannot read weights", "corrupt or not safetensors"),
         damage=(pickle_payload("{teacher}/model.safetensors"),)),
    Case("pytorch-bin-only", "model", "only pytorch_model.bin (a pickle with a code payload), no safetensors",
         "evaluate", ("is missing model.safetensors",),
         damage=(pickle_payload("{teacher}/pytorch_model.bin", state_dict_of="{teacher}/model.safetensors"),
                 delete("{teacher}/model.safetensors"))),
    Case("init-from-pickle", "model", "model.init_from folder whose model.safetensors is a pickle", "train-teacher",
         ("model.safetensors", "cannot read weights"), patch={"model.init_from": "{teacher}"},
         damage=(pickle_payload("{teacher}/model.safetensors"),)),
    Case("hf-encoder-bin-only", "model", "an HF encoder folder (model.name_or_path) with only a pickled "
         "pytorch_model.bin (with a code payload)", "train-teacher", ("pytorch_model.bin",),
         patch={"model.name_or_path": "{ws}/hf_bin"},
         damage=(copy("{bert}", "{ws}/hf_bin"),
                 pickle_payload("{ws}/hf_bin/pytorch_model.bin", state_dict_of="{ws}/hf_bin/model.safetensors"),
                 delete("{ws}/hf_bin/model.safetensors"))),
    Case("remote-code-folder", "model", "an HF encoder folder whose config.json needs its own code (auto_map), "
         "without trust_remote_code", "train-teacher", ("cannot load backbone", "contains custom code"),
         patch={"model.name_or_path": "{ws}/hf_remote"},
         damage=(copy("{bert}", "{ws}/hf_remote"), remote_code("{ws}/hf_remote"))),
    Case("eval-max-length", "model", "--max-seq-length above the model's positions", "evaluate",
         ("--max-seq-length", "100 exceeds the model's limit of 64"), args=("--max-seq-length", "100")),

    # --- signal stores --------------------------------------------------------------------------------------
    Case("stale-fingerprint", "store", "soft-targets --out a store built for another teacher", "soft-targets",
         ("signal store", "was built for other teachers", "fingerprint")),
    Case("store-label-count", "store", "a store built for toy_sent with 3 labels (the student's has 2)", "distill",
         ("task 'toy_sent'", "the student has 2 outputs but the teacher signals have 3"),
         damage=(edit_json("{store}/manifest.json", {"tasks.toy_sent.num_labels": 3}),)),
    Case("store-missing-task", "store", "a store without the toy_reg task", "distill",
         ("key 'signals'", "no signals for task 'toy_reg'"),
         damage=(edit_json("{store}/manifest.json", {"tasks.toy_reg": DELETE}),)),
    Case("store-other-subset", "store", "a store built for all rows, the run keeps 10 per task", "distill",
         ("task 'toy_sent'", "the store holds 96 training rows but the run has 10"),
         patch={"train.max_examples_per_task": 10}),
    Case("store-edited-data", "store", "the training file edited after the store was built (same row count)",
         "distill", ("task 'toy_sent'", "made from other training data", "the data files' contents differ",
                     "soft-targets"),
         damage=(reverse_rows("{data}/toy_sent/train.tsv"),)),
    Case("store-cap-over-every-row", "store", "a store built for all rows, the run caps at 1000 rows per task (more "
         "than there are: the same rows, another subset setting; the message named no setting)", "distill",
         ("task 'toy_sent'", "the store kept every row of the training split, this run keeps up to 1000 rows "
          "(max_examples_per_task", "--max-examples-per-task 1000 --seed 7"),
         patch={"train.max_examples_per_task": 1000}),
    Case("store-nan-logit", "store", "a teacher logit in the Arrow shard is NaN", "distill",
         ("signal store", "task 'toy_sent' split 'train'", "teacher_logits", "NaN/inf"),
         damage=(poison_signals("{store}/toy_sent/train", "teacher_logits", float("nan")),)),
    Case("store-inf-mean", "store", "a soft target in the Arrow shard is inf", "distill",
         ("signal store", "task 'toy_reg' split 'train'", "teacher_mean", "NaN/inf"),
         damage=(poison_signals("{store}/toy_reg/train", "teacher_mean", float("inf"), row=5),)),
    Case("store-truncated-shard", "store", "an Arrow shard cut in half", "distill",
         ("signal store", "task 'toy_pair' split 'train'", "damaged", "soft-targets"),
         damage=(truncate("{store}/toy_pair/train/" + SHARD),)),
    Case("store-empty-shard", "store", "an Arrow shard of 0 bytes", "distill",
         ("signal store", "task 'toy_pair' split 'train'", "damaged"),
         damage=(truncate("{store}/toy_pair/train/" + SHARD, keep=0),)),
    Case("store-zeroed-bytes", "store", "bytes zeroed inside an Arrow shard's schema", "distill",
         ("signal store", "task 'toy_sent' split 'train'", "damaged"),
         damage=(zero_bytes("{store}/toy_sent/train/" + SHARD, 200, 50),)),
    Case("store-missing-split-folder", "store", "the toy_reg folder of the store deleted", "distill",
         ("signal store", "task 'toy_reg' split 'train'", "damaged"), damage=(delete("{store}/toy_reg"),)),
    Case("store-manifest-without-tasks", "store", "manifest.json without its task table", "distill",
         ("manifest.json", "not a valid signal-store manifest"),
         damage=(edit_json("{store}/manifest.json", {"tasks": DELETE}),)),
    Case("store-no-manifest", "store", "manifest.json deleted", "distill",
         ("is not a signal store", "manifest.json"), damage=(delete("{store}/manifest.json"),)),
    Case("store-future-version", "store", "a manifest of an unknown format_version", "distill",
         ("manifest.json", "unsupported format_version 99"),
         damage=(edit_json("{store}/manifest.json", {"format_version": 99}),)),
    # --- unlabelled text corpora (text tasks) ------------------------------------------------------------
    Case("corpus-empty", "data", "an empty corpus file (only blank lines) for a text task", "train-teacher",
         ("corpus.txt", "empty corpus file", "task 'toy_sent'"), patch=TO_CORPUS, files={"corpus.txt": "\n \n"}),
    Case("corpus-non-utf8", "data", "a corpus file that is not UTF-8", "train-teacher",
         ("corpus.txt", "line 2", "not valid UTF-8", "e9"), patch=TO_CORPUS,
         files={"corpus.txt": b"a good film\ncaf\xe9 film\n"}),
    Case("text-task-head-loss", "config", "an unlabelled text task given the default (head-based) objective",
         "train-teacher", ("task 'toy_sent' is a text task", "loss 'hard' reads student_logits",
                           "objective.tasks.toy_sent"),
         patch=TO_CORPUS, files={"corpus.txt": "a good film\nthe plot\n"}),
]


# --- issue 14 class 3: --resume of a changed run (refused before anything is written) ---------------------
_RESUMABLE: dict[str, Path] = {}  # trained runs by their config (locations left out), shared across cases


def resumable_run() -> Damage:
    """Train {config} (as the case patched it) and put the run, checkpoints included, into {out}: the run that
    the case's `--resume` continues. Runs are cached by their settings (paths differ per workspace, and those
    are safe to change on resume: output_dir, data_root, cache_dir)."""

    def apply(ws):
        import tempfile

        import yaml

        from multidistill.config import load_config
        from multidistill.training.run import train_model

        config = load_config(ws["config"])
        key = json.dumps(config.model_dump(mode="json", exclude={"output_dir": True, "data": {"data_root",
                                                                                               "cache_dir"}}))
        if key not in _RESUMABLE:
            folder = Path(tempfile.mkdtemp(prefix="resumable_run_")) / "run"
            train_model(config.model_copy(update={"output_dir": str(folder)}))
            _RESUMABLE[key] = folder
        shutil.copytree(_RESUMABLE[key], ws["out"], dirs_exist_ok=True)
        (ws["out"] / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))

    return Damage("train {config} into {out} (a run to resume)", apply)


def edit_checkpoints(file: str, changes: dict[str, Any] | None = None) -> Damage:
    """Edit (``changes``) or, without them, delete ``file`` in every checkpoint folder of {out}."""

    def apply(ws):
        for folder in sorted((ws["out"] / "checkpoints").glob("step-*")):
            if changes is None:
                (folder / file).unlink()
            else:
                edit_json(str(folder / file).replace("{", "{{").replace("}", "}}"), changes)(ws)

    return Damage(f"{'edit' if changes else 'delete'} {file} in {{out}}'s checkpoints", apply)


COMMANDS["resume"] = ("train-teacher", "{config}", "--resume")
_SMALL = {"train.epochs": 1, "train.max_examples_per_task": 16}  # a quick run to resume
_RESUME = (resumable_run(),)
CASES += [
    Case("resume-changed-lr", "config", "--resume with another train.lr", "resume",
         ("--resume", "other settings", "key 'train.lr' was 0.003 in the checkpoint, now 0.001"),
         patch=_SMALL, damage=_RESUME, args=("--set", "train.lr=0.001")),
    Case("resume-changed-batch-size", "config", "--resume with a batch size that puts the saved position beyond "
         "the new epoch (it hung)", "resume", ("key 'train.batch_size' was 8 in the checkpoint, now 64",),
         patch=_SMALL, damage=_RESUME, args=("--set", "train.batch_size=64")),
    Case("resume-changed-seed", "config", "--resume with another train.seed", "resume",
         ("key 'train.seed' was 7 in the checkpoint, now 8",), patch=_SMALL, damage=_RESUME,
         args=("--set", "train.seed=8")),
    Case("resume-changed-max-length", "config", "--resume with another model.max_seq_length", "resume",
         ("key 'model.max_seq_length' was 32 in the checkpoint, now 16",), patch=_SMALL, damage=_RESUME,
         args=("--set", "model.max_seq_length=16")),
    Case("resume-changed-pooling", "config", "--resume with another model.pooling", "resume",
         ("key 'model.pooling' was \"cls\" in the checkpoint, now \"mean\"",), patch=_SMALL, damage=_RESUME,
         args=("--set", "model.pooling=mean")),
    Case("resume-changed-tasks", "config", "--resume with another task list (was: 'unreadable checkpoint')",
         "resume", ("key 'data.tasks.2.name' was \"toy_reg\" in the checkpoint, now (not set)",), patch=_SMALL,
         damage=_RESUME,
         args=("--set", "data.tasks=[toy_sent,toy_pair]")),
    Case("resume-changed-data", "config", "--resume after the training file was edited", "resume",
         ("the training data of task 'toy_sent' changed",), patch=_SMALL,
         damage=(*_RESUME, reverse_rows("{data}/toy_sent/train.tsv"))),
    Case("resume-missing-loop-state", "config", "--resume of a checkpoint whose loop_state.json was deleted "
         "(it restarted from step 0)", "resume", ("is incomplete", "loop_state.json missing", "step 0"),
         patch=_SMALL, damage=(*_RESUME, edit_checkpoints("loop_state.json"))),
    Case("resume-position-beyond-plan", "config", "--resume of a checkpoint whose position lies beyond the epoch",
         "resume", ("lies outside this run's plan", "batch 100000"), patch=_SMALL,
         damage=(*_RESUME, edit_checkpoints("loop_state.json", {"position": 100000}))),
]


# --- issue 14, classes 5 and 6: raw tracebacks and silently ignored settings -------------------------------


def edit_config(what: str, change: Callable[[str], str]) -> Damage:
    """Rewrite the config file's text (for what a dict patch cannot express: a key given twice)."""

    def apply(ws):
        path = ws["config"]
        path.write_text(change(path.read_text()))

    return Damage(f"edit {{config}}: {what}", apply)


def duplicate_task_spec(index: int = 0) -> Damage:
    """Append a second copy of ``data.task_specs[index]`` (same name) to the config."""

    def change(text: str) -> str:
        import yaml

        config = yaml.safe_load(text)
        specs = config["data"]["task_specs"]
        specs.append(dict(specs[index]))
        return yaml.safe_dump(config, sort_keys=False)

    return edit_config(f"repeat task_specs.{index}", change)


CASES += [
    # class 5: bounded numbers, finite labels, corrupt encoder weights
    Case("seed-out-of-range", "config", "train.seed: 2**32 (numpy and torch take 0..2**32-1)", "train-teacher",
         ("key 'train.seed'", "less than or equal to 4294967295"), patch={"train.seed": 2**32}),
    Case("negative-seed", "config", "train.seed: -1", "train-teacher",
         ("key 'train.seed'", "greater than or equal to 0"), patch={"train.seed": -1}),
    Case("epochs-inf", "config", "train.epochs: .inf", "train-teacher",
         ("key 'train.epochs'", "finite number"), patch={"train.epochs": float("inf")}),
    Case("lr-inf", "config", "train.lr: .inf", "train-teacher",
         ("key 'train.lr'", "finite number"), patch={"train.lr": float("inf")}),
    Case("lr-nan", "config", "train.lr: .nan", "distill",
         ("key 'train.lr'", "finite number"), patch={"train.lr": float("nan")}),
    Case("recipe-seed-out-of-range", "config", "a recipe's teacher.seeds holds 2**32", "run",
         ("key 'teacher.seeds.0'", "less than or equal to 4294967295"), patch={"teacher.seeds": [2**32]}),
    Case("recipe-replaced-seed", "config", "a recipe's teacher.train.seed (teacher.seeds give the seeds)", "run",
         ("teacher.train.seed: 7 is not used", "teacher.seeds"), patch={"teacher.train.seed": 7}),
    Case("recipe-data-subset-seed", "config", "a recipe's data.subset_seed (the top-level subset_seed is used)", "run",
         ("data.subset_seed", "top-level subset_seed"), patch={"data.subset_seed": 3}),
    Case("regression-label-huge", "data", "a regression score of 1e300 (inf as float32)", "train-teacher",
         ("toy_reg/train.tsv", "line 2", "field 'label' (column 'score')", "outside the float32 range"),
         files={"toy_reg/train.tsv": "s1\ts2\tscore\na film\tthe film\t1e300\n"}),
    Case("hf-encoder-corrupt-safetensors", "model", "an HF encoder folder (model.name_or_path) whose "
         "model.safetensors header is garbage", "train-teacher",
         ("cannot load backbone", "hf_bad/model.safetensors", "cannot read weights", "corrupt or not safetensors"),
         patch={"model.name_or_path": "{ws}/hf_bad"},
         damage=(copy("{bert}", "{ws}/hf_bad"), zero_bytes("{ws}/hf_bad/model.safetensors", 8, 16))),
    Case("hf-encoder-corrupt-config", "model", "an HF encoder folder whose config.json is not JSON",
         "train-teacher", ("cannot load", "config.json"), patch={"model.name_or_path": "{ws}/hf_badcfg"},
         damage=(copy("{bert}", "{ws}/hf_badcfg"), write("{ws}/hf_badcfg/config.json", "{model_type: bert"))),
    # class 6: contradictions and duplicates are refused, both places named
    Case("text-b-but-pair-false", "config", "a task spec maps text_b but says pair: false", "train-teacher",
         ("task 'toy_pair'", "columns.text_b is mapped but pair is false", "pair: true"),
         patch={"data.task_specs.1.pair": False}),
    Case("max-seq-length-one", "config", "model.max_seq_length: 1 (no room beside [CLS] and [SEP])", "train-teacher",
         ("key 'model.max_seq_length'", "1 is too short", "at least 5"), patch={"model.max_seq_length": 1}),
    Case("duplicate-task-spec", "config", "two task specs named toy_sent", "train-teacher",
         ("key 'data'", "task_specs.0 and task_specs.3 both declare task 'toy_sent'"),
         damage=(duplicate_task_spec(0),)),
    Case("duplicate-yaml-key", "config", "output_dir given twice in the YAML file", "train-teacher",
         ("config.yaml", "invalid YAML", "key 'output_dir' is given twice (first on line 1)"),
         damage=(edit_config("output_dir again at the end", lambda text: text + "output_dir: elsewhere\n"),)),
]


# --- issue 14, class 1 (writes outside the place the user named) and class 7 (code from the working directory) --
# Names that would lead a cache, store or stage folder out of its root: refused where they enter, before any write.
ESCAPE = "../../../escaped"  # from {cache}/examples/<task>: a folder beside the workspace


def rename_store_task(template: str, old: str, new: str) -> Damage:
    """Rename a task in a signal store's manifest (a key with '/' and '..' cannot be set by `edit_json`)."""

    def apply(ws):
        path = resolve(template, ws)
        manifest = json.loads(path.read_text())
        manifest["tasks"] = {new if name == old else name: spec for name, spec in manifest["tasks"].items()}
        path.write_text(json.dumps(manifest))

    return Damage(f"rename task {old!r} to {new!r} in {template}", apply)


CASES += [
    Case("task-name-traversal", "config", f"a declared task named {ESCAPE!r}", "train-teacher",
         ("key 'data.task_specs.0.name'", "task name", "is not a plain name"),
         patch={"data.task_specs.0.name": ESCAPE, "data.tasks.0": ESCAPE}),
    Case("task-name-absolute", "config", "a declared task named by an absolute path", "train-teacher",
         ("key 'data.task_specs.0.name'", "abs_task' is not a plain name"),
         patch={"data.task_specs.0.name": "{ws}/abs_task", "data.tasks.0": "{ws}/abs_task"}),
    Case("model-task-name-traversal", "model", f"multidistill_model.json names a task {ESCAPE!r}", "evaluate",
         ("multidistill_model.json", "task name", "is not a plain name"),
         damage=(edit_json("{teacher}/multidistill_model.json", {"tasks.0.name": ESCAPE}),)),
    Case("soft-targets-teacher-task-name", "store", f"soft-targets from a teacher whose metadata names a task "
         f"{ESCAPE!r} (its shards would land outside --out)", "soft-targets",
         ("multidistill_model.json", "task name", "is not a plain name"),
         damage=(edit_json("{teacher_b}/multidistill_model.json", {"tasks.0.name": ESCAPE}),),
         args=("--tasks", f"{ESCAPE},toy_pair,toy_reg")),
    Case("store-manifest-task-name", "store", f"a signal store manifest whose task is named {ESCAPE!r}", "distill",
         ("manifest.json", "task or split name", "is not a plain name"),
         damage=(rename_store_task("{store}/manifest.json", "toy_sent", ESCAPE),)),
    Case("pkg-not-a-package", "config", "model.name_or_path is pkg: with a path, not a package name", "train-teacher",
         ("pkg:../../x/model", "is not a Python package name"), patch={"model.name_or_path": "pkg:../../x/model"}),
]


# --- issue 14, class 2: output folders that are not ours are never claimed, resumed or overwritten -----------------
COMMANDS["train-teacher-plain"] = ("train-teacher", "{config}")  # without --overwrite: what a first run types
CASES += [
    Case("output-dir-is-data-folder", "config", "output_dir is a folder of other files (no flags)",
         "train-teacher-plain", ("output_dir", "is not empty and is not a multidistill run")),
    Case("output-dir-is-data-folder-overwrite", "config", "output_dir is a folder of other files, with --overwrite",
         "train-teacher", ("output_dir", "is not a multidistill run", "never resumed or overwritten")),
    Case("output-dir-is-data-folder-resume", "config", "output_dir is a folder of other files, with --resume",
         "train-teacher-plain", ("output_dir", "is not a multidistill run"), args=("--resume",)),
    Case("recipe-root-is-data-folder", "config", "a recipe's output_dir is a folder of other files", "run",
         ("output_dir", "is not a multidistill run")),
    Case("store-out-is-data-folder", "store", "soft-targets --out a folder of other files", "soft-targets",
         ("--out", "is not a signal store", "never overwritten"), args=("--out", "{out}")),
]


# --- feature distillation (issue 12): refused before training, nothing written ----------------------------------
# Placeholders are filled in strings only: the list is set first, then its item.
FEATURE_RUN = {"online_teachers": [""], "online_teachers.0": "{bert}", "signals": DELETE}
CASES += [
    Case("feature-loss-bilstm-student", "config", "attention_kl for a BiLSTM student (it has no attention)",
         "distill", ("loss 'attention_kl'", "the student has no attention", "hidden_mse"),
         patch={**FEATURE_RUN, "model.architecture": "bilstm", "objective.classification": [{"loss": "attention_kl"}],
                "objective.regression": [{"loss": "hidden_mse"}]}),
    Case("feature-layer-map-outside", "config", "a hidden_mse layer map naming teacher layer 9 of a 2-layer teacher",
         "distill", ("loss 'hidden_mse'", "key 'layer_map'", "teacher layer 9", "outside the teacher"),
         patch={**FEATURE_RUN, "objective.classification": [{"loss": "hidden_mse", "params": {"layer_map": [[1, 9]]}}],
                "objective.regression": [{"loss": "hidden_mse"}]}),
    Case("feature-teacher-other-tokenizer", "config", "an online teacher whose tokenizer differs from the student's, "
         "under a token-level loss", "distill",
         ("key 'online_teachers'", "another tokenizer", "position by position", "Logit losses still work"),
         patch={"online_teachers": [""], "online_teachers.0": "{ws}/cased", "signals": DELETE,
                "objective.classification": [{"loss": "hidden_mse"}], "objective.regression": [{"loss": "hidden_mse"}]},
         damage=(copy("{bert}", "{ws}/cased"), edit_json("{ws}/cased/tokenizer.json", {"normalizer.lowercase": False}),
                 edit_json("{ws}/cased/tokenizer_config.json", {"do_lower_case": False}))),
]


# --- issue 13: domains -----------------------------------------------------------------------------------------
# toy_sent becomes a task with two domains (one file set each; both read toy_sent's files), then one bad option.
_TOY_FILES = {split: {"path": f"toy_sent/{split}.tsv", "columns": {"text_a": "sentence", "label": "label"}}
              for split in ("train", "dev")}
TO_DOMAINS = {"data.task_specs.0": {"name": "toy_sent", "labels": ["0", "1"], "metrics": ["accuracy", "f1"],
                                    "domain_files": {"books": _TOY_FILES, "dvd": _TOY_FILES}}}
CASES += [
    Case("domain-include-unknown", "config", "domains_include names a domain the task does not have",
         "train-teacher", ("key 'data.tasks.0.domains_include'", "no domain 'music'", "books, dvd"),
         patch={**TO_DOMAINS, "data.tasks.0": {"name": "toy_sent", "domains_include": ["music"]}}),
    Case("domain-fraction-unknown", "config", "domain_fraction names a domain the task does not have",
         "train-teacher", ("key 'data.tasks.0.domain_fraction'", "no domain 'vhs'", "books, dvd"),
         patch={**TO_DOMAINS, "data.tasks.0": {"name": "toy_sent", "domain_fraction": {"vhs": 0.5}}}),
    Case("domain-fraction-no-rows", "config", "a domain fraction so small that the domain keeps no training row",
         "train-teacher", ("key 'data.tasks.0.domain_fraction.books'", "keeps no row"),
         patch={**TO_DOMAINS, "data.tasks.0": {"name": "toy_sent", "domain_fraction": {"books": 0.001}}}),
    Case("domain-fraction-above-one", "config", "a domain fraction above 1", "train-teacher",
         ("key 'data.tasks.0.domain_fraction.books'", "less than or equal to 1"),
         patch={**TO_DOMAINS, "data.tasks.0": {"name": "toy_sent", "domain_fraction": {"books": 1.5}}}),
    Case("domain-fraction-zero", "config", "a domain fraction of 0", "train-teacher",
         ("key 'data.tasks.0.domain_fraction.books'", "greater than 0"),
         patch={**TO_DOMAINS, "data.tasks.0": {"name": "toy_sent", "domain_fraction": {"books": 0}}}),
    Case("domain-options-without-domains", "config", "domains_exclude on a task that has no domains",
         "train-teacher", ("key 'data.tasks.0.domains_exclude'", "task 'toy_sent' has no domains"),
         patch={"data.tasks.0": {"name": "toy_sent", "domains_exclude": ["books"]}}),
    Case("domain-exclude-everything", "config", "domains_exclude names every domain of the task", "train-teacher",
         ("key 'data.tasks.0.domains_exclude'", "leave no domain"),
         patch={**TO_DOMAINS, "data.tasks.0": {"name": "toy_sent", "domains_exclude": ["books", "dvd"]}}),
]


# --- issue 13: the Meta-KD recipe (refused before its first stage writes) ----------------------------------------
# The run command's recipe becomes `metakd` over toy_sent with two domains, written to a new folder ({ws}/metakd).
TO_METAKD = {**TO_DOMAINS, "recipe": "metakd", "output_dir": "{ws}/metakd", "data.tasks": ["toy_sent"],
             "student.train": DELETE}
CASES += [
    Case("metakd-task-without-domains", "config", "Meta-KD over a task that has no domains", "run",
         ("key 'data.tasks'", "task 'toy_sent' has no domains"),
         patch={**TO_METAKD, "data.task_specs.0": {"name": "toy_sent", "labels": ["0", "1"],
                                                   "files": _TOY_FILES}}),
    Case("metakd-unknown-target", "config", "a Meta-KD target domain that is not in the data", "run",
         ("key 'targets'", "'music' is not in the data", "books, dvd"), patch={**TO_METAKD, "targets": ["music"]}),
    Case("metakd-fraction-keeps-no-row", "config", "data.fraction leaves the target domain no training row", "run",
         ("key 'data.fraction'", "keeps no row"), patch={**TO_METAKD, "data.fraction": 0.001}),
    Case("metakd-fraction-above-one", "config", "data.fraction above 1", "run",
         ("key 'data.fraction'", "less than or equal to 1"), patch={**TO_METAKD, "data.fraction": 1.5}),
    Case("metakd-fraction-zero", "config", "data.fraction of 0", "run",
         ("key 'data.fraction'", "greater than 0"), patch={**TO_METAKD, "data.fraction": 0}),
    Case("metakd-teacher-without-branch", "model", "a given meta-teacher folder without a domain branch", "run",
         ("key 'teacher.model_dirs.0'", "has no domain branch"),
         patch={**TO_METAKD, "teacher": {"model_dirs": [""]}, "teacher.model_dirs.0": "{teacher}"}),
]


# --- the 2026-12-06 sweep: option values and output paths, refused before any work ---------------------------------
COMMANDS["report"] = ("report", "{out}", "--out", "{data}/toy_sent/train.tsv")  # --out names the user's data file
COMMANDS["benchmark"] = ("benchmark", "{teacher}", "--tasks", "toy_sent", "--data-root", "{data}", "--cache-dir",
                         "{cache}", "--runtimes", "pytorch_fp32", "--no-memory", "--rounds", "1", "--out", "{out}")
COMMANDS["export"] = ("export", "{teacher}", "--out", "{ws}/export", "--skip-parity")
COMMANDS["export-checked"] = ("export", "{teacher}", "--out", "{ws}/export", "--data-root", "{data}", "--cache-dir",
                              "{cache}")
COMMANDS["train-teacher-folder"] = ("train-teacher", "{data}")
CASES += [
    Case("report-out-is-a-file", "config", "report --out names an existing file (it would become the report folder)",
         "report", ("train.tsv", "is a file, not a folder")),
    Case("benchmark-out-is-a-folder", "config", "benchmark --out names a folder, not the JSON file", "benchmark",
         ("--out", "is a folder", "benchmark.json")),
    Case("evaluate-output-is-a-folder", "config", "evaluate --output names a folder", "evaluate",
         ("--output", "is a folder"), args=("--output", "{out}")),
    Case("evaluate-split-train", "config", "evaluate --split train", "evaluate",
         ("--split 'train'", "choose one of dev, test"), args=("--split", "train")),
    Case("evaluate-task-twice", "config", "evaluate --tasks names a task twice", "evaluate",
         ("--tasks", "twice"), args=("--tasks", "toy_sent,toy_sent")),
    Case("evaluate-tasks-empty", "config", "evaluate --tasks '' (it scored every task)", "evaluate",
         ("--tasks is empty",), args=("--tasks", "")),
    Case("soft-targets-task-twice", "config", "soft-targets --tasks names a task twice", "soft-targets",
         ("--tasks", "twice", "toy_sent"), args=("--tasks", "toy_sent,toy_sent")),
    Case("seeds-negative", "config", "train-teacher --seeds=-1", "train-teacher-plain",
         ("--seeds '-1'", "from 0 to 4294967295"), args=("--seeds=-1",)),
    Case("resume-and-overwrite", "config", "--resume and --overwrite together (--overwrite was ignored)",
         "train-teacher", ("--resume", "--overwrite", "give one of them"), args=("--resume",)),
    Case("export-int8-option-without-int8", "config", "export --int8-method static without --quantize int8",
         "export", ("--int8-method", "applies with --quantize int8"), args=("--int8-method", "static")),
    Case("export-calibration-without-static", "config", "export --calibration-examples with dynamic int8", "export",
         ("--calibration-examples", "add --int8-method static"),
         args=("--quantize", "int8", "--calibration-examples", "5")),
    Case("export-negative-tolerance", "config", "export --tolerance-fp32 -1 (found only after the whole export)",
         "export-checked", ("--tolerance-fp32", ">= 0"), args=("--tolerance-fp32", "-1")),
    Case("export-parity-option-skipped", "config", "export --max-metric-drop-int8 with --skip-parity (ignored)",
         "export", ("--max-metric-drop-int8", "--skip-parity skips"),
         args=("--quantize", "int8", "--max-metric-drop-int8", "0.05")),
    Case("export-hf-int8-option", "config", "export --format hf --no-per-channel (ignored)", "export-checked",
         ("--per-channel/--no-per-channel", "--format onnx --quantize int8"),
         args=("--format", "hf", "--no-per-channel")),
    Case("export-default-value-given", "config", "export --calibration-examples 256 (its default) without "
         "--int8-method static: refused like any other value", "export", ("--calibration-examples",
                                                                          "add --int8-method static"),
         args=("--quantize", "int8", "--calibration-examples", "256")),
    Case("config-is-a-folder", "config", "the config argument is a folder", "train-teacher-folder",
         ("is a folder", "give the YAML file")),
]

# --- the 2026-12-06 sweep, part 2: recipes --------------------------------------------------------------------------
CASES += [
    Case("recipe-teacher-dir-not-a-model", "model", "teacher.model_dirs names the data folder, not a model (a "
         "FileNotFoundError traceback)", "run", ("key 'teacher.model_dirs.0'", "is missing"),
         patch={"output_dir": "{ws}/mtdnn", "teacher": {"model_dirs": [""]}, "teacher.model_dirs.0": "{data}"}),
]

# --- wording: a file where a folder is expected, and a folder where a file is (both said "does not exist") --------
COMMANDS["evaluate-file-as-model"] = ("evaluate", "{data}/toy_sent/train.tsv", "--data-root", "{data}",
                                      "--cache-dir", "{cache}", "--output", "{out}/eval.json")
CASES += [
    Case("model-dir-is-a-file", "model", "the model folder argument names a data file (it said the folder \"does not "
         "exist\")", "evaluate-file-as-model", ("model directory", "train.tsv", "is a file, not a folder")),
    Case("data-path-is-a-folder", "data", "a task's train path names a folder (it said the file was \"not found\")",
         "train-teacher", ("task 'toy_sent' split 'train'", "is a folder, not a file", "files.train.path"),
         patch={"data.task_specs.0.files.train.path": "toy_sent"}),
]

# --- the 2026-12-06 black-box audit: what ran silently or with a traceback --------------------------------------
CASES += [
    Case("tokenizer-without-vocabulary", "model", "a model folder whose tokenizer.json was deleted (every word was "
         "[UNK]: evaluate and predict ran on nothing, exit 0)", "evaluate",
         ("has no vocabulary", "tokenizer.json / vocab.txt"), damage=(delete("{teacher}/tokenizer.json"),)),
    Case("encoder-path-missing", "config", "model.name_or_path is a folder that does not exist (a hub 'repo id' "
         "error)", "train-teacher", ("key 'model.name_or_path'", "model '/nonexistent/bert'", "no such folder"),
         patch={"model.name_or_path": "/nonexistent/bert"}),
    Case("encoder-path-is-a-file", "config", "model.name_or_path names a data file", "train-teacher",
         ("toy_sent/train.tsv", "is a file, not a model folder"),
         patch={"model.name_or_path": "{data}/toy_sent/train.tsv"}),
]
CASES += [
    Case("output-dir-under-a-file", "config", "output_dir inside a data file's path (a FileExistsError traceback)",
         "train-teacher", ("toy_sent/train.tsv", "a part of the path is a file, not a folder"),
         patch={"output_dir": "{data}/toy_sent/train.tsv/run"}),
    Case("cache-dir-is-a-file", "config", "data.cache_dir names a data file (a NotADirectoryError traceback)",
         "train-teacher", ("toy_sent/train.tsv", "a part of the path is a file, not a folder"),
         patch={"data.cache_dir": "{data}/toy_sent/train.tsv"}),
]
CASES += [
    Case("metric-of-the-other-type", "config", "metrics: [pearson] on a classification task (a broadcast "
         "traceback after training)", "train-teacher",
         ("key 'data.task_specs.0'", "metric 'pearson' is a regression metric", "accuracy, f1"),
         patch={"data.task_specs.0.metrics": ["pearson"]}),
    Case("metric-unknown", "config", "metrics: [acc] (refused only after the first epoch)", "train-teacher",
         ("key 'data.task_specs.0'", "metric 'acc' is not a metric"), patch={"data.task_specs.0.metrics": ["acc"]}),
    Case("metrics-empty", "config", "metrics: [] (an IndexError traceback)", "train-teacher",
         ("key 'data.task_specs.0'", "metrics is empty"), patch={"data.task_specs.0.metrics": []}),
]
CASES += [
    Case("grad-accum-beyond-the-data", "config", "train.grad_accum_steps larger than an epoch's batches (a "
         "ValueError traceback, and a run folder left behind)", "train-teacher",
         ("key 'train.grad_accum_steps'", "too little data for one optimizer step"),
         patch={"train.grad_accum_steps": 1000}),
]
CASES += [
    Case("jsonl-key-twice", "data", "a JSONL record giving its label twice (the last one was kept silently)",
         "train-teacher", ("toy_sent/train.jsonl", "line 2", "key 'label' appears twice"), patch=TO_JSONL,
         files={"toy_sent/train.jsonl": '{"sentence": "good film", "label": "1"}\n'
                '{"sentence": "bad", "label": "0", "label": "1"}\n'}),
    Case("column-read-twice", "config", "columns.text_a is the label column (the answer leaks into the input)",
         "train-teacher", ("columns.text_a and columns.label both read column 'label'",),
         patch={"data.task_specs.0.files.train.columns.text_a": "label"}),
]
COMMANDS["evaluate-output-in-model"] = ("evaluate", "{teacher}", "--data-root", "{data}", "--cache-dir", "{cache}",
                                        "--output", "{teacher}/config.json")
COMMANDS["evaluate-output-data-file"] = ("evaluate", "{teacher}", "--data-root", "{data}", "--cache-dir", "{cache}",
                                         "--output", "{data}/toy_sent/train.tsv")
CASES += [
    Case("evaluate-output-inside-the-model", "config", "evaluate --output names the model's own config.json (the "
         "model no longer loaded)", "evaluate-output-in-model",
         ("--output", "is inside the model folder", "write it elsewhere")),
    Case("evaluate-output-over-a-data-file", "config", "evaluate --output names a training file (it was replaced "
         "by JSON)", "evaluate-output-data-file", ("--output", "train.tsv", "give a .json file")),
    Case("init-from-with-other-layers", "config", "student_layers beside model.init_from keep another layer count "
         "than the saved model's (they were ignored)", "train-teacher",
         ("key 'model.student_layers'", "keeps 1 layer,", "holds a model of 2 layers", "drop the key"),
         patch={"model.init_from": "{teacher}", "model.student_layers": [0]}),
]

# --- model folders named by other keys than name_or_path: refused by that key before anything is written (they
# failed where the folder was loaded, without the key: a recipe's after the stages before it) ----------------------
MISSING = "/nonexistent/saved"
FEATURE_OBJECTIVE = {"objective.classification": [{"loss": "hidden_mse"}],
                     "objective.regression": [{"loss": "hidden_mse"}]}
TO_RECIPE = {"output_dir": "{ws}/mtdnn"}  # a new folder: a run that is not refused up front trains the teachers there
LATE = "(said without the key, after the teachers and signals ran)"
COMMANDS["run-dry"] = ("run", "{config}", "--dry-run")
CASES += [
    Case("init-from-missing", "config", "model.init_from is a folder that does not exist (said without the key)",
         "train-teacher", ("key 'model.init_from'", f"model directory {MISSING} does not exist"),
         patch={"model.init_from": MISSING}),
    Case("heads-from-missing", "config", "model.heads_from is a folder that does not exist (said without the key)",
         "train-teacher", ("key 'model.heads_from'", "does not exist"), patch={"model.heads_from": MISSING}),
    Case("online-teacher-missing", "config", "an online teacher is a folder that does not exist (said without the "
         "key)", "distill", ("key 'online_teachers.0'", "no such folder"),
         patch={**FEATURE_RUN, "online_teachers.0": MISSING, **FEATURE_OBJECTIVE}),
    Case("recipe-init-from-missing", "config", f"a recipe's student.model.init_from does not exist {LATE}", "run",
         ("key 'student.model.init_from'", "does not exist"), patch={**TO_RECIPE, "student.model.init_from": MISSING}),
    Case("recipe-heads-from-missing", "config", f"a recipe's student.model.heads_from does not exist {LATE}", "run",
         ("key 'student.model.heads_from'", "does not exist"),
         patch={**TO_RECIPE, "student.model.heads_from": MISSING}),
    Case("recipe-init-from-missing-dry-run", "config", "run --dry-run, a recipe's teacher.model.init_from does not "
         "exist (the dry run passed)", "run-dry", ("key 'teacher.model.init_from'", "does not exist"),
         patch={**TO_RECIPE, "teacher.model.init_from": MISSING}),
    Case("recipe-teacher-dir-missing", "config", "a recipe's teacher.model_dirs entry does not exist", "run",
         ("key 'teacher.model_dirs.0'", "does not exist"),
         patch={**TO_RECIPE, "teacher": {"model_dirs": [""]}, "teacher.model_dirs.0": MISSING}),
]

# Multilabel tasks (sixteenth session).
CASES += [
    Case("multilabel-unknown-label", "data", "a multilabel cell naming a label outside the task's list",
         "train-teacher",
         ("toy_sent/train.tsv", "line 3", "field 'label'", "label '7' is not one of the task's labels"),
         patch=TO_MULTILABEL, files={"toy_sent/train.tsv": SENT_HEADER + "good film\t1\nbad film\t0,7\n"}),
    Case("multilabel-repeated-label", "data", "a multilabel cell giving one label twice", "train-teacher",
         ("toy_sent/train.tsv", "line 2", "label '1' is given twice in one row's labels"),
         patch=TO_MULTILABEL, files={"toy_sent/train.tsv": SENT_HEADER + "good film\t1,1\nbad film\t0\n"}),
    Case("multilabel-soft-ce", "config", "a multilabel task given soft_ce (one distribution over classes)",
         "train-teacher", ("objective.multilabel.0", "loss 'soft_ce' is for classification tasks, not multilabel"),
         patch={**TO_MULTILABEL, "objective.multilabel": [{"loss": "soft_ce"}]}),
    Case("objective-type-left-out", "config", "soft targets for classification, the regression list left out (toy_reg "
         "trained on gold labels alone, silently)", "distill",
         ("key 'objective'", "['toy_reg'] are regression", "regression terms are not set", "score_mse"),
         patch={"objective.regression": DELETE}),
]
