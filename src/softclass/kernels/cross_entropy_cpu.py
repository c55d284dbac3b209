"""Fused cross entropy on CPU (``softclass::cross_entropy``): compiled row loops, torch ops else.

Why it is faster than ``torch.nn.functional.cross_entropy`` on large inputs:

* torch materialises ``log_softmax`` (one N×C tensor), a zero-filled gradient of the NLL (another),
  and the softmax gradient (a third), streaming each through main memory several times. Here the
  forward walks the logits one block of rows at a time, so that every intermediate of a block stays
  in cache, and keeps only the per-row log-sum-exp (N floats). The backward walks the logits again
  and writes ``scale · (softmax − target)`` straight into the gradient: one read of the logits in
  the forward, one read and one write in the backward.
* With class-index targets and fp32/bf16/fp64 logits everything runs in compiled C (see
  :mod:`softclass.kernels.native`): the forward is one call per row range computing L, the
  per-row loss (weights, ignore_index, smoothing), the reduction sums and the target range check;
  the backward is one call per row range writing the gradient. No per-row torch ops remain, so
  small inputs do not pay torch's per-op (thread-pool) overhead either; up to 32 classes, rows
  are processed 16 at a time across SIMD lanes. For a large scalar loss the forward also writes
  the gradient (for grad_output 1) while each row is still in cache, and the backward only scales
  it: one read of the logits in all. With more classes than the SIMD tiles take (f32/f64), the
  log-sum-exp pass keeps its exps in the gradient row, which is then scaled: one exp per logit.
  A fresh 524 MB gradient (4096×32000) cost 160 ms of page faults and 33 ms of unmapping per
  step against 36 ms for the loop (transparent huge pages: ~22 ms, but 0.2–2 s stalls in
  compaction), so a gradient from 64 MiB on is the reused block of the compiled library
  (:func:`softclass.kernels.native.empty_gradient`): the memory the previous step's gradient
  freed.

The math and the torch-ops path: :mod:`softclass.kernels.row_blocks`; the calls into the
compiled loops: :mod:`softclass.kernels.native_loops`.

Operators: ``softclass::cross_entropy`` (with a ``_backward`` op) and ``softclass::scale_``
(``softclass::linear_cross_entropy`` lives in :mod:`softclass.kernels.linear_cross_entropy_cpu`,
``softclass::softmax`` in :mod:`softclass.kernels.softmax`), registered with
``torch.library.custom_op``: a fake implementation (shapes and dtypes for FakeTensor, meta,
torch.compile and torch.export), an autograd formula (the backward op; differentiable torch ops
under ``create_graph`` for double backward) and a vmap rule (the losses run per batch entry, the
documented fallback — ``softclass.functional`` sends torch.func transforms to torch ops anyway).
Only the real implementations touch data pointers. Plain eager calls on real tensors
(:func:`is_eager`) enter the same implementations through autograd Functions, without the
dispatcher's per-call cost.

Every kernel function takes already-validated 2-D inputs (classes last, any strides) and returns
exactly what ``torch.nn.functional.cross_entropy`` returns for that 2-D call. Row blocks are slices,
so no flat index is ever computed: tensors past 2³¹ elements are addressed by torch's own 64-bit
strided indexing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from softclass.kernels import inductor_decompositions, native, native_loops
from softclass.kernels import row_blocks as rows
from softclass.kernels.row_blocks import TargetOutOfBoundsError, is_eager

__all__ = [
    "FusedCrossEntropyFunction",
    "TargetOutOfBoundsError",
    "cross_entropy",
    "default_block_rows",
    "is_eager",
    "prefers_fused",
    "saved_logits",
]

# How the constants below were chosen: by hand, from one-off timings on the reference machine
# (2-core AMD EPYC, shared with other jobs, so every figure carries ±30% noise); the scripts are
# not part of the repository, the numbers are quoted here. Re-check them with `softclass bench`
# (or `python -m benchmarks.cross_entropy`) after changing a path.
#
# Smallest logits (elements) for which functional.cross_entropy takes the fused torch-ops path
# (probability targets, fp16, non-unit class stride, no compiler). Probability targets, fp32:
# 128×128 plain 168 µs / fused 172 µs, 64×100 133 / 249, 1024×100 1218 / 637.
_FUSED_MIN_ELEMENTS = 1 << 14
# The compiled path (class indices, fp32/bf16/fp64) is always taken: it beat the plain path at
# every measured size, from 256×3 (fp32 84 vs 223 µs, bf16 90 vs 217, fp64 45 vs 131) up.
_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float64, torch.float16)


def prefers_fused(logits: Tensor, target: Tensor) -> bool:
    """Whether :func:`cross_entropy` beats the plain log_softmax + gather path for these validated
    (M, C) logits and (M,) or (M, C) target: always where the compiled loops apply, else from
    ``_FUSED_MIN_ELEMENTS`` logits on (measurements beside the constants). Decided from shapes
    and dtypes only (under torch.compile the compiled loops are assumed available: the operator
    falls back to torch ops by itself where they are not)."""
    if native_loops.applicable(logits, target) and (
        torch.compiler.is_compiling() or native.library() is not None
    ):
        return True
    return logits.numel() >= _FUSED_MIN_ELEMENTS and logits.dtype in _FUSED_DTYPES


def default_block_rows(n_rows: int, n_classes: int) -> int:
    """Rows per block of the fused cross entropy for an (n_rows, n_classes) input (≥ 1)."""
    return max(1, min(n_rows, rows.BLOCK_ELEMENTS // max(n_classes, 1)))


def _cross_entropy_forward_impl(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    block_rows: int,
    gradient_in_forward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The real forward of ``softclass::cross_entropy`` (see :func:`cross_entropy`).

    Returns (loss, L (M,) in the compute dtype, the 'mean' denominator (1,) fp64 (Σ w_y of kept
    rows, or M for probabilities; 0 for 'none'), the gradient of the loss for grad_output 1
    (M, C) in the logits' dtype when ``gradient_in_forward``, else an empty (0,)).
    """
    n_classes = logits.shape[1]
    compute_dtype = rows.compute_dtype(logits.dtype)
    library = native_loops.library_for(logits, target)
    if library is not None:
        return native_loops.cross_entropy_forward(
            library,
            *(logits, target, weight, ignore_index, reduction, label_smoothing),
            gradient_in_forward,
        )
    targets = rows.RowTargets(
        target, weight, ignore_index, label_smoothing, n_classes, compute_dtype, block_rows
    )
    if not targets.is_probability:
        rows.first_bad_target(target, n_classes, ignore_index)
    logsumexp, per_row_loss = rows.statistics_pass(logits, targets, block_rows)
    denominator = targets.mean_denominator()
    loss = rows.reduce_rows(per_row_loss, reduction, denominator).to(logits.dtype)
    denominator = denominator.to(torch.float64).reshape(1)
    if not gradient_in_forward:
        return loss, logsumexp, denominator, logits.new_empty((0,))
    unit = torch.ones((), dtype=compute_dtype)
    grad, _ = _cross_entropy_backward_impl(
        *(unit, logits, target, weight, logsumexp, denominator, ignore_index, reduction),
        *(label_smoothing, block_rows, True, False),
    )
    return loss, logsumexp, denominator, grad


