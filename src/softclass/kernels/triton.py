"""Triton kernels for cross entropy on GPU: fused (logits given) and linear + cross entropy.

Same semantics as ``torch.nn.functional.cross_entropy`` on 2-D logits (classes last): class
weights, ``ignore_index``, label smoothing, reductions ``none``/``mean``/``sum``, class-index or
probability targets, fp32/bf16/fp16 logits with fp32 arithmetic inside the kernels.

Both target kinds are one formula. Each row n has a per-class *target mass* u_nc:

* class index y_n:     u_nc = [y_n != ignore_index] · w_c · ((1-ε)·[c = y_n] + ε/C)
* probabilities t_nc:  u_nc = w_c · ((1-ε)·t_nc + ε/C)

(w_c = 1 without class weights). Then, with lse_n = log Σ_c exp(x_nc) and U_n = Σ_c u_nc,

    loss_n = Σ_c u_nc · (lse_n - x_nc) = U_n · lse_n - Σ_c u_nc · x_nc
    ∂loss_n/∂x_nc = U_n · softmax(x_n)_c - u_nc

``mean`` divides by Σ_n [y_n != ignore_index]·w_{y_n} for class indices and by N for
probabilities (torch's rule; 0/0 = NaN when every row is ignored).

Kernels (one Triton program per row in the forward, per row × column block in the backward):

* forward: one read of the logits. Online softmax over BLOCK-sized chunks of the row (running
  max and rescaled sum), carrying U_n and Σ_c u_nc·(x_nc - running max) in the same pass;
  writes loss_n, U_n and lse_n as (m_n, log Σ_c exp(x_nc - m_n)) with m_n the row max (fp32, 4
  floats per row; the split keeps x - lse exact for logits far from 0).
* backward: one read of the logits, one write of the gradient
  ``g_n · (U_n · exp(x_nc - lse_n) - u_nc)`` computed in fp32 and rounded once to the logits
  dtype (so the true-class term never cancels in bf16). ``g_n`` is the incoming gradient, divided
  by the mean's denominator on the device; it is per row for ``reduction="none"``.

Total traffic 3 passes over N×C for any incoming gradient. Row offsets are int64 (N·C may exceed
2³¹). Nothing in the loss path synchronises with the host: counts and Σweights are device
scalars.

Where the kernels cannot run (Triton not importable, or a CPU tensor outside interpreter mode) the
functions fall back to the plain PyTorch computation, warning once per process.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F

from softclass.kernels import triton_jit
from softclass.kernels.triton_jit import TRITON_IMPORT_ERROR as _TRITON_IMPORT_ERROR
from softclass.kernels.triton_jit import triton

# Whether kernels were decorated in interpreter mode (TRITON_INTERPRET=1 when this module was
# imported): they then run on CPU tensors, slowly, for testing.
_INTERPRETER = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "yes", "on"}

# Largest column block per program. Not tuned on hardware yet (no GPU was available when this was
# written); the forward value follows Liger-Kernel's published choice for Hopper (32K, 32 warps),
# halved to keep the loop-carried registers modest.
FORWARD_BLOCK_MAX = 16384
BACKWARD_BLOCK_MAX = 4096

_fallback_warned = False


def triton_available() -> bool:
    """True when the Triton kernels can run here: triton imports and a CUDA device exists, or the
    kernels were built in interpreter mode (``TRITON_INTERPRET=1`` at import, CPU tensors)."""
    return _TRITON_IMPORT_ERROR is None and (_INTERPRETER or torch.cuda.is_available())


def _why_kernels_cannot_run(tensor: torch.Tensor) -> str | None:
    """None when the kernels can run on ``tensor``'s device, else the reason."""
    if _TRITON_IMPORT_ERROR is not None:
        return _TRITON_IMPORT_ERROR
    if tensor.is_cuda or (_INTERPRETER and tensor.device.type == "cpu"):
        return None
    return f"tensors on {tensor.device} need CUDA (or TRITON_INTERPRET=1 for CPU tensors)"


def _warn_fallback_once(reason: str) -> None:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        warnings.warn(
            f"softclass.kernels.triton: Triton kernels unavailable ({reason}); "
            "using the plain PyTorch cross entropy instead (slower, materializes N×C temporaries).",
            RuntimeWarning,
            stacklevel=3,
        )


