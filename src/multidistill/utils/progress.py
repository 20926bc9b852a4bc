"""Progress bars: tqdm's bar in a terminal; in a log (stderr a file or a pipe, as in CI) a plain line now and then.

tqdm redraws its bar with carriage returns. In a terminal that is one line; in a log file every redraw stays, and a
15-minute training run wrote thousands of redraws joined into one line. Where stderr is not a terminal, a bar here
writes its state as a whole line at most every `LOG_INTERVAL_S` seconds (and once at its end), and the short bars
that clear themselves when done (``leave=False``: one evaluation pass) write nothing. $TQDM_MININTERVAL, when set,
still chooses the interval; $TQDM_DISABLE still turns every bar off (`quiet.bars_disabled`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0
LOG_WIDTH = 100  # a log line's width: no terminal to measure


class _Lines:
    """tqdm's output as whole lines on the current stderr (resolved at each write: a run's log may swap it)."""

    def write(self, text: str) -> None:
        for part in text.replace("\n", "\r").split("\r"):
            if part.strip():  # tqdm clears a bar by writing spaces over it: nothing to keep
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


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (same arguments) that writes lines instead of redraws where stderr is not a terminal."""
    if in_terminal() or kwargs.get("disable"):
        return tqdm(iterable, **kwargs)
    if kwargs.get("leave") is False:  # a bar that clears itself leaves nothing in a log either
        return tqdm(iterable, **{**kwargs, "disable": True})
    kwargs.pop("dynamic_ncols", None)
    if "TQDM_MININTERVAL" not in os.environ:
        kwargs["mininterval"] = max(kwargs.get("mininterval", 0.0), LOG_INTERVAL_S)
    return tqdm(iterable, file=_Lines(), ncols=LOG_WIDTH, **kwargs)
