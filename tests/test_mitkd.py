"""The MITKD recipe end to end on the tiny BERT and toy data (both arms through `multidistill run`), and
`multidistill distill configs/general_distill.yaml` (general distillation alone) with the tiny model swapped in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from multidistill.config import read_yaml
from tests.test_cli import run_cli
from tests.test_recipes import REPO, TINY_SEEDED_TRAIN, TINY_TRAIN, stage_names, write

CORPUS = {"name": "corpus", "type": "text", "from_tasks": ["toy_sent", "toy_pair"]}


def tiny_mitkd(tiny_run, tmp_path: Path) -> dict:
    """configs/mitkd.yaml with the tiny BERT, the toy tasks and a toy corpus swapped in."""
    raw, _ = tiny_run
    recipe = read_yaml(REPO / "configs" / "mitkd.yaml")
    tiny = {"name_or_path": raw["model"]["name_or_path"], "max_seq_length": 32}
    recipe.update(output_dir=str(tmp_path / "mitkd"), max_examples_per_task=None, corpus="corpus",
                  data={**raw["data"], "tasks": ["toy_sent", "toy_reg"],
                        "task_specs": [*raw["data"]["task_specs"], CORPUS]})
    recipe["teacher"].update(model=tiny, train=TINY_SEEDED_TRAIN)
    recipe["student"]["model"].update(name_or_path=tiny["name_or_path"], student_layers=[1], max_seq_length=32)
    recipe["student"]["train"] = {**TINY_TRAIN, "select": "lowest_loss"}
    recipe["student"]["objective"] = [{"loss": "relation_kl", "params": {"relation_heads": 2}}]
    recipe["finetune"].update(train={**TINY_SEEDED_TRAIN, "epochs": 0.5}, seeds=[1])
    return recipe


def test_mitkd_both_arms_then_skip(tiny_run, tmp_path, monkeypatch, capsys):
    recipe = tiny_mitkd(tiny_run, tmp_path)
    path = write(recipe, tmp_path)
    root = Path(recipe["output_dir"])
    code, output = run_cli(monkeypatch, capsys, "run", str(path))
    assert code == 0, output
    assert stage_names(root) == ["finetune-mitkd-toy_reg-seed-1", "finetune-mitkd-toy_sent-seed-1",
                                 "general-mitkd", "teacher-seed-1"]
    # The general student learnt from the multi-task teacher's encoder, online; it is a plain HF encoder folder.
    general = json.loads((root / "general-mitkd" / "stage.json").read_text())
    assert general["config"]["online_teachers"] == [str(root / "teacher-seed-1" / "model")]
    encoder = AutoModel.from_pretrained(root / "general-mitkd" / "encoder")
    assert encoder.config.num_hidden_layers == 1
    summary = json.loads((root / "summary.json").read_text())
    assert list(summary["rows"]) == ["teacher teacher-seed-1", "MITKD student (multi-task teacher)"]
    row = summary["rows"]["MITKD student (multi-task teacher)"]
    assert row["retention"] is not None and row["retention_tasks"] == ["toy_sent", "toy_reg"]
    assert row["models"] == 2 and row["stages"] == ["finetune-mitkd-toy_sent-seed-1", "finetune-mitkd-toy_reg-seed-1"]

    # The other arm: one --set away, its own stages, the teacher reused; the table shows both arms.
    code, output = run_cli(monkeypatch, capsys, "run", str(path), "--set", "baseline.plain_teacher=true")
    assert code == 0, output
    assert "stage teacher-seed-1: done, reusing" in output
    assert {"general-plain", "finetune-plain-toy_sent-seed-1", "finetune-plain-toy_reg-seed-1",
            "general-mitkd"} <= set(stage_names(root))
    plain = json.loads((root / "general-plain" / "stage.json").read_text())
    assert plain["config"]["online_teachers"] == [recipe["teacher"]["model"]["name_or_path"]]
    # Same student initialisation (pretrained layer 1), different teachers: different general students.
    a, b = (AutoModel.from_pretrained(root / f"general-{arm}" / "encoder") for arm in ("mitkd", "plain"))
    assert not torch.equal(a.encoder.layer[0].attention.self.query.weight,
                           b.encoder.layer[0].attention.self.query.weight)
    summary = json.loads((root / "summary.json").read_text())
    assert list(summary["rows"]) == ["teacher teacher-seed-1", "MITKD student (multi-task teacher)",
                                     "plain-teacher student (pretrained encoder)"]
    # The same settings in both arms: nothing to say about the MITKD row; each task's trivial baseline beside them.
    assert not any("settings_differ" in row for row in summary["rows"].values()), summary["notes"]
    assert set(summary["baseline"]["tasks"]) == {"toy_sent", "toy_reg"}

    code, output = run_cli(monkeypatch, capsys, "run", str(path))
    assert code == 0, output
    assert output.count("done, reusing") == 4


def test_mitkd_refuses_a_labelled_corpus_and_head_losses_before_any_stage(tiny_run, tmp_path, monkeypatch,
                                                                         capsys):
    recipe = tiny_mitkd(tiny_run, tmp_path)
    root = Path(recipe["output_dir"])
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), "--set", "corpus=toy_pair")
    assert code == 2 and "key 'corpus'" in output and "type: text" in output
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)),
                           "--set", "student.objective=[{loss: soft_ce}]")
    assert code == 2 and "task 'corpus' is a text task" in output
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)),
                           "--set", "student.train.select=best_metric")
    assert code == 2 and "key 'student.train.select'" in output
    # keep_pairs over a corpus of single-text tasks only: refused under the key the user wrote
    recipe["data"]["task_specs"][-1] = {**CORPUS, "from_tasks": ["toy_sent"]}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)),
                           "--set", "corpus={name: corpus, keep_pairs: true}")
    assert code == 2 and "key 'corpus.keep_pairs'" in output and "no pair to keep" in output, output
    assert not root.exists()


def test_general_distill_config_runs_and_exports_an_encoder(tiny_run, tmp_path, monkeypatch, capsys):
    raw, _ = tiny_run
    config = read_yaml(REPO / "configs" / "general_distill.yaml")
    config.update(output_dir=str(tmp_path / "general"), online_teachers=[raw["model"]["name_or_path"]],
                  data={**raw["data"], "tasks": ["corpus"], "task_specs": [*raw["data"]["task_specs"], CORPUS]},
                  train={**TINY_TRAIN, "select": "lowest_loss"})
    config["model"].update(name_or_path=raw["model"]["name_or_path"], student_layers=[1], max_seq_length=32)
    config["objective"]["tasks"]["corpus"] = [{"loss": "hidden_mse"}, {"loss": "attention_kl"}]
    code, output = run_cli(monkeypatch, capsys, "distill", str(write(config, tmp_path, "general.yaml")))
    assert code == 0, output
    assert "general student (plain Hugging Face encoder)" in output
    assert AutoModel.from_pretrained(tmp_path / "general" / "encoder").config.num_hidden_layers == 1


@pytest.mark.parametrize("key", ["recipe", "corpus", "student", "finetune", "baseline"])
def test_the_shipped_config_names_every_section(key):
    assert key in read_yaml(REPO / "configs" / "mitkd.yaml")


def test_an_ensemble_feeds_the_general_student_and_soft_targets_the_fine_tunes(tiny_run, tmp_path, monkeypatch,
                                                                              capsys):
    recipe = tiny_mitkd(tiny_run, tmp_path)
    recipe["teacher"]["seeds"] = [1, 2]
    recipe["data"]["tasks"] = ["toy_sent"]
    recipe["finetune"]["objective"] = {"classification": [{"loss": "hard"}, {"loss": "soft_ce"}]}
    root = Path(recipe["output_dir"])
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    assert stage_names(root) == ["finetune-mitkd-toy_sent-seed-1", "general-mitkd", "signals", "teacher-seed-1",
                                 "teacher-seed-2"]
    general = json.loads((root / "general-mitkd" / "stage.json").read_text())
    assert general["config"]["online_teachers"] == [str(root / f"teacher-seed-{s}" / "model") for s in (1, 2)]
    tuned = json.loads((root / "finetune-mitkd-toy_sent-seed-1" / "stage.json").read_text())
    assert set(tuned["inputs"]) == {"general", "signals"}
    store = json.loads((root / "signals" / "manifest.json").read_text())
    assert store["splits"] == ["train"] and len(store["teachers"]) == 2


@pytest.mark.parametrize("seeds, match", [([-1], "greater than or equal to 0"), ([2**32], "less than or equal to"),
                                          ([1, 1], "finetune.seeds must be distinct")])
def test_finetune_seeds_are_checked_with_the_config(seeds, match):
    """Out-of-range seeds failed in numpy after the general student was trained; a repeated seed silently reused
    one fine-tune as two samples of the mean."""
    from pydantic import ValidationError

    from multidistill.recipes.mitkd import MITKDFinetune

    with pytest.raises(ValidationError, match=match):
        MITKDFinetune(seeds=seeds)


def test_a_head_loss_for_the_corpus_names_the_recipes_key(tiny_run, tmp_path, monkeypatch, capsys):
    """The general student's objective is `student.objective` in the recipe (it said `objective.tasks.corpus`)."""
    recipe = tiny_mitkd(tiny_run, tmp_path)
    recipe["student"]["objective"] = [{"loss": "soft_ce"}]
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2, output
    assert "key 'student.objective'" in output and "objective.tasks" not in output
    assert not Path(recipe["output_dir"]).exists()


