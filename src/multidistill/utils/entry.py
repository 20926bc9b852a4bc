"""What every public run of the Python API shares, in one block: one run at a time in a process, the quiet
switch, and an unwritable output as the package's `OutputError` (as the CLI reports it)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from multidistill.errors import OutputError, RunInProgress
from multidistill.utils.interrupt import add_note
from multidistill.utils.quiet import quietened


class _Runs:
    """The thread whose run holds this process (nested calls of that thread, e.g. a recipe's stages, go on)."""

    guard = threading.Lock()
    thread: int | None = None
    name: str | None = None
    depth = 0


@contextlib.contextmanager
def one_run_at_a_time(name: str) -> Iterator[None]:
    """Refuse, with `RunInProgress`, a run started while another thread's run is going in this process: runs
    set process-wide state (they reseed the random generators of Python, numpy and torch, set accelerate's
    precision, time against the same CPU), so two at once change each other's results without a word."""
    me = threading.get_ident()
    with _Runs.guard:
        if _Runs.thread not in (None, me):
            raise RunInProgress(f"{name}: {_Runs.name} is running in another thread of this process; runs set "
                                "process-wide state (the random generators' seeds, accelerate's precision), so two at "
                                "once would change each other's results: run them one after the other, or in "
                                "separate processes")
        if _Runs.thread is None:
            _Runs.thread, _Runs.name = me, name
        _Runs.depth += 1
    try:
        yield
    finally:
        with _Runs.guard:
            _Runs.depth -= 1
            if not _Runs.depth:
                _Runs.thread = _Runs.name = None


def as_output_error(exc: OSError) -> OutputError | None:
    """The `OutputError` for an OS error of an unwritable path (disk full, read-only, no permission, a file where
    a folder should be), with the error's notes; None for any other OS error."""
    from multidistill.utils.atomic import is_write_error, write_error

    if not is_write_error(exc):
        return None
    error = write_error(exc)
    for note in getattr(exc, "__notes__", []):
        add_note(error, note)
    return error


@contextlib.contextmanager
def output_errors() -> Iterator[None]:
    """An unwritable output inside the block raises `OutputError` naming the path, not a bare OSError."""
    try:
        yield
    except OSError as exc:
        error = as_output_error(exc)
        if error is None:
            raise
        raise error from exc


@contextlib.contextmanager
def api_call(name: str, *, progress: bool = True, exclusive: bool = False) -> Iterator[None]:
    """The block of a public call named ``name``: quiet without ``progress``, write errors as `OutputError`,
    and with ``exclusive`` (a call that sets process-wide state) one at a time per process."""
    with one_run_at_a_time(name) if exclusive else contextlib.nullcontext(), quietened(progress), output_errors():
        yield
