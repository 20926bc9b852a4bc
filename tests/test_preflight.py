"""Model settings checked against the encoders' config.json before a recipe's first stage
(`recipes.preflight.check_models`): what it refuses, by key, and what it must leave to the stages."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from multidistill.config import ModelConfig, TeacherRunConfig
from multidistill.data.augment import AugmentConfig
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError
from multidistill.models.multitask import MultiTaskModel
from multidistill.recipes.config import TeacherSection
from multidistill.recipes.preflight import check_mask_tokens, check_model_paths, check_models, model_sections
from tests.test_features import tiny_encoder


class Student(BaseModel):
    model: ModelConfig


class Settings(BaseModel):
    teacher: TeacherSection
    student: Student


def settings(teacher: dict, student: dict) -> Settings:
    """The tiny BERT has 64 positions: both models default to 32 tokens here (the config's default is 128)."""
    if "model" in teacher:
        teacher = {**teacher, "model": {"max_seq_length": 32, **teacher["model"]}}
    return Settings(teacher=TeacherSection(**teacher),
                    student=Student(model=ModelConfig(**{"max_seq_length": 32, **student})))


def test_model_sections_are_found_with_their_dotted_keys(tiny_model_dir):
    found = dict(model_sections(settings({"model": {"name_or_path": str(tiny_model_dir)}},
                                         {"name_or_path": "@teacher"})))
    assert list(found) == ["teacher.model", "student.model"]


@pytest.mark.parametrize(("teacher", "student", "expect"), [
    ({}, {"name_or_path": "@teacher", "student_layers": [0, 2]}, "key 'student.model.student_layers'"),
    ({}, {"name_or_path": "{tiny}", "student_layers": [2]}, "must be increasing indices in 0..1"),
    ({}, {"name_or_path": "{tiny}", "max_seq_length": 65}, "key 'student.model.max_seq_length': 65 exceeds"),
    ({"student_layers": [1]}, {"name_or_path": "@teacher", "student_layers": [0, 1]},
     "the teacher keeps 1 layers of"),  # a student of a cut teacher indexes the teacher's kept layers
])
def test_settings_beyond_the_encoder_are_refused_by_key(teacher, student, expect, tiny_model_dir):
    student = {key: str(tiny_model_dir) if value == "{tiny}" else value for key, value in student.items()}
    with pytest.raises(ConfigError, match=expect.replace("(", r"\(").replace("[", r"\[")):
        check_models(settings({"model": {"name_or_path": str(tiny_model_dir), **teacher}}, student))


@pytest.mark.parametrize(("teacher", "student"), [
    # the teacher's encoder is built from settings: 4 layers, whatever the pretrained config says
    ({"backbone_config": {"num_hidden_layers": 4}}, {"name_or_path": "@teacher", "student_layers": [0, 3]}),
    ({}, {"name_or_path": "@teacher", "student_layers": [0, 1], "max_seq_length": 64}),
    ({}, {"name_or_path": "@teacher", "architecture": "bilstm", "max_seq_length": 500}),  # no positions
    ({}, {"name_or_path": "some-org/some-model", "student_layers": [0, 9]}),  # a hub id, unreadable offline
])
def test_what_cannot_be_read_from_a_config_file_is_left_to_the_stage(teacher, student, tiny_model_dir):
    check_models(settings({"model": {"name_or_path": str(tiny_model_dir), **teacher}}, student))


def test_a_student_of_given_teachers_reads_the_first_ones_config(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="has 2 layers"):
        check_models(settings({"model_dirs": [str(tiny_model_dir)]},
                              {"name_or_path": "@teacher", "student_layers": [5]}))


def test_a_student_cut_from_an_encoder_that_cannot_be_cut_is_refused_before_the_teacher_trains(tmp_path):
    """ALBERT shares one layer across its stack: a student of an ALBERT `@teacher` with student_layers was refused
    only at its own stage, after the teacher's training."""
    import transformers

    folder = tmp_path / "albert"
    transformers.AlbertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, embedding_size=16).save_pretrained(folder)
    with pytest.raises(ConfigError, match=r"key 'student.model.student_layers': a 'albert' encoder cannot be cut: "
                                          r"ALBERT shares one layer's weights"):
        check_models(settings({"model": {"name_or_path": str(folder)}},
                              {"name_or_path": "@teacher", "student_layers": [1]}))


