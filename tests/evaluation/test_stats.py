"""Student-t intervals and paired comparisons against scipy's own routines."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from softclass.errors import ConfigError
from softclass.evaluation.stats import (
    common_metric,
    common_metrics,
    compare_designs,
    mean_interval,
    paired_comparison,
    t_quantile,
)

LOSSES_A = [0.41, 0.38, 0.45, 0.40, 0.39, 0.43]
LOSSES_C = [0.52, 0.47, 0.55, 0.49, 0.50, 0.58]


def test_t_quantile_of_two_sided_95_percent():
    assert t_quantile(0.95, 9) == pytest.approx(2.2621571627, rel=1e-9)
    assert t_quantile(0.95, 10**6) == pytest.approx(1.959966, rel=1e-5)


def test_mean_interval_equals_scipy_t_interval():
    interval = mean_interval(LOSSES_A)
    low, high = scipy_stats.t.interval(
        0.95, len(LOSSES_A) - 1, loc=np.mean(LOSSES_A), scale=scipy_stats.sem(LOSSES_A)
    )
    assert interval.mean == pytest.approx(np.mean(LOSSES_A))
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert interval.half_width == pytest.approx((high - low) / 2)
    assert interval.to_dict()["n"] == 6


def test_paired_comparison_equals_scipy_ttest_rel():
    pair = paired_comparison(LOSSES_A, LOSSES_C, "A", "C")
    reference = scipy_stats.ttest_rel(LOSSES_A, LOSSES_C)
    assert pair.t_statistic == pytest.approx(reference.statistic)
    assert pair.p_value == pytest.approx(reference.pvalue)
    differences = np.subtract(LOSSES_A, LOSSES_C)
    low, high = scipy_stats.t.interval(
        0.95, 5, loc=differences.mean(), scale=scipy_stats.sem(differences)
    )
    assert (pair.low, pair.high) == pytest.approx((low, high))
    assert pair.verdict == "significant"


def test_identical_designs_are_reported_as_identical_not_nan():
    pair = paired_comparison(LOSSES_A, list(LOSSES_A), "A", "B")
    assert pair.verdict == "identical"
    assert (pair.mean_difference, pair.low, pair.high, pair.t_statistic) == (0.0, 0.0, 0.0, 0.0)
    assert pair.p_value == 1.0
    assert not any(math.isnan(value) for value in (pair.p_value, pair.low, pair.high))


def test_constant_nonzero_difference_is_certain_and_noise_is_not_significant():
    shifted = paired_comparison([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])
    assert shifted.p_value == 0.0 and shifted.t_statistic == math.inf
    assert shifted.low == shifted.high == 0.5
    noise = paired_comparison([0.40, 0.41, 0.39], [0.41, 0.40, 0.39])
    assert noise.verdict == "not significant"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mean_interval([0.5]), "at least 2 values"),
        (lambda: mean_interval([0.5, float("nan")]), "non-finite values"),
        (lambda: mean_interval([0.5, 0.6], confidence=1.0), "strictly between 0 and 1"),
        (lambda: paired_comparison([1, 2, 3], [1, 2], "A", "C"), "3 values for A and 2 for C"),
        (
            lambda: compare_designs({"A": LOSSES_A, "C": LOSSES_C}, "validation_loss"),
            "compared only on a common metric, got 'validation_loss': expected one of "
            "validation_log_loss, validation_accuracy, validation_brier",
        ),
        (lambda: common_metric("train_loss"), "a design's own loss differs"),
    ],
)
def test_errors_say_what_was_expected(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_rounding_sized_differences_are_equal_to_float_tolerance():
    base = np.array([0.0687, 0.0712, 0.0655, 0.0701])
    pair = paired_comparison(base + 3e-8, base, "A", "B")
    assert pair.verdict == "equal to float tolerance"
    assert pair.mean_difference == pytest.approx(3e-8)
    real = paired_comparison(base + 3e-3, base, "A", "C")
    assert real.verdict == "significant"


def test_designs_are_paired_only_on_common_metrics_and_every_pair_is_named():
    values = {"A": LOSSES_A, "B": list(LOSSES_A), "C": LOSSES_C}
    pairs = compare_designs(values, "validation_log_loss")
    assert [(pair.a, pair.b) for pair in pairs] == [("A", "B"), ("A", "C"), ("B", "C")]
    assert {pair.metric for pair in pairs} == {"validation log loss"}
    assert pairs[1].p_value == pytest.approx(scipy_stats.ttest_rel(LOSSES_A, LOSSES_C).pvalue)
    # The common metrics are measured on the predicted probabilities, never a design's own loss.
    assert list(common_metrics()) == [
        "validation_log_loss",
        "validation_accuracy",
        "validation_brier",
    ]
    for own_loss in ("validation_loss", "train_loss"):
        with pytest.raises(ConfigError, match="compared only on a common metric"):
            compare_designs(values, own_loss)


def test_a_verdict_says_what_was_compared():
    pair = paired_comparison(LOSSES_A, LOSSES_C, "A", "C", metric="validation log loss")
    reference = scipy_stats.ttest_rel(LOSSES_A, LOSSES_C)
    assert pair.describe() == (
        f"A vs C on validation log loss: significant (A - C = {pair.mean_difference:+.1e}, "
        f"95 % interval [{pair.low:+.1e}, {pair.high:+.1e}], p {reference.pvalue:.2g}, 6 seeds)"
    )
    assert pair.to_dict()["description"] == pair.describe()
    assert pair.to_dict()["metric"] == "validation log loss"
    same = paired_comparison(LOSSES_A, list(LOSSES_A), "A", "B", metric="validation accuracy")
    assert same.describe().startswith("A vs B on validation accuracy: identical (A - B = +0.0e+00")
