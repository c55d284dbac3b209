"""The multi-layer perceptron shared by every design: features → hidden layers → logits.

The network always ends in a plain linear layer producing logits; each design applies its own
output activation (identity, log_softmax, softmax) on top, so the same seed gives the same initial
weights whatever the design.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from numbers import Integral

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
# Bounds on a network's size, checked from its shape before any weight is allocated (a model file
# is input like any other: a hand-edited width of 2e8 must not take minutes and gigabytes).
MAX_HIDDEN_LAYERS = 100
MAX_PARAMETERS = 100_000_000  # weights and biases together: 400 MB in float32


@dataclass(frozen=True)
class MLPConfig:
    """Shape of the network. The default hidden layer is the seed's Iris 4-7-3 tanh network."""

    n_features: int  # width of the input layer (columns after preprocessing)
    n_classes: int  # width of the output layer (logits)
    hidden: tuple[int, ...] = (7,)  # widths of the hidden layers, in order; () for a linear model
    activation: str = "tanh"  # hidden-layer activation, a key of ACTIVATIONS

    def __post_init__(self) -> None:
        for name in ("n_features", "n_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ConfigError(
                    f"the network needs at least 1 feature and 1 class, got n_features="
                    f"{self.n_features!r}, n_classes={self.n_classes!r}"
                )
        if not isinstance(self.hidden, tuple | list):
            raise ConfigError(
                f"hidden layer widths must be a sequence of integers, got {self.hidden!r}"
            )
        if len(self.hidden) > MAX_HIDDEN_LAYERS:
            raise ConfigError(
                f"{len(self.hidden)} hidden layers: at most {MAX_HIDDEN_LAYERS} are allowed"
            )
        if any(
            isinstance(width, bool) or not isinstance(width, Integral) or width < 1
            for width in self.hidden
        ):
            raise ConfigError(f"hidden layer widths must be positive integers, got {self.hidden}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {self.activation!r}: expected one of {', '.join(ACTIVATIONS)}"
            )
        object.__setattr__(self, "n_features", int(self.n_features))
        object.__setattr__(self, "n_classes", int(self.n_classes))
        object.__setattr__(self, "hidden", tuple(int(width) for width in self.hidden))
        if self.n_parameters > MAX_PARAMETERS:
            widths = "-".join(_count(width, "") for width in self.widths)
            raise ConfigError(
                f"a {widths} network has {_count(self.n_parameters)} parameters: at most "
                f"{MAX_PARAMETERS:,} are allowed"
            )

    @property
    def widths(self) -> tuple[int, ...]:
        """Layer widths from input to output: ``(n_features, *hidden, n_classes)``."""
        return (self.n_features, *self.hidden, self.n_classes)

    @property
    def n_parameters(self) -> int:
        """Weights plus biases of the network, computed from its shape (nothing is allocated)."""
        return sum(
            width_out * (width_in + 1) for width_in, width_out in itertools.pairwise(self.widths)
        )

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every tensor in :class:`MLP`'s state dict, without building it.

        Linear layers sit at even positions of ``MLP.layers`` (activations between them).
        """
        shapes: dict[str, tuple[int, ...]] = {}
        for index, (width_in, width_out) in enumerate(itertools.pairwise(self.widths)):
            shapes[f"layers.{2 * index}.weight"] = (width_out, width_in)
            shapes[f"layers.{2 * index}.bias"] = (width_out,)
        return shapes

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


def _count(number: int, separator: str = ",") -> str:
    """``number`` with thousands separators, or its order of magnitude when it is huge."""
    if number < 10**18:
        return f"{number:,}" if separator else str(number)
    return f"about 10^{int(number.bit_length() * 0.30103)}"


class MLP(nn.Module):
    """Linear → activation → … → Linear. ``forward``: features ``(N, F)`` → logits ``(N, C)``."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
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
