"""Recipes end to end on a tiny BERT and toy data: every shipped recipe runs through `multidistill run`,
a re-run skips finished stages, a cut stage resumes, and changed settings are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from multidistill.config import read_yaml
from multidistill.data.augment import AugmentConfig
from multidistill.recipes import load_recipe, run_recipe
from multidistill.recipes.stages import STAGE_MANIFEST, StageRunner
from tests.test_cli import run_cli

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = {"epochs": 1, "batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "checkpoint_every_steps": 3,
              "log_every_steps": 2, "seed": 7}
# For sections whose seed comes from a `seeds` list (teacher.train, MITKD's finetune.train, Meta-KD's stages):
# a train.seed there is refused, as it would be ignored.
TINY_SEEDED_TRAIN = {key: value for key, value in TINY_TRAIN.items() if key != "seed"}


def tiny_recipe(shipped: str, tiny_run, tmp_path: Path) -> dict:
    """A shipped recipe with the tiny model and toy data swapped in (everything else as shipped)."""
    raw, _ = tiny_run
    recipe = read_yaml(REPO / "configs" / shipped)
    recipe["output_dir"] = str(tmp_path / "recipe")
    recipe["data"] = raw["data"]
    recipe["max_examples_per_task"] = None
    tiny = {"name_or_path": raw["model"]["name_or_path"], "max_seq_length": 32}
    recipe["teacher"]["model"] = tiny
    recipe["teacher"]["train"] = TINY_SEEDED_TRAIN
    student = recipe["student"]["model"]
    if student.get("architecture") == "bilstm":
        student["bilstm"] = {"embedding_dim": 16, "hidden_size": 8, "mlp_hidden": 8}
        student["max_seq_length"] = 32
    elif student.get("student_layers"):
        student.update(max_seq_length=32, student_layers=[1])  # the tiny teacher has 2 layers
    else:
        recipe["student"]["model"] = tiny
    recipe["student"]["train"] = {**TINY_TRAIN, "lr": 1e-2 if student.get("architecture") == "bilstm" else 3e-3}
    if "augment" in recipe:
        recipe["augment"].update(n_iter=2, n_iter_pair=1)
    if recipe.get("finetune", {}).get("enabled"):
        recipe["finetune"]["train"] = {**TINY_TRAIN, "epochs": 0.5}
    return recipe


def write(recipe: dict, tmp_path: Path, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def stage_names(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob(f"*/{STAGE_MANIFEST}"))


def test_mtdnn_kd_recipe_runs_then_skips_every_stage(tiny_run, tmp_path, monkeypatch, capsys):
    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["teacher"]["seeds"] = [1, 2]
    path = write(recipe, tmp_path)
    code, output = run_cli(monkeypatch, capsys, "run", str(path))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    assert stage_names(root) == ["signals", "student", "teacher-seed-1", "teacher-seed-2"]
    summary = json.loads((root / "summary.json").read_text())
    assert list(summary["rows"]) == ["teacher teacher-seed-1", "teacher teacher-seed-2", "ensemble of 2", "student"]
    assert summary["rows"]["teacher teacher-seed-1"]["retention"] == pytest.approx(1.0)
    # The report reads which row is the ensemble and how many models it is; every task has its constant predictor.
    assert summary["rows"]["ensemble of 2"]["ensemble"] is True and summary["rows"]["ensemble of 2"]["models"] == 2
    assert set(summary["baseline"]["main"]) == set(summary["tasks"])
    # The ensemble row is scored from the stored mean probabilities on dev.
    store = json.loads((root / "signals" / "manifest.json").read_text())
    assert store["splits"] == ["train", "dev"] and len(store["teachers"]) == 2
    # Both teachers saw the same training examples (subset seed fixed), but differ in their weights.
    a, b = (root / f"teacher-seed-{s}" / "model" / "model.safetensors" for s in (1, 2))
    assert a.read_bytes() != b.read_bytes()

    student_weights = root / "student" / "model" / "model.safetensors"
    before = student_weights.stat().st_mtime_ns
    code, output = run_cli(monkeypatch, capsys, "run", str(path))
    assert code == 0, output
    assert output.count("done, reusing") == 4
    assert student_weights.stat().st_mtime_ns == before

    # Changed student settings: the finished student stage is refused, not overwritten, and recipe.yaml still
    # records the settings the folder's stages were made with.
    recorded = (root / "recipe.yaml").read_bytes()
    code, output = run_cli(monkeypatch, capsys, "run", str(path), "--set", "student.train.lr=0.5")
    assert code == 2 and "stage 'student'" in output and "other settings" in output
    assert student_weights.stat().st_mtime_ns == before
    assert (root / "recipe.yaml").read_bytes() == recorded


def test_feature_terms_bring_the_recipe_teachers_online():
    """A logit-only objective keeps the stage teacher-free (its fingerprint unchanged); a feature term for one of
    the stage's tasks (by task type or task name) runs the recipe's teachers on each batch, since a logit store
    lacks features; one for a task the stage does not train loads no teacher."""
    from multidistill.config import DataConfig, LossTerm, ObjectiveConfig
    from multidistill.recipes.common import feature_teachers

    both, sentiment = DataConfig(tasks=["sst2", "stsb"]), DataConfig(tasks=["sst2"])
    teachers = [Path("t1"), Path("t2")]
    logits = [LossTerm(loss="logit_mse"), LossTerm(loss="hard")]
    assert feature_teachers(None, both, teachers) is None
    assert feature_teachers(ObjectiveConfig(classification=logits, regression=logits), both, teachers) is None
    for objective in (ObjectiveConfig(classification=[*logits, LossTerm(loss="hidden_mse")]),
                      ObjectiveConfig(regression=[LossTerm(loss="attention_mse")]),
                      ObjectiveConfig(tasks={"stsb": [LossTerm(loss="relation_kl")]})):
        assert feature_teachers(objective, both, teachers) == ["t1", "t2"]
    for objective in (ObjectiveConfig(regression=[LossTerm(loss="attention_mse")]),
                      ObjectiveConfig(tasks={"stsb": [LossTerm(loss="relation_kl")]})):
        assert feature_teachers(objective, sentiment, teachers) is None  # sst2 is classification, not stsb


def test_a_recipe_student_with_feature_terms_distils_from_its_online_teacher(tiny_run, tmp_path, monkeypatch,
                                                                            capsys):
    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["teacher"]["seeds"] = [1]
    recipe["student"]["model"] = {**recipe["teacher"]["model"], "name_or_path": "@teacher", "student_layers": [1]}
    recipe["student"]["objective"] = {
        "classification": [{"loss": "soft_ce"}, {"loss": "hard"}, {"loss": "hidden_mse"}, {"loss": "attention_mse"}],
        "regression": [{"loss": "score_mse"}, {"loss": "hard"}]}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output  # without the teacher online, the feature terms are refused (exit 2)
    root = Path(recipe["output_dir"])
    stage = json.loads((root / "student" / STAGE_MANIFEST).read_text())
    assert stage["config"]["online_teachers"] == [str(root / "teacher-seed-1" / "model")]
    assert "hidden_mse=" in output and "attention_mse=" in output  # the progress bar shows each term


def test_mkd_bilstm_recipe_with_finetune_and_baseline(tiny_run, tmp_path, monkeypatch, capsys):
    recipe = tiny_recipe("mkd_bilstm.yaml", tiny_run, tmp_path)
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    tasks = ["toy_pair", "toy_reg", "toy_sent"]
    assert stage_names(root) == sorted(["teacher-seed-1", "transfer", "signals", "student",
                                        *(f"finetune-{t}" for t in tasks), *(f"baseline-{t}" for t in tasks)])
    transfer = json.loads((root / "transfer" / STAGE_MANIFEST).read_text())
    assert all(s["transfer"] > s["original"] for s in transfer["sizes"].values())
    # Every setting is recorded, the defaults included (the fingerprint leaves those out).
    assert transfer["augment_settings"] == AugmentConfig(**recipe["augment"]).model_dump(mode="json")
    summary = json.loads((root / "summary.json").read_text())
    assert list(summary["rows"]) == ["teacher teacher-seed-1", "student (joint)", "student + per-task fine-tune",
                                     "single-task baseline"]
    student = json.loads((root / "student" / "model" / "multidistill_model.json").read_text())
    assert student["kind"] == "bilstm"
    assert summary["rows"]["student (joint)"]["params"] < summary["rows"]["teacher teacher-seed-1"]["params"]
    # Rows name the stage folders they come from; the per-task rows count every per-task model's parameters.
    assert summary["rows"]["student (joint)"]["stages"] == ["student"]
    finetuned_row = summary["rows"]["student + per-task fine-tune"]
    assert finetuned_row["models"] == len(summary["tasks"])
    assert sorted(finetuned_row["stages"]) == sorted(f"finetune-{task}" for task in summary["tasks"])
    # A fine-tuned copy keeps only its own task's head.
    finetuned = json.loads((root / "finetune-toy_pair" / "model" / "multidistill_model.json").read_text())
    assert [t["name"] for t in finetuned["tasks"]] == ["toy_pair"]
    # The saved student evaluates through the generic command.
    code, output = run_cli(monkeypatch, capsys, "evaluate", str(root / "student" / "model"),
                           "--data-root", recipe["data"]["data_root"], "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, output


def test_mkd_transformer_recipe_cuts_the_teacher(tiny_run, tmp_path, monkeypatch, capsys):
    import sys

    from multidistill.data import augment

    # No POS tagger: `pos_tagger: auto` falls back, and the run says so in its summary, not only in stage.json.
    monkeypatch.setitem(sys.modules, "nltk", None)
    augment._choose_tagger.cache_clear()
    monkeypatch.setattr(augment, "_choose_tagger", augment._choose_tagger.__wrapped__)
    recipe = tiny_recipe("mkd_transformer.yaml", tiny_run, tmp_path)
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    config = json.loads((root / "student" / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    summary = json.loads((root / "summary.json").read_text())
    assert list(summary["rows"]) == ["teacher teacher-seed-1", "student (joint)"]
    [note] = summary["notes"]
    assert "pos_tagger is 'auto' but nltk is not installed" in note and "multidistill[pos]" in note
    assert json.loads((root / "transfer" / STAGE_MANIFEST).read_text())["pos_tagger_note"] == note
    assert "multidistill[pos]" in " ".join(output.split())  # the closing table's note


def test_a_cut_stage_resumes_from_its_checkpoint(tiny_run, tmp_path, monkeypatch):
    import multidistill.recipes.common as common

    recipe = load_recipe(write(tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path), tmp_path))
    recipe.teacher.seeds = [1]
    real_train = common.train_model
    calls = []

    def cut_once(config, *, resume=False, **kwargs):
        calls.append((Path(config.output_dir).name, resume))
        if Path(config.output_dir).name == "student" and not resume:
            def stop(state):
                if state.step == 4:
                    raise KeyboardInterrupt
            return real_train(config, resume=resume, on_step=stop)
        return real_train(config, resume=resume, **kwargs)

    monkeypatch.setattr(common, "train_model", cut_once)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe)
    root = Path(recipe.output_dir)
    assert not (root / "student" / STAGE_MANIFEST).exists()
    assert (root / "student" / "checkpoints").is_dir()
    run_recipe(recipe)
    assert calls == [("teacher-seed-1", False), ("student", False), ("student", True)]
    assert (root / "student" / STAGE_MANIFEST).is_file()
    history = json.loads((root / "student" / "train_history.json").read_text())
    assert history[-1]["step"] > 4


def test_a_late_stage_a_new_teacher_would_change_is_refused_before_that_teacher_trains(tiny_run, tmp_path,
                                                                                       monkeypatch, capsys):
    """A second teacher seed on a finished folder changes the signal store's inputs: refused before the new
    teacher trains (not after), and the summary, which still describes the folder, stays."""
    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["teacher"]["seeds"] = [1]
    path = write(recipe, tmp_path)
    assert run_cli(monkeypatch, capsys, "run", str(path))[0] == 0
    root = Path(recipe["output_dir"])
    code, output = run_cli(monkeypatch, capsys, "run", str(path), "--set", "teacher.seeds=[1,2]")
    flat = " ".join(output.split())
    assert code == 2 and "stage 'signals'" in flat and "before stage 'teacher-seed-2'" in flat, output
    assert not (root / "teacher-seed-2").exists() and (root / "summary.json").is_file()

    # The teacher removed (a mistake, or to train it again): the signals and students made from it are refused
    # before it is trained again, so it can still be restored.
    shutil.rmtree(root / "teacher-seed-1")
    code, output = run_cli(monkeypatch, capsys, "run", str(path))
    flat = " ".join(output.split())
    assert code == 2 and "stage 'teacher-seed-1':" in flat and "but stage 'signals' was made from it" in flat, output
    assert "or restore" in flat and not (root / "teacher-seed-1").exists()


def test_a_stage_whose_data_was_edited_in_place_is_refused_naming_the_split(tiny_run, tmp_path, monkeypatch,
                                                                             capsys):
    """Same settings, one training label flipped in its file: the finished teacher is refused (not reused with
    the old summary), naming the task split."""
    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["teacher"]["seeds"] = [1]
    path = write(recipe, tmp_path)
    assert run_cli(monkeypatch, capsys, "run", str(path))[0] == 0
    train = Path(tiny_run[0]["data"]["data_root"]) / "toy_sent" / "train.tsv"
    lines = train.read_text().splitlines()
    text, label = lines[1].rsplit("\t", 1)
    lines[1] = f"{text}\t{1 - int(label)}"
    train.write_text("\n".join(lines) + "\n")
    code, output = run_cli(monkeypatch, capsys, "run", str(path))
    flat = " ".join(output.split())
    assert code == 2 and "stage 'teacher-seed-1'" in flat and "toy_sent/train changed since" in flat, output


def test_a_recipe_checked_again_keeps_the_keys_it_was_given():
    """run_recipe checks the recipe again (`revalidated`), as the API does a recipe object (`load_recipe`); the
    keys given stay the given ones at every level, so "not used" notes (which read them) name only keys the user
    set, and a default changed in place is kept."""
    from pydantic import BaseModel

    from multidistill.config import revalidated

    def given(model: BaseModel, key: str = "") -> dict[str, set[str]]:
        out = {key: set(model.model_fields_set)}
        for name in type(model).model_fields:
            if isinstance(getattr(model, name), BaseModel):
                out.update(given(getattr(model, name), f"{key}{name}."))
        return out

    recipe = load_recipe(REPO / "configs" / "mitkd.yaml")
    assert "signals" not in recipe.model_fields_set  # mitkd's "signals not used" note reads this
    assert given(revalidated(recipe)) == given(recipe) == given(load_recipe(recipe))
    recipe.signals.batch_size = 7  # a section left out, changed in place
    assert revalidated(recipe).signals.batch_size == 7


def test_stage_runner_refuses_a_foreign_folder(tmp_path):
    runner = StageRunner(tmp_path)
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "mine.txt").write_text("keep")
    from multidistill.errors import ConfigError

    with pytest.raises(ConfigError, match="no record in .* says this recipe started it"):
        runner.run("stage", {"a": 1}, {}, lambda folder, resume: None)
    assert (tmp_path / "stage" / "mine.txt").read_text() == "keep"
    done = runner.run("other", {"a": 1}, {"x": "fp"}, lambda folder, resume: {"made": True})
    assert json.loads((done / STAGE_MANIFEST).read_text())["made"] is True
    # Same config and inputs: skipped; another input fingerprint: refused.
    assert runner.run("other", {"a": 1}, {"x": "fp"}, lambda folder, resume: pytest.fail("re-ran")) == done
    with pytest.raises(ConfigError, match=r"other settings or inputs \(changed: inputs\.x: 'fp' -> 'changed'\)"):
        runner.run("other", {"a": 1}, {"x": "changed"}, lambda folder, resume: None)
    # A setting the finished stage did not have is named as unset there; a recorded default is not a change.
    with pytest.raises(ConfigError, match=r"\(changed: config\.b: unset -> None\)"):
        runner.run("other", {"a": 1, "b": None, "__defaults__": {"c": 2}}, {"x": "fp"},
                   lambda folder, resume: None)
    # A key the finished stage left at its default shows that default, not "unset".
    runner.run("third", {"a": 1, "__defaults__": {"pooling": "cls"}}, {}, lambda folder, resume: {})
    with pytest.raises(ConfigError, match=r"\(changed: config\.pooling: 'cls' \(default\) -> 'mean'\)"):
        runner.run("third", {"a": 1, "pooling": "mean"}, {}, lambda folder, resume: None)
    # Nested: a section records its defaults by dotted name (`settings_payload`).
    runner.run("fourth", {"model": {"__defaults__": {"bilstm.hidden_size": 8}}}, {}, lambda folder, resume: {})
    with pytest.raises(ConfigError, match=r"config\.model\.bilstm\.hidden_size: 8 \(default\) -> 16"):
        runner.run("fourth", {"model": {"bilstm": {"hidden_size": 16}}}, {}, lambda folder, resume: None)


def test_a_task_the_teacher_lacks_is_refused_before_any_student_work(tiny_run, tmp_path, monkeypatch, capsys):
    raw, write_cfg = tiny_run
    teacher = {**raw, "output_dir": str(tmp_path / "teacher"), "train": TINY_TRAIN,
               "data": {**raw["data"], "tasks": ["toy_sent"]}}
    assert run_cli(monkeypatch, capsys, "train-teacher", str(write_cfg(teacher, "t.yaml")))[0] == 0
    recipe = tiny_recipe("mkd_bilstm.yaml", tiny_run, tmp_path)
    recipe["teacher"] = {"model_dirs": [str(tmp_path / "teacher" / "model")]}
    recipe["augment"] = None
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2 and "no head for task" in output
    assert stage_names(Path(recipe["output_dir"])) == []


@pytest.mark.parametrize(("shipped", "sets", "expect"), [
    ("mkd_transformer.yaml", ["student.model.student_layers=[0,5]"],
     ("key 'student.model.student_layers'", "[0, 5]", "0..1", "has 2 layers")),
    ("mtdnn_kd.yaml", ["teacher.model.max_seq_length=100"],
     ("key 'teacher.model.max_seq_length'", "100 exceeds", "limit of 64 positions")),
])
def test_model_settings_beyond_the_encoder_are_refused_before_any_stage(shipped, sets, expect, tiny_run, tmp_path,
                                                                        monkeypatch, capsys):
    """Found from the encoder's config.json before the first stage, not when the student's stage builds it (after
    the teachers)."""
    recipe = tiny_recipe(shipped, tiny_run, tmp_path)
    args = [item for value in sets for item in ("--set", value)]
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), *args)
    assert code == 2, output
    for fragment in expect:
        assert fragment in output, (fragment, output)
    assert not Path(recipe["output_dir"]).exists()


def test_recipe_config_errors_name_the_key(tmp_path, monkeypatch, capsys):
    recipe = read_yaml(REPO / "configs" / "mtdnn_kd.yaml")
    code, output = run_cli(monkeypatch, capsys, "run", str(write({**recipe, "recipe": "nope"}, tmp_path)))
    assert code == 2 and "key 'recipe'" in output
    # a single run's config handed to `run`: the commands that take it, not only "expected one of [...], got None"
    teacher = read_yaml(REPO / "configs" / "teacher_sample.yaml")
    code, output = run_cli(monkeypatch, capsys, "run", str(write(teacher, tmp_path)))
    assert code == 2 and "key 'recipe' is missing: this looks like the config of a single training run" in output
    assert "multidistill train-teacher" in output and "'mtdnn_kd'" in output
    bad = {**recipe, "student": {**recipe["student"], "train": {"max_examples_per_task": 5}}}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(bad, tmp_path)))
    assert code == 2 and "max_examples_per_task at the top" in output
    for shipped in ("mkd_bilstm.yaml", "mitkd.yaml"):  # a fine-tune's own cap was replaced by the recipe's
        code, output = run_cli(monkeypatch, capsys, "run", str(REPO / "configs" / shipped),
                               "--set", "finetune.train.max_examples_per_task=5")
        assert code == 2 and "max_examples_per_task at the top of the recipe, not in finetune.train" in output
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), "--set", "teacher.seeds=[1,1]")
    assert code == 2 and "distinct" in output


def test_a_student_with_its_own_tokenizer_distils_from_the_store(tiny_run, tmp_path, monkeypatch, capsys):
    """Signals are keyed by example, not by token: a student with another vocabulary uses the same store."""
    from transformers import BertTokenizerFast

    from tests.conftest import _vocab

    raw, write_cfg = tiny_run
    teacher = {**raw, "train": TINY_TRAIN}
    assert run_cli(monkeypatch, capsys, "train-teacher", str(write_cfg(teacher, "t.yaml")))[0] == 0
    store = tmp_path / "store"
    code, output = run_cli(monkeypatch, capsys, "soft-targets", "--teacher", str(tmp_path / "run" / "model"),
                           "--tasks", "toy_sent,toy_pair", "--data-root", raw["data"]["data_root"],
                           "--out", str(store), "--cache-dir", str(tmp_path / "cache"), "--seed", "7")
    assert code == 0, output
    # Another WordPiece vocabulary: reversed word order, no sub-word pieces (so different token ids).
    vocab = [*_vocab()[:5], *reversed([t for t in _vocab()[5:] if not t.startswith("##")])]
    other = tmp_path / "other_tokenizer"
    BertTokenizerFast(vocab={t: i for i, t in enumerate(dict.fromkeys(vocab))}).save_pretrained(other)
    student = {**teacher, "kind": "distill", "output_dir": str(tmp_path / "student"), "signals": str(store),
               "data": {**raw["data"], "tasks": ["toy_sent", "toy_pair"]},
               "model": {"architecture": "bilstm", "name_or_path": str(other), "max_seq_length": 32,
                         "bilstm": {"embedding_dim": 16, "hidden_size": 8, "mlp_hidden": 8, "init_embeddings": False}},
               "objective": {"classification": [{"loss": "logit_mse"}, {"loss": "hard"}]}}
    code, output = run_cli(monkeypatch, capsys, "distill", str(write_cfg(student, "s.yaml")))
    assert code == 0, output
    saved = tmp_path / "student" / "model"
    assert json.loads((saved / "tokenizer.json").read_text())["model"]["vocab"] != json.loads(
        (tmp_path / "run" / "model" / "tokenizer.json").read_text())["model"]["vocab"]


def test_stage_settings_leave_out_defaults_so_new_settings_keep_stages_valid():
    from multidistill.config import TrainConfig
    from multidistill.recipes.stages import DEFAULTS_KEY, settings_payload, without_defaults

    # A run written before `group_by_length` existed fingerprints like one that leaves it at its default
    # (the defaults' values are recorded beside the settings, outside the fingerprint).
    assert without_defaults(settings_payload(TrainConfig(epochs=2))) == {"epochs": 2.0}
    assert without_defaults(settings_payload(TrainConfig(epochs=2, group_by_length=True))) == {
        "epochs": 2.0, "group_by_length": True}
    assert settings_payload(TrainConfig(epochs=2))[DEFAULTS_KEY]["group_by_length"] is False
    assert settings_payload(None) is None


def test_a_transfer_set_made_with_another_mask_token_is_not_reused(tiny_run, tiny_model_dir, tmp_path):
    """The variants' text holds the teacher tokenizer's mask token, so a teacher whose tokenizer masks with another
    token does not get the old set: the finished stage is refused (a changed stage), not silently reused."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from multidistill.config import DataConfig
    from multidistill.errors import MultidistillError
    from multidistill.recipes.mkd import transfer_stage

    raw, _ = tiny_run
    data = DataConfig.model_validate({**raw["data"], "tasks": ["toy_sent"]})
    settings = SimpleNamespace(augment=AugmentConfig(n_iter=2, pos_tagger="none"), max_examples_per_task=None,
                               subset_seed=0)
    other = tmp_path / "other-mask"
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.mask_token = "[MSK]"
    tokenizer.save_pretrained(str(other))
    runner = StageRunner(tmp_path / "run")
    transfer_stage(runner, settings, data, [tiny_model_dir], {}, [])
    transfer_stage(runner, settings, data, [tiny_model_dir], {}, [])  # the same teacher: reused
    with pytest.raises(MultidistillError, match="transfer"):
        transfer_stage(runner, settings, data, [other], {}, [])


