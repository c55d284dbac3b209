"""torch.optim: the outside reference the optimizer registry is held to.

Tests only: softclass itself never builds a ``torch.optim`` optimizer (building one imports
``torch._dynamo``). A registry entry without a counterpart here fails its tests by name.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from softclass.mlp.optimizers import OptimizerParams


def torch_optimizer(
    name: str, parameters: Iterable[torch.Tensor], params: OptimizerParams, fused: bool = False
) -> torch.optim.Optimizer:
    """torch.optim's optimizer for the registry entry ``name`` with the hyper-parameters
    ``params`` (``fused``: torch's fused kernels, else its default for-each implementation).

    Raises:
        KeyError: ``name`` has no torch.optim counterpart in this module.
    """
    if name == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=params.learning_rate,
            momentum=params.momentum,
            nesterov=params.nesterov,
            weight_decay=params.weight_decay,
            fused=fused,
        )
    if name == "rmsprop":  # torch has no fused RMSprop: its for-each form is the same sequence
        return torch.optim.RMSprop(
            parameters,
            lr=params.learning_rate,
            alpha=params.rms_decay,
            eps=params.eps,
            weight_decay=params.weight_decay,
            foreach=fused,
        )
    adam_family = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if name not in adam_family:
        raise KeyError(
            f"registry optimizer {name!r} has no torch.optim reference in tests/torch_reference.py"
        )
    return adam_family[name](
        parameters,
        lr=params.learning_rate,
        betas=params.betas,
        eps=params.eps,
        weight_decay=params.weight_decay,
        fused=fused,
    )
