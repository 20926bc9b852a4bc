"""ONNX export: one multi-output graph per model (Transformer and BiLSTM), dynamic batch and sequence sizes,
dynamic int8 quantisation, the parity check on real dev rows, atomic output and `OnnxModel` loading errors."""

from __future__ import annotations

import inspect
import json
import shutil
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from multidistill.config import DataConfig, TeacherRunConfig
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError, UnknownTaskError
from multidistill.models import BiLSTMModel, BiLSTMSpec, load_model
from tests.conftest import write_tiny_tasks

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from multidistill.export.command import export_command  # noqa: E402
from multidistill.export.onnx import EXPORT_FILE, OnnxModel, export_onnx  # noqa: E402

TASKS = ["toy_sent", "toy_pair", "toy_reg"]
# Batches of the first 1, 3 and 5 pairs are 7, 14 and 19 tokens wide.
PAIRS = (["great", "bad", "a very boring plot and it was the worst film", "fine", "the actor was happy"],
         ["it is fun", "a dull plot and a sad actor", "x",
          "the film is very nice and the plot is the best and the actor was happy", "sad"])


def inject_int8_disagreement(monkeypatch) -> None:
    """Make every int8 graph predict the wrong class on every row (and anti-correlated scores), whatever the CPU."""
    real = OnnxModel.predict

    def predict(self, task, dataset, **kwargs):
        logits = real(self, task, dataset, **kwargs)
        if self.precision != "int8":
            return logits
        labels = np.asarray(dataset["label"])
        if logits.ndim == 2 and logits.shape[1] > 1:
            wrong = np.full_like(logits, 0.0)
            wrong[np.arange(len(labels)), (labels.astype(int) + 1) % logits.shape[1]] = 10.0
            return wrong
        return -labels.reshape(logits.shape).astype(logits.dtype)

    monkeypatch.setattr(OnnxModel, "predict", predict)


def inject_fp32_difference(monkeypatch) -> None:
    """Make every fp32 graph's logits differ from PyTorch's by 1 (far beyond any tolerance), whatever the CPU."""
    real = OnnxModel.predict

    def predict(self, task, dataset, **kwargs):
        logits = real(self, task, dataset, **kwargs)
        return logits + 1.0 if self.precision == "fp32" else logits

    monkeypatch.setattr(OnnxModel, "predict", predict)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    """Toy task data (single sentence, pair, regression) and a parity-check data config over it."""
    root = tmp_path_factory.mktemp("export_data")
    specs = write_tiny_tasks(root / "data", n_train=96, n_dev=40)
    data = DataConfig(tasks=TASKS, data_root=str(root / "data"), cache_dir=str(root / "cache"), task_specs=specs)
    return {"root": root, "specs": specs, "data": data}


def _train(toy: dict, tiny_model_dir: Path, name: str, model: dict, lr: float) -> Path:
    """A tiny model trained until its predictions are confident (int8 parity on a random model is noise)."""
    from multidistill.training.run import train_model

    config = TeacherRunConfig.model_validate({
        "output_dir": str(toy["root"] / name),
        "model": {"name_or_path": str(tiny_model_dir), "max_seq_length": 32, **model},
        "data": {"data_root": toy["data"].data_root, "tasks": TASKS, "task_specs": toy["specs"],
                 "cache_dir": toy["data"].cache_dir},
        "train": {"epochs": 8, "batch_size": 8, "eval_batch_size": 32, "lr": lr, "checkpoint_every_steps": 1000,
                  "log_every_steps": 100, "seed": 7},
    })
    train_model(config)
    return toy["root"] / name / "model"


@pytest.fixture(scope="module")
def bert_dir(toy, tiny_model_dir) -> Path:
    return _train(toy, tiny_model_dir, "bert", {}, 3e-3)


@pytest.fixture(scope="module")
def bilstm_dir(toy, tiny_model_dir) -> Path:
    spec = {"embedding_dim": 16, "hidden_size": 16, "mlp_hidden": 16, "num_layers": 2, "init_embeddings": False}
    return _train(toy, tiny_model_dir, "bilstm", {"architecture": "bilstm", "bilstm": spec}, 1e-2)


@pytest.fixture(scope="module")
def bert_export(toy, bert_dir) -> tuple[Path, dict]:
    out = toy["root"] / "bert_onnx"
    return out, export_onnx(bert_dir, out, quantize="int8", parity_data=toy["data"])


