"""The consoles that commands print their tables and stage lines to, and the one width rule they share."""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console

PIPE_WIDTH = 160  # rich falls back to 80 columns off a terminal, which cuts table cells ("4.0e-…", "accur…")


def console_width(stream: TextIO) -> int | None:
    """The width of a console writing to ``stream``: None (the terminal's own width) on a terminal, PIPE_WIDTH
    through a pipe or into a log, where rich's 80-column default split stage lines and cut table cells."""
    try:
        return None if stream.isatty() else PIPE_WIDTH
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return PIPE_WIDTH


def stdout_console() -> Console:
    """A rich Console on stdout: the terminal's width on a terminal, PIPE_WIDTH through a pipe or into a log."""
    return Console(width=console_width(sys.stdout))


def stderr_console() -> Console:
    """A rich Console on stderr (stage lines, errors), with the width rule of `stdout_console` applied to stderr."""
    return Console(stderr=True, width=console_width(sys.stderr))
