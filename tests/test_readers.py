"""Tests for `multidistill.data.readers.read_split`: real shared data, every format, every bad input."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import datasets
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from multidistill.data import formats, readers, split_cache
from multidistill.data.readers import read_split
from multidistill.data.tasks import BUILTIN_TASKS, Columns, DataFile, Task
from multidistill.errors import DataError

EXPECTED_FEATURES_CLS = datasets.Features({
    "id": datasets.Value("string"), "text_a": datasets.Value("string"), "text_b": datasets.Value("string"),
    "label": datasets.Value("int64"), "domain": datasets.Value("string"),
})


def make_task(path: str | Path, *, fmt: str = "tsv", header: bool = True, type_: str = "classification",
              labels: list[str] | None = None, pair: bool = False, split: str = "train",
              task_domain: str | None = None, **file_kw) -> Task:
    """A one-split task; ``columns`` defaults to text_a='text', label='label' (+ text_b='text_b' if pair)."""
    columns = file_kw.pop("columns", None) or Columns(text_a="text", text_b="text_b" if pair else None,
                                                      label="label")
    if labels is None:
        labels = [] if type_ == "regression" else ["0", "1"]
    data_file = DataFile(path=str(path), format=fmt, header=header, columns=columns, **file_kw)
    return Task(name="t", type=type_, labels=labels, pair=pair, domain=task_domain, files={split: data_file})


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def read_error(task: Task, split: str = "train", **kw) -> DataError:
    with pytest.raises(DataError) as info:
        read_split(task, split, **kw)
    return info.value


# ------------------------------------------------------------------------------------------------ real data




@pytest.mark.parametrize(("task_name", "split", "rows"), [
    ("sst2", "dev", 872), ("mrpc", "train", 3668), ("mrpc", "dev", 408), ("cola", "dev", 1043),
    ("stsb", "dev", 1500), ("qnli", "dev", 5463), ("mnli-genre", "dev", 4999), ("mnli-genre", "train", 19999),
    ("amazon-books", "train", 1600), ("amazon-books", "dev", 200), ("amazon-books", "test", 200),
])
def test_real_row_counts_and_unique_ids(shared_data: Path, task_name: str, split: str, rows: int) -> None:
    task = BUILTIN_TASKS[task_name]
    ds = read_split(task, split, shared_data)
    assert len(ds) == rows
    assert ds.column_names == ["id", "text_a", "text_b", "label", "domain"]
    assert len(set(ds["id"])) == rows
    assert all(text.strip() for text in ds["text_a"])
    if task.pair:
        assert all(text.strip() for text in ds["text_b"])
    else:
        assert set(ds["text_b"]) == {""}


def test_real_sst2_dev_labels(shared_data: Path) -> None:
    ds = read_split(BUILTIN_TASKS["sst2"], "dev", shared_data)
    assert ds.features == EXPECTED_FEATURES_CLS
    assert Counter(ds["label"]) == {1: 444, 0: 428}
    assert ds[0]["id"] == "2"  # line 1 is the header
    assert ds[0]["text_a"].endswith(" ")  # text is kept unstripped


def test_real_mrpc_bom_header_and_leading_quote(shared_data: Path) -> None:
    ds = read_split(BUILTIN_TASKS["mrpc"], "train", shared_data)
    assert Counter(ds["label"]) == {1: 2474, 0: 1194}
    # The row GLUE copies often lose: its second sentence starts with a double quote.
    assert any(text.startswith('"') for text in ds["text_b"])


def test_real_cola_headerless(shared_data: Path) -> None:
    ds = read_split(BUILTIN_TASKS["cola"], "dev", shared_data)
    assert ds["id"][:2] == ["1", "2"] and ds["id"][-1] == "1043"
    assert Counter(ds["label"]) == {1: 721, 0: 322}
    assert ds[-1]["text_a"].endswith(".")  # last line has no trailing newline


def test_real_stsb_float_scores(shared_data: Path) -> None:
    ds = read_split(BUILTIN_TASKS["stsb"], "dev", shared_data)
    assert ds.features["label"] == datasets.Value("float32")
    scores = ds["label"]
    assert min(scores) >= 0.0 and max(scores) <= 5.0
    assert ds[0]["id"] == "0" and ds[0]["label"] == pytest.approx(5.0)


def test_real_qnli_string_labels_and_missing_train(shared_data: Path) -> None:
    task = BUILTIN_TASKS["qnli"]
    ds = read_split(task, "dev", shared_data)
    assert Counter(ds["label"]) == {task.labels.index("not_entailment"): 2761,
                                    task.labels.index("entailment"): 2702}
    err = read_error(task, "train", data_root=shared_data)
    assert "QNLI/train.tsv" in str(err) and "'qnli'" in str(err) and "'train'" in str(err)


def test_real_mnli_genre_domains(shared_data: Path) -> None:
    ds = read_split(BUILTIN_TASKS["mnli-genre"], "dev", shared_data)
    assert Counter(ds["domain"]) == {"government": 1017, "telephone": 1005, "slate": 1002, "fiction": 993,
                                     "travel": 982}


def test_real_amazon_domain(shared_data: Path) -> None:
    ds = read_split(BUILTIN_TASKS["amazon-books"], "train", shared_data)
    assert set(ds["domain"]) == {"books"}
    assert Counter(ds["label"]) == {0: 800, 1: 800}


# ------------------------------------------------------------------------------------------------ formats


def test_tsv_with_header(tmp_path: Path) -> None:
    path = write(tmp_path, "a.tsv", 'text\ttext_b\tlabel\r\nHe said " hi \tsecond\t1\r\n\r\nthird\tfourth\t0')
    ds = read_split(make_task("a.tsv", pair=True), "train", tmp_path)
    assert ds.features == EXPECTED_FEATURES_CLS
    assert ds.to_dict() == {"id": ["2", "4"], "text_a": ['He said " hi ', "third"],
                            "text_b": ["second", "fourth"], "label": [1, 0], "domain": ["", ""]}
    assert path.exists()


def test_tsv_without_header_and_bom(tmp_path: Path) -> None:
    write(tmp_path, "c.tsv", "\ufeffsrc\t1\t\tFirst sentence.\nsrc\t0\t*\tSecond one.\n")
    task = make_task("c.tsv", header=False, columns=Columns(text_a=3, label=1))
    ds = read_split(task, "train", tmp_path)
    assert ds["text_a"] == ["First sentence.", "Second one."]
    assert ds["label"] == [1, 0] and ds["id"] == ["1", "2"]


def test_csv_with_quotes_commas_and_newlines(tmp_path: Path) -> None:
    write(tmp_path, "a.csv",
          'id,text,label\nx1,"Hello, world",1\nx2,"multi\nline ""quoted""",0\nx3,plain,1\n')
    task = make_task("a.csv", fmt="csv", columns=Columns(text_a="text", label="label"))
    ds = read_split(task, "train", tmp_path)
    assert ds["text_a"] == ["Hello, world", 'multi\nline "quoted"', "plain"]
    assert ds["id"] == ["2", "3", "5"]  # physical line where each record starts
    task_id = make_task("a.csv", fmt="csv", columns=Columns(text_a="text", label="label", id="id"))
    assert read_split(task_id, "train", tmp_path)["id"] == ["x1", "x2", "x3"]


