"""The teacher feature store: hidden states computed once by `soft-targets --hidden-layers` and read back per batch
as the same ``teacher_features`` an online teacher gives; fingerprinted, checked against the student's
tokenisation, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertTokenizerFast

from multidistill.config import DataConfig, TeacherRunConfig
from multidistill.data.batches import row_lengths
from multidistill.data.collate import collate
from multidistill.data.prepare import prepare_data
from multidistill.data.rows import ArrowRows
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, DataError
from multidistill.models import MultiTaskModel
from multidistill.teachers.feature_store import HIDDEN_COLUMN, hidden_column, storable
from multidistill.teachers.generate import build_signal_store
from multidistill.teachers.online import OnlineSignals
from multidistill.teachers.store import check_finite, split_dataset
from multidistill.teachers.stored import StoredSignals
from multidistill.training.checkpoint import list_checkpoints
from multidistill.training.run import train_model
from tests.conftest import _vocab

TASKS = ["toy_sent", "toy_pair"]
STUDENT = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
           "intermediate_size": 32, "max_position_embeddings": 64}
# A 1-layer student of the 2-layer teacher: hidden_mse's uniform map reads the teacher's layers 0 and 2.
TERMS = [{"loss": "hard"}, {"loss": "hidden_mse"}]


class Crash(Exception):
    """Stands in for a kill."""


@pytest.fixture
def world(tiny_run, tmp_path, tiny_model_dir):
    """The toy run, a teacher with heads (saved with the tiny tokenizer) and its data config."""
    raw, _ = tiny_run
    specs = [Task.model_validate(s) for s in raw["data"]["task_specs"]]
    torch.manual_seed(3)
    teacher = tmp_path / "teacher"
    MultiTaskModel.from_backbone(str(tiny_model_dir), specs, max_length=32).save_pretrained(
        teacher, AutoTokenizer.from_pretrained(tiny_model_dir))
    data = DataConfig.model_validate({**raw["data"], "tasks": TASKS})
    return raw, teacher, data


def _store(world, layers=(0, 2), name: str = "store", teacher=None):
    raw, default_teacher, data = world
    return build_signal_store([teacher or default_teacher], data, default_teacher.parent / name, max_length=32,
                              batch_size=8, shard_size=16, hidden_layers=layers)


def _config(world, name: str, *, signals=None, terms=None, **model) -> TeacherRunConfig:
    """A 1-layer student of the teacher, online (``signals`` None) or from the store folder ``signals``."""
    raw, teacher, data = world
    teacher_source = {"signals": str(signals)} if signals is not None else {"online_teachers": [str(teacher)]}
    return TeacherRunConfig.model_validate({
        **raw, "kind": "distill", "output_dir": str(teacher.parent / name),
        "model": {**raw["model"], "backbone_config": STUDENT, **model},
        "data": {**raw["data"], "tasks": TASKS}, "train": {**raw["train"], "epochs": 1},
        "objective": {"classification": terms or TERMS}, **teacher_source})


def test_stored_hidden_states_equal_the_online_teachers_for_a_batch(world):
    raw, teacher, data_config = world
    store = _store(world)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    data = prepare_data(data_config, tokenizer, 32, max_examples_per_task=None, seed=0)
    want = {"toy_pair": {"hidden_states": (0, 2)}}
    stored = StoredSignals(store, TASKS).request(want)
    online = OnlineSignals([teacher], tokenizer, TASKS, logits=False).request(want)
    rows = [5, 0, 17, 3, 9, 11]
    batch = collate(data.tasks["toy_pair"], data.train_sets["toy_pair"][rows], tokenizer.pad_token_id)
    batch["rows"] = rows
    from_store, live = stored(dict(batch))["teacher_features"], online(dict(batch))["teacher_features"]
    assert len(from_store) == len(live) == 1
    assert from_store[0].hidden_states[1] is None  # only the layers asked are handed out
    real = batch["attention_mask"].bool()
    for layer in (0, 2):
        got, expected = from_store[0].hidden_states[layer], live[0].hidden_states[layer]
        assert got.dtype == torch.float16 and got.shape == expected.shape
        # float16 keeps 11 significant bits: within 1e-3 relative of the float32 states.
        torch.testing.assert_close(got.float()[real], expected[real], rtol=1e-3, atol=1e-3)
        assert not got[~real].any()  # padding is zeros, as a batch pads input_ids
    # The logits of the same forward are the logit store's (the same arithmetic as `predict`).
    logit_store = build_signal_store([teacher], data_config, teacher.parent / "logits", max_length=32, batch_size=8,
                                     shard_size=16)
    np.testing.assert_allclose(store.signals("toy_pair", "train")["teacher_logits"],
                               logit_store.signals("toy_pair", "train")["teacher_logits"], rtol=1e-5, atol=1e-6)
    # On disk: 2 bytes per value (2 layers x 32 wide per real token) plus a little Arrow bookkeeping.
    tokens = int(row_lengths(data.train_sets["toy_pair"]).sum())
    disk = sum(f.stat().st_size for f in (store.root / "toy_pair" / "train").glob("*.arrow"))
    disk_logits = sum(f.stat().st_size for f in (logit_store.root / "toy_pair" / "train").glob("*.arrow"))
    assert tokens * 2 * 32 * 2 <= disk - disk_logits <= 1.2 * tokens * 2 * 32 * 2


def test_a_run_from_the_feature_store_gives_the_online_teachers_losses(world):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = _store(world)
    online = train_model(_config(world, "online"))
    stored = train_model(_config(world, "stored", signals=store.root))

    def scalars(run: str, tag: str) -> list[float]:
        events = EventAccumulator(str(store.root.parent / run / "tensorboard"))
        events.Reload()
        return [e.value for e in events.Scalars(tag)]

    for tag in ("train/loss/hidden_mse", "train/loss/hard", "train/loss"):
        expected = scalars("online", tag)
        assert len(expected) > 3
        np.testing.assert_allclose(scalars("stored", tag), expected, rtol=2e-3)
    assert stored.steps == online.steps
    assert stored.best_metrics["main"] == pytest.approx(online.best_metrics["main"], abs=0.05)


def test_feature_store_training_resumes_exactly(world):
    store = _store(world)
    uncut = train_model(_config(world, "uncut", signals=store.root))

    def crash_at_step_5(state):
        if state.step == 5:
            raise Crash

    with pytest.raises(Crash):
        train_model(_config(world, "cut", signals=store.root), on_step=crash_at_step_5)
    resumed = train_model(_config(world, "cut", signals=store.root), resume=True)
    assert resumed.steps == uncut.steps
    root = store.root.parent
    expected = load_file(list_checkpoints(root / "uncut" / "checkpoints")[-1] / "trainables.safetensors")
    got = load_file(list_checkpoints(root / "cut" / "checkpoints")[-1] / "trainables.safetensors")
    assert any(k.startswith("objective.") for k in expected)  # the projection, resumed with the student
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_the_stored_hidden_states_are_the_same_whatever_the_shard_size(world):
    raw, teacher, data = world
    sharded = _store(world)  # 16-row shards, merged piece by piece
    whole = build_signal_store([teacher], data, teacher.parent / "whole", max_length=32, batch_size=8,
                               shard_size=4096, hidden_layers=(0, 2))
    assert sharded.fingerprint == whole.fingerprint
    for task in TASKS:
        a, b = sharded.signals(task, "train"), whole.signals(task, "train")
        assert list(a["id"]) == list(b["id"])
        for row in (0, 17, 95):
            assert np.array_equal(a[row][HIDDEN_COLUMN], b[row][HIDDEN_COLUMN])


def test_the_fingerprint_refuses_other_layers_or_another_teacher(world, tiny_model_dir):
    raw, teacher, data = world
    store = _store(world)
    assert store.features.layers == (0, 2) and store.manifest["features"]["dtype"] == "float16"
    assert _store(world).fingerprint == store.fingerprint  # the same inputs: reused
    with pytest.raises(DataError, match="hidden layers"):
        _store(world, layers=(0, 1))
    with pytest.raises(DataError, match="built for other teachers"):
        build_signal_store([teacher], data, store.root, max_length=32, batch_size=8, shard_size=16)  # logits only
    torch.manual_seed(4)
    other = teacher.parent / "other_teacher"
    specs = [Task.model_validate(s) for s in raw["data"]["task_specs"]]
    MultiTaskModel.from_backbone(str(tiny_model_dir), specs, max_length=32).save_pretrained(
        other, AutoTokenizer.from_pretrained(tiny_model_dir))
    with pytest.raises(DataError, match="built for other teachers"):
        _store(world, teacher=other)
    with pytest.raises(ConfigError, match=r"hidden_layers.*\[3\].*0 \(the embedding output\) \.\. 2"):
        _store(world, layers=(0, 3), name="store3")


def test_a_store_asked_for_features_it_does_not_hold_is_refused_before_anything_is_written(world):
    only_embeddings = _store(world, layers=(0,), name="embeddings")
    with pytest.raises(ConfigError, match=r"key 'signals'.*layer\(s\) \[2\].*--hidden-layers 0,2.*online_teachers"):
        train_model(_config(world, "a", signals=only_embeddings.root))
    store = _store(world)
    with pytest.raises(ConfigError, match=r"key 'signals'.*\['attention_scores'\].*online_teachers"):
        train_model(_config(world, "b", signals=store.root, terms=[{"loss": "attention_mse"}]))
    raw, teacher, data = world
    logits_only = build_signal_store([teacher], data, teacher.parent / "logits", max_length=32, batch_size=8)
    with pytest.raises(ConfigError, match=r"key 'online_teachers'.*--hidden-layers"):
        train_model(_config(world, "c", signals=logits_only.root))
    assert not any((teacher.parent / name).exists() for name in "abc")


def test_a_student_that_tokenises_otherwise_than_the_store_is_refused_naming_both(world, tmp_path):
    store = _store(world)
    with pytest.raises(ConfigError, match=r"max_seq_length.*truncates at 24 .*truncated at 32"):
        train_model(_config(world, "short", signals=store.root, max_seq_length=24))
    cased = tmp_path / "cased_tokenizer"
    BertTokenizerFast(vocab={t: i for i, t in enumerate(_vocab())}, do_lower_case=False).save_pretrained(cased)
    with pytest.raises(ConfigError, match=rf"tokenizer of {store.features.tokenizer_source}.*tokenises with {cased}"):
        train_model(_config(world, "cased", signals=store.root, tokenizer=str(cased)))
    assert not (tmp_path / "short").exists() and not (tmp_path / "cased").exists()  # nothing written


def test_a_row_whose_token_count_differs_from_the_store_is_refused(world):
    raw, teacher, data_config = world
    store = _store(world)
    stored = StoredSignals(store, TASKS).request({"toy_sent": {"hidden_states": (0, 2)}})
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    data = prepare_data(data_config, tokenizer, 32, max_examples_per_task=None, seed=0)
    batch = collate(data.tasks["toy_sent"], data.train_sets["toy_sent"][[0, 1]], tokenizer.pad_token_id)
    batch["rows"] = [0, 1]
    batch["attention_mask"][1, -1] = 1 - batch["attention_mask"][1, -1]  # one token more or fewer
    with pytest.raises(DataError, match=r"example id '3' has \d+ stored tokens and \d+ in the batch"):
        stored(batch)


def test_k_teachers_give_k_feature_sets_each_equal_to_its_online_teacher(world, tiny_model_dir):
    raw, teacher, data_config = world
    torch.manual_seed(5)
    second = teacher.parent / "second"
    specs = [Task.model_validate(s) for s in raw["data"]["task_specs"]]
    model = MultiTaskModel.from_backbone(str(tiny_model_dir), specs, max_length=32)
    with torch.no_grad():  # another encoder, so that the two teachers' hidden states differ
        for weight in model.backbone.parameters():
            weight.add_(0.1 * torch.randn_like(weight))
    model.save_pretrained(second, AutoTokenizer.from_pretrained(tiny_model_dir))
    store = build_signal_store([teacher, second], data_config, teacher.parent / "two", max_length=32,
                               hidden_layers=[2])
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    data = prepare_data(data_config, tokenizer, 32, max_examples_per_task=None, seed=0)
    want = {"toy_sent": {"hidden_states": (2,)}}
    batch = collate(data.tasks["toy_sent"], data.train_sets["toy_sent"][[4, 2, 8]], tokenizer.pad_token_id)
    batch["rows"] = [4, 2, 8]
    from_store = StoredSignals(store, TASKS).request(want)(dict(batch))["teacher_features"]
    live = OnlineSignals([teacher, second], tokenizer, TASKS, logits=False).request(want)(dict(batch))
    assert len(from_store) == 2
    real = batch["attention_mask"].bool()
    for got, expected in zip(from_store, live["teacher_features"], strict=True):
        torch.testing.assert_close(got.hidden_states[2].float()[real], expected.hidden_states[2][real],
                                   rtol=1e-3, atol=1e-3)
    assert not torch.allclose(from_store[0].hidden_states[2], from_store[1].hidden_states[2])


def test_teachers_of_two_sizes_are_refused_naming_both(world, tmp_path):
    """A feature store holds one size of hidden states: a second teacher with 1 layer is refused by key (before,
    sorting the two sizes for the message raised a TypeError)."""
    from transformers import BertConfig, BertModel

    raw, teacher, data_config = world
    specs = [Task.model_validate(s) for s in raw["data"]["task_specs"]]
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(_vocab()), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "one-layer")
    small = tmp_path / "small"
    MultiTaskModel.from_backbone(str(tmp_path / "one-layer"), specs, max_length=32).save_pretrained(
        small, AutoTokenizer.from_pretrained(teacher))
    with pytest.raises(ConfigError, match=r"key 'hidden_layers': feature losses need teachers of one size, got "
                                          r"hidden_size 32, 1 layers, 2 heads, hidden_size 32, 2 layers"):
        build_signal_store([teacher, small], data_config, tmp_path / "two", max_length=32, hidden_layers=[1])
    assert not (tmp_path / "two").exists()
    online = OnlineSignals([teacher, small], AutoTokenizer.from_pretrained(teacher), TASKS, logits=False)
    with pytest.raises(ConfigError, match=r"key 'online_teachers': feature losses need teachers of one size, got "
                                          r"ModelDims\(hidden_size=32, num_layers=1"):
        online.dims()  # the same TypeError, online


def test_hidden_states_a_store_cannot_hold_faithfully_are_refused():
    assert storable(np.array([[1.0, -2.5]], np.float32), "t").dtype == np.float16
    with pytest.raises(DataError, match="t: teacher hidden states contain NaN/inf"):
        storable(np.array([[1.0, np.nan]], np.float32), "t")
    with pytest.raises(DataError, match="reaches 7e\\+04, beyond float16's range"):
        storable(np.array([[70000.0]], np.float32), "t")


def test_stored_hidden_states_holding_nan_are_refused(tmp_path):
    hidden = np.ones((5, 4), dtype=np.float16)
    hidden[3, 1] = np.nan  # a token of the second row (rows of 2 and 3 tokens)
    column = hidden_column(np.array([2, 3]), hidden)
    split_dataset(["a", "b"], np.zeros((1, 2, 2), np.float32), np.zeros((2, 2), np.float32),
                  column).save_to_disk(str(tmp_path / "split"))
    rows = ArrowRows(sorted((tmp_path / "split").glob("*.arrow")))
    read = rows.read([1], ["id", HIDDEN_COLUMN])  # only the columns asked
    assert set(read) == {"id", HIDDEN_COLUMN} and read[HIDDEN_COLUMN][0].shape == (3, 4)
    with pytest.raises(DataError, match=f"{HIDDEN_COLUMN} of example id 'b' \\(row 1\\) holds NaN/inf"):
        check_finite(rows, "store")


def test_the_command_line_builds_a_feature_store_and_distils_from_it(world, monkeypatch, capsys):
    from tests.test_cli import run_cli

    raw, teacher, data = world
    store = teacher.parent / "cli_store"
    args = ["soft-targets", "--teacher", str(teacher), "--tasks", ",".join(TASKS), "--data-root",
            raw["data"]["data_root"], "--out", str(store), "--cache-dir", str(teacher.parent / "cache"), "--seed", "7"]
    code, output = run_cli(monkeypatch, capsys, *args, "--hidden-layers", "0,x")
    assert code == 2 and "--hidden-layers" in output and "not layer numbers" in output
    code, output = run_cli(monkeypatch, capsys, *args, "--hidden-layers", "2,0")
    assert code == 0, output
    assert json.loads((store / "manifest.json").read_text())["features"]["hidden_states"] == [0, 2]
    config = _config(world, "cli_student", signals=store,
                     terms=[{"loss": "hidden_mse"}, {"loss": "soft_ce"}, {"loss": "hard"}])
    path = teacher.parent / "student.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
    code, output = run_cli(monkeypatch, capsys, "distill", str(path), "--set", "model.max_seq_length=24")
    assert code == 2 and "key 'model.max_seq_length'" in output and not (teacher.parent / "cli_student").exists()
    code, output = run_cli(monkeypatch, capsys, "distill", str(path))
    assert code == 0, output
    assert (teacher.parent / "cli_student" / "metrics.json").is_file()


def test_stored_features_travel_to_the_training_device_with_the_batch():
    from multidistill.data.collate import to_device
    from multidistill.models.features import EncoderFeatures, ModelDims

    mask = torch.ones(2, 3, dtype=torch.long)
    features = EncoderFeatures(attention_mask=mask, dims=ModelDims(4, 2, 1),
                               hidden_states=(torch.zeros(2, 3, 4, dtype=torch.float16), None, None))
    moved = to_device({"input_ids": mask, "teacher_features": [features], "ids": ["a", "b"]}, torch.device("meta"))
    assert moved["input_ids"].is_meta and moved["ids"] == ["a", "b"]
    (teacher,) = moved["teacher_features"]
    assert teacher.attention_mask.is_meta and teacher.hidden_states[0].is_meta
    assert teacher.hidden_states[1:] == (None, None) and teacher.dims == features.dims
