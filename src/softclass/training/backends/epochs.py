"""The training loop's backend over a :class:`~softclass.training.backends.batched.BatchedTrainer`:
the compiled loops (a chunk of epochs per call) or the torch path (one epoch per call)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from softclass.mlp.model import MLP
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.checkpoint import StackedState
from softclass.training.stacked import TrainingRows

# Bytes of watched members' weights one compiled call may keep, one copy per epoch (the
# agreement probe's max |ΔW| per epoch without seeing every epoch): bounds its epochs per call.
_SNAPSHOT_BYTES = 64 << 20


class BatchedEpochs:
    """The loop's backend (:class:`softclass.training.loop.EpochBackend`) over a
    :class:`BatchedTrainer`: the compiled loops (a chunk of epochs per call) or the torch path
    (one epoch and the validation rows' scores per call), as the trainer chose for the rows.

    Args:
        trainer: the trainer; rows: from :meth:`BatchedTrainer.training_rows`.
        val_features ``(V, F)`` in the trainer's dtype and device, val_targets ``(V,)`` int64:
            rows scored after every epoch, or None.
    """

    def __init__(
        self,
        trainer: BatchedTrainer,
        rows: TrainingRows,
        val_features: torch.Tensor | None = None,
        val_targets: torch.Tensor | None = None,
    ) -> None:
        self.trainer = trainer
        self.rows = rows
        self.val_features = val_features
        self.val_targets = val_targets
        self.choice = trainer.choose_backend(rows.table.shape[0])
        self.pairs: list[tuple[int, int]] = []

    def watch(self, pairs: Sequence[tuple[int, int]]) -> bool:
        """From now on every :meth:`run_epochs` also returns ``"pair_weight_diff"``: per pair of
        members ``(i, j)``, max |W_i - W_j| over every weight and bias after each epoch
        ``(P, n_epochs)`` float64, so that a watcher need not see every epoch. True: watched."""
        self.pairs = [(int(i), int(j)) for i, j in pairs]
        return True

    @property
    def n_members(self) -> int:
        return len(self.trainer.members)

    @property
    def compiled(self) -> bool:
        return self.choice.backend == "compiled"

    def epochs_per_call(self) -> int:
        if not self.compiled:
            return 1
        per_call = self.trainer.compiled_epochs_per_call(self.rows.table.shape[0])
        if self.pairs:  # the watched members' weights after each epoch of a call stay bounded
            size = self._snapshot_slots()[1] * self._parameter_count() * 8
            per_call = min(per_call, max(1, _SNAPSHOT_BYTES // max(1, size)))
        return per_call

    def _parameter_count(self) -> int:
        return sum(tensor[0].numel() for tensor in self.trainer.network.parameters())

    def _snapshot_slots(self) -> tuple[torch.Tensor, int]:
        """``(slot of each member or -1, number of slots)`` for the watched members."""
        watched = sorted({member for pair in self.pairs for member in pair})
        slots = torch.full((self.n_members,), -1, dtype=torch.int64)
        slots[watched] = torch.arange(len(watched))
        return slots, len(watched)

    def _compiled_epochs(self, first_epoch: int, n_epochs: int) -> dict[str, torch.Tensor]:
        names = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
        snapshots = None
        if self.pairs:
            slots, count = self._snapshot_slots()
            snapshots = (
                slots,
                torch.empty(count, n_epochs, self._parameter_count(), dtype=self.trainer.dtype),
            )
        results = self.trainer.run_compiled_epochs(
            self.rows, first_epoch, n_epochs, self.val_features, self.val_targets, snapshots
        )
        outputs = dict(zip(names, results, strict=True))
        if snapshots is not None:
            slots, taken = snapshots
            outputs["pair_weight_diff"] = torch.stack(
                [(taken[slots[i]] - taken[slots[j]]).abs().amax(-1) for i, j in self.pairs]
            ).double()
        return outputs

    def run_epochs(
        self, first_epoch: int, n_epochs: int, running: Sequence[bool]
    ) -> dict[str, torch.Tensor]:
        """Every member trains (a stopped one too: members are independent, and skipping one
        would cost a gather); the loop ignores what stopped members did."""
        names = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
        if self.compiled:
            return self._compiled_epochs(first_epoch, n_epochs)
        columns, differences = [], []
        for epoch in range(first_epoch, first_epoch + n_epochs):
            loss, accuracy = self.trainer.train_epoch(self.rows, epoch)
            column = [loss.double(), accuracy]
            if self.val_features is not None:
                column.extend(self.trainer.evaluate(self.val_features, self.val_targets))
            columns.append(torch.stack([value.double() for value in column]).cpu())
            if self.pairs:
                differences.append(self.max_weight_differences(self.pairs))
        stacked = torch.stack(columns, dim=2)  # (names, M, n_epochs)
        results = {name: stacked[index] for index, name in enumerate(names[: len(stacked)])}
        if self.pairs:
            results["pair_weight_diff"] = torch.tensor(differences, dtype=torch.float64).T
        return results

    def member_parameters(self, member: int) -> list[torch.Tensor]:
        return [tensor[member] for tensor in self.trainer.network.parameters()]

    def member_model(self, member: int) -> MLP:
        return self.trainer.network.to_mlp(member)

    @torch.no_grad()
    def max_weight_differences(self, pairs: Sequence[tuple[int, int]]) -> list[float]:
        first = torch.tensor([i for i, _ in pairs], device=self.trainer.device)
        second = torch.tensor([j for _, j in pairs], device=self.trainer.device)
        differences = torch.stack(
            [
                (tensor[first] - tensor[second]).abs().flatten(1).amax(1)
                for tensor in self.trainer.network.parameters()  # stacked: (M, ...) each
            ]
        )
        return differences.amax(0).tolist()

    @torch.no_grad()
    def finite_members(self) -> list[bool]:
        parameters = self.trainer.network.parameters()
        flags = torch.stack([torch.isfinite(tensor).flatten(1).all(1) for tensor in parameters])
        return flags.all(0).tolist()

    def stacked_state(self) -> StackedState:
        trainer, state = self.trainer, self.trainer.optimizer_state
        return StackedState(
            members=tuple((member.design, member.seed) for member in trainer.members),
            model_config=trainer.config,
            settings=trainer.settings,
            dtype=trainer.dtype,
            parameters=trainer.network.parameters(),
            first_moments=state.first_moments,
            second_moments=state.second_moments,
            optimizer_state=state,
        )
