"""Every table the package prints survives a pipe: stdout consoles are not cut to rich's 80-column default."""

from __future__ import annotations

import importlib
import pkgutil

from rich.console import Console

import multidistill
from multidistill.utils.console import PIPE_WIDTH


def test_every_stdout_console_is_wide_through_a_pipe():
    # Under pytest stdout is captured, i.e. not a terminal: the case of `multidistill ... | tee log`.
    found = {}
    for info in pkgutil.walk_packages(multidistill.__path__, "multidistill."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for attribute, value in vars(module).items():
            if isinstance(value, Console) and not value.stderr:
                found[f"{info.name}.{attribute}"] = value.width
    assert {"multidistill.cli.console", "multidistill.report.command.console",
            "multidistill.export.command.console", "multidistill.inference.command.console"} <= set(found)
    assert all(width >= PIPE_WIDTH for width in found.values()), found
