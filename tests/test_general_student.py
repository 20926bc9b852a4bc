"""General students (issue 12 part 5): a student from a config (the teacher's family by default) or cut from a
teacher's layers, distilled on unlabelled text alone, exported as a plain HF encoder folder that AutoModel
loads and that fine-tunes through the ordinary per-task run; a cut run resumes exactly, projection included."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from multidistill.config import ModelConfig, TeacherRunConfig
from multidistill.errors import ConfigError
from multidistill.models.build import build_model, student_config
from multidistill.models.general import ENCODER_DIR, ENCODER_META_FILE
from multidistill.training.checkpoint import list_checkpoints
from multidistill.training.loop import BEST_MODEL
from multidistill.training.run import train_model

# No model_type: the family, vocabulary and positions come from the teacher (name_or_path).
SMALL = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
         "initializer_range": 0.5}
CORPUS = {"name": "corpus", "type": "text", "from_tasks": ["toy_sent", "toy_pair"]}
TERMS = [{"loss": "relation_kl", "params": {"relation_heads": 2}}, {"loss": "hidden_mse"}]


class Crash(Exception):
    """Stands in for a kill."""


def general_config(raw: dict, tmp_path, name: str = "general", **train) -> TeacherRunConfig:
    """Task-agnostic distillation of the tiny BERT (a plain encoder folder) into a 1-layer student."""
    return TeacherRunConfig.model_validate({
        **raw, "kind": "distill", "output_dir": str(tmp_path / name),
        "model": {**raw["model"], "backbone_config": SMALL},
        "data": {**raw["data"], "tasks": ["corpus"], "task_specs": [*raw["data"]["task_specs"], CORPUS]},
        "train": {**raw["train"], "select": "lowest_loss", "epochs": 1, **train},
        "objective": {"tasks": {"corpus": TERMS}},
        "online_teachers": [raw["model"]["name_or_path"]],
    })


def test_general_student_exports_a_plain_encoder_that_fine_tunes(tiny_run, tmp_path):
    raw, _ = tiny_run
    train_model(general_config(raw, tmp_path))
    encoder = tmp_path / "general" / ENCODER_DIR
    loaded = AutoModel.from_pretrained(encoder)  # a plain HF folder: safetensors + config.json
    assert loaded.config.model_type == "bert" and loaded.config.num_hidden_layers == 1
    assert loaded.config.hidden_size == 16 and loaded.config.vocab_size > 50  # the teacher's vocabulary
    kept = load_file(tmp_path / "general" / BEST_MODEL / "model.safetensors")
    for name, tensor in loaded.state_dict().items():
        if f"backbone.{name}" in kept:
            assert torch.equal(tensor, kept[f"backbone.{name}"]), name
    assert not any("projection" in k for k in load_file(encoder / "model.safetensors"))
    assert AutoTokenizer.from_pretrained(encoder)("a good film")["input_ids"]
    meta = json.loads((encoder / ENCODER_META_FILE).read_text())
    assert meta["kind"] == "general_student" and meta["corpus"] == ["corpus"]
    assert meta["teachers"] == [raw["model"]["name_or_path"]]

    # Fine-tunes like any pretrained encoder: model.name_or_path points at the folder.
    tuned = train_model(TeacherRunConfig.model_validate({
        **raw, "output_dir": str(tmp_path / "tuned"), "model": {"name_or_path": str(encoder), "max_seq_length": 32},
        "data": {**raw["data"], "tasks": ["toy_sent"]}, "train": {**raw["train"], "epochs": 1}}))
    assert "toy_sent" in tuned.best_metrics["main"]


def test_general_distillation_resumes_exactly_projection_included(tiny_run, tmp_path):
    raw, _ = tiny_run
    uncut = train_model(general_config(raw, tmp_path, "uncut", select="last"))

    def crash_at_step_5(state):
        if state.step == 5:
            raise Crash

    with pytest.raises(Crash):
        train_model(general_config(raw, tmp_path, "cut", select="last"), on_step=crash_at_step_5)
    assert not (tmp_path / "cut" / ENCODER_DIR).exists()
    resumed = train_model(general_config(raw, tmp_path, "cut", select="last"), resume=True)
    assert resumed.steps == uncut.steps
    expected = load_file(list_checkpoints(tmp_path / "uncut" / "checkpoints")[-1] / "trainables.safetensors")
    got = load_file(list_checkpoints(tmp_path / "cut" / "checkpoints")[-1] / "trainables.safetensors")
    assert expected.keys() == got.keys() and any("projection" in k for k in expected)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    for name, tensor in load_file(tmp_path / "uncut" / ENCODER_DIR / "model.safetensors").items():
        assert torch.equal(tensor, load_file(tmp_path / "cut" / ENCODER_DIR / "model.safetensors")[name]), name


def test_a_general_run_cannot_select_by_dev_metrics(tiny_run, tmp_path):
    raw, _ = tiny_run
    with pytest.raises(ConfigError, match="key 'train.select'.*lowest_loss"):
        train_model(general_config(raw, tmp_path, select="best_metric"))
    assert not (tmp_path / "general").exists()


def test_student_config_takes_the_teachers_family_unless_given(tiny_model_dir):
    config = student_config(ModelConfig(name_or_path=str(tiny_model_dir), backbone_config={"num_hidden_layers": 1}))
    teacher = AutoModel.from_pretrained(tiny_model_dir).config
    assert config.model_type == "bert" and config.num_hidden_layers == 1
    assert config.hidden_size == teacher.hidden_size and config.vocab_size == teacher.vocab_size
    other = student_config(ModelConfig(name_or_path=str(tiny_model_dir),
                                       backbone_config={"model_type": "roberta", "num_hidden_layers": 1}))
    assert other.model_type == "roberta"
    with pytest.raises(ConfigError, match=r"\['num_layerz'\] are not settings of a 'bert' config"):
        student_config(ModelConfig(name_or_path=str(tiny_model_dir), backbone_config={"num_layerz": 1}))
    # A family the installed transformers lacks (or a typo) is a ConfigError naming the key, not transformers'
    # ValueError listing some 500 families.
    with pytest.raises(ConfigError, match=r"model_type': 'bret' is not a model family .* did you mean 'bert'\?"):
        student_config(ModelConfig(name_or_path=str(tiny_model_dir), backbone_config={"model_type": "bret"}))
    with pytest.raises(ConfigError, match=r"'ModernBERT' is not a model family .* did you mean 'modernbert'\?"):
        student_config(ModelConfig(name_or_path=str(tiny_model_dir), backbone_config={"model_type": "ModernBERT"}))


def test_a_headless_student_cut_from_the_teachers_layers(tiny_model_dir):
    from multidistill.data.tasks import Task

    model = build_model(ModelConfig(name_or_path=str(tiny_model_dir), student_layers=[1]),
                        [Task(name="corpus", type="text", files={"train": {"path": "c.txt", "format": "txt"}})])
    assert len(model.heads) == 0 and model.backbone.config.num_hidden_layers == 1
    teacher = AutoModel.from_pretrained(tiny_model_dir)
    assert torch.equal(model.backbone.encoder.layer[0].attention.self.query.weight,
                       teacher.encoder.layer[1].attention.self.query.weight)


def test_a_general_run_reports_its_held_out_loss_not_an_empty_metrics_table(tiny_run, tmp_path, capsys):
    from multidistill.cli import print_result

    raw, _ = tiny_run
    result = train_model(general_config(raw, tmp_path))
    summary = json.loads((tmp_path / "general" / "train_summary.json").read_text())
    assert result.holdout_loss is not None and summary["holdout_loss"] == pytest.approx(result.holdout_loss)
    capsys.readouterr()
    print_result("student", result)
    output = capsys.readouterr().out
    assert f"kept the model of step {result.best_step}, lowest held-out loss {result.holdout_loss:.4f}" in output
    assert "nan" not in output and "best dev metrics" not in output


def test_a_general_runs_eval_lines_give_the_held_out_loss_not_an_average_of_nothing(tiny_run, tmp_path, capsys):
    raw, _ = tiny_run
    train_model(general_config(raw, tmp_path, eval_every_steps=2))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert lines and all("holdout loss" in line for line in lines), lines
    assert not any("eval average" in line or "nan" in line for line in lines), lines


def test_a_resume_refuses_an_online_teacher_retrained_in_place(tiny_run, tmp_path):
    import shutil

    from safetensors.torch import save_file

    raw, _ = tiny_run
    teacher = tmp_path / "teacher"
    shutil.copytree(raw["model"]["name_or_path"], teacher)
    config = general_config(raw, tmp_path, "cut", select="last").model_copy(update={"online_teachers": [str(teacher)]})

    def crash_at_step_4(state):
        if state.step == 4:
            raise Crash

    with pytest.raises(Crash):
        train_model(config, on_step=crash_at_step_4)
    weights = load_file(teacher / "model.safetensors")
    save_file({name: tensor + 0.01 for name, tensor in weights.items()}, teacher / "model.safetensors")
    with pytest.raises(ConfigError, match="weights of the teacher at key 'online_teachers.0' changed"):
        train_model(config, resume=True)


def test_closest_name_prefers_a_match_in_another_case():
    from multidistill.utils.suggest import closest_name

    assert closest_name("BERT", ["bert", "bart", "BERTa"]) == "bert"
    assert closest_name("robrta", ["bert", "roberta"]) == "roberta"
    assert closest_name("zzz", ["bert", "roberta"]) is None
