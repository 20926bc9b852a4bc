"""`export_hf`: a single-task student as a stock Hugging Face folder that predicts exactly like it, and
clear refusals (with nothing left on disk) for what a stock head cannot express."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError, UnknownTaskError
from multidistill.export.hf import export_hf
from multidistill.models import BiLSTMModel, BiLSTMSpec, MultiTaskModel

SENT = Task(name="sent", labels=["neg", "pos"])
PAIR = Task(name="pair", labels=["contradiction", "entailment", "neutral"], pair=True)
REG = Task(name="score", type="regression", pair=True, metrics=["pearson"])
SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
         "max_position_embeddings": 64}
FAMILIES = {
    "roberta": {"model_type": "roberta", "type_vocab_size": 1, "pad_token_id": 0},
    "xlm-roberta": {"model_type": "xlm-roberta", "type_vocab_size": 1, "pad_token_id": 0},
    "electra": {"model_type": "electra", "embedding_size": 16},
    "distilbert": {"model_type": "distilbert", "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64,
                   "pad_token_id": 0},
    "mpnet": {"model_type": "mpnet", "pad_token_id": 0},
    # DeBERTa-v3's layout: relative attention with its own LayerNorm registered after the layers, no segment ids.
    "deberta-v2": {"model_type": "deberta-v2", "pad_token_id": 0, "type_vocab_size": 0, "relative_attention": True,
                   "pos_att_type": ["p2c", "c2p"], "position_buckets": 16, "max_relative_positions": -1,
                   "norm_rel_ebd": "layer_norm", "position_biased_input": False, "pooler_hidden_act": "tanh"},
    "deberta": {"model_type": "deberta", "pad_token_id": 0, "type_vocab_size": 0, "relative_attention": True,
                "pos_att_type": ["p2c", "c2p"], "max_relative_positions": -1, "position_biased_input": False,
                "pooler_hidden_act": "tanh"},
    "ernie": {"model_type": "ernie"},
    "data2vec-text": {"model_type": "data2vec-text", "type_vocab_size": 1, "pad_token_id": 0},
    "xmod": {"model_type": "xmod", "type_vocab_size": 1, "pad_token_id": 0, "languages": ["en_XX", "de_DE"],
             "default_language": "de_DE"},
    "layoutlm": {"model_type": "layoutlm", "max_2d_position_embeddings": 64},
    "roc_bert": {"model_type": "roc_bert", "pronunciation_vocab_size": 10, "shape_vocab_size": 10,
                 "pronunciation_embed_dim": 8, "shape_embed_dim": 8},
    "rembert": {"model_type": "rembert", "input_embedding_size": 16, "output_embedding_size": 16},
    # MobileBERT's bottlenecks (narrower attention) and NoNorm layers: no LayerNorm bounds its [CLS] vector.
    "mobilebert": {"model_type": "mobilebert", "embedding_size": 16, "true_hidden_size": 16,
                   "intra_bottleneck_size": 16, "num_feedforward_networks": 2},
    "luke": {"model_type": "luke", "pad_token_id": 0, "entity_vocab_size": 8, "entity_emb_size": 16},
    "ibert": {"model_type": "ibert", "type_vocab_size": 1, "pad_token_id": 0, "quant_mode": False},
    "big_bird": {"model_type": "big_bird", "pad_token_id": 0, "attention_type": "original_full",
                 "hidden_act": "gelu_new"},
    "roberta-prelayernorm": {"model_type": "roberta-prelayernorm", "type_vocab_size": 1, "pad_token_id": 0},
    "xlm-roberta-xl": {"model_type": "xlm-roberta-xl", "type_vocab_size": 1, "pad_token_id": 0},
    "megatron-bert": {"model_type": "megatron-bert"},
    "roformer": {"model_type": "roformer", "embedding_size": 32, "hidden_act": "relu"},
    "esm": {"model_type": "esm", "pad_token_id": 0, "mask_token_id": 4, "token_dropout": False,
            "position_embedding_type": "rotary", "emb_layer_norm_before": False},
    "nomic_bert": {"model_type": "nomic_bert", "pad_token_id": 0},
    "gte": {"model_type": "gte", "pad_token_id": 0},
    "jina_embeddings_v3": {"model_type": "jina_embeddings_v3", "pad_token_id": 0, "type_vocab_size": 1},
    "eurobert": {"model_type": "eurobert", "pad_token_id": 0, "num_key_value_heads": 1},
    "esmc": {"model_type": "esmc", "pad_token_id": 0},
    "ultrabert": {"model_type": "ultrabert", "pad_token_id": 0},
    "xlm": {"model_type": "xlm", "pad_index": 0, "n_langs": 1},
    "flaubert": {"model_type": "flaubert", "pad_index": 0, "n_langs": 1, "layerdrop": 0.0},
}
# Families of the table beyond the first ones above: each is exported once (single texts and pairs in turn; the
# pair and regression paths do not depend on the family), a few also with a regression head.
MORE_FAMILIES = ("deberta", "ernie", "data2vec-text", "xmod", "layoutlm", "roc_bert", "rembert", "mobilebert", "luke",
                 "ibert", "big_bird", "roberta-prelayernorm", "xlm-roberta-xl", "megatron-bert", "roformer", "esm",
                 "nomic_bert", "gte", "jina_embeddings_v3", "eurobert", "esmc", "ultrabert", "xlm", "flaubert")
TEXTS = [
    ("the movie was great", "the movie was great"),
    ("awful plot and a boring actor , the worst film", "it was fine"),
    ("love", "hate it"),
    (" ".join(["very"] * 80) + " good", "a " * 70),  # truncated to the model's max_length
    ("zz qq unknown words !?", "x"),
]


def _tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _perturb(model: MultiTaskModel, seed: int = 0) -> MultiTaskModel:
    """Non-trivial norms (torch's LayerNorm and the families' own LayerNorms, RMSNorms, NoNorms) and heads, so the
    export is tested away from the default initialisation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
            if isinstance(module, torch.nn.LayerNorm) or (type(module).__name__.endswith("Norm")
                                                          and isinstance(weight, torch.Tensor) and weight.dim() == 1):
                weight.copy_(1 + 0.5 * torch.randn(weight.shape, generator=generator))
                if isinstance(bias, torch.Tensor):
                    bias.copy_(0.3 * torch.randn(bias.shape, generator=generator))
        for head in model.heads.values():
            head.out.weight.copy_(torch.randn(head.out.weight.shape, generator=generator))
            head.out.bias.copy_(torch.randn(head.out.bias.shape, generator=generator))
    return model


