"""Is a difference between two designs real or noise? Means, Student-t intervals, paired tests.

Each design is trained with the same K seeds; a metric (final validation loss, accuracy) then has
K values per design. :func:`mean_interval` gives a design's mean with its 95 % confidence interval
(Student t with K-1 degrees of freedom); :func:`paired_comparison` compares two designs seed by
seed (the differences d_k = a_k - b_k share each seed's initial weights and batch order, which
removes most of the seed-to-seed spread): mean difference, its interval and the two-sided paired
t-test p-value. When every difference is exactly zero the designs are reported as "identical"
(difference 0, interval [0, 0], p = 1), never as NaN.

Designs are paired only on a metric that measures the same quantity for every design
(:func:`common_metrics`: log loss, accuracy, Brier score of the predicted probabilities). A
design's own training loss is a different quantity per design (C's squared error is not a cross
entropy): :func:`compare_designs` refuses it, and every verdict names the metric it compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from softclass.errors import ConfigError
from softclass.evaluation import metric_table
from softclass.evaluation.metric_table import Metric


@dataclass(frozen=True)
class MeanInterval:
    """Mean of K values with its two-sided confidence interval."""

    mean: float
    low: float
    high: float
    std: float  # sample standard deviation (ddof=1)
    n: int
    confidence: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def to_dict(self) -> dict:
        return {**asdict(self), "half_width": self.half_width}


def common_metrics() -> dict[str, Metric]:
    """The metrics designs are compared on, by their key on the validation rows
    ("validation_log_loss"): the paired entries of :data:`metric_table.METRICS`, each computed
    from the predicted probabilities on the same held-out rows, whatever loss the design trained
    with."""
    return {f"validation_{metric.key}": metric for metric in metric_table.paired_metrics()}


def common_metric(name: str) -> Metric:
    """The common metric called ``name``; ConfigError (naming the accepted ones) otherwise.

    A design's own training loss (``validation_loss``, ``train_loss``) is refused: it is cross
    entropy for one design and squared error for another, so a paired difference would set two
    different quantities side by side.
    """
    common = common_metrics()
    if name not in common:
        raise ConfigError(
            f"designs are compared only on a common metric, got {name!r}: expected one of "
            f"{', '.join(common)} (a design's own loss differs from design to design)"
        )
    return common[name]


@dataclass(frozen=True)
class PairedComparison:
    """Design ``a`` minus design ``b`` over the same seeds, on one metric.

    ``verdict`` is "identical" (every paired difference exactly 0), "equal to float tolerance"
    (every difference within ``FLOAT_TOLERANCE`` of the values' size: rounding, not a real
    effect, whatever the t-test says), "significant" (p < 1 - confidence) or "not significant".
    """

    a: str
    b: str
    mean_difference: float
    low: float
    high: float
    t_statistic: float
    p_value: float
    n: int
    confidence: float
    verdict: str
    metric: str = ""  # what was compared, e.g. "validation log loss"; "" when unnamed

    def describe(self) -> str:
        """One line saying what was compared and what came out, e.g. "A vs C on validation log
        loss: significant (A - C = -1.2e-02, 95 % interval [-1.5e-02, -9.0e-03], p 7e-05)"."""
        what = f" on {self.metric}" if self.metric else ""
        level = f"{self.confidence:.0%}".replace("%", " %")
        return (
            f"{self.a} vs {self.b}{what}: {self.verdict} ({self.a} - {self.b} = "
            f"{self.mean_difference:+.1e}, {level} interval [{self.low:+.1e}, {self.high:+.1e}], "
            f"p {self.p_value:.2g}, {self.n} seeds)"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "description": self.describe()}


def _as_values(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size < 2:
        raise ConfigError(
            f"{what} needs at least 2 values (one per seed) for a confidence interval, got "
            f"{array.size}; train with --seeds 2 or more"
        )
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"{what} contains non-finite values: {array.tolist()}")
    return array


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def t_quantile(confidence: float, degrees_of_freedom: int) -> float:
    """The two-sided Student-t critical value: P(|T| <= q) = confidence.

    scipy.special's Student-t functions (the ones behind ``scipy.stats.t``, bitwise the same
    values) are imported on first use: 0.27 s against 0.67 s for scipy.stats, and never by
    ``softclass train``."""
    from scipy import special

    _check_confidence(confidence)
    return float(special.stdtrit(degrees_of_freedom, 0.5 + confidence / 2.0))