def _cross_entropy_backward_impl(
    grad_output: Tensor,
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    logsumexp: Tensor,
    denominator: Tensor,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    block_rows: int,
    wants_logits: bool,
    wants_target: bool,
    out: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """(∂output/∂logits (M, C) or None, ∂output/∂target (M, C) or None) for ``grad_output``
    (0-d, or (M,) for 'none'); written into ``out`` (may be ``logits``) when given."""
    n_rows, n_classes = logits.shape
    compute_dtype = logsumexp.dtype
    library = native_loops.library_for(logits, target)
    grad_logits = None
    if library is not None:
        if wants_logits:
            grad_logits = torch.empty(logits.shape, dtype=logits.dtype) if out is None else out
            native_loops.gradient(
                *(library, logits, target, native_loops.real_weight(weight, logits.dtype)),
                *(ignore_index, label_smoothing, logsumexp, grad_output.to(compute_dtype)),
                *(denominator if reduction == "mean" else None, grad_logits),
            )
        return grad_logits, None
    targets = rows.RowTargets(
        target, weight, ignore_index, label_smoothing, n_classes, compute_dtype, block_rows
    )
    row_scale = rows.row_scale(grad_output, reduction, denominator.to(compute_dtype).reshape(()))
    grad_target = None
    if wants_target:
        grad_target = rows.probability_target_gradient(logits, logsumexp, targets, row_scale)
    if wants_logits:
        coefficients = targets.gradient_coefficients(row_scale)
        grad_logits = torch.empty(logits.shape, dtype=logits.dtype) if out is None else out
        same_dtype = logits.dtype == compute_dtype
        for start, stop in rows.row_blocks(n_rows, block_rows):
            grad_block = grad_logits[start:stop]
            work = grad_block if same_dtype else torch.empty(grad_block.shape, dtype=compute_dtype)
            targets.write_block_gradient(
                logits[start:stop], logsumexp, coefficients, start, stop, work
            )
            if not same_dtype:
                grad_block.copy_(work)
    return grad_logits, grad_target


_cross_entropy_op = torch.library.custom_op(
    "softclass::cross_entropy", _cross_entropy_forward_impl, mutates_args=(), device_types="cpu"
)


@_cross_entropy_op.register_fake
def _cross_entropy_fake(
    logits, target, weight, ignore_index, reduction, label_smoothing, block_rows, in_forward
):
    inductor_decompositions.register()  # traced: inductor may now decompose small calls
    n_rows = logits.shape[0]
    return (
        logits.new_empty((n_rows,) if reduction == "none" else ()),
        logits.new_empty((n_rows,), dtype=rows.compute_dtype(logits.dtype)),
        logits.new_empty((1,), dtype=torch.float64),
        logits.new_empty(logits.shape if in_forward else (0,)),
    )


@torch.library.custom_op("softclass::cross_entropy_backward", mutates_args=(), device_types="cpu")
def _cross_entropy_backward_op(
    grad_output: Tensor,
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    logsumexp: Tensor,
    denominator: Tensor,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    block_rows: int,
    wants_target: bool,
) -> tuple[Tensor, Tensor]:
    """(∂output/∂logits, ∂output/∂target or an empty (0,) when not ``wants_target``)."""
    grad_logits, grad_target = _cross_entropy_backward_impl(
        *(grad_output, logits, target, weight, logsumexp, denominator, ignore_index, reduction),
        *(label_smoothing, block_rows, True, wants_target),
    )
    return grad_logits, target.new_empty((0,)) if grad_target is None else grad_target


@_cross_entropy_backward_op.register_fake
def _cross_entropy_backward_fake(grad_output, logits, target, *options):
    wants_target = options[-1]
    return torch.empty_like(logits), target.new_empty(target.shape if wants_target else (0,))


def _scale_impl(gradient: Tensor, factor: Tensor) -> None:
    """Multiply ``gradient`` (M, C) in place by the 0-d ``factor`` (no-op for 1, compiled)."""
    compute_factor = factor.to(rows.compute_dtype(gradient.dtype))
    library = native.library() if gradient.dtype in native.SUPPORTED_DTYPES else None
    if library is not None and gradient.dim() == 2 and gradient.is_contiguous():
        native_loops.scale(library, gradient, compute_factor)
    else:
        gradient.mul_(compute_factor)


@torch.library.custom_op("softclass::scale_", mutates_args=("gradient",), device_types="cpu")
def _scale_op(gradient: Tensor, factor: Tensor) -> None:
    """:func:`_scale_impl` as an operator."""
    _scale_impl(gradient, factor)


@_scale_op.register_fake
def _scale_fake(gradient, factor) -> None:
    return None


def _cross_entropy_setup_context(ctx, inputs, output) -> None:
    logits, target, weight, ignore_index, reduction, label_smoothing, block_rows, in_forward = (
        inputs[:8]
    )
    _, logsumexp, denominator, gradient = output
    ctx.mark_non_differentiable(logsumexp, denominator, gradient)
    # No zero-filled gradients for the non-differentiable outputs (an N×C one for ``gradient``).
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(target, weight, logsumexp, denominator)
    ctx.options = (ignore_index, reduction, label_smoothing, block_rows)
    # Non-differentiable output: no grad_fn, so holding it here makes no reference cycle.
    ctx.gradient = gradient if in_forward else None
    # With the gradient made in the forward, the logits are needed only to make it again (a
    # second backward, create_graph, a probability target's gradient): held as they are, so
    # that changing them in place after the loss (as torch allows) fails only then, by name.
    ctx.logits, ctx.logits_version = logits, logits._version
    ctx.inplace_backward = len(inputs) > 8 and inputs[8]


def saved_logits(ctx) -> Tensor:
    """The forward's logits, refused (as autograd does) if they were changed in place since."""
    if ctx.logits._version != ctx.logits_version:
        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an "
            "inplace operation: the logits of softclass's cross entropy are at version "
            f"{ctx.logits._version}; expected version {ctx.logits_version} (the gradient made in "
            "the forward was used already; a second backward or create_graph needs the logits "
            "unchanged)"
        )
    return ctx.logits


