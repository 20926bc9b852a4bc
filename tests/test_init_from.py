"""`model.init_from` brings a saved model's architecture: settings beside it that agree (or are left at their
default) pass, settings that contradict it are refused by key instead of being ignored."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from multidistill.config import ModelConfig
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError
from multidistill.models import MultiTaskModel
from multidistill.models.bilstm import BiLSTMModel, BiLSTMSpec
from multidistill.models.build import build_model

SENT = Task(name="sent", labels=["neg", "pos"])


@pytest.fixture(scope="module")
def saved_transformer(tiny_model_dir, tmp_path_factory):
    """A 2-layer mean-pooled model with head dropout 0.2, saved."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("saved") / "model"
    model = MultiTaskModel.from_backbone(str(tiny_model_dir), [SENT], pooling="mean", dropout=0.2)
    model.save_pretrained(folder, AutoTokenizer.from_pretrained(tiny_model_dir))
    return folder


def _config(tiny_model_dir, folder, **settings) -> ModelConfig:
    return ModelConfig(name_or_path=str(tiny_model_dir), init_from=str(folder), **settings)


@pytest.mark.parametrize("settings", [
    {},  # every setting at its default: the saved model as it is (Meta-KD's stage B)
    {"pooling": "mean", "dropout": 0.2, "student_layers": [0, 2]},  # a student's whole config copied (MKD fine-tune)
    {"backbone_config": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2}},
    {"backbone_config": {"num_hidden_layers": 6}, "student_layers": [1, 4]},  # built with 6, cut to 2
])
def test_settings_that_agree_with_the_saved_model_pass(tiny_model_dir, saved_transformer, settings):
    model = build_model(_config(tiny_model_dir, saved_transformer, **settings), [SENT])
    assert model.pooling == "mean" and model.dropout == 0.2


@pytest.mark.parametrize(("settings", "message"), [
    ({"dropout": 0.3}, r"key 'model.dropout': 0.3, but model.init_from .* dropout 0.2"),
    ({"student_layers": [0]}, r"key 'model.student_layers': \[0\] keeps 1 layer, .* of 2 layers"),
    ({"backbone_config": {"hidden_size": 64}}, r"key 'model.backbone_config.hidden_size': 64, .* 32"),
    ({"backbone_config": {"model_type": "roberta"}}, r"key 'model.backbone_config.model_type': 'roberta'"),
])
def test_settings_that_contradict_the_saved_model_are_refused(tiny_model_dir, saved_transformer, settings, message):
    with pytest.raises(ConfigError, match=message):
        build_model(_config(tiny_model_dir, saved_transformer, **settings), [SENT])


def test_a_pooling_other_than_the_saved_one_is_refused(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone(str(tiny_model_dir), [SENT], pooling="cls")
    model.save_pretrained(tmp_path / "cls", AutoTokenizer.from_pretrained(tiny_model_dir))
    with pytest.raises(ConfigError, match="key 'model.pooling': 'mean', .* pooling 'cls'"):
        build_model(_config(tiny_model_dir, tmp_path / "cls", pooling="mean"), [SENT])


def test_a_bilstm_setting_is_checked_against_the_saved_bilstm(tiny_model_dir, tmp_path):
    spec = BiLSTMSpec(embedding_dim=16, hidden_size=8, mlp_hidden=12, init_embeddings=False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    BiLSTMModel.from_tokenizer(spec, [SENT], tokenizer).save_pretrained(tmp_path / "lstm", tokenizer)
    folder = tmp_path / "lstm"
    assert isinstance(build_model(_config(tiny_model_dir, folder, architecture="bilstm", bilstm=spec), [SENT]),
                      BiLSTMModel)
    assert isinstance(build_model(_config(tiny_model_dir, folder), [SENT]), BiLSTMModel)
    wider = spec.model_copy(update={"hidden_size": 16})
    with pytest.raises(ConfigError, match="key 'model.bilstm': .*'hidden_size': 16.* 'hidden_size': 8"):
        build_model(_config(tiny_model_dir, folder, architecture="bilstm", bilstm=wider), [SENT])
    with pytest.raises(ConfigError, match="key 'model.architecture': 'bilstm', .* architecture 'hf'"):
        build_model(_config(tiny_model_dir, _saved_plain(tiny_model_dir, tmp_path), architecture="bilstm",
                            bilstm=spec), [SENT])


def _saved_plain(tiny_model_dir, tmp_path):
    """A Transformer model with every setting at its default, saved."""
    model = MultiTaskModel.from_backbone(str(tiny_model_dir), [SENT])
    model.save_pretrained(tmp_path / "hf", AutoTokenizer.from_pretrained(tiny_model_dir))
    return tmp_path / "hf"
