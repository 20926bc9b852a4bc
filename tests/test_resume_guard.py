"""`--resume` of a changed run (issue 14, class 3): a checkpoint records the run's settings; resuming with other
settings is refused naming the keys (safe ones are listed and accepted), a position outside the plan is an error
(never a hang), an incomplete checkpoint is refused by name, and nothing is written before the check passes.
Stage fingerprints record their defaults, so a changed default does not silently reuse an old stage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multidistill.config import DataConfig, ModelConfig, TeacherRunConfig, TrainConfig, load_config
from multidistill.errors import ConfigError
from multidistill.recipes.stages import StageRunner, settings_payload
from multidistill.training.run import train_model
from multidistill.training.run_settings import SAFE_TO_CHANGE, compare, run_settings


class Crash(Exception):
    pass


def _crash_at(step: int):
    def on_step(state) -> None:
        if state.step == step:
            raise Crash

    return on_step


def _snapshot(root: Path) -> dict[str, str | None]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


@contextlib.contextmanager
def _deadline(seconds: int):
    """Turn a hang into a failure."""
    def hang(*_):
        raise AssertionError(f"still running after {seconds} s: the resume hangs")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def cut_run(tiny_run):
    """A run cut by a crash at step 4 of 12 (mid-epoch: its checkpoint at step 3 has a non-zero position)."""
    raw, write = tiny_run
    raw["train"].update(epochs=1, max_examples_per_task=32, keep_checkpoints=2)
    config = load_config(write(raw))
    with pytest.raises(Crash):
        train_model(config, on_step=_crash_at(4))
    return config, Path(config.output_dir)


def test_changed_batch_size_is_refused_fast_and_nothing_is_written(cut_run):
    config, out = cut_run
    before = _snapshot(out)
    changed = config.model_copy(update={"train": config.train.model_copy(update={"batch_size": 64})})
    with _deadline(120), pytest.raises(ConfigError) as error:
        train_model(changed, resume=True)
    assert "key 'train.batch_size' was 8 in the checkpoint, now 64" in str(error.value)
    assert _snapshot(out) == before  # config.yaml included


def test_a_position_beyond_the_plan_is_an_error_not_a_hang(cut_run, monkeypatch):
    """The second guard: even past the settings check, the loop refuses a position outside its plan."""
    config, out = cut_run
    monkeypatch.setattr("multidistill.training.run.check_resume", lambda root, settings: [])
    changed = config.model_copy(update={"train": config.train.model_copy(update={"batch_size": 64})})
    with _deadline(120), pytest.raises(ConfigError) as error:
        train_model(changed, resume=True)
    assert "lies outside this run's plan" in str(error.value) and "step-000000003" in str(error.value)


def test_safe_changes_are_listed_and_the_run_goes_on(cut_run, capsys):
    config, out = cut_run
    train = config.train.model_copy(update={"log_every_steps": 5, "eval_every_steps": 4})
    result = train_model(config.model_copy(update={"train": train}), resume=True)
    printed = capsys.readouterr().out
    assert "key 'train.log_every_steps' was 2 in the checkpoint, now 5 (safe to change)" in printed
    assert "key 'train.eval_every_steps' was null in the checkpoint, now 4 (safe to change)" in printed
    assert "resumed from" in printed and result.steps == 12


def test_a_checkpoint_missing_loop_state_is_refused_naming_the_older_one(cut_run):
    config, out = cut_run
    (out / "checkpoints" / "step-000000003" / "loop_state.json").unlink()
    with pytest.raises(ConfigError) as error:
        train_model(config, resume=True)
    assert "step-000000003 is incomplete: loop_state.json missing" in str(error.value)
    assert "resume from the previous complete checkpoint" not in str(error.value)  # none is older

    # With an older complete checkpoint, the message names it (and resuming does not silently fall back).
    with pytest.raises(Crash):
        train_model(config.model_copy(update={"output_dir": str(out.parent / "two")}), on_step=_crash_at(7))
    (out.parent / "two" / "checkpoints" / "step-000000006" / "run_settings.json").unlink()
    with pytest.raises(ConfigError) as error:
        train_model(config.model_copy(update={"output_dir": str(out.parent / "two")}), resume=True)
    assert "run_settings.json missing" in str(error.value) and "step-000000003" in str(error.value)


# ---------------------------------------------------------------- property: every single change is handled


def _base() -> TeacherRunConfig:
    return TeacherRunConfig(output_dir="run", model=ModelConfig(name_or_path="bert"),
                            data=DataConfig(tasks=["toy_sent", "toy_pair"]))


def _fields() -> list[tuple[str, str, typing.Any]]:
    """(section, field, annotation) of every scalar-ish field of the model, data and train sections."""
    out = []
    for section, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
        out += [(section, name, info.annotation) for name, info in cls.model_fields.items()]
    return out


def _values(annotation) -> st.SearchStrategy:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return st.sampled_from(args)
    if type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return st.one_of(st.none(), *(_values(a) for a in inner))
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(0, 10_000)
    if annotation is float:
        return st.floats(0.001, 0.999)
    if annotation is str:
        return st.text("abcxyz/._-", min_size=1, max_size=8)
    if typing.get_origin(annotation) is list and typing.get_args(annotation) == (int,):
        return st.lists(st.integers(0, 12), max_size=3, unique=True).map(sorted)
    return st.sampled_from([["toy_sent"], ["toy_pair", "toy_sent"], [{"name": "toy_sent", "max_examples": 5}]])


@st.composite
def _single_change(draw):
    section, name, annotation = draw(st.sampled_from(_fields()))
    value = draw(_values(annotation))
    raw = _base().model_dump(mode="json")
    raw[section][name] = value
    try:
        changed = TeacherRunConfig.model_validate(raw)
    except Exception:  # noqa: BLE001 - an invalid value is no change to test
        changed = None
    return f"{section}.{name}", changed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_single_change())
def test_any_single_change_is_refused_naming_the_key_or_listed_as_safe(change):
    key, changed = change
    if changed is None:
        return
    data = {"toy_sent": "a", "toy_pair": "b"}
    refused, safe = compare(run_settings(_base(), data), run_settings(changed, data))
    if changed.model_dump() == _base().model_dump():
        assert not refused and not safe
        return
    lines = refused + safe
    assert lines and all(line.startswith(f"key '{key}") for line in lines), (key, lines)
    assert (refused and not safe) if key not in SAFE_TO_CHANGE else (safe and not refused)


def test_a_setting_added_later_at_its_default_is_not_a_change():
    data = {"toy_sent": "a"}
    current = run_settings(_base(), data)
    recorded = json.loads(json.dumps(current))
    del recorded["config"]["train.select"]  # as if the checkpoint predates the setting
    assert compare(recorded, current) == ([], [])
    changed = run_settings(_base().model_copy(update={"train": TrainConfig(select="last")}), data)
    assert compare(recorded, changed)[0] == ["key 'train.select' was (not set) in the checkpoint, now \"last\""]


def test_a_signal_store_rebuilt_in_place_is_refused_and_older_checkpoints_pass():
    data = {"toy_sent": "a"}
    recorded = run_settings(_base(), data, signals="f" * 64)
    assert compare(recorded, run_settings(_base(), data, signals="f" * 64)) == ([], [])
    refused, _ = compare(recorded, run_settings(_base(), data, signals="0" * 64))
    assert refused == ["the signal store at key 'signals' was rebuilt (fingerprint ffffffffffff in the checkpoint, "
                       "now 000000000000): its teachers' targets are not the ones trained on so far"]
    assert compare(run_settings(_base(), data), run_settings(_base(), data, signals="0" * 64)) == ([], [])



def test_an_online_teacher_retrained_in_place_is_refused():
    data = {"toy_sent": "a"}
    recorded = run_settings(_base(), data, online_teachers=["w1", None])
    assert compare(recorded, run_settings(_base(), data, online_teachers=["w1", None])) == ([], [])
    refused, _ = compare(recorded, run_settings(_base(), data, online_teachers=["w2", None]))
    assert refused == ["the weights of the teacher at key 'online_teachers.0' changed since the checkpoint"]
    assert compare(run_settings(_base(), data), run_settings(_base(), data, online_teachers=["w2"])) == ([], [])


# ------------------------------------------------------------------- stages: a changed default is seen


@pytest.fixture
def other_lr_default():
    """TrainConfig as a later version with another default learning rate would have it."""
    field = TrainConfig.model_fields["lr"]
    old = field.default
    field.default = 1e-4
    TrainConfig.model_rebuild(force=True)
    yield
    field.default = old
    TrainConfig.model_rebuild(force=True)


def _stage(root: Path) -> None:
    StageRunner(root).run("teacher", {"train": settings_payload(TrainConfig(epochs=2))}, {},
                          lambda folder, resume: folder.mkdir(parents=True, exist_ok=True))


def test_a_finished_stage_made_with_another_default_is_not_reused(tmp_path, request):
    _stage(tmp_path)
    _stage(tmp_path)  # same defaults: reused
    request.getfixturevalue("other_lr_default")
    with pytest.raises(ConfigError) as error:
        _stage(tmp_path)
    assert "the default of 'train.lr' was 5e-05, now 0.0001" in str(error.value)


def test_stages_recorded_before_defaults_were_keep_their_fingerprints(tmp_path):
    """The fingerprint leaves the recorded defaults out: finished stages of earlier versions stay valid."""
    _stage(tmp_path)
    manifest = tmp_path / "teacher" / "stage.json"
    record = json.loads(manifest.read_text())
    from multidistill.utils.hashing import hash_json
    assert record["fingerprint"] == hash_json({"stage": "teacher", "config": {"train": {"epochs": 2.0}},
                                               "inputs": {}})
    del record["config"]["train"]["__defaults__"]
    manifest.write_text(json.dumps(record))
    _stage(tmp_path)  # reused, not refused
