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


def test_a_config_edited_by_model_copy_is_checked_before_the_run(tiny_run, tmp_path):
    import pytest

    from multidistill.errors import ConfigError

    raw, _ = tiny_run
    config = multidistill.TeacherRunConfig.model_validate(raw)
    # model_copy skips validation: this pair is refused when loaded, and was trained without a word.
    bad = config.model_copy(update={"train": config.train.model_copy(
        update={"sampling": "round_robin", "temperature_tau": 0.9})})
    with pytest.raises(ConfigError, match="temperature_tau"):
        multidistill.train_model(bad)
    assert not (tmp_path / "run").exists()


def test_paths_are_accepted_where_configs_hold_text(tiny_run, tmp_path):
    from pathlib import Path

    from multidistill.data.tasks import DataFile

    raw, _ = tiny_run
    config = multidistill.TeacherRunConfig.model_validate(
        {**raw, "output_dir": tmp_path / "out", "online_teachers": [Path(raw["model"]["name_or_path"])]})
    assert config.output_dir == str(tmp_path / "out") and config.online_teachers == [raw["model"]["name_or_path"]]
    assert DataFile(path=Path("a/train.tsv"), columns={"text_a": "t"}).path == "a/train.tsv"


def test_load_model_returns_the_model_in_eval_mode(tiny_run, tmp_path):
    raw, _ = tiny_run
    config = multidistill.TeacherRunConfig.model_validate({**raw, "train": {**raw["train"], "epochs": 0.5}})
    multidistill.train_model(config)
    model = multidistill.load_model(tmp_path / "run" / "model")
    assert not model.training
    metrics = multidistill.evaluate_model_dir(tmp_path / "run" / "model")  # tasks default: all the model's
    assert set(metrics["tasks"]) == {"toy_sent", "toy_pair", "toy_reg"}
    import pytest

    from multidistill.errors import ConfigError

    with pytest.raises(ConfigError, match="no task given"):
        multidistill.evaluate_model_dir(tmp_path / "run" / "model", tasks=[])


def test_a_loss_class_registered_again_replaces_itself_but_cannot_take_anothers_name():
    import pytest
    from torch import nn

    from multidistill.losses.registry import LOSSES, register_loss

    def define():
        class MyL1(nn.Module):
            def forward(self, *args):
                return 0

        return MyL1

    try:
        first = register_loss("api_test_l1")(define())
        second = register_loss("api_test_l1")(define())  # a notebook cell run twice
        assert LOSSES["api_test_l1"] is second is not first
        with pytest.raises(ValueError, match="loss .soft_ce. is already registered by multidistill.losses"):
            register_loss("soft_ce")(define())
    finally:
        LOSSES.pop("api_test_l1", None)


def test_the_store_builders_seed_is_the_runs_default_seed():
    import inspect

    from multidistill.config import TrainConfig

    assert inspect.signature(multidistill.build_signal_store).parameters["seed"].default == TrainConfig().seed


def test_importing_the_library_leaves_datasets_progress_bars_as_they_were():
    code = ("import datasets; import multidistill.data.store, multidistill.training.run; "
            "print(datasets.is_progress_bar_enabled())")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"
