"""The built-in `<task>-hf` specs read GLUE in the Hugging Face `glue` schema (here a local copy
written with `save_to_disk`, standing in for `load_dataset("nyu-mll/glue", ...)`)."""

from __future__ import annotations

import datasets
import pytest

from multidistill.data.readers import read_split
from multidistill.data.tasks import BUILTIN_TASKS


def _local(task_name: str, folder) -> object:
    """The built-in spec with its hub path pointed at a local saved DatasetDict."""
    spec = BUILTIN_TASKS[task_name]
    files = {split: f.model_copy(update={"path": str(folder)}) for split, f in spec.files.items()}
    return spec.model_copy(update={"files": files})


def test_mnli_hf_maps_hf_label_order_to_the_tsv_label_order(tmp_path):
    # HF glue/mnli: 0 entailment, 1 neutral, 2 contradiction; our spec (GLUE TSV) sorts them differently.
    features = datasets.Features({
        "premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
        "idx": datasets.Value("int32"),
    })
    rows = {"premise": ["p0", "p1", "p2"], "hypothesis": ["h0", "h1", "h2"], "label": [0, 1, 2], "idx": [0, 1, 2]}
    test_rows = {**rows, "label": [-1, -1, -1]}
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(rows, features=features),
        "validation_matched": datasets.Dataset.from_dict(rows, features=features),
        "test_matched": datasets.Dataset.from_dict(test_rows, features=features.copy()),
    }).save_to_disk(tmp_path / "mnli")
    task = _local("mnli-hf", tmp_path / "mnli")
    for split in ("train", "dev"):
        got = read_split(task, split)
        labels = [task.labels[i] for i in got["label"]]
        assert labels == ["entailment", "neutral", "contradiction"]
        assert list(got["text_a"]) == ["p0", "p1", "p2"] and list(got["id"]) == ["0", "1", "2"]


@pytest.mark.parametrize(("name", "columns", "labels"), [
    ("sst2-hf", {"sentence": ["a fine film", "dull"]}, [1, 0]),
    ("stsb-hf", {"sentence1": ["a", "b"], "sentence2": ["c", "d"]}, [4.5, 0.25]),
])
def test_single_and_regression_hf_specs(tmp_path, name, columns, labels):
    rows = {**columns, "label": labels, "idx": [10, 11]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "validation": datasets.Dataset.from_dict(rows)}).save_to_disk(tmp_path / name)
    got = read_split(_local(name, tmp_path / name), "dev")
    assert list(got["id"]) == ["10", "11"]
    assert [round(float(v), 2) for v in got["label"]] == [float(v) for v in labels]
