"""Cross entropy of logits (N, C, d1, ..., dK) on CPU in their own layout (segmentation-style
inputs), through the compiled loops of ``spatial_loops.h``.

The 2-D kernels want classes last: for (N, C, d1, ..., dK) logits that means moving the class
dimension (a copy of every logit) and handing back a gradient in the moved layout (a second
copy, or a strided gradient that slows whatever consumes it). Here the loops read the C classes
of each position S = d1·...·dK apart, a block of adjacent positions at a time, and write the
gradient in the logits' own (contiguous) layout: at (8, 21, 128, 128) one read of the logits and
one write of the gradient, as for the 2-D fused kernel.

Taken for eager calls only (:func:`applicable`): contiguous fp32/bf16/fp64 logits with at least
one spatial dimension, class-index targets, real CPU tensors; traced and compiled calls take the
registered 2-D operator of :mod:`softclass.kernels.cross_entropy_cpu`, which computes the same
numbers. Same values and gradients as ``torch.nn.functional.cross_entropy`` (weight,
ignore_index, every reduction, label smoothing); the gradient for grad_output 1 is written by the
forward (each block while it is in cache), the backward scales it.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from softclass.kernels import native, native_loops
from softclass.kernels import row_blocks as rows
from softclass.kernels.cross_entropy_cpu import _scale_impl, saved_logits
from softclass.kernels.row_blocks import TargetOutOfBoundsError

__all__ = ["SpatialCrossEntropyFunction", "applicable", "cross_entropy"]

_I64, _F64, _PTR = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
# ce_spatial_forward_*(logits, batch_stride, n_classes, n_spatial, begin, end, target,
#   ignore_index, class_weight, label_smoothing, logsumexp, row_loss, sums, grad, grad_denominator)
_FORWARD_ARGS = [_PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _I64, _PTR, _F64, _PTR, _PTR, _PTR]
_FORWARD_ARGS += [_PTR, _PTR]
# ce_spatial_backward_*(logits, batch_stride, n_classes, n_spatial, begin, end, target,
#   ignore_index, class_weight, label_smoothing, logsumexp, grad_output, grad_output_stride,
#   denominator, grad)
_BACKWARD_ARGS = [_PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _I64, _PTR, _F64, _PTR, _PTR, _I64]
_BACKWARD_ARGS += [_PTR, _PTR]


def _loops(library, dtype: torch.dtype):
    """(forward, backward) compiled loops for ``dtype``, their signatures declared once."""
    suffix = native.SUPPORTED_DTYPES[dtype]
    forward = getattr(library, f"ce_spatial_forward_{suffix}")
    backward = getattr(library, f"ce_spatial_backward_{suffix}")
    if forward.argtypes is None:
        forward.argtypes, forward.restype = _FORWARD_ARGS, _I64
        backward.argtypes, backward.restype = _BACKWARD_ARGS, None
    return forward, backward


def applicable(logits: Tensor, target: Tensor, weight: Tensor | None) -> bool:
    """Whether :func:`cross_entropy` computes this validated call: eager, CPU, contiguous
    fp32/bf16/fp64 logits (N, C, d1, ...) with at least one element, class-index targets, and
    the compiled library available."""
    return (
        logits.dim() >= 3
        and logits.is_cpu
        and logits.dtype in native.SUPPORTED_DTYPES
        and not target.is_floating_point()
        and logits.numel() > 0
        and logits.is_contiguous()
        and rows.is_eager(logits, target, weight)
        and native.library() is not None
    )


def _forward(library, logits, target, class_weight, ignore_index, label_smoothing, outputs):
    """Run the compiled forward over every position; ``outputs``: (logsumexp, row_loss or None,
    grad or None, grad_denominator or None). Returns the reduction state (1 + 2R,) fp64: a free
    first slot, then the per-range sums (for ``native_loops.finish``)."""
    n_batch, n_classes = logits.shape[:2]
    n_spatial = logits[0, 0].numel()
    logsumexp, row_loss, grad, grad_denominator = outputs
    ranges = native.row_ranges(n_batch * n_spatial, n_classes)
    state = torch.empty(1 + 2 * len(ranges), dtype=torch.float64)
    forward, _ = _loops(library, logits.dtype)
    head = (logits.data_ptr(), logits.stride(0), n_classes, n_spatial)
    middle = (target.data_ptr(), ignore_index, native.pointer(class_weight), label_smoothing)
    tail = (logsumexp.data_ptr(), native.pointer(row_loss))
    gradient = (native.pointer(grad), native.pointer(grad_denominator))
    bad = native.run_ranges(
        lambda index, begin, end: forward(
            *head, begin, end, *middle, *tail, state.data_ptr() + 8 + 16 * index, *gradient
        ),
        ranges,
    )
    first_bad = min((position for position in bad if position >= 0), default=-1)
    if first_bad >= 0:
        raise TargetOutOfBoundsError(first_bad, int(target[first_bad]), n_classes, ignore_index)
    return state


def _backward(ctx, grad_output: Tensor) -> Tensor:
    """The gradient of the logits for ``grad_output`` (0-d, or the per-position losses' shape),
    computed again from the saved logits (a second backward of the same graph)."""
    target, class_weight, logsumexp, denominator = ctx.saved_tensors
    ignore_index, reduction, label_smoothing = ctx.options
    logits = ctx.logits
    n_batch, n_classes = logits.shape[:2]
    n_spatial = logits[0, 0].numel()
    grad_output = grad_output.to(logsumexp.dtype).contiguous()
    grad = torch.empty_like(logits)
    _, backward = _loops(native.library(), logits.dtype)
    arguments = (
        *(logits.data_ptr(), logits.stride(0), n_classes, n_spatial),
        *(target.data_ptr(), ignore_index, native.pointer(class_weight), label_smoothing),
        *(logsumexp.data_ptr(), grad_output.data_ptr(), 1 if grad_output.dim() else 0),
        native.pointer(denominator if reduction == "mean" else None),
        grad.data_ptr(),
    )
    native.run_ranges(
        lambda index, begin, end: backward(*arguments[:4], begin, end, *arguments[4:]),
        native.row_ranges(n_batch * n_spatial, n_classes),
    )
    return grad


class SpatialCrossEntropyFunction(torch.autograd.Function):
    """``apply(logits, flat_target, weight, ignore_index, reduction, label_smoothing,
    gradient_in_forward)`` → the loss (0-d, or (N, d1, ...) for 'none') of contiguous logits
    (N, C, d1, ...) and int64 targets (N·d1·...,) contiguous."""

    @staticmethod
    def forward(
        ctx, logits, target, weight, ignore_index, reduction, label_smoothing, gradient_in_forward
    ):
        library = native.library()
        class_weight = native_loops.real_weight(weight, logits.dtype)
        per_position = reduction == "none"
        item_shape = (logits.shape[0], *logits.shape[2:])
        logsumexp = torch.empty(target.shape, dtype=rows.compute_dtype(logits.dtype))
        row_loss = torch.empty(item_shape, dtype=logits.dtype) if per_position else None
        grad = torch.empty_like(logits) if gradient_in_forward else None
        denominator = None
        if reduction == "mean" and gradient_in_forward:  # the gradient's divisor, needed now
            denominator = native_loops.kept_weight_sum(
                library, target, class_weight, ignore_index, logits.shape[1], logits.dtype
            )
        outputs = (logsumexp, row_loss, grad, denominator)
        state = _forward(
            library, logits, target, class_weight, ignore_index, label_smoothing, outputs
        )
        if per_position:
            loss = row_loss
        else:
            loss = torch.empty((), dtype=logits.dtype)
            native_loops.finish(library, state, reduction == "mean", loss)
            if denominator is None and reduction == "mean":
                denominator = state[:1]  # Σ w_y of the kept positions, written by finish
        ctx.save_for_backward(target, class_weight, logsumexp, denominator)
        ctx.options = (ignore_index, reduction, label_smoothing)
        ctx.unfused = (weight, logits.shape)
        ctx.gradient, ctx.logits, ctx.logits_version = grad, logits, logits._version
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if torch.is_grad_enabled():  # create_graph: a differentiable gradient
            return _differentiable_gradient(ctx, grad_loss), *(None,) * 6
        if ctx.gradient is not None:
            if grad_loss.dim():
                # 'none': kept as made for a unit grad_output, so a second backward agrees.
                factor = grad_loss.to(ctx.gradient.dtype).unsqueeze(1)
                return ctx.gradient * factor, *(None,) * 6
            gradient, ctx.gradient = ctx.gradient, None
            _scale_impl(gradient.view(-1, gradient.shape[-1]), grad_loss)
            return gradient, *(None,) * 6
        saved_logits(ctx)
        return _backward(ctx, grad_loss), *(None,) * 6


def _differentiable_gradient(ctx, grad_loss: Tensor) -> Tensor:
    """The logits' gradient as a graph of torch ops (double backward), from the moved layout."""
    saved_logits(ctx)
    target = ctx.saved_tensors[0]
    ignore_index, reduction, label_smoothing = ctx.options
    weight, shape = ctx.unfused

    def loss_of(logits: Tensor) -> Tensor:
        moved = logits.movedim(1, -1).reshape(-1, shape[1])
        loss = rows.unfused_loss(moved, target, weight, ignore_index, reduction, label_smoothing)
        return loss.reshape(grad_loss.shape) if reduction == "none" else loss

    return rows.differentiable_gradients((True,), (ctx.logits,), loss_of, grad_loss)[0]


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> Tensor:
    """Cross entropy of validated logits (N, C, d1, ...) (:func:`applicable`) and class indices
    (N, d1, ...): the value and gradient of ``torch.nn.functional.cross_entropy``.

    Raises:
        TargetOutOfBoundsError: a kept target outside [0, C), at its flat position.
    """
    flat_target = target.reshape(-1).long().contiguous()
    gradient_in_forward = torch.is_grad_enabled() and logits.requires_grad
    return SpatialCrossEntropyFunction.apply(
        *(logits, flat_target, weight, ignore_index, reduction, label_smoothing),
        gradient_in_forward,
    )
