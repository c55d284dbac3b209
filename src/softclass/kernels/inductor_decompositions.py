"""Decompositions of softclass's cross-entropy operators for inductor (torch.compile's default
backend), so that a small common call fuses with the code around it.

Inside torch.compile the loss is one opaque operator (``softclass::cross_entropy`` or
``softclass::spatial_cross_entropy``, and their backward ops): right for large inputs (one pass of
the compiled loops), but for small ones the operator's Python implementation and autograd formula
cost more per call than inductor's fused code for the whole loss (1.8-2.5× torch.compile's time
at (256, 10) ... (4, 5, 33, 17)). For the common call — class indices, no class weights, no
smoothing, 'mean' or 'sum', up to ``MAX_ELEMENTS`` logits — these decompositions
give inductor the loss and its gradient as plain tensor ops:

    loss = Σ_kept (L_n - x_n[t_n]) (/ number kept for 'mean'),  L_n = log Σ_c exp x_nc
    ∂loss/∂x_nc = (exp(x_nc - L_n) - [c = t_n]) · grad_output (/ number kept), 0 if ignored

in fp32 (fp64 for fp64 logits). Every other call keeps the operator (a decomposition returning
``NotImplemented`` declines), as do the other backends (aot_eager, torch.export: one opaque op,
and the operator's own out-of-range error). Under inductor an out-of-range class index raises
inductor's indexing error, as torch.compile of ``F.cross_entropy`` does on the CPU
("index out of bounds: 0 <= ... < C").

They are entered in inductor's decomposition table the first time one of the operators is traced
(its fake implementation runs: :func:`register`), so importing softclass does not import inductor.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from softclass.kernels import row_blocks as rows

__all__ = ["MAX_ELEMENTS", "register"]

# Up to this many logits inductor's fused code beats the opaque operator; above it the compiled
# loops' single pass wins ((4096, 32000) in compile: the operator 0.75 of torch.compile's time;
# (8, 21, 128, 128): 0.57, see benchmarks/RESULTS.md).
MAX_ELEMENTS = 1 << 20


def _decomposes(logits: Tensor, target: Tensor, weight, reduction: str, smoothing: float) -> bool:
    """The common call. With dynamic sizes the size test is a guard of the compiled graph (a
    recompile past it); sizes known only from data decline."""
    from torch.fx.experimental.symbolic_shapes import guard_or_false  # loaded when tracing

    return (
        not target.is_floating_point()
        and weight is None
        and smoothing == 0.0
        and reduction in ("mean", "sum")
        and guard_or_false(logits.numel() <= MAX_ELEMENTS)
    )


def _loss_parts(
    logits: Tensor, target: Tensor, ignore_index: int, reduction: str
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss in the logits' dtype, L per item flattened (compute dtype), number kept (1,) fp64)
    of (N, C, d1, ...) or (M, C) logits, the class dimension 1. L is made with the class
    dimension kept, the buffer the backward reads without a view between."""
    compute = rows.compute_dtype(logits.dtype)
    values = logits.to(compute)
    logsumexp = torch.logsumexp(values, 1, keepdim=True)
    target = target.long()
    kept = target != ignore_index
    picked = values.gather(1, torch.where(kept, target, 0).unsqueeze(1))
    total = torch.where(kept, (logsumexp - picked).squeeze(1), 0.0).sum()
    count = kept.sum(dtype=compute)
    loss = total / count if reduction == "mean" else total
    return loss.to(logits.dtype), logsumexp.reshape(-1), count.to(torch.float64).reshape(1)


def _gradient(
    grad_output: Tensor,
    logits: Tensor,
    target: Tensor,
    logsumexp: Tensor,
    denominator: Tensor,
    ignore_index: int,
    reduction: str,
) -> Tensor:
    """∂loss/∂logits for a 0-d ``grad_output``, in the logits' dtype and shape."""
    compute = logsumexp.dtype
    target = target.long()
    scale = grad_output.to(compute)
    if reduction == "mean":
        scale = scale / denominator.reshape(()).to(compute)
    # The kept mask from the target again (not the forward's, which would then be saved), and
    # the target class of ignored items 0 (their gradient is 0 anyway): the one-hot comparison
    # as torch's own decomposition makes it, whose code inductor writes faster when the class
    # count is symbolic (a (256, 3) forward: 56 µs with the plain comparison, 34 so; torch 35).
    kept = target.unsqueeze(1) != ignore_index
    classes = torch.arange(logits.shape[1], device=logits.device)
    classes = classes.reshape(1, -1, *(1,) * (logits.dim() - 2))
    is_target = (classes == torch.where(kept, target.unsqueeze(1), 0)).to(compute)
    logsumexp = logsumexp.reshape(target.shape).unsqueeze(1)
    probabilities = torch.exp(logits.to(compute) - logsumexp)
    return torch.where(kept, (probabilities - is_target) * scale, 0.0).to(logits.dtype)


def _forward(logits, target, weight, ignore_index, reduction, smoothing, *options):
    """Both operators' forward (2-D: ``options`` (block_rows, in_forward); spatial: (in_forward,));
    a forward that also writes the gradient is left to the operator."""
    if options[-1] or not _decomposes(logits, target, weight, reduction, smoothing):
        return NotImplemented
    return (*_loss_parts(logits, target, ignore_index, reduction), logits.new_empty((0,)))


def _backward_2d(grad_output, logits, target, weight, logsumexp, denominator, *options):
    ignore_index, reduction, smoothing, _, wants_target = options
    if wants_target or not _decomposes(logits, target, weight, reduction, smoothing):
        return NotImplemented
    gradient = _gradient(
        grad_output, logits, target, logsumexp, denominator, ignore_index, reduction
    )
    return gradient, target.new_empty((0,))


def _backward_spatial(grad_output, logits, target, weight, logsumexp, denominator, *options):
    ignore_index, reduction, smoothing = options
    if not _decomposes(logits, target, weight, reduction, smoothing):
        return NotImplemented
    return _gradient(grad_output, logits, target, logsumexp, denominator, ignore_index, reduction)


@functools.cache
def register() -> None:
    """Enter the decompositions in inductor's table (once). Inductor refuses an operator that is
    both in its table and run as a fallback (a declined call), so each operator's fallback is
    made first, marked as overriding the table. Nothing is entered if this torch lacks any of
    these (private) hooks: the operators then stay opaque, same numbers."""
    operators = torch.ops.softclass
    entries = {
        operators.cross_entropy.default: _forward,
        operators.cross_entropy_backward.default: _backward_2d,
        operators.spatial_cross_entropy.default: _forward,
        operators.spatial_cross_entropy_backward.default: _backward_spatial,
    }
    from torch.utils._python_dispatch import _disable_current_modes

    # Called from a fake implementation: inductor's modules are imported outside the tracing
    # modes (FakeTensor, proxy), so that their module-level tensors are real.
    with _disable_current_modes():
        _enter(entries)


def _enter(entries: dict) -> None:
    """Make the operators' fallbacks, then enter ``entries`` in inductor's table."""
    try:
        from torch._inductor import decomposition, lowering
        from torch._library.utils import get_layout_constraint_tag

        for operator in entries:
            if operator not in lowering.lowerings:
                tag = get_layout_constraint_tag(operator, with_default=True)
                lowering.make_fallback(
                    operator,
                    layout_constraint=lowering.tag_to_layout_constraint(tag),
                    warn=False,
                    override_decomp=True,
                )
        decomposition.decompositions.update(entries)
        # inductor copies the table once per process (with its random-number decompositions).
        decomposition.fast_random_decomps.cache_clear()
    except (ImportError, AttributeError, TypeError):
        return
