"""Fused linear + cross entropy on CPU (``softclass::linear_cross_entropy``).

``cross_entropy(hidden @ weight.T + bias, target)`` one block of rows of logits at a time: each
block is made by one matrix product into a buffer shared by all blocks, its log-sum-exp, loss and
(for a scalar loss) gradient computed in the compiled row loops (class indices, fp32/bf16/fp64;
:mod:`softclass.kernels.native_loops`) or in torch ops (:mod:`softclass.kernels.row_blocks`),
and folded into the gradients of hidden, weight and bias before the next block overwrites it.
Peak extra memory: one block of logits plus the gradients themselves.

The operator and its backward op each have a fake implementation (FakeTensor, meta,
torch.compile, torch.export), an autograd formula (differentiable torch ops under
``create_graph``) and a vmap rule (per batch entry).
"""

from __future__ import annotations

import torch
from torch import Tensor

from softclass.kernels import native_loops
from softclass.kernels import row_blocks as rows

__all__ = ["default_linear_block_rows", "linear_cross_entropy"]

# Logit elements of one block of the fused linear + cross entropy (1024 rows at C = 32768: a
# 128 MiB block, so that the peak, with the 64 MiB weight gradient, stays under 1/8 of torch's
# ~3 GiB). N=2048, H=512, C=32768 fp32: 256-row blocks 3.1–4.1 s, 1024-row 1.37–1.39 s, 2048-row
# 1.36–2.05 s, torch 1.64–2.16 s (the weight-gradient product's inner size is the block's rows).
_LINEAR_BLOCK_ELEMENTS = 1 << 25


