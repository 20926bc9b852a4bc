"""MT-DNN-KD (Liu et al. 2019, arXiv 1904.09482) as stages over the shared parts.

teacher-seed-<s> (K multi-task teachers) -> signals (their mean probabilities on the training data, and on
dev to score the ensemble) -> student (multi-task, L = 1/2 hard + 1/2 soft_ce by default) -> summary.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from multidistill.config import LossTerm, ObjectiveConfig
from multidistill.recipes.common import (
    by_task_rows,
    combined_row,
    ensemble_metrics,
    read_metrics,
    recipe_data,
    resolve_teacher_ref,
    signals_stage,
    teacher_rows,
    teacher_stages,
    train_stage,
    trivial_baselines,
)
from multidistill.recipes.config import RecipeBase, StudentSection
from multidistill.recipes.registry import register_recipe
from multidistill.recipes.stages import StageRunner, stage_fingerprint, stop_if_checking
from multidistill.recipes.summary import count_parameters, write_summary
from multidistill.training.loop import BEST_MODEL


def mtdnn_kd_objective() -> ObjectiveConfig:
    """The paper's objective, used when student.objective is omitted."""
    # Liu et al. 2019: L = 1/2 CE(y, P_S) + 1/2 CE(Q, P_S); regression: MSE to gold + MSE to the teachers' score;
    # multilabel: the same halves with each label's binary cross-entropy (Q the teachers' mean sigmoids).
    return ObjectiveConfig(classification=[LossTerm(loss="hard", weight=0.5), LossTerm(loss="soft_ce", weight=0.5)],
                           multilabel=[LossTerm(loss="hard", weight=0.5), LossTerm(loss="soft_bce", weight=0.5)],
                           regression=[LossTerm(loss="hard", weight=1.0), LossTerm(loss="score_mse", weight=1.0)])


class MTDNNKDRecipe(RecipeBase):
    """MT-DNN-KD: K multi-task teachers -> mean probabilities -> one multi-task student (arXiv 1904.09482)."""

    default_objective: ClassVar = staticmethod(mtdnn_kd_objective)
    labelled_tasks_only: ClassVar[bool] = True  # teachers and student train on data.tasks' labels
    recipe: Literal["mtdnn_kd"] = Field(description="Recipe name.")
    student: StudentSection = Field(description="The multi-task student.")


@register_recipe("mtdnn_kd", MTDNNKDRecipe)
def run_mtdnn_kd(recipe: MTDNNKDRecipe, runner: StageRunner) -> dict:
    data = recipe_data(recipe)
    teacher_dirs, teacher_inputs = teacher_stages(runner, recipe)
    signals = signals_stage(runner, recipe, teacher_dirs, teacher_inputs, data,
                            max_examples=recipe.max_examples_per_task)
    student_model = resolve_teacher_ref(recipe.student.model, teacher_dirs)
    student = train_stage(runner, "student", kind="distill", model=student_model, train=recipe.student.train,
                          data=data, max_examples=recipe.max_examples_per_task, objective=recipe.student.objective,
                          signals=signals, inputs={"signals": stage_fingerprint(signals)},
                          feature_teachers_of=teacher_dirs)
    stop_if_checking()  # every stage is checked: the rest reads what they wrote
    rows = teacher_rows(teacher_dirs)
    by_task = by_task_rows(signals, data, teacher_dirs, rows)  # one classifier per task: their row is the reference
    if by_task is not None:
        rows = by_task
    elif len(teacher_dirs) > 1:
        rows[f"ensemble of {len(teacher_dirs)}"] = {**combined_row(signals, data, teacher_dirs), "ensemble": True}
    elif not rows:
        rows["teacher"] = {"metrics": ensemble_metrics(signals, data), "params": count_parameters(teacher_dirs[0])}
    rows["student"] = {"metrics": read_metrics(student), "params": count_parameters(student / BEST_MODEL)}
    return write_summary(runner.root, rows, next(iter(rows)), data.task_names,
                         baselines=trivial_baselines(data, recipe.max_examples_per_task))