@pytest.mark.parametrize(("config", "setting", "key"), [
    ("mtdnn_kd.yaml", "data.subset_seed=7", "data.subset_seed"),
    ("mtdnn_kd.yaml", "teacher.train.seed=7", "teacher.train.seed"),
    ("mitkd.yaml", "finetune.train.seed=7", "finetune.train.seed"),
    ("metakd_amazon.yaml", "student.prediction.seed=7", "student.prediction.seed"),
    ("metakd_amazon.yaml", "student.intermediate.seed=7", "student.intermediate.seed"),
    ("metakd_amazon.yaml", "student.baseline={epochs: 2, seed: 7}", "student.baseline.seed"),
    ("metakd_amazon.yaml", "student.baseline={epochs: 2, max_examples_per_task: 5}",
     "student.baseline.max_examples_per_task"),
    ("metakd_amazon.yaml", "data.subset_seed=7", "data.subset_seed"),
])
def test_a_setting_a_recipe_would_replace_is_refused_by_key(config, setting, key):
    """A value no stage would read (the top-level subset_seed and a `seeds` list replace it) is refused, never
    silently dropped."""
    from multidistill.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_recipe(REPO / "configs" / config, [setting])


@pytest.mark.parametrize("config", ["mtdnn_kd.yaml", "mkd_bilstm.yaml", "mitkd.yaml", "metakd_amazon.yaml"])
def test_a_recorded_recipe_loads_again(config, tmp_path):
    """recipe.yaml records every field, defaults included: it must load as a recipe again."""
    recipe = load_recipe(REPO / "configs" / config)
    recorded = tmp_path / "recipe.yaml"
    recorded.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    assert load_recipe(recorded) == recipe