def _num_warps(block: int) -> int:
    """Warps per program: about 16 fp32 values per thread, between 4 and 32 warps."""
    return max(4, min(32, block // 512))


def _column_block(n_classes: int, block_max: int) -> int:
    return min(triton.next_power_of_2(n_classes), block_max)


def _kernel_args(
    target: torch.Tensor, class_weight: torch.Tensor | None, n_classes: int,
    label_smoothing: float,
) -> tuple[torch.Tensor, bool, bool, float, float]:  # fmt: skip
    """(class-weight pointer tensor, HAS_WEIGHT, PROB_TARGET, 1-ε, ε/C) for both kernels."""
    prob_target = target.is_floating_point()
    weight_arg = class_weight if class_weight is not None else target  # dummy pointer
    return (
        weight_arg,
        class_weight is not None,
        prob_target,
        1.0 - label_smoothing,
        label_smoothing / n_classes,
    )


def _forward_rows(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    loss_rows: torch.Tensor,
    row_stats: torch.Tensor,
) -> None:
    """Launch the forward kernel; fills ``loss_rows`` (N,) and ``row_stats`` (3, N): row max,
    log-normaliser log Σ exp(x - max), target mass U (all fp32)."""
    n_rows, n_classes = logits.shape
    if n_rows == 0:
        return
    weight_arg, has_weight, prob_target, true_share, smooth = _kernel_args(
        target, class_weight, n_classes, label_smoothing
    )
    block = _column_block(n_classes, FORWARD_BLOCK_MAX)
    triton_jit.cross_entropy_forward_kernel[(n_rows,)](
        logits, logits.stride(0), target, target.stride(0), weight_arg,
        loss_rows, row_stats[0], row_stats[1], row_stats[2],
        n_classes, ignore_index, true_share, smooth,
        HAS_WEIGHT=has_weight, PROB_TARGET=prob_target, BLOCK=block, num_warps=_num_warps(block),
    )  # fmt: skip


def _backward_rows(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    row_stats: torch.Tensor,
    grad_scale: torch.Tensor,
    grad_logits: torch.Tensor,
    grad_target: torch.Tensor | None,
) -> None:
    """Launch the backward kernel; writes d loss/d logits (times ``grad_scale``) into
    ``grad_logits`` (may be ``logits`` itself) and, if given, d loss/d target into
    ``grad_target``. ``grad_scale`` is a 0-d or (N,) tensor (any stride, any float dtype)."""
    n_rows, n_classes = logits.shape
    if n_rows == 0:
        return
    weight_arg, has_weight, prob_target, true_share, smooth = _kernel_args(
        target, class_weight, n_classes, label_smoothing
    )
    scale_stride = grad_scale.stride(0) if grad_scale.dim() == 1 else 0
    target_grad_arg = grad_target if grad_target is not None else grad_logits  # dummy pointer
    block = _column_block(n_classes, BACKWARD_BLOCK_MAX)
    grid = (n_rows, triton.cdiv(n_classes, block))
    triton_jit.cross_entropy_backward_kernel[grid](
        logits, logits.stride(0), grad_logits, grad_logits.stride(0),
        target, target.stride(0), weight_arg, row_stats[0], row_stats[1], row_stats[2],
        grad_scale, scale_stride,
        target_grad_arg, target_grad_arg.stride(0),
        n_classes, ignore_index, true_share, smooth,
        HAS_WEIGHT=has_weight, PROB_TARGET=prob_target, TARGET_GRAD=grad_target is not None,
        BLOCK=block, num_warps=_num_warps(block),
    )  # fmt: skip


def _mean_denominator(
    target: torch.Tensor, class_weight: torch.Tensor | None, ignore_index: int
) -> torch.Tensor:
    """Device fp32 scalar that ``mean`` divides by: Σ w[y] over non-ignored rows (class indices),
    or N (probability targets). Computed without a host sync."""
    if target.is_floating_point():
        return torch.full((), float(target.shape[0]), dtype=torch.float32, device=target.device)
    valid = target != ignore_index
    if class_weight is None:
        return valid.sum(dtype=torch.float32)
    safe_target = target.masked_fill(~valid, 0)
    target_weights = class_weight.float().index_select(0, safe_target)
    return (target_weights * valid).sum()


def _reduce_loss(
    loss_rows: torch.Tensor, reduction: str, denominator: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Per-row fp32 losses → the reduced loss in ``dtype`` (rounded once)."""
    if reduction == "none":
        return loss_rows.to(dtype)
    total = loss_rows.sum()
    if reduction == "mean":
        total = total / denominator
    return total.to(dtype)


def _grad_scale(grad_loss: torch.Tensor, reduction: str, denominator: torch.Tensor) -> torch.Tensor:
    """Incoming gradient as the kernels' per-row scale g_n: (N,) for ``none``, else 0-d fp32."""
    if reduction == "none":
        return grad_loss
    if reduction == "mean":
        return grad_loss.float() / denominator
    return grad_loss.float()


def _unit_stride_columns(tensor: torch.Tensor) -> torch.Tensor:
    """The kernels index columns with stride 1 and rows with any stride."""
    return tensor if tensor.stride(-1) == 1 else tensor.contiguous()


class _FusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        logits: torch.Tensor,
        target: torch.Tensor,
        class_weight: torch.Tensor | None,
        ignore_index: int,
        reduction: str,
        label_smoothing: float,
        inplace_backward: bool,
    ) -> torch.Tensor:
        n_rows = logits.shape[0]
        loss_rows = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
        row_stats = torch.empty(3, n_rows, dtype=torch.float32, device=logits.device)
        _forward_rows(
            logits, target, class_weight, ignore_index, label_smoothing, loss_rows, row_stats
        )
        denominator = _mean_denominator(target, class_weight, ignore_index)
        ctx.save_for_backward(logits, target, class_weight, row_stats, denominator)
        ctx.ignore_index = ignore_index
        ctx.reduction = reduction
        ctx.label_smoothing = label_smoothing
        ctx.inplace_backward = inplace_backward
        return _reduce_loss(loss_rows, reduction, denominator, logits.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        logits, target, class_weight, row_stats, denominator = ctx.saved_tensors
        need_logits_grad, need_target_grad = ctx.needs_input_grad[:2]
        grad_scale = _grad_scale(grad_loss, ctx.reduction, denominator)
        grad_logits = logits if ctx.inplace_backward else torch.empty_like(logits)
        grad_target = torch.empty_like(target) if need_target_grad else None
        _backward_rows(
            logits, target, class_weight, ctx.ignore_index, ctx.label_smoothing,
            row_stats, grad_scale, grad_logits, grad_target,
        )  # fmt: skip
        if ctx.inplace_backward:
            # Triton stores do not bump the version counter: do it, so that any other autograd
            # node that saved these logits fails loudly instead of reading gradients.
            torch.autograd.graph.increment_version(logits)
        return (
            grad_logits if need_logits_grad else None,
            grad_target,
            None, None, None, None, None,
        )  # fmt: skip


def fused_cross_entropy(
    logits2d: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    inplace_backward: bool = False,
) -> torch.Tensor:
    """Cross entropy of 2-D logits in two Triton kernels (3 passes over N×C for forward+backward).

    Inputs are trusted (validated by ``softclass.functional``): ``logits2d`` (N, C) float32,
    bfloat16 or float16, classes last; ``target`` int64 (N,) of class indices in [0, C) or
    ``ignore_index``, or float (N, C) class probabilities (then ``ignore_index`` < 0);
    ``weight`` optional (C,) per-class weights; ``reduction`` in {"none", "mean", "sum"};
    ``label_smoothing`` in [0, 1].

    Returns the loss in ``logits2d.dtype``: (N,) for ``none``, a 0-d tensor otherwise (computed
    in fp32, rounded once). Backward gives d loss/d logits (and d loss/d target for probability
    targets that require grad). The gradient goes into a new tensor; with
    ``inplace_backward=True`` it is written over ``logits2d`` (saves N×C memory; the logits are
    destroyed, and any other autograd use of them raises the usual in-place modification error).

    Differences from torch: all arithmetic in fp32, so bf16/fp16 results are closer to the exact
    value than torch's; a probability target of 0 on a -inf logit contributes 0 (torch: NaN).
    Falls back to ``torch.nn.functional.cross_entropy`` (warning once) where the kernels cannot run.
    """
    reason = _why_kernels_cannot_run(logits2d)
    if reason is not None:
        _warn_fallback_once(reason)
        return F.cross_entropy(
            logits2d, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
            label_smoothing=label_smoothing,
        )  # fmt: skip
    return _FusedCrossEntropy.apply(
        _unit_stride_columns(logits2d),
        _unit_stride_columns(target),
        weight.contiguous() if weight is not None else None,
        ignore_index,
        reduction,
        float(label_smoothing),
        inplace_backward,
    )


def _linear_chunk_rows(n_rows: int, n_classes: int, hidden_size: int) -> int:
    """Rows per chunk so that a chunk of logits holds about as many elements as ``hidden``
    (N·H): next power of two of N / ⌈C/H⌉ (Liger-Kernel's rule), at least 1, at most N."""
    n_chunks = triton.cdiv(n_classes, hidden_size)
    return max(1, min(n_rows, triton.next_power_of_2(triton.cdiv(n_rows, n_chunks))))


def _linear_cross_entropy_pass(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    grad_scale: torch.Tensor | None,
    needs_grad: tuple[bool, bool, bool],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """One sweep over row chunks: per-row fp32 losses and, when ``grad_scale`` is given, the
    gradients (d hidden in ``hidden.dtype``, d weight and d bias in fp32) for the flags
    ``needs_grad`` = (hidden, weight, bias).

    Per chunk: logits = hidden_chunk @ weight.T (+ bias) by torch matmul, the forward kernel, then
    the backward kernel overwrites that chunk buffer with g·d loss/d logits, which feeds
    d hidden[chunk] = G @ W, d weight += Gᵀ @ h, d bias += Σ_rows G. Only one chunk of logits
    exists at a time. Gᵀ @ h is computed by matmul in the input dtype (fp32 accumulation inside
    the chunk, one rounding per chunk for bf16/fp16) and summed over chunks in fp32.
    """
    n_rows, hidden_size = hidden.shape
    n_classes = weight.shape[0]
    device = hidden.device
    loss_rows = torch.empty(n_rows, dtype=torch.float32, device=device)
    row_stats = torch.empty(3, n_rows, dtype=torch.float32, device=device)
    need_hidden, need_weight, need_bias = needs_grad if grad_scale is not None else (False,) * 3
    grad_hidden = (
        torch.empty(hidden.shape, dtype=hidden.dtype, device=device) if need_hidden else None
    )
    grad_weight = (
        torch.zeros(weight.shape, dtype=torch.float32, device=device) if need_weight else None
    )
    grad_bias = torch.zeros(n_classes, dtype=torch.float32, device=device) if need_bias else None
    chunk_rows = _linear_chunk_rows(n_rows, n_classes, hidden_size)
    for start in range(0, n_rows, chunk_rows):
        rows = slice(start, min(start + chunk_rows, n_rows))
        hidden_chunk = hidden[rows]
        target_chunk = target[rows]
        logits_chunk = F.linear(hidden_chunk, weight, bias)
        _forward_rows(
            logits_chunk, target_chunk, class_weight, ignore_index, label_smoothing,
            loss_rows[rows], row_stats[:, rows],
        )  # fmt: skip
        if grad_scale is None:
            continue
        chunk_scale = grad_scale[rows] if grad_scale.dim() == 1 else grad_scale
        _backward_rows(
            logits_chunk, target_chunk, class_weight, ignore_index, label_smoothing,
            row_stats[:, rows], chunk_scale, logits_chunk, None,
        )  # fmt: skip
        grad_logits_chunk = logits_chunk
        if grad_hidden is not None:
            torch.mm(grad_logits_chunk, weight, out=grad_hidden[rows])
        if grad_weight is not None:
            if grad_logits_chunk.dtype == torch.float32:
                grad_weight.addmm_(grad_logits_chunk.t(), hidden_chunk)
            else:  # one (C, H) product in the input dtype per chunk, summed in fp32
                grad_weight += torch.mm(grad_logits_chunk.t(), hidden_chunk)
        if grad_bias is not None:
            grad_bias += grad_logits_chunk.sum(0, dtype=torch.float32)
    return loss_rows, grad_hidden, grad_weight, grad_bias


class _LinearCrossEntropy(torch.autograd.Function):
    """``reduction`` mean/sum: gradients computed in the forward with g = 1 (or 1/denominator)
    and multiplied by the incoming scalar gradient in the backward (≈ 6·N·H·C FLOPs in all).
    ``none``: the per-row incoming gradient is only known in the backward, which recomputes the
    chunked logits (≈ 8·N·H·C FLOPs); nothing N×C is kept between forward and backward."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        target: torch.Tensor,
        bias: torch.Tensor | None,
        class_weight: torch.Tensor | None,
        ignore_index: int,
        reduction: str,
        label_smoothing: float,
    ) -> torch.Tensor:
        denominator = _mean_denominator(target, class_weight, ignore_index)
        needs_grad = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[3])
        grads_now = reduction != "none" and any(needs_grad)
        unit_scale = (
            _grad_scale(torch.ones((), device=hidden.device), reduction, denominator)
            if grads_now
            else None
        )
        loss_rows, grad_hidden, grad_weight, grad_bias = _linear_cross_entropy_pass(
            hidden, weight, bias, target, class_weight, ignore_index, label_smoothing,
            unit_scale, needs_grad,
        )  # fmt: skip
        if grads_now:
            ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        else:
            ctx.save_for_backward(hidden, weight, bias, target, class_weight)
        ctx.grads_now = grads_now
        ctx.needs_grad = needs_grad
        ctx.ignore_index = ignore_index
        ctx.label_smoothing = label_smoothing
        ctx.param_dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        logits_dtype = torch.promote_types(hidden.dtype, weight.dtype)
        return _reduce_loss(loss_rows, reduction, denominator, logits_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        if ctx.grads_now:
            grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
            grad_scale = grad_loss.float()
        else:
            hidden, weight, bias, target, class_weight = ctx.saved_tensors
            _, grad_hidden, grad_weight, grad_bias = _linear_cross_entropy_pass(
                hidden, weight, bias, target, class_weight, ctx.ignore_index,
                ctx.label_smoothing, grad_loss, ctx.needs_grad,
            )  # fmt: skip
            grad_scale = None
        grads = []
        for grad, dtype in zip(
            (grad_hidden, grad_weight, grad_bias), ctx.param_dtypes, strict=True
        ):
            if grad is not None and grad_scale is not None:
                grad = grad * grad_scale
            grads.append(grad.to(dtype) if grad is not None else None)
        grad_hidden, grad_weight, grad_bias = grads
        return grad_hidden, grad_weight, None, grad_bias, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross entropy of ``hidden @ weight.T + bias`` without ever holding the N×C logits.

    Inputs are trusted: ``hidden`` (N, H), ``weight`` (C, H), ``bias`` optional (C,), same float
    dtype; ``target`` int64 (N,) or float probabilities (N, C) (constants: no gradient flows to
    them); ``class_weight`` optional (C,); other options as in :func:`fused_cross_entropy`.

    Returns the loss ((N,) for ``none``, else 0-d) in the logits dtype; backward gives d hidden,
    d weight (accumulated in fp32 over row chunks) and d bias. Peak extra memory: one chunk of
    logits (about N·H elements) plus the fp32 d weight. Equal to
    ``cross_entropy(hidden @ weight.T + bias, target, ...)``. Falls back to exactly that (full
    logits, warning once) where the kernels cannot run.
    """
    reason = _why_kernels_cannot_run(hidden)
    if reason is not None:
        _warn_fallback_once(reason)
        return F.cross_entropy(
            F.linear(hidden, weight, bias), target, weight=class_weight,
            ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        )  # fmt: skip
    return _LinearCrossEntropy.apply(
        hidden,
        weight,
        _unit_stride_columns(target),
        bias,
        class_weight.contiguous() if class_weight is not None else None,
        ignore_index,
        reduction,
        float(label_smoothing),
    )
