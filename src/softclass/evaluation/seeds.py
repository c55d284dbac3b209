"""Designs compared over seeds: every design with every seed in one batched run, then per-design
intervals of the last epoch's validation numbers and paired tests between designs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from softclass.errors import ConfigError
from softclass.evaluation.stats import (
    MeanInterval,
    PairedComparison,
    mean_interval,
    paired_comparison,
    t_quantile,
)
from softclass.mlp.designs import DESIGNS, get_design
from softclass.mlp.model import MLPConfig
from softclass.training.config import TrainConfig
from softclass.training.ensemble import EnsembleResult, design_seed_grid, train_ensemble

__all__ = ["METRICS", "PAIRED_METRICS", "SeedComparison", "compare_seeds", "seed_bands"]

METRICS = ("val_loss", "val_accuracy")
# Designs are paired only on a measure common to them all: "val_loss" is each design's own loss
# (C's squared error is not a cross entropy), so it is summarised per design, never paired.
PAIRED_METRICS = ("val_accuracy",)


def seed_bands(
    result: EnsembleResult, metric: str, designs: Sequence[str], confidence: float = 0.95
) -> dict[str, dict[str, np.ndarray]]:
    """Per design, per epoch over its seeds: ``{"mean", "low", "high"}`` arrays ``(epochs,)``.

    ``metric``: "train_loss", "val_loss" or "val_accuracy" of ``result``; the band is the
    Student-t interval of the mean (each design needs at least 2 seeds).
    """
    bands = {}
    for design in designs:
        history = getattr(result, metric)[result.indices(design)]
        n = history.shape[0]
        if n < 2:
            raise ConfigError(f"bands need at least 2 seeds per design, {design} has {n}")
        mean = history.mean(0)
        half = t_quantile(confidence, n - 1) * history.std(0, ddof=1) / math.sqrt(n)
        bands[design] = {"mean": mean, "low": mean - half, "high": mean + half}
    return bands


@dataclass
class SeedComparison:
    """Designs compared over the same seeds: per-design intervals and paired tests.

    Attributes:
        result: the trained ensemble (histories ``(M, epochs)`` and weights).
        designs, seeds: what was trained (every design with every seed).
        summary: ``summary[metric][design]`` — mean and 95 % interval over seeds of the metric at
            the last epoch (metric: "val_loss" or "val_accuracy").
        pairs: ``pairs[metric]`` — every pair of designs, paired over seeds, for the metrics of
            ``PAIRED_METRICS`` only (validation accuracy).
    """

    result: EnsembleResult
    designs: list[str]
    seeds: list[int]
    summary: dict[str, dict[str, MeanInterval]]
    pairs: dict[str, list[PairedComparison]]

    def history(self, metric: str, design: str) -> np.ndarray:
        """``(K, epochs)`` history of ``metric`` for ``design``, one row per seed in seed order."""
        return getattr(self.result, metric)[self.result.indices(design)]

    def bands(self, metric: str, confidence: float = 0.95) -> dict[str, dict[str, np.ndarray]]:
        """Per design, per epoch: ``{"mean", "low", "high"}`` arrays ``(epochs,)`` (Student t)."""
        return seed_bands(self.result, metric, self.designs, confidence)

    def to_dict(self) -> dict:
        """JSON-safe summary (no histories)."""
        return {
            "designs": self.designs,
            "seeds": self.seeds,
            "summary": {
                metric: {design: interval.to_dict() for design, interval in per_design.items()}
                for metric, per_design in self.summary.items()
            },
            "pairs": {
                metric: [pair.to_dict() for pair in pairs] for metric, pairs in self.pairs.items()
            },
        }


def compare_seeds(
    config: MLPConfig,
    features: torch.Tensor,
    targets: torch.Tensor,
    val_features: torch.Tensor,
    val_targets: torch.Tensor,
    settings: TrainConfig,
    designs: Sequence[str] | None = None,
    seeds: Sequence[int] = tuple(range(10)),
    confidence: float = 0.95,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> SeedComparison:
    """Train every design with every seed in one batched run and compare the designs.

    Args:
        config, features, targets, settings, dtype, device: as :func:`train_ensemble`.
        val_features, val_targets: the validation rows the designs are judged on.
        designs: design names (None: every registered design); seeds: K ≥ 2 distinct seeds
            shared by every design.
        confidence: level of the intervals and of the "significant" verdict.

    Returns:
        :class:`SeedComparison` over the last epoch's validation loss and accuracy.
    """
    names = [get_design(name).name for name in (DESIGNS if designs is None else designs)]
    seed_list = [int(seed) for seed in seeds]
    if len(set(seed_list)) < 2 or len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"compare_seeds needs at least 2 distinct seeds, got {seed_list}")
    if len(set(names)) != len(names):
        raise ConfigError(f"each design may appear once, got {names}")
    result = train_ensemble(
        config,
        design_seed_grid(names, seed_list),
        features,
        targets,
        settings,
        val_features,
        val_targets,
        dtype,
        device,
    )
    summary = {
        metric: {
            name: mean_interval(getattr(result, metric)[result.indices(name), -1], confidence)
            for name in names
        }
        for metric in METRICS
    }
    pairs = {
        metric: [
            paired_comparison(
                getattr(result, metric)[result.indices(first), -1],
                getattr(result, metric)[result.indices(second), -1],
                first,
                second,
                confidence,
                metric="validation accuracy",
            )
            for position, first in enumerate(names)
            for second in names[position + 1 :]
        ]
        for metric in PAIRED_METRICS
    }
    return SeedComparison(result, names, seed_list, summary, pairs)
