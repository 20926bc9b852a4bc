"""Ctrl-C and SIGTERM as one exception that says where a run stopped and which command continues it.

The CLI turns both signals into `Interrupted`; the training loop and the stage runner add a note to it (or to a
plain `KeyboardInterrupt` under the Python API) as it passes them: the step and last checkpoint, the stage and
what a re-run does with it. `Interrupted` is a `BaseException`, so no `except Exception` on the way swallows it.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import threading
from collections.abc import Iterator

# Commands that continue from what an interrupted run left on disk, and the flags their re-run needs.
RESUMED_AS_IS = {"run", "demo", "soft-targets"}
RESUMED_WITH_FLAG = {"train-teacher", "distill"}
# Commands that keep some finished work though they do not resume: what their re-run reuses.
REUSED_ON_RERUN = {"benchmark": "the ONNX exports it finished are reused; the measurements are made again"}


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` on Python 3.11+; on 3.10 the same ``__notes__`` list, which the CLI prints."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]


class Interrupted(BaseException):  # noqa: N818 - named for what happened, like KeyboardInterrupt
    """SIGINT (Ctrl-C) or SIGTERM arrived; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


STOPS = (KeyboardInterrupt, Interrupted)
SIGNALS = (signal.SIGINT, signal.SIGTERM)

# The signals `signals_raise_interrupted` turned into `Interrupted` in its current block. The exception is raised at
# whatever line runs, and inside torch / safetensors / pyarrow code it can be swallowed or replaced (a load then
# fails as if the file were damaged, or carries on): `raise_if_interrupted` lets the code that would report such
# an error, or go on, report the interrupt instead.
_arrived: list[int] | None = None  # the active block's list (None: outside any block)


def raise_if_interrupted(cause: BaseException | None = None, arrived: list[int] | None = None) -> None:
    """Raise `Interrupted` if a signal arrived in the active `signals_raise_interrupted` block (or in ``arrived``,
    the list a finished block yielded): an error caught after it (``cause``) is its echo, not a damaged file; code
    running on after it swallowed the interrupt."""
    signals = arrived if arrived is not None else _arrived
    if signals:
        raise Interrupted(signals[-1]) from cause


def _set_handlers(handlers: dict) -> dict:
    """Set the handlers of `SIGNALS` as one change and return the previous ones. Both signals are blocked while
    they change (where the OS can), so one that arrives in between waits for the new handlers instead of finding
    one signal's old handler and the other's new."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS) if hasattr(signal, "pthread_sigmask") else None
    try:
        return {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    finally:
        if blocked is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@contextlib.contextmanager
def signals_raise_interrupted() -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted`; the previous handlers come back after it. Yields
    the list of the signals that arrived (filled as they do), for the code that reports the block's errors.

    Only the main thread can set signal handlers; elsewhere the block changes nothing.
    """
    global _arrived
    outer = _arrived
    arrived: list[int] = outer if outer is not None else []  # a nested block shares its outer block's list
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return

    def stop(signum: int, frame) -> None:
        arrived.append(signum)
        raise Interrupted(signum)

    previous = _set_handlers(dict.fromkeys(SIGNALS, stop))
    try:
        _arrived = arrived
        yield arrived
    finally:
        _set_handlers(previous)
        _arrived = outer


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM wait: the first one that arrives is delivered, to the handler that was
    there before, when the block ends.

    For calls into objects that threads share. An exception raised by a signal handler inside ``Queue.put`` can
    lose the wake-up of the thread that reads the queue; TensorBoard's writer thread then sleeps out its
    120 s flush interval while ``close()`` waits for it, and Ctrl-C hangs (seen in CI as a 60 s timeout).
    Only the main thread receives signals; elsewhere, or where a handler was set outside Python (it could not be
    put back), the block changes nothing.
    """
    outside_python = any(signal.getsignal(signum) is None for signum in SIGNALS)
    if threading.current_thread() is not threading.main_thread() or outside_python:
        yield
        return
    arrived: list[int] = []

    def hold(signum: int, frame) -> None:
        arrived.append(signum)

    previous = _set_handlers(dict.fromkeys(SIGNALS, hold))
    try:
        yield
    finally:
        _set_handlers(previous)
        if arrived:
            signal.raise_signal(arrived[0])  # the handler restored above runs now, as if the signal came late


def rerun_note(argv: list[str]) -> str:
    """What running an interrupted command again does, for one that does not resume (`resume_command` None)."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command in REUSED_ON_RERUN:
        return f"run it again to finish: {REUSED_ON_RERUN[command]}"
    return "this command keeps no partial progress: run it again to redo it"


def resume_command(argv: list[str]) -> str | None:
    """The command line that continues an interrupted `multidistill` command (``argv`` without the program
    name), or None for commands that keep no progress (evaluate, benchmark, export, ...)."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command in RESUMED_AS_IS:
        return shlex.join(["multidistill", *argv])
    if command in RESUMED_WITH_FLAG:
        # --overwrite would throw away what was done; --resume continues it.
        kept = [arg for arg in argv if arg != "--overwrite"]
        return shlex.join(["multidistill", *kept, *([] if "--resume" in kept else ["--resume"])])
    return None
