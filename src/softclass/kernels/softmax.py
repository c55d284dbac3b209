"""softmax and log_softmax along one dimension: the registered operator ``softclass::softmax``
(and ``softclass::softmax_backward``), compiled rows for CPU fp32/bf16/fp64 along the last
dimension, torch ops otherwise.

The operator has a fake implementation (FakeTensor, meta, torch.compile, torch.export), an
autograd formula (differentiable torch ops under ``create_graph``) and a vmap rule that folds the
batch into the rows. Plain eager calls on real tensors enter the same implementation through
autograd Functions (``_Softmax``, ``_LogSoftmax``), without the dispatcher's per-call cost.
"""

from __future__ import annotations

import torch
from torch import Tensor

from softclass.kernels import native
from softclass.kernels.row_blocks import compute_dtype, is_eager

__all__ = ["SoftmaxFunction", "softmax", "softmax_reference", "softmax_vjp"]


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
    return native.library()


def _as_rows(tensor: Tensor) -> Tensor:
    """``tensor`` as (rows, C) with class stride 1 (a view where possible, else a copy)."""
    rows = tensor.reshape(-1, tensor.shape[-1])
    return rows if rows.stride(1) == 1 or rows.shape[1] == 1 else rows.contiguous()


def softmax_reference(input: Tensor, dim: int, log: bool) -> Tensor:
    """softmax (``log``: log_softmax) along ``dim`` in torch ops, accumulated in fp32 for
    half-precision inputs; a contiguous result in ``input``'s dtype."""
    logits = input.to(compute_dtype(input.dtype)).contiguous()
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
    dtype = compute_dtype(output.dtype)
    output_acc, grad_acc = output.to(dtype), grad_output.to(dtype)
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


class _Softmax(torch.autograd.Function):
    """The eager entry of ``softclass::softmax`` (see ``FusedCrossEntropyFunction`` for why):
    same implementation and backward, without the dispatcher's per-call cost. Its
    grad_fn name (``_SoftmaxBackward``) is what ``softclass.diagnostics.check`` recognises."""

    @staticmethod
    def forward(ctx, input: Tensor, dim: int) -> Tensor:
        return _eager_softmax_forward(ctx, input, dim, False)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (output,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            return softmax_vjp(output, grad_output, ctx.dim, ctx.log), None
        return _softmax_backward_impl(grad_output, output, ctx.dim, ctx.log), None


class _LogSoftmax(_Softmax):
    """:class:`_Softmax` for log_softmax (grad_fn ``_LogSoftmaxBackward``)."""

    @staticmethod
    def forward(ctx, input: Tensor, dim: int) -> Tensor:
        return _eager_softmax_forward(ctx, input, dim, True)


def _eager_softmax_forward(ctx, input: Tensor, dim: int, log: bool) -> Tensor:
    output = _softmax_impl(input, dim, log)
    ctx.save_for_backward(output)
    ctx.dim, ctx.log = dim, log
    return output


class SoftmaxFunction(torch.autograd.Function):
    """softmax (``log``: log_softmax) along ``dim`` for torch.func transforms and forward-mode AD
    (setup_context, a generated vmap rule, jvp): the same formulas as the registered operator
    ``softclass::softmax`` in torch ops (Dynamo cannot trace a Function with ``jvp``, so
    everything else goes through the operator). Saves only its output; the backward is
    differentiable (double backward)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input: Tensor, dim: int, log: bool) -> Tensor:
        return softmax_reference(input, dim, log)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)
        ctx.dim, ctx.log = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None]:
        (output,) = ctx.saved_tensors
        return softmax_vjp(output, grad_output, ctx.dim, ctx.log), None, None

    @staticmethod
    def jvp(ctx, input_tangent: Tensor, *unused_tangents) -> Tensor:
        """softmax: p·(t − Σ p·t) (its Jacobian is symmetric); log_softmax: t − Σ p·t."""
        (output,) = ctx.saved_tensors
        accumulate = compute_dtype(output.dtype)
        tangent = input_tangent.to(accumulate)
        probs = output.to(accumulate).exp() if ctx.log else output.to(accumulate)
        centred = tangent - (probs * tangent).sum(ctx.dim, keepdim=True)
        return (centred if ctx.log else probs * centred).to(output.dtype)
