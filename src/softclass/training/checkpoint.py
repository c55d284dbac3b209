"""The one checkpoint: a safetensors file with a checked JSON header, written and read by every
backend (the autograd reference writes its one model as M = 1).

:class:`Checkpoint` is the loop's callback: it writes the run's state every
``checkpoint_every`` epochs and after the last (atomically; a diverged state is never written),
and on ``resume`` restores it before the first epoch — the same weights as an uninterrupted run,
since the batch order depends only on ``(seed, epoch)``. The format and its checks are
:mod:`softclass.training.schema.checkpoint`; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from softclass.errors import ModelFileError, TrainingDiverged
from softclass.io import atomic_write_bytes
from softclass.mlp.model import MLPConfig
from softclass.mlp.optimizers import BatchedState
from softclass.training.callbacks import EarlyStoppingCallback
from softclass.training.config import TrainConfig
from softclass.training.loop import Callback, FitLoop
from softclass.training.schema import checkpoint as schema

__all__ = ["Checkpoint", "StackedState", "checkpoint_progress", "data_fingerprint"]


@dataclass(frozen=True)
class StackedState:
    """A backend's state as a checkpoint holds it: writable ``(M, ...)`` views.

    Attributes:
        members: ``(design, seed)`` of each model.
        model_config, settings, dtype: the network, the options, the parameters' dtype.
        parameters, first_moments, second_moments: per parameter of the MLP (``W0, b0, ...``)
            with a leading member axis (``second_moments`` empty for one-moment optimizers).
        optimizer_state: whose ``step_count`` (and ``step_counts``) a resume sets.
    """

    members: tuple[tuple[str, int], ...]
    model_config: MLPConfig
    settings: TrainConfig
    dtype: torch.dtype
    parameters: list[torch.Tensor]
    first_moments: list[torch.Tensor]
    second_moments: list[torch.Tensor]
    optimizer_state: BatchedState


def data_fingerprint(*tensors: torch.Tensor | None) -> str:
    """SHA-256 of the training tensors' bytes: a resumed run must see the same data."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none")
            continue
        values = tensor.detach().to("cpu").contiguous()
        digest.update(f"{values.dtype}{tuple(values.shape)}".encode())
        digest.update(values.view(torch.uint8).numpy().tobytes() if values.numel() else b"")
    return digest.hexdigest()


def resumable_options(train_config: dict[str, Any]) -> dict[str, Any]:
    """The options that must match to resume (more epochs, another device, early-stopping
    patience or thread count are allowed)."""
    return {
        key: value
        for key, value in train_config.items()
        if key not in ("epochs", "device", "checkpoint_every", "patience", "threads")
    }


