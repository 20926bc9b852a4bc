"""The top-level Python API: every exported name resolves, `import multidistill` stays light, and `run` runs a
recipe as `multidistill run` does."""

from __future__ import annotations

import subprocess
import sys

import pytest

import multidistill


def test_every_exported_name_resolves_to_its_module_object():
    for name in multidistill.__all__:
        assert getattr(multidistill, name) is not None, name
    from multidistill.training.run import train_model

    assert multidistill.train_model is train_model
    assert set(multidistill.__all__) <= set(dir(multidistill))


def test_all_lists_every_export_and_the_names_users_need():
    assert set(multidistill.__all__) == {"__version__", *multidistill._EXPORTS}
    needed = {"DataConfig", "TaskRef", "build_report", "OnnxModel", "predict", "Prediction", "distill", "ConfigError",
              "OutputError", "RunInProgress", "EvalMetrics", "BenchmarkReport"}
    assert needed <= set(multidistill.__all__)


def test_type_checkers_see_the_real_objects():
    """`if TYPE_CHECKING:` imports name every export, so IDEs see the real types, not `Any` from __getattr__."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(multidistill))
    checked = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", None) == "TYPE_CHECKING"
               for stmt in node.body if isinstance(stmt, ast.ImportFrom) for alias in stmt.names}
    assert checked == set(multidistill._EXPORTS)


def test_load_config_is_typed_by_its_schema():
    """It returned Any: a type checker saw no field of the config it loaded."""
    import typing

    from multidistill.config import ConfigT, TeacherRunConfig, load_config

    returns = [typing.get_type_hints(overload)["return"] for overload in typing.get_overloads(load_config)]
    assert returns == [TeacherRunConfig, ConfigT]
    assert "autocast" in typing.get_type_hints(multidistill.build_signal_store)


def test_the_run_calls_say_what_they_share_with_the_process():
    for call in (multidistill.run, multidistill.run_recipe, multidistill.train_model, multidistill.train_ensemble):
        doc = " ".join(call.__doc__.split())
        assert "random generators" in doc and "`RunInProgress`" in doc, call.__name__


def test_importing_the_config_module_loads_no_torch():
    """The spec classes a config holds live in torch-free `models.specs`; loading a config is then light."""
    code = ("import sys, multidistill.config; from multidistill.models.bilstm import BiLSTMSpec as _; "
            "print('torch' in sys.modules)")
    light = "import sys, multidistill.config; print('torch' in sys.modules, 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", light], capture_output=True, text=True,
                          check=True).stdout.strip() == "False False"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"  # the old place still has it (with torch)
    from multidistill.models.bilstm import BiLSTMSpec
    from multidistill.models.domain_branch import DomainBranchSpec
    from multidistill.models.specs import BiLSTMSpec as Spec
    from multidistill.models.specs import DomainBranchSpec as Branch

    assert BiLSTMSpec is Spec and DomainBranchSpec is Branch


def test_load_config_takes_a_path_a_mapping_or_a_config(tiny_run):
    import pytest

    from multidistill.errors import ConfigError

    raw, write = tiny_run
    from_file = multidistill.load_config(write(), "train.epochs=1")  # one str is one override
    assert from_file.train.epochs == 1
    assert multidistill.load_config(raw, ["train.epochs=1"]) == from_file
    assert raw["train"]["epochs"] == 2  # the caller's mapping is left as given
    assert multidistill.load_config(from_file) == from_file
    with pytest.raises(ConfigError, match=r"the config mapping: invalid config\n  key 'train.lr'"):
        multidistill.load_config({**raw, "train": {"lr": "fast"}})
    with pytest.raises(TypeError, match="a config is a YAML file's path, a mapping or a TeacherRunConfig"):
        multidistill.load_config(42)


def test_a_string_is_one_item_where_a_list_is_taken(tmp_path):
    import pytest

    from multidistill.config import apply_overrides
    from multidistill.errors import ConfigError
    from multidistill.utils.arguments import as_list

    assert apply_overrides({}, "train.lr=0.1") == {"train": {"lr": 0.1}}
    assert as_list(tmp_path, "model_dirs") == [tmp_path] and as_list("a/b", "model_dirs") == ["a/b"]
    assert as_list("sst2, mrpc", "tasks", commas=True) == ["sst2", "mrpc"]
    assert as_list(("a", "b"), "tasks", commas=True) == ["a", "b"] and as_list(None, "tasks") is None
    with pytest.raises(ConfigError, match="tasks 'a,,b' has an empty item"):
        as_list("a,,b", "tasks", commas=True)
    with pytest.raises(TypeError, match="tasks takes a list, not int"):
        as_list(3, "tasks")


def test_train_model_takes_a_mapping_a_path_or_a_config_and_nothing_else(tiny_run, tmp_path):
    import pytest

    from multidistill.errors import ConfigError

    raw, write = tiny_run
    bad = {**raw, "train": {**raw["train"], "sampling": "round_robin", "temperature_tau": 0.9}}
    for source in (bad, write(bad)):  # refused as a file is, before anything is written
        with pytest.raises(ConfigError, match="temperature_tau"):
            multidistill.train_model(source)
        with pytest.raises(ConfigError, match="temperature_tau"):
            multidistill.train_teacher(source)
    with pytest.raises(TypeError, match="a config is a YAML file's path"):
        multidistill.train_model(42)
    assert not (tmp_path / "run").exists()


def test_distill_refuses_a_teacher_config_as_the_command_does(tiny_run, tmp_path):
    import pytest

    from multidistill.errors import ConfigError

    raw, _ = tiny_run
    with pytest.raises(ConfigError, match="key 'kind' must be 'distill' for `multidistill distill`"):
        multidistill.distill(raw)
    assert not (tmp_path / "run").exists()


def test_train_ensemble_makes_the_folder_train_teacher_seeds_resumes(tiny_run, tmp_path, monkeypatch, capsys):
    """`train-teacher --seeds` pins every member's subset to the config's train.seed; a notebook loop over seeds
    drew other subsets, and the CLI's --resume refused its folder. train_ensemble is the CLI's own code path."""
    from tests.test_cli import run_cli

    raw, write = tiny_run
    small = ["train.epochs=0.5", "train.max_examples_per_task=16"]
    results = multidistill.train_ensemble(raw, small, seeds="1,2", progress=False)
    assert list(results) == [1, 2] and capsys.readouterr().out == ""
    member = multidistill.load_config(tmp_path / "run" / "seed-2" / "config.yaml")
    assert (member.train.seed, member.data.subset_seed) == (2, raw["train"]["seed"])
    weights = (tmp_path / "run" / "seed-1" / "model" / "model.safetensors").read_bytes()
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()), "--seeds", "1,2", "--resume",
                           *[arg for item in small for arg in ("--set", item)])
    assert code == 0, output
    assert (tmp_path / "run" / "seed-1" / "model" / "model.safetensors").read_bytes() == weights
    assert set(multidistill.train_ensemble(raw, small, seeds=[1, 2], resume=True, progress=False)) == {1, 2}
    with pytest.raises(TypeError, match=r"seeds\[1\] is a str"):
        multidistill.train_ensemble(raw, seeds=[1, "2"])
    with pytest.raises(multidistill.ConfigError, match="seeds lists '1' twice"):
        multidistill.train_ensemble(raw, seeds=[1, 1])


def test_the_training_calls_take_overrides_as_load_config_does(tiny_run, tmp_path):
    raw, write = tiny_run
    result = multidistill.train_model(write(), ["train.epochs=0.25", f"output_dir={tmp_path / 'a'}"], progress=False)
    assert result.best_metrics and (tmp_path / "a" / "model").is_dir()
    assert multidistill.load_config(tmp_path / "a" / "config.yaml").train.epochs == 0.25
    config = multidistill.load_config(raw)
    with pytest.raises(multidistill.ConfigError, match=r"key 'train.lrr'.*\(from --set\)"):
        multidistill.train_teacher(config, "train.lrr=1")
    with pytest.raises(multidistill.ConfigError, match="key 'kind' must be 'distill'"):
        multidistill.distill(raw, ["train.epochs=1"])
    with pytest.raises(multidistill.ConfigError, match=r"key 'signals'.*\(from --set\)"):
        multidistill.distill(raw, ["kind=distill", "signals=1"])


def test_a_missing_model_folder_or_a_recipe_file_is_said_by_its_key(tiny_run, tmp_path):
    """The single-command path names the key, as a recipe's checks do; a recipe file given to train_teacher is
    said to be one (it was a line per recipe key that a run config does not know)."""
    from tests.test_recipes import tiny_recipe, write

    raw, _ = tiny_run
    missing = {**raw, "model": {**raw["model"], "name_or_path": str(tmp_path / "no_model")}}
    for call in (multidistill.train_teacher, multidistill.distill):
        config = missing if call is multidistill.train_teacher else {**missing, "kind": "distill"}
        with pytest.raises(multidistill.ConfigError, match=r"key 'model.name_or_path': model '.*no_model': no such"):
            call(config, progress=False)
    recipe = write(tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path), tmp_path)
    with pytest.raises(multidistill.ConfigError, match=r"a recipe config \(top-level key 'recipe: mtdnn_kd'\), not "
                                                       r"the config of a single training run \(train-teacher, "
                                                       r"distill\); run it with `multidistill run`") as info:
        multidistill.train_teacher(recipe)
    assert "unknown key" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_an_unwritable_output_folder_is_an_output_error(tiny_run, tmp_path):
    import pytest

    from multidistill.errors import OutputError

    raw, _ = tiny_run
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputError, match="cannot write .*file.*a part of the path is a file"):
        multidistill.train_model({**raw, "output_dir": str(tmp_path / "file" / "run")})


def test_a_second_run_from_another_thread_is_refused(tiny_run, tmp_path):
    """Runs reseed the process-wide random generators: one from another thread while one goes is refused."""
    import threading

    from multidistill.errors import RunInProgress
    from multidistill.utils.entry import one_run_at_a_time

    raw, _ = tiny_run
    errors: list[BaseException] = []

    def second() -> None:
        try:
            multidistill.train_model(raw)
        except BaseException as exc:  # noqa: BLE001 - the test reads what the thread raised
            errors.append(exc)

    with one_run_at_a_time("the first run"), one_run_at_a_time("a stage of it"):  # nested calls of one thread go on
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert len(errors) == 1 and isinstance(errors[0], RunInProgress), errors
    assert "the first run is running in another thread" in str(errors[0])
    assert not (tmp_path / "run").exists()
    with one_run_at_a_time("free again"):  # the first run's end released the process
        pass


def test_an_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        multidistill.nope  # noqa: B018


def test_importing_the_package_loads_no_torch():
    code = "import sys, multidistill; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_run_runs_a_recipe_mapping_with_one_override_quietly(tiny_run, tmp_path, capsys):
    from tests.test_recipes import tiny_recipe

    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    seeds = list(recipe["teacher"]["seeds"])
    summary = multidistill.run(recipe, "teacher.seeds=[1]", progress=False)  # one str is one override
    assert set(summary["rows"]) == {"teacher teacher-seed-1", "student"}, summary["rows"].keys()
    recorded = multidistill.load_recipe(tmp_path / "recipe" / "recipe.yaml")  # the override was applied
    assert recorded.teacher.seeds == [1]
    assert recipe["teacher"]["seeds"] == seeds != [1]  # the caller's mapping is left as given
    captured = capsys.readouterr()
    assert captured.out + captured.err == ""  # no stage lines, bars or summary table


def test_a_recipe_is_read_alike_from_a_file_a_mapping_or_a_config(tiny_run, tmp_path):
    """load_recipe (which run, run_recipe and plan_recipe call) takes a recipe config too, checked again."""
    from tests.test_recipes import tiny_recipe, write

    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    from_file = multidistill.load_recipe(write(recipe, tmp_path), ["teacher.seeds=[3]"])
    assert multidistill.load_recipe(recipe, ["teacher.seeds=[3]"]) == from_file == multidistill.load_recipe(from_file)
    assert multidistill.load_recipe(str(write(recipe, tmp_path)), "teacher.seeds=[3]") == from_file
    assert multidistill.load_recipe(from_file, ["teacher.seeds=[4]"]).teacher.seeds == [4]
    edited = from_file.model_copy(update={"subset_seed": -1})  # model_copy skips pydantic's checks
    with pytest.raises(multidistill.ConfigError, match="key 'subset_seed'"):
        multidistill.load_recipe(edited)
    with pytest.raises(TypeError, match="a recipe is a YAML file's path, a mapping or a recipe config"):
        multidistill.load_recipe(42)


def test_load_recipe_takes_a_mapping_as_run_does(tiny_run, tmp_path):
    from tests.test_recipes import tiny_recipe, write

    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    from_file = multidistill.load_recipe(write(recipe, tmp_path), ["teacher.seeds=[3]"])
    assert multidistill.load_recipe(recipe, ["teacher.seeds=[3]"]) == from_file
    with pytest.raises(multidistill.ConfigError, match="the recipe mapping: key 'recipe'"):
        multidistill.load_recipe({**recipe, "recipe": "nope"})
    with pytest.raises(TypeError, match="a YAML file's path, a mapping or a recipe config .load_recipe., not list"):
        multidistill.load_recipe([recipe])


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


def test_the_quiet_switch_turns_library_bars_off_and_puts_them_back():
    """progress=False (and the CLI) silence datasets' bars and transformers' "Loading weights" bar, and only for
    the call: a notebook's own bars come back afterwards."""
    import datasets
    import transformers

    from multidistill.utils.quiet import quiet_libraries

    # A CLI test run in this worker before may have left them off (the CLI quietens them for its process).
    datasets.enable_progress_bars()
    transformers.utils.logging.enable_progress_bar()
    restore = quiet_libraries()
    try:
        assert not datasets.is_progress_bar_enabled()
        assert not transformers.utils.logging.is_progress_bar_enabled()
    finally:
        restore()
    assert datasets.is_progress_bar_enabled() and transformers.utils.logging.is_progress_bar_enabled()


