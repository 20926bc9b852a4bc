"""The command line: every bad input of the foundation issue exits with code 2, names the culprit,
and leaves what is on disk alone; the happy path trains and evaluates."""

from __future__ import annotations

import json
import re
import sys

import pytest
import typer

from multidistill import cli


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["multidistill", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def guarded_output(tiny_run, tmp_path):
    """An output folder that already holds a file, to prove failed runs never touch it."""
    raw, _ = tiny_run
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    return out


def _assert_untouched(out) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "keep me"


def _corrupt(raw, data_root, task: str, content: str) -> None:
    (data_root / task / "train.tsv").write_text(content)


BAD_INPUTS = {
    "missing file": (lambda raw, root: (root / "toy_sent" / "train.tsv").unlink(), ["train.tsv", "not found"]),
    "wrong column count": (
        lambda raw, root: _corrupt(raw, root, "toy_sent", "sentence\tlabel\ngood film\t1\nbad\t0\textra\n"),
        ["train.tsv", "line 3"]),
    "label not in list": (lambda raw, root: _corrupt(raw, root, "toy_sent", "sentence\tlabel\ngood film\t1\nbad\t7\n"),
                          ["train.tsv", "line 3", "'7'"]),
    "empty split": (lambda raw, root: _corrupt(raw, root, "toy_sent", "sentence\tlabel\n"), ["train.tsv", "empty"]),
    "regression label not a number": (
        lambda raw, root: (root / "toy_reg" / "train.tsv").write_text("s1\ts2\tscore\na\tb\tfive\n"),
        ["train.tsv", "line 2", "score"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_data_fails_before_training_and_names_the_place(case, tiny_run, guarded_output, tmp_path, monkeypatch,
                                                            capsys):
    raw, write = tiny_run
    damage, expected = BAD_INPUTS[case]
    damage(raw, tmp_path / "data")
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()), "--overwrite")
    assert code == 2, output
    for fragment in expected:
        assert fragment in output, (fragment, output)
    assert "Traceback" not in output
    _assert_untouched(guarded_output)


@pytest.mark.parametrize(("overrides", "expected"), [
    (["data.tasks=[toy_sent,nope]"], ["unknown task 'nope'"]),
    (["train.lrr=1"], ["train.lrr", "unknown key"]),
    (["model.max_seq_length=100"], ["model.max_seq_length", "100", "64"]),
    (["train.batch_size=-4"], ["train.batch_size"]),
])
def test_bad_config_fails_before_training(overrides, expected, tiny_run, guarded_output, monkeypatch, capsys):
    _, write = tiny_run
    args = sum((["--set", item] for item in overrides), [])
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()), *args, "--overwrite")
    assert code == 2, output
    for fragment in expected:
        assert fragment in output, (fragment, output)
    _assert_untouched(guarded_output)


def test_unknown_key_in_the_yaml_file_is_named(tiny_run, monkeypatch, capsys):
    raw, write = tiny_run
    code, output = run_cli(monkeypatch, capsys, "train-teacher",
                           str(write({**raw, "model": {**raw["model"], "poolng": "cls"}})))
    assert code == 2 and "model.poolng" in output


def test_a_folder_that_is_not_a_run_is_never_claimed(tiny_run, guarded_output, monkeypatch, capsys):
    _, write = tiny_run
    for flags in ([], ["--resume"], ["--overwrite"]):
        code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()), *flags)
        assert code == 2 and "is not a multidistill run" in output, output
    _assert_untouched(guarded_output)


