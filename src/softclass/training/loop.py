"""The one training loop: ``fit → run_epochs → backend``, with callbacks for everything else.

Every way softclass trains goes through :class:`FitLoop` (skorch's shape: ``fit → fit_loop →
run_single_epoch → train_step``): ``softclass compare`` (every design × seed at once, or the
autograd designs in lockstep), ``softclass train`` and :class:`softclass.Classifier`. The loop
owns the epoch count, the per-member histories and which members still run; a backend
(:class:`EpochBackend`) only runs epochs:

* :class:`softclass.training.backends.autograd.AutogradEpochs` — the reference, one
  :class:`~softclass.training.backends.autograd.Trainer` per member, ``torch.autograd``;
* :class:`softclass.training.backends.epochs.BatchedEpochs` — every member stacked, the torch
  path with a hand-written backward or the compiled loops, whole chunks of epochs per call when no
  callback needs to see each one.

Progress, early stopping, divergence, checkpoints and the A/B agreement probe are callbacks
(:class:`Callback`): the layers below never call up into a job or the command line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Protocol

import torch

from softclass.mlp.model import MLP

__all__ = ["HISTORY_NAMES", "MONITORED_HISTORY", "Callback", "EpochBackend", "FitLoop"]

# The per-epoch numbers every backend returns, each (M, epochs) float64: the training loss and
# accuracy measured while training, the validation ones after the epoch (NaN without rows).
HISTORY_NAMES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
# The history the early-stopping rule reads for each monitor of softclass.training.config.MONITORS.
MONITORED_HISTORY = {
    "train_loss": "train_loss",
    "validation_loss": "val_loss",
    "validation_accuracy": "val_accuracy",
}
# Aim of one backend call's length in seconds when the callbacks allow several epochs per call:
# long enough that the loop's own work between calls is small, short enough for progress.
CALL_SECONDS = 0.25


class EpochBackend(Protocol):
    """What trains: M models (members), an epoch at a time or several per call."""

    @property
    def n_members(self) -> int: ...

    def run_epochs(
        self, first_epoch: int, n_epochs: int, running: Sequence[bool]
    ) -> dict[str, torch.Tensor]:
        """Epochs ``first_epoch .. first_epoch + n_epochs - 1`` (0-based) for every member
        (a backend may skip those not ``running``); returns :data:`HISTORY_NAMES` → ``(M,
        n_epochs)`` float64 CPU tensors (NaN where not measured)."""
        ...

    def epochs_per_call(self) -> int:
        """How many epochs one :meth:`run_epochs` call may run when no callback watches each."""
        ...

    def member_parameters(self, member: int) -> list[torch.Tensor]:
        """Views of member ``member``'s weights and biases (in the MLP's parameter order)."""
        ...

    def member_model(self, member: int) -> MLP:
        """Member ``member``'s network as an :class:`MLP` with its current weights."""
        ...

    def finite_members(self) -> list[bool]:
        """Per member, whether every weight is finite now (one host sync)."""
        ...

    def max_weight_differences(self, pairs: Sequence[tuple[int, int]]) -> list[float]:
        """Per pair of members, max |W_i - W_j| over every weight and bias (one host sync)."""
        ...


class Callback:
    """A hook on the loop; override what you need. ``per_epoch``: the callback must see every
    epoch (otherwise the loop may run several epochs per backend call between two calls)."""

    per_epoch = True

    def next_needed_epoch(self, loop: FitLoop) -> int | None:
        """The epoch count (``loop.epoch`` after a call) at which this callback must be called
        next; None: any. Default: the next epoch when :attr:`per_epoch`."""
        return loop.epoch + 1 if self.per_epoch else None

    def on_train_begin(self, loop: FitLoop) -> None:
        """Before the first epoch (a checkpoint callback restores a run here)."""

    def on_epoch_end(self, loop: FitLoop) -> None:
        """After each backend call; ``loop.epoch`` is the number of epochs done."""

    def on_train_end(self, loop: FitLoop) -> None:
        """After the last epoch (early stopping restores the best weights here)."""


