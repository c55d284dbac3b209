"""Metrics against hand-computed values and scikit-learn."""

import math

import numpy as np
import pytest
import torch
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
