"""Hidden-layer activations: one registry that every engine and backend looks up.

Each entry knows its module (what :class:`softclass.mlp.model.MLP` stacks), its forward and its
derivative as the batched engine computes them (``backward`` maps d loss / d output to d loss /
d pre-activation, written in terms of the output where that is cheaper), and the id of its branch
in the compiled loops (``training/mlp_native.c``), or None when the compiled loops lack it. The
model is scikit-learn's ``neural_network/_base.py``, where ``ACTIVATIONS`` and ``DERIVATIVES`` sit
side by side.

========== =================== ===================================== =========
name       forward             derivative (grad g, pre x, output y)  C id
========== =================== ===================================== =========
tanh       tanh(x)             g·(1 - y²)                            0
relu       max(x, 0)           g where y > 0, else 0                 1
sigmoid    1 / (1 + e^-x)      g·y·(1 - y)                           2
gelu       x·Φ(x)              g·(Φ(x) + x·φ(x))                     3
identity   x                   g                                     4
silu       x·σ(x)              g·σ(x)·(1 + x·(1 - σ(x)))             —
========== =================== ===================================== =========
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from softclass.errors import ConfigError
from softclass.mlp.registry import add_entry, get_entry, native_entries

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Activation:
    """One hidden activation.

    Attributes:
        name: the key in :data:`ACTIVATIONS` (what ``--activation`` takes).
        module: builds the ``torch.nn`` module the autograd model uses.
        forward: pre-activations ``(..., width)`` → outputs of the same shape.
        backward: ``(grad, pre, out)`` → d loss / d pre-activation, all the same shape; ``grad``
            is d loss / d output.
        native_code: the branch of ``mlp_native.c``'s ``activate`` for it, or None (the compiled
            backend then refuses the activation).

    A missing fact raises ConfigError naming it when the entry is made.
    """

    name: str
    module: Callable[[], nn.Module]
    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    native_code: int | None

    def __post_init__(self) -> None:
        for name in ("name", "module", "forward", "backward"):
            if getattr(self, name) in (None, ""):
                raise ConfigError(f"activation {self.name!r}: fact {name!r} is missing")


def _tanh_backward(grad: torch.Tensor, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(grad, grad, out * out, value=-1.0)


def _relu_backward(grad: torch.Tensor, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    # grad where the unit was active (output > 0), else 0, in one op
    return torch.ops.aten.threshold_backward(grad, out, 0)


def _sigmoid_backward(grad: torch.Tensor, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return grad * (out * (1.0 - out))


def _gelu_backward(grad: torch.Tensor, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1.0 + torch.erf(pre * _INV_SQRT2))
    pdf = torch.exp(-0.5 * pre * pre) * _INV_SQRT_2PI
    return grad * (cdf + pre * pdf)


def _silu_backward(grad: torch.Tensor, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    sigmoid = torch.sigmoid(pre)
    return grad * sigmoid * (1.0 + pre * (1.0 - sigmoid))


def _identity(pre: torch.Tensor) -> torch.Tensor:
    return pre


def _identity_backward(grad: torch.Tensor, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return grad


ACTIVATIONS: dict[str, Activation] = {}
"""The registry: activation name → :class:`Activation` (what ``--activation`` takes)."""


def register_activation(activation: Activation) -> Activation:
    """Add ``activation`` to :data:`ACTIVATIONS` (the command line, the estimator and every
    backend then take it); ConfigError when its name is taken."""
    return add_entry(ACTIVATIONS, "activation", activation)


register_activation(Activation("tanh", nn.Tanh, torch.tanh, _tanh_backward, 0))
register_activation(Activation("relu", nn.ReLU, torch.relu, _relu_backward, 1))
register_activation(Activation("sigmoid", nn.Sigmoid, torch.sigmoid, _sigmoid_backward, 2))
register_activation(Activation("gelu", nn.GELU, nn.functional.gelu, _gelu_backward, 3))
register_activation(Activation("identity", nn.Identity, _identity, _identity_backward, 4))
register_activation(Activation("silu", nn.SiLU, nn.functional.silu, _silu_backward, None))


NATIVE_ENTRIES: dict[int, Activation] = native_entries(ACTIVATIONS)


def get_activation(name: str) -> Activation:
    """The activation called ``name``; ConfigError listing the accepted names otherwise."""
    return get_entry(ACTIVATIONS, "activation", name)
