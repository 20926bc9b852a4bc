"""The Meta-KD recipe end to end on the tiny BERT and toy data with two domains (`multidistill run`): its stages,
a re-run that skips them, lambda weights in stage A's loss only, the baselines, and bad input refused before any
stage writes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from multidistill.config import load_config, read_yaml
from tests.conftest import _sentence
from tests.test_cli import run_cli
from tests.test_metakd_bench import load_bench
from tests.test_recipes import REPO, TINY_SEEDED_TRAIN, stage_names, write

DOMAINS = ("books", "dvd")


def write_domain_task(root: Path, domains=DOMAINS, sizes=(("train", 32), ("dev", 8), ("test", 8))) -> dict:
    """A toy sentiment task with one file set per domain (as the built-in `amazon`); returns its spec."""
    rng = random.Random(3)
    for domain in domains:
        (root / "reviews" / domain).mkdir(parents=True, exist_ok=True)
        for split, n in sizes:
            labels = [i % 2 for i in range(n)]  # every domain has rows of both classes
            rows = "".join(f"{_sentence(rng, y)} {domain}\t{y}\n" for y in labels)
            (root / "reviews" / domain / f"{split}.tsv").write_text("text\tlabel\n" + rows)
    columns = {"text_a": "text", "label": "label"}
    return {"name": "reviews", "labels": ["0", "1"], "metrics": ["accuracy", "f1"],
            "domain_files": {d: {split: {"path": f"reviews/{d}/{split}.tsv", "columns": columns}
                                 for split, _ in sizes} for d in domains}}


def tiny_metakd(tiny_run, tmp_path: Path, domains=DOMAINS) -> dict:
    """configs/metakd_amazon.yaml with the tiny BERT and a two-domain toy task swapped in, one seed, no baselines."""
    raw, _ = tiny_run
    recipe = read_yaml(REPO / "configs" / "metakd_amazon.yaml")
    tiny = {"name_or_path": raw["model"]["name_or_path"], "max_seq_length": 32}
    spec = write_domain_task(Path(raw["data"]["data_root"]), domains)
    recipe.update(output_dir=str(tmp_path / "metakd"), baselines=[],
                  data={**raw["data"], "tasks": ["reviews"], "task_specs": [*raw["data"]["task_specs"], spec]})
    recipe["teacher"].update(model=tiny, train=TINY_SEEDED_TRAIN)
    recipe["student"]["model"].update(name_or_path=tiny["name_or_path"], student_layers=[1], max_seq_length=32)
    recipe["student"].update(intermediate={**TINY_SEEDED_TRAIN, "lr_scheduler": "constant", "warmup_ratio": 0.0,
                                           "select": "last"},
                             prediction={**TINY_SEEDED_TRAIN, "min_steps": None}, seeds=[1])  # no 150-step floor here
    return recipe


META_STAGES = ["intermediate-books", "intermediate-dvd", "meta-teacher", "prototypes", "scores", "signals-books",
               "signals-dvd", "student-books", "student-dvd", "weights-books", "weights-dvd"]


def spy_on_weights(monkeypatch) -> list[tuple[frozenset, list, object]]:
    """Record (the objective's loss names, the batch's rows, its per-example weights) of every objective call."""
    from multidistill.training.objective import WeightedObjective

    seen = []
    original = WeightedObjective.forward

    def forward(self, model, batch):
        names = frozenset(term.loss_name for term in self.terms[batch["task"]])
        weights = batch.get("weights")
        seen.append((names, list(batch["rows"]), None if weights is None else weights.cpu().numpy().copy()))
        return original(self, model, batch)

    monkeypatch.setattr(WeightedObjective, "forward", forward)
    return seen


def test_metakd_runs_every_stage_then_skips_them(tiny_run, tmp_path, monkeypatch, capsys):
    from multidistill.teachers.columns import open_column_store
    from multidistill.teachers.store import open_signal_store

    recipe = tiny_metakd(tiny_run, tmp_path)
    path = write(recipe, tmp_path)
    root = Path(recipe["output_dir"])
    seen = spy_on_weights(monkeypatch)
    code, output = run_cli(monkeypatch, capsys, "run", str(path))
    assert code == 0, output
    # lambda_i = (1 + t_i) / (1 + exp((1 - p_T(y_i|x_i))^2)) from the stored t_i and the teacher's probabilities.
    weights = open_column_store(root / "weights-books" / "columns")
    probs = np.asarray(open_signal_store(root / "signals-books").signals("reviews", "train")["teacher_mean"])
    labels = np.asarray([int(line.split("\t")[1]) for line in (Path(recipe["data"]["data_root"]) / "reviews" / "books"
                                                                / "train.tsv").read_text().splitlines()[1:]])
    gold = probs[np.arange(len(labels)), labels]
    expected = (1 + weights.column("prototype_score")) / (1 + np.exp((1 - gold) ** 2))
    np.testing.assert_allclose(weights.column("expertise_weight"), expected, rtol=1e-5)
    # The meta-teacher's loss is weighted by t_i, stage A's by lambda_i (the rows' own), stage B's not at all.
    prototypes = open_column_store(root / "prototypes" / "columns").column("prototype_score")
    lambdas = {domain: open_column_store(root / f"weights-{domain}" / "columns").column("expertise_weight")
               for domain in DOMAINS}
    meta = [(rows, w) for names, rows, w in seen if "domain_adversarial" in names]
    stage_a = [(rows, w) for names, rows, w in seen if "hidden_mse" in names]
    stage_b = [w for names, _, w in seen if names == {"soft_ce"}]
    assert meta and stage_a and stage_b
    for rows, w in meta:
        np.testing.assert_array_equal(w, prototypes[rows])
    assert any(np.array_equal(w, lambdas["books"][rows]) for rows, w in stage_a)
    assert all(np.array_equal(w, lambdas["books"][rows]) or np.array_equal(w, lambdas["dvd"][rows])
               for rows, w in stage_a)
    assert all(w is None for w in stage_b)
    assert stage_names(root) == META_STAGES
    # t_i and lambda_i are stored per example, and reach the loop as per-example weights.
    teacher = json.loads((root / "meta-teacher" / "stage.json").read_text())
    assert teacher["config"]["example_weights"]["column"] == "prototype_score"
    stage_a = json.loads((root / "intermediate-books" / "stage.json").read_text())
    assert stage_a["config"]["example_weights"]["column"] == "expertise_weight"
    assert stage_a["config"]["online_teachers"] == [str(root / "meta-teacher" / "model")]
    stage_b = json.loads((root / "student-books" / "stage.json").read_text())
    assert "example_weights" not in stage_b["config"]  # unweighted by default (the authors' code)
    assert stage_b["config"]["model"]["init_from"] == str(root / "intermediate-books" / "model")
    summary = json.loads((root / "summary.json").read_text())
    assert list(summary["rows"]) == ["meta-teacher", "Meta-KD student"]
    assert summary["tasks"] == list(DOMAINS) and summary["reference"] == "meta-teacher"
    assert set(summary["rows"]["Meta-KD student"]["metrics"]["main"]) == set(DOMAINS)
    # Each row's average over the targets (as the docs say), and each target's trivial baseline on the report split.
    assert all(row["metrics"]["average"] == row["average"] for row in summary["rows"].values())
    assert set(summary["baseline"]["tasks"]) == set(DOMAINS)
    assert summary["split"] == "test" and "test scores" in output  # the toy task has a test split, so not "dev"
    # The acceptance benchmark's speed rows read this layout: the meta-teacher and a Meta-KD student (stage B).
    bench = load_bench(monkeypatch)
    folders = bench.speed_folders(root, summary["tasks"])
    assert folders == {"meta-teacher": root / "meta-teacher", "Meta-KD student": root / "student-books"}
    speed = bench.measure_speed(folders, rounds=1)
    assert speed["Meta-KD student"]["params"] < speed["meta-teacher"]["params"]
    assert all(row["throughput_examples_per_s"] > 0 and row["latency_ms_median"] > 0 for row in speed.values())
    assert "| Meta-KD student | " in bench.speed_table(speed)
    # The cards: the meta-teacher's names its domain branch; a domain expert is compared with the meta-teacher on
    # its own domain (the meta-teacher's books dev score), not on the meta-teacher's dev rows of every domain.
    card = (root / "meta-teacher" / "model" / "README.md").read_text()
    assert "| domain branch | books, dvd (Meta-KD's domain embedding" in card
    meta_books = json.loads((root / "meta-teacher" / "metrics.json").read_text())["domains"]["reviews"]["books"]
    student_books = json.loads((root / "student-books" / "metrics.json").read_text())["domains"]["reviews"]["books"]
    card = (root / "student-books" / "model" / "README.md").read_text()
    metric = next(iter(meta_books))
    assert (f"| reviews | books | {metric} | {student_books[metric]:.4f} | {meta_books[metric]:.4f} |" in card)
    assert "scored on other domains than its teacher (task reviews)" in card

    code, output = run_cli(monkeypatch, capsys, "run", str(path))
    assert code == 0, output
    assert output.count("done, reusing") == len(META_STAGES)
    # A baseline added later: its students are trained, and the scores stage, which only reads the models, is
    # made again over all of them instead of refused.
    code, output = run_cli(monkeypatch, capsys, "run", str(path), "--set", "baselines=[no_kd]")
    assert code == 0, output
    assert "stage scores:" in output and "made again" in " ".join(output.split())
    summary = json.loads((root / "summary.json").read_text())
    assert list(summary["rows"]) == ["meta-teacher", "Meta-KD student", "no-KD student"]


def test_the_benchmark_keeps_a_fraction_of_every_domain_of_any_metakd_task(tiny_run, tmp_path, monkeypatch):
    """benchmarks/metakd_amazon.py --domain-fraction: the domains are the data's (MNLI genres as well as Amazon's),
    the task's other settings stay."""
    from multidistill.recipes import load_recipe

    recipe = tiny_metakd(tiny_run, tmp_path, domains=(*DOMAINS, "toys"))
    recipe["data"]["tasks"] = [{"name": "reviews", "domains_exclude": ["toys"]}]
    path = write(recipe, tmp_path)
    override = load_bench(monkeypatch).domain_fraction_override(load_recipe(path, []), 0.25)
    (task,) = load_recipe(path, [override]).data.tasks
    assert (task.name, task.domains_exclude) == ("reviews", ["toys"])
    assert task.domain_fraction == {"books": 0.25, "dvd": 0.25}


