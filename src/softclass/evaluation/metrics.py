"""Evaluation metrics of class probabilities: accuracy, confusion, log loss, Brier, calibration,
per-class precision / recall / F1, one-vs-rest ROC and precision-recall curves.

Every function takes tensors and returns tensors (0-dim for single numbers), so nothing here
forces a host synchronisation; callers convert with ``float(...)`` when they report. Inputs are
checked once here and errors say which argument is wrong and what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


def _check_targets(targets: torch.Tensor, n_rows: int, n_classes: int | None, op: str) -> None:
    if not isinstance(targets, torch.Tensor) or targets.dim() != 1:
        raise ValueError(f"{op}: targets must be a 1-D tensor of class indices")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"{op}: targets must be integer class indices, got {targets.dtype}")
    if targets.shape[0] != n_rows:
        raise ValueError(f"{op}: {targets.shape[0]} targets for {n_rows} rows of predictions")
    if n_rows == 0:
        raise ValueError(f"{op}: no rows to evaluate")
    if n_classes is not None and bool(((targets < 0) | (targets >= n_classes)).any()):
        raise ValueError(f"{op}: targets must lie in [0, {n_classes - 1}] for {n_classes} classes")


def _check_matrix(values: torch.Tensor, name: str, op: str) -> None:
    if not isinstance(values, torch.Tensor) or values.dim() != 2 or values.shape[1] < 1:
        raise ValueError(f"{op}: {name} must be a (N, C) floating tensor")
    if not values.is_floating_point():
        raise ValueError(f"{op}: {name} must be floating point, got {values.dtype}")


def accuracy(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Share of rows whose highest-scoring class is the target.

    Args:
        probs: (N, C) probabilities, log-probabilities or logits (only the argmax matters).
        targets: (N,) int class indices.

    Returns:
        0-dim float64 tensor in [0, 1].
    """
    _check_matrix(probs, "probs", "accuracy")
    _check_targets(targets, probs.shape[0], None, "accuracy")
    return (probs.argmax(dim=1) == targets).double().mean()