def test_a_plain_encoder_that_is_no_folder_is_refused_before_any_stage(tiny_run, tmp_path, monkeypatch, capsys):
    """baseline.encoder was first read at the general-plain stage, after the teacher, with a hub repo-id error."""
    recipe = tiny_mitkd(tiny_run, tmp_path)
    recipe["baseline"] = {"plain_teacher": True, "encoder": str(tmp_path / "no-such-encoder")}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2, output
    assert "key 'baseline.encoder'" in output and "no such folder" in output
    assert not Path(recipe["output_dir"]).exists()


def test_a_general_student_init_from_that_is_no_folder_is_refused_before_any_stage(tiny_run, tmp_path, monkeypatch,
                                                                                   capsys):
    """student.model.init_from was first read at the general stage, after the teacher, without the key."""
    recipe = tiny_mitkd(tiny_run, tmp_path)
    recipe["student"]["model"]["init_from"] = str(tmp_path / "no-such-student")
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2, output
    assert "key 'student.model.init_from'" in output and "does not exist" in output
    assert not Path(recipe["output_dir"]).exists()


def test_a_feature_loss_that_does_not_fit_the_encoders_is_refused_before_any_stage(tiny_run, tmp_path, monkeypatch,
                                                                                  capsys):
    """relation_heads must divide the width (32 here): it was found when the general stage built the loss, after
    the teacher had trained."""
    recipe = tiny_mitkd(tiny_run, tmp_path)
    recipe["student"]["objective"] = [{"loss": "relation_kl", "params": {"relation_heads": 5}}]
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2, output
    assert "key 'student.objective'" in output and "relation_kl" in output
    assert not Path(recipe["output_dir"]).exists()