def build_model(tiny_model_dir: Path, folder: Path, family: str = "bert", tasks: tuple[Task, ...] = (SENT,),
                pooling: str = "cls", max_length: int | None = 24) -> Path:
    """A tiny student of ``family`` saved with the tiny BERT tokenizer (only token ids matter)."""
    from transformers import AutoConfig

    from multidistill.models.backbone import backbone_from_config

    tokenizer = _tokenizer(tiny_model_dir)
    torch.manual_seed(0)
    if family == "bert":
        model = MultiTaskModel.from_backbone(str(tiny_model_dir), list(tasks), pooling=pooling, max_length=max_length)
    else:
        vocab_size = max(tokenizer.get_vocab().values()) + 1  # the tiny vocabulary file skips an id
        config = AutoConfig.for_model(**{**SIZES, "vocab_size": vocab_size, **FAMILIES[family]})
        model = MultiTaskModel(backbone_from_config(config), list(tasks), pooling=pooling, max_length=max_length)
    _perturb(model).save_pretrained(folder, tokenizer=tokenizer)
    return folder


def _compare(model_dir: Path, out: Path, task: Task, atol: float = 1e-4) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from multidistill.models import load_model

    ours = load_model(model_dir).eval()
    hf_model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts_a = [a for a, _ in TEXTS]
    texts_b = [b for _, b in TEXTS] if task.pair else None
    encoded = tokenizer(texts_a, texts_b, truncation=True, padding=True, return_tensors="pt")
    assert encoded["input_ids"].shape[1] <= ours.max_length  # the saved tokenizer truncates like training did
    with torch.no_grad():
        expected = ours(task.name, encoded["input_ids"], encoded["attention_mask"],
                        encoded.get("token_type_ids")).logits
        got = hf_model(**encoded).logits
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= atol, (got, expected)
    if task.type == "classification":
        assert torch.equal(got.argmax(-1), expected.argmax(-1))
        assert expected.std() > 0.1  # the comparison is not between near-constant logits


