"""Training on prepared chunks streamed from disk: the one loop, with the batches swapped.

:class:`StreamedTrainer` is the autograd :class:`~softclass.training.backends.autograd.Trainer`
(same step, optimizer, callbacks, checkpoint and :class:`~softclass.training.loop.FitLoop`)
whose epoch walks an :class:`~softclass.data.stream.EpochPlan` instead of a permutation of
tensors held in memory: it loads one window of prepared chunks
(:class:`~softclass.data.stream_prepare.PreparedChunks`) at a time, so memory holds a few chunks,
never the table.

Under torchrun each rank reads and prepares only its own chunks (the expensive part on tabular
data), and the ranks keep in step one of two ways (``sync``):

* ``"data"`` (the default on CPU): at each window the owner of each chunk broadcasts its rows,
  so every rank holds the whole window and takes every step of one process on the whole global
  batch itself, with no collective per step. The weights are those of one process, bit for
  bit, on every rank. Small tabular networks spend a step mostly in fixed per-step costs, so
  splitting the batch saves little while a collective per step makes each rank wait for the
  other (on a shared 2-core machine, for the scheduler) 16,000 times an epoch at 4M rows.
* ``"gradients"`` (the default on CUDA): each rank takes its own rows out of every global batch,
  scales its summed loss by ``world_size / global batch rows``, and the gradients are summed in
  one flat all-reduce per step (:meth:`reduce_gradients`) and averaged: a step equals the
  one-process step up to the order of float additions. A rank with no row in a batch still
  steps (a zero gradient), so every rank takes part in every all-reduce. No
  DistributedDataParallel: its reducer's per-step bookkeeping is a measurable part of a small
  network's step.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from softclass.data.stream import EpochPlan
from softclass.data.stream_prepare import PreparedChunks
from softclass.errors import ConfigError
from softclass.mlp.designs import Design
from softclass.mlp.model import MLPConfig
from softclass.training.backends.autograd import Trainer
from softclass.training.config import TrainConfig, resolve_device
from softclass.training.distributed import DistContext, all_reduce_sum, broadcast_tensor
from softclass.training.results import EpochRecord, ProgressCallback, TrainResult

__all__ = ["StreamedTrainer"]


class StreamedTrainer(Trainer):
    """Trains one design on :class:`PreparedChunks`, ``window_chunks`` chunks in memory at once.

    Args: as :class:`Trainer`, and ``chunks`` (this rank's prepared chunks and every chunk's
    sizes), ``window_chunks`` (the shuffle buffer, in chunks) and ``identity`` (what the data
    is, for a resumed run's check: the table's path, size and recipe).
    """

    def __init__(
        self,
        design: Design,
        model_config: MLPConfig,
        config: TrainConfig,
        chunks: PreparedChunks,
        window_chunks: int,
        identity: str,
        *,
        checkpoint_path: str | Path | None = None,
        progress: ProgressCallback | None = None,
        distributed: DistContext | None = None,
        sync: str = "auto",
    ) -> None:
        super().__init__(
            design,
            model_config,
            config,
            checkpoint_path=checkpoint_path,
            progress=progress,
            distributed=distributed,
        )
        self.chunks = chunks
        self.window_chunks = window_chunks
        self.identity = identity
        if sync not in ("auto", "data", "gradients"):
            raise ConfigError(f"sync={sync!r}: expected 'auto', 'data' or 'gradients'")
        self.sync = sync

    def fit_stream(self, *, resume: bool = False) -> TrainResult:
        """Train on the chunks and return the result (raises as :meth:`Trainer.fit`)."""
        if resume and self.checkpoint_path is None:
            raise ConfigError("resume needs a checkpoint_path to resume from")
        if sum(self.chunks.train_sizes) == 0:
            raise ConfigError("no training rows: every row of the table is a validation row")
        self.device_ = (
            self.distributed.device
            if self.distributed.enabled
            else resolve_device(self.config.device)
        )
        sync = self.sync if self.sync != "auto" else "data"
        if self.sync == "auto" and self.device_.type == "cuda":
            sync = "gradients"
        self.replicated_ = self.distributed.enabled and sync == "data"
        self.plan_ = EpochPlan(
            self.chunks.train_sizes,
            self.config.batch_size,
            self.window_chunks,
            self.config.seed,
            None if self.replicated_ else self.chunks.owned,
        )
        self.fingerprint_ = hashlib.sha256(
            json.dumps(
                [self.identity, self.chunks.train_sizes, self.chunks.validation_sizes]
            ).encode()
        ).hexdigest()
        self.train_ = None
        self.validation_ = self.chunks if sum(self.chunks.validation_sizes) else None
        self.build_model()
        return self.fit_loop(resume)

    def batches_per_epoch(self) -> int:
        return self.plan_.n_batches()

    def train_step(
        self,
        features: torch.Tensor,
        targets: torch.Tensor,
        encoded_targets: torch.Tensor,
        global_rows: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`Trainer.train_step`; replicated ranks step as one process does."""
        if not self.replicated_:
            return super().train_step(features, targets, encoded_targets, global_rows)
        distributed, self.distributed = self.distributed, DistContext()
        try:
            return super().train_step(features, targets, encoded_targets)
        finally:
            self.distributed = distributed

    def wrap_network(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model itself: under torchrun :meth:`reduce_gradients` replaces DDP. The ranks
        start from rank 0's weights (one broadcast), as DDP would make them."""
        self.flat_gradients_ = None
        if self.distributed.enabled:
            flat = torch.cat([tensor.detach().reshape(-1) for tensor in model.parameters()])
            broadcast_tensor(flat, self.distributed)
            with torch.no_grad():
                for tensor, piece in zip(model.parameters(), _pieces(flat, model), strict=True):
                    tensor.copy_(piece)
        return model

    @torch.no_grad()
    def optimizer_step(self) -> None:
        """Average the gradients over the ranks (one all-reduce), then step as one process."""
        if self.distributed.enabled and not self.replicated_:
            self.reduce_gradients()
        super().optimizer_step()

    def reduce_gradients(self) -> None:
        """Every parameter's gradient summed over the ranks in one flat all-reduce, then
        divided by the world size (a parameter without a gradient counts as zeros)."""
        parameters = list(self.parameters_.values())
        for tensor in parameters:
            if tensor.grad is None:
                tensor.grad = torch.zeros_like(tensor)
        if self.flat_gradients_ is None:
            total = sum(tensor.numel() for tensor in parameters)
            self.flat_gradients_ = torch.empty(
                total, dtype=parameters[0].dtype, device=self.device_
            )
        flat = self.flat_gradients_
        torch.cat([tensor.grad.reshape(-1) for tensor in parameters], out=flat)
        all_reduce_sum(flat, self.distributed)
        flat.div_(self.distributed.world_size)
        for tensor, piece in zip(parameters, _pieces(flat, parameters), strict=True):
            tensor.grad.copy_(piece)

    def run_epoch(self) -> EpochRecord:
        """One pass over the windows of this epoch's plan, then the validation rows."""
        started = time.perf_counter()
        epoch = self.epochs_done_
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device_)
        correct = torch.zeros((), dtype=torch.int64, device=self.device_)
        self.network_.train()
        pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        pending_rows = offset = 0
        for window, chunk_ids in enumerate(self.plan_.windows(epoch)):
            pieces = list(self.plan_.pieces(epoch, window, chunk_ids, offset))
            features, targets = self._window(chunk_ids, "train")
            # the window in this epoch's order at once (one gather), then cut into the pieces
            order = torch.from_numpy(np.concatenate([rows for rows, _ in pieces]))
            lengths = [len(rows) for rows, _ in pieces]
            features = features[order.to(self.device_)].split(lengths)
            targets = targets[order.to(self.device_)]
            encoded = self.design.encode_targets(targets, self.model_config.n_classes)
            parts = zip(features, targets.split(lengths), encoded.split(lengths), strict=True)
            for part, (_, n_global) in zip(parts, pieces, strict=True):
                pending.append(part)
                pending_rows += n_global
                offset += n_global
                if pending_rows == self.config.batch_size or offset == self.plan_.n_rows():
                    batch = (
                        pending[0]
                        if len(pending) == 1
                        else [torch.cat(columns) for columns in zip(*pending, strict=True)]
                    )
                    batch_loss, batch_correct = self.train_step(*batch, global_rows=pending_rows)
                    loss_sum += batch_loss.detach().double() * pending_rows
                    correct += batch_correct
                    pending, pending_rows = [], 0
            del features, targets, encoded
        if not self.replicated_:  # replicated: every rank took every step on every row
            all_reduce_sum(loss_sum, self.distributed)
            all_reduce_sum(correct, self.distributed)
        n_rows = self.plan_.n_rows()
        validation_loss = validation_accuracy = None
        if self.validation_ is not None:
            validation_loss, validation_accuracy = self.evaluate_chunks()
        self.epochs_done_ = epoch + 1
        return EpochRecord(
            epoch=epoch + 1,
            train_loss=float(loss_sum) / n_rows,
            train_accuracy=float(correct) / n_rows,
            validation_loss=validation_loss,
            validation_accuracy=validation_accuracy,
            seconds=time.perf_counter() - started,
        )

    @torch.no_grad()
    def evaluate_chunks(self) -> tuple[float, float]:
        """(mean loss, accuracy) over every rank's validation rows, a chunk at a time."""
        self.model_.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device_)
        correct = torch.zeros((), dtype=torch.int64, device=self.device_)
        for chunk in self.chunks.owned:
            if not self.chunks.validation_sizes[chunk]:
                continue
            features, targets = self._window([chunk], "validation")
            encoded = self.design.encode_targets(targets, self.model_config.n_classes)
            with self._autocast():
                logits = self.model_(features)
                loss = self.design.loss_from_logits(logits, encoded)
            loss_sum += loss.double() * targets.shape[0]
            correct += (logits.argmax(dim=1) == targets).sum()
        all_reduce_sum(loss_sum, self.distributed)
        all_reduce_sum(correct, self.distributed)
        n_rows = sum(self.chunks.validation_sizes)
        return float(loss_sum) / n_rows, float(correct) / n_rows

    def check_first_batch(self, outputs: torch.Tensor, encoded_targets: torch.Tensor) -> None:
        """As :meth:`Trainer.check_first_batch`, on the first batch with rows on this rank."""
        if outputs.shape[0]:
            super().check_first_batch(outputs, encoded_targets)

    def _window(self, chunk_ids: Sequence[int], part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of ``chunk_ids`` (in that order): features and targets on device.
        Replicated ranks hold every training row of the window: each chunk's owner broadcasts
        it."""
        if self.replicated_ and part == "train":
            loaded = [self._shared_chunk(chunk) for chunk in chunk_ids]
        else:
            loaded = [self.chunks.load(chunk, part) for chunk in chunk_ids if chunk in self.owned_]
        if not loaded:
            empty = torch.empty((0, self.model_config.n_features), dtype=torch.float32)
            return empty.to(self.device_), torch.empty(0, dtype=torch.int64, device=self.device_)
        features = torch.cat([features for features, _ in loaded]).to(self.device_)
        targets = torch.cat([targets for _, targets in loaded]).to(self.device_)
        return features, targets

    def _shared_chunk(self, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training rows of ``chunk`` on every rank, broadcast by the rank that owns it."""
        if chunk in self.owned_:
            features, targets = self.chunks.load(chunk, "train")
        else:
            rows = self.chunks.train_sizes[chunk]
            features = torch.empty((rows, self.model_config.n_features), dtype=torch.float32)
            targets = torch.empty(rows, dtype=torch.int64)
        owner = chunk % self.distributed.world_size  # owned_chunks: c % world_size == rank
        broadcast_tensor(features, self.distributed, src=owner)
        broadcast_tensor(targets, self.distributed, src=owner)
        return features, targets

    @property
    def owned_(self) -> set[int]:
        return set(self.chunks.owned)


def _pieces(flat: torch.Tensor, parameters) -> list[torch.Tensor]:
    """``flat`` cut into views shaped as ``parameters`` (a module or a list of tensors)."""
    tensors = list(parameters.parameters() if hasattr(parameters, "parameters") else parameters)
    pieces = flat.split([tensor.numel() for tensor in tensors])
    return [piece.view_as(tensor) for piece, tensor in zip(pieces, tensors, strict=True)]
