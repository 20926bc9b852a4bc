"""benchmarks/metakd_amazon.py (issue 13 acceptance): finished stages' checkpoints are pruned around each fraction
(the full run would keep ~29 GiB of them), and the table shows a spread only for rows with several runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tests.conftest import load_benchmark

REPO = Path(__file__).resolve().parents[1]


def load_bench(monkeypatch):
    return load_benchmark("metakd_amazon", monkeypatch)


def fake_stage(root: Path, name: str, finished: bool, config: dict | None = None) -> Path:
    """A stage folder with a model and a checkpoint; finished ones have their stage.json (with ``config``: a
    manifest fingerprinted as the stage runner does)."""
    from multidistill.recipes.stages import fingerprints

    folder = root / name
    (folder / "checkpoints" / "step-000000010").mkdir(parents=True)
    (folder / "checkpoints" / "step-000000010" / "state.safetensors").write_bytes(b"0" * 64)
    (folder / "model").mkdir()
    if finished:
        record = {} if config is None else {"name": name, "config": config, "inputs": {},
                                            "fingerprint": fingerprints(name, config, {}, root)[0]}
        (folder / "stage.json").write_text(json.dumps(record))
    return folder


def test_finished_stages_lose_their_checkpoints_around_each_fraction(tmp_path, monkeypatch):
    bench = load_bench(monkeypatch)
    out = tmp_path / "fraction-0.1"
    done, cut = fake_stage(out, "student-books-seed-1", True), fake_stage(out, "intermediate-dvd-seed-1", False)
    assert bench.prune_checkpoints(out) == 1
    assert not (done / "checkpoints").exists() and (done / "model").is_dir() and (done / "stage.json").is_file()
    assert (cut / "checkpoints").is_dir()  # a cut stage resumes from it
    assert bench.prune_checkpoints(tmp_path / "missing") == 0

    import multidistill.recipes as recipes

    def run(recipe):  # the recipe finishes the cut stage and makes a new one
        (cut / "stage.json").write_text("{}")
        if not (out / "student-dvd-seed-1").exists():
            fake_stage(out, "student-dvd-seed-1", True)
        return {"rows": {}}

    class Recipe(list):  # the overrides, standing for the recipe they make
        def model_dump(self, mode):
            return {"output_dir": str(out), "data": {"fraction": 0.1}}

    monkeypatch.setattr(recipes, "load_recipe", lambda path, overrides: Recipe(overrides))
    monkeypatch.setattr(recipes, "run_recipe", run)
    args = argparse.Namespace(root=tmp_path, seeds=[1], baselines=[], domain_fraction=None, quick=False, set=None,
                              precision="fp32", config=None, keep_checkpoints=False)
    assert bench.run_fraction(0.1, args) == {"rows": {}}
    assert not list(out.glob("*/checkpoints"))
    kept = fake_stage(out, "student-electronics-seed-1", True)
    bench.run_fraction(0.1, argparse.Namespace(**{**vars(args), "keep_checkpoints": True}))
    assert (kept / "checkpoints").is_dir()


def test_the_table_shows_a_spread_only_over_several_runs(monkeypatch):
    bench = load_bench(monkeypatch)
    summary = {"tasks": ["books", "dvd"], "notes": [], "rows": {
        "meta-teacher": {"metrics": {"main": {"books": 0.9, "dvd": 0.8}, "spread": {"books": 0.0, "dvd": 0.0},
                                     "runs": {"books": [0.9], "dvd": [0.8]}}, "params": 22_700_000},
        "Meta-KD student": {"metrics": {"main": {"books": 0.85, "dvd": 0.75}, "spread": {"books": 0.01, "dvd": 0.02},
                                        "runs": {"books": [0.84, 0.86], "dvd": [0.73, 0.77]}},
                            "params": 17_200_000}}}
    lines = bench.table(1.0, summary).splitlines()
    teacher = next(line for line in lines if line.startswith("| meta-teacher "))
    student = next(line for line in lines if line.startswith("| Meta-KD student "))
    assert teacher == "| meta-teacher | 90.0 | 80.0 | 85.0 | 22.7M |"
    assert student == "| Meta-KD student | 85.0 ± 1.0 | 75.0 ± 2.0 | 80.0 | 17.2M |"


def test_fraction_free_stages_are_shared_between_fractions_of_one_recipe(tmp_path, monkeypatch):
    import yaml

    bench = load_bench(monkeypatch)
    settings = {"output_dir": str(tmp_path / "fraction-1"), "data": {"fraction": 1.0, "tasks": ["amazon"]}, "x": 1}
    first = tmp_path / "fraction-1"
    for name in ("meta-teacher-without-books", "prototypes-without-books", "meta-teacher-books"):
        fake_stage(first, name, True, {"weights": str(first / "prototypes-without-books" / "columns")})
    legacy = fake_stage(first, "meta-teacher-without-electronics", True, {})  # fingerprinted before portable paths
    (legacy / "stage.json").write_text(json.dumps({**json.loads((legacy / "stage.json").read_text()),
                                                   "fingerprint": "paths hashed as written"}))
    fake_stage(first, "meta-teacher-without-dvd", False)  # cut: not shared
    (first / "recipe.yaml").write_text(yaml.safe_dump(settings))
    out = tmp_path / "fraction-0.1"
    mine = {**settings, "output_dir": str(out), "data": {**settings["data"], "fraction": 0.1}}
    assert bench.share_stages(tmp_path, out, {**mine, "x": 2}) == []  # another recipe: nothing shared
    assert not out.exists()
    assert bench.share_stages(tmp_path, out, mine) == ["prototypes-without-books", "meta-teacher-without-books"]
    shared = out / "meta-teacher-without-books"
    assert (shared / "stage.json").is_file() and (shared / "model").is_dir() and not (shared / "checkpoints").exists()
    assert not (out / "meta-teacher-books").exists() and not (out / "meta-teacher-without-dvd").exists()
    assert not list(out.glob(".*.sharing")) and (out / ".multidistill-run").is_file()
    assert bench.share_stages(tmp_path, out, mine) == []  # already there: left as it is


def test_precision_sets_every_training_stage_and_auto_follows_native_bf16(monkeypatch):
    """--precision: bf16 reaches the teachers, stage A, stage B (and through B the baselines); auto = bf16 only on a
    CPU with native bf16 kernels; the overrides are keys of the recipe."""
    from multidistill.recipes import load_recipe
    from multidistill.recipes.metakd import Plan, baseline_train
    from multidistill.training import device

    bench = load_bench(monkeypatch)
    assert bench.precision_overrides("fp32") == []
    forced = bench.precision_overrides("bf16")
    recipe = load_recipe(bench.REPO / "configs" / "metakd_amazon.yaml", forced)
    assert recipe.teacher.train.bf16 and recipe.student.intermediate.bf16 and recipe.student.prediction.bf16
    plan = Plan("amazon", ("books",), ("books",), ("books",), "test", "accuracy", {"books": 1600})
    assert baseline_train(recipe, plan, "books", 1).bf16
    for native in (True, False):
        monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda native=native: native)
        assert bench.precision_overrides("auto") == (forced if native else [])


def test_quick_runs_one_epoch_a_stage_without_stage_bs_floor(monkeypatch):
    """`--quick` is a smoke run: stage B's 150-step floor would make it 150 steps, so quick drops it."""
    from multidistill.recipes import load_recipe

    bench = load_bench(monkeypatch)
    recipe = load_recipe(REPO / "configs" / "metakd_amazon.yaml", bench.QUICK)
    student = recipe.student
    assert (student.intermediate.epochs, student.prediction.epochs, recipe.teacher.train.epochs) == (1, 1, 1)
    assert student.prediction.min_steps is None and student.prediction.lr == 3e-5


def test_per_seed_table_averages_each_seed_over_the_domains():
    """benchmarks/metakd_per_seed.py: seed i's average over the domains, by hand; one-seed rows (teachers) left out."""
    import pytest

    from tests.conftest import load_benchmark

    bench = load_benchmark("metakd_per_seed")
    summary = {"rows": {
        "meta-teacher": {"metrics": {"runs": {"a": [0.9], "b": [0.8]}}, "seeds": 1},
        "student": {"metrics": {"runs": {"a": [0.80, 0.90], "b": [0.70, 0.60]}}, "seeds": 2}}}
    rows = bench.per_seed_rows(summary)
    assert [name for name, _ in rows] == ["student"]
    assert rows[0][1] == pytest.approx([75.0, 75.0])
    assert bench.table(rows).splitlines()[-1] == "| student | 75.0 | 75.0 | 75.0 ± 0.0 |"
