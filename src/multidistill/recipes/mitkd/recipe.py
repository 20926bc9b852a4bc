"""The MITKD recipe: its stages in order for this run's arm, then the summary with every arm finished in the
output folder (`recipe: mitkd`)."""

from __future__ import annotations

import json

from multidistill.config import changed_fields
from multidistill.data.prepare import open_example_store
from multidistill.recipes.common import recipe_data, signals_stage, teacher_rows, teacher_stages, trivial_baselines
from multidistill.recipes.mitkd.arms import ARMS, arm_differences, differences_note, finetune_row, finished_arm
from multidistill.recipes.mitkd.config import MITKDRecipe
from multidistill.recipes.mitkd.plan import check_inputs, finetune_data, note_unread_settings, plain_encoder
from multidistill.recipes.mitkd.stages import finetune_stages, general_stage
from multidistill.recipes.registry import register_recipe
from multidistill.recipes.stages import STAGE_MANIFEST, StageRunner, print_note, stop_if_checking
from multidistill.recipes.summary import write_summary
from multidistill.training.objective import TEACHER_LOGIT_INPUTS, reads_inputs


@register_recipe("mitkd", MITKDRecipe)
def run_mitkd(recipe: MITKDRecipe, runner: StageRunner) -> dict:
    check_inputs(recipe)
    note_unread_settings(recipe)
    data = recipe_data(recipe)
    teacher_dirs, teacher_inputs = teacher_stages(runner, recipe)
    arm = "plain" if recipe.baseline.plain_teacher else "mitkd"
    if arm == "mitkd":
        general = general_stage(runner, recipe, arm, [str(d) for d in teacher_dirs], teacher_inputs)
    else:
        encoder = plain_encoder(recipe)
        general = general_stage(runner, recipe, arm, [encoder], {"encoder": encoder})
    signals = None
    tuned = finetune_data(recipe)
    if reads_inputs(recipe.finetune.objective, open_example_store(tuned, max_examples_per_task=None, seed=0).tasks,
                    TEACHER_LOGIT_INPUTS):
        signals = signals_stage(runner, recipe, teacher_dirs, teacher_inputs, tuned,
                                max_examples=recipe.max_examples_per_task, with_eval_split=False)
    elif "signals" in changed_fields(recipe):  # never silently
        print_note("signals not used: finetune.objective reads no teacher logits, so no signal store is made")
    arms = {arm: finetune_stages(runner, recipe, arm, general, signals)}
    stop_if_checking()  # every stage is checked: the rest reads what they wrote
    other = "mitkd" if arm == "plain" else "plain"
    earlier = finished_arm(runner.root, other, recipe)
    notes = []
    if earlier is not None:
        arms[other] = earlier
    elif any(runner.root.glob(f"finetune-{other}-*/{STAGE_MANIFEST}")):  # never left out silently
        notes.append(f"the {ARMS[other]} arm has fine-tunes in this folder, but not for every task and seed of this "
                     "run (finetune.tasks, finetune.seeds): its row is not shown")
    rows = teacher_rows(teacher_dirs)
    if not rows:
        notes.append("the teachers were given (teacher.model_dirs) without a run folder: no teacher row, retention "
                     "is against the first student row")
    for name in ("mitkd", "plain"):
        if name in arms:
            rows[ARMS[name]] = finetune_row(arms[name])
    differences = arm_differences(runner.root, recipe, arm, other, arms) if earlier is not None else {}
    if differences:  # never a silent comparison of arms trained differently
        rows[ARMS[other]]["settings_differ"] = differences
        notes.append(differences_note(arm, other, differences))
    general_record = json.loads((general / STAGE_MANIFEST).read_text())
    notes.append(f"general distillation ({arm}): {general_record.get('train_seconds', 0):.0f}s, "
                 f"{general_record.get('examples_per_second', 0):.1f} examples/s")
    shown = list(dict.fromkeys([*data.task_names, *tuned.task_names]))  # the teachers' tasks, then any others
    # The students' training rows (the teachers' for a task only they have), scored on dev.
    baselines = {**trivial_baselines(data, recipe.max_examples_per_task),
                 **trivial_baselines(tuned, recipe.max_examples_per_task)}
    return write_summary(runner.root, rows, next(iter(rows)), shown, notes, baselines=baselines)