def test_stage_b_weighted_reads_lambda(tiny_run, tmp_path, monkeypatch, capsys):
    recipe = tiny_metakd(tiny_run, tmp_path)
    recipe.update(targets=["dvd"])
    recipe["student"]["weighted"] = True
    seen = spy_on_weights(monkeypatch)
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    assert "student-books" not in stage_names(root)
    stage_b = [w for names, _, w in seen if names == {"soft_ce"}]
    assert stage_b and all(w is not None for w in stage_b)
    record = json.loads((root / "student-dvd" / "stage.json").read_text())
    assert record["config"]["example_weights"]["column"] == "expertise_weight" and "weights" in record["inputs"]


@pytest.mark.parametrize(("sets", "expect"), [
    (["data.tasks=[toy_sent]"], ("key 'data.tasks'", "task 'toy_sent' has no domains")),
    (["targets=[music]"], ("key 'targets'", "'music' is not in the data", "books, dvd")),
    (["data.fraction=0"], ("key 'data.fraction'", "greater than 0")),
    (["data.fraction=1.5"], ("key 'data.fraction'", "less than or equal to 1")),
    (["data.fraction=0.01"], ("key 'data.fraction'", "keeps no row")),
    (["baselines=[meta_without_target]"], ("key 'baselines'", "at least two of them")),
    (["max_examples_per_task=10"], ("max_examples_per_task", "data.fraction")),
    (["student.cross_fit_folds=1"], ("student.cross_fit_folds", "greater than or equal to 2")),
    (["student.cross_fit_folds=40"], ("key 'student.cross_fit_folds'", "leave a fold empty", "at most 32")),
    (["student.model.student_layers=[0,2]"], ("key 'student.model.student_layers'", "has 2 layers")),
    (["prototypes.encoder=/nonexistent/encoder"], ("key 'prototypes.encoder'", "no such folder")),
    (["student.model.name_or_path=/nonexistent/student"], ("key 'student.model.name_or_path'", "no such folder")),
    (["student.model.init_from=/nonexistent/saved"], ("key 'student.model.init_from'", "does not exist")),
    (["student.model.init_from=@teacher"], ("key 'student.model.init_from'", "is not resolved there")),
    (["baselines=[no_kd]", "student.model.heads_from=@teacher"],
     ("key 'student.model.heads_from'", "no_kd baseline has no teacher")),
    (["data.tasks=[{name: reviews, domain_holdout: {domain: books, folds: 2, fold: 0}}]"],
     ("data.tasks.0.domain_holdout", "student.cross_fit_folds")),
    (["student.cross_fit_folds=2", "teacher.model=null", "teacher.model_dirs=[somewhere]"],
     ("key 'student.cross_fit_folds'", "teacher.model_dirs")),
])
def test_bad_input_is_refused_before_any_stage_writes(tiny_run, tmp_path, monkeypatch, capsys, sets, expect):
    recipe = tiny_metakd(tiny_run, tmp_path)
    args = [item for value in sets for item in ("--set", value)]
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), *args)
    assert code == 2, output
    for fragment in expect:
        assert fragment in output, (fragment, output)
    assert "Traceback" not in output
    assert not Path(recipe["output_dir"]).exists()


def test_a_pos_tagger_that_is_not_installed_is_refused_before_any_stage_writes(
        tiny_run, tmp_path, monkeypatch, capsys):
    """`pos_tagger: nltk` without nltk is found before the prototypes and teachers, not at the transfer stage."""
    import sys

    from multidistill.data import augment

    monkeypatch.setitem(sys.modules, "nltk", None)  # `import nltk` now fails, whether or not it is installed
    monkeypatch.setattr(augment, "_choose_tagger", augment._choose_tagger.__wrapped__)
    recipe = tiny_metakd(tiny_run, tmp_path)
    recipe["student"]["augment"] = {"n_iter": 2, "pos_tagger": "nltk"}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2, output
    assert "key 'student.augment.pos_tagger'" in output and "nltk is not installed" in output
    assert "multidistill[pos]" in " ".join(output.split())  # the install hint whole (markup ate its [pos])
    assert "Traceback" not in output
    assert not Path(recipe["output_dir"]).exists()


def test_a_domain_name_that_cannot_name_a_folder_is_refused_before_any_stage_writes(
        tiny_run, tmp_path, monkeypatch, capsys):
    """Stage folders are named after target domains (student-<d>): a target 'dvd store' or 'a/b' is refused by
    key; as a domain that is no target it names no folder and is fine."""
    recipe = tiny_metakd(tiny_run, tmp_path, domains=("books", "dvd store"))
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2, output
    assert "key 'targets'" in output and "domain 'dvd store'" in output and "not a plain name" in output
    assert not Path(recipe["output_dir"]).exists()
    recipe = tiny_metakd(tiny_run, tmp_path, domains=("b&w", "books", "dvd store"))  # every unfit name at once
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    said = " ".join(output.split())
    assert code == 2 and "domain 'b&w' is not a plain name" in said and "domain 'dvd store' is not a plain" in said
    from multidistill.recipes.metakd import MetaKDRecipe, check_inputs

    assert check_inputs(MetaKDRecipe.model_validate({**recipe, "targets": ["books"]})).targets == ("books",)


def test_a_given_meta_teacher_needs_a_domain_branch_over_the_data_domains(tiny_run, tmp_path, monkeypatch, capsys):
    from multidistill.data.tasks import Task
    from multidistill.models import MultiTaskModel
    from multidistill.models.backbone import load_tokenizer
    from multidistill.models.domain_branch import DomainBranchSpec

    recipe = tiny_metakd(tiny_run, tmp_path)
    bert = recipe["teacher"]["model"]["name_or_path"]
    task = Task.model_validate(recipe["data"]["task_specs"][-1])
    for name, branch in (("plain", None), ("other", DomainBranchSpec(domains=["books", "music"]))):
        MultiTaskModel.from_backbone(bert, [task], max_length=32, domain_branch=branch).save_pretrained(
            tmp_path / name, load_tokenizer(bert))
    recipe["teacher"] = {"model_dirs": [str(tmp_path / "plain")]}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2 and "key 'teacher.model_dirs.0'" in output and "has no domain branch" in output, output
    recipe["teacher"] = {"model_dirs": [str(tmp_path / "other")]}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2 and "domain ids would disagree" in output, output
    assert not Path(recipe["output_dir"]).exists()


