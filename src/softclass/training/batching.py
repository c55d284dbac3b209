"""The order in which training rows are visited: one rule shared by every trainer.

Each epoch's shuffle depends only on ``(seed, epoch)``, not on a random state carried between
epochs, so a run resumed from a checkpoint at epoch k visits exactly the rows an uninterrupted run
would, and a model trained inside a batched ensemble sees the same batches as one trained alone.
Batches are contiguous slices of the permuted row indices: no per-item Python work.
"""

from __future__ import annotations

import torch

# Large odd constant mixing the epoch into the seed (any fixed value works; it only has to keep
# (seed, epoch) pairs from colliding for realistic seeds and epoch counts).
_EPOCH_STRIDE = 1_000_003


def epoch_permutation(n_rows: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """Row indices ``(n_rows,)`` int64 in the order epoch ``epoch`` visits them."""
    if not shuffle:
        return torch.arange(n_rows)
    generator = torch.Generator().manual_seed(int(seed) * _EPOCH_STRIDE + int(epoch))
    return torch.randperm(n_rows, generator=generator)


def batch_bounds(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n_rows)`` in ``batch_size`` slices."""
    return [(start, min(start + batch_size, n_rows)) for start in range(0, n_rows, batch_size)]
