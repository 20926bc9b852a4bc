"""Re-running a recipe after a failure or an interrupt: each stage kind is taken up again by the same command,
only a folder of other settings (or not ours) is refused, and Ctrl-C / SIGTERM say where the run stopped and
how to resume it."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from multidistill.errors import ConfigError, ModelError
from multidistill.recipes.stages import PENDING, STAGE_MANIFEST, StageRunner
from tests.kill_harness import REPO, cli_command, cli_env
from tests.test_cli import run_cli
from tests.test_recipes import tiny_recipe, write


def test_an_unfinished_stage_is_taken_up_again_and_other_settings_are_named(tmp_path):
    runner = StageRunner(tmp_path)
    calls = []

    def fail(folder: Path, resume: bool) -> None:
        calls.append(resume)
        folder.mkdir()
        (folder / "part").write_text("half")
        raise ModelError("parity check failed")

    with pytest.raises(ModelError) as failed:
        runner.run("bench", {"a": 1, "b": {"c": 2}}, {"x": "fp"}, fail)
    assert any("did not finish" in note and "running the same command again" in note
               for note in failed.value.__notes__)
    # Other settings: refused, naming what changed and how to start over.
    with pytest.raises(ConfigError, match=r"changed: config\.b\.c: 2 -> 3, inputs\.x: 'fp' -> 'other'\).*rm -r"):
        runner.run("bench", {"a": 1, "b": {"c": 3}}, {"x": "other"}, lambda folder, resume: None)
    # The same settings: taken up again.
    done = runner.run("bench", {"a": 1, "b": {"c": 2}}, {"x": "fp"}, lambda folder, resume: {"resumed": resume})
    assert json.loads((done / STAGE_MANIFEST).read_text())["resumed"] is True
    assert not (tmp_path / PENDING / "bench.json").exists()


def test_a_derived_stage_of_other_inputs_is_made_again_and_says_why(tmp_path, capsys):
    """Scores and benchmarks only read the stages before them: other inputs (a target added) make them again,
    finished or not, where any other stage is refused."""
    runner = StageRunner(tmp_path)

    def writes(text: str):
        def work(folder: Path, resume: bool) -> None:
            folder.mkdir()
            (folder / "scores.json").write_text(text)
        return work

    made = runner.run("scores", {"split": "test"}, {"student@books": "fp1"}, writes("old"), derived=True)
    again = runner.run("scores", {"split": "test"}, {"student@books": "fp1", "student@dvd": "fp2"}, writes("new"),
                       derived=True)
    assert again == made and (made / "scores.json").read_text() == "new"
    manifest = json.loads((made / STAGE_MANIFEST).read_text())
    assert manifest["inputs"] == {"student@books": "fp1", "student@dvd": "fp2"}
    err = " ".join(capsys.readouterr().err.split())
    assert "stage scores:" in err and "inputs.student@dvd: unset -> 'fp2'" in err and "made again" in err
    with pytest.raises(ConfigError, match="made with other settings or inputs"):  # not derived: refused
        runner.run("scores", {"split": "dev"}, {}, lambda folder, resume: None)

    def cut(folder: Path, resume: bool) -> None:
        folder.mkdir()
        (folder / "part").write_text("half")
        raise ModelError("stopped")

    with pytest.raises(ModelError):
        runner.run("bench", {"rounds": 3}, {}, cut, derived=True)
    resumed = []
    runner.run("bench", {"rounds": 5}, {}, lambda folder, resume: resumed.append(resume), derived=True)
    assert resumed == [False] and not (tmp_path / "bench" / "part").exists()
    assert json.loads((tmp_path / "bench" / STAGE_MANIFEST).read_text())["config"] == {"rounds": 5}


def test_a_derived_stage_made_under_another_default_is_made_again_even_through_a_link(tmp_path, capsys):
    """A changed default (recorded outside the fingerprint) re-makes a derived stage instead of refusing it; the
    old folder goes through a hidden `.<name>.replaced` (a replacement cut short earlier is cleared), and a stage
    folder that is a link is replaced without touching what it points to."""
    from multidistill.recipes.stages import DEFAULTS_KEY

    runner = StageRunner(tmp_path)

    def writes(text: str):
        def work(folder: Path, resume: bool) -> None:
            folder.mkdir(exist_ok=True)
            (folder / "benchmark.json").write_text(text)
        return work

    runner.run("benchmark", {"rounds": 3, DEFAULTS_KEY: {"memory": True}}, {}, writes("old"), derived=True)
    (tmp_path / ".benchmark.replaced").mkdir()  # left by a replacement cut short
    runner.run("benchmark", {"rounds": 3, DEFAULTS_KEY: {"memory": False}}, {}, writes("new"), derived=True)
    assert (tmp_path / "benchmark" / "benchmark.json").read_text() == "new"
    assert not (tmp_path / ".benchmark.replaced").exists()
    assert "the default of 'memory' was True, now False" in " ".join(capsys.readouterr().err.split())
    # not derived: the same change is refused
    runner.run("scores", {"k": 1, DEFAULTS_KEY: {"d": 1}}, {}, writes("x"))
    with pytest.raises(ConfigError, match="this version changed those defaults"):
        runner.run("scores", {"k": 1, DEFAULTS_KEY: {"d": 2}}, {}, writes("y"))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (tmp_path / "benchmark").rename(elsewhere / "benchmark")
    (tmp_path / "benchmark").symlink_to(elsewhere / "benchmark")
    runner.run("benchmark", {"rounds": 5}, {}, writes("linked"), derived=True)
    assert not (tmp_path / "benchmark").is_symlink()
    assert (tmp_path / "benchmark" / "benchmark.json").read_text() == "linked"
    assert (elsewhere / "keep.txt").read_text() == "mine" and (elsewhere / "benchmark" / "benchmark.json").exists()


def test_a_stage_cut_twice_records_the_time_of_all_its_runs(tmp_path, monkeypatch):
    from multidistill.recipes import stages

    # Each run of the stage reads the clock twice (start, stop): 10 s, 20 s, then 5 s to finish.
    ticks = iter([0.0, 10.0, 100.0, 120.0, 500.0, 505.0])
    monkeypatch.setattr(stages.time, "perf_counter", lambda: next(ticks))
    runner = StageRunner(tmp_path)

    def cut(folder: Path, resume: bool) -> None:
        folder.mkdir(exist_ok=True)
        (folder / "checkpoint").write_text("some steps")
        raise KeyboardInterrupt

    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            runner.run("train", {"a": 1}, {}, cut)
    assert json.loads((tmp_path / PENDING / "train.json").read_text())["seconds"] == 30.0
    done = runner.run("train", {"a": 1}, {}, lambda folder, resume: None)
    manifest = json.loads((done / STAGE_MANIFEST).read_text())
    assert (manifest["seconds"], manifest["parts"]) == (35.0, 3)
    # A stage that ran once, start to end, is one part; a pending record from before the time was carried
    # over (no seconds) counts as none.
    ticks2 = iter([0.0, 7.0])
    monkeypatch.setattr(stages.time, "perf_counter", lambda: next(ticks2))
    (tmp_path / PENDING / "old.json").write_text(json.dumps(
        {"format_version": 1, "name": "old", "fingerprint": stages.fingerprints("old", {}, {}, tmp_path)[0],
         "config": {}, "inputs": {}}))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "part").write_text("half")
    old = json.loads((runner.run("old", {}, {}, lambda folder, resume: None) / STAGE_MANIFEST).read_text())
    assert (old["seconds"], old["parts"]) == (7.0, 1)


def test_an_empty_folder_is_no_reason_to_refuse_and_a_stage_that_wrote_nothing_leaves_no_record(tmp_path):
    runner = StageRunner(tmp_path)
    (tmp_path / "empty").mkdir()
    assert runner.run("empty", {}, {}, lambda folder, resume: {"resumed": resume}) == tmp_path / "empty"

    def interrupted(folder: Path, resume: bool) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stop:
        runner.run("early", {}, {}, interrupted)
    assert "stopped before writing" in stop.value.__notes__[0]
    assert not (tmp_path / PENDING).exists()


def test_a_moved_run_folder_keeps_its_stages_and_older_fingerprints_still_count(tmp_path, monkeypatch):
    from multidistill.recipes.stages import fingerprints, portable
    from multidistill.utils.hashing import hash_json

    def settings(root: Path) -> dict:  # a stage whose settings name another stage's folder, as recipes' do
        return {"teachers": [str(root / "teacher" / "model")], "data": "/elsewhere/data.tsv", "n": 2}

    old, new = tmp_path / "old", tmp_path / "moved" / "run"
    assert portable(settings(old), old) == {"teachers": ["@run/teacher/model"], "data": "/elsewhere/data.tsv", "n": 2}
    monkeypatch.chdir(tmp_path)
    assert portable({"a": ["old/x"], "b": "older/x"}, Path("old")) == {"a": ["@run/x"], "b": "older/x"}
    StageRunner(old).run("student", settings(old), {"teacher": "fp"}, lambda folder, resume: folder.mkdir())
    new.parent.mkdir()
    old.rename(new)
    runner = StageRunner(new)
    runner.run("student", settings(new), {"teacher": "fp"}, lambda folder, resume: pytest.fail("ran again"))
    assert runner.outcomes[-1].skipped
    with pytest.raises(ConfigError, match="other settings"):  # a real change still counts
        runner.run("student", {**settings(new), "n": 3}, {"teacher": "fp"}, lambda folder, resume: None)
    # A stage fingerprinted before paths were made portable (its paths hashed as written) is still reused.
    legacy = new / "legacy"
    legacy.mkdir()
    legacy_fingerprint = hash_json({"stage": "legacy", "config": settings(new), "inputs": {}})  # the old formula
    assert fingerprints("legacy", settings(new), {}, new) == (
        hash_json({"stage": "legacy", "config": portable(settings(new), new), "inputs": {}}), legacy_fingerprint)
    (legacy / STAGE_MANIFEST).write_text(json.dumps({"format_version": 1, "name": "legacy", "config": settings(new),
                                                     "inputs": {}, "fingerprint": legacy_fingerprint}))
    runner.run("legacy", settings(new), {}, lambda folder, resume: pytest.fail("ran again"))
    assert runner.outcomes[-1].skipped


def _mkd_recipe(tiny_run, tmp_path: Path) -> dict:
    recipe = tiny_recipe("mkd_bilstm.yaml", tiny_run, tmp_path)
    recipe["finetune"]["enabled"] = recipe["baseline"]["enabled"] = False
    return recipe


def _then_fail(real):
    """``real`` runs to the end, then the stage fails (before its manifest is written)."""
    def wrapped(*args, **kwargs):
        real(*args, **kwargs)
        raise ModelError("injected failure after the stage wrote its output")
    return wrapped


@pytest.mark.parametrize("kind", ["training", "signals", "transfer"])
def test_a_failed_stage_of_each_kind_is_redone_by_the_same_command(kind, tiny_run, tmp_path, monkeypatch, capsys):
    import multidistill.recipes.common as common
    import multidistill.recipes.mkd as mkd

    stage = {"training": "student", "signals": "signals", "transfer": "transfer"}[kind]
    undo = contextlib.ExitStack()
    with undo:
        patch = undo.enter_context(monkeypatch.context())
        if kind == "training":
            real_train = common.train_model

            def cut(config, *, resume=False, **kwargs):
                if Path(config.output_dir).name == "student":
                    def stop(state):
                        if state.step == 4:
                            raise ModelError("injected failure at step 4")
                    kwargs["on_step"] = stop
                return real_train(config, resume=resume, **kwargs)
            patch.setattr(common, "train_model", cut)
        elif kind == "signals":
            patch.setattr(common, "build_signal_store", _then_fail(common.build_signal_store))
        else:
            real_dir = mkd.atomic_dir

            @contextlib.contextmanager
            def dir_then_fail(folder):
                with real_dir(folder) as tmp:
                    yield tmp
                raise ModelError("injected failure after the transfer set was written")
            patch.setattr(mkd, "atomic_dir", dir_then_fail)
        recipe = _mkd_recipe(tiny_run, tmp_path)
        path = write(recipe, tmp_path)
        code, output = run_cli(monkeypatch, capsys, "run", str(path))
    root = Path(recipe["output_dir"])
    assert code == 2 and "injected failure" in output, output
    assert (root / stage).is_dir() and not (root / stage / STAGE_MANIFEST).exists()
    assert f"stage '{stage}' did not finish" in output and "running the same command again" in output
    if kind == "training":
        assert "training stopped at step 4" in output and "last checkpoint: step 3" in output

    code, output = run_cli(monkeypatch, capsys, "run", str(path))
    assert code == 0, output
    assert f"stage {stage}: resuming" in output
    assert (root / stage / STAGE_MANIFEST).is_file() and (root / "summary.json").is_file()
    if kind == "training":
        assert "resumed from" in output and "step-000000003" in output


def test_a_failed_benchmark_is_redone_by_the_same_command(tiny_run, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    import multidistill.recipes.demo as demo
    from tests.test_demo import demo_overrides

    real = demo.benchmark

    def parity_fails(*args, **kwargs):
        # A failed export leaves the stage folder with its exports folder (and nothing under the model's name).
        (tmp_path / "demo" / "benchmark" / "exports").mkdir(parents=True)
        raise ModelError("ONNX export failed its parity check (injected)")

    overrides = sum((["--set", o] for o in demo_overrides(tiny_run, tmp_path)), [])
    with monkeypatch.context() as patch:
        patch.setattr(demo, "benchmark", parity_fails)
        code, output = run_cli(monkeypatch, capsys, "demo", "--quick", *overrides)
    assert code == 2 and "stage 'benchmark' did not finish" in output, output
    assert demo.benchmark is real
    code, output = run_cli(monkeypatch, capsys, "demo", "--quick", *overrides)
    assert code == 0, output
    assert "stage benchmark: resuming" in output and (tmp_path / "demo" / "benchmark" / STAGE_MANIFEST).is_file()


def test_a_recipe_whose_data_is_missing_leaves_nothing(tiny_run, tmp_path, monkeypatch, capsys):
    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["data"] = {**recipe["data"], "data_root": str(tmp_path / "no-such-data")}
    recipe["output_dir"] = str(tmp_path / "out" / "recipe")
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2 and "not found" in output, output
    assert not (tmp_path / "out").exists()


def test_a_run_stopped_before_any_stage_wrote_something_takes_back_what_it_made(tiny_run, tmp_path, monkeypatch,
                                                                                capsys):
    import multidistill.recipes.common as common

    def refuses(config, **kwargs):
        raise ConfigError("the teacher cannot be built (injected)")

    monkeypatch.setattr(common, "train_model", refuses)
    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["output_dir"] = str(tmp_path / "out")
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2 and "injected" in output, output
    assert not (tmp_path / "out").exists()
    # An output folder that was there before stays, with what it held.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))[0] == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]


# --- data edited in place, the summary, and the checks before the first stage runs ------------------------------


def _writes(text: str, calls: list | None = None):
    def work(folder: Path, resume: bool) -> None:
        if calls is not None:
            calls.append(folder.name)
        folder.mkdir(exist_ok=True)
        (folder / "out.txt").write_text(text)
    return work


def test_a_finished_stage_on_edited_data_is_refused_by_split_and_a_derived_one_is_made_again(tmp_path, capsys):
    """A task split's data fingerprint is recorded beside the stage's (not in it): edited data refuses the stage,
    naming the split, where its settings would reuse it; a derived stage is made again; a stage recorded
    before data was recorded stays valid."""
    runner = StageRunner(tmp_path)
    runner.run("teacher", {"lr": 1}, {}, _writes("a"), data={"books/train": "d1", "books/dev": "d2"})
    manifest = json.loads((tmp_path / "teacher" / STAGE_MANIFEST).read_text())
    assert manifest["data"] == {"books/train": "d1", "books/dev": "d2"}
    fingerprint = manifest["fingerprint"]
    runner.run("teacher", {"lr": 1}, {}, lambda folder, resume: pytest.fail("ran again"),
               data={"books/train": "d1", "books/dev": "d2"})
    with pytest.raises(ConfigError, match=r"stage 'teacher': .* made from other data \(books/dev changed since"):
        runner.run("teacher", {"lr": 1}, {}, _writes("b"), data={"books/train": "d1", "books/dev": "edited"})
    assert (tmp_path / "teacher" / "out.txt").read_text() == "a"

    runner.run("scores", {"split": "test"}, {"teacher": fingerprint}, _writes("old"), derived=True,
               data={"books/test": "t1"})
    runner.run("scores", {"split": "test"}, {"teacher": fingerprint}, _writes("new"), derived=True,
               data={"books/test": "t2"})
    assert (tmp_path / "scores" / "out.txt").read_text() == "new"
    assert "books/test changed since" in " ".join(capsys.readouterr().err.split())
    # Recorded before data was (no `data` in stage.json): cannot be checked, and stays valid.
    del manifest["data"]
    (tmp_path / "teacher" / STAGE_MANIFEST).write_text(json.dumps(manifest))
    runner.run("teacher", {"lr": 1}, {}, lambda folder, resume: pytest.fail("ran again"),
               data={"books/train": "other", "books/dev": "other"})


def test_the_summary_goes_once_a_stage_runs_so_a_failed_rerun_leaves_none(tmp_path):
    """summary.json describes the stages as they were: kept while they are reused, removed before one runs."""
    runner = StageRunner(tmp_path)
    runner.run("teacher", {"lr": 1}, {}, _writes("a"))
    summary = tmp_path / "summary.json"
    summary.write_text("{}")
    runner.run("teacher", {"lr": 1}, {}, _writes("a"))  # reused: the summary still describes the folder
    assert summary.is_file()

    def fails(folder: Path, resume: bool) -> None:
        assert not summary.exists()  # gone before the stage starts
        raise ModelError("the student failed")

    with pytest.raises(ModelError):
        runner.run("student", {"lr": 1}, {}, fails)
    assert not summary.exists()


def _three_stages(calls: list, c_settings: dict):
    """A recipe of three stages, each reading the one before's fingerprint, then c's output and a summary."""
    def recipe(runner: StageRunner) -> str:
        from multidistill.recipes.stages import console, stage_fingerprint, stop_if_checking

        a = runner.run("a", {"n": 1}, {}, _writes("a", calls))
        console.print("note: said once")
        b = runner.run("b", {"n": 1}, {"a": stage_fingerprint(a)}, _writes("b", calls))
        c = runner.run("c", c_settings, {"b": stage_fingerprint(b)}, _writes("c", calls))
        out = (c / "out.txt").read_text()
        stop_if_checking()  # as `write_summary` does before its table
        print("the summary table")
        return out
    return recipe


def test_a_late_stage_of_other_settings_is_refused_before_the_first_stage_runs(tmp_path, capsys):
    """`run_all`: the first stage to run checks the stages after it first (a late stage's refusal would come after
    the earlier stages ran); the check ends where the recipe reads what a stage not yet run writes, then the
    recipe runs for real, printing each stage once."""
    calls: list[str] = []
    assert StageRunner(tmp_path).run_all(_three_stages(calls, {"n": 1})) == "c"
    assert calls == ["a", "b", "c"]
    said = capsys.readouterr()
    assert said.err.count("stage a: running") == 1 and said.err.count("note: said once") == 1
    assert said.out.count("the summary table") == 1

    shutil.rmtree(tmp_path / "b")  # b is to be made again, and c was made from it: refused before b runs
    calls.clear()
    with pytest.raises(ConfigError, match="stage 'b': .*but stage 'c' was made from it as it was"):
        StageRunner(tmp_path).run_all(_three_stages(calls, {"n": 1}))
    assert calls == [] and not (tmp_path / "b").exists()
    # A late stage of other settings (c recorded before `made_from`, so only its settings tell): refused before b
    # runs too, by the check pass.
    record = json.loads((tmp_path / "c" / STAGE_MANIFEST).read_text())
    del record["made_from"]
    (tmp_path / "c" / STAGE_MANIFEST).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="stage 'c': .*changed: config.n: 1 -> 2") as refused:
        StageRunner(tmp_path).run_all(_three_stages(calls, {"n": 2}))
    assert calls == [] and not (tmp_path / "b").exists() and not any((tmp_path / PENDING).iterdir())
    assert any("before stage 'b'" in note for note in refused.value.__notes__)
    assert "stage b: running" not in capsys.readouterr().err
    # With c removed, b and c are made again; every line is said once.
    shutil.rmtree(tmp_path / "c")
    capsys.readouterr()
    runner = StageRunner(tmp_path)
    assert runner.run_all(_three_stages(calls, {"n": 1})) == "c"
    assert calls == ["b", "c"] and [(o.name, o.skipped) for o in runner.outcomes] == [
        ("a", True), ("b", False), ("c", False)]
    said = capsys.readouterr()
    assert said.err.count("stage a: done, reusing") == 1 and said.err.count("note: said once") == 1
    assert said.err.count("stage b: running") == 1 and said.err.count("stage c: running") == 1
    assert said.out.count("the summary table") == 1


def _noting(calls: list):
    """Two stages with notes (`print_note`) on the way: one before any stage (said twice), one after the first stage
    to run (a run's check pass reaches it before that stage runs), with brackets; then b's output is read."""
    def recipe(runner: StageRunner) -> str:
        from multidistill.recipes.stages import print_note, stage_fingerprint, stop_if_checking

        print_note("teacher.seeds not used")
        a = runner.run("a", {"n": 1}, {}, _writes("a", calls))
        print_note("teacher.seeds not used")
        print_note("install multidistill[pos] for POS tags")
        b = runner.run("b", {"n": 1}, {"a": stage_fingerprint(a)}, _writes("b", calls))
        out = (b / "out.txt").read_text()
        stop_if_checking()
        return out
    return recipe


NOTES = ["teacher.seeds not used", "install multidistill[pos] for POS tags"]


def test_a_dry_run_prints_the_notes_a_run_prints_and_each_is_printed_once(tmp_path, capsys):
    """A dry run is quiet (no stage lines) but prints the recipe's notes, as the run will, and lists them in
    `RunPlan.notes`; a run prints each note once although the recipe goes through it in passes (its check pass,
    then the real one). A console the caller made quiet prints none."""
    from multidistill.recipes.stages import console

    calls: list[str] = []
    plan = StageRunner(tmp_path).dry_run(_noting(calls))
    said = capsys.readouterr().err
    assert plan.notes == NOTES and [(row.name, row.action) for row in plan.stages] == [("a", "run"), ("b", "run")]
    assert all(said.count(f"note: {note}") == 1 for note in NOTES), said
    assert "stage a" not in said and calls == [] and not tmp_path.joinpath("a").exists()

    assert StageRunner(tmp_path).run_all(_noting(calls)) == "b" and calls == ["a", "b"]
    said = capsys.readouterr().err
    assert all(said.count(f"note: {note}") == 1 for note in NOTES), said
    assert said.count("stage a: running") == 1 and said.index(f"note: {NOTES[1]}") < said.index("stage a: running")

    assert StageRunner(tmp_path).run_all(_noting(calls)) == "b" and calls == ["a", "b"]  # all reused
    said = capsys.readouterr().err
    assert all(said.count(f"note: {note}") == 1 for note in NOTES), said

    quiet = console.quiet
    console.quiet = True
    try:
        assert StageRunner(tmp_path).dry_run(_noting(calls)).notes == NOTES
        assert StageRunner(tmp_path).run_all(_noting(calls)) == "b"
    finally:
        console.quiet = quiet
    assert "note:" not in capsys.readouterr().err


def test_a_stage_made_from_an_earlier_making_of_its_input_is_refused_and_older_records_stay_valid(tmp_path,
                                                                                                  capsys):
    """A stage's fingerprint is of its inputs' settings, not their contents: a teacher removed and trained again
    with the same settings has the same fingerprint. So each stage records which making of its inputs it read
    (`made_from`): a teacher about to be made anew is refused while stages made from the old one remain (through
    derived stages too), and a teacher replaced by another making refuses them when they are reached (a derived one
    is made again), finished or cut. Records without `made_from` stay valid."""
    from multidistill.recipes.stages import stage_fingerprint

    def recipe_stages(root: Path, teacher_text: str = "old", student=None):
        runner = StageRunner(root)
        teacher = runner.run("teacher", {"lr": 1}, {}, _writes(teacher_text))
        inputs = {"teacher": stage_fingerprint(teacher)}
        runner.run("student", {"lr": 2}, inputs, student or _writes("s"))
        return runner, inputs

    runner, inputs = recipe_stages(tmp_path)
    runner.run("scores", {}, inputs, _writes("scored old"), derived=True)
    student = json.loads((tmp_path / "student" / STAGE_MANIFEST).read_text())
    made = json.loads((tmp_path / "teacher" / STAGE_MANIFEST).read_text())["made"]
    assert student["made_from"] == {"teacher": made} and student["made"] != made
    recipe_stages(tmp_path, student=lambda folder, resume: pytest.fail("ran again"))  # all reused

    # Removed: refused before it is made anew, naming the stage made from it (not the derived scores).
    shutil.copytree(tmp_path / "teacher", tmp_path.parent / "teacher-backup")
    shutil.rmtree(tmp_path / "teacher")
    with pytest.raises(ConfigError, match=r"stage 'teacher': .*gone or empty, so this run would make it anew, but "
                                          r"stage 'student' was made from it as it was.*or restore"):
        StageRunner(tmp_path).run("teacher", {"lr": 1}, {}, lambda folder, resume: pytest.fail("ran"))
    assert not (tmp_path / "teacher").exists()

    # Replaced by another making of the same settings (a copy from another run): refused when the student is
    # reached; the derived scores are made again.
    other, _ = recipe_stages(tmp_path / "elsewhere", "new")
    shutil.copytree(tmp_path / "elsewhere" / "teacher", tmp_path / "teacher")
    runner = StageRunner(tmp_path)
    runner.run("teacher", {"lr": 1}, {}, lambda folder, resume: pytest.fail("ran again"))
    with pytest.raises(ConfigError, match=r"stage 'student': .*made from stage 'teacher' as it was before it was "
                                          r"removed or replaced; remove it \(and the stages after it\) or restore"):
        runner.run("student", {"lr": 2}, inputs, lambda folder, resume: pytest.fail("ran"))
    assert (tmp_path / "student" / "out.txt").read_text() == "s"
    runner.run("scores", {}, inputs, _writes("scored new"), derived=True)
    assert (tmp_path / "scores" / "out.txt").read_text() == "scored new"

    # A cut student of one making is not continued on another.
    shutil.rmtree(tmp_path / "teacher")
    shutil.copytree(tmp_path.parent / "teacher-backup", tmp_path / "teacher")
    shutil.rmtree(tmp_path / "student")

    def cut(folder: Path, resume: bool) -> None:
        folder.mkdir()
        (folder / "checkpoint").write_text("step 3")
        raise ModelError("stopped")

    with pytest.raises(ModelError):
        recipe_stages(tmp_path, student=cut)
    shutil.rmtree(tmp_path / "teacher")
    with pytest.raises(ConfigError, match=r"stage 'teacher': .*but stage 'student' was made from it"):
        StageRunner(tmp_path).run("teacher", {"lr": 1}, {}, lambda folder, resume: pytest.fail("ran"))
    shutil.copytree(tmp_path / "elsewhere" / "teacher", tmp_path / "teacher")
    with pytest.raises(ConfigError, match=r"stage 'student': .*holds an unfinished run made from stage 'teacher'"):
        recipe_stages(tmp_path, student=lambda folder, resume: pytest.fail("ran"))
    # The cut student's folder removed, as the refusal says: its pending record no longer holds the teacher back.
    shutil.rmtree(tmp_path / "student")
    shutil.rmtree(tmp_path / "teacher")
    recipe_stages(tmp_path, "newest")
    assert (tmp_path / "teacher" / "out.txt").read_text() == "newest"

    # Recorded before `made` and `made_from` existed: valid, and what reads them still records a making.
    shutil.rmtree(tmp_path / "scores")
    for name in ("teacher", "student"):
        record = json.loads((tmp_path / name / STAGE_MANIFEST).read_text())
        del record["made"], record["made_from"]
        (tmp_path / name / STAGE_MANIFEST).write_text(json.dumps(record))
    runner, _ = recipe_stages(tmp_path, student=lambda folder, resume: pytest.fail("ran again"))
    runner.run("eval", {}, inputs, _writes("e"))
    assert json.loads((tmp_path / "eval" / STAGE_MANIFEST).read_text())["made_from"]["teacher"]
    StageRunner(tmp_path).run("teacher", {"lr": 1}, {}, lambda folder, resume: pytest.fail("ran again"))


def test_a_stage_about_to_be_made_anew_is_refused_through_derived_stages_and_in_a_dry_run(tmp_path):
    """Meta-KD's cross-fitted targets: fold signals -> a derived merged store -> students. A fold store removed
    is refused before it is made again (the merged store would be remade, the students would not match it);
    removing the students too lets it run. The check does not depend on how far a check pass gets."""
    from multidistill.recipes.stages import stage_fingerprint

    def recipe(runner: StageRunner) -> None:
        fold = runner.run("fold", {"k": 1}, {}, _writes("f"))
        merged = runner.run("merged", {}, {"fold": stage_fingerprint(fold)}, _writes("m"), derived=True)
        (merged / "out.txt").read_text()  # read before the student: a check pass ends here on a fresh fold
        runner.run("student", {}, {"merged": stage_fingerprint(merged)}, _writes("s"))

    StageRunner(tmp_path).run_all(recipe)
    shutil.rmtree(tmp_path / "fold")
    with pytest.raises(ConfigError, match=r"stage 'fold': .*but stage 'student' was made from it"):
        StageRunner(tmp_path).run_all(recipe)
    assert not (tmp_path / "fold").exists() and (tmp_path / "merged" / "out.txt").is_file()
    with pytest.raises(ConfigError, match=r"stage 'fold': .*student") as refused:
        StageRunner(tmp_path).dry_run(recipe)
    assert any("found by a dry run" in note for note in refused.value.__notes__)
    shutil.rmtree(tmp_path / "student")
    plan = StageRunner(tmp_path).dry_run(recipe)
    assert [(row.name, row.action) for row in plan.stages] == [("fold", "run"), ("merged", "make again")]
    StageRunner(tmp_path).run_all(recipe)
    assert (tmp_path / "student" / STAGE_MANIFEST).is_file()


def test_given_teachers_note_their_unused_settings_in_a_dry_run_and_once_in_a_run(tiny_run, tmp_path, monkeypatch,
                                                                                   capsys):
    """teacher.model_dirs with teacher.train and teacher.seeds: the run says those are not used, once (not again
    after its check pass), and `--dry-run` and `plan_recipe` say so too."""
    from multidistill import plan_recipe
    from tests.test_recipes import TINY_TRAIN

    raw, write_cfg = tiny_run
    teacher = {**raw, "output_dir": str(tmp_path / "teacher"), "train": {**TINY_TRAIN, "epochs": 0.5}}
    assert run_cli(monkeypatch, capsys, "train-teacher", str(write_cfg(teacher, "t.yaml")))[0] == 0
    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["teacher"] = {"model_dirs": [str(tmp_path / "teacher" / "model")], "train": {"epochs": 9}, "seeds": [5]}
    path = write(recipe, tmp_path)
    note = "teacher.seeds and teacher.train not used: the teachers are the given teacher.model_dirs"
    code, output = run_cli(monkeypatch, capsys, "run", str(path), "--dry-run")
    flat = " ".join(output.split())
    assert code == 0 and flat.count(f"note: {note}") == 1 and "nothing was run or written" in flat, output
    code, output = run_cli(monkeypatch, capsys, "run", str(path))
    flat = " ".join(output.split())
    assert code == 0 and flat.count(f"note: {note}") == 1 and "stage student: running" in flat, output
    assert plan_recipe(path, progress=False).notes == [note]


# --- Ctrl-C and SIGTERM, in real processes --------------------------------------------------------------------


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    start = time.monotonic()
    while not predicate():
        if proc.poll() is not None or time.monotonic() - start > timeout:
            proc.kill()
            pytest.fail(f"the run ended or stalled before the interrupt: {proc.communicate()}")
        time.sleep(0.05)


@pytest.mark.slow
def test_interrupts_say_where_the_run_stopped_and_how_to_resume(tiny_run, tmp_path):
    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["teacher"]["seeds"] = [1]
    # Long enough to be interrupted (144 steps an epoch), with no checkpoint before the epoch ends.
    recipe["teacher"]["train"] = {**recipe["teacher"]["train"], "epochs": 3, "batch_size": 2,
                                  "checkpoint_every_steps": 100000}
    path = tmp_path / "slow recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    stage = Path(recipe["output_dir"]) / "teacher-seed-1"
    log = tmp_path / "first.log"

    def start() -> subprocess.Popen:
        with log.open("w") as out:
            return subprocess.Popen(cli_command(["run", str(path)]), env=cli_env(), cwd=REPO,
                                    start_new_session=True, stdout=out, stderr=subprocess.STDOUT)

    proc = start()
    # The stage folder is claimed and the progress bar is up: the loop is running.
    _wait_for(lambda: (stage / "config.yaml").is_file() and "train:" in log.read_text(), proc)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    said = log.read_text()
    assert "interrupted (SIGINT, Ctrl-C)" in said, said
    assert "training stopped at step" in said and "no checkpoint yet" in said and "from step 0" in said
    assert "stage 'teacher-seed-1' did not finish" in said
    assert f"to resume: multidistill run '{path}'" in said
    assert "Traceback" not in said

    log = tmp_path / "second.log"
    proc = start()  # the same command: says that the stage starts over, then is stopped by SIGTERM
    _wait_for(lambda: "training starts from step 0" in log.read_text(), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    said = log.read_text()
    assert "interrupted (SIGTERM)" in said, said
    assert "to resume: multidistill run" in said


def test_the_resume_command_adds_resume_and_drops_overwrite():
    from multidistill.utils.interrupt import resume_command

    assert resume_command(["train-teacher", "a b.yaml", "--overwrite"]) == \
        "multidistill train-teacher 'a b.yaml' --resume"
    assert resume_command(["distill", "s.yaml", "--resume"]) == "multidistill distill s.yaml --resume"
    assert resume_command(["demo", "--quick"]) == "multidistill demo --quick"
    assert resume_command(["evaluate", "model"]) is None
    from multidistill.utils.interrupt import rerun_note

    assert rerun_note(["benchmark", "a", "b"]).startswith("run it again to finish: the ONNX exports it finished are")
    assert rerun_note(["evaluate", "model"]) == "this command keeps no partial progress: run it again to redo it"


def test_a_signal_inside_a_deferred_block_arrives_when_the_block_ends():
    from multidistill.utils.interrupt import Interrupted, deferred_interrupts, signals_raise_interrupted

    done = []
    with signals_raise_interrupted():
        with pytest.raises(Interrupted) as stopped:
            with deferred_interrupts():
                signal.raise_signal(signal.SIGTERM)
                signal.raise_signal(signal.SIGINT)  # a second one while held: the first is what is delivered
                done.append("the block ran to its end")
            done.append("not reached: the held signal is raised as the block ends")
        assert stopped.value.signum == signal.SIGTERM
        assert done == ["the block ran to its end"]
        # No signal: nothing happens, and the handlers of the outer block are back.
        with deferred_interrupts():
            pass
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGINT)
