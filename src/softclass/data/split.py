"""Stratified train/validation split of class indices, deterministic for a seed."""

from __future__ import annotations

import torch

from softclass.errors import ConfigError, DataError


def stratified_split(
    targets: torch.Tensor, validation_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split row indices into training and validation parts with the class proportions kept.

    Each class with ``n`` rows gives ``round(n * validation_fraction)`` rows to validation,
    clamped to [1, n - 1] so that a class with at least two rows appears in both parts; a class
    with a single row goes to training. Rows are drawn with a ``torch.Generator`` seeded with
    ``seed``, so the same targets, fraction and seed always give the same split.

    Args:
        targets: int64 (N,) class indices (any integer dtype), on any device.
        validation_fraction: share of each class held out, strictly between 0 and 1.
        seed: seed of the random draw.

    Returns:
        ``(train_indices, validation_indices)``: int64 1-D CPU tensors of row positions, each
        sorted ascending; together they hold every row once.

    Raises:
        ConfigError: ``validation_fraction`` is not strictly between 0 and 1.
        DataError: ``targets`` is not a 1-D integer tensor.
    """
    if isinstance(validation_fraction, bool) or not 0.0 < validation_fraction < 1.0:
        raise ConfigError(
            f"validation_fraction={validation_fraction!r} must be strictly between 0 and 1"
        )
    if targets.dim() != 1 or targets.dtype.is_floating_point or targets.dtype.is_complex:
        raise DataError(
            f"targets must be a 1-D tensor of class indices, got dtype {targets.dtype} and shape "
            f"{tuple(targets.shape)}"
        )
    targets = targets.detach().to("cpu", torch.int64)
    generator = torch.Generator().manual_seed(seed)
    # Linear in N whatever the number of classes (no loop over classes): shuffle every row once,
    # then group the shuffled rows by class with a stable sort, so each class's rows come in a
    # random order; a row goes to validation when its rank inside its class is below the class's
    # quota.
    shuffled = torch.randperm(targets.numel(), generator=generator)
    grouped = shuffled[torch.sort(targets[shuffled], stable=True).indices]
    _, inverse, counts = torch.unique(targets, return_inverse=True, return_counts=True)
    quota = torch.round(counts.double() * validation_fraction).long()
    quota = torch.minimum(torch.clamp(quota, min=1), counts - 1)  # 0 for a single-row class
    starts = torch.cumsum(counts, 0) - counts
    class_of_grouped = inverse[grouped]
    rank = torch.arange(targets.numel()) - starts[class_of_grouped]
    to_validation = rank < quota[class_of_grouped]
    return (
        torch.sort(grouped[~to_validation]).values,
        torch.sort(grouped[to_validation]).values,
    )
