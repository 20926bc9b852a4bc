"""Features from any encoder (models/extract.py, models/families.py): every family in the table against the model's
own outputs, on tiny random configs built here; the BiLSTM student's features; MultiTaskModel glue."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from multidistill.data.tasks import Task
from multidistill.errors import ConfigError
from multidistill.models import BiLSTMModel, BiLSTMSpec, MultiTaskModel
from multidistill.models.extract import ENCODER_FEATURES, extract_features
from multidistill.models.families import FAMILIES, family_of, model_dims
from multidistill.models.features import FEATURE_NAMES, EncoderFeatures, ModelDims

VOCAB, HIDDEN, LAYERS, HEADS = 40, 32, 2, 4
SIZES = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
         "intermediate_size": 64, "max_position_embeddings": 64}
CONFIGS = {
    "bert": lambda: transformers.BertConfig(**SIZES),
    "roberta": lambda: transformers.RobertaConfig(**SIZES, pad_token_id=1),
    "xlm-roberta": lambda: transformers.XLMRobertaConfig(**SIZES, pad_token_id=1),
    "camembert": lambda: transformers.CamembertConfig(**SIZES, pad_token_id=1),
    # A relative-position bias, shared by the layers, is part of the score.
    "mpnet": lambda: transformers.MPNetConfig(**SIZES, pad_token_id=1),
    # Distinct embedding size: ELECTRA projects its embeddings up to the hidden size.
    "electra": lambda: transformers.ElectraConfig(**SIZES, embedding_size=16),
    "distilbert": lambda: transformers.DistilBertConfig(vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS,
                                                        hidden_dim=64, max_position_embeddings=64),
    # Relative attention with both position terms, as DeBERTa-v3 checkpoints have.
    "deberta-v2": lambda: transformers.DebertaV2Config(**SIZES, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                                       position_buckets=8, type_vocab_size=0),
    # Layer 0 global, layer 1 local with a 4-token window (2 each side), narrower than the 9-token batch.
    "modernbert": lambda: transformers.ModernBertConfig(**SIZES, global_attn_every_n_layers=2, local_attention=4,
                                                        pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                                        cls_token_id=1, sep_token_id=2),
    # DeBERTa v1 as deberta-base: fused per-head in_proj plus q/v biases, both relative terms, no absolute positions.
    "deberta": lambda: transformers.DebertaConfig(**SIZES, relative_attention=True, pos_att_type=["c2p", "p2c"],
                                                  position_biased_input=False, type_vocab_size=0),
    # ERNIE 3.0's task-type embeddings on.
    "ernie": lambda: transformers.ErnieConfig(**SIZES, use_task_id=True, task_type_vocab_size=3),
    "data2vec-text": lambda: transformers.Data2VecTextConfig(**SIZES, pad_token_id=1),
    # Two language adapters; the second is the default (text batches carry no lang_ids).
    "xmod": lambda: transformers.XmodConfig(**SIZES, pad_token_id=1, languages=["en_XX", "de_DE"],
                                            default_language="de_DE"),
    "bert-generation": lambda: transformers.BertGenerationConfig(**SIZES, pad_token_id=0, bos_token_id=1,
                                                                 eos_token_id=2),
    "layoutlm": lambda: transformers.LayoutLMConfig(**SIZES),
    "roc_bert": lambda: transformers.RoCBertConfig(**SIZES, pronunciation_vocab_size=10, shape_vocab_size=10),
    "splinter": lambda: transformers.SplinterConfig(**SIZES, question_token_id=5),
    # Embeddings narrower than the hidden states, projected up.
    "rembert": lambda: transformers.RemBertConfig(**SIZES, input_embedding_size=16, output_embedding_size=16,
                                                  pad_token_id=0, bos_token_id=1, eos_token_id=2),
    # MobileBERT's layout: trigram embeddings, a shared Q/K bottleneck, attention 16 wide in 32-wide hidden states,
    # four feed-forward networks per layer.
    "mobilebert": lambda: transformers.MobileBertConfig(**SIZES, embedding_size=8, intra_bottleneck_size=16),
    "luke": lambda: transformers.LukeConfig(**SIZES, entity_vocab_size=10, entity_emb_size=16, pad_token_id=1),
    "ibert": lambda: transformers.IBertConfig(**SIZES, pad_token_id=1),
    # Pre-LayerNorm stacks.
    "roberta-prelayernorm": lambda: transformers.RobertaPreLayerNormConfig(**SIZES, pad_token_id=1),
    "xlm-roberta-xl": lambda: transformers.XLMRobertaXLConfig(**SIZES, pad_token_id=1),
    "megatron-bert": lambda: transformers.MegatronBertConfig(**SIZES),
    # ESM-2's layout: rotary positions and token dropout.
    "esm": lambda: transformers.EsmConfig(**SIZES, pad_token_id=1, mask_token_id=2, position_embedding_type="rotary",
                                          token_dropout=True),
    "roformer": lambda: transformers.RoFormerConfig(**SIZES),
    "big_bird": lambda: transformers.BigBirdConfig(**SIZES, attention_type="original_full", pad_token_id=0,
                                                   bos_token_id=1, eos_token_id=2, sep_token_id=3),
    "nomic_bert": lambda: transformers.NomicBertConfig(**SIZES),
    "gte": lambda: transformers.GteConfig(**SIZES, pad_token_id=1),
    "jina_embeddings_v3": lambda: transformers.JinaEmbeddingsV3Config(**SIZES, pad_token_id=1),
    # Grouped-query attention: 2 key/value heads for 4 query heads.
    "eurobert": lambda: transformers.EuroBertConfig(**SIZES, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                                                    eos_token_id=2, mask_token_id=3),
    "esmc": lambda: transformers.EsmcConfig(**SIZES),
    # Layer 0 full, layer 1 sliding with 2 tokens each side.
    "ultrabert": lambda: transformers.UltrabertConfig(**SIZES, sliding_window=2,
                                                      layer_types=["full_attention", "sliding_attention"]),
    "xlm": lambda: transformers.XLMConfig(vocab_size=VOCAB, emb_dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS,
                                          max_position_embeddings=64),
    "flaubert": lambda: transformers.FlaubertConfig(vocab_size=VOCAB, emb_dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS,
                                                    max_position_embeddings=64),
}
# The input of layer i's Q/K/V projections, from the model's hidden_states[i]: one tensor for all three, or
# (query, key, value) inputs. Pre-LayerNorm families normalise first; MobileBERT reads Q and K from a bottleneck.
ATTENTION_INPUT = {
    "modernbert": lambda layer, hidden: layer.attn_norm(hidden),
    "roberta-prelayernorm": lambda layer, hidden: layer.attention.LayerNorm(hidden),
    "xlm-roberta-xl": lambda layer, hidden: layer.attention.self_attn_layer_norm(hidden),
    "megatron-bert": lambda layer, hidden: layer.attention.ln(hidden),
    "esm": lambda layer, hidden: layer.attention.LayerNorm(hidden),
    **dict.fromkeys(("eurobert", "esmc", "ultrabert"), lambda layer, hidden: layer.input_layernorm(hidden)),
    "mobilebert": lambda layer, hidden: (layer.bottleneck.attention(hidden),) * 2 + (hidden,),
}
# Families whose score is not Q K^T / sqrt(d) of the Q/K features (docs/features.md): relative terms or biases,
# rotary Q and K.
NOT_SCALED_QK = {"mpnet", "deberta-v2", "deberta", "modernbert", "roformer", "esm", "nomic_bert", "gte",
                 "jina_embeddings_v3", "eurobert", "esmc", "ultrabert"}
# Families whose layer 1 is a sliding-window layer (layer 0 is global): tokens it sees on either side.
SLIDING = {"modernbert": 2, "ultrabert": 2}


def tiny_encoder(family: str) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(CONFIGS[family]()).eval()
    with torch.no_grad():  # DeBERTa v1's q/v biases start at zero: random ones make the Q/V check see them
        for name, parameter in model.named_parameters():
            if name.endswith(("attention.self.q_bias", "attention.self.v_bias")):
                parameter.normal_()
    # Transformers installs hooks of its own on the first forward that records hidden states or attentions;
    # run that once so that tests can check that extraction leaves exactly those behind.
    own_eager_output(model, padded_batch())
    return model


def padded_batch() -> dict[str, torch.Tensor]:
    """Two rows of 9 tokens, the second with 4 real tokens and 5 of padding."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, VOCAB, (2, 9), generator=generator)
    attention_mask = torch.ones(2, 9, dtype=torch.long)
    attention_mask[1, 4:] = 0
    input_ids[1, 4:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def hooks(model: nn.Module) -> dict[str, tuple]:
    """Every forward (pre-)hook on the model (transformers' own included: see `tiny_encoder`)."""
    return {name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks)) for name, m in model.named_modules()}