def test_jsonl(tmp_path: Path) -> None:
    lines = [{"text": "a", "label": 1, "g": "news"}, {"text": "b\n", "label": "0", "g": "web"}]
    write(tmp_path, "a.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    task = make_task("a.jsonl", fmt="jsonl", columns=Columns(text_a="text", label="label", domain="g"))
    ds = read_split(task, "train", tmp_path)
    assert ds.to_dict() == {"id": ["0", "1"], "text_a": ["a", "b"], "text_b": ["", ""], "label": [1, 0],
                            "domain": ["news", "web"]}


def test_hf_disk_dataset_and_dict(tmp_path: Path) -> None:
    data = {"sentence": ["good", "bad", "fine"], "label": ["pos", "neg", "pos"], "idx": [10, 11, 12]}
    datasets.Dataset.from_dict(data).save_to_disk(str(tmp_path / "single"))
    cols = Columns(text_a="sentence", label="label", id="idx")
    task = make_task("single", fmt="hf_disk", labels=["neg", "pos"], columns=cols)
    ds = read_split(task, "train", tmp_path)
    assert ds["id"] == ["10", "11", "12"] and ds["label"] == [1, 0, 1]

    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(data)}).save_to_disk(str(tmp_path / "dd"))
    task = make_task("dd", fmt="hf_disk", labels=["neg", "pos"], columns=cols, hf_split="validation",
                     split="dev")
    assert len(read_split(task, "dev", tmp_path)) == 3
    missing = make_task("dd", fmt="hf_disk", labels=["neg", "pos"], columns=cols)
    assert "no split 'train'" in str(read_error(missing, data_root=tmp_path))


def _save_mnli_like(tmp_path: Path) -> Path:
    # HF MNLI order: 0 entailment, 1 neutral, 2 contradiction; -1 means "no label" (test splits).
    features = datasets.Features({
        "premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
        "idx": datasets.Value("int32"),
    })
    split = {"premise": ["p0", "p1", "p2", "p3"], "hypothesis": ["h0", "h1", "h2", "h3"],
             "label": [0, 1, 2, -1], "idx": [0, 1, 2, 3]}
    out = tmp_path / "mnli_hf"
    datasets.DatasetDict({"validation_matched": datasets.Dataset.from_dict(split, features=features)}) \
        .save_to_disk(str(out))
    return out


def _mnli_hf_task(path: str, **kw) -> Task:
    columns = Columns(text_a="premise", text_b="hypothesis", label="label", id="idx")
    kw.setdefault("int_label_names", ["entailment", "neutral", "contradiction"])
    return make_task(path, fmt="hf_hub", labels=["contradiction", "entailment", "neutral"], pair=True,
                     columns=columns, hf_name="mnli", hf_split="validation_matched", split="dev", **kw)


def test_hf_hub_local_fallback_with_int_label_names(tmp_path: Path) -> None:
    _save_mnli_like(tmp_path)
    ds = read_split(_mnli_hf_task("mnli_hf"), "dev", tmp_path)
    assert ds["label"] == [1, 2, 0, -1]
    assert ds["text_b"] == ["h0", "h1", "h2", "h3"]
    # Without int_label_names a ClassLabel's integers stand for its own names, not for positions in the task's
    # labels (which list them in another order here); -1 is its mark of a row without a label.
    plain = read_split(_mnli_hf_task("mnli_hf", int_label_names=None), "dev", tmp_path)
    assert plain["label"] == [1, 2, 0, -1]


def test_hf_classlabel_name_outside_the_task_labels_suggests_int_label_names(tmp_path: Path) -> None:
    _save_mnli_like(tmp_path)
    task = make_task("mnli_hf", fmt="hf_disk", labels=["contradiction", "entailment", "other"], pair=True,
                     columns=Columns(text_a="premise", text_b="hypothesis", label="label"),
                     hf_split="validation_matched")
    err = str(read_error(task, data_root=tmp_path))
    assert "row 1" in err and "'neutral'" in err and "int_label_names" in err


