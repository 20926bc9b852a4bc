"""The recipe registry: each recipe module registers its name, config schema and run function itself.

A recipe is one module that decorates its run function with ``@register_recipe("name", Schema)``; the
loader finds it by importing every module of this package (`pkgutil`) and every module named by the
``multidistill.recipes`` entry-point group (recipes shipped by other packages). Adding a recipe therefore
touches no shared file: no dispatch dict, no schema union, no loader edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from pydantic import BaseModel

from multidistill.errors import ConfigError

ENTRY_POINT_GROUP = "multidistill.recipes"

# Modules of this package that hold shared parts, not recipes (importing them registers nothing).
_NOT_RECIPES = frozenset({"registry", "config", "common", "stages", "summary", "demo"})


@dataclass(frozen=True)
class RecipeEntry:
    """One registered recipe: its `recipe:` name, the pydantic schema of its YAML and its run function."""

    name: str
    schema: type[BaseModel]
    run: Callable  # run(recipe, runner: StageRunner) -> summary dict


RECIPES: dict[str, RecipeEntry] = {}
_discovered = False


def register_recipe(name: str, schema: type[BaseModel]) -> Callable[[Callable], Callable]:
    """Decorator for a recipe's run function: ``run(recipe, runner) -> summary``; YAML files with
    ``recipe: <name>`` are loaded into ``schema`` and run by it. Registering a name twice with another
    function is refused (two recipes would fight over one name)."""

    def decorate(run: Callable) -> Callable:
        old = RECIPES.get(name)
        if old is not None and (old.run.__module__, old.run.__qualname__) != (run.__module__, run.__qualname__):
            raise ValueError(f"recipe '{name}' is registered twice: by {old.run.__module__} and {run.__module__}")
        RECIPES[name] = RecipeEntry(name, schema, run)
        return run

    return decorate


def discover_recipes() -> dict[str, RecipeEntry]:
    """Every registered recipe, after importing this package's recipe modules and the entry-point group's."""
    global _discovered
    if not _discovered:
        package = importlib.import_module("multidistill.recipes")
        for module in pkgutil.iter_modules(package.__path__):
            if module.name not in _NOT_RECIPES and not module.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{module.name}")
        for point in entry_points(group=ENTRY_POINT_GROUP):
            point.load()
        _discovered = True
    return RECIPES


def recipe_entry(name: object, source: str = "config") -> RecipeEntry:
    """The registered recipe called ``name``; a ConfigError naming ``source`` and the known names otherwise."""
    recipes = discover_recipes()
    if not isinstance(name, str) or name not in recipes:
        raise ConfigError(f"{source}: key 'recipe': expected one of {sorted(recipes)}, got {name!r}")
    return recipes[name]
