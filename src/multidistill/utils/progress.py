"""Progress bars: tqdm's bar in a terminal; in a log (stderr a file or a pipe, as in CI) a plain line now and then.

tqdm redraws its bar with carriage returns. In a terminal that is one line; in a log file every redraw stays, and a
15-minute training run wrote thousands of redraws joined into one line. Where stderr is not a terminal, a bar here
writes its state as a whole line at most every `LOG_INTERVAL_S` seconds (and once at its end), and the short bars
that clear themselves when done (``leave=False``: one evaluation pass) write nothing. $TQDM_MININTERVAL, when set,
still chooses the interval; $TQDM_DISABLE still turns every bar off (`quiet.bars_disabled`). In a notebook (whose
stderr is no terminal either) the bars stay tqdm's widgets.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import autonotebook, std
from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


class _Lines:
    """tqdm's output as whole lines on the current stderr (resolved at each write: a run's log may swap it)."""

    def write(self, text: str) -> None:
        for part in text.replace("\n", "\r").split("\r"):
            # tqdm clears a bar by writing spaces over it, and moves between stacked bars by escape codes
            if part.strip() and "\x1b" not in part:
                sys.stderr.write(part.rstrip() + "\n")

    def flush(self) -> None:
        sys.stderr.flush()


def in_terminal() -> bool:
    """Whether stderr, where bars go, is a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _env_interval() -> float | None:
    """$TQDM_MININTERVAL as a number, read at each bar: tqdm reads it once, when imported, so one set later (from
    Python) would not count. Not a number: None, as tqdm ignores a value it cannot read."""
    try:
        return float(os.environ["TQDM_MININTERVAL"])
    except (KeyError, ValueError):
        return None


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (same arguments) that writes lines instead of redraws where stderr is not a terminal."""
    notebook = autonotebook.tqdm is not std.tqdm  # tqdm.auto picked the notebook widget
    if in_terminal() or notebook or kwargs.get("disable"):
        return tqdm(iterable, **kwargs)
    if kwargs.get("leave") is False:  # a bar that clears itself leaves nothing in a log either
        return tqdm(iterable, **{**kwargs, "disable": True})
    kwargs.pop("dynamic_ncols", None)
    interval = _env_interval() or max(kwargs.get("mininterval", 0.0), LOG_INTERVAL_S)
    # maxinterval too: tqdm's monitor thread (on outside the CLI) refreshes a bar not drawn for that long
    kwargs.update(mininterval=interval, maxinterval=max(kwargs.get("maxinterval", 10.0), interval))
    # No width: a log line is not cut, so every loss term of the postfix stays in it (tqdm draws a 10-wide bar).
    return tqdm(iterable, file=_Lines(), **kwargs)
