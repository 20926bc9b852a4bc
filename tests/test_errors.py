"""Issue 14, classes 5, 6 and 8: a clear error instead of a traceback (bounded numbers, finite labels, OS errors on
write, a diverging loss), nothing the user configured silently ignored (pair / text_b, max_seq_length, a task spec
or a YAML key given twice), and interrupts of `train-teacher` / `distill` that say where they stopped.

The bad inputs that need no monkeypatching are catalogue cases (tests/bad_inputs/cases.py, end of the list)."""

from __future__ import annotations

import copy
import errno
import json
import math
import os
import signal
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from multidistill.config import TrainConfig, read_yaml
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, OutputError
from multidistill.utils.atomic import atomic_dir, write_json
from tests.test_bad_inputs import SIGNAL_OBJECTIVE, bad_input_assets  # noqa: F401 - the store fixture
from tests.test_cli import run_cli

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _strict_json(path: Path):
    """Parse as JSON proper: bare NaN / Infinity (Python's extension) is an error."""

    def refuse(token: str):
        raise ValueError(f"{path}: bare {token} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _one_error(output: str) -> str:
    assert "Traceback" not in output, output
    assert output.count("error:") == 1, output
    return output[output.index("error:"):].splitlines()[0]


def _no_temporaries(root: Path) -> None:
    left = [p for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    assert not left, left


# --- class 5: numbers, JSON, OS errors, divergence ---------------------------------------------------------


@PROPERTY
@given(field=st.sampled_from(["epochs", "lr", "weight_decay", "max_grad_norm", "warmup_ratio", "temperature_tau",
                              "holdout_fraction"]),
       value=st.floats(allow_nan=True, allow_infinity=True))
def test_train_floats_are_finite_or_refused(field: str, value: float) -> None:
    choice = {"holdout_fraction": {"select": "lowest_loss"}, "temperature_tau": {"sampling": "temperature"}}
    try:
        config = TrainConfig(**{field: value, **choice.get(field, {})})
    except ValidationError as exc:
        assert exc.errors()[0]["loc"] == (field,)
        return
    assert math.isfinite(getattr(config, field))


@PROPERTY
@given(seed=st.one_of(st.integers(), st.integers(min_value=2**32 - 3, max_value=2**32 + 3),
                      st.integers(min_value=-3, max_value=3)))
def test_seeds_are_accepted_exactly_in_range(seed: int) -> None:
    fits = 0 <= seed <= 2**32 - 1
    for build in (lambda: TrainConfig(seed=seed),
                  lambda: __import__("multidistill.config", fromlist=["DataConfig"]).DataConfig(
                      tasks=["sst2"], subset_seed=seed)):
        try:
            build()
        except ValidationError:
            assert not fits
        else:
            assert fits


@PROPERTY
@given(payload=st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=20))
def test_write_json_writes_only_valid_json(tmp_path_factory, payload) -> None:
    path = tmp_path_factory.mktemp("json") / "out.json"
    write_json(path, payload)
    read = _strict_json(path)

    def same(written, back) -> bool:
        if isinstance(written, float) and not math.isfinite(written):
            return back is None  # NaN/inf deliberately become null
        if isinstance(written, dict):
            return list(written) == list(back) and all(same(written[k], back[k]) for k in written)
        if isinstance(written, (list, tuple)):
            return len(written) == len(back) and all(same(a, b) for a, b in zip(written, back, strict=True))
        return written == back

    assert same(payload, read)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_os_error_in_an_atomic_write_names_the_path_and_leaves_nothing(tmp_path, monkeypatch, code) -> None:
    target = tmp_path / "out" / "model"
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst) == target:
            raise OSError(code, os.strerror(code))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OutputError) as caught, atomic_dir(target) as tmp:
        (tmp / "weights").write_text("x")
    message = str(caught.value)
    assert str(target) in message and os.strerror(code) in message and errno.errorcode[code] in message
    assert list((tmp_path / "out").iterdir()) == []  # no temporary folder, no half model


def _train_config(tiny_run, tmp_path, **train) -> Path:
    raw, write = tiny_run
    raw["train"].update(epochs=1, max_examples_per_task=24, checkpoint_every_steps=3, **train)
    return write(raw)


