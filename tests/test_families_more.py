"""The family table's refusals (models/families.py): encoder families whose features cannot be read are refused with
the reason, and configs without a value a family needs are refused by key, before a model runs or trains.
(Each family in the table is checked against its model's own outputs in tests/test_features.py.)"""

from __future__ import annotations

import pytest
import torch
import transformers

from multidistill.errors import ConfigError
from multidistill.models.extract import extract_features
from multidistill.models.families import FAMILIES, NO_FEATURES, model_dims

SIZES = {"vocab_size": 40, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64, "max_position_embeddings": 64}


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(4, 40, (2, 9), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_the_refused_families_are_real_and_not_in_the_table():
    assert not set(NO_FEATURES) & set(FAMILIES)
    assert set(NO_FEATURES) <= set(transformers.CONFIG_MAPPING)
    assert set(FAMILIES) <= set(transformers.CONFIG_MAPPING)


@pytest.mark.parametrize("model_type", sorted(NO_FEATURES))
def test_a_family_without_readable_features_is_refused_with_the_reason(model_type):
    with pytest.raises(ConfigError) as info:
        model_dims(transformers.AutoConfig.for_model(model_type))
    message = str(info.value)
    assert f"cannot read a '{model_type}' encoder: {NO_FEATURES[model_type]}" in message
    assert "add an EncoderFamily entry" not in message  # no entry could describe it


def test_the_refusal_comes_when_the_objective_reads_the_sizes_before_training():
    """The training stage builds its objective from `model_dims()` of the student and the online teachers before its
    first step (training/run.py): that is where a family without features is refused."""
    from multidistill.data.tasks import Task
    from multidistill.models import MultiTaskModel
    from multidistill.teachers.online import teacher_dims

    torch.manual_seed(0)
    longformer = transformers.AutoModel.from_config(transformers.LongformerConfig(
        **SIZES, attention_window=[4, 4], pad_token_id=1))
    student = MultiTaskModel(longformer, [Task(name="sent", labels=["0", "1"])])
    for read in (student.model_dims, lambda: teacher_dims(longformer)):
        with pytest.raises(ConfigError, match=r"cannot read a 'longformer' encoder: .*band of neighbouring keys"):
            read()
    with pytest.raises(ConfigError, match="'longformer'"):
        extract_features(longformer, **_batch(), want={"hidden_states"})


@pytest.mark.parametrize(("config", "message"), [
    (lambda: transformers.BigBirdConfig(**SIZES, attention_type="block_sparse"),
     r"'big_bird' encoder: its config's attention_type is 'block_sparse', and its features need 'original_full': "
     r".*checkpoint's config.json"),
    (lambda: transformers.XmodConfig(**SIZES, pad_token_id=1),
     r"'xmod' encoder: its config's default_language is None, and its features need a value: .*config.languages"),
    (lambda: transformers.IBertConfig(**SIZES, pad_token_id=1, quant_mode=True),
     r"'ibert' encoder: its config's quant_mode is True, and its features need False: .*integer approximation"),
    (lambda: transformers.FlaubertConfig(vocab_size=40, emb_dim=32, n_layers=2, n_heads=4, layerdrop=0.2),
     r"'flaubert' encoder: its config's layerdrop is 0.2, and its features need 0 or 0.0: .*skips random layers"),
], ids=["big_bird", "xmod", "ibert", "flaubert"])
def test_a_config_without_a_value_its_family_needs_is_refused_by_key(config, message):
    config = config()
    with pytest.raises(ConfigError, match=message):
        model_dims(config)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config).eval()
    with pytest.raises(ConfigError, match=message):  # before the model runs: no hook, no capture mode left
        extract_features(model, **_batch(), want={"hidden_states", "attention_scores", "queries"})
    assert torch._C._len_torch_function_stack() == 0
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())