@pytest.fixture(scope="module")
def bilstm_export(toy, bilstm_dir) -> tuple[Path, dict]:
    out = toy["root"] / "bilstm_onnx"
    return out, export_onnx(bilstm_dir, out, quantize="int8", parity_data=toy["data"])


def _batch(tokenizer, size: int) -> dict[str, torch.Tensor]:
    """Pairs padded to their longest row: other batch and sequence sizes than the traced example (2 x 16)."""
    return tokenizer(list(PAIRS[0][:size]), list(PAIRS[1][:size]), padding=True, return_tensors="pt")


def _assert_matches_torch(model_dir: Path, export_dir: Path, tolerance: float) -> None:
    model = load_model(model_dir).eval()
    exported = OnnxModel.load(export_dir)
    shapes = set()
    for size in (5, 3, 1):
        batch = _batch(exported.tokenizer, size)
        shapes.add(tuple(batch["input_ids"].shape))
        for task in TASKS:
            with torch.no_grad():
                expected = model(task, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
            got = exported.logits(task, batch["input_ids"].numpy(), batch["attention_mask"].numpy(),
                                  batch["token_type_ids"].numpy())
            assert got.shape == tuple(expected.shape)
            assert np.abs(got - expected.numpy()).max() <= tolerance, (task, size)
    assert all(shape != (2, 16) for shape in shapes) and len({s[1] for s in shapes}) == 3


def _check_parity(meta: dict) -> None:
    assert set(meta["parity"]) == {"fp32", "int8"}
    for precision, report in meta["parity"].items():
        assert set(report) == set(TASKS)
        for task, numbers in report.items():
            assert numbers["examples"] == 40
            assert {"max_abs_diff", "agreement", "metric_torch", "metric_onnx", "metric_delta"} <= set(numbers)
            if precision == "fp32":
                assert numbers["max_abs_diff"] <= 1e-4
                assert abs(numbers["metric_delta"]) < 1e-3
            else:
                assert -numbers["metric_delta"] <= 0.01
            if task == "toy_reg":
                assert numbers["agreement"] is None  # no classes to agree on; the metric drop is checked
            else:
                assert numbers["agreement"] >= (1.0 if precision == "fp32" else 0.97)


# --- the Transformer model -----------------------------------------------------------------------


def test_export_folder_layout(bert_export, bert_dir):
    out, meta = bert_export
    assert json.loads((out / EXPORT_FILE).read_text()) == meta
    assert meta["format_version"] == 1 and meta["kind"] == "onnx" and meta["model_kind"] == "multitask"
    assert meta["source"] == str(bert_dir.resolve())
    assert [task["name"] for task in meta["tasks"]] == TASKS and meta["max_length"] == 32
    assert meta["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert meta["outputs"] == {task: f"logits_{task}" for task in TASKS}
    assert meta["files"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"} and meta["opset"] == 17
    assert (out / "tokenizer_config.json").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".bert_onnx")]  # no temporary leftovers
    graph = onnx.load(str(out / "model.onnx")).graph
    assert [o.name for o in graph.output] == [f"logits_{task}" for task in TASKS]
    for value in graph.input:  # batch and sequence stay symbolic
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"]
    # One graph, encoder computed once: one attention softmax per layer, not one per task head.
    assert sum(node.op_type == "Softmax" for node in graph.node) == 2


def test_fp32_matches_pytorch_on_other_batch_and_sequence_sizes(bert_export, bert_dir):
    out, meta = bert_export
    _assert_matches_torch(bert_dir, out, 1e-4)
    _check_parity(meta)


def test_int8_is_smaller_and_agrees(bert_export, bert_dir):
    out, _ = bert_export
    assert (out / "model.int8.onnx").stat().st_size < 0.9 * (out / "model.onnx").stat().st_size
    assert any(node.op_type == "DynamicQuantizeLinear" for node in onnx.load(str(out / "model.int8.onnx")).graph.node)
    fp32, int8 = OnnxModel.load(out), OnnxModel.load(out, "int8")
    batch = {k: v.numpy() for k, v in _batch(fp32.tokenizer, 5).items()}
    for task in ("toy_sent", "toy_pair"):
        reference = fp32.logits(task, **batch)
        quantised = int8.logits(task, **batch)
        assert (reference.argmax(-1) == quantised.argmax(-1)).all()
        assert np.abs(reference - quantised).max() < 0.1


def test_a_failed_parity_check_raises_and_writes_nothing(toy, bert_dir, monkeypatch):
    out = toy["root"] / "refused"
    inject_int8_disagreement(monkeypatch)
    with pytest.raises(ModelError, match=r"toy_sent \(int8\): predictions agree on 0\.00% of 10 rows < 100\.00%") \
            as info:
        export_onnx(bert_dir, out, quantize="int8", parity_data=toy["data"], parity_examples=10,
                    min_agreement_int8=1.0)
    assert "nothing was written" in str(info.value)
    inject_fp32_difference(monkeypatch)
    with pytest.raises(ModelError, match=r"toy_reg \(fp32\): max \|logit difference\|"):
        export_onnx(bert_dir, out, parity_data=toy["data"], parity_tasks=["toy_reg"], parity_examples=5)
    assert not out.exists()

def test_a_failed_parity_check_raises_and_writes_nothing_with_injected_disagreement(toy, bert_dir, monkeypatch):
    """An int8 graph that gets every row wrong fails on any CPU; `export` still refuses to write it."""
    out = toy["root"] / "refused"
    inject_int8_disagreement(monkeypatch)
    with pytest.raises(ModelError, match=r"toy_reg \(int8\): pearson drops by .* > allowed") as info:
        export_onnx(bert_dir, out, quantize="int8", parity_data=toy["data"], parity_tasks=["toy_reg"])
    assert "nothing was written" in str(info.value)
    assert not out.exists()
    assert not [p for p in toy["root"].iterdir() if p.name.startswith(".refused")]


def test_parity_tasks_must_be_heads_of_the_model(toy, bert_dir):
    with pytest.raises(ConfigError, match=r"no head for \['cola'\]"):
        export_onnx(bert_dir, toy["root"] / "never", parity_data=toy["data"], parity_tasks=["cola"])
    assert not (toy["root"] / "never").exists()


def test_an_existing_out_dir_is_refused_unless_overwrite(toy, bert_dir, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=f"{out}.*not empty.*overwrite"):
        export_onnx(bert_dir, out)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    with pytest.raises(ConfigError, match="would replace the model folder"):
        export_onnx(bert_dir, bert_dir, overwrite=True)
    with pytest.raises(ConfigError, match="would replace the model folder"):
        export_onnx(bert_dir, bert_dir.parent, overwrite=True)
    with pytest.raises(ConfigError, match="holds no multidistill output"):  # --overwrite replaces only exports
        export_onnx(bert_dir, out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    (out / "export.json").write_text("{}")  # a file of that name that is not our export: still refused
    with pytest.raises(ConfigError, match="holds no multidistill output"):
        export_onnx(bert_dir, out, overwrite=True)
    (out / "export.json").write_text('{"kind": "onnx", "source": "/m"}')  # an export of ours: replaced
    meta = export_onnx(bert_dir, out, overwrite=True, skip_parity=True)
    assert "parity" not in meta and meta["parity_checked"] is False and sorted(meta["files"]) == ["fp32"]
    assert not (out / "precious.txt").exists() and (out / "model.onnx").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    export_onnx(bert_dir, empty, skip_parity=True)  # an empty folder is fine
    assert (empty / EXPORT_FILE).is_file()


def test_onnx_model_load_errors(bert_export, bilstm_export, tmp_path):
    out, _ = bert_export
    with pytest.raises(ModelError, match="does not exist"):
        OnnxModel.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"export\.json is missing"):
        OnnxModel.load(tmp_path / "empty")

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    meta = json.loads((out / EXPORT_FILE).read_text())
    shutil.copy(bilstm_export[0] / "model.onnx", copy / "model.onnx")  # a graph from another export
    with pytest.raises(ModelError, match=r"model\.onnx does not match .*export\.json: its source, model_kind"):
        OnnxModel.load(copy)
    OnnxModel.load(copy, "int8", with_tokenizer=False)  # the int8 graph is still the right one
    shutil.copy(out / "model.int8.onnx", copy / "model.onnx")  # the int8 graph where the fp32 one belongs
    with pytest.raises(ModelError, match="does not match .*its precision differ"):
        OnnxModel.load(copy)
    shutil.copy(out / "model.onnx", copy / "model.onnx")
    renamed = {task: f"scores_{task}" for task in TASKS}  # a valid config that the graph does not fit
    (copy / EXPORT_FILE).write_text(json.dumps({**meta, "outputs": renamed}))
    with pytest.raises(ModelError, match=r"model\.onnx does not match .*outputs \["):
        OnnxModel.load(copy)
    (copy / EXPORT_FILE).write_text(json.dumps(meta))
    OnnxModel.load(copy, with_tokenizer=False)

    (copy / "model.int8.onnx").unlink()
    with pytest.raises(ModelError, match=r"model\.int8\.onnx is missing"):
        OnnxModel.load(copy, "int8")
    (copy / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match=r"model\.onnx: onnxruntime cannot load it"):
        OnnxModel.load(copy)
    with pytest.raises(ConfigError, match="choose one of fp32, int8"):
        OnnxModel.load(out, "fp16")

    (copy / EXPORT_FILE).write_text(json.dumps({**meta, "files": {"fp32": "model.onnx"}}))
    with pytest.raises(ModelError, match="has no int8 model"):
        OnnxModel.load(copy, "int8")
    (copy / EXPORT_FILE).write_text(json.dumps({**meta, "outputs": {"toy_sent": "logits_toy_sent"}}))
    with pytest.raises(ModelError, match="invalid export config: outputs must map each task"):
        OnnxModel.load(copy)
    (copy / EXPORT_FILE).write_text(json.dumps({**meta, "files": {"fp32": "../model.onnx"}}))
    with pytest.raises(ModelError, match="invalid export config: files"):
        OnnxModel.load(copy)
    (copy / EXPORT_FILE).write_text(json.dumps({**meta, "format_version": 9}))
    with pytest.raises(ModelError, match="unsupported format_version 9"):
        OnnxModel.load(copy)
    (copy / EXPORT_FILE).write_text("{broken")
    with pytest.raises(ModelError, match="not valid JSON"):
        OnnxModel.load(copy)


def test_onnx_model_interface(bert_export):
    out, meta = bert_export
    model = OnnxModel.load(out, threads=1)
    assert list(model.tasks) == TASKS and model.tasks["toy_reg"].type == "regression"
    assert model.max_length == 32 and model.tokenizer.pad_token_id == 0
    batch = _batch(model.tokenizer, 3)
    everything = model.all_logits(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert {task: value.shape for task, value in everything.items()} == {
        "toy_sent": (3, 2), "toy_pair": (3, 2), "toy_reg": (3, 1)}
    # torch tensors work too; missing token types mean zeros, as in PyTorch
    single = model.tokenizer(list(PAIRS[0][:3]), padding=True, return_tensors="pt")
    assert np.array_equal(model.logits("toy_sent", single["input_ids"], single["attention_mask"]),
                          model.logits("toy_sent", single["input_ids"], single["attention_mask"],
                                       torch.zeros_like(single["input_ids"])))
    with pytest.raises(UnknownTaskError, match="no head for task 'cola'"):
        model.logits("cola", batch["input_ids"], batch["attention_mask"])


# --- the BiLSTM student --------------------------------------------------------------------------


SENT = Task(name="sent", type="classification", labels=["0", "1"], metrics=["accuracy"], files={})
PAIR = Task(name="pair", type="classification", labels=["a", "b", "c"], pair=True, metrics=["accuracy"], files={})


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("token_types", [True, False])
def test_bilstm_unpacked_path_equals_the_packed_one(tiny_model_dir, num_layers, token_types):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    spec = BiLSTMSpec(embedding_dim=16, hidden_size=8, mlp_hidden=12, num_layers=num_layers)
    model = BiLSTMModel.from_tokenizer(spec, [SENT, PAIR], tokenizer).eval()
    batch = _batch(tokenizer, 5)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    types = batch["token_type_ids"] if token_types else None
    # a row whose second text was truncated away: an empty segment B
    ids = torch.cat([ids, ids[:1].masked_fill(batch["token_type_ids"][:1].bool(), tokenizer.pad_token_id)])
    mask = torch.cat([mask, mask[:1] * (1 - batch["token_type_ids"][:1])])
    types = torch.cat([types, torch.zeros_like(types[:1])]) if types is not None else None
    for task in ("sent", "pair"):
        with torch.no_grad():
            packed = model(task, ids, mask, types, output_hidden_states=True, output_attentions=True)
            model.pack_sequences = False
            unpacked = model(task, ids, mask, types, output_hidden_states=True, output_attentions=True)
            model.pack_sequences = True
        assert torch.allclose(packed.logits, unpacked.logits, atol=1e-5, rtol=0)
        assert torch.allclose(packed.pooled, unpacked.pooled, atol=1e-5, rtol=0)
        assert torch.allclose(packed.last_hidden_state, unpacked.last_hidden_state, atol=1e-5, rtol=0)
        for a, b in zip(packed.attentions, unpacked.attentions, strict=True):
            assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_bilstm_export_matches_pytorch(bilstm_export, bilstm_dir):
    out, meta = bilstm_export
    assert meta["model_kind"] == "bilstm" and meta["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    _check_parity(meta)
    _assert_matches_torch(bilstm_dir, out, 1e-4)
    assert load_model(bilstm_dir).pack_sequences  # the export switched the packed path back on
    graph = onnx.load(str(out / "model.onnx")).graph
    # Every text the heads need runs through one stacked batch: 2 layers x 2 directions, no copies per task.
    assert sum(node.op_type == "LSTM" for node in graph.node) == 4
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size
    fp32, int8 = OnnxModel.load(out), OnnxModel.load(out, "int8")
    batch = {k: v.numpy() for k, v in _batch(fp32.tokenizer, 5).items()}
    assert (fp32.logits("toy_pair", **batch).argmax(-1) == int8.logits("toy_pair", **batch).argmax(-1)).all()


def test_a_bilstm_without_pair_tasks_exports_without_token_types(tiny_model_dir, tmp_path):
    """Only pair tasks read a BiLSTM's token types: without one the exporter dropped the input from the graph while
    export.json still listed it, so every per-task fine-tune of a single-text task failed its own export check."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = BiLSTMModel.from_tokenizer(BiLSTMSpec(embedding_dim=16, hidden_size=8, mlp_hidden=12), [SENT],
                                       tokenizer).eval()
    model.save_pretrained(tmp_path / "model", tokenizer)
    meta = export_onnx(tmp_path / "model", tmp_path / "onnx", skip_parity=True)
    assert meta["inputs"] == ["input_ids", "attention_mask"]
    exported = OnnxModel.load(tmp_path / "onnx")
    batch = _batch(tokenizer, 3)
    with torch.no_grad():
        expected = model("sent", batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    got = exported.logits("sent", batch["input_ids"].numpy(), batch["attention_mask"].numpy(),
                          batch["token_type_ids"].numpy())
    assert np.abs(got - expected.numpy()).max() <= 1e-4


# --- the command -----------------------------------------------------------------------------------


def test_export_command(toy, bilstm_dir, tmp_path, capsys):
    out = tmp_path / "cli_export"
    data_root, cache_dir = toy["data"].data_root, toy["data"].cache_dir
    export_command(bilstm_dir, out, quantize="int8", data_root=data_root, cache_dir=cache_dir, parity_examples=20)
    printed = capsys.readouterr().out
    assert "parity" in printed and "toy_pair" in printed and "int8" in printed and "written" in printed
    meta = json.loads((out / EXPORT_FILE).read_text())
    assert meta["parity"]["int8"]["toy_sent"]["examples"] == 20
    with pytest.raises(ConfigError, match="already exists"):
        export_command(bilstm_dir, out, skip_parity=True)
    export_command(bilstm_dir, out, skip_parity=True, overwrite=True)
    assert "parity check skipped" in capsys.readouterr().out
    assert "parity" not in json.loads((out / EXPORT_FILE).read_text())
    with pytest.raises(ConfigError, match="--format 'tflite': choose one of onnx"):
        export_command(bilstm_dir, tmp_path / "x", format="tflite")
    with pytest.raises(ConfigError, match="--quantize 'int4': choose one of none, int8"):
        export_command(bilstm_dir, tmp_path / "x", quantize="int4")
    with pytest.raises(ModelError, match="does not exist"):
        export_command(tmp_path / "no_model", tmp_path / "x")
    # options that would have no effect are refused, not ignored
    with pytest.raises(ConfigError, match="--data-root is where the parity check"):
        export_command(bilstm_dir, tmp_path / "x", skip_parity=True, data_root=data_root)
    with pytest.raises(ConfigError, match="is a BiLSTM, which has no self-attention"):
        export_command(bilstm_dir, tmp_path / "x", skip_parity=True, attention="sdpa")
    with pytest.raises(ConfigError, match="is a BiLSTM, which has no self-attention"):
        export_command(bilstm_dir, tmp_path / "x", skip_parity=True, attention_mask_value="-100")
    with pytest.raises(ConfigError, match="is a BiLSTM, which has no self-attention"):
        export_command(bilstm_dir, tmp_path / "x", skip_parity=True, attention_mask_value="lowest")
    assert not (tmp_path / "x").exists()


def test_export_command_documents_every_option():
    assert export_command.__doc__ and "parity" in export_command.__doc__
    hints = typing.get_type_hints(export_command, include_extras=True)
    for name in inspect.signature(export_command).parameters:
        info = [m for m in hints[name].__metadata__ if hasattr(m, "help")]
        assert info and info[0].help, name


def test_bilstm_without_token_types_splits_pairs_at_the_separator(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, model_input_names=["input_ids", "attention_mask"])
    torch.manual_seed(0)
    spec = BiLSTMSpec(embedding_dim=16, hidden_size=8, mlp_hidden=12)
    model = BiLSTMModel.from_tokenizer(spec, [PAIR], tokenizer).eval()  # pair heads only
    model.save_pretrained(tmp_path / "model", tokenizer)
    meta = export_onnx(tmp_path / "model", tmp_path / "onnx", skip_parity=True)  # a model without data
    assert meta["inputs"] == ["input_ids", "attention_mask"] and list(meta["outputs"]) == ["pair"]
    exported = OnnxModel.load(tmp_path / "onnx")
    batch = exported.tokenizer(list(PAIRS[0]), list(PAIRS[1]), padding=True, return_tensors="pt")
    assert "token_type_ids" not in batch
    with torch.no_grad():
        expected = model("pair", batch["input_ids"], batch["attention_mask"]).logits.numpy()
    assert np.abs(exported.logits("pair", batch["input_ids"], batch["attention_mask"]) - expected).max() <= 1e-4


def test_a_result_exactly_at_the_int8_tolerance_passes():
    from multidistill.export.onnx import parity_failures

    # 0.6750 -> 0.6650 on 200 rows: two flips, a drop of exactly 0.01 (0.010000000000000009 as floats).
    at_limit = {"amazon": {"agreement": 194 / 200, "examples": 200, "metric": "accuracy", "metric_delta": 0.665 - 0.675,
                           "metric_torch": 0.675, "metric_onnx": 0.665}}
    assert parity_failures("int8", at_limit, tolerance_fp32=1e-4, min_agreement_int8=0.97,
                           max_metric_drop_int8=0.01) == []
    past = {"amazon": {**at_limit["amazon"], "metric_delta": -0.015, "agreement": 193 / 200}}
    failures = parity_failures("int8", past, tolerance_fp32=1e-4, min_agreement_int8=0.97, max_metric_drop_int8=0.01)
    assert len(failures) == 2 and "drops by 0.0150" in failures[1]


def _flipped(rows: int, wrong: int, right: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch logits that are right on 90% of ``rows``, and int8 logits that flip ``wrong`` right rows to
    wrong and ``right`` wrong rows to right (the kind of flips int8 kernels make differently per CPU)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, rows)
    torch_pred = labels.copy()
    torch_wrong = np.arange(rows)[: rows // 10]
    torch_pred[torch_wrong] = 1 - labels[torch_wrong]
    int8_pred = torch_pred.copy()
    int8_pred[rows // 10: rows // 10 + wrong] = 1 - labels[rows // 10: rows // 10 + wrong]
    int8_pred[:right] = labels[:right]
    return np.eye(2)[torch_pred], np.eye(2)[int8_pred], labels


def test_the_int8_gate_allows_what_sampling_error_explains_and_catches_a_real_drop():
    from multidistill.export.onnx import NOISE_Z, compare_predictions, parity_failures

    task = Task(name="sst2", type="classification", labels=["0", "1"], metrics=["accuracy"])
    # The CPU: 7 of 200 rows flip (96.5% agreement), 4 to wrong and 3 to right: a drop of 0.005, noise.
    numbers = compare_predictions(task, *_flipped(200, wrong=4, right=3))
    assert numbers["agreement"] == pytest.approx(0.965) and numbers["metric_delta"] == pytest.approx(-0.005)
    assert 0.005 < numbers["metric_delta_se"] < 0.03
    assert parity_failures("int8", {"sst2": numbers}, tolerance_fp32=1e-4, max_metric_drop_int8=0.01) == []
    # The same 7 flips all to wrong (-0.035) is more than 2 paired standard errors: a real loss, and it fails.
    numbers = compare_predictions(task, *_flipped(200, wrong=7, right=0))
    assert numbers["metric_delta"] == pytest.approx(-0.035)
    assert NOISE_Z * numbers["metric_delta_se"] < 0.035
    (failure,) = parity_failures("int8", {"sst2": numbers}, tolerance_fp32=1e-4, max_metric_drop_int8=0.01)
    assert "accuracy drops by 0.0350 (0.9000 -> 0.8650) > allowed" in failure
    assert "predictions agree on 96.50% of 200 rows" in failure and "max |logit difference| 1" in failure
    # On many rows the sampling error is small and the user's tolerance rules again.
    numbers = compare_predictions(task, *_flipped(2000, wrong=28, right=0))
    assert NOISE_Z * numbers["metric_delta_se"] < 0.01
    assert parity_failures("int8", {"sst2": numbers}, tolerance_fp32=1e-4, max_metric_drop_int8=0.01)
    # Nothing flipped: no noise allowance at all, and the same numbers always give the same gate (seeded).
    identical = compare_predictions(task, *_flipped(200, wrong=0, right=0))
    assert identical["metric_delta_se"] == 0.0
    assert compare_predictions(task, *_flipped(200, wrong=4, right=3)) == compare_predictions(
        task, *_flipped(200, wrong=4, right=3))


def test_omit_keeps_the_passing_graph_and_records_why_the_other_was_left_out(toy, bert_dir, monkeypatch, tmp_path):
    from multidistill.export.onnx import ParityError

    inject_int8_disagreement(monkeypatch)
    out = tmp_path / "kept"
    meta = export_onnx(bert_dir, out, quantize="int8", parity_data=toy["data"], on_parity_failure="omit")
    assert meta["files"] == {"fp32": "model.onnx"} and not (out / "model.int8.onnx").exists()
    assert set(meta["parity_failures"]) == {"int8"} and len(meta["parity_failures"]["int8"]) == 3
    assert meta["parity"]["int8"]["toy_sent"]["agreement"] == 0.0
    assert json.loads((out / EXPORT_FILE).read_text())["parity_failures"] == meta["parity_failures"]
    OnnxModel.load(out)  # the fp32 graph passed and serves
    with pytest.raises(ModelError, match="int8 graph failed its parity check and was not kept: toy_sent"):
        OnnxModel.load(out, "int8")
    inject_fp32_difference(monkeypatch)
    with pytest.raises(ParityError) as info:  # nothing passes: nothing is written, the numbers travel with the error
        export_onnx(bert_dir, tmp_path / "none", parity_data=toy["data"],
                    on_parity_failure="omit")  # fp32 only: its one graph fails
    assert set(info.value.failures) == {"fp32"} and "toy_sent" in info.value.parity["fp32"]
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("format", ["onnx", "hf"])
def test_skip_parity_refuses_any_parity_examples_given_even_the_default(format, tmp_path):
    """--parity-examples 500 (the default's value) with --skip-parity is refused like 400: "not given" is None
    through to the checks, never a number; the refusal comes before the model is read."""
    from multidistill.export.hf import export_hf

    library = export_onnx if format == "onnx" else export_hf
    for rows in (500, 400):
        with pytest.raises(ConfigError, match=r"--parity-examples \(parity_examples\) sets the parity check"):
            export_command(tmp_path / "no_model", tmp_path / "x", format=format, skip_parity=True,
                           parity_examples=rows)
        with pytest.raises(ConfigError, match="which --skip-parity skips"):
            library(tmp_path / "no_model", tmp_path / "x", skip_parity=True, parity_examples=rows)
    assert not (tmp_path / "x").exists()