def test_train_then_evaluate(tiny_run, tmp_path, monkeypatch, capsys):
    raw, write = tiny_run
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()), "--set", "train.epochs=1")
    assert code == 0, output
    assert "average" in output and "toy_pair" in output
    model_dir = tmp_path / "run" / "model"
    # what a teacher is for next: the command that stores its soft targets, with this run's model and tasks
    assert f"next: the teacher's soft targets for a student, multidistill soft-targets --teacher {model_dir} " \
           "--tasks toy_sent,toy_pair,toy_reg --out SIGNALS_DIR" in " ".join(output.split())
    code, output = run_cli(monkeypatch, capsys, "evaluate", str(model_dir), "--tasks", "toy_sent,toy_reg",
                           "--data-root", raw["data"]["data_root"], "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, output
    scores = json.loads((tmp_path / "run" / "eval_dev.json").read_text())
    assert set(scores["tasks"]) == {"toy_sent", "toy_reg"}
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert scores["tasks"]["toy_sent"] == pytest.approx(trained["tasks"]["toy_sent"])
    # Model folders side by side (not a run's model/) each get their own file; both used to write eval_dev.json.
    import shutil

    for name in ("a", "b"):
        shutil.copytree(model_dir, tmp_path / "models" / name)
        code, output = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "models" / name), "--tasks",
                               "toy_sent", "--data-root", raw["data"]["data_root"],
                               "--cache-dir", str(tmp_path / "cache"))
        assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "models").glob("eval_*")) == ["eval_a_dev.json", "eval_b_dev.json"]

    code, output = run_cli(monkeypatch, capsys, "evaluate", str(model_dir), "--tasks", "cola")
    assert code == 2 and "no head for ['cola']" in output


def test_evaluate_refuses_a_folder_that_is_not_a_model(tmp_path, monkeypatch, capsys):
    (tmp_path / "junk").mkdir()
    code, output = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "junk"))
    assert code == 2 and "multidistill_model.json" in output


def test_tasks_lists_builtins_with_metrics(monkeypatch, capsys):
    from rich.console import Console

    monkeypatch.setattr(cli, "console", Console(width=200))
    code, output = run_cli(monkeypatch, capsys, "tasks")
    assert code == 0
    for fragment in ("sst2", "mrpc", "cola", "stsb", "matthews", "pearson", "amazon-books", "mnli-genre"):
        assert fragment in output


@pytest.mark.parametrize(("command", "options"), [
    ("train-teacher", ["--set", "--resume", "--overwrite"]),
    ("evaluate", ["--tasks", "--data-root", "--split", "--batch-size", "--max-seq-length", "--bf16", "--output"]),
])
def test_help_explains_every_option(command, options, monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, command, "--help")
    assert code == 0
    for option in options:
        assert option in output


def test_seed_ensemble_then_soft_targets(tiny_run, tmp_path, monkeypatch, capsys):
    raw, write = tiny_run
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()), "--seeds", "1,2",
                           "--set", "train.epochs=0.5")
    assert code == 0, output
    members = [tmp_path / "run" / f"seed-{s}" / "model" for s in (1, 2)]
    assert all((m / "model.safetensors").is_file() for m in members)
    assert (members[0] / "model.safetensors").read_bytes() != (members[1] / "model.safetensors").read_bytes()

    args = ["soft-targets", "--teacher", str(members[0]), "--teacher", str(members[1]), "--tasks", "toy_sent,toy_reg",
            "--data-root", raw["data"]["data_root"], "--out", str(tmp_path / "store"),
            "--cache-dir", str(tmp_path / "cache"), "--seed", "7"]
    code, output = run_cli(monkeypatch, capsys, *args)
    assert code == 0, output
    assert "toy_reg" in output and (tmp_path / "store" / "manifest.json").is_file()
    code, output = run_cli(monkeypatch, capsys, *args[:3], *args[5:])  # one of the two teachers
    assert code == 2 and "built for other teachers" in output
    code, output = run_cli(monkeypatch, capsys, *[a if a != members[1].as_posix() else f"{members[0]}/" for a in args])
    assert code == 2 and "--teacher names the same folder twice" in output
    code, output = run_cli(monkeypatch, capsys, *args, "--splits", "train,train")
    assert code == 2 and "--splits lists 'train' twice" in output
    code, output = run_cli(monkeypatch, capsys, *[a if a != "toy_sent,toy_reg" else "toy_sent,,toy_reg" for a in args])
    assert code == 2 and "--tasks 'toy_sent,,toy_reg' has an empty item" in output

    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()), "--seeds", "1,x")
    assert code == 2 and "--seeds" in output