@pytest.mark.parametrize(("family", "task"), [
    ("bert", SENT), ("bert", PAIR), ("bert", REG), ("roberta", PAIR), ("xlm-roberta", SENT), ("electra", SENT),
    ("electra", REG), ("distilbert", PAIR), ("mpnet", PAIR), ("deberta-v2", SENT), ("deberta-v2", REG),
    *((family, (SENT, PAIR)[i % 2]) for i, family in enumerate(MORE_FAMILIES)),
    ("big_bird", REG), ("xlm", REG), ("eurobert", REG),
])
def test_export_loads_as_a_stock_model_and_predicts_the_same(family, task, tiny_model_dir, tmp_path):
    model_dir = build_model(tiny_model_dir, tmp_path / "model", family, (task,))
    out = export_hf(model_dir, tmp_path / "hf", skip_parity=True)
    assert out == tmp_path / "hf"
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin"))
    _compare(model_dir, out, task)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"][0].endswith("ForSequenceClassification")
    if task.type == "regression":
        assert config["problem_type"] == "regression"
        assert len(config["id2label"]) == 1
    else:
        assert config["problem_type"] == "single_label_classification"
        assert config["id2label"] == {str(i): label for i, label in enumerate(task.labels)}
        assert config["label2id"] == {label: i for i, label in enumerate(task.labels)}
    info = json.loads((out / "export.json").read_text())
    assert info["kind"] == "hf" and info["task"] == task.name and info["max_abs_diff"] <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "model"]  # no temporary folders left
    if family in ("deberta-v2", "deberta"):  # the source said tanh; the stock head is the GELU one the export sets up
        assert config["pooler_hidden_act"] == "gelu"
    # heads the export lays out through the config: a first-token summary without activation, a pooler that passes
    # [CLS] through, [CLS] pooling
    expected = {"xlm": {"summary_type": "first", "summary_use_proj": True, "summary_proj_to_labels": True,
                        "summary_activation": None},
                "mobilebert": {"classifier_activation": False}, "eurobert": {"classifier_pooling": "bos"},
                "ultrabert": {"classifier_pooling": "cls"}}.get(family, {})
    assert {key: config.get(key) for key in expected} == expected


@pytest.mark.parametrize("family", [family for family in ("bert", *FAMILIES) if family not in (
    "mobilebert", "ultrabert", "xlm", "flaubert")])  # their stock heads have no activation: no bound needed
def test_every_activated_family_bounds_its_cls_vector_by_its_final_norm(family, tiny_model_dir, tmp_path):
    """The offset / eps mapping holds for any input only when the pooled vector's bound comes from the norm that
    outputs it (torch's LayerNorm, DeBERTa's own LayerNorm, EuroBERT's RMSNorm, I-BERT's IntLayerNorm), not from
    the fallback multiple of what the check rows show (at least 50)."""
    from multidistill.export.hf import _pooled_bound
    from multidistill.models import load_model

    model = load_model(build_model(tiny_model_dir, tmp_path / "model", family)).eval()
    rows = [(a, None) for a, _ in TEXTS]
    bound = _pooled_bound(model, SENT, _tokenizer(tiny_model_dir), rows, 24)
    assert float(bound.max()) < 50 and len(set(bound.tolist())) > 1


