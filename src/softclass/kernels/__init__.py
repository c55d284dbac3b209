"""Fused kernels chosen by :mod:`softclass.functional`.

``cpu``: row-blocked cross entropy and fused linear + cross entropy; the row loops are compiled
from ``cpu_native.c`` at first use (see :mod:`softclass.kernels.native`), with a plain torch-ops
path computing the same numbers where no compiler is available.
"""

from softclass.kernels.cpu import (
    FusedCrossEntropyFunction,
    FusedLinearCrossEntropyFunction,
    TargetOutOfBoundsError,
    checks_target_range,
    cross_entropy,
    default_block_rows,
    default_linear_block_rows,
    linear_cross_entropy,
    prefers_fused,
)

__all__ = [
    "FusedCrossEntropyFunction",
    "FusedLinearCrossEntropyFunction",
    "TargetOutOfBoundsError",
    "checks_target_range",
    "cross_entropy",
    "default_block_rows",
    "default_linear_block_rows",
    "linear_cross_entropy",
    "prefers_fused",
]
