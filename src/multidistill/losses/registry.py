"""Registry of loss terms by name, so objectives are declared in YAML.

A loss class that needs the models' sizes (a projection, a head count to check) sets ``needs_dims = True``;
`build_loss` then hands it ``student_dims`` and ``teacher_dims`` (`ModelDims`, read from the models' configs by
whoever builds the objective), so no size is ever a YAML number. Other losses ignore ``dims``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from multidistill.errors import ConfigError
from multidistill.models.features import ModelDims
from multidistill.utils.suggest import closest_name

LOSSES: dict[str, type[nn.Module]] = {}


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a loss term available under ``name``."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        known = LOSSES.get(name)
        # The same class defined again (a notebook cell or a module re-run) replaces its earlier self; another
        # class under a taken name is refused, so a built-in loss is never shadowed by accident.
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"loss '{name}' is already registered by {known.__module__}.{known.__qualname__}; "
                             "choose another name")
        LOSSES[name] = cls
        cls.loss_name = name
        return cls

    return wrap


def check_task_type(name: str, task_type: str, where: str) -> None:
    """Refuse the loss registered as ``name`` for a task of ``task_type`` when it declares other ``task_types``
    (a class attribute; a loss without one fits every task); ``where`` names the config key."""
    allowed = getattr(LOSSES.get(name), "task_types", None)
    if allowed is not None and task_type not in allowed:
        raise ConfigError(f"{where}: loss '{name}' is for {' or '.join(allowed)} tasks, not {task_type} ones")


def check_registered(name: str) -> None:
    """Refuse a loss name nobody registered, suggesting the closest registered one (a typo, most often)."""
    if name not in LOSSES:
        close = closest_name(str(name), LOSSES)
        hint = f" (did you mean '{close}'?)" if close else ""
        raise ConfigError(f"unknown loss '{name}'{hint}; registered: {', '.join(sorted(LOSSES))}; a loss of your "
                          "own must be registered (imported) before the config is loaded")


def build_loss(name: str, dims: Mapping[str, ModelDims] | None = None, **params: Any) -> nn.Module:
    """Build the loss registered as ``name`` with its YAML ``params``.

    ``dims`` maps "student" and "teacher" to their `ModelDims`; it is required by losses that declare
    ``needs_dims`` (feature losses) and ignored by the others, so an objective may pass it to every term.
    """
    check_registered(name)
    cls = LOSSES[name]
    if getattr(cls, "needs_dims", False):
        missing = [side for side in ("student", "teacher") if not dims or side not in dims]
        if missing:
            raise ConfigError(f"loss '{name}' compares inside the encoders and needs the {' and '.join(missing)} "
                              "model's sizes: build it with dims={'student': ModelDims, 'teacher': ModelDims}")
        params = {"student_dims": dims["student"], "teacher_dims": dims["teacher"], **params}
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        shown = {key: value for key, value in params.items() if key not in ("student_dims", "teacher_dims")}
        raise ConfigError(f"loss '{name}': bad parameters {shown}: {exc}") from exc
