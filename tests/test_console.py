"""Every table and stage line the package prints survives a pipe: consoles are not cut to rich's 80-column default
off a terminal (`multidistill run ... | tee log`, and OUTPUT_DIR/log.txt)."""

from __future__ import annotations

import importlib
import io
import os
import pkgutil
import re
import subprocess
import sys

import pytest
from rich.console import Console

import multidistill
from multidistill.utils.console import PIPE_WIDTH, console_width, stderr_console, stdout_console


def _module_consoles() -> dict[str, Console]:
    found = {}
    for info in pkgutil.walk_packages(multidistill.__path__, "multidistill."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for attribute, value in vars(module).items():
            if isinstance(value, Console):
                found[f"{info.name}.{attribute}"] = value
    return found


def test_every_stdout_console_is_wide_through_a_pipe():
    # Under pytest stdout is captured, i.e. not a terminal: the case of `multidistill ... | tee log`.
    found = {name: console.width for name, console in _module_consoles().items() if not console.stderr}
    assert {"multidistill.cli.console", "multidistill.report.command.console",
            "multidistill.export.command.console", "multidistill.inference.command.console"} <= set(found)
    assert all(width >= PIPE_WIDTH for width in found.values()), found


def test_every_stderr_console_is_wide_through_a_pipe():
    """Stage lines ("stage student-nokd-books-seed-1: running -> runs/...") went to stderr at 80 columns and split."""
    if sys.stderr.isatty():  # pytest -s on a terminal: the consoles rightly took the terminal's width
        pytest.skip("stderr is a terminal")
    found = {name: console.width for name, console in _module_consoles().items() if console.stderr}
    assert {"multidistill.cli.err_console", "multidistill.recipes.stages.console",
            "multidistill.training.run_dir.console"} <= set(found)
    assert all(width >= PIPE_WIDTH for width in found.values()), found


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_width_rule():
    assert console_width(_Terminal()) is None  # a terminal: rich measures it
    assert console_width(io.StringIO()) == PIPE_WIDTH
    closed = io.StringIO()
    closed.close()
    assert console_width(closed) == PIPE_WIDTH  # isatty() raises ValueError on a closed stream
    assert console_width(object()) == PIPE_WIDTH  # a stream replaced by something without isatty
    assert stdout_console().width >= PIPE_WIDTH and stderr_console().width >= PIPE_WIDTH  # captured here: no tty
    assert stderr_console().stderr


def test_a_long_stage_line_stays_whole_through_a_pipe():
    """What `multidistill run 2>&1 | tee` shows: the stage line on one line, not split at column 80."""
    folder = "runs/metakd_tiny/student-nokd-books-seed-1-with-a-long-name"
    code = ("from multidistill.recipes.stages import console\n"
            f"console.print('[bold]stage student-nokd-books-seed-1: running[/bold] -> {folder}')\n")
    source = os.path.dirname(multidistill.__path__[0])  # the package as this test imports it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.sub(r"\x1b\[[0-9;]*m", "", done.stderr) == f"stage student-nokd-books-seed-1: running -> {folder}\n"
