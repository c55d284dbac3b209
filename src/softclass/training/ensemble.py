"""Many MLPs trained at once: the four designs × K seeds as one batched computation.

Every member ``m`` of an ensemble is an independent copy of the same network shape with its own
design (output activation and loss), its own seed (initial weights exactly as
``build_mlp(config, seed)``) and its own batch order (``epoch_permutation(n_rows, seed, epoch)``).
Parameters are stacked along a leading member axis — weights ``(M, out, in)``, biases ``(M, out)``
— and one training step is a handful of batched matmuls over an ``(M, B, F)`` batch gathered per
member. The loss of member ``m`` is its own (weighted) mean over its own batch; the step minimises
the sum of the members' losses, whose gradient with respect to member ``m``'s parameters is exactly
member ``m``'s own gradient, so nothing mixes between members.

The backward pass is written by hand (autograd's per-op bookkeeping dominates at these sizes):

* designs A, B — d loss / d logits = (softmax(z) - onehot) / B (cross entropy through softmax);
* design D — the same, times p_t·(1/p_t): 1 up to rounding (D takes the log of a rounded
  probability, so it drifts from A by rounding, as when trained alone), 0 where D's clamp of the
  probability at the dtype's smallest normal holds;
* design C — with p = softmax(z) and g = 2 (p - onehot) / B: d loss / d z = p ⊙ (g - ⟨g, p⟩);
* hidden layers — the activation's derivative, written in terms of its output where possible.

Optimizers (SGD with optional momentum, Adam) update all members with the same arithmetic as
``torch.optim.SGD`` / ``torch.optim.Adam`` on one model alone, on the stacked tensors.

Small networks on CPU train through compiled loops instead (:mod:`softclass.training.mlp_native`:
the same formulas, row by row in C, whole epochs per call), since there the cost of a step is
torch's per-op dispatch, not arithmetic; ``SOFTCLASS_NATIVE=0`` or a missing C compiler leaves the
torch path. The two paths agree to rounding (the order of the sums differs).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from softclass.errors import ConfigError, DataError
from softclass.evaluation.stats import (
    MeanInterval,
    PairedComparison,
    mean_interval,
    paired_comparison,
    t_quantile,
)
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLP, MLPConfig, build_mlp
from softclass.training import mlp_native
from softclass.training.batching import batch_bounds, epoch_permutation

OPTIMIZERS = ("sgd", "adam")

# Rows per chunk when evaluating on a large table (bounds the (M, rows, width) activations).
_EVAL_CHUNK_ROWS = 16384
# The compiled loops train networks whose largest layer has at most this many weights; above it
# torch's BLAS matmuls win (see _COMPILED_MAX_LAYER_WEIGHTS's measurement in benchmarks/RESULTS.md).
_COMPILED_MAX_LAYER_WEIGHTS = 1024
# Row indices per compiled call: (seeds, epochs, rows) int64 orders are built a chunk at a time.
_COMPILED_ORDER_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: a design name ("A"–"D") and a seed."""

    design: str
    seed: int


@dataclass(frozen=True)
class EnsembleSettings:
    """How every member is trained (the same for all; members differ by design and seed)."""

    epochs: int = 100  # passes over the training rows
    batch_size: int = 10  # rows per optimizer step (the last batch of an epoch may be shorter)
    optimizer: str = "sgd"  # "sgd" or "adam"
    learning_rate: float = 0.01  # step size of either optimizer
    momentum: float = 0.0  # SGD momentum (torch.optim.SGD's, dampening 0, not Nesterov)
    adam_betas: tuple[float, float] = (0.9, 0.999)  # Adam's moving-average rates
    adam_eps: float = 1e-8  # Adam's denominator guard
    shuffle: bool = True  # visit rows in each epoch's seeded permutation (False: table order)

    def __post_init__(self) -> None:
        if int(self.epochs) < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}"
            )
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must lie in [0, 1), got {self.momentum}")
        if not all(0.0 <= beta < 1.0 for beta in self.adam_betas):
            raise ConfigError(f"adam_betas must lie in [0, 1), got {self.adam_betas}")


