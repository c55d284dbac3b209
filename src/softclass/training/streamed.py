"""Training on prepared chunks streamed from disk: the one loop, with the batches swapped.

:class:`StreamedTrainer` is the autograd :class:`~softclass.training.backends.autograd.Trainer`
(same step, optimizer, callbacks, checkpoint and :class:`~softclass.training.loop.FitLoop`)
whose epoch walks an :class:`~softclass.data.stream.EpochPlan` instead of a permutation of
tensors held in memory: it loads one window of prepared chunks
(:class:`~softclass.data.stream_prepare.PreparedChunks`) at a time and takes its rows in the
epoch's order a slab (:data:`SLAB_ROWS` rows) at a time, so memory holds a few chunks and one
slab, never the table.

Under torchrun each rank reads and prepares only its own chunks (the expensive part on tabular
data), and the ranks keep in step one of two ways (``sync``):

* ``"data"`` (the default on CPU): each rank loads only its own chunks of a window; for each
  slab every rank broadcasts its rows of the slab (one broadcast per rank per slab, about 50
  slabs an epoch at 4M rows), so every rank holds the slab and takes every step of one process
  on the whole global batch itself, with no collective per step. A rank holds its share of the
  window (window ÷ ranks) and one slab. The weights are those of one process, bit for bit, on
  every rank. Small tabular networks spend a step mostly in fixed per-step costs, so
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from softclass.data.expansion import FeatureRows, as_dense
from softclass.data.stream import EpochPlan
from softclass.data.stream_prepare import PreparedChunks
from softclass.errors import ConfigError
from softclass.mlp.designs import Design
from softclass.mlp.model import MLPConfig
from softclass.training.backends.autograd import Trainer
from softclass.training.config import TrainConfig, resolve_device
from softclass.training.distributed import DistContext, all_reduce_sum, broadcast_tensor
from softclass.training.results import EpochRecord, ProgressCallback, TrainResult

__all__ = ["SLAB_ROWS", "SYNC_MODES", "StreamedTrainer", "resolve_sync"]

SLAB_ROWS = 65_536
"""Rows of a window gathered in the epoch's order at a time (whole global batches; when the
ranks share the data, one broadcast per rank per slab)."""
SYNC_MODES = ("auto", "data", "gradients")
"""How torchrun ranks keep in step (see the module's text); "auto": "gradients" on CUDA, else
"data"."""
RowsCallback = Callable[[int, int], None]
"""Called after each step as ``(epoch, training rows done in it)`` (epochs count from 1)."""


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
        on_rows: RowsCallback | None = None,
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
        if sync not in SYNC_MODES:
            raise ConfigError(f"sync={sync!r}: expected 'auto', 'data' or 'gradients'")
        self.sync = sync
        self.on_rows = on_rows

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
        sync = resolve_sync(self.sync, self.device_)
        self.sync_ = sync if self.distributed.enabled else None
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
        """One pass over the windows of this epoch's plan, then the validation rows.

        A window's rows are taken in the epoch's order a slab (:data:`SLAB_ROWS` rows, whole
        global batches) at a time: this rank holds its own chunks of the window and one slab,
        never the window twice (nor, when ranks share the data, the other ranks' chunks)."""
        started = time.perf_counter()
        epoch = self.epochs_done_
        self.loss_sum_ = torch.zeros((), dtype=torch.float64, device=self.device_)
        self.correct_ = torch.zeros((), dtype=torch.int64, device=self.device_)
        self.network_.train()
        self.pending_, self.pending_rows_, self.rows_done_ = [], 0, 0
        offset = 0
        for window, chunk_ids in enumerate(self.plan_.windows(epoch)):
            pieces = list(self.plan_.pieces(epoch, window, chunk_ids, offset))
            rows = self._window(chunk_ids)
            for slab in _slabs(pieces, max(SLAB_ROWS, self.config.batch_size)):
                features, targets = rows.take(np.concatenate([local for local, _ in slab]))
                lengths = [len(local) for local, _ in slab]
                encoded = self.design.encode_targets(targets, self.model_config.n_classes)
                parts = zip(
                    features.split(lengths), targets.split(lengths), encoded.split(lengths),
                    strict=True,
                )  # fmt: skip
                for part, (_, n_global) in zip(parts, slab, strict=True):
                    offset += n_global
                    self._feed(part, n_global, epoch, last=offset == self.plan_.n_rows())
                del features, targets, encoded, parts
            del rows
        if not self.replicated_:  # replicated: every rank took every step on every row
            all_reduce_sum(self.loss_sum_, self.distributed)
            all_reduce_sum(self.correct_, self.distributed)
        n_rows = self.plan_.n_rows()
        validation_loss = validation_accuracy = None
        if self.validation_ is not None:
            validation_loss, validation_accuracy = self.evaluate_chunks()
        self.epochs_done_ = epoch + 1
        return EpochRecord(
            epoch=epoch + 1,
            train_loss=float(self.loss_sum_) / n_rows,
            train_accuracy=float(self.correct_) / n_rows,
            validation_loss=validation_loss,
            validation_accuracy=validation_accuracy,
            seconds=time.perf_counter() - started,
        )

    def _feed(
        self, part: tuple[torch.Tensor, ...], n_global: int, epoch: int, *, last: bool
    ) -> None:
        """Add a piece of a global batch; step when the batch is whole (or the epoch ends)."""
        self.pending_.append(part)
        self.pending_rows_ += n_global
        if self.pending_rows_ < self.config.batch_size and not last:
            return
        pending, rows = self.pending_, self.pending_rows_
        batch = (
            pending[0]
            if len(pending) == 1
            else [torch.cat(columns) for columns in zip(*pending, strict=True)]
        )
        batch_loss, batch_correct = self.train_step(*batch, global_rows=rows)
        self.loss_sum_ += batch_loss.detach().double() * rows
        self.correct_ += batch_correct
        self.pending_, self.pending_rows_ = [], 0
        self.rows_done_ += rows
        if self.on_rows is not None:
            self.on_rows(epoch + 1, self.rows_done_)

    @torch.no_grad()
    def evaluate_chunks(self) -> tuple[float, float]:
        """(mean loss, accuracy) over every rank's validation rows, a chunk at a time."""
        self.model_.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device_)
        correct = torch.zeros((), dtype=torch.int64, device=self.device_)
        for chunk in self.chunks.owned:
            if not self.chunks.validation_sizes[chunk]:
                continue
            features, targets = self.chunks.load(chunk, "validation")
            features, targets = as_dense(features).to(self.device_), targets.to(self.device_)
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

    def _window(self, chunk_ids: Sequence[int]) -> _WindowRows:
        """The training rows of window ``chunk_ids`` as this rank can take them: its own
        chunks (in window order), and when the ranks share the data, where every row of the
        window lives (which rank, which of its rows)."""
        owned = [chunk for chunk in chunk_ids if chunk in self.owned_]
        features, targets = self.chunks.load_rows(owned, "train")
        if not owned:
            features = torch.empty((0, self.model_config.n_features), dtype=torch.float32)
        if not self.replicated_:
            return _WindowRows(features, targets, self.device_)
        sizes = [self.chunks.train_sizes[chunk] for chunk in chunk_ids]
        world = self.distributed.world_size
        owner = np.repeat([chunk % world for chunk in chunk_ids], sizes)  # owned_chunks' rule
        local = np.full(len(owner), -1, dtype=np.int64)
        mine = owner == self.distributed.rank
        local[mine] = np.arange(int(mine.sum()))
        return _WindowRows(features, targets, self.device_, owner, local, self.distributed)

    @property
    def owned_(self) -> set[int]:
        return set(self.chunks.owned)


def _pieces(flat: torch.Tensor, parameters) -> list[torch.Tensor]:
    """``flat`` cut into views shaped as ``parameters`` (a module or a list of tensors)."""
    tensors = list(parameters.parameters() if hasattr(parameters, "parameters") else parameters)
    pieces = flat.split([tensor.numel() for tensor in tensors])
    return [piece.view_as(tensor) for piece, tensor in zip(pieces, tensors, strict=True)]


def resolve_sync(sync: str, device: torch.device | str) -> str:
    """The mode ``sync`` means on ``device``: "auto" is "gradients" on CUDA, "data" elsewhere."""
    if sync != "auto":
        return sync
    return "gradients" if torch.device(device).type == "cuda" else "data"


def _slabs(
    pieces: Sequence[tuple[np.ndarray, int]], rows: int
) -> Iterator[list[tuple[np.ndarray, int]]]:
    """Consecutive pieces grouped until they cover at least ``rows`` global rows."""
    slab, covered = [], 0
    for piece in pieces:
        slab.append(piece)
        covered += piece[1]
        if covered >= rows:
            yield slab
            slab, covered = [], 0
    if slab:
        yield slab


class _WindowRows:
    """One window's training rows as a rank takes them, a slab at a time.

    ``features`` (N, F) float32 (or compact :class:`FeatureRows`, expanded as a slab is
    taken) and ``targets`` (N,) int64: this rank's rows of the window.
    Without ``owner`` the plan's indices point into them. With ``owner`` (int (M,): the rank
    holding each of the window's M rows) and ``local`` (int64 (M,): its index among this rank's
    rows, -1 for another rank's), the indices point into the whole window and :meth:`take`
    assembles the slab from every rank: each broadcasts its rows of the slab, in slab order.
    """

    def __init__(
        self,
        features: torch.Tensor | FeatureRows,
        targets: torch.Tensor,
        device: torch.device,
        owner: np.ndarray | None = None,
        local: np.ndarray | None = None,
        distributed: DistContext | None = None,
    ) -> None:
        self.features, self.targets, self.device = features, targets, device
        self.owner, self.local, self.distributed = owner, local, distributed

    def take(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (len(rows), F) and targets (len(rows),) of ``rows``, on the device."""
        if self.owner is None:
            order = torch.from_numpy(rows)
            return self.features[order].to(self.device), self.targets[order].to(self.device)
        n_features = self.features.shape[1]
        # features and the int64 targets' bits side by side: one broadcast per rank
        slab = torch.empty((len(rows), n_features + 2), dtype=torch.float32)
        owners = self.owner[rows]
        for rank in range(self.distributed.world_size):
            mask = owners == rank
            if not mask.any():  # every rank knows the owners: all skip it
                continue
            if rank == self.distributed.rank:
                mine = torch.from_numpy(self.local[rows[mask]])
                targets = self.targets[mine].view(torch.float32).reshape(-1, 2)
                part = torch.cat([self.features[mine], targets], dim=1)
            else:
                part = torch.empty((int(mask.sum()), n_features + 2), dtype=torch.float32)
            broadcast_tensor(part, self.distributed, src=rank)
            slab[torch.from_numpy(mask)] = part
        features = slab[:, :n_features].contiguous()
        targets = slab[:, n_features:].contiguous().view(torch.int64).reshape(-1)
        return features.to(self.device), targets.to(self.device)