def test_a_column_store_whose_domain_ids_disagree_with_the_data_is_refused(tiny_run, tmp_path, monkeypatch, capsys):
    """`distill` with example_weights: a store made for other domains, or whose rows carry other domain ids, is
    refused before the run's folder is written."""
    from multidistill.config import DataConfig
    from multidistill.data.prepare import open_example_store
    from multidistill.teachers.columns import write_column_store

    raw, _ = tiny_run
    spec = write_domain_task(Path(raw["data"]["data_root"]))
    data = {**raw["data"], "tasks": ["reviews"], "task_specs": [spec]}
    store = open_example_store(DataConfig.model_validate(data), max_examples_per_task=None, seed=7)
    store.validate(["train"])
    rows = store.examples("reviews", "train")
    ids, right = list(rows["id"]), np.asarray([DOMAINS.index(d) for d in rows["domain"]], dtype=np.int32)
    fingerprint = store.data_fingerprint("reviews", "train")
    for name, domains, domain_ids in (("other-domains", ["books", "music"], right),
                                      ("swapped-ids", list(DOMAINS), 1 - right)):
        write_column_store(tmp_path / name, task="reviews", domains=domains, ids=ids, domain_ids=domain_ids,
                           columns={"w": np.ones(len(ids))}, data_fingerprint=fingerprint, made_from={})
        config = {**raw, "output_dir": str(tmp_path / f"run-{name}"), "data": data,
                  "train": {**raw["train"], "epochs": 1},
                  "example_weights": {"store": str(tmp_path / name), "column": "w"}}
        code, output = run_cli(monkeypatch, capsys, "train-teacher", str(write(config, tmp_path, f"{name}.yaml")))
        assert code == 2 and "key 'example_weights.store'" in output, output
        assert ("made for domains ['books', 'music']" if name == "other-domains" else
                "domain ids in") in output, output
        assert not (tmp_path / f"run-{name}").exists()


def test_baselines_and_the_data_scarce_setting(tiny_run, tmp_path, monkeypatch, capsys):
    """Three domains, one target at half its training rows, every baseline: each its own stages, the stages over
    all domains made for that target, the meta-teacher without the target never sees its rows."""
    recipe = tiny_metakd(tiny_run, tmp_path, domains=("books", "dvd", "music"))
    recipe.update(targets=["books"], baselines=["no_kd", "single_domain", "mixed", "meta_without_target"])
    recipe["data"]["fraction"] = 0.5
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    assert stage_names(root) == sorted([
        "prototypes-books", "meta-teacher-books", "signals-books", "weights-books", "intermediate-books",
        "student-books", "student-nokd-books", "teacher-single-books", "signals-single-books",
        "student-single-books", "teacher-mixed-books", "signals-mixed-books", "student-mixed-books",
        "prototypes-without-books", "meta-teacher-without-books", "signals-without-books", "weights-without-books",
        "intermediate-without-books", "student-without-books", "scores"])
    # The target keeps half of its 32 training rows everywhere; dev is untouched (8 rows per domain).
    assert json.loads((root / "student-books" / "metrics.json").read_text())["train_examples"] == {"reviews": 16}
    assert json.loads((root / "meta-teacher-books" / "metrics.json").read_text())["train_examples"] == {
        "reviews": 16 + 32 + 32}
    without = json.loads((root / "meta-teacher-without-books" / "metrics.json").read_text())
    assert without["train_examples"] == {"reviews": 64} and set(without["domains"]["reviews"]) == {"dvd", "music"}
    # Its rows' domain ids index every domain of the task, so its domain branch is over all three.
    branch = load_config(root / "meta-teacher-without-books" / "config.yaml").model.domain_branch
    assert branch.domains == ["books", "dvd", "music"]
    summary = json.loads((root / "summary.json").read_text())
    assert list(summary["rows"]) == [
        "meta-teacher", "single-domain teachers", "mixed-domain teacher", "meta-teacher without target",
        "Meta-KD student", "no-KD student", "single-domain KD student", "mixed-domain KD student",
        "Meta-KD student (teacher without target)"]
    assert all(set(row["metrics"]["main"]) == {"books"} for row in summary["rows"].values())
    # benchmarks/metakd_teacher_confidence.py reads this folder: each KD arm's teacher on the 16 transfer rows.
    from tests.conftest import load_benchmark

    rows = load_benchmark("metakd_teacher_confidence", monkeypatch).arm_rows(root)
    assert [(row["domain"], row["arm"], row["rows"]) for row in rows] == [
        ("books", arm, 16) for arm in ("signals", "signals-without", "signals-mixed", "signals-single")]
    for row in rows:
        assert 0.5 <= row["top_p"] <= 1 and 0 <= row["gold_p"] <= row["top_p"] and 0 <= row["accuracy"] <= 1
    students = ["Meta-KD student", "Meta-KD student (teacher without target)", "mixed-domain KD student",
                "single-domain KD student"]
    assert [row["student_test"] for row in rows] == [
        summary["rows"][name]["metrics"]["main"]["books"] for name in students]
    # benchmarks/metakd_swap_targets.py: stage B crossed between the two meta-teachers, then scored on test.
    swap = load_benchmark("metakd_swap_targets", monkeypatch)
    assert swap.main([str(root), "--seeds", "1"]) == 0
    crossed = json.loads((root / "swap" / "scores.json").read_text())
    assert set(crossed) == {"A-with-B-without-books", "A-without-B-with-books"}
    assert all(0 <= score <= 1 for score in crossed.values())
    stage = root / "swap" / "A-with-B-without-books"
    assert (stage / "config.yaml").is_file() and "signals-without-books" in (stage / "config.yaml").read_text()
    assert "intermediate-books/model" in (stage / "config.yaml").read_text()


def test_cross_fitted_stage_b_targets_come_from_the_fold_teacher_that_did_not_see_the_row(
        tiny_run, tmp_path, monkeypatch, capsys):
    """student.cross_fit_folds: one meta-teacher per fold trained without it, and stage B distils, for each of the
    target's rows, the probabilities of the one that did not see it; stage A still reads the meta-teacher."""
    from datasets import load_from_disk

    recipe = tiny_metakd(tiny_run, tmp_path, domains=("books", "dvd", "music"))
    recipe.update(targets=["books"])
    recipe["data"]["fraction"] = 0.5
    # First without: a finished run gains cross-fitted students without remaking a stage (new stage names).
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    before = {name: (root / name / "stage.json").read_text() for name in stage_names(root) if name != "scores"}
    recipe["student"]["cross_fit_folds"] = 2
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    assert all((root / name / "stage.json").read_text() == text for name, text in before.items())
    assert "stage intermediate-books: done, reusing" in " ".join(output.split())
    folds = [f"books-fold-{k}-of-2" for k in (1, 2)]
    assert stage_names(root) == sorted([
        "prototypes-books", "meta-teacher-books", "signals-books", "weights-books", "intermediate-books",
        "student-books", *[f"{kind}-{tag}" for tag in folds for kind in ("prototypes", "meta-teacher", "signals")],
        "signals-crossfit-books", "student-crossfit-books", "scores"])
    # Each fold teacher trains on all but 8 of the target's 16 rows (two folds of 8), the other domains whole.
    for tag in folds:
        metrics = json.loads((root / f"meta-teacher-{tag}" / "metrics.json").read_text())
        assert metrics["train_examples"] == {"reviews": 8 + 32 + 32}

    def rows(folder):
        data = load_from_disk(str(folder / "reviews" / "train")).with_format("numpy")
        return [str(i) for i in data["id"]], np.asarray(data["teacher_mean"])

    ids, merged = rows(root / "signals-crossfit-books")
    assert len(ids) == 16
    fold_rows = [rows(root / f"signals-{tag}") for tag in folds]
    manifest = json.loads((root / "signals-crossfit-books" / "manifest.json").read_text())
    assert manifest["cross_fit"]["rows_per_fold"] == [8, 8]
    assert manifest["cross_fit"]["stores"] == [f"signals-{tag}" for tag in folds]
    # The fold teachers' weights are recorded as a store of their own records them (the student's card reads them).
    fold_weights = [json.loads((root / f"signals-{tag}" / "manifest.json").read_text())["teacher_weights"]
                    for tag in folds]
    assert manifest["teacher_weights"] == [w for ws in fold_weights for w in ws]
    assert len(manifest["teacher_weights"]) == len(manifest["teachers"])
    student = json.loads((root / "student-crossfit-books" / "metrics.json").read_text())
    assert sorted(student["teacher_weights"].values()) == sorted(manifest["teacher_weights"])
    # Row by row: the merged target is fold k's teacher's where fold k's teacher did not train on the row.
    from multidistill.data.prepare import open_example_store
    from multidistill.recipes.metakd.config import MetaKDRecipe
    from multidistill.recipes.metakd.plan import union_data

    parsed = MetaKDRecipe.model_validate(read_yaml(write(recipe, tmp_path)))
    trained = [set(open_example_store(union_data(parsed, "books", fold=k), max_examples_per_task=None,
                                      seed=parsed.subset_seed).examples("reviews", "train")["id"]) for k in (0, 1)]
    for i, example in enumerate(ids):
        unseen = [k for k in (0, 1) if example not in trained[k]]
        assert len(unseen) == 1
        assert fold_rows[unseen[0]][0][i] == example
        np.testing.assert_array_equal(merged[i], fold_rows[unseen[0]][1][i])
    # Stage B reads the merged store; stage A the meta-teacher online, as without cross-fitting.
    record = json.loads((root / "student-crossfit-books" / "stage.json").read_text())
    assert record["inputs"]["signals"] == json.loads(
        (root / "signals-crossfit-books" / "stage.json").read_text())["fingerprint"]
    stage_a = json.loads((root / "intermediate-books" / "stage.json").read_text())
    assert stage_a["config"]["online_teachers"] == [str(root / "meta-teacher-books" / "model")]
    summary = json.loads((root / "summary.json").read_text())
    assert any("cross-fitted over 2 folds" in note for note in summary["notes"])
    # benchmarks/metakd_teacher_confidence.py: the cross-fitted targets are the Meta-KD row's transfer set now.
    from tests.conftest import load_benchmark

    confidence = {row["arm"]: row for row in load_benchmark("metakd_teacher_confidence", monkeypatch).arm_rows(root)}
    assert set(confidence) == {"signals", "signals-crossfit"} and confidence["signals"]["student_test"] is None
    assert confidence["signals-crossfit"]["student_test"] == summary["rows"]["Meta-KD student"]["metrics"]["main"][
        "books"]


