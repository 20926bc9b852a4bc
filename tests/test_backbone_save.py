"""Every encoder family in the feature table, loaded from a saved folder as a user's checkpoint is, saves again
through safetensors: transformers' loading splits some families' fused tensors (GTE, NomicBERT, Jina-v3) into
views of one storage, which `save_model` refuses, so a run's first checkpoint failed."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_model, save_model

from multidistill.models.backbone import backbone_from_config, load_backbone
from tests.test_features import CONFIGS


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_a_loaded_encoder_saves_and_reloads_the_same(family, tmp_path):
    torch.manual_seed(0)
    backbone_from_config(CONFIGS[family]()).save_pretrained(tmp_path / "saved")
    model = load_backbone(str(tmp_path / "saved")).eval()
    save_model(model, str(tmp_path / "again.safetensors"))
    reloaded = backbone_from_config(model.config).eval()
    load_model(reloaded, str(tmp_path / "again.safetensors"))
    ids = torch.randint(5, 30, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).last_hidden_state, reloaded(input_ids=ids).last_hidden_state)


def test_an_xmod_checkpoint_without_a_default_language_is_refused_when_loaded(tmp_path):
    """X-MOD needs lang_ids or a default_language on every forward; text batches carry none, so such a checkpoint
    failed on its first batch inside transformers ('Input language unknown'). Refused by name when loaded, and by
    the feature table (`family_of`) where only its config is read."""
    from multidistill.errors import ConfigError, ModelError
    from multidistill.models.families import family_of

    config = CONFIGS["xmod"]()
    config.default_language = None
    backbone_from_config(CONFIGS["xmod"]()).save_pretrained(tmp_path / "xmod")
    config.save_pretrained(tmp_path / "xmod")  # the same weights, the config without its default
    with pytest.raises(ModelError, match=r"its config's default_language is None, and it needs a value: X-MOD"):
        load_backbone(str(tmp_path / "xmod"))
    with pytest.raises(ConfigError, match=r"cannot read this 'xmod' encoder: its config's default_language is "
                                          r"None, and its features need a value"):
        family_of(config)
