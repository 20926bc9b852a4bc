"""Recipe inputs refused before the first stage, by the recipe's own keys (MITKD, Meta-KD, the preflight of online
teachers), and the summary's rows (averages over the same tasks, trivial baselines, per-task and ensemble rows, a
MITKD arm made with other settings). No stage trains here: each check runs on config files and tiny folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from multidistill.config import DataConfig, LossTerm, ModelConfig, ObjectiveConfig, TrainConfig
from multidistill.errors import ConfigError
from multidistill.recipes import load_recipe
from tests.conftest import _vocab
from tests.test_cli import run_cli
from tests.test_metakd import tiny_metakd
from tests.test_mitkd import tiny_mitkd
from tests.test_recipes import write


def task_specs(recipe: dict) -> dict[str, dict]:
    return {spec["name"]: spec for spec in recipe["data"]["task_specs"]}


def save_teacher(folder: Path, encoder: Path, specs: list[dict], domains: list[str] | None = None) -> Path:
    """A multidistill model folder on ``encoder`` with (untrained) heads for ``specs``, and a domain branch."""
    from multidistill.data.tasks import Task
    from multidistill.models import MultiTaskModel
    from multidistill.models.backbone import load_tokenizer
    from multidistill.models.domain_branch import DomainBranchSpec

    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone(str(encoder), [Task.model_validate(s) for s in specs], max_length=16,
                                         domain_branch=DomainBranchSpec(domains=domains) if domains else None)
    model.save_pretrained(folder, load_tokenizer(str(encoder)))
    return folder


def short_encoder(folder: Path, positions: int = 20) -> Path:
    """The tiny BERT's tokenizer on an encoder with ``positions`` positions (the students here read 32 tokens)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    BertTokenizerFast(vocab={t: i for i, t in enumerate(_vocab())}, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=positions)).save_pretrained(folder)
    return folder