def test_saved_model_folders_are_refused_by_key_and_references_and_hub_names_pass(tiny_model_dir, tmp_path):
    """init_from and heads_from hold a saved multidistill model, never a hub name: one that is not there, or an encoder
    folder, was refused where the stage loaded it, without the key. `@teacher` (a recipe resolves it) and an online
    teacher's hub name are left to the stage."""
    with pytest.raises(ConfigError, match=r"key 'student.model.init_from': model directory .*missing does not exist"):
        check_model_paths(settings({"model": {"name_or_path": str(tiny_model_dir)}},
                                   {"name_or_path": "@teacher", "init_from": str(tmp_path / "missing")}))
    with pytest.raises(ConfigError, match=r"key 'student.model.heads_from': .* is missing multidistill_model.json"):
        check_model_paths(settings({"model": {"name_or_path": str(tiny_model_dir)}},
                                   {"name_or_path": str(tiny_model_dir), "heads_from": str(tiny_model_dir)}))
    check_model_paths(settings({"model": {"name_or_path": str(tiny_model_dir)}},
                               {"name_or_path": "@teacher", "heads_from": "@teacher"}))
    run = TeacherRunConfig(output_dir=str(tmp_path / "run"), model={"name_or_path": str(tiny_model_dir)},
                           data={"tasks": ["sst2"]}, online_teachers=["some-org/some-model", str(tmp_path / "gone")])
    with pytest.raises(ConfigError, match=r"key 'online_teachers.1': model .*gone.*: no such folder"):
        check_model_paths(run)


# --- masking augmentation: every reader of the transfer set reads its mask token -----------------------------------


@pytest.fixture(scope="module")
def roberta_tokenizer_dir(tmp_path_factory):
    """A tiny RoBERTa: a byte-level BPE tokenizer whose mask token is '<mask>', to which BERT's '[MASK]' is ordinary
    text (characters), and a 1-layer encoder."""
    import string

    import torch
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_roberta_tokenizer")
    chars = list(string.ascii_letters + string.digits + ".,!?'\"-[]<>")
    tokens = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", *chars, "Ġ", *(f"Ġ{c}" for c in string.ascii_lowercase)]
    RobertaTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, merges=[]).save_pretrained(folder)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=66, pad_token_id=1)
    RobertaModel(config).save_pretrained(folder)
    return folder


class Augmented(BaseModel):
    teacher: TeacherSection
    augment: AugmentConfig
    student: Student


def augmented(teachers: list, student: dict, p_mask: float = 0.5) -> Augmented:
    return Augmented(teacher=TeacherSection(model_dirs=[str(t) for t in teachers]),
                     augment=AugmentConfig(p_mask=p_mask, pos_tagger="none"),
                     student=Student(model=ModelConfig(**{"max_seq_length": 32, **student})))


def test_teachers_whose_mask_tokens_differ_are_refused_by_p_mask(tiny_model_dir, roberta_tokenizer_dir):
    """The variants hold the first teacher's '[MASK]', which a RoBERTa teacher labelled as the characters '[', 'M',
    'A', 'S', 'K', ']' (94 of 142 rows, silently): refused by the p_mask key, naming that teacher."""
    with pytest.raises(ConfigError, match=r"(?s)key 'augment.p_mask': .*'\[MASK\]' of .*tiny_bert.*"
                                          r"\(teacher.model_dirs.0\).*tiny_roberta_tokenizer.*\(teacher.model_dirs.1\) "
                                          r"reads it as ordinary text \[.*'M', 'A', 'S', 'K'.*its mask token is "
                                          r"'<mask>'.*set augment.p_mask: 0"):
        check_mask_tokens(augmented([tiny_model_dir, roberta_tokenizer_dir], {"name_or_path": "@teacher"}))
    with pytest.raises(ConfigError, match=r"'<mask>' of .*tiny_roberta_tokenizer.* reads it as ordinary text"):
        check_mask_tokens(augmented([roberta_tokenizer_dir, tiny_model_dir], {"name_or_path": "@teacher"}))
    # no masking: nothing is written that a teacher could misread
    check_mask_tokens(augmented([tiny_model_dir, roberta_tokenizer_dir], {"name_or_path": "@teacher"}, p_mask=0))


