"""Kill harness: run a CLI stage in a subprocess, SIGKILL it at random moments, resume, compare with an uncut run.

One *chain* for a stage:

1. An uncut run of the command (its twin), timed: ``duration`` and ``ready`` (when it first wrote anything, i.e.
   when imports and set-up were over).
2. Attempts of the same command into another folder, each SIGKILLed (the process group) at a moment drawn from
   a seeded RNG, then re-run (``--resume`` for train-teacher / distill; soft-targets and run resume by
   themselves) until the planned kills are spent; a last attempt runs to the end and must exit 0.

   * ``random`` kills fire after ``U(0.9 ready, ready + share * remaining)`` seconds: ``remaining`` is the
     uncut run's working time still left by the progress found on disk (checkpoint step, shards done) and
     ``share = min(1, 2 / (kills left + 1))``, so the planned kills spread over the work instead of all landing
     near the end; with no work left, they fire during the start-up. So that every planned kill lands before
     the run ends, a random kill also fires as soon as the on-disk progress passes 90 % (or moves at all, if
     it already had).
   * ``write`` kills are aimed at a write window: the attempt runs with ``MULTIDISTILL_TEST_SLOW_WRITES``
     (utils/atomic.py then sleeps before each rename); after a random delay (as above, within the first 60 %
     of the share), or once the on-disk progress reaches the end of that 60 % if that comes first (a run
     faster than the uncut one must not finish before the kill is armed), the harness waits for a new
     temporary entry (``.<name>.tmp-<pid>-*``; optionally only names
     matching ``target``, until all work is done) and fires inside it, at a random point of the slowed window.

   After each kill the harness records whether it landed during a write (a temporary entry the attempt made is
   still on disk: only a write cut short leaves one) and checks every artifact in the chain folder
   (`find_problems`): checkpoints load, ``model/`` loads with `load_model`, a signal store with a manifest opens
   and reads, shards and every Arrow file (data and tokenised-view caches) read to the end, JSON/YAML parse,
   and the readers ignore temporary entries.
3. The final artifact is compared with the twin's: the max abs difference of every tensor of
   ``model/model.safetensors``, or of every array of the signal store (ids must match exactly).

How a run starts (``launcher``): ``"exec"`` starts a fresh interpreter per run (``python -m multidistill.cli``),
as a user does; ``"fork"`` forks each run from a server process (`fork_server`) that imported the CLI, torch and
transformers once; the fork runs the same ``main()`` with the same arguments, environment, working folder and log,
in a new session. A fork skips the 6-9 s of imports of a fresh interpreter on a 2-core machine, which
is most of a tiny run's time; what a chain proves (kills during the work and its writes, then a resume) is the same.
The tests use ``"fork"``; the benchmark keeps ``"exec"``; fresh interpreters are still started by other tests
(test_paths, test_api, test_distributed, test_rerun).

Used by tests/test_kill_resume.py (CI size) and benchmarks/kill_resume.py (acceptance size).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SLOW_WRITES_ENV = "MULTIDISTILL_TEST_SLOW_WRITES"
TEMP_NAME = re.compile(r"\.(?:tmp|old)-")
POLL_SECONDS = 0.01
PROGRESS_CAP = 0.9


# --- what a stage is ---------------------------------------------------------------------------------------


@dataclass
class Kill:
    """One planned kill: ``random`` (any moment), ``write`` (inside a write window; ``target`` filters names) or
    ``contend`` (at a random moment the run is frozen with SIGSTOP, still holding its lock, and the same command
    runs beside it with ``--resume``: it must be refused by the lock, exit 2 and name the frozen process; then the
    frozen run is SIGKILLed)."""

    kind: str = "random"
    target: str | None = None


@dataclass
class StageSpec:
    """A CLI stage run into a *chain folder* that holds everything it writes (outputs and caches)."""

    name: str
    argv: Callable[[Path], list[str]]  # CLI arguments (after `multidistill`) for a chain folder
    resume_args: list[str]  # appended on re-runs after a kill
    progress: Callable[[Path], float]  # 0..1, from what is on disk in a chain folder
    artifact: Callable[[Path], Path]  # the final artifact to compare (a model folder or a store)
    kind: str = "model"  # "model" or "store": how artifacts are compared
    prepare: Callable[[Path, Path], None] | None = None  # (uncut, cut) chain folders, before the first attempt
    check: Callable[[Path], list[str]] | None = None  # more problems to find in a chain folder after each attempt


@dataclass
class Attempt:
    kind: str
    planned_delay: float
    seconds: float
    killed: bool
    returncode: int | None
    progress_at_start: float
    during_write: bool = False
    cut_writes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class ChainReport:
    stage: str
    kills: int
    kills_during_write: int
    resumes: int
    max_diff: float
    unreadable: int
    leftover_temps: list[str]
    uncut_seconds: float
    ready_seconds: float
    attempts: list[Attempt]
    tries: int = 1  # chains run (kill_and_resume_landed): more than one when a planned kill missed its moment

    def row(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "attempts"}


# --- running ----------------------------------------------------------------------------------------------


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # Unbuffered: tests wait for lines the run prints to stdout, which a file would otherwise hold back.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(
               p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)}
    env.pop(SLOW_WRITES_ENV, None)
    return {**env, **(extra or {})}


def cli_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "multidistill.cli", *args]


def find_temps(root: Path) -> set[Path]:
    """Temporary entries (``.<name>.tmp-*``, ``.<name>.old-*``) anywhere below ``root``."""
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            if name.startswith(".") and TEMP_NAME.search(name):
                found.add(Path(folder) / name)
    return found


def _any_file(root: Path) -> bool:
    return any(files for _, _, files in os.walk(root))


# --- starting a run: a fresh interpreter, or a fork of a server that imported the CLI once -----------------------

LAUNCHERS = ("exec", "fork")
# What the fork server imports before it forks anything: the CLI and the libraries a training run imports later.
FORK_PRELOAD = ("multidistill.cli", "transformers", "transformers.models.bert.modeling_bert", "accelerate",
                "multidistill.training.run", "multidistill.teachers.generate")


class Forked:
    """A run forked by the fork server, with the part of `subprocess.Popen` the harness uses. It is the server's
    child, not ours: it writes its exit code to a file as it exits, and the server reaps it (SIGCHLD ignored), so a
    run that is gone without that file was killed."""

    def __init__(self, pid: int, status: Path) -> None:
        self.pid = pid
        self.status = status
        self.signalled = False  # set by _kill_group: a run gone without its status file was ended by our SIGKILL
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            if self.status.is_file():
                self.returncode = int(self.status.read_text())
            else:
                try:
                    os.kill(self.pid, 0)
                    return None
                except ProcessLookupError:
                    # as Popen's -9; a run that died of anything else, unasked, is a finding (exit 255)
                    self.returncode = -signal.SIGKILL if self.signalled else 255
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None and (end is None or time.monotonic() < end):
            time.sleep(POLL_SECONDS)
        return self.returncode


def fork_server() -> None:
    """The server (``python -c 'from tests.kill_harness import fork_server; fork_server()'``): imports the CLI and
    what runs import, then forks one run per request line on stdin (JSON: args, env, log, status) and answers its
    pid."""
    import importlib

    for name in FORK_PRELOAD:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forks are reaped by the kernel: no zombies to wait for
    sys.stdout.write("ready\n")  # the imports are done: runs timed from here start as fast as they will
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _forked_cli(**request)  # never returns
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


def _forked_cli(args: list[str], env: dict[str, str], log: str, status: str) -> None:
    """A fork's body: what ``python -m multidistill.cli *args`` does, in a new session, writing to ``log``; its exit
    code goes to the file ``status`` as it exits."""
    import atexit
    import traceback

    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()  # as start_new_session: the harness kills the group
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
        os.environ.clear()
        os.environ.update(env)  # read at call time by what runs use (e.g. MULTIDISTILL_TEST_SLOW_WRITES)
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(write_through=True)  # unbuffered, as PYTHONUNBUFFERED in a fresh interpreter
        import torch

        torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
        sys.argv = ["multidistill", *args]
        from multidistill.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:  # as the interpreter reads it
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - an uncaught error: traceback and exit 1, as the interpreter
            traceback.print_exc()
        atexit._run_exitfuncs()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
            tmp = Path(f"{status}.tmp")
            tmp.write_text(str(code))
            os.replace(tmp, status)
        os._exit(code)


_server: subprocess.Popen | None = None
_server_lock = threading.Lock()


def start_fork_server() -> subprocess.Popen:
    """The fork server, started (and its imports done) if it is not running yet."""
    global _server
    with _server_lock:
        if _server is None or _server.poll() is not None:
            # The server's own environment is a run's (one thread, offline): libraries read some of it on import.
            _server = subprocess.Popen([sys.executable, "-c", "from tests.kill_harness import fork_server; "
                                        "fork_server()"], env=cli_env(), cwd=REPO, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
            import atexit

            atexit.register(_server.stdin.close)  # its stdin ends: the server ends
            if _server.stdout.readline() != "ready\n":
                raise HarnessError(f"the fork server did not start (exit {_server.wait()})")
        return _server


def _fork(args: list[str], env: dict[str, str], log: Path) -> Forked:
    server = start_fork_server()
    # A name of its own per run (not per pid: pids are reused, and a stale file would end a new run at once).
    status = log.parent / f".exit-status-{uuid.uuid4().hex}"
    with _server_lock:  # chains run in threads: one request at a time
        server.stdin.write(json.dumps({"args": args, "env": env, "log": str(log), "status": str(status)}) + "\n")
        server.stdin.flush()
        answer = server.stdout.readline()
    if not answer:
        raise HarnessError(f"the fork server ended (exit {server.poll()})")
    return Forked(int(answer), status)


def launch(args: list[str], *, env: dict[str, str], log: Path, launcher: str = "exec"):
    """Start ``multidistill *args`` appending its output to ``log``, in its own session; returns a Popen-like run."""
    if launcher == "fork":
        return _fork(args, env, log)
    if launcher != "exec":
        raise ValueError(f"launcher must be one of {LAUNCHERS}, not {launcher!r}")
    with open(log, "a") as out:
        return subprocess.Popen(cli_command(args), env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=REPO)


def _kill_group(proc) -> None:
    if isinstance(proc, Forked):
        proc.signalled = True
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session: this is its group only
    except ProcessLookupError:  # a fork that has not called setsid yet leads no group: kill it alone
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class HarnessError(AssertionError):
    pass


def run_uncut(spec: StageSpec, chain: Path, log: Path, timeout: float, launcher: str = "exec") -> tuple[float, float]:
    """Run the stage to the end; returns (duration, ready): total seconds, and when it first wrote a file."""
    chain.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    start = time.monotonic()
    proc = launch(spec.argv(chain), env=cli_env(), log=log, launcher=launcher)
    ready = None
    while proc.poll() is None:
        now = time.monotonic() - start
        if ready is None and _any_file(chain):
            ready = now
        if now > timeout:
            _kill_group(proc)
            raise HarnessError(f"uncut {spec.name} timed out after {timeout:.0f}s\n{_tail(log)}")
        time.sleep(POLL_SECONDS * 2)
    duration = time.monotonic() - start
    if proc.returncode != 0:
        raise HarnessError(f"uncut {spec.name} exited with {proc.returncode}\n{_tail(log)}")
    return duration, ready if ready is not None else duration / 2


def _attempt(spec: StageSpec, chain: Path, args: list[str], plan: Kill | None, kills_left: int,
             rng: random.Random, duration: float, ready: float, slow_writes: float, log: Path,
             timeout: float, launcher: str = "exec") -> Attempt:
    """One run of the stage; killed as ``plan`` says (None: run to the end)."""
    progress0 = spec.progress(chain)
    aimed = plan is not None and plan.kind == "write"
    remaining = max(duration - ready, 0.5) * (1.0 - progress0)
    if plan is None:
        delay = float("inf")
    elif progress0 >= 1.0:  # only finishing touches are left: kill during the start-up
        delay = rng.uniform(0.3 * ready, 0.75 * ready)
    else:  # kills still to come share the work left; an aimed kill looks in the first 60 % of its share
        share = min(1.0, 2.0 / (kills_left + 1)) * (0.6 if aimed else 1.0)
        delay = rng.uniform(max(0.2, 0.9 * ready), ready + share * remaining)
    # An aimed kill also arms once the run's own progress reaches the end of its share: the delay is judged
    # from the uncut run's speed, and a run that goes faster (the machine's load changed) could finish first.
    arm_progress = progress0 + (1.0 - progress0) * share if aimed and 0.0 <= progress0 < 1.0 else float("inf")
    aim_offset = rng.uniform(0.1, 0.6) * slow_writes
    target = re.compile(plan.target) if plan is not None and plan.target else None
    cap = PROGRESS_CAP if progress0 < PROGRESS_CAP else progress0 + 1e-9
    env = cli_env({SLOW_WRITES_ENV: str(slow_writes)} if aimed else None)
    before = find_temps(chain)
    fire_at, killed, opened = None, False, set()
    with open(log, "a") as out:
        out.write(f"\n===== attempt: {plan.kind if plan else 'final'} args={args}\n")
        out.flush()
        start = time.monotonic()
        proc = launch(args, env=env, log=log, launcher=launcher)
        while proc.poll() is None:
            now = time.monotonic() - start
            progress = spec.progress(chain) if plan is not None else 0.0  # read from disk once per poll
            if now > timeout:
                _kill_group(proc)
                raise HarnessError(f"{spec.name} attempt timed out after {timeout:.0f}s\n{_tail(log)}")
            # (a contending --resume is judged only once the run holds its folder's lock)
            if plan is not None and not aimed and (now >= delay or progress >= cap) and (
                    plan.kind != "contend" or _holds_lock(chain, proc.pid)):
                fire_at = now
            if aimed and target is not None and progress >= 1.0:
                target = None  # all work is done and the preferred write may not come again: any write will do
            if aimed and fire_at is None and (now >= delay or progress >= arm_progress):
                opened = {t for t in find_temps(chain) - before if target is None or target.search(t.name)}
                if opened:
                    fire_at = now + aim_offset
            if aimed and fire_at is not None and now >= fire_at and not any(t.exists() for t in opened):
                before |= opened  # that window closed already (e.g. a quick deletion): wait for the next one
                fire_at = None
            if fire_at is not None and now >= fire_at:
                if plan.kind == "contend":  # frozen (SIGSTOP), it keeps its lock while the second one tries
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGSTOP)
                    contention = _contend(spec, chain, args, proc, log, timeout, launcher)
                _kill_group(proc)
                killed = proc.returncode == -signal.SIGKILL  # not if it had just finished by itself
                break
            time.sleep(POLL_SECONDS)
        proc.wait()
        seconds = time.monotonic() - start
    attempt = Attempt(plan.kind if plan else "final", delay, seconds, killed, proc.returncode, progress0)
    if not killed and proc.returncode != 0:
        raise HarnessError(f"{spec.name} exited with {proc.returncode} (not killed)\n{_tail(log)}")
    cut = sorted(find_temps(chain) - before)
    attempt.cut_writes = [str(p.relative_to(chain)) for p in cut]
    attempt.during_write = killed and bool(cut)
    attempt.problems = find_problems(chain) + (spec.check(chain) if spec.check else [])
    if plan is not None and plan.kind == "contend" and killed:
        attempt.problems += contention
    return attempt


LOCKED_MESSAGE = "being written by another multidistill process"


def _holds_lock(chain: Path, pid: int) -> bool:
    """Whether process ``pid`` holds the lock of a folder in ``chain`` (``.<name>.lock``, utils/lock.py)."""
    for path in chain.glob(".*.lock"):
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == pid:
                return True
    return False


def _contend(spec: StageSpec, chain: Path, args: list[str], running, log: Path, timeout: float,
             launcher: str = "exec") -> list[str]:
    """Run the stage's command (with ``--resume`` where it takes one) while ``running`` writes the same folder;
    returns problems: the second process must be refused (exit 2) by the lock, naming the running process."""
    second = [a for a in args if a != "--overwrite"] + [a for a in spec.resume_args if a not in args]
    said = log.with_name(f"{log.stem}.contend-{running.pid}.log")
    said.write_text("")
    proc = launch(second, env=cli_env(), log=said, launcher=launcher)
    if proc.wait(timeout) is None:
        _kill_group(proc)
    output = said.read_text(errors="replace")
    with open(log, "a") as out:
        out.write(f"----- contending --resume (exit {proc.returncode}):\n{output}\n")
    if running.poll() is not None:
        return []  # it had finished before it was frozen: its lock is gone, nothing to judge
    if proc.returncode != 2 or LOCKED_MESSAGE not in output or f"pid {running.pid}" not in output:
        return [f"a second {spec.name} beside the running one was not refused by the lock "
                f"(exit {proc.returncode}): {output[-500:]}"]
    return []


def kill_and_resume(spec: StageSpec, work: Path, kills: list[Kill], *, seed: int = 0, slow_writes: float = 0.4,
                    timeout: float = 600.0, launcher: str = "exec") -> ChainReport:
    """The whole chain for one stage under ``work`` (uncut twin, cut runs, comparison); see the module docstring."""
    rng = random.Random(seed)
    uncut, cut, logs = work / "uncut", work / "cut", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if launcher == "fork":
        start_fork_server()  # before the uncut run is timed: kills are timed from its speed
    duration, ready = run_uncut(spec, uncut, logs / "uncut.log", timeout, launcher)
    cut.mkdir(parents=True, exist_ok=True)
    if spec.prepare is not None:
        spec.prepare(uncut, cut)
    attempts: list[Attempt] = []
    planned = list(kills)
    while True:
        kills_left = len(planned)
        plan = planned.pop(0) if planned else None
        args = spec.argv(cut) + (spec.resume_args if attempts else [])
        attempt = _attempt(spec, cut, args, plan, kills_left, rng, duration, ready, slow_writes, logs / "cut.log",
                           timeout, launcher)
        attempts.append(attempt)
        if not attempt.killed:
            break  # finished with exit 0 (a planned kill that came too late ends the chain early)
    problems = sorted({p for a in attempts for p in a.problems})
    diff = compare_artifacts(spec.kind, spec.artifact(uncut), spec.artifact(cut))
    killed = [a for a in attempts if a.killed]
    return ChainReport(
        stage=spec.name, kills=len(killed), kills_during_write=sum(a.during_write for a in killed),
        resumes=len(attempts) - 1, max_diff=diff, unreadable=len(problems),
        leftover_temps=[str(p.relative_to(cut)) for p in sorted(find_temps(cut))],
        uncut_seconds=round(duration, 2), ready_seconds=round(ready, 2), attempts=attempts,
    )


def kill_and_resume_landed(spec: StageSpec, work: Path, kills: list[Kill], *, seed: int = 0, tries: int = 3,
                           **kwargs) -> ChainReport:
    """`kill_and_resume`, run again on a fresh folder (another seed) while a planned kill missed its moment.

    A kill is timed from the uncut run's speed; on a loaded machine a run can finish, or close its write window,
    before the kill fires, and that says nothing of the product. Only such misses are run again: a chain with a
    problem on disk, a leftover temporary or a result unlike the uncut run's is returned at once, so a real
    failure is never retried away. ``tries`` on the report says how many chains ran."""
    aimed = sum(k.kind == "write" for k in kills)
    for attempt in range(1, tries + 1):
        folder = work if attempt == 1 else work.with_name(f"{work.name}-try-{attempt}")
        report = kill_and_resume(spec, folder, kills, seed=seed + 1000 * (attempt - 1), **kwargs)
        report.tries = attempt
        failed = report.unreadable or report.leftover_temps or report.max_diff > 1e-6
        if failed or (report.kills == len(kills) and report.kills_during_write >= min(aimed, 1)):
            return report
    return report


# --- checking what is on disk -----------------------------------------------------------------------------


WRITE_KINDS = [("checkpoint", r"^\.step-"), ("best model", r"^\.model\.tmp-"), ("store shard", r"^\.shard-"),
               ("store work folder", r"\.partial\.tmp-"), ("signal store", r"^\.signals\.tmp-"),
               ("tokenised cache", r"^\.[0-9a-f]{16}\.tmp-")]


def write_kind(name: str) -> str:
    """What a temporary entry was being written as: 'checkpoint', 'best model', ... or the file's name."""
    for kind, pattern in WRITE_KINDS:
        if re.search(pattern, name):
            return kind
    return TEMP_NAME.split(name.lstrip("."))[0]