def test_a_norm_that_normalises_nothing_gives_no_bound():
    """MobileBERT's NoNorm (x * weight + bias) computes neither a LayerNorm nor an RMSNorm: no bound, whatever its
    name; torch's RMSNorm gets |gamma| sqrt(H)."""
    from transformers.models.mobilebert.modeling_mobilebert import NoNorm

    from multidistill.export.hf import _norm_bound

    x = torch.randn(2, 3, 4)
    no_norm = NoNorm(4)
    assert _norm_bound(no_norm, x, no_norm(x), 4) is None
    rms = torch.nn.RMSNorm(4, eps=1e-6)
    with torch.no_grad():
        rms.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    assert torch.allclose(_norm_bound(rms, x, rms(x), 4), torch.tensor([2.0, 4.0, 1.0, 6.0]).double())


def test_offset_activations_are_the_identity_beyond_the_margin():
    from transformers.activations import ACT2FN

    from multidistill.export.hf import OFFSET_ACTIVATIONS, OFFSET_MARGIN

    z = torch.cat([torch.linspace(OFFSET_MARGIN, 1000.0, 100001), torch.logspace(3, 9, 1001)]).float()
    for name in OFFSET_ACTIVATIONS:
        with torch.no_grad():
            assert torch.equal(ACT2FN[name](z), z), name
    assert not torch.equal(ACT2FN["silu"](z), z)  # why SiLU is not among them


def test_a_head_applying_an_activation_that_is_never_the_identity_is_refused(tiny_model_dir, tmp_path):
    """BigBird's and RoFormer's stock heads apply the encoder's hidden_act, which the export cannot change: one that
    is never the identity (SiLU) is refused before anything is written, naming it."""
    FAMILIES["big_bird_silu"] = {**FAMILIES["big_bird"], "hidden_act": "silu"}
    try:
        model_dir = build_model(tiny_model_dir, tmp_path / "model", "big_bird_silu")
    finally:
        del FAMILIES["big_bird_silu"]
    with pytest.raises(ModelError) as info:
        export_hf(model_dir, tmp_path / "hf", skip_parity=True)
    for fragment in ("'big_bird'", "hidden_act ('silu')", "gelu_new", "--format onnx"):
        assert fragment in str(info.value), (fragment, str(info.value))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_the_bound_is_that_of_the_layernorm_the_pooled_vector_comes_from(tiny_model_dir, tmp_path):
    """DeBERTa registers its relative-embedding LayerNorm after the layers: the bound must come from the last
    layer's output LayerNorm, not from the last LayerNorm registered (nor the generous fallback)."""
    from multidistill.export.hf import _pooled_bound
    from multidistill.models import load_model

    model = load_model(build_model(tiny_model_dir, tmp_path / "model", "deberta-v2")).eval()
    layer = model.backbone.encoder.layer[-1].output.LayerNorm
    expected = layer.weight.detach().double().abs() * math.sqrt(31) + layer.bias.detach().double().abs()
    bound = _pooled_bound(model, SENT, _tokenizer(tiny_model_dir), [(a, None) for a, _ in TEXTS], 24)
    raised = ~torch.isclose(bound, expected)  # dimensions raised to the largest |value| the rows showed
    assert raised.float().mean() < 0.5 and len(set(bound[raised].tolist())) <= 1
    assert torch.all(bound[raised] > expected[raised])


def test_one_task_of_a_multitask_model_and_custom_check_rows(tiny_model_dir, tmp_path):
    model_dir = build_model(tiny_model_dir, tmp_path / "model", "bert", (SENT, PAIR))
    out = export_hf(model_dir, tmp_path / "hf", task="pair", check_rows=[("good film", "bad film"), ("a", "b")])
    _compare(model_dir, out, PAIR)
    assert json.loads((out / "export.json").read_text())["check_rows"] == 2


