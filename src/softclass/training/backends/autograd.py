"""The autograd backend: one design, one seeded MLP, ``torch.autograd`` and the optimizer
registry's update — the reference every other backend is tested against, and the one for bf16
autocast and torchrun data parallelism.

:class:`Trainer` holds the per-model steps a subclass can override (as skorch does)::

    Trainer.fit → initialize → FitLoop (softclass.training.loop) → run_epoch → train_step
                                                                              └ evaluate

:class:`AutogradEpochs` is the loop's backend over one or more Trainers (``softclass compare``
runs its designs' Trainers in lockstep through it). Batches are contiguous slices of tensors
built once; the row order of each epoch comes from
:func:`softclass.training.batching.epoch_permutation`, so it depends only on ``(seed, epoch)``:
a resumed run ends with the same weights as an uninterrupted one, and a model trained alone
equals the same model trained inside a batched ensemble.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from softclass.data.expansion import FeatureRows, as_dense, fingerprint_tensors, take_rows
from softclass.diagnostics.check import check_pairing, warn_findings
from softclass.errors import ConfigError
from softclass.mlp.designs import Design
from softclass.mlp.model import MLP, MLPConfig, build_mlp
from softclass.mlp.optimizers import BatchedState, Optimizer, get_optimizer
from softclass.training.batching import batch_bounds, epoch_permutation
from softclass.training.callbacks import (
    DivergenceCheck,
    EarlyStoppingCallback,
    ProgressReport,
    history_of,
)
from softclass.training.checkpoint import Checkpoint, StackedState, data_fingerprint
from softclass.training.config import TrainConfig, resolve_device
from softclass.training.distributed import DistContext, all_reduce_sum, loss_scale, shard_rows
from softclass.training.early_stopping import EarlyStopping
from softclass.training.loop import Callback, FitLoop
from softclass.training.results import EpochRecord, ProgressCallback, TrainResult

__all__ = ["AutogradEpochs", "Trainer", "fit"]


@dataclass(frozen=True)
class _Split:
    """One part of the data on the training device: features, indices, design-encoded targets."""

    features: torch.Tensor | FeatureRows  # (N, F) float32 (training rows: maybe compact)
    targets: torch.Tensor  # (N,) int64 class indices
    encoded: torch.Tensor  # what the design's loss takes: (N,) int64 or (N, C) float32


class Trainer:
    """Trains one design on pre-built tensors; each step is a method a subclass may override.

    ``__init__`` only stores; attributes set by :meth:`initialize` and later end in ``_``.

    Args:
        design: the output/loss design (from :func:`softclass.mlp.designs.get_design`).
        model_config: the network's shape.
        config: the training options.
        checkpoint_path: where to write a checkpoint every ``config.checkpoint_every`` epochs
            (and after the last one); None for no checkpoints.
        progress: called after every epoch with a :class:`ProgressEvent`.
        label: names this run in progress events (default: the design's name).
        distributed: this process's place in a torchrun data-parallel run (from
            :func:`softclass.training.distributed.setup`); None trains in one process. Every rank
            passes
            the same tensors; each trains on its share of every global batch under
            DistributedDataParallel, so the weights equal a one-process run's with the same
            ``batch_size`` (the global batch). Rank 0 alone writes checkpoints.
    """

    def __init__(
        self,
        design: Design,
        model_config: MLPConfig,
        config: TrainConfig | None = None,
        *,
        checkpoint_path: str | Path | None = None,
        progress: ProgressCallback | None = None,
        label: str | None = None,
        distributed: DistContext | None = None,
    ) -> None:
        self.model_config = model_config
        self.config = TrainConfig() if config is None else config
        self.design = design.smoothed(self.config.label_smoothing)
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.progress = progress
        self.label = design.name if label is None else label
        self.distributed = DistContext() if distributed is None else distributed

    # -- the steps -------------------------------------------------------------------------------

    def fit(
        self,
        train_features: torch.Tensor,
        train_targets: torch.Tensor,
        validation_features: torch.Tensor | None = None,
        validation_targets: torch.Tensor | None = None,
        *,
        resume: bool = False,
    ) -> TrainResult:
        """Train and return the result.

        Args:
            train_features: float (N, F) training rows (already preprocessed).
            train_targets: int (N,) class indices in [0, C).
            validation_features, validation_targets: the held-out rows, or None.
            resume: continue from ``checkpoint_path`` (which must exist and match this run).

        Raises:
            ConfigError: inconsistent tensors or options (early stopping without validation
                rows, resume without a checkpoint path).
            ModelFileError: the checkpoint to resume from is missing, unsafe or from another run.
            TrainingDiverged: the loss or the weights became NaN or infinite.
        """
        if resume and self.checkpoint_path is None:
            raise ConfigError("resume needs a checkpoint_path to resume from")
        self.initialize(train_features, train_targets, validation_features, validation_targets)
        return self.fit_loop(resume)

    def fit_loop(self, resume: bool) -> TrainResult:
        """The loop over the data :meth:`initialize` (or a subclass's own) set up."""
        early = (
            EarlyStoppingCallback(
                EarlyStopping.from_config(self.config), restore_best=self.config.restore_best
            )
            if self.config.patience is not None
            else None
        )
        loop = FitLoop(AutogradEpochs([self]), self.config.epochs, self.callbacks(early, resume))
        loop.fit()
        best_epoch = None if early is None else early.rule.best_epoch[0]
        history = history_of(
            loop, 0, validation=self.validation_ is not None, best_epoch=best_epoch
        )
        model = self.model_.to("cpu").eval()
        return TrainResult(model, self.design, self.model_config, self.config, history)

    def callbacks(self, early: EarlyStoppingCallback | None, resume: bool) -> list[Callback]:
        """Early stopping, divergence, checkpoints and progress of this run, in that order."""
        validation = self.validation_ is not None
        callbacks: list[Callback] = [] if early is None else [early]
        callbacks.append(
            DivergenceCheck(
                [self.design],
                [self.label],
                self.model_config,
                self.config.learning_rate,
                validation=validation,
            )
        )
        if self.checkpoint_path is not None:
            callbacks.append(
                Checkpoint(
                    self.checkpoint_path,
                    self.fingerprint_,
                    every=self.config.checkpoint_every,
                    batches_per_epoch=self.batches_per_epoch(),
                    has_validation=validation,
                    early_stopping=early,
                    resume=resume,
                    write=self.distributed.is_main,
                )
            )
        # Progress after the checkpoint: an epoch reported done is an epoch saved.
        if self.progress is not None:
            callbacks.append(ProgressReport(self.progress, {0: self.label}, validation=validation))
        return callbacks

    def initialize(
        self,
        train_features: torch.Tensor,
        train_targets: torch.Tensor,
        validation_features: torch.Tensor | None = None,
        validation_targets: torch.Tensor | None = None,
    ) -> None:
        """Check the tensors, build the seeded model and the optimizer, move data to the device."""
        self._check_data(train_features, train_targets, validation_features, validation_targets)
        self.device_ = (
            self.distributed.device
            if self.distributed.enabled
            else resolve_device(self.config.device)
        )
        # The batched engine's fingerprint (no row weights): either backend resumes the other's.
        self.fingerprint_ = data_fingerprint(
            *fingerprint_tensors(
                train_features, train_targets, validation_features, validation_targets, None
            )
        )
        self.train_ = self._split(train_features, train_targets)
        self.validation_ = (
            None
            if validation_features is None
            else self._split(as_dense(validation_features), validation_targets)
        )
        self.build_model()

    def build_model(self) -> None:
        """The seeded model on ``device_``, its wrapper and the optimizer's zero state."""
        self.model_ = build_mlp(self.model_config, self.config.seed).to(self.device_)
        self.network_ = self.wrap_network(self.model_)
        self.parameters_ = dict(self.model_.named_parameters())
        self.optimizer_, self.optimizer_state_ = self.make_optimizer(self.model_)
        self.epochs_done_ = 0
        self.pairing_checked_ = False

    def batches_per_epoch(self) -> int:
        """Optimizer steps per epoch (for the checkpoint)."""
        return len(batch_bounds(self.train_.features.shape[0], self.config.batch_size))

    def wrap_network(self, model: MLP) -> torch.nn.Module:
        """The module that trains: ``model`` itself, or DistributedDataParallel over it."""
        if not self.distributed.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device_.index] if self.device_.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def make_optimizer(self, model: torch.nn.Module) -> tuple[Optimizer, BatchedState]:
        """The configured registry optimizer and its zero state for ``model``'s parameters.

        No ``torch.optim`` object: the registry's ``batched_step`` runs torch's fused kernels
        (torch.optim's updates, bit for bit) without importing ``torch._dynamo``.
        """
        optimizer = get_optimizer(self.config.optimizer)
        return optimizer, optimizer.new_state(list(model.parameters()))

    def run_epoch(self) -> EpochRecord:
        """One pass over the training rows in this epoch's order, then the validation rows."""
        started = time.perf_counter()
        epoch_index = self.epochs_done_  # 0-based index of the epoch being run
        n_rows = self.train_.features.shape[0]
        order = epoch_permutation(n_rows, self.config.seed, epoch_index).to(self.device_)
        # compact rows (FeatureRows) stay compact: each batch is expanded as it is taken
        features = take_rows(self.train_.features, order)
        targets = self.train_.targets[order]
        encoded = self.train_.encoded[order]
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device_)
        correct = torch.zeros((), dtype=torch.int64, device=self.device_)
        self.network_.train()
        for start, stop in batch_bounds(n_rows, self.config.batch_size):
            rows = (
                shard_rows(torch.arange(start, stop, device=self.device_), self.distributed)
                if self.distributed.enabled
                else slice(start, stop)
            )
            batch_loss, batch_correct = self.train_step(
                features[rows], targets[rows], encoded[rows], global_rows=stop - start
            )
            loss_sum += batch_loss.detach().double() * (stop - start)
            correct += batch_correct
        all_reduce_sum(loss_sum, self.distributed)
        all_reduce_sum(correct, self.distributed)
        train_loss = float(loss_sum) / n_rows  # the epoch's one host synchronisation
        train_accuracy = float(correct) / n_rows
        validation_loss = validation_accuracy = None
        if self.validation_ is not None:
            validation_loss, validation_accuracy = self.evaluate(self.validation_)
        record = EpochRecord(
            epoch=epoch_index + 1,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            validation_loss=validation_loss,
            validation_accuracy=validation_accuracy,
            seconds=time.perf_counter() - started,
        )
        self.epochs_done_ = epoch_index + 1
        return record

    def train_step(
        self,
        features: torch.Tensor,
        targets: torch.Tensor,
        encoded_targets: torch.Tensor,
        global_rows: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch; returns (loss, number of correct rows) as tensors.

        In one process the loss is the design's mean over the batch. Under torchrun the rows are
        this rank's share of a global batch of ``global_rows``: the rank's summed loss is scaled
        so that DDP's gradient average equals the one-process gradient of the global mean, and
        the returned loss is this rank's part of that mean (the parts add up across ranks).
        """
        self.model_.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.network_(features)
            outputs = self.design.output(logits)
            if not self.pairing_checked_:
                self.check_first_batch(outputs, encoded_targets)
            if self.distributed.enabled:
                total = self.design.loss(outputs, encoded_targets, reduction="sum")
                loss = total * loss_scale(global_rows, self.distributed)
                batch_loss = total.detach() / global_rows
            else:
                loss = batch_loss = self.design.loss(outputs, encoded_targets)
        loss.backward()
        self.optimizer_step()
        return batch_loss, (logits.detach().argmax(dim=1) == targets).sum()

    @torch.no_grad()
    def optimizer_step(self) -> None:
        """Update every parameter that has a gradient (under torchrun DDP has already averaged
        the gradients across ranks); parameters without one are left alone, as torch.optim
        leaves them, and their step counts stay where they are."""
        parameters = list(self.parameters_.values())
        indices = [index for index, tensor in enumerate(parameters) if tensor.grad is not None]
        if not indices:
            return
        state = self.optimizer_state_
        if len(indices) < len(parameters):
            state = state.subset(indices)
            parameters = [parameters[index] for index in indices]
        self.optimizer_.batched_step(
            parameters,
            [tensor.grad for tensor in parameters],
            state,
            self.config.optimizer_params,
        )
        self.optimizer_state_.step_count = state.step_count

    def check_first_batch(self, outputs: torch.Tensor, encoded_targets: torch.Tensor) -> None:
        """Run the pairing checker on the first batch; its findings become one PairingWarning."""
        self.pairing_checked_ = True
        if not self.distributed.is_main:
            return
        warn_findings(check_pairing(outputs, encoded_targets, self.design.loss_name), stacklevel=4)

    @torch.no_grad()
    def evaluate(self, split: _Split) -> tuple[float, float]:
        """(mean loss, accuracy) of the current model on a split, in eval mode."""
        self.model_.eval()
        with self._autocast():
            logits = self.model_(split.features)
            loss = self.design.loss_from_logits(logits, split.encoded)
        accuracy = (logits.argmax(dim=1) == split.targets).double().mean()
        return float(loss), float(accuracy)

    def stacked_state(self) -> StackedState:
        """This one model's state as the checkpoint holds it (M = 1 views)."""
        state = self.optimizer_state_
        return StackedState(
            members=((self.design.name, self.config.seed),),
            model_config=self.model_config,
            settings=self.config,
            dtype=torch.float32,
            parameters=[tensor.unsqueeze(0) for tensor in self.model_.parameters()],
            first_moments=[tensor.unsqueeze(0) for tensor in state.first_moments],
            second_moments=[tensor.unsqueeze(0) for tensor in state.second_moments],
            optimizer_state=state,
        )

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            device_type=self.device_.type,
            dtype=torch.bfloat16,
            enabled=self.config.precision == "bf16",
        )

    def _split(self, features: torch.Tensor | FeatureRows, targets: torch.Tensor) -> _Split:
        features = features.to(self.device_, torch.float32)
        targets = targets.to(self.device_, torch.int64)
        encoded = self.design.encode_targets(targets, self.model_config.n_classes)
        return _Split(features, targets, encoded)

    def _check_data(
        self,
        train_features: torch.Tensor,
        train_targets: torch.Tensor,
        validation_features: torch.Tensor | None,
        validation_targets: torch.Tensor | None,
    ) -> None:
        _check_part("training", train_features, train_targets, self.model_config)
        if (validation_features is None) != (validation_targets is None):
            raise ConfigError("give both validation_features and validation_targets, or neither")
        if validation_features is not None:
            _check_part("validation", validation_features, validation_targets, self.model_config)
        elif self.config.patience is not None and self.config.monitor != "train_loss":
            raise ConfigError(
                f"early stopping (patience={self.config.patience}) needs validation rows: set "
                "validation_fraction > 0, monitor='train_loss' or patience=None"
            )