def test_hf_plain_int_labels_are_positions_and_minus_one_is_no_label(tmp_path: Path) -> None:
    # A plain int64 column (our own transfer sets): positions in the task's labels, -1 for an added row.
    datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [1, 0, -1]}).save_to_disk(str(tmp_path / "ds"))
    assert read_split(make_task("ds", fmt="hf_disk", labels=["neg", "pos"]), "train", tmp_path)["label"] == [1, 0, -1]
    # ... but where '-1' is one of the task's labels, -1 is ambiguous: refused, never dropped. ('-1' is then a label
    # that is not its own position, so the other integers are ambiguous too: the first row is refused.)
    err = str(read_error(make_task("ds", fmt="hf_disk", labels=["-1", "1"]), data_root=tmp_path))
    assert "row 0" in err and "integer label 1 is ambiguous" in err
    datasets.Dataset.from_dict({"text": ["c", "a"], "label": [-1, 1]}).save_to_disk(str(tmp_path / "minus"))
    err = str(read_error(make_task("minus", fmt="hf_disk", labels=["-1", "1"]), data_root=tmp_path))
    assert "row 0" in err and "'-1' is one of the task's labels" in err and "files.train.int_labels" in err


def _stars(tmp_path: Path, labels: list[int]) -> None:
    """The same integer labels as a JSONL file (``s.jsonl``) and as a plain int64 HF column (``s_hf``)."""
    rows = [{"text": f"review {i}", "label": label} for i, label in enumerate(labels)]
    write(tmp_path, "s.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "s_hf"))


def test_hf_plain_ints_where_labels_are_integers_other_than_their_positions_are_ambiguous(tmp_path: Path) -> None:
    """Star ratings 1..4 with labels '1'..'5' read as '1'..'4' from JSONL but, silently, as '2'..'5' from hf_disk
    (positions): now refused, naming the file, row, field and the settings that say how to read them."""
    stars = ["1", "2", "3", "4", "5"]
    _stars(tmp_path, [1, 2, 3, 4])
    assert read_split(make_task("s.jsonl", fmt="jsonl", labels=stars), "train", tmp_path)["label"] == [0, 1, 2, 3]
    err = read_error(make_task("s_hf", fmt="hf_disk", labels=stars), data_root=tmp_path)
    message = str(err)
    assert str(err.path) == str(tmp_path / "s_hf") and err.field == "label" and "row 0:" in message
    assert "integer label 1 is ambiguous" in message and "the label '1' or position 1, the label '2'" in message
    assert "files.train.int_labels" in message and "files.train.int_label_names" in message
    # Saying how: values reads them as JSONL does; positions (or int_label_names) as before.
    values = make_task("s_hf", fmt="hf_disk", labels=stars, int_labels="values")
    assert read_split(values, "train", tmp_path)["label"] == [0, 1, 2, 3]
    positions = make_task("s_hf", fmt="hf_disk", labels=stars, int_labels="positions")
    assert read_split(positions, "train", tmp_path)["label"] == [1, 2, 3, 4]
    named = make_task("s_hf", fmt="hf_disk", labels=stars, int_label_names=stars)
    assert read_split(named, "train", tmp_path)["label"] == [1, 2, 3, 4]
    # A 5 is a position out of range: the message says integers are positions, and how to read them otherwise.
    _stars(tmp_path, [5])
    err = read_error(make_task("s_hf", fmt="hf_disk", labels=stars, int_labels="positions"), data_root=tmp_path)
    assert "out of range for the task's labels (5 entries): it is read as a position (0 to 4)" in str(err)
    assert read_split(values, "train", tmp_path)["label"] == [4]
    _stars(tmp_path, [7])
    assert "label '7' is not one of the task's labels" in str(read_error(values, data_root=tmp_path))


def test_hf_plain_ints_with_labels_one_zero_are_refused(tmp_path: Path) -> None:
    _stars(tmp_path, [0, 1])
    assert read_split(make_task("s.jsonl", fmt="jsonl", labels=["1", "0"]), "train", tmp_path)["label"] == [1, 0]
    err = str(read_error(make_task("s_hf", fmt="hf_disk", labels=["1", "0"]), data_root=tmp_path))
    assert "row 0:" in err and "integer label 0 is ambiguous" in err and "'1' at position 0" in err
    # A label mixing names and integers is ambiguous only where an integer is not its own position.
    err = str(read_error(make_task("s_hf", fmt="hf_disk", labels=["1", "neg"]), data_root=tmp_path))
    assert "integer label 0 is ambiguous" in err
    assert read_split(make_task("s_hf", fmt="hf_disk", labels=["neg", "1"]), "train", tmp_path)["label"] == [0, 1]


@pytest.mark.parametrize("labels", [["0", "1"], ["0", "1", "2"], ["neg", "pos"], ["0", "1", "2+"], ["01", "1x"]])
def test_hf_plain_ints_read_as_before_where_they_are_unambiguous(tmp_path: Path, labels: list[str]) -> None:
    """Labels that are their own positions, or spell no integer, read as positions exactly as before."""
    _stars(tmp_path, [1, 0, -1, 1])
    assert read_split(make_task("s_hf", fmt="hf_disk", labels=labels), "train", tmp_path)["label"] == [1, 0, -1, 1]


def test_hf_classlabel_with_integer_names_reads_by_its_names_as_before(tmp_path: Path) -> None:
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["0", "1"])})
    data = {"text": ["a", "b", "c"], "label": [0, 1, -1]}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(tmp_path / "cl"))
    assert read_split(make_task("cl", fmt="hf_disk", labels=["1", "0"]), "train", tmp_path)["label"] == [1, 0, -1]
    # int_labels is for plain integer columns: a ClassLabel's names already say what each index is.
    err = str(read_error(make_task("cl", fmt="hf_disk", labels=["1", "0"], int_labels="values"), data_root=tmp_path))
    assert "row 0:" in err and "files.train.int_labels" in err and "ClassLabel" in err