def test_disk_full_mid_run_is_one_line(tiny_run, tmp_path, monkeypatch, capsys) -> None:
    """ENOSPC while a checkpoint is renamed into place: exit 2, one line naming the path and the cause, the
    step it stopped at, and no temporary folder left."""
    config = _train_config(tiny_run, tmp_path)
    real_replace = os.replace

    def disk_full(src, dst):
        if Path(dst).name == "step-000000006":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", disk_full)
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(config))
    line = _one_error(output)
    assert code == 2, output
    assert "cannot write" in line and "step-000000006" in line and "No space left on device (ENOSPC)" in line, line
    assert "training stopped at step 6" in output and "last checkpoint: step 3" in output, output
    _no_temporaries(tmp_path / "run")


def test_read_only_output_folder_is_one_line(tiny_run, tmp_path, monkeypatch, capsys) -> None:
    """A plain mkdir (outside the atomic writers) on a read-only file system: the CLI's central catch."""
    config = _train_config(tiny_run, tmp_path)
    out = tmp_path / "run"
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self == out:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(config))
    line = _one_error(output)
    assert code == 2, output
    assert f"cannot write {out}: Read-only file system (EROFS)" in line, line
    assert not out.exists()


def _nan_at(monkeypatch, calls: set[int]) -> None:
    """Make the objective's loss NaN on the given forward calls (1-based), as a diverging run would."""
    from multidistill.training import loop

    real_forward, seen = loop._Trainables.forward, [0]

    def forward(self, batch):
        out = real_forward(self, batch)
        seen[0] += 1
        if seen[0] in calls:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(loop._Trainables, "forward", forward)


def test_nan_loss_stops_cleanly(tiny_run, tmp_path, monkeypatch, capsys) -> None:
    config = _train_config(tiny_run, tmp_path)
    _nan_at(monkeypatch, {5})
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(config))
    line = _one_error(output)
    assert code == 2, output
    assert "training diverged: loss nan at step 5 (task '" in line, line
    assert "train.on_nonfinite: skip" in line
    assert "training stopped at step 4" in output and "last checkpoint: step 3" in output, output
    run = tmp_path / "run"
    assert not (run / "metrics.json").exists() and not (run / "train_history.json").exists()
    for path in run.rglob("*.json"):
        _strict_json(path)
    _no_temporaries(run)


def test_nan_loss_skipped_is_counted(tiny_run, tmp_path, monkeypatch, capsys) -> None:
    config = _train_config(tiny_run, tmp_path, on_nonfinite="skip")
    _nan_at(monkeypatch, {2, 5})
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(config))
    assert code == 0, output
    assert "2 of 9 steps had a NaN/inf loss or gradient and were skipped" in output, output
    run = tmp_path / "run"
    assert _strict_json(run / "train_summary.json")["skipped_steps"] == 2
    assert _strict_json(run / "metrics.json")["best_step"] >= 0
    assert all(math.isfinite(r["average"]) for r in _strict_json(run / "train_history.json"))


# --- class 6: nothing the user configured is dropped silently ------------------------------------------------


def _pair_spec(**extra) -> dict:
    return {"name": "p", "labels": ["0", "1"], **extra,
            "files": {"train": {"path": "p/train.tsv", "columns": {"text_a": "s1", "text_b": "s2", "label": "y"}},
                      "dev": {"path": "p/dev.tsv", "columns": {"text_a": "s1", "text_b": "s2", "label": "y"}}}}


def test_mapped_text_b_makes_a_pair_task_and_pair_false_is_refused(tmp_path) -> None:
    from multidistill.data.readers import read_split

    task = Task.model_validate(_pair_spec())
    assert task.pair
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "train.tsv").write_text("s1\ts2\ty\na film\tthe film\t1\n")
    assert read_split(task, "train", tmp_path)["text_b"] == ["the film"]
    with pytest.raises(ValidationError, match="columns.text_b is mapped but pair is false"):
        Task.model_validate(_pair_spec(pair=False))


