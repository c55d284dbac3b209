"""The optimizer hyper-parameters and their one set of defaults (no torch import: the command
line reads these defaults for its help text). The optimizers themselves are in
:mod:`softclass.mlp.optimizers`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptimizerParams:
    """Every optimizer hyper-parameter, with its one default (each optimizer reads its own)."""

    learning_rate: float = 0.01  # step size; with momentum 0.9 fits z-scored Iris in 100 epochs
    momentum: float = 0.9  # SGD momentum μ (dampening 0); 0 = plain SGD; Adam/AdamW ignore it
    nesterov: bool = False  # SGD: Nesterov momentum (needs momentum > 0)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam/AdamW moving-average rates
    eps: float = 1e-8  # Adam/AdamW denominator guard
    weight_decay: float = 0.0  # λ: L2 penalty (sgd, adam) or decoupled decay (adamw)


DEFAULTS = OptimizerParams()