def test_hf_plain_minus_one_with_int_labels(tmp_path: Path) -> None:
    _stars(tmp_path, [-1, 1, 0])
    # '-1' a label: values reads -1 as that label, positions as "no label" (-1 is no position).
    values = make_task("s_hf", fmt="hf_disk", labels=["-1", "0", "1"], int_labels="values")
    assert read_split(values, "train", tmp_path)["label"] == [0, 2, 1]
    positions = make_task("s_hf", fmt="hf_disk", labels=["-1", "0", "1"], int_labels="positions")
    assert read_split(positions, "train", tmp_path)["label"] == [-1, 1, 0]
    # '-1' not a label: -1 is the no-label mark either way.
    values = make_task("s_hf", fmt="hf_disk", labels=["0", "1"], int_labels="values")
    assert read_split(values, "train", tmp_path)["label"] == [-1, 1, 0]


def test_hf_plain_int_out_of_range_says_integers_are_positions(tmp_path: Path) -> None:
    _stars(tmp_path, [0, 2])
    err = read_error(make_task("s_hf", fmt="hf_disk", labels=["neg", "pos"]), data_root=tmp_path)
    message = str(err)
    assert "row 1:" in message and "integer label 2 is out of range for the task's labels (2 entries)" in message
    assert "read as a position (0 to 1)" in message and "files.train.int_labels to values" in message


def test_int_labels_is_checked_with_the_spec() -> None:
    with pytest.raises(ValidationError, match="int_labels is for hf_disk / hf_hub"):
        make_task("a.jsonl", fmt="jsonl", int_labels="values")
    with pytest.raises(ValidationError, match="set one of the two"):
        make_task("ds", fmt="hf_disk", int_labels="values", int_label_names=["0", "1"])
    with pytest.raises(ValidationError, match="int_labels is for class labels only"):
        make_task("ds", fmt="hf_disk", type_="regression", int_labels="values")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(st.integers(-3, 12), min_size=2, max_size=6, unique=True),
       picks=st.lists(st.integers(0, 5), min_size=1, max_size=6))
def test_hf_plain_ints_never_read_differently_from_jsonl(tmp_path: Path, labels: list[int],
                                                          picks: list[int]) -> None:
    """Whatever integer labels a task has, a plain int column holding them reads as the JSONL file does, or is
    refused: never another class."""
    values = [labels[pick % len(labels)] for pick in picks]
    _stars(tmp_path, values)
    names = [str(label) for label in labels]
    from_jsonl = read_split(make_task("s.jsonl", fmt="jsonl", labels=names), "train", tmp_path)["label"]
    assert from_jsonl == [names.index(str(value)) for value in values]
    try:
        from_hf = read_split(make_task("s_hf", fmt="hf_disk", labels=names), "train", tmp_path)["label"]
    except DataError as err:
        assert "ambiguous" in str(err) or "-1" in str(err)
    else:
        assert from_hf == from_jsonl
    assert read_split(make_task("s_hf", fmt="hf_disk", labels=names, int_labels="values"), "train",
                      tmp_path)["label"] == from_jsonl


def test_hf_hub_calls_load_dataset_for_hub_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict({"premise": ["p"], "hypothesis": ["h"], "label": [2], "idx": [7]})

    monkeypatch.setattr(formats.datasets, "load_dataset", fake_load_dataset)
    ds = read_split(_mnli_hf_task("nyu-mll/glue"), "dev", tmp_path)
    assert calls == [("nyu-mll/glue", "mnli", "validation_matched")]
    assert ds["label"] == [0] and ds["id"] == ["7"]

    def failing(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(formats.datasets, "load_dataset", failing)
    err = read_error(_mnli_hf_task("nyu-mll/glue"), "dev", data_root=tmp_path)
    assert "nyu-mll/glue" in str(err) and "offline" in str(err)


def test_hf_regression_minus_one_is_a_score_unless_declared(tmp_path: Path) -> None:
    data = {"s1": ["a", "b", "c"], "s2": ["c", "d", "e"], "label": [4.5, -1.0, float("nan")]}
    datasets.Dataset.from_dict(data).save_to_disk(str(tmp_path / "sts"))
    columns = Columns(text_a="s1", text_b="s2", label="label")
    ds = read_split(make_task("sts", fmt="hf_disk", type_="regression", pair=True, columns=columns), "train", tmp_path)
    assert ds.features["label"] == datasets.Value("float32")
    assert ds["label"][:2] == [4.5, -1.0] and math.isnan(ds["label"][2])  # only NaN means "no score"
    # GLUE's STS-B test split on the hub marks its missing scores -1: no_label_value says so.
    marked = make_task("sts", fmt="hf_disk", type_="regression", pair=True, columns=columns, no_label_value=-1)
    assert [math.isnan(score) for score in read_split(marked, "train", tmp_path)["label"]] == [False, True, True]
    with pytest.raises(ValidationError, match="no_label_value is for regression"):
        make_task("sts", fmt="hf_disk", columns=Columns(text_a="s1", label="label"), no_label_value=-1)


def test_unlabelled_file_and_domain_precedence(tmp_path: Path) -> None:
    write(tmp_path, "u.tsv", "text\nhello\n")
    no_label = Columns(text_a="text")
    assert read_split(make_task("u.tsv", columns=no_label), "train", tmp_path)["label"] == [-1]
    reg = read_split(make_task("u.tsv", columns=no_label, type_="regression"), "train", tmp_path)
    assert math.isnan(reg["label"][0])
    assert read_split(make_task("u.tsv", columns=no_label), "train", tmp_path)["domain"] == [""]
    assert read_split(make_task("u.tsv", columns=no_label, task_domain="tdom"), "train", tmp_path)["domain"] \
        == ["tdom"]
    both = make_task("u.tsv", columns=no_label, task_domain="tdom", domain="fdom")
    assert read_split(both, "train", tmp_path)["domain"] == ["fdom"]


def test_non_pair_task_refuses_a_mapped_text_b() -> None:
    # pair: false with a mapped text_b would drop the second text silently (issue 14, class 6).
    with pytest.raises(ValidationError, match="columns.text_b is mapped but pair is false"):
        make_task("a.tsv", columns=Columns(text_a="text", text_b="text_b", label="label"))


def test_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "a.tsv", "text\tlabel\nx\t1\n")
    assert len(read_split(make_task(path), "train", data_root="/nonexistent")) == 1  # absolute: as is
    monkeypatch.chdir(tmp_path)
    assert len(read_split(make_task("a.tsv"), "train")) == 1  # relative, no root: cwd


