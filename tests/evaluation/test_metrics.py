"""Metrics against hand-computed values and scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import log_loss as sk_log_loss

from softclass.evaluation import metrics

SEED_PROBS = torch.tensor([[0.20, 0.70, 0.10]], dtype=torch.float64)


def test_seed_example_brier_and_log_loss():
    targets = torch.tensor([1])
    assert float(metrics.brier_score(SEED_PROBS, targets)) == pytest.approx(0.14)
    assert float(metrics.log_loss(SEED_PROBS.log(), targets)) == pytest.approx(-math.log(0.7))


def test_accuracy_by_hand():
    probs = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert float(metrics.accuracy(probs, torch.tensor([1, 0, 0, 0]))) == 0.75


def test_log_loss_and_confusion_match_sklearn():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(40, 4, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 4, (40,), generator=generator)
    log_probs = torch.log_softmax(logits, 1)
    expected = sk_log_loss(targets.numpy(), log_probs.exp().numpy(), labels=[0, 1, 2, 3])
    assert float(metrics.log_loss(log_probs, targets)) == pytest.approx(expected, rel=1e-12)
    predicted = logits.argmax(1)
    ours = metrics.confusion_matrix(targets, predicted, 4).numpy()
    np.testing.assert_array_equal(
        ours, sk_confusion_matrix(targets.numpy(), predicted.numpy(), labels=[0, 1, 2, 3])
    )


def test_log_loss_stays_finite_for_confident_wrong_predictions():
    log_probs = torch.log_softmax(torch.tensor([[0.0, 200.0]]), 1)
    assert float(metrics.log_loss(log_probs, torch.tensor([0]))) == pytest.approx(200.0)


def test_calibration_bins_by_hand():
    probs = torch.tensor([[0.95, 0.05], [0.85, 0.15], [0.45, 0.55], [0.6, 0.4]])
    targets = torch.tensor([0, 1, 1, 1])
    result = metrics.calibration(probs, targets, n_bins=2)
    # bin (0, 0.5]: nothing; bin (0.5, 1]: confidences .95 .85 .55 .6, correct 1 0 1 0
    assert result.counts.tolist() == [0, 4]
    assert math.isnan(float(result.confidence[0]))
    assert float(result.confidence[1]) == pytest.approx((0.95 + 0.85 + 0.55 + 0.6) / 4)
    assert float(result.accuracy[1]) == 0.5
    assert float(result.ece) == pytest.approx(abs(0.5 - 0.7375))
    assert result.to_dict()["confidence"][0] is None


def test_calibration_of_a_perfectly_calibrated_bin_is_zero():
    probs = torch.tensor([[0.75, 0.25]] * 4)
    result = metrics.calibration(probs, torch.tensor([0, 0, 0, 1]), n_bins=4)
    assert float(result.ece) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.accuracy(torch.ones(3), torch.tensor([0, 1, 0])), r"\(N, C\)"),
        (lambda: metrics.accuracy(torch.ones(3, 2), torch.tensor([0, 1])), "2 targets for 3"),
        (lambda: metrics.brier_score(torch.ones(2, 2), torch.tensor([0, 2])), r"\[0, 1\]"),
        (lambda: metrics.log_loss(torch.ones(1, 2), torch.tensor([0.0])), "integer"),
        (lambda: metrics.log_loss(torch.ones(0, 2), torch.zeros(0, dtype=torch.long)), "no rows"),
        (
            lambda: metrics.log_loss(torch.ones(1, 2, dtype=torch.long), torch.tensor([0])),
            "floating",
        ),
        (lambda: metrics.calibration(torch.ones(1, 2), torch.tensor([0]), 0), "n_bins"),
        (lambda: metrics.confusion_matrix(torch.tensor([0]), torch.tensor([0]), 0), "n_classes"),
        (lambda: metrics.confusion_matrix(torch.tensor([[0]]), torch.tensor([0]), 2), "1-D"),
        (lambda: metrics.confusion_matrix(torch.tensor([0]), torch.tensor([3]), 2), r"predicted"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _scored_rows(n_rows: int = 120, n_classes: int = 5, seed: int = 7):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, n_classes, (n_rows,), generator=generator)
    logits = torch.randn(n_rows, n_classes, generator=generator, dtype=torch.float64)
    logits[torch.arange(n_rows), targets] += 1.0
    # Rounded to two decimals: many tied scores, the case where curve code often goes wrong.
    return torch.softmax(logits, 1).round(decimals=2), targets


def test_class_scores_match_sklearn_including_undefined_ones():
    targets = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    predicted = torch.tensor([0, 1, 1, 1, 0, 0, 0])  # 2 and 3 never predicted
    matrix = metrics.confusion_matrix(targets, predicted, 5)  # class 4 has no rows
    scores = metrics.class_scores(matrix)
    precision, recall, f1, support = precision_recall_fscore_support(
        targets.numpy(), predicted.numpy(), labels=list(range(5)), zero_division=np.nan
    )
    np.testing.assert_allclose(scores.precision.numpy(), precision, equal_nan=True)
    np.testing.assert_allclose(scores.recall.numpy(), recall, equal_nan=True)
    np.testing.assert_allclose(scores.f1.numpy(), f1, equal_nan=True)
    assert scores.f1.tolist()[2] == 0.0 and math.isnan(scores.f1.tolist()[4])
    assert scores.support.tolist() == support.tolist()
    assert scores.macro()["recall"] == pytest.approx(np.nanmean(recall))


def test_one_vs_rest_curves_match_sklearn_with_ties():
    probs, targets = _scored_rows()
    curves = metrics.one_vs_rest_curves(probs, targets)
    for column in range(probs.shape[1]):
        positives = (targets == column).numpy()
        scores = probs[:, column].numpy()
        fpr, tpr, _ = roc_curve(positives, scores, drop_intermediate=False)
        np.testing.assert_allclose(curves.false_positive_rate[column].numpy(), fpr)
        np.testing.assert_allclose(curves.true_positive_rate[column].numpy(), tpr)
        assert float(curves.roc_auc[column]) == pytest.approx(roc_auc_score(positives, scores))
        assert float(curves.average_precision[column]) == pytest.approx(
            average_precision_score(positives, scores)
        )
        precision, recall, _ = precision_recall_curve(positives, scores, drop_intermediate=False)
        # scikit-learn lists the points from the lowest threshold up: reversed, they are ours.
        np.testing.assert_allclose(curves.recall[column].numpy(), recall[::-1])
        np.testing.assert_allclose(curves.precision[column].numpy(), precision[::-1])


def test_one_vs_rest_of_a_class_without_rows_is_undefined():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    curves = metrics.one_vs_rest_curves(probs, torch.tensor([0, 1, 0]))
    assert float(curves.roc_auc[0]) == 1.0
    assert math.isnan(float(curves.roc_auc[2])) and math.isnan(float(curves.average_precision[2]))


def test_top_confusions_largest_first():
    matrix = torch.tensor([[5, 2, 0], [3, 4, 3], [0, 1, 9]])
    cells = metrics.top_confusions(matrix, limit=3)
    assert [(cell.true, cell.predicted, cell.count) for cell in cells] == [
        (1, 0, 3),
        (1, 2, 3),
        (0, 1, 2),
    ]
    assert cells[0].share_of_true == pytest.approx(0.3)
    assert metrics.top_confusions(torch.eye(3, dtype=torch.long)) == []


def test_calibration_adapts_its_bins_to_the_rows():
    probs, targets = _scored_rows(n_rows=150)
    assert len(metrics.calibration(probs, targets).counts) == 12
    assert int(metrics.calibration(probs, targets).counts.sum()) == 150


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.class_scores(torch.ones(2, 3)), r"square \(C, C\)"),
        (lambda: metrics.top_confusions(torch.eye(2), limit=0), "limit=0"),
        (lambda: metrics.calibration_bins(0), "n_rows=0"),
        (lambda: metrics.calibration(torch.ones(1, 2), torch.tensor([0]), 2.5), "n_bins=2.5"),
        (
            lambda: metrics.one_vs_rest_curves(torch.ones(2, 2), torch.tensor([0, 5])),
            r"one_vs_rest_curves: targets must lie in \[0, 1\]",
        ),
    ],
)
def test_bad_arguments_of_the_report_metrics_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
