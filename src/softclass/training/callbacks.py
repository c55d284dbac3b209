"""The callbacks every training run shares: divergence, early stopping, progress.

Each is a :class:`softclass.training.loop.Callback`; a run lists them in this order (the
divergence check first, so a diverged epoch never enters a checkpoint, and progress after early
stopping, so the last event says the run finished). Checkpoints are
:class:`softclass.training.checkpoint.Checkpoint`; the A/B agreement probe is
:class:`softclass.evaluation.agreement.AgreementProbe`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch

from softclass.errors import TrainingDiverged
from softclass.mlp.designs import Design
from softclass.mlp.model import MLPConfig
from softclass.training.early_stopping import EarlyStopping
from softclass.training.loop import MONITORED_HISTORY, Callback, FitLoop
from softclass.training.results import EpochRecord, History, ProgressCallback, ProgressEvent

__all__ = [
    "EXPLODED_LOSS_FACTOR",
    "DivergenceCheck",
    "EarlyStoppingCallback",
    "ProgressReport",
    "divergence",
    "history_of",
]

# A training loss this many times the loss of uniform predictions (ln C for the likelihood
# designs) means the weights exploded: ln 3 x 1000 = 1099 on Iris, where sound training starts
# near 1.1 and --lr 1e6 gives 4.8e5 after one epoch (tanh keeps the weights finite).
EXPLODED_LOSS_FACTOR = 1000.0


def divergence(
    train_loss: float,
    validation_loss: float | None,
    finite_weights: bool,
    design: Design,
    model_config: MLPConfig,
    learning_rate: float,
) -> str | None:
    """Why an epoch diverged, with the remedy, or None when it did not.

    Diverged: a NaN or infinite loss or weight, or a training loss above
    :data:`EXPLODED_LOSS_FACTOR` times the design's loss for uniform predictions.
    """
    losses = [train_loss] + ([] if validation_loss is None else [validation_loss])
    if not finite_weights:
        problem = f"the training loss is {train_loss:g} and the weights hold NaN or infinite values"
    elif not all(math.isfinite(loss) for loss in losses):
        problem = f"the training loss is {train_loss:g}" + (
            "" if validation_loss is None else f", the validation loss {validation_loss:g}"
        )
    else:
        uniform = design.uniform_loss(model_config.n_classes)
        if train_loss <= EXPLODED_LOSS_FACTOR * uniform:
            return None
        problem = (
            f"the training loss is {train_loss:g}, over {EXPLODED_LOSS_FACTOR:g} times the "
            f"{uniform:.4g} of uniform predictions (the weights exploded)"
        )
    return (
        f"{problem}; lower the learning rate (now {learning_rate:g}, --lr) or scale the features "
        "(--normalize zscore)"
    )


class DivergenceCheck(Callback):
    """Stop at the first epoch whose losses or weights left the reals, or whose loss exploded
    (:func:`divergence`), naming the member and the epoch.

    Per backend call, the new epochs' losses of every member that ran them (already on the
    host); at the end, whether the weights are finite (one host sync).

    Args:
        designs: each member's design; labels: each member's name in the message.
        model_config: the network (the uniform loss depends on the class count).
        learning_rate: named in the remedy.
        validation: the histories hold validation losses (checked too).
    """

    per_epoch = False

    def __init__(
        self,
        designs: Sequence[Design],
        labels: Sequence[str],
        model_config: MLPConfig,
        learning_rate: float,
        *,
        validation: bool,
    ) -> None:
        self.designs = list(designs)
        self.labels = list(labels)
        self.model_config = model_config
        self.learning_rate = learning_rate
        self.validation = validation
        self.checked = 0  # epochs already checked
        self.limits = np.zeros(0)  # per member: the training loss that means it exploded

    def on_train_begin(self, loop: FitLoop) -> None:
        self.checked = loop.epoch
        n_classes = self.model_config.n_classes
        self.limits = np.array(
            [EXPLODED_LOSS_FACTOR * design.uniform_loss(n_classes) for design in self.designs]
        )

    def on_epoch_end(self, loop: FitLoop) -> None:
        """The new epochs' losses of every member that ran them, in one numpy pass."""
        first, stop = self.checked, loop.epoch
        self.checked = stop
        ran = np.arange(first + 1, stop + 1)[None, :] <= np.asarray(loop.epochs_run)[:, None]
        losses = loop.histories["train_loss"][:, first:stop].numpy()
        with np.errstate(invalid="ignore"):
            sound = np.isfinite(losses) & (losses <= self.limits[:, None])
        if self.validation:
            sound &= np.isfinite(loop.histories["val_loss"][:, first:stop].numpy())
        bad = ran & ~sound
        if bad.any():
            offset = int(np.flatnonzero(bad.any(axis=0))[0])  # the first diverged epoch
            self._raise(loop, int(np.flatnonzero(bad[:, offset])[0]), first + offset + 1, True)

    def on_train_end(self, loop: FitLoop) -> None:
        """The weights the run ends on (a non-finite weight turns the next epoch's loss
        non-finite, so only the last epoch's weights need a look; a checkpoint refuses them
        itself)."""
        finite = loop.backend.finite_members()
        for member, sound in enumerate(finite):
            if not sound and loop.epochs_run[member] == loop.epoch:
                self._raise(loop, member, loop.epoch, False)

    def _raise(self, loop: FitLoop, member: int, epoch: int, finite_weights: bool) -> None:
        validation = float(loop.histories["val_loss"][member, epoch - 1])
        problem = divergence(
            float(loop.histories["train_loss"][member, epoch - 1]),
            validation if self.validation else None,
            finite_weights,
            self.designs[member],
            self.model_config,
            self.learning_rate,
        )
        raise TrainingDiverged(
            f"training diverged at epoch {epoch} (design {self.labels[member]}): {problem}"
        )


