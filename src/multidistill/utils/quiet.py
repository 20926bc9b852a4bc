"""The quiet switch of the Python API (``progress=False``) and the library chatter the CLI turns down."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator

BARS_ENV = "TQDM_DISABLE"
_quiet = False  # a quietened block is active


def bars_disabled(progress: bool) -> bool:
    """tqdm's ``disable=`` for a bar of a call made with ``progress``: always off without progress, else as
    $TQDM_DISABLE says. tqdm reads that variable only for bars made without ``disable=``, so a bar that passes
    one reads it here (any non-empty value disables, as in tqdm)."""
    return not progress or bool(os.environ.get(BARS_ENV))


def quiet_libraries() -> Callable[[], None]:
    """transformers down to errors and its and datasets' bars off; returns what puts them back as they were.

    Load reports list the unused BERT pooler as "unexpected" (by design: heads pool themselves), and datasets'
    per-map bars and transformers' "Loading weights" bar only repeat what the tool's own bars say.
    """
    import datasets
    import transformers

    verbosity = transformers.logging.get_verbosity()
    bars = datasets.is_progress_bar_enabled()
    loading_bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()

    def restore() -> None:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()
        if loading_bars:
            transformers.utils.logging.enable_progress_bar()

    return restore


@contextlib.contextmanager
def quietened(progress: bool) -> Iterator[None]:
    """With ``progress`` off: no bars, tables or notes for the block. This process's stdout and stderr go
    nowhere meanwhile (other threads' output too), transformers logs only errors and datasets draws no bars;
    Python warnings still reach the real stderr; all is put back after. With ``progress`` on: nothing changes."""
    global _quiet
    if progress or _quiet:  # nested in a quiet call (a recipe's stages): already quiet, warnings already routed
        yield
        return
    restore = quiet_libraries()
    _quiet = True
    show_warning, real_stderr = warnings.showwarning, sys.stderr

    def show_on_real_stderr(message, category, filename, lineno, file=None, line=None) -> None:
        show_warning(message, category, filename, lineno, real_stderr if file is None else file, line)

    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.showwarning = show_on_real_stderr
            yield
    finally:
        warnings.showwarning = show_warning
        restore()
        _quiet = False
