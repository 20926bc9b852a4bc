"""MITKD (ERNIE 3.0 Tiny, arXiv 2301.03416) as stages over the shared parts.

teacher-seed-<s> (multi-task teachers, as in MT-DNN) -> general-mitkd (their encoders distilled task-agnostically
into a small general student on an unlabelled corpus, a text task; relation_kl by default; K teachers: the mean
of the per-teacher losses) -> signals (optional: the teachers' soft targets, when the fine-tune objective reads
them) -> finetune-mitkd-<task>-seed-<s> (the general student fine-tuned on each task alone) -> summary.

``baseline.plain_teacher: true`` runs the same general and fine-tune stages from the plain pretrained encoder
the teachers started from (``general-plain``, ``finetune-plain-...``), so both arms share one output folder,
the teachers and the soft targets, and never each other's stages. The summary shows every arm that has
finished there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from multidistill.config import (
    DataConfig,
    LossTerm,
    ModelConfig,
    ObjectiveConfig,
    Seed,
    TaskRef,
    TrainConfig,
    _Strict,
    changed_fields,
)
from multidistill.data.prepare import open_example_store
from multidistill.errors import ConfigError, ModelError, UnknownTaskError
from multidistill.evaluation.metrics import average_score
from multidistill.models.backbone import load_tokenizer
from multidistill.models.general import ENCODER_DIR
from multidistill.recipes.common import (
    TEACHER_REF,
    given_teachers,
    read_metrics,
    recipe_data,
    signals_stage,
    teacher_rows,
    teacher_stages,
    train_stage,
    trivial_baselines,
)
from multidistill.recipes.config import RecipeBase, check_distinct_seeds, refuse_replaced_seed
from multidistill.recipes.preflight import check_model_path, check_teacher_positions, teacher_sources
from multidistill.recipes.registry import register_recipe
from multidistill.recipes.stages import (
    DEFAULTS_KEY,
    STAGE_MANIFEST,
    StageRunner,
    console,
    portable,
    stage_fingerprint,
    without_defaults,
)
from multidistill.recipes.summary import count_parameters, write_summary
from multidistill.training.loop import BEST_MODEL, check_one_step
from multidistill.training.objective import TEACHER_LOGIT_INPUTS, reads_inputs, refuse_head_losses
from multidistill.training.run_settings import flatten
from multidistill.utils.hashing import hash_tokenizer

ARMS = {"mitkd": "MITKD student (multi-task teacher)", "plain": "plain-teacher student (pretrained encoder)"}


class GeneralStudentSection(_Strict):
    """The general student and its task-agnostic distillation on the corpus (stage b)."""

    model: ModelConfig = Field(description="The student: some layers of a pretrained encoder (student_layers), or a "
                               "random one from backbone_config (without model_type: the name_or_path family). "
                               "`@teacher` = this arm's teacher encoder. Only its encoder is trained (no heads).")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(select="lowest_loss"),
                               description="Settings of the general distillation (no labelled dev data: select "
                               "lowest_loss or last).")
    objective: list[LossTerm] = Field(
        default_factory=lambda: [LossTerm(loss="relation_kl")], min_length=1,
        description="Feature loss terms on the corpus: relation_kl (MiniLMv2, the default), or e.g. hidden_mse + "
        "attention_kl. Several teachers: each term averages its per-teacher losses.")


class MITKDFinetune(_Strict):
    """Per-task fine-tuning of the general student (stage c), each task alone."""

    tasks: list[TaskRef] | None = Field(None, description="Tasks to fine-tune on (names or {name, max_examples}), "
                                        "resolved like data.tasks; default: data.tasks. Tasks no teacher saw "
                                        "(out-of-domain) are allowed unless the objective reads soft targets.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Settings of each per-task run.")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig, description="Loss terms (default: hard "
                                       "labels only); soft_ce etc. read the teachers' soft targets from a store "
                                       "this recipe fills (the same store in both arms).")
    seeds: list[Seed] = Field(default_factory=lambda: [42], min_length=1, description="One fine-tune per task and "
                              "seed (train.seed is not read: leave it unset); the summary shows the mean over seeds.")

    @model_validator(mode="after")
    def _distinct_seeds(self) -> MITKDFinetune:
        check_distinct_seeds(self.seeds, "finetune.seeds")
        names = [ref.name for ref in self.tasks or []]
        if len(set(names)) != len(names):  # said here, not as `data.tasks` by the fine-tunes' data view
            raise ValueError(f"finetune.tasks must be distinct, got {names}")
        if self.tasks == []:  # it fine-tuned on data.tasks, as if left out
            raise ValueError("finetune.tasks is empty; list the tasks to fine-tune on, or leave it out (data.tasks)")
        refuse_replaced_seed(self.train, "finetune.train", "finetune.seeds")
        return self


class MITKDBaseline(_Strict):
    """The comparison arm: the same stages (b)-(c) from the plain pretrained encoder."""

    plain_teacher: bool = Field(False, description="Run the general distillation from the plain pretrained encoder "
                                "(not the multi-task teacher), into stages of their own (general-plain, "
                                "finetune-plain-...).")
    encoder: str | None = Field(None, description="The plain encoder (name, folder or pkg: path); default: "
                                "teacher.model.name_or_path, the encoder the teachers were fine-tuned from.")


class MITKDRecipe(RecipeBase):
    """MITKD: multi-task teacher -> task-agnostic general student on unlabelled text -> per-task fine-tunes."""

    default_objective: ClassVar = None
    recipe: Literal["mitkd"] = Field(description="Recipe name.")
    corpus: TaskRef = Field(description="The unlabelled corpus: a text task (data.task_specs or built in), e.g. "
                            "{name: corpus, max_examples: 100000} with a from_tasks spec.")
    student: GeneralStudentSection = Field(description="The general student (stage b).")
    finetune: MITKDFinetune = Field(default_factory=MITKDFinetune, description="Per-task fine-tunes (stage c).")
    baseline: MITKDBaseline = Field(default_factory=MITKDBaseline, description="The plain-teacher arm.")

    @model_validator(mode="before")
    @classmethod
    def _corpus_name(cls, data):
        if isinstance(data, dict) and isinstance(data.get("corpus"), str):
            data = {**data, "corpus": {"name": data["corpus"]}}
        return data

    @model_validator(mode="after")
    def _plain_encoder_known(self) -> MITKDRecipe:
        if self.baseline.plain_teacher and self.baseline.encoder is None and self.teacher.model is None:
            raise ValueError("baseline.plain_teacher with teacher.model_dirs: name the plain encoder in "
                             "baseline.encoder")
        if self.corpus.name in self.data.task_names:
            raise ValueError(f"corpus '{self.corpus.name}' must not be one of data.tasks (the teachers' tasks)")
        if self.student.model.heads_from is not None:  # the general student has no head; its fine-tunes start fresh
            raise ValueError("student.model.heads_from: the general student is an encoder without task heads (the "
                             "corpus has no labels), so there are no heads to start from; drop it")
        return self


def corpus_data(recipe: MITKDRecipe) -> DataConfig:
    """The recipe's data with the corpus as its only task (for the general distillation)."""
    return recipe_data(recipe).model_copy(update={"tasks": [recipe.corpus]})


