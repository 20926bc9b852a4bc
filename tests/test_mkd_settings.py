"""MKD keeps what the user configured through its transfer set: a task's domain filter reaches every student stage,
a task with one file set per domain (`domain_files`) is distilled, `student.model.heads_from` goes with a
fine-tune, and no POS-tagger note is made where no word is swapped."""

from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from multidistill.config import DataConfig, TaskRef, load_config
from multidistill.data import augment
from multidistill.data.augment import AugmentConfig
from multidistill.data.prepare import open_example_store
from multidistill.recipes.mkd import domain_files_transfer_task, transfer_notes, transfer_stage
from multidistill.recipes.stages import STAGE_MANIFEST, StageRunner
from tests.test_cli import run_cli
from tests.test_domains import write_domain_column_task, write_domain_files_task
from tests.test_recipes import TINY_TRAIN, stage_names, tiny_recipe, write


def _dev_domains(config_file: Path, task: str) -> Counter:
    """The domains of the dev rows a stage's recorded config reads, with their counts."""
    data = load_config(config_file).data
    return Counter(open_example_store(data, max_examples_per_task=None, seed=0).examples(task, "dev")["domain"])


def _transfer(tmp_path: Path, tiny_model_dir: Path, spec: dict, ref: dict, **augment_settings):
    data = DataConfig(tasks=[{"name": spec["name"], **ref}], task_specs=[spec], cache_dir=str(tmp_path / "cache"),
                      data_root=str(tmp_path))
    settings = SimpleNamespace(augment=AugmentConfig(**{"n_iter": 2, "pos_tagger": "none", **augment_settings}),
                               max_examples_per_task=None, subset_seed=0)
    runner = StageRunner(tmp_path / "run")
    notes: list[str] = []
    student_data, _ = transfer_stage(runner, settings, data, [tiny_model_dir], {}, notes,
                                     make_task=domain_files_transfer_task, domain_sets=True)
    return student_data, runner.root / "transfer", notes


@pytest.mark.parametrize("writer", [write_domain_column_task, write_domain_files_task])
def test_the_transfer_data_keeps_the_domain_filter_and_drops_what_the_set_applied(writer, tiny_model_dir, tmp_path):
    """domains_include stays (dev keeps the teachers' domains); max_examples and domain_fraction, which made the
    transfer set's originals, are not applied again."""
    spec = writer(tmp_path / "data")
    ref = {"domains_include": ["dvd"], "domain_fraction": {"dvd": 0.5}, "max_examples": 8}
    student_data, folder, _ = _transfer(tmp_path, tiny_model_dir, spec, ref)
    assert student_data.tasks == [TaskRef(name="reviews", domains_include=["dvd"])]
    store = open_example_store(student_data, max_examples_per_task=None, seed=0)
    train, dev = store.examples("reviews", "train"), store.examples("reviews", "dev")
    sizes = json.loads((folder / STAGE_MANIFEST).read_text())["sizes"]["reviews"]
    assert sizes["original"] == 8 and len(train) == sizes["transfer"] > 8
    assert set(train["domain"]) == set(dev["domain"]) == {"dvd"}


def test_the_transfer_data_of_a_task_without_domain_options_names_the_task_alone(tiny_run, tiny_model_dir, tmp_path):
    """What the students' stages were fingerprinted with before domain filters were kept: a bare reference."""
    raw, _ = tiny_run
    spec = raw["data"]["task_specs"][0]
    student_data, _, _ = _transfer(tmp_path, tiny_model_dir, {**spec, "files": {
        split: {**f, "path": str(Path(raw["data"]["data_root"]) / f["path"])} for split, f in spec["files"].items()}},
        {"max_examples": 20})
    assert student_data.tasks == [TaskRef(name="toy_sent")]


