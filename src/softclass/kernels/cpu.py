"""Fused cross entropy (and linear + cross entropy) on CPU: compiled row loops, torch-ops fallback.

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
  it: one read of the logits in all.
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

Operators: ``softclass::cross_entropy``, ``softclass::linear_cross_entropy``, ``softclass::softmax``
(each with a ``_backward`` op), ``softclass::scale_``, registered with ``torch.library.custom_op``:
a fake implementation (shapes and dtypes for FakeTensor, meta, torch.compile and torch.export), an
autograd formula (the backward op; differentiable torch ops under ``create_graph`` for double
backward) and a vmap rule (softmax folds the batch into its rows; the losses run per batch entry,
the documented fallback — ``softclass.functional`` sends torch.func transforms to torch ops
anyway). Only the real implementations touch data pointers. Plain eager calls on real tensors
(:func:`is_eager`) enter the same implementations through autograd Functions, without the
dispatcher's per-call cost.

Every kernel function takes already-validated 2-D inputs (classes last, any strides) and returns
exactly what ``torch.nn.functional.cross_entropy`` returns for that 2-D call. Row blocks are slices,
so no flat index is ever computed: tensors past 2³¹ elements are addressed by torch's own 64-bit
strided indexing.
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from softclass.kernels import native

__all__ = [
    "FusedCrossEntropyFunction",
    "TargetOutOfBoundsError",
    "cross_entropy",
    "default_block_rows",
    "default_linear_block_rows",
    "is_eager",
    "linear_cross_entropy",
    "prefers_fused",
    "softmax",
    "softmax_reference",
    "softmax_vjp",
]

# How the constants below were chosen: by hand, from one-off timings on the reference machine
# (2-core AMD EPYC, shared with other jobs, so every figure carries ±30% noise); the scripts are
# not part of the repository, the numbers are quoted here. Re-check them with `softclass bench`
# (or `python -m benchmarks.cross_entropy`) after changing a path.
#
# Elements of one row block of the torch-ops path (the compiled path needs no blocks: it streams
# whole rows per call). Fallback path, 1024×32768 fp32, forward+backward: 2^16 elements 136 ms,
# 2^18 110 ms, 2^20 102 ms, 2^22 108 ms, 2^24 130 ms (Python overhead per block below, cache
# misses above).
_BLOCK_ELEMENTS = 1 << 20
# Logit elements of one block of the fused linear + cross entropy (1024 rows at C = 32768: a
# 128 MiB block, so that the peak, with the 64 MiB weight gradient, stays under 1/8 of torch's
# ~3 GiB). N=2048, H=512, C=32768 fp32: 256-row blocks 3.1–4.1 s, 1024-row 1.37–1.39 s, 2048-row
# 1.36–2.05 s, torch 1.64–2.16 s (the weight-gradient product's inner size is the block's rows).
_LINEAR_BLOCK_ELEMENTS = 1 << 25
# Smallest logits (elements) for which functional.cross_entropy takes the fused torch-ops path
# (probability targets, fp16, non-unit class stride, no compiler). Probability targets, fp32:
# 128×128 plain 168 µs / fused 172 µs, 64×100 133 / 249, 1024×100 1218 / 637.
_FUSED_MIN_ELEMENTS = 1 << 14
# The same for the compiled path (class indices, fp32/bf16/fp64): it beat the plain path at every
# measured size, from 256×3 (fp32 84 vs 223 µs, bf16 90 vs 217, fp64 45 vs 131) up.
_NATIVE_FUSED_MIN_ELEMENTS = 0
_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float64, torch.float16)


def prefers_fused(logits: Tensor, target: Tensor) -> bool:
    """Whether :func:`cross_entropy` beats the plain log_softmax + gather path for these validated
    (M, C) logits and (M,) or (M, C) target: always where the compiled loops apply, else from
    ``_FUSED_MIN_ELEMENTS`` logits on (measurements beside the constants). Decided from shapes
    and dtypes only (under torch.compile the compiled loops are assumed available: the operator
    falls back to torch ops by itself where they are not)."""
    if _native_applicable(logits, target) and (
        torch.compiler.is_compiling() or native.library() is not None
    ):
        return logits.numel() >= _NATIVE_FUSED_MIN_ELEMENTS
    return logits.numel() >= _FUSED_MIN_ELEMENTS and logits.dtype in _FUSED_DTYPES


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
    :func:`softclass.functional.cross_entropy` re-raises it with the position in the caller's
    target (traced calls keep this message, which names the row)."""

    def __init__(self, row: int, value: int, n_classes: int, ignore_index: int) -> None:
        super().__init__(
            out_of_bounds_message("cross_entropy", value, row, n_classes, ignore_index)
        )
        self.row = row
        self.value = value


def _native_applicable(logits: Tensor, target: Tensor) -> bool:
    """Whether the compiled loops compute this (M, C) problem: class-index targets and
    fp32/bf16/fp64 logits (any class stride: :func:`cross_entropy` makes other strides
    contiguous first)."""
    return not target.is_floating_point() and logits.dtype in native.SUPPORTED_DTYPES


def _native_library(logits: Tensor, target: Tensor):
    """The compiled kernels where they apply, else None: CPU logits (M, C) of fp32/bf16/fp64 with
    class stride 1, class-index targets, and a library that could be built. Called by the
    operators' real implementations only (real tensors, never during tracing)."""
    if not _native_applicable(logits, target) or not logits.is_cpu:
        return None
    if logits.shape[1] > 1 and logits.stride(1) != 1:
        return None
    return native.library()


_FORWARD_NAMES, _FINISH_NAMES, _BACKWARD_NAMES, _SCALE_NAMES, _KEPT_WEIGHT_SUM_NAMES = (
    {dtype: f"ce_{step}_{suffix}" for dtype, suffix in native.SUPPORTED_DTYPES.items()}
    for step in ("forward", "finish", "backward", "scale", "kept_weight_sum")
)