def finetune_data(recipe: MITKDRecipe) -> DataConfig:
    return recipe_data(recipe).model_copy(update={"tasks": recipe.finetune.tasks or recipe.data.tasks})


def check_inputs(recipe: MITKDRecipe) -> None:
    """Everything the later stages read, checked before the first stage writes: the corpus (its files, text
    task, feature-only objective), given teachers' heads, the fine-tune tasks, data for one optimizer step per
    stage, and the online teachers' tokenizers and positions against the general student's."""
    if recipe.student.train.select == "best_metric":
        raise ConfigError("key 'student.train.select': the general distillation has no labelled dev data, so "
                          "best_metric has nothing to compare; use lowest_loss (default) or last")
    corpus = corpus_data(recipe)
    try:
        store = open_example_store(corpus, max_examples_per_task=None, seed=recipe.subset_seed)
    except ConfigError as exc:  # the corpus is data.tasks[0] of its own view; the user wrote it as `corpus`
        raise ConfigError(str(exc).replace("key 'data.tasks.0", "key 'corpus")) from exc
    task = store.tasks[recipe.corpus.name]
    if task.has_head:
        raise ConfigError(f"key 'corpus': task '{task.name}' is a {task.type} task; the general distillation needs "
                          "unlabelled text (a task of type: text)")
    store.validate(["train"])
    refuse_head_losses({task.name: task}, general_objective(recipe), key="student.objective")
    check_model_path(recipe.baseline.encoder, "baseline.encoder")
    if recipe.teacher.model_dirs:
        given_teachers(recipe)  # models with a head for every task of data.tasks
    _check_one_step(recipe.student.train, {task.name: len(store.examples(task.name, "train"))}, "student.train")
    _check_finetune_tasks(recipe)
    _check_tokenizers(recipe)
    model = recipe.student.model
    if model.architecture == "hf":  # the general distillation feeds its online teachers the student's tokens
        check_teacher_positions(arm_teachers(recipe), model.max_seq_length, "student.model.max_seq_length",
                                model.trust_remote_code)


