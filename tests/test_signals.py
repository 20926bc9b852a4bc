"""The teacher-signal store: K teachers' logits + mean probabilities, fingerprinted, reused, refused when stale."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from multidistill.config import DataConfig
from multidistill.data.tasks import Task
from multidistill.errors import DataError, ModelError
from multidistill.models import MultiTaskModel
from multidistill.teachers import generate, shards
from multidistill.teachers.generate import build_signal_store
from multidistill.teachers.reduce import teacher_mean
from multidistill.teachers.store import open_signal_store
from tests.conftest import write_tiny_tasks


def test_ensemble_targets_average_probabilities_not_logits():
    # Teacher 1 logits [0, 0] -> [1/2, 1/2]; teacher 2 [ln 3, 0] -> [3/4, 1/4]; mean probs = [5/8, 3/8].
    # (Averaging logits first would give softmax([ln3/2, 0]) = [0.634, 0.366]: a different target.)
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # (1 example, 2 teachers, 2 classes)
    assert teacher_mean("classification", logits)[0].tolist() == pytest.approx([0.625, 0.375])
    # Regression: the mean score, (2 + 4) / 2 = 3.
    assert teacher_mean("regression", torch.tensor([[[2.0], [4.0]]])).tolist() == [[3.0]]


@pytest.fixture
def setting(tmp_path, tiny_model_dir):
    specs = [Task.model_validate(s) for s in write_tiny_tasks(tmp_path / "data", n_train=20)]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    teachers = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = MultiTaskModel.from_backbone(str(tiny_model_dir), specs, max_length=32)
        model.save_pretrained(tmp_path / f"teacher{seed}", tokenizer)
        teachers.append(tmp_path / f"teacher{seed}")
    data = DataConfig(tasks=["toy_sent", "toy_reg"], data_root=str(tmp_path / "data"), task_specs=specs,
                      cache_dir=str(tmp_path / "cache"))
    return teachers, data, tmp_path / "store"


def test_store_holds_each_teachers_outputs_and_their_mean(setting):
    teachers, data, out = setting
    store = build_signal_store(teachers, data, out, splits=("train", "dev"))
    sent = store.signals("toy_sent", "train")[:]  # row slices come back as numpy arrays
    assert len(sent["id"]) == 20
    assert sent["teacher_logits"].shape == (20, 2, 2) and sent["teacher_mean"].shape == (20, 2)
    probs = torch.softmax(torch.from_numpy(sent["teacher_logits"]), -1).mean(1).numpy()
    np.testing.assert_allclose(sent["teacher_mean"], probs, rtol=1e-6)
    assert not np.allclose(sent["teacher_logits"][:, 0], sent["teacher_logits"][:, 1])  # two different teachers
    reg = store.signals("toy_reg", "dev")[:]
    assert reg["teacher_logits"].shape == (24, 2, 1)
    np.testing.assert_allclose(reg["teacher_mean"][:, 0], reg["teacher_logits"][:, :, 0].mean(1), rtol=1e-6)
    # Rows follow the example store, so a student batch's row indices find their signals.
    assert list(sent["id"]) == [str(i) for i in range(2, 22)]


def test_a_valid_store_is_reused_without_running_teachers(setting, monkeypatch):
    teachers, data, out = setting
    first = build_signal_store(teachers, data, out)

    def no_inference(*args, **kwargs):
        raise AssertionError("teachers must not run again for a valid store")

    monkeypatch.setattr(generate, "predict", no_inference)
    again = build_signal_store(teachers, data, out)
    assert again.fingerprint == first.fingerprint


def test_a_stale_store_is_refused_and_left_alone(setting):
    teachers, data, out = setting
    store = build_signal_store(teachers, data, out)
    before = (out / "manifest.json").read_text()
    with pytest.raises(DataError, match="built for other teachers"):
        build_signal_store(teachers[:1], data, out)  # another teacher set
    path = out.parent / "data" / "toy_sent" / "train.tsv"
    path.write_text(path.read_text() + "a fine new row\t1\n")
    with pytest.raises(DataError, match="built for other teachers"):
        build_signal_store(teachers, data, out)  # changed data
    assert (out / "manifest.json").read_text() == before
    with pytest.raises(DataError, match="stale"):
        open_signal_store(out, expected_fingerprint="0" * 64)
    assert open_signal_store(out, store.fingerprint).fingerprint == store.fingerprint


def test_nan_teacher_outputs_are_refused_and_nothing_is_written(setting, monkeypatch):
    teachers, data, out = setting
    def nan_outputs(model, task, view, **kwargs):
        return np.full((len(view), task.num_labels), np.nan)

    monkeypatch.setattr(generate, "predict", nan_outputs)
    with pytest.raises(DataError, match="NaN"):
        build_signal_store(teachers, data, out)
    assert not out.exists() and not list(out.parent.glob(".store.tmp-*"))


def test_a_task_the_teacher_lacks_is_refused(setting):
    teachers, data, out = setting
    data = data.model_copy(update={"tasks": [*data.tasks, data.tasks[0].model_copy(update={"name": "cola"})]})
    with pytest.raises(ModelError, match="no head for task"):
        build_signal_store(teachers, data, out)


def test_stored_signals_enrich_batches_by_row_and_check_ids(setting):
    from multidistill.teachers.stored import StoredSignals

    teachers, data, out = setting
    store = build_signal_store(teachers, data, out)
    enrich = StoredSignals(store, ["toy_sent", "toy_reg"])
    rows = np.array([3, 0, 7])
    expected = store.signals("toy_sent", "train")[rows]
    batch = enrich({"task": "toy_sent", "rows": rows, "ids": list(expected["id"])})
    assert batch["teacher_logits"].shape == (3, 2, 2) and batch["teacher_mean"].shape == (3, 2)
    np.testing.assert_allclose(batch["teacher_mean"].numpy(), expected["teacher_mean"])
    with pytest.raises(DataError, match="do not line up"):
        enrich({"task": "toy_sent", "rows": rows, "ids": ["x", "y", "z"]})


# Resumable, sharded generation ----------------------------------------------------------------------------


def _contents(store) -> dict:
    """Every (task, split) of a store as numpy arrays, for bit-for-bit comparisons."""
    out = {}
    for task in store.manifest["tasks"]:
        for split in store.manifest["splits"]:
            rows = store.signals(task, split)[:]
            out[task, split] = {"id": list(rows["id"]), "teacher_logits": np.asarray(rows["teacher_logits"]),
                                "teacher_mean": np.asarray(rows["teacher_mean"])}
    return out


def _assert_same_store(a, b, *, atol: float = 0.0) -> None:
    """Same rows and signals: bit for bit by default (the same shard plan), or within ``atol``."""
    got, expected = _contents(a), _contents(b)
    assert got.keys() == expected.keys()
    for key, columns in expected.items():
        assert got[key]["id"] == columns["id"], key
        for name in ("teacher_logits", "teacher_mean"):
            assert got[key][name].dtype == columns[name].dtype == np.float32
            assert np.allclose(got[key][name], columns[name], rtol=0, atol=atol), (key, name)
    assert a.manifest["fingerprint"] == b.manifest["fingerprint"]


class Interrupted(Exception):
    pass


def _counting_predict(monkeypatch, fail_after_calls: int | None = None) -> list:
    """Wrap the teacher inference: count calls, and raise (like a kill) once ``fail_after_calls`` were made."""
    from multidistill.evaluation.evaluate import predict as real

    calls = []

    def counted(*args, **kwargs):
        if fail_after_calls is not None and len(calls) >= fail_after_calls:
            raise Interrupted
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "predict", counted)
    return calls


def test_an_interrupted_build_resumes_from_its_last_shard(setting, monkeypatch):
    teachers, data, out = setting
    # 20 train rows per task, 4 rows per shard: 5 shards per task, 10 in all; 2 teachers -> 2 calls per shard.
    options = {"batch_size": 4, "shard_size": 4}
    _counting_predict(monkeypatch, fail_after_calls=2 * 2)
    with pytest.raises(Interrupted):
        build_signal_store(teachers, data, out, **options)
    partial = shards.partial_dir(out)
    assert not out.exists()
    assert sorted(p.name for p in partial.glob("shard-*")) == ["shard-000000.npz", "shard-000001.npz"]

    calls = _counting_predict(monkeypatch)
    resumed = build_signal_store(teachers, data, out, **options)
    assert len(calls) == (10 - 2) * 2  # the two finished shards were not recomputed
    assert not partial.exists()

    monkeypatch.undo()
    uncut = build_signal_store(teachers, data, out.with_name("uncut"), **options)
    _assert_same_store(resumed, uncut)


def test_a_work_folder_of_another_fingerprint_is_discarded_with_a_warning(setting, monkeypatch):
    teachers, data, out = setting
    options = {"batch_size": 4, "shard_size": 4}
    _counting_predict(monkeypatch, fail_after_calls=3)
    with pytest.raises(Interrupted):
        build_signal_store(teachers[:1], data, out, **options)  # one teacher: another fingerprint
    assert len(list(shards.partial_dir(out).glob("shard-*"))) == 3

    calls = _counting_predict(monkeypatch)
    with pytest.warns(UserWarning, match="discarding .*other teachers"):
        store = build_signal_store(teachers, data, out, **options)
    assert len(calls) == 10 * 2  # nothing of the other teacher set was reused
    monkeypatch.undo()
    _assert_same_store(store, build_signal_store(teachers, data, out.with_name("clean"), **options))

    # A shard plan of another shard size is discarded too; a folder that is not ours is refused.
    _counting_predict(monkeypatch, fail_after_calls=2)
    with pytest.raises(Interrupted):
        build_signal_store(teachers, data, out.with_name("other"), batch_size=4, shard_size=8)
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="another shard size"):
        build_signal_store(teachers, data, out.with_name("other"), **options)
    foreign = out.with_name("foreign.partial")
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not the work folder"):
        build_signal_store(teachers, data, out.with_name("foreign"), **options)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_the_store_is_the_same_whatever_the_shard_size(setting):
    teachers, data, out = setting
    stores = [build_signal_store(teachers, data, out.with_name(f"shards-{size}"), splits=("train", "dev"),
                                 batch_size=4, shard_size=size) for size in (1, 7, 10000)]
    # Inference batches rows longest first within a shard, so other shards mean other batches, other padding
    # widths and float sums in another order: equal to float32 rounding, not bit for bit.
    for other in stores[1:]:
        _assert_same_store(other, stores[0], atol=1e-5)


def test_shards_can_be_shared_between_processes(setting):
    """The shard loop takes (rank, world): two ranks together label every shard once; one merge follows."""
    from multidistill.data.prepare import open_example_store
    from multidistill.models.backbone import load_tokenizer

    teachers, data, out = setting
    reference = build_signal_store(teachers, data, out.with_name("single"), batch_size=4, shard_size=4)
    store = open_example_store(data, max_examples_per_task=None, seed=0)
    sizes = {(t, "train"): len(store.examples(t, "train")) for t in data.task_names}
    plan = shards.plan_shards(sizes, shards.shard_rows(4, 4))
    partial = shards.partial_dir(out)
    shards.prepare_partial(partial, reference.fingerprint, plan)
    labeler = generate.ShardLabeler([MultiTaskModel.from_pretrained(d) for d in teachers],
                                    [load_tokenizer(str(d)) for d in teachers], store, 32, 4, torch.device("cpu"))
    done = [generate.generate_shards(labeler, partial, plan, rank=r, world=2) for r in (0, 1)]
    assert done == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    assert generate.generate_shards(labeler, partial, plan, rank=1, world=2) == []  # finished shards are skipped
    merged = shards.merge_shards(partial, out, plan, reference.manifest)
    _assert_same_store(merged, reference)


def test_distillation_never_maps_the_training_rows(setting):
    """Training reads its view and the store by positional reads: no page of either is mapped (and counted in
    the process's RSS) at any step, however many rows are read."""
    from multidistill.config import TeacherRunConfig
    from multidistill.training.run import train_model

    teachers, data, out = setting
    build_signal_store(teachers, data, out)
    config = TeacherRunConfig.model_validate({
        "kind": "distill", "output_dir": str(out.parent / "student"), "signals": str(out),
        "model": {"name_or_path": str(teachers[0]), "max_seq_length": 32}, "data": data.model_dump(),
        "train": {"epochs": 2, "batch_size": 4, "eval_every_steps": 1000, "checkpoint_every_steps": 1000},
        "objective": {"classification": [{"loss": "soft_ce"}], "regression": [{"loss": "score_mse"}]}})
    mapped: list[str] = []

    def on_step(state) -> None:
        with open("/proc/self/maps") as maps:
            mapped.extend(line.split()[-1] for line in maps if str(out) in line or "/tokenized/" in line
                          and "/train/" in line)

    result = train_model(config, on_step=on_step)
    assert result.steps > 0 and mapped == []


# Teachers trained with different max lengths ----------------------------------------------------------------


@pytest.fixture
def two_lengths(tmp_path, tiny_model_dir):
    """A teacher trained at 64 tokens and one at 8: pair rows (and the longer sentences) are cut at 8, so what
    the short teacher says depends on where its rows are truncated."""
    specs = [Task.model_validate(s) for s in write_tiny_tasks(tmp_path / "data", n_train=20)]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    teachers = {}
    for seed, length in ((1, 64), (2, 8)):
        torch.manual_seed(seed)
        model = MultiTaskModel.from_backbone(str(tiny_model_dir), specs, max_length=length)
        model.save_pretrained(tmp_path / f"teacher{length}", tokenizer)
        teachers[length] = tmp_path / f"teacher{length}"
    data = DataConfig(tasks=["toy_sent", "toy_pair"], data_root=str(tmp_path / "data"), task_specs=specs,
                      cache_dir=str(tmp_path / "cache"))
    return teachers, data, tmp_path


def _own_outputs(teacher_dir, data, task: str, split: str, length: int) -> np.ndarray:
    """What the teacher itself says of the rows truncated at ``length`` (as `evaluate` runs it)."""
    from multidistill.data.collate import pad_id
    from multidistill.data.prepare import open_example_store
    from multidistill.evaluation.evaluate import predict
    from multidistill.models.backbone import load_tokenizer

    model, tokenizer = MultiTaskModel.from_pretrained(teacher_dir), load_tokenizer(str(teacher_dir))
    store = open_example_store(data, max_examples_per_task=None, seed=42)
    view = store.tokenized(task, split, tokenizer, length)
    return predict(model, store.tasks[task], view, batch_size=64, pad_token_id=pad_id(tokenizer),
                   device=torch.device("cpu")).reshape(len(view), -1)


def test_each_teacher_reads_rows_truncated_at_its_own_length_whatever_the_order(two_lengths):
    teachers, data, root = two_lengths
    orders = {"long-first": [teachers[64], teachers[8]], "short-first": [teachers[8], teachers[64]]}
    stores = {name: build_signal_store(dirs, data, root / name, splits=("train", "dev"))
              for name, dirs in orders.items()}
    for name, dirs in orders.items():
        store = stores[name]
        assert store.manifest["max_length"] == ([64, 8] if name == "long-first" else [8, 64])
        for task in ("toy_sent", "toy_pair"):
            for split in ("train", "dev"):
                logits = store.signals(task, split)[:]["teacher_logits"]
                for k, teacher in enumerate(dirs):
                    length = 64 if teacher == teachers[64] else 8
                    own = _own_outputs(teacher, data, task, split, length)
                    np.testing.assert_allclose(logits[:, k], own, rtol=0, atol=1e-5, err_msg=f"{name} {task}")
    # The store does not depend on the teachers' order: the same teacher gives the same logits and the mean is one.
    long_first, short_first = _contents(stores["long-first"]), _contents(stores["short-first"])
    for key, columns in long_first.items():
        other = short_first[key]
        assert columns["id"] == other["id"]
        np.testing.assert_allclose(columns["teacher_logits"], other["teacher_logits"][:, ::-1], rtol=0, atol=1e-6)
        np.testing.assert_allclose(columns["teacher_mean"], other["teacher_mean"], rtol=0, atol=1e-6)
    # Truncation matters here: the short teacher on rows cut at 64 says something else than on its own rows.
    cut_at_64 = _own_outputs(teachers[8], data, "toy_pair", "train", 64)
    assert not np.allclose(cut_at_64, long_first["toy_pair", "train"]["teacher_logits"][:, 1], atol=1e-4)


def test_a_given_max_seq_length_truncates_every_teachers_rows(two_lengths):
    teachers, data, root = two_lengths
    dirs = [teachers[64], teachers[8]]
    store = build_signal_store(dirs, data, root / "given", max_seq_length=16)
    assert store.manifest["max_length"] == 16
    logits = store.signals("toy_pair", "train")[:]["teacher_logits"]
    for k, teacher in enumerate(dirs):
        np.testing.assert_allclose(logits[:, k], _own_outputs(teacher, data, "toy_pair", "train", 16), rtol=0,
                                   atol=1e-5)
    assert store.fingerprint != build_signal_store(dirs, data, root / "own").fingerprint


def test_teachers_of_one_length_keep_the_fingerprint_stores_had(setting):
    """Teachers of one length (here 32) record that one length, as every store made before per-teacher lengths:
    such stores stay valid."""
    from multidistill.data.prepare import open_example_store
    from multidistill.models.backbone import load_tokenizer
    from multidistill.teachers.fingerprint import store_fingerprint
    from multidistill.teachers.store import STORE_VERSION

    teachers, data, out = setting
    store = build_signal_store(teachers, data, out)
    examples = open_example_store(data, max_examples_per_task=None, seed=42)
    data_fingerprints = {f"{t}/train": examples.data_fingerprint(t, "train") for t in data.task_names}
    tokenizers = [load_tokenizer(str(d)) for d in teachers]
    assert store.fingerprint == store_fingerprint(STORE_VERSION, teachers, tokenizers, data_fingerprints, 32)
    assert store.manifest["max_length"] == 32


def test_a_feature_store_of_teachers_of_other_lengths_is_refused_naming_the_key(two_lengths):
    from multidistill.errors import ConfigError

    teachers, data, root = two_lengths
    dirs = [teachers[64], teachers[8]]
    with pytest.raises(ConfigError, match=r"max_seq_length \(--max-seq-length\)"):
        build_signal_store(dirs, data, root / "features", hidden_layers=[1])
    assert not (root / "features").exists()
    store = build_signal_store(dirs, data, root / "features", hidden_layers=[1], max_seq_length=8)
    assert store.features.max_length == 8 and store.manifest["max_length"] == 8


def test_a_refused_store_says_which_part_of_its_training_data_differs():
    """The store records its data fingerprint's parts (`ExampleStore.data_parts`); a run refusing it names the cap,
    the seed, the files or the spec that differ, and, where a cap draws the rows, the soft-targets flags that draw
    the run's own."""
    from multidistill.training.run import _differing_parts, _subset_flags

    base = {"spec": "s", "content": "c", "limit": 200, "seed": 42, "rest": None}
    assert _differing_parts(base, {**base, "seed": 7}) == "the store's rows were drawn with seed 42, this run's with 7"
    assert _differing_parts({**base, "limit": None, "seed": None}, base) == (
        "the store kept every row of the training split, this run keeps up to 200 rows (max_examples_per_task, "
        "or the task's own max_examples)")
    assert _differing_parts(base, {**base, "content": "d", "spec": "t", "rest": "r"}) == (
        "the data files' contents differ; the task spec differs (labels, columns, files or type); the domain "
        "selection or the carved split differs")
    assert _differing_parts(base, base) == ""
    assert _subset_flags(base) == " (for this task: --max-examples-per-task 200 --seed 42)"
    assert _subset_flags({**base, "limit": None, "seed": None}) == ""