def test_distill_a_student_from_stored_soft_targets(tiny_run, tmp_path, monkeypatch, capsys):
    raw, write = tiny_run
    teacher_cfg = {**raw, "train": {**raw["train"], "epochs": 1}}
    assert run_cli(monkeypatch, capsys, "train-teacher", str(write(teacher_cfg)))[0] == 0
    store = tmp_path / "signals"
    code, output = run_cli(monkeypatch, capsys, "soft-targets", "--teacher", str(tmp_path / "run" / "model"),
                           "--tasks", "toy_sent,toy_pair,toy_reg", "--data-root", raw["data"]["data_root"],
                           "--out", str(store), "--cache-dir", str(tmp_path / "cache"), "--seed", "7")
    assert code == 0, output
    student = {**teacher_cfg, "kind": "distill", "output_dir": str(tmp_path / "student"), "signals": str(store),
               "objective": {"classification": [{"loss": "hard", "weight": 0.5}, {"loss": "soft_ce", "weight": 0.5}],
                             "regression": [{"loss": "hard"}, {"loss": "score_mse"}]}}
    code, output = run_cli(monkeypatch, capsys, "distill", str(write(student, "student.yaml")))
    assert code == 0, output
    assert json.loads((tmp_path / "student" / "metrics.json").read_text())["tasks"].keys() == {
        "toy_sent", "toy_pair", "toy_reg"}
    assert f"next: multidistill export {tmp_path / 'student' / 'model'} --format onnx --out EXPORT_DIR" in " ".join(
        output.split())

    # A store made for a different training subset is refused before training.
    code, output = run_cli(monkeypatch, capsys, "distill", str(write(student, "student.yaml")), "--overwrite",
                           "--set", "train.max_examples_per_task=10")
    assert code == 2 and "training rows" in output
    # A soft objective without a store, and a distill config given to train-teacher, are config errors.
    code, output = run_cli(monkeypatch, capsys, "distill", str(write({**student, "signals": None}, "s2.yaml")))
    assert code == 2 and "key 'signals'" in output
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write(student, "student.yaml")))
    assert code == 2 and "distill" in output


def test_online_teacher_gives_the_same_targets_as_the_store(tiny_run, tmp_path):
    """Online signals (teacher run on each batch) equal the stored ones row for row."""
    import torch

    from multidistill.config import DataConfig, TeacherRunConfig
    from multidistill.data.collate import collate
    from multidistill.data.prepare import prepare_data
    from multidistill.models.backbone import load_tokenizer
    from multidistill.teachers.generate import build_signal_store
    from multidistill.teachers.online import OnlineSignals
    from multidistill.teachers.stored import StoredSignals
    from multidistill.training.run import train_model

    raw, _ = tiny_run
    teacher = TeacherRunConfig.model_validate({**raw, "train": {**raw["train"], "epochs": 0.5}})
    train_model(teacher)
    data_cfg = DataConfig.model_validate(raw["data"])
    store = build_signal_store([tmp_path / "run" / "model"], data_cfg, tmp_path / "store", seed=7)
    tokenizer = load_tokenizer(raw["model"]["name_or_path"])
    data = prepare_data(data_cfg, tokenizer, 32, max_examples_per_task=None, seed=7)
    online = OnlineSignals([tmp_path / "run" / "model"], tokenizer, list(data.tasks))
    stored = StoredSignals(store, list(data.tasks))
    for name, task in data.tasks.items():
        rows = [0, 3, 5]
        batch = collate(task, data.train_sets[name][rows], tokenizer.pad_token_id)
        batch["rows"] = rows
        a, b = online(dict(batch)), stored(dict(batch))
        assert torch.allclose(a["teacher_logits"], b["teacher_logits"], atol=1e-5)
        assert torch.allclose(a["teacher_mean"], b["teacher_mean"], atol=1e-5)