def _is_temp(path: Path) -> bool:
    return any(part.startswith(".") and TEMP_NAME.search(part) for part in path.parts)


def find_problems(root: Path) -> list[str]:
    """Every artifact below ``root`` that exists must read completely; returns what did not (empty: all good)."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from multidistill.models.loading import load_model
    from multidistill.teachers.shards import PROGRESS
    from multidistill.teachers.store import open_signal_store
    from multidistill.training.checkpoint import STATE_FILE, TRAINING_FILE, WEIGHTS_FILE, list_checkpoints

    problems: list[str] = []

    def attempt(what: Path, check: Callable[[], object]) -> None:
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure to read is a finding
            problems.append(f"{what.relative_to(root)}: {type(exc).__name__}: {exc}")

    for path in sorted(root.rglob("*")):
        if _is_temp(path.relative_to(root)):
            continue  # half-written on purpose; that readers ignore them is checked below
        if path.is_dir() and path.name == "checkpoints":
            real = sorted(p for p in path.iterdir() if p.name.startswith("step-"))
            listed = list_checkpoints(path)
            if [p.name for p in listed] != [p.name for p in real]:
                problems.append(f"{path.relative_to(root)}: list_checkpoints {[p.name for p in listed]} != "
                                f"folders {[p.name for p in real]}")
            for folder in real:
                attempt(folder, lambda f=folder: (
                    load_file(str(f / WEIGHTS_FILE)),
                    torch.load(f / TRAINING_FILE, map_location="cpu", weights_only=True),
                    json.loads((f / STATE_FILE).read_text())))
        elif path.is_dir() and (path.name == "model" or (path / "multidistill_model.json").is_file()):
            attempt(path, lambda p=path: load_model(p))
        elif path.is_file() and path.name == "manifest.json":
            def read_store(store_dir: Path = path.parent) -> None:
                store = open_signal_store(store_dir)
                for task in store.manifest["tasks"]:
                    for split in store.manifest["splits"]:
                        rows = store.signals(task, split)[:]
                        assert len(rows["id"]) == len(rows["teacher_logits"]) == len(rows["teacher_mean"])
            attempt(path.parent, read_store)
        elif path.is_file() and path.name == PROGRESS:
            attempt(path, lambda p=path: json.loads(p.read_text())["shards"])
        elif path.is_file() and path.suffix == ".npz":
            attempt(path, lambda p=path: [np.load(p, allow_pickle=False)[k] for k in ("ids", "logits")])
        elif path.is_file() and path.suffix == ".arrow":  # data caches, tokenised views, store tables
            attempt(path, lambda p=path: _read_arrow(p))
        elif path.is_file() and path.suffix == ".json":
            attempt(path, lambda p=path: json.loads(p.read_text()))
        elif path.is_file() and path.suffix == ".yaml":
            attempt(path, lambda p=path: yaml.safe_load(p.read_text()))
    return problems


def _read_arrow(path: Path) -> int:
    """Read every record of an Arrow file (IPC stream, as `datasets` writes, or file format); returns the rows."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            return pa.ipc.open_stream(source).read_all().num_rows
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source).read_all().num_rows


