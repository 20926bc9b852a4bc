"""One writer per folder: an advisory lock held while a command writes a run, a recipe root or a signal store.

The lock is `flock` on a sibling file ``.<name>.lock`` (a sibling, not a file inside the folder, because
`--overwrite` moves the folder itself aside). The kernel releases a flock when its process dies, however it
dies, so a lock file left by a SIGKILLed process is no lock: the next command takes it at once. The holder
writes its pid and command line into the file, so a refused second writer can name it. The file is deleted on
release; a process that opened it just before was deleted re-checks that its locked file is still the one at
the path, so two processes can never both hold the lock.

Platforms without `fcntl` (Windows) get no lock: the context manager then only runs its block (documented in
docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from multidistill.errors import ConfigError
from multidistill.utils.atomic import make_parents, remove_empty

try:
    import fcntl
except ImportError:  # Windows: no advisory lock (see the module docstring)
    fcntl = None  # type: ignore[assignment]


def lock_path(folder: str | Path) -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` beside it."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the lock file."""
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
        return f"pid {info['pid']}, started {info['started']}: {info['command']}"
    return "a process that has not written its pid yet"


def _acquire(path: Path) -> tuple[int | None, str]:
    """``(fd, "")`` with fd holding the flock on ``path`` (the file now at the path), or ``(None, holder)``."""
    while True:
        try:  # never through a link: a planted `.<name>.lock -> somefile` would have it truncated and rewritten
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # a holder that wrote nothing took back the folder it had made
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            if exc.errno == errno.EISDIR:
                raise ConfigError(f"lock file {path} is a folder, not a lock file; remove it") from exc
            if exc.errno != errno.ELOOP:
                raise
            raise ConfigError(f"lock file {path} is a symbolic link, which multidistill never writes through; "
                              "remove it (no multidistill process made it)") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ConfigError(f"lock file {path} is not a regular file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            return None, holder
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd, ""
        os.close(fd)  # the holder deleted the file between our open and flock: lock the new one


def refuse_if_locked(folder: str | Path, what: str) -> None:
    """Refuse, as `hold_lock` would, a ``folder`` another process holds the lock on, without taking the lock or
    writing anything (a dry run's check); nothing where there is no lock file or no `fcntl`."""
    path = lock_path(folder)
    if fcntl is None or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # gone since, or not ours to read: the run's own lock says more
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(f"{what} {Path(folder)} is being written by another multidistill process ({_holder(fd)}); "
                          "wait for it to finish or stop it, or choose another folder") from None
    finally:
        os.close(fd)  # also releases a shared lock taken


@contextlib.contextmanager
def hold_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold the lock on ``folder`` for the block; a ConfigError naming the holder if another process has it.

    ``what`` names the folder's role in the message ("output_dir", "signal store --out", ...).
    """
    folder = Path(folder)
    if fcntl is None:
        yield
        return
    path = lock_path(folder)
    made = make_parents(path)
    fd, holder = _acquire(path)
    if fd is None:
        raise ConfigError(f"{what} {folder} is being written by another multidistill process ({holder}); "
                          "wait for it to finish or stop it, or choose another folder")
    try:
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "command": shlex.join(sys.argv)}
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # before the release, so no one can lock a file that is about to vanish
        os.close(fd)  # releases the flock
        remove_empty(made)  # a command that wrote nothing beside its lock leaves no empty parent folders
