"""A test split carved out of dev rows (`Task.test_from_dev`, `data.test_from_dev`): a seeded part of each domain's
dev rows, twins kept together, the same draw as benchmarks/mnli_heldout.py, fingerprinted, recorded in trained
models, and every bad setting refused naming its key."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from benchmarks import mnli_heldout as heldout
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from multidistill.config import DataConfig
from multidistill.data.dev_test import carve_test
from multidistill.data.prepare import open_example_store
from multidistill.data.tasks import HeldOutFromDev, Task, fingerprint_spec
from multidistill.errors import ConfigError

from .test_cli import run_cli
from .test_domains import DOMAINS, write_domain_column_task, write_domain_files_task


def _store(tmp_path, spec, carve=None, **ref):
    data = DataConfig(tasks=[{"name": spec["name"], **ref}], task_specs=[spec], cache_dir=str(tmp_path / "cache"),
                      data_root=str(tmp_path), test_from_dev=carve)
    return open_example_store(data, max_examples_per_task=None, seed=3)


def _ids(store, split, task="reviews"):
    return list(store.examples(task, split)["id"])


# ------------------------------------------------------------------------------------------- the draw

def test_each_domain_gives_floor_of_its_share_and_rows_keep_their_part_across_domains():
    domains = np.array(["a"] * 7 + ["b"] * 4 + ["a"] * 2, dtype=object)
    keys = np.arange(len(domains), dtype=np.uint64)
    carve = HeldOutFromDev(fraction=0.5, seed=0)
    test = carve_test(domains, keys, carve, "t")
    assert test[domains == "a"].sum() == 4 and test[domains == "b"].sum() == 2  # floor(9 / 2), floor(4 / 2)
    # The draw over a's rows is numpy's, seeded by [seed, crc32('a')]: computed here by hand from that rule.
    import zlib

    a_rows = np.flatnonzero(domains == "a")
    drawn = np.random.default_rng([0, zlib.crc32(b"a")]).choice(9, size=4, replace=False)
    assert sorted(np.flatnonzero(test & (domains == "a"))) == sorted(a_rows[drawn])
    # Another domain's rows change nothing of a's part; another seed does.
    only_a = carve_test(domains[domains == "a"], keys[domains == "a"], carve, "t")
    assert (only_a == test[domains == "a"]).all()
    assert (carve_test(domains, keys, HeldOutFromDev(fraction=0.5, seed=1), "t") != test).any()


def test_a_share_that_draws_every_row_is_refused_as_leaving_no_dev_row():
    domains, keys = np.array(["a"] * 10, dtype=object), np.arange(10, dtype=np.uint64)
    with pytest.raises(ConfigError, match=r"fraction: 0\.999999999999 of domain 'a''s 10 dev row\(s\) draws every "
                                          r"row: no dev row; lower the fraction"):
        carve_test(domains, keys, HeldOutFromDev(fraction=0.999999999999), "t")


def test_twins_join_the_part_of_the_first_of_them():
    domains = np.array(["a"] * 6, dtype=object)
    keys = np.array([1, 2, 3, 4, 5, 1], dtype=np.uint64)  # rows 0 and 5: equal but for their id
    for seed in range(20):
        test = carve_test(domains, keys, HeldOutFromDev(seed=seed), "t")
        assert test[0] == test[5]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("abc"), min_size=1, max_size=40), st.floats(0.05, 0.95), st.integers(0, 99))
def test_the_parts_cover_the_rows_once_with_the_drawn_share(cells, fraction, seed):
    domains, keys = np.array(cells, dtype=object), np.arange(len(cells), dtype=np.uint64)
    carve = HeldOutFromDev(fraction=fraction, seed=seed)
    counts = {d: int(np.floor(fraction * cells.count(d) + 1e-9)) for d in set(cells)}
    if min(counts.values()) == 0 or any(counts[d] == cells.count(d) for d in counts):
        with pytest.raises(ConfigError, match="test_from_dev"):
            carve_test(domains, keys, carve, "t")
        return
    test = carve_test(domains, keys, carve, "t")
    assert {d: int(test[domains == d].sum()) for d in counts} == counts
    assert (carve_test(domains, keys, carve, "t") == test).all()  # deterministic


# ------------------------------------------------------------------------------------------- the store

def _unique_rows_task(root, n_dev=20):
    """`write_domain_column_task` with every dev text its own (that task's short texts repeat: twins)."""
    spec = write_domain_column_task(root, n_dev=n_dev)
    lines = [f"review number {i}\t{i % 2}\t{DOMAINS[i % 2]}\n" for i in range(n_dev)]
    (root / "dev.tsv").write_text("text\tlabel\tgenre\n" + "".join(lines))
    return spec


def test_dev_and_test_split_the_dev_rows_of_each_domain(tmp_path):
    spec = _unique_rows_task(tmp_path / "data")
    whole = _ids(_store(tmp_path, spec), "dev")
    store = _store(tmp_path, spec, {"tasks": ["reviews"], "fraction": 0.3})
    dev, test = _ids(store, "dev"), _ids(store, "test")
    assert sorted(dev + test) == sorted(whole) and not set(dev) & set(test)
    assert len(test) == 6  # floor(0.3 x 10) of each of two domains
    assert store.tasks["reviews"].splits == ["train", "dev", "test"]
    assert store.data_fingerprint("reviews", "dev") != store.data_fingerprint("reviews", "test")
    assert store.source_fingerprint("reviews", "dev") != _store(tmp_path, spec).source_fingerprint("reviews", "dev")
    # Training rows are the task's own; the same setting draws the same rows whatever the run's seed.
    assert len(store.examples("reviews", "train")) == 40
    assert _ids(_store(tmp_path / "again", spec, {"tasks": ["reviews"], "fraction": 0.3}), "test") == test


def test_a_domain_selection_keeps_its_domains_rows_of_the_same_draw(tmp_path):
    spec = write_domain_files_task(tmp_path / "data", n_dev=10)
    carve = {"tasks": ["reviews"], "seed": 4}
    test = _ids(_store(tmp_path, spec, carve), "test")
    only = _ids(_store(tmp_path, spec, carve, domains_include=["dvd"]), "test")
    assert only == [i for i in test if i.startswith("dvd:")] and len(only) == 5


def test_the_library_draws_the_benchmark_scripts_halves(tmp_path, monkeypatch):
    """benchmarks/mnli_heldout.py wrote the files of the held-out MNLI benchmark; `test_from_dev` with fraction
    0.5 and the same seed draws the same rows (on the real sample too: docs/benchmarks.md)."""
    import sys

    rng = random.Random(0)
    genres = [rng.choice(["fiction", "travel", "slate"]) for _ in range(41)]
    (tmp_path / "data" / "mnli").mkdir(parents=True)
    lines = [f"{i}\t{g}\tpremise {i % 17}\thypothesis {i % 17}\tneutral\n" for i, g in enumerate(genres)]
    (tmp_path / "data" / heldout.SOURCE).write_text("index\tgenre\tsentence1\tsentence2\tgold_label\n"
                                                    + "".join(lines))
    monkeypatch.setattr(sys, "argv", ["mnli_heldout.py", "--data-root", str(tmp_path / "data"),
                                      "--out", str(tmp_path / "out"), "--seed", "2"])
    heldout.main()
    written = [line.split("\t")[0] for line in (tmp_path / "out" / "test.tsv").read_text().splitlines()[1:]]
    data = DataConfig(tasks=["mnli-genre"], cache_dir=str(tmp_path / "cache"), data_root=str(tmp_path / "data"),
                      test_from_dev={"tasks": ["mnli-genre"], "fraction": 0.5, "seed": 2})
    store = open_example_store(data, max_examples_per_task=None, seed=0)
    assert sorted(store.examples("mnli-genre", "test")["id"], key=int) == sorted(written, key=int)


def test_carving_changes_the_dev_and_test_fingerprints_only(tmp_path):
    """Tasks that carve nothing keep their keys; one that carves keeps its training data's (its caches, signal
    stores made by `soft-targets` from a teacher that did not carve, checkpoints), and its two parts differ."""
    plain = Task(name="t", labels=["a", "b"], files={"dev": {"path": "d.tsv", "columns": {"text_a": 0}}})
    assert "test_from_dev" not in fingerprint_spec(plain)
    assert fingerprint_spec(plain) == fingerprint_spec(plain.model_copy(update={"test_from_dev": HeldOutFromDev()}))
    spec = _unique_rows_task(tmp_path / "data")
    before, after = _store(tmp_path, spec), _store(tmp_path, spec, {"tasks": ["reviews"]})
    assert before.data_fingerprint("reviews", "train") == after.data_fingerprint("reviews", "train")
    assert before.rows_fingerprint("reviews", "train") == after.rows_fingerprint("reviews", "train")
    fingerprints = {before.data_fingerprint("reviews", "dev"), after.data_fingerprint("reviews", "dev"),
                    after.data_fingerprint("reviews", "test")}
    assert len(fingerprints) == 3


def test_a_carved_test_reads_the_rows_of_dev_not_a_test_split_of_the_same_dataset(tmp_path):
    """An hf_disk DatasetDict named for dev without hf_split reads the split named dev; the carved test used to
    read the dataset's own (hidden) test split under that rule."""
    import datasets

    splits = {name: datasets.Dataset.from_dict({"text": [f"{name} {i}" for i in range(10)], "label": [i % 2 for i in
                                                                                                     range(10)]})
              for name in ("train", "dev", "test")}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "hfset"))
    columns = {"text_a": "text", "label": "label"}
    spec = {"name": "hft", "labels": ["0", "1"], "files": {split: {"path": "hfset", "format": "hf_disk",
                                                                   "columns": columns} for split in ("train", "dev")}}
    store = _store(tmp_path, spec, {"tasks": ["hft"]})
    dev, test = list(store.examples("hft", "dev")["text_a"]), list(store.examples("hft", "test")["text_a"])
    assert sorted(dev + test, key=lambda t: int(t.split()[1])) == [f"dev {i}" for i in range(10)]