def compare_artifacts(kind: str, expected: Path, got: Path) -> float:
    """Max abs difference between two model folders (every tensor) or two signal stores (every array)."""
    import numpy as np
    from safetensors.torch import load_file

    from multidistill.teachers.store import open_signal_store

    if kind == "model":
        a, b = load_file(str(expected / "model.safetensors")), load_file(str(got / "model.safetensors"))
        if a.keys() != b.keys():
            return float("inf")
        return max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    a, b = open_signal_store(expected), open_signal_store(got)
    if a.fingerprint != b.fingerprint:
        return float("inf")
    worst = 0.0
    for task in a.manifest["tasks"]:
        for split in a.manifest["splits"]:
            x, y = a.signals(task, split)[:], b.signals(task, split)[:]
            if list(x["id"]) != list(y["id"]):
                return float("inf")
            for column in ("teacher_logits", "teacher_mean"):
                worst = max(worst, float(np.abs(x[column].astype(np.float64) - y[column]).max()))
    return worst


# --- the toy world the stages run in ----------------------------------------------------------------------


@dataclass
class World:
    """Tiny model, toy data, two random teachers and their store: inputs shared by every chain."""

    root: Path
    tiny_model: Path
    data_root: Path
    specs: list[dict]
    teachers: list[Path]
    store: Path


