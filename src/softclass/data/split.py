"""Stratified train/validation split of class indices, deterministic for a seed."""

from __future__ import annotations

import numpy as np
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
    train_parts, validation_parts = [], []
    # Rows grouped by class, ascending within each (a stable sort), then one draw per class:
    # O(N log N + C), not N × C (0.80 s for 50,000 classes in 100,000 rows). A loop-free draw
    # (one shuffle, a stable sort by class) measured 0.027 s there, but it draws other rows
    # for a seed, and a checkpoint written before then would no longer resume (its split is
    # part of what it checks), so the per-class draw stays.
    by_class, counts = _rows_by_class(targets)
    for rows in torch.split(by_class, counts):
        shuffled = rows[torch.randperm(rows.numel(), generator=generator)]
        n_validation = 0
        if rows.numel() >= 2:
            n_validation = min(max(round(rows.numel() * validation_fraction), 1), rows.numel() - 1)
        validation_parts.append(shuffled[:n_validation])
        train_parts.append(shuffled[n_validation:])
    # Each part in ascending order through a mask of the validation rows: O(N), where sorting
    # the two parts cost 0.4 s for 1M rows.
    held_out = torch.zeros(targets.numel(), dtype=torch.bool)
    if validation_parts:
        held_out[torch.cat(validation_parts)] = True
    return torch.nonzero(~held_out).flatten(), torch.nonzero(held_out).flatten()


def _rows_by_class(targets: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Row positions grouped by class (classes ascending, rows ascending within each: a stable
    sort) and the size of each present class. Class indices in [0, 65535] sort as uint16 with
    numpy's radix sort: 3-60 ms for 1M rows, where torch's stable sort of int64 took 0.4 s."""
    if (
        targets.numel()
        and int(targets.min()) >= 0
        and int(targets.max()) <= np.iinfo(np.uint16).max
    ):
        by_class = np.argsort(targets.numpy().astype(np.uint16), kind="stable")
        counts = torch.bincount(targets)
        return torch.from_numpy(by_class.astype(np.int64, copy=False)), counts[counts > 0].tolist()
    by_class = torch.sort(targets, stable=True).indices
    return by_class, torch.unique(targets, return_counts=True)[1].tolist()