def _real_weight(weight: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Class weights as the compiled loops read them: contiguous, in the compute dtype."""
    return None if weight is None else weight.to(_compute_dtype(dtype)).contiguous()


def _native_forward(
    library,
    logits: Tensor,
    target: Tensor,
    real_weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    logsumexp: Tensor,
    row_loss: Tensor | None,
    loss: Tensor | None,
    mean: bool,
    grad: Tensor | None = None,
    grad_denominator: Tensor | None = None,
) -> Tensor:
    """One compiled pass over the logits (M, C): L into ``logsumexp`` (M,) (compute dtype), loss_n
    into ``row_loss`` (M,) (logits' dtype) when given, and the reduced loss (Σ loss_n, divided by
    Σ w_y when ``mean``) into the 0-d ``loss`` when given. With ``grad`` (M, C), class stride 1,
    also writes the gradient of the reduced loss for a unit grad_output (divided by
    ``grad_denominator[0]`` when given), each row while it is still in cache.

    Returns the reduction state, (1 + 2R,) fp64 for R row ranges: [0] = Σ w_y over kept rows
    (written only with ``loss``; the 'mean' denominator of the backward), then per range
    (Σ loss_n, Σ w_y) for :func:`_native_finish`.

    Raises:
        TargetOutOfBoundsError: a kept target outside [0, C) (the first one in row order).
    """
    n_rows, n_classes = logits.shape
    ranges = native.row_ranges(n_rows, n_classes)
    state = torch.empty(1 + 2 * len(ranges), dtype=torch.float64)
    forward = getattr(library, _FORWARD_NAMES[logits.dtype])
    state_address = state.data_ptr()
    arguments = (
        logits.data_ptr(),
        logits.stride(0),
        n_classes,
        target.data_ptr(),
        target.stride(0),
        ignore_index,
        None if real_weight is None else real_weight.data_ptr(),
        label_smoothing,
        logsumexp.data_ptr(),
        None if row_loss is None else row_loss.data_ptr(),
        0 if row_loss is None else row_loss.stride(0),
    )
    gradient_arguments = (
        None if grad is None else grad.data_ptr(),
        0 if grad is None else grad.stride(0),
        None if grad_denominator is None else grad_denominator.data_ptr(),
    )
    if len(ranges) == 1:
        first_bad = forward(
            *arguments[:3],
            0,
            n_rows,
            *arguments[3:],
            state_address + 8,
            mean,
            None if loss is None else loss.data_ptr(),
            state_address,
            *gradient_arguments,
        )
    else:
        bad_rows = native.run_ranges(
            lambda index, begin, end: forward(
                *arguments[:3],
                begin,
                end,
                *arguments[3:],
                state_address + 8 + 16 * index,
                mean,
                None,
                None,
                *gradient_arguments,
            ),
            ranges,
        )
        first_bad = min((row for row in bad_rows if row >= 0), default=-1)
        if first_bad < 0 and loss is not None:
            _native_finish(library, state, mean, loss)
    if first_bad >= 0:
        raise TargetOutOfBoundsError(first_bad, int(target[first_bad]), n_classes, ignore_index)
    return state


def _native_finish(library, state: Tensor, mean: bool, loss: Tensor) -> None:
    """Reduce the per-range sums of a reduction state (``_native_forward``'s, or several
    concatenated after one leading slot): write the 0-d ``loss`` in its dtype and Σ w_y into
    ``state[0]``."""
    finish = getattr(library, _FINISH_NAMES[loss.dtype])
    address = state.data_ptr()
    finish(address + 8, (state.numel() - 1) // 2, mean, loss.data_ptr(), address)


def _native_gradient(
    library,
    logits: Tensor,
    target: Tensor,
    real_weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    logsumexp: Tensor,
    grad_output: Tensor,
    denominator: Tensor | None,
    grad_logits: Tensor,
) -> None:
    """Write ∂output/∂logits (M, C) into ``grad_logits`` (class stride 1; may be ``logits``).

    ``grad_output``: 0-d or (M,) ∂output/∂loss_n in the compute dtype; ``denominator``: fp64
    tensor whose first element Σ w_y divides it ('mean'), or None.
    """
    n_rows, n_classes = logits.shape
    backward = getattr(library, _BACKWARD_NAMES[logits.dtype])
    head = (logits.data_ptr(), logits.stride(0), n_classes)
    tail = (
        target.data_ptr(),
        target.stride(0),
        ignore_index,
        None if real_weight is None else real_weight.data_ptr(),
        label_smoothing,
        logsumexp.data_ptr(),
        grad_output.data_ptr(),
        grad_output.stride(0) if grad_output.dim() else 0,
        None if denominator is None else denominator.data_ptr(),
        grad_logits.data_ptr(),
        grad_logits.stride(0),
    )
    ranges = native.row_ranges(n_rows, n_classes)
    if len(ranges) == 1:
        backward(*head, 0, n_rows, *tail)
        return
    native.run_ranges(lambda index, begin, end: backward(*head, begin, end, *tail), ranges)


def _native_kept_weight_sum(
    library, target: Tensor, real_weight: Tensor | None, ignore_index: int, n_classes: int, dtype
) -> Tensor:
    """Σ w_y over kept rows, (1,) fp64, from the compiled loop (the 'mean' denominator)."""
    total = torch.empty(1, dtype=torch.float64)
    getattr(library, _KEPT_WEIGHT_SUM_NAMES[dtype])(
        target.data_ptr(),
        target.stride(0),
        target.shape[0],
        ignore_index,
        n_classes,
        None if real_weight is None else real_weight.data_ptr(),
        total.data_ptr(),
    )
    return total


def _native_scale(library, grad: Tensor, factor: Tensor) -> None:
    """Multiply ``grad`` (M, C), class stride 1, in place by the 0-d ``factor`` (compute dtype);
    the compiled loop returns at once when it is 1."""
    n_rows, n_classes = grad.shape
    scale = getattr(library, _SCALE_NAMES[grad.dtype])
    arguments = (grad.data_ptr(), grad.stride(0), n_classes)
    native.run_ranges(
        lambda index, begin, end: scale(*arguments, begin, end, factor.data_ptr()),
        native.row_ranges(n_rows, n_classes),
    )


def _statistics_pass(
    logits: Tensor, targets: _RowTargets, block_rows: int
) -> tuple[Tensor, Tensor]:
    """Stream over the logits (M, C) once in torch ops: return (L (M,), loss_n (M,)) in the
    compute dtype."""
    n_rows, n_classes = logits.shape
    dtype = targets.compute_dtype
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


def _first_bad_target(target: Tensor, n_classes: int, ignore_index: int) -> None:
    """Raise :class:`TargetOutOfBoundsError` for the first kept target outside [0, C) of the
    (M,) class indices (the torch-ops path's counterpart of the compiled loops' check)."""
    bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise TargetOutOfBoundsError(row, int(target[row]), n_classes, ignore_index)


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
    n_rows, n_classes = logits.shape
    compute_dtype = _compute_dtype(logits.dtype)
    library = _native_library(logits, target)
    no_gradient = logits.new_empty((0,))
    if library is not None:
        real_weight = _real_weight(weight, logits.dtype)
        per_row = reduction == "none"
        logsumexp = torch.empty(n_rows, dtype=compute_dtype)
        loss = torch.empty((n_rows,) if per_row else (), dtype=logits.dtype)
        # A large scalar loss gets its gradient (for grad_output 1) in this same pass over the
        # logits; the backward then only scales it (one read of the logits in all).
        grad = grad_denominator = None
        if gradient_in_forward:
            grad = torch.empty(logits.shape, dtype=logits.dtype)
            if reduction == "mean":
                grad_denominator = _native_kept_weight_sum(
                    library, target, real_weight, ignore_index, n_classes, logits.dtype
                )
        state = _native_forward(
            library,
            logits,
            target,
            real_weight,
            ignore_index,
            label_smoothing,
            logsumexp,
            loss if per_row else None,
            None if per_row else loss,
            reduction == "mean",
            grad,
            grad_denominator,
        )
        denominator = torch.zeros(1, dtype=torch.float64) if per_row else state[:1].clone()
        return loss, logsumexp, denominator, no_gradient if grad is None else grad
    targets = _RowTargets(
        target, weight, ignore_index, label_smoothing, n_classes, compute_dtype, block_rows
    )
    if not targets.is_probability:
        _first_bad_target(target, n_classes, ignore_index)
    logsumexp, per_row_loss = _statistics_pass(logits, targets, block_rows)
    denominator = targets.mean_denominator()
    loss = _reduce(per_row_loss, reduction, denominator).to(logits.dtype)
    denominator = denominator.to(torch.float64).reshape(1)
    if not gradient_in_forward:
        return loss, logsumexp, denominator, no_gradient
    unit = torch.ones((), dtype=compute_dtype)
    grad, _ = _cross_entropy_backward_impl(
        unit,
        logits,
        target,
        weight,
        logsumexp,
        denominator,
        ignore_index,
        reduction,
        label_smoothing,
        block_rows,
        True,
        False,
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
    library = _native_library(logits, target)
    grad_logits = None
    if library is not None:
        if wants_logits:
            grad_logits = torch.empty(logits.shape, dtype=logits.dtype) if out is None else out
            _native_gradient(
                library,
                logits,
                target,
                _real_weight(weight, logits.dtype),
                ignore_index,
                label_smoothing,
                logsumexp,
                grad_output.to(compute_dtype),
                denominator if reduction == "mean" else None,
                grad_logits,
            )
        return grad_logits, None
    targets = _RowTargets(
        target, weight, ignore_index, label_smoothing, n_classes, compute_dtype, block_rows
    )
    row_scale = _row_scale(grad_output, reduction, denominator.to(compute_dtype).reshape(()))
    grad_target = None
    if wants_target:
        grad_target = _probability_target_gradient(logits, logsumexp, targets, row_scale)
    if wants_logits:
        coefficients = targets.gradient_coefficients(row_scale)
        grad_logits = torch.empty(logits.shape, dtype=logits.dtype) if out is None else out
        same_dtype = logits.dtype == compute_dtype
        for start, stop in _row_blocks(n_rows, block_rows):
            grad_block = grad_logits[start:stop]
            work = grad_block if same_dtype else torch.empty(grad_block.shape, dtype=compute_dtype)
            targets.write_block_gradient(
                logits[start:stop], logsumexp, coefficients, start, stop, work
            )
            if not same_dtype:
                grad_block.copy_(work)
    return grad_logits, grad_target


def _unfused_loss(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> Tensor:
    """The cross entropy of (M, C) logits as a graph of differentiable torch ops (for double
    backward: the first backward under ``create_graph=True`` differentiates this)."""
    compute_dtype = _compute_dtype(logits.dtype)
    log_probs = torch.log_softmax(logits.to(compute_dtype), 1)
    n_rows, n_classes = logits.shape
    class_weight = None if weight is None else weight.to(compute_dtype)
    if target.is_floating_point():
        mass = target.to(compute_dtype) * (1.0 - label_smoothing) + label_smoothing / n_classes
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
    return _reduce(per_row_loss, reduction, denominator).to(logits.dtype)


def _differentiable_gradients(
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


def _vmap_by_loop(op):
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


@torch.library.custom_op("softclass::cross_entropy", mutates_args=(), device_types="cpu")
def _cross_entropy_op(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    block_rows: int,
    gradient_in_forward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss, L, denominator, gradient): see :func:`_cross_entropy_forward_impl`."""
    return _cross_entropy_forward_impl(
        logits,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        block_rows,
        gradient_in_forward,
    )


@_cross_entropy_op.register_fake
def _cross_entropy_fake(
    logits,
    target,
    weight,
    ignore_index,
    reduction,
    label_smoothing,
    block_rows,
    gradient_in_forward,
):
    n_rows = logits.shape[0]
    return (
        logits.new_empty((n_rows,) if reduction == "none" else ()),
        logits.new_empty((n_rows,), dtype=_compute_dtype(logits.dtype)),
        logits.new_empty((1,), dtype=torch.float64),
        logits.new_empty(logits.shape if gradient_in_forward else (0,)),
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
        grad_output,
        logits,
        target,
        weight,
        logsumexp,
        denominator,
        ignore_index,
        reduction,
        label_smoothing,
        block_rows,
        True,
        wants_target,
    )
    return grad_logits, target.new_empty((0,)) if grad_target is None else grad_target


@_cross_entropy_backward_op.register_fake
def _cross_entropy_backward_fake(
    grad_output,
    logits,
    target,
    weight,
    logsumexp,
    denominator,
    ignore_index,
    reduction,
    label_smoothing,
    block_rows,
    wants_target,
):
    return torch.empty_like(logits), target.new_empty(target.shape if wants_target else (0,))


def _scale_impl(gradient: Tensor, factor: Tensor) -> None:
    """Multiply ``gradient`` (M, C) in place by the 0-d ``factor`` (no-op for 1, compiled)."""
    compute_factor = factor.to(_compute_dtype(gradient.dtype))
    library = native.library() if gradient.dtype in native.SUPPORTED_DTYPES else None
    if library is not None and gradient.dim() == 2 and gradient.is_contiguous():
        _native_scale(library, gradient, compute_factor)
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


def _saved_logits(ctx) -> Tensor:
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


def _cross_entropy_gradients(ctx, grad_loss: Tensor, direct: bool):
    """(∂/∂logits, ∂/∂target) for the op's registered backward (``direct=False``: through the
    backward ops, so a trace records them) and for the eager Function (``direct=True``: the
    implementations themselves, without the dispatcher's per-call cost)."""
    if grad_loss is None:  # no gradient reached the loss (grads are not materialised)
        return None, None
    target, weight, logsumexp, denominator = ctx.saved_tensors
    ignore_index, reduction, label_smoothing, block_rows = ctx.options
    wants_logits, wants_target = ctx.needs_input_grad[:2]
    if torch.is_grad_enabled():
        # create_graph=True: the gradient must itself be differentiable.
        return _differentiable_gradients(
            (wants_logits, wants_target),
            (_saved_logits(ctx), target),
            lambda logits, target: _unfused_loss(
                logits, target, weight, ignore_index, reduction, label_smoothing
            ),
            grad_loss,
        )
    if ctx.gradient is not None and not wants_target:
        if grad_loss.dim():
            # 'none': the forward made each row's gradient for a unit grad_output; kept, so that
            # a second backward gives exactly the same numbers.
            return ctx.gradient * grad_loss.to(logsumexp.dtype).unsqueeze(1), None
        # A scalar loss: its gradient, made by the forward for grad_output 1, is scaled in place
        # and handed over once; a second backward (retain_graph) makes it again below.
        gradient, ctx.gradient = ctx.gradient, None
        if direct:
            _scale_impl(gradient, grad_loss)
        else:
            torch.ops.softclass.scale_(gradient, grad_loss)
        return gradient, None
    logits = _saved_logits(ctx)
    arguments = (
        grad_loss,
        logits,
        target,
        weight,
        logsumexp,
        denominator,
        ignore_index,
        reduction,
        label_smoothing,
        block_rows,
    )
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
_cross_entropy_op.register_vmap(_vmap_by_loop(_cross_entropy_op))
_cross_entropy_backward_op.register_vmap(_vmap_by_loop(_cross_entropy_backward_op))


class FusedCrossEntropyFunction(torch.autograd.Function):
    """The eager entry of the fused cross entropy: the same implementation, setup and backward
    as the registered ``softclass::cross_entropy``, without the dispatcher's per-call cost
    (measured at 256×3, one thread: ~170 µs of CPU per forward+backward through the op).
    Taken only where nothing needs to see an op (:func:`is_eager`); also the home of
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
    if logits.shape[1] > 1 and logits.stride(1) != 1 and _native_applicable(logits, target):
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
    arguments = (
        logits,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        block_rows,
        _gradient_in_forward(logits, target) and not inplace_backward,
    )
    if inplace_backward or is_eager(logits, target, weight):
        return FusedCrossEntropyFunction.apply(*arguments, inplace_backward)[0]
    return torch.ops.softclass.cross_entropy(*arguments)[0]


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
            self.bias.add_(grad_logits.sum(0, dtype=self.bias.dtype))

    def as_outputs(self, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The three accumulators as op outputs: an empty (0,) for each one not wanted."""
        return tuple(
            hidden.new_empty((0,)) if gradient is None else gradient
            for gradient in (self.hidden, self.weight, self.bias)
        )

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
    hidden_block: Tensor, weight: Tensor, bias: Tensor | None, buffer: Tensor
) -> Tensor:
    """hidden_block (B, H) @ weight (C, H)ᵀ + bias, written into the first B rows of ``buffer``
    (≥ B, C) in the inputs' dtype (one block buffer for all blocks: no second block is ever
    allocated while the previous one is alive). Returns that (B, C) slice."""
    out = buffer[: hidden_block.shape[0]]
    if bias is None:
        return torch.mm(hidden_block, weight.t(), out=out)
    return torch.addmm(bias, hidden_block, weight.t(), out=out)