def _activation_forward(name: str, pre: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return pre.tanh()
    if name == "relu":
        return pre.relu()
    if name == "sigmoid":
        return pre.sigmoid()
    if name == "gelu":
        return torch.nn.functional.gelu(pre)
    return pre


def _activation_backward(
    name: str, grad: torch.Tensor, pre: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """d loss / d pre-activation from d loss / d activation ``grad`` (all ``(M, B, width)``)."""
    if name == "tanh":
        return torch.addcmul(grad, grad, out * out, value=-1.0)
    if name == "relu":  # grad where the unit was active (output > 0), else 0, in one op
        return torch.ops.aten.threshold_backward(grad, out, 0)
    if name == "sigmoid":
        return grad * (out * (1.0 - out))
    if name == "gelu":
        cdf = 0.5 * (1.0 + torch.erf(pre * (1.0 / math.sqrt(2.0))))
        pdf = torch.exp(-0.5 * pre * pre) * (1.0 / math.sqrt(2.0 * math.pi))
        return grad * (cdf + pre * pdf)
    return grad


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
        for index, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
            hidden = torch.matmul(hidden, weight.transpose(1, 2)) + bias.unsqueeze(1)
            if index < last:
                hidden = _activation_forward(self.config.activation, hidden)
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

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy copies of every parameter (for pickling without torch objects)."""
        return {
            f"{kind}{index}": tensor.detach().cpu().numpy().copy()
            for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True))
            for kind, tensor in (("weight", weight), ("bias", bias))
        }

    @classmethod
    def from_state_arrays(
        cls, config: MLPConfig, arrays: dict[str, np.ndarray], device: torch.device | str = "cpu"
    ) -> StackedMLP:
        """Inverse of :meth:`state_arrays`."""
        n_layers = len(config.hidden) + 1
        weights = [torch.from_numpy(arrays[f"weight{k}"]).to(device) for k in range(n_layers)]
        biases = [torch.from_numpy(arrays[f"bias{k}"]).to(device) for k in range(n_layers)]
        return cls(config, weights, biases)


def _linear_layers(mlp: MLP) -> list[torch.nn.Linear]:
    return [layer for layer in mlp.layers if isinstance(layer, torch.nn.Linear)]


def _affine(biases: torch.Tensor, inputs: torch.Tensor, weights_t: torch.Tensor) -> torch.Tensor:
    """``inputs (M, B, in) @ weights_t (M, in, out) + biases (M, 1, out)``; plain addmm when M = 1
    (BLAS's single-matrix path is faster than its batched one)."""
    if inputs.shape[0] == 1:
        return torch.addmm(biases[0], inputs[0], weights_t[0]).unsqueeze(0)
    return torch.baddbmm(biases, inputs, weights_t)


def _matmul(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Batched ``left (M, a, b) @ right (M, b, c)``; plain mm when M = 1."""
    if left.shape[0] == 1:
        return torch.mm(left[0], right[0]).unsqueeze(0)
    return torch.bmm(left, right)


@dataclass(frozen=True)
class TrainingRows:
    """Training rows as one table ``(N, F + C [+ 1])``: features, one-hot targets, row weights.

    ``epoch_table`` ``(M·N, F + C [+ 1])`` receives every epoch's rows in the members' orders: one
    buffer for all epochs, since a fresh tensor each epoch costs its page faults (measured, one
    thread, 200,000 × 60 float32: gather into a fresh tensor 75 ms, into this buffer 14 ms — a
    tenth of an epoch of the 50-128-128-10 network).
    """

    table: torch.Tensor
    n_features: int
    n_classes: int
    weighted: bool
    epoch_table: torch.Tensor


class _BatchedOptimizer:
    """SGD (momentum) or Adam over lists of stacked tensors, as torch.optim does per model.

    Momentum SGD and Adam call torch's fused multi-tensor kernels (the ones behind
    ``torch.optim.SGD/Adam(fused=True)``): one call per step instead of one op per tensor and
    formula term. Measured on one CPU thread, six tensors of the 50-128-128-10 network: fused Adam
    12 µs against 82 µs for the equivalent ``torch._foreach_*`` sequence; Adam's result is bitwise
    that of ``torch.optim.Adam``, momentum SGD's equal to rounding.
    """

    def __init__(self, settings: EnsembleSettings, parameters: list[torch.Tensor]) -> None:
        self.settings = settings
        self.parameters = parameters
        self.first_moments = [torch.zeros_like(tensor) for tensor in parameters]
        self.second_moments = (
            [torch.zeros_like(tensor) for tensor in parameters]
            if settings.optimizer == "adam"
            else []
        )
        # Adam's step counts, one per tensor as the fused kernel takes them (float32 scalars),
        # views of one vector: one add per step (_foreach_add_ on 0-dim CPU tensors takes its
        # slow per-tensor path, ~15 µs of a ~600 µs step of the 50-128-128-10 network).
        self._steps = torch.zeros(len(parameters), device=parameters[0].device)
        self.step_counts = list(self._steps.unbind())
        self.step_count = 0

    def step(self, gradients: list[torch.Tensor]) -> None:
        settings = self.settings
        self.step_count += 1
        if settings.optimizer == "sgd" and settings.momentum == 0.0:
            torch._foreach_add_(self.parameters, gradients, alpha=-settings.learning_rate)
        elif settings.optimizer == "sgd":
            torch._fused_sgd_(
                self.parameters,
                gradients,
                self.first_moments,
                weight_decay=0.0,
                momentum=settings.momentum,
                lr=settings.learning_rate,
                dampening=0.0,
                nesterov=False,
                maximize=False,
                is_first_step=self.step_count == 1,
            )
        else:
            self._steps.add_(1.0)
            beta1, beta2 = settings.adam_betas
            torch._fused_adam_(
                self.parameters,
                gradients,
                self.first_moments,
                self.second_moments,
                [],
                self.step_counts,
                lr=settings.learning_rate,
                beta1=beta1,
                beta2=beta2,
                weight_decay=0.0,
                eps=settings.adam_eps,
                amsgrad=False,
                maximize=False,
            )


class BatchedTrainer:
    """Trains the members of a :class:`StackedMLP` together, one epoch at a time.

    Args:
        config: the network shape shared by all members.
        members: design and seed of each member (M of them).
        settings: batch size, optimizer and the rest, shared by all members.
        dtype: parameter dtype (float32 like ``build_mlp``; float64 for exact comparisons).
        device: where the tensors live.
    """

    def __init__(
        self,
        config: MLPConfig,
        members: Sequence[Member],
        settings: EnsembleSettings,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if not members:
            raise ConfigError("an ensemble needs at least one member (design, seed)")
        self.config = config
        self.members = [
            Member(get_design(member.design).name, int(member.seed)) for member in members
        ]
        self.settings = settings
        self.device = torch.device(device)
        self.dtype = dtype
        self.network = StackedMLP.from_seeds(
            config, [member.seed for member in self.members], dtype, self.device
        )
        self.optimizer = _BatchedOptimizer(settings, self.network.parameters())
        self._unique_seeds = sorted({member.seed for member in self.members})
        self._seed_rows = torch.tensor(
            [self._unique_seeds.index(member.seed) for member in self.members], device=self.device
        )
        is_mse = [member.design == "C" for member in self.members]
        is_mcee = [member.design == "D" for member in self.members]
        self._has_mse = any(is_mse)
        self._has_ce = not all(is_mse)
        self._has_mcee = any(is_mcee)
        self._is_mse = torch.tensor(is_mse, device=self.device).view(-1, 1)
        self._is_mcee = torch.tensor(is_mcee, device=self.device).view(-1, 1)
        self._tiny = torch.finfo(dtype).tiny
        self._constants: dict[float, torch.Tensor] = {}
        # Parameter views (the optimizer updates in place): W^T (M, in, out), b (M, 1, out).
        self._weights_t = [weight.transpose(1, 2) for weight in self.network.weights]
        self._biases_3d = [bias.unsqueeze(1) for bias in self.network.biases]

    # -- the compiled path ---------------------------------------------------------------------

    @property
    def uses_compiled(self) -> bool:
        """Whether epochs run through the compiled loops of :mod:`softclass.training.mlp_native`:
        CPU, float32/float64, contiguous parameters, every layer at most
        ``_COMPILED_MAX_LAYER_WEIGHTS`` weights, and the library available."""
        widths = [self.config.n_features, *self.config.hidden, self.config.n_classes]
        return (
            self.device.type == "cpu"
            and self.dtype in mlp_native.SUPPORTED_DTYPES
            and max(a * b for a, b in itertools.pairwise(widths)) <= _COMPILED_MAX_LAYER_WEIGHTS
            and all(tensor.is_contiguous() for tensor in self.network.parameters())
            and mlp_native.library() is not None
        )

    def compiled_epochs_per_call(self, n_rows: int) -> int:
        """Epochs per :meth:`run_compiled_epochs` call that keep its row orders bounded."""
        return max(1, _COMPILED_ORDER_ELEMENTS // max(1, n_rows * len(self._unique_seeds)))

    def run_compiled_epochs(
        self,
        rows: TrainingRows,
        first_epoch: int,
        n_epochs: int,
        val_features: torch.Tensor | None = None,
        val_targets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Epochs ``first_epoch .. first_epoch + n_epochs - 1`` through the compiled loops
        (only when :attr:`uses_compiled`); the same updates as :meth:`train_epoch` to rounding.

        Args:
            rows: from :meth:`training_rows`.
            val_features ``(V, F)`` in the trainer's dtype, val_targets ``(V,)`` int64: optional
                rows scored after every epoch (:func:`member_losses`, :func:`member_accuracy`).

        Returns:
            ``(train_loss, val_loss, val_accuracy)``, each ``(M, n_epochs)`` float64 (the
            validation ones NaN without validation rows).
        """
        n_rows = rows.table.shape[0]
        orders = torch.stack(
            [
                torch.stack(
                    [
                        epoch_permutation(n_rows, seed, epoch, self.settings.shuffle)
                        for epoch in range(first_epoch, first_epoch + n_epochs)
                    ]
                )
                if n_epochs
                else torch.zeros(0, n_rows, dtype=torch.int64)
                for seed in self._unique_seeds
            ]
        )
        outputs = [
            torch.full((self.network.n_members, n_epochs), math.nan, dtype=torch.float64)
            for _ in range(3)
        ]
        optimizer = self.optimizer
        has_val = val_features is not None and val_targets is not None
        mlp_native.train(
            mlp_native.library(),
            mlp_native.RunTensors(
                parameters=self.network.parameters(),
                first_moments=optimizer.first_moments,
                second_moments=optimizer.second_moments or None,
                table=rows.table.to(self.dtype).contiguous(),
                orders=orders,
                order_of_member=self._seed_rows,
                loss_of_member=torch.tensor(
                    [mlp_native.LOSS_CODES[member.design] for member in self.members]
                ),
                val_features=val_features.to(self.dtype).contiguous() if has_val else None,
                val_targets=val_targets.to(torch.int64).contiguous() if has_val else None,
                train_loss=outputs[0],
                val_loss=outputs[1],
                val_accuracy=outputs[2],
            ),
            [self.config.n_features, *self.config.hidden, self.config.n_classes],
            self.config.activation,
            self.settings.optimizer,
            self.settings.learning_rate,
            self.settings.momentum,
            self.settings.adam_betas,
            self.settings.adam_eps,
            self.settings.batch_size,
            rows.weighted,
            optimizer.step_count,
        )
        steps = n_epochs * len(batch_bounds(n_rows, self.settings.batch_size))
        optimizer.step_count += steps
        optimizer._steps.add_(float(steps))
        return outputs[0], outputs[1], outputs[2]

    # -- one epoch -----------------------------------------------------------------------------

    def epoch_order(self, n_rows: int, epoch: int) -> torch.Tensor:
        """Row indices ``(M, n_rows)`` int64: member m's order for ``epoch`` (from its seed)."""
        orders = torch.stack(
            [
                epoch_permutation(n_rows, seed, epoch, self.settings.shuffle)
                for seed in self._unique_seeds
            ]
        ).to(self.device)
        if len(self._unique_seeds) == 1:
            return orders.expand(self.network.n_members, n_rows)
        return orders[self._seed_rows]

    def training_rows(
        self,
        features: torch.Tensor,
        targets_one_hot: torch.Tensor,
        row_weights: torch.Tensor | None = None,
    ) -> TrainingRows:
        """The training table, built once and reused by every epoch.

        Args:
            features: ``(N, F)`` in the trainer's dtype and device.
            targets_one_hot: ``(N, C)`` one-hot rows of the class indices, same dtype.
            row_weights: optional ``(N,)`` non-negative row weights; a batch's loss is then
                Σ w·loss / Σ w (torch's weighted mean).
        """
        columns = [features, targets_one_hot]
        if row_weights is not None:
            columns.append(row_weights.view(-1, 1).to(features.dtype))
        table = torch.cat(columns, dim=1)
        return TrainingRows(
            table,
            features.shape[1],
            targets_one_hot.shape[1],
            row_weights is not None,
            table.new_empty(self.network.n_members * table.shape[0], table.shape[1]),
        )

    def train_epoch(self, rows: TrainingRows, epoch: int) -> torch.Tensor:
        """One pass over the training rows for every member; returns the epoch's training loss.

        Args:
            rows: from :meth:`training_rows`.
            epoch: epoch number (0-based) — selects each member's permutation.

        Returns:
            ``(M,)`` the training loss of each member over the epoch: the mean of its batch losses
            weighted by batch size (the rows' mean when unweighted). No host synchronisation.
        """
        if self.uses_compiled:
            return self.run_compiled_epochs(rows, epoch, 1)[0][:, 0].to(self.dtype)
        n_rows = rows.table.shape[0]
        n_members = self.network.n_members
        n_features, n_classes = rows.n_features, rows.n_classes
        # One gather per epoch: every member's rows in its own order, as (M, N, columns).
        order = self.epoch_order(n_rows, epoch).reshape(-1)
        epoch_table = torch.index_select(rows.table, 0, order, out=rows.epoch_table)
        epoch_table = epoch_table.view(n_members, n_rows, -1)
        epoch_loss = torch.zeros(n_members, dtype=self.dtype, device=self.device)
        tiny = torch.finfo(self.dtype).tiny
        for start, stop in batch_bounds(n_rows, self.settings.batch_size):
            batch = epoch_table[:, start:stop]
            if not rows.weighted:
                row_scale = self._constant(1.0 / (stop - start))
            else:
                weights = batch[:, :, n_features + n_classes]
                row_scale = (weights / weights.sum(1, keepdim=True).clamp_min(tiny)).unsqueeze(2)
            row_loss = self._step(
                batch[:, :, :n_features],
                batch[:, :, n_features : n_features + n_classes],
                row_scale,
            )
            if not rows.weighted:
                epoch_loss.add_(row_loss.sum(1), alpha=1.0 / n_rows)
            else:
                epoch_loss.add_(
                    (row_loss * row_scale.squeeze(2)).sum(1), alpha=(stop - start) / n_rows
                )
        return epoch_loss

    def _constant(self, value: float) -> torch.Tensor:
        """A 0-dim tensor (cheaper in elementwise ops than a Python float, which gets wrapped)."""
        cached = self._constants.get(value)
        if cached is None:
            cached = self._constants[value] = torch.tensor(
                value, dtype=self.dtype, device=self.device
            )
        return cached

    def _step(
        self, features: torch.Tensor, targets: torch.Tensor, row_scale: torch.Tensor
    ) -> torch.Tensor:
        """Forward, hand-written backward and optimizer update on an ``(M, B, F)`` batch.

        ``row_scale`` is 1/B (0-dim) or the ``(M, B, 1)`` normalised row weights; the gradient of
        member m is that of Σ_rows scale·loss_row. Returns the ``(M, B)`` row losses (before the
        update).
        """
        activation = self.config.activation
        weights_t, biases = self._weights_t, self._biases_3d
        last = len(weights_t) - 1
        inputs, pre_activations = [features], []
        hidden = features
        for index in range(last):
            pre = _affine(biases[index], hidden, weights_t[index])
            pre_activations.append(pre)
            hidden = _activation_forward(activation, pre)
            inputs.append(hidden)
        logits = _affine(biases[last], hidden, weights_t[last])
        shifted = logits - logits.amax(2, keepdim=True)
        exps = shifted.exp()
        sums = exps.sum(2, keepdim=True)
        probs = exps / sums
        residual = probs - targets  # d CE / d logits of each row
        grad_logits, row_loss = residual, None
        if self._has_ce:
            row_loss = sums.squeeze(2).log() - (shifted * targets).sum(2)
        if self._has_mcee:
            # D differentiates -log(clamp(p_t)) through the softmax: (p - onehot)·p_t·(1/p_t).
            # p_t·(1/p_t) rounds off 1 now and then — the log of a rounded probability — and is 0
            # where the clamp holds (p_t below the dtype's smallest normal), as in autograd.
            picked = (probs * targets).sum(2, keepdim=True)
            clamped = picked.clamp_min(self._tiny)
            ratio = (picked * clamped.reciprocal()).masked_fill_(picked < self._tiny, 0.0)
            grad_logits = torch.where(self._is_mcee.unsqueeze(2), residual * ratio, residual)
            row_loss = torch.where(self._is_mcee, clamped.squeeze(2).log().neg_(), row_loss)
        if self._has_mse:
            squared = (residual * residual).sum(2)
            grad_probs = residual + residual
            grad_mse = probs * (grad_probs - (grad_probs * probs).sum(2, keepdim=True))
            if self._has_ce:
                grad_logits = torch.where(self._is_mse.unsqueeze(2), grad_mse, grad_logits)
                row_loss = torch.where(self._is_mse, squared, row_loss)
            else:
                grad_logits, row_loss = grad_mse, squared
        grad = grad_logits * row_scale
        gradients: list[torch.Tensor] = [grad] * (2 * len(weights_t))
        for index in range(last, -1, -1):
            gradients[2 * index] = _matmul(grad.transpose(1, 2), inputs[index])
            gradients[2 * index + 1] = grad.sum(1)
            if index > 0:
                grad = _activation_backward(
                    activation,
                    _matmul(grad, self.network.weights[index]),
                    pre_activations[index - 1],
                    inputs[index],
                )
        self.optimizer.step(gradients)
        return row_loss

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(
        self, features: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's own design loss and accuracy on shared rows.

        Args:
            features: ``(N, F)``; targets: ``(N,)`` int64 class indices.

        Returns:
            ``(loss, accuracy)``, each ``(M,)``: loss in the trainer's dtype, accuracy float64.
        """
        logits = self.network.logits(features)
        return member_losses(logits, targets, self.members), member_accuracy(logits, targets)


def member_losses(
    logits: torch.Tensor, targets: torch.Tensor, members: Sequence[Member]
) -> torch.Tensor:
    """Each member's design loss ``(M,)`` (mean over rows) from logits ``(M, N, C)``.

    A and B: cross entropy from log_softmax (finite for large logits); D: -log of the softmax
    probability clamped at the dtype's smallest normal; C: squared error summed over classes.
    """
    n_classes = logits.shape[2]
    log_probs = logits - torch.logsumexp(logits, 2, keepdim=True)
    index = targets.view(1, -1, 1).expand(logits.shape[0], -1, 1)
    cross_entropy = -log_probs.gather(2, index).squeeze(2)
    rows = cross_entropy
    designs = [member.design for member in members]
    if "D" in designs:
        picked = torch.softmax(logits, 2).gather(2, index).squeeze(2)
        mcee = picked.clamp_min(torch.finfo(logits.dtype).tiny).log().neg_()
        is_mcee = torch.tensor([name == "D" for name in designs], device=logits.device).view(-1, 1)
        rows = torch.where(is_mcee, mcee, rows)
    if "C" in designs:
        one_hot = torch.nn.functional.one_hot(targets, n_classes).to(logits.dtype)
        squared = (log_probs.exp() - one_hot).square().sum(2)
        is_mse = torch.tensor([name == "C" for name in designs], device=logits.device).view(-1, 1)
        rows = torch.where(is_mse, squared, rows)
    return rows.mean(1)


def member_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction ``(M,)`` float64 of rows whose arg-max class is the target (any design)."""
    return (logits.argmax(2) == targets.view(1, -1)).double().mean(1)


@dataclass
class EnsembleResult:
    """What :func:`train_ensemble` returns.

    Attributes:
        members: design and seed of each member, in the order of the arrays' first axis.
        train_loss, val_loss, val_accuracy: ``(M, epochs)`` float64 histories (the validation ones
            are NaN when no validation rows were given).
        network: the trained stacked parameters.
    """

    members: list[Member]
    train_loss: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    network: StackedMLP = field(repr=False)

    def model(self, member: int) -> MLP:
        """Member ``member``'s trained weights as a normal :class:`MLP`."""
        return self.network.to_mlp(member)

    def bands(
        self, metric: str, designs: Sequence[str], confidence: float = 0.95
    ) -> dict[str, dict[str, np.ndarray]]:
        """Per design, per epoch over its seeds: ``{"mean", "low", "high"}`` arrays ``(epochs,)``.

        ``metric``: "train_loss", "val_loss" or "val_accuracy"; the band is the Student-t
        interval of the mean (each design needs at least 2 seeds).
        """
        bands = {}
        for design in designs:
            history = getattr(self, metric)[self.indices(design)]
            n = history.shape[0]
            if n < 2:
                raise ConfigError(f"bands need at least 2 seeds per design, {design} has {n}")
            mean = history.mean(0)
            half = t_quantile(confidence, n - 1) * history.std(0, ddof=1) / math.sqrt(n)
            bands[design] = {"mean": mean, "low": mean - half, "high": mean + half}
        return bands

    def indices(self, design: str) -> list[int]:
        """Positions of the members with design ``design``, in seed order."""
        name = get_design(design).name
        return sorted(
            (m for m, member in enumerate(self.members) if member.design == name),
            key=lambda m: self.members[m].seed,
        )


def train_ensemble(
    config: MLPConfig,
    members: Sequence[Member],
    features: torch.Tensor,
    targets: torch.Tensor,
    settings: EnsembleSettings,
    val_features: torch.Tensor | None = None,
    val_targets: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> EnsembleResult:
    """Train every member for ``settings.epochs`` epochs as one batched computation.

    Args:
        config: network shape; ``config.n_features`` must equal ``features.shape[1]``.
        members: ``(design, seed)`` of each model.
        features: ``(N, F)`` float training rows; targets: ``(N,)`` int64 class indices.
        settings: batch size, optimizer, epochs.
        val_features, val_targets: optional validation rows, scored after every epoch.
        dtype, device: of the parameters and the computation.

    Returns:
        :class:`EnsembleResult` with per-member, per-epoch histories and the trained weights.
    """
    features, targets = _check_rows(features, targets, config, "training")
    has_val = val_features is not None and val_targets is not None
    if has_val:
        val_features, val_targets = _check_rows(val_features, val_targets, config, "validation")
        val_features = val_features.to(device, dtype)
        val_targets = val_targets.to(device)
    trainer = BatchedTrainer(config, members, settings, dtype, device)
    features = features.to(device, dtype)
    one_hot = torch.nn.functional.one_hot(targets, config.n_classes).to(device, dtype)
    rows = trainer.training_rows(features, one_hot)
    n_members, epochs = len(trainer.members), settings.epochs
    train_loss = torch.full((epochs, n_members), math.nan, dtype=torch.float64, device=device)
    val_loss = torch.full_like(train_loss, math.nan)
    val_accuracy = torch.full_like(train_loss, math.nan)
    if trainer.uses_compiled:
        chunk = trainer.compiled_epochs_per_call(features.shape[0])
        for first in range(0, epochs, chunk):
            stop = min(first + chunk, epochs)
            histories = trainer.run_compiled_epochs(
                rows, first, stop - first, val_features, val_targets
            )
            for history, chunk_history in zip(
                (train_loss, val_loss, val_accuracy), histories, strict=True
            ):
                history[first:stop] = chunk_history.T
    else:
        for epoch in range(epochs):
            train_loss[epoch] = trainer.train_epoch(rows, epoch)
            if has_val:
                val_loss[epoch], val_accuracy[epoch] = trainer.evaluate(val_features, val_targets)
    return EnsembleResult(
        members=trainer.members,
        train_loss=train_loss.T.double().cpu().numpy(),
        val_loss=val_loss.T.double().cpu().numpy(),
        val_accuracy=val_accuracy.T.double().cpu().numpy(),
        network=trainer.network,
    )


def design_seed_grid(designs: Sequence[str], seeds: Sequence[int]) -> list[Member]:
    """Every design with every seed, design-major: ``[(A, s0), (A, s1), ..., (D, sK)]``."""
    return [Member(get_design(name).name, int(seed)) for name in designs for seed in seeds]


METRICS = ("val_loss", "val_accuracy")
# Designs are paired only on a measure common to them all: "val_loss" is each design's own loss
# (C's squared error is not a cross entropy), so it is summarised per design, never paired.
PAIRED_METRICS = ("val_accuracy",)


@dataclass
class SeedComparison:
    """Designs compared over the same seeds: per-design intervals and paired tests.

    Attributes:
        result: the trained ensemble (histories ``(M, epochs)`` and weights).
        designs, seeds: what was trained (every design with every seed).
        summary: ``summary[metric][design]`` — mean and 95 % interval over seeds of the metric at
            the last epoch (metric: "val_loss" or "val_accuracy").
        pairs: ``pairs[metric]`` — every pair of designs, paired over seeds, for the metrics of
            ``PAIRED_METRICS`` only (validation accuracy).
    """

    result: EnsembleResult
    designs: list[str]
    seeds: list[int]
    summary: dict[str, dict[str, MeanInterval]]
    pairs: dict[str, list[PairedComparison]]

    def history(self, metric: str, design: str) -> np.ndarray:
        """``(K, epochs)`` history of ``metric`` for ``design``, one row per seed in seed order."""
        return getattr(self.result, metric)[self.result.indices(design)]

    def bands(self, metric: str, confidence: float = 0.95) -> dict[str, dict[str, np.ndarray]]:
        """Per design, per epoch: ``{"mean", "low", "high"}`` arrays ``(epochs,)`` (Student t)."""
        return self.result.bands(metric, self.designs, confidence)

    def to_dict(self) -> dict:
        """JSON-safe summary (no histories)."""
        return {
            "designs": self.designs,
            "seeds": self.seeds,
            "summary": {
                metric: {design: interval.to_dict() for design, interval in per_design.items()}
                for metric, per_design in self.summary.items()
            },
            "pairs": {
                metric: [pair.to_dict() for pair in pairs] for metric, pairs in self.pairs.items()
            },
        }


def compare_seeds(
    config: MLPConfig,
    features: torch.Tensor,
    targets: torch.Tensor,
    val_features: torch.Tensor,
    val_targets: torch.Tensor,
    settings: EnsembleSettings,
    designs: Sequence[str] = ("A", "B", "C", "D"),
    seeds: Sequence[int] = tuple(range(10)),
    confidence: float = 0.95,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> SeedComparison:
    """Train every design with every seed in one batched run and compare the designs.

    Args:
        config, features, targets, settings, dtype, device: as :func:`train_ensemble`.
        val_features, val_targets: the validation rows the designs are judged on.
        designs: design names; seeds: K ≥ 2 distinct seeds shared by every design.
        confidence: level of the intervals and of the "significant" verdict.

    Returns:
        :class:`SeedComparison` over the last epoch's validation loss and accuracy.
    """
    names = [get_design(name).name for name in designs]
    seed_list = [int(seed) for seed in seeds]
    if len(set(seed_list)) < 2 or len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"compare_seeds needs at least 2 distinct seeds, got {seed_list}")
    if len(set(names)) != len(names):
        raise ConfigError(f"each design may appear once, got {names}")
    if settings.epochs < 1:
        raise ConfigError("compare_seeds needs at least 1 epoch")
    result = train_ensemble(
        config,
        design_seed_grid(names, seed_list),
        features,
        targets,
        settings,
        val_features,
        val_targets,
        dtype,
        device,
    )
    summary = {
        metric: {
            name: mean_interval(getattr(result, metric)[result.indices(name), -1], confidence)
            for name in names
        }
        for metric in METRICS
    }
    pairs = {
        metric: [
            paired_comparison(
                getattr(result, metric)[result.indices(first), -1],
                getattr(result, metric)[result.indices(second), -1],
                first,
                second,
                confidence,
                metric="validation accuracy",
            )
            for position, first in enumerate(names)
            for second in names[position + 1 :]
        ]
        for metric in PAIRED_METRICS
    }
    return SeedComparison(result, names, seed_list, summary, pairs)


def _check_rows(
    features: torch.Tensor, targets: torch.Tensor, config: MLPConfig, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.as_tensor(features)
    targets = torch.as_tensor(targets)
    if features.dim() != 2 or features.shape[1] != config.n_features:
        raise DataError(
            f"{where} features must be (rows, {config.n_features}), got shape "
            f"{tuple(features.shape)}"
        )
    if targets.shape != (features.shape[0],) or targets.dtype != torch.int64:
        raise DataError(
            f"{where} targets must be int64 class indices of shape ({features.shape[0]},), got "
            f"{targets.dtype} {tuple(targets.shape)}"
        )
    if features.shape[0] and (int(targets.min()) < 0 or int(targets.max()) >= config.n_classes):
        raise DataError(
            f"{where} targets must lie in [0, {config.n_classes - 1}], got values in "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )
    return features, targets


__all__ = [
    "BatchedTrainer",
    "EnsembleResult",
    "EnsembleSettings",
    "Member",
    "SeedComparison",
    "StackedMLP",
    "TrainingRows",
    "compare_seeds",
    "design_seed_grid",
    "member_accuracy",
    "member_losses",
    "train_ensemble",
]
