"""MITKD's own stages: the general distillation on the corpus (b) and the per-task fine-tunes of its student (c);
the teachers and the soft targets are the shared stages of `multidistill.recipes.common`."""

from __future__ import annotations

from pathlib import Path

from multidistill.config import ModelConfig
from multidistill.models.general import ENCODER_DIR
from multidistill.recipes.common import TEACHER_REF, train_stage
from multidistill.recipes.mitkd.config import MITKDRecipe
from multidistill.recipes.mitkd.plan import corpus_data, finetune_data, general_objective
from multidistill.recipes.stages import StageRunner, stage_fingerprint
from multidistill.training.objective import objective_for_tasks


def general_stage(runner: StageRunner, recipe: MITKDRecipe, arm: str, teachers: list[str],
                  inputs: dict[str, str]) -> Path:
    """Stage (b): the teachers' encoders distilled into the general student on the corpus; its encoder/ is a
    plain HF encoder folder."""
    model = recipe.student.model
    if TEACHER_REF in (model.name_or_path, model.tokenizer):
        model = model.model_copy(update={key: teachers[0] for key in ("name_or_path", "tokenizer")
                                         if getattr(model, key) == TEACHER_REF})
    return train_stage(runner, f"general-{arm}", kind="distill", model=model, train=recipe.student.train,
                       data=corpus_data(recipe), max_examples=None, objective=general_objective(recipe),
                       inputs=inputs, online_teachers=teachers)


def finetune_stages(runner: StageRunner, recipe: MITKDRecipe, arm: str, general: Path,
                    signals: Path | None) -> dict[str, list[Path]]:
    """Stage (c): one run per task and seed from the general student's encoder folder."""
    section = recipe.student.model
    model = ModelConfig(name_or_path=str(general / ENCODER_DIR), pooling=section.pooling, dropout=section.dropout,
                        max_seq_length=section.max_seq_length, trust_remote_code=section.trust_remote_code)
    data = finetune_data(recipe)
    inputs = {"general": stage_fingerprint(general)}
    if signals is not None:
        inputs["signals"] = stage_fingerprint(signals)
    folders: dict[str, list[Path]] = {}
    for ref in data.tasks:
        single = data.model_copy(update={"tasks": [ref]})
        for seed in recipe.finetune.seeds:
            folders.setdefault(ref.name, []).append(train_stage(
                runner, f"finetune-{arm}-{ref.name}-seed-{seed}", kind="distill", model=model,
                train=recipe.finetune.train.model_copy(update={"seed": seed}), data=single,
                max_examples=recipe.max_examples_per_task, signals=signals,
                objective=objective_for_tasks(recipe.finetune.objective, [ref.name], data.task_names,
                                              key="finetune.objective"),
                inputs=inputs))
    return folders