def own_eager_output(model: transformers.PreTrainedModel, batch: dict) -> transformers.utils.ModelOutput:
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        return model(**batch, output_hidden_states=True, output_attentions=True)
    finally:
        model.set_attn_implementation(previous)


def test_every_family_in_the_table_is_tested():
    assert set(FAMILIES) == set(CONFIGS)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_hidden_states_equal_the_models_own_and_nothing_else_is_computed(family, monkeypatch):
    model, batch = tiny_encoder(family), padded_batch()
    implementation, before = model.config._attn_implementation, hooks(model)
    # Hidden states alone never switch the attention path.
    monkeypatch.setattr(model, "set_attn_implementation", lambda *a, **k: pytest.fail("switched attention"))
    features = extract_features(model, **batch, want={"hidden_states"})
    expected = model(**batch, output_hidden_states=True).hidden_states
    assert len(features.hidden_states) == LAYERS + 1
    for ours, theirs in zip(features.hidden_states, expected, strict=True):
        assert torch.equal(ours, theirs)
    assert features.attention_scores is None and features.queries is None and features.keys is None
    assert features.values is None and features.logits is None and features.pooled is None
    assert features.dims == model_dims(model.config)
    assert (features.dims.hidden_size, features.dims.num_layers, features.dims.num_attention_heads) == \
        (HIDDEN, LAYERS, HEADS)
    assert torch.equal(features.attention_mask, batch["attention_mask"])
    assert model.config._attn_implementation == implementation and hooks(model) == before


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_softmax_of_the_scores_is_the_models_eager_attention_with_padding(family):
    model, batch = tiny_encoder(family), padded_batch()
    implementation, before = model.config._attn_implementation, hooks(model)
    features = extract_features(model, **batch, want={"attention_scores"})
    expected = own_eager_output(model, batch).attentions
    assert len(features.attention_scores) == LAYERS
    for scores, probs in zip(features.attention_scores, expected, strict=True):
        assert scores.shape == (2, HEADS, 9, 9)
        torch.testing.assert_close(torch.softmax(scores, dim=-1), probs, atol=1e-5, rtol=0)
        # Padded keys carry the model's very negative (finite) additive mask.
        assert torch.isfinite(scores).all() and (scores[1, :, :4, 4:] < -1e30).all()
    assert features.hidden_states is None and features.queries is None
    # SDPA (the default where the family supports it) is back, and no hook or capture mode is left.
    assert model.config._attn_implementation == implementation and hooks(model) == before
    assert torch._C._len_torch_function_stack() == 0


