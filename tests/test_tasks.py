"""Tests for `multidistill.data.tasks`: built-in GLUE specs, Task validation and the task registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from multidistill.data.tasks import BUILTIN_TASKS, Columns, DataFile, Task, get_task
from multidistill.errors import UnknownTaskError
from multidistill.evaluation.metrics import METRICS
from tests.conftest import write_tiny_tasks

HF_TWINS = sorted(name for name in BUILTIN_TASKS if name.endswith("-hf"))


@pytest.mark.parametrize(("name", "type_", "labels", "pair", "main_metric"), [
    ("sst2", "classification", ["0", "1"], False, "accuracy"),
    ("mrpc", "classification", ["0", "1"], True, "f1"),
    ("cola", "classification", ["0", "1"], False, "matthews"),
    ("stsb", "regression", [], True, "pearson"),
    ("qnli", "classification", ["entailment", "not_entailment"], True, "accuracy"),
    ("mnli", "classification", ["contradiction", "entailment", "neutral"], True, "accuracy"),
])
def test_glue_builtin_specs(name: str, type_: str, labels: list[str], pair: bool, main_metric: str) -> None:
    task = get_task(name)
    assert task.name == name
    assert (task.type, task.labels, task.pair, task.main_metric) == (type_, labels, pair, main_metric)
    assert task.num_labels == (1 if type_ == "regression" else len(labels))


def test_secondary_metrics_of_glue_tasks() -> None:
    assert get_task("mrpc").metrics == ["f1", "accuracy"]
    assert get_task("stsb").metrics == ["pearson", "spearman"]
    assert get_task("cola").metrics == ["matthews", "accuracy"]


def test_cola_tsv_has_no_header_and_uses_column_indices() -> None:
    # CoLA's TSV: source, label, original mark, sentence (no header line).
    train = get_task("cola").files["train"]
    assert train.header is False
    assert (train.columns.text_a, train.columns.label) == (3, 1)


def test_mnli_dev_is_matched() -> None:
    assert get_task("mnli").files["dev"].path.endswith("dev_matched.tsv")
    assert get_task("mnli-hf").files["dev"].hf_split == "validation_matched"


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_every_builtin_is_consistent(name: str) -> None:
    task = BUILTIN_TASKS[name]
    assert task.name == name
    assert {"train", "dev"} <= set(task.splits)
    assert task.metrics and set(task.metrics) <= set(METRICS)
    for _, data_file in task.all_files():  # files, or each domain's (domain_files)
        assert (data_file.columns.text_b is not None) == task.pair
        assert data_file.columns.label is not None
    # The spec round-trips through its own validation (built-ins obey the user-facing rules).
    assert Task.model_validate(task.model_dump()) == task


@pytest.mark.parametrize("twin", HF_TWINS)
def test_hf_twins_use_hf_hub(twin: str) -> None:
    base_name = twin.removesuffix("-hf")
    base, hf = BUILTIN_TASKS[base_name], BUILTIN_TASKS[twin]
    assert (hf.type, hf.labels, hf.pair, hf.metrics) == (base.type, base.labels, base.pair, base.metrics)
    assert set(hf.files) == {"train", "dev"}
    for split, data_file in hf.files.items():
        assert data_file.format == "hf_hub", split
        assert (data_file.path, data_file.hf_name) == ("nyu-mll/glue", base_name)
        assert data_file.hf_split == ("train" if split == "train" else hf.files["dev"].hf_split)
        if hf.type == "classification":  # integer class ids map onto the task's own labels
            assert sorted(data_file.int_label_names) == sorted(hf.labels)
        else:
            assert data_file.int_label_names is None
    assert hf.files["dev"].hf_split.startswith("validation")
    # The TSV originals are untouched by building the twin.
    assert all(f.format == "tsv" for f in base.files.values())


def test_hf_twins_exist_for_the_glue_tasks() -> None:
    assert {"sst2-hf", "mrpc-hf", "cola-hf", "stsb-hf", "qnli-hf", "mnli-hf"} <= set(HF_TWINS)


def test_mnli_hf_label_order_is_glue_order() -> None:
    # The GLUE hub dataset encodes 0=entailment, 1=neutral, 2=contradiction.
    assert get_task("mnli-hf").files["train"].int_label_names == ["entailment", "neutral", "contradiction"]


# ---------------------------------------------------------------- Task validation


def pair_file(text_b: str | None) -> DataFile:
    return DataFile(path="x.tsv", columns=Columns(text_a="a", text_b=text_b, label="y"))


def test_valid_user_task_defaults() -> None:
    task = Task(name="t", labels=["neg", "pos"])
    assert (task.type, task.pair, task.metrics, task.files) == ("classification", False, ["accuracy"], {})
    assert task.num_labels == 2 and task.main_metric == "accuracy"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"labels": ["only"]}, "at least 2 labels"),
    ({"labels": []}, "at least 2 labels"),
    ({"type": "regression", "labels": ["0", "1"]}, "takes no labels"),
    ({"labels": ["a", "b", "a"]}, "duplicate labels"),
    ({"labels": ["0", "1"], "pair": True, "files": {"dev": pair_file(None)}}, "files.dev.columns.text_b"),
])
def test_invalid_task_specs_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Task(name="bad", **kwargs)


@pytest.mark.parametrize(("labels", "message"), [
    (["neg", "pos "], r"labels\.1 is 'pos ', with white space around it; .*stripped.*write 'pos'"),
    ([" 0", "1"], r"labels\.0 is ' 0', with white space around it"),
    (["a", "b\t"], r"labels\.1 is 'b\\t', with white space"),
    (["", "x"], r"labels\.0 is '', an empty label; .*no row could have it"),
    (["x", "  "], r"labels\.1 is '  ', an empty label"),
])
def test_labels_no_row_could_have_are_refused(labels: list[str], message: str) -> None:
    """Data cells are stripped before they are matched: such a label never matched, and the error blamed the
    data's first line instead of the spec."""
    with pytest.raises(ValidationError, match=message):
        Task(name="t", labels=labels, files={"train": pair_file(None)})


