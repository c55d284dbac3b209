"""M networks of the same shape with their parameters stacked along a leading member axis.

Every member ``m`` is an independent copy of the network with its own design and seed (initial
weights exactly as ``build_mlp(config, seed)``); weights are ``(M, out, in)``, biases ``(M, out)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from softclass.data.expansion import InputExpansion
from softclass.mlp.activations import get_activation
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLP, MLPConfig, build_mlp
from softclass.training.batching import batch_bounds

# Rows per chunk when evaluating on a large table (bounds the (M, rows, width) activations).
_EVAL_CHUNK_ROWS = 16384
_EVAL_LOGITS_BUDGET = 1 << 24  # 64 MB of float32 logits held at once by member_scores


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: a design name ("A"–"D") and a seed."""

    design: str
    seed: int


class StackedMLP:
    """M MLPs of one shape with parameters stacked on a leading member axis.

    ``weights[k]`` is ``(M, out_k, in_k)`` and ``biases[k]`` ``(M, out_k)`` for layer ``k``, laid
    out as ``torch.nn.Linear`` stores them, so member ``m``'s slices are a normal :class:`MLP`'s.
    """

    def __init__(self, config: MLPConfig, weights: list[torch.Tensor], biases: list[torch.Tensor]):
        self.config = config
        self.weights = weights
        self.biases = biases

    @classmethod
    def from_seeds(
        cls,
        config: MLPConfig,
        seeds: Sequence[int],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> StackedMLP:
        """Member ``m`` starts from exactly ``build_mlp(config, seeds[m])``'s weights."""
        layers = [_linear_layers(build_mlp(config, seed)) for seed in seeds]
        weights = [
            torch.stack([member[k].weight.detach() for member in layers]).to(device, dtype)
            for k in range(len(layers[0]))
        ]
        biases = [
            torch.stack([member[k].bias.detach() for member in layers]).to(device, dtype)
            for k in range(len(layers[0]))
        ]
        return cls(config, weights, biases)

    @property
    def n_members(self) -> int:
        return self.weights[0].shape[0]

    def parameters(self) -> list[torch.Tensor]:
        """Weights and biases in layer order: ``[W0, b0, W1, b1, ...]``."""
        return [tensor for pair in zip(self.weights, self.biases, strict=True) for tensor in pair]

    def logits(self, features: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Logits ``(M, N, C)`` of every member for shared features ``(N, F)``.

        Computed in ``dtype`` (default: the parameters' dtype), in chunks of rows; each row's
        logits depend only on that row.
        """
        dtype = self.weights[0].dtype if dtype is None else dtype
        weights = [weight.to(dtype) for weight in self.weights]
        biases = [bias.to(dtype) for bias in self.biases]
        chunks = [
            self._forward_shared(features[start:stop].to(dtype), weights, biases)
            for start, stop in batch_bounds(features.shape[0], _EVAL_CHUNK_ROWS)
        ]
        if not chunks:
            return features.new_zeros(self.n_members, 0, self.config.n_classes, dtype=dtype)
        return torch.cat(chunks, dim=1)

    def _forward_shared(
        self, features: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]
    ) -> torch.Tensor:
        hidden = features
        last = len(weights) - 1
        activation = get_activation(self.config.activation)
        for index, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
            hidden = torch.matmul(hidden, weight.transpose(1, 2)) + bias.unsqueeze(1)
            if index < last:
                hidden = activation.forward(hidden)
        return hidden

    def to_mlp(self, member: int) -> MLP:
        """Member ``member`` as a normal :class:`MLP` (float32 or the stack's dtype, on CPU)."""
        mlp = MLP(self.config).to(self.weights[0].dtype)
        with torch.no_grad():
            for layer, weight, bias in zip(
                _linear_layers(mlp), self.weights, self.biases, strict=True
            ):
                layer.weight.copy_(weight[member].cpu())
                layer.bias.copy_(bias[member].cpu())
        return mlp


def _linear_layers(mlp: MLP) -> list[torch.nn.Linear]:
    return [layer for layer in mlp.layers if isinstance(layer, torch.nn.Linear)]


def member_losses(
    logits: torch.Tensor,
    targets: torch.Tensor,
    members: Sequence[Member],
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Each member's design loss ``(M,)`` (mean over rows) from logits ``(M, N, C)`` and class
    indices ``(N,)``: the design's own :mod:`softclass.functional` loss, with the run's label
    smoothing (:meth:`~softclass.mlp.designs.Design.smoothed`)."""
    n_classes = logits.shape[2]
    losses = []
    for position, member in enumerate(members):
        design = get_design(member.design).smoothed(label_smoothing)
        encoded = design.encode_targets(targets, n_classes)
        losses.append(design.row_losses(logits[position], encoded).mean())
    return torch.stack(losses)


def member_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction ``(M,)`` float64 of rows whose arg-max class is the target (any design)."""
    return (logits.argmax(2) == targets.view(1, -1)).double().mean(1)


def member_scores(
    network: StackedMLP,
    features: torch.Tensor,
    targets: torch.Tensor,
    members: Sequence[Member],
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's design loss (mean, in the parameters' dtype; label-smoothed by
    ``label_smoothing`` as in training) and accuracy (float64), both ``(M,)``, on shared rows
    ``features`` ``(N, F)`` with class indices ``targets`` ``(N,)``.

    The ``(M, N, C)`` logits are held at once up to :data:`_EVAL_LOGITS_BUDGET` logits; beyond
    it (thousands of classes) the rows are scored in chunks and the means taken at the end.
    """
    n_members, n_rows = network.n_members, features.shape[0]
    chunk = max(1, _EVAL_LOGITS_BUDGET // (n_members * network.config.n_classes))
    if n_rows <= chunk:
        logits = network.logits(features)
        losses = member_losses(logits, targets, members, label_smoothing)
        return losses, member_accuracy(logits, targets)
    loss_sum = torch.zeros(n_members, dtype=torch.float64, device=features.device)
    correct = torch.zeros(n_members, dtype=torch.float64, device=features.device)
    for start, stop in batch_bounds(n_rows, chunk):
        logits = network.logits(features[start:stop])
        losses = member_losses(logits, targets[start:stop], members, label_smoothing)
        loss_sum += losses.double() * (stop - start)
        correct += member_accuracy(logits, targets[start:stop]) * (stop - start)
    return (loss_sum / n_rows).to(network.weights[0].dtype), correct / n_rows


@dataclass(frozen=True)
class TrainingRows:
    """Training rows as one table ``(N, F + 1 [+ 1])``: features, the class index (as a float,
    exact) and the optional row weight; and the class indices ``(N,)`` int64 of the targets (the
    torch backend gathers them per epoch; the compiled backend reads the table's column). No
    column per class: the table's size does not grow with the number of classes. With bins
    (``expansion``) the table's F columns are the compact features and ``raw`` float64 (N, B)
    the binned values; each batch is expanded to the network's inputs where it is gathered."""

    table: torch.Tensor
    n_features: int
    n_classes: int
    weighted: bool
    targets: torch.Tensor
    raw: torch.Tensor | None = None
    expansion: InputExpansion | None = None
