"""The short road of :func:`softclass.functional.cross_entropy`: the common call, few checks.

Most calls in training code are the same: 2-D CPU logits (fp32, bf16 or fp64, classes
adjacent), a 1-D int64 target, no class weights, no smoothing, a 'mean' or 'sum' loss, plain
eager mode. For them the general path's argument handling (validation of every option, the
flattening of K-dim inputs, the choice of a kernel, the autograd Function's nine arguments) cost
more than the compiled loops themselves at small sizes (at 256×10 ~40 µs of Python against a few
µs of arithmetic). Here :func:`cross_entropy` checks only what the compiled loops rely on and
returns None for anything else, which then takes the general path (with its errors). One call of
the compiled forward computes the loss and, when a backward will follow, the gradient (for
grad_output 1, already divided by the 'mean' denominator); the backward only scales it, in
place. The numbers are those of the general path (the same compiled loops).

Where softclass's C++ operator was built (:mod:`softclass.kernels.cross_entropy_op`) the call is
one dispatcher call of it: checks, the compiled forward with the gradient and the autograd node
in C++; else the compiled loops through ctypes and a Python ``autograd.Function`` (same numbers).

Only below ``_LEAN_MAX_ELEMENTS`` logits (one thread range; larger inputs spend their time in the
loops, not here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from softclass.kernels import cross_entropy_op, native
from softclass.kernels.cross_entropy_cpu import default_block_rows, saved_logits
from softclass.kernels.inductor_decompositions import MAX_ELEMENTS as DECOMPOSED_MAX_ELEMENTS
from softclass.kernels.row_blocks import (
    TargetOutOfBoundsError,
    differentiable_gradients,
    unfused_loss,
)
from softclass.kernels.spatial_cross_entropy_cpu import spatial_loops

__all__ = ["cross_entropy"]

# One range of rows in the compiled loops (native._PARALLEL_MIN_ELEMENTS): larger inputs are
# split over threads by the general path.
_LEAN_MAX_ELEMENTS = 1 << 22
_TENSOR_TYPES = (Tensor, torch.nn.Parameter)
_COMPUTE = {
    torch.float32: torch.float32,
    torch.bfloat16: torch.float32,
    torch.float64: torch.float64,
}


def _plain_eager(logits: Tensor, target: Tensor) -> bool:
    """CPU tensors in plain eager mode (no dispatch mode, forward AD, autocast or torch.func
    transform; :func:`_routable` has ruled out subclasses, :func:`cross_entropy` the compiler)."""
    return (
        logits.is_cpu
        and target.is_cpu
        and torch._C._len_torch_dispatch_stack() == 0
        and torch.autograd.forward_ad._current_level < 0
        and not torch.is_autocast_enabled("cpu")
        and not torch._C._functorch.is_functorch_wrapped_tensor(logits)
        and not torch._C._functorch.is_functorch_wrapped_tensor(target)
    )


def _routable(logits: Tensor, target: Tensor) -> bool:
    """What decides the road but no kernel checks (outside the compiler): plain CPU tensors (no
    subclass) in plain eager mode, 1 to ``_LEAN_MAX_ELEMENTS`` logits, at least 2-D."""
    return (
        type(logits) in _TENSOR_TYPES
        and type(target) is Tensor
        and 0 < logits.numel() <= _LEAN_MAX_ELEMENTS
        and logits.dim() >= 2
        and _plain_eager(logits, target)
    )


def _layout_fits(logits: Tensor, target: Tensor) -> bool:
    """Dtypes and layout the compiled loops take (the C++ operator checks the same itself): (M, C)
    logits with classes adjacent and (M,) int64 targets, or contiguous (N, C, d1, ...) logits
    and (N, d1, ...) targets."""
    if logits.dtype not in native.SUPPORTED_DTYPES or target.dtype != torch.int64:
        return False
    if logits.dim() == 2:
        return (
            target.dim() == 1
            and logits.shape[0] == target.shape[0]
            and (logits.stride(1) == 1 or logits.shape[1] == 1)
        )
    return (
        target.dim() == logits.dim() - 1
        and logits.shape[0] == target.shape[0]
        and logits.shape[2:] == target.shape[1:]
        and logits.is_contiguous()
        and target.is_contiguous()
    )


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int, mean: bool) -> Tensor | None:
    """The 0-d cross entropy ('mean' when ``mean``, else 'sum') of (M, C) logits and (M,) class
    indices (or (N, C, d1, ...) logits and (N, d1, ...) class indices), or None when the lean path
    does not apply (or the compiled loops are unavailable).

    Raises:
        softclass.kernels.row_blocks.TargetOutOfBoundsError: a kept target outside [0, C).
    """
    if torch.compiler.is_compiling():
        return _traced(logits, target, ignore_index, mean)
    if not _routable(logits, target):
        return None
    operator = cross_entropy_op.operator()
    if operator is not None:  # it checks dtypes and layout itself: no second check here
        return _operator_forward(operator, logits, target, ignore_index, mean)
    library = native.library()
    if library is None or not _layout_fits(logits, target):
        return None
    if torch.is_grad_enabled() and logits.requires_grad:
        return _LeanCrossEntropy.apply(logits, target, ignore_index, mean)
    return _forward(library, logits, target, ignore_index, mean, False)[0]


def _traced(logits: Tensor, target: Tensor, ignore_index: int, mean: bool) -> Tensor | None:
    """The common call under torch.compile (or export): the registered operator of the general
    path (``softclass::cross_entropy`` for (M, C) logits, ``softclass::spatial_cross_entropy``
    for (N, C, d1, ...)), with the same arguments, reached through as little Python as dynamo
    has to trace: each module global and function it meets is a guard checked on every call of
    the compiled code (the general path's guards took 5.4 µs a call at (256, 10), these 1).
    Only this module's globals are read (``functional`` imports :func:`cross_entropy` by name),
    so no guard is a Python lambda comparing two routes to one object.
    None (the general path, with its errors) for anything but CPU fp32/bf16/fp64 logits of at
    least 2 dimensions and int64 class indices of the matching shape, outside autocast."""
    dtype = logits.dtype
    if not (
        isinstance(logits, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and (dtype == torch.float32 or dtype == torch.bfloat16 or dtype == torch.float64)
        and target.dtype == torch.int64
        and logits.is_cpu
        and target.is_cpu
        and logits.dim() >= 2
        and target.dim() == logits.dim() - 1
        and target.shape[0] == logits.shape[0]
        and target.shape[1:] == logits.shape[2:]
        and logits.numel() > 0
        and not torch.is_autocast_enabled("cpu")
    ):
        return None
    reduction = "mean" if mean else "sum"
    if logits.dim() > 2:
        return torch.ops.softclass.spatial_cross_entropy(
            logits, target, None, ignore_index, reduction, 0.0, False
        )[0]
    if logits.shape[1] > 1 and logits.stride(1) != 1:
        logits = logits.contiguous()  # as softclass.kernels.cross_entropy_cpu.cross_entropy
    block_rows = default_block_rows(logits.shape[0], logits.shape[1])
    # Above the size inductor decomposes, the operator stays whole in the graph: there its
    # forward also writes the gradient (one pass over the logits, as in eager; the backward op
    # then only scales it). (4096, 32000) fwd + bwd in compile, 1 / 2 threads: 277-279 /
    # 171-175 ms → 239-240 / 149-151 ms. The spatial operator gained nothing from it at
    # (8, 21, 128, 128) (2.68-2.72 → 2.71-2.89 ms, 1 thread): it keeps two passes.
    # Static sizes only: with a dynamic size the test would add a guard (export refuses one on
    # a dynamic dimension), so those calls keep the two passes.
    size = logits.numel()
    in_forward = (
        isinstance(size, int)
        and size > DECOMPOSED_MAX_ELEMENTS
        and torch.is_grad_enabled()
        and logits.requires_grad
    )
    return torch.ops.softclass.cross_entropy(
        logits, target, None, ignore_index, reduction, 0.0, block_rows, in_forward
    )[0]


def _operator_forward(
    operator, logits: Tensor, target: Tensor, ignore_index: int, mean: bool
) -> Tensor | None:
    """The loss by one call of the C++ operator (its autograd node makes the gradient), or None
    when the operator refuses the dtypes or layout (the general path then takes the call)."""
    try:
        return operator(logits, target, ignore_index, mean)
    except IndexError as error:
        found = cross_entropy_op.out_of_bounds(error, target, logits.shape[1], ignore_index)
        if found is None:
            raise
        raise found from None
    except NotImplementedError:  # the operator's refusal of the dtypes or layout
        return None


def _forward(
    library, logits: Tensor, target: Tensor, ignore_index: int, mean: bool, with_gradient: bool
) -> tuple[Tensor, Tensor | None]:
    """(loss, gradient for grad_output 1 or None) from one call of the compiled forward."""
    if logits.dim() > 2:
        return _forward_spatial(library, logits, target, ignore_index, mean, with_gradient)
    n_rows, n_classes = logits.shape
    suffix = native.SUPPORTED_DTYPES[logits.dtype]
    compute = _COMPUTE[logits.dtype]
    logsumexp = torch.empty(n_rows, dtype=compute)
    loss = torch.empty((), dtype=logits.dtype)
    state = torch.empty(4, dtype=torch.float64)
    grad = grad_address = grad_denominator = None
    if with_gradient:
        grad = torch.empty((n_rows, n_classes), dtype=logits.dtype)
        grad_address = grad.data_ptr()
        if mean:
            # Σ w_y over kept rows first: the gradient is written already divided by it.
            grad_denominator = state.data_ptr() + 24
            getattr(library, f"ce_kept_weight_sum_{suffix}")(
                target.data_ptr(),
                target.stride(0),
                n_rows,
                ignore_index,
                n_classes,
                None,
                grad_denominator,
            )
    state_address = state.data_ptr()
    first_bad = getattr(library, f"ce_forward_{suffix}")(
        logits.data_ptr(),
        logits.stride(0),
        n_classes,
        0,
        n_rows,
        target.data_ptr(),
        target.stride(0),
        ignore_index,
        None,
        0.0,
        logsumexp.data_ptr(),
        None,
        0,
        state_address + 8,
        mean,
        loss.data_ptr(),
        state_address,
        grad_address,
        n_classes,
        grad_denominator,
    )
    if first_bad >= 0:
        raise TargetOutOfBoundsError(first_bad, int(target[first_bad]), n_classes, ignore_index)
    return loss, grad


def _forward_spatial(
    library, logits: Tensor, target: Tensor, ignore_index: int, mean: bool, with_gradient: bool
) -> tuple[Tensor, Tensor | None]:
    """:func:`_forward` of contiguous (N, C, d1, ...) logits: one call of the compiled spatial
    loops (``spatial_loops.h``), classes S = d1·...·dK apart, then the reduction."""
    n_classes = logits.shape[1]
    n_positions = target.numel()
    forward, _ = spatial_loops(library, logits.dtype)
    suffix = native.SUPPORTED_DTYPES[logits.dtype]
    logsumexp = torch.empty(n_positions, dtype=_COMPUTE[logits.dtype])
    loss = torch.empty((), dtype=logits.dtype)
    state = torch.empty(4, dtype=torch.float64)
    state_address = state.data_ptr()
    grad = grad_address = grad_denominator = None
    if with_gradient:
        grad = torch.empty(logits.shape, dtype=logits.dtype)
        grad_address = grad.data_ptr()
        if mean:
            grad_denominator = state_address + 24
            getattr(library, f"ce_kept_weight_sum_{suffix}")(
                target.data_ptr(), 1, n_positions, ignore_index, n_classes, None, grad_denominator
            )
    first_bad = forward(
        *(logits.data_ptr(), logits.stride(0), n_classes, n_positions // logits.shape[0]),
        *(0, n_positions, target.data_ptr(), ignore_index, None, 0.0, logsumexp.data_ptr()),
        *(None, state_address + 8, grad_address, grad_denominator),
    )
    if first_bad >= 0:
        flat_target = target.view(-1)
        raise TargetOutOfBoundsError(
            first_bad, int(flat_target[first_bad]), n_classes, ignore_index
        )
    getattr(library, f"ce_finish_{suffix}")(
        state_address + 8, 1, mean, loss.data_ptr(), state_address
    )
    return loss, grad


def _as_rows(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(M, C) logits and (M,) targets: (N, C, d1, ...) ones with the classes moved last."""
    if logits.dim() == 2:
        return logits, target
    return logits.movedim(1, -1).reshape(-1, logits.shape[1]), target.reshape(-1)


class _LeanCrossEntropy(torch.autograd.Function):
    """The lean path's autograd node: the gradient is made by the forward and scaled by the
    backward; a second backward (retain_graph) makes it again from the logits, a differentiable
    one (create_graph) runs the general path's differentiable recomputation (both refused if the
    logits were changed in place since)."""

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, ignore_index: int, mean: bool) -> Tensor:
        loss, grad = _forward(native.library(), logits, target, ignore_index, mean, True)
        ctx.gradient = grad
        ctx.logits, ctx.logits_version = logits, logits._version
        ctx.target, ctx.options = target, (ignore_index, "mean" if mean else "sum")
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        if ctx.gradient is None and not torch.is_grad_enabled():
            # A second backward (retain_graph): the same compiled forward makes the gradient
            # again, so that every backward gives exactly the same numbers.
            ignore_index, reduction = ctx.options
            logits = saved_logits(ctx)
            ctx.gradient = _forward(
                native.library(), logits, ctx.target, ignore_index, reduction == "mean", True
            )[1]
        if torch.is_grad_enabled():
            ignore_index, reduction = ctx.options
            (grad,) = differentiable_gradients(
                (True,),
                (saved_logits(ctx),),
                lambda logits: unfused_loss(
                    *_as_rows(logits, ctx.target), None, ignore_index, reduction, 0.0
                ),
                grad_loss,
            )
            return grad, None, None, None
        gradient, ctx.gradient = ctx.gradient, None
        factor = grad_loss.to(_COMPUTE[gradient.dtype])
        n_rows = gradient.shape[0]
        n_classes = gradient.numel() // n_rows
        suffix = native.SUPPORTED_DTYPES[gradient.dtype]
        getattr(native.library(), f"ce_scale_{suffix}")(
            gradient.data_ptr(), n_classes, n_classes, 0, n_rows, factor.data_ptr()
        )
        return gradient, None, None, None