def test_held_out_fold_and_pick_rows_by_hand():
    from multidistill.errors import DataError
    from multidistill.recipes.metakd.cross_fit import held_out_fold, pick_rows

    fold = held_out_fold(["a", "b", "c"], [{"b", "c"}, {"a"}])  # teacher 0 never saw a; teacher 1 saw only a
    assert fold.tolist() == [0, 1, 1]
    with pytest.raises(DataError, match="row 'a' is held out from 0 of the 2"):
        held_out_fold(["a"], [{"a"}, {"a"}])
    with pytest.raises(DataError, match="row 'a' is held out from 2 of the 2"):
        held_out_fold(["a"], [set(), set()])
    # Two fold stores of 3 rows, one teacher each, 2 classes: row i from store fold[i].
    logits = [np.array([[[1.0, 2.0]], [[3.0, 4.0]], [[5.0, 6.0]]]), np.array([[[-1.0, -2.0]], [[-3.0, -4.0]],
                                                                               [[-5.0, -6.0]]])]
    means = [np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]]), np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])]
    picked_logits, picked_mean = pick_rows(fold, logits, means)
    assert picked_logits.shape == (1, 3, 2)
    np.testing.assert_array_equal(picked_logits[0], [[1.0, 2.0], [-3.0, -4.0], [-5.0, -6.0]])
    np.testing.assert_array_equal(picked_mean, [[0.1, 0.9], [0.8, 0.2], [0.7, 0.3]])


def test_data_fraction_replaces_a_targets_domain_fraction_in_its_own_stages(tiny_run, tmp_path):
    """data.fraction is the target's share of all its rows; its domain_fraction holds where it is no target. The
    plan's row count, which sets the baselines' budgets, is what the target's views hold (it was data.fraction of
    the rows domain_fraction keeps: 0.5 x 8 here, against 16)."""
    from multidistill.data.prepare import open_example_store
    from multidistill.recipes.metakd import MetaKDRecipe, check_inputs
    from multidistill.recipes.metakd.plan import target_data, union_data

    raw = tiny_metakd(tiny_run, tmp_path)  # 32 training rows a domain
    raw["data"].update(tasks=[{"name": "reviews", "domain_fraction": {"books": 0.25}}], fraction=0.5)
    recipe = MetaKDRecipe.model_validate(raw)
    plan = check_inputs(recipe)
    assert plan.train_rows == {"books": 16, "dvd": 16}

    def rows(data, domain):
        store = open_example_store(data, max_examples_per_task=None, seed=recipe.subset_seed)
        return store.examples("reviews", "train").with_format("arrow")["domain"].to_pylist().count(domain)

    for target in ("books", "dvd"):
        assert rows(target_data(recipe, target), target) == plan.train_rows[target]
        assert rows(union_data(recipe, target), target) == plan.train_rows[target]
    assert rows(union_data(recipe, "dvd"), "books") == 8  # no target there: its domain_fraction


def test_baseline_students_get_the_meta_students_budget(tiny_run, tmp_path):
    """By default a baseline trains with stage B's settings for as many passes as stages A and B together; where
    stage B's min_steps floor bites (a scarce target), its extra passes count too."""
    from multidistill.recipes.metakd import MetaKDRecipe, Plan, baseline_train

    def plan(rows: int) -> Plan:
        return Plan("reviews", ("books", "dvd"), ("books", "dvd"), ("books",), "test", "accuracy", {"books": rows})

    raw = tiny_metakd(tiny_run, tmp_path)
    raw["student"].update(intermediate={**raw["student"]["intermediate"], "epochs": 4, "batch_size": 8},
                          prediction={**raw["student"]["prediction"], "epochs": 2, "lr": 3e-5, "batch_size": 8})
    recipe = MetaKDRecipe.model_validate(raw)
    train = baseline_train(recipe, plan(32), "books", seed=7)
    assert (train.epochs, train.lr, train.seed, train.min_steps) == (6, 3e-5, 7, None)
    raw["student"]["prediction"]["min_steps"] = 20  # 32 rows, batch 8: 4 steps an epoch, so B makes 5 passes
    recipe = MetaKDRecipe.model_validate(raw)
    assert baseline_train(recipe, plan(32), "books", seed=7).epochs == 4 + 5
    assert baseline_train(recipe, plan(17), "books", seed=7).epochs == 4 + 20 / 3  # 3 batches, the last short
    assert baseline_train(recipe, plan(80), "books", seed=7).epochs == 4 + 2  # 20 steps in 2 epochs: no floor
    raw["student"]["baseline"] = {**raw["student"]["prediction"], "epochs": 5}
    assert baseline_train(MetaKDRecipe.model_validate(raw), plan(32), "books", seed=7).epochs == 5


def test_stage_b_defaults_to_a_step_floor():
    """Stage B's default keeps the authors' 3 epochs and adds the 150-step floor (15 steps at 10% of Amazon)."""
    from multidistill.recipes.metakd import MetaStudentSection

    section = MetaStudentSection.model_validate({"model": {"name_or_path": "x"}})
    assert (section.prediction.epochs, section.prediction.min_steps) == (3, 150)
    assert section.intermediate.min_steps is None


def test_a_stage_given_in_part_keeps_the_recipes_defaults():
    """`prediction: {epochs: 5}` changes the epochs only: stage B keeps its lr, warm-up and step floor, and a
    key given explicitly (even one equal to TrainConfig's own default) wins over the recipe's."""
    from multidistill.config import TrainConfig
    from multidistill.recipes.metakd import MetaStudentSection

    raw = {"model": {"name_or_path": "x"}, "prediction": {"epochs": 5}, "intermediate": {"lr": 1e-4}}
    section = MetaStudentSection.model_validate(raw)
    prediction = section.prediction
    assert (prediction.epochs, prediction.lr, prediction.warmup_ratio, prediction.min_steps) == (5, 3e-5, 0.1, 150)
    intermediate = section.intermediate
    assert (intermediate.epochs, intermediate.lr, intermediate.lr_scheduler, intermediate.select) == (
        10, 1e-4, "constant", "last")
    assert raw["prediction"] == {"epochs": 5}  # the caller's mapping is not changed
    floorless = MetaStudentSection.model_validate({**raw, "prediction": {"min_steps": None}}).prediction
    assert floorless.min_steps is None and floorless.epochs == 3
    assert TrainConfig().min_steps is None  # the floor is the recipe's default, not the loop's