class Checkpoint(Callback):
    """Writes the run's state to ``path`` every ``every`` epochs and after the last; with
    ``resume`` restores it first.

    Args:
        path: the checkpoint file.
        fingerprint: :func:`data_fingerprint` of the training data (a resume must match it).
        every: epochs between two writes (and the last epoch always).
        batches_per_epoch: optimizer steps per epoch (a resume checks the step count).
        has_validation: whether the run scores validation rows.
        early_stopping: the run's early-stopping callback (its rule and best weights are part
            of the state), or None.
        resume: restore the state before the first epoch.
        write: whether this process writes (rank 0 of a torchrun run; every rank resumes).
    """

    def __init__(
        self,
        path: str | Path,
        fingerprint: str,
        *,
        every: int,
        batches_per_epoch: int,
        has_validation: bool,
        early_stopping: EarlyStoppingCallback | None = None,
        resume: bool = False,
        write: bool = True,
    ) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.every = every
        self.batches_per_epoch = batches_per_epoch
        self.has_validation = has_validation
        self.early_stopping = early_stopping
        self.resume = resume
        self.write = write

    def on_train_begin(self, loop: FitLoop) -> None:
        if self.resume:
            loop.epoch = self.load(loop)

    def on_epoch_end(self, loop: FitLoop) -> None:
        if self.write and (loop.epoch % self.every == 0 or loop.finished):
            self.save(loop)

    def save(self, loop: FitLoop) -> None:
        """Write the state after ``loop.epoch`` epochs (atomically; safetensors + JSON).

        Raises:
            TrainingDiverged: a weight or optimizer state is NaN or infinite (such a state is
                never written: the checkpoint of the last sound epoch stays).
        """
        state, epoch = loop.backend.stacked_state(), loop.epoch
        _refuse_diverged(state, epoch)
        early = self.early_stopping
        header = schema.BatchedCheckpointHeader(
            members=state.members,
            model_config=state.model_config,
            train_config=state.settings,
            data_fingerprint=self.fingerprint,
            dtype=state.dtype,
            epoch=epoch,
            step_count=state.optimizer_state.step_count,
            epochs_run=tuple(loop.epochs_run),
            early_stopping=None if early is None else early.rule.to_dict(),
        )
        tensors = schema.BatchedCheckpointTensors(
            parameters=state.parameters,
            first_moments=state.first_moments,
            second_moments=state.second_moments,
            best=None if early is None else early.best,
            histories={name: history[:, :epoch] for name, history in loop.histories.items()},
        )
        atomic_write_bytes(self.path, schema.encode_batched_checkpoint(header, tensors))

    def load(self, loop: FitLoop) -> int:
        """Restore the state saved by :meth:`save`; returns the epochs already run.

        Every field is checked (the header, this run's members, network, options and data, then
        the tensors) before a tensor is read.

        Raises:
            ModelFileError: missing, damaged, unsafe or older file, or one written by a run with
                other members, network, options or data (one line naming the file and field).
        """
        state = loop.backend.stacked_state()
        header = schema.read_batched_checkpoint_header(self.path)
        self._check_same_run(header, state)
        saved = schema.load_batched_checkpoint(
            self.path,
            header,
            schema.BatchedRun(
                dtype=state.dtype,
                epochs=state.settings.epochs,
                batches_per_epoch=self.batches_per_epoch,
                has_validation=self.has_validation,
            ),
        )
        pairs = [
            (state.parameters, saved.parameters),
            (state.first_moments, saved.first_moments),
            (state.second_moments, saved.second_moments),
        ]
        early = self.early_stopping
        if early is not None and early.best is not None and saved.best is not None:
            pairs.append((early.best, saved.best))  # patience may change on resume
            early.kept = [True] * len(state.members)
        with torch.no_grad():  # the schema checked every tensor's dtype and shape
            for targets, values in pairs:
                for tensor, value in zip(targets, values, strict=True):
                    tensor.copy_(value)
        optimizer_state = state.optimizer_state
        optimizer_state.step_count = header.step_count
        for counter in optimizer_state.step_counts:
            counter.fill_(float(header.step_count))
        epoch = header.epoch
        for name, history in loop.histories.items():
            history[:, :epoch] = saved.histories[name]
        if early is not None and header.early_stopping is not None:
            early.rule.load_dict(header.early_stopping)
            for member, stopped in enumerate(early.rule.stopped):
                if stopped:  # a stopped member's count is its last epoch
                    loop.stopped[member] = True
                    loop.epochs_run[member] = header.epochs_run[member]
        return epoch

    def _check_same_run(self, header: schema.BatchedCheckpointHeader, state: StackedState) -> None:
        expected = {
            "members": [list(member) for member in state.members],
            "model_config": state.model_config.to_dict(),
            "train_config": resumable_options(state.settings.to_dict()),
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
                    f"{self.path}: cannot resume, the checkpoint's {key} {found[key]!r} differs "
                    f"from this run's {value!r}"
                    if key != "data_fingerprint"
                    else f"{self.path}: cannot resume, the checkpoint was written for other "
                    "training data (or another split, or the same table prepared by another "
                    "softclass version); train again without --resume"
                )


def _refuse_diverged(state: StackedState, epoch: int) -> None:
    diverged = torch.zeros(len(state.members), dtype=torch.bool)
    for tensor in (*state.parameters, *state.first_moments, *state.second_moments):
        diverged |= ~torch.isfinite(tensor).flatten(1).all(1).cpu()
    if bool(diverged.any()):
        names = [
            f"{design} seed {seed}"
            for (design, seed), bad in zip(state.members, diverged.tolist(), strict=True)
            if bad
        ]
        raise TrainingDiverged(
            f"training diverged at epoch {epoch} ({', '.join(names[:5])}): the weights or "
            "the optimizer state became NaN or infinite; lower the learning rate (--lr) or "
            "scale the features (--normalize zscore)"
        )


def checkpoint_progress(path: str | Path) -> tuple[int, int]:
    """Epochs done and epochs asked for, read from a checkpoint's header alone.

    Raises:
        ModelFileError: the file is missing, damaged, of an older format or not a checkpoint.
    """
    header = schema.read_batched_checkpoint_header(path)
    return header.epoch, header.train_config.epochs
