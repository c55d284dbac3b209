"""The softmax family and the classification losses, written here and exact to torch.

Every function takes the same arguments as its ``torch.nn.functional`` namesake, with the same
defaults, shapes, dtypes and error types, and returns the same numbers (to floating-point rounding).

Shapes: ``C`` classes; ``N`` items; losses accept ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``
inputs with the class dimension at 1 (0 when unbatched). Half-precision inputs (float16, bfloat16)
are computed with float32 accumulation and the result is cast back to the input dtype.

The stable formulas (the max is subtracted so that nothing overflows)::

    softmax(x)     = exp(x - max x) / sum exp(x - max x)
    log_softmax(x) = x - max x - log sum exp(x - max x)
    logsumexp(x)   = max x + log sum exp(x - max x)
    nll(logp, t)   = -w[t] * logp[t]                         (mean divides by sum of w[t])
    ce(x, t)       = nll(log_softmax(x), t)

Inside the rest of PyTorch: the fused kernels are ``torch.library`` operators
(``torch.ops.softclass.softmax``, ``.cross_entropy``, ``.spatial_cross_entropy`` for
(N, C, d1, ...) logits in their own layout, ``.linear_cross_entropy``, their backward ops and
``.check_target_range``), each with a fake implementation, so torch.compile
(``fullgraph=True``, no graph break), torch.export, FakeTensor and the meta device see one opaque
op of the right shape and dtype and never run compiled code on a tensor without storage. In
plain eager mode the same implementations are called directly (through autograd Functions:
the dispatcher's per-call cost is ~0.1 ms). Under torch.func transforms (grad, vmap, jacrev,
jacfwd, hessian) and forward-mode AD the functions run on differentiable torch ops instead
(the operators have vmap rules but no forward-mode derivative). Out-of-range class indices
raise the same IndexError in every mode: read on the host in eager mode, inside the operator
(at run time, no data-dependent guard) when traced. Under ``torch.autocast`` the losses compute
in float32 as torch's do (its float32 list), the softmax family keeps the input dtype.
"""

from __future__ import annotations

import torch
from torch.overrides import handle_torch_function, has_torch_function_variadic

from softclass import validation
from softclass.kernels import cross_entropy_cpu, dispatch
from softclass.kernels import softmax as softmax_kernels
from softclass.kernels import spatial_cross_entropy_cpu as spatial_kernels
from softclass.kernels.lean import cross_entropy as lean_cross_entropy  # by name: see lean._traced
from softclass.kernels.row_blocks import TargetOutOfBoundsError, compute_dtype
from softclass.probability_losses import mcee, mse_onehot, one_hot

__all__ = [
    "cross_entropy",
    "linear_cross_entropy",
    "log_softmax",
    "logsumexp",
    "mcee",
    "mse_onehot",
    "nll_loss",
    "one_hot",
    "softmax",
]