def test_spaced_labels_of_an_hf_dataset_read_as_they_are() -> None:
    """A ClassLabel's names (and integer positions) are not stripped: a spaced label can match them, so only an
    empty label is refused for a task read from HF datasets alone (and a saved model's spec, with no files)."""
    hf = DataFile(path="d", format="hf_disk", columns=Columns(text_a="a", label="y"))
    assert Task(name="t", labels=["very bad ", "good"], files={"train": hf}).labels[0] == "very bad "
    assert Task(name="t", labels=["very bad ", "good"]).labels[0] == "very bad "
    with pytest.raises(ValidationError, match="an empty label"):
        Task(name="t", labels=["", "good"], files={"train": hf})


def test_labels_with_inner_spaces_are_valid() -> None:
    assert Task(name="t", labels=["not entailment", "entailment"]).labels == ["not entailment", "entailment"]


def test_pair_task_with_text_b_is_valid() -> None:
    files = {"train": pair_file("b"), "dev": pair_file("b")}
    task = Task(name="p", labels=["0", "1"], pair=True, files=files)
    assert task.pair


def test_regression_without_labels_is_valid() -> None:
    assert Task(name="r", type="regression").num_labels == 1


@pytest.mark.parametrize("bad", [{"type": "ranking"}, {"unknown_field": 1}, {"files": {"validation": {}}}])
def test_unknown_type_field_or_split_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Task.model_validate({"name": "t", "labels": ["0", "1"], **bad})


def test_tiny_task_specs_validate(tmp_path: Path) -> None:
    tasks = [Task.model_validate(spec) for spec in write_tiny_tasks(tmp_path, n_train=4, n_dev=2)]
    assert [(t.name, t.type, t.pair) for t in tasks] == [
        ("toy_sent", "classification", False), ("toy_pair", "classification", True),
        ("toy_reg", "regression", True)]


# ---------------------------------------------------------------- registry


