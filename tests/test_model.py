"""MultiTaskModel: heads per task type, hard losses, pooling, and the safetensors save/load round trip."""

from __future__ import annotations

import json
import math

import pytest
import torch

from multidistill.data.tasks import BUILTIN_TASKS
from multidistill.errors import ModelError, UnknownTaskError
from multidistill.losses import HardLoss
from multidistill.models import MultiTaskModel
from multidistill.models.heads import ClassificationHead, RegressionHead
from multidistill.models.multitask import pool

TASKS = [BUILTIN_TASKS["sst2"], BUILTIN_TASKS["mnli"], BUILTIN_TASKS["stsb"]]


@pytest.fixture
def model(tiny_model_dir):
    torch.manual_seed(0)
    return MultiTaskModel.from_backbone(str(tiny_model_dir), TASKS, pooling="mean").eval()


def _inputs(batch: int = 3, length: int = 7):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, 4:] = 0
    return ids, mask


def test_one_head_per_task_with_the_task_type_and_size(model):
    assert set(model.heads) == {"sst2", "mnli", "stsb"}
    assert isinstance(model.heads["sst2"], ClassificationHead)
    assert isinstance(model.heads["stsb"], RegressionHead)
    ids, mask = _inputs()
    assert model("sst2", ids, mask).logits.shape == (3, 2)
    assert model("mnli", ids, mask).logits.shape == (3, 3)
    assert model("stsb", ids, mask).logits.shape == (3, 1)


def test_unknown_task_is_a_clear_error(model):
    ids, mask = _inputs()
    with pytest.raises(UnknownTaskError, match="no head for task 'cola'"):
        model("cola", ids, mask)


def test_mean_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(pool(hidden, mask, "mean"), torch.tensor([[2.0, 3.0]]))
    assert torch.equal(pool(hidden, mask, "cls"), torch.tensor([[1.0, 2.0]]))


def test_hard_loss_golden_values():
    loss = HardLoss()
    # CE of logits [0, ln 3] for class 1: -log(3/4) = 0.28768; for class 0: -log(1/4) = 1.38629.
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)], [5.0, 1.0]])
    labels = torch.tensor([1, 0, -1])  # -1 = no gold label -> zero loss
    got = loss(logits, labels, BUILTIN_TASKS["sst2"])
    assert torch.allclose(got, torch.tensor([0.287682, 1.386294, 0.0]), atol=1e-5)
    # Squared error: (2.5 - 4)^2 = 2.25, (1 - 1)^2 = 0, NaN label -> 0.
    scores = torch.tensor([[2.5], [1.0], [3.0]])
    got = loss(scores, torch.tensor([4.0, 1.0, float("nan")]), BUILTIN_TASKS["stsb"])
    assert torch.allclose(got, torch.tensor([2.25, 0.0, 0.0]))