def test_a_domain_files_transfer_set_reads_back_per_domain_with_the_original_ids(tiny_model_dir, tmp_path):
    spec = write_domain_files_task(tmp_path / "data", n_train=10, n_dev=4)
    student_data, folder, _ = _transfer(tmp_path, tiny_model_dir, spec, {})
    [task] = student_data.task_specs
    assert not task.files and sorted(task.domain_files) == ["books", "dvd"]
    assert all(Path(files["train"].path).is_relative_to(folder) for files in task.domain_files.values())
    assert task.domain_files["dvd"]["dev"].path == spec["domain_files"]["dvd"]["dev"]["path"]  # the task's own
    original = DataConfig(tasks=["reviews"], task_specs=[spec], cache_dir=str(tmp_path / "cache"),
                          data_root=str(tmp_path))
    before = open_example_store(original, max_examples_per_task=None, seed=0)
    after = open_example_store(student_data, max_examples_per_task=None, seed=0)
    assert after.examples("reviews", "dev")["id"] == before.examples("reviews", "dev")["id"]
    train = after.examples("reviews", "train")
    originals = [i for i, label in zip(train["id"], train["label"], strict=True) if label != -1]
    assert sorted(originals) == sorted(before.examples("reviews", "train")["id"])  # "books:0", not "books:books:0"
    assert all(i.split(":")[0] == d for i, d in zip(train["id"], train["domain"], strict=True))
    assert len(train) == json.loads((folder / STAGE_MANIFEST).read_text())["sizes"]["reviews"]["transfer"]


@pytest.fixture
def no_nltk(monkeypatch):
    """`pos_tagger: auto` without nltk: it falls back (and says so) every time it is asked."""
    monkeypatch.setitem(sys.modules, "nltk", None)
    augment._choose_tagger.cache_clear()
    monkeypatch.setattr(augment, "_choose_tagger", augment._choose_tagger.__wrapped__)