def test_a_run_folder_keeps_a_log_of_what_was_printed(tiny_run, tmp_path, monkeypatch, capsys):
    _, write = tiny_run
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()), "--set", "train.epochs=0.5")
    assert code == 0, output
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.startswith("==> ") and "multidistill train-teacher" in log
    assert "best dev metrics" in log and "average" in log and "model:" in log
    assert "\r" not in log  # progress bars: only each line's final state
    # A refused run (the folder holds a run, no --resume) leaves the folder, log included, as it was.
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()))
    assert code == 2 and (tmp_path / "run" / "log.txt").read_text() == log
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()), "--resume", "--set", "train.epochs=0.5")
    assert code == 0, output
    assert (tmp_path / "run" / "log.txt").read_text().count("==> ") == 2


def test_run_log_records_the_error_that_stopped_a_run(tmp_path, capsys):
    from multidistill.errors import ConfigError
    from multidistill.utils.runlog import run_log

    with pytest.raises(ConfigError), run_log(tmp_path / "out", "demo"):
        print("step 1\rstep 2\rstep 3")
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / ".multidistill-run").write_text("")  # claimed, as every run claims its folder
        (tmp_path / "out" / "stage.json").write_text("{}")  # the run wrote something before it stopped
        raise ConfigError("bad thing")
    assert (tmp_path / "out" / "log.txt").read_text().splitlines()[1:] == ["step 3", "error: bad thing"]
    assert "step 1\rstep 2\rstep 3" in capsys.readouterr().out  # the console saw everything
    with pytest.raises(ConfigError), run_log(tmp_path / "untouched", "demo"):
        raise ConfigError("refused before the folder was made")
    assert not (tmp_path / "untouched").exists()


def test_a_refused_command_writes_no_log_into_a_folder_that_is_no_run(tmp_path, capsys):
    """output_dir: . (a user's folder): the folder may gain a cache meanwhile, which is not the run's writing."""
    from multidistill.errors import ConfigError
    from multidistill.utils.runlog import run_log

    with pytest.raises(ConfigError), run_log(tmp_path, "train-teacher c.yaml"):
        (tmp_path / ".cache").mkdir()
        raise ConfigError("output_dir is not empty and is not a multidistill run")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache"]


def test_run_log_of_a_crashed_resume_is_kept_but_bad_input_leaves_no_trace(tmp_path, capsys):
    from multidistill.errors import ConfigError
    from multidistill.utils.runlog import run_log

    run = tmp_path / "run"
    run.mkdir()
    (run / "log.txt").write_text("earlier\n")
    with pytest.raises(ConfigError), run_log(run, "run x"):
        raise ConfigError("refused")
    assert (run / "log.txt").read_text() == "earlier\n"
    with pytest.raises(KeyboardInterrupt), run_log(run, "run x"):
        print("resuming")
        exc = KeyboardInterrupt()
        exc.add_note("stage 'student' stopped at step 7; a re-run resumes it")
        raise exc
    assert (run / "log.txt").read_text().splitlines()[2:] == ["resuming", "stopped by KeyboardInterrupt",
                                                                 "  stage 'student' stopped at step 7; a re-run "
                                                                 "resumes it"]


