"""Ready recipes: each method is a list of stages over the shared parts (`multidistill run RECIPE.yaml`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from multidistill.config import revalidated
from multidistill.errors import MultidistillError
from multidistill.recipes.config import RecipeBase, load_recipe
from multidistill.recipes.registry import recipe_entry, register_recipe
from multidistill.recipes.stages import PENDING, RunPlan, StageRunner
from multidistill.training.device import refuse_several_processes
from multidistill.training.run_dir import RUN_MARKER


def _checked(recipe: RecipeBase) -> RecipeBase:
    """``recipe`` revalidated, its data read and validated and its settings checked against the encoders, before
    anything is written."""
    from multidistill.data.prepare import open_example_store
    from multidistill.recipes.common import recipe_data
    from multidistill.recipes.preflight import check_settings

    recipe = revalidated(recipe)  # a recipe edited by model_copy(update=...) was never checked
    recipe_entry(recipe.recipe)
    data = recipe_data(recipe)
    open_example_store(data, max_examples_per_task=recipe.max_examples_per_task,
                       seed=recipe.subset_seed).validate(["train", data.eval_split])
    check_settings(recipe)
    return recipe


def plan_recipe(recipe: RecipeBase) -> RunPlan:
    """What `run_recipe` would do with each stage of ``recipe`` (reuse, run, resume, make again), as far as it can
    be told before any stage runs, running and writing nothing in output_dir; a stage it would refuse, or bad
    input, raises as `run_recipe` would (`multidistill run --dry-run`)."""
    refuse_several_processes("run")
    recipe = _checked(recipe)
    return plan_stages(Path(recipe.output_dir), partial(recipe_entry(recipe.recipe).run, recipe),
                       legacy=("recipe.yaml",))


def plan_stages(root: Path, stages: Callable[[StageRunner], object], *, legacy: tuple[str, ...]) -> RunPlan:
    """The dry run of `run --dry-run` and `demo --dry-run`: refuse an output folder ``root`` a run could not use
    (a run in progress holds it; not empty and not a run: no marker, none of the ``legacy`` entries), then what
    ``stages(runner)`` would do with each stage (`StageRunner.dry_run`), running and writing nothing."""
    from multidistill.training.run_dir import check_run_root
    from multidistill.utils.lock import refuse_if_locked

    refuse_if_locked(root, "output_dir")  # a run in progress: what it will leave cannot be told yet
    check_run_root(root, legacy=legacy)
    return StageRunner(root).dry_run(stages)


def run_recipe(recipe: RecipeBase) -> dict:
    """Run (or continue) every stage of ``recipe`` under its output_dir; returns the summary.

    The recipe's data is read and validated before anything is written, and a run that stops before its
    first stage wrote anything leaves no trace (no recipe.yaml, no `.pending/`, no empty output_dir).
    """
    from multidistill.training.run_dir import claim_run_root, save_config
    from multidistill.utils.atomic import atomic_file

    refuse_several_processes("run")
    recipe = _checked(recipe)
    entry = recipe_entry(recipe.recipe)
    runner = StageRunner(Path(recipe.output_dir))
    before = set(runner.root.iterdir()) if runner.root.is_dir() else None
    with claim_run_root(runner.root, legacy=("recipe.yaml",)):  # one writer; never a folder that is not a run
        recorded = runner.root / "recipe.yaml"
        previous = recorded.read_bytes() if recorded.is_file() else None
        save_config(recipe, recorded)
        try:
            return runner.run_all(partial(entry.run, recipe))  # later stages checked before the first runs
        except BaseException as exc:
            _take_back_if_no_stage_wrote(runner.root, before)
            if previous is not None and isinstance(exc, MultidistillError) and all(
                    outcome.skipped for outcome in runner.outcomes):
                # Refused (a changed stage, bad input) before this run made a stage: the folder's stages are still
                # the ones the earlier recipe.yaml describes, so it stays the record.
                with atomic_file(recorded, "wb", encoding=None) as handle:
                    handle.write(previous)
            raise


def _take_back_if_no_stage_wrote(root: Path, before: set[Path] | None) -> None:
    """After a run that stopped before any stage wrote something (all it added is recipe.yaml and an empty
    `.pending/`), remove what it added; ``before`` is what the folder held (None: it did not exist)."""
    pending = root / PENDING
    added = set(root.iterdir()) - (before or set())
    if added - {root / "recipe.yaml", root / RUN_MARKER, pending} or (pending.is_dir() and any(pending.iterdir())):
        return
    for path in added:
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()
    if before is None:
        root.rmdir()


__all__ = ["RecipeBase", "RunPlan", "load_recipe", "plan_recipe", "plan_stages", "register_recipe", "run_recipe",
           "StageRunner"]

# Kept for code that imported the old union: any registered recipe config.
Recipe = RecipeBase
