"""Two real gloo processes (torchrun) train the same model as one process with gradient accumulation.

With 2 processes each takes every 2nd batch of the shared plan and DDP averages their gradients; one
process accumulating 2 batches per step computes the same average. With dropout off, the weights agree
up to floating-point summation order.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import TINY_BERT, _vocab


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args: list[str], env: dict) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _initial(config: dict, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The weights both runs start from (same seed, same config)."""
    from accelerate.utils import set_seed

    from multidistill.config import TeacherRunConfig
    from multidistill.data.prepare import resolve_tasks
    from multidistill.models.build import build_model

    run = TeacherRunConfig.model_validate({**config, "output_dir": str(tmp_path / "init")})
    set_seed(run.train.seed)
    return dict(build_model(run.model, resolve_tasks(run.data)).state_dict())


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_accumulation(tiny_run, tmp_path):
    raw, write = tiny_run
    spec = {**TINY_BERT, "vocab_size": len(_vocab()), "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0}
    config = {**raw, "model": {**raw["model"], "backbone_config": spec, "dropout": 0.0},
              "train": {**raw["train"], "epochs": 1, "checkpoint_every_steps": 4, "eval_every_steps": None}}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cli = ["-m", "multidistill.cli", "train-teacher", str(path)]
    _run([sys.executable, *cli, "--set", f"output_dir={tmp_path / 'one'}", "--set", "train.grad_accum_steps=2"], env)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
          *cli, "--set", f"output_dir={tmp_path / 'two'}", "--set", "train.grad_accum_steps=1"], env)

    # One epoch, one evaluation: the saved best model is the final one in both runs.
    one = load_file(tmp_path / "one" / "model" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model" / "model.safetensors")
    assert one.keys() == two.keys()
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert worst < 1e-5, worst
    # Training moved the weights, so the comparison is not between two untouched models.
    start = _initial(config, tmp_path)
    moved = max(float((one[k] - start[k]).abs().max()) for k in one if k in start)
    assert moved > 1e-3
    # The logged training loss is over every process's batches: the same batches as one process accumulating two.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def logged(run: str) -> list[float]:
        events = EventAccumulator(str(tmp_path / run / "tensorboard"))
        events.Reload()
        return [event.value for event in events.Scalars("train/loss")]

    assert logged("one") == pytest.approx(logged("two"), rel=1e-4)


@pytest.mark.slow
def test_soft_targets_sharded_over_two_processes_equal_one_process(tiny_run, tmp_path, monkeypatch, capsys):
    from tests.test_cli import run_cli

    raw, write = tiny_run
    assert run_cli(monkeypatch, capsys, "train-teacher", str(write()), "--set", "train.epochs=0.5")[0] == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = ["-m", "multidistill.cli", "soft-targets", "--teacher", str(tmp_path / "run" / "model"),
            "--tasks", "toy_sent,toy_pair,toy_reg", "--data-root", raw["data"]["data_root"],
            "--cache-dir", str(tmp_path / "cache"), "--seed", "7", "--shard-size", "16", "--batch-size", "16"]
    _run([sys.executable, *args, "--out", str(tmp_path / "one")], env)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
          *args, "--out", str(tmp_path / "two")], env)
    from multidistill.teachers.store import open_signal_store

    one, two = open_signal_store(tmp_path / "one"), open_signal_store(tmp_path / "two")
    assert one.fingerprint == two.fingerprint
    for task in ("toy_sent", "toy_pair", "toy_reg"):
        a, b = one.signals(task, "train"), two.signals(task, "train")
        assert list(a["id"]) == list(b["id"])
        assert (abs(a["teacher_logits"][:] - b["teacher_logits"][:]) <= 1e-6).all()
    assert not (tmp_path / "two.partial").exists()


@pytest.mark.slow
def test_a_two_process_run_resumes_exactly_with_dropout_and_only_on_two_processes(tiny_run, tmp_path, monkeypatch,
                                                                                   capsys):
    """Each process's random state is in the checkpoint (dropout masks differ per process), and a checkpoint's
    position is one process's share of the epoch, so another process count is refused, not silently misread."""
    import shutil

    from multidistill.training.checkpoint import list_checkpoints
    from tests.test_cli import run_cli

    raw, _ = tiny_run
    spec = {**TINY_BERT, "vocab_size": len(_vocab()), "hidden_dropout_prob": 0.2}
    config = {**raw, "model": {**raw["model"], "backbone_config": spec, "dropout": 0.2},
              "train": {**raw["train"], "epochs": 1, "checkpoint_every_steps": 3, "keep_checkpoints": 50,
                        "log_every_steps": 2, "eval_every_steps": None}}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "multidistill.cli",
              "train-teacher", str(path)]
    _run([*launch[:4], f"--master_port={_free_port()}", *launch[4:], "--set", f"output_dir={tmp_path / 'whole'}"], env)

    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole", cut)
    checkpoints = list_checkpoints(cut / "checkpoints")
    assert len(checkpoints) >= 3
    for later in checkpoints[1:]:  # as if killed after the first checkpoint
        shutil.rmtree(later)
    shutil.rmtree(cut / "model")

    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(path), "--set", f"output_dir={cut}", "--resume")
    assert code == 2 and "written by a run on 2 process(es), this one has 1" in output, output
    assert not (cut / "model").exists()

    _run([*launch[:4], f"--master_port={_free_port()}", *launch[4:], "--set", f"output_dir={cut}", "--resume"], env)
    whole = load_file(tmp_path / "whole" / "model" / "model.safetensors")
    resumed = load_file(cut / "model" / "model.safetensors")
    assert max(float((whole[k] - resumed[k]).abs().max()) for k in whole) == 0.0
    # The loss curve too: each process's open log window (step 3 of the window 3-4) is in the checkpoint.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def logged(run) -> list[tuple[int, float]]:
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        return [(event.step, round(event.value, 6)) for event in events.Scalars("train/loss")]

    assert logged(cut) == logged(tmp_path / "whole")


def test_recipes_and_the_demo_refuse_several_processes(tmp_path, monkeypatch, capsys):
    from tests.test_cli import run_cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    recipe = Path(__file__).parents[1] / "configs" / "mtdnn_kd.yaml"
    code, output = run_cli(monkeypatch, capsys, "run", str(recipe), "--set", f"output_dir={tmp_path / 'run'}")
    assert code == 2 and "runs its stages in one process, and this launch started 2" in output, output
    code, output = run_cli(monkeypatch, capsys, "demo", "--set", f"output_dir={tmp_path / 'demo'}")
    assert code == 2 and "`multidistill demo` runs its stages in one process" in output, output
    assert not any(tmp_path.iterdir())


def test_sharded_launches_are_refused_before_anything_is_written(tiny_run, tmp_path, monkeypatch, capsys):
    from tests.test_cli import run_cli

    raw, write = tiny_run
    for variable, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        monkeypatch.setenv(variable, "true")
        code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()))
        assert code == 2 and f"this launch asks for {name} ({variable}=true)" in output, output
        assert not (tmp_path / "run").exists()
        monkeypatch.delenv(variable)
