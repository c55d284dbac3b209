"""Many MLPs trained at once: the four designs × K seeds as one batched computation.

Every member ``m`` of an ensemble is an independent copy of the same network shape with its own
design (output activation and loss), its own seed (initial weights exactly as
``build_mlp(config, seed)``) and its own batch order (``epoch_permutation(n_rows, seed, epoch)``).
Parameters are stacked along a leading member axis — weights ``(M, out, in)``, biases ``(M, out)``
— and one training step is a handful of batched matmuls over an ``(M, B, F)`` batch gathered per
member. The loss of member ``m`` is its own (weighted) mean over its own batch; the step minimises
the sum of the members' losses, whose gradient with respect to member ``m``'s parameters is exactly
member ``m``'s own gradient, so nothing mixes between members.

The network's backward pass is written by hand (autograd's per-op bookkeeping dominates at these
sizes). With one member (the estimator, ``softclass train``) the step drops the member axis and
runs plain 2-D products, through oneDNN for wide float32 layers (faster than MKL's SGEMM on
AVX-512 CPUs where MKL runs its AVX2 code; see ``_ONEDNN_MIN_WIDTH``); the weight gradients
are written into buffers kept for the run. Everything with a name comes from a registry:

* the loss and its gradient with respect to the logits — the design's
  :meth:`~softclass.mlp.designs.Design.output_gradient`, i.e. :mod:`softclass.functional` (A's
  cross entropy and its fused kernel, B's log_softmax + nll_loss, C's mse_onehot, D's mcee);
* hidden layers — :mod:`softclass.mlp.activations` (forward and derivative);
* the update — :mod:`softclass.mlp.optimizers` (torch.optim's arithmetic on the stacked tensors).

Small networks on CPU train through compiled loops instead (:mod:`softclass.training.mlp_native`:
the network row by row in C and each design's loss through softclass.functional's compiled
kernels, whole epochs per call), since there the cost of a step is torch's per-op dispatch, not
arithmetic; ``backend="auto"`` picks the faster per shape (:meth:`BatchedTrainer.choose_backend`),
and ``SOFTCLASS_NATIVE=0`` or a library not built at install leaves the torch path. The two paths agree
to rounding (the order of the sums differs). The compiled loops implement the registries'
entries that carry a ``native_code``; ``backend="compiled"`` on a run they lack (an activation,
design or optimizer without one) is refused naming it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from softclass.errors import ConfigError, DataError, ModelFileError, TrainingDiverged
from softclass.evaluation.stats import (
    MeanInterval,
    PairedComparison,
    mean_interval,
    paired_comparison,
    t_quantile,
)
from softclass.io import atomic_write_bytes
from softclass.mlp.activations import NATIVE_ENTRIES as NATIVE_ACTIVATIONS
from softclass.mlp.activations import get_activation
from softclass.mlp.designs import DESIGNS, get_design
from softclass.mlp.designs import NATIVE_ENTRIES as NATIVE_DESIGNS
from softclass.mlp.model import MLP, MLPConfig, build_mlp
from softclass.mlp.optimizers import NATIVE_ENTRIES as NATIVE_OPTIMIZERS
from softclass.mlp.optimizers import get_optimizer
from softclass.training import backend_choice, mlp_native, schema
from softclass.training.batching import batch_bounds, epoch_permutation
from softclass.training.config import TrainConfig
from softclass.training.early_stopping import EarlyStopping
from softclass.training.trainer import data_fingerprint, resumable_options

# Rows per chunk when evaluating on a large table (bounds the (M, rows, width) activations).
_EVAL_CHUNK_ROWS = 16384
# Row indices per compiled call: (seeds, epochs, rows) int64 orders are built a chunk at a time.
_COMPILED_ORDER_ELEMENTS = 1 << 22


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
    """``inputs @ weights_t + biases``: ``(B, in) @ (in, out) + (out,)`` (addmm, one model) or
    ``(M, B, in) @ (M, in, out) + (M, 1, out)`` (baddbmm)."""
    if inputs.dim() == 2:
        return torch.addmm(biases, inputs, weights_t)
    return torch.baddbmm(biases, inputs, weights_t)


def _matmul(
    left: torch.Tensor, right: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``left @ right``: mm on ``(a, b) @ (b, c)``, bmm on ``(M, a, b) @ (M, b, c)``; into
    ``out`` when given (any strides: a transposed ``out`` is written by the transposed product,
    without a copy)."""
    if left.dim() == 2:
        return torch.mm(left, right, out=out)
    return torch.bmm(left, right, out=out)


# Products through oneDNN (torch.ops.mkldnn._linear_pointwise, ``x @ Wᵀ + b``) instead of MKL's
# SGEMM: on the AVX-512 AMD EPYC of the shared machine MKL runs its AVX2 code while oneDNN uses
# AVX-512. Measured (one thread, float32, medians of 5, µs): 256×128 @ 128×128 forward 48 against
# 85, weight gradient 64 / 86, input gradient 47 / 81; 256×50 @ 50×128 forward 30 / 35; on the
# 10-class layer MKL wins (weight gradient 11 / 18, input gradient 8 / 15). oneDNN is used for one
# model (2-D products), float32 on the CPU, for layers whose inputs and outputs both number at
# least _ONEDNN_MIN_WIDTH; the weight gradient only from a contiguous input (a column slice of the
# training table as the transposed operand took oneDNN 35 ms instead of 44 µs).
_ONEDNN_MIN_WIDTH = 32