def other_vocab_encoder(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny BERT's weights with a tokenizer that numbers the same words otherwise."""
    from transformers import BertTokenizerFast

    shutil.copytree(tiny_model_dir, folder)
    words = _vocab()
    order = [*words[:5], *reversed(words[5:])]
    BertTokenizerFast(vocab={t: i for i, t in enumerate(order)}, do_lower_case=True).save_pretrained(folder)
    return folder


# --- MITKD: check_inputs ----------------------------------------------------------------------------------------


def mitkd_checks(recipe: dict, tmp_path: Path, *overrides: str) -> None:
    from multidistill.recipes.mitkd import check_inputs

    check_inputs(load_recipe(write(recipe, tmp_path), list(overrides)))


@pytest.mark.parametrize(("overrides", "said"), [
    (["finetune.tasks=[corpus]"], ["key 'finetune.tasks'", "task 'corpus' is a text task"]),
    (["finetune.tasks=[toy_sent, toy_pair]", "finetune.objective={classification: [{loss: hard}, {loss: soft_ce}]}"],
     ["key 'finetune.objective'", "['toy_pair']", "no teacher was trained on"]),
    (["finetune.tasks=[{name: toy_sent, max_examples: 3}]", "finetune.train.grad_accum_steps=4"],
     ["key 'finetune.train.grad_accum_steps'", "task 'toy_sent': 3 training rows"]),
    (["student.train.grad_accum_steps=50"], ["key 'student.train.grad_accum_steps'"]),
])
def test_mitkd_fine_tune_inputs_are_refused_by_the_recipes_keys(overrides, said, tiny_run, tmp_path):
    """These were found after the teacher and general stages, under the stage's keys ('train.select', a teacher
    without a head, 'train.grad_accum_steps')."""
    with pytest.raises(ConfigError) as refused:
        mitkd_checks(tiny_mitkd(tiny_run, tmp_path), tmp_path, *overrides)
    assert all(text in str(refused.value) for text in said), str(refused.value)


def test_a_fine_tune_task_listed_twice_is_refused_with_the_config(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match=r"finetune.tasks must be distinct"):
        mitkd_checks(tiny_mitkd(tiny_run, tmp_path), tmp_path, "finetune.tasks=[toy_sent, toy_sent]")


@pytest.mark.parametrize(("arm", "key"), [("mitkd", "teacher.model.name_or_path"), ("plain", "baseline.encoder")])
def test_an_online_teacher_with_another_tokenizer_is_refused_before_the_teacher_trains(arm, key, tiny_run, tmp_path,
                                                                                      tiny_model_dir):
    recipe = tiny_mitkd(tiny_run, tmp_path)
    other = str(other_vocab_encoder(tiny_model_dir, tmp_path / "other_vocab"))
    if arm == "mitkd":
        recipe["teacher"]["model"]["name_or_path"] = other
    else:
        recipe["baseline"] = {"plain_teacher": True, "encoder": other}
    with pytest.raises(ConfigError, match=rf"key '{key}': .*another tokenizer than the general student"):
        mitkd_checks(recipe, tmp_path)


def test_a_given_teacher_without_heads_for_data_tasks_is_refused_before_any_stage(tiny_run, tmp_path, monkeypatch,
                                                                                  capsys, tiny_model_dir):
    """A MITKD general student (a head for its corpus only) was taken as a teacher: the run trained, then summed up
    against it, or failed at the signal store."""
    recipe = tiny_mitkd(tiny_run, tmp_path)
    given = save_teacher(tmp_path / "given", tiny_model_dir, [task_specs(recipe)["toy_sent"]])
    recipe["teacher"] = {"model_dirs": [str(given)]}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2, output
    assert "key 'teacher.model_dirs.0'" in output and "no head for task(s) ['toy_reg']" in output
    assert not Path(recipe["output_dir"]).exists()


def test_a_given_teacher_shorter_than_the_student_is_refused_by_the_students_length(tiny_run, tmp_path):
    """The general stage runs it online on 32-token batches: a raw RuntimeError and a half-made stage folder."""
    recipe = tiny_mitkd(tiny_run, tmp_path)
    specs = task_specs(recipe)
    given = save_teacher(tmp_path / "given", short_encoder(tmp_path / "short"), [specs["toy_sent"], specs["toy_reg"]])
    recipe["teacher"] = {"model_dirs": [str(given)]}
    with pytest.raises(ConfigError, match=r"key 'student.model.max_seq_length': 32 tokens exceed the 20 positions"):
        mitkd_checks(recipe, tmp_path)


# --- Meta-KD: plan.check_inputs -----------------------------------------------------------------------------------


def metakd_plan(recipe: dict, tmp_path: Path, *overrides: str):
    from multidistill.recipes.metakd.plan import check_inputs

    return check_inputs(load_recipe(write(recipe, tmp_path), list(overrides)))


@pytest.mark.parametrize("split", ["dev", "test"])
def test_a_target_without_rows_to_select_or_score_on_is_refused_by_targets(split, tiny_run, tmp_path):
    """The other domains' rows hid it: the run trained every stage, then failed in the scores stage."""
    recipe = tiny_metakd(tiny_run, tmp_path)
    del task_specs(recipe)["reviews"]["domain_files"]["dvd"][split]
    with pytest.raises(ConfigError, match=rf"key 'targets': domain 'dvd' of task 'reviews' has no rows in split "
                                          rf"'{split}'"):
        metakd_plan(recipe, tmp_path)


def test_a_target_in_another_case_is_named(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match=r"domain 'Books' is not in the data .*; did you mean 'books'\?"):
        metakd_plan(tiny_metakd(tiny_run, tmp_path), tmp_path, "targets=[Books]")


def test_a_given_meta_teacher_with_another_tasks_head_is_refused_before_the_prototypes(tiny_run, tmp_path,
                                                                                       tiny_model_dir):
    recipe = tiny_metakd(tiny_run, tmp_path)
    given = save_teacher(tmp_path / "given", tiny_model_dir, [task_specs(recipe)["toy_sent"]], ["books", "dvd"])
    recipe["teacher"] = {"model_dirs": [str(given)]}
    with pytest.raises(ConfigError, match=r"key 'teacher.model_dirs.0': .* no head for task\(s\) \['reviews'\]"):
        metakd_plan(recipe, tmp_path)


def test_a_meta_teacher_shorter_than_the_student_is_refused_before_stage_a(tiny_run, tmp_path):
    recipe = tiny_metakd(tiny_run, tmp_path)
    given = save_teacher(tmp_path / "given", short_encoder(tmp_path / "short"), [task_specs(recipe)["reviews"]],
                         ["books", "dvd"])
    recipe["teacher"] = {"model_dirs": [str(given)]}
    with pytest.raises(ConfigError, match=r"key 'student.model.max_seq_length': 32 tokens exceed the 20 positions"):
        metakd_plan(recipe, tmp_path)


def test_a_prototype_encoder_shorter_than_its_rows_is_refused_by_prototypes_max_seq_length(tiny_run, tmp_path):
    """Stage 0 reads the teacher's max_seq_length tokens (32 here) by default: an encoder of 20 positions failed
    inside its embeddings, in the first stage."""
    recipe = tiny_metakd(tiny_run, tmp_path)
    recipe["prototypes"] = {"encoder": str(short_encoder(tmp_path / "short"))}
    with pytest.raises(ConfigError, match=r"key 'prototypes.max_seq_length': 32 tokens exceed the 20 positions of "
                                          r"the prototype encoder .*short \(prototypes.encoder\)"):
        metakd_plan(recipe, tmp_path)
    metakd_plan(recipe, tmp_path, "prototypes.max_seq_length=20")


def test_a_given_meta_teachers_prototypes_read_the_length_it_was_trained_with(tiny_run, tmp_path):
    """With teacher.model_dirs the prototype encoder is the given meta-teacher; its rows are 128 tokens, or, where
    the encoder has fewer positions, as long as it was trained with (recorded in its folder: 16 here)."""
    from multidistill.recipes.metakd.plan import prototype_length

    recipe = tiny_metakd(tiny_run, tmp_path)
    given = save_teacher(tmp_path / "given", short_encoder(tmp_path / "short", positions=40),
                         [task_specs(recipe)["reviews"]], ["books", "dvd"])
    recipe["teacher"] = {"model_dirs": [str(given)]}
    metakd_plan(recipe, tmp_path)
    loaded = load_recipe(write(recipe, tmp_path), [])
    assert prototype_length(loaded) == 16
    with pytest.raises(ConfigError, match=r"key 'prototypes.max_seq_length': 41 tokens exceed the 40 positions of "
                                          r"the prototype encoder .*given \(teacher.model_dirs.0\)"):
        metakd_plan(recipe, tmp_path, "prototypes.max_seq_length=41")
    # An encoder of 128 positions or more keeps 128, what runs made before read (their prototypes stay valid).
    roomy = save_teacher(tmp_path / "roomy", short_encoder(tmp_path / "long", positions=200),
                         [task_specs(recipe)["reviews"]], ["books", "dvd"])
    recipe["teacher"] = {"model_dirs": [str(roomy)]}
    assert prototype_length(load_recipe(write(recipe, tmp_path), [])) == 128


def test_a_meta_kd_student_stage_a_cannot_compare_is_refused_before_the_meta_teacher_trains(tiny_run, tmp_path,
                                                                                            tiny_model_dir):
    """Stage A's terms are the method's: a student with another head count (attention_mse) or another tokenizer
    (the meta-teacher runs online on the student's tokens) failed at stage A, after the meta-teacher had trained,
    naming keys ('online_teachers', relation_kl) a Meta-KD user cannot set."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    heads = tmp_path / "four-heads"
    BertTokenizerFast(vocab={t: i for i, t in enumerate(_vocab())}, do_lower_case=True).save_pretrained(heads)
    BertModel(BertConfig(vocab_size=len(_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(heads)
    recipe = tiny_metakd(tiny_run, tmp_path)
    metakd_plan(recipe, tmp_path)  # the tiny BERT, cut to one layer: fits
    with pytest.raises(ConfigError, match=r"key 'student.model.name_or_path': Meta-KD's stage A .* cannot compare "
                                          r"this student with it: .*4 attention heads"):
        metakd_plan(recipe, tmp_path, f"student.model.name_or_path={heads}")
    other = other_vocab_encoder(tiny_model_dir, tmp_path / "other-vocab")
    with pytest.raises(ConfigError, match=r"key 'student.model.name_or_path': .*other-vocab splits text otherwise "
                                          r"than the teacher .*Meta-KD's stage A"):
        metakd_plan(recipe, tmp_path, f"student.model.name_or_path={other}")


def test_a_student_with_feature_terms_and_another_tokenizer_is_refused_by_key(tmp_path, tiny_model_dir):
    """MKD / MT-DNN-KD students whose objective reads teacher features run the teachers online on their tokens:
    another tokenizer was refused only when the student's stage started, under 'online_teachers'."""
    from pydantic import BaseModel

    from multidistill.recipes.config import StudentSection, TeacherSection
    from multidistill.recipes.preflight import check_online_teachers

    class Settings(BaseModel):
        teacher: TeacherSection
        student: StudentSection

    other = other_vocab_encoder(tiny_model_dir, tmp_path / "other-vocab")

    def settings(student: Path, *terms: str) -> Settings:
        objective = ObjectiveConfig(classification=[LossTerm(loss=term) for term in terms])
        return Settings(teacher=TeacherSection(model_dirs=[str(tiny_model_dir)]),
                        student=StudentSection(model=ModelConfig(name_or_path=str(student), max_seq_length=32),
                                               objective=objective))

    check_online_teachers(settings(other, "soft_ce"))  # logits from a store: keyed by example, any tokenizer
    # A teacher trained here with the student's tokenizer (teacher.model.tokenizer) reads the student's tokens.
    trained = Settings(teacher=TeacherSection(model=ModelConfig(name_or_path=str(tiny_model_dir),
                                                                tokenizer=str(other))),
                       student=settings(other, "hidden_mse").student)
    check_online_teachers(trained)
    check_online_teachers(settings(tiny_model_dir, "soft_ce", "hidden_mse"))
    with pytest.raises(ConfigError, match=r"key 'student.model.name_or_path': .*other-vocab splits text otherwise "
                                          r"than the teacher .*\(teacher.model_dirs.0\).*'student.objective'"):
        check_online_teachers(settings(other, "soft_ce", "hidden_mse"))


def test_masking_augmentation_over_a_tokenizer_without_a_mask_token_is_refused_by_p_mask(tmp_path, tiny_model_dir):
    """Llama-style tokenizers have no mask token: masked words were written as the literal '[MASK]', which such a
    tokenizer splits into word pieces, silently. Refused by the p_mask key; p_mask 0 passes."""
    from pydantic import BaseModel
    from transformers import AutoTokenizer

    from multidistill.data.augment import AugmentConfig
    from multidistill.recipes.config import TeacherSection
    from multidistill.recipes.preflight import check_mask_tokens

    class Settings(BaseModel):
        teacher: TeacherSection
        augment: AugmentConfig

    shutil.copytree(tiny_model_dir, tmp_path / "no-mask")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "no-mask")
    tokenizer.mask_token = None
    tokenizer.save_pretrained(tmp_path / "no-mask")
    assert AutoTokenizer.from_pretrained(tmp_path / "no-mask").mask_token is None

    def settings(folder: Path, p_mask: float) -> Settings:
        return Settings(teacher=TeacherSection(model_dirs=[str(folder)]), augment=AugmentConfig(p_mask=p_mask))

    check_mask_tokens(settings(tiny_model_dir, 0.1))
    check_mask_tokens(settings(tmp_path / "no-mask", 0.0))
    with pytest.raises(ConfigError, match=r"key 'augment.p_mask': the teacher's tokenizer .*no-mask\) has no mask "
                                          r"token.*set p_mask: 0"):
        check_mask_tokens(settings(tmp_path / "no-mask", 0.1))


