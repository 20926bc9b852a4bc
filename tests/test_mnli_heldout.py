"""benchmarks/mnli_heldout.py: each genre's dev rows split into two seeded halves of whole lines, and the config
that selects on one half and reports the other."""

from __future__ import annotations

import sys

import pytest
import yaml
from benchmarks import mnli_heldout as heldout

HEADER = "index\tgenre\tsentence1\tsentence2\tgold_label\n"


def _write(root, rows):
    (root / "mnli").mkdir(parents=True)
    lines = [f"{i}\t{genre}\tpremise {i} \"quoted\"\thypothesis {i}\tneutral\n" for i, genre in enumerate(rows)]
    (root / heldout.SOURCE).write_text(HEADER + "".join(lines), encoding="utf-8")
    return lines


def _run(monkeypatch, data, out, seed=0):
    monkeypatch.setattr(sys, "argv", ["mnli_heldout.py", "--data-root", str(data), "--out", str(out),
                                      "--seed", str(seed)])
    heldout.main()


def test_each_genre_is_halved_into_disjoint_files_of_the_sources_lines(tmp_path, monkeypatch):
    lines = _write(tmp_path / "data", ["fiction"] * 7 + ["travel"] * 4 + ["fiction"] * 2)
    _run(monkeypatch, tmp_path / "data", tmp_path / "out")
    dev = (tmp_path / "out" / "dev.tsv").read_text().splitlines(keepends=True)
    test = (tmp_path / "out" / "test.tsv").read_text().splitlines(keepends=True)
    assert dev[0] == test[0] == HEADER
    assert sorted(dev[1:] + test[1:]) == sorted(lines) and not set(dev[1:]) & set(test[1:])
    assert dev[1:] == [line for line in lines if line in dev[1:]]  # the source's order
    genres = [line.split("\t")[1] for line in test[1:]]
    assert (genres.count("fiction"), genres.count("travel")) == (4, 2)  # n // 2 of each genre's rows
    first = (tmp_path / "out" / "test.tsv").read_bytes()
    _run(monkeypatch, tmp_path / "data", tmp_path / "out")
    assert (tmp_path / "out" / "test.tsv").read_bytes() == first  # seeded: the same bytes again
    _run(monkeypatch, tmp_path / "data", tmp_path / "other", seed=1)
    assert (tmp_path / "other" / "test.tsv").read_bytes() != first


def test_the_config_selects_on_dev_and_reports_test(tmp_path, monkeypatch):
    _write(tmp_path / "data", ["fiction", "travel"] * 3)
    _run(monkeypatch, tmp_path / "data", tmp_path / "out")
    config = yaml.safe_load((tmp_path / "out" / "metakd_mnli_heldout.yaml").read_text())
    assert config["report_split"] == "test" and config["data"]["tasks"] == ["mnli-genre"]
    (spec,) = config["data"]["task_specs"]
    assert spec["name"] == "mnli-genre"
    assert spec["files"]["dev"]["path"] == str((tmp_path / "out" / "dev.tsv").resolve())
    assert spec["files"]["test"]["path"] == str((tmp_path / "out" / "test.tsv").resolve())
    assert spec["files"]["train"]["path"].endswith("mnli/train_subset_genre_tokenized.tsv")


def test_lines_break_at_newlines_only_and_twins_stay_together(tmp_path, monkeypatch):
    """A U+2028 inside a text is no line break (the project's reader splits at "\\n" only); blank lines are read as
    none; rows equal but for their id land in one half; a last line without its newline gets the file's ending."""
    data = tmp_path / "data"
    (data / "mnli").mkdir(parents=True)
    rows = [f"{i}\tfiction\tpremise {i}\u2028more\thypothesis\tneutral\r\n" for i in range(6)]
    twins = ["90\ttravel\tsame premise\tsame hypothesis\tneutral\r\n", "91\ttravel\tsame premise\tsame hypothesis\t"
             "neutral\r\n"]
    others = [f"{i}\ttravel\tp {i}\th\tneutral\r\n" for i in range(92, 97)]
    body = HEADER.replace("\n", "\r\n") + "".join(rows) + "\r\n" + "".join(twins + others)
    (data / heldout.SOURCE).write_bytes(body.rstrip("\r\n").encode())
    _run(monkeypatch, data, tmp_path / "out")
    dev = (tmp_path / "out" / "dev.tsv").read_bytes().decode()
    test = (tmp_path / "out" / "test.tsv").read_bytes().decode()
    assert (dev + test).count("\u2028") == 6 and "\r\n\r\n" not in dev + test
    assert (dev + test).endswith("\r\n") and "\n" not in (dev + test).replace("\r\n", "")
    assert dev.count("same premise") in (0, 2) and test.count("same premise") in (0, 2)


def test_a_short_row_or_a_genre_of_one_row_is_refused(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _write(data, ["fiction"] * 3 + ["travel"])
    with pytest.raises(SystemExit, match="genre 'travel' has 1 row"):
        _run(monkeypatch, data, tmp_path / "out")
    (data / heldout.SOURCE).write_text(HEADER + "1\tfiction\tonly a premise\n")
    with pytest.raises(SystemExit, match="line 2: 3 tab-separated cells, the header has 5"):
        _run(monkeypatch, data, tmp_path / "out")
