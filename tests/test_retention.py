"""Retention is computed over the tasks a model and its reference share, in every place that shows it.

The case from issue 15: a single-task RTE student whose teacher was also scored on other tasks showed
76.7% (its RTE score over the teacher's four-task average) where the teacher's RTE score gives 92.6%.
"""

from __future__ import annotations

import json

import pytest

from multidistill.evaluation.retention import retention
from multidistill.recipes.summary import write_summary
from multidistill.report import build_report, plots
from multidistill.report.build import load_summary

TEACHER = {"rte": 0.7004, "sst2": 0.9106, "mrpc": 0.8677, "stsb": 0.9550}  # one task more than the recipe has
STUDENT = {"rte": 0.6486}
RIGHT = 0.6486 / 0.7004  # 92.6%
WRONG = 0.6486 / (sum(TEACHER.values()) / len(TEACHER))  # 75.6%: against the teacher's four-task average


def _rows() -> dict[str, dict]:
    def metrics(main: dict[str, float]) -> dict:
        return {"tasks": {t: {"accuracy": v} for t, v in main.items()}, "main": main,
                "average": sum(main.values()) / len(main)}

    return {"teacher": {"metrics": metrics(TEACHER), "params": 33_000_000},
            "student": {"metrics": metrics(STUDENT), "params": 2_000_000}}


def test_retention_uses_only_the_shared_tasks():
    kept = retention(STUDENT, TEACHER)
    assert kept is not None and kept.tasks == ("rte",)
    assert kept.ratio == pytest.approx(RIGHT) and kept.reference_score == pytest.approx(0.7004)
    # ``tasks`` limits the comparison; a task missing on either side is left out, not counted as 0.
    assert retention(TEACHER, TEACHER, ["sst2", "qqp"]).tasks == ("sst2",)
    assert retention({"cola": 0.3}, {"cola": 0.0}) is None  # a ratio against a score <= 0 means nothing
    assert retention({"qqp": 0.8}, TEACHER) is None


def test_recipe_summary_compares_the_recipe_tasks_only(tmp_path, capsys):
    summary = write_summary(tmp_path, _rows(), "teacher", ["rte"])
    written = json.loads((tmp_path / "summary.json").read_text())
    for result in (summary, written):
        assert result["rows"]["student"]["retention"] == pytest.approx(RIGHT)
        assert result["rows"]["student"]["retention_tasks"] == ["rte"]
        assert result["rows"]["teacher"]["retention"] == pytest.approx(1.0)
    table = capsys.readouterr().out
    assert "92.6" in table and f"{100 * WRONG:.1f}" not in table
    assert "0.7004" in table  # the teacher's average column is over the tasks shown (its RTE score)


def test_report_recomputes_retention_from_the_shared_tasks(tmp_path, monkeypatch):
    rows = _rows()
    rows["student"]["retention"] = WRONG  # as an older summary.json recorded it
    note = "augment.pos_tagger is 'auto' but nltk is not installed; pip install 'multidistill[pos]'"
    (tmp_path / "summary.json").write_text(json.dumps({"reference": "teacher", "tasks": ["rte"], "rows": rows,
                                                       "notes": [note]}))
    summary = load_summary(tmp_path)
    assert summary["rows"]["student"]["retention"] == pytest.approx(RIGHT)
    assert summary["rows"]["teacher"]["average"] == pytest.approx(0.7004)

    drawn = []

    def spy(*args, **kwargs):
        drawn.append(retention(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(plots, "retention", spy)
    text = (build_report(tmp_path)).read_text()
    assert "keeps **92.6%**" in text and "| 92.6 |" in text
    assert "75.6" not in text
    assert f"- {note}" in text  # the summary's notes (e.g. a missing POS tagger) reach the report
    assert [k.ratio for k in drawn if k is not None] == pytest.approx([RIGHT, RIGHT])  # the plot's rte and average
