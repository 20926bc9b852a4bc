"""A mapped domain column's missing cells: refused by the reader (file, line or row, field) among rows that have a
domain, so no row of a task with domains goes without one, and a NaN never becomes a domain called 'nan'."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from multidistill.data.readers import read_split
from multidistill.data.tasks import Columns
from multidistill.errors import DataError
from tests.test_readers import make_task, write

GENRE = Columns(text_a="text", label="label", domain="genre")


def test_an_empty_domain_cell_among_domains_is_refused_by_file_line_and_field(tmp_path: Path) -> None:
    write(tmp_path, "a.tsv", "text\tlabel\tgenre\ngood read\t1\tbooks\nno genre\t0\t\ngreat film\t1\tdvd\n")
    with pytest.raises(DataError) as refused:
        read_split(make_task("a.tsv", columns=GENRE), "train", tmp_path)
    error = refused.value
    assert (Path(error.path).name, error.line, error.field) == ("a.tsv", 3, "domain")
    assert "no domain (column 'genre'" in str(error)
    # The same row first: named when a later row shows the column holds domains.
    write(tmp_path, "b.tsv", "text\tlabel\tgenre\nno genre\t0\t\ngood read\t1\tbooks\n")
    with pytest.raises(DataError) as refused:
        read_split(make_task("b.tsv", columns=GENRE), "train", tmp_path)
    assert refused.value.line == 2


def test_every_cell_empty_is_a_task_without_domains(tmp_path: Path) -> None:
    """The transfer set of a task without domains writes its domain column so."""
    write(tmp_path, "a.tsv", "text\tlabel\tgenre\ngood read\t1\t\nno genre\t0\t\n")
    assert list(read_split(make_task("a.tsv", columns=GENRE), "train", tmp_path)["domain"]) == ["", ""]


def test_a_nan_domain_is_no_domain_not_one_called_nan(tmp_path: Path) -> None:
    write(tmp_path, "a.jsonl", '{"text": "good read", "label": "1", "genre": "books"}\n'
                               '{"text": "no genre", "label": "0", "genre": NaN}\n')
    with pytest.raises(DataError, match="no domain") as refused:
        read_split(make_task("a.jsonl", fmt="jsonl", columns=GENRE), "train", tmp_path)
    assert refused.value.line == 2
    # An HF float column (a pandas frame's missing value): refused by row.
    datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": ["1", "0", "1"],
                                "genre": [1.0, float("nan"), 2.0]}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataError, match=r"row 1: no domain"):
        read_split(make_task("hf", fmt="hf_disk", columns=GENRE), "train", tmp_path)
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["1", "0"],
                                "genre": [float("nan"), float("nan")]}).save_to_disk(str(tmp_path / "none"))
    assert list(read_split(make_task("none", fmt="hf_disk", columns=GENRE), "train", tmp_path)["domain"]) == ["", ""]