_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _autocast_float32(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """torch's autocast policy for the losses (nll_loss and cross_entropy are on its float32
    list): inside an autocast region of the first tensor's device, float16/bfloat16 tensors are
    computed in float32 (and the loss comes out float32), as ``torch.nn.functional`` does."""
    device_type = tensors[0].device.type
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return tensors
    return tuple(
        tensor.float() if tensor is not None and tensor.dtype in _HALF_DTYPES else tensor
        for tensor in tensors
    )


def _softmax_family(
    log: bool,
    op: str,
    input: torch.Tensor,
    dim: int | None,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    """Shared argument handling of softmax and log_softmax (contiguous results, as torch's)."""
    validation.check_tensor(input, "input", op)
    if dtype is not None:
        input = input.to(dtype)
    validation.check_floating(input, "input", op)
    if dim is None:
        dim = validation.implicit_softmax_dim(input.dim(), op)
    dim = validation.normalize_dim(dim, input.dim(), op)
    rows = input.reshape(1) if input.dim() == 0 else input
    if validation.is_transformed(rows):
        result = softmax_kernels.SoftmaxFunction.apply(rows, dim, log)
    else:
        result = softmax_kernels.softmax(rows, dim, log)
    return result.reshape(()) if input.dim() == 0 else result


def softmax(
    input: torch.Tensor,
    dim: int | None = None,
    _stacklevel: int = 3,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Softmax along ``dim``: ``exp(x - max x) / sum exp(x - max x)``.

    Args:
        input: floating tensor of any shape.
        dim: the dimension whose entries sum to 1. ``None`` uses torch's deprecated implicit
            choice (0 for 0-, 1- and 3-D inputs, else 1) and warns.
        _stacklevel: accepted for signature compatibility with torch; unused.
        dtype: if given, the input is cast to it first (and the result has it).

    Returns:
        A tensor of ``input``'s shape and dtype (or ``dtype``). Rows that are all ``-inf`` or that
        contain ``+inf`` give NaN, as in torch.
    """
    if has_torch_function_variadic(input):
        return handle_torch_function(softmax, (input,), input, dim, _stacklevel, dtype)
    return _softmax_family(False, "softmax", input, dim, dtype)


def log_softmax(
    input: torch.Tensor,
    dim: int | None = None,
    _stacklevel: int = 3,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Log-softmax along ``dim``: ``x - max x - log sum exp(x - max x)``.

    Stable for large logits where ``log(softmax(x))`` underflows to ``-inf``. Arguments and
    return shape as :func:`softmax`; every value is ``<= 0``.
    """
    if has_torch_function_variadic(input):
        return handle_torch_function(log_softmax, (input,), input, dim, _stacklevel, dtype)
    return _softmax_family(True, "log_softmax", input, dim, dtype)


def logsumexp(
    input: torch.Tensor, dim: int | tuple[int, ...] | list[int], keepdim: bool = False
) -> torch.Tensor:
    """``log(sum(exp(input)))`` over ``dim``, computed as ``m + log sum exp(input - m)``.

    Args:
        input: tensor of any shape; integer inputs are computed in the default float dtype.
        dim: one dimension or several.
        keepdim: keep the reduced dimensions with size 1.

    Returns:
        ``input``'s shape without ``dim`` (or with size 1 there when ``keepdim``). An infinite
        maximum is not subtracted, so all ``-inf`` gives ``-inf`` and any ``+inf`` gives ``+inf``.
    """
    if has_torch_function_variadic(input):
        return handle_torch_function(logsumexp, (input,), input, dim, keepdim)
    op = "logsumexp"
    validation.check_tensor(input, "input", op)
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if not dims:
        raise RuntimeError(f"{op}: dim must name at least one dimension, got {dim!r}")
    dims = tuple(validation.normalize_dim(d, input.dim(), op) for d in dims)
    if not input.is_floating_point():
        input = input.to(torch.get_default_dtype())
    values = input.to(compute_dtype(input.dtype))
    maxes = (
        values.detach().amax(dims, keepdim=True)
        if values.numel()
        else values.sum(dims, keepdim=True).detach()
    )
    maxes = maxes.masked_fill(maxes.isinf(), 0.0)
    result = (values - maxes).exp().sum(dims, keepdim=True).log() + maxes
    if not keepdim:
        result = result.squeeze(dims)
    return result.to(input.dtype)


def _flatten_classes(
    input: torch.Tensor, target: torch.Tensor, probability_target: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
    """Move the class dimension last and flatten the rest: (M, C) input, (M,) or (M, C) target.

    Returns the flattened pair and the shape of the per-item loss (``reduction='none'``).
    """
    if input.dim() == 1:
        rows = input.unsqueeze(0)
        flat_target = target.reshape(1, -1) if probability_target else target.reshape(1)
        return rows, flat_target, (torch.Size([]) if probability_target else target.shape)
    if input.dim() == 2:
        return input, target, input.shape[:1]
    n_classes = input.shape[1]
    item_shape = torch.Size([input.shape[0], *input.shape[2:]])
    rows = input.movedim(1, -1).reshape(-1, n_classes)
    flat_target = (
        target.movedim(1, -1).reshape(-1, n_classes) if probability_target else target.reshape(-1)
    )
    return rows, flat_target, item_shape


def _reduce(
    losses: torch.Tensor, row_weights: torch.Tensor | None, reduction: str, item_shape: torch.Size
) -> torch.Tensor:
    """Apply the reduction to per-row losses. ``mean`` divides by the row weights' sum (or by M)."""
    if reduction == "none":
        return losses.reshape(item_shape)
    total = losses.sum()
    if reduction == "sum":
        return total
    denominator = losses.new_tensor(losses.shape[0]) if row_weights is None else row_weights.sum()
    return total / denominator


def _nll_rows(
    log_probs: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row ``-w[t] * logp[t]`` by a gather (one value per row, O(M) memory).

    Returns the row losses, the row weights (``w[t]``, 0 where ignored) and the mask of rows
    that are not ignored. Ignored rows give exactly 0 and no gradient.
    """
    not_ignored = target != ignore_index
    safe_target = torch.where(not_ignored, target, 0).long()
    picked = log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    if weight is None:
        row_weights = not_ignored.to(log_probs.dtype)
    else:
        row_weights = weight.to(log_probs.dtype)[safe_target] * not_ignored
    losses = torch.where(not_ignored, -picked * row_weights, 0.0)
    return losses, row_weights, not_ignored


def nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative log-likelihood: ``-weight[t] * input[t]`` per item, for log-probability inputs.

    Args:
        input: log-probabilities ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``, floating.
        target: class indices ``()``, ``(N,)`` or ``(N, d1, ..., dK)``, int64 or uint8, in
            ``[0, C)`` or equal to ``ignore_index``.
        weight: optional ``(C,)`` class weights, same dtype as ``input``.
        size_average, reduce: torch's deprecated reduction flags (override ``reduction``).
        ignore_index: target value whose items contribute 0 and are left out of the mean.
        reduction: ``"none"`` (target's shape), ``"sum"`` or ``"mean"`` (sum divided by the sum
            of ``weight[t]`` over non-ignored items; NaN when every item is ignored).

    Returns:
        The loss in ``input``'s dtype.
    """
    if has_torch_function_variadic(input, target, weight):
        return handle_torch_function(
            nll_loss,
            (input, target, weight),
            input,
            target,
            weight,
            size_average,
            ignore_index,
            reduce,
            reduction,
        )
    op = "nll_loss"
    reduction = validation.resolve_reduction(reduction, size_average, reduce)
    validation.check_class_input(input, op)
    validation.check_index_target(input, target, op)
    input, weight = _autocast_float32(input, weight)
    n_classes = input.shape[1] if input.dim() >= 2 else input.shape[0]
    validation.check_weight(weight, input, n_classes, op, strict_dtype=True)
    target = validation.check_target_range(target, n_classes, ignore_index, op)
    log_probs, flat_target, item_shape = _flatten_classes(input, target, probability_target=False)
    log_probs = log_probs.to(compute_dtype(input.dtype))
    losses, row_weights, _ = _nll_rows(log_probs, flat_target, weight, ignore_index)
    return _reduce(losses, row_weights, reduction, item_shape).to(input.dtype)


def _cross_entropy_rows(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> torch.Tensor:
    """Cross entropy of validated 2-D logits ``(M, C)`` with targets ``(M,)`` or ``(M, C)``.

    The plain-ops reference path; returns the reduced loss (``(M,)`` for ``"none"``) in the
    accumulation dtype. Index targets with smoothing ε use ``(1-ε)·nll + ε/C·smooth`` where
    ``smooth = -sum_c w_c·logp_c``, both normalised by the same sum of row weights.
    """
    n_classes = logits.shape[1]
    log_probs = log_softmax(logits, 1, dtype=compute_dtype(logits.dtype))
    item_shape = logits.shape[:1]
    class_weights = None if weight is None else weight.to(log_probs.dtype)
    if target.dtype == torch.int64 or target.dtype == torch.uint8:
        losses, row_weights, not_ignored = _nll_rows(log_probs, target, weight, ignore_index)
        if label_smoothing > 0.0:
            weighted = log_probs if class_weights is None else log_probs * class_weights
            smooth = torch.where(not_ignored, -weighted.sum(1), 0.0)
            losses = (1.0 - label_smoothing) * losses + (label_smoothing / n_classes) * smooth
        return _reduce(losses, row_weights, reduction, item_shape)
    target_probs = target.to(log_probs.dtype)
    if label_smoothing > 0.0:
        target_probs = target_probs * (1.0 - label_smoothing) + label_smoothing / n_classes
    weighted = log_probs * target_probs
    if class_weights is not None:
        weighted = weighted * class_weights
    return _reduce(-weighted.sum(1), None, reduction, item_shape)


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross entropy of unnormalised logits: ``nll_loss(log_softmax(input, class_dim), target)``.

    Args:
        input: logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``, floating.
        target: class indices (int64/uint8, ``input``'s shape without the class dimension) or
            class probabilities (floating, exactly ``input``'s shape).
        weight: optional ``(C,)`` class weights.
        size_average, reduce: torch's deprecated reduction flags (override ``reduction``).
        ignore_index: class-index targets equal to it contribute 0 and leave the mean; must stay
            negative with probability targets.
        reduction: ``"none"``, ``"sum"`` or ``"mean"``. With index targets ``mean`` divides by
            the sum of ``weight[t]`` over non-ignored items (NaN if all are ignored); with
            probability targets it divides by the number of items.
        label_smoothing: ε in [0, 1]; the target becomes ``(1-ε)·target + ε/C``.

    Returns:
        The loss: in ``input``'s dtype for index targets, in the promoted dtype of input and
        target for probability targets.

    >>> import torch
    >>> logits = torch.tensor([[1.0, 2.0, 0.5, 0.1], [0.1, 0.2, 0.3, 0.4], [2.0, 1.0, 0.1, 0.5]])
    >>> round(cross_entropy(logits, torch.tensor([1, 3, 0])).item(), 4)
    0.7837
    """
    if has_torch_function_variadic(input, target, weight):
        return handle_torch_function(
            cross_entropy,
            (input, target, weight),
            input,
            target,
            weight,
            size_average,
            ignore_index,
            reduce,
            reduction,
            label_smoothing,
        )
    if (
        weight is None
        and size_average is None
        and reduce is None
        and (reduction == "mean" or reduction == "sum")
        and (label_smoothing == 0.0 or -1.0 < label_smoothing < 0.0)
    ):
        # The common call: the short road where it applies (softclass.kernels.lean; compiled too).
        try:
            loss = lean_cross_entropy(input, target, ignore_index, reduction == "mean")
        except TargetOutOfBoundsError as error:
            raise validation.target_out_of_bounds(
                target, error.row, input.shape[1], ignore_index, "cross_entropy"
            ) from None
        if loss is not None:
            return loss
    op = "cross_entropy"
    reduction = validation.resolve_reduction(reduction, size_average, reduce)
    label_smoothing = validation.label_smoothing_value(label_smoothing)
    input, target, weight, out_dtype = _checked_cross_entropy_inputs(
        input, target, weight, ignore_index, op
    )
    options = (weight, ignore_index, reduction, label_smoothing)
    if (spatial_loss := _spatial_cross_entropy(input, target, *options)) is not None:
        return spatial_loss
    probability_target = target.shape == input.shape
    logits, flat_target, item_shape = _flatten_classes(input, target, probability_target)
    loss = _cross_entropy_2d(
        logits, flat_target, target, weight, ignore_index, reduction, label_smoothing, op
    )
    if reduction == "none":
        loss = loss.reshape(item_shape)
    return loss if loss.dtype == out_dtype else loss.to(out_dtype)


def _spatial_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> torch.Tensor | None:
    """Cross entropy of validated (N, C, d1, ...) logits and class indices in the logits' own
    layout (:mod:`softclass.kernels.spatial_cross_entropy_cpu`: its compiled loops in eager mode,
    its registered operator when traced), or None where those do not apply."""
    if target.shape == input.shape or _needs_torch_ops(weight, input, target):
        return None
    if spatial_kernels.applicable(input, target, weight):
        kernel = spatial_kernels.cross_entropy
    elif spatial_kernels.traceable(input, target):
        kernel = spatial_kernels.registered_cross_entropy
    else:
        return None
    try:
        return kernel(input, target, weight, ignore_index, reduction, label_smoothing)
    except TargetOutOfBoundsError as error:
        raise validation.target_out_of_bounds(
            target, error.row, input.shape[1], ignore_index, "cross_entropy"
        ) from None


def _checked_cross_entropy_inputs(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    op: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.dtype]:
    """Validate a cross entropy's tensors (torch's errors) and apply the autocast policy: returns
    (input, target, weight, the loss's dtype). A target of ``input``'s shape holds probabilities."""
    validation.check_tensor(input, "input", op)
    validation.check_tensor(target, "target", op)
    if input.dim() == 0:
        raise validation.zero_dim_cross_entropy_error(target)
    validation.check_class_input(input, op)
    n_classes = input.shape[1] if input.dim() >= 2 else input.shape[0]
    if target.shape == input.shape:
        validation.check_probability_target(input, target, ignore_index)
        input, target, weight = _autocast_float32(input, target, weight)
        validation.check_weight(weight, input, n_classes, op, strict_dtype=False)
        return input, target, weight, torch.promote_types(input.dtype, target.dtype)
    validation.check_index_target(input, target, op)
    input, weight = _autocast_float32(input, weight)
    validation.check_weight(weight, input, n_classes, op, strict_dtype=True)
    return input, target, weight, input.dtype


def _needs_torch_ops(weight: torch.Tensor | None, *tensors: torch.Tensor | None) -> bool:
    """Whether a loss takes the differentiable torch-ops path instead of the fused operators:
    under torch.func transforms or forward-mode AD (the operators have no jvp), or with a class
    weight that needs a gradient (probability targets; the kernels treat the weight as a
    constant)."""
    return validation.is_transformed(*tensors, weight) or (
        weight is not None and weight.requires_grad and torch.is_grad_enabled()
    )


def _cross_entropy_2d(
    logits: torch.Tensor,
    flat_target: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    op: str,
) -> torch.Tensor:
    """Cross entropy of validated (M, C) logits and (M,) or (M, C) targets (``target``: the
    caller's, for error positions): the fused kernel where one applies, else torch ops."""
    probability_target = flat_target.dim() == 2
    n_classes = logits.shape[1]
    plain = _needs_torch_ops(weight, logits, flat_target)
    fused_kernel = (
        None if plain else dispatch.cross_entropy_kernel(logits, flat_target, probability_target)
    )
    if not probability_target and fused_kernel is not cross_entropy_cpu.cross_entropy:
        checked = validation.check_target_range(target, n_classes, ignore_index, op)
        flat_target = checked.reshape(flat_target.shape)
    if fused_kernel is None:
        return _cross_entropy_rows(
            logits, flat_target, weight, ignore_index, reduction, label_smoothing
        )
    try:
        return fused_kernel(
            logits,
            flat_target if probability_target else flat_target.long(),
            weight,
            ignore_index,
            reduction,
            label_smoothing,
        )
    except TargetOutOfBoundsError as error:
        # The fused operator found it (its range check replaces validation's here).
        raise validation.target_out_of_bounds(
            target, error.row, n_classes, ignore_index, op
        ) from None


def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``cross_entropy(linear(input, linear_weight, linear_bias), target)`` without the N×C logits.

    torch 2.13's ``torch.nn.functional.linear_cross_entropy`` signature (its ``options`` aside:
    softclass always streams blocks of rows). Logits are made one block of rows at a time, used
    for the loss and the gradients, and dropped: peak extra memory is one block of logits plus
    the gradients of input, linear_weight and linear_bias (see
    :mod:`softclass.kernels.linear_cross_entropy_cpu`). Gradients flow to those three (not to
    ``target`` or ``weight``). Under autocast the whole op runs in float32 (torch's policy for
    the cross entropy; the product is not lowered to bfloat16 either).

    Args:
        input: ``(N, H)`` floating features (N items, H features).
        linear_weight: ``(C, H)``, ``input``'s dtype.
        target: class indices ``(N,)`` (int64/uint8, in ``[0, C)`` or ``ignore_index``) or
            class probabilities ``(N, C)`` (floating).
        linear_bias: optional ``(C,)``, ``input``'s dtype.
        weight, reduction, label_smoothing: as :func:`cross_entropy`.
        ignore_index: as :func:`cross_entropy`; ``None`` (torch's default here) means -100.

    Returns:
        The loss in ``input``'s dtype: ``(N,)`` for ``"none"``, else 0-d.
    """
    if has_torch_function_variadic(input, linear_weight, target, linear_bias, weight):
        return handle_torch_function(
            linear_cross_entropy,
            (input, linear_weight, target, linear_bias, weight),
            input,
            linear_weight,
            target,
            linear_bias=linear_bias,
            weight=weight,
            reduction=reduction,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
        )
    op = "linear_cross_entropy"
    reduction = validation.resolve_reduction(reduction)
    label_smoothing = validation.label_smoothing_value(label_smoothing)
    ignore_index = -100 if ignore_index is None else ignore_index
    n_classes = validation.check_linear_inputs(input, linear_weight, linear_bias, op)
    validation.check_tensor(target, "target", op)
    input, linear_weight, linear_bias, weight = _autocast_float32(
        input, linear_weight, linear_bias, weight
    )
    target = validation.check_linear_target(input, target, weight, n_classes, ignore_index, op)
    if _needs_torch_ops(weight, input, linear_weight, linear_bias, target):
        logits = input @ linear_weight.t()
        if linear_bias is not None:
            logits = logits + linear_bias
        return cross_entropy(
            logits,
            target,
            weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )
    try:
        return dispatch.linear_cross_entropy_kernel(input)(
            *(input, linear_weight, target, linear_bias, weight, ignore_index, reduction),
            float(label_smoothing),
        )
    except TargetOutOfBoundsError as error:
        raise validation.target_out_of_bounds(
            target, error.row, n_classes, ignore_index, op
        ) from None