def make_tiny_model(folder: Path) -> Path:
    """The tests' tiny BERT + WordPiece tokenizer (as conftest's `tiny_model_dir`), saved in ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from tests.conftest import TINY_BERT, _vocab

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    spec = {k: v for k, v in TINY_BERT.items() if k != "model_type"}
    BertModel(BertConfig(vocab_size=len(vocab), **spec)).save_pretrained(folder)
    return folder


def make_world(root: Path, tiny_model: Path | None = None, n_train: int = 96, n_dev: int = 24) -> World:
    """Write toy data, two randomly initialised teachers and their signal store (built in this process)."""
    import torch
    from transformers import AutoTokenizer

    from multidistill.config import DataConfig
    from multidistill.data.tasks import Task
    from multidistill.models import MultiTaskModel
    from multidistill.teachers.generate import build_signal_store
    from tests.conftest import write_tiny_tasks

    root.mkdir(parents=True, exist_ok=True)
    tiny_model = tiny_model or make_tiny_model(root / "tiny_bert")
    data_root = root / "data"
    specs = write_tiny_tasks(data_root, n_train=n_train, n_dev=n_dev)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tasks = [Task.model_validate(s) for s in specs]
    teachers = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        MultiTaskModel.from_backbone(str(tiny_model), tasks, max_length=32).save_pretrained(
            root / f"teacher{seed}", tokenizer)
        teachers.append(root / f"teacher{seed}")
    data = DataConfig(tasks=[s["name"] for s in specs], data_root=str(data_root), task_specs=tasks,
                      cache_dir=str(root / "cache"))
    store = root / "store"
    build_signal_store(teachers, data, store, seed=7, batch_size=16)
    return World(root, tiny_model, data_root, specs, teachers, store)


def _train_config(world: World, *, kind: str, epochs: float, checkpoint_every: int, eval_every: int | None) -> dict:
    config = {
        "output_dir": "PLACEHOLDER",
        "model": {"name_or_path": str(world.tiny_model), "max_seq_length": 32},
        "data": {"data_root": str(world.data_root), "tasks": [s["name"] for s in world.specs],
                 "task_specs": world.specs, "cache_dir": "PLACEHOLDER"},
        "train": {"epochs": epochs, "batch_size": 8, "eval_batch_size": 16, "lr": 3e-3,
                  "checkpoint_every_steps": checkpoint_every, "log_every_steps": 2, "seed": 7,
                  "eval_every_steps": eval_every},
    }
    if kind == "distill":
        config.update(kind="distill", signals=str(world.store), objective={
            "classification": [{"loss": "hard", "weight": 0.5}, {"loss": "soft_ce", "weight": 0.5}],
            "regression": [{"loss": "hard"}, {"loss": "score_mse"}]})
    return config


def _checkpoint_progress(total_steps: int) -> Callable[[Path], float]:
    def progress(chain: Path) -> float:
        folder = chain / "run" / "checkpoints"
        steps = [int(p.name.split("-")[1]) for p in folder.glob("step-*")] if folder.is_dir() else []
        return max(steps, default=0) / total_steps

    return progress


def _shard_progress(chain: Path) -> float:
    if (chain / "signals" / "manifest.json").is_file():
        return 1.0
    partial = chain / "signals.partial"
    try:
        total = len(json.loads((partial / "progress.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0.0
    return len(list(partial.glob("shard-*.npz"))) / max(total, 1)


def stage_specs(world: World, *, epochs: float = 1.0, checkpoint_every: int = 3, eval_every: int | None = 12,
                shard_size: int = 8) -> dict[str, StageSpec]:
    """train-teacher, soft-targets and distill in ``world``; each chain folder gets its own output and cache."""
    steps_per_epoch = sum(math_ceil_div(len_rows(world, s["name"]), 8) for s in world.specs)
    total = math.ceil(epochs * steps_per_epoch)
    specs = {}
    for name, kind in (("train-teacher", "teacher"), ("distill", "distill")):
        config_path = world.root / f"{kind}.yaml"
        config_path.write_text(yaml.safe_dump(_train_config(world, kind=kind, epochs=epochs,
                                                            checkpoint_every=checkpoint_every,
                                                            eval_every=eval_every), sort_keys=False))

        def argv(chain: Path, command=name, path=config_path) -> list[str]:
            return [command, str(path), "--set", f"output_dir={chain / 'run'}", "--set",
                    f"data.cache_dir={chain / 'cache'}"]

        specs[name] = StageSpec(name, argv, ["--resume"], _checkpoint_progress(total),
                                lambda chain: chain / "run" / "model", "model")

    def soft_targets_argv(chain: Path) -> list[str]:
        teachers = [a for t in world.teachers for a in ("--teacher", str(t))]
        return ["soft-targets", *teachers, "--tasks", ",".join(s["name"] for s in world.specs),
                "--data-root", str(world.data_root), "--splits", "train,dev", "--out", str(chain / "signals"),
                "--cache-dir", str(chain / "cache"), "--seed", "7", "--batch-size", "8",
                "--shard-size", str(shard_size)]

    specs["soft-targets"] = StageSpec("soft-targets", soft_targets_argv, [], _shard_progress,
                                      lambda chain: chain / "signals", "store")
    teacher = specs["train-teacher"]
    specs["train-teacher-overwrite"] = StageSpec(
        "train-teacher-overwrite", lambda chain: [*teacher.argv(chain), "--overwrite"], [],
        _overwrite_progress(teacher.progress), teacher.artifact, "model", prepare=_finished_run_to_overwrite,
        check=_a_model_survives)
    return specs


# --- kills during an --overwrite: the cut chain starts from a finished run (the uncut one's), which every attempt
# overwrites; after each kill a loadable model must exist, in run/ or in the old run moved aside (.run.old-<pid>).


def _asides(chain: Path) -> list[Path]:
    return sorted(chain.glob(".run.old-*"))


def _finished_run_to_overwrite(uncut: Path, cut: Path) -> None:
    shutil.copytree(uncut / "run", cut / "run")


def _overwrite_progress(progress: Callable[[Path], float]) -> Callable[[Path], float]:
    """Checkpoint progress of the new run once the old one is aside (before that, the old run's checkpoints)."""
    return lambda chain: progress(chain) if _asides(chain) else 0.0


def _a_model_survives(chain: Path) -> list[str]:
    from multidistill.models.loading import load_model

    for folder in [chain / "run", *_asides(chain)]:
        with contextlib.suppress(Exception):
            load_model(folder / "model")
            return []
    return [f"no loadable model in {chain / 'run'} or beside it after a kill during --overwrite"]


def len_rows(world: World, task: str) -> int:
    """Training rows of a toy task (one header line per TSV)."""
    return len((world.data_root / task / "train.tsv").read_text().splitlines()) - 1


def math_ceil_div(a: int, b: int) -> int:
    return -(-a // b)
