"""Students cut from a teacher's layers (DistilBERT-style), for several encoder families."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig

from multidistill.errors import ModelError
from multidistill.models.backbone import backbone_from_config
from multidistill.models.layers import every_kth_layer, keep_layers, layer_list_name, num_layers

SIZES = {"vocab_size": 60, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
         "intermediate_size": 64, "max_position_embeddings": 40}
FAMILIES = [
    {"model_type": "bert"},
    {"model_type": "distilbert", "dim": 32, "n_layers": 4, "n_heads": 2, "hidden_dim": 64},
    {"model_type": "roberta", "type_vocab_size": 1, "pad_token_id": 1},
    {"model_type": "electra", "embedding_size": 16},
    {"model_type": "deberta", "relative_attention": True, "pos_att_type": ["c2p", "p2c"], "type_vocab_size": 0},
    {"model_type": "ernie", "use_task_id": True},
    {"model_type": "data2vec-text", "pad_token_id": 1},
    {"model_type": "xmod", "pad_token_id": 1, "default_language": "en_XX"},
    {"model_type": "bert-generation"},
    {"model_type": "layoutlm"},
    {"model_type": "roc_bert", "pronunciation_vocab_size": 10, "shape_vocab_size": 10},
    {"model_type": "splinter", "question_token_id": 5},
    {"model_type": "rembert", "input_embedding_size": 16, "output_embedding_size": 16},
    {"model_type": "mobilebert", "embedding_size": 8, "intra_bottleneck_size": 16},
    {"model_type": "luke", "entity_vocab_size": 10, "entity_emb_size": 16, "pad_token_id": 1},
    {"model_type": "ibert", "pad_token_id": 1},
    {"model_type": "roberta-prelayernorm", "pad_token_id": 1},
    {"model_type": "xlm-roberta-xl", "pad_token_id": 1},
    {"model_type": "megatron-bert"},
    {"model_type": "roformer"},
    {"model_type": "big_bird", "attention_type": "original_full"},
    {"model_type": "nomic_bert"},
    {"model_type": "gte", "pad_token_id": 1},
    {"model_type": "jina_embeddings_v3", "pad_token_id": 1},
    {"model_type": "eurobert", "num_key_value_heads": 1, "pad_token_id": 0},
    {"model_type": "esmc"},
    # Per-layer layer_types (sliding, sliding, full, sliding by default): see the test below.
    {"model_type": "ultrabert", "sliding_window": 2},
    # Each layer's parts sit in parallel lists (attentions, ffns, layer norms).
    {"model_type": "xlm", "pad_token_id": 0},
    {"model_type": "flaubert", "pad_token_id": 0},
]


def _encoder(spec: dict):
    torch.manual_seed(0)
    return backbone_from_config(AutoConfig.for_model(**{**SIZES, **spec})).eval()


def _inputs():
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 11, 12, 2, 3, 3]])
    return ids, torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


@pytest.mark.parametrize("spec", FAMILIES, ids=[s["model_type"] for s in FAMILIES])
def test_keeping_every_layer_reproduces_the_teacher(spec):
    teacher = _encoder(spec)
    student = keep_layers(teacher, [0, 1, 2, 3]).eval()
    ids, mask = _inputs()
    assert torch.equal(teacher(input_ids=ids, attention_mask=mask).last_hidden_state,
                       student(input_ids=ids, attention_mask=mask).last_hidden_state)


@pytest.mark.parametrize("spec", FAMILIES, ids=[s["model_type"] for s in FAMILIES])
def test_chosen_layers_are_copied_in_order(spec):
    teacher = _encoder(spec)
    student = keep_layers(teacher, [1, 3])
    assert num_layers(student) == 2 and num_layers(teacher) == 4
    name = layer_list_name(teacher)
    t_layers, s_layers = teacher.get_submodule(name), student.get_submodule(name)
    for s_index, t_index in enumerate([1, 3]):
        for (key, s_param), t_param in zip(s_layers[s_index].state_dict().items(),
                                           t_layers[t_index].state_dict().values(), strict=True):
            assert torch.equal(s_param, t_param), key
    assert torch.equal(student.get_input_embeddings().weight, teacher.get_input_embeddings().weight)
    ids, mask = _inputs()
    assert student(input_ids=ids, attention_mask=mask).last_hidden_state.shape == (2, 6, 32)


@pytest.mark.parametrize("model_type", ["xlm", "flaubert"])
def test_parallel_lists_keep_the_same_layers_as_the_attentions(model_type):
    """XLM and FlauBERT keep each layer's feed-forward and norms in lists beside `attentions`: a student of layers
    [1, 3] took attentions 1 and 3 but ffns and norms 0 and 1 (the load matched by position), silently."""
    teacher = _encoder({"model_type": model_type, "pad_token_id": 0})
    student = keep_layers(teacher, [1, 3])
    assert layer_list_name(teacher) == "attentions"
    for name in ("attentions", "layer_norm1", "ffns", "layer_norm2"):
        for s_index, t_index in enumerate([1, 3]):
            for key, value in student.get_submodule(name)[s_index].state_dict().items():
                assert torch.equal(value, teacher.get_submodule(name)[t_index].state_dict()[key]), (name, key)
    full = keep_layers(teacher, [0, 1, 2, 3]).eval()
    ids, mask = _inputs()
    assert torch.equal(full(input_ids=ids, attention_mask=mask).last_hidden_state,
                       teacher(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_a_student_keeps_its_layers_kinds_of_attention():
    teacher = _encoder({"model_type": "ultrabert", "sliding_window": 2})
    assert teacher.config.layer_types == ["sliding_attention", "sliding_attention", "full_attention",
                                          "sliding_attention"]
    student = keep_layers(teacher, [1, 2])
    assert student.config.layer_types == ["sliding_attention", "full_attention"]
    assert student.layers[1].self_attn.sliding_window is None and student.layers[0].self_attn.sliding_window == 3


def test_esm_is_refused_because_its_contact_head_reads_every_layer():
    """Cut, ESM's contact head (one input per layer and head) no longer fitted: a raw size-mismatch RuntimeError."""
    esm = _encoder({"model_type": "esm", "pad_token_id": 1, "mask_token_id": 2})
    with pytest.raises(ModelError, match=r"'esm' encoder cannot be cut: .*contact-prediction head.*backbone_config"):
        keep_layers(esm, [0, 2])


