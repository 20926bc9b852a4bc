"""Data roots (issue 15): built-in tasks work from any folder, models remember where their data was.

Order: data.data_root / --data-root; a saved model's recorded root while it exists; $MULTIDISTILL_DATA_ROOT;
the current folder. A file that is not found says which of these to set.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from multidistill.config import DataConfig
from multidistill.data.prepare import open_example_store
from multidistill.data.readers import read_split
from multidistill.data.roots import DATA_ROOT_ENV, recorded_data_root, resolve_data_root
from multidistill.data.sample import SAMPLE_DATA_ROOT
from multidistill.data.tasks import get_task
from multidistill.errors import DataError
from tests.test_cli import run_cli


@pytest.fixture(autouse=True)
def _no_env_root(monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)


def test_builtin_task_from_another_folder_uses_the_environment_variable(tmp_path, monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "tasks")  # the task list says where its paths are read from
    assert code == 0 and DATA_ROOT_ENV in output and "data.data_root" in output
    monkeypatch.chdir(tmp_path)
    sst2 = get_task("sst2")
    with pytest.raises(DataError) as caught:
        read_split(sst2, "dev")
    message = str(caught.value)
    # Says where it looked, why there, and every way to point it elsewhere.
    assert "glue/SST-2/dev.tsv" in message and f"data root {tmp_path} (the current folder;" in message
    assert all(way in message for way in ("data.data_root", "--data-root", DATA_ROOT_ENV))

    monkeypatch.setenv(DATA_ROOT_ENV, str(SAMPLE_DATA_ROOT))
    assert len(read_split(sst2, "dev")) > 0
    # The config's default is the variable too; the config key still wins over it.
    store = open_example_store(DataConfig(tasks=["sst2"], cache_dir=str(tmp_path / "cache")),
                               max_examples_per_task=None, seed=0)
    assert store.data_root == SAMPLE_DATA_ROOT.absolute() and len(store.examples("sst2", "dev")) > 0
    with pytest.raises(DataError, match=r"data root .*elsewhere.*\(from data\.data_root"):
        open_example_store(DataConfig(tasks=["sst2"], data_root=str(tmp_path / "elsewhere"),
                                      cache_dir=str(tmp_path / "cache")), max_examples_per_task=None, seed=0
                           ).validate(["dev"])
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "moved"))
    with pytest.raises(DataError, match=rf"data root {tmp_path / 'moved'} \(from {DATA_ROOT_ENV}\)"):
        read_split(sst2, "dev")


def test_relative_and_package_roots_are_recorded_absolute_or_portable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root("data") == tmp_path / "data"
    assert recorded_data_root("data") == str(tmp_path / "data")
    assert recorded_data_root(None) == str(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "data").mkdir()
    assert recorded_data_root("runs/../data") == str(tmp_path / "data")  # the configs' `../shared/data` form
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere" / "deep")
    # Through a link `..` is the link target's parent, not the folder the text would suggest.
    assert os.path.samefile(recorded_data_root("link/.."), tmp_path / "elsewhere")
    assert recorded_data_root("pkg:multidistill/sample_data") == "pkg:multidistill/sample_data"
    assert resolve_data_root("pkg:multidistill/sample_data") == SAMPLE_DATA_ROOT.absolute()


def test_a_model_remembers_its_data_root(tiny_run, tmp_path, monkeypatch, capsys):
    from multidistill.config import TeacherRunConfig
    from multidistill.models import load_model
    from multidistill.training.run import train_model

    raw, _ = tiny_run
    data_root = tmp_path / "data"
    # Trained with a relative data root: the model records the absolute folder it resolved to.
    monkeypatch.chdir(tmp_path)
    train_model(TeacherRunConfig.model_validate({**raw, "data": {**raw["data"], "data_root": "data"},
                                                 "train": {**raw["train"], "epochs": 0.5}}))
    model_dir = tmp_path / "run" / "model"
    saved = json.loads((model_dir / "multidistill_model.json").read_text())
    assert saved["data_root"] == str(data_root)
    assert load_model(model_dir).data_root == str(data_root)  # and it loads back

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    code, output = run_cli(monkeypatch, capsys, "evaluate", str(model_dir), *cache)
    assert code == 0, output  # no --data-root needed

    # The recorded root is used while it exists; --data-root overrides it.
    other = tmp_path / "other"
    code, output = run_cli(monkeypatch, capsys, "evaluate", str(model_dir), "--data-root", str(other), *cache)
    assert code == 2 and f"data root {other} (from data.data_root" in " ".join(output.split())

    # Once the data has moved, the recorded root is skipped and the environment variable (else cwd) applies.
    moved = tmp_path / "moved"
    shutil.move(data_root, moved)
    code, output = run_cli(monkeypatch, capsys, "evaluate", str(model_dir), *cache)
    assert code == 2 and f"the current folder; {DATA_ROOT_ENV} is not set" in " ".join(output.split())
    monkeypatch.setenv(DATA_ROOT_ENV, str(moved))
    code, output = run_cli(monkeypatch, capsys, "evaluate", str(model_dir), *cache)
    assert code == 0, output
