"""The four output/loss designs, A–D, as objects.

Each design knows the network's output activation (applied to the logits of the last layer), its
loss, how targets are encoded for it, and how to turn outputs into probabilities:

====== ====================== ==================== ========== ====================
design output                 loss                 targets    probabilities
====== ====================== ==================== ========== ====================
A      logits                 cross entropy        indices    softmax(output)
B      log_softmax(logits)    NLL                  indices    exp(output)
C      softmax(logits)        squared error (sum)  one-hot    output
D      softmax(logits)        mean CE error        one-hot    output
====== ====================== ==================== ========== ====================

A and B are the same computation; D equals them mathematically (but takes the log of a rounded
probability); C is a different loss. All losses come from :mod:`softclass.functional`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from softclass import functional
from softclass.errors import ConfigError


def _identity(logits: torch.Tensor) -> torch.Tensor:
    return logits


def _log_softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    return functional.log_softmax(logits, 1)


def _softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    return functional.softmax(logits, 1)


def _exp(log_probs: torch.Tensor) -> torch.Tensor:
    return log_probs.exp()


def _clamped_log(probs: torch.Tensor) -> torch.Tensor:
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


@dataclass(frozen=True)
class Design:
    """One output/loss pairing.

    Attributes:
        name: "A", "B", "C" or "D".
        title: a short human description.
        loss_name: the loss as the pairing checker names it ("cross_entropy", "nll", "mse", "mcee").
        target_encoding: "index" (int64 ``(N,)``) or "one_hot" (float ``(N, C)``).
        output: logits ``(N, C)`` → the network's output ``(N, C)``.
        loss: (output, encoded targets) → scalar mean loss.
        output_to_proba: output → probabilities ``(N, C)``.
        output_to_log_proba: output → log-probabilities ``(N, C)``, as stable as the design allows.
    """

    name: str
    title: str
    loss_name: str
    target_encoding: str
    output: Callable[[torch.Tensor], torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    output_to_proba: Callable[[torch.Tensor], torch.Tensor]
    output_to_log_proba: Callable[[torch.Tensor], torch.Tensor]

    def encode_targets(self, targets: torch.Tensor, n_classes: int) -> torch.Tensor:
        """Class indices ``(N,)`` → what this design's loss takes (indices or one-hot floats)."""
        if self.target_encoding == "index":
            return targets
        return functional.one_hot(targets, n_classes, dtype=torch.float32)

    def loss_from_logits(self, logits: torch.Tensor, encoded_targets: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch of logits ``(N, C)``."""
        return self.loss(self.output(logits), encoded_targets)

    def predict_proba(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(N, C)`` by this design's own rule."""
        return self.output_to_proba(self.output(logits))

    def predict_log_proba(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``(N, C)`` by this design's own rule."""
        return self.output_to_log_proba(self.output(logits))


DESIGNS: dict[str, Design] = {
    "A": Design(
        "A",
        "logits + cross entropy",
        "cross_entropy",
        "index",
        _identity,
        functional.cross_entropy,
        _softmax_rows,
        _log_softmax_rows,
    ),
    "B": Design(
        "B",
        "log_softmax + NLL",
        "nll",
        "index",
        _log_softmax_rows,
        functional.nll_loss,
        _exp,
        _identity,
    ),
    "C": Design(
        "C",
        "softmax + MSE (one-hot)",
        "mse",
        "one_hot",
        _softmax_rows,
        functional.mse_onehot,
        _identity,
        _clamped_log,
    ),
    "D": Design(
        "D",
        "softmax + mean cross-entropy error",
        "mcee",
        "one_hot",
        _softmax_rows,
        functional.mcee,
        _identity,
        _clamped_log,
    ),
}


def get_design(name: str) -> Design:
    """The design called ``name`` (case-insensitive); ConfigError listing the valid names."""
    key = str(name).strip().upper()
    if key not in DESIGNS:
        raise ConfigError(
            f"unknown design {name!r}: expected one of {', '.join(DESIGNS)} "
            f"({'; '.join(f'{d.name} = {d.title}' for d in DESIGNS.values())})"
        )
    return DESIGNS[key]
