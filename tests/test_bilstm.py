"""BiLSTMModel (the MKD student): forward passes per task kind, segment handling, padding invariance,
embedding initialisation, persistence and loading any model folder by kind."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from multidistill.data.tasks import Task
from multidistill.errors import ModelError, UnknownTaskError
from multidistill.losses import HardLoss
from multidistill.models import BiLSTMModel, BiLSTMSpec, MultiTaskModel, load_model
from tests.conftest import write_tiny_tasks

SPEC = BiLSTMSpec(embedding_dim=16, hidden_size=8, mlp_hidden=12, dropout=0.1)
SENT = Task(name="sent", type="classification", labels=["0", "1"], metrics=["accuracy"], files={})
PAIR = Task(name="pair", type="classification", labels=["a", "b", "c"], pair=True, metrics=["accuracy"], files={})
REG = Task(name="reg", type="regression", pair=True, metrics=["pearson"], files={})
TASKS = [SENT, PAIR, REG]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def model(tokenizer) -> BiLSTMModel:
    torch.manual_seed(0)
    return BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer).eval()


def model_vocab(tokenizer) -> int:
    """Ids the tokenizer can emit (the tiny vocabulary lists "a" twice, so one id is beyond len())."""
    return max(tokenizer.get_vocab().values()) + 1


def _single(tokenizer, texts=("the movie was great", "bad", "a very boring plot and it was the worst")):
    return tokenizer(list(texts), padding=True, return_tensors="pt")


def _pairs(tokenizer, firsts=("the movie was great", "bad film"), seconds=("it is fun", "a very dull and boring plot")):
    return tokenizer(list(firsts), list(seconds), padding=True, return_tensors="pt")


def _pad_to(ids: torch.Tensor, mask: torch.Tensor, width: int, pad_id: int):
    extra = width - ids.shape[1]
    return (torch.cat([ids, torch.full((ids.shape[0], extra), pad_id)], 1),
            torch.cat([mask, torch.zeros(mask.shape[0], extra, dtype=mask.dtype)], 1))


def test_spec_validates_sizes():
    assert BiLSTMSpec().hidden_size == 300
    for bad in ({"num_layers": 3}, {"hidden_size": 0}, {"dropout": 1.0}, {"embeddings": 3}):
        with pytest.raises(ValidationError):
            BiLSTMSpec(**bad)
    assert all(field.description for field in BiLSTMSpec.model_fields.values())


def test_single_text_forward_and_backward(model, tokenizer):
    model.train()
    batch = _single(tokenizer)
    out = model("sent", batch["input_ids"], batch["attention_mask"])
    assert out.logits.shape == (3, 2)
    assert out.pooled.shape == (3, 16)  # 2 * hidden
    assert out.last_hidden_state.shape == (3, batch["input_ids"].shape[1], 16)
    HardLoss()(out.logits, torch.tensor([1, 0, 0]), SENT).mean().backward()
    used = [model.embeddings, model.lstm, model.attention_proj, model.attention_vector, model.heads["sent"]]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for m in used for p in m.parameters())
    assert all(p.grad is None for p in model.heads["pair"].parameters())
    assert model.max_seq_length is None
    model.check_max_length(100_000, "--max-seq-length")  # no position limit


def test_pair_task_uses_siamese_features_with_token_types(model, tokenizer):
    batch = _pairs(tokenizer)
    out = model("pair", batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert out.logits.shape == (2, 3)
    assert out.pooled.shape == (2, 64)  # [u; v; |u-v|; u*v], each 2 * hidden
    u, v, diff, prod = out.pooled.split(16, dim=1)
    assert torch.allclose(diff, (u - v).abs()) and torch.allclose(prod, u * v)


def test_pair_without_token_types_splits_at_the_separator(model, tokenizer):
    batch = _pairs(tokenizer)
    with_types = model("pair", batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    without = model("pair", batch["input_ids"], batch["attention_mask"]).logits
    all_zero = model("pair", batch["input_ids"], batch["attention_mask"],
                     torch.zeros_like(batch["token_type_ids"])).logits  # RoBERTa-style: no segment ids
    assert torch.allclose(with_types, without, atol=1e-6)
    assert torch.allclose(with_types, all_zero, atol=1e-6)


def test_roberta_style_separators_open_segment_b(model):
    model.sep_token_id = 2
    ids = torch.tensor([[0, 11, 12, 2, 2, 13, 14, 2, 1, 1]])  # <s> a a </s></s> b b </s> <pad> <pad>
    mask = (torch.arange(10) < 8).long().unsqueeze(0)
    segment_b = model._segment_b(ids, mask.bool(), None)
    assert segment_b.long().tolist() == [[0, 0, 0, 0, 1, 1, 1, 1, 0, 0]]


def test_regression_task_gives_one_score(model, tokenizer):
    batch = _pairs(tokenizer)
    out = model("reg", batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert out.logits.shape == (2, 1)
    HardLoss()(out.logits, torch.tensor([0.5, 3.0]), REG).mean().backward()


def test_unknown_task_is_a_clear_error(model, tokenizer):
    batch = _single(tokenizer)
    with pytest.raises(UnknownTaskError, match="no head for task 'cola'"):
        model("cola", batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("task", ["sent", "pair"])
def test_padding_never_changes_the_result(model, tokenizer, task):
    batch = _single(tokenizer) if task == "sent" else _pairs(tokenizer)
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
    reference = model(task, ids, mask, types).logits
    for width in (ids.shape[1] + 1, ids.shape[1] + 9):
        wide_ids, wide_mask = _pad_to(ids, mask, width, tokenizer.pad_token_id)
        wide_types = _pad_to(types, mask, width, 0)[0] if types is not None else None
        assert torch.allclose(model(task, wide_ids, wide_mask, wide_types).logits, reference, atol=1e-5)
    # Each example alone, trimmed to its own length, gives the same logits as inside the padded batch.
    for i in range(ids.shape[0]):
        n = int(mask[i].sum())
        alone = model(task, ids[i:i + 1, :n], mask[i:i + 1, :n], types[i:i + 1, :n] if types is not None else None)
        assert torch.allclose(alone.logits, reference[i:i + 1], atol=1e-5)


def test_attention_pooling_ignores_padded_positions(model, tokenizer):
    batch = _single(tokenizer)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    out = model("sent", ids, mask, output_attentions=True, output_hidden_states=True)
    (weights,) = out.attentions
    assert weights.shape == ids.shape
    assert torch.all(weights[mask == 0] == 0) and torch.all(weights[mask == 1] > 0)
    assert torch.allclose(weights.sum(1), torch.ones(3))
    assert torch.all(out.last_hidden_state[mask == 0] == 0)
    assert out.hidden_states == (out.last_hidden_state,)
    garbage = ids.masked_fill(mask == 0, 7)  # whatever sits under padding is never read
    assert torch.equal(model("sent", garbage, mask).logits, out.logits)


def test_swapping_the_texts_swaps_u_and_v(model, tokenizer):
    sep = tokenizer.sep_token_id
    a, b = [20, 21, 22], [30, 31]
    ab = torch.tensor([a + [sep] + b + [sep]])
    ba = torch.tensor([b + [sep] + a + [sep]])
    mask = torch.ones_like(ab)
    u1, v1, diff1, prod1 = model("pair", ab, mask).pooled.split(16, dim=1)
    u2, v2, diff2, prod2 = model("pair", ba, mask).pooled.split(16, dim=1)
    assert torch.allclose(u1, v2, atol=1e-6) and torch.allclose(v1, u2, atol=1e-6)
    assert torch.allclose(u1 - v1, -(u2 - v2), atol=1e-6)
    assert torch.allclose(diff1, diff2, atol=1e-6) and torch.allclose(prod1, prod2, atol=1e-6)


def test_an_empty_second_text_still_runs(model):
    model.sep_token_id = None  # no separator and no token types: everything is text A, text B is empty
    ids = torch.tensor([[20, 21, 22], [23, 24, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    out = model("pair", ids, mask, output_attentions=True)
    assert torch.isfinite(out.logits).all()
    assert torch.all(out.attentions[1] == 0)  # nothing of the input was read as text B


def test_two_layers_work(tokenizer):
    torch.manual_seed(0)
    model = BiLSTMModel.from_tokenizer(SPEC.model_copy(update={"num_layers": 2}), TASKS, tokenizer).eval()
    batch = _pairs(tokenizer)
    assert model("pair", batch["input_ids"], batch["attention_mask"]).logits.shape == (2, 3)


def test_vocabulary_covers_every_token_id_and_a_padded_teacher_matrix(tokenizer):
    model = BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer)
    assert model.vocab_size == model_vocab(tokenizer) >= len(tokenizer)
    assert (model.pad_token_id, model.sep_token_id) == (tokenizer.pad_token_id, tokenizer.sep_token_id)
    padded = torch.randn(model_vocab(tokenizer) + 5, 16)  # teachers often round their vocabulary up
    assert BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer, teacher_embeddings=padded).vocab_size == len(padded)


def test_embeddings_are_copied_when_sizes_match(tokenizer):
    torch.manual_seed(0)
    teacher = torch.randn(model_vocab(tokenizer), 16) * 0.05  # a Transformer's small embedding scale
    model = BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer, teacher_embeddings=teacher)
    weight = model.embeddings.weight.detach()
    pad = tokenizer.pad_token_id
    assert torch.all(weight[pad] == 0)
    keep = torch.arange(model_vocab(tokenizer)) != pad
    # The teacher's vectors, times one factor that gives the entries unit spread.
    factor = 1 / teacher[keep].std()
    assert torch.allclose(weight[keep], teacher[keep] * factor, rtol=1e-5, atol=1e-6)
    assert torch.isclose(weight[keep].std(), torch.tensor(1.0), rtol=1e-4)
    off = BiLSTMModel.from_tokenizer(SPEC.model_copy(update={"init_embeddings": False}), TASKS, tokenizer,
                                     teacher_embeddings=teacher)
    assert not torch.equal(off.embeddings.weight[keep].detach(), teacher[keep])


@pytest.mark.parametrize("teacher_dim", [32, 10])
def test_embeddings_are_projected_when_sizes_differ(tokenizer, teacher_dim):
    torch.manual_seed(0)
    teacher = torch.randn(model_vocab(tokenizer), teacher_dim) * 3
    model = BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer)
    model.init_embeddings_from(teacher)
    weight = model.embeddings.weight.detach()
    pad = tokenizer.pad_token_id
    keep = torch.arange(model_vocab(tokenizer)) != pad
    assert weight.shape == (model_vocab(tokenizer), 16)
    assert torch.all(weight[pad] == 0)
    # Unit-scaled (one factor): an LSTM reads embeddings raw, unlike a Transformer's LayerNorm.
    assert torch.isclose(weight[keep].std(), torch.tensor(1.0), rtol=1e-4)
    if teacher_dim < 16:  # the columns beyond the teacher's components are small noise
        assert weight[:, teacher_dim:].abs().max() < 0.1 * weight[:, :teacher_dim].abs().max()
    again = BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer)
    again.init_embeddings_from(teacher)
    assert torch.equal(again.embeddings.weight, model.embeddings.weight)  # deterministic


def test_embeddings_from_a_real_teacher(tokenizer, tiny_model_dir):
    teacher = MultiTaskModel.from_backbone(str(tiny_model_dir), [SENT]).backbone
    matrix = teacher.get_input_embeddings().weight.detach()  # (V, 32)
    model = BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer, teacher_embeddings=matrix)
    assert torch.all(model.embeddings.weight[tokenizer.pad_token_id] == 0)


def test_embedding_vocab_mismatch_is_refused(model, tokenizer):
    with pytest.raises(ModelError, match=f"7 rows.*{model_vocab(tokenizer)} tokens"):
        model.init_embeddings_from(torch.randn(7, 16))


def test_save_load_round_trip_and_load_model_by_kind(model, tokenizer, tiny_model_dir, tmp_path):
    folder = tmp_path / "bilstm"
    model.save_pretrained(folder, tokenizer)
    files = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "multidistill_model.json", "tokenizer.json"} <= files
    assert "config.json" not in files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    config = json.loads((folder / "multidistill_model.json").read_text())
    assert config["kind"] == "bilstm" and config["vocab_size"] == model.vocab_size
    loaded = BiLSTMModel.from_pretrained(folder).eval()
    by_kind = load_model(folder).eval()
    assert type(by_kind) is BiLSTMModel and loaded.spec == SPEC
    batch = _pairs(tokenizer)
    for task in ("pair", "reg"):
        expected = model(task, batch["input_ids"], batch["attention_mask"]).logits
        assert torch.equal(loaded(task, batch["input_ids"], batch["attention_mask"]).logits, expected)
        assert torch.equal(by_kind(task, batch["input_ids"], batch["attention_mask"]).logits, expected)

    torch.manual_seed(0)
    transformer = MultiTaskModel.from_backbone(str(tiny_model_dir), [SENT])
    transformer.save_pretrained(tmp_path / "multitask")
    assert type(load_model(tmp_path / "multitask")) is MultiTaskModel
    # Each class refuses the other's folder with a pointer to load_model.
    with pytest.raises(ModelError, match="'bilstm' model, not a 'multitask'"):
        MultiTaskModel.from_pretrained(folder)
    with pytest.raises(ModelError, match="'multitask' model, not a 'bilstm'"):
        BiLSTMModel.from_pretrained(tmp_path / "multitask")


@pytest.mark.parametrize("damage", ["missing_weights", "corrupt_weights", "pickle_weights", "missing_config",
                                    "unknown_kind", "bad_spec", "bad_padding_idx", "wrong_sizes"])
def test_broken_bilstm_folders_are_refused(model, tmp_path, damage):
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    config_path = folder / "multidistill_model.json"
    config = json.loads(config_path.read_text())
    expected = str(folder)
    if damage == "missing_weights":
        (folder / "model.safetensors").unlink()
        expected = "missing model.safetensors"
    elif damage == "corrupt_weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "pickle_weights":
        torch.save(model.state_dict(), folder / "model.safetensors")
    elif damage == "missing_config":
        config_path.unlink()
        expected = "missing multidistill_model.json"
    elif damage == "unknown_kind":
        config_path.write_text(json.dumps({**config, "kind": "gru"}))
        expected = "multidistill_model.json: unknown model kind 'gru'"
    elif damage == "bad_spec":
        config_path.write_text(json.dumps({**config, "spec": {**config["spec"], "num_layers": 9}}))
        expected = "invalid BiLSTM model config"
    elif damage == "bad_padding_idx":
        config_path.write_text(json.dumps({**config, "padding_idx": config["vocab_size"]}))
        expected = "invalid BiLSTM model config: padding_idx .* is not a token id"
    else:
        config_path.write_text(json.dumps({**config, "spec": {**config["spec"], "hidden_size": 4}}))
        expected = "size mismatch for lstm"
    with pytest.raises(ModelError, match=expected):
        load_model(folder)
    with pytest.raises(ModelError):
        BiLSTMModel.from_pretrained(folder)


def test_evaluate_model_dir_on_a_saved_bilstm(tokenizer, tmp_path):
    from multidistill.evaluation.run import evaluate_model_dir

    tasks = [Task.model_validate(spec) for spec in write_tiny_tasks(tmp_path / "data", n_train=4, n_dev=10)]
    torch.manual_seed(0)
    model = BiLSTMModel.from_tokenizer(SPEC, tasks, tokenizer, max_length=24)
    model.save_pretrained(tmp_path / "model", tokenizer)
    result = evaluate_model_dir(tmp_path / "model", tasks=None, data_root=str(tmp_path / "data"),
                                batch_size=4, cache_dir=str(tmp_path / "cache"))
    assert set(result["tasks"]) == {"toy_sent", "toy_pair", "toy_reg"}
    assert 0.0 <= result["tasks"]["toy_sent"]["accuracy"] <= 1.0
    assert set(result["tasks"]["toy_reg"]) == {"pearson", "spearman"}


# ---------------------------------------------------------------- the padding row and the tokenizer's pad token


def _tiny_tokenizer(**special):
    """The tiny WordPiece tokenizer, with other special tokens (``pad_token="[SEP]"``: pad == sep, Llama-style)."""
    from transformers import BertTokenizerFast

    from tests.conftest import _vocab

    return BertTokenizerFast(vocab={token: i for i, token in enumerate(_vocab())}, do_lower_case=True, **special)


def _no_pad_tokenizer():
    tokenizer = _tiny_tokenizer()
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None
    return tokenizer


def test_a_bert_tokenizer_bilstm_is_unchanged(tokenizer):
    """Parameters and outputs for a fixed seed, as computed before the padding row depended on the tokenizer's
    other special tokens (BERT's [PAD] is its own token: still the zero, frozen padding row)."""
    torch.manual_seed(0)
    teacher = torch.randn(model_vocab(tokenizer), 32)
    torch.manual_seed(0)
    model = BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer, teacher_embeddings=teacher).eval()
    assert model.embeddings.padding_idx == tokenizer.pad_token_id == 0
    sums = [float(p.detach().double().abs().sum()) for p in model.parameters()]
    assert sums[0] == pytest.approx(1492.576543, abs=1e-4) and sum(sums) == pytest.approx(1946.025, abs=1e-3)
    pairs, single = _pairs(tokenizer), _single(tokenizer)
    expected_pair = torch.tensor([[0.1746353954076767, -0.020671235397458076, -0.21492309868335724],
                                  [0.12974727153778076, -0.023448863998055458, -0.20604895055294037]])
    expected_sent = torch.tensor([[0.2333894968032837, 0.2964528203010559], [0.2577356994152069, 0.31081727147102356],
                                  [0.24351780116558075, 0.2995711863040924]])
    got_pair = model("pair", pairs["input_ids"], pairs["attention_mask"], pairs["token_type_ids"]).logits
    got_sent = model("sent", single["input_ids"], single["attention_mask"]).logits
    assert torch.allclose(got_pair, expected_pair, atol=1e-5) and torch.allclose(got_sent, expected_sent, atol=1e-5)


