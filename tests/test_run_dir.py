"""Run folders (issue 14, classes 2 and 4): only our runs are resumed or overwritten, an --overwrite that stops
keeps a usable model, and one process at a time writes a run folder or a signal store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multidistill.config import TeacherRunConfig
from multidistill.errors import ConfigError
from multidistill.models import load_model
from multidistill.teachers.train import train_teacher
from multidistill.training.run_dir import RUN_MARKER, claim_output_dir, claim_run_root, is_run_dir
from multidistill.utils.lock import hold_lock, lock_path, refuse_if_locked

SRC = Path(__file__).resolve().parents[1] / "src"


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _fake_run(path: Path, weights: bytes = b"old") -> None:
    """A run folder as far as claiming is concerned: the marker, a config and a model."""
    (path / "model").mkdir(parents=True)
    (path / "model" / "model.safetensors").write_bytes(weights)
    (path / "config.yaml").write_text("seed: 1\n")
    (path / RUN_MARKER).write_text("{}")


# --- class 2: what is not a run is never resumed or overwritten -------------------------------------------------


@pytest.mark.parametrize("flags", [{}, {"overwrite": True}, {"resume": True}])
def test_a_data_folder_is_refused_and_left_intact(tmp_path, flags):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "train.tsv").write_text("sentence\tlabel\na\t1\n")
    (data / "sub" / "notes.txt").write_text("keep")
    before = _tree(tmp_path)
    with pytest.raises(ConfigError, match="is not a multidistill run"), \
            claim_output_dir(data, resume=flags.get("resume", False), overwrite=flags.get("overwrite", False)):
        pass
    assert _tree(tmp_path) == before  # nothing changed, not even a lock file left


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8),
                      min_size=1, max_size=5, unique_by=str.lower),
       marked=st.booleans(), overwrite=st.booleans(), resume=st.booleans())
def test_property_a_claim_changes_a_folder_only_if_it_is_a_run(tmp_path_factory, names, marked, overwrite, resume):
    """Any folder content: a claim either refuses and changes nothing, or the folder carried our marker."""
    root = tmp_path_factory.mktemp("claim")
    folder = root / "out"
    folder.mkdir()
    for name in names:
        (folder / name).write_text(name)
    if marked:
        (folder / RUN_MARKER).write_text("{}")
    before = _tree(root)
    try:
        with claim_output_dir(folder, resume=resume, overwrite=overwrite):
            pass
    except ConfigError as exc:
        assert _tree(root) == before
        assert ("not a multidistill run" in str(exc)) == (not is_run_dir(folder))
        return
    assert marked or is_run_dir(folder)
    if not resume:  # overwrite: a fresh run folder, the old one deleted only now that the new one finished
        assert sorted(p.name for p in folder.iterdir()) == [RUN_MARKER]
    assert [p.name for p in root.iterdir()] == ["out"]


def test_overwrite_that_stops_before_a_checkpoint_puts_the_old_run_back(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    with pytest.raises(RuntimeError) as info, claim_output_dir(run, resume=False, overwrite=True):
        assert not (run / "model").exists()  # the old run is aside while the new one runs
        (run / "config.yaml").write_text("seed: 2\n")
        raise RuntimeError("cut")
    assert (run / "model" / "model.safetensors").read_bytes() == b"old"
    assert (run / "config.yaml").read_text() == "seed: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert "holds the previous run again" in " ".join(getattr(info.value, "__notes__", []))


def test_overwrite_that_stops_after_a_checkpoint_keeps_both_until_the_new_one_finishes(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    with pytest.raises(RuntimeError) as info, claim_output_dir(run, resume=False, overwrite=True):
        (run / "checkpoints" / "checkpoint-3").mkdir(parents=True)
        raise RuntimeError("cut")
    aside = [p for p in tmp_path.iterdir() if p.name != "run"]
    assert len(aside) == 1 and (aside[0] / "model" / "model.safetensors").read_bytes() == b"old"
    assert str(aside[0]) in " ".join(info.value.__notes__)
    with claim_output_dir(run, resume=True, overwrite=False):  # --resume continues the new run ...
        assert aside[0].exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # ... and once it finished, the old one goes


def _claim_in_child(run: Path, then: str) -> subprocess.Popen:
    """A process that claims ``run`` (--overwrite), prints 'claimed', then runs ``then`` and sleeps."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from multidistill.training.run_dir import claim_output_dir
        run = Path({str(run)!r})
        with claim_output_dir(run, resume=False, overwrite=True):
            {then}
            print("claimed", flush=True)
            time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen([sys.executable, "-c", code, "train-teacher", "cfg.yaml"], stdout=subprocess.PIPE,
                             env=env, text=True)
    assert child.stdout.readline().strip() == "claimed"
    return child