def expected_projections(family: str, layer: nn.Module, hidden: torch.Tensor) -> list[torch.Tensor]:
    """Q, K and V of one layer computed from its input by the modules the table names, as the attention does."""
    table = FAMILIES[family]
    inputs = ATTENTION_INPUT.get(family, lambda _, h: h)(layer, hidden)
    inputs = inputs if isinstance(inputs, tuple) else (inputs,) * 3
    if family == "deberta":  # one bias-free projection, head after head [q | k | v]; q and v biases added
        attention = layer.attention.self
        q, k, v = attention.in_proj(inputs[0]).view(2, 9, HEADS, -1).chunk(3, dim=-1)
        return [q.flatten(-2) + attention.q_bias, k.flatten(-2), v.flatten(-2) + attention.v_bias]
    if table.fused_qkv:
        return list(layer.get_submodule(table.fused_qkv)(inputs[0]).chunk(3, dim=-1))
    outputs = [layer.get_submodule(name)(x) for name, x in zip((table.query, table.key, table.value), inputs,
                                                                 strict=True)]
    return [out[0] if isinstance(out, tuple) else out for out in outputs]  # I-BERT's QuantLinear: (output, scale)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_queries_keys_values_are_the_projection_outputs(family):
    model, batch = tiny_encoder(family), padded_batch()
    before = hooks(model)
    features = extract_features(model, **batch, want={"queries", "keys", "values"})
    hidden = model(**batch, output_hidden_states=True).hidden_states
    layers = model.base_model.get_submodule(family_of(model.config).layers)
    for index, layer in enumerate(layers):
        expected = expected_projections(family, layer, hidden[index])
        for name, tensor in zip(("queries", "keys", "values"), expected, strict=True):
            ours = getattr(features, name)[index]
            # A * head size wide: the hidden size except for MobileBERT (16) and grouped K/V heads (EuroBERT's 16)
            assert ours.shape == tensor.shape and ours.shape[:2] == (2, 9)
            torch.testing.assert_close(ours, tensor, atol=1e-6, rtol=0)
    assert features.queries[0].shape[-1] == (16 if family == "mobilebert" else HIDDEN)
    assert features.attention_scores is None and features.hidden_states is None
    assert hooks(model) == before


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_scores_are_scaled_qk_only_where_the_docs_say_so(family):
    """BERT-style families score Q K^T / sqrt(d); DeBERTa adds relative terms, rotary families rotate Q and K."""
    model, batch = tiny_encoder(family), padded_batch()
    features = extract_features(model, **batch, want={"attention_scores", "queries", "keys"})
    real = batch["attention_mask"][:, None, None, :].bool().expand(2, HEADS, 9, 9)
    for index in range(LAYERS):
        q = features.queries[index].view(2, 9, HEADS, -1).transpose(1, 2)
        k = features.keys[index].view(2, 9, -1, q.shape[-1]).transpose(1, 2)
        k = k.repeat_interleave(HEADS // k.shape[1], dim=1)  # grouped key heads serve several query heads
        scaled = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_select(real)
        ours = features.attention_scores[index].masked_select(real)
        if family in NOT_SCALED_QK:
            assert not torch.allclose(ours, scaled, atol=1e-4)
        else:
            torch.testing.assert_close(ours, scaled, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", sorted(SLIDING))
def test_local_layers_mask_keys_beyond_the_window(family):
    model, batch = tiny_encoder(family), padded_batch()
    scores = extract_features(model, **batch, want={"attention_scores"}).attention_scores
    assert (scores[0][0] > -1e30).all()  # layer 0 is global: the full first row attends everywhere
    distance = (torch.arange(9)[:, None] - torch.arange(9)[None, :]).abs()
    assert ((scores[1][0] > -1e30) == (distance <= SLIDING[family])).all()  # layer 1: the window either side


@pytest.mark.parametrize("family", ["deberta-v2", "deberta"])
def test_deberta_masks_padded_rows_too(family):
    model, batch = tiny_encoder(family), padded_batch()
    scores = extract_features(model, **batch, want={"attention_scores"}).attention_scores
    assert (scores[0][1, :, 4:, :] < -1e30).all()  # padded queries: every key masked (uniform softmax)


def test_scores_carry_gradients_for_a_training_student():
    model = tiny_encoder("bert").train()
    features = extract_features(model, **padded_batch(), want={"attention_scores", "values"})
    loss = features.attention_scores[-1].clamp(min=-10).sum() + features.values[0].sum()
    loss.backward()
    assert model.encoder.layer[0].attention.self.query.weight.grad is not None


def test_hooks_mode_and_attention_path_are_restored_when_the_forward_fails():
    model, batch = tiny_encoder("bert"), padded_batch()

    def boom(module, args, output):
        raise RuntimeError("boom")

    before = hooks(model)
    # Raised inside layer 1's attention module, while its softmax capture is active.
    handle = model.encoder.layer[1].attention.self.value.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        extract_features(model, **batch, want=set(ENCODER_FEATURES))
    handle.remove()
    assert model.config._attn_implementation == "sdpa" and hooks(model) == before
    assert torch._C._len_torch_function_stack() == 0
    # and the model works as before
    torch.testing.assert_close(model(**batch).last_hidden_state,
                               tiny_encoder("bert")(**batch).last_hidden_state)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_every_family_takes_the_batches_segment_ids(family):
    """Training batches carry token_type_ids (zeros where the tokenizer gives none): extraction passes them only to
    models that use segments, so no family fails on them."""
    model, batch = tiny_encoder(family), padded_batch()
    features = extract_features(model, **batch, token_type_ids=torch.zeros_like(batch["input_ids"]),
                                want={"hidden_states"})
    assert features.hidden_states[-1].shape == (2, 9, HIDDEN)


def test_token_type_ids_reach_models_that_use_them_only():
    batch = padded_batch()
    types = torch.zeros_like(batch["input_ids"])
    types[0, 5:] = 1
    bert = tiny_encoder("bert")
    ours = extract_features(bert, **batch, token_type_ids=types, want={"hidden_states"}).hidden_states[-1]
    assert torch.equal(ours, bert(**batch, token_type_ids=types).last_hidden_state)
    # DistilBERT takes none: passing them is harmless.
    extract_features(tiny_encoder("distilbert"), **batch, token_type_ids=types, want={"hidden_states"})


def test_an_unknown_family_names_its_model_type_and_the_table():
    """A family in neither table (MarkupLM here) is asked for an entry; those that cannot have one (NO_FEATURES)
    are refused with the reason: tests/test_families_more.py."""
    markuplm = transformers.MarkupLMConfig(**SIZES)
    with pytest.raises(ConfigError, match=r"'markuplm'.*FAMILIES in multidistill/models/families.py"):
        model_dims(markuplm)
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="'markuplm'"):
        extract_features(transformers.AutoModel.from_config(markuplm), **padded_batch(), want={"hidden_states"})


def test_unknown_or_headless_feature_names_are_refused():
    model, batch = tiny_encoder("bert"), padded_batch()
    with pytest.raises(ConfigError, match=r"unknown feature name\(s\) \['attentions'\]"):
        extract_features(model, **batch, want={"attentions"})
    with pytest.raises(ConfigError, match=r"cannot give the feature\(s\) \['logits'\]"):
        extract_features(model, **batch, want={"logits"})


# Q/K/V widths (queries, keys, values) that are not HIDDEN: MobileBERT's 16-wide attention, EuroBERT's 2 key/value
# heads (tests/test_qkv_widths.py checks them against the captured tensors).
QKV_WIDTHS = {"mobilebert": (16, 16, 16), "eurobert": (HIDDEN, 16, 16)}


def test_model_dims_read_each_familys_config_keys():
    for family in CONFIGS:
        query, key, value = QKV_WIDTHS.get(family, (HIDDEN,) * 3)
        assert model_dims(CONFIGS[family]()) == ModelDims(HIDDEN, LAYERS, HEADS, query_width=query, key_width=key,
                                                          value_width=value)


# --- the models' own feature methods ----------------------------------------------------------

SENT = Task(name="sent", type="classification", labels=["0", "1"], metrics=["accuracy"], files={})
PAIR = Task(name="pair", type="classification", labels=["a", "b", "c"], pair=True, metrics=["accuracy"], files={})


def test_multitask_model_features_fill_logits_and_pooled_from_one_forward():
    model = MultiTaskModel(tiny_encoder("bert"), [SENT], pooling="mean").eval()
    batch = padded_batch()
    features = model.features("sent", **batch, want=set(FEATURE_NAMES))
    output = model("sent", **batch, output_hidden_states=True)
    # Scores need the eager path, whose numbers differ from SDPA's in the last bits.
    torch.testing.assert_close(features.logits, output.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(features.pooled, output.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(features.hidden_states[-1], output.hidden_states[-1], atol=1e-5, rtol=0)
    sdpa = model.features("sent", **batch, want={"logits", "pooled"})
    assert torch.equal(sdpa.logits, output.logits) and torch.equal(sdpa.pooled, output.pooled)
    assert len(features.attention_scores) == LAYERS and features.values[0].shape == (2, 9, HIDDEN)
    assert model.model_dims() == ModelDims(HIDDEN, LAYERS, HEADS)
    only = model.features(None, **batch, want={"pooled"})
    assert torch.equal(only.pooled, output.pooled) and only.logits is None and only.hidden_states is None
    with pytest.raises(ConfigError, match="'logits' feature needs a task"):
        model.features(None, **batch, want={"logits"})


@pytest.fixture
def bilstm() -> BiLSTMModel:
    torch.manual_seed(0)
    spec = BiLSTMSpec(embedding_dim=16, hidden_size=8, mlp_hidden=12)
    return BiLSTMModel(spec, [SENT, PAIR], vocab_size=VOCAB, pad_token_id=0, sep_token_id=3).eval()


def test_bilstm_gives_its_hidden_states_logits_and_pooled(bilstm):
    batch = padded_batch()
    batch["input_ids"][0, 4] = 3  # a separator: the pair task encodes two texts
    for task in ("sent", "pair"):
        features = bilstm.features(task, **batch, want={"hidden_states", "logits", "pooled"})
        output = bilstm(task, **batch)
        assert torch.equal(features.logits, output.logits) and torch.equal(features.pooled, output.pooled)
        embedded, lstm = features.hidden_states
        assert embedded.shape == (2, 9, 16) and lstm.shape == (2, 9, 16)
        assert (embedded[1, 4:] == 0).all() and (lstm[1, 4:] == 0).all()
        # Every real token has its LSTM output (for the pair task: the second text's too).
        assert (lstm[0].abs().sum(-1) > 0).all()
    single = bilstm.features(None, **batch, want={"hidden_states"})
    assert torch.equal(single.hidden_states[1], bilstm("sent", **batch).last_hidden_state)
    assert single.logits is None and single.pooled is None
    assert bilstm.model_dims() == ModelDims(hidden_size=16, num_layers=1, num_attention_heads=0, embedding_size=16)


@pytest.mark.parametrize("loss", ["hidden_mse", "cosine_hidden"])
def test_hidden_losses_on_a_bilstm_whose_embeddings_are_narrower_than_its_lstm(loss):
    """The default map includes hidden state 0, a BiLSTM's word embeddings (embedding_dim wide, 300 by default),
    while its LSTM output is 2 x hidden_size (600): one projection sized from the LSTM crashed on layer 0
    ("mat1 and mat2 shapes cannot be multiplied"); layer 0 gets its own."""
    from multidistill.losses import build_loss

    torch.manual_seed(0)
    student = BiLSTMModel(BiLSTMSpec(embedding_dim=6, hidden_size=8, mlp_hidden=12), [SENT], vocab_size=VOCAB,
                          pad_token_id=0, sep_token_id=3)
    teacher_dims = ModelDims(hidden_size=HIDDEN, num_layers=LAYERS, num_attention_heads=HEADS)
    term = build_loss(loss, dims={"student": student.model_dims(), "teacher": teacher_dims})
    assert term.layer_map[0] == (0, 0)
    assert term.embedding_projection.in_features == 6 and term.projection.in_features == 16
    batch = padded_batch()
    features = student.features("sent", **batch, want={"hidden_states"})
    teacher = EncoderFeatures(attention_mask=features.attention_mask, dims=teacher_dims, hidden_states=tuple(
        torch.randn(2, 9, HIDDEN) for _ in range(LAYERS + 1)))
    values = term(features, teacher)
    assert values.shape == (2,) and torch.isfinite(values).all()
    values.sum().backward()
    assert term.embedding_projection.weight.grad.abs().sum() > 0
    # Without a projection the widths cannot be compared: refused by layer, at build time.
    with pytest.raises(ConfigError, match=r"student layer \d is \d+ wide and teacher layer \d \d+"):
        build_loss(loss, dims={"student": student.model_dims(), "teacher": teacher_dims}, projection=False)


@pytest.mark.parametrize("name", ["attention_scores", "queries", "keys", "values"])
def test_bilstm_refuses_attention_features_by_name(bilstm, name):
    with pytest.raises(ConfigError, match=rf"BiLSTM student.*no self-attention.*\['{name}'\]"):
        bilstm.features("sent", **padded_batch(), want={"hidden_states", name})


def test_bilstm_refuses_domain_branch_features_called_as_the_objective_calls_it(bilstm):
    # The objective hands domain ids to any student whose terms read the domain branch (transferable_mse):
    # a BiLSTM has no branch, which must be a clear error, not a TypeError about an unexpected argument.
    with pytest.raises(ConfigError, match=r"BiLSTM student.*\['transferable'\]"):
        bilstm("sent", **padded_batch(), want={"transferable"}, domain_ids=torch.zeros(2, dtype=torch.long))


def test_a_model_that_stays_on_sdpa_is_a_clear_error_not_missing_scores(monkeypatch):
    model = tiny_encoder("bert")
    monkeypatch.setattr(model, "set_attn_implementation", lambda *a, **k: None)  # as for a model that cannot switch
    with pytest.raises(RuntimeError, match="called softmax 0 times, expected once: the model must run eager"):
        extract_features(model, **padded_batch(), want={"attention_scores"})
    assert torch._C._len_torch_function_stack() == 0


def test_attention_losses_between_global_and_sliding_window_layers_are_finite():
    """A ModernBERT student (layers: global, local) against a 4-layer teacher (global, local, local, global): the
    uniform map pairs a global layer with a local one, whose scores hold the dtype's minimum outside the window."""
    from multidistill.losses import build_loss

    config = dict(vocab_size=60, hidden_size=16, intermediate_size=32, num_attention_heads=2, local_attention=4,
                  pad_token_id=0)
    torch.manual_seed(0)
    teacher = transformers.AutoModel.from_config(transformers.ModernBertConfig(num_hidden_layers=4, **config)).eval()
    student = transformers.AutoModel.from_config(transformers.ModernBertConfig(num_hidden_layers=2, **config)).eval()
    ids, mask = torch.randint(5, 60, (2, 12)), torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0
    for name in ("attention_mse", "attention_kl"):
        loss = build_loss(name, dims={"student": model_dims(student.config), "teacher": model_dims(teacher.config)})
        assert loss.layer_map == ((1, 2), (2, 4))  # global-local, then local-global
        s = extract_features(student, ids, mask, want={"attention_scores": loss.student_layers})
        t = extract_features(teacher, ids, mask, want={"attention_scores": loss.teacher_layers})
        values = loss(s, t)
        assert torch.isfinite(values).all() and (values > 0).all() and (values < 10).all()


def test_students_cut_from_families_with_per_layer_settings_or_shared_layers():
    """Longformer's attention_window (one per layer) did not shrink with the stack: a raw AssertionError from its
    config; ALBERT (one shared layer) and Funnel (blocks) failed with a raw NotImplementedError or "cannot find
    the layers". Longformer is cut; the other two are refused with the reason and what to do instead."""
    from multidistill.errors import ModelError
    from multidistill.models.layers import keep_layers

    longformer = transformers.AutoModel.from_config(transformers.LongformerConfig(
        **SIZES, attention_window=[4, 8], pad_token_id=1))
    student = keep_layers(longformer, [1])
    assert student.config.attention_window == [8] and student.config.num_hidden_layers == 1
    albert = transformers.AutoModel.from_config(transformers.AlbertConfig(**SIZES, embedding_size=16))
    funnel = transformers.FunnelModel(transformers.FunnelConfig(  # AutoModel cannot pick among Funnel's two classes
        vocab_size=VOCAB, block_sizes=[1, 1], d_model=HIDDEN, n_head=HEADS, d_head=8, d_inner=64))
    for model, reason in ((albert, "shares one layer's weights"), (funnel, "groups its layers")):
        with pytest.raises(ModelError, match=rf"cannot be cut: .*{reason}.*model.backbone_config"):
            keep_layers(model, [0])


@pytest.mark.parametrize("family", ["roberta", "xlm-roberta", "camembert", "mpnet", "data2vec-text", "xmod",
                                    "roberta-prelayernorm", "ibert", "xlm-roberta-xl", "luke"])
def test_position_limits_leave_out_the_padding_offset_of_roberta_style_positions(family):
    """MPNet numbers positions from pad + 1 as RoBERTa does; its limit was said to be 2 more than it is, so a
    max_seq_length at the table's size passed the checks and failed at step 0 with an IndexError."""
    from multidistill.models.backbone import max_positions

    model = tiny_encoder(family)
    limit = max_positions(model.config)
    assert limit == model.config.max_position_embeddings - 2
    ids = torch.randint(3, VOCAB, (1, limit))
    model(input_ids=ids, attention_mask=torch.ones_like(ids))  # the longest input it takes runs
    with pytest.raises((IndexError, RuntimeError), match="out of"):  # one more token overruns the table
        model(input_ids=torch.randint(3, VOCAB, (1, limit + 1)))