# ------------------------------------------------------------------------------------------- max_examples


def test_max_examples_is_seeded_and_in_file_order(tmp_path: Path) -> None:
    write(tmp_path, "a.tsv", "text\tlabel\n" + "".join(f"row{i}\t{i % 2}\n" for i in range(50)))
    task = make_task("a.tsv")
    a = read_split(task, "train", tmp_path, max_examples=10, seed=1)["id"]
    assert len(a) == 10 and a == sorted(a, key=int)
    assert read_split(task, "train", tmp_path, max_examples=10, seed=1)["id"] == a
    assert read_split(task, "train", tmp_path, max_examples=10, seed=2)["id"] != a
    assert len(read_split(task, "train", tmp_path, max_examples=500)) == 50
    assert "max_examples" in str(read_error(task, data_root=tmp_path, max_examples=0))


def test_max_examples_still_validates_every_row(tmp_path: Path) -> None:
    write(tmp_path, "a.tsv", "text\tlabel\n" + "x\t1\n" * 20 + "y\t7\n")
    err = read_error(make_task("a.tsv"), data_root=tmp_path, max_examples=2)
    assert err.line == 22


# ------------------------------------------------------------------------------------------------ bad input


def test_unknown_split(tmp_path: Path) -> None:
    msg = str(read_error(make_task("a.tsv"), "dev", data_root=tmp_path))
    assert "'t'" in msg and "'dev'" in msg and "train" in msg


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl", "hf_disk"])
def test_missing_file(tmp_path: Path, fmt: str) -> None:
    msg = str(read_error(make_task("nope/missing.x", fmt=fmt), data_root=tmp_path))
    assert str(tmp_path / "nope" / "missing.x") in msg and "'t'" in msg and "'train'" in msg


def test_wrong_column_count(tmp_path: Path) -> None:
    write(tmp_path, "a.tsv", "text\tlabel\nok\t1\nstray\ttab\t0\n")
    err = read_error(make_task("a.tsv"), data_root=tmp_path)
    assert "a.tsv" in str(err) and "line 3" in str(err) and err.line == 3


def test_wrong_column_count_headerless(tmp_path: Path) -> None:
    write(tmp_path, "c.tsv", "s\t1\t\ttext\ns\t0\ttext\n")
    err = read_error(make_task("c.tsv", header=False, columns=Columns(text_a=3, label=1)), data_root=tmp_path)
    assert "line 2" in str(err) and "line 1 (the first line)" in str(err)


def test_label_not_in_list(tmp_path: Path) -> None:
    write(tmp_path, "a.tsv", "text\tlabel\nok\t1\nbad\tmaybe\n")
    err = read_error(make_task("a.tsv"), data_root=tmp_path)
    msg = str(err)
    assert "a.tsv" in msg and "line 3" in msg and "field 'label'" in msg and "'maybe'" in msg
    assert "'0', '1'" in msg and err.field == "label"


def test_a_label_that_reads_as_one_of_the_tasks_shows_both_spellings(tmp_path: Path) -> None:
    """'e' and a combining accent against the task's precomposed label: the message printed two strings that look
    the same (`'caf\u00e9' is not one of ... 'caf\u00e9'`); it now shows where they differ."""
    write(tmp_path, "a.tsv", "text\tlabel\nok\tcafe\u0301\n")
    msg = str(read_error(make_task("a.tsv", labels=["caf\u00e9", "th\u00e9"]), data_root=tmp_path))
    assert "spelled 'cafe\\u0301'; the task's 'caf\\xe9': write them one way" in msg, msg
    assert "spelled" not in str(read_error(make_task("a.tsv", labels=["x", "y"]), data_root=tmp_path))