@pytest.mark.parametrize(("setting", "key"), [
    ("teacher_train.max_examples_per_task=5", "teacher_train.max_examples_per_task"),
    ("bilstm.train.max_examples_per_task=5", "bilstm.train.max_examples_per_task"),
    ("data.subset_seed=3", "data.subset_seed"),
    ("subset_seed=-1", "subset_seed"),
])
def test_the_demo_refuses_what_its_stages_would_not_read(setting, key):
    from multidistill.errors import ConfigError
    from multidistill.recipes.demo import load_demo_config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_demo_config(overrides=[setting])


def test_a_moved_mkd_run_folder_keeps_its_stages_with_their_data_recorded(tiny_run, tmp_path):
    """Stages record the data fingerprint of what they read; the transfer set lies in the run folder and its spec
    names the folder's absolute path, so recording it made every later stage of a moved folder 'made from other
    data'. Splits inside the run folder are left out (the stage that made them is an input)."""
    import shutil

    recipe = tiny_recipe("mkd_bilstm.yaml", tiny_run, tmp_path)
    recipe["finetune"]["enabled"] = recipe["baseline"]["enabled"] = False
    run_recipe(load_recipe(write(recipe, tmp_path)))
    signals = json.loads((Path(recipe["output_dir"]) / "signals" / "stage.json").read_text())
    assert signals["data"]  # the user's files are recorded (the dev split), the transfer set is not
    assert all(not key.startswith("transfer") for key in signals["data"])
    moved = tmp_path / "moved"
    shutil.move(recipe["output_dir"], moved)
    recipe["output_dir"] = str(moved)
    run_recipe(load_recipe(write(recipe, tmp_path, "moved.yaml")))
    assert all(json.loads(p.read_text())["parts"] == 1 for p in moved.glob("*/stage.json"))  # nothing re-made


