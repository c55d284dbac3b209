"""The cross entropy's calls into the compiled row loops of ``cpu_native.c`` and the spatial
loops of ``spatial_loops.h`` (see :mod:`softclass.kernels.native` for how they are built and
loaded).

Each function takes already-validated CPU tensors (logits (M, C) with class stride 1, or
contiguous (N, C, d1, ...) for the spatial loops; class-index targets (M,); class weights as
:func:`real_weight` makes them) and hands their addresses to one compiled loop per row range;
nothing here reads tensor values in Python except the single target named in a
:class:`~softclass.kernels.row_blocks.TargetOutOfBoundsError`. Called by the operators' real
implementations only (real tensors, never during tracing).
"""

from __future__ import annotations

import torch
from torch import Tensor

from softclass.kernels import native
from softclass.kernels.native import pointer
from softclass.kernels.row_blocks import TargetOutOfBoundsError, compute_dtype

__all__ = [
    "applicable",
    "cross_entropy_forward",
    "finish",
    "forward",
    "gradient",
    "kept_weight_sum",
    "library_for",
    "real_weight",
    "scale",
    "spatial_loops",
]

_FORWARD_NAMES, _FINISH_NAMES, _BACKWARD_NAMES, _SCALE_NAMES, _KEPT_WEIGHT_SUM_NAMES = (
    {dtype: f"ce_{step}_{suffix}" for dtype, suffix in native.SUPPORTED_DTYPES.items()}
    for step in ("forward", "finish", "backward", "scale", "kept_weight_sum")
)


def applicable(logits: Tensor, target: Tensor) -> bool:
    """Whether the compiled loops compute this (M, C) problem: class-index targets and
    fp32/bf16/fp64 logits (any class stride: the fused cross entropy makes other strides
    contiguous first)."""
    return not target.is_floating_point() and logits.dtype in native.SUPPORTED_DTYPES


def library_for(logits: Tensor, target: Tensor):
    """The compiled kernels where they apply, else None: CPU logits (M, C) of fp32/bf16/fp64 with
    class stride 1, class-index targets, and a library that could be built."""
    if not applicable(logits, target) or not logits.is_cpu:
        return None
    if logits.shape[1] > 1 and logits.stride(1) != 1:
        return None
    return native.library()