class FitLoop:
    """Runs a backend for up to ``epochs`` epochs and calls the callbacks in their order.

    Attributes:
        backend: the :class:`EpochBackend`.
        epochs: the configured total.
        epoch: epochs done so far (0 before the first; a resumed run starts further on).
        histories: :data:`HISTORY_NAMES` → ``(M, epochs)`` float64, NaN where not run.
        epochs_run: per member, its last epoch once it stopped early, else ``epochs``.
        stopped: per member, whether it stopped early.
        seconds: per epoch, the wall time of the call that ran it divided by its epochs.
    """

    def __init__(
        self, backend: EpochBackend, epochs: int, callbacks: Sequence[Callback] = ()
    ) -> None:
        self.backend = backend
        self.epochs = epochs
        self.callbacks = list(callbacks)
        n_members = backend.n_members
        self.histories = {
            name: torch.full((n_members, epochs), math.nan, dtype=torch.float64)
            for name in HISTORY_NAMES
        }
        self.epoch = 0
        self.epochs_run = [epochs] * n_members
        self.stopped = [False] * n_members
        self.seconds = [0.0] * epochs
        self.extras: dict[str, torch.Tensor] = {}

    @property
    def finished(self) -> bool:
        """Every epoch ran, or every member stopped."""
        return self.epoch >= self.epochs or all(self.stopped)

    def fit(self, first_epoch: int = 0) -> FitLoop:
        """Run from ``first_epoch`` (0-based epochs already done) to the end; returns ``self``.

        A member's history after its last epoch is NaN when the loop ends.
        """
        self.epoch = first_epoch
        for callback in self.callbacks:
            callback.on_train_begin(self)
        while not self.finished:
            self.run_epochs()
        for callback in self.callbacks:
            callback.on_train_end(self)
        for member, count in enumerate(self.epochs_run):
            for history in self.histories.values():
                history[member, count:] = math.nan
        return self

    def epochs_this_call(self) -> int:
        """Epochs of the next backend call: up to the epoch a callback needs next
        (:meth:`Callback.next_needed_epoch`), what the backend allows, and about
        :data:`CALL_SECONDS` of work at the last call's pace (the callbacks, e.g. progress,
        still hear from the run that often)."""
        stop = self.epochs
        for callback in self.callbacks:
            needed = callback.next_needed_epoch(self)
            if needed is not None:
                stop = min(stop, needed)
        per_call = min(stop - self.epoch, self.backend.epochs_per_call())
        if self.epoch > 0 and self.seconds[self.epoch - 1] > 0:
            per_call = min(per_call, int(CALL_SECONDS / self.seconds[self.epoch - 1]))
        return max(1, per_call)

    def run_epochs(self) -> None:
        """One backend call (one epoch, or a chunk of :meth:`epochs_this_call`), then the
        callbacks. Results beyond :data:`HISTORY_NAMES` (e.g. a watched pair's weight
        differences) stay in :attr:`extras` for the callbacks of this call."""
        first = self.epoch
        stop = min(first + self.epochs_this_call(), self.epochs)
        started = time.perf_counter()
        running = [not stopped for stopped in self.stopped]
        results = self.backend.run_epochs(first, stop - first, running)
        seconds = (time.perf_counter() - started) / (stop - first)
        self.extras = {}
        for name, values in results.items():
            if name in self.histories:
                self.histories[name][:, first:stop] = values
            else:
                self.extras[name] = values
        self.seconds[first:stop] = [seconds] * (stop - first)
        self.epoch = stop
        for callback in self.callbacks:
            callback.on_epoch_end(self)

    def stop_member(self, member: int) -> None:
        """Member ``member`` stops after the current epoch (its history ends there)."""
        self.stopped[member] = True
        self.epochs_run[member] = self.epoch

    def record(self, member: int, epoch: int) -> dict[str, float]:
        """Member ``member``'s numbers of 1-based ``epoch``: :data:`HISTORY_NAMES` → float."""
        return {name: float(self.histories[name][member, epoch - 1]) for name in HISTORY_NAMES}
