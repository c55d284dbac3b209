"""Rules and messages for the tensor arguments of ``softclass.functional`` and ``softclass.nn``.

One module so that the function and the module forms run the same checks. Exception types follow
``torch.nn.functional`` (ValueError, RuntimeError, IndexError, NotImplementedError) so code that
catches torch's errors keeps working; the messages carry torch's information (which value, which
bound, which shapes) and add what was expected and how to fix it.

Checks that need a tensor's values (out-of-range targets) run on the host for real CPU tensors in
eager mode, where there is no device to synchronise with; on accelerators they become an
asynchronous device-side assertion so the loss path never waits for the host. Under tracing
(torch.compile, torch.export, FakeTensor, meta) and torch.func transforms they run inside the
registered operator ``softclass::check_target_range`` instead, which raises the same error at run
time and never becomes a graph break or a data-dependent guard.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from softclass.kernels.row_blocks import is_eager, out_of_bounds_message
from softclass.kernels.row_blocks import position as row_position

REDUCTIONS = ("none", "mean", "sum")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def resolve_reduction(
    reduction: str, size_average: bool | None = None, reduce: bool | None = None
) -> str:
    """Return the reduction string, honouring torch's deprecated ``size_average``/``reduce``."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        if not reduce:
            reduction = "none"
        else:
            reduction = "mean" if size_average else "sum"
        warnings.warn(
            f"size_average and reduce args will be deprecated, please use reduction='{reduction}'"
            " instead.",
            UserWarning,
            stacklevel=3,
        )
    if reduction == "elementwise_mean":
        warnings.warn(
            "reduction='elementwise_mean' is deprecated, please use reduction='mean' instead.",
            UserWarning,
            stacklevel=3,
        )
        reduction = "mean"
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{reduction} is not a valid value for reduction: expected one of "
            f"{', '.join(REDUCTIONS)}"
        )
    return reduction


def label_smoothing_value(label_smoothing: float) -> float:
    """The ε a loss computes with: torch refuses ε > 1 and ignores ε ≤ 0 (and NaN) entirely, so
    a negative ε gives the unsmoothed loss, as in torch."""
    label_smoothing = float(label_smoothing)
    if label_smoothing > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    return label_smoothing if label_smoothing > 0.0 else 0.0


def is_transformed(*tensors: Tensor | None) -> bool:
    """Whether a torch.func transform (grad, vmap, jacrev, jacfwd, ...) or forward-mode AD is
    active on any of ``tensors`` (outside torch.compile, which sees through transforms itself).
    """
    if torch.compiler.is_compiling():
        return False
    if torch.autograd.forward_ad._current_level >= 0:
        return True
    return any(
        tensor is not None and torch._C._functorch.is_functorch_wrapped_tensor(tensor)
        for tensor in tensors
    )


def check_tensor(value: object, name: str, op: str) -> None:
    """The argument must be a tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def check_floating(tensor: torch.Tensor, name: str, op: str) -> None:
    """The tensor must have a floating dtype (torch raises NotImplementedError for integers)."""
    if tensor.dtype not in FLOAT_DTYPES:
        raise NotImplementedError(
            f"{op}: {name} must be a floating point tensor (float16, bfloat16, float32 or "
            f"float64), got {tensor.dtype}; convert it with {name}.float()"
        )


def normalize_dim(dim: int, ndim: int, op: str) -> int:
    """Return ``dim`` as a non-negative index, with torch's IndexError for an out-of-range dim."""
    low, high = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
    if not low <= dim <= high:
        raise IndexError(
            f"{op}: Dimension out of range (expected to be in range of [{low}, {high}], but got "
            f"{dim})"
        )
    return dim % max(ndim, 1)


def implicit_softmax_dim(ndim: int, op: str) -> int:
    """torch's legacy choice of dimension when ``dim`` is not given (with its warning)."""
    warnings.warn(
        f"Implicit dimension choice for {op} has been deprecated. Change the call to include "
        "dim=X as an argument.",
        UserWarning,
        stacklevel=4,
    )
    return 0 if ndim in (0, 1, 3) else 1