# --- preflight: online teachers' positions -------------------------------------------------------------------------


def test_online_teacher_positions_count_roberta_offsets(tmp_path):
    """RoBERTa's position ids start after the padding index: 34 embeddings give 32 positions."""
    from transformers import RobertaConfig

    from multidistill.recipes.preflight import check_teacher_positions

    RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=34, pad_token_id=1).save_pretrained(tmp_path / "roberta")
    teachers = [(str(tmp_path / "roberta"), "teacher.model_dirs.0")]
    check_teacher_positions(teachers, 32, "student.model.max_seq_length")
    with pytest.raises(ConfigError, match=r"33 tokens exceed the 32 positions of the online teacher .*"
                                          r"\(teacher.model_dirs.0\)"):
        check_teacher_positions(teachers, 33, "student.model.max_seq_length")


def test_a_student_with_feature_terms_is_checked_against_its_online_teachers(tmp_path, tiny_model_dir):
    from pydantic import BaseModel
    from transformers import BertConfig

    from multidistill.recipes.config import StudentSection, TeacherSection
    from multidistill.recipes.preflight import check_online_teachers

    class Settings(BaseModel):
        teacher: TeacherSection
        student: StudentSection

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=20).save_pretrained(tmp_path / "short")
    student = ModelConfig(name_or_path=str(tiny_model_dir), max_seq_length=32)

    def settings(*terms: str) -> Settings:
        objective = ObjectiveConfig(classification=[LossTerm(loss=term) for term in terms])
        return Settings(teacher=TeacherSection(model_dirs=[str(tmp_path / "short")]),
                        student=StudentSection(model=student, objective=objective))

    check_online_teachers(settings("soft_ce", "hard"))  # logits come from a store: no teacher runs online
    with pytest.raises(ConfigError, match=r"key 'student.model.max_seq_length': 32 tokens exceed the 20"):
        check_online_teachers(settings("soft_ce", "hidden_mse"))


