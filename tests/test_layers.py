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