@pytest.mark.parametrize("args, option", [
    (("evaluate", "{model}", "--batch-size", "0"), "--batch-size"),
    (("evaluate", "{model}", "--max-seq-length", "0"), "--max-seq-length"),
    (("soft-targets", "--teacher", "{model}", "--tasks", "t", "--out", "s", "--seed", "-1"), "--seed"),
    (("soft-targets", "--teacher", "{model}", "--tasks", "t", "--out", "s", "--seed", "4294967296"), "--seed"),
    (("soft-targets", "--teacher", "{model}", "--tasks", "t", "--out", "s", "--max-examples-per-task", "0"),
     "--max-examples-per-task"),
    (("soft-targets", "--teacher", "{model}", "--tasks", "t", "--out", "s", "--batch-size", "0"), "--batch-size"),
    (("benchmark", "{model}", "--tasks", "t", "--rounds", "0"), "--rounds"),
    (("benchmark", "{model}", "--tasks", "t", "--latency-runs", "0"), "--latency-runs"),
    (("benchmark", "{model}", "--tasks", "t", "--batch-size", "0"), "--batch-size"),
])
def test_option_values_out_of_range_are_refused_by_name(args, option, tmp_path, monkeypatch, capsys):
    """Zero sizes, counts and out-of-range seeds stop at the command line (they crashed, or 0 meant "default")."""
    monkeypatch.chdir(tmp_path)  # relative outputs (--out s, benchmark.json) land where the check below looks
    code, output = run_cli(monkeypatch, capsys, *[arg.format(model=tmp_path) for arg in args])
    assert code == 2, output
    assert "Invalid value for" in output and option in output, output
    assert "Traceback" not in output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_zero_lengths_and_counts_are_refused_in_python_too(tmp_path):
    """The Python API refuses what the CLI now refuses, instead of reading 0 as "the model's length"."""
    from multidistill.errors import MultidistillError
    from multidistill.evaluation.run import evaluate_model_dir
    from multidistill.evaluation.speed import compare_speed

    with pytest.raises(MultidistillError, match="--split 'train'"):
        evaluate_model_dir(tmp_path, tasks=None, split="train")
    with pytest.raises(MultidistillError, match="--batch-size"):
        evaluate_model_dir(tmp_path, tasks=None, batch_size=0)
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        compare_speed({}, None, rounds=0)


def test_a_signal_store_refuses_a_max_length_with_no_room_for_text(tiny_model_dir, tmp_path):
    """max_length=0 was read as "the teacher's length"; now it, like 1 or 2, is refused and nothing is written."""
    from multidistill.config import DataConfig
    from multidistill.data.tasks import Task
    from multidistill.errors import ConfigError
    from multidistill.evaluation.run import evaluate_model_dir
    from multidistill.models import MultiTaskModel
    from multidistill.models.backbone import load_tokenizer
    from multidistill.teachers.generate import build_signal_store
    from tests.conftest import write_tiny_tasks

    tasks = [Task.model_validate(spec) for spec in write_tiny_tasks(tmp_path / "data", n_train=8, n_dev=4)]
    MultiTaskModel.from_backbone(str(tiny_model_dir), tasks, max_length=32).save_pretrained(
        tmp_path / "teacher", load_tokenizer(str(tiny_model_dir)))
    data = DataConfig(tasks=["toy_sent"], data_root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"),
                      task_specs=tasks)
    for length in (0, 2):
        with pytest.raises(ConfigError, match=f"{length} is too short"):
            build_signal_store([tmp_path / "teacher"], data, tmp_path / "store", max_length=length)
        with pytest.raises(ConfigError, match=f"{length} is too short"):  # evaluation read 0 as the model's length
            evaluate_model_dir(tmp_path / "teacher", tasks=["toy_sent"], data_root=str(tmp_path / "data"),
                               max_seq_length=length, cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "store").exists()


def test_ctrl_c_while_the_command_line_is_imported_ends_with_one_line(monkeypatch, capsys):
    """`multidistill` imports typer, rich and transformers for about a second; a Ctrl-C then printed a 50-line
    traceback from inside an import."""
    import sys

    from multidistill import launch

    class Interrupting:
        def find_spec(self, name, path=None, target=None):
            if name == "multidistill.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "multidistill.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as stopped:
        launch.main()
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "interrupted while starting; nothing was done\n"


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # where a CI sets FORCE_COLOR, help output is styled
COMMANDS = sorted(typer.main.get_command(cli.app).commands)


