"""Atomic writes give finished artifacts the mode the umask asks for, not tempfile's private 0600 / 0700."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from multidistill.utils.atomic import atomic_dir, atomic_file, current_umask, write_json


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_files_and_folders_get_the_umask_mode(umask, tmp_path):
    write_json(tmp_path / "metrics.json", {"a": 1})
    with atomic_file(tmp_path / "model.safetensors", "wb") as handle:
        handle.write(b"weights")
    with atomic_dir(tmp_path / "model") as folder:
        (folder / "config.json").write_text("{}")
        (folder / "sub").mkdir()
        save_file({"w": torch.zeros(2)}, str(folder / "sub" / "model.safetensors"))  # safetensors writes 0600
        with atomic_file(folder / "inner.bin", "wb") as handle:
            handle.write(b"x")
    with atomic_dir(tmp_path / "other") as folder:  # replacing an existing folder keeps the rule
        (folder / "config.json").write_text("{}")
    with atomic_dir(tmp_path / "other") as folder:
        (folder / "config.json").write_text("{}")
    assert _mode(tmp_path / "other") == 0o777 & ~umask

    assert _mode(tmp_path / "metrics.json") == 0o666 & ~umask
    assert _mode(tmp_path / "model.safetensors") == 0o666 & ~umask
    assert _mode(tmp_path / "model") == 0o777 & ~umask
    assert _mode(tmp_path / "model" / "config.json") == 0o666 & ~umask
    assert _mode(tmp_path / "model" / "inner.bin") == 0o666 & ~umask
    assert _mode(tmp_path / "model" / "sub") == 0o777 & ~umask
    assert _mode(tmp_path / "model" / "sub" / "model.safetensors") == 0o666 & ~umask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary sibling left


def test_a_trained_run_is_readable_by_others_under_umask_022(tiny_run, tmp_path):
    """Every file and folder a training run writes (model/, model.safetensors, metrics.json, config.yaml,
    checkpoints) is group/other readable under the usual umask."""
    from multidistill.config import TeacherRunConfig
    from multidistill.training.run import train_model

    raw, _ = tiny_run
    previous = os.umask(0o022)
    try:
        train_model(TeacherRunConfig.model_validate({**raw, "train": {**raw["train"], "epochs": 0.5}}))
    finally:
        os.umask(previous)
    run = tmp_path / "run"
    for name in ("model/model.safetensors", "metrics.json", "config.yaml"):
        assert (run / name).is_file(), name
    private = [str(p.relative_to(run)) for p in [run, *run.rglob("*")]
               if _mode(p) != (0o755 if p.is_dir() else 0o644) and not p.is_symlink()]
    assert private == []


def test_a_path_through_a_file_or_too_long_is_the_users_to_fix(tmp_path):
    """ENOTDIR, mkdir's EEXIST on a file, ENAMETOOLONG: one error line naming the path (they were tracebacks)."""
    import errno

    from multidistill.utils.atomic import is_write_error, write_error

    a_file = tmp_path / "data.tsv"
    a_file.write_text("x")
    with pytest.raises(FileExistsError) as made:  # what mkdir(parents=True, exist_ok=True) says of a file
        a_file.mkdir(parents=True, exist_ok=True)
    assert is_write_error(made.value) and "a part of the path is a file" in str(write_error(made.value))
    with pytest.raises(NotADirectoryError) as below:
        (a_file / "run").mkdir(parents=True)
    assert is_write_error(below.value)
    with pytest.raises(NotADirectoryError) as opened:
        (a_file / "out.json").open("w")
    assert is_write_error(opened.value) and "a part of the path is a file" in str(write_error(opened.value))
    too_long = OSError(errno.ENAMETOOLONG, "File name too long", "x" * 300)
    assert is_write_error(too_long) and "choose a shorter path" in str(write_error(too_long))
    existing_folder = FileExistsError(errno.EEXIST, "File exists", str(tmp_path))  # a folder: a bug, not the user's
    assert not is_write_error(existing_folder)


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dangling symlink"])
def test_an_output_path_holding_a_pipe_a_device_or_a_link_is_refused_and_left_alone(tmp_path, kind):
    """The rename replaced whatever stood at the path: `predict --output /dev/null` as root replaced the null
    device with a plain file, and a link to /proc/self/fd/1 with a file of the output."""
    from multidistill.errors import OutputError

    target, path = tmp_path / "real.json", tmp_path / "out.json"
    target.write_text("keep")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        path.symlink_to(target)
    else:
        path.symlink_to(tmp_path / "missing.json")
    before = os.lstat(path)
    with pytest.raises(OutputError, match=f"{path} is (a named pipe|a symbolic link), not a regular file"):
        write_json(path, {"a": 1})
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode) and target.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["real.json", "out.json"])  # no temp file left
    # A character device is refused alike (it cannot be made without privileges here: /dev/null is one).
    from multidistill.utils.atomic import refuse_special_file

    with pytest.raises(OutputError, match="/dev/null is a character device"):
        refuse_special_file(Path("/dev/null"))


