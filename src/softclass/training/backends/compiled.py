"""The compiled backend: whole epochs in C (:mod:`softclass.training.mlp_native`).

Small networks on CPU train through compiled loops (the network row by row in C and each design's
loss through softclass.functional's compiled kernels, whole epochs per call), since there the cost
of a step is torch's per-op dispatch, not arithmetic. Wider ones take the same loops with each
batch's products through a BLAS gemm (``mlp_step.c``, :meth:`CompiledLoops.blas_step`): the
products torch would compute, and the rest of the step (bias, activation, loss, optimizer) in C
with no per-op dispatch or allocation; ``backend="auto"`` picks the faster per
shape (:meth:`CompiledLoops.choose_backend`), and ``SOFTCLASS_NATIVE=0`` or a library not built at
install leaves the torch path. The compiled loops implement the registries' entries that carry a
``native_code``; ``backend="compiled"`` on a run they lack is refused naming it.
"""

from __future__ import annotations

import itertools
import math

import torch

from softclass.data.expansion import FeatureRows, as_dense
from softclass.errors import ConfigError
from softclass.mlp.activations import NATIVE_ENTRIES as NATIVE_ACTIVATIONS
from softclass.mlp.designs import computes_native_branch, get_design, native_values
from softclass.mlp.optimizers import NATIVE_ENTRIES as NATIVE_OPTIMIZERS
from softclass.training import backend_choice, blas, mlp_native
from softclass.training.batching import batch_bounds, epoch_permutation
from softclass.training.stacked import TrainingRows

# Row indices per compiled call: (seeds, epochs, rows) int64 orders are built a chunk at a time.
_COMPILED_ORDER_ELEMENTS = 1 << 22
# Forward multiply-adds of one member's step (B·Σ in·out) from which its products go to the BLAS
# (mlp_step.c) rather than the row loops (mlp_native.c). benchmarks/train_step.py measured the
# BLAS step faster at every shape, 1.3x at compare's Iris 4-7-3 and 2.7x at 25,600; the bound is
# the row loops' "sure" one (backend_choice), so compare's small runs keep their exact numbers.
BLAS_MIN_WORK = 16_384