def test_stage_b_and_the_kd_baselines_distil_an_augmented_transfer_set(tiny_run, tmp_path, monkeypatch, capsys):
    """student.augment: one transfer set per target (its rows plus variants), labelled by each arm's teacher; stage B
    and the KD baselines train on it, stage A and lambda on the target's rows, no-KD on the gold rows for as many
    examples; cross-fitted, each variant takes the targets of the fold teacher that did not see its source row."""
    from datasets import load_from_disk

    recipe = tiny_metakd(tiny_run, tmp_path, domains=("books", "dvd", "music"))
    recipe.update(targets=["books"], baselines=["no_kd", "single_domain", "mixed", "meta_without_target"])
    recipe["data"]["fraction"] = 0.5
    recipe["student"].update(augment={"n_iter": 2, "max_examples": 8, "pos_tagger": "none"}, cross_fit_folds=2)
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    folds = [f"books-fold-{k}-of-2" for k in (1, 2)]
    assert stage_names(root) == sorted([
        "prototypes-books", "meta-teacher-books", "signals-books", "weights-books", "intermediate-books",
        "transfer-books", *[f"{kind}-{tag}" for tag in folds for kind in ("prototypes", "meta-teacher")],
        *[f"signals-augmented-{tag}" for tag in folds], "signals-crossfit-augmented-books",
        "student-crossfit-augmented-books", "student-nokd-augmented-books", "teacher-single-books",
        "signals-single-augmented-books", "student-single-augmented-books", "teacher-mixed-books",
        "signals-mixed-augmented-books", "student-mixed-augmented-books", "prototypes-without-books",
        "meta-teacher-without-books", "signals-without-books", "weights-without-books", "intermediate-without-books",
        "signals-without-augmented-books", "student-without-augmented-books", "scores"])

    def metrics(stage):
        return json.loads((root / stage / "metrics.json").read_text())

    # 16 target rows (half of 32) plus 8 variants; dev untouched: the target's 8 rows only.
    transfer = load_from_disk(str(root / "transfer-books" / "reviews"))
    variants = [str(i) for i in transfer["id"] if "~aug" in str(i)]
    assert len(transfer) == 24 and len(variants) == 8 and set(transfer["domain"]) == {"books"}
    for stage in ("student-crossfit-augmented-books", "student-single-augmented-books",
                  "student-mixed-augmented-books", "student-without-augmented-books"):
        assert metrics(stage)["train_examples"] == {"reviews": 24}, stage
        assert set(metrics(stage)["domains"]["reviews"]) == {"books"}, stage
    for stage in ("intermediate-books", "intermediate-without-books", "student-nokd-augmented-books"):
        assert metrics(stage)["train_examples"] == {"reviews": 16}, stage
    # The same budget in examples: A's passes over 16 rows and B's over 24, spread over each baseline's rows.
    parsed = __import__("multidistill.recipes.metakd", fromlist=["MetaKDRecipe"]).MetaKDRecipe.model_validate(
        read_yaml(write(recipe, tmp_path)))
    a_epochs, b_epochs = parsed.student.intermediate.epochs, parsed.student.prediction.epochs
    nokd = read_yaml(root / "student-nokd-augmented-books" / "config.yaml")["train"]
    single = read_yaml(root / "student-single-augmented-books" / "config.yaml")["train"]
    assert nokd["epochs"] == pytest.approx((a_epochs * 16 + b_epochs * 24) / 16)
    assert single["epochs"] == pytest.approx((a_epochs * 16 + b_epochs * 24) / 24)

    def rows(folder):
        data = load_from_disk(str(folder / "reviews" / "train")).with_format("numpy")
        return [str(i) for i in data["id"]], np.asarray(data["teacher_mean"])

    ids, merged = rows(root / "signals-crossfit-augmented-books")
    assert sorted(ids) == sorted(str(i) for i in transfer["id"])
    from multidistill.data.prepare import open_example_store
    from multidistill.recipes.metakd.plan import union_data

    trained = [set(open_example_store(union_data(parsed, "books", fold=k), max_examples_per_task=None,
                                      seed=parsed.subset_seed).examples("reviews", "train")["id"]) for k in (0, 1)]
    fold_rows = [rows(root / f"signals-augmented-{tag}") for tag in folds]
    for i, example in enumerate(ids):
        source = example.split("~aug")[0]
        unseen = [k for k in (0, 1) if source not in trained[k]]
        assert len(unseen) == 1 and fold_rows[unseen[0]][0][i] == example
        np.testing.assert_array_equal(merged[i], fold_rows[unseen[0]][1][i])
    summary = json.loads((root / "summary.json").read_text())
    assert any("augmented transfer sets" in note and "books 24" in note for note in summary["notes"])
    assert set(summary["rows"]["Meta-KD student"]["metrics"]["main"]) == {"books"}


def test_augmented_stage_b_cannot_be_lambda_weighted(tiny_run, tmp_path, monkeypatch, capsys):
    recipe = tiny_metakd(tiny_run, tmp_path)
    recipe["student"].update(augment={"n_iter": 2}, weighted=True)
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2 and "student.weighted" in output and "gold label" in " ".join(output.split()), output
    assert not Path(recipe["output_dir"]).exists()


def test_a_targets_transfer_task_reads_its_rows_from_the_transfer_set_and_evaluates_on_its_own_files(tmp_path):
    """Both ways of giving domains: one file set per domain (the target's evaluation files, tagged with it) and a
    domain column (the evaluation files as they were, filtered by the view); the domain list is kept."""
    from multidistill.data.tasks import BUILTIN_TASKS
    from multidistill.recipes.metakd.transfer import domain_transfer_task

    amazon = domain_transfer_task(BUILTIN_TASKS["amazon"], tmp_path, "dvd")
    assert not amazon.domain_files and amazon.domains == ("books", "dvd", "electronics")
    assert (amazon.files["train"].format, amazon.files["train"].columns.domain) == ("hf_disk", "domain")
    assert amazon.files["train"].path == str((tmp_path / "amazon").resolve())
    assert {split: (f.path, f.domain) for split, f in amazon.files.items() if split != "train"} == {
        "dev": ("amazon/dvd/dev.tsv", "dvd"), "test": ("amazon/dvd/test.tsv", "dvd")}
    mnli = domain_transfer_task(BUILTIN_TASKS["mnli-genre"], tmp_path, "fiction")
    assert mnli.domains == BUILTIN_TASKS["mnli-genre"].domains and mnli.pair
    assert mnli.files["dev"] == BUILTIN_TASKS["mnli-genre"].files["dev"]
    assert mnli.files["train"].columns.text_b == "text_b"


def test_with_a_transfer_set_the_baselines_get_the_meta_students_examples(tiny_run, tmp_path):
    """Stage A's passes over the target's rows and stage B's over the transfer set, in examples, spread over each
    baseline's own rows (the transfer set for KD, the gold rows for no-KD)."""
    from multidistill.recipes.metakd import MetaKDRecipe, Plan, baseline_train

    raw = tiny_metakd(tiny_run, tmp_path)
    raw["student"].update(intermediate={**raw["student"]["intermediate"], "epochs": 4, "batch_size": 8},
                          prediction={**raw["student"]["prediction"], "epochs": 2, "batch_size": 8,
                                      "min_steps": 20})
    recipe = MetaKDRecipe.model_validate(raw)
    plan = Plan("reviews", ("books", "dvd"), ("books", "dvd"), ("books",), "test", "accuracy", {"books": 32})
    # B over 96 rows: 12 steps an epoch, 2 epochs = 24 steps >= 20, so 2 passes; A: 4 passes over 32 rows.
    examples = 4 * 32 + 2 * 96
    assert baseline_train(recipe, plan, "books", 1, transfer_rows=96, own_rows=96).epochs == examples / 96
    assert baseline_train(recipe, plan, "books", 1, transfer_rows=96).epochs == examples / 32
    # 40 rows: 5 steps an epoch, the 20-step floor makes 4 passes.
    assert baseline_train(recipe, plan, "books", 1, transfer_rows=40).epochs == (4 * 32 + 4 * 40) / 32