def default_linear_block_rows(n_rows: int, n_classes: int) -> int:
    """Rows per block of the fused linear + cross entropy (≥ 1)."""
    return max(1, min(n_rows, _LINEAR_BLOCK_ELEMENTS // max(n_classes, 1)))


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
        # Written (not accumulated) by the first block: no zero fill of the (C, H) gradient.
        self.weight = torch.empty(weight.shape, dtype=compute_dtype) if wants[1] else None
        self.weight_started = False
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
            if grad_in_dtype.dtype != self.weight.dtype:
                block_product = grad_in_dtype.t() @ hidden_block
                (self.weight.add_ if self.weight_started else self.weight.copy_)(block_product)
            elif self.weight_started:
                self.weight.addmm_(grad_in_dtype.t(), hidden_block)
            else:
                torch.mm(grad_in_dtype.t(), hidden_block, out=self.weight)
            self.weight_started = True
        if self.bias is not None:
            self.bias.add_(grad_logits.sum(0, dtype=self.bias.dtype))

    def _finish(self) -> None:
        """Zero the weight gradient when no block wrote it (no rows)."""
        if self.weight is not None and not self.weight_started:
            self.weight.zero_()

    def as_outputs(self, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The three accumulators as op outputs: an empty (0,) for each one not wanted."""
        self._finish()
        return tuple(
            hidden.new_empty((0,)) if gradient is None else gradient
            for gradient in (self.hidden, self.weight, self.bias)
        )

    def scaled(self, grad_output: Tensor, weight: Tensor, bias: Tensor | None):
        """(∂hidden, ∂weight, ∂bias) multiplied by a 0-d grad_output, in the inputs' dtypes."""
        self._finish()
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


def _logit_blocks(hidden: Tensor, weight: Tensor, bias: Tensor | None, block_rows: int, dtype=None):
    """Yield (start, stop, hidden block (B, H), its logits (B, C)) for each block of rows: the
    logits ``hidden_block @ weight.T + bias`` made in the inputs' dtype into one (≤ block_rows, C)
    buffer shared by all blocks (no second block is ever allocated while the previous one is
    alive), converted to ``dtype`` when given."""
    buffer = torch.empty((min(block_rows, hidden.shape[0]), weight.shape[0]), dtype=hidden.dtype)
    for start, stop in rows.row_blocks(hidden.shape[0], block_rows):
        hidden_block = hidden[start:stop]
        out = buffer[: stop - start]
        if bias is None:
            logits = torch.mm(hidden_block, weight.t(), out=out)
        else:
            logits = torch.addmm(bias, hidden_block, weight.t(), out=out)
        yield start, stop, hidden_block, logits if dtype is None else logits.to(dtype)


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
        self.real_weight = native_loops.real_weight(class_weight, dtype)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.sums: list[Tensor] = []

    def forward(self, logits: Tensor, start: int, stop: int, row_loss: Tensor | None) -> None:
        """L and (when ``row_loss`` (N,) is given) loss_n of rows [start, stop) from their
        logits (B, C); the block's sums are kept for :meth:`finish`."""
        block_loss = None if row_loss is None else row_loss[start:stop]
        state = native_loops.forward(
            *(self.library, logits, self.target[start:stop], self.real_weight, self.ignore_index),
            *(self.label_smoothing, self.logsumexp[start:stop], block_loss, None, False),
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
        native_loops.gradient(
            *(self.library, logits, self.target[start:stop], self.real_weight, self.ignore_index),
            *(self.label_smoothing, self.logsumexp[start:stop], block_grad_output, denominator),
            logits,
        )

    def finish(self, reduction: str, dtype: torch.dtype) -> Tensor:
        """The 0-d reduced loss in ``dtype`` from the blocks' sums."""
        loss = torch.empty((), dtype=dtype)
        state = torch.cat([torch.zeros(1, dtype=torch.float64), *self.sums])
        native_loops.finish(self.library, state, reduction == "mean", loss)
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
    hidden_grad_in_forward: bool,
    weight_grad_in_forward: bool,
    bias_grad_in_forward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The real forward of ``softclass::linear_cross_entropy``.

    Returns (loss, L (N,) compute dtype, ∂/∂hidden (N, H) hidden's dtype, ∂/∂weight (C, H) and
    ∂/∂bias (C,) in the compute dtype), each gradient for grad_output 1 when asked for by its
    ``*_grad_in_forward`` (a scalar loss), else an empty (0,).
    """
    gradients_in_forward = (hidden_grad_in_forward, weight_grad_in_forward, bias_grad_in_forward)
    n_rows = hidden.shape[0]
    n_classes = weight.shape[0]
    dtype = rows.compute_dtype(hidden.dtype)
    accumulate = any(gradients_in_forward)
    gradients = _LinearGradients(hidden, weight, bias, gradients_in_forward, dtype)
    # An empty (0, C) tensor stands for every block of logits: same dtype, device, layout.
    library = native_loops.library_for(hidden.new_empty((0, n_classes)), target)
    if library is not None:
        blocks = _NativeLinearBlocks(
            *(library, torch.empty(n_rows, dtype=dtype), target, class_weight, ignore_index),
            *(label_smoothing, hidden.dtype),
        )
        row_loss = torch.empty(n_rows, dtype=hidden.dtype) if reduction == "none" else None
        unit = torch.ones((), dtype=dtype)
        denominator = None
        if accumulate and reduction == "mean":
            denominator = _kept_weight_sum(target, class_weight, ignore_index)
        for start, stop, hidden_block, logits in _logit_blocks(hidden, weight, bias, block_rows):
            blocks.forward(logits, start, stop, row_loss)
            if accumulate:
                blocks.gradient(logits, start, stop, unit, denominator)
                gradients.add_block(logits, hidden_block, weight, start, stop)
        loss = row_loss if row_loss is not None else blocks.finish(reduction, hidden.dtype)
        return loss, blocks.logsumexp, *gradients.as_outputs(hidden)
    targets = rows.RowTargets(
        target, class_weight, ignore_index, label_smoothing, n_classes, dtype, block_rows
    )
    if not targets.is_probability:
        rows.first_bad_target(target, n_classes, ignore_index)
    denominator = targets.mean_denominator()
    if accumulate:
        unit_scale = torch.ones((), dtype=dtype)
        row_scale = unit_scale / denominator if reduction == "mean" else unit_scale
        coefficients = targets.gradient_coefficients(row_scale)
    logsumexp = torch.empty(n_rows, dtype=dtype)
    target_logit = torch.empty(n_rows, dtype=dtype)
    weighted_logit_sum = torch.empty(n_rows, dtype=dtype)
    scratch = torch.empty(min(block_rows, n_rows), n_classes, dtype=dtype)
    for start, stop, hidden_block, logits in _logit_blocks(hidden, weight, bias, block_rows, dtype):
        targets.block_statistics(
            logits, start, stop, scratch, logsumexp, target_logit, weighted_logit_sum
        )
        if accumulate:
            targets.write_block_gradient(logits, logsumexp, coefficients, start, stop, logits)
            gradients.add_block(logits, hidden_block, weight, start, stop)
    per_row_loss = targets.per_row_loss(logsumexp, target_logit, weighted_logit_sum)
    loss = rows.reduce_rows(per_row_loss, reduction, denominator).to(hidden.dtype)
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
) -> tuple[Tensor, Tensor, Tensor]:
    """The real backward op ``softclass::linear_cross_entropy_backward``: (∂hidden, ∂weight,
    ∂bias, the last an empty (0,) without a bias) in the inputs' dtypes for a per-row
    ``grad_output`` (N,) (the 'none' loss; a scalar loss accumulates its gradients in the
    forward): each block's logits are made again."""
    dtype = logsumexp.dtype
    gradients = _LinearGradients(hidden, weight, bias, (True, True, bias is not None), dtype)
    row_grad_output = grad_output.to(dtype)
    library = native_loops.library_for(hidden.new_empty((0, weight.shape[0])), target)
    if library is not None:
        blocks = _NativeLinearBlocks(
            library, logsumexp, target, class_weight, ignore_index, label_smoothing, hidden.dtype
        )
        for start, stop, hidden_block, logits in _logit_blocks(hidden, weight, bias, block_rows):
            blocks.gradient(logits, start, stop, row_grad_output, None)
            gradients.add_block(logits, hidden_block, weight, start, stop)
    else:
        targets = rows.RowTargets(
            target, class_weight, ignore_index, label_smoothing, weight.shape[0], dtype, block_rows
        )
        coefficients = targets.gradient_coefficients(row_grad_output)
        blocks = _logit_blocks(hidden, weight, bias, block_rows, dtype)
        for start, stop, hidden_block, logits in blocks:
            targets.write_block_gradient(logits, logsumexp, coefficients, start, stop, logits)
            gradients.add_block(logits, hidden_block, weight, start, stop)
    grads = gradients.scaled(torch.ones((), dtype=dtype), weight, bias)
    return grads[0], grads[1], hidden.new_empty((0,)) if grads[2] is None else grads[2]


_linear_cross_entropy_op = torch.library.custom_op(
    "softclass::linear_cross_entropy", _linear_forward_impl, mutates_args=(), device_types="cpu"
)


@_linear_cross_entropy_op.register_fake
def _linear_cross_entropy_fake(hidden, weight, bias, target, class_weight, *options):
    reduction = options[1]
    hidden_grad_in_forward, weight_grad_in_forward, bias_grad_in_forward = options[-3:]
    dtype = rows.compute_dtype(hidden.dtype)
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


_linear_cross_entropy_backward_op = torch.library.custom_op(
    "softclass::linear_cross_entropy_backward",
    _linear_backward_impl,
    mutates_args=(),
    device_types="cpu",
)


@_linear_cross_entropy_backward_op.register_fake
def _linear_cross_entropy_backward_fake(grad_output, hidden, weight, bias, *options):
    return (
        torch.empty_like(hidden),
        torch.empty_like(weight),
        hidden.new_empty((0,)) if bias is None else torch.empty_like(bias),
    )


def _linear_setup_context(ctx, inputs, output) -> None:
    hidden, weight, bias, target, class_weight = inputs[:5]
    ignore_index, reduction, label_smoothing, block_rows, *in_forward = inputs[5:]
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
    return rows.unfused_loss(logits, target, class_weight, ignore_index, reduction, label_smoothing)


def _linear_backward(ctx, grad_loss, *unused_grads):
    hidden, weight, bias, target, class_weight, logsumexp, *in_forward = ctx.saved_tensors
    ignore_index, reduction, label_smoothing, block_rows, accumulated = ctx.options
    wants = tuple(ctx.needs_input_grad[:3])
    nothing = (None,) * 9
    if grad_loss is None:  # no gradient reached the loss (grads are not materialised)
        return (None, None, None, *nothing)
    if torch.is_grad_enabled():
        options = (target, class_weight, ignore_index, reduction, label_smoothing)
        grads = rows.differentiable_gradients(
            wants,
            (hidden, weight, bias),
            lambda *linear: _linear_unfused_loss(*linear, *options),
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
        *(grad_loss, hidden, weight, bias, target, class_weight, logsumexp, ignore_index),
        *(label_smoothing, block_rows),
    )
    return (*(grad if needs else None for grad, needs in zip(grads, wants, strict=True)), *nothing)


_linear_cross_entropy_op.register_autograd(_linear_backward, setup_context=_linear_setup_context)
_linear_cross_entropy_op.register_vmap(rows.vmap_by_loop(_linear_cross_entropy_op))
_linear_cross_entropy_backward_op.register_vmap(
    rows.vmap_by_loop(_linear_cross_entropy_backward_op)
)


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
        *(hidden, weight, bias, target, class_weight, ignore_index, reduction, label_smoothing),
        *(block_rows, *in_forward),
    )[0]
