"""The batched torch backend: many MLPs trained at once, designs × seeds as one computation.

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
arithmetic; wider ones through the same loops with each batch's products in a BLAS gemm
(``mlp_step.c``: the products of this path without its per-op dispatch, when the
``scipy-openblas32`` wheel is installed); ``backend="auto"`` picks the faster per shape
(:meth:`BatchedTrainer.choose_backend`), and ``SOFTCLASS_NATIVE=0`` or a missing C compiler
leaves the torch path. The two paths agree
to rounding (the order of the sums differs). The compiled loops implement the registries'
entries that carry a ``native_code``; ``backend="compiled"`` on a run they lack (an activation,
design or optimizer without one) is refused naming it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from softclass.data.expansion import FeatureRows
from softclass.errors import ConfigError
from softclass.mlp.activations import get_activation
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLPConfig
from softclass.mlp.optimizers import get_optimizer
from softclass.training import backend_choice
from softclass.training.backends.compiled import CompiledLoops
from softclass.training.batching import batch_bounds, epoch_permutation
from softclass.training.config import TrainConfig
from softclass.training.stacked import (
    Member,
    StackedMLP,
    TrainingRows,
    member_scores,
)


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


class BatchedTrainer(CompiledLoops):
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
            :class:`softclass.training.backends.autograd.Trainer`), bf16 precision (the batched
            backends train in the parameters' dtype), or ``backend="compiled"`` for a run the
            compiled loops cannot train (the message says why).
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
                "backend='autograd' is the Trainer (softclass.training.backends.autograd), not "
                "the batched engine: use backend='auto', 'compiled' or 'torch' here"
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
                get_design(name).smoothed(settings.label_smoothing),
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
        features: torch.Tensor | FeatureRows,
        targets_one_hot: torch.Tensor | None = None,
        row_weights: torch.Tensor | None = None,
        *,
        targets: torch.Tensor | None = None,
    ) -> TrainingRows:
        """The training table, built once and reused by every epoch.

        The table is ``(N, F + 1 [+ 1])``: the features, the class index (exact in the table's
        float dtype) and the optional row weight. Nothing in it grows with the number of classes:
        each step builds the targets its design needs (one-hot rows for C) for its batch only.

        Args:
            features: ``(N, F)`` floating, on the trainer's device (copied into the table in the
                trainer's dtype), or :class:`FeatureRows` (its compact columns in the table, its
                binned values beside it, expanded per batch).
            targets_one_hot: ``(N, C)`` one-hot rows of the class indices; or None with
                ``targets``.
            row_weights: optional ``(N,)`` non-negative row weights (class weights are row
                weights ``w[target]``); a batch's loss is then Σ w·loss / Σ w (torch's weighted
                mean).
            targets: ``(N,)`` int64 class indices, instead of ``targets_one_hot``.

        Raises:
            ConfigError: neither or both of ``targets_one_hot`` and ``targets``; more classes
                than the table's dtype holds exactly as whole numbers.
        """
        if (targets_one_hot is None) == (targets is None):
            raise ConfigError("training_rows takes targets_one_hot or targets, exactly one")
        n_rows, n_features = features.shape
        n_classes = self.config.n_classes if targets_one_hot is None else targets_one_hot.shape[1]
        exact = round(2 / torch.finfo(self.dtype).eps)  # 2**24 in float32
        if n_classes > exact:
            raise ConfigError(
                f"{n_classes:,} classes: a {self.dtype} training table holds class indices "
                f"exactly up to {exact:,}; train in float64 or with fewer classes"
            )
        if targets is None:
            targets = targets_one_hot.argmax(1)
        targets = targets.to(self.device, torch.int64)
        raw = expansion = None
        if isinstance(features, FeatureRows):
            raw, expansion = features.raw.to(self.device), features.expansion
            features = features.compact.to(self.device)
            n_features = features.shape[1]
        width = n_features + 1 + (row_weights is not None)
        # Written column block by column block into one fresh table (no concatenated copies).
        table = torch.empty(n_rows, width, dtype=self.dtype, device=self.device)
        table[:, :n_features] = features
        table[:, n_features] = targets
        if row_weights is not None:
            table[:, -1] = row_weights
        weighted = row_weights is not None
        return TrainingRows(table, n_features, n_classes, weighted, targets, raw, expansion)

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
        n_features = rows.n_features
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
                weights = batch[..., n_features + 1]
                row_scale = weights / weights.sum(-1, keepdim=True).clamp_min(tiny)
            inputs = batch[..., :n_features]
            if rows.expansion is not None:
                chosen = order[start:stop] if n_members == 1 else order[:, start:stop].reshape(-1)
                inputs = rows.expansion.expand(  # rows counted: a table of binned numbers only
                    inputs.reshape(len(chosen), n_features), rows.raw[chosen], self.dtype
                ).view(*inputs.shape[:-1], -1)
            batch_loss, batch_correct = self._step(
                inputs, epoch_targets[..., start:stop], row_scale
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
        return member_scores(
            self.network, features, targets, self.members, self.settings.label_smoothing
        )
