"""The top-level Python API: every exported name resolves, `import multidistill` stays light, and `run` runs a
recipe as `multidistill run` does."""

from __future__ import annotations

import subprocess
import sys

import multidistill


def test_every_exported_name_resolves_to_its_module_object():
    for name in multidistill.__all__:
        assert getattr(multidistill, name) is not None, name
    from multidistill.training.run import train_model

    assert multidistill.train_model is train_model
    assert set(multidistill.__all__) <= set(dir(multidistill))


def test_an_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        multidistill.nope  # noqa: B018


def test_importing_the_package_loads_no_torch():
    code = "import sys, multidistill; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_run_runs_a_recipe_file_with_overrides(tiny_run, tmp_path):
    from tests.test_recipes import tiny_recipe, write

    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    summary = multidistill.run(write(recipe, tmp_path), ["teacher.seeds=[1]"])
    assert set(summary["rows"]) == {"teacher teacher-seed-1", "student"}, summary["rows"].keys()
    recorded = multidistill.load_recipe(tmp_path / "recipe" / "recipe.yaml")  # the override was applied
    assert recorded.teacher.seeds == [1]
