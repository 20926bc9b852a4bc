"""The console that commands print their tables to."""

from __future__ import annotations

import sys

from rich.console import Console

PIPE_WIDTH = 160  # rich falls back to 80 columns off a terminal, which cuts table cells ("4.0e-…", "accur…")


def stdout_console() -> Console:
    """A rich Console on stdout: the terminal's width on a terminal, PIPE_WIDTH through a pipe or into a log."""
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