def test_unknown_task_lists_known_names() -> None:
    with pytest.raises(UnknownTaskError) as info:
        get_task("sst3")
    message = str(info.value)
    assert "'sst3'" in message
    assert all(name in message for name in ("sst2", "mrpc", "cola", "stsb", "mnli-hf", "amazon-books"))


def test_unknown_task_lists_user_declared_names_too() -> None:
    extra = {"my_task": Task(name="my_task", labels=["0", "1"])}
    with pytest.raises(UnknownTaskError, match="my_task"):
        get_task("nope", extra)


def test_user_spec_shadows_builtin() -> None:
    mine = Task(name="sst2", labels=["neg", "pos"], metrics=["f1"])
    assert get_task("sst2", {"sst2": mine}) is mine
    # The built-in is still there for everyone else, and other names still resolve to built-ins.
    assert get_task("sst2").labels == ["0", "1"]
    assert get_task("mrpc", {"sst2": mine}) is BUILTIN_TASKS["mrpc"]


def test_user_spec_shadows_builtin_through_data_config(tmp_path: Path) -> None:
    from multidistill.config import DataConfig
    from multidistill.data.prepare import resolve_tasks

    toy_sent, toy_pair_spec, _ = write_tiny_tasks(tmp_path, n_train=4, n_dev=2)
    data = DataConfig.model_validate({"tasks": "sst2,toy_pair,mrpc",
                                      "task_specs": [toy_sent | {"name": "sst2"}, toy_pair_spec]})
    sst2, toy_pair, mrpc = resolve_tasks(data)
    assert sst2.files["train"].path == "toy_sent/train.tsv" and sst2.metrics == ["accuracy", "f1"]
    assert toy_pair.name == "toy_pair"
    assert mrpc is BUILTIN_TASKS["mrpc"]


def test_metrics_fit_the_task_type():
    """Checked with the spec (a wrong metric crashed the evaluation after the first epoch, or an empty list)."""
    assert Task(name="r", type="regression").metrics == ["pearson", "spearman"]  # accuracy cannot score a score
    assert Task(name="r", type="regression", metrics=["spearman"]).metrics == ["spearman"]
    assert Task(name="c", labels=["a", "b"], metrics=["f1", "matthews"]).metrics == ["f1", "matthews"]
    for spec, match in (({"labels": ["a", "b", "c"], "metrics": ["f1"]}, "2-label task, this task has 3"),
                        ({"labels": ["a", "b"], "metrics": ["pearson"]}, "'pearson' is a regression metric"),
                        ({"type": "regression", "metrics": ["accuracy"]}, "'accuracy' is a classification metric"),
                        ({"labels": ["a", "b"], "metrics": []}, "metrics is empty"),
                        ({"labels": ["a", "b"], "metrics": ["acc"]}, "'acc' is not a metric"),
                        ({"labels": ["a", "b"], "metrics": ["accuracy", "accuracy"]}, "duplicate metrics")):
        with pytest.raises(ValidationError, match=match):
            Task(name="t", **spec)
    assert set(METRICS) >= {m for task in BUILTIN_TASKS.values() for m in task.metrics}


def test_a_task_name_with_a_dot_is_refused_when_the_spec_loads() -> None:
    """A '.' passed the plain-name check, then the model's heads (a ModuleDict) raised a KeyError at build time."""
    with pytest.raises(ValidationError, match=r"'sst\.v2' holds a '\.'.*'sst_v2'"):
        Task(name="sst.v2", labels=["neg", "pos"])
    assert Task(name="sst_v2-1", labels=["neg", "pos"]).name == "sst_v2-1"


@pytest.mark.parametrize("key", ["int_labels", "int_label_names"])
def test_int_label_settings_of_a_score_are_refused(key: str) -> None:
    """A regression task reads its label column as scores: a mapping of class indices would be ignored."""
    value = "values" if key == "int_labels" else ["a", "b"]
    hf = DataFile(path="d", format="hf_disk", columns=Columns(text_a="a", label="y"), **{key: value})
    with pytest.raises(ValidationError, match=rf"files.train.{key} is for class labels only; remove it"):
        Task(name="s", type="regression", metrics=["pearson"], files={"train": hf})