def test_a_transfer_set_reads_back_with_its_variants_unlabelled_when_minus_one_is_a_label(tmp_path):
    """Sentiment data labelled "-1"/"1": the variants' plain integer -1 was refused as ambiguous at the signals
    stage, after the teacher and transfer stages had run; the set is now saved with the task's class names."""
    import datasets

    from multidistill.data.convert import features_for
    from multidistill.data.readers import read_split
    from multidistill.data.tasks import Task
    from multidistill.recipes.mkd import save_transfer_set, transfer_task

    task = Task(name="senti", labels=["-1", "1"])
    rows = {"id": ["a", "b", "a~aug0"], "text_a": ["bad", "good", "bad !"], "text_b": [None] * 3,
            "label": [0, 1, -1], "domain": [""] * 3}
    save_transfer_set(datasets.Dataset.from_dict(rows, features=features_for(task)), task, tmp_path)
    read = read_split(transfer_task(task, tmp_path), "train", data_root=tmp_path)
    assert read["label"] == [0, 1, -1] and read["id"] == rows["id"]


def test_a_dry_run_lists_what_a_run_would_do_and_writes_nothing(tiny_run, tmp_path, monkeypatch, capsys):
    """`run --dry-run`: each stage a run would reuse, run, resume or make again, as far as it can be told before
    a stage runs; a stage a run would refuse is refused (exit 2); nothing is written in output_dir."""
    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["teacher"]["seeds"] = [1]
    path = write(recipe, tmp_path)
    root = Path(recipe["output_dir"])
    code, output = run_cli(monkeypatch, capsys, "run", str(path), "--dry-run")
    flat = " ".join(output.split())
    assert code == 0 and "teacher-seed-1 │ run" in flat and "student │ run" in flat, output
    assert "3 stages checked: 3 run" in flat and "every stage checked" in flat, output
    assert "nothing was run or written" in flat
    assert not root.exists()

    assert run_cli(monkeypatch, capsys, "run", str(path))[0] == 0
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))
    code, output = run_cli(monkeypatch, capsys, "run", str(path), "--dry-run")
    flat = " ".join(output.split())
    assert code == 0 and "every stage checked" in flat, output
    assert all(f"{stage} │ reuse" in flat for stage in ("teacher-seed-1", "signals", "student")), output

    code, output = run_cli(monkeypatch, capsys, "run", str(path), "--dry-run", "--set", "teacher.seeds=[1,2]")
    flat = " ".join(output.split())
    assert code == 2 and "stage 'signals'" in flat and "found by a dry run" in flat, output

    shutil.rmtree(root / "student")
    code, output = run_cli(monkeypatch, capsys, "run", str(path), "--dry-run", "--set", "student.train.lr=1e-4")
    flat = " ".join(output.split())
    assert code == 0 and "student │ run" in flat and "every stage checked" in flat, output
    (root / "student").mkdir()
    (root / "student" / "checkpoint").write_text("half")
    code, output = run_cli(monkeypatch, capsys, "run", str(path), "--dry-run")
    assert code == 2 and "no record" in " ".join(output.split()), output  # a folder no record vouches for
    shutil.rmtree(root / "student")
    assert sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*")) == [
        entry for entry in before if entry[0].parts[0] != "student"]