# ------------------------------------------------------------------------------------------- bad settings

def _spec_files(splits):
    return {split: {"path": f"{split}.tsv", "columns": {"text_a": "text", "label": "label"}} for split in splits}


@pytest.mark.parametrize(("spec", "message"), [
    ({"files": _spec_files(["train", "dev", "test"])}, r"files\.test already gives one"),
    ({"files": _spec_files(["train"])}, "has no dev files"),
    ({"type": "text", "labels": [], "files": {"train": {"path": "t.txt", "format": "txt", "columns": {"text_a": 0}}}},
     "a text task is not evaluated"),
    ({"files": _spec_files(["dev"]), "test_from_dev": {"seed": True}}, "takes a number, not true"),
])
def test_a_spec_that_cannot_carve_is_refused(spec, message):
    with pytest.raises(ValidationError, match=message):
        Task.model_validate({"name": "t", "labels": ["0", "1"], "test_from_dev": {"fraction": 0.5}, **spec})


@pytest.mark.parametrize("carve", [{"fraction": 0}, {"fraction": 1}, {"fraction": ".nan"}, {"seed": -1},
                                   {"seed": True}, {"tasks": []}, {"tasks": ["t"], "folds": 2}])
def test_bad_values_are_refused_at_load(carve):
    with pytest.raises(ValidationError):
        DataConfig.model_validate({"tasks": ["sst2"], "test_from_dev": {"tasks": ["sst2"], **carve}})


