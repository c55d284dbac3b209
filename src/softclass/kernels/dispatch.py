"""Which fused kernel computes a validated cross entropy: Triton on CUDA (when importable), the
CPU operators where they measured faster, or None for :mod:`softclass.functional`'s plain path."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from softclass.kernels import cross_entropy_cpu, linear_cross_entropy_cpu

__all__ = ["cross_entropy_kernel", "linear_cross_entropy_kernel"]

_warned_no_triton = False


def _cuda_kernels():
    """The Triton kernel module when it can run on CUDA here, else None (warned once)."""
    from softclass.kernels import triton as triton_kernels

    if triton_kernels.triton_available():
        return triton_kernels
    _warn_no_triton_once()
    return None


def _warn_no_triton_once() -> None:
    global _warned_no_triton
    if not _warned_no_triton:
        _warned_no_triton = True
        warnings.warn(
            "softclass: Triton is not importable, so CUDA cross entropy runs the plain "
            "(unfused) path; install the 'gpu' extra (pip install 'softclass[gpu]') for the "
            "fused kernels",
            RuntimeWarning,
            stacklevel=4,
        )


def cross_entropy_kernel(
    logits: torch.Tensor, flat_target: torch.Tensor, probability_target: bool
) -> Callable[..., torch.Tensor] | None:
    """The fused kernel for this validated (M, C) cross entropy, or None for the plain path.

    CUDA tensors go to the Triton kernels (when importable); CPU (and meta) tensors to the fused
    CPU operator where it measured faster (``cross_entropy_cpu.prefers_fused``).
    """
    if logits.is_cuda:
        kernels = _cuda_kernels()
        return None if kernels is None else kernels.fused_cross_entropy
    if logits.device.type not in ("cpu", "meta") or (
        probability_target and flat_target.dtype != logits.dtype
    ):
        return None
    if cross_entropy_cpu.prefers_fused(logits, flat_target):
        return cross_entropy_cpu.cross_entropy
    return None


def linear_cross_entropy_kernel(hidden: torch.Tensor) -> Callable[..., torch.Tensor]:
    """The fused linear + cross entropy for ``hidden``'s device: Triton on CUDA when it can run,
    else the CPU operator (its block loop runs in plain torch ops on any device)."""
    kernels = _cuda_kernels() if hidden.is_cuda else None
    if kernels is None:
        return linear_cross_entropy_cpu.linear_cross_entropy
    return kernels.linear_cross_entropy
