"""Domains in the data model: a domain column or one file set per domain, `Task.domains`, domain ids in views
and batches, selection by domain and by a seeded fraction of a domain's training rows, per-domain metrics,
batches that mix domains, and every bad domain option refused before anything is written."""

from __future__ import annotations

import json
import random
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from multidistill.config import DataConfig, TeacherRunConfig, load_config
from multidistill.data.batches import row_lengths
from multidistill.data.collate import collate
from multidistill.data.domains import DomainSelection, fold_assignment
from multidistill.data.prepare import open_example_store, prepare_data
from multidistill.data.readers import read_split
from multidistill.data.sampler import MultiTaskBatchPlanner
from multidistill.data.store import ExampleStore
from multidistill.data.tasks import BUILTIN_TASKS, Task, fingerprint_spec
from multidistill.errors import ConfigError, DataError
from multidistill.evaluation.evaluate import domain_metrics, evaluate
from multidistill.models.backbone import load_tokenizer

from .conftest import NEGATIVE, POSITIVE
from .test_cli import run_cli

DOMAINS = ("books", "dvd")


def _rows(rng: random.Random, n: int) -> list[tuple[str, int]]:
    out = []
    for _ in range(n):
        label = rng.randint(0, 1)
        out.append((f"the film was {rng.choice(POSITIVE if label else NEGATIVE)}", label))
    return out