def test_max_seq_length_must_hold_the_special_tokens(tiny_model_dir) -> None:
    from multidistill.data.prepare import check_min_length
    from multidistill.models.backbone import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    single, pair = Task.model_validate({"name": "s", "labels": ["0", "1"]}), Task.model_validate(_pair_spec())
    check_min_length(tokenizer, 3, [single])
    check_min_length(tokenizer, 5, [single, pair])
    for length, tasks in ((2, [single]), (4, [single, pair]), (1, [single])):
        with pytest.raises(ConfigError, match=f"{length} is too short"):
            check_min_length(tokenizer, length, tasks)


# A prefix keeps YAML 1.1's words (no, on, null, ...) from being read as booleans or null.
_KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", max_size=8).map(lambda text: f"k{text}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(_KEYS, min_size=1, max_size=8, unique=True), data=st.data())
def test_a_yaml_key_given_twice_is_refused_naming_both_lines(tmp_path_factory, keys, data) -> None:
    nested = data.draw(st.booleans())
    values = data.draw(st.lists(st.integers(), min_size=len(keys), max_size=len(keys)))
    lines = [f"{key}: {value}" for key, value in zip(keys, values, strict=True)]
    twice = data.draw(st.none() | st.integers(min_value=0, max_value=len(keys) - 1))
    if twice is not None:
        at = data.draw(st.integers(min_value=twice + 1, max_value=len(lines)))
        lines.insert(at, f"{keys[twice]}: 0")
    if nested:
        lines = ["section:"] + [f"  {line}" for line in lines]
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_text("\n".join(lines) + "\n")
    if twice is None:
        loaded = read_yaml(path)
        assert (loaded["section"] if nested else loaded) == dict(zip(keys, values, strict=True))
        return
    with pytest.raises(ConfigError) as caught:
        read_yaml(path)
    first, second = twice + 1 + nested, at + 1 + nested
    message = str(caught.value)
    assert f"line {second} invalid YAML" in message and f"first on line {first}" in message, message
    assert f"key {keys[twice]!r} is given twice" in message


def test_duplicate_keys_in_flow_mappings_and_merge_keys(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: {x: 1, x: 2}\n")
    with pytest.raises(ConfigError, match="key 'x' is given twice"):
        read_yaml(path)
    path.write_text("base: &b {x: 1}\nd:\n  <<: *b\n  x: 2\n")  # overriding a merged key is what merges are for
    assert read_yaml(path)["d"] == {"x": 2}


# --- class 8: interrupts of train-teacher and distill say where and how to resume -----------------------------


def _interrupt_after_checkpoint(monkeypatch, step: int, signum: int) -> None:
    """Deliver a real signal to this process right after checkpoint ``step`` is written."""
    from multidistill.training import loop

    real_save = loop.save_checkpoint

    def save(root, at, *args, **kwargs):
        real_save(root, at, *args, **kwargs)
        if at == step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(loop, "save_checkpoint", save)


def test_interrupted_train_teacher_says_where_and_resumes(tiny_run, tmp_path, monkeypatch, capsys) -> None:
    config = _train_config(tiny_run, tmp_path)
    _interrupt_after_checkpoint(monkeypatch, 3, signal.SIGINT)
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(config), "--overwrite")
    assert code == 130, output
    assert "interrupted (SIGINT, Ctrl-C)" in output and "Traceback" not in output
    assert "training stopped at step 3 of 9; last checkpoint: step 3" in output, output
    assert f"to resume: multidistill train-teacher {config} --resume" in output, output
    monkeypatch.undo()
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(config), "--resume")
    assert code == 0 and "(step 3/9)" in output, output


def test_interrupted_distill_says_where(tiny_run, tmp_path, monkeypatch, capsys, bad_input_assets) -> None:  # noqa: F811
    raw, write = tiny_run
    raw.update(kind="distill", signals=str(bad_input_assets / "store"), objective=copy.deepcopy(SIGNAL_OBJECTIVE))
    raw["train"].update(epochs=1, checkpoint_every_steps=3)  # the store holds every training row
    config = write(raw)
    _interrupt_after_checkpoint(monkeypatch, 3, signal.SIGTERM)
    code, output = run_cli(monkeypatch, capsys, "distill", str(config), "--overwrite")
    assert code == 128 + signal.SIGTERM, output
    assert "interrupted (SIGTERM)" in output and "Traceback" not in output
    assert "training stopped at step 3 of" in output and "last checkpoint: step 3" in output, output
    assert f"to resume: multidistill distill {config} --resume" in output, output