def test_a_separator_that_is_also_the_pad_token_is_trained():
    """Llama-style tokenizers pad with their eos/separator: that row is read in every segment, so it is no padding
    row (nn.Embedding's padding_idx would keep it at zero and never train it)."""
    tokenizer = _tiny_tokenizer(pad_token="[SEP]")
    sep = tokenizer.sep_token_id
    assert tokenizer.pad_token_id == sep
    torch.manual_seed(0)
    teacher = torch.randn(model_vocab(tokenizer), 32)
    model = BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer, teacher_embeddings=teacher)
    assert model.embeddings.padding_idx is None
    weight = model.embeddings.weight
    assert weight[sep].norm() > 0  # initialised from the teacher like any token
    before = weight[sep].detach().clone()
    batch = _pairs(tokenizer)
    model.train()
    HardLoss()(model("pair", batch["input_ids"], batch["attention_mask"]).logits, torch.tensor([0, 2]),
               PAIR).mean().backward()
    assert weight.grad[sep].abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(weight[sep].detach(), before)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_with_the_separator_changes_nothing(side):
    """Pads that are separators (right or left of the text) neither open segment B nor reach the LSTM."""
    tokenizer = _tiny_tokenizer(pad_token="[SEP]")
    tokenizer.padding_side = side
    torch.manual_seed(0)
    model = BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer).eval()
    batch = _pairs(tokenizer)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (mask == 0).any() and torch.all(ids[mask == 0] == tokenizer.sep_token_id)
    logits = model("pair", ids, mask).logits  # no token types: the segments come from the separators
    for i in range(ids.shape[0]):
        real = mask[i].bool()
        alone = model("pair", ids[i:i + 1, real], mask[i:i + 1, real]).logits
        assert torch.allclose(alone, logits[i:i + 1], atol=1e-5)
    assert torch.allclose(model("pair", ids, mask, batch["token_type_ids"]).logits, logits, atol=1e-5)