def _help(monkeypatch, capsys, width: int, *command: str) -> str:
    monkeypatch.setenv("COLUMNS", str(width))  # what rich reads off a terminal (tests capture stdout)
    code, output = run_cli(monkeypatch, capsys, *command, "--help")
    assert code == 0, output
    return ANSI.sub("", output)


def _ragged_lines(output: str, width: int) -> list[str]:
    """Lines of a help's description (above its first panel) that end before a word that would have fitted: a line
    break of the source kept in the help. Indented lines (a ``\\b`` block such as demo's examples) keep theirs."""
    lines = output.split("╭")[0].splitlines()
    # A description line is " " + up to width - 2 characters (rich pads the help text one column on each side).
    return [f"{line.strip()} ⏎ {after.strip()}" for line, after in zip(lines, lines[1:], strict=False)
            if line.strip() and after.strip() and not after.startswith("  ")
            and len(line.rstrip()) + len(after.split()[0]) <= width - 2]


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_fits_the_terminal(command, width, monkeypatch, capsys):
    """At 80 columns no option name and no value of a help table is cut ("--attention-mask-va…"), and no
    paragraph breaks where its source line did ("...from its last checkpoint, and a⏎stage made ...")."""
    output = _help(monkeypatch, capsys, width, *([command] if command else []))
    assert "…" not in output, [line for line in output.splitlines() if "…" in line]
    group = typer.main.get_command(cli.app)
    for param in (group.commands[command] if command else group).params:
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("-"):
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", output), name
    assert _ragged_lines(output, width) == []


@pytest.mark.parametrize("width", [80, 120])
def test_help_paragraphs_run_on_across_source_lines(width, monkeypatch, capsys):
    """Known sentences that the source wraps mid-sentence read on in the rendered help."""
    run_help = _help(monkeypatch, capsys, width, "run")
    assert not _ragged_lines(run_help, width)
    if width == 120:
        assert any("its last checkpoint, and a stage made" in line for line in run_help.splitlines()), run_help
    main_help = _help(monkeypatch, capsys, width)  # the commands table shows each command's first paragraph
    # (where the sentence wraps depends on the widest command name: the rows are read as one text)
    flowing = " ".join(" ".join(line.strip("│ ").split()) for line in main_help.splitlines())
    assert "latency at batch 1 (median, p95)" in flowing, main_help
    demo_help = _help(monkeypatch, capsys, width, "demo")  # its \b examples keep their lines
    lines = [line.rstrip() for line in demo_help.splitlines()]
    assert lines[lines.index(" Examples:") + 1] == "   multidistill demo --quick", demo_help


def test_unwrap_help_joins_the_lines_of_each_paragraph():
    text = """First paragraph,
    wrapped in the source.

    Second one,
    also wrapped.

    \b
    Examples:
      multidistill demo --quick
      multidistill demo
    """
    assert cli.unwrap_help(text) == ("First paragraph, wrapped in the source.\n\nSecond one, also wrapped.\n\n"
                                     "Examples:\n  multidistill demo --quick\n  multidistill demo")
    assert cli.unwrap_help(text, keep_mark=True).endswith("\n\n\b\nExamples:\n  multidistill demo --quick\n"
                                                          "  multidistill demo")
    assert cli.unwrap_help(None) is None and cli.unwrap_help("") == ""