def _check_finetune_tasks(recipe: MITKDRecipe) -> None:
    """The fine-tune tasks: labelled, their soft targets (if read) from a teacher that has them, and data enough
    for one optimizer step each, said with the recipe's keys."""
    tuned = finetune_data(recipe)
    try:
        store = open_example_store(tuned, max_examples_per_task=recipe.max_examples_per_task, seed=recipe.subset_seed)
    except ConfigError as exc:  # finetune.tasks is data.tasks of the fine-tunes' own view
        if recipe.finetune.tasks is None:
            raise
        raise ConfigError(str(exc).replace("key 'data.tasks", "key 'finetune.tasks")) from exc
    except UnknownTaskError as exc:
        if recipe.finetune.tasks is None:
            raise
        raise ConfigError(f"key 'finetune.tasks': {exc}") from exc
    key = "finetune.tasks" if recipe.finetune.tasks is not None else "data.tasks"
    for name, task in store.tasks.items():
        if not task.has_head:
            raise ConfigError(f"key '{key}': task '{name}' is a {task.type} task (unlabelled, as the corpus is); a "
                              "fine-tune needs labels: list labelled tasks")
    unseen = [name for name, task in store.tasks.items() if name not in recipe.data.task_names
              and reads_inputs(recipe.finetune.objective, {name: task}, TEACHER_LOGIT_INPUTS)]
    if unseen:
        raise ConfigError(f"key 'finetune.objective': it reads the teachers' soft targets on task(s) {unseen}, which "
                          "no teacher was trained on (they are not in data.tasks); give them terms of their own "
                          "without teacher logits (finetune.objective.tasks.<task>: [{loss: hard}]), or add them "
                          "to data.tasks")
    store.validate(["train", tuned.eval_split])
    for name in store.tasks:
        rows = {name: len(store.examples(name, "train"))}
        for seed in recipe.finetune.seeds:
            _check_one_step(recipe.finetune.train.model_copy(update={"seed": seed}), rows, "finetune.train",
                            f" (task '{name}': {rows[name]} training rows)")


def _check_one_step(train: TrainConfig, rows: dict[str, int], key: str, where: str = "") -> None:
    """`check_one_step` for one stage, its message naming the recipe's ``key`` for the stage's train section."""
    try:
        check_one_step(train, rows, 1)  # recipes run in one process (`refuse_several_processes`)
    except ConfigError as exc:
        raise ConfigError(re.sub(r"\btrain\.", f"{key}.", str(exc)) + where) from exc


def arm_teachers(recipe: MITKDRecipe) -> list[tuple[str, str]]:
    """This run's online teachers in its general distillation, each with the key naming it: the teachers (the
    encoder they are trained from, or each given folder), or the plain encoder."""
    if not recipe.baseline.plain_teacher:
        return teacher_sources(recipe)
    return [(plain_encoder(recipe), "baseline.encoder" if recipe.baseline.encoder else "teacher.model.name_or_path")]


