"""The quiet switch of the Python API (``progress=False``) and the library chatter the CLI turns down."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

BARS_ENV = "TQDM_DISABLE"
_lock = threading.Lock()  # guards the count and the saved state below
_depth = 0  # quietened(False) blocks open now, in any thread
_saved: tuple | None = None  # what the first block in replaced: (restore libraries, showwarning, stdout, stderr, sink)


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


def _enter_quiet() -> None:
    """Count a quiet block in; the first one (in any thread) saves the state and points the streams nowhere."""
    global _depth, _saved
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        try:
            restore = quiet_libraries()
            show_warning, real_stdout, real_stderr = warnings.showwarning, sys.stdout, sys.stderr

            def show_on_real_stderr(message, category, filename, lineno, file=None, line=None) -> None:
                show_warning(message, category, filename, lineno, real_stderr if file is None else file, line)

            sink = open(os.devnull, "w")  # noqa: SIM115 (closed by the last block out)
        except BaseException:
            _depth -= 1
            raise
        _saved = (restore, show_warning, real_stdout, real_stderr, sink)
        sys.stdout = sys.stderr = sink
        warnings.showwarning = show_on_real_stderr


def _leave_quiet() -> None:
    """Count a quiet block out; the last one (in any thread) puts back what the first one saved."""
    global _depth, _saved
    with _lock:
        _depth -= 1
        if _depth > 0 or _saved is None:
            return
        restore, show_warning, real_stdout, real_stderr, sink = _saved
        _saved = None
        sys.stdout, sys.stderr = real_stdout, real_stderr
        warnings.showwarning = show_warning
        sink.close()
        restore()


@contextlib.contextmanager
def quietened(progress: bool) -> Iterator[None]:
    """With ``progress`` off: no bars, tables or notes for the block. This process's stdout and stderr go
    nowhere meanwhile (other threads' output too), transformers logs only errors and datasets draws no bars;
    Python warnings still reach the real stderr; all is put back after. With ``progress`` on: nothing changes.

    Blocks nest and overlap across threads: the first one in (a count under a lock) saves the state and
    quietens, the last one out puts it back, so no thread restores streams another still needs."""
    if progress:
        yield
        return
    _enter_quiet()
    try:
        yield
    finally:
        _leave_quiet()