def test_a_task_with_test_files_a_typo_and_two_settings_are_config_errors(tmp_path):
    spec = write_domain_column_task(tmp_path / "data")
    spec["files"]["test"] = spec["files"]["dev"]
    with pytest.raises(ConfigError, match=r"key 'data\.test_from_dev\.tasks': task 'reviews': .*files\.test"):
        _store(tmp_path, spec, {"tasks": ["reviews"]})
    del spec["files"]["test"]
    with pytest.raises(ConfigError, match=r"key 'data\.test_from_dev\.tasks': unknown task 'review'"):
        _store(tmp_path, spec, {"tasks": ["reviews", "review"]})
    with pytest.raises(ConfigError, match=r"already carves its test split .*set test_from_dev in one place"):
        _store(tmp_path, {**spec, "test_from_dev": {"seed": 1}}, {"tasks": ["reviews"]})
    # The same setting twice (a trained model's spec beside the config that set it) is one setting.
    assert _ids(_store(tmp_path, {**spec, "test_from_dev": {"seed": 1}}, {"tasks": ["reviews"], "seed": 1}), "test")


def test_a_domain_too_small_to_carve_is_refused_and_nothing_is_cached(tmp_path):
    spec = write_domain_column_task(tmp_path / "data", n_dev=4)  # two rows a domain
    store = _store(tmp_path, spec, {"tasks": ["reviews"], "fraction": 0.3})
    with pytest.raises(ConfigError, match=r"task 'reviews' test_from_dev\.fraction: 0\.3 of domain 'books''s 2 dev "
                                          r"row\(s\) draws no test row"):
        store.examples("reviews", "test")
    assert not any((tmp_path / "cache").rglob("examples.arrow*")) or all(
        "test" not in p.parts and "dev" not in p.parts for p in (tmp_path / "cache").rglob("examples.arrow"))