def forward_gradient(ctx, grad_loss: Tensor, factor_dtype: torch.dtype, direct: bool) -> Tensor:
    """∂/∂logits from ``ctx.gradient``, the gradient the forward made for a unit grad_output.
    'none': each row's gradient times ``grad_loss`` (taken to ``factor_dtype``), ``ctx.gradient``
    kept so that a second backward gives exactly the same numbers. A scalar loss: scaled in place
    (``direct``: by :func:`_scale_impl`, else through the ``softclass::scale_`` op) and handed
    over once; a second backward (retain_graph) makes it again from the logits."""
    if grad_loss.dim():
        return ctx.gradient * grad_loss.to(factor_dtype).unsqueeze(1)
    gradient, ctx.gradient = ctx.gradient, None
    if not direct:
        torch.ops.softclass.scale_(gradient, grad_loss)
    else:
        _scale_impl(gradient if gradient.dim() == 2 else gradient.flatten(1), grad_loss)
    return gradient


def _cross_entropy_gradients(ctx, grad_loss: Tensor, direct: bool):
    """(∂/∂logits, ∂/∂target) for the op's registered backward (``direct=False``: through the
    backward ops, so a trace records them) and for the eager Function (``direct=True``: the
    implementations themselves, without the dispatcher's per-call cost)."""
    if grad_loss is None:  # no gradient reached the loss (grads are not materialised)
        return None, None
    target, weight, logsumexp, denominator = ctx.saved_tensors
    ignore_index, reduction, label_smoothing = ctx.options[:3]
    wants_logits, wants_target = ctx.needs_input_grad[:2]
    if torch.is_grad_enabled():
        # create_graph=True: the gradient must itself be differentiable.
        return rows.differentiable_gradients(
            (wants_logits, wants_target),
            (saved_logits(ctx), target),
            lambda logits, target: rows.unfused_loss(
                logits, target, weight, ignore_index, reduction, label_smoothing
            ),
            grad_loss,
        )
    if ctx.gradient is not None and not wants_target:
        return forward_gradient(ctx, grad_loss, logsumexp.dtype, direct), None
    logits = saved_logits(ctx)
    arguments = (grad_loss, logits, target, weight, logsumexp, denominator, *ctx.options)
    if not direct:
        grad_logits, grad_target = torch.ops.softclass.cross_entropy_backward(
            *arguments, wants_target
        )
        return (grad_logits if wants_logits else None, grad_target if wants_target else None)
    out = logits if ctx.inplace_backward else None
    grads = _cross_entropy_backward_impl(*arguments, wants_logits, wants_target, out=out)
    if ctx.inplace_backward:
        # Written behind autograd's back: bump the version counter as torch's own in-place ops
        # do, so nodes that saved the logits refuse to use them.
        torch.autograd.graph.increment_version(logits)
    return grads