@pytest.mark.parametrize("score", ["abc", "nan", "inf", "1e999"])
def test_regression_label_not_a_float(tmp_path: Path, score: str) -> None:
    write(tmp_path, "s.tsv", f"text\tlabel\nok\t2.5\nbad\t{score}\n")
    msg = str(read_error(make_task("s.tsv", type_="regression"), data_root=tmp_path))
    assert "s.tsv" in msg and "line 3" in msg and "field 'label'" in msg


def test_empty_label_cell(tmp_path: Path) -> None:
    write(tmp_path, "a.tsv", "text\tlabel\nok\t\n")
    assert "line 2" in str(read_error(make_task("a.tsv"), data_root=tmp_path))


@pytest.mark.parametrize(("name", "fmt", "content"), [
    ("e.tsv", "tsv", ""), ("e.tsv", "tsv", "\n\n"), ("e.csv", "csv", ""), ("e.jsonl", "jsonl", "\n"),
])
def test_empty_file(tmp_path: Path, name: str, fmt: str, content: str) -> None:
    write(tmp_path, name, content)
    msg = str(read_error(make_task(name, fmt=fmt), data_root=tmp_path))
    assert name in msg and "empty" in msg


@pytest.mark.parametrize(("name", "fmt"), [("h.tsv", "tsv"), ("h.csv", "csv")])
def test_header_only_file(tmp_path: Path, name: str, fmt: str) -> None:
    write(tmp_path, name, "text\tlabel\n" if fmt == "tsv" else "text,label\n")
    msg = str(read_error(make_task(name, fmt=fmt), data_root=tmp_path))
    assert name in msg and "empty split" in msg and "header" in msg


def test_empty_hf_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (datasets cannot load_from_disk a saved 0-row dataset, so the empty split comes from "the hub".)
    empty = datasets.Dataset.from_dict({"text": [], "label": []})
    monkeypatch.setattr(formats.datasets, "load_dataset", lambda *args, **kwargs: empty)
    assert "empty split" in str(read_error(make_task("some/hub-set", fmt="hf_hub"), data_root=tmp_path))


@pytest.mark.parametrize(("line", "field"), [("\t1", "text_a"), ("   \t1", "text_a")])
def test_missing_text(tmp_path: Path, line: str, field: str) -> None:
    write(tmp_path, "a.tsv", f"text\tlabel\nok\t0\n{line}\n")
    err = read_error(make_task("a.tsv"), data_root=tmp_path)
    assert "line 3" in str(err) and err.field == field


def test_missing_text_b_for_pair_task(tmp_path: Path) -> None:
    write(tmp_path, "p.tsv", "text\ttext_b\tlabel\na\tb\t0\na\t \t1\n")
    err = read_error(make_task("p.tsv", pair=True), data_root=tmp_path)
    assert "line 3" in str(err) and "field 'text_b'" in str(err)


@pytest.mark.parametrize(("name", "fmt", "body", "line"), [
    ("a.tsv", "tsv", b"text\tlabel\nok\t1\nbad \xff byte\t0\n", 3),
    ("a.csv", "csv", b"text,label\nok,1\nbad \xc3,0\n", 3),
    ("a.jsonl", "jsonl", b'{"text": "ok", "label": 1}\n{"text": "\xe9", "label": 0}\n', 2),
])
def test_non_utf8_bytes(tmp_path: Path, name: str, fmt: str, body: bytes, line: int) -> None:
    write(tmp_path, name, body)
    err = read_error(make_task(name, fmt=fmt), data_root=tmp_path)
    assert name in str(err) and f"line {line}" in str(err) and "UTF-8" in str(err)


def test_duplicate_ids(tmp_path: Path) -> None:
    write(tmp_path, "d.tsv", "id\ttext\tlabel\na\tx\t1\nb\ty\t0\na\tz\t1\n")
    task = make_task("d.tsv", columns=Columns(text_a="text", label="label", id="id"))
    err = read_error(task, data_root=tmp_path)
    msg = str(err)
    assert "d.tsv" in msg and "line 4" in msg and "'a'" in msg and "line 2" in msg


@pytest.mark.parametrize(("body", "expect"), [
    ('{"text": "a", "label": 1}\n{"text": "b", "label": \n', "invalid JSON"),
    ('{"text": "a", "label": 1}\n[1, 2]\n', "JSON object"),
    ('{"text": "a", "label": 1}\n{"label": 1}\n', "missing key 'text'"),
    ('{"text": "a", "label": 1}\n{"text": 5, "label": 1}\n', "string"),
])
def test_bad_jsonl_lines(tmp_path: Path, body: str, expect: str) -> None:
    write(tmp_path, "a.jsonl", body)
    msg = str(read_error(make_task("a.jsonl", fmt="jsonl"), data_root=tmp_path))
    assert "a.jsonl" in msg and "line 2" in msg and expect in msg


@pytest.mark.parametrize("body", ['text,label\nok,1\n"unclosed,0\nmore,1\n', 'text,label\nok,1\n"a"b,0\n'])
def test_malformed_csv_quoting(tmp_path: Path, body: str) -> None:
    write(tmp_path, "q.csv", body)
    err = read_error(make_task("q.csv", fmt="csv"), data_root=tmp_path)
    assert "q.csv" in str(err) and err.line == 3 and "malformed CSV" in str(err)


def test_header_missing_column(tmp_path: Path) -> None:
    write(tmp_path, "a.tsv", "sentence\tlabel\nx\t1\n")
    msg = str(read_error(make_task("a.tsv"), data_root=tmp_path))
    assert "a.tsv" in msg and "'text'" in msg and "'sentence', 'label'" in msg