def t_two_sided_p(t_statistic: float, degrees_of_freedom: int) -> float:
    """P(|T| >= |t|) for Student's t with ``degrees_of_freedom``."""
    from scipy import special

    return float(2.0 * special.stdtr(degrees_of_freedom, -abs(t_statistic)))


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> MeanInterval:
    """Mean ± t·s/√K of ``values`` (K ≥ 2 finite numbers, e.g. one per seed)."""
    _check_confidence(confidence)
    array = _as_values(values, "mean_interval")
    n = array.size
    mean = float(array.mean())
    std = float(array.std(ddof=1))
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return MeanInterval(mean, mean - half, mean + half, std, n, confidence)


# Relative size of a paired difference that is rounding, not an effect: float32 losses of the same
# computation done in another order (a fused kernel against log_softmax + NLL) differ by ~1e-7.
FLOAT_TOLERANCE = 1e-5


def paired_comparison(
    values_a: Sequence[float] | np.ndarray,
    values_b: Sequence[float] | np.ndarray,
    a: str = "a",
    b: str = "b",
    confidence: float = 0.95,
    metric: str = "",
) -> PairedComparison:
    """Paired t-test of ``values_a - values_b`` (value k of each comes from seed k).

    ``metric`` names what the values measure (it goes into the verdict's description); pair only
    values that measure the same quantity (see :func:`compare_designs`).

    Exactly equal pairs give difference 0, interval [0, 0], t = 0, p = 1 and verdict "identical".
    A constant non-zero difference (zero spread) gives the interval [d, d], t = ±inf, p = 0.
    Differences all within ``FLOAT_TOLERANCE`` (relative to max(1, |a|, |b|)) keep their
    statistics but get the verdict "equal to float tolerance".
    """
    _check_confidence(confidence)
    array_a = _as_values(values_a, f"design {a}")
    array_b = _as_values(values_b, f"design {b}")
    if array_a.shape != array_b.shape:
        raise ConfigError(
            f"paired comparison needs one value per seed for both designs, got {array_a.size} "
            f"values for {a} and {array_b.size} for {b}"
        )
    differences = array_a - array_b
    n = differences.size
    if np.all(differences == 0.0):
        return PairedComparison(a, b, 0.0, 0.0, 0.0, 0.0, 1.0, n, confidence, "identical", metric)
    mean = float(differences.mean())
    std = float(differences.std(ddof=1))
    if std == 0.0:
        t_statistic, p_value, half = math.copysign(math.inf, mean), 0.0, 0.0
    else:
        standard_error = std / math.sqrt(n)
        t_statistic = mean / standard_error
        p_value = t_two_sided_p(t_statistic, n - 1)
        half = t_quantile(confidence, n - 1) * standard_error
    scale = np.maximum(1.0, np.maximum(np.abs(array_a), np.abs(array_b)))
    if np.all(np.abs(differences) <= FLOAT_TOLERANCE * scale):
        verdict = "equal to float tolerance"
    else:
        verdict = "significant" if p_value < 1.0 - confidence else "not significant"
    return PairedComparison(
        a, b, mean, mean - half, mean + half, t_statistic, p_value, n, confidence, verdict, metric
    )


def compare_designs(
    values: dict[str, Sequence[float] | np.ndarray],
    metric: str,
    confidence: float = 0.95,
) -> list[PairedComparison]:
    """Every pair of designs compared seed by seed on one common metric.

    Args:
        values: per design (in the order to pair them), K values of ``metric``, value k from
            seed k.
        metric: a key of :func:`common_metrics`; a design's own loss is refused.
        confidence: of the intervals and the test.

    Returns:
        One :class:`PairedComparison` per pair (first - second, in the order of ``values``),
        each naming the metric, e.g. "validation log loss".

    Raises:
        ConfigError: ``metric`` is not a common metric, or as :func:`paired_comparison`.
    """
    label = f"validation {common_metric(metric).name}"
    names = list(values)
    return [
        paired_comparison(values[first], values[second], first, second, confidence, label)
        for position, first in enumerate(names)
        for second in names[position + 1 :]
    ]
