"""Write files and directories so a crash never leaves a half-written artifact.

Everything goes to a temporary sibling first and is renamed into place only when complete;
renames within one filesystem are atomic, so readers see either the old artifact or the new one.
An existing directory is swapped with its replacement in one `renameat2(RENAME_EXCHANGE)` call where
the OS has it (Linux), so even a SIGKILL between "old out" and "new in" cannot leave the name empty.

Temporary siblings are made by `tempfile` (mode 0600 / 0700, private while written); just before the
rename, they and everything inside a temporary folder get the mode an ordinary ``open`` / ``mkdir`` would
give under the process's umask, so a finished artifact is as readable as any other file the user writes
(e.g. by a second user or a serving container).

Temporary siblings are named ``.<name>.tmp-<pid>-<random>``: readers never look at dot-names, and
the next write beside them deletes those whose process is gone (a writer killed mid-write leaves one).

Test hook: when the environment variable ``MULTIDISTILL_TEST_SLOW_WRITES`` holds a number of seconds,
every `atomic_dir` / `atomic_file` sleeps that long after writing and before its rename, so the kill
harness (tests/kill_harness.py) can land SIGKILLs inside the write window. Unset, it costs nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import json
import math
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from multidistill.errors import OutputError

T = TypeVar("T")

SLOW_WRITES_ENV = "MULTIDISTILL_TEST_SLOW_WRITES"
_OWNER = re.compile(r"\.(?:tmp|old)-(\d+)(?:-|$)")
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask: read from /proc on Linux; elsewhere reading it means setting it and back, so
    other threads of this module wait meanwhile."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _publish_mode(path: Path, *, directory: bool) -> None:
    """Give a finished temporary ``path`` the mode ``open`` / ``mkdir`` would have given it (tempfile's
    0600 / 0700 keep it private only while it is being written)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def _publish_tree(root: Path) -> None:
    """`_publish_mode` for a finished temporary folder and everything in it: some writers (safetensors,
    hence ``save_pretrained``) create their files 0600 whatever the umask. Executable bits are kept."""
    mask = current_umask()
    for folder, _, files in os.walk(root):  # symlinked folders are not entered
        os.chmod(folder, 0o777 & ~mask)
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            executable = os.stat(path).st_mode & 0o100
            os.chmod(path, (0o777 if executable else 0o666) & ~mask)


# OS errors that mean "this place cannot be written" (the user's to fix), not a bug: disk or quota full,
# read-only file system, no permission, file too large, a file where the path needs a folder, a name too long.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                          errno.ENOTDIR, errno.ENAMETOOLONG})


def is_write_error(exc: OSError) -> bool:
    """A user's path problem (`WRITE_ERRNOS`, or `mkdir` meeting a file where a folder of the path should be)."""
    if exc.errno in WRITE_ERRNOS:
        return True
    return exc.errno == errno.EEXIST and bool(exc.filename) and Path(exc.filename).is_file()


def write_error(exc: OSError, path: str | Path | None = None) -> OutputError:
    """One line for an OS error on write: the path, the cause, what to do."""
    where = exc.filename or path or "a file"
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free some space or write elsewhere"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a part of the path is a file, not a folder: choose another path"
    elif exc.errno == errno.ENAMETOOLONG:
        fix = "choose a shorter path"
    else:
        fix = "choose a folder you can write to"
    return OutputError(f"cannot write {where}: {exc.strerror or exc} ({code}); {fix}")


@contextlib.contextmanager
def _write_errors(final: Path) -> Iterator[None]:
    """Turn an OS error of the WRITE_ERRNOS kind into an OutputError naming ``final`` (or the path it hit)."""
    try:
        yield
    except OSError as exc:
        if is_write_error(exc):
            raise write_error(exc, final) from exc
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _test_slow_write() -> None:
    """The kill harness's write window (see the module docstring); a no-op unless the variable is set."""
    seconds = os.environ.get(SLOW_WRITES_ENV)
    if seconds:
        time.sleep(float(seconds))


def glob_escape(name: str) -> str:
    """``name`` as a glob pattern that matches only itself."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _temp_prefix(final: Path) -> str:
    return f".{final.name}.tmp-{os.getpid()}-"


def _owner_gone(name: str) -> bool:
    """Whether the process that made temporary sibling ``name`` no longer exists (unknown names: False)."""
    match = _OWNER.search(name)
    if match is None or os.name == "nt":  # Windows' os.kill(pid, 0) would terminate the process
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but is not ours (EPERM)
        return False
    return False


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(parent: str | Path, name_glob: str = "*") -> list[Path]:
    """Delete ``.<name>.tmp-<pid>-*`` siblings in ``parent`` left by writers that were killed.

    Only entries whose writer process is gone are removed, so a concurrent writer is never disturbed.
    Returns what was removed.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    removed = []
    for path in parent.glob(f".{name_glob}.tmp-*"):
        if _owner_gone(path.name):
            _delete(path)
            removed.append(path)
    return removed