def write_domain_column_task(root: Path, n_train: int = 40, n_dev: int = 12, seed: int = 0) -> dict:
    """One TSV per split with a `genre` column (books / dvd, alternating); the task spec as a dict."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        lines = "".join(f"{text}\t{label}\t{DOMAINS[i % 2]}\n" for i, (text, label) in enumerate(_rows(rng, n)))
        (root / f"{split}.tsv").write_text("text\tlabel\tgenre\n" + lines)
    columns = {"text_a": "text", "label": "label", "domain": "genre"}
    return {"name": "reviews", "labels": ["0", "1"], "metrics": ["accuracy", "f1"],
            "files": {split: {"path": str(root / f"{split}.tsv"), "columns": columns} for split in ("train", "dev")}}


def write_domain_files_task(root: Path, n_train: int = 30, n_dev: int = 10, seed: int = 0) -> dict:
    """books/ and dvd/ folders with train/dev TSVs (Amazon's layout); the task spec as a dict."""
    rng = random.Random(seed)
    for domain in DOMAINS:
        (root / domain).mkdir(parents=True, exist_ok=True)
        for split, n in (("train", n_train), ("dev", n_dev)):
            (root / domain / f"{split}.tsv").write_text(
                "text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in _rows(rng, n)))
    columns = {"text_a": "text", "label": "label"}
    return {"name": "reviews", "labels": ["0", "1"], "metrics": ["accuracy", "f1"],
            "domain_files": {domain: {split: {"path": str(root / domain / f"{split}.tsv"), "columns": columns}
                                      for split in ("train", "dev")} for domain in DOMAINS}}


def data_config(tmp_path: Path, spec: dict, **ref) -> DataConfig:
    return DataConfig(tasks=[{"name": spec["name"], **ref}], task_specs=[spec], cache_dir=str(tmp_path / "cache"),
                      data_root=str(tmp_path))


# ------------------------------------------------------------------------------------------- reading


def test_domain_files_give_each_row_its_files_domain_and_unique_ids(tmp_path) -> None:
    task = Task.model_validate(write_domain_files_task(tmp_path / "data"))
    assert task.domains == DOMAINS and task.has_domains and task.splits == ["train", "dev"]
    rows = read_split(task, "train")
    assert Counter(rows["domain"]) == {"books": 30, "dvd": 30}
    assert rows["id"][:2] == ["books:2", "books:3"] and rows["id"][30] == "dvd:2"  # line numbers, prefixed
    assert len(set(rows["id"])) == 60


def test_a_domain_column_is_read_and_its_names_are_known_after_reading(tmp_path) -> None:
    spec = write_domain_column_task(tmp_path / "data")
    task = Task.model_validate(spec)
    assert task.has_domains and task.domains == ()  # not declared: read from the data
    store = open_example_store(data_config(tmp_path, spec), max_examples_per_task=None, seed=0)
    store.validate(["train", "dev"])
    assert store.tasks["reviews"].domains == DOMAINS


def test_declared_domains_refuse_a_row_of_another_domain(tmp_path, tiny_model_dir) -> None:
    spec = write_domain_column_task(tmp_path / "data")
    spec["domains"] = ["books"]
    tokenizer = load_tokenizer(str(tiny_model_dir))
    with pytest.raises(DataError, match=r"row '3' has domain 'dvd', which is not one of the task's domains \(books\)"
                                        r".*a saved model's task keeps the domains it was trained with") as error:
        prepare_data(data_config(tmp_path, spec), tokenizer, 32, max_examples_per_task=None, seed=0)
    assert f"task 'reviews' split 'train' ({spec['files']['train']['path']}): row '3'" in str(error.value)


@pytest.mark.parametrize(("one", "other"), [("caf\u00e9", "cafe\u0301"), ("dvd video", "dvd\u00a0video")])
def test_domain_names_that_read_alike_are_refused_naming_both_spellings(tmp_path, tiny_model_dir, one, other) -> None:
    """A domain written once precomposed and once with a combining accent, or once with a no-break space, was two
    domains that every table and figure printed alike. Refused, showing both spellings."""
    spec = write_domain_column_task(tmp_path / "data")
    path = Path(spec["files"]["train"]["path"])
    text = path.read_text().replace("\tbooks\n", f"\t{one}\n").replace("\tdvd\n", f"\t{other}\n", 1)
    path.write_text(text, encoding="utf-8")
    store = open_example_store(data_config(tmp_path, spec), max_examples_per_task=None, seed=0)
    with pytest.raises(DataError, match="read the same but are other strings") as error:
        store.validate(["train", "dev"])
        store.domains("reviews")
    said = str(error.value)
    assert "task 'reviews'" in said and ascii(one) in said and ascii(other) in said, said
    spec["domains"] = sorted([one, "dvd"])  # declared: the row of the other spelling is refused, spelled out
    with pytest.raises(DataError, match="is not one of the task's domains") as error:
        prepare_data(data_config(tmp_path, spec), load_tokenizer(str(tiny_model_dir)), 32, max_examples_per_task=None,
                     seed=0)
    assert f"spelled {ascii(other)}" in str(error.value), str(error.value)


def test_a_row_without_a_domain_among_rows_with_one_is_a_data_error(tmp_path, tiny_model_dir) -> None:
    spec = write_domain_column_task(tmp_path / "data")
    path = Path(spec["files"]["train"]["path"])
    path.write_text(path.read_text().replace("\tbooks\n", "\t\n", 1))
    tokenizer = load_tokenizer(str(tiny_model_dir))
    with pytest.raises(DataError, match=r"train\.tsv, line 2, field 'domain' \(column 'genre'\): no domain"):
        prepare_data(data_config(tmp_path, spec), tokenizer, 32, max_examples_per_task=None, seed=0)


def test_a_domain_column_of_empty_cells_gives_no_domains(tmp_path, tiny_model_dir) -> None:
    # What an MKD transfer set of a task without domains looks like: the column is mapped, every cell empty.
    spec = write_domain_column_task(tmp_path / "data")
    for split in ("train", "dev"):
        path = Path(spec["files"][split]["path"])
        path.write_text(path.read_text().replace("\tbooks\n", "\t\n").replace("\tdvd\n", "\t\n"))
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = prepare_data(data_config(tmp_path, spec), tokenizer, 32, max_examples_per_task=None, seed=0)
    assert data.tasks["reviews"].domains == () and "domain_id" not in data.train_sets["reviews"].column_names
    with pytest.raises(ConfigError, match=r"key 'data.tasks.0.domains_include': task 'reviews' has no domains"):
        _store(tmp_path, spec, domains_include=["books"]).validate(["train"])


@settings(max_examples=15, deadline=None)
@given(sizes=st.dictionaries(st.sampled_from(["books", "dvd", "kitchen", "é-tv", "a b"]), st.integers(1, 6),
                             min_size=1, max_size=4),
       layout=st.sampled_from(["column", "files"]))
def test_any_domain_layout_reads_every_row_with_its_domain(sizes, layout) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        columns = {"text_a": "text", "label": "label"}
        if layout == "files":
            files = {}
            for name, n in sizes.items():
                path = root / f"{len(files)}.tsv"
                path.write_text("text\tlabel\n" + "good film\t1\n" * n)
                files[name] = {"train": {"path": str(path), "columns": columns}}
            spec = {"domain_files": files}
        else:
            names = [name for name, n in sizes.items() for _ in range(n)]
            random.Random(0).shuffle(names)
            (root / "t.tsv").write_text("text\tlabel\tdomain\n" + "".join(f"good film\t1\t{d}\n" for d in names))
            spec = {"files": {"train": {"path": str(root / "t.tsv"), "columns": {**columns, "domain": "domain"}}}}
        task = Task.model_validate({"name": "t", "labels": ["0", "1"], **spec})
        rows = read_split(task, "train")
        assert Counter(rows["domain"]) == sizes and len(set(rows["id"])) == len(rows)
        store = ExampleStore([task], root, root / "cache")
        store.validate(["train"])
        assert store.tasks["t"].domains == tuple(sorted(sizes))


def test_builtin_amazon_and_mnli_genres_have_domains() -> None:
    assert BUILTIN_TASKS["amazon"].domains == ("books", "dvd", "electronics")
    assert set(BUILTIN_TASKS["amazon"].splits) == {"train", "dev", "test"}
    assert BUILTIN_TASKS["mnli-genre"].domains == ("fiction", "government", "slate", "telephone", "travel")
    assert not BUILTIN_TASKS["sst2"].has_domains and not BUILTIN_TASKS["amazon-books"].has_domains


def test_tasks_without_domain_files_keep_their_fingerprint_spec() -> None:
    # What data fingerprints hash: the spec as it was before domains existed.
    dump = fingerprint_spec(BUILTIN_TASKS["sst2"])
    assert set(dump) == {"name", "type", "labels", "pair", "metrics", "domain", "files", "from_tasks", "sources"}


def test_real_amazon_domains_read_per_domain(shared_data) -> None:
    rows = read_split(BUILTIN_TASKS["amazon"], "test", shared_data)
    assert Counter(rows["domain"]) == {"books": 200, "dvd": 200, "electronics": 200}


@pytest.mark.parametrize(("spec", "message"), [
    ({"files": {"train": {"path": "a.tsv", "columns": {"text_a": "t", "label": "l"}}},
      "domain_files": {"x": {"train": {"path": "b.tsv", "columns": {"text_a": "t", "label": "l"}}}}},
     "either files or domain_files"),
    ({"domain_files": {"x": {"train": {"path": "b.tsv", "columns": {"text_a": "t", "label": "l", "domain": "d"}}}}},
     "domain_files already names each file's domain"),
    ({"domains": ["a"], "files": {"train": {"path": "a.tsv", "columns": {"text_a": "t", "label": "l"}}}},
     "no file maps columns.domain"),
])
def test_contradictory_domain_specs_are_refused(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        Task.model_validate({"name": "t", "labels": ["0", "1"], **spec})


# ------------------------------------------------------------------------------------ views and batches


@pytest.mark.parametrize("layout", ["column", "files"])
def test_domain_ids_travel_from_the_view_to_batches(layout, tmp_path, tiny_model_dir) -> None:
    writer = write_domain_column_task if layout == "column" else write_domain_files_task
    spec = writer(tmp_path / "data")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = prepare_data(data_config(tmp_path, spec), tokenizer, 32, max_examples_per_task=None, seed=0)
    task, view = data.tasks["reviews"], data.train_sets["reviews"]
    assert task.domains == DOMAINS
    names = data.store.examples("reviews", "train")["domain"]
    rows = list(range(len(view)))
    batch = collate(task, view[rows], tokenizer.pad_token_id)
    assert batch["domain_ids"].dtype == torch.int64 and batch["domain_ids"].shape == (len(view),)
    assert [DOMAINS[i] for i in batch["domain_ids"].tolist()] == names
    dev_names = data.store.examples("reviews", "dev")["domain"]
    assert [DOMAINS[i] for i in data.eval_sets["reviews"]["domain_id"]] == dev_names


def test_tasks_without_domains_have_no_domain_ids(tiny_run, tiny_model_dir) -> None:
    raw, _ = tiny_run
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = prepare_data(DataConfig.model_validate(raw["data"]), tokenizer, 32, max_examples_per_task=None, seed=0)
    view = data.train_sets["toy_sent"]
    assert "domain_id" not in view.column_names
    assert "domain_ids" not in collate(data.tasks["toy_sent"], view[[0, 1]], 0)


def test_a_batch_of_a_two_domain_task_holds_both_domains(tmp_path, tiny_model_dir) -> None:
    spec = write_domain_files_task(tmp_path / "data", n_train=64)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = prepare_data(data_config(tmp_path, spec), tokenizer, 32, max_examples_per_task=None, seed=0)
    view = data.train_sets["reviews"]
    domain_ids = np.asarray(view[list(range(len(view)))]["domain_id"])
    for lengths in (None, {"reviews": row_lengths(view)}):  # shuffled, and length-grouped batches
        planner = MultiTaskBatchPlanner({"reviews": len(view)}, batch_size=16, seed=1, lengths=lengths,
                                        group_size=2)
        mixed = [len(set(domain_ids[batch.indices])) == 2 for epoch in range(3) for batch in planner.epoch(epoch)]
        assert sum(mixed) >= 0.9 * len(mixed)


# -------------------------------------------------------------------------------------------- selection


def _store(tmp_path: Path, spec: dict, seed: int = 0, **ref) -> ExampleStore:
    return open_example_store(data_config(tmp_path, spec, **ref), max_examples_per_task=None, seed=seed)


@pytest.mark.parametrize("layout", ["column", "files"])
def test_include_and_exclude_select_domains_in_every_split(layout, tmp_path) -> None:
    writer = write_domain_column_task if layout == "column" else write_domain_files_task
    spec = writer(tmp_path / "data")
    for ref in ({"domains_include": ["dvd"]}, {"domains_exclude": ["books"]}):
        store = _store(tmp_path, spec, **ref)
        for split in ("train", "dev"):
            assert set(store.examples("reviews", split)["domain"]) == {"dvd"}
        assert store.tasks["reviews"].domains == DOMAINS  # ids stay indices into every domain


def test_fraction_is_seeded_cuts_training_rows_only_and_leaves_dev_untouched(tmp_path) -> None:
    spec = write_domain_files_task(tmp_path / "data", n_train=30, n_dev=10)
    full = _store(tmp_path, spec)
    cut = _store(tmp_path, spec, seed=5, domain_fraction={"books": 0.25})
    train = Counter(cut.examples("reviews", "train")["domain"])
    assert train == {"books": 8, "dvd": 30}  # round(0.25 * 30) = 7.5 -> 8 (half up)
    assert cut.examples("reviews", "dev")["id"] == full.examples("reviews", "dev")["id"]
    assert cut.data_fingerprint("reviews", "dev") == full.data_fingerprint("reviews", "dev")
    assert cut.data_fingerprint("reviews", "train") != full.data_fingerprint("reviews", "train")
    again = _store(tmp_path, spec, seed=5, domain_fraction={"books": 0.25}).examples("reviews", "train")["id"]
    other = _store(tmp_path, spec, seed=6, domain_fraction={"books": 0.25}).examples("reviews", "train")["id"]
    assert again == cut.examples("reviews", "train")["id"] and other != again


def test_unselected_data_keeps_its_fingerprint(tmp_path) -> None:
    spec = write_domain_files_task(tmp_path / "data")
    plain = ExampleStore([Task.model_validate(spec)], tmp_path, tmp_path / "cache")
    assert _store(tmp_path, spec).data_fingerprint("reviews", "train") == plain.data_fingerprint("reviews", "train")


@settings(max_examples=60, deadline=None)
@given(codes=st.lists(st.integers(0, 2), min_size=1, max_size=60), seed=st.integers(0, 2**32 - 1),
       fraction=st.floats(0.01, 1.0), other=st.floats(0.01, 1.0))
def test_keep_rows_properties(codes, seed, fraction, other) -> None:
    domains = ("a", "b", "c")
    codes = np.asarray(codes)
    n_a = int((codes == 0).sum())
    selection = DomainSelection("data.tasks.0", fraction={"a": fraction})
    if n_a and int(fraction * n_a + 0.5) == 0 or not n_a:
        with pytest.raises(ConfigError, match="domain_fraction.a"):
            selection.keep_rows(codes, domains, "train", seed)
        return
    kept = selection.keep_rows(codes, domains, "train", seed)
    assert (np.diff(kept) > 0).all()
    assert int((codes[kept] == 0).sum()) == int(fraction * n_a + 0.5)
    assert set(np.flatnonzero(codes != 0)) <= set(kept)  # other domains untouched
    assert selection.keep_rows(codes, domains, "dev", seed) is None  # dev and test untouched
    # A domain's subset depends on its own rows and the seed only, not on another domain's fraction.
    both = DomainSelection("data.tasks.0", fraction={"a": fraction, "b": other})
    if (codes == 1).any() and int(other * (codes == 1).sum() + 0.5):
        kept_both = both.keep_rows(codes, domains, "train", seed)
        assert list(kept_both[codes[kept_both] == 0]) == list(kept[codes[kept] == 0])


@settings(max_examples=60, deadline=None)
@given(codes=st.lists(st.integers(0, 2), min_size=1, max_size=60), seed=st.integers(0, 2**32 - 1),
       fraction=st.sampled_from([None, 0.5, 1.0]), folds=st.integers(2, 5))
def test_holdout_folds_partition_the_domains_kept_rows(codes, seed, fraction, folds) -> None:
    domains = ("a", "b", "c")
    codes = np.asarray([*codes, 1])  # a row of another domain: a fold of all rows would leave none (refused)
    if not (codes == 0).any() or fraction is not None and int(fraction * (codes == 0).sum() + 0.5) == 0:
        return
    share = {"a": fraction} if fraction is not None else {}
    kept = DomainSelection("data.tasks.0", fraction=share).keep_rows(codes, domains, "train", seed)
    kept = np.arange(len(codes)) if kept is None else kept
    outs = []
    for fold in range(folds):
        selection = DomainSelection("data.tasks.0", fraction=share, holdout=("a", folds, fold))
        left = selection.keep_rows(codes, domains, "train", seed)
        assert set(left) <= set(kept) and set(np.flatnonzero(codes != 0)) <= set(left)  # others untouched
        assert selection.keep_rows(codes, domains, "dev", seed) is None  # dev and test untouched
        outs.append(set(kept) - set(left))
    # The folds left out are disjoint, cover the domain's kept rows, and differ in size by at most one row.
    assert set().union(*outs) == set(kept[codes[kept] == 0])
    assert sum(len(out) for out in outs) == int((codes[kept] == 0).sum())
    assert max(map(len, outs)) - min(map(len, outs)) <= 1
    # The fold of a row is what fold_assignment says over the domain's kept rows, in row order.
    assignment = fold_assignment(int((codes[kept] == 0).sum()), folds, seed, "a")
    for fold, out in enumerate(outs):
        assert sorted(out) == list(kept[codes[kept] == 0][assignment == fold])


def test_fold_assignment_is_seeded_and_balanced() -> None:
    first = fold_assignment(7, 3, seed=42, domain="books")
    assert list(first) == list(fold_assignment(7, 3, seed=42, domain="books"))
    assert sorted(Counter(first.tolist()).values()) == [2, 2, 3]
    assert list(first) != list(fold_assignment(7, 3, seed=43, domain="books"))
    assert list(first) != list(fold_assignment(7, 3, seed=42, domain="dvd"))


def test_a_holdout_is_part_of_the_training_fingerprint_only_when_set(tmp_path) -> None:
    spec = write_domain_files_task(tmp_path / "data")
    plain, fold0 = _store(tmp_path, spec), _store(tmp_path, spec, domain_holdout={"domain": "books", "folds": 2,
                                                                                  "fold": 0})
    fold1 = _store(tmp_path, spec, domain_holdout={"domain": "books", "folds": 2, "fold": 1})
    prints = {store.data_fingerprint("reviews", "train") for store in (plain, fold0, fold1)}
    assert len(prints) == 3
    assert plain.data_fingerprint("reviews", "dev") == fold0.data_fingerprint("reviews", "dev")
    books = set(plain.examples("reviews", "train").filter(lambda r: r["domain"] == "books")["id"])
    left = [books - set(store.examples("reviews", "train")["id"]) for store in (fold0, fold1)]
    assert left[0] and left[1] and not left[0] & left[1] and left[0] | left[1] == books


# ----------------------------------------------------------------------------------- bad domain options


@pytest.mark.parametrize(("ref", "expect"), [
    ({"domains_include": ["music"]}, ("key 'data.tasks.0.domains_include'", "no domain 'music'", "books, dvd")),
    ({"domains_exclude": ["books", "dvd"]}, ("key 'data.tasks.0.domains_exclude'", "leave no domain")),
    ({"domain_fraction": {"vhs": 0.5}}, ("key 'data.tasks.0.domain_fraction'", "no domain 'vhs'", "books, dvd")),
    ({"domain_fraction": {"books": 0.01}}, ("key 'data.tasks.0.domain_fraction.books'", "keeps no row")),
    ({"domains_exclude": ["books"], "domain_fraction": {"books": 0.5}},
     ("key 'data.tasks.0.domain_fraction'", "'books' is not selected")),
    ({"domain_holdout": {"domain": "vhs", "folds": 2, "fold": 0}},
     ("key 'data.tasks.0.domain_holdout.domain'", "no domain 'vhs'")),
    ({"domains_exclude": ["books"], "domain_holdout": {"domain": "books", "folds": 2, "fold": 0}},
     ("key 'data.tasks.0.domain_holdout.domain'", "'books' is not selected")),
])
@pytest.mark.parametrize("layout", ["column", "files"])
def test_bad_domain_options_are_config_errors_naming_the_key(ref, expect, layout, tmp_path) -> None:
    writer = write_domain_column_task if layout == "column" else write_domain_files_task
    spec = writer(tmp_path / "data")
    with pytest.raises(ConfigError) as caught:
        _store(tmp_path, spec, **ref).validate(["train", "dev"])
    for fragment in expect:
        assert fragment in str(caught.value)


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5])
def test_a_fraction_outside_zero_one_is_refused_at_load(fraction, tiny_run) -> None:
    raw, write = tiny_run
    raw["data"]["tasks"] = [{"name": "toy_sent", "domain_fraction": {"books": fraction}}]
    with pytest.raises(ConfigError, match=r"key 'data.tasks.0.domain_fraction.books'"):
        load_config(write(raw))


@pytest.mark.parametrize(("holdout", "match"), [
    ({"domain": "books", "folds": 2, "fold": 2}, r"domain_holdout.*fold 2 is not one of the 2 folds"),
    ({"domain": "books", "folds": 1, "fold": 0}, r"domain_holdout.folds"),
    ({"domain": "books", "folds": 2, "fold": -1}, r"domain_holdout.fold"),
])
def test_a_holdout_fold_out_of_range_is_refused_at_load(holdout, match, tiny_run) -> None:
    raw, write = tiny_run
    raw["data"]["tasks"] = [{"name": "toy_sent", "domain_holdout": holdout}]
    with pytest.raises(ConfigError, match=match):
        load_config(write(raw))


def test_domain_options_on_a_task_without_domains_are_refused(tmp_path, tiny_run) -> None:
    raw, _ = tiny_run
    raw["data"]["tasks"] = [{"name": "toy_sent", "domains_include": ["books"]}]
    with pytest.raises(ConfigError, match=r"key 'data.tasks.0.domains_include': task 'toy_sent' has no domains"):
        open_example_store(DataConfig.model_validate(raw["data"]), max_examples_per_task=None, seed=0)


def test_include_and_exclude_together_are_refused(tiny_run) -> None:
    raw, write = tiny_run
    raw["data"]["tasks"] = [{"name": "toy_sent", "domains_include": ["a"], "domains_exclude": ["b"]}]
    with pytest.raises(ConfigError, match=r"key 'data.tasks.0'.*domains_include or domains_exclude, not both"):
        load_config(write(raw))


# ---------------------------------------------------------------------------------------------- metrics


def test_domain_metrics_score_each_domain_and_average_them() -> None:
    task = Task(name="t", labels=["0", "1"], metrics=["accuracy"], domains=("a", "b", "c"),
                files={"dev": {"path": "x", "columns": {"text_a": 0, "label": 1, "domain": 2}}})
    predictions = np.array([[0, 1], [0, 1], [1, 0], [1, 0], [0, 1]], dtype=np.float32)  # classes 1 1 0 0 1
    labels = np.array([1, 0, 0, 0, 0])
    domain_ids = np.array([0, 0, 0, 2, 2])  # a: 2 of 3 right, c: 1 of 2; b has no rows: not scored
    per_domain, average = domain_metrics(task, predictions, labels, domain_ids)
    assert per_domain == {"a": {"accuracy": pytest.approx(2 / 3)}, "c": {"accuracy": 0.5}}
    assert average == {"accuracy": pytest.approx((2 / 3 + 0.5) / 2)}  # unweighted over domains, not rows


class _ConstantModel:
    """Predicts class 1 for every row (what `evaluate` needs of a model)."""

    def eval(self):
        return self

    def __call__(self, *, task, input_ids, attention_mask, token_type_ids=None):
        logits = torch.tensor([[0.0, 1.0]]).repeat(len(input_ids), 1)
        return type("Out", (), {"logits": logits})()


def test_evaluate_reports_domains_only_for_tasks_with_domains(tmp_path, tiny_model_dir, tiny_run) -> None:
    spec = write_domain_files_task(tmp_path / "data")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = prepare_data(data_config(tmp_path, spec), tokenizer, 32, max_examples_per_task=None, seed=0,
                        need_train=False)
    result = evaluate(_ConstantModel(), data.tasks, data.eval_sets, batch_size=4, pad_token_id=0,
                      device=torch.device("cpu")).to_dict()
    examples = data.store.examples("reviews", "dev")
    for name in DOMAINS:
        labels = [y for y, d in zip(examples["label"], examples["domain"], strict=True) if d == name]
        assert result["domains"]["reviews"][name]["accuracy"] == pytest.approx(np.mean(labels))
    assert result["domain_average"]["reviews"]["accuracy"] == pytest.approx(
        np.mean([result["domains"]["reviews"][d]["accuracy"] for d in DOMAINS]))

    raw, _ = tiny_run
    plain = prepare_data(DataConfig.model_validate(raw["data"]), tokenizer, 32, max_examples_per_task=None, seed=0,
                         need_train=False)
    plain_result = evaluate(_ConstantModel(), plain.tasks, {"toy_sent": plain.eval_sets["toy_sent"]}, batch_size=4,
                            pad_token_id=0, device=torch.device("cpu")).to_dict()
    assert set(plain_result) == {"tasks", "main", "average"}


def test_train_then_evaluate_per_domain(tmp_path, tiny_model_dir, monkeypatch, capsys) -> None:
    spec = write_domain_column_task(tmp_path / "data")
    config = {"output_dir": str(tmp_path / "run"), "model": {"name_or_path": str(tiny_model_dir), "max_seq_length": 32},
              "data": {"tasks": ["reviews"], "task_specs": [spec], "cache_dir": str(tmp_path / "cache")},
              "train": {"epochs": 1, "batch_size": 8, "eval_batch_size": 16, "seed": 1}}
    TeacherRunConfig.model_validate(config)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    code, output = run_cli(monkeypatch, capsys, "train-teacher", str(tmp_path / "run.yaml"))
    assert code == 0, output
    saved = json.loads((tmp_path / "run" / "model" / "multidistill_model.json").read_text())
    assert saved["tasks"][0]["domains"] == list(DOMAINS)  # read from the data, then saved with the model
    code, output = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "run" / "model"), "--per-domain",
                            "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, output
    said = " ".join(output.split())  # a long temporary path wraps the table's title
    assert "per domain" in said and "books" in said and "dvd" in said
    scores = json.loads((tmp_path / "run" / "eval_dev.json").read_text())
    assert set(scores["domains"]["reviews"]) == set(DOMAINS)
    assert set(scores["domain_average"]["reviews"]) == {"accuracy", "f1"}
    # The run's report shows them too (its metrics.json holds the kept model's per-domain scores).
    from multidistill.report import build_report

    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())
    report = build_report(tmp_path / "run", progress=False).read_text()
    assert "### reviews per domain" in report
    assert f"| {trained['domains']['reviews']['books']['accuracy']:.4f} |" in report

    # soft-targets labels only the selected domains' rows (a per-domain student's store); bad selections write nothing.
    from multidistill.teachers.store import open_signal_store

    label = ["soft-targets", "--teacher", str(tmp_path / "run" / "model"), "--tasks", "reviews",
             "--cache-dir", str(tmp_path / "cache")]
    code, output = run_cli(monkeypatch, capsys, *label, "--out", str(tmp_path / "books"), "--domains", "books")
    assert code == 0, output
    assert len(open_signal_store(tmp_path / "books").signals("reviews", "train")) == 20  # 40 rows, alternating
    code, output = run_cli(monkeypatch, capsys, *label, "--out", str(tmp_path / "dvd"), "--exclude-domains", "books")
    assert code == 0 and len(open_signal_store(tmp_path / "dvd").signals("reviews", "train")) == 20
    for bad, message in ((["--domains", "music"], "music"), (["--domains", "books", "--exclude-domains", "dvd"],
                                                              "not both")):
        code, output = run_cli(monkeypatch, capsys, *label, "--out", str(tmp_path / "bad"), *bad)
        assert code == 2 and message in output, output
        assert not (tmp_path / "bad").exists() and not list(tmp_path.glob("bad*"))


def test_a_holdout_alone_is_seeded_in_the_fingerprint(tmp_path) -> None:
    """The folds depend on the seed even without a fraction: two seeds must not share a cached view."""
    spec = write_domain_files_task(tmp_path / "data")
    holdout = {"domain": "books", "folds": 2, "fold": 0}
    one, two = (_store(tmp_path, spec, seed=seed, domain_holdout=holdout) for seed in (1, 2))
    assert one.data_fingerprint("reviews", "train") != two.data_fingerprint("reviews", "train")
    assert one.data_fingerprint("reviews", "dev") == two.data_fingerprint("reviews", "dev")
    assert set(one.examples("reviews", "train")["id"]) != set(two.examples("reviews", "train")["id"])