def _tokenizer_hash(source: str, trust_remote_code: bool) -> str | None:
    """The tokenizer's fingerprint; None where it cannot be loaded here (a hub name offline: its stage says so)."""
    try:
        return hash_tokenizer(load_tokenizer(source, trust_remote_code=trust_remote_code))
    except ModelError:
        return None


def _check_tokenizers(recipe: MITKDRecipe) -> None:
    """The general distillation runs its teachers on the student's tokens and its token-level losses compare
    position by position, so every teacher must split text as the student does: refused by the teacher's key,
    before the teachers train."""
    model, teacher = recipe.student.model, recipe.teacher.model
    source = model.tokenizer or model.name_or_path
    if source == TEACHER_REF or model.architecture != "hf":
        return
    if recipe.baseline.plain_teacher or teacher is None:
        teachers = arm_teachers(recipe)
    else:  # a teacher trained here keeps the tokenizer it was trained with
        teachers = [(teacher.tokenizer, "teacher.model.tokenizer") if teacher.tokenizer
                    else (teacher.name_or_path, "teacher.model.name_or_path")]
    student = _tokenizer_hash(source, model.trust_remote_code)
    for name, key in teachers:
        found = _tokenizer_hash(name, model.trust_remote_code)
        if student is not None and found is not None and found != student:
            raise ConfigError(f"key '{key}': {name} uses another tokenizer than the general student ({source}); the "
                              "general distillation runs it on the student's tokens, and its token-level losses "
                              "compare position by position, which only line up when both split text the same way: "
                              "give a teacher and a student with the same tokenizer")


def general_objective(recipe: MITKDRecipe) -> ObjectiveConfig:
    return ObjectiveConfig(tasks={recipe.corpus.name: list(recipe.student.objective)})


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
                max_examples=recipe.max_examples_per_task, objective=recipe.finetune.objective, signals=signals,
                inputs=inputs))
    return folders


def finished_arm(root: Path, arm: str, recipe: MITKDRecipe) -> dict[str, list[Path]] | None:
    """The other arm's fine-tune folders when all of them finished earlier in this output folder, else None."""
    names = [ref.name for ref in finetune_data(recipe).tasks]
    folders = {name: [root / f"finetune-{arm}-{name}-seed-{seed}" for seed in recipe.finetune.seeds]
               for name in names}
    done = all((f / STAGE_MANIFEST).is_file() for runs in folders.values() for f in runs)
    return folders if done else None


# A stage's recorded settings -> the recipe keys they come from (general-<arm>, then finetune-<arm>-...).
GENERAL_KEYS = (("model.", "student.model."), ("train.", "student.train."), ("data.tasks.0.", "corpus."))
FINETUNE_KEYS = (("model.", "student.model."), ("train.", "finetune.train."), ("objective.", "finetune.objective."),
                 ("data.tasks", "finetune.tasks"))


def _settings(folder: Path, root: Path, ignore: tuple[str, ...], teacher_refs: tuple[str, ...]) -> tuple[dict, bool]:
    """A finished stage's settings as dotted keys, defaults included (they are recorded apart), paths inside the run
    folder written as `@run/...`, the first online teacher as `@teacher` in ``teacher_refs`` (the keys the recipe
    gives as `@teacher`: each arm resolves them to its own teacher); and whether every section recorded its defaults
    (stages made before they were did not)."""
    config = json.loads((folder / STAGE_MANIFEST).read_text())["config"]
    flat, complete = {}, True
    for section, value in config.items():
        if isinstance(value, dict):
            complete = complete and DEFAULTS_KEY in value
            flat.update({f"{section}.{key}": v for key, v in (value.get(DEFAULTS_KEY) or {}).items()})
            flat.update(flatten(without_defaults(value), f"{section}."))
        else:
            flat[section] = value
    teachers = config.get("online_teachers") or [None]
    flat = {key: TEACHER_REF if key in teacher_refs and value == teachers[0] else value
            for key, value in flat.items() if value != {} and key not in ignore}
    return portable(flat, root), complete


