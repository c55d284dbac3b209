"""TorchScript entries of the :mod:`softclass.nn` modules: one ``torch.library`` operator each.

``torch.jit.script`` compiles a module's ``forward`` from its source and cannot compile the
Python of :mod:`softclass.functional` (validation, dispatch). Each module's ``forward``
therefore calls, when scripted, one registered operator ``torch.ops.softclass.nn_*`` whose
implementation is the functional form itself: the same checks, errors and kernels, run from
the TorchScript interpreter (in this process; a scripted module needs softclass importable where
it runs, as any module built on Python-registered operators does).

The operators' backward recomputes the functional form under autograd and differentiates it (one
extra forward per backward, in scripted code only); their fake implementation is the functional
form on fake tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from softclass import functional

__all__ = ["ENTRY_OPS"]


def _softmax_entry(input, dim, log):
    family = functional.log_softmax if log else functional.softmax
    return family(input, dim)


def _by_keyword(function: Callable[..., torch.Tensor], schema: str):
    """``function`` called with the schema's arguments by name (the operators' schemas use the
    functional forms' own argument names, several of them keyword-only there)."""
    names = [argument.split()[-1] for argument in schema[1 : schema.index(")")].split(",")]

    def entry(*args):
        return function(**dict(zip(names, args, strict=True)))

    return entry


def _register(name: str, schema: str, function: Callable[..., torch.Tensor]):
    """Register ``softclass::name`` with ``schema``, computing ``function`` (see module doc)."""
    if function is not _softmax_entry:
        function = _by_keyword(function, schema)

    def implementation(*args):
        with torch.no_grad():
            return function(*args)

    op = torch.library.custom_op(
        f"softclass::{name}", implementation, mutates_args=(), schema=schema
    )
    op.register_fake(function)

    def setup_context(ctx, inputs, output) -> None:
        tensor_slots = [index for index, value in enumerate(inputs) if _is_tensor(value)]
        ctx.save_for_backward(*(inputs[index] for index in tensor_slots))
        ctx.tensor_slots = tensor_slots
        ctx.arguments = list(inputs)

    def backward(ctx, grad_output):
        arguments = list(ctx.arguments)
        for index, tensor in zip(ctx.tensor_slots, ctx.saved_tensors, strict=True):
            arguments[index] = tensor
        wanted = [
            index
            for index in ctx.tensor_slots
            if ctx.needs_input_grad[index] and arguments[index].is_floating_point()
        ]
        grads: list[torch.Tensor | None] = [None] * len(arguments)
        if not wanted:
            return tuple(grads)
        with torch.enable_grad():
            for index in wanted:
                arguments[index] = arguments[index].detach().requires_grad_(True)
            output = function(*arguments)
            computed = torch.autograd.grad(
                output,
                [arguments[index] for index in wanted],
                grad_output,
                create_graph=torch.is_grad_enabled(),
                allow_unused=True,
            )
        for index, grad in zip(wanted, computed, strict=True):
            grads[index] = grad
        return tuple(grads)

    op.register_autograd(backward, setup_context=setup_context)
    return op


def _is_tensor(value: object) -> bool:
    return isinstance(value, torch.Tensor)


ENTRY_OPS = {
    "nn_softmax": _register(
        "nn_softmax", "(Tensor input, int? dim, bool log) -> Tensor", _softmax_entry
    ),
    "nn_cross_entropy": _register(
        "nn_cross_entropy",
        "(Tensor input, Tensor target, Tensor? weight, int ignore_index, str reduction, "
        "float label_smoothing) -> Tensor",
        functional.cross_entropy,
    ),
    "nn_nll_loss": _register(
        "nn_nll_loss",
        "(Tensor input, Tensor target, Tensor? weight, int ignore_index, str reduction) -> Tensor",
        functional.nll_loss,
    ),
    "nn_mse_onehot": _register(
        "nn_mse_onehot",
        "(Tensor probs, Tensor targets, str reduction) -> Tensor",
        functional.mse_onehot,
    ),
    "nn_mcee": _register(
        "nn_mcee", "(Tensor probs, Tensor targets, str reduction) -> Tensor", functional.mcee
    ),
    "nn_linear_cross_entropy": _register(
        "nn_linear_cross_entropy",
        "(Tensor input, Tensor linear_weight, Tensor target, Tensor? linear_bias, "
        "Tensor? weight, str reduction, int? ignore_index, float label_smoothing) -> Tensor",
        functional.linear_cross_entropy,
    ),
}
