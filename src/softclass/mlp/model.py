"""The multi-layer perceptron shared by every design: features → hidden layers → logits.

The network always ends in a plain linear layer producing logits; each design applies its own
output activation (identity, log_softmax, softmax) on top, so the same seed gives the same initial
weights whatever the design.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch
from torch import nn

from softclass.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


@dataclass(frozen=True)
class MLPConfig:
    """Shape of the network. The default hidden layer is the seed's Iris 4-7-3 tanh network."""

    n_features: int  # width of the input layer (columns after preprocessing)
    n_classes: int  # width of the output layer (logits)
    hidden: tuple[int, ...] = (7,)  # widths of the hidden layers, in order; () for a linear model
    activation: str = "tanh"  # hidden-layer activation, a key of ACTIVATIONS

    def __post_init__(self) -> None:
        if self.n_features < 1 or self.n_classes < 1:
            raise ConfigError(
                f"the network needs at least 1 feature and 1 class, got n_features="
                f"{self.n_features}, n_classes={self.n_classes}"
            )
        if any(int(width) < 1 for width in self.hidden):
            raise ConfigError(f"hidden layer widths must be positive integers, got {self.hidden}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {self.activation!r}: expected one of {', '.join(ACTIVATIONS)}"
            )
        object.__setattr__(self, "hidden", tuple(int(width) for width in self.hidden))

    def to_dict(self) -> dict:
        """JSON-safe form (saved beside the weights)."""
        return {**asdict(self), "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, data: dict) -> MLPConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            n_features=int(data["n_features"]),
            n_classes=int(data["n_classes"]),
            hidden=tuple(data["hidden"]),
            activation=str(data["activation"]),
        )


class MLP(nn.Module):
    """Linear → activation → … → Linear. ``forward``: features ``(N, F)`` → logits ``(N, C)``."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.n_features, *config.hidden, config.n_classes]
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(width_in, width_out))
            if index < len(widths) - 2:
                layers.append(ACTIVATIONS[config.activation]())
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def build_mlp(config: MLPConfig, seed: int) -> MLP:
    """A freshly initialised MLP whose weights depend only on ``config`` and ``seed``.

    The global random state is left as it was (the seed is applied inside a forked RNG).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(config)
