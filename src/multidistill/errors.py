"""Errors a user can act on: each names the file, line, field or config key at fault."""

from __future__ import annotations

from pathlib import Path


class MultidistillError(Exception):
    """Base class for every error caused by user input; the CLI prints it and exits with code 2."""

    exit_code = 2


class ConfigError(MultidistillError):
    """A config file or override is invalid; the message names the key path."""


def require_choice(label: str, value: object, choices) -> None:
    """Raise a ConfigError naming ``label`` (an option or key) when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{label} {value!r}: choose one of {', '.join(choices)}")


def require_distinct(label: str, names: list[str]) -> None:
    """Raise a ConfigError naming ``label`` when ``names`` lists a name twice."""
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"{label} lists {', '.join(repr(name) for name in twice)} twice: {', '.join(names)}")


class DataError(MultidistillError):
    """A data file is missing or malformed; the message names the file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        column: str | int | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        where = []
        if self.path:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if field:
            source = f" (column {column!r})" if column is not None and column != field else ""
            where.append(f"field '{field}'{source}")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


class ModelError(MultidistillError):
    """A model directory or model setting is unusable (missing files, too long max length, ...)."""


class UnknownTaskError(MultidistillError):
    """A task name that is neither built in nor declared in the config."""


class OutputError(MultidistillError):
    """A file or folder could not be written (disk full, read-only file system, no permission); names the path."""


class RunInProgress(MultidistillError):
    """A run was started while another thread's run is going in this process (runs reseed the process-wide random
    generators and set accelerate's precision, so two at once would change each other's results)."""


class TrainingDiverged(MultidistillError):
    """A training step's loss or gradient became NaN/inf (train.on_nonfinite: stop); names the step and task."""
