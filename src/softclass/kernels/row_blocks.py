"""The torch-ops path of the fused cross entropy, and what every CPU kernel shares.

Math, per row n with logits x, log-sum-exp L = log Σ_c exp(x_c), softmax p = exp(x − L), class
weights w (1 when absent), smoothing ε and C classes:

* class-index target y (row kept when y ≠ ignore_index):
  ``loss_n = (1−ε)·w_y·(L − x_y) + (ε/C)·(W·L − Σ_c w_c x_c)`` with ``W = Σ_c w_c``;
  ``∂loss_n/∂x_c = p_c·((1−ε)·w_y + ε·W/C) − (1−ε)·w_y·[c = y] − (ε/C)·w_c``.
  ``mean`` divides by Σ w_y over kept rows (NaN when none is kept, as torch).
* probability target t, smoothed to t' = (1−ε)·t + ε/C, and u = w ⊙ t':
  ``loss_n = L·Σ_c u_c − Σ_c u_c x_c``; ``∂loss_n/∂x_c = p_c·Σ_j u_j − u_c``; ``mean`` divides by N.

The torch-ops path (probability targets, fp16, or no compiled library) walks the logits one
block of rows at a time (:class:`RowTargets`), so that every intermediate of a block stays in
cache. Also here: the unfused loss as differentiable torch ops (double backward), the vmap
fallback rule, :func:`is_eager` and the out-of-range target error. Every function takes already
validated 2-D inputs (classes last, any strides); row blocks are slices, so no flat index is ever
computed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "BLOCK_ELEMENTS",
    "RowTargets",
    "TargetOutOfBoundsError",
    "compute_dtype",
    "differentiable_gradients",
    "first_bad_target",
    "is_eager",
    "out_of_bounds_message",
    "position",
    "probability_target_gradient",
    "reduce_rows",
    "row_blocks",
    "row_scale",
    "statistics_pass",
    "unfused_loss",
    "vmap_by_loop",
]

# Elements of one row block of the torch-ops path (the compiled path needs no blocks: it streams
# whole rows per call). Chosen by hand from one-off timings on the reference machine (2-core AMD
# EPYC, shared, ±30% noise), 1024×32768 fp32, forward+backward: 2^16 elements 136 ms, 2^18 110 ms,
# 2^20 102 ms, 2^22 108 ms, 2^24 130 ms (Python overhead per block below, cache misses above).
BLOCK_ELEMENTS = 1 << 20


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64; every other float dtype is accumulated in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def row_blocks(n_rows: int, block_rows: int):
    """Yield (start, stop) of each block of ``block_rows`` rows (the last one may be shorter)."""
    for start in range(0, n_rows, block_rows):
        yield start, min(start + block_rows, n_rows)


class _GradientCoefficients(NamedTuple):
    """Per-row factors of ∂output/∂logits = p·softmax − true_class·[c=y] − smoothing·w_c − row·u_c.

    All (M,) tensors in the compute dtype; ``smoothing`` is None without label smoothing.
    """

    softmax: Tensor
    true_class: Tensor | None
    smoothing: Tensor | None
    row: Tensor


class RowTargets:
    """What depends on the targets only (not on the logits), per row, in the compute dtype.

    Class-index targets: ``kept`` (M,) bool, ``safe_target`` (M,) int64 (0 on ignored rows) and
    ``target_weight`` w_y (M,), 0 on ignored rows. Probability targets: ``target`` (M, C) as given
    and ``target_mass`` Σ_c u_c (M,).
    """

    def __init__(
        self,
        target: Tensor,
        weight: Tensor | None,
        ignore_index: int,
        label_smoothing: float,
        n_classes: int,
        compute_dtype: torch.dtype,
        block_rows: int,
    ) -> None:
        self.n_rows = target.shape[0]
        self.n_classes = n_classes
        self.label_smoothing = label_smoothing
        self.compute_dtype = compute_dtype
        self.class_weight = None if weight is None else weight.to(compute_dtype)
        self.is_probability = target.is_floating_point()
        self.target = target
        if self.is_probability:
            self.target_mass = torch.empty(self.n_rows, dtype=compute_dtype)
            for start, stop in row_blocks(self.n_rows, block_rows):
                torch.sum(self.smoothed_block(start, stop), dim=1, out=self.target_mass[start:stop])
            return
        self.kept = target != ignore_index
        self.safe_target = torch.where(self.kept, target, torch.zeros_like(target))
        zero = torch.zeros((), dtype=compute_dtype)
        if self.class_weight is None:
            self.target_weight = torch.where(self.kept, 1.0, zero)
            self.weight_total = float(n_classes)
        else:
            self.target_weight = torch.where(self.kept, self.class_weight[self.safe_target], zero)
            self.weight_total = self.class_weight.sum()

    def smoothed_block(self, start: int, stop: int) -> Tensor:
        """u = w ⊙ ((1−ε)·t + ε/C) for rows [start, stop) of a probability target, (B, C)."""
        mass = self.target[start:stop].to(self.compute_dtype, copy=True)
        if self.label_smoothing > 0.0:
            mass.mul_(1.0 - self.label_smoothing).add_(self.label_smoothing / self.n_classes)
        if self.class_weight is not None:
            mass.mul_(self.class_weight)
        return mass

    def mean_denominator(self) -> Tensor:
        """Σ w_y over kept rows (class indices; 0 → NaN mean, as torch) or M (probabilities)."""
        if self.is_probability:
            return torch.tensor(float(self.n_rows), dtype=self.compute_dtype)
        return self.target_weight.sum()

    def block_statistics(
        self,
        logits_block: Tensor,
        start: int,
        stop: int,
        scratch: Tensor,
        logsumexp: Tensor,
        target_logit: Tensor,
        weighted_logit_sum: Tensor,
    ) -> None:
        """Fill rows [start, stop) of L, x_y and Σ u_c x_c (or Σ w_c x_c) from a logits block.

        ``logits_block`` (B, C) is in the compute dtype; ``scratch`` (≥ B, C) is overwritten.
        """
        block_scratch = scratch[: stop - start]
        row_max = logits_block.amax(dim=1, keepdim=True)
        # A row of all −inf has max −inf; shifting by 0 there keeps L = −inf instead of NaN.
        row_max = torch.where(row_max.isinf(), 0.0, row_max)
        torch.sub(logits_block, row_max, out=block_scratch)
        block_scratch.exp_()
        block_logsumexp = logsumexp[start:stop]
        torch.sum(block_scratch, dim=1, out=block_logsumexp)
        block_logsumexp.log_().add_(row_max.squeeze(1))
        if self.is_probability:
            torch.mul(self.smoothed_block(start, stop), logits_block, out=block_scratch)
            torch.sum(block_scratch, dim=1, out=weighted_logit_sum[start:stop])
            return
        target_index = self.safe_target[start:stop].unsqueeze(1)
        target_logit[start:stop] = logits_block.gather(1, target_index).squeeze(1)
        if self.label_smoothing > 0.0:
            if self.class_weight is None:
                torch.sum(logits_block, dim=1, out=weighted_logit_sum[start:stop])
            else:
                torch.mv(logits_block, self.class_weight, out=weighted_logit_sum[start:stop])

    def per_row_loss(
        self, logsumexp: Tensor, target_logit: Tensor, weighted_logit_sum: Tensor
    ) -> Tensor:
        """loss_n (M,) in the compute dtype from the per-row statistics."""
        if self.is_probability:
            return logsumexp * self.target_mass - weighted_logit_sum
        loss = ((1.0 - self.label_smoothing) * self.target_weight) * (logsumexp - target_logit)
        if self.label_smoothing > 0.0:
            smooth = self.weight_total * logsumexp - weighted_logit_sum
            loss = loss + (self.label_smoothing / self.n_classes) * smooth
        return torch.where(self.kept, loss, 0.0)

    def gradient_coefficients(self, row_scale: Tensor) -> _GradientCoefficients:
        """Per-row gradient factors for ∂output/∂loss_n = ``row_scale`` ((M,) or 0-d)."""
        row_scale = row_scale.to(self.compute_dtype).expand(self.n_rows)
        if self.is_probability:
            return _GradientCoefficients(row_scale * self.target_mass, None, None, row_scale)
        kept_scale = torch.where(self.kept, row_scale, 0.0)
        true_class = kept_scale * ((1.0 - self.label_smoothing) * self.target_weight)
        if self.label_smoothing == 0.0:
            return _GradientCoefficients(true_class, true_class, None, kept_scale)
        smoothing = kept_scale * (self.label_smoothing / self.n_classes)
        softmax = true_class + smoothing * self.weight_total
        return _GradientCoefficients(softmax, true_class, smoothing, kept_scale)

    def write_block_gradient(
        self,
        logits_block: Tensor,
        logsumexp: Tensor,
        coefficients: _GradientCoefficients,
        start: int,
        stop: int,
        out: Tensor,
    ) -> None:
        """Write ∂output/∂logits of rows [start, stop) into ``out`` (B, C), compute dtype.

        ``out`` may alias ``logits_block``: each element is read before it is written.
        """
        torch.sub(logits_block, logsumexp[start:stop].unsqueeze(1), out=out)
        out.exp_().mul_(coefficients.softmax[start:stop].unsqueeze(1))
        if self.is_probability:
            row = coefficients.row[start:stop].unsqueeze(1)
            out.addcmul_(self.smoothed_block(start, stop), row, value=-1.0)
            return
        if coefficients.smoothing is not None:
            smoothing = coefficients.smoothing[start:stop].unsqueeze(1)
            if self.class_weight is None:
                out.sub_(smoothing)
            else:
                out.addcmul_(smoothing, self.class_weight, value=-1.0)
        out.scatter_add_(
            1,
            self.safe_target[start:stop].unsqueeze(1),
            -coefficients.true_class[start:stop].unsqueeze(1),
        )


def row_scale(grad_output: Tensor, reduction: str, denominator: Tensor) -> Tensor:
    """∂output/∂loss_n: grad_output ((M,) for 'none'), divided by the denominator for 'mean'."""
    if reduction == "mean":
        return grad_output.to(denominator.dtype) / denominator
    return grad_output


def reduce_rows(per_row_loss: Tensor, reduction: str, denominator: Tensor) -> Tensor:
    if reduction == "none":
        return per_row_loss
    total = per_row_loss.sum()
    return total if reduction == "sum" else total / denominator


def position(shape: torch.Size, flat_index: int) -> tuple[int, ...]:
    """The index in a tensor of ``shape`` of its row-major element ``flat_index``."""
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(index))


def out_of_bounds_message(
    op: str, value: int, position: object, n_classes: int, ignore_index: int
) -> str:
    """The message of an out-of-range class index (``position``: its index in the target, or
    None for a 0-d target), the same in eager mode and inside a traced operator."""
    where = "" if position is None else f" at position {position}"
    return (
        f"{op}: Target {value} is out of bounds{where}: expected class indices in "
        f"[0, {n_classes - 1}] for {n_classes} classes"
        + (f" or ignore_index={ignore_index}" if ignore_index != -100 else "")
    )


class TargetOutOfBoundsError(IndexError):
    """A kept class-index target outside [0, C), met by the compiled forward (which checks every
    row it reads). ``row`` is its row in the (M,) target and ``value`` the target there;
    ``position``, when given, is what the message names instead (the index in a K-dim target,
    as eager mode names it). :func:`softclass.functional.cross_entropy` re-raises it with the
    position in the caller's target (traced calls keep this message)."""

    def __init__(
        self, row: int, value: int, n_classes: int, ignore_index: int, position: object = None
    ) -> None:
        shown = row if position is None else position
        super().__init__(
            out_of_bounds_message("cross_entropy", value, shown, n_classes, ignore_index)
        )
        self.row = row
        self.value = value