def test_stage_a_can_distil_the_augmented_transfer_set_with_each_variant_weighted_as_its_source(
        tiny_run, tmp_path, monkeypatch, capsys):
    """student.augment_intermediate: stage A on the transfer set too, lambda_i of a variant = its source row's;
    the students' names say so (-augmented-ab), and the baselines' budget counts A's passes over the set."""
    from multidistill.teachers.columns import open_column_store

    recipe = tiny_metakd(tiny_run, tmp_path)
    recipe.update(baselines=["no_kd"])
    recipe["student"].update(augment={"n_iter": 2, "max_examples": 8}, augment_intermediate=True)
    seen = spy_on_weights(monkeypatch)
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    assert stage_names(root) == sorted(["prototypes", "meta-teacher", "scores", *[
        f"{stage}-{target}" for target in DOMAINS for stage in (
            "signals", "weights", "transfer", "weights-augmented", "intermediate-augmented", "signals-augmented",
            "student-augmented-ab", "student-nokd-augmented-ab")]])
    # Each target's transfer stage makes the same choice (a POS tagger or none): the summary says it once.
    notes = json.loads((root / "summary.json").read_text())["notes"]
    assert sum("pos_tagger" in note for note in notes) <= 1, notes
    # no_kd only: no KD baseline distils on the set, and the note names none (it did, whichever ran)
    assert any(note.startswith("stages A and B distil on augmented") and "the no-KD baseline trains on the gold "
               "rows" in note for note in notes), notes
    assert json.loads((root / "intermediate-augmented-books" / "metrics.json").read_text())["train_examples"] == {
        "reviews": 32 + 8}
    source = open_column_store(root / "weights-books" / "columns")
    augmented = open_column_store(root / "weights-augmented-books" / "columns")
    lam = dict(zip(source.table["id"], source.column("expertise_weight"), strict=True))
    weights = dict(zip(augmented.table["id"], augmented.column("expertise_weight"), strict=True))
    assert len(weights) == 40 and sum("~aug" in i for i in weights) == 8
    assert all(weights[i] == lam[i.split("~aug")[0]] for i in weights)
    # Stage A's batches carry those weights, variants included.
    stage_a = [(rows, w) for names, rows, w in seen if "transferable_mse" in names]
    assert stage_a and all(w is not None for _, w in stage_a)
    nokd = read_yaml(root / "student-nokd-augmented-ab-books" / "config.yaml")["train"]
    parsed = __import__("multidistill.recipes.metakd", fromlist=["MetaKDRecipe"]).MetaKDRecipe.model_validate(
        read_yaml(write(recipe, tmp_path)))
    a_epochs, b_epochs = parsed.student.intermediate.epochs, parsed.student.prediction.epochs
    assert nokd["epochs"] == pytest.approx((a_epochs + b_epochs) * 40 / 32)


def test_augment_intermediate_needs_a_transfer_set(tiny_run, tmp_path, monkeypatch, capsys):
    recipe = tiny_metakd(tiny_run, tmp_path)
    recipe["student"]["augment_intermediate"] = True
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 2 and "student.augment_intermediate" in output, output
    assert not Path(recipe["output_dir"]).exists()


def test_an_augmented_transfer_set_of_a_task_with_a_domain_column(tiny_run, tmp_path, monkeypatch, capsys):
    """A task whose files hold every domain in a column (as MNLI's genres): the transfer set keeps the target's
    rows only, and stage B is evaluated on the target's dev rows only."""
    raw, _ = tiny_run
    root = Path(raw["data"]["data_root"])
    rng = random.Random(5)
    for split, n in (("train", 24), ("dev", 6), ("test", 6)):
        rows = "".join(f"{_sentence(rng, i % 2)} {d}\t{i % 2}\t{d}\n" for d in ("books", "dvd", "music")
                       for i in range(n))
        (root / f"mixed_{split}.tsv").write_text("text\tlabel\tgenre\n" + rows)
    columns = {"text_a": "text", "label": "label", "domain": "genre"}
    spec = {"name": "mixed", "labels": ["0", "1"], "metrics": ["accuracy"],
            "files": {split: {"path": f"mixed_{split}.tsv", "columns": columns} for split in ("train", "dev", "test")}}
    recipe = tiny_metakd(tiny_run, tmp_path)
    recipe["data"].update(tasks=["mixed"], task_specs=[*raw["data"]["task_specs"], spec])
    recipe.update(targets=["dvd"])
    recipe["student"]["augment"] = {"n_iter": 2, "max_examples": 6, "pos_tagger": "none"}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    metrics = json.loads((Path(recipe["output_dir"]) / "student-augmented-dvd" / "metrics.json").read_text())
    assert metrics["train_examples"] == {"mixed": 24 + 6}
    assert set(metrics["domains"]["mixed"]) == {"dvd"}
    # Run again: every stage is reused (the transfer set's spec names the column's domains as when it was made).
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output


def test_teacher_settings_a_given_meta_teacher_makes_unused_are_noted(tiny_run, tmp_path, capsys):
    from multidistill.recipes.common import note_unused_teacher_settings
    from multidistill.recipes.metakd import MetaKDRecipe

    raw = tiny_metakd(tiny_run, tmp_path)
    raw["teacher"] = {"model_dirs": [str(tmp_path / "meta")], "train": {"epochs": 2}}
    raw["meta_teacher"] = {"gamma1": 0.3}
    note_unused_teacher_settings(MetaKDRecipe.model_validate(raw), also=("meta_teacher",))
    said = " ".join(capsys.readouterr().err.split())  # the recipes' console writes to stderr
    assert "note: teacher.train and meta_teacher not used: the teachers are the given teacher.model_dirs" in said


def test_fp16_of_a_late_stage_without_a_gpu_is_refused_before_any_stage(tiny_run, tmp_path, monkeypatch, capsys):
    from multidistill.training import run

    monkeypatch.setattr(run, "has_accelerator", lambda: False)
    recipe = tiny_metakd(tiny_run, tmp_path)
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)),
                           "--set", "student.prediction.fp16=true")
    assert code == 2 and "key 'student.prediction.fp16'" in output, output
    assert not Path(recipe["output_dir"]).exists()


def test_a_recorded_recipe_read_back_names_only_changed_settings_as_unused(tiny_run, tmp_path, capsys):
    """A run's recorded recipe.yaml writes every field; read back with given teachers, its default teacher.train
    and meta_teacher are not the user's choice and must not be called "not used" (a changed one still is)."""
    from multidistill.config import TrainConfig
    from multidistill.recipes.common import note_unused_teacher_settings
    from multidistill.recipes.metakd import MetaKDRecipe

    raw = tiny_metakd(tiny_run, tmp_path)
    raw["teacher"] = {"model_dirs": [str(tmp_path / "meta")]}
    recorded = MetaKDRecipe.model_validate(raw).model_dump(mode="json")
    note_unused_teacher_settings(MetaKDRecipe.model_validate(recorded), also=("meta_teacher",))
    assert "not used" not in capsys.readouterr().err
    recorded["teacher"]["train"] = {**TrainConfig().model_dump(mode="json"), "epochs": 7}
    note_unused_teacher_settings(MetaKDRecipe.model_validate(recorded), also=("meta_teacher",))
    assert "note: teacher.train not used" in " ".join(capsys.readouterr().err.split())


def test_more_than_one_given_meta_teacher_is_refused(tiny_run, tmp_path):
    """Meta-KD reads one meta-teacher: a second folder in teacher.model_dirs would be ignored, silently."""
    from pydantic import ValidationError

    from multidistill.recipes.metakd import MetaKDRecipe

    raw = tiny_metakd(tiny_run, tmp_path)
    raw["teacher"] = {"model_dirs": [str(tmp_path / "meta"), str(tmp_path / "other")]}
    with pytest.raises(ValidationError, match="teacher.model_dirs: Meta-KD distils from one meta-teacher; give one "
                                              "folder, got 2"):
        MetaKDRecipe.model_validate(raw)
    raw["teacher"] = {"model_dirs": [str(tmp_path / "meta")]}
    assert len(MetaKDRecipe.model_validate(raw).teacher.model_dirs) == 1


class _Stop(Exception):
    """Raised in place of the first stage: what a test reads was said before any stage."""


