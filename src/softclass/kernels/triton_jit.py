"""The Triton kernels of :mod:`softclass.kernels.triton` (fused cross entropy on GPU).

One Triton program per row in the forward, per row × column block in the backward, for the
per-class target mass u_nc of either target kind (see :mod:`softclass.kernels.triton` for the
math). Defined only when triton imports; decorated in interpreter mode (CPU tensors, for tests)
when ``TRITON_INTERPRET=1`` at import.
"""

from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError as error:  # triton wheels exist for Linux only
    triton = None
    TRITON_IMPORT_ERROR: str | None = f"triton is not importable ({error})"
else:
    TRITON_IMPORT_ERROR = None

__all__ = [
    "TRITON_IMPORT_ERROR",
    "cross_entropy_backward_kernel",
    "cross_entropy_forward_kernel",
    "target_mass",
    "triton",
]


if triton is not None:

    @triton.jit
    def target_mass(
        target_row_ptr,
        class_weight_ptr,
        cols,
        col_mask,
        target_class,
        ignore_index,
        true_class_share,
        smooth_per_class,
        HAS_WEIGHT: tl.constexpr,
        PROB_TARGET: tl.constexpr,
    ):
        """u_c for the columns ``cols`` of one row (0 outside the row and on ignored rows)."""
        if HAS_WEIGHT:
            class_weights = tl.load(class_weight_ptr + cols, mask=col_mask, other=0.0).to(
                tl.float32
            )
        else:
            class_weights = tl.where(col_mask, 1.0, 0.0)
        if PROB_TARGET:
            probs = tl.load(target_row_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
            mass = class_weights * (probs * true_class_share + smooth_per_class)
        else:
            share = tl.where(cols == target_class, true_class_share, 0.0) + smooth_per_class
            mass = tl.where(target_class != ignore_index, class_weights * share, 0.0)
        return mass

    @triton.jit
    def cross_entropy_forward_kernel(
        logits_ptr,
        logits_row_stride,
        target_ptr,
        target_row_stride,
        class_weight_ptr,
        loss_ptr,
        row_max_ptr,
        log_norm_ptr,
        mass_sum_ptr,
        n_classes,
        ignore_index,
        true_class_share,
        smooth_per_class,
        HAS_WEIGHT: tl.constexpr,
        PROB_TARGET: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """One program per row, one read: loss_n, U_n and lse_n as (row max m_n, log Σ exp(x - m_n))
        (fp32; lse is kept in two parts so that x - lse stays exact for large logits)."""
        log2e: tl.constexpr = 1.4426950408889634
        row = tl.program_id(0).to(tl.int64)
        logits_row_ptr = logits_ptr + row * logits_row_stride
        target_row_ptr = target_ptr + row * target_row_stride
        if PROB_TARGET:
            target_class = ignore_index  # unused
        else:
            target_class = tl.load(target_ptr + row)
        running_max = tl.full([], float("-inf"), tl.float32)
        shift = tl.zeros([], tl.float32)  # running max, 0 while it is -inf
        exp_sum = tl.zeros([], tl.float32)  # Σ exp(x - shift)
        mass_sum = tl.zeros([], tl.float32)  # U = Σ u
        shifted_mass_dot = tl.zeros([], tl.float32)  # Σ u · (x - shift)
        for start in range(0, n_classes, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            col_mask = cols < n_classes
            logits = tl.load(logits_row_ptr + cols, mask=col_mask, other=float("-inf")).to(
                tl.float32
            )
            mass = target_mass(
                target_row_ptr, class_weight_ptr, cols, col_mask, target_class, ignore_index,
                true_class_share, smooth_per_class, HAS_WEIGHT, PROB_TARGET,
            )  # fmt: skip
            new_max = tl.maximum(running_max, tl.max(logits, 0))
            new_shift = tl.where(new_max == float("-inf"), 0.0, new_max)
            exp_sum = exp_sum * tl.exp2((running_max - new_shift) * log2e) + tl.sum(
                tl.exp2((logits - new_shift) * log2e), 0
            )
            # u = 0 contributes 0 even where x = -inf (masked lanes, zero-weight classes).
            block_dot = tl.sum(mass * tl.where(mass != 0.0, logits - new_shift, 0.0), 0)
            shifted_mass_dot = shifted_mass_dot - (new_shift - shift) * mass_sum + block_dot
            mass_sum = mass_sum + tl.sum(mass, 0)
            running_max = new_max
            shift = new_shift
        log_norm = tl.log(exp_sum)  # lse - shift
        loss = mass_sum * log_norm - shifted_mass_dot
        if not PROB_TARGET:
            loss = tl.where(target_class != ignore_index, loss, 0.0)
        tl.store(loss_ptr + row, loss)
        tl.store(row_max_ptr + row, shift)
        tl.store(log_norm_ptr + row, log_norm)
        tl.store(mass_sum_ptr + row, mass_sum)

    @triton.jit
    def cross_entropy_backward_kernel(
        logits_ptr,
        logits_row_stride,
        grad_logits_ptr,
        grad_logits_row_stride,
        target_ptr,
        target_row_stride,
        class_weight_ptr,
        row_max_ptr,
        log_norm_ptr,
        mass_sum_ptr,
        grad_scale_ptr,
        grad_scale_stride,
        grad_target_ptr,
        grad_target_row_stride,
        n_classes,
        ignore_index,
        true_class_share,
        smooth_per_class,
        HAS_WEIGHT: tl.constexpr,
        PROB_TARGET: tl.constexpr,
        TARGET_GRAD: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """Program (row, column block): grad = g·(U·softmax - u), fp32, rounded once at the store.

        With TARGET_GRAD (probability targets requiring grad) also d loss/d t = -g·(1-ε)·w·log p.
        """
        log2e: tl.constexpr = 1.4426950408889634
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        col_mask = cols < n_classes
        target_row_ptr = target_ptr + row * target_row_stride
        if PROB_TARGET:
            target_class = ignore_index  # unused
        else:
            target_class = tl.load(target_ptr + row)
        logits = tl.load(logits_ptr + row * logits_row_stride + cols, mask=col_mask, other=0.0).to(
            tl.float32
        )
        log_probs = (logits - tl.load(row_max_ptr + row)) - tl.load(log_norm_ptr + row)
        mass_sum = tl.load(mass_sum_ptr + row)
        grad_scale = tl.load(grad_scale_ptr + row * grad_scale_stride).to(tl.float32)
        mass = target_mass(
            target_row_ptr, class_weight_ptr, cols, col_mask, target_class, ignore_index,
            true_class_share, smooth_per_class, HAS_WEIGHT, PROB_TARGET,
        )  # fmt: skip
        # Rows without target mass (ignored) get 0, even when grad_scale is 1/0 (mean over an
        # all-ignored batch), as in torch.
        grad_scale = tl.where(mass_sum != 0.0, grad_scale, 0.0)
        grad = grad_scale * (mass_sum * tl.exp2(log_probs * log2e) - mass)
        grad_row_ptr = grad_logits_ptr + row * grad_logits_row_stride
        tl.store(grad_row_ptr + cols, grad.to(grad_logits_ptr.dtype.element_ty), mask=col_mask)
        if TARGET_GRAD:
            if HAS_WEIGHT:
                class_weights = tl.load(class_weight_ptr + cols, mask=col_mask, other=0.0).to(
                    tl.float32
                )
            else:
                class_weights = 1.0
            grad_target = -grad_scale * true_class_share * class_weights * log_probs
            tl.store(
                grad_target_ptr + row * grad_target_row_stride + cols,
                grad_target.to(grad_target_ptr.dtype.element_ty),
                mask=col_mask,
            )