class AutogradEpochs:
    """The loop's backend (:class:`softclass.training.loop.EpochBackend`) over initialized
    :class:`Trainer` runs, one per member, one epoch per call (each trainer's
    :meth:`Trainer.run_epoch`; a stopped member's trainer does not run)."""

    def __init__(self, trainers: Sequence[Trainer]) -> None:
        self.trainers = list(trainers)

    @property
    def n_members(self) -> int:
        return len(self.trainers)

    def epochs_per_call(self) -> int:
        return 1

    def run_epochs(
        self, first_epoch: int, n_epochs: int, running: Sequence[bool]
    ) -> dict[str, torch.Tensor]:
        names = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
        results = {
            name: torch.full((self.n_members, 1), torch.nan, dtype=torch.float64) for name in names
        }
        for member, trainer in enumerate(self.trainers):
            if not running[member]:
                continue
            trainer.epochs_done_ = first_epoch
            record = trainer.run_epoch()
            values = (
                record.train_loss,
                record.train_accuracy,
                record.validation_loss,
                record.validation_accuracy,
            )
            for name, value in zip(names, values, strict=True):
                if value is not None:
                    results[name][member, 0] = value
        return results

    def member_parameters(self, member: int) -> list[torch.Tensor]:
        return list(self.trainers[member].model_.parameters())

    def member_model(self, member: int) -> MLP:
        return self.trainers[member].model_

    @torch.no_grad()
    def max_weight_differences(self, pairs: Sequence[tuple[int, int]]) -> list[float]:
        differences = [
            torch.stack(
                [
                    (a - b).abs().max()
                    for a, b in zip(
                        self.trainers[i].model_.parameters(),
                        self.trainers[j].model_.parameters(),
                        strict=True,
                    )
                ]
            ).max()
            for i, j in pairs
        ]
        return torch.stack(differences).tolist() if differences else []

    @torch.no_grad()
    def finite_members(self) -> list[bool]:
        flags = [
            torch.stack([torch.isfinite(tensor).all() for tensor in trainer.model_.parameters()])
            for trainer in self.trainers
        ]
        return torch.stack(flags).all(1).tolist()

    def stacked_state(self) -> StackedState:
        if len(self.trainers) != 1:
            raise ConfigError("a checkpoint of autograd runs holds one model (M = 1)")
        return self.trainers[0].stacked_state()