def confusion_matrix(
    targets: torch.Tensor, predicted: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs, as scikit-learn orders them.

    Args:
        targets: (N,) int true class indices in [0, n_classes).
        predicted: (N,) int predicted class indices in [0, n_classes).
        n_classes: C.

    Returns:
        int64 (C, C): entry [i, j] counts rows of true class i predicted as j.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"confusion_matrix: n_classes={n_classes!r} must be an integer ≥ 1")
    n_rows = targets.shape[0] if isinstance(targets, torch.Tensor) and targets.dim() == 1 else 0
    _check_targets(targets, n_rows, n_classes, "confusion_matrix")
    _check_targets(predicted, targets.shape[0], n_classes, "confusion_matrix (predicted)")
    pairs = targets.long() * n_classes + predicted.long()
    return torch.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def log_loss(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-probability of the target class: ``mean_n -log p[n, t_n]``.

    Computed from log-probabilities (no log of a rounded probability, so it stays finite and
    exact for confident predictions), by a gather: one value per row.

    Args:
        log_probs: (N, C) log-probabilities (rows of ``log_softmax``).
        targets: (N,) int class indices.

    Returns:
        0-dim float64 tensor.
    """
    _check_matrix(log_probs, "log_probs", "log_loss")
    _check_targets(targets, log_probs.shape[0], log_probs.shape[1], "log_loss")
    picked = log_probs.double().gather(1, targets.long().unsqueeze(1))
    return -picked.mean()


def brier_score(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Squared distance to the one-hot target, summed over classes, averaged over rows.

    ``mean_n sum_c (p[n, c] - y[n, c])^2``; 0 is perfect, 2 the worst. The seed's example
    p = (0.2, 0.7, 0.1), target 1 gives 0.14.

    Args:
        probs: (N, C) probabilities.
        targets: (N,) int class indices.

    Returns:
        0-dim float64 tensor.
    """
    _check_matrix(probs, "probs", "brier_score")
    _check_targets(targets, probs.shape[0], probs.shape[1], "brier_score")
    probs = probs.double()
    one_hot = torch.zeros_like(probs).scatter_(1, targets.long().unsqueeze(1), 1.0)
    return (probs - one_hot).square().sum(dim=1).mean()


@dataclass(frozen=True)
class Calibration:
    """Reliability bins of the top-class confidence.

    Attributes:
        bin_edges: float64 (B + 1,) edges from 0 to 1; bin b holds confidences in
            (edges[b], edges[b + 1]] (the first bin also holds 0).
        confidence: float64 (B,) mean top-class probability per bin (NaN for an empty bin).
        accuracy: float64 (B,) share of correct predictions per bin (NaN for an empty bin).
        counts: int64 (B,) rows per bin.
        ece: 0-dim float64, expected calibration error ``sum_b counts_b / N · |acc_b - conf_b|``.
    """

    bin_edges: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor
    counts: torch.Tensor
    ece: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (empty bins, and NaN from a diverged model, give null)."""

        def listed(values: torch.Tensor) -> list[float | None]:
            return [value if math.isfinite(value) else None for value in values.tolist()]

        return {
            "bin_edges": self.bin_edges.tolist(),
            "confidence": listed(self.confidence),
            "accuracy": listed(self.accuracy),
            "counts": self.counts.tolist(),
            "ece": None if not math.isfinite(float(self.ece)) else float(self.ece),
        }


# Calibration bins: about sqrt(N) of them, so that a bin holds about sqrt(N) rows on average,
# but never fewer than 3 (a curve needs points) nor more than 20 (a reliability diagram stays
# readable and ECE's bias from sparse bins stays small). 30 rows → 5 bins, 150 → 12, 400+ → 20.
MIN_CALIBRATION_BINS = 3
MAX_CALIBRATION_BINS = 20


def calibration_bins(n_rows: int) -> int:
    """How many equal-width bins :func:`calibration` uses for ``n_rows`` rows by default:
    ``round(sqrt(n_rows))`` clamped to [3, 20]."""
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise ValueError(f"calibration_bins: n_rows={n_rows!r} must be an integer ≥ 1")
    return min(MAX_CALIBRATION_BINS, max(MIN_CALIBRATION_BINS, round(math.sqrt(n_rows))))


def calibration(
    probs: torch.Tensor, targets: torch.Tensor, n_bins: int | None = None
) -> Calibration:
    """Confidence against accuracy in ``n_bins`` equal-width bins of the top-class probability.

    Args:
        probs: (N, C) probabilities.
        targets: (N,) int class indices.
        n_bins: number of bins B ≥ 1; None (default) adapts them to the rows,
            :func:`calibration_bins` (N).

    Returns:
        A :class:`Calibration`.
    """
    if n_bins is not None and (
        isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1
    ):
        raise ValueError(f"calibration: n_bins={n_bins!r} must be an integer ≥ 1 or None")
    _check_matrix(probs, "probs", "calibration")
    _check_targets(targets, probs.shape[0], probs.shape[1], "calibration")
    if n_bins is None:
        n_bins = calibration_bins(probs.shape[0])
    confidence, predicted = probs.double().max(dim=1)
    correct = (predicted == targets).double()
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=probs.device)
    bins = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, n_bins - 1)
    counts = torch.bincount(bins, minlength=n_bins)
    confidence_sum = torch.zeros(n_bins, dtype=torch.float64, device=probs.device)
    correct_sum = torch.zeros_like(confidence_sum)
    confidence_sum.index_add_(0, bins, confidence)
    correct_sum.index_add_(0, bins, correct)
    safe_counts = counts.clamp_min(1).double()
    empty = counts == 0
    bin_confidence = torch.where(empty, torch.nan, confidence_sum / safe_counts)
    bin_accuracy = torch.where(empty, torch.nan, correct_sum / safe_counts)
    ece = (correct_sum - confidence_sum).abs().sum() / probs.shape[0]
    return Calibration(edges, bin_confidence, bin_accuracy, counts, ece)


@dataclass(frozen=True)
class ClassScores:
    """Per-class precision, recall and F1 of hard predictions (from a confusion matrix).

    Attributes:
        precision: float64 (C,) ``tp / (tp + fp)``: of the rows predicted as the class, the share
            that are; NaN for a class never predicted.
        recall: float64 (C,) ``tp / (tp + fn)``: of the rows of the class, the share found; NaN
            for a class with no rows.
        f1: float64 (C,) harmonic mean of precision and recall, ``2 tp / (2 tp + fp + fn)``:
            0 for a class with rows that is never predicted right; NaN only for a class that
            neither has rows nor is predicted.
        support: int64 (C,) rows of each true class.
    """

    precision: torch.Tensor
    recall: torch.Tensor
    f1: torch.Tensor
    support: torch.Tensor

    def macro(self) -> dict[str, float]:
        """Unweighted means over the classes where each score is defined (NaN left out)."""
        return {
            name: float(values.nanmean())
            for name, values in (
                ("precision", self.precision),
                ("recall", self.recall),
                ("f1", self.f1),
            )
        }


def class_scores(confusion: torch.Tensor) -> ClassScores:
    """Precision, recall, F1 and support of every class from a confusion matrix.

    Args:
        confusion: int (C, C) counts, rows the true class, columns the predicted one (as
            :func:`confusion_matrix` returns).

    Returns:
        A :class:`ClassScores`; undefined ratios (0 / 0) are NaN, never a silent 0.
    """
    if (
        not isinstance(confusion, torch.Tensor)
        or confusion.dim() != 2
        or confusion.shape[0] != confusion.shape[1]
        or confusion.shape[0] < 1
    ):
        raise ValueError("class_scores: confusion must be a square (C, C) tensor of counts")
    counts = confusion.double()
    true_positives = counts.diagonal()
    predicted = counts.sum(dim=0)
    support = counts.sum(dim=1)
    precision = true_positives / predicted  # 0 / 0 → NaN: never predicted
    recall = true_positives / support
    f1 = 2 * true_positives / (predicted + support)  # 2 tp / (2 tp + fp + fn)
    return ClassScores(precision, recall, f1, support.long())


@dataclass(frozen=True)
class OneVsRest:
    """ROC and precision-recall curves of each class against all others.

    Curve points run from the highest score threshold to the lowest, one point per distinct
    score (ties form one step).

    Attributes:
        false_positive_rate, true_positive_rate: per class, float64 (K_c + 1,) ROC points,
            starting at (0, 0).
        roc_auc: float64 (C,) area under each ROC curve (trapezoids); NaN for a class with no
            positive or no negative row.
        recall, precision: per class, float64 (K_c + 1,) precision-recall points, starting at
            recall 0, precision 1.
        average_precision: float64 (C,) ``sum_k (R_k - R_{k-1}) P_k`` (scikit-learn's
            definition, no interpolation); NaN for a class with no positive row.
    """

    false_positive_rate: tuple[torch.Tensor, ...]
    true_positive_rate: tuple[torch.Tensor, ...]
    roc_auc: torch.Tensor
    recall: tuple[torch.Tensor, ...]
    precision: tuple[torch.Tensor, ...]
    average_precision: torch.Tensor


def one_vs_rest_curves(probs: torch.Tensor, targets: torch.Tensor) -> OneVsRest:
    """ROC and precision-recall curves of every class, its probability against the rest.

    Args:
        probs: (N, C) probabilities (any score that ranks rows works).
        targets: (N,) int class indices.

    Returns:
        A :class:`OneVsRest` (the curves have data-dependent lengths, so this is not for use
        inside compiled code).
    """
    _check_matrix(probs, "probs", "one_vs_rest_curves")
    _check_targets(targets, probs.shape[0], probs.shape[1], "one_vs_rest_curves")
    n_classes = probs.shape[1]
    scores = probs.detach().double().cpu()
    positives = torch.nn.functional.one_hot(targets.long().cpu(), n_classes).double()
    order = scores.argsort(dim=0, descending=True, stable=True)
    sorted_scores = scores.gather(0, order)
    sorted_positives = positives.gather(0, order)
    true_positives = sorted_positives.cumsum(dim=0)
    seen = torch.arange(1, scores.shape[0] + 1, dtype=torch.float64).unsqueeze(1)
    false_positives = seen - true_positives
    # A threshold ends where the next score differs: the last row of each run of ties.
    last_of_ties = torch.ones_like(sorted_scores, dtype=torch.bool)
    last_of_ties[:-1] = sorted_scores[:-1] != sorted_scores[1:]
    n_positive = positives.sum(dim=0)
    n_negative = scores.shape[0] - n_positive
    fpr, tpr, recall, precision = [], [], [], []
    auc = torch.full((n_classes,), torch.nan, dtype=torch.float64)
    average_precision = torch.full((n_classes,), torch.nan, dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    for column in range(n_classes):
        keep = last_of_ties[:, column]
        tps = true_positives[keep, column]
        fps = false_positives[keep, column]
        class_fpr = torch.cat([zero, fps / n_negative[column]])
        class_tpr = torch.cat([zero, tps / n_positive[column]])
        class_recall = torch.cat([zero, tps / n_positive[column]])
        class_precision = torch.cat([torch.ones(1, dtype=torch.float64), tps / (tps + fps)])
        fpr.append(class_fpr)
        tpr.append(class_tpr)
        recall.append(class_recall)
        precision.append(class_precision)
        if n_positive[column] > 0 and n_negative[column] > 0:
            auc[column] = torch.trapezoid(class_tpr, class_fpr)
        if n_positive[column] > 0:
            average_precision[column] = (class_recall.diff() * class_precision[1:]).sum()
    return OneVsRest(
        tuple(fpr), tuple(tpr), auc, tuple(recall), tuple(precision), average_precision
    )


@dataclass(frozen=True)
class Confusion:
    """One off-diagonal cell of a confusion matrix: rows of ``true`` predicted as ``predicted``."""

    true: int
    predicted: int
    count: int
    share_of_true: float  # count / rows of the true class


def top_confusions(confusion: torch.Tensor, limit: int = 10) -> list[Confusion]:
    """The ``limit`` largest off-diagonal cells of a (C, C) confusion matrix, largest first
    (ties: lower true class, then lower predicted class, first); empty cells are left out."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"top_confusions: limit={limit!r} must be an integer ≥ 1")
    scores = class_scores(confusion)  # also checks the shape
    n_classes = confusion.shape[0]
    off_diagonal = confusion.long().clone()
    off_diagonal.fill_diagonal_(0)
    flat = off_diagonal.flatten()
    # Stable sort on the negated counts keeps row-major order among equal counts.
    order = (-flat).argsort(stable=True)[:limit]
    support = scores.support.tolist()
    cells = []
    for position, count in zip(order.tolist(), flat[order].tolist(), strict=True):
        if count == 0:
            break
        true, predicted = divmod(position, n_classes)
        cells.append(Confusion(true, predicted, count, count / support[true]))
    return cells