def test_no_pos_tagger_note_where_no_word_is_swapped(no_nltk, tiny_model_dir, tmp_path):
    spec = write_domain_column_task(tmp_path / "data", n_train=8, n_dev=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback's warning would fail here
        _, folder, notes = _transfer(tmp_path / "no-swaps", tiny_model_dir, spec, {}, p_swap=0.0, pos_tagger="auto")
    assert notes == [] and json.loads((folder / STAGE_MANIFEST).read_text())["pos_tagger_note"] is None
    with pytest.warns(UserWarning, match="nltk is not installed"):
        _, _, notes = _transfer(tmp_path / "swaps", tiny_model_dir, spec, {}, p_swap=0.1, pos_tagger="auto")
    assert len(notes) == 1 and "word swaps drew from any training word" in notes[0]


def test_a_transfer_stage_recorded_with_a_note_but_no_swaps_adds_no_note(tmp_path):
    note = "augment.pos_tagger is 'auto' but nltk is not installed, so word swaps drew from any training word"
    for p_swap, expected in ((0.0, []), (0.1, [note])):
        (tmp_path / STAGE_MANIFEST).write_text(json.dumps({
            "pos_tagger": False, "pos_tagger_note": note,
            "augment_settings": AugmentConfig(p_swap=p_swap, pos_tagger="auto").model_dump(mode="json")}))
        assert transfer_notes(tmp_path) == expected


def _mkd(tiny_run, tmp_path: Path, shipped: str = "mkd_bilstm.yaml") -> dict:
    recipe = tiny_recipe(shipped, tiny_run, tmp_path)
    recipe["augment"].update(n_iter=1, pos_tagger="none")
    return recipe


def test_every_mkd_stage_evaluates_on_the_included_domains_only(tiny_run, tmp_path, monkeypatch, capsys):
    recipe = _mkd(tiny_run, tmp_path)
    spec = write_domain_column_task(tmp_path / "reviews", n_train=32, n_dev=12)
    recipe["data"] = {**recipe["data"], "tasks": [{"name": "reviews", "domains_include": ["books"]}],
                      "task_specs": [spec]}
    recipe["finetune"]["train"] = {**TINY_TRAIN, "epochs": 0.5}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    trained = ["teacher-seed-1", "student", "finetune-reviews", "baseline-reviews"]
    assert set(trained) <= set(stage_names(root))
    for stage in trained:
        assert _dev_domains(root / stage / "config.yaml", "reviews") == {"books": 6}, stage


def test_mkd_distils_a_task_with_one_file_set_per_domain(tiny_run, tmp_path, monkeypatch, capsys):
    """The student stage refused the transfer task (files beside domain_files) after three stages had run."""
    recipe = _mkd(tiny_run, tmp_path)
    spec = write_domain_files_task(tmp_path / "reviews", n_train=16, n_dev=6)
    recipe["data"] = {**recipe["data"], "tasks": ["reviews"], "task_specs": [spec]}
    recipe["finetune"]["train"] = {**TINY_TRAIN, "epochs": 0.5}
    recipe["baseline"]["enabled"] = False
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    assert {"student", "finetune-reviews"} <= set(stage_names(root))
    for stage in ("student", "finetune-reviews"):
        assert _dev_domains(root / stage / "config.yaml", "reviews") == {"books": 6, "dvd": 6}, stage
    sizes = json.loads((root / "transfer" / STAGE_MANIFEST).read_text())["sizes"]["reviews"]
    metrics = json.loads((root / "student" / "metrics.json").read_text())
    assert metrics["train_examples"]["reviews"] == sizes["transfer"] > sizes["original"] == 32


def test_a_student_starting_from_the_teachers_heads_is_fine_tuned(tiny_run, tmp_path, monkeypatch, capsys):
    """heads_from beside the fine-tune's init_from was a pydantic traceback at finetune-*: the saved student holds
    the heads already."""
    recipe = _mkd(tiny_run, tmp_path, "mkd_transformer.yaml")
    recipe["data"]["tasks"] = ["toy_sent"]
    recipe["student"]["model"]["heads_from"] = "@teacher"
    recipe["finetune"] = {"enabled": True, "train": {**TINY_TRAIN, "epochs": 0.5}}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    student, finetune = (load_config(root / stage / "config.yaml").model for stage in ("student", "finetune-toy_sent"))
    assert student.heads_from == str(root / "teacher-seed-1" / "model")
    assert finetune.heads_from is None and finetune.init_from == str(root / "student" / "model")


def _given_teacher(tiny_run, tmp_path, monkeypatch, capsys) -> dict:
    """A trained tiny teacher given as teacher.model_dirs: the check pass then reaches every stage."""
    raw, write_cfg = tiny_run
    teacher = {**raw, "output_dir": str(tmp_path / "teacher"), "train": {**TINY_TRAIN, "epochs": 0.5}}
    assert run_cli(monkeypatch, capsys, "train-teacher", str(write_cfg(teacher, "t.yaml")))[0] == 0
    return {"model_dirs": [str(tmp_path / "teacher" / "model")]}


def test_per_task_terms_reach_each_one_task_stage_as_its_own(tiny_run, tmp_path, monkeypatch, capsys):
    """objective.tasks naming several tasks: each finetune-<task> / baseline-<task> stage gets its own task's entry
    (the whole objective was refused by the first one-task stage, after the teacher, transfer set and student)."""
    recipe = _mkd(tiny_run, tmp_path, "mkd_transformer.yaml")
    recipe["data"]["tasks"] = ["toy_sent", "toy_pair"]
    recipe["student"]["objective"] = {**recipe["student"].get("objective", {}), "tasks": {
        "toy_sent": [{"loss": "hard"}], "toy_pair": [{"loss": "soft_ce"}]}}
    recipe["finetune"] = {"enabled": True, "train": {**TINY_TRAIN, "epochs": 0.5}}
    recipe["baseline"] = {"enabled": True}
    recipe["teacher"] = _given_teacher(tiny_run, tmp_path, monkeypatch, capsys)
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), "--dry-run")
    assert code == 0 and "every stage checked" in " ".join(output.split()), output
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    for task, loss in (("toy_sent", "hard"), ("toy_pair", "soft_ce")):
        for stage in (f"finetune-{task}", f"baseline-{task}"):
            terms = load_config(root / stage / "config.yaml").objective.tasks
            assert list(terms) == [task] and terms[task][0].loss == loss, stage
    recipe["student"]["objective"]["tasks"]["sst"] = [{"loss": "hard"}]  # no task of this run: before any stage
    recipe["output_dir"] = str(tmp_path / "typo")
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path, "typo.yaml")))
    assert code == 2 and "key 'student.objective.tasks': ['sst'] are not tasks of this run" in output, output
    assert not (tmp_path / "typo").exists()


def test_a_stage_config_that_would_be_refused_is_refused_before_any_stage(tiny_run, tmp_path, monkeypatch, capsys):
    """A student's run config is validated in the check pass: a domain branch no term trains was a pydantic
    traceback at the student stage, after the transfer set and the teachers' signals."""
    recipe = _mkd(tiny_run, tmp_path, "mkd_transformer.yaml")
    recipe["student"]["model"]["domain_branch"] = {"domains": ["a", "b"]}
    recipe["teacher"] = _given_teacher(tiny_run, tmp_path, monkeypatch, capsys)
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2 and "stage 'student'" in output and "domain_branch" in output, output
    assert "Traceback" not in output and not Path(recipe["output_dir"]).exists(), output