def _recipe_key(key: str, names: tuple[tuple[str, str], ...], corpus: str) -> str:
    """A stage's settings key as the recipe key it comes from (``names``: stage prefix -> recipe prefix)."""
    key = re.sub(rf"^objective\.tasks\.{re.escape(corpus)}\b", "student.objective", key)
    return next((to + key[len(start):] for start, to in names if key.startswith(start)), key)


def arm_differences(root: Path, recipe: MITKDRecipe, this: str, other: str,
                    arms: dict[str, dict[str, list[Path]]]) -> dict[str, list]:
    """The settings (recipe key -> [the other arm's, this run's]) that the other arm's finished stages were made with
    and this run's were not: the general distillation's (but its teachers: each arm's own) and each fine-tune's (but
    its start: each arm's general student)."""
    found: dict[str, list] = {}
    model = recipe.student.model
    refs = tuple(f"model.{key}" for key in ("name_or_path", "tokenizer") if getattr(model, key) == TEACHER_REF)

    def compare(mine: Path, theirs: Path, ignore: tuple[str, ...], names: tuple[tuple[str, str], ...]) -> None:
        (a, a_complete), (b, b_complete) = (_settings(folder, root, ignore, refs) for folder in (mine, theirs))
        keys = set(a) | set(b) if a_complete and b_complete else set(a) & set(b)  # unrecorded defaults: unknown
        for key in sorted(keys):
            if a.get(key) != b.get(key):
                found.setdefault(_recipe_key(key, names, recipe.corpus.name), [b.get(key), a.get(key)])

    compare(root / f"general-{this}", root / f"general-{other}", ("online_teachers",), GENERAL_KEYS)
    for task, folders in arms[this].items():
        for mine, theirs in zip(folders, arms[other][task], strict=True):
            compare(mine, theirs, ("model.name_or_path",), FINETUNE_KEYS)
    return found


def differences_note(this: str, other: str, found: dict[str, list]) -> str:
    """The summary's note on a row made with other settings than this run's."""
    def value(setting: object) -> str:
        return "unset" if setting is None else repr(setting)

    shown = [f"{key} {value(theirs)} there, {value(mine)} here" for key, (theirs, mine) in list(found.items())[:8]]
    more = f" and {len(found) - 8} more" if len(found) > 8 else ""
    return (f"the {ARMS[other]} row comes from stages made with other settings than this run's {ARMS[this]} row "
            f"({'; '.join(shown)}{more}): the two rows differ in more than their teachers; to compare them, remove "
            f"general-{other} and finetune-{other}-* and run that arm again with these settings")


def finetune_row(folders: dict[str, list[Path]]) -> dict:
    """One summary row: per task, each metric's mean over the seeds' runs. Each task has its own fine-tuned
    model, so the row stands for one model per task: ``params`` sums theirs (a seed's run of each task), and
    ``stages`` names every run its scores come from (as MKD's per-task rows)."""
    tasks, main = {}, {}
    for task, runs in folders.items():
        metrics = [read_metrics(folder) for folder in runs]
        tasks[task] = {key: sum(m["tasks"][task][key] for m in metrics) / len(metrics)
                       for key in metrics[0]["tasks"][task]}
        main[task] = sum(m["main"][task] for m in metrics) / len(metrics)
    params = sum(count_parameters(runs[0] / BEST_MODEL) for runs in folders.values())
    return {"metrics": {"tasks": tasks, "main": main, "average": average_score(main)}, "params": params,
            "models": len(folders), "stages": [folder.name for runs in folders.values() for folder in runs],
            "seeds": len(next(iter(folders.values())))}


def plain_encoder(recipe: MITKDRecipe) -> str:
    return recipe.baseline.encoder or recipe.teacher.model.name_or_path


@register_recipe("mitkd", MITKDRecipe)
def run_mitkd(recipe: MITKDRecipe, runner: StageRunner) -> dict:
    check_inputs(recipe)
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
        console.print("[yellow]note: signals not used: finetune.objective reads no teacher logits, so no signal "
                      "store is made[/yellow]")
    arms = {arm: finetune_stages(runner, recipe, arm, general, signals)}
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
