"""A run folder's `log.txt`: what a command printed (stdout and stderr), appended when the command ends.

The text is kept in memory while the command runs and written when the command succeeded, when the run folder
gained an entry, or when a run folder that already keeps a log stopped for another reason than bad input
(a crash, Ctrl-C during a resumed run). A run refused for bad input before it wrote anything (the house rule:
input is checked before the folder is claimed) leaves its folder exactly as it was, or absent.
Progress bars redraw a line with carriage returns; only a line's final state is kept.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from multidistill.errors import MultidistillError

RUN_MARKER = ".multidistill-run"  # marks a run folder (training.run_dir claims folders with it)

LOG_FILE = "log.txt"


class _Tee(io.TextIOBase):
    """Writes to ``stream`` unchanged and keeps a copy, one finished line at a time, in ``lines``."""

    def __init__(self, stream: TextIO, lines: list[str]) -> None:
        self.stream = stream
        self.lines = lines
        self._partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *done, self._partial = (self._partial + text).split("\n")
        self.lines.extend(line.rsplit("\r", 1)[-1] for line in done)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def close_line(self) -> None:
        if self._partial.rsplit("\r", 1)[-1].strip():
            self.lines.append(self._partial.rsplit("\r", 1)[-1])
        self._partial = ""

    def isatty(self) -> bool:  # rich and tqdm decide colours and widths from the real stream
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


def _stop_line(exc: BaseException) -> str:
    """How the command ended, for the log: the error, an exit code, or the signal that stopped it."""
    if isinstance(exc, MultidistillError):
        return f"error: {exc}"
    if isinstance(exc, SystemExit) or hasattr(exc, "exit_code"):  # sys.exit, typer.Exit
        return f"exit code {getattr(exc, 'exit_code', getattr(exc, 'code', None))}"
    detail = f": {exc}" if str(exc) else ""
    return f"stopped by {type(exc).__name__}{detail}"  # KeyboardInterrupt, a signal, a crash


def _entries(folder: Path) -> set[str] | None:
    return set(os.listdir(folder)) if folder.is_dir() else None


@contextlib.contextmanager
def run_log(output_dir: str | Path, command: str | None = None) -> Iterator[None]:
    """Copy everything printed inside the block to ``output_dir/log.txt`` (appended, with a header line).

    Only on the main process (RANK 0 or unset). When a failed block's text is kept: see the module docstring.
    """
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    folder = Path(output_dir)
    before = _entries(folder)
    lines: list[str] = []
    out, err = _Tee(sys.stdout, lines), _Tee(sys.stderr, lines)
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    succeeded, bad_input, stopped = False, False, []
    try:
        yield
        succeeded = True
    except BaseException as exc:  # noted here; main() prints its own message once the block has ended
        bad_input = isinstance(exc, MultidistillError)
        stopped = [_stop_line(exc), *(f"  {note}" for note in getattr(exc, "__notes__", []))]
        raise
    finally:
        sys.stdout, sys.stderr = out.stream, err.stream
        out.close_line()
        err.close_line()
        after = _entries(folder) or set()
        # What the run itself added: only a run folder's (its marker is there). A refused command in a folder that
        # is no run (`output_dir: .`) may see it gain other things meanwhile, e.g. a cache folder.
        gained = after - (before or set()) if RUN_MARKER in after else set()
        if succeeded or gained or (LOG_FILE in after and not bad_input):
            header = f"==> {time.strftime('%Y-%m-%d %H:%M:%S')} multidistill {command or ' '.join(sys.argv[1:])}"
            with contextlib.suppress(OSError):  # a log that cannot be written must not hide the run's outcome
                folder.mkdir(parents=True, exist_ok=True)
                # Never through a link: a planted `log.txt -> ~/.bashrc` would have the run's output appended to it.
                fd = os.open(folder / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                             0o644)
                with os.fdopen(fd, "a", encoding="utf-8") as handle:
                    handle.write("\n".join([header, *lines, *stopped]) + "\n")