@pytest.mark.parametrize("student", [
    {"architecture": "bilstm", "name_or_path": "{roberta}"},  # a BiLSTM reads with name_or_path's tokenizer
    {"name_or_path": "{tiny}", "tokenizer": "{roberta}"},
])
def test_a_student_whose_mask_token_differs_from_the_teachers_is_refused(student, tiny_model_dir,
                                                                        roberta_tokenizer_dir):
    """The student learns from the same text: '[MASK]' would be characters to it, not its mask token."""
    paths = {"{roberta}": str(roberta_tokenizer_dir), "{tiny}": str(tiny_model_dir)}
    student = {key: paths.get(value, value) for key, value in student.items()}
    key = "tokenizer" if "tokenizer" in student else "name_or_path"
    with pytest.raises(ConfigError, match=rf"key 'augment.p_mask': .*'\[MASK\]' of .*\(teacher.model_dirs.0\).*"
                                          rf"\(student.model.{key}\) reads it as ordinary text"):
        check_mask_tokens(augmented([tiny_model_dir], student))
    check_mask_tokens(augmented([tiny_model_dir], student, p_mask=0))


def test_teachers_and_students_sharing_a_mask_token_pass(tiny_model_dir, tmp_path):
    """Two BERT tokenizers that number their words otherwise both read '[MASK]' as their own mask token (one token):
    masking is fine for them, whether teachers or a student."""
    from tests.test_recipe_checks import other_vocab_encoder

    other = other_vocab_encoder(tiny_model_dir, tmp_path / "other-vocab")
    check_mask_tokens(augmented([tiny_model_dir, other], {"name_or_path": "@teacher"}))
    check_mask_tokens(augmented([tiny_model_dir], {"architecture": "bilstm", "name_or_path": str(other)}))
    check_mask_tokens(augmented([other], {"name_or_path": str(tiny_model_dir), "student_layers": [1]}))


def test_a_meta_kd_student_is_checked_against_the_meta_teachers_mask_token(tiny_model_dir, roberta_tokenizer_dir):
    """Meta-KD's student.augment writes the (meta-)teacher's mask token, and its student learns from the variants."""
    from multidistill.recipes.metakd.config import MetaStudentSection

    class Meta(BaseModel):
        teacher: TeacherSection
        student: MetaStudentSection

    def meta(p_mask: float) -> Meta:
        student = ModelConfig(architecture="bilstm", name_or_path=str(roberta_tokenizer_dir), max_seq_length=32)
        return Meta(teacher=TeacherSection(model=ModelConfig(name_or_path=str(tiny_model_dir), max_seq_length=32)),
                    student=MetaStudentSection(model=student, augment=AugmentConfig(p_mask=p_mask)))

    with pytest.raises(ConfigError, match=r"key 'student.augment.p_mask': .*\(teacher.model.name_or_path\).*"
                                          r"\(student.model.name_or_path\) reads it as ordinary text"):
        check_mask_tokens(meta(0.1))
    check_mask_tokens(meta(0.0))