def _block_buffer(hidden: Tensor, n_classes: int, block_rows: int) -> Tensor:
    """The (min(block_rows, N), C) logits buffer of :func:`_block_logits`, ``hidden``'s dtype."""
    return torch.empty((min(block_rows, hidden.shape[0]), n_classes), dtype=hidden.dtype)


def _kept_weight_sum(target: Tensor, class_weight: Tensor | None, ignore_index: int) -> Tensor:
    """Σ w_y over rows whose class-index target is kept: (1,) fp64 (the 'mean' denominator)."""
    kept = target != ignore_index
    if class_weight is None:
        return kept.sum(dtype=torch.float64).reshape(1)
    safe_target = torch.where(kept, target, 0)
    return (class_weight.double()[safe_target] * kept).sum().reshape(1)


class _NativeLinearBlocks:
    """The compiled row loops over blocks of logits of a linear + cross entropy (class indices).

    Holds what every block shares: the loops, the class weights as they read them, the options,
    L (N,) in the compute dtype (filled by :meth:`forward`, read by :meth:`gradient`) and the
    per-block reduction sums.
    """

    def __init__(
        self,
        library,
        logsumexp: Tensor,
        target: Tensor,
        class_weight: Tensor | None,
        ignore_index: int,
        label_smoothing: float,
        dtype: torch.dtype,
    ) -> None:
        self.library = library
        self.logsumexp = logsumexp
        self.target = target
        self.real_weight = _real_weight(class_weight, dtype)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.sums: list[Tensor] = []

    def forward(self, logits: Tensor, start: int, stop: int, row_loss: Tensor | None) -> None:
        """L and (when ``row_loss`` (N,) is given) loss_n of rows [start, stop) from their
        logits (B, C); the block's sums are kept for :meth:`finish`."""
        block_loss = None if row_loss is None else row_loss[start:stop]
        state = _native_forward(
            self.library,
            logits,
            self.target[start:stop],
            self.real_weight,
            self.ignore_index,
            self.label_smoothing,
            self.logsumexp[start:stop],
            block_loss,
            None,
            False,
        )
        self.sums.append(state[1:])

    def gradient(
        self,
        logits: Tensor,
        start: int,
        stop: int,
        grad_output: Tensor,
        denominator: Tensor | None,
    ) -> None:
        """Overwrite the block's logits (B, C) with ∂output/∂logits; ``grad_output`` is 0-d or
        (N,) in the compute dtype, ``denominator`` (1,) fp64 for 'mean' else None."""
        block_grad_output = grad_output[start:stop] if grad_output.dim() else grad_output
        _native_gradient(
            self.library,
            logits,
            self.target[start:stop],
            self.real_weight,
            self.ignore_index,
            self.label_smoothing,
            self.logsumexp[start:stop],
            block_grad_output,
            denominator,
            logits,
        )

    def finish(self, reduction: str, dtype: torch.dtype) -> Tensor:
        """The 0-d reduced loss in ``dtype`` from the blocks' sums."""
        loss = torch.empty((), dtype=dtype)
        state = torch.cat([torch.zeros(1, dtype=torch.float64), *self.sums])
        _native_finish(self.library, state, reduction == "mean", loss)
        return loss


