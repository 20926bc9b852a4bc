"""The command line that made a run: recorded in the run folder (``command.json``) so that model cards can say
how to make the model again.

`multidistill.cli.main` records its arguments with `set_cli_command`; a run started from Python has no command
line, and its record says so (the run's ``config.yaml`` is then what made it).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from multidistill.utils.atomic import read_json_object, write_json

COMMAND_FILE = "command.json"
_cli_command: str | None = None


def set_cli_command(argv: list[str] | None) -> None:
    """Record the arguments (without the program name) of the running `multidistill` command; None when it ends."""
    global _cli_command
    _cli_command = None if argv is None else shlex.join(["multidistill", *argv])


def cli_command() -> str | None:
    """The running `multidistill` command line, or None when the code was called from Python."""
    return _cli_command


def record_command(run_dir: str | Path, *, resume: bool) -> dict:
    """Write ``run_dir/command.json``: the command that started the run, its working folder and the config file
    it saved; a resumed run keeps the first command and adds its own under ``resumed_by``. Returns the record.

    A resumed run with no record (started by a version that kept none) does not pass its own command off as the
    first: the first is recorded as unknown (None)."""
    path = Path(run_dir) / COMMAND_FILE
    record = read_json_object(path) if resume else None
    here = {"command": cli_command(), "cwd": os.getcwd()}
    if resume and (record is None or "command" not in record):
        record = {"command": None, "cwd": None, "config": "config.yaml", "first_unrecorded": True}
    if record is not None:
        record["resumed_by"] = [*record.get("resumed_by", []), here]
    else:
        record = {**here, "config": "config.yaml"}
    write_json(path, record)
    return record


def read_command(run_dir: str | Path) -> dict | None:
    """The run's command record, or None when it has none (runs made before it was recorded)."""
    return read_json_object(Path(run_dir) / COMMAND_FILE)