def test_a_targets_domain_fraction_replaced_by_data_fraction_is_noted_once(tiny_run, tmp_path, monkeypatch, capsys):
    """Below data.fraction 1 a target's own stages keep data.fraction of all its rows, in place of its
    domain_fraction (documented in the field, silent at run time): said once per run, naming both keys, before any
    stage; with where the entry is still read."""
    from multidistill.recipes.metakd import MetaKDRecipe, check_inputs
    from multidistill.recipes.metakd import recipe as module
    from multidistill.recipes.metakd.plan import note_replaced_fractions
    from multidistill.recipes.stages import StageRunner

    def stop(*args, **kwargs):
        raise _Stop

    raw = tiny_metakd(tiny_run, tmp_path)
    raw["data"].update(tasks=[{"name": "reviews", "domain_fraction": {"books": 0.25}}], fraction=0.5)
    monkeypatch.setattr(module, "prototypes_stage", stop)
    capsys.readouterr()
    with pytest.raises(_Stop):
        module.run_metakd(MetaKDRecipe.model_validate(raw), StageRunner(raw["output_dir"]))
    said = " ".join(capsys.readouterr().err.split())
    assert said.count("note:") == 1, said
    assert ("note: data.tasks.0.domain_fraction.books (0.25) replaced by data.fraction (0.5) where that domain is the "
            "target: a target's own stages (its prototypes, meta-teacher, students and baselines) keep data.fraction "
            "of all its training rows, not of what domain_fraction keeps; it still applies where that domain is not "
            "the target (the other targets' stages over all domains)") in said, said
    assert not Path(raw["output_dir"]).exists()

    def note(**changes) -> str:
        recipe = MetaKDRecipe.model_validate({**raw, **changes})
        note_replaced_fractions(recipe, check_inputs(recipe))
        return " ".join(capsys.readouterr().err.split())

    assert "no stage reads it: that domain is the only target" in note(targets=["books"])
    assert "note:" not in note(targets=["dvd"])  # books is no target: its domain_fraction holds everywhere
    assert "note:" not in note(data={**raw["data"], "fraction": 1.0})  # nothing replaced
    both = note(data={**raw["data"], "tasks": [{"name": "reviews", "domain_fraction": {"books": 0.25, "dvd": 0.75}}]})
    assert ("data.tasks.0.domain_fraction.books (0.25) and data.tasks.0.domain_fraction.dvd (0.75) replaced by "
            "data.fraction (0.5) where those domains are the target") in both and "each still applies" in both, both


@pytest.mark.parametrize(("sets", "key"), [
    (["student.model={architecture: bilstm, student_layers: null, pooling: cls}"], "student.model.architecture"),
    (["teacher.model.architecture=bilstm"], "teacher.model.architecture"),
])
def test_a_bilstm_student_or_meta_teacher_is_refused_as_the_recipe_loads(tiny_run, tmp_path, monkeypatch, capsys,
                                                                         sets, key):
    """Both get a domain branch, which a BiLSTM cannot have: a BiLSTM student failed with a pydantic traceback at its
    stage A, after four stages, and its dry run said every stage checked."""
    recipe = tiny_metakd(tiny_run, tmp_path)
    args = [item for value in sets for item in ("--set", value)]
    for dry in ([], ["--dry-run"]):
        code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), *args, *dry)
        said = " ".join(output.split())
        assert code == 2, output
        assert f"{key}: " in said and "domain branch" in said and "architecture: hf" in said, said
        assert "Traceback" not in output
        assert not Path(recipe["output_dir"]).exists()


def test_a_domain_branch_the_user_set_is_left_out_of_the_baselines(tiny_run, tmp_path, monkeypatch, capsys):
    """student.model / teacher.model with a domain_branch (the meta-teacher's and stage A's): the baselines train
    without it (no baseline term trains a branch, and a run config refuses an untrained one), and a model without
    one is passed on as it is (its stages' fingerprints unchanged)."""
    from multidistill.config import ModelConfig
    from multidistill.recipes.metakd.stages import without_branch

    plain = ModelConfig(name_or_path="x")
    assert without_branch(plain) is plain
    assert without_branch(plain.model_copy(update={"domain_branch": {"domains": ["books", "dvd"]}})) == plain
    recipe = tiny_metakd(tiny_run, tmp_path)
    recipe["baselines"] = ["no_kd", "single_domain", "mixed"]
    recipe["targets"] = ["books"]
    recipe["student"]["model"]["domain_branch"] = {"domains": list(DOMAINS)}
    recipe["teacher"]["model"]["domain_branch"] = {"domains": list(DOMAINS)}
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    assert code == 0, output
    root = Path(recipe["output_dir"])
    for stage in ("teacher-single-books", "teacher-mixed", "student-nokd-books", "student-single-books",
                  "student-mixed-books"):
        assert load_config(root / stage / "config.yaml").model.domain_branch is None, stage
    assert load_config(root / "meta-teacher" / "config.yaml").model.domain_branch is not None


@pytest.mark.parametrize(("section", "domains"), [
    ("teacher", ["books", "dvd", "music"]),  # three names over two domains
    ("student", ["books", "music"]),  # other names
    ("teacher", ["dvd", "books"]),  # the task's names in another order
])
def test_a_domain_branch_over_other_domains_is_refused_before_any_stage_writes(tiny_run, tmp_path, monkeypatch,
                                                                               capsys, section, domains):
    """teacher.model's or student.model's domain_branch must be over exactly the task's domains, in their order:
    three names over two domains, or other names, trained every stage (a dry run said every stage checked), the
    stages checking only the domain ids' range. Refused by key, naming both lists, before any stage."""
    recipe = tiny_metakd(tiny_run, tmp_path)
    recipe[section]["model"]["domain_branch"] = {"domains": domains}
    for dry in (["--dry-run"], []):
        code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), *dry)
        said = " ".join(output.split())
        assert code == 2, said
        assert f"key '{section}.model.domain_branch.domains'" in said, said
        assert str(domains) in said and str(list(DOMAINS)) in said, said
        assert "Traceback" not in said and not Path(recipe["output_dir"]).exists()


@pytest.mark.parametrize("section", ["teacher", "student"])
def test_a_branch_that_init_from_keeps_over_other_domains_is_refused_before_any_stage(tiny_run, tmp_path, monkeypatch,
                                                                                     capsys, section):
    """A saved model with a domain branch over other domains, given as teacher.model's or student.model's
    init_from: the recipe adds a branch over the task's domains, which the saved one contradicts, and the stage that
    built the model refused it under an internal key, after the stages before it (a dry run passed). Refused by the
    section's init_from key, naming both lists, before any stage; a saved model without a branch still starts."""
    from transformers import AutoTokenizer

    from multidistill.config import ModelConfig
    from multidistill.data.tasks import Task
    from multidistill.models.build import build_model
    from multidistill.models.specs import DomainBranchSpec

    recipe = tiny_metakd(tiny_run, tmp_path)
    name = recipe["teacher"]["model"]["name_or_path"]
    task = Task.model_validate(recipe["data"]["task_specs"][-1])
    layers = [1] if section == "student" else None  # the student's settings keep student_layers: [1]
    for folder, branch in (("other", DomainBranchSpec(domains=["books", "music"])), ("plain", None)):
        model = build_model(ModelConfig(name_or_path=name, student_layers=layers, domain_branch=branch), [task])
        model.save_pretrained(tmp_path / folder, tokenizer=AutoTokenizer.from_pretrained(name))
    recipe[section]["model"]["init_from"] = str(tmp_path / "other")
    for branch in (None, {"domains": ["books", "dvd"]}):  # also beside a domain_branch over the task's domains
        recipe[section]["model"]["domain_branch"] = branch
        code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), "--dry-run")
        assert code == 2 and f"key '{section}.model.init_from'" in output, output
    recipe[section]["model"].pop("domain_branch")
    for dry in (["--dry-run"], []):
        code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), *dry)
        said = " ".join(output.split())
        assert code == 2, said
        assert (f"key '{section}.model.init_from': {tmp_path / 'other'} keeps a domain branch over ['books', "
                "'music'], but the task's domains are ['books', 'dvd']") in said, said
        assert "Traceback" not in said and not Path(recipe["output_dir"]).exists()
    recipe[section]["model"]["init_from"] = str(tmp_path / "plain")
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), "--dry-run")
    assert code == 0 and "every stage checked" in output, output


def test_targets_whose_stage_names_meet_are_refused_before_any_stage(tiny_run, tmp_path, monkeypatch, capsys):
    """Targets 'media' and 'mixed-media' with the mixed baseline both name 'signals-mixed-media' (the second target's
    Meta-KD signals, the first's mixed-domain signals): a dry run listed it twice, and a run trained the stages before
    the second, then refused it as "made with other settings", and again on every run after. Refused by the stage
    name before any stage."""
    recipe = tiny_metakd(tiny_run, tmp_path, domains=("media", "mixed-media"))
    recipe.update(baselines=["mixed"])
    for dry in (["--dry-run"], []):
        code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), *dry)
        said = " ".join(output.split())
        assert code == 2, said
        assert "stage 'signals-mixed-media': two stages of this run have that name" in said, said
        assert "Traceback" not in said and not any(Path(recipe["output_dir"]).glob("*/stage.json")), said
    recipe.update(targets=["mixed-media"])  # one of them a target: no stage name met twice
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), "--dry-run")
    assert code == 0 and "every stage checked" in output, output


