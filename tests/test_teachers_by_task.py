"""Teachers of different tasks (one classifier fine-tuned per task, brought in with `import-classifier`) teach one
multi-task student: each task is labelled by the teachers with its head, in the signal store, online, and in a
recipe's given teachers; a task no teacher has a head for, or a head with other labels, is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from multidistill.config import DataConfig
from multidistill.data.tasks import Task
from multidistill.errors import ConfigError, ModelError
from multidistill.models import load_model
from multidistill.models.stock_import import import_classifier
from tests.conftest import write_tiny_tasks
from tests.test_cli import run_cli
from tests.test_recipes import stage_names, tiny_recipe, write
from tests.test_stock_import import make_classifier


@pytest.fixture
def by_task(tmp_path, tiny_model_dir):
    """Tiny toy data, and two stock classifiers brought in: one for toy_sent, one for toy_pair."""
    root = tmp_path / "data"
    specs = {spec["name"]: Task.model_validate(spec) for spec in write_tiny_tasks(root)}
    data = DataConfig.model_validate({"tasks": ["toy_sent", "toy_pair"], "task_specs": list(specs.values()),
                                      "data_root": str(root), "cache_dir": str(tmp_path / "cache")})
    teachers = []
    for seed, name in enumerate(("toy_sent", "toy_pair")):
        source = make_classifier(tiny_model_dir, tmp_path / f"hf-{name}", "bert", specs[name], seed=seed)
        teachers.append(import_classifier(str(source), tmp_path / f"teacher-{name}", task=specs[name],
                                          max_length=32, progress=False))
    return data, teachers, specs


def _probabilities(teacher: Path, data: DataConfig, task: str) -> np.ndarray:
    from multidistill.data.prepare import open_example_store
    from multidistill.evaluation.evaluate import predict
    from multidistill.models.backbone import load_tokenizer

    model = load_model(teacher)
    store = open_example_store(data, max_examples_per_task=None, seed=0)
    view = store.tokenized(task, "train", load_tokenizer(str(teacher)), 32)
    logits = torch.from_numpy(np.asarray(predict(model, model.tasks[task], view, batch_size=16, pad_token_id=0,
                                              device=torch.device("cpu"))))
    return torch.softmax(logits.reshape(len(view), -1), -1).numpy()


def test_each_task_is_labelled_by_the_teachers_with_its_head(by_task, tmp_path):
    from multidistill.teachers.generate import build_signal_store

    data, teachers, _ = by_task
    store = build_signal_store(teachers, data, tmp_path / "signals", splits="train,dev", progress=False)
    manifest = json.loads((tmp_path / "signals" / "manifest.json").read_text())
    assert manifest["task_teachers"] == {"toy_sent": [0], "toy_pair": [1]}
    for which, task in enumerate(("toy_sent", "toy_pair")):
        rows = store.signals(task, "train")
        assert np.asarray(rows["teacher_logits"]).shape[1:] == (1, 2)
        assert np.abs(np.asarray(rows["teacher_mean"]) - _probabilities(teachers[which], data, task)).max() < 1e-5
    # teachers of every task (an ensemble) keep the manifest they always had
    both = DataConfig.model_validate({**data.model_dump(), "tasks": ["toy_sent"]})
    build_signal_store(teachers[:1], both, tmp_path / "one", progress=False)
    assert "task_teachers" not in json.loads((tmp_path / "one" / "manifest.json").read_text())


def test_what_teachers_by_task_cannot_give_is_refused_and_nothing_is_written(by_task, tmp_path, tiny_model_dir):
    from multidistill.teachers.generate import build_signal_store

    data, teachers, specs = by_task
    three = DataConfig.model_validate({**data.model_dump(), "tasks": ["toy_sent", "toy_pair", "toy_reg"]})
    with pytest.raises(ModelError, match=r"no head for task\(s\) \['toy_reg'\] in any teacher"):
        build_signal_store(teachers, three, tmp_path / "a", progress=False)
    with pytest.raises(ModelError, match="hidden states are stored for every teacher on every task"):
        build_signal_store(teachers, data, tmp_path / "b", hidden_layers="0,1", progress=False)
    # a head whose labels are in another order than the data's
    flipped = Task.model_validate({**specs["toy_sent"].model_dump(), "labels": ["1", "0"]})
    source = make_classifier(tiny_model_dir, tmp_path / "hf-flipped", "bert", flipped)
    other = import_classifier(str(source), tmp_path / "teacher-flipped", task=flipped, progress=False)
    with pytest.raises(ModelError, match="would be read as other classes"):
        build_signal_store([other, teachers[1]], data, tmp_path / "c", progress=False)
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))


def test_online_teachers_of_different_tasks_give_their_own_logits(by_task):
    from multidistill.data.collate import encode_texts
    from multidistill.errors import ConfigError as Refused
    from multidistill.models.backbone import load_tokenizer
    from multidistill.teachers.online import OnlineSignals

    data, teachers, _ = by_task
    tokenizer = load_tokenizer(str(teachers[0]))
    online = OnlineSignals(teachers, tokenizer, ["toy_sent", "toy_pair"])
    encoded = encode_texts(tokenizer, ["good movie", "bad film"], ["good", "bad"], 32)
    for which, task in enumerate(("toy_sent", "toy_pair")):
        out = online({"task": task, **encoded})
        own = load_model(teachers[which])(task, encoded["input_ids"], encoded["attention_mask"],
                                          encoded["token_type_ids"]).logits
        assert out["teacher_logits"].shape == (2, 1, 2)
        assert torch.allclose(out["teacher_logits"][:, 0], own, atol=1e-5)
    with pytest.raises(Refused, match=r"no head for task\(s\) \['toy_reg'\] in any teacher"):
        OnlineSignals(teachers, tokenizer, ["toy_sent", "toy_reg"])
    OnlineSignals(teachers, tokenizer, ["toy_sent", "toy_reg"], logits=False)  # features need no head


def test_an_mtdnn_kd_recipe_distils_teachers_of_different_tasks(by_task, tiny_run, tmp_path, monkeypatch, capsys):
    data, teachers, _ = by_task
    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["data"] = {**data.model_dump(mode="json"), "tasks": ["toy_sent", "toy_pair"]}
    recipe["teacher"] = {"model_dirs": [str(t) for t in teachers]}
    recipe["student"]["model"] = {"name_or_path": str(teachers[0]), "max_seq_length": 32}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    assert stage_names(root) == ["signals", "student"]
    summary = json.loads((root / "summary.json").read_text())
    assert list(summary["rows"]) == ["2 teachers by task", "student"]
    assert set(summary["rows"]["student"]["metrics"]["main"]) == {"toy_sent", "toy_pair"}
    assert summary["reference"] == "2 teachers by task" and summary["rows"]["2 teachers by task"]["by_task"] is True
    from multidistill.report.inputs import load_summary

    intro = " ".join(load_summary(root)["intro"])
    assert "each task is scored from the teachers with a head for it" in intro and "ensemble (" not in intro
    # a task none of them has is refused by key before any stage
    recipe["data"]["tasks"] = ["toy_sent", "toy_pair", "toy_reg"]
    recipe["output_dir"] = str(tmp_path / "other")
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path, "other.yaml")))
    assert code == 2 and "key 'teacher.model_dirs': no head for task(s) ['toy_reg'] in any teacher" in output
    assert stage_names(tmp_path / "other") == []


def test_a_recipe_that_runs_its_teachers_on_every_task_still_asks_each_for_every_task(by_task):
    from multidistill.models.multitask import read_model_tasks
    from multidistill.recipes.common import check_teacher_heads
    from multidistill.teachers.coverage import task_teachers

    data, teachers, specs = by_task
    tasks = {name: specs[name] for name in ("toy_sent", "toy_pair")}
    heads = [{t.name: t for t in read_model_tasks(folder)} for folder in teachers]
    assert task_teachers(["a", "b"], heads, tasks) == {"toy_sent": [0], "toy_pair": [1]}
    with pytest.raises(ConfigError, match=r"key 'k': a has no head for task\(s\) \['toy_pair'\]; this recipe runs"):
        task_teachers(["a", "b"], heads, tasks, key="k", every_task=True)
    with pytest.raises(ConfigError, match=r"key 'teacher.model_dirs.0': .*teacher-toy_sent has no head for task\(s\) "
                                          r"\['toy_pair'\]"):
        check_teacher_heads(teachers[0], list(tasks.values()), "teacher.model_dirs.0")


def test_online_teachers_get_the_stores_head_checks(by_task, tmp_path, tiny_model_dir):
    from multidistill.models.backbone import load_tokenizer
    from multidistill.teachers.online import OnlineSignals

    data, teachers, specs = by_task
    tokenizer = load_tokenizer(str(teachers[0]))
    flipped = Task.model_validate({**specs["toy_sent"].model_dump(), "labels": ["1", "0"]})
    other = import_classifier(str(make_classifier(tiny_model_dir, tmp_path / "hf-f", "bert", flipped)),
                              tmp_path / "teacher-f", task=flipped, progress=False)
    with pytest.raises(ConfigError, match=r"key 'online_teachers': .*teacher-f's head for task 'toy_sent' has labels"):
        OnlineSignals([other, teachers[1]], tokenizer, {name: specs[name] for name in ("toy_sent", "toy_pair")})
    as_regression = {"toy_sent": Task.model_validate({**specs["toy_reg"].model_dump(), "name": "toy_sent"}),
                     "toy_pair": specs["toy_pair"]}
    with pytest.raises(ConfigError, match="is a classification head, and the data's task is regression"):
        OnlineSignals(teachers, tokenizer, as_regression)
    with pytest.raises(ConfigError, match="has a head for none of the tasks"):
        OnlineSignals(teachers, tokenizer, {"toy_sent": specs["toy_sent"]})


def test_a_wrong_teacher_folder_and_a_first_teacher_without_every_head_are_refused_before_any_stage(
        by_task, tiny_run, tmp_path, monkeypatch, capsys):
    from multidistill.teachers.generate import build_signal_store

    data, teachers, _ = by_task
    one = DataConfig.model_validate({**data.model_dump(), "tasks": ["toy_sent"]})
    with pytest.raises(ModelError, match=r"teacher-toy_pair has a head for none of the tasks \['toy_sent'\]"):
        build_signal_store(teachers, one, tmp_path / "s", progress=False)
    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["data"] = {**data.model_dump(mode="json"), "tasks": ["toy_sent", "toy_pair"]}
    recipe["teacher"] = {"model_dirs": [str(t) for t in teachers]}
    recipe["student"]["model"] = {"name_or_path": str(teachers[0]), "max_seq_length": 32, "pooling": "cls",
                                  "student_layers": [0], "heads_from": "@teacher"}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2 and "key 'student.model.heads_from': @teacher is the first teacher" in output
    assert "no head for task(s) ['toy_pair']" in output
    assert stage_names(Path(recipe["output_dir"])) == []


def test_tasks_from_teachers_of_different_data_roots_need_a_data_root(by_task, tmp_path):
    import shutil

    from multidistill.teachers.generate import build_signal_store

    data, teachers, _ = by_task
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "data", moved)
    config = json.loads((teachers[1] / "multidistill_model.json").read_text())
    (teachers[1] / "multidistill_model.json").write_text(json.dumps({**config, "data_root": str(moved)}))
    for model in teachers:  # teachers that recorded their roots: by name, as soft-targets gives them
        config = json.loads((model / "multidistill_model.json").read_text())
        config.setdefault("data_root", str(tmp_path / "data"))
        (model / "multidistill_model.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="different data roots .*give --data-root"):
        build_signal_store(teachers, "toy_sent,toy_pair", tmp_path / "s", cache_dir=str(tmp_path / "cache"),
                           progress=False)
    store = build_signal_store(teachers, None, tmp_path / "s", data_root=str(moved),
                               cache_dir=str(tmp_path / "cache"), progress=False)
    assert store.manifest["task_teachers"] == {"toy_sent": [0], "toy_pair": [1]}  # every teacher's tasks
