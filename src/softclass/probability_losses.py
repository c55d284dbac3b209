"""The losses of the two older designs (C: softmax + squared error, D: softmax + mean
cross-entropy error) on probabilities, and the one-hot encoding of their targets.

Both take a softclass extension, ``label_smoothing`` ε: the target rows ``y`` become
``(1 - ε)·y + ε/C`` (as torch's cross entropy smooths its targets), so that every design can
train against label-smoothed targets (:meth:`softclass.mlp.designs.Design.smoothed`).

Re-exported by :mod:`softclass.functional` (``one_hot``, ``mse_onehot``, ``mcee``); half-precision
probabilities are computed in float32 and the result is cast back to their dtype.
"""

from __future__ import annotations

import torch
from torch.overrides import handle_torch_function, has_torch_function_variadic

from softclass import validation
from softclass.kernels.row_blocks import compute_dtype

__all__ = ["mcee", "mse_onehot", "one_hot"]


def _reduce_items(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-item losses as they are ('none'), summed, or averaged over the items ('mean')."""
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.sum() / losses.numel()


def one_hot(
    tensor: torch.Tensor, num_classes: int = -1, dtype: torch.dtype = torch.int64
) -> torch.Tensor:
    """One-hot encode class indices: ``(*,)`` int → ``(*, num_classes)`` with a 1 at each index.

    As ``torch.nn.functional.one_hot`` (int64 result, ``num_classes=-1`` uses
    ``tensor.max() + 1``); ``dtype`` (a softclass extension) gives e.g. float targets for the
    losses of designs C and D directly.
    """
    if has_torch_function_variadic(tensor):
        return handle_torch_function(one_hot, (tensor,), tensor, num_classes, dtype)
    op = "one_hot"
    validation.check_tensor(tensor, "tensor", op)
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise RuntimeError(
            f"{op}: tensor must hold integer class indices, got dtype {tensor.dtype}"
        )
    if num_classes == -1:
        if tensor.numel() == 0:
            raise RuntimeError(
                f"{op}: cannot infer num_classes from an empty tensor; pass num_classes"
            )
        num_classes = int(tensor.max()) + 1
    if num_classes < 1:
        raise ValueError(f"{op}: num_classes must be -1 or at least 1, got {num_classes}")
    indices = validation.check_target_range(tensor, num_classes, ignore_index=-100, op=op)
    encoded = torch.zeros(*tensor.shape, num_classes, dtype=dtype, device=tensor.device)
    return encoded.scatter_(-1, indices.unsqueeze(-1), 1)


def _prepared(
    probs: torch.Tensor, targets: torch.Tensor, reduction: str, label_smoothing: float, op: str
) -> tuple[str, torch.Tensor]:
    """Validate the reduction and ``(N, C)``/``(C,)`` probabilities; return (the reduction,
    one-hot (or soft) float targets label-smoothed by ``label_smoothing`` ε: ``(1 - ε)·y + ε/C``).
    """
    reduction = validation.resolve_reduction(reduction)
    encoded = _unsmoothed_targets(probs, targets, op)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(
            f"{op}: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}"
        )
    if label_smoothing == 0.0:
        return reduction, encoded
    return reduction, encoded * (1.0 - label_smoothing) + label_smoothing / probs.shape[-1]


def _unsmoothed_targets(probs: torch.Tensor, targets: torch.Tensor, op: str) -> torch.Tensor:
    validation.check_tensor(probs, "probs", op)
    validation.check_tensor(targets, "targets", op)
    validation.check_floating(probs, "probs", op)
    validation.check_same_device(probs, targets, "probs and targets", op)
    if probs.dim() not in (1, 2):
        raise ValueError(f"{op}: probs must have shape (N, C) or (C,), got {list(probs.shape)}")
    n_classes = probs.shape[-1]
    if targets.is_floating_point():
        if targets.shape != probs.shape:
            raise ValueError(
                f"{op}: one-hot targets must have the shape of probs {list(probs.shape)}, got "
                f"{list(targets.shape)}; class indices must have shape {list(probs.shape[:-1])}"
            )
        return targets.to(compute_dtype(probs.dtype))
    if targets.dtype == torch.bool or targets.shape != probs.shape[:-1]:
        raise ValueError(
            f"{op}: targets must be class indices of shape {list(probs.shape[:-1])} (integer) or "
            f"one-hot rows of shape {list(probs.shape)} (float), got {targets.dtype} of shape "
            f"{list(targets.shape)}"
        )
    return one_hot(targets, n_classes, dtype=compute_dtype(probs.dtype))


def mse_onehot(
    probs: torch.Tensor,
    targets: torch.Tensor,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Squared error against one-hot targets, summed over classes: the seed's MSE (Brier score).

    ``loss_n = sum_c (p[n, c] - y[n, c])^2``; ``mean`` averages over the N items (not over N·C
    elements as ``torch.nn.functional.mse_loss`` does). Example: p = (0.2, 0.7, 0.1), y = (0, 1, 0)
    gives 0.04 + 0.09 + 0.01 = 0.14.

    Args:
        probs: probabilities ``(N, C)`` or ``(C,)``, floating.
        targets: one-hot (or soft) float targets of ``probs``' shape, or int class indices of
            shape ``(N,)`` / ``()``.
        reduction: ``"none"`` (per item), ``"sum"`` or ``"mean"``.
        label_smoothing: ε in [0, 1]: the targets become ``(1 - ε)·y + ε/C`` (0: as given).

    Returns:
        The loss in ``probs``' dtype.
    """
    if has_torch_function_variadic(probs, targets):
        return handle_torch_function(
            mse_onehot, (probs, targets), probs, targets, reduction, label_smoothing
        )
    reduction, encoded = _prepared(probs, targets, reduction, label_smoothing, "mse_onehot")
    squared = (probs.to(encoded.dtype) - encoded).square().sum(-1)
    return _reduce_items(squared, reduction).to(probs.dtype)


def mcee(
    probs: torch.Tensor,
    targets: torch.Tensor,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy error of probabilities: ``-sum_c y[n, c] * log p[n, c]`` per item.

    With one-hot targets this is ``-log p[n, target]``: e.g. ``-log(0.70) = 0.36``. It equals
    cross entropy of the logits the probabilities came from. Probabilities are clamped below at
    the dtype's smallest normal number (about 1.2e-38 for float32) so the loss stays finite
    (at most about 87.3 per item in float32) where a probability underflowed to 0; the clamp
    passes no gradient there. With ``label_smoothing`` ε and logits' probabilities it equals
    ``cross_entropy(logits, targets, label_smoothing=ε)``.

    Args and return: as :func:`mse_onehot`.
    """
    if has_torch_function_variadic(probs, targets):
        return handle_torch_function(
            mcee, (probs, targets), probs, targets, reduction, label_smoothing
        )
    reduction, encoded = _prepared(probs, targets, reduction, label_smoothing, "mcee")
    floor = torch.finfo(encoded.dtype).tiny
    log_probs = probs.to(encoded.dtype).clamp_min(floor).log()
    losses = -(encoded * log_probs).sum(-1)
    return _reduce_items(losses, reduction).to(probs.dtype)
