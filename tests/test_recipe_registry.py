"""Recipes register themselves: a recipe defined here (not in the package) loads and runs through the same
loader and `run_recipe`, with no edit to a shared file."""

from __future__ import annotations

import ast
import importlib
import inspect
from typing import Literal

import pytest
import yaml
from pydantic import Field

from multidistill.errors import ConfigError
from multidistill.recipes import load_recipe, run_recipe
from multidistill.recipes.config import RecipeBase
from multidistill.recipes.registry import RECIPES, discover_recipes, register_recipe
from multidistill.recipes.summary import write_summary


class EchoRecipe(RecipeBase):
    """A recipe that only writes a summary (enough to show it is dispatched)."""

    recipe: Literal["echo_test"] = Field(description="Recipe name.")
    note: str = Field("hi", description="Written into the summary's notes.")


@register_recipe("echo_test", EchoRecipe)
def run_echo(recipe: EchoRecipe, runner) -> dict:
    metrics = {"main": {"toy_sent": 1.0}}
    return write_summary(runner.root, {"echo": {"metrics": metrics}}, "echo", ["toy_sent"], [recipe.note])


def test_the_package_recipes_register_themselves():
    recipes = discover_recipes()
    assert {"mtdnn_kd", "mkd", "mitkd"} <= set(recipes)
    assert recipes["mkd"].run.__module__ == "multidistill.recipes.mkd"


def test_a_recipe_defined_outside_the_package_loads_and_runs(tiny_run, tmp_path):
    raw, _ = tiny_run
    path = tmp_path / "echo.yaml"
    path.write_text(yaml.safe_dump({"recipe": "echo_test", "output_dir": str(tmp_path / "out"), "data": raw["data"],
                                    "teacher": {"model_dirs": ["unused"]}, "note": "from a test module"}))
    recipe = load_recipe(path, ["note=set here"])
    assert isinstance(recipe, EchoRecipe)
    summary = run_recipe(recipe)
    assert summary["notes"] == ["set here"] and (tmp_path / "out" / "summary.json").is_file()


def test_unknown_names_list_the_registered_ones_and_a_name_is_not_taken_twice(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("recipe: nope\n")
    with pytest.raises(ConfigError, match=r"key 'recipe'.*'echo_test'.*'mkd'"):
        load_recipe(path)
    with pytest.raises(ValueError, match="registered twice"):
        register_recipe("mkd", EchoRecipe)(run_echo)
    assert RECIPES["mkd"].schema.__name__ == "MKDRecipe"


# What every recipe shares: a recipe's name, schema or run function written in one of these would mean that adding
# a recipe edits a shared file (a dispatch dict, a schema union, a loader branch).
SHARED_MODULES = ("multidistill.recipes", "multidistill.recipes.registry", "multidistill.recipes.config",
                  "multidistill.recipes.common", "multidistill.recipes.stages", "multidistill.recipes.summary",
                  "multidistill.cli", "multidistill.config")


def _names_in(module: str) -> set[str]:
    """Every string constant, identifier, attribute, import and definition name in a module's source."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(importlib.import_module(module)))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
        elif isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.add(node.asname or node.name)
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            found.add(node.name)
    return found


def test_no_shared_module_names_a_recipe():
    package = {name: entry for name, entry in discover_recipes().items()
               if entry.run.__module__.startswith("multidistill.recipes.")}
    assert {"mtdnn_kd", "mkd", "mitkd"} <= set(package)
    def own(module: str) -> str:  # a recipe's module, or its package (multidistill.recipes.metakd.config)
        return ".".join(module.split(".")[:3])

    for name, entry in package.items():
        assert own(entry.schema.__module__) == own(entry.run.__module__), f"{name}: its schema lives outside its module"
    names = {part for name, entry in package.items() for part in (name, entry.schema.__name__, entry.run.__name__)}
    for module in SHARED_MODULES:
        assert not _names_in(module) & names, module