def test_overwrite_killed_before_a_checkpoint_is_undone_by_the_next_claim(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    child = _claim_in_child(run, "(run / 'config.yaml').write_text('seed: 2')")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (run / "model").exists()  # the kill left the old run aside
    with claim_output_dir(run, resume=True, overwrite=False):
        assert (run / "model" / "model.safetensors").read_bytes() == b"old"
    assert (run / "config.yaml").read_text() == "seed: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_recipe_root_that_is_not_a_run_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text("x")
    with pytest.raises(ConfigError, match="not a multidistill run"), claim_run_root(data, legacy=("recipe.yaml",)):
        pass
    assert [p.name for p in data.iterdir()] == ["train.tsv"]
    with claim_run_root(tmp_path / "new", legacy=("recipe.yaml",)):
        assert (tmp_path / "new" / RUN_MARKER).is_file()


def test_export_overwrite_refuses_a_folder_that_is_not_an_export(tmp_path):
    from multidistill.export.hf import export_hf

    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("keep")
    with pytest.raises(ConfigError, match="holds no multidistill output"):
        export_hf(tmp_path / "model", out, overwrite=True)
    assert (out / "thesis.tex").read_text() == "keep"


def test_overwrite_of_a_real_run_that_fails_partway_leaves_the_old_model_loadable(tiny_run, tmp_path):
    raw, _ = tiny_run
    config = TeacherRunConfig.model_validate({**raw, "train": {**raw["train"], "epochs": 1}})
    train_teacher(config)
    weights = (tmp_path / "run" / "model" / "model.safetensors").read_bytes()

    def fail(state) -> None:
        if state.step == 2:  # before the first checkpoint (every 3 steps)
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        train_teacher(config, overwrite=True, on_step=fail)
    assert (tmp_path / "run" / "model" / "model.safetensors").read_bytes() == weights
    load_model(tmp_path / "run" / "model")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run")) == []


def test_a_run_that_fails_closes_its_tensorboard_writer(tiny_run, monkeypatch):
    # An open writer keeps a thread that flushes into tensorboard/ after the failed run's folder is cleaned up
    # (a FileNotFoundError in a stray thread, and a leaked file handle per failed run).
    from multidistill.training import loop

    closed = []

    class Recording(loop.SummaryWriter):
        def close(self) -> None:
            closed.append(True)
            super().close()

    monkeypatch.setattr(loop, "SummaryWriter", Recording)
    raw, _ = tiny_run

    def fail(state) -> None:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        train_teacher(TeacherRunConfig.model_validate(raw), on_step=fail)
    assert closed == [True]


# --- class 4: one writer per run folder --------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    child = _claim_in_child(run, "pass")
    try:
        with pytest.raises(ConfigError, match=rf"being written by another multidistill process \(pid {child.pid}"
                                              r".*train-teacher cfg.yaml"), \
                claim_output_dir(run, resume=True, overwrite=False):
            pass
        with pytest.raises(ConfigError, match="being written by another"), hold_lock(run, "output_dir"):
            pass
        with pytest.raises(ConfigError, match=rf"being written by another multidistill process \(pid {child.pid}"):
            refuse_if_locked(run, "output_dir")  # a dry run's check: reads the lock, takes nothing
    finally:
        child.kill()
        child.wait()
    refuse_if_locked(run, "output_dir")  # released with its holder
    refuse_if_locked(tmp_path / "elsewhere", "output_dir")  # no lock file: nothing to refuse, nothing written
    assert not lock_path(tmp_path / "elsewhere").exists()


def test_a_lock_left_by_a_killed_process_is_no_lock(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    child = _claim_in_child(run, "pass")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert lock_path(run).is_file()  # the file stays behind after a SIGKILL ...
    started = time.monotonic()
    with claim_output_dir(run, resume=True, overwrite=False):  # ... but the kernel released the flock
        assert str(os.getpid()) in lock_path(run).read_text()
    assert time.monotonic() - started < 5
    assert not lock_path(run).exists()  # released and removed
    assert (run / "model" / "model.safetensors").read_bytes() == b"old"  # the cut --overwrite was undone


# --- the kill harness's two kinds for this issue, once at small scale ---------------------------------------------


@pytest.mark.slow
def test_kills_during_an_overwrite_and_beside_a_refused_resume(tmp_path, tiny_model_dir):
    from concurrent.futures import ThreadPoolExecutor

    from tests.kill_harness import Kill, kill_and_resume_landed, make_world, stage_specs

    world = make_world(tmp_path / "world", tiny_model_dir)
    specs = stage_specs(world, epochs=1, checkpoint_every=3, eval_every=12, shard_size=16)
    plans = {"train-teacher-overwrite": [Kill("random"), Kill("write", r"^\.step-")],
             "train-teacher": [Kill("contend")]}
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(kill_and_resume_landed, specs[name], tmp_path / name, plan, seed=i,
                                     slow_writes=0.5, timeout=300, launcher="fork")
                   for i, (name, plan) in enumerate(plans.items())}
        reports = {name: future.result() for name, future in futures.items()}
    for name, report in reports.items():
        detail = [(a.kind, round(a.planned_delay, 2), a.killed, a.cut_writes, a.problems) for a in report.attempts]
        assert report.kills == len(plans[name]), detail
        assert report.unreadable == 0, detail  # incl. "a loadable model survives" and "the lock refused --resume"
        assert report.max_diff <= 1e-6, report.max_diff
        assert report.leftover_temps == [], report.leftover_temps


def test_a_folder_holding_only_a_cut_write_of_the_marker_counts_as_empty(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / f".{RUN_MARKER}.tmp-12345-abc").write_text("{")  # a kill inside the marker's own write
    with claim_output_dir(run, resume=False, overwrite=False):
        assert (run / RUN_MARKER).is_file()


def test_the_model_markers_are_the_files_models_and_exports_write():
    from multidistill.export.onnx_runtime import EXPORT_FILE
    from multidistill.models.multitask import MODEL_CONFIG_FILE
    from multidistill.training.run_dir import MODEL_MARKERS

    assert set(MODEL_MARKERS) == {MODEL_CONFIG_FILE, EXPORT_FILE}