def statistics_pass(logits: Tensor, targets: RowTargets, block_rows: int) -> tuple[Tensor, Tensor]:
    """Stream over the logits (M, C) once in torch ops: return (L (M,), loss_n (M,)) in the
    compute dtype."""
    n_rows, n_classes = logits.shape
    dtype = targets.compute_dtype
    logsumexp = torch.empty(n_rows, dtype=dtype)
    target_logit = torch.empty(n_rows, dtype=dtype)
    weighted_logit_sum = torch.empty(n_rows, dtype=dtype)
    scratch = torch.empty(min(block_rows, n_rows), n_classes, dtype=dtype)
    for start, stop in row_blocks(n_rows, block_rows):
        logits_block = logits[start:stop].to(dtype)
        targets.block_statistics(
            logits_block, start, stop, scratch, logsumexp, target_logit, weighted_logit_sum
        )
    return logsumexp, targets.per_row_loss(logsumexp, target_logit, weighted_logit_sum)


def first_bad_target(target: Tensor, n_classes: int, ignore_index: int) -> None:
    """Raise :class:`TargetOutOfBoundsError` for the first kept target outside [0, C) of the
    (M,) class indices (the torch-ops path's counterpart of the compiled loops' check)."""
    bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise TargetOutOfBoundsError(row, int(target[row]), n_classes, ignore_index)


