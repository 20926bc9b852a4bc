"""Every example command in a `--help` text, the README and the export docs is valid: the command and its options
exist and parse, every config file it names exists, and every `--set` key exists in the config it applies to.
The cheap ones (`tasks`, `--version`) are run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from multidistill import cli
from tests.test_cli import run_cli

try:  # typer >= 0.24 carries its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:
    from click import UsageError

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
RUN_FOR_REAL = {"tasks", "--version"}
# Rich reads `[word]` (lowercase) as a style tag and drops it from help output unless written `\[word]`.
RICH_TAG = re.compile(r"(?<!\\)\[[a-z#/@][^\[\]]*\]")
SET_EXAMPLE = re.compile(r"--set ([a-z_][\w.]*=[^\s,;)]+)")
CONFIG_FILE = re.compile(r"configs/[\w./-]+\.yaml")
COMMAND_LINE = re.compile(r"^\s*(multidistill .+)$", re.MULTILINE)


def _group():
    return typer.main.get_command(cli.app)


def _help_texts() -> dict[str, list[str]]:
    """Command name -> its help text and every option's help."""
    texts = {}
    for name, command in _group().commands.items():
        texts[name] = [command.help or "", *(getattr(param, "help", None) or "" for param in command.params)]
    return texts


def _commands_in(text: str) -> list[tuple[list[str], bool]]:
    """`multidistill ...` commands in shell code blocks (after env settings and `&&`), each with True (a whole
    command line), and in `inline code` (often a mention such as `multidistill soft-targets`), with False."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    lines = [(line, True) for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    lines += [(line, False) for line in re.findall(r"`(multidistill [^`]+)`", text)]
    found = []
    for line, whole in lines:
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words = words[1:]
            if words and words[0] == "multidistill":
                found.append((words[1:], whole))
    return found


def _all_examples() -> list[tuple[str, list[str], bool]]:
    examples = []
    for doc in DOCS:
        examples += [(doc.name, argv, whole) for argv, whole in _commands_in(doc.read_text())]
    for name, texts in _help_texts().items():
        for text in texts:
            examples += [(f"{name} --help", shlex.split(line, comments=True)[1:], True)
                         for line in COMMAND_LINE.findall(text)]
    return examples


def validate_mention(argv: list[str]) -> None:
    """An inline mention: the command exists and so does every option it names."""
    if argv == ["--version"]:
        return
    group = _group()
    assert argv and argv[0] in group.commands, f"no command {argv[:1]}"
    options = {opt for param in group.commands[argv[0]].params for opt in getattr(param, "opts", [])}
    options |= {opt for param in group.commands[argv[0]].params for opt in getattr(param, "secondary_opts", [])}
    for word in argv[1:]:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"{argv[0]} has no option {word}"


def validate(argv: list[str]) -> None:
    """Parse ``multidistill ARGV`` as the CLI would and load the configs it names with its overrides."""
    from multidistill.config import load_config
    from multidistill.recipes import load_recipe
    from multidistill.recipes.demo import load_demo_config

    if argv == ["--version"]:
        return
    group = _group()
    assert argv and argv[0] in group.commands, f"no command {argv[:1]}"
    command = group.commands[argv[0]]
    params = command.make_context(argv[0], list(argv[1:])).params  # unknown options / bad values raise here
    for value in argv[1:]:
        for name in CONFIG_FILE.findall(value):
            assert (REPO / name).is_file(), name
    overrides = params.get("overrides")
    if argv[0] in ("train-teacher", "distill"):
        config = load_config(params["config"], overrides)
        assert (config.kind == "distill") == (argv[0] == "distill")
    elif argv[0] == "run":
        load_recipe(params["recipe"], overrides)
    elif argv[0] == "demo":
        load_demo_config(params["config"], overrides, quick=params["quick"])


EXAMPLES = _all_examples()


def test_examples_were_found():
    sources = {source for source, _, whole in EXAMPLES if whole}
    assert {"README.md", "export.md", "demo --help"} <= sources
    assert len(EXAMPLES) >= 15


@pytest.mark.parametrize(("source", "argv", "whole"), EXAMPLES,
                         ids=[f"{s}: {' '.join(a)}"[:90] for s, a, _ in EXAMPLES])
def test_example_command_is_valid(source, argv, whole, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # examples name configs/ relative to the repository
    if not whole:
        validate_mention(argv)
        return
    validate(argv)
    if argv[0] in RUN_FOR_REAL:
        code, output = run_cli(monkeypatch, capsys, *argv)
        assert code == 0, output


def _set_examples() -> list[tuple[str, str]]:
    return [(name, item) for name, texts in _help_texts().items() for text in texts
            for item in SET_EXAMPLE.findall(text)]


@pytest.mark.parametrize(("command", "item"), _set_examples())
def test_set_examples_in_help_name_real_keys(command, item, monkeypatch):
    """A `--set` example applies to the configs its command's help names (or to the demo's settings)."""
    from multidistill.config import load_config
    from multidistill.recipes import load_recipe
    from multidistill.recipes.demo import load_demo_config

    monkeypatch.chdir(REPO)
    configs = sorted({name for text in _help_texts()[command] for name in CONFIG_FILE.findall(text)})
    if command == "demo":
        load_demo_config(None, [item])
        return
    assert configs, f"`{command} --help` gives a --set example but names no config it applies to"
    for config in configs:
        (load_recipe if command == "run" else load_config)(config, [item])


def test_every_command_has_a_checked_set_example():
    commands_with_set = {name for name, command in _group().commands.items()
                         if any("--set" in getattr(p, "opts", []) for p in command.params)}
    assert commands_with_set == {command for command, _ in _set_examples()}


def test_demo_keys_listed_in_its_help_exist():
    from multidistill.recipes.demo import DemoConfig

    text = _group().commands["demo"].help
    listed = text[text.index("DemoConfig):") + len("DemoConfig):"):text.index("Examples")]
    keys = re.findall(r"\b([a-z_]+(?:\.[a-z_*]+)+|[a-z_]+_[a-z_]+)\b", re.sub(r"\([^)]*\)", "", listed))
    assert len(keys) >= 10
    for key in keys:
        node = DemoConfig
        for part in key.split("."):
            if part == "*":
                break
            assert part in node.model_fields, key
            node = node.model_fields[part].annotation
    for key in DemoConfig.model_fields:
        assert key in listed, f"demo setting {key} is not listed in `demo --help`"


def test_no_help_text_loses_brackets_to_rich_markup():
    for name, texts in _help_texts().items():
        for text in texts:
            assert not RICH_TAG.search(text), (name, RICH_TAG.search(text).group(0))


def test_demo_help_shows_the_install_command_whole(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    code, output = run_cli(monkeypatch, capsys, "demo", "--help")
    assert code == 0 and "pip install 'multidistill[demo]'" in output and "teacher_train.lr=3e-5" in output
    assert "pip install -e '.[demo]' in a clone" in output


def test_version(monkeypatch, capsys):
    from multidistill import __version__

    code, output = run_cli(monkeypatch, capsys, "--version")
    assert code == 0 and output.strip() == f"multidistill {__version__}"


@pytest.mark.parametrize("argv", [
    ["nope"], ["export", "m", "--out", "o", "--frobnicate"],
    ["train-teacher", "configs/teacher_glue.yaml", "--set", "train.lrr=1"],
    ["train-teacher", "configs/no_such.yaml"],
    ["demo", "--set", "train.lr=3e-5"],
])
def test_the_checker_catches_bad_examples(argv, monkeypatch):
    from multidistill.errors import MultidistillError

    monkeypatch.chdir(REPO)
    with pytest.raises((AssertionError, UsageError, MultidistillError)):
        validate(argv)