def real_weight(weight: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Class weights as the compiled loops read them: contiguous, in the compute dtype."""
    return None if weight is None else weight.to(compute_dtype(dtype)).contiguous()


def spatial_loops(library, dtype: torch.dtype):
    """(forward, backward) loops of ``spatial_loops.h`` for ``dtype`` (declared by the library)."""
    suffix = native.SUPPORTED_DTYPES[dtype]
    return (
        getattr(library, f"ce_spatial_forward_{suffix}"),
        getattr(library, f"ce_spatial_backward_{suffix}"),
    )


def forward(
    library,
    logits: Tensor,
    target: Tensor,
    class_weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    logsumexp: Tensor,
    row_loss: Tensor | None,
    loss: Tensor | None,
    mean: bool,
    grad: Tensor | None = None,
    grad_denominator: Tensor | None = None,
) -> Tensor:
    """One compiled pass over the logits (M, C) (or, through the spatial loops, contiguous logits
    (N, C, d1, ...) with the flat (M = N·d1·...,) target): L into ``logsumexp`` (M,) (compute
    dtype), loss_n into ``row_loss`` (M elements, logits' dtype) when given, and the reduced loss
    (Σ loss_n, divided by Σ w_y when ``mean``) into the 0-d ``loss`` when given. With ``grad``
    (the logits' shape, class stride 1 or contiguous), also writes the gradient of the reduced
    loss for a unit grad_output (divided by ``grad_denominator[0]`` when given), each row while
    it is still in cache. ``class_weight`` as :func:`real_weight` makes it.

    Returns the reduction state, (1 + 2R,) fp64 for R row ranges: [0] = Σ w_y over kept rows
    (written only with ``loss``; the 'mean' denominator of the backward), then per range
    (Σ loss_n, Σ w_y) for :func:`finish`.

    Raises:
        TargetOutOfBoundsError: a kept target outside [0, C) (the first one in row order).
    """
    n_rows, n_classes = target.shape[0], logits.shape[1]
    ranges = native.row_ranges(n_rows, n_classes)
    state = torch.empty(1 + 2 * len(ranges), dtype=torch.float64)
    address = state.data_ptr()
    middle = (ignore_index, pointer(class_weight), label_smoothing, logsumexp.data_ptr())
    middle += (pointer(row_loss),)
    # With one range the 2-D loop also reduces into ``loss`` and state[0]; else finish() does.
    single = len(ranges) == 1 and logits.dim() == 2
    if logits.dim() == 2:
        loop = getattr(library, _FORWARD_NAMES[logits.dtype])
        head = (logits.data_ptr(), logits.stride(0), n_classes)
        middle = (target.data_ptr(), target.stride(0), *middle)
        middle += (0 if row_loss is None else row_loss.stride(0),)
        tail = (mean, *((pointer(loss), address) if single else (None, None)), pointer(grad))
        tail += (0 if grad is None else grad.stride(0), pointer(grad_denominator))
    else:
        loop = spatial_loops(library, logits.dtype)[0]
        head = (logits.data_ptr(), logits.stride(0), n_classes, n_rows // logits.shape[0])
        middle = (target.data_ptr(), *middle)
        tail = (pointer(grad), pointer(grad_denominator))
    bad_rows = native.run_ranges(
        lambda index, begin, end: loop(*head, begin, end, *middle, address + 8 + 16 * index, *tail),
        ranges,
    )
    first_bad = min((row for row in bad_rows if row >= 0), default=-1)
    if first_bad >= 0:
        raise TargetOutOfBoundsError(first_bad, int(target[first_bad]), n_classes, ignore_index)
    if not single and loss is not None:
        finish(library, state, mean, loss)
    return state


def finish(library, state: Tensor, mean: bool, loss: Tensor) -> None:
    """Reduce the per-range sums of a reduction state (:func:`forward`'s, or several
    concatenated after one leading slot): write the 0-d ``loss`` in its dtype and Σ w_y into
    ``state[0]``."""
    loop = getattr(library, _FINISH_NAMES[loss.dtype])
    address = state.data_ptr()
    loop(address + 8, (state.numel() - 1) // 2, mean, loss.data_ptr(), address)


def gradient(
    library,
    logits: Tensor,
    target: Tensor,
    class_weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    logsumexp: Tensor,
    grad_output: Tensor,
    denominator: Tensor | None,
    grad_logits: Tensor,
) -> None:
    """Write ∂output/∂logits into ``grad_logits`` (may be ``logits``): (M, C) with class stride 1,
    or contiguous (N, C, d1, ...) with the flat (M,) target (the spatial loops).

    ``grad_output``: 0-d or (M,) ∂output/∂loss_n in the compute dtype; ``denominator``: fp64
    tensor whose first element Σ w_y divides it ('mean'), or None.
    """
    n_rows, n_classes = target.shape[0], logits.shape[1]
    middle = (ignore_index, pointer(class_weight), label_smoothing, logsumexp.data_ptr())
    middle += (grad_output.data_ptr(), grad_output.stride(0) if grad_output.dim() else 0)
    middle += (pointer(denominator), grad_logits.data_ptr())
    if logits.dim() == 2:
        loop = getattr(library, _BACKWARD_NAMES[logits.dtype])
        head = (logits.data_ptr(), logits.stride(0), n_classes)
        middle = (target.data_ptr(), target.stride(0), *middle, grad_logits.stride(0))
    else:
        loop = spatial_loops(library, logits.dtype)[1]
        head = (logits.data_ptr(), logits.stride(0), n_classes, n_rows // logits.shape[0])
        middle = (target.data_ptr(), *middle)
    native.run_ranges(
        lambda index, begin, end: loop(*head, begin, end, *middle),
        native.row_ranges(n_rows, n_classes),
    )


def kept_weight_sum(
    library, target: Tensor, class_weight: Tensor | None, ignore_index: int, n_classes: int, dtype
) -> Tensor:
    """Σ w_y over kept rows, (1,) fp64, from the compiled loop (the 'mean' denominator)."""
    total = torch.empty(1, dtype=torch.float64)
    getattr(library, _KEPT_WEIGHT_SUM_NAMES[dtype])(
        *(target.data_ptr(), target.stride(0), target.shape[0], ignore_index, n_classes),
        *(pointer(class_weight), total.data_ptr()),
    )
    return total


def scale(library, grad: Tensor, factor: Tensor) -> None:
    """Multiply ``grad`` (M, C), class stride 1, in place by the 0-d ``factor`` (compute dtype);
    the compiled loop returns at once when it is 1."""
    n_rows, n_classes = grad.shape
    loop = getattr(library, _SCALE_NAMES[grad.dtype])
    arguments = (grad.data_ptr(), grad.stride(0), n_classes)
    native.run_ranges(
        lambda index, begin, end: loop(*arguments, begin, end, factor.data_ptr()),
        native.row_ranges(n_rows, n_classes),
    )


def cross_entropy_forward(
    library,
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    gradient_in_forward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The compiled branch of the fused cross entropy's forward, of (M, C) logits or contiguous
    (N, C, d1, ...) ones with the flat (M,) target (:func:`forward`): (loss ((M,) or (N, d1, ...)
    for 'none', else 0-d), L (M,) compute dtype, the 'mean' denominator (1,) fp64 (0 for
    'none'), the gradient for grad_output 1 in the logits' shape when ``gradient_in_forward``,
    else an empty (0,))."""
    class_weight = real_weight(weight, logits.dtype)
    per_row = reduction == "none"
    logsumexp = torch.empty(target.shape[0], dtype=compute_dtype(logits.dtype))
    item_shape = (logits.shape[0], *logits.shape[2:]) if per_row else ()
    loss = torch.empty(item_shape, dtype=logits.dtype)
    # A large scalar loss gets its gradient (for grad_output 1) in this same pass over the
    # logits; the backward then only scales it (one read of the logits in all).
    grad = grad_denominator = None
    if gradient_in_forward:
        grad = native.empty_gradient(logits.shape, logits.dtype)
        if reduction == "mean":
            grad_denominator = kept_weight_sum(
                library, target, class_weight, ignore_index, logits.shape[1], logits.dtype
            )
    state = forward(
        *(library, logits, target, class_weight, ignore_index, label_smoothing, logsumexp),
        *((loss, None) if per_row else (None, loss)),
        reduction == "mean",
        grad,
        grad_denominator,
    )
    # The gradient's divisor, when made: a second backward divides by the same number.
    denominator = torch.zeros(1, dtype=torch.float64) if per_row else state[:1].clone()
    denominator = denominator if grad_denominator is None else grad_denominator
    return loss, logsumexp, denominator, logits.new_empty((0,)) if grad is None else grad