def check_same_device(tensor: torch.Tensor, other: torch.Tensor, names: str, op: str) -> None:
    """Both tensors must live on the same device."""
    if tensor.is_cpu and other.is_cpu:  # the common case, without building device objects
        return
    if tensor.device != other.device:
        raise RuntimeError(
            f"{op}: {names} must be on the same device, got {tensor.device} and {other.device}"
        )


def check_class_input(input: torch.Tensor, op: str) -> None:
    """A loss input needs at least one dimension and a floating dtype."""
    check_tensor(input, "input", op)
    if input.dim() == 0:
        raise ValueError(f"{op}: Expected 1 or more dimensions (got 0) for input")
    check_floating(input, "input", op)


def zero_dim_cross_entropy_error(target: torch.Tensor) -> Exception:
    """torch's error for cross entropy of a 0-d input: a 0-d target (same shape) is read as class
    probabilities and must be floating (RuntimeError); a floating one, or any other target,
    fails on the class dimension (IndexError)."""
    if target.dim() == 0 and not target.is_floating_point():
        return RuntimeError(
            "cross_entropy: Expected floating point type for target with class probabilities, "
            f"got {_dtype_name(target)} (input is 0-d: logits need a class dimension, shape (C,) "
            "or (N, C))"
        )
    return IndexError(
        "cross_entropy: Dimension out of range (expected to be in range of [-1, 0], but got 1): "
        "input is 0-d; logits need a class dimension, shape (C,) or (N, C)"
    )


def check_index_target(input: torch.Tensor, target: torch.Tensor, op: str) -> None:
    """Class-index target: dtype Long or Byte, and a shape that matches the input's."""
    check_tensor(target, "target", op)
    check_same_device(input, target, "input and target", op)
    if target.dtype not in (torch.int64, torch.uint8):
        hint = (
            " (use target.long())"
            if not target.is_floating_point()
            else (
                " (class-index targets are integers; probability targets must have the input's "
                f"shape {list(input.shape)})"
            )
        )
        raise RuntimeError(
            f"{op}: expected target dtype to be Long or Byte, but got {_dtype_name(target)}{hint}"
        )
    input_dims, target_dims = input.dim(), target.dim()
    if input_dims == 1:
        if target_dims == 0 or (target_dims == 1 and target.shape[0] == 1):
            return
        raise RuntimeError(
            f"{op}: Expected target to be 0D when input is 1D (C,), but got target of shape "
            f"{list(target.shape)}"
        )
    if target_dims == 0 or target.shape[0] != input.shape[0]:
        target_batch = 0 if target_dims == 0 else target.shape[0]
        raise ValueError(
            f"{op}: Expected input batch_size ({input.shape[0]}) to match target batch_size "
            f"({target_batch}); input has shape {list(input.shape)}, target {list(target.shape)}"
        )
    if input_dims == 2:
        if target_dims != 1:
            raise RuntimeError(
                f"{op}: 0D or 1D target tensor expected, multi-target not supported (input "
                f"{list(input.shape)}, target {list(target.shape)}); one-hot targets? use "
                "target.argmax(dim=1)"
            )
        return
    expected = [input.shape[0], *input.shape[2:]]
    if list(target.shape) != expected:
        raise RuntimeError(
            f"{op}: Expected target size {expected}, got {list(target.shape)} (input shape "
            f"{list(input.shape)})"
        )


