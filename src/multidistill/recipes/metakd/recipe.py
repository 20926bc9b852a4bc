"""The Meta-KD recipe: its stages in order, for every target and baseline asked for (`recipe: metakd`)."""

from __future__ import annotations

from pathlib import Path

from multidistill.recipes.common import note_unused_teacher_settings
from multidistill.recipes.metakd.config import MetaKDRecipe
from multidistill.recipes.metakd.cross_fit import cross_fitted_signals
from multidistill.recipes.metakd.plan import (
    check_inputs,
    note_replaced_fractions,
    prototype_encoder,
    target_data,
    union_data,
    union_suffix,
)
from multidistill.recipes.metakd.report import ROWS, Scored, report_stage, summary_rows, target_baselines
from multidistill.recipes.metakd.stages import (
    Model,
    kd_students,
    meta_distill_stages,
    meta_teacher_stage,
    no_kd_students,
    plain_teacher_stage,
    prototypes_stage,
)
from multidistill.recipes.metakd.transfer import Transfer, target_transfer
from multidistill.recipes.registry import register_recipe
from multidistill.recipes.stages import StageRunner, print_note
from multidistill.recipes.summary import write_summary


@register_recipe("metakd", MetaKDRecipe)
def run_metakd(recipe: MetaKDRecipe, runner: StageRunner) -> dict:
    plan = check_inputs(recipe)
    note_replaced_fractions(recipe, plan)
    if recipe.teacher.model_dirs:
        note_unused_teacher_settings(recipe, also=("meta_teacher",))
    if recipe.student.baseline is not None and not {"no_kd", "single_domain", "mixed"} & set(recipe.baselines):
        print_note("student.baseline not used: it trains the no_kd, single_domain and mixed baselines' students, "
                   "and baselines lists none of them")
    scored: list[Scored] = []
    notes: list[str] = []  # what a stage chose for the user (augmentation without a POS tagger)
    transfers: dict[str, Transfer] = {}  # target -> its augmented transfer set (student.augment)
    shared: dict[str, tuple[Path, Model]] = {}  # union suffix -> (prototypes stage, meta-teacher)
    for target in plan.targets:
        suffix = union_suffix(recipe, target)
        if suffix not in shared:
            view = union_data(recipe, target)
            prototypes = prototypes_stage(runner, recipe, f"prototypes{suffix}", view)
            teacher = Model.given(Path(recipe.teacher.model_dirs[0])) if recipe.teacher.model_dirs else \
                Model.of_stage(meta_teacher_stage(runner, recipe, plan, f"meta-teacher{suffix}", view, prototypes))
            shared[suffix] = (prototypes, teacher)
            scored.append(Scored(ROWS["meta"], plan.targets if not suffix else (target,), teacher))
        prototypes, teacher = shared[suffix]
        if recipe.student.augment is not None:
            transfers[target] = target_transfer(runner, recipe, target, teacher.folder, notes)
        transfer = transfers.get(target)
        held_out = cross_fitted_signals(runner, recipe, plan, target, transfer) if recipe.student.cross_fit_folds \
            else None
        scored += [Scored(ROWS["student"], (target,), student) for student in
                   meta_distill_stages(runner, recipe, plan, "", target, teacher, prototypes, held_out, transfer)]
    mixed: dict[str, Model] = {}
    for target in plan.targets:
        suffix = union_suffix(recipe, target)
        transfer = transfers.get(target)
        if "no_kd" in recipe.baselines:
            scored += [Scored(ROWS["nokd"], (target,), s)
                       for s in no_kd_students(runner, recipe, plan, target, transfer)]
        if "single_domain" in recipe.baselines:
            teacher = Model.of_stage(plain_teacher_stage(runner, recipe, f"teacher-single-{target}",
                                                         target_data(recipe, target)))
            scored.append(Scored(ROWS["single"], (target,), teacher))
            scored += [Scored(ROWS["single_kd"], (target,), s)
                       for s in kd_students(runner, recipe, plan, "single", target, teacher, transfer)]
        if "mixed" in recipe.baselines:
            if suffix not in mixed:
                mixed[suffix] = Model.of_stage(plain_teacher_stage(runner, recipe, f"teacher-mixed{suffix}",
                                                                   union_data(recipe, target)))
                scored.append(Scored(ROWS["mixed"], plan.targets if not suffix else (target,), mixed[suffix]))
            scored += [Scored(ROWS["mixed_kd"], (target,), s)
                       for s in kd_students(runner, recipe, plan, "mixed", target, mixed[suffix], transfer)]
        if "meta_without_target" in recipe.baselines:
            view = union_data(recipe, without=target)
            prototypes = prototypes_stage(runner, recipe, f"prototypes-without-{target}", view)
            teacher = Model.of_stage(meta_teacher_stage(runner, recipe, plan, f"meta-teacher-without-{target}",
                                                        view, prototypes))
            scored.append(Scored(ROWS["without"], (target,), teacher))
            # lambda's t_i of the target's rows come from the main prototypes, as for the Meta-KD student.
            scored += [Scored(ROWS["without_kd"], (target,), s) for s in meta_distill_stages(
                runner, recipe, plan, "-without", target, teacher, shared[suffix][0], transfer=transfer)]
    scores = report_stage(runner, recipe, plan, scored)
    rows = summary_rows(plan, scored, scores, plan.main_metric)
    order = [name for name in ROWS.values() if name in rows]
    notes[:0] = [f"scores: {plan.main_metric} on the {plan.report_split} split of each target domain (columns); "
                 f"students on their own domain, mean over {len(recipe.student.seeds)} seed(s) (summary.json: "
                 "spread, runs)", f"prototype scores: {recipe.prototypes.mode} centroids from "
                 f"{prototype_encoder(recipe)}"]
    if recipe.data.fraction < 1:
        notes.append(f"data-scarce: each target keeps {recipe.data.fraction} of its training rows")
    if recipe.student.cross_fit_folds:
        notes.append(f"Meta-KD students' stage B: targets cross-fitted over {recipe.student.cross_fit_folds} folds of "
                     "the target's rows (each from a meta-teacher trained without the row's fold)")
    if transfers:
        sizes = ", ".join(f"{target} {transfer.rows}" for target, transfer in transfers.items())
        stages = "stages A and B" if recipe.student.augment_intermediate else "stage B"
        kd = [b for b in recipe.baselines if b != "no_kd"]
        note = (f"{stages}{' and the KD baselines' if kd else ''} distil on augmented transfer sets (the target's "
                f"rows plus Tang et al. variants, rows: {sizes})")
        if "no_kd" in recipe.baselines:
            note += "; the no-KD baseline trains on the gold rows for as many examples"
        notes.append(note)
    notes = list(dict.fromkeys(notes))  # each target's transfer stage says the same about a missing POS tagger
    return write_summary(runner.root, {name: rows[name] for name in order}, order[0], list(plan.targets), notes,
                         baselines=target_baselines(recipe, plan), split=plan.report_split)
