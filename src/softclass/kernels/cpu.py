"""Fused, row-blocked cross entropy (and linear + cross entropy) on CPU, in plain torch ops.

Why it is faster than ``torch.nn.functional.cross_entropy`` on large inputs:

* torch materialises ``log_softmax`` (one N×C tensor), a zero-filled gradient of the NLL (another),
  and the softmax gradient (a third), streaming each through main memory several times. Here the
  forward walks the logits one block of rows at a time, so that every intermediate of a block stays
  in cache, and keeps only the per-row log-sum-exp (N floats). The backward walks the logits again
  and writes ``scale · (softmax − target)`` straight into the gradient: one read of the logits in
  the forward, one read and one write in the backward.
* The row loops themselves (fp32/bf16, class-index targets) are compiled C (see
  :mod:`softclass.kernels.native`): one pass per row range, exp evaluated in SIMD registers.
  First-touching the fresh 512 MiB gradient still costs ~130 ms of page faults at 4096×32768.
  (Transparent huge pages cut that to ~20 ms when the machine is quiet, but measured 0.2–2 s
  stalls under memory pressure from other processes, so the gradient is a plain ``torch.empty``.)

Math, per row n with logits x, log-sum-exp L = log Σ_c exp(x_c), softmax p = exp(x − L), class
weights w (1 when absent), smoothing ε and C classes:

* class-index target y (row kept when y ≠ ignore_index):
  ``loss_n = (1−ε)·w_y·(L − x_y) + (ε/C)·(W·L − Σ_c w_c x_c)`` with ``W = Σ_c w_c``;
  ``∂loss_n/∂x_c = p_c·((1−ε)·w_y + ε·W/C) − (1−ε)·w_y·[c = y] − (ε/C)·w_c``.
  ``mean`` divides by Σ w_y over kept rows (NaN when none is kept, as torch).
* probability target t, smoothed to t' = (1−ε)·t + ε/C, and u = w ⊙ t':
  ``loss_n = L·Σ_c u_c − Σ_c u_c x_c``; ``∂loss_n/∂x_c = p_c·Σ_j u_j − u_c``; ``mean`` divides by N.

Every kernel function takes already-validated 2-D inputs (classes last, any strides) and returns
exactly what ``torch.nn.functional.cross_entropy`` returns for that 2-D call. Row blocks are slices,
so no flat index is ever computed: tensors past 2³¹ elements are addressed by torch's own 64-bit
strided indexing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from softclass.kernels import native

__all__ = [
    "FusedCrossEntropyFunction",
    "FusedLinearCrossEntropyFunction",
    "cross_entropy",
    "default_block_rows",
    "default_linear_block_rows",
    "linear_cross_entropy",
    "prefers_fused",
]

# Elements of one row block. Tuned on the reference machine (2-core AMD EPYC Zen 5, 1 MiB L2 per
# core, 32 MiB L3) with `python -m benchmarks.cross_entropy --tune`: at 4096×32768 fp32 the
# forward+backward time is flat from 2^19 to 2^21 elements per block (2–8 MiB, L3-resident) and
# rises on both sides (Python overhead per block below, cache misses above).
_BLOCK_ELEMENTS = 1 << 20
# Logit elements of one block of the fused linear + cross entropy: big enough that the three
# matrix products per block run at full BLAS speed, small enough to stay far below N×C.
_LINEAR_BLOCK_ELEMENTS = 1 << 23
# Smallest logits (elements) for which functional.cross_entropy dispatches to the fused kernel.
_FUSED_MIN_ELEMENTS = 1 << 14
_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float64, torch.float16)


def prefers_fused(n_rows: int, n_classes: int, dtype: torch.dtype) -> bool:
    """Whether :func:`cross_entropy` beats the plain log_softmax + gather path for this shape.

    Measured with ``softclass bench`` (benchmarks/RESULTS.md): the fused path wins from
    ``_FUSED_MIN_ELEMENTS`` logits on; below, both take tens of microseconds and the plain path's
    fewer Python-level steps win.
    """
    return n_rows * n_classes >= _FUSED_MIN_ELEMENTS and dtype in _FUSED_DTYPES


def default_block_rows(n_rows: int, n_classes: int) -> int:
    """Rows per block of the fused cross entropy for an (n_rows, n_classes) input (≥ 1)."""
    return max(1, min(n_rows, _BLOCK_ELEMENTS // max(n_classes, 1)))


def default_linear_block_rows(n_rows: int, n_classes: int) -> int:
    """Rows per block of the fused linear + cross entropy (≥ 1)."""
    return max(1, min(n_rows, _LINEAR_BLOCK_ELEMENTS // max(n_classes, 1)))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64; every other float dtype is accumulated in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _row_blocks(n_rows: int, block_rows: int):
    """Yield (start, stop) of each block of ``block_rows`` rows (the last one may be shorter)."""
    for start in range(0, n_rows, block_rows):
        yield start, min(start + block_rows, n_rows)


class _GradientCoefficients:
    """Per-row factors of ∂output/∂logits = p·softmax − true_class·[c=y] − smoothing·w_c − row·u_c.

    All (M,) tensors in the compute dtype; ``smoothing`` is None without label smoothing.
    """

    def __init__(
        self,
        softmax: Tensor,
        true_class: Tensor | None,
        smoothing: Tensor | None,
        row: Tensor,
    ) -> None:
        self.softmax = softmax
        self.true_class = true_class
        self.smoothing = smoothing
        self.row = row


class _RowTargets:
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
            for start, stop in _row_blocks(self.n_rows, block_rows):
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

    def needs_weighted_logit_sum(self) -> bool:
        return self.is_probability or self.label_smoothing > 0.0

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


def _row_scale(grad_output: Tensor, reduction: str, denominator: Tensor) -> Tensor:
    """∂output/∂loss_n: grad_output ((M,) for 'none'), divided by the denominator for 'mean'."""
    if reduction == "mean":
        return grad_output.to(denominator.dtype) / denominator
    return grad_output


def _reduce(per_row_loss: Tensor, reduction: str, denominator: Tensor) -> Tensor:
    if reduction == "none":
        return per_row_loss
    total = per_row_loss.sum()
    return total if reduction == "sum" else total / denominator


def _native_library(logits: Tensor, targets: _RowTargets):
    """The compiled kernels where they apply (class indices, fp32/bf16, class stride 1)."""
    if targets.is_probability or logits.dtype not in native.SUPPORTED_DTYPES:
        return None
    if logits.device.type != "cpu":
        return None
    if logits.shape[1] > 1 and logits.stride(1) != 1:
        return None
    return native.library()


def _statistics_pass(
    logits: Tensor, targets: _RowTargets, block_rows: int
) -> tuple[Tensor, Tensor]:
    """Stream over the logits (M, C) once: return (L (M,), loss_n (M,)) in the compute dtype."""
    n_rows, n_classes = logits.shape
    dtype = targets.compute_dtype
    library = _native_library(logits, targets)
    if library is not None:
        logsumexp, weighted_logit_sum = _native_statistics(library, logits, targets)
        target_index = targets.safe_target.unsqueeze(1)
        target_logit = logits.gather(1, target_index).squeeze(1).to(dtype)
        return logsumexp, targets.per_row_loss(logsumexp, target_logit, weighted_logit_sum)
    logsumexp = torch.empty(n_rows, dtype=dtype)
    target_logit = torch.empty(n_rows, dtype=dtype)
    weighted_logit_sum = torch.empty(n_rows, dtype=dtype)
    scratch = torch.empty(min(block_rows, n_rows), n_classes, dtype=dtype)
    for start, stop in _row_blocks(n_rows, block_rows):
        logits_block = logits[start:stop].to(dtype)
        targets.block_statistics(
            logits_block, start, stop, scratch, logsumexp, target_logit, weighted_logit_sum
        )
    return logsumexp, targets.per_row_loss(logsumexp, target_logit, weighted_logit_sum)


def _native_statistics(library, logits: Tensor, targets: _RowTargets) -> tuple[Tensor, Tensor]:
    """L (M,) fp32 and Σ_c w_c x_c (M,) fp32 (zeros when unused) from the compiled row loop."""
    n_rows, n_classes = logits.shape
    row_max = torch.empty(n_rows, dtype=torch.float32)
    exp_sum = torch.empty(n_rows, dtype=torch.float64)
    weighted_logit_sum = torch.zeros(n_rows, dtype=torch.float64)
    wants_weighted_sum = targets.label_smoothing > 0.0
    class_weight = None if targets.class_weight is None else targets.class_weight.contiguous()
    row_statistics = getattr(library, f"ce_row_statistics_{native.SUPPORTED_DTYPES[logits.dtype]}")
    arguments = (
        native.pointer(logits),
        logits.stride(0),
        n_classes,
    )
    pointers = (
        native.pointer(class_weight),
        native.pointer(row_max),
        native.pointer(exp_sum),
        native.pointer(weighted_logit_sum) if wants_weighted_sum else None,
    )
    native.run_row_ranges(
        lambda begin, end: row_statistics(*arguments, begin, end, *pointers), n_rows, n_classes
    )
    logsumexp = (exp_sum.log() + row_max).to(torch.float32)
    return logsumexp, weighted_logit_sum.to(torch.float32)


def _native_gradient(
    library,
    logits: Tensor,
    logsumexp: Tensor,
    targets: _RowTargets,
    coefficients: _GradientCoefficients,
    grad_logits: Tensor,
) -> None:
    """Write ∂output/∂logits into ``grad_logits`` (M, C, class stride 1) with the compiled loop."""
    n_rows, n_classes = logits.shape
    class_weight = None if targets.class_weight is None else targets.class_weight.contiguous()
    smoothing = None if coefficients.smoothing is None else coefficients.smoothing.contiguous()
    keep_alive = (
        logsumexp.contiguous(),
        coefficients.softmax.contiguous(),
        smoothing,
        class_weight,
        targets.safe_target.contiguous(),
        coefficients.true_class.contiguous(),
    )
    row_gradient = getattr(library, f"ce_row_gradient_{native.SUPPORTED_DTYPES[logits.dtype]}")
    head = (native.pointer(logits), logits.stride(0), n_classes)
    tail = (
        *(native.pointer(tensor) for tensor in keep_alive),
        native.pointer(grad_logits),
        grad_logits.stride(0),
    )
    native.run_row_ranges(
        lambda begin, end: row_gradient(*head, begin, end, *tail), n_rows, n_classes
    )


class FusedCrossEntropyFunction(torch.autograd.Function):
    """Row-blocked cross entropy: forward saves L (M,) only; backward writes the gradient once.

    ``apply(logits, target, weight, ignore_index, reduction, label_smoothing, block_rows,
    inplace_backward)``; see :func:`cross_entropy`.
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
        inplace_backward: bool,
    ) -> Tensor:
        compute_dtype = _compute_dtype(logits.dtype)
        targets = _RowTargets(
            target,
            weight,
            ignore_index,
            label_smoothing,
            logits.shape[1],
            compute_dtype,
            block_rows,
        )
        logsumexp, per_row_loss = _statistics_pass(logits, targets, block_rows)
        denominator = targets.mean_denominator()
        ctx.save_for_backward(logits, target, weight, logsumexp, denominator)
        ctx.options = (ignore_index, reduction, label_smoothing, block_rows, inplace_backward)
        return _reduce(per_row_loss, reduction, denominator).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        logits, target, weight, logsumexp, denominator = ctx.saved_tensors
        ignore_index, reduction, label_smoothing, block_rows, inplace_backward = ctx.options
        n_rows, n_classes = logits.shape
        targets = _RowTargets(
            target, weight, ignore_index, label_smoothing, n_classes, logsumexp.dtype, block_rows
        )
        row_scale = _row_scale(grad_output, reduction, denominator)
        grad_target = None
        if ctx.needs_input_grad[1]:
            grad_target = _probability_target_gradient(logits, logsumexp, targets, row_scale)
        grad_logits = None
        if ctx.needs_input_grad[0]:
            coefficients = targets.gradient_coefficients(row_scale)
            if inplace_backward:
                grad_logits = logits
            else:
                grad_logits = torch.empty((n_rows, n_classes), dtype=logits.dtype)
            library = _native_library(logits, targets)
            if library is not None:
                _native_gradient(library, logits, logsumexp, targets, coefficients, grad_logits)
                if inplace_backward:
                    # Written behind autograd's back: bump the version counter as torch's own
                    # in-place ops do, so nodes that saved the logits refuse to use them.
                    torch.autograd.graph.increment_version(logits)
                return grad_logits, grad_target, None, None, None, None, None, None
            same_dtype = logits.dtype == logsumexp.dtype
            for start, stop in _row_blocks(n_rows, block_rows):
                grad_block = grad_logits[start:stop]
                work = (
                    grad_block
                    if same_dtype
                    else torch.empty(grad_block.shape, dtype=logsumexp.dtype)
                )
                targets.write_block_gradient(
                    logits[start:stop], logsumexp, coefficients, start, stop, work
                )
                if not same_dtype:
                    grad_block.copy_(work)
        return grad_logits, grad_target, None, None, None, None, None, None


