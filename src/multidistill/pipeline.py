"""Whole recipes from Python: `run` and `run_recipe` take a recipe file, a mapping or a recipe config, as
`multidistill run` does, with the API's quiet switch, one run per process and write errors as `OutputError`;
`plan_recipe` says what such a run would do with each stage (`multidistill run --dry-run`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from multidistill.utils.entry import api_call

if TYPE_CHECKING:
    from multidistill.recipes.config import RecipeBase
    from multidistill.recipes.stages import RunPlan


def run_recipe(recipe: RecipeBase | Mapping[str, Any] | str | os.PathLike, overrides: list[str] | str | None = None,
               *, progress: bool = True) -> dict:
    """Run (or continue) every stage of ``recipe`` under its output_dir, as `multidistill run` does; returns the
    summary (also in OUTPUT_DIR/summary.json).

    ``recipe`` is a recipe YAML file's path, a mapping of its keys or a recipe config (`load_recipe`), with
    ``--set``-style ``overrides`` (a list, or one str for one override). Finished stages are reused, a cut stage
    resumes, and a stage made with other settings is refused. ``progress`` False: no bars, tables or notes.

    The stages seed the process-wide random generators (Python, numpy, torch), so a run started from another
    thread of this process while this one goes is refused (`RunInProgress`); an output folder that cannot be
    written raises `OutputError`.
    """
    from multidistill import recipes
    from multidistill.recipes.config import load_recipe

    with api_call("run_recipe", progress=progress, exclusive=True):
        return recipes.run_recipe(load_recipe(recipe, overrides))


def run(recipe: RecipeBase | Mapping[str, Any] | str | os.PathLike, overrides: list[str] | str | None = None, *,
        progress: bool = True) -> dict:
    """`run_recipe`: the whole recipe ``recipe`` with ``--set``-style ``overrides``, as `multidistill run` runs
    it; returns the recipe's summary. ``progress`` False: no bars, tables or notes.

    The stages seed the process-wide random generators (Python, numpy, torch), so a run started from another
    thread of this process while this one goes is refused (`RunInProgress`); an output folder that cannot be
    written raises `OutputError`.
    """
    return run_recipe(recipe, overrides, progress=progress)


def plan_recipe(recipe: RecipeBase | Mapping[str, Any] | str | os.PathLike,
                overrides: list[str] | str | None = None, *, progress: bool = True) -> RunPlan:
    """What `run_recipe` would do with each stage of ``recipe`` (``RunPlan.stages``: reuse, run, resume or make
    again, in order), running nothing and writing nothing in its output_dir, as `multidistill run --dry-run`.

    Bad input and a stage the run would refuse raise as `run_recipe` would. Checking stops where the recipe reads
    what a stage that has not run would write, or at a stage it would take up or replace (``RunPlan.stopped``
    says where; None: every stage was checked). ``RunPlan.notes``: the notes the run would print (settings given
    but not used), as far as checking went; printed here too unless ``progress`` is off.
    """
    from multidistill import recipes
    from multidistill.recipes.config import load_recipe

    with api_call("plan_recipe", progress=progress, exclusive=True):
        return recipes.plan_recipe(load_recipe(recipe, overrides))