def test_a_feature_term_on_an_encoder_whose_features_cannot_be_read_is_refused_by_key(tmp_path):
    """An ALBERT student with hidden_mse: refused before the first stage, naming the objective's key and why (before,
    preflight let it through and the distillation stage refused it after the teacher had trained)."""
    from pydantic import BaseModel
    from transformers import AlbertConfig, BertConfig

    from multidistill.recipes.config import StudentSection, TeacherSection
    from multidistill.recipes.preflight import check_feature_losses

    class Settings(BaseModel):
        teacher: TeacherSection
        student: StudentSection

    BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64).save_pretrained(tmp_path / "teacher")
    AlbertConfig(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64).save_pretrained(tmp_path / "albert")

    def settings(student: str, *terms: str, **model) -> Settings:
        objective = ObjectiveConfig(classification=[LossTerm(loss=term) for term in terms])
        return Settings(teacher=TeacherSection(model_dirs=[str(tmp_path / "teacher")]),
                        student=StudentSection(model=ModelConfig(name_or_path=str(tmp_path / student), **model),
                                               objective=objective))

    check_feature_losses(settings("albert", "soft_ce"))  # no feature term: its family is never read
    check_feature_losses(settings("teacher", "soft_ce", "hidden_mse"))
    with pytest.raises(ConfigError, match=r"key 'student.objective': feature distillation cannot read a 'albert' "
                                          r"encoder: ALBERT runs one shared layer"):
        check_feature_losses(settings("albert", "soft_ce", "hidden_mse"))
    # Built from settings (ALBERT's "cannot be cut" message points there): checked on the config it builds.
    small = {"backbone_config": {"num_hidden_layers": 1}}
    check_feature_losses(settings("teacher", "soft_ce", "hidden_mse", **small))
    with pytest.raises(ConfigError, match=r"key 'student.objective': feature distillation cannot read a 'albert'"):
        check_feature_losses(settings("albert", "soft_ce", "hidden_mse", **small))
    with pytest.raises(ConfigError, match=r"key 'student.objective': feature distillation cannot read a 'funnel'"):
        check_feature_losses(settings("teacher", "hidden_mse", backbone_config={"model_type": "funnel"}))