def _recover_old(final: Path) -> None:
    """Undo a fallback swap cut between its two renames: put the previous version back under ``final``."""
    for old in sorted(final.parent.glob(f".{final.name}.old-*")):
        if not _owner_gone(old.name):
            continue
        if final.exists():
            _delete(old)
        else:
            os.replace(old, final)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def remove_tree(path: str | Path) -> None:
    """Delete a folder so that it vanishes at once: rename it to a temporary sibling, then delete that.

    A kill during the deletion leaves a dot-named sibling (cleaned by the next write beside it), never a
    half-deleted folder under the real name.
    """
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        path.unlink(missing_ok=True)  # a file goes in one step anyway
        return
    doomed = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    os.replace(path, doomed)  # an empty directory target is replaced atomically
    _fsync_dir(path.parent)
    _delete(doomed)


def make_parents(path: Path) -> list[Path]:
    """Create the missing folders above ``path``; returns those this call made, deepest first, for
    `remove_empty` to take back when nothing was written there after all (a refused command, a failed dry run's
    data check, leaves no empty folders behind)."""
    made = list(itertools.takewhile(lambda folder: not folder.exists(), path.parents))
    path.parent.mkdir(parents=True, exist_ok=True)
    return made


def remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty: one another writer has put something in since
    stays, and so do the folders above it."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _in_parent(final: Path, make: Callable[[], T]) -> T:
    """``make()`` (a temporary sibling of ``final``), making the parent folder again while it is missing: another
    writer that failed may take back (`remove_empty`) an empty parent it made, between our `make_parents` and
    ``make``."""
    for _ in range(9):
        try:
            return make()
        except FileNotFoundError:
            final.parent.mkdir(parents=True, exist_ok=True)
    return make()


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final`` when the block exits without error.

    An existing ``final`` is swapped out only after the new one is complete; on error the
    temporary directory is removed and ``final`` is left untouched.
    """
    final = Path(final)
    with _write_errors(final):
        made = make_parents(final)
        _recover_old(final)
        remove_stale_temps(final.parent, glob_escape(final.name))
        tmp = Path(_in_parent(final, lambda: tempfile.mkdtemp(prefix=_temp_prefix(final), dir=final.parent)))
        try:
            yield tmp
            _publish_tree(tmp)
            _test_slow_write()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            remove_empty(made)
            raise
        if final.exists() and _exchange(tmp, final):
            # ``tmp`` now holds the previous version.
            _fsync_dir(final.parent)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary sibling of ``final`` for writing; rename it into place on success.

    Only a regular file (or nothing) may stand at ``final``: the rename would replace a device (`/dev/null` for
    root), a named pipe or a symbolic link itself with a plain file, which is never what an output path meant."""
    final = Path(final)
    refuse_special_file(final)
    with _write_errors(final):
        made = make_parents(final)
        remove_stale_temps(final.parent, glob_escape(final.name))
        fd, tmp_name = _in_parent(final, lambda: tempfile.mkstemp(prefix=_temp_prefix(final), dir=final.parent))
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            _publish_mode(tmp, directory=False)
            _test_slow_write()
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            remove_empty(made)
            raise


def refuse_special_file(path: Path) -> None:
    """Raise OutputError when something other than a regular file stands at ``path`` (a link is not followed)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return  # nothing there (or not reachable: the write itself reports that)
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), None)
    if kind is not None:
        raise OutputError(f"{path} is {kind}, not a regular file; an output is written to a new file and renamed "
                          "into place, which would replace it: give the path of a regular file (stdout and "
                          "devices are not supported)")


def json_safe(value: Any) -> Any:
    """``value`` with every NaN/inf float replaced by None (JSON null): bare `NaN` is not JSON, and a file
    that holds it breaks strict readers (jq, browsers, other languages)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: str | Path, payload: Any) -> None:
    """Atomically write ``payload`` as pretty JSON; NaN/inf floats are written as null (never bare NaN)."""
    with atomic_file(path) as handle:
        json.dump(json_safe(payload), handle, indent=2, sort_keys=False, allow_nan=False)
        handle.write("\n")


def read_json_object(path: str | Path) -> dict | None:
    """A JSON object written by `write_json`, or None when the file is missing, unreadable or not an object
    (for optional records such as a run's metrics.json or command.json)."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None