def check_probability_target(input: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
    """Probability target (same shape as input): floating dtype, no non-negative ignore_index."""
    if not target.is_floating_point():
        raise RuntimeError(
            "cross_entropy: Expected floating point type for target with class probabilities, "
            f"got {_dtype_name(target)} (a target with the input's shape {list(input.shape)} is "
            "read as class probabilities; class indices have the shape of the input without its "
            "class dimension)"
        )
    check_same_device(input, target, "input and target", "cross_entropy")
    if ignore_index >= 0:
        raise RuntimeError(
            f"cross_entropy: ignore_index is not supported for floating point target (got "
            f"ignore_index={ignore_index}; leave it at the default -100)"
        )


def check_weight(
    weight: torch.Tensor | None, input: torch.Tensor, n_classes: int, op: str, strict_dtype: bool
) -> None:
    """Class weights: a 1-D tensor of C values on the input's device. With class-index targets
    (``strict_dtype``) also of the input's dtype and not requiring grad while grad mode is on (as
    torch: that loss is not differentiable with respect to it; with probability targets it is)."""
    if weight is None:
        return
    check_tensor(weight, "weight", op)
    if strict_dtype and weight.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(
            f"{op}: the loss is not differentiable with respect to argument 'weight' (the class "
            "weights); this input cannot have requires_grad True: pass weight.detach()"
        )
    if weight.dim() != 1 or weight.numel() != n_classes:
        raise RuntimeError(
            f"{op}: weight tensor should be defined either for all {n_classes} classes or no "
            f"classes but got weight tensor of shape: {list(weight.shape)}"
        )
    check_same_device(input, weight, "input and weight", op)
    if strict_dtype and weight.dtype != input.dtype:
        raise RuntimeError(
            f"{op}: expected scalar type {_dtype_name(input)} but found {_dtype_name(weight)} for "
            f"weight; use weight.to({input.dtype})"
        )


def check_target_range(
    target: torch.Tensor, n_classes: int, ignore_index: int, op: str
) -> torch.Tensor:
    """Every non-ignored class index must lie in [0, n_classes); returns ``target`` as int64.

    Real CPU tensors in eager mode: checked here, raising IndexError that names the first bad
    target, its position and the bound. Other devices in eager mode: an asynchronous device-side
    assertion (no host synchronisation). Under tracing or a torch.func transform: the check runs
    inside the ``softclass::check_target_range`` operator (whose int64 copy of the target the
    caller must use, so that the check stays in the graph), with the same message at run time.
    (``functional.cross_entropy`` leaves this out where the fused CPU operator checks each
    target as it reads it; it reports the first bad one through :func:`target_out_of_bounds`.)
    """
    if not is_eager(target):
        return torch.ops.softclass.check_target_range(target, n_classes, ignore_index, op)
    if target.device.type != "cpu":
        bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
        torch._assert_async(~bad.any(), f"{op}: target out of bounds [0, {n_classes})")
        return target.long()
    _raise_out_of_bounds(target, n_classes, ignore_index, op)
    return target.long()


@torch.library.custom_op("softclass::check_target_range", mutates_args=())
def _check_target_range_op(target: Tensor, n_classes: int, ignore_index: int, op: str) -> Tensor:
    """The range check as an operator: raises as :func:`check_target_range` does, at run time;
    returns the target as a new int64 tensor (the value the loss reads, so the check is kept)."""
    _raise_out_of_bounds(target, n_classes, ignore_index, op)
    return target.to(torch.int64, copy=True)


def _raise_out_of_bounds(target: Tensor, n_classes: int, ignore_index: int, op: str) -> None:
    """Raise :func:`target_out_of_bounds` for the first kept target outside [0, n_classes)."""
    bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
    if bool(bad.any()):
        flat_index = int(bad.reshape(-1).nonzero()[0, 0])
        raise target_out_of_bounds(target, flat_index, n_classes, ignore_index, op)


@_check_target_range_op.register_fake
def _check_target_range_fake(target, n_classes, ignore_index, op):
    return target.new_empty(target.shape, dtype=torch.int64)


def _check_target_range_vmap(info, in_dims, target, n_classes, ignore_index, op):
    # The check reads every entry anyway: check the whole batch at once.
    return _check_target_range_op(target, n_classes, ignore_index, op), in_dims[0]


_check_target_range_op.register_vmap(_check_target_range_vmap)


def target_out_of_bounds(
    target: torch.Tensor, flat_index: int, n_classes: int, ignore_index: int, op: str
) -> IndexError:
    """The error for the out-of-range class index at ``flat_index`` of ``target`` (row-major)."""
    position = row_position(target.shape, flat_index)
    value = int(target[position])
    shown = (position[0] if len(position) == 1 else position) if position else None
    return IndexError(out_of_bounds_message(op, value, shown, n_classes, ignore_index))


def check_linear_inputs(
    input: torch.Tensor, linear_weight: torch.Tensor, linear_bias: torch.Tensor | None, op: str
) -> int:
    """input (N, H) floating, linear_weight (C, H) and linear_bias (C,) of input's dtype and
    device, on CPU (or meta, for shapes only).

    Returns C, the number of classes.
    """
    check_tensor(input, "input", op)
    check_tensor(linear_weight, "linear_weight", op)
    if input.dim() != 2:
        raise ValueError(
            f"{op}: input must be 2-D (N items, H features), got shape {list(input.shape)}; "
            "flatten leading dimensions with input.reshape(-1, H)"
        )
    check_floating(input, "input", op)
    if linear_weight.dim() != 2 or linear_weight.shape[1] != input.shape[1]:
        raise ValueError(
            f"{op}: linear_weight must have shape (C, H) = (C, {input.shape[1]}) to match input "
            f"{list(input.shape)}, got {list(linear_weight.shape)}"
        )
    tensors = [("linear_weight", linear_weight)]
    if linear_bias is not None:
        check_tensor(linear_bias, "linear_bias", op)
        tensors.append(("linear_bias", linear_bias))
        if list(linear_bias.shape) != [linear_weight.shape[0]]:
            raise ValueError(
                f"{op}: linear_bias must have shape (C,) = ({linear_weight.shape[0]},) to match "
                f"linear_weight {list(linear_weight.shape)}, got {list(linear_bias.shape)}"
            )
    for name, tensor in tensors:
        check_same_device(input, tensor, f"input and {name}", op)
        if tensor.dtype != input.dtype:
            raise RuntimeError(
                f"{op}: {name} has dtype {_dtype_name(tensor)} but input has "
                f"{_dtype_name(input)}; use {name}.to({input.dtype})"
            )
    if input.device.type not in ("cpu", "meta"):
        raise NotImplementedError(
            f"{op}: the fused linear + cross entropy runs on CPU only, got input on "
            f"{input.device}; use cross_entropy(linear(input, linear_weight, linear_bias), "
            "target) there"
        )
    return linear_weight.shape[0]


def check_linear_target(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    n_classes: int,
    ignore_index: int,
    op: str,
) -> torch.Tensor:
    """The target (and class weights) of a linear + cross entropy of ``input`` (N, H) into
    ``n_classes``: class indices (N,), returned as int64, or probabilities (N, C), returned as
    they are; checked as the cross entropy of (N, C) logits would check them."""
    class_input = input.new_zeros(()).expand(input.shape[0], n_classes)  # shape only, no memory
    if target.dim() == 2:
        if target.shape != class_input.shape:
            raise ValueError(
                f"{op}: a 2-D target holds class probabilities and must have shape (N, C) = "
                f"{list(class_input.shape)}, got {list(target.shape)}"
            )
        check_probability_target(class_input, target, ignore_index)
        check_weight(weight, input, n_classes, op, strict_dtype=False)
        return target
    check_index_target(class_input, target, op)
    check_weight(weight, input, n_classes, op, strict_dtype=True)
    return target.long()


def check_linear_module(
    num_classes: int, out_features: tuple[int, ...], weight, options: object, op: str
) -> None:
    """LinearCrossEntropyLoss's options: class weights of shape (num_classes,), no K-dim, no
    torch chunking options (softclass always streams blocks of rows)."""
    if options is not None:
        raise NotImplementedError(
            f"{op}: options={options!r}: torch's chunking options are not supported (softclass "
            "always streams blocks of rows); leave options=None"
        )
    if out_features != ():
        raise NotImplementedError(
            f"{op}: out_features={out_features!r}: K-dimensional outputs are not supported; "
            "leave out_features=() (the loss of (N, H) inputs)"
        )
    if weight is not None and tuple(weight.shape) != (num_classes,):
        raise RuntimeError(
            f"{op}: expected weight shape to be {(num_classes,)}, got {tuple(weight.shape)}"
        )


def _dtype_name(tensor: torch.Tensor) -> str:
    """torch's scalar-type name of a tensor's dtype (Float, Double, Long, ...)."""
    names = {
        torch.float32: "Float",
        torch.float64: "Double",
        torch.float16: "Half",
        torch.bfloat16: "BFloat16",
        torch.int64: "Long",
        torch.int32: "Int",
        torch.int16: "Short",
        torch.int8: "Char",
        torch.uint8: "Byte",
        torch.bool: "Bool",
    }
    return names.get(tensor.dtype, str(tensor.dtype))