def test_quiet_blocks_in_two_threads_put_the_streams_back_once_both_are_done():
    """Two threads in overlapping quietened(False) blocks: the last one out puts back the streams the first one
    in saved (not the other's devnull sink), so printing still works afterwards."""
    import threading

    from multidistill.utils.quiet import quietened

    real_stdout, real_stderr = sys.stdout, sys.stderr
    inside, leave_first = threading.Barrier(2), threading.Event()
    errors: list[BaseException] = []

    def quiet_block(leave_at_once: bool) -> None:
        try:
            with quietened(False):
                inside.wait(timeout=30)
                print("not shown")
                if not leave_at_once:
                    leave_first.wait(timeout=30)
            if leave_at_once:
                assert sys.stdout is not real_stdout  # the other thread is still quiet
                leave_first.set()
        except BaseException as error:  # reported by the main thread below
            errors.append(error)
            leave_first.set()

    threads = [threading.Thread(target=quiet_block, args=(first,)) for first in (True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sys.stdout is real_stdout and sys.stderr is real_stderr
    print("shown")  # the old code left sys.stdout on a closed devnull file here


def test_predict_refuses_a_text_with_an_unpaired_surrogate_naming_its_index(tmp_path):
    """As predict_file refuses such a row: checked before the model is opened, so no model is needed here."""
    with pytest.raises(multidistill.DataError, match=r"texts\[1\]: unpaired surrogate U\+D83D at character 4"):
        multidistill.predict(tmp_path / "no_model", "toy_sent", ["fine", "cut \ud83d emoji"])
    with pytest.raises(multidistill.DataError, match=r"text_pairs\[0\]: unpaired surrogate U\+DE00"):
        multidistill.predict(tmp_path / "no_model", "toy_pair", ["a"], ["\ude00"])
