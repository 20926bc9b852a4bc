"""Trivial baselines (issue 16): a constant predictor's dev score, and retention read against it.

On the sample's MRPC dev, always answering "paraphrase" earns F1 0.812 while the demo's students sat at 0.815-0.818:
their 97% "retention" there was a constant's. Labels below are small enough to score by hand.
"""

from __future__ import annotations

import json
import math

import pytest

from multidistill.data.tasks import Task
from multidistill.evaluation.baseline import at_baseline, retention_above_baseline, trivial_baseline
from multidistill.recipes.summary import write_summary
from multidistill.report import build_report
from multidistill.report.build import load_summary

PAIR = Task(name="para", labels=["no", "yes"], pair=True, metrics=["f1", "accuracy"])
SCORE = Task(name="sim", type="regression", pair=True, metrics=["pearson", "spearman"])


def test_majority_class_is_scored_with_the_tasks_own_metrics():
    # Training: 3 "yes", 1 "no", one unlabelled (-1, ignored). Dev: 3 "yes", 1 "no".
    baseline = trivial_baseline(PAIR, [1, 0, 1, -1, 1], [1, 0, 1, 1])
    # Always "yes": precision 3/4, recall 1 -> F1 = 2 * 0.75 / 1.75 = 6/7; accuracy 3/4.
    assert baseline.metrics == pytest.approx({"f1": 6 / 7, "accuracy": 0.75})
    assert baseline.main == pytest.approx(6 / 7)
    assert "always 'yes'" in baseline.predictor and "75%" in baseline.predictor
    # Majority "no": F1 of the positive class is 0, accuracy 1/4. A tie goes to the lowest class.
    assert trivial_baseline(PAIR, [0, 0, 1], [1, 0, 1, 1]).metrics == pytest.approx({"f1": 0.0, "accuracy": 0.25})
    assert "always 'no'" in trivial_baseline(PAIR, [1, 0], [1, 0]).predictor


def test_a_constant_score_has_no_correlation():
    baseline = trivial_baseline(SCORE, [1.0, 2.0, 3.0, math.nan], [0.0, 5.0, 2.0])
    assert baseline.metrics == {"pearson": 0.0, "spearman": 0.0} and baseline.main == 0.0
    assert "constant 2 " in baseline.predictor and "training mean" in baseline.predictor


def test_a_baseline_needs_labels():
    with pytest.raises(ValueError, match="labelled"):
        trivial_baseline(PAIR, [-1, -1], [1, 0])


def test_at_baseline_and_retention_above_it():
    assert at_baseline(0.818, 0.812) and at_baseline(0.822, 0.812) and not at_baseline(0.823, 0.812)
    assert not at_baseline(None, 0.5) and at_baseline(0.6, 0.5, margin=0.1)
    student, teacher, constant = {"a": 0.9, "b": 0.5}, {"a": 1.0, "b": 0.6}, {"a": 0.5, "b": 0.5}
    # Averages 0.7, 0.8, 0.5: (0.7 - 0.5) / (0.8 - 0.5).
    assert retention_above_baseline(student, teacher, constant, ["a", "b"]) == pytest.approx(2 / 3)
    assert retention_above_baseline(student, teacher, constant, ["b"]) == pytest.approx(0.0)
    assert retention_above_baseline(student, teacher, constant, ["a", "missing"]) == pytest.approx(0.8)
    assert retention_above_baseline(student, {"a": 0.5}, constant, ["a"]) is None  # teacher no better than a constant
    assert retention_above_baseline(student, teacher, constant, ["missing"]) is None


def _rows() -> dict[str, dict]:
    def metrics(main: dict[str, float]) -> dict:
        return {"tasks": {t: {"score": v} for t, v in main.items()}, "main": main,
                "average": sum(main.values()) / len(main)}

    return {"teacher": {"metrics": metrics({"para": 0.84, "sim": 0.82}), "params": 22_000_000},
            "student": {"metrics": metrics({"para": 0.818, "sim": 0.50}), "params": 17_000_000}}


def _baselines() -> dict:
    return {"para": trivial_baseline(PAIR, [1, 1, 0], [1, 1, 1, 0]), "sim": trivial_baseline(SCORE, [1.0, 3.0],
                                                                                              [0.0, 5.0])}


def test_summary_table_shows_the_baseline_and_flags_what_a_constant_also_reaches(tmp_path, capsys):
    baselines = _baselines()
    assert baselines["para"].main == pytest.approx(6 / 7)  # 0.8571: the student's 0.818 is below it
    summary = write_summary(tmp_path, _rows(), "teacher", ["para", "sim"], baselines=baselines)
    written = json.loads((tmp_path / "summary.json").read_text())
    for result in (summary, written):
        student = result["rows"]["student"]
        assert student["at_baseline"] == ["para"] and result["rows"]["teacher"]["at_baseline"] == ["para"]
        # Averages: student 0.659, teacher 0.83, baseline 0.4286.
        expected = (0.659 - (6 / 7) / 2) / (0.83 - (6 / 7) / 2)
        assert student["retention_above_baseline"] == pytest.approx(expected)
        assert student["retention"] == pytest.approx(0.659 / 0.83)
        assert result["rows"]["teacher"]["retention_above_baseline"] == pytest.approx(1.0)
        assert result["baseline"]["main"] == pytest.approx({"para": 6 / 7, "sim": 0.0})
        assert result["baseline"]["retention"] == pytest.approx((6 / 7) / 2 / 0.83)
    table = capsys.readouterr().out
    assert "0.8180†" in table and "0.5000†" not in table and "0.5000 " in table
    assert "trivial baseline" in table and "0.8571" in table and "above baseline" in table
    assert f"{100 * expected:.1f}" in table and "not retention" in " ".join(table.split())
    # The student's 0.818 is below the baseline's 0.857: the footnote must cover below as well as just above.
    assert "below the trivial baseline or within 0.01 above it" in " ".join(table.split())
    assert "trivial baseline on sim: constant 2 (training mean; no correlation)" in table


def test_report_shows_the_baseline_row_and_marks(tmp_path):
    write_summary(tmp_path, _rows(), "teacher", ["para", "sim"], baselines=_baselines())
    summary = load_summary(tmp_path)
    assert summary["baseline"]["average"] == pytest.approx(3 / 7)
    assert summary["rows"]["student"]["at_baseline"] == ["para"]
    text = build_report(tmp_path).read_text()
    expected = 100 * (0.659 - 3 / 7) / (0.83 - 3 / 7)
    assert "| student | 0.8180† | 0.5000 |" in text and "| trivial baseline | 0.8571 | 0.0000 | 0.4286 |" in text
    assert "above baseline %" in text and f"| {expected:.1f} |" in text
    assert "below the baseline or within 0.01 above it" in " ".join(text.split())
    assert "no better than a constant predictor on para" in text and f"keeps **{expected:.1f}%** of the" in text


def test_a_summary_without_a_baseline_reads_as_before(tmp_path):
    write_summary(tmp_path, _rows(), "teacher", ["para", "sim"])
    assert "baseline" not in json.loads((tmp_path / "summary.json").read_text())
    assert load_summary(tmp_path)["baseline"] is None
    text = build_report(tmp_path).read_text()
    assert "above baseline" not in text and "†" not in text