@pytest.mark.parametrize(("setting", "said"), [
    ("student.model.heads_from='@teacher'", "student.model.heads_from: the general student is an encoder without"),
    # it pointed at the top-level cap, which does not reach the corpus
    ("student.train.max_examples_per_task=16", "student.train.max_examples_per_task: the general distillation reads "
                                               "the corpus, whose rows are capped by corpus.max_examples"),
])
def test_mitkd_settings_no_stage_reads_are_refused(setting, said):
    from multidistill.errors import ConfigError
    from multidistill.recipes import load_recipe

    with pytest.raises(ConfigError, match=said):
        load_recipe(REPO / "configs" / "mitkd.yaml", [setting])


class _Stop(Exception):
    """Raised in place of the first stage: what a test reads was said before any stage."""


def _said_before_any_stage(recipe: dict, tmp_path: Path, monkeypatch, capsys) -> str:
    """What `run_mitkd` prints before its first stage (the teachers), on the recipes' console (stderr)."""
    from multidistill.recipes import load_recipe
    from multidistill.recipes.mitkd import recipe as module
    from multidistill.recipes.stages import StageRunner

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(module, "teacher_stages", stop)
    capsys.readouterr()
    with pytest.raises(_Stop):
        module.run_mitkd(load_recipe(write(recipe, tmp_path)), StageRunner(recipe["output_dir"]))
    assert not Path(recipe["output_dir"]).exists()
    return " ".join(capsys.readouterr().err.split())