def test_column_kind_mismatch(tmp_path: Path) -> None:
    write(tmp_path, "a.tsv", "text\tlabel\nx\t1\n")
    msg = str(read_error(make_task("a.tsv", columns=Columns(text_a=0, label=1)), data_root=tmp_path))
    assert "header: false" in msg
    msg = str(read_error(make_task("a.tsv", header=False), data_root=tmp_path))
    assert "0-based" in msg
    task = make_task("a.tsv", header=False, columns=Columns(text_a=5, label=1))
    msg = str(read_error(task, data_root=tmp_path))
    assert "index 5" in msg and "line 1" in msg


def test_hf_bad_inputs(tmp_path: Path) -> None:
    _save_mnli_like(tmp_path)
    err = read_error(_mnli_hf_task("mnli_hf", int_label_names=["entailment", "neutral"]), "dev",
                     data_root=tmp_path)
    assert "row 2" in str(err) and "out of range" in str(err)
    err = read_error(_mnli_hf_task("mnli_hf", int_label_names=["entailment", "neutral", "other"]), "dev",
                     data_root=tmp_path)
    assert "'other'" in str(err)
    task = make_task("mnli_hf", fmt="hf_disk", hf_split="validation_matched")
    assert "lacks column 'text'" in str(read_error(task, data_root=tmp_path))


def test_hf_disk_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    assert "folder" in str(read_error(make_task("folder", fmt="hf_disk"), data_root=tmp_path))


# ------------------------------------------------------------------------------------------------ property

# Fragments that make near-valid files far more often than uniform random bytes do.
_PIECES = [b"text", b"label", b"id", b"\t", b"\n", b"\r\n", b'"', b",", b"0", b"1", b"2.5", b"x", b" ",
           b"\xff", b"\xc3\xa9", b"\x00", b"{", b"}", b":", b"[", b'"text"', b'"label"', b"\xef\xbb\xbf",
           b"null"]
_RANDOM_FILES = st.one_of(st.binary(max_size=200),
                          st.lists(st.sampled_from(_PIECES), max_size=40).map(b"".join))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_RANDOM_FILES, fmt=st.sampled_from(["tsv", "csv", "jsonl"]), header=st.booleans(),
       regression=st.booleans())
def test_random_bytes_parse_or_raise_data_error(tmp_path: Path, body: bytes, fmt: str, header: bool,
                                                regression: bool) -> None:
    write(tmp_path, f"r.{fmt}", body)
    columns = (Columns(text_a="text", label="label", id="id") if header or fmt == "jsonl"
               else Columns(text_a=0, label=1))
    task = make_task(f"r.{fmt}", fmt=fmt, header=header, columns=columns,
                     type_="regression" if regression else "classification")
    try:
        ds = read_split(task, "train", tmp_path, max_examples=3)
    except DataError:
        return
    assert 1 <= len(ds) <= 3
    assert ds.column_names == ["id", "text_a", "text_b", "label", "domain"]


def test_a_csv_field_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    """csv refuses fields over 131,072 characters by default, which was reported as unbalanced quotes."""
    long_text = "word " * 40_000  # 200,000 characters
    path = tmp_path / "long.csv"
    path.write_text(f'text,label\n"{long_text}",1\nshort,0\n')
    records = list(formats.csv_records(iter(path.read_text().splitlines(keepends=True)), path))
    assert [fields[0] for _, fields in records][1:] == [long_text, "short"]


# ------------------------------------------------------------------------------------- audit: messy files


def test_unpaired_surrogate_in_jsonl_names_line_and_field(tmp_path: Path) -> None:
    write(tmp_path, "a.jsonl", '{"text": "fine", "label": "1"}\n{"text": "cut \\ud83d", "label": "0"}\n')
    err = read_error(make_task("a.jsonl", fmt="jsonl"), data_root=tmp_path)
    assert err.line == 2 and "'text_a'" in str(err) and "surrogate U+D83D" in str(err)
    write(tmp_path, "b.jsonl", '{"text": "fine", "label": "1", "id": "x\\udc00"}\n')
    err = read_error(make_task("b.jsonl", fmt="jsonl", columns=Columns(text_a="text", label="label", id="id")),
                     data_root=tmp_path)
    assert err.line == 1 and "'id'" in str(err)
    write(tmp_path, "ok.jsonl", '{"text": "a pair \\ud83d\\ude00 is fine", "label": "1"}\n')
    assert read_split(make_task("ok.jsonl", fmt="jsonl"), "train", tmp_path)["text_a"] == ["a pair \U0001F600 is fine"]


@pytest.mark.parametrize("fmt", ["txt", "tsv", "csv"])
def test_lone_cr_line_ends_are_refused_by_name(tmp_path: Path, fmt: str) -> None:
    write(tmp_path, "a.f", "text\rfirst\rsecond\r" if fmt != "txt" else "first\rsecond\rthird\r")
    columns = Columns(text_a=0) if fmt == "txt" else Columns(text_a="text")
    err = str(read_error(make_task("a.f", fmt=fmt, columns=columns, type_="text", labels=[]), data_root=tmp_path))
    assert "CR line ends" in err and "LF" in err
    write(tmp_path, "crlf.txt", "first\r\nsecond\r\n")  # CRLF is fine
    assert len(read_split(make_task("crlf.txt", fmt="txt", columns=Columns(text_a=0), type_="text", labels=[]),
                          "train", tmp_path)) == 2


def test_utf16_file_is_named(tmp_path: Path) -> None:
    write(tmp_path, "a.tsv", "text\tlabel\nhi\t1\n".encode("utf-16"))
    err = read_error(make_task("a.tsv"), data_root=tmp_path)
    assert "UTF-16" in str(err) and "not valid UTF-8" not in str(err)