def _probability_target_gradient(
    logits: Tensor, logsumexp: Tensor, targets: _RowTargets, row_scale: Tensor
) -> Tensor:
    """∂output/∂t_c = −(1−ε)·s_n·w_c·(x_c − L_n) for a probability target, (M, C)."""
    row_scale = row_scale.to(logsumexp.dtype).expand(targets.n_rows)
    factor = (targets.label_smoothing - 1.0) * row_scale
    grad_target = torch.empty(logits.shape, dtype=targets.target.dtype)
    for start, stop in _row_blocks(targets.n_rows, max(1, _BLOCK_ELEMENTS // logits.shape[1])):
        block = logits[start:stop].to(logsumexp.dtype) - logsumexp[start:stop].unsqueeze(1)
        block.mul_(factor[start:stop].unsqueeze(1))
        if targets.class_weight is not None:
            block.mul_(targets.class_weight)
        grad_target[start:stop] = block
    return grad_target


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
            for a leaf tensor (the gradient would overwrite the parameter itself).

    Returns:
        The loss in ``logits``' dtype: (M,) for "none", else 0-d.

    Raises:
        ValueError: ``inplace_backward`` with ``logits`` a leaf that requires grad.
    """
    if inplace_backward and logits.is_leaf and logits.requires_grad:
        raise ValueError(
            "inplace_backward=True needs logits computed by an operation (e.g. a Linear layer): "
            "for a leaf tensor that requires grad the gradient would overwrite the tensor itself; "
            "pass inplace_backward=False"
        )
    if block_rows is None:
        block_rows = default_block_rows(logits.shape[0], logits.shape[1])
    return FusedCrossEntropyFunction.apply(
        logits,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        block_rows,
        inplace_backward,
    )


class _LinearGradients:
    """Accumulators of ∂output/∂hidden (N, H), ∂/∂weight (C, H) and ∂/∂bias (C,), each None when
    not wanted; weight and bias accumulate in the compute dtype."""

    def __init__(
        self,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        wants: tuple[bool, bool, bool],
        compute_dtype: torch.dtype,
    ) -> None:
        self.hidden = torch.empty_like(hidden) if wants[0] else None
        self.weight = torch.zeros(weight.shape, dtype=compute_dtype) if wants[1] else None
        self.bias = (
            torch.zeros(weight.shape[0], dtype=compute_dtype)
            if wants[2] and bias is not None
            else None
        )

    def add_block(
        self, grad_logits: Tensor, hidden_block: Tensor, weight: Tensor, start: int, stop: int
    ) -> None:
        """Fold one block's ∂output/∂logits (B, C), compute dtype, into the three gradients."""
        grad_in_dtype = grad_logits.to(hidden_block.dtype)
        if self.hidden is not None:
            torch.mm(grad_in_dtype, weight, out=self.hidden[start:stop])
        if self.weight is not None:
            if grad_in_dtype.dtype == self.weight.dtype:
                self.weight.addmm_(grad_in_dtype.t(), hidden_block)
            else:
                self.weight.add_(grad_in_dtype.t() @ hidden_block)
        if self.bias is not None:
            self.bias.add_(grad_logits.sum(0))

    def scaled(self, grad_output: Tensor, weight: Tensor, bias: Tensor | None):
        """(∂hidden, ∂weight, ∂bias) multiplied by a 0-d grad_output, in the inputs' dtypes."""
        results = []
        for gradient, like in (
            (self.hidden, self.hidden),
            (self.weight, weight),
            (self.bias, bias),
        ):
            if gradient is None:
                results.append(None)
            else:
                results.append((gradient * grad_output.to(gradient.dtype)).to(like.dtype))
        return tuple(results)


def _block_logits(
    hidden_block: Tensor, weight: Tensor, bias: Tensor | None, compute_dtype: torch.dtype
) -> Tensor:
    """hidden_block (B, H) @ weight (C, H)ᵀ + bias, in the inputs' dtype, then the compute dtype."""
    if bias is None:
        logits = hidden_block @ weight.t()
    else:
        logits = torch.addmm(bias, hidden_block, weight.t())
    return logits.to(compute_dtype)


class FusedLinearCrossEntropyFunction(torch.autograd.Function):
    """Cross entropy of ``hidden @ weight.T + bias`` without ever holding the N×C logits.

    With a scalar loss ('mean'/'sum') the gradients are accumulated during the forward, one block
    of logits at a time (3 matrix products per block, like torch's linear forward and backward),
    and the backward only scales them by grad_output. With 'none' (a per-row grad_output) the
    backward recomputes each block's logits instead (4 products). See
    :func:`linear_cross_entropy`.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        target: Tensor,
        class_weight: Tensor | None,
        ignore_index: int,
        reduction: str,
        label_smoothing: float,
        block_rows: int,
        gradients_in_forward: tuple[bool, bool, bool],
    ) -> Tensor:
        n_rows = hidden.shape[0]
        n_classes = weight.shape[0]
        dtype = _compute_dtype(hidden.dtype)
        targets = _RowTargets(
            target, class_weight, ignore_index, label_smoothing, n_classes, dtype, block_rows
        )
        denominator = targets.mean_denominator()
        accumulate = any(gradients_in_forward)
        if accumulate:
            unit_scale = torch.ones((), dtype=dtype)
            row_scale = unit_scale / denominator if reduction == "mean" else unit_scale
            coefficients = targets.gradient_coefficients(row_scale)
            gradients = _LinearGradients(hidden, weight, bias, gradients_in_forward, dtype)
        logsumexp = torch.empty(n_rows, dtype=dtype)
        target_logit = torch.empty(n_rows, dtype=dtype)
        weighted_logit_sum = torch.empty(n_rows, dtype=dtype)
        scratch = torch.empty(min(block_rows, n_rows), n_classes, dtype=dtype)
        for start, stop in _row_blocks(n_rows, block_rows):
            hidden_block = hidden[start:stop]
            logits = _block_logits(hidden_block, weight, bias, dtype)
            targets.block_statistics(
                logits, start, stop, scratch, logsumexp, target_logit, weighted_logit_sum
            )
            if accumulate:
                targets.write_block_gradient(logits, logsumexp, coefficients, start, stop, logits)
                gradients.add_block(logits, hidden_block, weight, start, stop)
        per_row_loss = targets.per_row_loss(logsumexp, target_logit, weighted_logit_sum)
        ctx.save_for_backward(hidden, weight, bias, target, class_weight, logsumexp, denominator)
        ctx.options = (ignore_index, reduction, label_smoothing, block_rows)
        ctx.gradients = gradients if accumulate else None
        return _reduce(per_row_loss, reduction, denominator).to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        hidden, weight, bias, target, class_weight, logsumexp, denominator = ctx.saved_tensors
        ignore_index, reduction, label_smoothing, block_rows = ctx.options
        unused = (None,) * 7
        if ctx.gradients is not None:
            return (*ctx.gradients.scaled(grad_output, weight, bias), *unused)
        dtype = logsumexp.dtype
        targets = _RowTargets(
            target, class_weight, ignore_index, label_smoothing, weight.shape[0], dtype, block_rows
        )
        coefficients = targets.gradient_coefficients(
            _row_scale(grad_output, reduction, denominator)
        )
        wants = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        gradients = _LinearGradients(hidden, weight, bias, wants, dtype)
        for start, stop in _row_blocks(hidden.shape[0], block_rows):
            hidden_block = hidden[start:stop]
            logits = _block_logits(hidden_block, weight, bias, dtype)
            targets.write_block_gradient(logits, logsumexp, coefficients, start, stop, logits)
            gradients.add_block(logits, hidden_block, weight, start, stop)
        return (*gradients.scaled(torch.ones((), dtype=dtype), weight, bias), *unused)


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    bias: Tensor | None = None,
    class_weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    block_rows: int | None = None,
) -> Tensor:
    """``cross_entropy(hidden @ weight.T + bias, target, ...)`` without the N×C logits in memory.

    Args:
        hidden: (N, H) float features (fp32, fp64, bf16), already validated.
        weight: (C, H) linear weight, ``hidden``'s dtype.
        target: (N,) int64 class indices or (N, C) float probabilities.
        bias: (C,) or None.
        class_weight, ignore_index, reduction, label_smoothing: as in :func:`cross_entropy`.
        block_rows: rows of logits made at a time; default :func:`default_linear_block_rows`.

    Returns:
        The loss in ``hidden``'s dtype: (N,) for "none", else 0-d. Gradients flow to ``hidden``,
        ``weight`` and ``bias`` (accumulated in fp32 for bf16 inputs); peak extra memory is one
        block of logits plus the gradients themselves.
    """
    if block_rows is None:
        block_rows = default_linear_block_rows(hidden.shape[0], weight.shape[0])
    wants = tuple(tensor is not None and tensor.requires_grad for tensor in (hidden, weight, bias))
    grad_enabled = torch.is_grad_enabled() and any(wants)
    in_forward = wants if grad_enabled and reduction != "none" else (False, False, False)
    return FusedLinearCrossEntropyFunction.apply(
        hidden,
        weight,
        bias,
        target,
        class_weight,
        ignore_index,
        reduction,
        label_smoothing,
        block_rows,
        in_forward,
    )
