"""Macro averages of one-vs-rest curves for the ROC / precision-recall figure, in numpy only (a
drawing process renders figures without torch: curves may come as tensors or plain arrays)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from softclass.evaluation.metrics import OneVsRest


def as_array(values) -> np.ndarray:
    """A tensor (any device) or array as a numpy array: the figures take either, so that a
    drawing process without torch can render them from plain arrays."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def macro_average_roc(curves: OneVsRest, grid: np.ndarray) -> np.ndarray:
    """Mean over the classes with a defined ROC of each curve interpolated on ``grid``."""
    rows = [
        np.interp(grid, as_array(fpr), as_array(tpr))
        for fpr, tpr, auc in zip(
            curves.false_positive_rate, curves.true_positive_rate, curves.roc_auc, strict=True
        )
        if math.isfinite(float(auc))
    ]
    return np.mean(rows, axis=0) if rows else np.full_like(grid, np.nan)


def macro_average_precision(curves: OneVsRest, grid: np.ndarray) -> np.ndarray:
    """Mean over the classes with rows of each class's interpolated precision (the best
    precision at this recall or more) on the recall ``grid``."""
    rows = []
    for recall, precision, average in zip(
        curves.recall, curves.precision, curves.average_precision, strict=True
    ):
        if not math.isfinite(float(average)):
            continue
        envelope = np.maximum.accumulate(as_array(precision)[::-1])[::-1]
        positions = np.searchsorted(as_array(recall), grid, side="left")
        rows.append(envelope[np.minimum(positions, len(envelope) - 1)])
    return np.mean(rows, axis=0) if rows else np.full_like(grid, np.nan)