def test_a_multitask_model_exports_one_stock_folder_per_task(tiny_model_dir, tmp_path):
    """Without --task, each task of a multi-task student is its own plain AutoModelForSequenceClassification folder
    (labels or regression in its config, tokenizer, model card) that predicts as the student does."""
    model_dir = build_model(tiny_model_dir, tmp_path / "model", "bert", (SENT, PAIR, REG))
    out = export_hf(model_dir, tmp_path / "hf", skip_parity=True)
    info = json.loads((out / "export.json").read_text())
    assert info["folders"] == {"sent": "sent", "pair": "pair", "score": "score"}
    assert set(info["checks"]) == {"sent", "pair", "score"}
    assert (out / "README.md").is_file() and not (out / "model.safetensors").exists()
    for task in (SENT, PAIR, REG):
        folder = out / task.name
        assert sorted(p.name for p in folder.glob("*.json") if "token" not in p.name) == ["config.json", "export.json"]
        assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()
        _compare(model_dir, folder, task, atol=1e-5)
        config = json.loads((folder / "config.json").read_text())
        if task.type == "regression":
            assert config["problem_type"] == "regression" and config["id2label"] == {"0": "score"}
        else:
            assert config["id2label"] == {str(i): label for i, label in enumerate(task.labels)}
            assert config["label2id"] == {label: i for i, label in enumerate(task.labels)}
        assert json.loads((folder / "export.json").read_text())["task"] == task.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "model"]


