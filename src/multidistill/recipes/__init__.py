"""Ready recipes: each method is a list of stages over the shared parts (`multidistill run RECIPE.yaml`)."""

from __future__ import annotations

from pathlib import Path

from multidistill.recipes.config import Recipe, load_recipe
from multidistill.recipes.stages import StageRunner


def run_recipe(recipe: Recipe) -> dict:
    """Run (or continue) every stage of ``recipe`` under its output_dir; returns the summary."""
    from multidistill.recipes.mkd import run_mkd
    from multidistill.recipes.mtdnn_kd import run_mtdnn_kd

    runner = StageRunner(Path(recipe.output_dir))
    runner.root.mkdir(parents=True, exist_ok=True)
    recipe_file = runner.root / "recipe.yaml"
    from multidistill.training.run_dir import save_config

    save_config(recipe, recipe_file)
    return {"mtdnn_kd": run_mtdnn_kd, "mkd": run_mkd}[recipe.recipe](recipe, runner)


__all__ = ["Recipe", "load_recipe", "run_recipe", "StageRunner"]
