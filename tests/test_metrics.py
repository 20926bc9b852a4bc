"""Golden tests for `multidistill.evaluation.metrics`: every expected number is worked out by hand below."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from multidistill.errors import ConfigError
from multidistill.evaluation.metrics import METRICS, average_score, compute_metrics

# A binary example with a known confusion matrix (positive class = 1):
#   TP = 3 (gold 1, pred 1), FN = 2 (gold 1, pred 0), FP = 1 (gold 0, pred 1), TN = 4 (gold 0, pred 0)
GOLD = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
PRED = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0])
TP, FN, FP, TN = 3, 2, 1, 4
# accuracy  = (TP + TN) / N = 7 / 10 = 0.7
ACCURACY = 0.7
# precision = 3 / 4, recall = 3 / 5, F1 = 2PR / (P + R) = 2TP / (2TP + FP + FN) = 6 / 9 = 2 / 3
F1 = 2 / 3
# MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
#     = (12 - 2) / sqrt(4 * 5 * 5 * 6) = 10 / sqrt(600) = 1 / sqrt(6) ~= 0.408248
MCC = 1 / math.sqrt(6)


def logits_for(classes: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """Logits whose argmax is ``classes`` (with uneven values so argmax is not trivially index 0)."""
    out = np.full((len(classes), num_classes), -1.5)
    out[np.arange(len(classes)), classes] = 2.0
    return out


def test_hand_arithmetic_matches_confusion_matrix() -> None:
    # Guards the fixture itself: the arrays really have the counts the comments claim.
    assert int(((GOLD == 1) & (PRED == 1)).sum()) == TP
    assert int(((GOLD == 1) & (PRED == 0)).sum()) == FN
    assert int(((GOLD == 0) & (PRED == 1)).sum()) == FP
    assert int(((GOLD == 0) & (PRED == 0)).sum()) == TN


@pytest.mark.parametrize("predictions", [PRED, logits_for(PRED)], ids=["class-ids", "logits"])
def test_classification_metrics_golden(predictions: np.ndarray) -> None:
    got = compute_metrics(["accuracy", "f1", "matthews"], predictions, GOLD)
    assert got == pytest.approx({"accuracy": ACCURACY, "f1": F1, "matthews": MCC}, abs=1e-12)
    assert all(type(v) is float for v in got.values())


def test_f1_is_for_positive_class_one_not_zero() -> None:
    # Swapping the roles of 0/1 gives F1 of class 0: TP'=TN=4, FP'=FN=2, FN'=FP=1 -> 8 / (8 + 2 + 1) = 8/11.
    # The metric must stay at the class-1 value 2/3 for the original arrays and become 8/11 when flipped.
    assert compute_metrics(["f1"], 1 - PRED, 1 - GOLD)["f1"] == pytest.approx(8 / 11)
    assert compute_metrics(["f1"], PRED, GOLD)["f1"] == pytest.approx(F1)


def test_f1_no_positive_predictions_is_zero() -> None:
    # Never predicting class 1: TP = 0 -> precision undefined -> reported as 0 (zero_division=0), no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute_metrics(["f1"], np.zeros(4, dtype=int), np.array([1, 0, 1, 0]))["f1"] == 0.0


def test_multiclass_logits_argmax_accuracy_and_macro_f1() -> None:
    gold = np.array([0, 1, 2, 2])
    # argmax per row: 0, 2, 2, 1 -> correct rows 0 and 2 -> accuracy 2/4 = 0.5
    logits = np.array([[5.0, 1.0, 0.0], [0.0, 1.0, 3.0], [-1.0, -2.0, 0.5], [0.1, 0.2, 0.15]])
    # per class: class 0 TP=1 FP=0 FN=0 -> F1 1; class 1 TP=0 -> F1 0;
    #            class 2 TP=1 FP=1 FN=1 -> P=R=1/2 -> F1 1/2.  macro = (1 + 0 + 0.5) / 3 = 0.5
    got = compute_metrics(["accuracy", "macro_f1"], logits, gold)
    assert got == pytest.approx({"accuracy": 0.5, "macro_f1": 0.5})


def test_macro_f1_averages_over_the_gold_classes_for_every_model() -> None:
    """A 3-class task whose dev rows hold classes 0 and 1 only: a model that predicts class 2 once was averaged over
    three classes (scikit-learn's default adds predicted classes), one that never does over two, so they were
    scored on other denominators. Both now average over the gold classes 0 and 1."""
    gold = np.array([0, 0, 1, 1])
    never = np.eye(3)[[0, 0, 1, 0]]  # class 0: P 2/3 R 1 -> F1 0.8; class 1: P 1 R 1/2 -> F1 2/3
    once = np.eye(3)[[0, 0, 1, 2]]  # class 0: P 1 R 1 -> F1 1; class 1: P 1 R 1/2 -> F1 2/3; (class 2: F1 0)
    assert compute_metrics(["macro_f1"], never, gold)["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert compute_metrics(["macro_f1"], once, gold)["macro_f1"] == pytest.approx((1 + 2 / 3) / 2)  # was 5/9


def test_matthews_perfect_and_inverted() -> None:
    # Perfect: FP = FN = 0 -> (TP*TN) / sqrt(TP*TP*TN*TN) = 1; fully inverted: TP = TN = 0 -> -1.
    gold = np.array([0, 1, 1, 0, 1])
    assert compute_metrics(["matthews"], gold, gold)["matthews"] == pytest.approx(1.0)
    assert compute_metrics(["matthews"], 1 - gold, gold)["matthews"] == pytest.approx(-1.0)


# Correlation example, scores x against gold y:
#   x = [1, 2, 3, 4, 5], y = [10, 1, 40, 30, 100]
# Pearson: mean(x) = 3, dx = [-2, -1, 0, 1, 2], sum dx^2 = 10
#   sum dx*(y - mean y) = sum dx*y (since sum dx = 0) = -20 - 1 + 0 + 30 + 200 = 209
#   mean(y) = 181 / 5 = 36.2, sum (y - mean)^2 = sum y^2 - 5 * 36.2^2 = 12601 - 6552.2 = 6048.8
#   r = 209 / sqrt(10 * 6048.8) = 209 / sqrt(60488) ~= 0.849797
# Spearman: ranks(x) = [1, 2, 3, 4, 5], ranks(y) = [2, 1, 4, 3, 5], d = [-1, 1, -1, 1, 0], sum d^2 = 4
#   rho = 1 - 6 * 4 / (5 * (25 - 1)) = 1 - 24 / 120 = 0.8
CORR_X = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
CORR_Y = np.array([10.0, 1.0, 40.0, 30.0, 100.0])
PEARSON = 209 / math.sqrt(60488)
SPEARMAN = 0.8


@pytest.mark.parametrize("predictions", [CORR_X, CORR_X.reshape(-1, 1)], ids=["1d-scores", "column-n-by-1"])
def test_correlations_golden(predictions: np.ndarray) -> None:
    got = compute_metrics(["pearson", "spearman"], predictions, CORR_Y)
    assert got["pearson"] == pytest.approx(PEARSON, abs=1e-9)
    assert got["spearman"] == pytest.approx(SPEARMAN, abs=1e-12)


def test_pearson_small_example_and_sign() -> None:
    # x = [1, 2, 3, 4], y = [2, 4, 5, 9]: dx = [-1.5, -.5, .5, 1.5], dy = [-3, -1, 0, 4]
    #   sum dx*dy = 4.5 + 0.5 + 0 + 6 = 11, sum dx^2 = 5, sum dy^2 = 26 -> r = 11 / sqrt(130)
    x, y = np.array([1, 2, 3, 4]), np.array([2, 4, 5, 9])
    assert compute_metrics(["pearson"], x, y)["pearson"] == pytest.approx(11 / math.sqrt(130))
    # Negating the scores flips the sign exactly.
    assert compute_metrics(["pearson"], -x, y)["pearson"] == pytest.approx(-11 / math.sqrt(130))


def test_integer_labels_and_scores_work_for_correlation() -> None:
    # Integer inputs are cast to float64; a monotone but non-linear map keeps Spearman at exactly 1.
    x = np.array([1, 2, 3, 4])
    assert compute_metrics(["spearman"], x, x ** 3)["spearman"] == pytest.approx(1.0)
    assert compute_metrics(["pearson"], x, x ** 3)["pearson"] < 1.0 - 1e-3


@pytest.mark.parametrize("name", ["pearson", "spearman"])
def test_constant_predictions_give_zero_correlation(name: str) -> None:
    # Documented: undefined correlation (zero variance) is reported as 0.0, never NaN.
    got = compute_metrics([name], np.full(5, 2.5), CORR_Y)[name]
    assert got == 0.0 and not math.isnan(got)
    # ... and the same when the gold labels are constant.
    assert compute_metrics([name], CORR_X, np.ones(5))[name] == 0.0


def test_unknown_metric_raises_config_error_listing_known() -> None:
    with pytest.raises(ConfigError) as info:
        compute_metrics(["accuracy", "bleu"], PRED, GOLD)
    message = str(info.value)
    assert "bleu" in message
    assert all(name in message for name in METRICS)


def test_compute_metrics_returns_exactly_requested_names_in_order() -> None:
    got = compute_metrics(["matthews", "accuracy"], PRED, GOLD)
    assert list(got) == ["matthews", "accuracy"]
    assert compute_metrics([], PRED, GOLD) == {}


def test_compute_metrics_accepts_python_lists() -> None:
    assert compute_metrics(["accuracy"], PRED.tolist(), GOLD.tolist())["accuracy"] == pytest.approx(ACCURACY)


def test_average_score_is_unweighted_mean() -> None:
    # (0.9 + 0.6 + 0.3) / 3 = 1.8 / 3 = 0.6
    assert average_score({"sst2": 0.9, "mrpc": 0.6, "cola": 0.3}) == pytest.approx(0.6)
    assert average_score({"only": 0.42}) == pytest.approx(0.42)
    assert math.isnan(average_score({}))


def test_the_metrics_a_task_spec_accepts_are_the_ones_computed():
    from multidistill.data.tasks import TASK_METRICS
    from multidistill.evaluation.metrics import METRICS, MULTILABEL_METRICS

    single = {kind: names for kind, names in TASK_METRICS.items() if kind != "multilabel"}
    assert sorted(name for names in single.values() for name in names) == sorted(METRICS)
    assert sorted(TASK_METRICS["multilabel"]) == sorted(MULTILABEL_METRICS)


def test_rows_without_a_label_are_left_out_of_scoring():
    # Right on both labelled rows; the -1 rows (HF's "no gold label", e.g. SNLI) are neither right nor wrong.
    logits = np.eye(3)[[0, 1, 0, 0]]
    assert compute_metrics(["accuracy", "macro_f1"], logits, np.array([0, 1, -1, -1])) == {"accuracy": 1.0,
                                                                                         "macro_f1": 1.0}
    # Scores: only NaN is missing; -1.0 is a score like any other.
    scores = np.array([-1.0, 0.0, 1.0, 5.0])
    assert compute_metrics(["pearson"], scores, np.array([-1.0, 0.0, 1.0, np.nan]))["pearson"] == pytest.approx(1.0)
    assert compute_metrics(["pearson"], scores, np.array([-1.0, 0.0, 1.0, 2.0]))["pearson"] < 1.0


def test_nothing_labelled_scores_nan():
    result = compute_metrics(["accuracy", "f1"], logits_for(np.array([0, 1])), np.array([-1, -1]))
    assert all(math.isnan(value) for value in result.values())


def test_a_domain_without_labelled_rows_is_left_out_of_the_domain_average():
    """Its metrics would be NaN (nothing to score) and so would the average over domains."""
    from multidistill.data.tasks import Task
    from multidistill.evaluation.evaluate import domain_metrics

    task = Task(name="t", labels=["a", "b"], metrics=["accuracy"]).model_copy(update={"domains": ("x", "y")})
    logits = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    per_domain, average = domain_metrics(task, logits, np.array([0, 0, -1]), np.array([0, 0, 1]))
    assert list(per_domain) == ["x"] and average == {"accuracy": 0.5}