# --- summaries -----------------------------------------------------------------------------------------------------


def test_every_row_is_averaged_over_the_same_tasks(tmp_path):
    """MITKD with an out-of-domain task: the teacher's average was over 2 tasks, the students' over 3."""
    from multidistill.recipes.summary import write_summary

    rows = {"teacher": {"metrics": {"main": {"a": 0.8, "b": 0.6}}},
            "student": {"metrics": {"main": {"a": 0.6, "b": 0.4, "ood": 0.1}}}}
    summary = write_summary(tmp_path, rows, "teacher", ["a", "b", "ood"])
    assert summary["average_tasks"] == ["a", "b"]
    assert summary["rows"]["teacher"]["average"] == pytest.approx(0.7)
    assert summary["rows"]["student"]["average"] == pytest.approx(0.5)
    assert any("ood shown but not averaged" in note for note in summary["notes"])
    assert json.loads((tmp_path / "summary.json").read_text())["average_tasks"] == ["a", "b"]


def model_folder(folder: Path, size: int, metrics: dict | None = None) -> Path:
    """A run folder with ``metrics.json`` and a model/ of ``size`` parameters (as `count_parameters` reads it)."""
    (folder / "model").mkdir(parents=True)
    save_file({"weight": torch.zeros(size)}, str(folder / "model" / "model.safetensors"))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_per_task_rows_count_every_model_and_name_their_stages(tmp_path):
    from multidistill.recipes.common import teacher_rows
    from multidistill.recipes.mkd import _per_task_row

    folders = {task: model_folder(tmp_path / f"finetune-{task}", size,
                                  {"main": {task: 0.5}, "tasks": {task: {"accuracy": 0.5}}})
               for task, size in (("a", 10), ("b", 20))}
    row = _per_task_row(folders)
    assert row["params"] == 30 and row["models"] == 2 and row["stages"] == ["finetune-a", "finetune-b"]
    teacher = model_folder(tmp_path / "teacher-seed-1", 40, {"main": {"a": 0.9}})
    assert teacher_rows([teacher / "model"])["teacher teacher-seed-1"]["stages"] == ["teacher-seed-1"]


