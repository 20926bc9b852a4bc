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