def _linear_forward_impl(
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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The real forward of ``softclass::linear_cross_entropy``.

    Returns (loss, L (N,) compute dtype, ∂/∂hidden (N, H) hidden's dtype, ∂/∂weight (C, H) and
    ∂/∂bias (C,) in the compute dtype), each gradient for grad_output 1 when asked for in
    ``gradients_in_forward`` (a scalar loss), else an empty (0,).
    """
    n_rows = hidden.shape[0]
    n_classes = weight.shape[0]
    dtype = _compute_dtype(hidden.dtype)
    accumulate = any(gradients_in_forward)
    gradients = _LinearGradients(hidden, weight, bias, gradients_in_forward, dtype)
    # An empty (0, C) tensor stands for every block of logits: same dtype, device, layout.
    library = _native_library(hidden.new_empty((0, n_classes)), target)
    buffer = _block_buffer(hidden, n_classes, block_rows)
    if library is not None:
        blocks = _NativeLinearBlocks(
            library,
            torch.empty(n_rows, dtype=dtype),
            target,
            class_weight,
            ignore_index,
            label_smoothing,
            hidden.dtype,
        )
        row_loss = torch.empty(n_rows, dtype=hidden.dtype) if reduction == "none" else None
        if accumulate:
            unit = torch.ones((), dtype=dtype)
            denominator = (
                _kept_weight_sum(target, class_weight, ignore_index)
                if reduction == "mean"
                else None
            )
        for start, stop in _row_blocks(n_rows, block_rows):
            hidden_block = hidden[start:stop]
            logits = _block_logits(hidden_block, weight, bias, buffer)
            blocks.forward(logits, start, stop, row_loss)
            if accumulate:
                blocks.gradient(logits, start, stop, unit, denominator)
                gradients.add_block(logits, hidden_block, weight, start, stop)
        loss = row_loss if row_loss is not None else blocks.finish(reduction, hidden.dtype)
        return loss, blocks.logsumexp, *gradients.as_outputs(hidden)
    targets = _RowTargets(
        target, class_weight, ignore_index, label_smoothing, n_classes, dtype, block_rows
    )
    if not targets.is_probability:
        _first_bad_target(target, n_classes, ignore_index)
    denominator = targets.mean_denominator()
    if accumulate:
        unit_scale = torch.ones((), dtype=dtype)
        row_scale = unit_scale / denominator if reduction == "mean" else unit_scale
        coefficients = targets.gradient_coefficients(row_scale)
    logsumexp = torch.empty(n_rows, dtype=dtype)
    target_logit = torch.empty(n_rows, dtype=dtype)
    weighted_logit_sum = torch.empty(n_rows, dtype=dtype)
    scratch = torch.empty(min(block_rows, n_rows), n_classes, dtype=dtype)
    for start, stop in _row_blocks(n_rows, block_rows):
        hidden_block = hidden[start:stop]
        logits = _block_logits(hidden_block, weight, bias, buffer).to(dtype)
        targets.block_statistics(
            logits, start, stop, scratch, logsumexp, target_logit, weighted_logit_sum
        )
        if accumulate:
            targets.write_block_gradient(logits, logsumexp, coefficients, start, stop, logits)
            gradients.add_block(logits, hidden_block, weight, start, stop)
    per_row_loss = targets.per_row_loss(logsumexp, target_logit, weighted_logit_sum)
    loss = _reduce(per_row_loss, reduction, denominator).to(hidden.dtype)
    return loss, logsumexp, *gradients.as_outputs(hidden)


def _linear_backward_impl(
    grad_output: Tensor,
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    class_weight: Tensor | None,
    logsumexp: Tensor,
    ignore_index: int,
    label_smoothing: float,
    block_rows: int,
    wants: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(∂hidden, ∂weight, ∂bias) in the inputs' dtypes for a per-row ``grad_output`` (N,) (the
    'none' loss; a scalar loss accumulates its gradients in the forward): each block's logits
    are made again."""
    dtype = logsumexp.dtype
    gradients = _LinearGradients(hidden, weight, bias, wants, dtype)
    row_grad_output = grad_output.to(dtype)
    library = _native_library(hidden.new_empty((0, weight.shape[0])), target)
    buffer = _block_buffer(hidden, weight.shape[0], block_rows)
    if library is not None:
        blocks = _NativeLinearBlocks(
            library, logsumexp, target, class_weight, ignore_index, label_smoothing, hidden.dtype
        )
        for start, stop in _row_blocks(hidden.shape[0], block_rows):
            hidden_block = hidden[start:stop]
            logits = _block_logits(hidden_block, weight, bias, buffer)
            blocks.gradient(logits, start, stop, row_grad_output, None)
            gradients.add_block(logits, hidden_block, weight, start, stop)
    else:
        targets = _RowTargets(
            target, class_weight, ignore_index, label_smoothing, weight.shape[0], dtype, block_rows
        )
        coefficients = targets.gradient_coefficients(row_grad_output)
        for start, stop in _row_blocks(hidden.shape[0], block_rows):
            hidden_block = hidden[start:stop]
            logits = _block_logits(hidden_block, weight, bias, buffer).to(dtype)
            targets.write_block_gradient(logits, logsumexp, coefficients, start, stop, logits)
            gradients.add_block(logits, hidden_block, weight, start, stop)
    return gradients.scaled(torch.ones((), dtype=dtype), weight, bias)


@torch.library.custom_op("softclass::linear_cross_entropy", mutates_args=(), device_types="cpu")
def _linear_cross_entropy_op(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    class_weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    block_rows: int,
    hidden_grad_in_forward: bool,
    weight_grad_in_forward: bool,
    bias_grad_in_forward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(loss, L, ∂hidden, ∂weight, ∂bias): see :func:`_linear_forward_impl`."""
    return _linear_forward_impl(
        hidden,
        weight,
        bias,
        target,
        class_weight,
        ignore_index,
        reduction,
        label_smoothing,
        block_rows,
        (hidden_grad_in_forward, weight_grad_in_forward, bias_grad_in_forward),
    )


@_linear_cross_entropy_op.register_fake
def _linear_cross_entropy_fake(
    hidden,
    weight,
    bias,
    target,
    class_weight,
    ignore_index,
    reduction,
    label_smoothing,
    block_rows,
    hidden_grad_in_forward,
    weight_grad_in_forward,
    bias_grad_in_forward,
):
    dtype = _compute_dtype(hidden.dtype)
    n_rows = hidden.shape[0]
    empty = (0,)
    return (
        hidden.new_empty((n_rows,) if reduction == "none" else ()),
        hidden.new_empty((n_rows,), dtype=dtype),
        hidden.new_empty(hidden.shape if hidden_grad_in_forward else empty),
        hidden.new_empty(weight.shape if weight_grad_in_forward else empty, dtype=dtype),
        hidden.new_empty(
            weight.shape[:1] if bias_grad_in_forward and bias is not None else empty, dtype=dtype
        ),
    )


@torch.library.custom_op(
    "softclass::linear_cross_entropy_backward", mutates_args=(), device_types="cpu"
)
def _linear_cross_entropy_backward_op(
    grad_output: Tensor,
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    class_weight: Tensor | None,
    logsumexp: Tensor,
    ignore_index: int,
    label_smoothing: float,
    block_rows: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """(∂hidden, ∂weight, ∂bias, the last empty (0,) without a bias) of a 'none' loss."""
    grads = _linear_backward_impl(
        grad_output,
        hidden,
        weight,
        bias,
        target,
        class_weight,
        logsumexp,
        ignore_index,
        label_smoothing,
        block_rows,
        (True, True, bias is not None),
    )
    return grads[0], grads[1], hidden.new_empty((0,)) if grads[2] is None else grads[2]


@_linear_cross_entropy_backward_op.register_fake
def _linear_cross_entropy_backward_fake(
    grad_output,
    hidden,
    weight,
    bias,
    target,
    class_weight,
    logsumexp,
    ignore_index,
    label_smoothing,
    block_rows,
):
    return (
        torch.empty_like(hidden),
        torch.empty_like(weight),
        hidden.new_empty((0,)) if bias is None else torch.empty_like(bias),
    )


def _linear_setup_context(ctx, inputs, output) -> None:
    hidden, weight, bias, target, class_weight, ignore_index, reduction, label_smoothing = inputs[
        :8
    ]
    block_rows, *in_forward = inputs[8:]
    _, logsumexp, *gradients = output
    ctx.mark_non_differentiable(logsumexp, *gradients)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(hidden, weight, bias, target, class_weight, logsumexp, *gradients)
    ctx.options = (ignore_index, reduction, label_smoothing, block_rows, any(in_forward))


def _linear_unfused_loss(
    hidden, weight, bias, target, class_weight, ignore_index, reduction, label_smoothing
):
    """The loss as differentiable torch ops (double backward)."""
    logits = hidden @ weight.t() if bias is None else torch.addmm(bias, hidden, weight.t())
    return _unfused_loss(logits, target, class_weight, ignore_index, reduction, label_smoothing)


def _linear_backward(ctx, grad_loss, *unused_grads):
    hidden, weight, bias, target, class_weight, logsumexp, *in_forward = ctx.saved_tensors
    ignore_index, reduction, label_smoothing, block_rows, accumulated = ctx.options
    wants = tuple(ctx.needs_input_grad[:3])
    nothing = (None,) * 9
    if grad_loss is None:  # no gradient reached the loss (grads are not materialised)
        return (None, None, None, *nothing)
    if torch.is_grad_enabled():
        grads = _differentiable_gradients(
            wants,
            (hidden, weight, bias),
            lambda hidden, weight, bias: _linear_unfused_loss(
                hidden,
                weight,
                bias,
                target,
                class_weight,
                ignore_index,
                reduction,
                label_smoothing,
            ),
            grad_loss,
        )
        return (*grads, *nothing)
    if accumulated:
        grads = tuple(
            (gradient * grad_loss.to(gradient.dtype)).to(like.dtype) if needs else None
            for gradient, like, needs in zip(in_forward, (hidden, weight, bias), wants, strict=True)
        )
        return (*grads, *nothing)
    grads = torch.ops.softclass.linear_cross_entropy_backward(
        grad_loss,
        hidden,
        weight,
        bias,
        target,
        class_weight,
        logsumexp,
        ignore_index,
        label_smoothing,
        block_rows,
    )
    return (*(grad if needs else None for grad, needs in zip(grads, wants, strict=True)), *nothing)


_linear_cross_entropy_op.register_autograd(_linear_backward, setup_context=_linear_setup_context)
_linear_cross_entropy_op.register_vmap(_vmap_by_loop(_linear_cross_entropy_op))
_linear_cross_entropy_backward_op.register_vmap(_vmap_by_loop(_linear_cross_entropy_backward_op))


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

    Runs the registered operator ``torch.ops.softclass.linear_cross_entropy`` (fake
    implementation, backward op, vmap rule). With a scalar loss ('mean'/'sum') the gradients are
    accumulated during the forward, one block of logits at a time (3 matrix products per block,
    like torch's linear forward and backward), and the backward only scales them by grad_output.
    With 'none' (a per-row grad_output) the backward makes each block's logits again (4
    products). Each block's softmax runs in the compiled loops where they apply (class indices,
    fp32/bf16/fp64), else in torch ops.

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
    return torch.ops.softclass.linear_cross_entropy(
        hidden,
        weight,
        bias,
        target,
        class_weight,
        ignore_index,
        reduction,
        label_smoothing,
        block_rows,
        *in_forward,
    )[0]


# softmax / log_softmax rows in compiled C: softmax_forward_*(input, row_stride, n_classes,
# row_begin, row_end, out, out_row_stride, log_output) and softmax_backward_*(grad,
# grad_row_stride, output, output_row_stride, n_classes, row_begin, row_end, result,
# result_row_stride, log_output).
_SOFTMAX_FORWARD_ARGS = [
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int64,
]
_SOFTMAX_BACKWARD_ARGS = [
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int64,
]


@functools.lru_cache(maxsize=1)
def _softmax_library():
    """The compiled library with the softmax rows' argument types declared, or None."""
    library = native.library()
    if library is None or not hasattr(library, "softmax_forward_f32"):
        return None
    for suffix in native.SUPPORTED_DTYPES.values():
        forward = getattr(library, f"softmax_forward_{suffix}")
        forward.argtypes = _SOFTMAX_FORWARD_ARGS
        forward.restype = None
        backward = getattr(library, f"softmax_backward_{suffix}")
        backward.argtypes = _SOFTMAX_BACKWARD_ARGS
        backward.restype = None
    return library


def _softmax_rows_library(tensor: Tensor, dim: int):
    """The compiled softmax rows for a real CPU tensor reduced along its last dimension, else
    None (other dims, dtypes or no compiler: the torch-ops formulas)."""
    if (
        not tensor.is_cpu
        or tensor.dtype not in native.SUPPORTED_DTYPES
        or dim != tensor.dim() - 1
        or tensor.numel() == 0
    ):
        return None
    return _softmax_library()


def _as_rows(tensor: Tensor) -> Tensor:
    """``tensor`` as (rows, C) with class stride 1 (a view where possible, else a copy)."""
    rows = tensor.reshape(-1, tensor.shape[-1])
    return rows if rows.stride(1) == 1 or rows.shape[1] == 1 else rows.contiguous()


def softmax_reference(input: Tensor, dim: int, log: bool) -> Tensor:
    """softmax (``log``: log_softmax) along ``dim`` in torch ops, accumulated in fp32 for
    half-precision inputs; a contiguous result in ``input``'s dtype."""
    logits = input.to(_compute_dtype(input.dtype)).contiguous()
    maxes = logits.amax(dim, keepdim=True) if logits.shape[dim] else logits.sum(dim, keepdim=True)
    shifted = logits - maxes
    if log:
        log_sum = shifted.exp().sum(dim, keepdim=True).log_()
        return shifted.sub_(log_sum).to(input.dtype)
    exps = shifted.exp_()
    return exps.div_(exps.sum(dim, keepdim=True)).to(input.dtype)


def softmax_vjp(output: Tensor, grad_output: Tensor, dim: int, log: bool) -> Tensor:
    """The backward of softmax (``y·(g − Σ g·y)``) or log_softmax (``g − exp(y)·Σ g``) from its
    output ``y``, in differentiable torch ops (also the double-backward graph)."""
    compute_dtype = _compute_dtype(output.dtype)
    output_acc, grad_acc = output.to(compute_dtype), grad_output.to(compute_dtype)
    if log:
        total = grad_acc.sum(dim, keepdim=True)
        return (grad_acc - output_acc.exp() * total).to(output.dtype)
    dot = (grad_acc * output_acc).sum(dim, keepdim=True)
    return (output_acc * (grad_acc - dot)).to(output.dtype)


@torch.library.custom_op("softclass::softmax", mutates_args=())
def _softmax_op(input: Tensor, dim: int, log: bool) -> Tensor:
    """softmax (``log``: log_softmax) of ``input`` along ``dim`` (non-negative), contiguous."""
    return _softmax_impl(input, dim, log)


@_softmax_op.register_fake
def _softmax_fake(input, dim, log):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@torch.library.custom_op("softclass::softmax_backward", mutates_args=())
def _softmax_backward_op(grad_output: Tensor, output: Tensor, dim: int, log: bool) -> Tensor:
    """∂/∂input of softmax (``log``: log_softmax) from ``grad_output`` and the forward's
    ``output``, contiguous."""
    return _softmax_backward_impl(grad_output, output, dim, log)


@_softmax_backward_op.register_fake
def _softmax_backward_fake(grad_output, output, dim, log):
    return torch.empty_like(output, memory_format=torch.contiguous_format)


def _softmax_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(output)
    ctx.dim, ctx.log = inputs[1], inputs[2]


def _softmax_backward(ctx, grad_output):
    (output,) = ctx.saved_tensors
    if torch.is_grad_enabled():
        # create_graph=True: differentiable ops (second order flows through ``output``).
        return softmax_vjp(output, grad_output, ctx.dim, ctx.log), None, None
    return torch.ops.softclass.softmax_backward(grad_output, output, ctx.dim, ctx.log), None, None


def _softmax_vmap(info, in_dims, input, dim, log):
    batched = input.movedim(in_dims[0], 0)
    return _softmax_op(batched, dim + 1, log), 0


def _softmax_backward_vmap(info, in_dims, grad_output, output, dim, log):
    grad_dim, output_dim = in_dims
    if output_dim is None:
        output = output.expand(info.batch_size, *output.shape)
    else:
        output = output.movedim(output_dim, 0)
    if grad_dim is None:
        grad_output = grad_output.expand(info.batch_size, *grad_output.shape)
    else:
        grad_output = grad_output.movedim(grad_dim, 0)
    return _softmax_backward_op(grad_output, output, dim + 1, log), 0


_softmax_op.register_autograd(_softmax_backward, setup_context=_softmax_setup_context)
_softmax_op.register_vmap(_softmax_vmap)
_softmax_backward_op.register_vmap(_softmax_backward_vmap)


def softmax(input: Tensor, dim: int, log: bool = False) -> Tensor:
    """softmax (``log``: log_softmax) along the non-negative ``dim`` of an already validated
    floating tensor (≥ 1-D) through the registered operator ``torch.ops.softclass.softmax``:
    compiled rows for CPU fp32/bf16/fp64 along the last dimension, torch ops otherwise (called
    directly, through an autograd Function, for real tensors in plain eager mode)."""
    if is_eager(input):
        return (_LogSoftmax if log else _Softmax).apply(input, dim)
    return torch.ops.softclass.softmax(input, dim, log)


def _softmax_impl(input: Tensor, dim: int, log: bool) -> Tensor:
    """The real implementation of ``softclass::softmax`` (compiled rows where they apply)."""
    library = _softmax_rows_library(input, dim)
    if library is None:
        return softmax_reference(input, dim, log)
    rows = _as_rows(input)
    out = torch.empty(input.shape, dtype=input.dtype)
    out_rows = out.view(-1, input.shape[-1])
    forward = getattr(library, f"softmax_forward_{native.SUPPORTED_DTYPES[input.dtype]}")
    head = (rows.data_ptr(), rows.stride(0), rows.shape[1])
    tail = (out_rows.data_ptr(), out_rows.stride(0), int(log))
    native.run_ranges(
        lambda index, begin, end: forward(*head, begin, end, *tail),
        native.row_ranges(rows.shape[0], rows.shape[1]),
    )
    return out


def _softmax_backward_impl(grad_output: Tensor, output: Tensor, dim: int, log: bool) -> Tensor:
    """The real implementation of ``softclass::softmax_backward``."""
    library = _softmax_rows_library(output, dim)
    if library is None or grad_output.dtype != output.dtype:
        return softmax_vjp(output, grad_output, dim, log).contiguous()
    grad_rows = _as_rows(grad_output.expand(output.shape))
    output_rows = _as_rows(output)
    result = torch.empty(output.shape, dtype=output.dtype)
    result_rows = result.view(-1, output.shape[-1])
    backward = getattr(library, f"softmax_backward_{native.SUPPORTED_DTYPES[output.dtype]}")
    head = (
        grad_rows.data_ptr(),
        grad_rows.stride(0),
        output_rows.data_ptr(),
        output_rows.stride(0),
        output_rows.shape[1],
    )
    tail = (result_rows.data_ptr(), result_rows.stride(0), int(log))
    native.run_ranges(
        lambda index, begin, end: backward(*head, begin, end, *tail),
        native.row_ranges(output_rows.shape[0], output_rows.shape[1]),
    )
    return result


def _eager_softmax_backward(ctx, grad_output: Tensor):
    (output,) = ctx.saved_tensors
    if torch.is_grad_enabled():
        return softmax_vjp(output, grad_output, ctx.dim, ctx.log), None
    return _softmax_backward_impl(grad_output, output, ctx.dim, ctx.log), None


class _Softmax(torch.autograd.Function):
    """The eager entry of ``softclass::softmax`` (see :class:`FusedCrossEntropyFunction` for
    why): same implementation and backward, without the dispatcher's per-call cost. Its
    grad_fn name (``_SoftmaxBackward``) is what ``softclass.diagnostics.check`` recognises."""

    @staticmethod
    def forward(ctx, input: Tensor, dim: int) -> Tensor:
        output = _softmax_impl(input, dim, False)
        ctx.save_for_backward(output)
        ctx.dim, ctx.log = dim, False
        return output

    backward = staticmethod(_eager_softmax_backward)


class _LogSoftmax(torch.autograd.Function):
    """:class:`_Softmax` for log_softmax (grad_fn ``_LogSoftmaxBackward``)."""

    @staticmethod
    def forward(ctx, input: Tensor, dim: int) -> Tensor:
        output = _softmax_impl(input, dim, True)
        ctx.save_for_backward(output)
        ctx.dim, ctx.log = dim, True
        return output

    backward = staticmethod(_eager_softmax_backward)