def test_tsv_csv_quoting(tmp_path: Path) -> None:
    # What pandas' to_csv(sep="\t") writes: quotes doubled inside quoted fields, tabs kept inside quotes.
    write(tmp_path, "q.tsv", 'text\tlabel\n"He said ""great"""\t1\n"a\tb"\t0\nplain\t1\n')
    assert "quoting: csv" in str(read_error(make_task("q.tsv"), data_root=tmp_path))  # the tab: a field too many
    ds = read_split(make_task("q.tsv", quoting="csv"), "train", tmp_path)
    assert ds["text_a"] == ['He said "great"', "a\tb", "plain"] and ds["label"] == [1, 0, 1]
    write(tmp_path, "glue.tsv", 'text\tlabel\n"stray quote\t1\n')  # GLUE's default: quotes are text
    assert read_split(make_task("glue.tsv"), "train", tmp_path)["text_a"] == ['"stray quote']
    write(tmp_path, "bad.tsv", "text\tlabel\nno\tquotes\t1\n")
    assert "set quoting" not in str(read_error(make_task("bad.tsv"), data_root=tmp_path))
    with pytest.raises(ValidationError, match="quoting is a tsv setting"):
        make_task("a.csv", fmt="csv", quoting="csv")


def test_jsonl_raw_tab_hint(tmp_path: Path) -> None:
    write(tmp_path, "a.jsonl", '{"text": "a\tb", "label": "1"}\n')
    err = read_error(make_task("a.jsonl", fmt="jsonl"), data_root=tmp_path)
    assert err.line == 1 and "must be escaped" in str(err)


@pytest.mark.parametrize("score", ["1_000", "\u0661\u0662", "\uff13", "0x10"])
def test_scores_are_plain_decimals(tmp_path: Path, score: str) -> None:
    write(tmp_path, "a.tsv", f"text\tlabel\nx\t{score}\n")
    err = read_error(make_task("a.tsv", type_="regression"), data_root=tmp_path)
    assert err.line == 2 and "plain decimal" in str(err)


def test_new_file_settings_keep_fingerprints_at_their_defaults() -> None:
    from multidistill.data.tasks import fingerprint_spec

    dump = fingerprint_spec(BUILTIN_TASKS["sst2"])
    assert "quoting" not in dump["files"]["train"] and "no_label_value" not in dump["files"]["train"]
    quoted = make_task("a.tsv", quoting="csv")
    assert fingerprint_spec(quoted)["files"]["train"]["quoting"] == "csv"
    assert "int_labels" not in dump["files"]["train"] and "int_labels" not in fingerprint_spec(quoted)["files"]["train"]
    values = make_task("ds", fmt="hf_disk", int_labels="values")
    assert fingerprint_spec(values)["files"]["train"]["int_labels"] == "values"


# ------------------------------------------------------------------------------------------ the Arrow cache


def _cache(tmp_path: Path, name: str = "split") -> Path:
    write(tmp_path, "a.tsv", "text\tlabel\n" + "".join(f"row {i}\t{i % 2}\n" for i in range(50)))
    return readers.write_split_cache(make_task("a.tsv"), "train", tmp_path / "cache" / name, tmp_path)


def test_truncated_example_cache_is_rebuilt(tmp_path: Path) -> None:
    folder = _cache(tmp_path)
    arrow = folder / split_cache.EXAMPLES_FILE
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])  # a full disk, a cut copy
    ds = split_cache.open_split_cache(_cache(tmp_path), make_task("a.tsv"))
    assert len(ds) == 50 and ds["text_a"][-1] == "row 49"


def test_cache_of_an_older_reader_is_rebuilt(tmp_path: Path) -> None:
    folder = _cache(tmp_path)
    meta = json.loads((folder / split_cache.EXAMPLES_META).read_text())
    (folder / split_cache.EXAMPLES_META).write_text(json.dumps({**meta, "format_version": 1}))
    (folder / split_cache.EXAMPLES_FILE).write_bytes(b"not arrow")  # never opened: version 1 is not trusted
    assert len(split_cache.open_split_cache(_cache(tmp_path), make_task("a.tsv"))) == 50


def test_a_cache_of_reader_3_is_not_trusted(tmp_path: Path) -> None:
    """Reader 3 read an ambiguous HF int label as a position, where 4 refuses it: its caches are read again."""
    assert split_cache.CACHE_VERSION >= 4
    folder = _cache(tmp_path)
    meta = json.loads((folder / split_cache.EXAMPLES_META).read_text())
    (folder / split_cache.EXAMPLES_META).write_text(json.dumps({**meta, "format_version": 3}))
    (folder / split_cache.EXAMPLES_FILE).write_bytes(b"not arrow")  # never opened: version 3 is not trusted
    assert len(split_cache.open_split_cache(_cache(tmp_path), make_task("a.tsv"))) == 50


def test_damaged_example_cache_read_is_a_data_error(tmp_path: Path) -> None:
    folder = _cache(tmp_path)
    arrow = folder / split_cache.EXAMPLES_FILE
    arrow.write_bytes(b"\0" * arrow.stat().st_size)  # same size, garbage: found only when read
    with pytest.raises(DataError, match="example cache .* is damaged"):
        list(split_cache.read_cached_examples(folder))


def test_dead_writers_temp_folders_of_other_keys_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / "cache" / ".otherkey.tmp-999999999-abc"  # no such pid
    dead.mkdir(parents=True)
    _cache(tmp_path)
    assert not dead.exists()
