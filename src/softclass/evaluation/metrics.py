"""Evaluation metrics of class probabilities: accuracy, confusion, log loss, Brier, calibration.

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


def calibration(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 10) -> Calibration:
    """Confidence against accuracy in ``n_bins`` equal-width bins of the top-class probability.

    Args:
        probs: (N, C) probabilities.
        targets: (N,) int class indices.
        n_bins: number of bins B ≥ 1.

    Returns:
        A :class:`Calibration`.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"calibration: n_bins={n_bins!r} must be an integer ≥ 1")
    _check_matrix(probs, "probs", "calibration")
    _check_targets(targets, probs.shape[0], probs.shape[1], "calibration")
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