class EarlyStoppingCallback(Callback):
    """The shared rule (:class:`softclass.training.early_stopping.EarlyStopping`) per member:
    a member whose monitored number did not improve for ``patience`` epochs stops (its history
    ends there); with ``restore_best`` it ends on its best epoch's weights.

    Args:
        rule: the rule's state (one slot per member; a resumed run's checkpoint restores it).
        restore_best: keep each member's best weights and restore them at the end (a member
            that never improved in this run, and has none from a checkpoint, keeps its own).
        stop: whether a member stops (False: the rule only records, as one partial_fit epoch).
    """

    def __init__(self, rule: EarlyStopping, *, restore_best: bool, stop: bool = True) -> None:
        self.rule = rule
        self.restore_best = restore_best
        self.stop = stop
        self.best: list[torch.Tensor] | None = None  # stacked (M, ...) copies per parameter
        self.kept: list[bool] = []  # per member: whether ``best`` holds weights to restore

    def on_train_begin(self, loop: FitLoop) -> None:
        self.kept = [False] * loop.backend.n_members
        if self.restore_best:
            backend = loop.backend
            members = [backend.member_parameters(m) for m in range(backend.n_members)]
            with torch.no_grad():
                self.best = [torch.stack(tensors).clone() for tensors in zip(*members, strict=True)]
        if self.stop:
            for member, stopped in enumerate(self.rule.stopped):
                if stopped and not loop.stopped[member]:
                    loop.stopped[member] = True

    def on_epoch_end(self, loop: FitLoop) -> None:
        epoch = loop.epoch
        values = loop.histories[MONITORED_HISTORY[self.rule.monitor]][:, epoch - 1].tolist()
        for member, value in enumerate(values):
            if loop.stopped[member]:
                continue
            if self.rule.update(member, epoch, value) and self.best is not None:
                self.kept[member] = True
                with torch.no_grad():
                    for kept, tensor in zip(
                        self.best, loop.backend.member_parameters(member), strict=True
                    ):
                        kept[member].copy_(tensor)
            if self.stop and self.rule.stopped[member]:
                loop.stop_member(member)

    def on_train_end(self, loop: FitLoop) -> None:
        if self.best is None:
            return
        with torch.no_grad():
            for member in (m for m, kept in enumerate(self.kept) if kept):
                for kept, tensor in zip(
                    self.best, loop.backend.member_parameters(member), strict=True
                ):
                    tensor.copy_(kept[member])


class ProgressReport(Callback):
    """A :class:`~softclass.training.results.ProgressEvent` after every epoch of every labelled
    member (the library never prints: the command line draws the bars).

    Args:
        progress: the function called with each event.
        labels: member position → its name in the events (members left out send none).
        validation: the histories hold validation numbers (else they are None in the records).
    """

    per_epoch = False  # the events of a chunk of epochs are sent after it, in epoch order

    def __init__(
        self, progress: ProgressCallback, labels: Mapping[int, str], *, validation: bool
    ) -> None:
        self.progress = progress
        self.labels = dict(labels)
        self.validation = validation
        self.reported = 0  # epochs already sent

    def on_train_begin(self, loop: FitLoop) -> None:
        self.reported = loop.epoch

    def on_epoch_end(self, loop: FitLoop) -> None:
        for epoch in range(self.reported + 1, loop.epoch + 1):
            for member, label in self.labels.items():
                if epoch <= loop.epochs_run[member]:
                    record = epoch_record(loop, member, epoch, self.validation)
                    finished = epoch == loop.epochs_run[member]
                    self.progress(ProgressEvent(label, epoch, loop.epochs, record, finished))
        self.reported = loop.epoch


def epoch_record(loop: FitLoop, member: int, epoch: int, validation: bool) -> EpochRecord:
    """Member ``member``'s numbers of 1-based ``epoch`` as an :class:`EpochRecord`."""
    numbers = loop.record(member, epoch)
    return EpochRecord(
        epoch,
        numbers["train_loss"],
        numbers["train_accuracy"],
        numbers["val_loss"] if validation else None,
        numbers["val_accuracy"] if validation else None,
        loop.seconds[epoch - 1],
    )


def history_of(
    loop: FitLoop,
    member: int,
    *,
    validation: bool,
    best_epoch: int | None = None,
    shared_by: int = 1,
) -> History:
    """Member ``member``'s :class:`History` after the loop (``shared_by``: how many models a
    call trained together, dividing the wall time of each epoch)."""
    records = []
    for epoch in range(1, loop.epochs_run[member] + 1):
        record = epoch_record(loop, member, epoch, validation)
        records.append(replace(record, seconds=record.seconds / shared_by))
    return History(records, best_epoch, loop.epochs_run[member] < loop.epochs)
