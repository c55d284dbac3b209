"""The nine classic pairing mistakes, made on purpose, for ``softclass check --demo``.

Each :class:`DemoMistake` holds the line of code that makes the mistake and builds, from a seeded
generator, the outputs / targets / loss name that line would hand to the loss;
:func:`run_demo` passes them to :func:`softclass.diagnostics.check.check_pairing`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from softclass.diagnostics.check import Finding, check_pairing

DemoInputs = tuple[torch.Tensor, torch.Tensor, str]


@dataclass(frozen=True)
class DemoMistake:
    """One mistake of the demo.

    Attributes:
        code: the :class:`~softclass.diagnostics.check.Finding` code the checker should report.
        title: the mistake in a few words.
        snippet: the code that makes it (``logits`` are raw model outputs ``(N, C)``, ``labels``
            class indices ``(N,)``).
        make_inputs: builds ``(outputs, targets, loss name)`` as the snippet would pass them.
    """

    code: str
    title: str
    snippet: str
    make_inputs: Callable[[torch.Generator], DemoInputs]


def _batch(
    generator: torch.Generator, n_items: int = 8, n_classes: int = 3, scale: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = scale * torch.randn(n_items, n_classes, generator=generator)
    labels = torch.randint(0, n_classes, (n_items,), generator=generator)
    return logits, labels


def _double_softmax(generator: torch.Generator) -> DemoInputs:
    logits, labels = _batch(generator, n_items=150)  # an Iris-sized batch
    return F.softmax(logits, dim=1), labels, "cross_entropy"


def _logits_into_nll(generator: torch.Generator) -> DemoInputs:
    logits, labels = _batch(generator)
    return logits, labels, "nll"


def _probs_into_nll(generator: torch.Generator) -> DemoInputs:
    logits, labels = _batch(generator)
    return F.softmax(logits, dim=1), labels, "nll"


def _log_of_softmax(generator: torch.Generator) -> DemoInputs:
    logits, labels = _batch(generator, scale=100.0)  # confident logits: softmax underflows to 0
    return torch.log(F.softmax(logits, dim=1)), labels, "nll"


def _one_hot_targets(generator: torch.Generator) -> DemoInputs:
    logits, labels = _batch(generator)
    return F.log_softmax(logits, dim=1), F.one_hot(labels, num_classes=3), "nll"


def _one_based_labels(generator: torch.Generator) -> DemoInputs:
    logits, labels = _batch(generator, n_items=12)
    labels[0] = 2  # make sure the last class occurs: labels then run 1..3
    return logits, labels + 1, "cross_entropy"


def _softmax_wrong_dim(generator: torch.Generator) -> DemoInputs:
    logits, labels = _batch(generator)
    return F.softmax(logits, dim=0), F.one_hot(labels, num_classes=3).float(), "mse"


def _mse_index_targets(generator: torch.Generator) -> DemoInputs:
    logits, labels = _batch(generator)
    return F.softmax(logits, dim=1), labels.float().unsqueeze(1), "mse"


def _unnormalized_log_probs(generator: torch.Generator) -> DemoInputs:
    published = torch.tensor([[-1.6563, -1.7563, -1.5563]])
    return published, torch.tensor([2]), "nll"


DEMO_MISTAKES: tuple[DemoMistake, ...] = (
    DemoMistake(
        "double-softmax",
        "softmax fed to cross_entropy",
        "loss = F.cross_entropy(F.softmax(logits, dim=1), labels)",
        _double_softmax,
    ),
    DemoMistake(
        "logits-into-nll",
        "raw logits fed to nll_loss",
        "loss = F.nll_loss(logits, labels)",
        _logits_into_nll,
    ),
    DemoMistake(
        "probs-into-nll",
        "probabilities fed to nll_loss without a log",
        "loss = F.nll_loss(F.softmax(logits, dim=1), labels)",
        _probs_into_nll,
    ),
    DemoMistake(
        "log-of-softmax",
        "log(softmax(x)) underflows to -inf",
        "loss = F.nll_loss(torch.log(F.softmax(logits, dim=1)), labels)  # logits ~ 100",
        _log_of_softmax,
    ),
    DemoMistake(
        "onehot-targets",
        "one-hot targets where class indices are expected",
        "loss = F.nll_loss(F.log_softmax(logits, dim=1), F.one_hot(labels, 3))",
        _one_hot_targets,
    ),
    DemoMistake(
        "one-based-labels",
        "labels numbered 1..C instead of 0..C-1",
        "loss = F.cross_entropy(logits, labels + 1)  # classes 1, 2, 3",
        _one_based_labels,
    ),
    DemoMistake(
        "softmax-wrong-dim",
        "softmax over the batch dimension",
        "loss = F.mse_loss(F.softmax(logits, dim=0), F.one_hot(labels, 3).float())",
        _softmax_wrong_dim,
    ),
    DemoMistake(
        "mse-broadcast",
        "softmax + MSE with class-index targets",
        "loss = F.mse_loss(F.softmax(logits, dim=1), labels.float().unsqueeze(1))",
        _mse_index_targets,
    ),
    DemoMistake(
        "unnormalized-log-probs",
        "log-probabilities whose rows do not normalize",
        "loss = F.nll_loss(torch.tensor([[-1.6563, -1.7563, -1.5563]]), torch.tensor([2]))",
        _unnormalized_log_probs,
    ),
)


def run_demo(seed: int = 0) -> list[tuple[DemoMistake, list[Finding]]]:
    """Make each mistake of :data:`DEMO_MISTAKES` and check it.

    Args:
        seed: seed of the generator the demo tensors are drawn from.

    Returns:
        One ``(mistake, findings)`` pair per mistake, in order.
    """
    generator = torch.Generator().manual_seed(seed)
    results = []
    for mistake in DEMO_MISTAKES:
        outputs, targets, loss_name = mistake.make_inputs(generator)
        results.append((mistake, check_pairing(outputs, targets, loss_name)))
    return results
