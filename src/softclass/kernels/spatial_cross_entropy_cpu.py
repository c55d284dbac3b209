"""Cross entropy of logits (N, C, d1, ..., dK) on CPU in their own layout (segmentation-style
inputs), through the compiled loops of ``spatial_loops.h``.

The 2-D kernels want classes last: for (N, C, d1, ..., dK) logits that means moving the class
dimension (a copy of every logit) and handing back a gradient in the moved layout (a second
copy, or a strided gradient that slows whatever consumes it). Here the loops read the C classes
of each position S = d1·...·dK apart, a block of adjacent positions at a time, and write the
gradient in the logits' own (contiguous) layout: at (8, 21, 128, 128) one read of the logits and
one write of the gradient, as for the 2-D fused kernel.

Operators: ``softclass::spatial_cross_entropy`` and ``softclass::spatial_cross_entropy_backward``
(``torch.library.custom_op``, with a fake implementation, an autograd formula and a vmap rule,
like ``softclass::cross_entropy``), so torch.compile, torch.export, FakeTensor and the meta device
keep one opaque op of the logits' own shape (:func:`registered_cross_entropy`). Their real
implementations run the loops through the C++ extension's ``softclass_cpp::spatial_forward`` and
``spatial_backward`` where it is built (:mod:`softclass.kernels.cross_entropy_op`): above 2^17
logits on torch's own intra-op threads, the ones inductor's kernels use (at (8, 21, 128, 128) in
torch.compile on 2 threads the loops on one thread took 1.4x torch.compile's time); else through
ctypes (:mod:`softclass.kernels.native_loops`). Plain eager calls
with contiguous fp32/bf16/fp64 logits (:func:`applicable`) enter the same implementations through
an autograd Function, without the dispatcher's per-call cost. Where the compiled loops cannot run
(no library, fp16 logits) the operator computes the same numbers through the 2-D implementation of
:mod:`softclass.kernels.cross_entropy_cpu` on the moved logits. Same values and gradients as
``torch.nn.functional.cross_entropy`` (weight, ignore_index, every reduction, label smoothing);
in eager mode the gradient for grad_output 1 is written by the forward (each block while it is in
cache) and the backward scales it; traced, the backward is its own op.
"""

from __future__ import annotations

import torch
from torch import Tensor

from softclass.kernels import (
    cross_entropy_cpu,
    cross_entropy_op,
    inductor_decompositions,
    native,
    native_loops,
)
from softclass.kernels import row_blocks as rows
from softclass.kernels.cross_entropy_cpu import forward_gradient, saved_logits
from softclass.kernels.native_loops import spatial_loops
from softclass.kernels.row_blocks import TargetOutOfBoundsError

__all__ = [
    "SpatialCrossEntropyFunction",
    "applicable",
    "cross_entropy",
    "registered_cross_entropy",
    "spatial_loops",
    "traceable",
]


def traceable(logits: Tensor, target: Tensor) -> bool:
    """Whether :func:`registered_cross_entropy` computes this validated call (any mode): logits
    (N, C, d1, ...) with at least one element on CPU or meta, class-index targets."""
    return (
        logits.dim() >= 3
        and logits.device.type in ("cpu", "meta")
        and not target.is_floating_point()
        and logits.numel() > 0
    )


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


def _threaded_loops():
    """``torch.ops.softclass_cpp`` where the C++ operator is loaded (its ``spatial_forward`` and
    ``spatial_backward`` run the loops on torch's own intra-op threads), else None (the loops
    through ctypes on the calling thread, or softclass's pool above its size)."""
    return None if cross_entropy_op.operator() is None else torch.ops.softclass_cpp


