"""Registry of loss terms by name, so objectives are declared in YAML."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from multidistill.errors import ConfigError

LOSSES: dict[str, type[nn.Module]] = {}


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a loss term available under ``name``."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in LOSSES:
            raise ValueError(f"loss '{name}' is already registered")
        LOSSES[name] = cls
        cls.loss_name = name
        return cls

    return wrap


def build_loss(name: str, **params: Any) -> nn.Module:
    if name not in LOSSES:
        raise ConfigError(f"unknown loss '{name}'; registered: {', '.join(sorted(LOSSES))}")
    try:
        return LOSSES[name](**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"loss '{name}': bad parameters {params}: {exc}") from exc
