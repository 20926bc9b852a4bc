"""Unlabelled text as data (issue 12 part 4): the `text` task type, its sources, and where it is refused."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from multidistill.config import DataConfig, LossTerm, ObjectiveConfig
from multidistill.data.batches import row_lengths
from multidistill.data.prepare import prepare_data, resolve_tasks
from multidistill.data.readers import read_split
from multidistill.data.sampler import MultiTaskBatchPlanner
from multidistill.data.store import ExampleStore
from multidistill.data.tasks import Task, fingerprint_spec, get_task
from multidistill.errors import ConfigError, DataError, UnknownTaskError
from multidistill.models.backbone import load_tokenizer
from multidistill.training.objective import WeightedObjective, refuse_head_losses
from tests.conftest import write_tiny_tasks


def _txt_task(path: str = "corpus.txt", name: str = "corpus") -> Task:
    return Task(name=name, type="text", files={"train": {"path": path, "format": "txt"}})


def _toy(root: Path) -> dict[str, Task]:
    return {spec["name"]: Task.model_validate(spec) for spec in write_tiny_tasks(root, n_train=12, n_dev=4)}


# ------------------------------------------------------------------------------------------------ the spec


def test_text_task_has_no_labels_head_or_metrics() -> None:
    task = _txt_task()
    assert task.metrics == [] and task.num_labels == 0 and not task.has_head
    assert task.files["train"].columns.text_a == 0  # a txt file needs no column map


@pytest.mark.parametrize(("spec", "fragment"), [
    ({"labels": ["0", "1"]}, "has no labels; remove labels"),
    ({"metrics": ["accuracy"]}, "not evaluated; remove metrics"),
    ({"pair": True}, "one text an example"),
    ({"files": {"train": {"path": "c.jsonl", "format": "jsonl", "columns": {"text_a": "t", "label": "y"}}}},
     "remove files.train.columns.label"),
    ({"files": {}}, "needs files.train"),
    ({"from_tasks": ["sst2"], "files": {"train": {"path": "c.txt", "format": "txt"}}}, "not both"),
    ({"from_tasks": ["sst2", "sst2"], "files": {}}, "each once"),
])
def test_text_task_spec_errors(spec: dict, fragment: str) -> None:
    base = {"name": "corpus", "type": "text", "files": {"train": {"path": "c.txt", "format": "txt"}}}
    with pytest.raises(ValidationError, match=fragment):
        Task.model_validate({**base, **spec})


def test_from_tasks_only_on_text_tasks_and_txt_has_one_column() -> None:
    with pytest.raises(ValidationError, match="from_tasks is for text tasks"):
        Task(name="x", labels=["0", "1"], from_tasks=["sst2"])
    with pytest.raises(ValidationError, match="one text a line and nothing else"):
        Task(name="x", type="text", files={"train": {"path": "c.txt", "format": "txt", "columns": {"text_a": 0,
                                                                                                     "id": 1}}})


def test_from_tasks_resolve_through_get_task() -> None:
    corpus = Task(name="corpus", type="text", from_tasks=["sst2", "mrpc"])
    resolved = get_task("corpus", {"corpus": corpus})
    assert [source.name for source in resolved.sources] == ["sst2", "mrpc"]
    assert resolved.splits == ["train"]
    with pytest.raises(UnknownTaskError, match="task 'corpus', from_tasks: unknown task 'nope'"):
        get_task("corpus", {"corpus": Task(name="corpus", type="text", from_tasks=["nope"])})
    nested = {"corpus": corpus, "outer": Task(name="outer", type="text", from_tasks=["corpus"])}
    with pytest.raises(UnknownTaskError, match="'corpus' is itself built from_tasks"):
        get_task("outer", nested)


# ------------------------------------------------------------------------------------------------ readers


def test_txt_reader_ids_are_line_numbers_and_blank_lines_skipped(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text("first text\n\n  \nsecond\ttext\r\nthird\n", encoding="utf-8")
    rows = read_split(_txt_task(), "train", tmp_path)
    assert rows["id"] == ["1", "4", "5"]
    assert rows["text_a"] == ["first text", "second\ttext", "third"]
    assert rows["label"] == [-1, -1, -1] and rows["text_b"] == ["", "", ""]


_LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85"
                                                                                   "\u2028\u2029"), min_size=1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_LINE, min_size=1, max_size=12))
def test_txt_reader_round_trips_any_text(tmp_path: Path, lines: list[str]) -> None:
    (tmp_path / "corpus.txt").write_bytes("".join(f"{line}\n" for line in lines).encode("utf-8"))
    kept = [(str(n), line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not kept:
        with pytest.raises(DataError, match="empty corpus file"):
            read_split(_txt_task(), "train", tmp_path)
        return
    rows = read_split(_txt_task(), "train", tmp_path)
    assert list(zip(rows["id"], rows["text_a"], strict=True)) == kept


@pytest.mark.parametrize("content", [b"", b"\n  \n\t\n"])
def test_empty_corpus_file_is_an_error_naming_it(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "corpus.txt").write_bytes(content)
    with pytest.raises(DataError, match=r"corpus\.txt: empty corpus file") as info:
        read_split(_txt_task(), "train", tmp_path)
    assert info.value.path == str(tmp_path / "corpus.txt")


def test_non_utf8_corpus_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"corpus\.txt, line 3: not valid UTF-8") as info:
        read_split(_txt_task(), "train", tmp_path)
    assert info.value.line == 3


@pytest.mark.parametrize(("fmt", "body", "columns"), [
    ("jsonl", '{"text": "one", "stars": 5}\n{"text": "two", "stars": 1}\n', {"text_a": "text"}),
    ("csv", 'review,stars\n"one, quoted",5\ntwo,1\n', {"text_a": "review"}),
    ("tsv", "review\tstars\none\t5\ntwo\t1\n", {"text_a": "review"}),
])
def test_column_of_a_labelled_file_as_text(tmp_path: Path, fmt: str, body: str, columns: dict) -> None:
    (tmp_path / f"reviews.{fmt}").write_text(body)
    task = Task(name="reviews", type="text", files={"train": {"path": f"reviews.{fmt}", "format": fmt,
                                                              "columns": columns}})
    rows = read_split(task, "train", tmp_path)
    assert rows["text_a"] == ["one, quoted" if fmt == "csv" else "one", "two"]
    assert rows["label"] == [-1, -1]


def test_jsonl_text_errors_keep_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text('{"text": "one"}\n{"text": ""}\n')
    task = Task(name="c", type="text", files={"train": {"path": "c.jsonl", "format": "jsonl",
                                                        "columns": {"text_a": "text"}}})
    with pytest.raises(DataError, match=r"c\.jsonl, line 2, field 'text_a' \(column 'text'\): empty text"):
        read_split(task, "train", tmp_path)


def test_saved_hf_dataset_as_text(tmp_path: Path) -> None:
    datasets.Dataset.from_dict({"content": ["alpha", "beta"], "score": [1, 2]}).save_to_disk(str(tmp_path / "saved"))
    task = Task(name="saved", type="text", files={"train": {"path": "saved", "format": "hf_disk",
                                                            "columns": {"text_a": "content"}}})
    rows = read_split(task, "train", tmp_path)
    assert rows["text_a"] == ["alpha", "beta"] and rows["id"] == ["0", "1"]


# ------------------------------------------------------------------------------------------------ from_tasks


def _write_sources(root: Path) -> dict[str, Task]:
    (root / "a").mkdir(parents=True)
    (root / "a" / "train.tsv").write_text("sentence\tlabel\nsame text\t1\nonly in a\t0\nsame text\t0\n")
    (root / "b").mkdir()
    (root / "b" / "train.tsv").write_text("id\ts1\ts2\tlabel\n"
                                          "x7\tonly in b\tsame text\t1\nx8\tsecond b\tsecond b\t0\n")
    sent = Task(name="a", labels=["0", "1"], files={"train": {"path": "a/train.tsv",
                                                              "columns": {"text_a": "sentence", "label": "label"}}})
    pair = Task(name="b", labels=["0", "1"], pair=True,
                files={"train": {"path": "b/train.tsv", "columns": {"text_a": "s1", "text_b": "s2",
                                                                    "label": "label", "id": "id"}}})
    return {"a": sent, "b": pair}


def test_from_tasks_drops_labels_and_deduplicates_across_and_within(tmp_path: Path) -> None:
    known = _write_sources(tmp_path)
    known["corpus"] = Task(name="corpus", type="text", from_tasks=["a", "b"])
    rows = read_split(get_task("corpus", known), "train", tmp_path)
    assert rows["text_a"] == ["same text", "only in a", "only in b", "second b"]
    assert rows["id"] == ["a:2", "a:3", "b:x7:a", "b:x8:a"]  # the first occurrence's task, id and side
    assert rows["label"] == [-1] * 4 and rows["text_b"] == [""] * 4


def test_keep_pairs_keeps_a_pair_tasks_rows_whole(tmp_path: Path) -> None:
    known = _write_sources(tmp_path)
    known["corpus"] = Task(name="corpus", type="text", from_tasks=["a", "b"], keep_pairs=True)
    rows = read_split(get_task("corpus", known), "train", tmp_path)
    assert rows["text_a"] == ["same text", "only in a", "only in b", "second b"]
    assert rows["text_b"] == ["", "", "same text", "second b"]  # a pair is one example, its texts as they are
    assert rows["id"] == ["a:2", "a:3", "b:x7", "b:x8"] and rows["label"] == [-1] * 4
    # Its data fingerprint differs from the plain corpus's; the plain one's spec is as before the field.
    plain = Task(name="corpus", type="text", from_tasks=["a", "b"])
    assert "keep_pairs" not in fingerprint_spec(plain) and fingerprint_spec(known["corpus"])["keep_pairs"]
    with pytest.raises(ValidationError, match="keep_pairs is for text tasks built from_tasks only"):
        Task(name="c", type="text", keep_pairs=True, files={"train": {"path": "c.txt", "format": "txt"}})


def test_keep_pairs_per_use_in_a_task_reference(tmp_path: Path) -> None:
    from multidistill.data.prepare import open_example_store

    known = _write_sources(tmp_path)
    specs = [*known.values(), Task(name="corpus", type="text", from_tasks=["a", "b"])]

    def store(**ref):
        data = DataConfig(tasks=[{"name": "corpus", **ref}], task_specs=specs, data_root=str(tmp_path),
                          cache_dir=str(tmp_path / "cache"))
        return open_example_store(data, max_examples_per_task=None, seed=0)

    pairs, plain = store(keep_pairs=True), store()
    assert pairs.examples("corpus", "train")["text_b"] == ["", "", "same text", "second b"]
    assert plain.examples("corpus", "train")["text_b"] == [""] * 4
    assert pairs.data_fingerprint("corpus", "train") != plain.data_fingerprint("corpus", "train")
    data = DataConfig(tasks=[{"name": "a", "keep_pairs": True}], task_specs=specs, data_root=str(tmp_path))
    with pytest.raises(ConfigError, match=r"key 'data.tasks.0.keep_pairs': task 'a' is not a text task"):
        open_example_store(data, max_examples_per_task=None, seed=0)


def test_a_corpus_of_pairs_and_single_texts_is_tokenised_row_by_row(tmp_path: Path, tiny_model_dir: Path) -> None:
    known = _write_sources(tmp_path / "data")
    known["corpus"] = Task(name="corpus", type="text", from_tasks=["a", "b"], keep_pairs=True)
    store = ExampleStore([get_task("corpus", known)], tmp_path / "data", tmp_path / "cache")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    view = store.tokenized("corpus", "train", tokenizer, 32)
    rows = store.examples("corpus", "train")
    for i, (text_a, text_b) in enumerate(zip(rows["text_a"], rows["text_b"], strict=True)):
        expected = tokenizer(text_a, text_b or None, truncation=True, max_length=32)
        assert view[i]["input_ids"] == expected["input_ids"]  # a single text gets no empty second segment
        assert view[i]["token_type_ids"] == expected["token_type_ids"]


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8).filter(
    lambda t: t.strip() and t == t.rstrip("\r\n"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(single=st.lists(st.sampled_from(["x", "y", "z"]) | _TEXT, min_size=1, max_size=8),
       pairs=st.lists(st.tuples(st.sampled_from(["x", "y"]) | _TEXT, st.sampled_from(["y", "z"]) | _TEXT),
                      min_size=1, max_size=8))
def test_corpus_is_the_ordered_unique_texts_of_its_sources(tmp_path: Path, single: list[str],
                                                           pairs: list[tuple[str, str]]) -> None:
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"t": t, "y": "1"}) + "\n" for t in single))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"a": a, "b": b, "y": "0"}) + "\n" for a, b in pairs))
    known = {
        "s": Task(name="s", labels=["0", "1"], files={"train": {"path": "s.jsonl", "format": "jsonl",
                                                               "columns": {"text_a": "t", "label": "y"}}}),
        "p": Task(name="p", labels=["0", "1"], pair=True,
                  files={"train": {"path": "p.jsonl", "format": "jsonl",
                                   "columns": {"text_a": "a", "text_b": "b", "label": "y"}}}),
        "corpus": Task(name="corpus", type="text", from_tasks=["s", "p"]),
    }
    rows = read_split(get_task("corpus", known), "train", tmp_path)
    every = [("s", str(i), "", t) for i, t in enumerate(single)]
    every += [("p", str(i), side, text) for i, pair in enumerate(pairs)
              for side, text in zip((":a", ":b"), pair, strict=True)]
    first: dict[str, str] = {}
    for task, example_id, side, text in every:
        first.setdefault(text, f"{task}:{example_id}{side}")
    assert rows["text_a"] == list(first)
    assert rows["id"] == list(first.values())


def test_corpus_ids_are_stable_across_reads_caps_and_order(tmp_path: Path) -> None:
    known = _write_sources(tmp_path)
    known["corpus"] = Task(name="corpus", type="text", from_tasks=["a", "b"])
    corpus = get_task("corpus", known)
    full = read_split(corpus, "train", tmp_path)
    assert read_split(corpus, "train", tmp_path)["id"] == full["id"]
    by_id = dict(zip(full["id"], full["text_a"], strict=True))
    for seed in range(3):
        capped = read_split(corpus, "train", tmp_path, max_examples=2, seed=seed)
        assert all(by_id[i] == text for i, text in zip(capped["id"], capped["text_a"], strict=True))
    known["flipped"] = Task(name="flipped", type="text", from_tasks=["b", "a"])
    flipped = read_split(get_task("flipped", known), "train", tmp_path)
    assert sorted(flipped["text_a"]) == sorted(full["text_a"])
    assert flipped["id"] == ["b:x7:a", "b:x7:b", "b:x8:a", "a:3"]  # reordering only changes which copy is kept


def test_from_tasks_source_errors_name_the_source_file(tmp_path: Path) -> None:
    known = _write_sources(tmp_path)
    (tmp_path / "a" / "train.tsv").write_bytes(b"sentence\tlabel\nok\t1\nbad \xfe\t0\n")
    known["corpus"] = Task(name="corpus", type="text", from_tasks=["a", "b"])
    with pytest.raises(DataError, match=r"a/train\.tsv, line 3: not valid UTF-8"):
        read_split(get_task("corpus", known), "train", tmp_path)


def test_store_caches_corpus_and_rekeys_on_source_change(tmp_path: Path) -> None:
    known = _write_sources(tmp_path / "data")
    known["corpus"] = Task(name="corpus", type="text", from_tasks=["a", "b"])
    store = ExampleStore([get_task("corpus", known)], tmp_path / "data", tmp_path / "cache")
    assert store.has_split("corpus", "train") and not store.has_split("corpus", "dev")
    before = store.data_fingerprint("corpus", "train")
    assert len(store.examples("corpus", "train")) == 4
    (tmp_path / "data" / "a" / "train.tsv").write_text("sentence\tlabel\nnew text\t1\n")
    fresh = ExampleStore([get_task("corpus", known)], tmp_path / "data", tmp_path / "cache")
    assert fresh.data_fingerprint("corpus", "train") != before
    assert "new text" in fresh.examples("corpus", "train")["text_a"]


# ------------------------------------------------------------------------------------------------ views, batches


def test_tokenised_view_and_length_grouped_plan_over_a_text_task(tmp_path: Path, tiny_model_dir: Path) -> None:
    texts = [" ".join(["film"] * n) for n in (1, 9, 3, 7, 2, 8, 4, 6, 5, 10)]
    (tmp_path / "corpus.txt").write_text("\n".join(texts) + "\n")
    store = ExampleStore([_txt_task()], tmp_path, tmp_path / "cache")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    view = store.tokenized("corpus", "train", tokenizer, 32)
    assert view["id"] == [str(n) for n in range(1, 11)]
    lengths = row_lengths(store.tokenized_rows("corpus", "train", tokenizer, 32))
    assert lengths.tolist() == [n + 2 for n in (1, 9, 3, 7, 2, 8, 4, 6, 5, 10)]  # [CLS] text [SEP]
    planner = MultiTaskBatchPlanner({"corpus": 10}, batch_size=2, seed=0, lengths={"corpus": lengths},
                                    group_size=5)
    plan = planner.epoch(0)
    batches = [plan[i].indices for i in range(len(plan))]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    # Grouped by length: every batch's rows lie within one group of 5 sorted by length, so they differ little.
    assert max(int(np.ptp(lengths[b])) for b in batches) <= 4


def test_prepare_data_skips_evaluation_of_text_tasks(tmp_path: Path, tiny_model_dir: Path) -> None:
    specs = write_tiny_tasks(tmp_path / "data", n_train=12, n_dev=4)
    (tmp_path / "data" / "corpus.txt").write_text("some text\nmore text\n")
    corpus = {"name": "corpus", "type": "text", "files": {"train": {"path": "corpus.txt", "format": "txt"}}}
    data = DataConfig(tasks=["toy_sent", "corpus"], data_root=str(tmp_path / "data"), task_specs=[*specs, corpus],
                      cache_dir=str(tmp_path / "cache"))
    prepared = prepare_data(data, load_tokenizer(str(tiny_model_dir)), 32, max_examples_per_task=None, seed=0)
    assert set(prepared.train_sets) == {"toy_sent", "corpus"}
    assert set(prepared.eval_sets) == {"toy_sent"}


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("loss", ["hard", "soft_ce", "soft_kl", "logit_mse"])
def test_text_task_refused_by_head_based_losses(loss: str) -> None:
    tasks = {"corpus": _txt_task()}
    config = ObjectiveConfig(tasks={"corpus": [LossTerm(loss=loss)]})
    with pytest.raises(ConfigError, match=f"task 'corpus' is a text task .* loss '{loss}' reads student_logits"):
        WeightedObjective(tasks, config)


def test_text_task_refused_by_default_objective_and_allowed_with_feature_loss() -> None:
    tasks = {"corpus": _txt_task()}
    with pytest.raises(ConfigError, match=r"loss 'hard' reads .*objective\.tasks\.corpus"):
        WeightedObjective(tasks)
    refuse_head_losses(tasks, ObjectiveConfig(tasks={"corpus": [LossTerm(loss="relation_kl")]}))  # no error


def test_models_give_text_tasks_no_head(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch

    from multidistill.models import MultiTaskModel
    from multidistill.models.heads import build_head

    toy = _toy(tmp_path)
    with pytest.raises(ConfigError, match="task 'corpus' is a text task"):
        build_head(_txt_task(), 32, 0.1)
    model = MultiTaskModel.from_backbone(str(tiny_model_dir), [toy["toy_sent"], _txt_task()])
    assert set(model.heads) == {"toy_sent"}
    ids = torch.tensor([[2, 40, 3]])
    with pytest.raises(ConfigError, match="task 'corpus' is a text task .* no head"):
        model(task="corpus", input_ids=ids, attention_mask=torch.ones_like(ids))
    assert model(task="toy_sent", input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape == (1, 2)


def test_evaluate_skips_text_tasks(tmp_path: Path, tiny_model_dir: Path) -> None:
    from multidistill.evaluation.evaluate import evaluate
    from multidistill.models import MultiTaskModel

    (tmp_path / "corpus.txt").write_text("a film\n")
    toy = _toy(tmp_path)
    tasks = {"toy_sent": toy["toy_sent"], "corpus": _txt_task()}
    store = ExampleStore(list(tasks.values()), tmp_path, tmp_path / "cache")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    eval_sets = {"toy_sent": store.tokenized("toy_sent", "dev", tokenizer, 32),
                 "corpus": store.tokenized("corpus", "train", tokenizer, 32)}
    model = MultiTaskModel.from_backbone(str(tiny_model_dir), list(tasks.values()))
    result = evaluate(model, tasks, eval_sets, batch_size=4, pad_token_id=0, device=__import__("torch").device("cpu"))
    assert set(result.metrics) == {"toy_sent"}


def test_text_task_survives_a_model_config_round_trip() -> None:
    task = get_task("corpus", {"corpus": Task(name="corpus", type="text", from_tasks=["sst2"])})
    again = Task.model_validate(json.loads(task.model_dump_json()))
    assert again == task and again.metrics == []


def test_bilstm_gives_text_tasks_no_head(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch

    from multidistill.models.bilstm import BiLSTMModel, BiLSTMSpec

    spec = BiLSTMSpec(embedding_dim=8, hidden_size=8, mlp_hidden=8)
    model = BiLSTMModel.from_tokenizer(spec, [_toy(tmp_path)["toy_sent"], _txt_task()],
                                       load_tokenizer(str(tiny_model_dir)))
    assert set(model.heads) == {"toy_sent"}
    ids = torch.tensor([[2, 40, 3]])
    with pytest.raises(ConfigError, match="task 'corpus' is a text task"):
        model(task="corpus", input_ids=ids, attention_mask=torch.ones_like(ids))


def test_tasks_listing_shows_a_text_task(monkeypatch, capsys) -> None:
    from rich.console import Console

    from multidistill import cli
    from multidistill.data import tasks as task_module
    from tests.test_cli import run_cli

    corpus = Task(name="corpus", type="text", files={"train": {"path": "corpus/all.txt", "format": "txt"}})
    glue = Task(name="glue-texts", type="text", from_tasks=["sst2", "mrpc"])
    monkeypatch.setattr(task_module, "BUILTIN_TASKS", {**task_module.BUILTIN_TASKS, "corpus": corpus,
                                                       "glue-texts": glue})
    monkeypatch.setattr(cli, "console", Console(width=200))
    code, output = run_cli(monkeypatch, capsys, "tasks")
    line = next(line for line in output.splitlines() if "corpus" in line)
    assert code == 0 and "text" in line and "(none)" in line and "corpus/all.txt [txt]" in line
    assert "texts of: sst2, mrpc" in next(line for line in output.splitlines() if "glue-texts" in line)
    stsb = next(line for line in output.splitlines() if " stsb " in line)
    assert "(score)" in stsb and "glue/STS-B/train.tsv [tsv]" in stsb


def test_keep_pairs_without_a_pair_task_among_the_sources_is_refused(tmp_path: Path) -> None:
    """keep_pairs over single-text tasks only did nothing, silently."""
    single = Task(name="s", labels=["0", "1"], files={"train": {"path": "s.tsv", "columns": {"text_a": "t",
                                                                                          "label": "y"}}})
    corpus = Task(name="corpus", type="text", from_tasks=["s"], keep_pairs=True)
    data = DataConfig(tasks=["corpus"], data_root=str(tmp_path), task_specs=[single, corpus])
    with pytest.raises(ConfigError, match="task 'corpus' \\(its spec\\): none of the from_tasks of task 'corpus' "
                                          "\\(s\\)"):
        resolve_tasks(data)
    data = DataConfig(tasks=[{"name": "c", "keep_pairs": True}], data_root=str(tmp_path),
                      task_specs=[single, Task(name="c", type="text", from_tasks=["s"])])
    with pytest.raises(ConfigError, match="key 'data.tasks.0.keep_pairs': none of the from_tasks of task 'c'"):
        resolve_tasks(data)
