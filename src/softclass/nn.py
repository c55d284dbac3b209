"""Drop-in ``torch.nn`` modules over :mod:`softclass.functional` (no math of their own).

Each module subclasses torch's own class where torch has one (``isinstance(module,
torch.nn.CrossEntropyLoss)`` holds, so libraries that look at the loss's type — skorch's
``predict_proba``, its log of probabilities before ``NLLLoss`` — behave as with torch), with
torch's constructor, attributes, buffers (``weight``), ``extra_repr`` and state_dict keys; only
``forward`` differs: it calls :mod:`softclass.functional`. Options are checked where torch
checks them, except the reduction, which is checked when the module is built.

``torch.fx.symbolic_trace`` records each ``forward`` as one call of the functional form;
``torch.jit.script`` compiles it to one call of a registered operator (see
:mod:`softclass.scripting`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.loss import _Loss

from softclass import functional, validation
from softclass import scripting as _scripting  # noqa: F401  (registers the TorchScript entries)

__all__ = [
    "CrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "LogSoftmax",
    "MCEELoss",
    "NLLLoss",
    "OneHotMSELoss",
    "Softmax",
]


class Softmax(nn.Softmax):
    """Softmax along ``dim`` (see :func:`softclass.functional.softmax`); a ``torch.nn.Softmax``."""

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return torch.ops.softclass.nn_softmax(input, self.dim, False)
        return functional.softmax(input, self.dim)


class LogSoftmax(nn.LogSoftmax):
    """Log-softmax along ``dim`` (see :func:`softclass.functional.log_softmax`); a
    ``torch.nn.LogSoftmax``."""

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return torch.ops.softclass.nn_softmax(input, self.dim, True)
        return functional.log_softmax(input, self.dim)


def _checked_weight(weight: Tensor | None, module: str) -> Tensor | None:
    if weight is not None:
        validation.check_tensor(weight, "weight", module)
    return weight


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Cross entropy of logits (see :func:`softclass.functional.cross_entropy`); a
    ``torch.nn.CrossEntropyLoss`` with the same constructor, buffer ``weight`` and attributes
    ``ignore_index``, ``reduction``, ``label_smoothing``."""

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        weight = _checked_weight(weight, type(self).__name__)
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.reduction = validation.resolve_reduction(self.reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return torch.ops.softclass.nn_cross_entropy(
                input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing
            )
        return functional.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


class NLLLoss(nn.NLLLoss):
    """Negative log-likelihood of log-probabilities (see :func:`softclass.functional.nll_loss`);
    a ``torch.nn.NLLLoss``."""

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        weight = _checked_weight(weight, type(self).__name__)
        super().__init__(weight, size_average, ignore_index, reduce, reduction)
        self.reduction = validation.resolve_reduction(self.reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return torch.ops.softclass.nn_nll_loss(
                input, target, self.weight, self.ignore_index, self.reduction
            )
        return functional.nll_loss(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class _ProbabilityLoss(_Loss):
    """A loss of probabilities against one-hot (or index) targets, with a reduction (a
    ``torch.nn`` loss: torch has no class for these)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.reduction = validation.resolve_reduction(reduction)


class OneHotMSELoss(_ProbabilityLoss):
    """Squared error of probabilities against one-hot targets, summed over classes (design C)."""

    def forward(self, probs: Tensor, targets: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return torch.ops.softclass.nn_mse_onehot(probs, targets, self.reduction)
        return functional.mse_onehot(probs, targets, reduction=self.reduction)


class MCEELoss(_ProbabilityLoss):
    """Mean cross-entropy error of probabilities against one-hot targets (design D)."""

    def forward(self, probs: Tensor, targets: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return torch.ops.softclass.nn_mcee(probs, targets, self.reduction)
        return functional.mcee(probs, targets, reduction=self.reduction)


class LinearCrossEntropyLoss(nn.LinearCrossEntropyLoss):
    """A linear layer + cross entropy fused, without the N×C logits in memory: a
    ``torch.nn.LinearCrossEntropyLoss`` (same constructor and attributes; ``out_features`` other
    than ``()`` and ``options`` other than None are not supported).

    Holds ``self.linear`` (``nn.Linear(in_features, num_classes, bias=bias)``) and the class
    weights as the buffer ``weight``; ``forward(input (N, H), target)`` is
    :func:`softclass.functional.linear_cross_entropy` with them.
    """

    # torch's class annotates ``options`` with a type TorchScript cannot compile; softclass
    # has no options (always None): annotations without it, and TorchScript skips it.
    __jit_ignored_attributes__ = ("options",)
    num_classes: int
    out_features: tuple[int, ...]
    reduction: str
    ignore_index: int | None
    label_smoothing: float

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
        weight: Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        options: None = None,
    ) -> None:
        op = type(self).__name__
        validation.check_linear_module(num_classes, tuple(out_features), weight, options, op)
        super().__init__(
            in_features,
            num_classes,
            out_features=tuple(out_features),
            bias=bias,
            device=device,
            dtype=dtype,
            reduction=reduction,
            weight=weight,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
        )
        self.reduction = validation.resolve_reduction(reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return torch.ops.softclass.nn_linear_cross_entropy(
                input,
                self.linear.weight,
                target,
                self.linear.bias,
                self.weight,
                self.reduction,
                self.ignore_index,
                self.label_smoothing,
            )
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
