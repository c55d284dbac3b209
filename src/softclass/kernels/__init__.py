"""Fused kernels chosen by :mod:`softclass.functional`.

``cpu``: row-blocked cross entropy and fused linear + cross entropy in plain torch ops.
"""

from softclass.kernels.cpu import (
    FusedCrossEntropyFunction,
    cross_entropy,
    default_block_rows,
)

__all__ = ["FusedCrossEntropyFunction", "cross_entropy", "default_block_rows"]