def test_a_tokenizer_without_a_pad_token_freezes_no_row(tmp_path):
    """No pad token: no padding row (id 0, the collator's fill, is a real token in BPE vocabularies); padding is
    masked, so whatever id fills it is never read."""
    tokenizer = _no_pad_tokenizer()
    torch.manual_seed(0)
    teacher = torch.randn(model_vocab(tokenizer), 16)
    model = BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer, teacher_embeddings=teacher)
    assert model.embeddings.padding_idx is None and model.pad_token_id is None
    assert model.embeddings.weight[0].norm() > 0
    model.eval()
    ids = torch.tensor([[2, 20, 21, 3, 22, 3], [2, 23, 3, 0, 0, 0]])  # padded with 0, as `collate` pads
    mask = (ids != 0).long()
    logits = model("pair", ids, mask).logits
    assert torch.allclose(model("pair", ids[1:, :3], mask[1:, :3]).logits, logits[1:], atol=1e-5)
    assert torch.equal(model("pair", ids.masked_fill(mask == 0, 7), mask).logits, logits)
    model.save_pretrained(tmp_path / "saved", tokenizer)
    loaded = load_model(tmp_path / "saved").eval()
    assert loaded.pad_token_id is None and loaded.embeddings.padding_idx is None
    assert torch.equal(loaded("pair", ids, mask).logits, logits)