def test_a_meta_teacher_without_the_target_has_a_branch_over_every_domain(tiny_run, tmp_path, monkeypatch, capsys):
    """meta_without_target trains on the other domains, but its rows' domain ids still index every domain of the task
    (Task.domains): its branch, and its student's, are over all of them, whether the recipe adds it (left out) or the
    user gives it; a user's branch over the domains it trains on only is refused."""
    from multidistill.recipes.metakd import stages

    branches = {}
    train_stage = stages.train_stage

    def record(runner, name, **kwargs):
        branch = kwargs["model"].domain_branch
        branches[name] = branch.domains if branch else None
        return train_stage(runner, name, **kwargs)

    monkeypatch.setattr(stages, "train_stage", record)
    every = ["books", "dvd", "music"]
    recipe = tiny_metakd(tiny_run, tmp_path, domains=tuple(every))
    recipe.update(targets=["books"], baselines=["meta_without_target"])
    for given in (None, every):
        recipe["teacher"]["model"]["domain_branch"] = given and {"domains": given}
        branches.clear()
        code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), "--dry-run")
        assert code == 0 and "every stage checked" in output, output
        assert branches["meta-teacher-without-books"] == branches["intermediate-without-books"] == every, branches
    recipe["teacher"]["model"]["domain_branch"] = {"domains": ["dvd", "music"]}
    for dry in (["--dry-run"], []):
        code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), *dry)
        assert code == 2 and "key 'teacher.model.domain_branch.domains': ['dvd', 'music']" in output, output
        assert not Path(recipe["output_dir"]).exists()


def write_unlabelled_hf_task(root: Path, unlabelled=DOMAINS) -> dict:
    """write_domain_task's rows as hf_disk datasets with a ClassLabel column and a domain column, where every
    fourth training row of the ``unlabelled`` domains has no label (-1, as docs/data.md allows)."""
    import datasets

    rng = random.Random(3)
    features = datasets.Features({"text": datasets.Value("string"), "genre": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["0", "1"])})
    columns = {"text_a": "text", "label": "label", "domain": "genre"}
    files = {}
    for split, n in (("train", 32), ("dev", 8), ("test", 8)):
        rows = {"text": [], "genre": [], "label": []}
        for domain in DOMAINS:
            for i in range(n):
                rows["text"].append(f"{_sentence(rng, i % 2)} {domain}")
                rows["genre"].append(domain)
                rows["label"].append(-1 if split == "train" and domain in unlabelled and i % 4 == 3 else i % 2)
        datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(root / "reviews_hf" / split))
        files[split] = {"path": f"reviews_hf/{split}", "format": "hf_disk", "columns": columns}
    return {"name": "reviews_hf", "labels": ["0", "1"], "metrics": ["accuracy", "f1"], "files": files}


def hf_metakd(tiny_run, tmp_path: Path, unlabelled=DOMAINS) -> dict:
    recipe = tiny_metakd(tiny_run, tmp_path)
    spec = write_unlabelled_hf_task(Path(recipe["data"]["data_root"]), unlabelled)
    recipe["data"].update(tasks=["reviews_hf"], task_specs=[*recipe["data"]["task_specs"], spec])
    return recipe


@pytest.mark.parametrize(("sets", "expect"), [
    ([], ("reviews_hf/train: task 'reviews_hf' split 'train' has 16 rows without a label (first: row '3', "
          "domain 'books')", "class prototypes (prototypes.mode: class) and expertise weights need every row's gold "
          "class: label those rows, or drop them from the training data")),
    (["prototypes.mode=domain"], ("task 'reviews_hf' split 'train' has 8 rows without a label (first: row '3', "
                                  "domain 'books')", "expertise weights need the gold class of every training row "
                                  "of a target domain", "or leave the domain out of targets")),
])
def test_training_rows_without_a_label_are_refused_before_any_stage_writes(tiny_run, tmp_path, monkeypatch, capsys,
                                                                           sets, expect):
    """Class prototypes group every row by its gold class and a target's expertise weights read it: unlabelled
    training rows failed in stage 0 (a ValueError), or, with domain prototypes, in the weights stage after the
    meta-teacher had trained (an index error)."""
    recipe = hf_metakd(tiny_run, tmp_path)
    args = [item for value in sets for item in ("--set", value)]
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)), *args)
    said = " ".join(output.split())
    assert code == 2, output
    for fragment in expect:
        assert fragment in said, (fragment, said)
    assert "Traceback" not in output
    assert not Path(recipe["output_dir"]).exists()


def test_unlabelled_rows_outside_the_targets_are_refused_by_class_prototypes_only(tiny_run, tmp_path):
    """Domain prototypes read no label, and only the targets get expertise weights: a domain with unlabelled rows
    that is no target trains the meta-teacher as before (its hard loss skips them); class prototypes say so."""
    from multidistill.errors import DataError
    from multidistill.recipes.metakd import MetaKDRecipe, check_inputs

    raw = {**hf_metakd(tiny_run, tmp_path, unlabelled=("dvd",)), "targets": ["books"]}
    with pytest.raises(DataError, match=r"8 rows without a label \(first: row '35', domain 'dvd'\).*or use "
                                        r"prototypes.mode: domain"):
        check_inputs(MetaKDRecipe.model_validate(raw))
    domain = MetaKDRecipe.model_validate({**raw, "prototypes": {"mode": "domain"}})
    assert check_inputs(domain).targets == ("books",)
    with pytest.raises(DataError, match=r"first: row '35', domain 'dvd'.*leave the domain out of targets"):
        check_inputs(domain.model_copy(update={"targets": ["books", "dvd"]}))


def unlabelled_split(recipe: dict, split: str, domains=DOMAINS) -> dict:
    """The recipe with ``split``'s files of ``domains`` read without their label column."""
    spec = recipe["data"]["task_specs"][-1]
    for domain in domains:
        spec["domain_files"][domain][split]["columns"] = {"text_a": "text"}
    return recipe


def test_an_unlabelled_test_split_is_not_the_default_report_split(tiny_run, tmp_path, capsys):
    """report_split defaults to test only where every target's test rows carry labels; else data.eval_split, with
    a note saying why (the scores stage failed on it after every other stage, naming data.eval_split)."""
    from multidistill.recipes.metakd import MetaKDRecipe, check_inputs

    raw = {**tiny_metakd(tiny_run, tmp_path), "report_split": None}  # configs/metakd_amazon.yaml sets test
    assert check_inputs(MetaKDRecipe.model_validate(raw)).report_split == "test"
    capsys.readouterr()
    plan = check_inputs(MetaKDRecipe.model_validate(unlabelled_split(raw, "test", ("dvd",))))
    said = " ".join(capsys.readouterr().err.split())
    assert plan.report_split == "dev"
    assert ("note: report_split not set and task 'reviews' split 'test' has no labelled rows in target domain "
            "'dvd' (a split without labels cannot be scored): the scores are on data.eval_split ('dev')") in said, said
    assert said.count("note:") == 1
    books = MetaKDRecipe.model_validate({**raw, "targets": ["books"]})  # its test rows carry labels
    assert check_inputs(books).report_split == "test"
    assert "note:" not in capsys.readouterr().err


def test_an_unlabelled_report_split_is_refused_before_any_stage_writes(tiny_run, tmp_path, monkeypatch, capsys):
    from multidistill.errors import ConfigError
    from multidistill.recipes.metakd import MetaKDRecipe, check_inputs

    recipe = unlabelled_split({**tiny_metakd(tiny_run, tmp_path), "report_split": "test"}, "test")
    code, output = run_cli(monkeypatch, capsys, "run", str(write(recipe, tmp_path)))
    said = " ".join(output.split())
    assert code == 2, output
    assert ("key 'report_split': task 'reviews' split 'test' has no labelled rows in target domains 'books', 'dvd'"
            in said), said
    assert "set report_split: dev" in said and "Traceback" not in output
    assert not Path(recipe["output_dir"]).exists()
    # A target's dev rows select its student: unlabelled, they are refused by data.eval_split's key.
    raw = unlabelled_split(tiny_metakd(tiny_run, tmp_path), "dev", ("dvd",))
    with pytest.raises(ConfigError, match=r"key 'data.eval_split': task 'reviews' split 'dev' has no labelled rows "
                                          r"in target domain 'dvd'"):
        check_inputs(MetaKDRecipe.model_validate(raw))