@pytest.mark.parametrize("layers", [[], [0, 0], [2, 1], [4], [-1]])
def test_bad_layer_lists_are_refused(layers):
    with pytest.raises(ModelError, match="student_layers"):
        keep_layers(_encoder({"model_type": "bert"}), layers)


def test_every_kth_layer_keeps_the_top_layer():
    assert every_kth_layer(6, 2) == [1, 3, 5]
    assert every_kth_layer(12, 3) == [2, 5, 8, 11]
    assert every_kth_layer(4, 1) == [0, 1, 2, 3]


def test_speed_comparison_reports_a_smaller_model_as_faster():
    from datasets import Dataset

    from multidistill.data.tasks import BUILTIN_TASKS
    from multidistill.evaluation.speed import compare_speed, torch_forward
    from multidistill.models import MultiTaskModel

    task = BUILTIN_TASKS["sst2"]
    big = MultiTaskModel(_encoder({"model_type": "bert", "hidden_size": 128, "intermediate_size": 512,
                                   "num_hidden_layers": 4}), [task])
    small = MultiTaskModel(keep_layers(_encoder({"model_type": "bert"}), [3]), [task])
    rows = Dataset.from_dict({"id": [str(i) for i in range(64)], "label": [0] * 64,
                              "input_ids": [[2, *range(5, 40), 3]] * 64, "attention_mask": [[1] * 37] * 64})
    torch.set_num_threads(1)
    result = compare_speed({"big": (torch_forward(big, task), rows, 0), "small": (torch_forward(small, task), rows, 0)},
                           task, rounds=3, latency_runs=9, throughput_batches=2)
    assert result["small"].throughput_examples_per_s > result["big"].throughput_examples_per_s
    assert result["small"].latency_ms_median < result["big"].latency_ms_median
    assert result["big"].latency_runs == 9 and result["big"].latency_ms_p95 >= result["big"].latency_ms_median


# --- model.heads_from: a student cut from a trained teacher starts from the teacher's heads ------------------

def _saved_teacher(tiny_model_dir, tmp_path, tasks):
    from transformers import AutoTokenizer

    from multidistill.models import MultiTaskModel

    torch.manual_seed(3)
    teacher = MultiTaskModel.from_backbone(str(tiny_model_dir), tasks, pooling="mean")
    teacher.save_pretrained(tmp_path / "teacher", AutoTokenizer.from_pretrained(tiny_model_dir))
    return teacher, tmp_path / "teacher"


def test_heads_from_copies_the_teachers_heads_into_a_layer_cut_student(tiny_model_dir, tmp_path):
    from multidistill.config import ModelConfig
    from multidistill.data.tasks import BUILTIN_TASKS
    from multidistill.models.build import build_model

    tasks = [BUILTIN_TASKS["sst2"], BUILTIN_TASKS["stsb"]]
    teacher, folder = _saved_teacher(tiny_model_dir, tmp_path, tasks)
    config = {"name_or_path": str(folder), "student_layers": [1], "pooling": "mean"}
    student = build_model(ModelConfig(**config, heads_from=str(folder)), tasks)
    fresh = build_model(ModelConfig(**config), tasks)
    for name in ("sst2", "stsb"):
        for key, value in teacher.heads[name].state_dict().items():
            assert torch.equal(student.heads[name].state_dict()[key], value), (name, key)
            assert not torch.equal(fresh.heads[name].state_dict()[key], value), (name, key)
    assert num_layers(student.backbone) == 1


def test_heads_from_refuses_a_model_without_the_task_or_with_another_head(tiny_model_dir, tmp_path):
    from multidistill.config import ModelConfig
    from multidistill.data.tasks import BUILTIN_TASKS
    from multidistill.errors import ConfigError
    from multidistill.models.build import build_model

    _, folder = _saved_teacher(tiny_model_dir, tmp_path, [BUILTIN_TASKS["sst2"]])
    config = ModelConfig(name_or_path=str(folder), heads_from=str(folder))
    with pytest.raises(ConfigError, match="heads_from.*no head for task 'stsb'"):
        build_model(config, [BUILTIN_TASKS["sst2"], BUILTIN_TASKS["stsb"]])
    three_way = BUILTIN_TASKS["sst2"].model_copy(update={"labels": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match="heads_from.*3 outputs here"):
        build_model(config, [three_way])


@pytest.mark.parametrize("extra", [{"architecture": "bilstm"}, {"init_from": "runs/x/model"}])
def test_heads_from_is_refused_where_it_cannot_apply(extra):
    from pydantic import ValidationError

    from multidistill.config import ModelConfig

    with pytest.raises(ValidationError, match="heads_from needs a Transformer"):
        ModelConfig(name_or_path="teacher", heads_from="teacher", **extra)