def test_yaml_safe_dump_of_the_catalogue_config_has_no_duplicates(tiny_run) -> None:
    """The configs the tests write are themselves accepted by the stricter loader."""
    raw, write = tiny_run
    assert read_yaml(write(raw)) == yaml.safe_load(write(raw).read_text())


def _swallowing(signum: int):
    """Library code that catches the interrupt raised inside it and raises its own error, as torch.load,
    safetensors and pyarrow sometimes do when Ctrl-C lands in them."""
    def call(*args, **kwargs):
        try:
            os.kill(os.getpid(), signum)
        except BaseException as exc:  # noqa: BLE001 - what the library does
            raise RuntimeError("could not determine the shape of object type 'torch.storage.UntypedStorage'") from exc
    return call


def test_an_interrupt_inside_a_load_is_reported_as_an_interrupt_not_a_damaged_file(tiny_run, tmp_path, monkeypatch,
                                                                                    capsys) -> None:
    from multidistill.models import multitask
    from multidistill.training import checkpoint

    config = _train_config(tiny_run, tmp_path)
    assert run_cli(monkeypatch, capsys, "train-teacher", str(config), "--overwrite")[0] == 0
    # --resume reading its checkpoint: the advice was "delete it", which with keep_checkpoints 1 lost the run.
    monkeypatch.setattr(checkpoint, "load_model", _swallowing(signal.SIGINT))
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(config), "--resume")
    assert code == 130 and "interrupted (SIGINT, Ctrl-C)" in output, output
    assert "unreadable" not in output and "delete" not in output and "to resume: multidistill train-teacher" in output
    monkeypatch.undo()
    # Loading a model's weights (evaluate): SIGTERM, and not "the file is corrupt".
    monkeypatch.setattr(multitask, "safe_open", _swallowing(signal.SIGTERM))
    code, output = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "run" / "model"))
    assert code == 128 + signal.SIGTERM and "interrupted (SIGTERM)" in output, output
    assert "corrupt" not in output and "Traceback" not in output
    monkeypatch.undo()
    # The same errors without a signal are still the damaged-file errors.
    monkeypatch.setattr(multitask, "safe_open", _swallowing_nothing)
    code, output = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "run" / "model"))
    assert code == 2 and "cannot read weights" in output and "corrupt" in output, output


def _swallowing_nothing(*args, **kwargs):
    raise RuntimeError("header too large")


def test_an_interrupt_that_becomes_another_exception_is_still_an_interrupt(tiny_run, tmp_path, monkeypatch, capsys):
    from multidistill.training import run

    config = _train_config(tiny_run, tmp_path)
    # e.g. pyarrow's ArrowInvalid from a read Ctrl-C cut short, in code that wraps nothing: no traceback.
    monkeypatch.setattr(run, "prepare_data", _swallowing(signal.SIGINT))
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(config), "--overwrite")
    assert code == 130 and "interrupted (SIGINT, Ctrl-C)" in output and "Traceback" not in output, output


def test_raise_if_interrupted_reads_only_its_own_block() -> None:
    from multidistill.utils.interrupt import Interrupted, raise_if_interrupted, signals_raise_interrupted

    raise_if_interrupted()  # outside any block: nothing
    with signals_raise_interrupted() as arrived:
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGTERM)
        with pytest.raises(Interrupted) as again:  # swallowed code running on is stopped at the next check
            raise_if_interrupted()
        assert again.value.signum == signal.SIGTERM
    assert arrived == [signal.SIGTERM]
    raise_if_interrupted()  # the block is over: a later error in the same process is not an interrupt
    with signals_raise_interrupted() as outer:  # a nested block shares what arrived with its outer block
        with signals_raise_interrupted() as inner, pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGINT)
        assert inner is outer and outer == [signal.SIGINT]
        with pytest.raises(Interrupted):
            raise_if_interrupted()
    with signals_raise_interrupted():
        raise_if_interrupted()  # a new block starts clean