def test_save_load_round_trip_gives_identical_outputs(model, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.save_pretrained(tmp_path / "saved", tokenizer)
    files = {p.name for p in (tmp_path / "saved").iterdir()}
    assert {"model.safetensors", "config.json", "multidistill_model.json", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    loaded = MultiTaskModel.from_pretrained(tmp_path / "saved").eval()
    ids, mask = _inputs()
    for task in ("sst2", "mnli", "stsb"):
        assert torch.equal(model(task, ids, mask).logits, loaded(task, ids, mask).logits)
    assert loaded.pooling == "mean"
    assert [t.name for t in loaded.tasks.values()] == ["sst2", "mnli", "stsb"]


def test_save_is_atomic_and_keeps_the_old_folder_on_failure(model, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path / "saved")
    before = (tmp_path / "saved" / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("multidistill.models.multitask.save_model", boom)
    with pytest.raises(RuntimeError):
        model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]  # no temp folder left behind


@pytest.mark.parametrize("damage", ["missing_weights", "missing_config", "corrupt_weights", "pickle_weights",
                                    "bad_json", "not_ours"])
def test_broken_model_folders_are_refused(model, tmp_path, damage):
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    if damage == "missing_weights":
        (folder / "model.safetensors").unlink()
    elif damage == "missing_config":
        (folder / "config.json").unlink()
    elif damage == "corrupt_weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "pickle_weights":
        torch.save(model.state_dict(), folder / "model.safetensors")
    elif damage == "bad_json":
        (folder / "multidistill_model.json").write_text("{not json")
    else:
        (folder / "multidistill_model.json").unlink()
    with pytest.raises(ModelError) as info:
        MultiTaskModel.from_pretrained(folder)
    assert str(folder) in str(info.value)


def test_weights_for_another_model_are_refused(model, tmp_path):
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    config = json.loads((folder / "multidistill_model.json").read_text())
    config["tasks"] = config["tasks"][:1]  # the file now describes fewer heads than the weights hold
    (folder / "multidistill_model.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="do not match"):
        MultiTaskModel.from_pretrained(folder)


@pytest.mark.parametrize("spec", [
    {"model_type": "bert"},
    {"model_type": "distilbert", "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64},
    {"model_type": "roberta", "type_vocab_size": 1, "pad_token_id": 1},
    {"model_type": "electra", "embedding_size": 16},
])
def test_encoders_of_several_families_train_and_round_trip(spec, tmp_path):
    """Not one family: any AutoModel encoder works, with or without segment ids."""
    from transformers import AutoConfig

    from multidistill.models.backbone import backbone_from_config

    sizes = {"vocab_size": 60, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 40}
    config = AutoConfig.for_model(**{**sizes, **spec})
    torch.manual_seed(0)
    model = MultiTaskModel(backbone_from_config(config), [BUILTIN_TASKS["mrpc"]], pooling="cls")
    ids, mask = _inputs()
    segments = torch.zeros_like(ids)
    segments[:, 4:] = 1  # a BERT-style pair encoding, as a BERT tokenizer would give it
    logits = model("mrpc", ids, mask, token_type_ids=segments).logits
    HardLoss()(logits, torch.tensor([0, 1, 1]), BUILTIN_TASKS["mrpc"]).mean().backward()
    assert all(p.grad is not None for p in model.heads.parameters())
    model.save_pretrained(tmp_path / spec["model_type"])
    loaded = MultiTaskModel.from_pretrained(tmp_path / spec["model_type"]).eval()
    model.eval()
    assert torch.equal(model("mrpc", ids, mask, segments).logits, loaded("mrpc", ids, mask, segments).logits)


@pytest.mark.parametrize("kind", ["multitask", "bilstm"])
def test_a_config_naming_a_huge_model_is_refused_before_allocating(model, tmp_path, kind):
    """A crafted or mixed-up config (10^10 vocabulary rows: ~1 TB of weights) fails the shape check on the meta
    device; building it for real would try to allocate first."""
    folder = tmp_path / "saved"
    if kind == "multitask":
        model.save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 10**10}))
    else:
        from multidistill.models.bilstm import BiLSTMModel, BiLSTMSpec

        BiLSTMModel(BiLSTMSpec(embedding_dim=8, hidden_size=8), TASKS, vocab_size=50,
                    pad_token_id=0, sep_token_id=None).save_pretrained(folder)
        config = json.loads((folder / "multidistill_model.json").read_text())
        (folder / "multidistill_model.json").write_text(json.dumps({**config, "vocab_size": 10**10}))
    from multidistill.models import load_model

    # Built for real, the embedding alone fails to allocate (RuntimeError) or is killed for memory.
    with pytest.raises(ModelError, match=r"size mismatch for \S*embed\S*: \[\d+, \d+\] in the file, "
                                         r"\[10000000000, \d+\] in the model"):
        load_model(folder)


def test_a_run_folder_or_an_export_given_for_a_model_folder_is_named_as_such(model, tmp_path):
    """Both said only "is missing multidistill_model.json, model.safetensors (is this a multidistill model folder?)"."""
    from multidistill.models import load_model

    model.save_pretrained(tmp_path / "run" / "model")
    with pytest.raises(ModelError, match=r"\(a run folder: its model is .*run/model\)"):
        load_model(tmp_path / "run")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "export.json").write_text(json.dumps({"kind": "onnx", "source": "runs/x/model"}))
    with pytest.raises(ModelError, match=r"\(an onnx export of runs/x/model; this command takes the multidistill "
                                         r"model folder \(predict also takes an ONNX export\)\)"):
        load_model(tmp_path / "export")
    # A per-task folder of an HF export (its parent holds export.json too): `evaluate` named the default output it
    # would write inside the export ("--output ... is inside the model folder") before the folder itself.
    for folder in (tmp_path / "hf", tmp_path / "hf" / "sst2"):
        folder.mkdir()
        (folder / "export.json").write_text(json.dumps({"kind": "hf", "source": "runs/x/model"}))
    from multidistill.evaluation.run import evaluate_model_dir

    with pytest.raises(ModelError, match=r"\(an hf export of runs/x/model; .* comes back with `multidistill "
                                         r"import-classifier`\)"):
        evaluate_model_dir(tmp_path / "hf" / "sst2", output=tmp_path / "hf" / "eval_sst2_dev.json", progress=False)
