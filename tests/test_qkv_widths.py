"""Q/K/V widths in `ModelDims` (models/families.py `model_dims`) against the tensors the package's extraction
captures, and `relation_kl`'s build-time check of ``relation_heads`` against each width it re-splits: MobileBERT's
narrower attention, DeBERTa-v2 with ``attention_head_size``, grouped-query attention (EuroBERT, Ultrabert) and a
``head_dim`` of its own; BERT's sizes and loss values as before."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import transformers
from torch import nn

from multidistill.errors import ConfigError
from multidistill.losses import build_loss
from multidistill.models.extract import extract_features
from multidistill.models.families import model_dims
from multidistill.models.features import ModelDims
from multidistill.teachers.feature_store import FeatureSpec
from tests.test_features import CONFIGS, SIZES, padded_batch

QKV = ("queries", "keys", "values")
# Configs whose Q/K/V are not all H (32) wide, beside the table's tiny configs (tests/test_features.py), with the
# widths (queries, keys, values) their attention computes.
NARROW = {
    # MobileBERT: attention intra_bottleneck_size (16) wide in 32-wide hidden states.
    "mobilebert": (CONFIGS["mobilebert"], (16, 16, 16)),
    # DeBERTa-v2 with 4 heads of attention_head_size 6: 24 wide.
    "deberta-v2-head-size": (lambda: transformers.DebertaV2Config(
        **SIZES, relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8, type_vocab_size=0,
        attention_head_size=6), (24, 24, 24)),
    # Grouped-query attention: 2 key/value heads of 8 for 4 query heads.
    "eurobert": (CONFIGS["eurobert"], (32, 16, 16)),
    "ultrabert-gqa": (lambda: transformers.UltrabertConfig(**SIZES, num_key_value_heads=2, sliding_window=2,
                                                           layer_types=["full_attention", "sliding_attention"]),
                      (32, 16, 16)),
    # A head_dim of its own (6) and one key/value head.
    "eurobert-head-dim": (lambda: transformers.EuroBertConfig(**SIZES, num_key_value_heads=1, head_dim=6,
                                                              pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                                              mask_token_id=3), (24, 6, 6)),
    "gte-head-dim": (lambda: transformers.GteConfig(**SIZES, pad_token_id=1, head_dim=6), (24, 24, 24)),
}
ALL_CONFIGS = {**CONFIGS, **{name: make for name, (make, _) in NARROW.items()}}


def encoder(name: str) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(ALL_CONFIGS[name]())
    if name == "deberta-v2-head-size":
        # Transformers' DeBERTa-v2 reads attention_head_size for its Q/K/V projections but keeps the attention's
        # output projection H -> H, so a config with A * head size != H cannot run a forward; an output projection
        # from the attention's real width makes one (the Q/K/V are those of the config).
        for layer in model.encoder.layer:
            layer.attention.output.dense = nn.Linear(24, SIZES["hidden_size"])
    return model.eval()


def captured(model: transformers.PreTrainedModel, *, grad: bool = False, want=QKV):
    with torch.set_grad_enabled(grad):
        return extract_features(model, **padded_batch(), want=want)


@pytest.mark.parametrize("name", sorted(ALL_CONFIGS))
def test_model_dims_widths_are_the_captured_qkv_widths(name):
    model = encoder(name)
    dims = model_dims(model.config)
    features = captured(model)
    got = {qkv: {tensor.shape[-1] for tensor in getattr(features, qkv)} for qkv in QKV}
    assert got == {qkv: {dims.qkv_width(qkv)} for qkv in QKV}
    assert features.dims == dims
    if name in NARROW:
        assert tuple(dims.qkv_width(qkv) for qkv in QKV) == NARROW[name][1]
    else:  # every family's tiny config: as wide as the hidden states, stored as None (the default)
        assert (dims.query_width, dims.key_width, dims.value_width) == (None, None, None)


def test_bert_sizes_and_relation_kl_are_unchanged():
    """Golden: BERT's sizes are the three numbers they were, the widths default to the hidden size, and the
    relation_kl check and value are those of the hidden-size widths (against MiniLMv2's formula by hand)."""
    dims = model_dims(transformers.BertConfig(**SIZES))
    assert dims == ModelDims(32, 2, 4) and hash(dims) == hash(ModelDims(32, 2, 4))
    assert repr(dims) == repr(ModelDims(hidden_size=32, num_layers=2, num_attention_heads=4))
    assert [dims.qkv_width(qkv) for qkv in QKV] == [32, 32, 32]
    assert ModelDims(32, 2, 4, query_width=32, key_width=32, value_width=32) == dims  # one spelling of "H wide"
    assert replace(dims, num_layers=1).qkv_width("keys") == 32

    with pytest.raises(ConfigError, match=r"loss 'relation_kl', key 'relation_heads': 48 must divide each Q/K/V "
                                          r"width it re-splits: the student's width 32 and the teacher's width 32; "
                                          r"choose one of \[1, 2, 4, 8, 16, 32\]"):
        build_loss("relation_kl", dims={"student": dims, "teacher": dims})

    torch.manual_seed(0)
    student = transformers.AutoModel.from_config(transformers.BertConfig(**SIZES)).eval()
    teacher = transformers.AutoModel.from_config(transformers.BertConfig(**SIZES)).eval()
    loss = build_loss("relation_kl", dims={"student": dims, "teacher": dims}, relation_heads=8)
    s, t = captured(student), captured(teacher)
    value = loss(s, t)
    real = padded_batch()["attention_mask"].bool()
    for example in range(2):
        n = int(real[example].sum())
        expected = 0.0
        for qkv in QKV:
            rel = []
            for features in (t, s):  # 8 relation heads of 4 on each side
                x = getattr(features, qkv)[-1][example, :n].double().reshape(n, 8, 4).transpose(0, 1)
                rel.append(torch.softmax(x @ x.transpose(-1, -2) / math.sqrt(4), -1))
            expected += float((rel[0] * (rel[0].log() - rel[1].log())).sum() / (8 * n))
        assert value[example].item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize(("student", "teacher", "bad", "said"), [
    # 32 divides both hidden sizes (32) but not MobileBERT's 16-wide attention.
    ("mobilebert", "bert", 32, r"the student's width 16 and the teacher's width 32; choose one of \[1, 2, 4, 8, 16\]"),
    # 32 divides EuroBERT's queries, not its keys and values.
    ("eurobert", "bert", 32, r"the student's queries 32, keys 16, values 16 wide and the teacher's width 32; "
                             r"choose one of \[1, 2, 4, 8, 16\]"),
    # 16 divides the hidden sizes and EuroBERT's widths, not DeBERTa-v2's 24.
    ("eurobert", "deberta-v2-head-size", 16, r"the student's queries 32, keys 16, values 16 wide and the teacher's "
                                             r"width 24; choose one of \[1, 2, 4, 8\]"),
    ("deberta-v2-head-size", "bert", 16, r"the student's width 24 and the teacher's width 32"),
])
def test_relation_heads_that_do_not_divide_a_real_width_are_refused_at_build(student, teacher, bad, said):
    dims = {"student": model_dims(ALL_CONFIGS[student]()), "teacher": model_dims(ALL_CONFIGS[teacher]())}
    assert all(dims[side].hidden_size % bad == 0 for side in dims)  # the old check (hidden sizes) let it through
    with pytest.raises(ConfigError, match=r"loss 'relation_kl', key 'relation_heads': " + str(bad) + " must divide "
                                          r"each Q/K/V width it re-splits: " + said):
        build_loss("relation_kl", dims=dims, relation_heads=bad)


@pytest.mark.parametrize(("student", "teacher", "heads"), [
    ("mobilebert", "bert", 16), ("eurobert", "deberta-v2-head-size", 8), ("eurobert-head-dim", "mobilebert", 2),
    ("ultrabert-gqa", "gte-head-dim", 8),
])
def test_relation_kl_with_fitting_heads_runs_forward_and_backward_on_real_features(student, teacher, heads):
    student_model, teacher_model = encoder(student), encoder(teacher)
    loss = build_loss("relation_kl", dims={"student": model_dims(student_model.config),
                                           "teacher": model_dims(teacher_model.config)}, relation_heads=heads)
    request = loss.feature_request()
    value = loss(captured(student_model, grad=True, want=request["student"]),
                 captured(teacher_model, want=request["teacher"]))
    assert value.shape == (2,) and torch.isfinite(value).all() and (value > 0).all()
    value.sum().backward()
    grads = [p.grad for name, p in student_model.named_parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_preflight_refuses_relation_heads_by_the_widths_of_the_configs_and_keeps_them_on_a_cut(tmp_path):
    from pydantic import BaseModel

    from multidistill.config import LossTerm, ModelConfig, ObjectiveConfig
    from multidistill.recipes.config import StudentSection, TeacherSection
    from multidistill.recipes.preflight import check_feature_losses, encoder_dims

    class Settings(BaseModel):
        teacher: TeacherSection
        student: StudentSection

    transformers.BertConfig(**SIZES).save_pretrained(tmp_path / "teacher")
    ALL_CONFIGS["mobilebert"]().save_pretrained(tmp_path / "mobilebert")
    cut = encoder_dims(str(tmp_path / "mobilebert"), [0], False)
    assert (cut.num_layers, cut.qkv_width("queries"), cut.qkv_width("values")) == (1, 16, 16)

    def settings(heads: int) -> Settings:
        objective = ObjectiveConfig(classification=[LossTerm(loss="relation_kl", params={"relation_heads": heads})])
        return Settings(teacher=TeacherSection(model_dirs=[str(tmp_path / "teacher")]),
                        student=StudentSection(model=ModelConfig(name_or_path=str(tmp_path / "mobilebert")),
                                               objective=objective))

    check_feature_losses(settings(16))
    with pytest.raises(ConfigError, match=r"key 'student.objective': loss 'relation_kl', key 'relation_heads': 32 "
                                          r"must divide each Q/K/V width it re-splits: the student's width 16"):
        check_feature_losses(settings(32))


def test_stored_feature_manifests_without_widths_stay_readable():
    """A signal store's manifest records hidden_size, num_layers and num_attention_heads only (it holds hidden
    states, whatever the Q/K/V widths): old and new manifests read back to sizes whose widths are the hidden size."""
    entry = {"hidden_states": [0, 2], "dtype": "float16", "column": "teacher_hidden_states", "teachers": 1,
             "tokenizer": "abc", "tokenizer_source": "/t", "max_length": 16,
             "dims": {"hidden_size": 32, "num_layers": 2, "num_attention_heads": 4}}
    spec = FeatureSpec.from_manifest({"features": entry}, where=None)
    assert spec.dims == ModelDims(32, 2, 4) and spec.dims.qkv_width("keys") == 32
    narrow = replace(spec, dims=model_dims(ALL_CONFIGS["eurobert"]()))
    assert narrow.record() == entry  # the record is what it was: the widths are not written
    assert FeatureSpec.from_manifest({"features": narrow.record()}, where=None).width == spec.width