def fit(
    design: Design,
    model_config: MLPConfig,
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    validation_features: torch.Tensor | None = None,
    validation_targets: torch.Tensor | None = None,
    config: TrainConfig | None = None,
    *,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train ``design`` on pre-built tensors: shorthand for ``Trainer(...).fit(...)``."""
    trainer = Trainer(
        design, model_config, config, checkpoint_path=checkpoint_path, progress=progress
    )
    return trainer.fit(
        train_features, train_targets, validation_features, validation_targets, resume=resume
    )


def _check_part(
    part: str, features: torch.Tensor, targets: torch.Tensor | None, model_config: MLPConfig
) -> None:
    if not isinstance(features, torch.Tensor | FeatureRows) or not isinstance(
        targets, torch.Tensor
    ):
        raise ConfigError(f"{part} features and targets must be torch tensors")
    if features.dim() != 2 or features.shape[1] != model_config.n_features:
        raise ConfigError(
            f"{part} features must have shape (N, {model_config.n_features}), got "
            f"{tuple(features.shape)}"
        )
    if isinstance(features, torch.Tensor) and not features.is_floating_point():
        raise ConfigError(f"{part} features must be floating point, got {features.dtype}")
    if targets.dim() != 1 or targets.shape[0] != features.shape[0]:
        raise ConfigError(
            f"{part} targets must have shape ({features.shape[0]},) to match the features, got "
            f"{tuple(targets.shape)}"
        )
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ConfigError(f"{part} targets must be integer class indices, got {targets.dtype}")
    if features.shape[0] == 0:
        raise ConfigError(f"{part} part has no rows")
    bad = (targets < 0) | (targets >= model_config.n_classes)
    if bool(bad.any()):
        position = int(bad.nonzero()[0, 0])
        raise ConfigError(
            f"{part} target {int(targets[position])} at row {position} is outside "
            f"[0, {model_config.n_classes - 1}] for {model_config.n_classes} classes"
        )
    parts = (features.compact, features.raw) if isinstance(features, FeatureRows) else (features,)
    if not all(bool(torch.isfinite(part).all()) for part in parts):
        raise ConfigError(f"{part} features contain NaN or infinite values")
