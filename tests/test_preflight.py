"""Model settings checked against the encoders' config.json before a recipe's first stage
(`recipes.preflight.check_models`): what it refuses, by key, and what it must leave to the stages."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from multidistill.config import ModelConfig
from multidistill.errors import ConfigError
from multidistill.recipes.config import TeacherSection
from multidistill.recipes.preflight import check_models, model_sections


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