def _cross_entropy_backward(ctx, grad_loss, *unused_grads):
    return (*_cross_entropy_gradients(ctx, grad_loss, direct=False), *(None,) * 6)


_cross_entropy_op.register_autograd(
    _cross_entropy_backward, setup_context=_cross_entropy_setup_context
)
_cross_entropy_op.register_vmap(rows.vmap_by_loop(_cross_entropy_op))
_cross_entropy_backward_op.register_vmap(rows.vmap_by_loop(_cross_entropy_backward_op))


class FusedCrossEntropyFunction(torch.autograd.Function):
    """The eager entry of the fused cross entropy: the same implementation, setup and backward
    as the registered ``softclass::cross_entropy``, without the dispatcher's per-call cost
    (measured at 256×3, one thread: ~170 µs of CPU per forward+backward through the op).
    Taken only where nothing needs to see an op (:func:`rows.is_eager`); also the home of
    ``inplace_backward`` (a backward that overwrites an input is no operator for a trace).

    ``apply(logits, target, weight, ignore_index, reduction, label_smoothing, block_rows,
    gradient_in_forward, inplace_backward)`` → (loss, L, denominator, gradient).
    """

    @staticmethod
    def forward(
        ctx,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None,
        ignore_index: int,
        reduction: str,
        label_smoothing: float,
        block_rows: int,
        gradient_in_forward: bool,
        inplace_backward: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # ctx in forward, no separate setup_context: apply() then skips binding the arguments
        # through inspect.signature (~40 µs per call at 256×3).
        inputs = (logits, target, weight, ignore_index, reduction, label_smoothing, block_rows)
        output = _cross_entropy_forward_impl(*inputs, gradient_in_forward)
        _cross_entropy_setup_context(ctx, (*inputs, gradient_in_forward, inplace_backward), output)
        return output

    @staticmethod
    def backward(ctx, grad_loss: Tensor, *unused_grads):
        return (*_cross_entropy_gradients(ctx, grad_loss, direct=True), *(None,) * 7)


def _gradient_in_forward(logits: Tensor, target: Tensor) -> bool:
    """Whether the forward should also write the gradient (for a unit grad_output, per row for
    'none'; the backward then only scales it): an eager call (under tracing the backward is a
    separate op in the graph) that will be differentiated, except with a probability target
    that needs a gradient itself. One pass over the logits instead of two; and the backward no
    longer reads the logits, so they may be changed in place between the loss and its backward,
    as torch allows. (Measured at 256×3 and 64×1000 as fast as the two-pass path, at 4096×32768
    faster; see benchmarks/RESULTS.md.)"""
    return (
        not torch.compiler.is_compiling()
        and torch.is_grad_enabled()
        and logits.requires_grad
        and not target.requires_grad
    )


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    block_rows: int | None = None,
    inplace_backward: bool = False,
) -> Tensor:
    """Fused cross entropy of 2-D logits; same value and gradients as ``F.cross_entropy``.

    Runs the registered operator ``torch.ops.softclass.cross_entropy`` (with its fake
    implementation for FakeTensor/meta, its backward ``softclass::cross_entropy_backward`` and a
    vmap rule), so torch.compile and torch.export see one opaque op.

    Args:
        logits: (M, C) float (fp32, fp64, bf16 or fp16; accumulated in fp32, fp64 in fp64), any
            strides, classes last. Already validated.
        target: (M,) int64 class indices, or (M, C) float probabilities.
        weight: (C,) class weights or None.
        ignore_index: rows whose class-index target equals it count for nothing.
        reduction: "none" → (M,) per-row losses; "sum" → 0-d sum; "mean" → 0-d sum / Σ w_y of
            kept rows (class indices; NaN when every row is ignored) or / M (probabilities).
        label_smoothing: ε in [0, 1]; the target becomes (1−ε)·onehot + ε/C.
        block_rows: rows per streamed block; default :func:`default_block_rows`.
        inplace_backward: write the gradient into ``logits``' own memory instead of a new
            tensor: no extra N×C memory, but **the logits are destroyed** by the backward. The
            write bumps their version counter, so any other autograd node that saved them raises
            "modified by an inplace operation" instead of computing with the gradient. Refused
            for a leaf tensor (the gradient would overwrite the parameter itself). Eager only.

    Returns:
        The loss in ``logits``' dtype: (M,) for "none", else 0-d.

    Raises:
        ValueError: ``inplace_backward`` with ``logits`` a leaf that requires grad.
        TargetOutOfBoundsError: a kept class index outside [0, C) (checked inside the op, at
            run time, also when compiled).
    """
    if block_rows is None:
        block_rows = default_block_rows(logits.shape[0], logits.shape[1])
    if logits.shape[1] > 1 and logits.stride(1) != 1 and native_loops.applicable(logits, target):
        # Classes not adjacent (e.g. transposed logits): one copy, then the compiled loops
        # (measured faster than the torch-ops blocks over the strided rows).
        logits = logits.contiguous()
    if inplace_backward:
        if logits.is_leaf and logits.requires_grad:
            raise ValueError(
                "inplace_backward=True needs logits computed by an operation (e.g. a Linear "
                "layer): for a leaf tensor that requires grad the gradient would overwrite the "
                "tensor itself; pass inplace_backward=False"
            )
    arguments = (logits, target, weight, ignore_index, reduction, label_smoothing, block_rows)
    arguments += (_gradient_in_forward(logits, target) and not inplace_backward,)
    if inplace_backward or rows.is_eager(logits, target, weight):
        return FusedCrossEntropyFunction.apply(*arguments, inplace_backward)[0]
    return torch.ops.softclass.cross_entropy(*arguments)[0]