def test_mitkd_fine_tune_rows_count_one_model_per_task_and_name_every_run(tmp_path):
    """Each task has its own fine-tuned model: the row sums their parameters (one seed's run each, not one task's
    model alone) and names every seed's run its means come from."""
    from multidistill.recipes.mitkd import finetune_row

    folders = {task: [model_folder(tmp_path / f"finetune-mitkd-{task}-seed-{seed}", size,
                                   {"main": {task: score}, "tasks": {task: {"accuracy": score}}})
                      for seed, score in ((1, 0.4), (2, 0.6))]
               for task, size in (("a", 10), ("b", 20))}
    row = finetune_row(folders)
    assert row["params"] == 30 and row["models"] == 2 and row["seeds"] == 2
    assert row["stages"] == ["finetune-mitkd-a-seed-1", "finetune-mitkd-a-seed-2", "finetune-mitkd-b-seed-1",
                             "finetune-mitkd-b-seed-2"]
    assert row["metrics"]["main"] == pytest.approx({"a": 0.5, "b": 0.5})


def test_metakd_rows_carry_their_average(tmp_path):
    from multidistill.recipes.metakd.plan import Plan
    from multidistill.recipes.metakd.report import Scored, summary_rows
    from multidistill.recipes.metakd.stages import Model

    plan = Plan("reviews", ("books", "dvd"), ("books", "dvd"), ("books", "dvd"), "test", "accuracy",
                {"books": 8, "dvd": 8})
    folder = model_folder(tmp_path / "student", 10) / "model"
    scored = [Scored("Meta-KD student", (d,), Model(folder, "f", f"student-{d}")) for d in ("books", "dvd")]
    scores = {item.key: {domain: {"accuracy": value}} for item, domain, value in
              zip(scored, ("books", "dvd"), (0.8, 0.6), strict=True)}
    row = summary_rows(plan, scored, scores, "accuracy")["Meta-KD student"]
    assert row["metrics"]["average"] == pytest.approx(0.7)


# --- MITKD: the other arm's settings -------------------------------------------------------------------------------


def fake_arm(root: Path, recipe, arm: str, teacher: str, *, lr: float = 3e-3, corpus_cap: int | None = None) -> dict:
    """Stage records of one MITKD arm as `train_stage` writes them (settings only: nothing is trained)."""
    from multidistill.config import TaskRef
    from multidistill.recipes.mitkd import finetune_data, general_objective
    from multidistill.recipes.stages import STAGE_MANIFEST, settings_payload

    def record(name: str, model: ModelConfig, train: TrainConfig, data: DataConfig, objective, teachers=None) -> Path:
        config = {"kind": "distill", "model": settings_payload(model), "train": settings_payload(train),
                  "data": settings_payload(data), "objective": settings_payload(objective)}
        if teachers:
            config["online_teachers"] = teachers
        (root / name).mkdir(parents=True)
        (root / name / STAGE_MANIFEST).write_text(json.dumps({"config": config}))
        return root / name

    student = recipe.student.model
    if student.name_or_path == "@teacher":
        student = student.model_copy(update={"name_or_path": teacher})
    corpus = recipe.data.model_copy(update={"tasks": [TaskRef(name="corpus", max_examples=corpus_cap)],
                                            "subset_seed": recipe.subset_seed})
    record(f"general-{arm}", student, recipe.student.train, corpus, general_objective(recipe), [teacher])
    tuned = finetune_data(recipe)
    model = ModelConfig(name_or_path=str(root / f"general-{arm}" / "encoder"), max_seq_length=32)
    train = recipe.finetune.train.model_copy(update={"seed": 1, "lr": lr})
    return {ref.name: [record(f"finetune-{arm}-{ref.name}-seed-1", model, train,
                              tuned.model_copy(update={"tasks": [ref]}), recipe.finetune.objective)]
            for ref in tuned.tasks}