def test_an_empty_segment_reads_a_zero_input_whatever_the_fill_row():
    """An empty second text is read as one zero input, with or without a padding row."""
    tokenizer = _tiny_tokenizer(pad_token="[SEP]")
    torch.manual_seed(0)
    model = BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer).eval()
    ids = torch.tensor([[2, 20, 21, 3]])  # `[CLS] a b [SEP]` with token types all 0 and nothing after: b is empty
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    pooled = model("pair", ids, mask, types).pooled
    with torch.no_grad():
        model.embeddings.weight[tokenizer.sep_token_id] += 5.0  # the fill row's values do not matter
    v = model("pair", ids, mask, types).pooled.split(16, dim=1)[1]
    assert torch.allclose(v, pooled.split(16, dim=1)[1], atol=1e-6)


@pytest.mark.parametrize("pad_token", [None, "[SEP]"])
def test_a_folder_saved_before_padding_idx_was_recorded_loads_the_same(tmp_path, pad_token):
    """Older folders record only pad_token_id (padding_idx was always it): they load strictly and predict the same;
    one whose pad token is its separator loads without a padding row (that row was zero, now it may train)."""
    tokenizer = _tiny_tokenizer(**({"pad_token": pad_token} if pad_token else {}))
    torch.manual_seed(0)
    model = BiLSTMModel.from_tokenizer(SPEC, TASKS, tokenizer).eval()
    if pad_token:  # what the older code saved: the separator's row zero
        with torch.no_grad():
            model.embeddings.weight[tokenizer.sep_token_id] = 0.0
    model.save_pretrained(tmp_path / "old", tokenizer)
    path = tmp_path / "old" / "multidistill_model.json"
    config = json.loads(path.read_text())
    assert config["padding_idx"] == (None if pad_token else 0)
    del config["padding_idx"]
    path.write_text(json.dumps(config))
    loaded = load_model(tmp_path / "old").eval()
    assert loaded.embeddings.padding_idx == (None if pad_token else tokenizer.pad_token_id)
    batch = _pairs(tokenizer)
    for task in ("sent", "pair"):
        assert torch.equal(loaded(task, batch["input_ids"], batch["attention_mask"]).logits,
                           model(task, batch["input_ids"], batch["attention_mask"]).logits)
