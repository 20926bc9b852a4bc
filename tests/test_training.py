"""The training loop end to end on tiny data: metrics, artifacts, exact resume, output protection."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file

from multidistill.config import TeacherRunConfig
from multidistill.errors import ConfigError
from multidistill.models import MultiTaskModel
from multidistill.teachers.train import train_teacher
from multidistill.training.checkpoint import list_checkpoints


class Crash(Exception):
    """Stands in for a kill: raised from the step hook after the loop's own bookkeeping."""


def _config(raw: dict, **output) -> TeacherRunConfig:
    return TeacherRunConfig.model_validate({**raw, **output})


def _final_weights(output_dir) -> dict:
    return load_file(list_checkpoints(output_dir / "checkpoints")[-1] / "trainables.safetensors")


def _cut_at(config: TeacherRunConfig, step: int) -> None:
    """Train until the loop finishes ``step``, then stop as a kill would."""

    def crash(state):
        if state.step == step:
            raise Crash

    with pytest.raises(Crash):
        train_teacher(config, on_step=crash)


def _assert_same_weights(expected_dir, got_dir) -> None:
    expected, got = _final_weights(expected_dir), _final_weights(got_dir)
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] - got[name]).abs().max().item() == 0.0, name


def test_teacher_training_writes_model_metrics_and_logs(tiny_run, tmp_path):
    raw, _ = tiny_run
    result = train_teacher(_config(raw))
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"toy_sent", "toy_pair", "toy_reg"}
    assert set(metrics["tasks"]["toy_reg"]) == {"pearson", "spearman"}
    assert metrics["average"] == pytest.approx(result.best_score)
    assert metrics["train_examples"] == {"toy_sent": 96, "toy_pair": 96, "toy_reg": 96}
    assert (out / "tensorboard").is_dir() and any((out / "tensorboard").iterdir())
    assert (out / "config.yaml").is_file()
    history = json.loads((out / "train_history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]  # one eval at the end of each epoch
    model = MultiTaskModel.from_pretrained(out / "model")
    assert set(model.heads) == {"toy_sent", "toy_pair", "toy_reg"}
    # The toy sentiment task is learnable: the teacher must beat chance clearly.
    assert max(h["main"]["toy_sent"] for h in history) > 0.7


def test_the_loop_steps_with_the_fused_adamw_kernel(tiny_run, monkeypatch):
    """One pass per tensor (issue 16 profile: the unfused step was a third of a distillation step on CPU)."""
    import torch

    made = []

    class Recording(torch.optim.AdamW):
        def __init__(self, *args, **kwargs) -> None:
            made.append(kwargs.get("fused"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    raw, _ = tiny_run
    result = train_teacher(_config(raw, train={**raw["train"], "epochs": 0.5}))
    assert made == [True] and result.steps > 0


@pytest.mark.parametrize("group_by_length", [False, True])
def test_resume_after_a_crash_ends_with_the_same_weights_as_an_uncut_run(tiny_run, tmp_path, group_by_length):
    raw, _ = tiny_run
    raw = {**raw, "train": {**raw["train"], "group_by_length": group_by_length}}
    uncut = train_teacher(_config(raw, output_dir=str(tmp_path / "uncut")))

    cut_config = _config(raw, output_dir=str(tmp_path / "cut"))
    _cut_at(cut_config, 8)
    # The newest checkpoint is older than the crash, so steps after it are replayed.
    assert list_checkpoints(tmp_path / "cut" / "checkpoints")[-1].name == "step-000000006"
    time.sleep(1.1)  # event files made in one second by one process can sort out of order (see below)
    resumed = train_teacher(cut_config, resume=True)

    assert resumed.steps == uncut.steps
    _assert_same_weights(tmp_path / "uncut", tmp_path / "cut")
    assert resumed.best_metrics == uncut.best_metrics
    # The training loss logged: the checkpoint holds the open log window, and the cut run's steps after that
    # checkpoint are purged, so the curve is the uncut run's, once.
    assert _logged_losses(tmp_path / "cut") == _logged_losses(tmp_path / "uncut")


def test_a_resume_from_a_checkpoint_inside_a_log_window_logs_the_uncut_curve(tiny_run, tmp_path):
    raw, _ = tiny_run  # log every 2 steps, checkpoint every 3: the step-3 checkpoint holds the window of step 3
    train_teacher(_config(raw, output_dir=str(tmp_path / "uncut")))
    cut_config = _config(raw, output_dir=str(tmp_path / "cut"))
    _cut_at(cut_config, 5)
    assert list_checkpoints(tmp_path / "cut" / "checkpoints")[-1].name == "step-000000003"
    time.sleep(1.1)  # event files made in one second by one process can sort out of order (see below)
    train_teacher(cut_config, resume=True)
    _assert_same_weights(tmp_path / "uncut", tmp_path / "cut")
    assert _logged_losses(tmp_path / "cut") == _logged_losses(tmp_path / "uncut")


def test_a_resume_before_the_first_checkpoint_logs_the_curve_once(tiny_run, tmp_path):
    raw, _ = tiny_run
    train_teacher(_config(raw, output_dir=str(tmp_path / "uncut")))
    cut_config = _config(raw, output_dir=str(tmp_path / "cut"))
    _cut_at(cut_config, 2)  # logged step 2; the first checkpoint is at step 3
    assert not list_checkpoints(tmp_path / "cut" / "checkpoints")
    # TensorBoard reads event files in name order, and a name holds the second it was made and a per-process
    # counter: within one second and one process (never so for a real resume) ".10" would sort before ".9".
    time.sleep(1.1)
    train_teacher(cut_config, resume=True)  # starts at step 0 again: what the cut run logged is purged
    assert _logged_losses(tmp_path / "cut") == _logged_losses(tmp_path / "uncut")


def _logged_losses(run_dir) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(event.step, round(event.value, 6)) for event in events.Scalars("train/loss")]


def test_min_steps_adds_passes_over_small_data_and_resumes_exactly(tiny_run, tmp_path):
    """train.min_steps: 0.1 epoch of 36 steps would be 4 steps; the floor makes 40, across an epoch end, and a
    run cut after that epoch end resumes to the same weights."""
    from multidistill.training.schedule import planned_steps

    raw, _ = tiny_run
    raw = {**raw, "train": {**raw["train"], "epochs": 0.1, "min_steps": 40}}
    assert planned_steps(_config(raw).train, 36) == 40
    assert planned_steps(_config({**raw, "train": {**raw["train"], "min_steps": 3}}).train, 36) == 4
    for epochs, per_epoch, steps in ((10 + 200 / 15, 15, 350), (10 + 150 / 18, 18, 330), (0.5, 7, 4)):  # float error
        assert planned_steps(_config({**raw, "train": {**raw["train"], "epochs": epochs, "min_steps": None}}).train,
                             per_epoch) == steps
    uncut = train_teacher(_config(raw, output_dir=str(tmp_path / "uncut")))
    assert uncut.steps == 40
    history = json.loads((tmp_path / "uncut" / "train_history.json").read_text())
    assert [(h["step"], h["epoch"]) for h in history] == [(36, 1), (40, 1)]

    cut_config = _config(raw, output_dir=str(tmp_path / "cut"))
    _cut_at(cut_config, 38)
    resumed = train_teacher(cut_config, resume=True)
    assert resumed.steps == 40
    _assert_same_weights(tmp_path / "uncut", tmp_path / "cut")


def test_eval_each_epoch_off_evaluates_once_and_trains_the_same_model(tiny_run, tmp_path):
    """Meta-KD's stage A: no per-epoch evaluation of an untrained head; the last model is the same either way."""
    from pydantic import ValidationError

    raw, _ = tiny_run
    raw = {**raw, "train": {**raw["train"], "epochs": 3, "select": "last"}}
    each = train_teacher(_config(raw, output_dir=str(tmp_path / "each")))
    once = train_teacher(_config({**raw, "train": {**raw["train"], "eval_each_epoch": False}},
                                 output_dir=str(tmp_path / "once")))
    assert [h["epoch"] for h in json.loads((tmp_path / "each" / "train_history.json").read_text())] == [1, 2, 3]
    history = json.loads((tmp_path / "once" / "train_history.json").read_text())
    assert [(h["step"], h["epoch"]) for h in history] == [(once.steps, 3)]
    assert once.steps == each.steps and once.best_metrics == each.best_metrics
    expected, got = load_file(tmp_path / "each" / "model" / "model.safetensors"), \
        load_file(tmp_path / "once" / "model" / "model.safetensors")
    assert expected.keys() == got.keys() and all(expected[k].equal(got[k]) for k in expected)
    # Every epoch end still checkpoints, so a cut run resumes as before.
    assert len(list_checkpoints(tmp_path / "once" / "checkpoints")) >= 1
    # An evaluation only at the end leaves best_metric nothing to choose from: refused, naming the way out.
    with pytest.raises(ValidationError, match="select: best_metric has nothing to choose from"):
        _config({**raw, "train": {**raw["train"], "eval_each_epoch": False, "select": "best_metric"}})
    _config({**raw, "train": {**raw["train"], "eval_each_epoch": False, "select": "best_metric",
                              "eval_every_steps": 4}})


def test_resume_of_a_finished_run_changes_nothing(tiny_run, tmp_path):
    raw, _ = tiny_run
    config = _config(raw)
    first = train_teacher(config)
    again = train_teacher(config, resume=True)
    assert again.steps == first.steps and again.best_metrics == first.best_metrics


def test_an_existing_run_is_not_overwritten_without_consent(tiny_run, tmp_path):
    raw, _ = tiny_run
    config = _config(raw, train={**raw["train"], "epochs": 1})
    train_teacher(config)
    weights = (tmp_path / "run" / "model" / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        train_teacher(config)
    assert (tmp_path / "run" / "model" / "model.safetensors").read_bytes() == weights
    train_teacher(config, overwrite=True)


@pytest.mark.parametrize("sampling", ["temperature", "round_robin"])
def test_other_sampling_strategies_train(tiny_run, sampling):
    raw, _ = tiny_run
    result = train_teacher(_config(raw, train={**raw["train"], "epochs": 1, "sampling": sampling,
                                               "grad_accum_steps": 2}))
    assert result.steps > 0 and result.best_score == result.best_score  # not NaN


def test_bf16_autocast_trains_and_warns_without_native_support(tiny_run, monkeypatch):
    raw, _ = tiny_run
    monkeypatch.setattr("multidistill.training.device.cpu_has_fast_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        result = train_teacher(_config(raw, train={**raw["train"], "epochs": 0.1, "bf16": True}))
    assert result.steps > 0 and result.best_score == result.best_score
    from multidistill.evaluation.run import evaluate_model_dir

    with pytest.warns(UserWarning, match="--bf16 is on but this CPU has no native bf16"):
        evaluate_model_dir(result.model_dir, tasks="toy_sent", bf16=True, progress=False)


def test_every_bf16_switch_warns_on_a_cpu_without_native_bf16(monkeypatch):
    """evaluate --bf16, soft-targets --bf16 and a recipe's signals.bf16 ran 7-20x slower in silence: they take their
    Accelerator from `bf16_accelerator`, which names the switch (evaluate's call is checked in the test above)."""
    import warnings
    from types import SimpleNamespace

    from multidistill.training import device

    monkeypatch.setattr(device, "accelerator_for",
                        lambda precision: SimpleNamespace(device=torch.device("cpu"), precision=precision))
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    with pytest.warns(UserWarning, match=r"signals.bf16 is on but this CPU has no native bf16 .* consider "
                                         r"signals.bf16=false"):
        assert device.bf16_accelerator(True, "signals.bf16", "signals.bf16=false").precision == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device.bf16_accelerator(False, "signals.bf16", "signals.bf16=false").precision == "no"
        monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
        assert device.bf16_accelerator(True, "signals.bf16", "signals.bf16=false").precision == "bf16"


def test_cpu_name_reads_the_model_name_lscpu_prints(tmp_path, monkeypatch):
    from pathlib import Path

    from multidistill.training import device

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n")
    real_path = Path
    monkeypatch.setattr(device, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    assert device.cpu_name() == "Intel(R) Xeon(R) Processor"
    cpuinfo.write_text("processor\t: 0\n")  # no model name (some ARM kernels): what platform knows
    assert device.cpu_name() == (device.platform.processor() or device.platform.machine())
