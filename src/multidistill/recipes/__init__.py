"""Ready recipes: each method is a list of stages over the shared parts (`multidistill run RECIPE.yaml`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from multidistill.recipes.config import Recipe, load_recipe
from multidistill.recipes.stages import PENDING, StageRunner


def run_recipe(recipe: Recipe) -> dict:
    """Run (or continue) every stage of ``recipe`` under its output_dir; returns the summary.

    The recipe's data is read and validated before anything is written, and a run that stops before its
    first stage wrote anything leaves no trace (no recipe.yaml, no `.pending/`, no empty output_dir).
    """
    from multidistill.data.prepare import open_example_store
    from multidistill.recipes.common import recipe_data
    from multidistill.recipes.mkd import run_mkd
    from multidistill.recipes.mtdnn_kd import run_mtdnn_kd
    from multidistill.training.run_dir import save_config

    data = recipe_data(recipe)
    open_example_store(data, max_examples_per_task=recipe.max_examples_per_task,
                       seed=recipe.subset_seed).validate(["train", data.eval_split])
    runner = StageRunner(Path(recipe.output_dir))
    created_root = not runner.root.exists()
    runner.root.mkdir(parents=True, exist_ok=True)
    recipe_file = runner.root / "recipe.yaml"
    had_recipe_file = recipe_file.exists()
    save_config(recipe, recipe_file)
    try:
        return {"mtdnn_kd": run_mtdnn_kd, "mkd": run_mkd}[recipe.recipe](recipe, runner)
    except BaseException:
        if not any(p.name not in ("recipe.yaml", PENDING) for p in runner.root.iterdir()) and not any(
                (runner.root / PENDING).glob("*")):
            # Nothing of a stage was written: take back what this call made.
            if not had_recipe_file:
                recipe_file.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                (runner.root / PENDING).rmdir()
            if created_root:
                with contextlib.suppress(OSError):
                    runner.root.rmdir()
        raise


__all__ = ["Recipe", "load_recipe", "run_recipe", "StageRunner"]