def test_an_mkd_run_over_teachers_with_other_mask_tokens_exits_2_before_any_stage(
        tiny_run, tiny_model_dir, roberta_tokenizer_dir, tmp_path, monkeypatch, capsys):
    """`multidistill run` of MKD with a BERT and a RoBERTa teacher and p_mask 0.5 completed, its transfer set full of
    '[MASK]' that the RoBERTa teacher read as characters; it is refused before the first stage."""
    from tests.test_cli import run_cli
    from tests.test_recipe_checks import save_teacher
    from tests.test_recipes import tiny_recipe, write

    recipe = tiny_recipe("mkd_bilstm.yaml", tiny_run, tmp_path)
    specs = recipe["data"]["task_specs"]
    recipe["teacher"] = {"model_dirs": [str(save_teacher(tmp_path / "bert", tiny_model_dir, specs)),
                                        str(save_teacher(tmp_path / "roberta", roberta_tokenizer_dir, specs))]}
    recipe["augment"].update(p_mask=0.5, pos_tagger="none")
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2, output
    output = " ".join(output.split())  # the console wraps long lines
    for fragment in ("key 'augment.p_mask'", "'[MASK]'", "teacher.model_dirs.1", "augment.p_mask: 0"):
        assert fragment in output, (fragment, output)
    assert not Path(recipe["output_dir"]).exists()


def test_the_transfer_stage_refuses_teachers_with_other_mask_tokens(tiny_run, tiny_model_dir, roberta_tokenizer_dir,
                                                                   tmp_path):
    """The stage that writes the mask token checks every teacher that labels the variants again (by the recipe's
    augmentation key: Meta-KD's is student.augment), and writes nothing."""
    from types import SimpleNamespace

    from multidistill.config import DataConfig
    from multidistill.recipes.mkd import transfer_stage
    from multidistill.recipes.stages import StageRunner

    raw, _ = tiny_run
    data = DataConfig.model_validate({**raw["data"], "tasks": ["toy_sent"]})
    settings = SimpleNamespace(augment=AugmentConfig(n_iter=2, p_mask=0.5, pos_tagger="none"),
                               max_examples_per_task=None, subset_seed=0)
    runner = StageRunner(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"key 'student.augment.p_mask': .*\(teacher 1 of 2\).*"
                                          r"tiny_roberta_tokenizer.* \(teacher 2 of 2\) reads it as ordinary text"):
        transfer_stage(runner, settings, data, [tiny_model_dir, roberta_tokenizer_dir], {}, [],
                       key="student.augment")
    assert not (tmp_path / "run" / "transfer").exists()
    transfer_stage(runner, settings, data, [tiny_model_dir, tiny_model_dir], {}, [])  # one mask token: made
    assert (tmp_path / "run" / "transfer" / "toy_sent").is_dir()


def test_teacher_references_are_refused_where_nothing_resolves_them(tiny_model_dir, tmp_path):
    """`@teacher` in init_from was let through and never resolved (a dry run passed; the run failed at the student,
    after the teachers, without the key); a single run's config resolves no reference at all. name_or_path beside
    init_from is checked when the tokenizer comes from it."""
    teacher = {"model": {"name_or_path": str(tiny_model_dir)}}
    with pytest.raises(ConfigError, match=r"key 'student.model.init_from': `@teacher` is not resolved there"):
        check_model_paths(settings(teacher, {"name_or_path": "@teacher", "init_from": "@teacher"}))
    run = TeacherRunConfig(output_dir=str(tmp_path / "run"), data={"tasks": ["sst2"]},
                           model={"name_or_path": str(tiny_model_dir), "heads_from": "@teacher"})
    check_model_paths(run)  # as a recipe's own settings: the recipe resolves it
    with pytest.raises(ConfigError, match=r"key 'model.heads_from': `@teacher` names a recipe's teacher"):
        check_model_paths(run, references=False)
    saved = tmp_path / "saved"  # init_from's saved model; the tokenizer still comes from name_or_path
    MultiTaskModel(tiny_encoder("bert"), [Task(name="sent", labels=["0", "1"])]).save_pretrained(saved)
    with pytest.raises(ConfigError, match=r"key 'student.model.name_or_path': model .*gone.*: no such folder"):
        check_model_paths(settings(teacher, {"name_or_path": str(tmp_path / "gone"), "init_from": str(saved)}))
    check_model_paths(settings(teacher, {"name_or_path": str(tmp_path / "gone"), "init_from": str(saved),
                                         "tokenizer": str(tiny_model_dir)}))