def test_settings_the_run_does_not_read_as_given_are_noted(tiny_run, tmp_path, monkeypatch, capsys):
    """The top-level cap reaches the labelled tasks' stages, not the corpus (its own cap is corpus.max_examples),
    and baseline.encoder is read by the plain arm only: both were silent. What gets capped is unchanged."""
    recipe = tiny_mitkd(tiny_run, tmp_path)
    recipe.update(max_examples_per_task=16, baseline={"plain_teacher": False, "encoder": recipe["teacher"]["model"]
                                                      ["name_or_path"]})
    said = _said_before_any_stage(recipe, tmp_path, monkeypatch, capsys)
    assert ("note: max_examples_per_task (16) caps the labelled tasks' training rows (the teachers', their soft "
            "targets' and the fine-tunes'), not the corpus: its rows are capped by corpus.max_examples, which is "
            "unset, so the general distillation reads all of corpus 'corpus'") in said, said
    assert ("note: baseline.encoder not used: it is read by the plain arm only (baseline.plain_teacher: true)"
            in said), said
    # The corpus capped by its own key, and the plain arm, which reads baseline.encoder: nothing to say.
    recipe.update(corpus={"name": "corpus", "max_examples": 20}, baseline={**recipe["baseline"], "plain_teacher": True})
    assert "note:" not in _said_before_any_stage(recipe, tmp_path, monkeypatch, capsys)
    # A run's recorded recipe writes every field: the defaults read back say nothing either.
    from multidistill.recipes import load_recipe

    recorded = load_recipe(write(tiny_mitkd(tiny_run, tmp_path), tmp_path)).model_dump(mode="json")
    assert "note:" not in _said_before_any_stage(recorded, tmp_path, monkeypatch, capsys)


def test_the_general_stage_reads_the_corpus_uncapped_by_the_top_level_cap(tiny_run, tmp_path, monkeypatch):
    """The note above says what the stages do: the general distillation's payload has no cap of its own (its rows
    are corpus.max_examples'), the fine-tunes' has the top-level one."""
    from multidistill.recipes import load_recipe
    from multidistill.recipes.mitkd import stages

    seen = {}

    def record(runner, name, **kwargs):
        seen[name] = (kwargs["max_examples"], kwargs["data"].tasks)
        return Path(tmp_path / name)

    recipe = tiny_mitkd(tiny_run, tmp_path)
    recipe["max_examples_per_task"] = 16
    loaded = load_recipe(write(recipe, tmp_path))
    monkeypatch.setattr(stages, "train_stage", record)
    monkeypatch.setattr(stages, "stage_fingerprint", lambda folder: "x")
    stages.general_stage(None, loaded, "mitkd", ["teacher"], {})
    stages.finetune_stages(None, loaded, "mitkd", tmp_path / "general-mitkd", None)
    assert seen["general-mitkd"][0] is None and seen["general-mitkd"][1][0].max_examples is None
    assert seen["finetune-mitkd-toy_sent-seed-1"][0] == 16


def test_feature_terms_in_the_fine_tune_objective_are_refused_before_any_stage(tiny_run, tmp_path, monkeypatch,
                                                                               capsys):
    """A fine-tune runs no teacher, so hidden_mse there was refused when the first fine-tune started (after the
    teachers and the general distillation), naming the run key 'online_teachers', which a recipe does not have."""
    recipe = tiny_mitkd(tiny_run, tmp_path)
    recipe["finetune"]["objective"] = {"classification": [{"loss": "hard"}, {"loss": "hidden_mse"}],
                                       "regression": [{"loss": "hard"}]}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    said = " ".join(output.split())
    assert code == 2, output
    assert "key 'finetune.objective': hidden_mse compares the student's features with a teacher's (task(s) " \
           "['toy_sent'])" in said and "student.objective" in said, said
    assert "online_teachers" not in said and "Traceback" not in said
    assert not Path(recipe["output_dir"]).exists()
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), "--dry-run")
    assert code == 2 and "key 'finetune.objective'" in output, output
    assert not Path(recipe["output_dir"]).exists()


