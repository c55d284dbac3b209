"""Fused kernels chosen by :mod:`softclass.functional` (:mod:`softclass.kernels.dispatch`).

``cross_entropy_cpu`` and ``linear_cross_entropy_cpu``: row-blocked cross entropy and fused
linear + cross entropy, registered as torch.library operators
(``torch.ops.softclass.cross_entropy``, ``softclass::linear_cross_entropy`` and their backward
ops, each with a fake implementation for FakeTensor/meta/compile/export, an autograd formula and
a vmap rule); the row loops are compiled from ``cpu_native.c`` at install (see
:mod:`softclass.kernels.native`), with a plain torch-ops path computing the same numbers where
they were not built (:mod:`softclass.kernels.row_blocks`). ``spatial_cross_entropy_cpu``: the
cross entropy of (N, C, d1, ...) logits in their own layout (``softclass::spatial_cross_entropy``);
``lean``: the short eager road of the common small call. ``triton``: the same on CUDA.
"""

from softclass.kernels.cross_entropy_cpu import (
    FusedCrossEntropyFunction,
    TargetOutOfBoundsError,
    cross_entropy,
    default_block_rows,
    prefers_fused,
)
from softclass.kernels.linear_cross_entropy_cpu import (
    default_linear_block_rows,
    linear_cross_entropy,
)

__all__ = [
    "FusedCrossEntropyFunction",
    "TargetOutOfBoundsError",
    "cross_entropy",
    "default_block_rows",
    "default_linear_block_rows",
    "linear_cross_entropy",
    "prefers_fused",
]