class CompiledLoops:
    """The compiled half of :class:`softclass.training.backends.batched.BatchedTrainer` (a
    mixin: it reads the trainer's network, members, settings and optimizer state)."""

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
            )
            if entry.native_code in written_for and written_for[entry.native_code] != entry
        ] + [
            f"design {design.name!r}"
            for design, _ in self._design_groups
            if not computes_native_branch(design)
        ]
        if changed:
            return (
                f"{', '.join(changed)} is not what its compiled branch (native_code) computes: "
                "changed or replaced at run time"
            )
        if not all(tensor.is_contiguous() for tensor in self.network.parameters()):
            return "non-contiguous parameters"
        if mlp_native.library() is None:
            return f"the compiled library is unavailable ({mlp_native.unavailable_reason()})"
        return None

    def blas_step(self, n_rows: int | None = None) -> blas.Gemm | None:
        """The BLAS whose gemm computes this run's products in the compiled step (mlp_step.c),
        or None for the row loops: when one member's step on ``n_rows`` rows (None: a full
        batch) has fewer than :data:`BLAS_MIN_WORK` forward multiply-adds, or the step library
        or the BLAS is unavailable (:mod:`softclass.training.blas`)."""
        widths = [self.config.n_features, *self.config.hidden, self.config.n_classes]
        batch = (
            self.settings.batch_size if n_rows is None else min(self.settings.batch_size, n_rows)
        )
        work = batch * sum(a * b for a, b in itertools.pairwise(widths))
        if work < BLAS_MIN_WORK or mlp_native.step_library() is None:
            return None
        return blas.gemm()

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

    def _row_orders(self, n_rows: int, first_epoch: int, n_epochs: int) -> torch.Tensor:
        """``(seeds, n_epochs, n_rows)``: each seed's row order of each epoch."""
        return torch.stack(
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

    def run_compiled_epochs(
        self,
        rows: TrainingRows,
        first_epoch: int,
        n_epochs: int,
        val_features: torch.Tensor | None = None,
        val_targets: torch.Tensor | None = None,
        snapshots: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Epochs ``first_epoch .. first_epoch + n_epochs - 1`` through the compiled loops
        (only when :attr:`uses_compiled`); the same updates as :meth:`train_epoch` to rounding.

        Args:
            rows: from :meth:`training_rows`.
            val_features ``(V, F)`` in the trainer's dtype (:class:`FeatureRows` when ``rows``
                has an expansion), val_targets ``(V,)`` int64: optional rows scored after every
                epoch (:func:`member_losses`, :func:`member_accuracy`).
            snapshots: ``(snapshot_of_member, snapshots)`` as in
                :class:`~softclass.training.mlp_native.RunTensors`: weights after each epoch of
                the members given a slot, written into ``snapshots``; None: none.

        Returns:
            ``(train_loss, train_accuracy, val_loss, val_accuracy)``, each ``(M, n_epochs)``
            float64 (the validation ones NaN without validation rows).
        """
        reason = self.compiled_unsupported_reason()
        if reason is not None:
            raise ConfigError(f"backend='compiled' cannot train this run: {reason}")
        n_rows = rows.table.shape[0]
        orders = self._row_orders(n_rows, first_epoch, n_epochs)
        # (4, M, n_epochs): each of the four is a contiguous (M, n_epochs) block
        outputs = torch.full((4, self.network.n_members, n_epochs), math.nan, dtype=torch.float64)
        state = self.optimizer_state
        has_val = val_features is not None and val_targets is not None
        val_features, val_raw = _validation_parts(rows, val_features if has_val else None)
        smoothing = self.settings.label_smoothing
        member_designs = [get_design(member.design).smoothed(smoothing) for member in self.members]
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
                    [design.native_code for design in member_designs], dtype=torch.int64
                ),
                design_params_of_member=torch.tensor(
                    [native_values(design) for design in member_designs], dtype=torch.float64
                ),
                val_features=val_features.to(self.dtype).contiguous() if has_val else None,
                val_targets=val_targets.to(torch.int64).contiguous() if has_val else None,
                train_loss=outputs[0],
                train_accuracy=outputs[1],
                val_loss=outputs[2],
                val_accuracy=outputs[3],
                snapshot_of_member=None if snapshots is None else snapshots[0],
                snapshots=None if snapshots is None else snapshots[1],
                expansion=rows.expansion,
                raw=None if rows.raw is None else rows.raw.contiguous(),
                val_raw=val_raw,
            ),
            [self.config.n_features, *self.config.hidden, self.config.n_classes],
            self.activation,
            self.optimizer,
            self.settings.optimizer_params,
            self.settings.batch_size,
            rows.weighted,
            state.step_count,
            [design for design, _ in self._design_groups],
            self.blas_step(n_rows),
        )
        steps = n_epochs * len(batch_bounds(n_rows, self.settings.batch_size))
        state.step_count += steps
        torch._foreach_add_(state.step_counts, float(steps))
        return outputs[0], outputs[1], outputs[2], outputs[3]

    # -- one epoch -----------------------------------------------------------------------------


def _validation_parts(
    rows: TrainingRows, val_features: torch.Tensor | FeatureRows | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The validation rows as the compiled loops read them beside ``rows``: their feature
    columns, and with ``rows``' expansion their binned values (float64).

    Raises:
        ConfigError: ``rows`` are expanded and the validation rows are not compact rows of the
            same expansion.
    """
    if val_features is None:
        return None, None
    if rows.expansion is None:
        return as_dense(val_features), None
    if not isinstance(val_features, FeatureRows) or val_features.expansion is not rows.expansion:
        raise ConfigError(
            "the training rows are compact (FeatureRows, bins expanded per batch) but the "
            f"validation rows are {type(val_features).__name__}, not compact rows of the same "
            "expansion: give both from one prepared table, or both as tensors"
        )
    return val_features.compact, val_features.raw.contiguous()