def test_domain_branch_terms_in_the_fine_tune_objective_are_refused_before_any_stage(tiny_run, tmp_path, monkeypatch,
                                                                                     capsys):
    """domain_adversarial reads the model's domain branch, which a fine-tune's model (the general student's encoder
    with new heads) never has: a dry run said every stage checked, and a run trained the teachers and the general
    student before the first fine-tune failed on its first batch, naming Task.domains. Refused by the recipe's key.
    A branch on the general student, which distils on the corpus (no domains), is refused before any stage too."""
    recipe = tiny_mitkd(tiny_run, tmp_path)
    recipe["finetune"]["objective"] = {"classification": [{"loss": "hard"}, {"loss": "domain_adversarial"}],
                                       "regression": [{"loss": "hard"}]}
    for dry in (["--dry-run"], []):
        code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), *dry)
        said = " ".join(output.split())
        assert code == 2, said
        assert ("key 'finetune.objective': domain_adversarial reads the model's domain branch (task(s) ['toy_sent']), "
                "but a fine-tune's model is the general student's encoder with new task heads") in said, said
        assert "Traceback" not in said and not Path(recipe["output_dir"]).exists()
    recipe = tiny_mitkd(tiny_run, tmp_path)
    recipe["student"]["model"]["domain_branch"] = {"domains": ["a", "b"]}
    recipe["student"]["objective"].append({"loss": "domain_adversarial"})
    for dry in (["--dry-run"], []):
        code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), *dry)
        said = " ".join(output.split())
        assert code == 2 and "stage 'general-mitkd': key 'objective': domain_adversarial on task 'corpus'" in said, said
        assert "the task has no domains" in said and not Path(recipe["output_dir"]).exists()


def test_per_task_fine_tune_terms_reach_their_own_fine_tune_and_a_typo_is_refused_up_front(
        tiny_run, tmp_path, monkeypatch, capsys):
    """finetune.objective.tasks naming several tasks: each fine-tune keeps its own task's entry (the whole objective
    was refused at the first fine-tune, after the teachers and the general distillation); an entry of no fine-tune
    task is refused before any stage."""
    from multidistill.recipes.mitkd.plan import finetune_data
    from multidistill.training.objective import objective_for_tasks

    recipe = tiny_mitkd(tiny_run, tmp_path)
    recipe["finetune"]["objective"] = {"tasks": {"toy_sent": [{"loss": "hard"}], "toy_reg": [{"loss": "hard"}]}}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), "--dry-run")
    assert code == 0, output
    from multidistill.recipes import load_recipe

    parsed = load_recipe(write(recipe, tmp_path))
    names = finetune_data(parsed).task_names
    assert set(objective_for_tasks(parsed.finetune.objective, ["toy_sent"], names).tasks) == {"toy_sent"}
    recipe["finetune"]["objective"]["tasks"]["sst"] = [{"loss": "hard"}]
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2 and "key 'finetune.objective.tasks': ['sst'] are not tasks of this run" in output, output
    assert not Path(recipe["output_dir"]).exists()


def test_a_text_task_among_the_teachers_tasks_is_refused_when_the_recipe_loads(tiny_run, tmp_path):
    """data.tasks are the teachers' (labelled) tasks: a text task there passed the dry run and failed in the first
    teacher stage, naming a key the recipe has not (objective.tasks.<task>)."""
    from multidistill.errors import ConfigError
    from multidistill.recipes import load_recipe

    recipe = tiny_mitkd(tiny_run, tmp_path)
    (Path(recipe["data"]["data_root"]) / "corp2.txt").write_text("a first line\nand a second one\n")
    recipe["data"]["task_specs"].append({"name": "corp2", "type": "text",
                                         "files": {"train": {"path": "corp2.txt", "format": "txt"}}})
    recipe["data"]["tasks"] = [*recipe["data"]["tasks"], "corp2"]
    with pytest.raises(ConfigError, match=r"key 'data.tasks'.*task 'corp2' is a text task.*MITKD's corpus"):
        load_recipe(write(recipe, tmp_path))