# ------------------------------------------------------------------------------------------- end to end

def test_a_model_trained_with_a_carved_test_is_scored_on_it(tiny_run, tmp_path, monkeypatch, capsys):
    raw, write = tiny_run
    raw["data"]["test_from_dev"] = {"tasks": ["toy_sent"], "fraction": 0.25}
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()), "--set", "train.epochs=1")
    assert code == 0, output
    model_dir = tmp_path / "run" / "model"
    recorded = json.loads((model_dir / "multidistill_model.json").read_text())
    assert {t["name"]: t["test_from_dev"] for t in recorded["tasks"]}["toy_sent"] == {"fraction": 0.25, "seed": 0}
    card = " ".join((model_dir / "README.md").read_text().split())
    assert ("Scored on each task's `dev` split. toy_sent's `dev` is its dev rows but the seeded 25% that went to "
            "test (`test_from_dev`, seed 0).") in card
    code, output = run_cli(monkeypatch, capsys, "evaluate", str(model_dir), "--tasks", "toy_sent", "--split", "test",
                           "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, output
    scored = json.loads((tmp_path / "run" / "eval_test.json").read_text())
    assert set(scored["tasks"]) == {"toy_sent"}
    # benchmark --split test scores the same rows (and says so); dev, the default, the selecting ones.
    for split in ("test", "dev"):
        code, output = run_cli(monkeypatch, capsys, "benchmark", str(model_dir), "--tasks", "toy_sent", "--split",
                               split, "--runtimes", "pytorch_fp32", "--no-memory", "--rounds", "1", "--latency-runs",
                               "1", "--out", str(tmp_path / f"bench_{split}.json"), "--cache-dir",
                               str(tmp_path / "cache"))
        assert code == 0, output
    bench = {split: json.loads((tmp_path / f"bench_{split}.json").read_text()) for split in ("test", "dev")}
    assert bench["test"]["split"] == "test"
    assert next(iter(bench["test"]["models"].values()))["score"] == pytest.approx(scored["main"]["toy_sent"])
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert next(iter(bench["dev"]["models"].values()))["score"] == pytest.approx(trained["main"]["toy_sent"])
    from multidistill.report.build import score_label

    assert score_label(bench["test"]) == "test score (toy_sent, main metric)"
    code, output = run_cli(monkeypatch, capsys, "benchmark", str(model_dir), "--tasks", "toy_sent", "--split", "train",
                           "--runtimes", "pytorch_fp32", "--out", str(tmp_path / "bench_train.json"))
    assert code == 2 and "--split: 'train' is not a split to score; choose from dev, test" in output
    code, output = run_cli(monkeypatch, capsys, "benchmark", str(model_dir), "--tasks", "toy_pair", "--split", "test",
                           "--runtimes", "pytorch_fp32", "--out", str(tmp_path / "bench_pair.json"))
    said = " ".join(output.split())
    assert code == 2 and "--split test: task toy_pair of model" in said and "data.test_from_dev" in said, said
    # The run selected on its dev part, evaluate scored the test part: together the 24 dev rows, once each (about
    # a quarter in test: the toy texts repeat, and twins follow the first of them).
    rows = {split: [json.loads(p.read_text())["rows"] for p in
                    (tmp_path / "cache" / "examples" / "toy_sent" / split).glob("*/examples.json")]
            for split in ("dev", "test")}
    assert len(rows["dev"]) == len(rows["test"]) == 1 and rows["dev"][0] + rows["test"][0] == 24
    assert 3 <= rows["test"][0] <= 9
    code, output = run_cli(monkeypatch, capsys, "evaluate", str(model_dir), "--tasks", "toy_pair", "--split", "test")
    said = " ".join(output.split())
    assert code != 0 and "no 'test' split" in said and "carve one out of dev: data.test_from_dev" in said, said


def test_repeated_texts_of_the_store_stay_in_one_part(tmp_path):
    spec = write_domain_column_task(tmp_path / "data", n_dev=40)
    store = _store(tmp_path, spec, {"tasks": ["reviews"], "fraction": 0.5})
    dev, test = ({(t, y, d) for t, y, d in zip(rows["text_a"], rows["label"], rows["domain"], strict=True)}
                 for rows in (store.examples("reviews", "dev"), store.examples("reviews", "test")))
    assert not dev & test and sorted({d for _, _, d in test}) == list(DOMAINS)


def test_metakd_scores_each_target_on_its_carved_test_rows(tiny_run, tmp_path, monkeypatch, capsys):
    """A task without test files, `data.test_from_dev` set: report_split defaults to test, and the scores stage
    scores the carved rows of each target (as a store of the same data reads them)."""
    from multidistill.recipes.metakd import MetaKDRecipe, check_inputs
    from multidistill.recipes.metakd import report as metakd_report

    from .test_metakd import tiny_metakd, write, write_domain_task

    recipe = tiny_metakd(tiny_run, tmp_path)
    spec = write_domain_task(Path(recipe["data"]["data_root"]), sizes=(("train", 32), ("dev", 10)))
    recipe["data"]["task_specs"][-1] = spec
    recipe["data"]["test_from_dev"] = {"tasks": ["reviews"], "fraction": 0.4}
    recipe["report_split"] = None
    assert check_inputs(MetaKDRecipe.model_validate(recipe)).report_split == "test"
    scored = []
    original = metakd_report.evaluate

    def spy(model, tasks, eval_sets, **kwargs):
        scored.append(sorted(eval_sets["reviews"]["id"]))
        return original(model, tasks, eval_sets, **kwargs)

    monkeypatch.setattr(metakd_report, "evaluate", spy)
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    assert f"next: multidistill report {recipe['output_dir']}" in " ".join(output.split())
    data = DataConfig.model_validate({**recipe["data"], "tasks": ["reviews"]})
    carved = sorted(open_example_store(data, max_examples_per_task=None, seed=0).examples("reviews", "test")["id"])
    assert len(carved) == 8  # floor(0.4 x 10) of each domain's 10 dev rows
    per_domain = {d: [i for i in carved if i.startswith(f"{d}:")] for d in DOMAINS}
    assert scored and all(seen in (carved, *per_domain.values()) for seen in scored), scored
    assert sum(seen == carved for seen in scored) == 1  # the meta-teacher; each target's models on their own


def test_benchmark_refuses_models_that_carve_dev_differently_saying_so(tmp_path):
    """Two models whose specs read the same dev file, one carving a test split out of it: --data-root cannot make
    their dev rows the same, so the refusal names the carve instead."""
    from types import SimpleNamespace

    from multidistill.evaluation.benchmark import check_same_dev_rows

    spec = Task.model_validate(_unique_rows_task(tmp_path / "data"))
    carved = spec.model_copy(update={"test_from_dev": HeldOutFromDev(fraction=0.25)})
    models = {name: (tmp_path / name, SimpleNamespace(tasks={"reviews": task}))
              for name, task in (("teacher", spec), ("student", carved))}
    with pytest.raises(ConfigError, match=r"models teacher and student would be scored on different dev rows: "
                                          r"teacher's task spec keeps all its dev rows, student's carves a test split "
                                          r"out of them \(test_from_dev: \{'fraction': 0\.25, 'seed': 0\}\)"):
        check_same_dev_rows(models, ["reviews"], str(tmp_path), str(tmp_path / "cache"))
    check_same_dev_rows({"a": models["student"], "b": models["student"]}, ["reviews"], str(tmp_path),
                        str(tmp_path / "cache"))


def test_selecting_on_a_carved_test_split_is_refused_before_training(tiny_run, tmp_path, monkeypatch, capsys):
    raw, write = tiny_run
    raw["data"].update(test_from_dev={"tasks": ["toy_sent"]}, eval_split="test")
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write()))
    assert code == 2 and "key 'data.eval_split': the test split of toy_sent is carved out of dev" in output, output
    assert not (tmp_path / "run").exists()