def test_help_version_and_a_missing_config_answer_before_the_heavy_imports(tmp_path):
    """`--help`, a command's `--help` and `--version` import neither torch nor transformers, and a config that does
    not exist is refused before the training stack is imported (they took 8 s and 14 s on a 2-core machine)."""
    import os
    import subprocess

    probe = ("import sys\nfrom multidistill import cli\nsys.argv = ['multidistill', *sys.argv[1:]]\n"
             "try:\n    cli.main()\nexcept SystemExit as exc:\n    code = exc.code\n"
             "print('|', code, *(m in sys.modules for m in ('torch', 'transformers', 'multidistill.teachers.train',"
             " 'multidistill.training.distill', 'multidistill.pipeline')))")
    missing = str(tmp_path / "missing.yaml")
    expected = {("--help",): "0 False False False False False",
                ("train-teacher", "--help"): "0 False False False False False",
                ("--version",): "0 False False False False False",
                ("train-teacher", missing): "2 * * False False False",  # (torch: whatever quietening needs)
                ("run", missing): "2 * * False False False"}
    for args, said in expected.items():
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "COLUMNS": "100"})
        got = done.stdout.rsplit("| ", 1)[-1].split()
        assert [g if s != "*" else "*" for g, s in zip(got, said.split(), strict=True)] == said.split(), (
            args, done.stdout[-500:], done.stderr[-2000:])
        if said.startswith("2"):
            assert "does not exist" in done.stderr, done.stderr


def test_a_result_table_marks_scores_a_constant_predictor_also_reaches(capsys):
    """A teacher at 0.5200 on SST-2 read as a weak model; it is the majority class. The table marks it and names the
    predictor; a score above its baseline, or a task without one, is left as it was."""
    from multidistill.cli import print_metrics

    metrics = {"tasks": {"sst2": {"accuracy": 0.52}, "mrpc": {"f1": 0.90}, "cola": {"matthews": 0.3}},
               "main": {"sst2": 0.52, "mrpc": 0.90, "cola": 0.3}, "average": 0.5733}
    baselines = {"sst2": {"predictor": "always '1' (majority class, 56% of training)", "main": 0.5150},
                 "mrpc": {"predictor": "always '1'", "main": 0.8122}}
    print_metrics("teacher", metrics, baselines)
    out = " ".join(capsys.readouterr().out.split())
    assert "0.5200†" in out and "0.9000†" not in out and "0.3000†" not in out
    assert "† no better than a constant predictor (within 0.01): sst2: always '1' (majority class, 56% of " \
           "training) scores 0.5150" in out
    assert "mrpc: always" not in out
    print_metrics("teacher", metrics)  # no baselines recorded: no marks, no note
    assert "†" not in capsys.readouterr().out


@pytest.mark.parametrize(("args", "expect"), [
    (["train-teacher", "--config", "c.yaml"], "train-teacher takes its config file as its first argument, not "
                                              "--config"),
    (["run", "--config=c.yaml"], "multidistill run CONFIG.yaml"),
    (["distill", "c.yaml", "--output-dir", "o"], "distill has no --output-dir: the output folder is the config's "
                                                 "output_dir; set it there, or give --set output_dir=DIR"),
    (["train-teacher", "c.yaml", "--output_dir=o"], "--set output_dir=DIR"),
])
def test_options_from_other_training_scripts_say_where_the_setting_goes(args, expect, monkeypatch, capsys):
    """`--config FILE` and `--output-dir DIR` got the parser's bare "No such option"."""
    code, output = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and expect in output, output


def test_benchmark_says_where_its_onnx_exports_went(tmp_path, monkeypatch, capsys):
    """They were written beside the report (exports/) with nothing said."""
    from multidistill.evaluation import benchmark as bench

    report = {"models": {"teacher": {"export": str(tmp_path / "exports" / "teacher")}, "student": {"export": None}},
              "gate_failures": []}
    monkeypatch.setattr(bench, "benchmark", lambda *args, **kwargs: report)
    monkeypatch.setattr(cli, "print_benchmark", lambda report: None)
    code, output = run_cli(monkeypatch, capsys, "benchmark", str(tmp_path / "a"), "--tasks", "sst2", "--out",
                           str(tmp_path / "b.json"))
    assert code == 0, output
    assert f"ONNX exports: {tmp_path / 'exports' / 'teacher'}" in " ".join(output.split())
