"""`export --graph fused` per encoder family: every family whose table entry sets `ort_fusion` has the attention of
every layer fused by onnxruntime's optimizer and passes the fp32 parity check; a family the optimizer fuses only
partly stays without it and falls back to a plain graph, saying so; a fused graph whose attention the optimizer
matched in fewer layers than the encoder has is recorded as such, not as a whole fusion."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from multidistill.config import DataConfig
from multidistill.data.tasks import Task
from multidistill.models import MultiTaskModel, load_model
from multidistill.models.families import FAMILIES
from tests.conftest import write_tiny_tasks
from tests.test_export_hf import FAMILIES as TINY_FAMILIES
from tests.test_export_hf import SIZES, _perturb, _tokenizer

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from multidistill.export import onnx_variants  # noqa: E402
from multidistill.export.onnx import export_onnx  # noqa: E402
from multidistill.export.onnx_variants import FUSION_MODEL_TYPES, describe, fused_variant  # noqa: E402
from multidistill.export.parity import ParityError  # noqa: E402

# Tiny configs beyond tests/test_export_hf.py's: CamemBERT is RoBERTa's layout under its own model type.
CONFIGS = {**TINY_FAMILIES, "camembert": {"model_type": "camembert", "type_vocab_size": 1, "pad_token_id": 0}}
FUSED = sorted(name for name, family in FAMILIES.items() if family.ort_fusion is not None)
# Families onnxruntime's "bert" fusions match only in part (megatron-bert: every layer's attention but the first's;
# the others: no layer's attention), so they have no ort_fusion. ERNIE's attention fuses, but with task-type
# embeddings (use_task_id, ERNIE 3.0's setting) the EmbedLayerNormalization fusion drops them: the fused graph
# fails the parity check (test below).
PARTLY_FUSED = ("megatron-bert", "layoutlm", "luke", "esm", "roformer", "deberta", "mobilebert", "ernie")


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory) -> tuple[Task, DataConfig]:
    """A pair task (so segment ids reach the graph) and 16 dev rows to check parity on."""
    root = tmp_path_factory.mktemp("fusion_data")
    spec = next(s for s in write_tiny_tasks(root / "data", n_train=8, n_dev=16) if s["name"] == "toy_pair")
    data = DataConfig(tasks=["toy_pair"], data_root=str(root / "data"), cache_dir=str(root / "cache"),
                      task_specs=[spec])
    return Task.model_validate(spec), data


def student(tiny_model_dir: Path, folder: Path, family: str, task: Task, **config) -> Path:
    """A tiny random 2-layer student of ``family`` (non-trivial norms and head), saved with the tiny BERT tokenizer."""
    from transformers import AutoConfig

    from multidistill.models.backbone import backbone_from_config

    tokenizer = _tokenizer(tiny_model_dir)
    torch.manual_seed(0)
    if family == "bert":
        model = MultiTaskModel.from_backbone(str(tiny_model_dir), [task], max_length=24)
    else:
        vocab_size = max(tokenizer.get_vocab().values()) + 1
        backbone = AutoConfig.for_model(**{**SIZES, "vocab_size": vocab_size, **CONFIGS[family], **config})
        model = MultiTaskModel(backbone_from_config(backbone), [task], max_length=24)
    _perturb(model).save_pretrained(folder, tokenizer=tokenizer)
    return folder


def test_the_fused_families_are_those_documented():
    assert set(FUSION_MODEL_TYPES) == set(FUSED) and set(FUSION_MODEL_TYPES.values()) == {"bert"}
    assert not set(FUSED) & set(PARTLY_FUSED)
    text = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("| `--graph fused` |"))
    assert all(f"`{name}`" in line for name in FUSED), line


@pytest.mark.parametrize("family", FUSED)
def test_every_layers_attention_is_fused_and_the_graph_matches_torch(family, pair_data, tiny_model_dir, tmp_path):
    task, data = pair_data
    model_dir = student(tiny_model_dir, tmp_path / "model", family, task)
    meta = export_onnx(model_dir, tmp_path / "onnx", parity_data=data, graph="fused")  # raises on a parity failure
    variant = meta["variant"]
    assert variant["graph"] == "fused" and variant["optimizer_model_type"] == "bert"
    assert "graph_note" not in variant, variant
    assert variant["fused_ops"]["Attention"] == load_model(model_dir).backbone.config.num_hidden_layers == 2
    nodes = [node.op_type for node in onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph.node]
    assert nodes.count("Attention") == 2 and "Softmax" not in nodes  # no attention left unfused
    assert meta["parity_checked"]
    assert meta["parity"]["fp32"]["toy_pair"]["examples"] == 16
    assert meta["parity"]["fp32"]["toy_pair"]["max_abs_diff"] <= 1e-4


def test_a_partly_fused_family_has_no_fusion_and_falls_back_to_plain(pair_data, tiny_model_dir, tmp_path, caplog):
    task, data = pair_data
    assert FAMILIES["megatron-bert"].ort_fusion is None
    model_dir = student(tiny_model_dir, tmp_path / "model", "megatron-bert", task)
    with caplog.at_level(logging.WARNING, logger="multidistill.export.onnx"):
        meta = export_onnx(model_dir, tmp_path / "onnx", parity_data=data, graph="fused")
    variant = meta["variant"]
    assert variant["graph"] == "plain" and "fused_ops" not in variant
    assert variant["graph_note"].startswith("fused graph requested but exported plain: onnxruntime's transformer "
                                            "optimizer has no fusions for model_type 'megatron-bert'")
    assert variant["graph_note"] in caplog.text
    assert f"graph: plain, eager attention (padding mask -60) [{variant['graph_note']}]" == describe(variant)


@pytest.mark.parametrize(("family", "config", "fused"), [
    ("megatron-bert", {}, "1"),  # its first layer's attention does not match
    ("big_bird", {"use_bias": False}, "none"),  # a BigBird config without Q/K/V biases: no layer matches
])
def test_a_partial_fusion_is_recorded_as_partial(family, config, fused, pair_data, tiny_model_dir, tmp_path):
    task, _ = pair_data
    model_dir = student(tiny_model_dir, tmp_path / "model", family, task, **config)
    export_onnx(model_dir, tmp_path / "onnx", skip_parity=True)
    path = tmp_path / "onnx" / "model.onnx"
    variant = fused_variant(path, load_model(model_dir), "bert")
    assert variant["graph"] == "fused" and variant["optimizer_model_type"] == "bert"
    assert variant["graph_note"].startswith(f"attention fused in {fused} of 2 layers: onnxruntime's 'bert' "
                                            "attention pattern did not match the other")
    assert variant["fused_ops"].get("Attention", 0) == (0 if fused == "none" else int(fused))
    assert [node.op_type for node in onnx.load(str(path)).graph.node].count("Softmax") == 2 - int(fused != "none")
    assert f"[{variant['graph_note']}]" in describe(variant)


def test_ernie_with_task_type_embeddings_fails_parity_when_fused(pair_data, tiny_model_dir, tmp_path, monkeypatch):
    """Why ERNIE has no ort_fusion: its attention fuses, but the embedding fusion leaves out the task-type
    embeddings ERNIE 3.0 adds (use_task_id), so the graph computes another function. Should a later onnxruntime
    keep them, this fails, and ERNIE can join the fused families."""
    task, data = pair_data
    monkeypatch.setitem(onnx_variants.FUSION_MODEL_TYPES, "ernie", "bert")
    model_dir = student(tiny_model_dir, tmp_path / "model", "ernie", task, use_task_id=True, task_type_vocab_size=3)
    with pytest.raises(ParityError, match=r"toy_pair \(fp32\): max \|logit difference\|"):
        export_onnx(model_dir, tmp_path / "onnx", parity_data=data, graph="fused")


def test_an_export_whose_fusion_is_partial_says_so(pair_data, tiny_model_dir, tmp_path, caplog):
    """BigBird without attention biases: onnxruntime's pattern fuses none of its layers. The export (which passes
    parity: the unfused layers are correct) records and logs that, instead of claiming a fused graph."""
    task, data = pair_data
    model_dir = student(tiny_model_dir, tmp_path / "model", "big_bird", task, use_bias=False)
    with caplog.at_level(logging.WARNING, logger="multidistill.export.onnx"):
        meta = export_onnx(model_dir, tmp_path / "onnx", parity_data=data, graph="fused")
    variant = meta["variant"]
    assert variant["graph"] == "fused" and "Attention" not in variant["fused_ops"]
    assert variant["graph_note"].startswith("attention fused in none of 2 layers")
    assert variant["graph_note"] in caplog.text and f"[{variant['graph_note']}]" in describe(variant)
    assert meta["parity"]["fp32"]["toy_pair"]["max_abs_diff"] <= 1e-4


def test_a_block_sparse_bigbird_is_refused_before_any_export_work(pair_data, tiny_model_dir, tmp_path):
    """Traced on short rows it switches to full attention, so its graph would differ from it on long inputs
    without a short-row parity check noticing: refused by the config key, nothing written."""
    from multidistill.errors import ModelError

    task, data = pair_data
    model_dir = student(tiny_model_dir, tmp_path / "model", "big_bird", task, attention_type="block_sparse")
    with pytest.raises(ModelError, match=r"cannot export this 'big_bird' encoder to ONNX: its config's attention_type "
                                         r"is 'block_sparse', and its ONNX export needs 'original_full'"):
        export_onnx(model_dir, tmp_path / "onnx", parity_data=data)
    assert not (tmp_path / "onnx").exists()