def _onednn_linear() -> Callable[..., torch.Tensor] | None:
    """``torch.ops.mkldnn._linear_pointwise`` when this torch build has it and
    ``torch.backends.mkldnn.enabled`` (the user's switch) is on, else None."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


@dataclass
class _StepTensors:
    """Views and buffers of one training step on the torch path, built once per trainer.

    With one member (M = 1) every tensor drops the member axis (BLAS's single-matrix calls are
    faster than the batched ones, and 2-D views skip a ``select`` per use). ``weights_t[k]`` is
    W_kᵀ ``([M,] in, out)`` and ``weights[k]`` W_k ``([M,] out, in)``, both views of the
    parameters; ``biases[k]`` is ``(out,)`` or ``(M, 1, out)``. ``gradients`` are buffers shaped
    and strided like ``parameters`` (the optimizer's arguments); ``weight_gradients_t[k]`` and
    ``bias_gradients[k]`` are the views the products and sums write into. ``onednn[k]``: layer
    k's products go through oneDNN (``onednn_linear``, see ``_ONEDNN_MIN_WIDTH``).
    """

    parameters: list[torch.Tensor]
    weights_t: list[torch.Tensor]
    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    gradients: list[torch.Tensor]
    weight_gradients_t: list[torch.Tensor]
    bias_gradients: list[torch.Tensor]
    onednn: list[bool]
    onednn_linear: Callable[..., torch.Tensor] | None


@dataclass(frozen=True)
class TrainingRows:
    """Training rows as one table ``(N, F + C [+ 1])``: features, one-hot targets, row weights;
    and the class indices ``(N,)`` int64 of the targets (the torch backend gathers them per epoch
    instead of taking an arg-max of the one-hot columns per batch)."""

    table: torch.Tensor
    n_features: int
    n_classes: int
    weighted: bool
    targets: torch.Tensor


class BatchedTrainer:
    """Trains the members of a :class:`StackedMLP` together, one epoch at a time.

    Args:
        config: the network shape shared by all members.
        members: design and seed of each member (M of them).
        settings: the training configuration shared by all members (batch size, optimizer and
            its parameters, ``backend``: "auto", "compiled" or "torch").
        dtype: parameter dtype (float32 like ``build_mlp``; float64 for exact comparisons).
        device: where the tensors live.

    Raises:
        ConfigError: no members, an unknown design, ``settings.backend`` is "autograd" (that is
            :class:`softclass.training.trainer.Trainer`), bf16 precision (the batched backends
            train in the parameters' dtype), or ``backend="compiled"`` for a run the compiled
            loops cannot train (the message says why).
    """

    def __init__(
        self,
        config: MLPConfig,
        members: Sequence[Member],
        settings: TrainConfig,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if not members:
            raise ConfigError("an ensemble needs at least one member (design, seed)")
        if settings.backend == "autograd":
            raise ConfigError(
                "backend='autograd' is the Trainer (softclass.training.trainer), not the batched "
                "engine: use backend='auto', 'compiled' or 'torch' here"
            )
        if settings.precision != "fp32":
            raise ConfigError(
                f"precision={settings.precision!r} is not supported by the batched backends "
                "(compiled, torch): they train in the parameters' dtype; use backend='autograd'"
            )
        self.config = config
        self.members = [
            Member(get_design(member.design).name, int(member.seed)) for member in members
        ]
        self.settings = settings
        self.device = torch.device(device)
        self.dtype = dtype
        self.activation = get_activation(config.activation)
        self.optimizer = get_optimizer(settings.optimizer)
        self.network = StackedMLP.from_seeds(
            config, [member.seed for member in self.members], dtype, self.device
        )
        self.optimizer_state = self.optimizer.new_state(self.network.parameters())
        self._unique_seeds = sorted({member.seed for member in self.members})
        self._seed_rows = torch.tensor(
            [self._unique_seeds.index(member.seed) for member in self.members], device=self.device
        )
        # Members grouped by design: (design, member positions or None when all share it).
        names = [member.design for member in self.members]
        self._design_groups = [
            (
                get_design(name),
                None
                if len(set(names)) == 1
                else torch.tensor(
                    [m for m, other in enumerate(names) if other == name], device=self.device
                ),
            )
            for name in dict.fromkeys(names)
        ]
        self._constants: dict[float, torch.Tensor] = {}
        self._params_of: TrainConfig | None = None  # the settings self._params was read from
        self._params = settings.optimizer_params
        self._step_tensors: _StepTensors | None = None  # built by the first torch-path step
        self._speed_choice: backend_choice.BackendChoice | None = None  # decided at first use
        if settings.backend == "compiled":
            reason = self.compiled_unsupported_reason()
            if reason is not None:
                raise ConfigError(f"backend='compiled' cannot train this run: {reason}")

    # -- the compiled path ---------------------------------------------------------------------

    def compiled_unsupported_reason(self) -> str | None:
        """Why the compiled loops cannot train this run (None when they can): the device or
        dtype, a registry entry without a ``native_code``, or no compiled library."""
        if self.device.type != "cpu":
            return f"device {self.device} (the compiled loops run on the CPU)"
        if self.dtype not in mlp_native.SUPPORTED_DTYPES:
            return f"dtype {self.dtype} (float32 or float64)"
        lacking = [
            f"{kind} {name!r}"
            for kind, name, code in (
                ("activation", self.activation.name, self.activation.native_code),
                ("optimizer", self.optimizer.name, self.optimizer.native_code),
                *(("design", design.name, design.native_code) for design, _ in self._design_groups),
            )
            if code is None
        ]
        if lacking:
            return f"{', '.join(lacking)} has no compiled implementation (no native_code)"
        changed = [
            f"{kind} {entry.name!r}"
            for kind, entry, written_for in (
                ("activation", self.activation, NATIVE_ACTIVATIONS),
                ("optimizer", self.optimizer, NATIVE_OPTIMIZERS),
                *(("design", design, NATIVE_DESIGNS) for design, _ in self._design_groups),
            )
            if entry.native_code in written_for and written_for[entry.native_code] != entry
        ]
        if changed:
            return (
                f"{', '.join(changed)} is not the registry entry its compiled branch "
                "(native_code) was written from: changed or replaced at run time"
            )
        if not all(tensor.is_contiguous() for tensor in self.network.parameters()):
            return "non-contiguous parameters"
        if mlp_native.library() is None:
            return f"the compiled library is unavailable ({mlp_native.unavailable_reason()})"
        return None

    def choose_backend(self, n_rows: int | None = None) -> backend_choice.BackendChoice:
        """The backend that trains this run, and why: the one ``settings.backend`` forces; with
        "auto", torch when the compiled loops cannot train the run
        (:meth:`compiled_unsupported_reason`), else the faster of the two for this run's shape on
        ``n_rows`` training rows (None: full batches), measured near the boundary
        (:func:`softclass.training.backend_choice.choose_by_speed`; decided once per trainer)."""
        if self.settings.backend != "auto":
            return backend_choice.BackendChoice(
                self.settings.backend, f"backend={self.settings.backend!r} was asked"
            )
        reason = self.compiled_unsupported_reason()
        if reason is not None:
            return backend_choice.BackendChoice(
                "torch", f"the compiled loops cannot train this run: {reason}"
            )
        if self._speed_choice is None:
            self._speed_choice = backend_choice.choose_by_speed(self, n_rows)
        return self._speed_choice

    @property
    def uses_compiled(self) -> bool:
        """Whether epochs run through the compiled loops of :mod:`softclass.training.mlp_native`
        (:meth:`choose_backend`)."""
        return self.choose_backend().backend == "compiled"

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
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Epochs ``first_epoch .. first_epoch + n_epochs - 1`` through the compiled loops
        (only when :attr:`uses_compiled`); the same updates as :meth:`train_epoch` to rounding.

        Args:
            rows: from :meth:`training_rows`.
            val_features ``(V, F)`` in the trainer's dtype, val_targets ``(V,)`` int64: optional
                rows scored after every epoch (:func:`member_losses`, :func:`member_accuracy`).

        Returns:
            ``(train_loss, train_accuracy, val_loss, val_accuracy)``, each ``(M, n_epochs)``
            float64 (the validation ones NaN without validation rows).
        """
        reason = self.compiled_unsupported_reason()
        if reason is not None:
            raise ConfigError(f"backend='compiled' cannot train this run: {reason}")
        n_rows = rows.table.shape[0]
        orders = torch.stack(
            [
                torch.stack(
                    [
                        epoch_permutation(n_rows, seed, epoch)
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
            for _ in range(4)
        ]
        state = self.optimizer_state
        has_val = val_features is not None and val_targets is not None
        mlp_native.train(
            mlp_native.library(),
            mlp_native.RunTensors(
                parameters=self.network.parameters(),
                first_moments=state.first_moments,
                second_moments=state.second_moments or None,
                table=rows.table.to(self.dtype).contiguous(),
                orders=orders,
                order_of_member=self._seed_rows,
                loss_of_member=torch.tensor(
                    [get_design(member.design).native_code for member in self.members],
                    dtype=torch.int64,
                ),
                val_features=val_features.to(self.dtype).contiguous() if has_val else None,
                val_targets=val_targets.to(torch.int64).contiguous() if has_val else None,
                train_loss=outputs[0],
                train_accuracy=outputs[1],
                val_loss=outputs[2],
                val_accuracy=outputs[3],
            ),
            [self.config.n_features, *self.config.hidden, self.config.n_classes],
            self.activation,
            self.optimizer,
            self.settings.optimizer_params,
            self.settings.batch_size,
            rows.weighted,
            state.step_count,
            [design for design, _ in self._design_groups],
        )
        steps = n_epochs * len(batch_bounds(n_rows, self.settings.batch_size))
        state.step_count += steps
        torch._foreach_add_(state.step_counts, float(steps))
        return outputs[0], outputs[1], outputs[2], outputs[3]

    # -- one epoch -----------------------------------------------------------------------------

    def epoch_order(self, n_rows: int, epoch: int) -> torch.Tensor:
        """Row indices ``(M, n_rows)`` int64: member m's order for ``epoch`` (from its seed)."""
        orders = torch.stack(
            [epoch_permutation(n_rows, seed, epoch) for seed in self._unique_seeds]
        ).to(self.device)
        if len(self._unique_seeds) == 1:
            return orders.expand(self.network.n_members, n_rows)
        return orders[self._seed_rows]

    def training_rows(
        self,
        features: torch.Tensor,
        targets_one_hot: torch.Tensor | None = None,
        row_weights: torch.Tensor | None = None,
        *,
        targets: torch.Tensor | None = None,
    ) -> TrainingRows:
        """The training table, built once and reused by every epoch.

        Args:
            features: ``(N, F)`` floating, on the trainer's device (copied into the table in the
                trainer's dtype).
            targets_one_hot: ``(N, C)`` one-hot rows of the class indices; or None with
                ``targets``.
            row_weights: optional ``(N,)`` non-negative row weights (class weights are row
                weights ``w[target]``); a batch's loss is then Σ w·loss / Σ w (torch's weighted
                mean).
            targets: ``(N,)`` int64 class indices, instead of ``targets_one_hot`` (the one-hot
                columns are then written straight into the table).

        Raises:
            ConfigError: neither or both of ``targets_one_hot`` and ``targets``.
        """
        if (targets_one_hot is None) == (targets is None):
            raise ConfigError("training_rows takes targets_one_hot or targets, exactly one")
        n_rows, n_features = features.shape
        n_classes = self.config.n_classes if targets_one_hot is None else targets_one_hot.shape[1]
        width = n_features + n_classes + (row_weights is not None)
        # Written column block by column block into one fresh table (no concatenated copies).
        table = torch.empty(n_rows, width, dtype=self.dtype, device=self.device)
        table[:, :n_features] = features
        one_hot = table[:, n_features : n_features + n_classes]
        if targets is None:
            one_hot.copy_(targets_one_hot)
            targets = targets_one_hot.argmax(1)
        else:
            targets = targets.to(self.device, torch.int64)
            one_hot.zero_().scatter_(1, targets.view(-1, 1), 1.0)
        if row_weights is not None:
            table[:, -1] = row_weights
        return TrainingRows(table, n_features, n_classes, row_weights is not None, targets)

    def train_epoch(self, rows: TrainingRows, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over the training rows for every member.

        Args:
            rows: from :meth:`training_rows`.
            epoch: epoch number (0-based) — selects each member's permutation.

        Returns:
            ``(loss, accuracy)``, each ``(M,)``: the training loss of each member over the epoch
            (the mean of its batch losses weighted by batch size; the rows' mean when
            unweighted) and the share of rows it classified right while training (float64).
            No host synchronisation.
        """
        if self.choose_backend(rows.table.shape[0]).backend == "compiled":
            loss, accuracy, _, _ = self.run_compiled_epochs(rows, epoch, 1)
            return loss[:, 0].to(self.dtype), accuracy[:, 0]
        n_rows = rows.table.shape[0]
        n_members = self.network.n_members
        n_features, n_classes = rows.n_features, rows.n_classes
        order = self.epoch_order(n_rows, epoch)
        if n_members == 1:  # no member axis at all (see _StepTensors)
            order = order[0]
        epoch_targets = rows.targets[order]
        epoch_loss = torch.zeros(n_members, dtype=self.dtype, device=self.device)
        correct = torch.zeros(n_members, dtype=torch.int64, device=self.device)
        tiny = torch.finfo(self.dtype).tiny
        # Each batch's rows are gathered from the table as the step needs them, into one small
        # buffer, instead of a whole epoch into an (M·N, columns) buffer: no second copy of the
        # table per member (M of them in compare --seeds), and the batch is in cache for the
        # forward pass. Measured alone, 200,000 × 60 float32, one thread: 8.8 ms per epoch in
        # 256-row batches against 5.5 ms in one gather (~4 µs of a ~550 µs step).
        batch_rows = rows.table.new_empty(
            n_members * min(n_rows, self.settings.batch_size), rows.table.shape[1]
        )
        for start, stop in batch_bounds(n_rows, self.settings.batch_size):
            batch = torch.index_select(
                rows.table,
                0,
                order[start:stop] if n_members == 1 else order[:, start:stop].reshape(-1),
                out=batch_rows[: n_members * (stop - start)],
            )
            if n_members > 1:
                batch = batch.view(n_members, stop - start, -1)
            if not rows.weighted:
                row_scale = None
            else:
                weights = batch[..., n_features + n_classes]
                row_scale = weights / weights.sum(-1, keepdim=True).clamp_min(tiny)
            batch_loss, batch_correct = self._step(
                batch[..., :n_features], epoch_targets[..., start:stop], row_scale
            )
            correct += batch_correct
            epoch_loss.add_(batch_loss, alpha=(stop - start) / n_rows)
        return epoch_loss, correct.double() / n_rows

    def _constant(self, value: float) -> torch.Tensor:
        """A 0-dim tensor (cheaper in elementwise ops than a Python float, which gets wrapped)."""
        cached = self._constants.get(value)
        if cached is None:
            cached = self._constants[value] = torch.tensor(
                value, dtype=self.dtype, device=self.device
            )
        return cached

    def _output_gradient(
        self, logits: torch.Tensor, targets: torch.Tensor, row_scale: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's batch loss ``(M,)`` (Σ_rows scale·loss_row) and d batch loss / d logits
        ``([M,] B, C)``, from its design's :mod:`softclass.functional` loss
        (:meth:`~softclass.mlp.designs.Design.output_gradient`); ``row_scale`` None: the plain
        mean over the batch. One member: logits ``(B, C)``, targets and row_scale ``(B,)``."""
        n_rows, n_classes = logits.shape[-2:]
        if logits.dim() == 2:  # one member
            design = self._design_groups[0][0]
            encoded = design.encode_targets(targets, n_classes)
            if row_scale is None:  # the loss's scalar (mean) path
                loss, grad = design.mean_loss_gradient(logits, encoded)
                return loss.view(1), grad
            rows, grad = design.output_gradient(logits, encoded, row_scale)
            return (rows * row_scale).sum().view(1), grad
        n_members = logits.shape[0]
        if row_scale is None:
            row_scale = self._constant(1.0 / n_rows).expand(n_members, n_rows)
        batch_loss = logits.new_empty(n_members)
        grad_logits = torch.empty_like(logits)
        for design, positions in self._design_groups:
            if positions is None:  # every member has this design
                positions = slice(None)
            group_targets = targets[positions]
            group_scale = row_scale[positions]
            rows, grad = design.output_gradient(
                logits[positions].reshape(-1, n_classes),
                design.encode_targets(group_targets.reshape(-1), n_classes),
                group_scale.reshape(-1),
            )
            batch_loss[positions] = (rows.view(group_targets.shape) * group_scale).sum(1)
            grad_logits[positions] = grad.view(-1, n_rows, n_classes)
        return batch_loss, grad_logits

    def _tensors(self) -> _StepTensors:
        """The step's views and gradient buffers (built on first use, dropped when pickled)."""
        if self._step_tensors is None:
            single = self.network.n_members == 1

            def member_view(tensor: torch.Tensor) -> torch.Tensor:
                return tensor[0] if single else tensor

            parameters = self.network.parameters()
            gradients = [torch.empty_like(tensor) for tensor in parameters]
            weights = self.network.weights
            linear = (
                _onednn_linear()
                if single and self.dtype == torch.float32 and self.device.type == "cpu"
                else None
            )
            self._step_tensors = _StepTensors(
                parameters=parameters,
                weights_t=[member_view(weight.transpose(1, 2)) for weight in weights],
                weights=[member_view(weight) for weight in weights],
                biases=[bias[0] if single else bias.unsqueeze(1) for bias in self.network.biases],
                gradients=gradients,
                weight_gradients_t=[member_view(grad.transpose(1, 2)) for grad in gradients[::2]],
                bias_gradients=[member_view(grad) for grad in gradients[1::2]],
                onednn=[
                    linear is not None and min(weight.shape[1:]) >= _ONEDNN_MIN_WIDTH
                    for weight in weights
                ],
                onednn_linear=linear,
            )
        return self._step_tensors

    def __deepcopy__(self, memo: dict) -> BatchedTrainer:
        """A copy with its own tensors that shares the registry entries (the compiled backend
        recognises its entries by identity) and rebuilds its step views on first use."""
        copied = copy.copy(self)
        memo[id(self)] = copied
        for name, value in self.__dict__.items():
            if name == "_step_tensors":
                value = None
            elif name not in ("activation", "optimizer", "settings", "config", "_design_groups"):
                value = copy.deepcopy(value, memo)
            setattr(copied, name, value)
        return copied

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_step_tensors"] = None  # views and scratch buffers: rebuilt on the next step
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_step_tensors", None)

    def _step(
        self, features: torch.Tensor, targets: torch.Tensor, row_scale: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, hand-written backward and optimizer update on a ``([M,] B, F)`` batch with
        targets ``([M,] B)`` int64 (no member axis when M = 1).

        ``row_scale`` ``([M,] B)`` weighs each row (the normalised row weights; None: 1/B); the
        gradient of member m is that of its batch loss Σ_rows scale·loss_row. Returns the ``(M,)``
        batch losses (before the update) and the count of rows classified right (``(M,)``, or
        0-dim when M = 1).

        The products are the three forward ones (addmm: the bias add fused), the weight
        gradients ``inputᵀ @ grad`` written straight into the optimizer's gradient buffers (the
        transposed view of a ``(out, in)`` buffer: BLAS writes the transposed product, no copy)
        and the input gradients of every layer but the first (the features need none).
        """
        tensors = self._tensors()
        activation = self.activation
        weights_t, weights, biases = tensors.weights_t, tensors.weights, tensors.biases
        onednn, linear = tensors.onednn, tensors.onednn_linear
        last = len(weights_t) - 1
        inputs, pre_activations = [features], []
        hidden = features
        for index in range(last + 1):
            if onednn[index]:
                pre = linear(hidden, weights[index], biases[index], "none", [], "")
            else:
                pre = _affine(biases[index], hidden, weights_t[index])
            if index == last:
                break
            pre_activations.append(pre)
            hidden = activation.forward(pre)
            inputs.append(hidden)
        logits = pre
        correct = (logits.argmax(-1) == targets).sum(-1)
        batch_loss, grad = self._output_gradient(logits, targets, row_scale)
        gradients = list(tensors.gradients)
        for index in range(last, -1, -1):
            if onednn[index] and inputs[index].is_contiguous():
                # (out, in) = gradᵀ @ input as oneDNN's x @ Wᵀ with x = gradᵀ, W = inputᵀ
                gradients[2 * index] = linear(
                    grad.mT, inputs[index].mT, None, "none", [], ""
                ).unsqueeze(0)
            else:
                _matmul(inputs[index].mT, grad, out=tensors.weight_gradients_t[index])
            torch.sum(grad, -2, out=tensors.bias_gradients[index])
            if index > 0:
                if onednn[index]:
                    upstream = linear(grad, weights_t[index], None, "none", [], "")
                else:
                    upstream = _matmul(grad, weights[index])
                grad = activation.backward(upstream, pre_activations[index - 1], inputs[index])
        if self._params_of is not self.settings:  # settings may be replaced between epochs
            self._params_of, self._params = self.settings, self.settings.optimizer_params
        self.optimizer.batched_step(
            tensors.parameters, gradients, self.optimizer_state, self._params
        )
        return batch_loss, correct

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
    """Each member's design loss ``(M,)`` (mean over rows) from logits ``(M, N, C)`` and class
    indices ``(N,)``: the design's own :mod:`softclass.functional` loss."""
    n_classes = logits.shape[2]
    losses = []
    for position, member in enumerate(members):
        design = get_design(member.design)
        encoded = design.encode_targets(targets, n_classes)
        losses.append(design.row_losses(logits[position], encoded).mean())
    return torch.stack(losses)


def member_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction ``(M,)`` float64 of rows whose arg-max class is the target (any design)."""
    return (logits.argmax(2) == targets.view(1, -1)).double().mean(1)


@dataclass
class EnsembleResult:
    """What :func:`train_ensemble` returns.

    Attributes:
        members: design and seed of each member, in the order of the arrays' first axis.
        train_loss, train_accuracy, val_loss, val_accuracy: ``(M, epochs)`` float64 histories
            (validation ones NaN without validation rows; every one NaN after the epoch a
            member stopped early).
        network: the trained stacked parameters (each member's best epoch's when early
            stopping restored them).
        epochs_run: ``(M,)`` epochs each member trained (fewer than asked when it stopped early).
        best_epoch: ``(M,)`` 1-based epoch whose weights each member ended on under early
            stopping; None without early stopping.
        backend: "compiled" or "torch": which backend trained the run.
        backend_reason: why that backend (the option asked, or the rule or measurement of
            :meth:`BatchedTrainer.choose_backend`).
    """

    members: list[Member]
    train_loss: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    network: StackedMLP = field(repr=False)
    train_accuracy: np.ndarray | None = None
    epochs_run: list[int] = field(default_factory=list)
    best_epoch: list[int | None] | None = None
    backend: str = "torch"
    backend_reason: str = ""

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


# Called after every epoch: (1-based epoch, the trainer, the histories so far: name → (M, epochs),
# each member's epoch count: its last epoch once it stopped early, else the configured total).
EpochCallback = Callable[[int, "BatchedTrainer", dict[str, torch.Tensor], list[int]], None]


def train_ensemble(
    config: MLPConfig,
    members: Sequence[Member],
    features: torch.Tensor,
    targets: torch.Tensor,
    settings: TrainConfig,
    val_features: torch.Tensor | None = None,
    val_targets: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    *,
    row_weights: torch.Tensor | None = None,
    on_epoch: EpochCallback | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
) -> EnsembleResult:
    """Train every member for up to ``settings.epochs`` epochs as one batched computation.

    Early stopping (``settings.patience``) is the shared rule of
    :mod:`softclass.training.early_stopping`, per member: a member that stops keeps training
    with the others (members are independent) but its history ends there and, with
    ``restore_best``, it ends on its best epoch's weights; the run ends when every member stopped.

    Args:
        config: network shape; ``config.n_features`` must equal ``features.shape[1]``.
        members: ``(design, seed)`` of each model.
        features: ``(N, F)`` float training rows; targets: ``(N,)`` int64 class indices.
        settings: the training configuration (batch size, optimizer, epochs, early stopping,
            backend).
        val_features, val_targets: optional validation rows, scored after every epoch.
        dtype, device: of the parameters and the computation.
        row_weights: optional ``(N,)`` non-negative weights (class weights as ``w[target]``).
        checkpoint_path: where to write the run's state every ``settings.checkpoint_every``
            epochs and after the last (parameters, optimizer state, histories, early stopping;
            the format of :mod:`softclass.training.schema`); None for none.
        resume: continue from ``checkpoint_path``: the same weights as an uninterrupted run.
        on_epoch: called after every epoch with its 1-based number, the trainer (whose
            ``network`` holds the weights after that epoch) and the histories so far
            (``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``: ``(M, epochs)``
            float64, NaN where not yet run) and each member's epoch count (member m ran this
            epoch while it is ≤ the count; it was m's last when equal).

    Returns:
        :class:`EnsembleResult` with per-member, per-epoch histories and the trained weights.

    Raises:
        ConfigError: early stopping on a validation metric without validation rows; resume
            without a checkpoint path; the trainer's errors (:class:`BatchedTrainer`).
        ModelFileError: the checkpoint to resume from is missing, unsafe or from another run.
    """
    if resume and checkpoint_path is None:
        raise ConfigError("resume needs a checkpoint_path to resume from")
    fingerprint = (
        ""
        if checkpoint_path is None
        else data_fingerprint(
            *(
                None if tensor is None else torch.as_tensor(tensor)
                for tensor in (features, targets, val_features, val_targets, row_weights)
            )
        )
    )
    features, targets = _check_rows(features, targets, config, "training")
    has_val = val_features is not None and val_targets is not None
    if has_val:
        val_features, val_targets = _check_rows(val_features, val_targets, config, "validation")
        val_features = val_features.to(device, dtype)
        val_targets = val_targets.to(device)
    elif settings.patience is not None and settings.monitor != "train_loss":
        raise ConfigError(
            f"early stopping (patience={settings.patience}) needs validation rows: set "
            "validation_fraction > 0, monitor='train_loss' or patience=None"
        )
    trainer = BatchedTrainer(config, members, settings, dtype, device)
    weights = None if row_weights is None else torch.as_tensor(row_weights).to(device)
    rows = trainer.training_rows(features.to(device), row_weights=weights, targets=targets)
    n_members, epochs = len(trainer.members), settings.epochs
    histories = {
        name: torch.full((n_members, epochs), math.nan, dtype=torch.float64)
        for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    }
    early = EarlyStopping.from_config(settings, n_members) if settings.patience else None
    best = (
        [tensor.clone() for tensor in trainer.network.parameters()]
        if early is not None and settings.restore_best
        else None
    )
    epochs_run = [epochs] * n_members
    state = _RunState(trainer, histories, early, best, epochs_run, fingerprint)
    first = state.load(Path(checkpoint_path), features.shape[0], has_val) if resume else 0
    per_epoch = on_epoch is not None or early is not None or checkpoint_path is not None
    choice = trainer.choose_backend(features.shape[0])
    uses_compiled = choice.backend == "compiled"
    chunk = trainer.compiled_epochs_per_call(features.shape[0]) if uses_compiled else 1
    while first < epochs and not (early is not None and early.all_stopped):
        stop = min(first + (1 if per_epoch else chunk), epochs)
        if uses_compiled:
            results = trainer.run_compiled_epochs(
                rows, first, stop - first, val_features, val_targets
            )
        else:
            loss, accuracy = trainer.train_epoch(rows, first)
            results = [loss.double().view(-1, 1).cpu(), accuracy.view(-1, 1).cpu()]
            if has_val:
                val_loss, val_accuracy = trainer.evaluate(val_features, val_targets)
                results += [val_loss.double().view(-1, 1).cpu(), val_accuracy.view(-1, 1).cpu()]
        for name, values in zip(histories, results, strict=False):
            histories[name][:, first:stop] = values
        first = stop
        if early is not None:
            _early_stopping_epoch(early, trainer, histories, best, epochs_run, stop)
        if on_epoch is not None:
            on_epoch(stop, trainer, histories, epochs_run)
        finished = stop == epochs or (early is not None and early.all_stopped)
        if checkpoint_path is not None and (stop % settings.checkpoint_every == 0 or finished):
            state.save(Path(checkpoint_path), stop)
    if best is not None:
        for tensor, kept in zip(trainer.network.parameters(), best, strict=True):
            tensor.copy_(kept)
    for member, count in enumerate(epochs_run):
        for history in histories.values():
            history[member, count:] = math.nan
    return EnsembleResult(
        members=trainer.members,
        train_loss=histories["train_loss"].numpy(),
        val_loss=histories["val_loss"].numpy(),
        val_accuracy=histories["val_accuracy"].numpy(),
        network=trainer.network,
        train_accuracy=histories["train_accuracy"].numpy(),
        epochs_run=epochs_run,
        best_epoch=None if early is None else list(early.best_epoch),
        backend=choice.backend,
        backend_reason=choice.reason,
    )


@dataclass
class _RunState:
    """Everything a batched run needs to continue where it stopped (saved in checkpoints: the
    format and its checks are :mod:`softclass.training.schema`'s batched-checkpoint section)."""

    trainer: BatchedTrainer
    histories: dict[str, torch.Tensor]
    early: EarlyStopping | None
    best: list[torch.Tensor] | None
    epochs_run: list[int]
    fingerprint: str

    def save(self, path: Path, epoch: int) -> None:
        """Write the state after ``epoch`` epochs to ``path`` (atomically; safetensors + JSON).

        Raises:
            TrainingDiverged: a weight or optimizer state is NaN or infinite (such a state is
                never written: the checkpoint of the last sound epoch stays).
        """
        trainer, state = self.trainer, self.trainer.optimizer_state
        diverged = torch.zeros(trainer.network.n_members, dtype=torch.bool)
        for tensor in (*trainer.network.parameters(), *state.first_moments, *state.second_moments):
            diverged |= ~torch.isfinite(tensor).flatten(1).all(1).cpu()
        if bool(diverged.any()):
            names = [
                f"{member.design} seed {member.seed}"
                for member, bad in zip(trainer.members, diverged.tolist(), strict=True)
                if bad
            ]
            raise TrainingDiverged(
                f"training diverged at epoch {epoch} ({', '.join(names[:5])}): the weights or "
                "the optimizer state became NaN or infinite; lower the learning rate (--lr) or "
                "scale the features (--normalize zscore)"
            )
        header = schema.BatchedCheckpointHeader(
            members=tuple((member.design, member.seed) for member in trainer.members),
            model_config=trainer.config,
            train_config=trainer.settings,
            data_fingerprint=self.fingerprint,
            dtype=trainer.dtype,
            epoch=epoch,
            step_count=state.step_count,
            epochs_run=tuple(self.epochs_run),
            early_stopping=None if self.early is None else self.early.to_dict(),
        )
        tensors = schema.BatchedCheckpointTensors(
            parameters=trainer.network.parameters(),
            first_moments=state.first_moments,
            second_moments=state.second_moments,
            best=self.best,
            histories={name: history[:, :epoch] for name, history in self.histories.items()},
        )
        atomic_write_bytes(path, schema.encode_batched_checkpoint(header, tensors))

    def load(self, path: Path, n_rows: int, has_validation: bool) -> int:
        """Restore the state saved by :meth:`save` for a run on ``n_rows`` training rows;
        returns the epochs already run.

        Every field is checked (:func:`softclass.training.schema.read_batched_checkpoint_header`,
        this run's members, network, options and data, then
        :func:`~softclass.training.schema.load_batched_checkpoint`) before a tensor is read.

        Raises:
            ModelFileError: missing, damaged or unsafe file, another engine's checkpoint or an
                older format, or one written by a run with other members, network, options or
                data (one line naming the file and the field).
        """
        trainer = self.trainer
        header = schema.read_batched_checkpoint_header(path, trainer.config)
        expected = {
            "members": [[member.design, member.seed] for member in trainer.members],
            "model_config": trainer.config.to_dict(),
            "train_config": resumable_options(trainer.settings.to_dict()),
            "data_fingerprint": self.fingerprint,
        }
        found = {
            "members": [list(member) for member in header.members],
            "model_config": header.model_config.to_dict(),
            "train_config": resumable_options(header.train_config.to_dict()),
            "data_fingerprint": header.data_fingerprint,
        }
        for key, value in expected.items():
            if found[key] != value:
                raise ModelFileError(
                    f"{path}: cannot resume, the checkpoint's {key} {found[key]!r} differs from "
                    f"this run's {value!r}"
                    if key != "data_fingerprint"
                    else f"{path}: cannot resume, the checkpoint was written for other training "
                    "data (or another split)"
                )
        saved = schema.load_batched_checkpoint(
            path,
            header,
            schema.BatchedRun(
                dtype=trainer.dtype,
                epochs=trainer.settings.epochs,
                batches_per_epoch=len(batch_bounds(n_rows, trainer.settings.batch_size)),
                has_validation=has_validation,
            ),
        )
        state = trainer.optimizer_state
        pairs = [
            (trainer.network.parameters(), saved.parameters),
            (state.first_moments, saved.first_moments),
            (state.second_moments, saved.second_moments),
        ]
        if self.best is not None and saved.best is not None:  # patience may change on resume
            pairs.append((self.best, saved.best))
        with torch.no_grad():  # the schema checked every tensor's dtype and shape
            for targets, values in pairs:
                for tensor, value in zip(targets, values, strict=True):
                    tensor.copy_(value)
        state.step_count = header.step_count
        for counter in state.step_counts:
            counter.fill_(float(state.step_count))
        epoch = header.epoch
        for name, history in self.histories.items():
            history[:, :epoch] = saved.histories[name]
        if self.early is not None and header.early_stopping is not None:
            self.early.load_dict(header.early_stopping)
            for member, stopped in enumerate(self.early.stopped):
                if stopped:  # a stopped member's count is its last epoch
                    self.epochs_run[member] = header.epochs_run[member]
        return epoch


_MONITORED_HISTORY = schema.MONITORED_HISTORY


def _early_stopping_epoch(
    early: EarlyStopping,
    trainer: BatchedTrainer,
    histories: dict[str, torch.Tensor],
    best: list[torch.Tensor] | None,
    epochs_run: list[int],
    epoch: int,
) -> None:
    """Apply the rule to epoch ``epoch`` (1-based) of every member still running."""
    values = histories[_MONITORED_HISTORY[early.monitor]][:, epoch - 1].tolist()
    for member, value in enumerate(values):
        if early.stopped[member]:
            continue
        if early.update(member, epoch, value) and best is not None:
            for kept, tensor in zip(best, trainer.network.parameters(), strict=True):
                kept[member].copy_(tensor[member])
        if early.stopped[member]:
            epochs_run[member] = epoch


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
    settings: TrainConfig,
    designs: Sequence[str] | None = None,
    seeds: Sequence[int] = tuple(range(10)),
    confidence: float = 0.95,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> SeedComparison:
    """Train every design with every seed in one batched run and compare the designs.

    Args:
        config, features, targets, settings, dtype, device: as :func:`train_ensemble`.
        val_features, val_targets: the validation rows the designs are judged on.
        designs: design names (None: every registered design); seeds: K ≥ 2 distinct seeds
            shared by every design.
        confidence: level of the intervals and of the "significant" verdict.

    Returns:
        :class:`SeedComparison` over the last epoch's validation loss and accuracy.
    """
    names = [get_design(name).name for name in (DESIGNS if designs is None else designs)]
    seed_list = [int(seed) for seed in seeds]
    if len(set(seed_list)) < 2 or len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"compare_seeds needs at least 2 distinct seeds, got {seed_list}")
    if len(set(names)) != len(names):
        raise ConfigError(f"each design may appear once, got {names}")
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