def probability_target_gradient(
    logits: Tensor, logsumexp: Tensor, targets: RowTargets, row_scale: Tensor
) -> Tensor:
    """∂output/∂t_c = −(1−ε)·s_n·w_c·(x_c − L_n) for a probability target, (M, C)."""
    row_scale = row_scale.to(logsumexp.dtype).expand(targets.n_rows)
    factor = (targets.label_smoothing - 1.0) * row_scale
    grad_target = torch.empty(logits.shape, dtype=targets.target.dtype)
    for start, stop in row_blocks(targets.n_rows, max(1, BLOCK_ELEMENTS // logits.shape[1])):
        block = logits[start:stop].to(logsumexp.dtype) - logsumexp[start:stop].unsqueeze(1)
        block.mul_(factor[start:stop].unsqueeze(1))
        if targets.class_weight is not None:
            block.mul_(targets.class_weight)
        grad_target[start:stop] = block
    return grad_target


def unfused_loss(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> Tensor:
    """The cross entropy of (M, C) logits as a graph of differentiable torch ops (for double
    backward: the first backward under ``create_graph=True`` differentiates this)."""
    dtype = compute_dtype(logits.dtype)
    log_probs = torch.log_softmax(logits.to(dtype), 1)
    n_rows, n_classes = logits.shape
    class_weight = None if weight is None else weight.to(dtype)
    if target.is_floating_point():
        mass = target.to(dtype) * (1.0 - label_smoothing) + label_smoothing / n_classes
        if class_weight is not None:
            mass = mass * class_weight
        per_row_loss = -(mass * log_probs).sum(1)
        denominator = log_probs.new_tensor(float(n_rows))
    else:
        kept = target != ignore_index
        safe_target = torch.where(kept, target, 0)
        ones = log_probs.new_ones(n_rows)
        target_weight = ones if class_weight is None else class_weight[safe_target]
        target_weight = torch.where(kept, target_weight, 0.0)
        picked = log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)
        per_row_loss = -(1.0 - label_smoothing) * target_weight * picked
        if label_smoothing > 0.0:
            weighted = log_probs if class_weight is None else log_probs * class_weight
            smooth = torch.where(kept, -weighted.sum(1), 0.0)
            per_row_loss = per_row_loss + (label_smoothing / n_classes) * smooth
        denominator = target_weight.sum()
    return reduce_rows(per_row_loss, reduction, denominator).to(logits.dtype)


def differentiable_gradients(
    needs_grad: tuple[bool, ...],
    inputs: tuple[Tensor | None, ...],
    loss_of_inputs,
    grad_output: Tensor,
) -> tuple[Tensor | None, ...]:
    """The gradients of ``loss_of_inputs(*inputs)`` for the inputs flagged in ``needs_grad``, as
    a differentiable graph (the backward under ``create_graph=True``, so double backward works):
    the loss is recomputed unfused and differentiated by autograd."""
    with torch.enable_grad():
        loss = loss_of_inputs(*inputs)
        wanted = [tensor for tensor, needs in zip(inputs, needs_grad, strict=True) if needs]
        grads = iter(
            torch.autograd.grad(loss, wanted, grad_output, create_graph=True, allow_unused=True)
        )
    return tuple(next(grads) if needs else None for needs in needs_grad)


def vmap_by_loop(op):
    """A vmap rule for ``op`` that calls it once per batch entry and stacks the results (the
    documented fallback: the kernels work on one (M, C) problem; functional routes torch.func
    transforms to differentiable torch ops instead, so this runs only when an op is vmapped
    directly)."""

    def rule(info, in_dims, *args):
        def entry(arg, dim, index):
            return arg if dim is None or arg is None else arg.select(dim, index)

        results = [
            op(*(entry(arg, dim, index) for arg, dim in zip(args, in_dims, strict=True)))
            for index in range(info.batch_size)
        ]
        outputs = tuple(torch.stack(parts) for parts in zip(*results, strict=True))
        return outputs, (0,) * len(outputs)

    return rule


def is_eager(*tensors: Tensor | None) -> bool:
    """Whether these tensors hold real values in plain eager mode: not under torch.compile or
    export, no FakeTensor/FunctionalTensor or other subclass, not on the meta device, no
    torch.func transform or forward-mode AD, no dispatch mode (FakeTensorMode,
    FlopCounterMode, ...) active. Only then do the wrappers call the implementations directly
    instead of the registered ops (and validation read target values on the host)."""
    if (
        torch.compiler.is_compiling()
        or torch._C._len_torch_dispatch_stack() > 0
        or torch.autograd.forward_ad._current_level >= 0
    ):
        return False
    return all(
        tensor is None
        or (
            type(tensor) in (Tensor, torch.nn.Parameter)
            and tensor.device.type != "meta"
            and not torch._C._functorch.is_functorch_wrapped_tensor(tensor)
        )
        for tensor in tensors
    )