def _threaded_forward(
    operators, logits: Tensor, flat_target: Tensor, weight: Tensor | None, ignore_index: int, *rest
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`_forward_impl`'s outputs from the C++ ``spatial_forward`` (contiguous logits, flat
    int64 target; ``rest``: reduction, label smoothing, gradient in forward)."""
    weight = native_loops.real_weight(weight, logits.dtype)
    try:
        return operators.spatial_forward(logits, flat_target, weight, ignore_index, *rest)
    except IndexError as error:
        found = cross_entropy_op.out_of_bounds(error, flat_target, logits.shape[1], ignore_index)
        if found is None:
            raise
        raise found from None


def _moved(logits: Tensor) -> Tensor:
    """(N·S, C) logits, classes last (the 2-D implementation's layout)."""
    return logits.movedim(1, -1).reshape(-1, logits.shape[1])


def _moved_back(grad: Tensor, shape: torch.Size) -> Tensor:
    """A (N·S, C) gradient in the logits' own (contiguous) layout ``shape``."""
    return grad.reshape(shape[0], *shape[2:], shape[1]).movedim(-1, 1).contiguous()


def _forward_impl(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    gradient_in_forward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The real forward of ``softclass::spatial_cross_entropy``: logits (N, C, d1, ...), target
    (N, d1, ...) class indices (or any shape of N·d1·... elements). Returns (loss: 0-d, or
    (N, d1, ...) for 'none'; L (N·S,) in the compute dtype; the 'mean' denominator (1,) fp64
    (Σ w_y of the kept positions; 0 for 'none'); the gradient of the loss for grad_output 1 in
    the logits' shape when ``gradient_in_forward``, else an empty (0,)).

    Raises:
        TargetOutOfBoundsError: a kept target outside [0, C), named by its position in target.
    """
    flat_target = target.reshape(-1).long().contiguous()
    arguments = (weight, ignore_index, reduction, label_smoothing, gradient_in_forward)
    library = native.library() if logits.dtype in native.SUPPORTED_DTYPES else None
    try:
        if library is not None and (operators := _threaded_loops()) is not None:
            return _threaded_forward(operators, logits.contiguous(), flat_target, *arguments)
        if library is not None:
            return native_loops.cross_entropy_forward(
                library, logits.contiguous(), flat_target, *arguments
            )
        block_rows = cross_entropy_cpu.default_block_rows(flat_target.numel(), logits.shape[1])
        loss, logsumexp, denominator, grad = cross_entropy_cpu._cross_entropy_forward_impl(
            _moved(logits), flat_target, *arguments[:4], block_rows, gradient_in_forward
        )
    except TargetOutOfBoundsError as error:
        raise TargetOutOfBoundsError(
            error.row,
            error.value,
            logits.shape[1],
            ignore_index,
            position=rows.position(target.shape, error.row),
        ) from None
    if reduction == "none":
        loss = loss.reshape(logits.shape[0], *logits.shape[2:])
    return loss, logsumexp, denominator, _moved_back(grad, logits.shape) if grad.numel() else grad


def _backward_impl(
    grad_output: Tensor,
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    logsumexp: Tensor,
    denominator: Tensor,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> Tensor:
    """∂output/∂logits (the logits' shape, contiguous) for ``grad_output`` (0-d, or the
    per-position losses' shape), from the logits and the forward's L and denominator."""
    flat_target = target.reshape(-1).long().contiguous()
    grad_output = grad_output.reshape(-1) if grad_output.dim() else grad_output
    library = native.library() if logits.dtype in native.SUPPORTED_DTYPES else None
    if library is None:
        block_rows = cross_entropy_cpu.default_block_rows(flat_target.numel(), logits.shape[1])
        grad, _ = cross_entropy_cpu._cross_entropy_backward_impl(
            *(grad_output, _moved(logits), flat_target, weight, logsumexp, denominator),
            *(ignore_index, reduction, label_smoothing, block_rows, True, False),
        )
        return _moved_back(grad, logits.shape)
    if (operators := _threaded_loops()) is not None:
        return operators.spatial_backward(
            *(grad_output.to(logsumexp.dtype).contiguous(), logits.contiguous(), flat_target),
            *(native_loops.real_weight(weight, logits.dtype), logsumexp),
            *(denominator if reduction == "mean" else None, ignore_index, label_smoothing),
        )
    grad = torch.empty(logits.shape, dtype=logits.dtype)
    native_loops.gradient(
        *(library, logits.contiguous(), flat_target),
        *(native_loops.real_weight(weight, logits.dtype), ignore_index, label_smoothing),
        *(logsumexp, grad_output.to(logsumexp.dtype).contiguous()),
        denominator if reduction == "mean" else None,
        grad,
    )
    return grad


_spatial_op = torch.library.custom_op(
    "softclass::spatial_cross_entropy", _forward_impl, mutates_args=(), device_types="cpu"
)


@_spatial_op.register_fake
def _spatial_fake(logits, target, weight, ignore_index, reduction, label_smoothing, in_forward):
    inductor_decompositions.register()  # traced: inductor may now decompose small calls
    item_shape = (logits.shape[0], *logits.shape[2:])
    return (
        logits.new_empty(item_shape if reduction == "none" else ()),
        logits.new_empty((target.numel(),), dtype=rows.compute_dtype(logits.dtype)),
        logits.new_empty((1,), dtype=torch.float64),
        logits.new_empty(logits.shape if in_forward else (0,)),
    )


_spatial_backward_op = torch.library.custom_op(
    "softclass::spatial_cross_entropy_backward",
    _backward_impl,
    mutates_args=(),
    device_types="cpu",
)


@_spatial_backward_op.register_fake
def _spatial_backward_fake(grad_output, logits, *options):
    return logits.new_empty(logits.shape)


def _save(ctx, inputs, output, registered: bool) -> None:
    """What the backward needs, for the operator's autograd formula (``registered``) and for the
    eager Function. The gradient made by the forward is a saved tensor of the operator (so that
    a trace sees it) and a plain attribute of the Function (handed over and scaled in place)."""
    logits, target, weight, ignore_index, reduction, label_smoothing, in_forward = inputs
    _, logsumexp, denominator, gradient = output
    ctx.save_for_backward(target, weight, logsumexp, denominator, gradient if registered else None)
    ctx.options = (ignore_index, reduction, label_smoothing)
    ctx.in_forward = in_forward
    # Non-differentiable output: holding it here makes no reference cycle.
    ctx.gradient = gradient if in_forward and not registered else None
    # Held as they are (see cross_entropy_cpu): changed in place after the loss, they fail only
    # where they are needed again (a second backward, create_graph), by name.
    ctx.logits, ctx.logits_version = logits, logits._version


def _setup_context(ctx, inputs, output) -> None:
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)
    _save(ctx, inputs, output, registered=True)


def _gradient(ctx, grad_loss: Tensor | None, direct: bool) -> Tensor | None:
    """∂/∂logits for the operator's registered backward (``direct=False``: through the backward
    op, so a trace records it) and for the eager Function (``direct=True``)."""
    if grad_loss is None:  # no gradient reached the loss (grads are not materialised)
        return None
    if torch.is_grad_enabled():  # create_graph: a differentiable gradient
        return _differentiable_gradient(ctx, grad_loss)
    target, weight, logsumexp, denominator, gradient = ctx.saved_tensors
    if not direct and ctx.in_forward:
        factor = grad_loss.to(gradient.dtype)
        return gradient * (factor.unsqueeze(1) if factor.dim() else factor)
    if ctx.gradient is not None:
        return forward_gradient(ctx, grad_loss, ctx.gradient.dtype, direct=True)
    arguments = (grad_loss, saved_logits(ctx), target, weight, logsumexp, denominator)
    if direct:
        return _backward_impl(*arguments, *ctx.options)
    return torch.ops.softclass.spatial_cross_entropy_backward(*arguments, *ctx.options)


def _spatial_backward(ctx, grad_loss, *unused_grads):
    return _gradient(ctx, grad_loss, direct=False), *(None,) * 6


_spatial_op.register_autograd(_spatial_backward, setup_context=_setup_context)
_spatial_op.register_vmap(rows.vmap_by_loop(_spatial_op))
_spatial_backward_op.register_vmap(rows.vmap_by_loop(_spatial_backward_op))


class SpatialCrossEntropyFunction(torch.autograd.Function):
    """The eager entry: ``apply(logits, target, weight, ignore_index, reduction,
    label_smoothing, gradient_in_forward)`` → the loss (0-d, or (N, d1, ...) for 'none') through
    the operator's own implementations and backward, without the dispatcher's per-call cost."""

    @staticmethod
    def forward(
        ctx, logits, target, weight, ignore_index, reduction, label_smoothing, gradient_in_forward
    ):
        inputs = (logits, target, weight, ignore_index, reduction, label_smoothing)
        output = _forward_impl(*inputs, gradient_in_forward)
        _save(ctx, (*inputs, gradient_in_forward), output, registered=False)
        return output[0]

    @staticmethod
    def backward(ctx, grad_loss):
        return _gradient(ctx, grad_loss, direct=True), *(None,) * 6


def _differentiable_gradient(ctx, grad_loss: Tensor) -> Tensor:
    """The logits' gradient as a graph of torch ops (double backward), from the moved layout."""
    logits = saved_logits(ctx)
    target, weight = ctx.saved_tensors[:2]
    flat_target = target.reshape(-1).long()
    ignore_index, reduction, label_smoothing = ctx.options

    def loss_of(logits: Tensor) -> Tensor:
        loss = rows.unfused_loss(
            _moved(logits), flat_target, weight, ignore_index, reduction, label_smoothing
        )
        return loss.reshape(grad_loss.shape) if reduction == "none" else loss

    return rows.differentiable_gradients((True,), (logits,), loss_of, grad_loss)[0]


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> Tensor:
    """Cross entropy of validated logits (N, C, d1, ...) (:func:`applicable`: plain eager) and
    class indices (N, d1, ...): the value and gradient of ``torch.nn.functional.cross_entropy``.

    Raises:
        TargetOutOfBoundsError: a kept target outside [0, C), at its flat position.
    """
    gradient_in_forward = torch.is_grad_enabled() and logits.requires_grad
    return SpatialCrossEntropyFunction.apply(
        *(logits, target, weight, ignore_index, reduction, label_smoothing),
        gradient_in_forward,
    )


def registered_cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> Tensor:
    """:func:`cross_entropy` through the registered ``softclass::spatial_cross_entropy``
    (:func:`traceable` calls: torch.compile, torch.export, FakeTensor, meta, dispatch modes), so
    a trace holds one op of the logits' own shape. Under tracing the backward is its own op;
    otherwise the forward also writes the gradient, as in eager mode."""
    gradient_in_forward = (
        not torch.compiler.is_compiling() and torch.is_grad_enabled() and logits.requires_grad
    )
    return torch.ops.softclass.spatial_cross_entropy(
        *(logits, target, weight, ignore_index, reduction, label_smoothing),
        gradient_in_forward,
    )[0]
