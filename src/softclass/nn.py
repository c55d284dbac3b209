"""Drop-in ``torch.nn`` modules over :mod:`softclass.functional` (no math of their own).

Constructor arguments are torch's where torch has the module. Options are checked where torch
checks them: the reduction when the module is built, label smoothing when it is called (by the
functional form, with the same rules).
"""

from __future__ import annotations

import torch
from torch import nn

from softclass import functional, validation

__all__ = [
    "CrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "LogSoftmax",
    "MCEELoss",
    "NLLLoss",
    "OneHotMSELoss",
    "Softmax",
]


class _AlongDim(nn.Module):
    """A function of the softmax family applied along ``dim`` (None: torch's implicit choice)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_AlongDim):
    """Softmax along ``dim`` (see :func:`softclass.functional.softmax`)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.softmax(input, self.dim)


class LogSoftmax(_AlongDim):
    """Log-softmax along ``dim`` (see :func:`softclass.functional.log_softmax`)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.log_softmax(input, self.dim)


class _WeightedLoss(nn.Module):
    """A loss with an optional class-weight buffer (moves with ``.to()``, saved in state_dict)."""

    weight: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor | None,
        size_average: bool | None,
        reduce: bool | None,
        reduction: str,
    ) -> None:
        super().__init__()
        self.reduction = validation.resolve_reduction(reduction, size_average, reduce)
        if weight is not None:
            validation.check_tensor(weight, "weight", type(self).__name__)
        self.register_buffer("weight", weight)


class CrossEntropyLoss(_WeightedLoss):
    """Cross entropy of logits (see :func:`softclass.functional.cross_entropy`)."""

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities (see :func:`softclass.functional.nll_loss`)."""

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.nll_loss(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class _ProbabilityLoss(nn.Module):
    """A loss of probabilities against one-hot (or index) targets, with a reduction."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = validation.resolve_reduction(reduction)


class OneHotMSELoss(_ProbabilityLoss):
    """Squared error of probabilities against one-hot targets, summed over classes (design C)."""

    def forward(self, probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return functional.mse_onehot(probs, targets, reduction=self.reduction)


class MCEELoss(_ProbabilityLoss):
    """Mean cross-entropy error of probabilities against one-hot targets (design D)."""

    def forward(self, probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return functional.mcee(probs, targets, reduction=self.reduction)


class LinearCrossEntropyLoss(_WeightedLoss):
    """A linear layer + cross entropy fused, without the N×C logits in memory: torch 2.13's
    ``torch.nn.LinearCrossEntropyLoss`` (same constructor; ``out_features`` other than ``()``
    and ``options`` are not supported).

    Holds ``self.linear`` (``nn.Linear(in_features, num_classes, bias=bias)``) and the class
    weights as the buffer ``weight``; ``forward(input (N, H), target)`` is
    :func:`softclass.functional.linear_cross_entropy` with them.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        out_features: tuple[int, ...] = (),
        bias: bool = False,
        device=None,
        dtype=None,
        reduction: str = "mean",
        weight: torch.Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        op = type(self).__name__
        validation.check_linear_module(num_classes, tuple(out_features), weight, op)
        validation.check_label_smoothing(label_smoothing)
        super().__init__(weight, None, None, reduction)
        self.num_classes = num_classes
        self.out_features = tuple(out_features)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.linear = nn.Linear(in_features, num_classes, bias=bias, device=device, dtype=dtype)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.linear_cross_entropy(
            input,
            self.linear.weight,
            target,
            linear_bias=self.linear.bias,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
            f"bias={self.linear.bias is not None}, reduction={self.reduction}, "
            f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"
        )