@pytest.mark.parametrize("student", ["tiny", "@teacher"])
def test_the_other_arm_made_with_other_settings_is_said(student, tiny_run, tmp_path):
    """The summary put the other arm's finished row beside this run's without comparing their settings."""
    from multidistill.recipes.mitkd import arm_differences, differences_note

    raw = tiny_mitkd(tiny_run, tmp_path)
    if student == "@teacher":
        raw["student"]["model"]["name_or_path"] = "@teacher"
    recipe = load_recipe(write(raw, tmp_path))
    root = tmp_path / "mitkd"
    plain, teacher = str(tmp_path / "encoder"), str(root / "teacher-seed-1" / "model")
    arms = {"plain": fake_arm(root, recipe, "plain", plain), "mitkd": fake_arm(root, recipe, "mitkd", teacher)}
    assert arm_differences(root, recipe, "plain", "mitkd", arms) == {}  # the teachers and starts are the arms' own

    shutil.rmtree(root)
    arms = {"plain": fake_arm(root, recipe, "plain", plain),
            "mitkd": fake_arm(root, recipe, "mitkd", teacher, lr=0.03, corpus_cap=20)}
    found = arm_differences(root, recipe, "plain", "mitkd", arms)
    assert found == {"corpus.max_examples": [20, None], "finetune.train.lr": [0.03, 0.003]}
    note = differences_note("plain", "mitkd", found)
    assert "finetune.train.lr 0.03 there, 0.003 here" in note and "corpus.max_examples 20 there, unset here" in note


def test_a_teacher_folder_listed_twice_is_refused_when_the_recipe_loads(tiny_run, tmp_path):
    """[a, a] was refused only in the signals stage (after MKD's transfer stage), in the CLI's --teacher words."""
    from tests.test_recipes import tiny_recipe

    recipe = tiny_recipe("mkd_transformer.yaml", tiny_run, tmp_path)
    folder = str(tmp_path / "teacher")
    recipe["teacher"] = {"model_dirs": [folder, f"{folder}/"]}
    with pytest.raises(ConfigError) as refused:
        load_recipe(write(recipe, tmp_path))
    said = str(refused.value)
    assert "key 'teacher.model_dirs'" in said and f"{folder}/" in said and "twice" in said, said
    assert not Path(recipe["output_dir"]).exists()


@pytest.mark.parametrize("shipped", ["mtdnn_kd.yaml", "mkd_bilstm.yaml"])
def test_a_text_task_in_data_tasks_is_refused_when_the_recipe_loads(shipped, tiny_run, tmp_path, monkeypatch, capsys):
    """A text task there was refused only in the first teacher stage, with advice of a key the recipe has not
    (`objective.tasks.<task>`); these recipes train teachers and students on labels, so it is refused at load."""
    from tests.test_recipes import tiny_recipe

    recipe = tiny_recipe(shipped, tiny_run, tmp_path)
    (Path(recipe["data"]["data_root"]) / "corp.txt").write_text("a first line\nand a second one\n")
    recipe["data"]["task_specs"].append({"name": "corp", "type": "text",
                                         "files": {"train": {"path": "corp.txt", "format": "txt"}}})
    recipe["data"]["tasks"] = ["toy_sent", "corp"]
    with pytest.raises(ConfigError) as refused:
        load_recipe(write(recipe, tmp_path))
    said = str(refused.value)
    assert "key 'data.tasks'" in said and "task 'corp' is a text task" in said, said
    assert "MITKD's corpus" in said and "multidistill distill" in said and "objective.tasks" not in said, said
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2 and "key 'data.tasks'" in output, output
    assert not Path(recipe["output_dir"]).exists()
    recipe["data"]["tasks"] = ["toy_sent", "toy_pair"]  # the labelled tasks alone load as before
    assert load_recipe(write(recipe, tmp_path)).data.task_names == ["toy_sent", "toy_pair"]