def test_a_dry_run_of_mkd_with_given_teachers_plans_every_stage(tiny_run, tmp_path, monkeypatch, capsys):
    """With teacher.model_dirs the transfer stage comes first: the check pass stands in for it, and reads no notes
    from a stage.json it has not written yet (it used to stop there with a raw FileNotFoundError)."""
    raw, write_cfg = tiny_run
    teacher = {**raw, "output_dir": str(tmp_path / "teacher"), "train": {**TINY_TRAIN, "epochs": 0.5}}
    assert run_cli(monkeypatch, capsys, "train-teacher", str(write_cfg(teacher, "t.yaml")))[0] == 0
    recipe = tiny_recipe("mkd_bilstm.yaml", tiny_run, tmp_path)
    recipe["teacher"] = {"model_dirs": [str(tmp_path / "teacher" / "model")]}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), "--dry-run")
    flat = " ".join(output.split())
    assert code == 0 and "transfer │ run" in flat and "signals │ run" in flat and "student │ run" in flat, output
    assert "Error" not in flat and "stage.json" not in flat and "every stage checked" in flat, output
    assert not Path(recipe["output_dir"]).exists()


@pytest.mark.parametrize("lengths", [(16, 16), (16, 24)])
def test_the_signals_stage_records_the_teachers_lengths_only_where_they_differ(lengths, tiny_run, tmp_path, monkeypatch,
                                                                               capsys):
    """Each teacher's rows are cut at its own length; a store made before that cut them at the first one's, so a
    stage over teachers of other lengths records them (and an old one is made again, not reused); teachers of one
    length keep the fingerprint they had."""
    from multidistill.data.tasks import Task
    from multidistill.models import MultiTaskModel
    from multidistill.models.backbone import load_tokenizer

    raw, _ = tiny_run
    tasks = [Task.model_validate(spec) for spec in raw["data"]["task_specs"]]
    folders = []
    for i, length in enumerate(lengths):
        folder = tmp_path / f"teacher-{i}"
        MultiTaskModel.from_backbone(raw["model"]["name_or_path"], tasks, max_length=length).save_pretrained(
            folder, tokenizer=load_tokenizer(raw["model"]["name_or_path"]))
        folders.append(str(folder))
    recipe = tiny_recipe("mtdnn_kd.yaml", tiny_run, tmp_path)
    recipe["teacher"] = {"model_dirs": folders}
    recipe["student"]["train"] = {**TINY_TRAIN, "epochs": 0.5}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    config = json.loads((Path(recipe["output_dir"]) / "signals" / STAGE_MANIFEST).read_text())["config"]
    assert config.get("teacher_lengths") == (None if lengths[0] == lengths[1] else list(lengths))