def test_a_failed_task_check_leaves_no_per_task_folder(tiny_model_dir, tmp_path, monkeypatch):
    from multidistill.export import hf

    model_dir = build_model(tiny_model_dir, tmp_path / "model", "bert", (SENT, PAIR))
    checks = []

    def verify(model, task, folder, rows, max_length, thresholds=None):  # the second task's check fails
        checks.append(task.name)
        if len(checks) == 2:
            raise ModelError("differ from ours")
        return {"max_abs_diff": 0.0, "agreement": 1.0}

    monkeypatch.setattr(hf, "_verify", verify)
    with pytest.raises(ModelError, match="differ from ours"):
        export_hf(model_dir, tmp_path / "hf", skip_parity=True)
    assert checks == ["sent", "pair"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_overwrite_replaces_an_existing_export(tiny_model_dir, tmp_path):
    model_dir = build_model(tiny_model_dir, tmp_path / "model")
    out = tmp_path / "hf"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(ConfigError, match="--overwrite"):
        export_hf(model_dir, out, skip_parity=True)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with pytest.raises(ConfigError, match="holds no multidistill output"):  # --overwrite replaces only exports
        export_hf(model_dir, out, overwrite=True, skip_parity=True)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    (out / "old.txt").unlink()
    export_hf(model_dir, out, skip_parity=True)
    (out / "old.txt").write_text("old")  # an export of ours, with a stray file: --overwrite replaces it
    export_hf(model_dir, out, overwrite=True, skip_parity=True)
    assert not (out / "old.txt").exists() and (out / "config.json").is_file()
    (tmp_path / "empty").mkdir()
    export_hf(model_dir, tmp_path / "empty", skip_parity=True)  # an empty folder is fine without --overwrite
    with pytest.raises(ConfigError, match="model folder itself"):
        export_hf(model_dir, model_dir, overwrite=True, skip_parity=True)
    # an earlier export's folder that now also holds the model: --overwrite deleted the model, exit 0
    import shutil

    nest = tmp_path / "nest"
    export_hf(model_dir, nest, skip_parity=True)
    shutil.copytree(model_dir, nest / "model")
    with pytest.raises(ConfigError, match="replacing it would delete the model"):
        export_hf(nest / "model", nest, overwrite=True, skip_parity=True)
    assert (nest / "model" / "model.safetensors").is_file()


def _bilstm(tiny_model_dir: Path, folder: Path) -> Path:
    tokenizer = _tokenizer(tiny_model_dir)
    spec = BiLSTMSpec(embedding_dim=16, hidden_size=8, mlp_hidden=12)
    BiLSTMModel.from_tokenizer(spec, [SENT], tokenizer).save_pretrained(folder, tokenizer=tokenizer)
    return folder


@pytest.mark.parametrize(("case", "error", "expected"), [
    # The refusal says which models export and the config option that trains one, and names the CLI option.
    ("mean pooling", ModelError, ["model.pooling: mean", "[CLS] pooling", "`model.pooling: cls`",
                                  "--set student.model.pooling=cls", "--set transformer.model.pooling=cls",
                                  "--format onnx"]),
    ("bilstm", ModelError, ["BiLSTM student", "`model.pooling: cls`", "--format onnx"]),
    ("unknown task", UnknownTaskError, ["'nope'", "sent"]),
    ("other family", ModelError, ["'albert'", "supported", "--format onnx"]),
    # a family of the feature table whose transformers has no sequence classifier
    ("no stock classifier", ModelError, ["'bert-generation'", "supported: bert, roberta", "xlm, flaubert",
                                         "--format onnx"]),
])
def test_refusals_name_the_reason_and_leave_nothing(case, error, expected, tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    task = None
    if case == "mean pooling":
        build_model(tiny_model_dir, folder, pooling="mean")
    elif case == "bilstm":
        _bilstm(tiny_model_dir, folder)
    elif case == "unknown task":
        build_model(tiny_model_dir, folder)
        task = "nope"
    else:
        name = "albert" if case == "other family" else "bert-generation"
        FAMILIES[name] = {"model_type": name, "embedding_size": 16} if name == "albert" else {"model_type": name}
        try:
            build_model(tiny_model_dir, folder, name)
        finally:
            del FAMILIES[name]
    with pytest.raises(error) as info:
        export_hf(folder, tmp_path / "hf", task=task, skip_parity=True)
    for fragment in expected:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_check_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch):
    from multidistill.export import hf

    model_dir = build_model(tiny_model_dir, tmp_path / "model")
    monkeypatch.setattr(hf, "MIN_EPS", 0.5)  # tanh(0.5 x) is far from linear: the check must catch it
    monkeypatch.setattr(hf, "MAX_EPS", 0.5)
    with pytest.raises(ModelError, match="differ from ours"):
        export_hf(model_dir, tmp_path / "hf", skip_parity=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_export_format_hf_through_the_main_cli(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForSequenceClassification

    from tests.test_cli import run_cli

    model_dir = build_model(tiny_model_dir, tmp_path / "model")
    code, output = run_cli(monkeypatch, capsys, "export", str(model_dir), "--format", "hf", "--out",
                           str(tmp_path / "hf"), "--skip-parity")
    assert code == 0, output
    # The check always runs and is printed: without dev data, on the built-in sentences.
    assert "built-in sentences" in output and "max |Δ|" in output and "from_pretrained" in output
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").config.num_labels == 2
    code, output = run_cli(monkeypatch, capsys, "export", str(model_dir), "--format", "tflite", "--out",
                           str(tmp_path / "x"))
    assert code == 2 and "onnx, hf" in output and not (tmp_path / "x").exists()


def test_export_hf_is_one_path_of_export(monkeypatch, capsys):
    """`export --format hf` is the only Hugging Face export command; its options say what they apply to."""
    from tests.test_cli import run_cli

    code, output = run_cli(monkeypatch, capsys, "export-hf", "--help")
    assert code != 0 and "No such command" in output
    code, output = run_cli(monkeypatch, capsys, "export", "--help")
    assert code == 0 and "model.pooling: cls" in output and "--task" in output


def test_a_cls_pooled_layer_cut_student_exports_with_its_dev_check(tiny_run, tmp_path, monkeypatch, capsys):
    """A recipe-style student (cut from a teacher's layers) trained with model.pooling: cls exports through
    `export --format hf`, checked on its task's dev rows; the same student mean-pooled is refused with the
    option to set; options of the other format are refused."""
    from transformers import AutoModelForSequenceClassification

    from multidistill.config import TeacherRunConfig
    from multidistill.training.run import train_model
    from tests.test_cli import run_cli

    raw, _ = tiny_run
    data_root, cache = raw["data"]["data_root"], raw["data"]["cache_dir"]
    for pooling in ("cls", "mean"):
        config = {**raw, "output_dir": str(tmp_path / pooling),
                  "model": {**raw["model"], "student_layers": [1], "pooling": pooling},
                  "train": {**raw["train"], "epochs": 0.5}}
        train_model(TeacherRunConfig.model_validate(config))
    args = ["--format", "hf", "--task", "toy_pair", "--data-root", data_root, "--cache-dir", cache]
    previous = os.umask(0o022)
    try:
        code, output = run_cli(monkeypatch, capsys, "export", str(tmp_path / "cls" / "model"), "--out",
                               str(tmp_path / "hf"), *args)
    finally:
        os.umask(previous)
    assert code == 0, output
    # A serving container running as another user can read the export (save_pretrained writes 0600 files).
    assert {oct(path.stat().st_mode & 0o777) for path in [tmp_path / "hf", *(tmp_path / "hf").iterdir()]} == {
        "0o755", "0o644"}
    assert "dev rows" in output and "24" in output and "agree" in output
    check = json.loads((tmp_path / "hf" / "export.json").read_text())["check"]
    assert check["rows"] == 24 and check["source"] == "dev rows" and check["max_abs_diff"] <= 1e-4
    assert check["agreement"] == 1.0
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").config.num_labels == 2

    code, output = run_cli(monkeypatch, capsys, "export", str(tmp_path / "mean" / "model"), "--out",
                           str(tmp_path / "hf2"), *args)
    assert code == 2 and "model.pooling: cls" in output and "--format onnx" in output
    assert not (tmp_path / "hf2").exists()
    code, output = run_cli(monkeypatch, capsys, "export", str(tmp_path / "cls" / "model"), "--out",
                           str(tmp_path / "hf3"), *args, "--quantize", "int8")
    assert code == 2 and "--quantize applies to --format onnx" in output
    code, output = run_cli(monkeypatch, capsys, "export", str(tmp_path / "cls" / "model"), "--out",
                           str(tmp_path / "onnx"), "--task", "toy_pair", "--skip-parity")
    assert code == 2 and "--task applies to --format hf" in output


@pytest.mark.parametrize("odd", ["no_pad", "left"])
def test_the_saved_tokenizer_batches_as_training_did(odd, tiny_model_dir, tmp_path):
    """A source tokenizer without a pad token, or one that pads on the left: the export's check (a user's
    ``tokenizer(..., padding=True)`` on the saved folder) passes, and the saved tokenizer pads on the right with a
    pad token (transformers refuses ``padding=True`` without one; a pad first is what a stock head would read)."""
    from transformers import AutoTokenizer

    from multidistill.models.backbone import load_tokenizer

    model_dir = build_model(tiny_model_dir, tmp_path / "model", "bert", (PAIR,))
    if odd == "no_pad":
        tokenizer = load_tokenizer(str(model_dir))
        tokenizer.pad_token = None
        tokenizer.save_pretrained(model_dir)
        assert load_tokenizer(str(model_dir)).pad_token_id is None
    else:
        config_file = model_dir / "tokenizer_config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "padding_side": "left"}))
        assert load_tokenizer(str(model_dir)).padding_side == "left"
    out = export_hf(model_dir, tmp_path / "hf", check_rows=[("good film and a long plot", "bad film"), ("a", "b")])
    assert json.loads((out / "export.json").read_text())["check_rows"] == 2
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.padding_side == "right" and saved.pad_token is not None
    assert saved.model_max_length == json.loads((out / "export.json").read_text())["max_length"]
    _compare(model_dir, out, PAIR)