def test_a_write_that_fails_takes_back_the_folders_it_made(tmp_path):
    """A failed write leaves no empty folders above it (a dry run refused for a missing data file left
    `.cache/multidistill/examples/<task>/train/`); folders that were there, or that hold something, stay."""
    from multidistill.utils.lock import hold_lock

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "other").write_text("kept")
    target = cache / "examples" / "sst2" / "train" / "key"
    with pytest.raises(RuntimeError), atomic_dir(target):
        raise RuntimeError("the data file is missing")
    with pytest.raises(RuntimeError), atomic_file(target / "meta.json"):
        raise RuntimeError("the data file is missing")
    assert sorted(p.name for p in cache.iterdir()) == ["other"]

    (cache / "examples" / "sst2").mkdir(parents=True)
    (cache / "examples" / "sst2" / "dev").mkdir()  # another split's: this write did not make it
    with pytest.raises(RuntimeError), atomic_dir(target):
        raise RuntimeError
    assert [p.name for p in (cache / "examples" / "sst2").iterdir()] == ["dev"]

    with atomic_dir(target) as tmp:
        (tmp / "rows").write_text("1")
    assert (target / "rows").is_file()

    # A lock's parents go with a command that wrote nothing beside them, and stay under one that did.
    with hold_lock(tmp_path / "runs" / "a" / "out", "output_dir"):
        assert (tmp_path / "runs" / "a").is_dir()
    assert not (tmp_path / "runs").exists()
    with hold_lock(tmp_path / "runs" / "a" / "out", "output_dir"):
        (tmp_path / "runs" / "a" / "out").mkdir()
    assert [p.name for p in (tmp_path / "runs" / "a").iterdir()] == ["out"]


def test_a_dry_run_refused_for_a_missing_data_file_leaves_no_cache_folders(tiny_run, tmp_path, monkeypatch, capsys):
    from tests.test_cli import run_cli
    from tests.test_recipes import tiny_recipe, write

    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["data"] = {**recipe["data"], "data_root": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), "--dry-run")
    assert code == 2 and "not found" in output, output
    assert not Path(recipe["data"]["cache_dir"]).exists() and not Path(recipe["output_dir"]).exists()


def test_a_writer_goes_on_when_a_failed_one_takes_back_the_folder_it_shares(tmp_path, monkeypatch):
    """Writer A made the folder and fails after writer B found it there but before B's temporary entry: A's
    cleanup removes the empty folder, and B makes it again rather than failing with FileNotFoundError."""
    import threading

    from multidistill.utils import atomic

    b_ready, a_done, result = threading.Event(), threading.Event(), {}
    stale_temps = atomic.remove_stale_temps

    def pause_b(folder, pattern):
        if threading.current_thread().name == "B":
            b_ready.set()
            a_done.wait(5)
        return stale_temps(folder, pattern)

    monkeypatch.setattr(atomic, "remove_stale_temps", pause_b)

    def b_dir(split):
        with atomic_dir(split / "k2") as tmp:
            (tmp / "rows").write_text("1")
        return (split / "k2" / "rows").read_text()

    def b_file(split):
        with atomic_file(split / "k2.json") as handle:
            handle.write("1")
        return (split / "k2.json").read_text()

    def writer_b(write, split):
        try:
            result["B"] = write(split)
        except BaseException as exc:  # the assertion below shows it
            result["B"] = repr(exc)

    for write in (b_dir, b_file):
        split = tmp_path / write.__name__ / "examples" / "t" / "train"  # made by A, found by B
        b_ready.clear(), a_done.clear()
        thread = threading.Thread(target=writer_b, args=(write, split), name="B")
        with pytest.raises(KeyboardInterrupt), atomic_dir(split / "k1"):
            thread.start()
            assert b_ready.wait(5)
            raise KeyboardInterrupt  # A is cut (or its data check fails) while B is between its two steps
        a_done.set()
        thread.join()
        assert result.pop("B") == "1"
