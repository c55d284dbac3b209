"""The training loop: one design, one seeded MLP, pre-built tensors in, a trained model out.

The loop is split into small steps that a subclass can override (as skorch does)::

    Trainer.fit → initialize → [load_checkpoint] → run_epoch (repeated) → finish
                                                     └ train_step (per batch), evaluate

Batches are contiguous slices of tensors built once (no per-item Dataset); the row order of each
epoch comes from :func:`softclass.training.batching.epoch_permutation` with the 0-based epoch
index, so it
depends only on ``(seed, epoch)``. That is why a run resumed from a checkpoint needs no random
state and ends with the same weights as an uninterrupted one, and why a model trained alone equals
the same model trained inside a batched ensemble.

Checkpoints hold only tensors, numbers, strings, lists and dicts: they are written with
``torch.save`` (atomically) and read with ``torch.load(weights_only=True)``, which refuses any
pickled object (a malicious checkpoint is rejected, never executed). Every field read back is
checked by :func:`softclass.training.schema.load_checkpoint_file` before it is used.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from softclass.diagnostics.check import check_pairing, warn_findings
from softclass.errors import ConfigError, ModelFileError, TrainingDiverged
from softclass.io import atomic_write_bytes
from softclass.mlp.designs import Design
from softclass.mlp.model import MLP, MLPConfig, build_mlp
from softclass.mlp.optimizers import BatchedState, Optimizer, get_optimizer
from softclass.training.batching import batch_bounds, epoch_permutation
from softclass.training.config import TrainConfig, json_number, resolve_device
from softclass.training.distributed import DistContext, all_reduce_sum, loss_scale, shard_rows
from softclass.training.early_stopping import EarlyStopping
from softclass.training.results import (
    EpochRecord,
    History,
    ProgressCallback,
    ProgressEvent,
    TrainResult,
)
from softclass.training.schema import CHECKPOINT_FORMAT, load_checkpoint_file

__all__ = [
    "EpochRecord",
    "History",
    "ProgressCallback",
    "ProgressEvent",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "fit",
    "json_number",
    "load_checkpoint_file",
    "resolve_device",
]


@dataclass(frozen=True)
class _Split:
    """One part of the data on the training device: features, indices, design-encoded targets."""

    features: torch.Tensor  # (N, F) float32
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
        self.design = design
        self.model_config = model_config
        self.config = TrainConfig() if config is None else config
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
        self.initialize(train_features, train_targets, validation_features, validation_targets)
        if resume:
            self.load_checkpoint()
        while not self.finished_:
            self.run_epoch()
        return self.finish()

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
        self.fingerprint_ = data_fingerprint(
            train_features, train_targets, validation_features, validation_targets
        )
        self.train_ = self._split(train_features, train_targets)
        self.validation_ = (
            None
            if validation_features is None
            else self._split(validation_features, validation_targets)
        )
        self.model_ = build_mlp(self.model_config, self.config.seed).to(self.device_)
        self.network_ = self.wrap_network(self.model_)
        self.parameters_ = dict(self.model_.named_parameters())
        self.optimizer_, self.optimizer_state_ = self.make_optimizer(self.model_)
        self.history_ = History()
        self.early_stopping_ = EarlyStopping.from_config(self.config)
        self.best_state_: dict[str, torch.Tensor] | None = None
        self.finished_ = False
        self.pairing_checked_ = False

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
        """One pass over the training rows in this epoch's order, then validation and records."""
        started = time.perf_counter()
        epoch_index = self.history_.epochs  # 0-based index of the epoch being run
        n_rows = self.train_.features.shape[0]
        order = epoch_permutation(n_rows, self.config.seed, epoch_index).to(self.device_)
        features = self.train_.features[order]
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
        self.check_divergence(record)
        self.history_.records.append(record)
        self.update_early_stopping(record)
        self.finished_ = self.finished_ or record.epoch >= self.config.epochs
        if (
            self.checkpoint_path is not None
            and self.distributed.is_main
            and (record.epoch % self.config.checkpoint_every == 0 or self.finished_)
        ):
            self.save_checkpoint()
        if self.progress is not None:
            self.progress(
                ProgressEvent(self.label, record.epoch, self.config.epochs, record, self.finished_)
            )
        return record

    def check_divergence(self, record: EpochRecord) -> None:
        """Stop when the epoch's losses or the weights left the reals, or the loss exploded.

        One host sync per epoch. Raised before the epoch enters the history or a checkpoint, so
        the last checkpoint is the last sound epoch. See :func:`divergence`.

        Raises:
            TrainingDiverged: naming the epoch, the loss and the learning rate to lower.
        """
        finite_weights = bool(
            torch.stack(
                [torch.isfinite(weights).all() for weights in self.model_.parameters()]
            ).all()
        )
        problem = divergence(
            record.train_loss,
            record.validation_loss,
            finite_weights,
            self.design,
            self.model_config,
            self.config.learning_rate,
        )
        if problem is not None:
            raise TrainingDiverged(
                f"training diverged at epoch {record.epoch} (design {self.label}): {problem}"
            )

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

    def update_early_stopping(self, record: EpochRecord) -> None:
        """The shared rule (:mod:`softclass.training.early_stopping`) on ``config.monitor``: keep
        the best weights (``restore_best``), stop after ``patience`` epochs without gain."""
        if self.config.patience is None:
            return
        value = getattr(record, self.config.monitor)
        if value is None:
            return
        if self.early_stopping_.update(0, record.epoch, value):
            self.history_.best_epoch = record.epoch
            if self.config.restore_best:
                self.best_state_ = _cpu_copy(self.model_.state_dict())
        if self.early_stopping_.stopped[0]:
            self.history_.stopped_early = True
            self.finished_ = True

    def finish(self) -> TrainResult:
        """Restore the best weights (early stopping) and return the model on the CPU."""
        if self.best_state_ is not None:
            self.model_.load_state_dict(self.best_state_)
        model = self.model_.to("cpu").eval()
        return TrainResult(model, self.design, self.model_config, self.config, self.history_)

    # -- checkpoints -----------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write model, optimizer, early-stopping state and history to ``checkpoint_path``."""
        if self.checkpoint_path is None:
            raise ConfigError("save_checkpoint needs a checkpoint_path")
        state = {
            "format": CHECKPOINT_FORMAT,
            "design": self.design.name,
            "model_config": self.model_config.to_dict(),
            "train_config": self.config.to_dict(),
            "data_fingerprint": self.fingerprint_,
            "epoch": self.history_.epochs,
            "finished": self.finished_,
            "model": _cpu_copy(self.model_.state_dict()),
            "optimizer": self.optimizer_state_dict(),
            "history": self.history_.to_dict(),
            "best_loss": self.early_stopping_.best[0],
            "best_state": self.best_state_,
            "epochs_without_improvement": self.early_stopping_.bad_epochs[0],
        }
        serialized = io.BytesIO()  # serialize first: a full disk is then an OSError, not a
        torch.save(state, serialized)  # C++ "basic_ios::clear: iostream error"
        atomic_write_bytes(self.checkpoint_path, serialized.getvalue())
        return self.checkpoint_path

    def load_checkpoint(self) -> None:
        """Restore the state saved by :meth:`save_checkpoint` (after :meth:`initialize`).

        Raises:
            ConfigError: no checkpoint path was given.
            ModelFileError: the file is missing, not a softclass checkpoint, refused as unsafe,
                or was written by a run with another design, network, options or data.
        """
        if self.checkpoint_path is None:
            raise ConfigError("resume needs a checkpoint_path to resume from")
        state = load_checkpoint_file(self.checkpoint_path, self.model_config)
        expected = {
            "design": self.design.name,
            "model_config": self.model_config.to_dict(),
            "train_config": resumable_options(self.config.to_dict()),
            "data_fingerprint": self.fingerprint_,
        }
        found = {
            **{key: state[key] for key in expected},
            "train_config": resumable_options(
                _config_dict(state["train_config"], self.checkpoint_path)
            ),
        }
        for key, value in expected.items():
            if found[key] != value:
                raise ModelFileError(
                    f"{self.checkpoint_path}: cannot resume, the checkpoint's {key} "
                    f"{found[key]!r} differs from this run's {value!r}"
                    if key != "data_fingerprint"
                    else f"{self.checkpoint_path}: cannot resume, the checkpoint was written "
                    "for other training data (or another split)"
                )
        # The schema checked every tensor's name, dtype, shape and range against the network and
        # the checkpoint's optimizer (the same as this run's, compared above): these cannot fail.
        self.model_.load_state_dict(state["model"])
        self.load_optimizer_state_dict(state["optimizer"])
        self.history_ = History.from_dict(state["history"])
        self.early_stopping_.load_dict(
            {
                "best": [float(state["best_loss"])],
                "best_epoch": [self.history_.best_epoch],
                "bad_epochs": [int(state["epochs_without_improvement"])],
                "stopped": [self.history_.stopped_early],
            }
        )
        self.best_state_ = state["best_state"]
        self.finished_ = self.history_.stopped_early or self.history_.epochs >= self.config.epochs

    def optimizer_state_dict(self) -> dict[str, Any]:
        """The optimizer state as a checkpoint holds it: CPU copies keyed by parameter name in
        ``first_moments``, ``second_moments`` (empty for SGD) and ``step_counts`` (0-dim
        float32), and the int ``step_count`` (checked by
        :func:`softclass.training.schema.check_optimizer_state`)."""
        state = self.optimizer_state_
        names = list(self.parameters_)
        return {
            "first_moments": _named_copies(names, state.first_moments),
            "second_moments": _named_copies(names, state.second_moments),
            "step_counts": _named_copies(names, state.step_counts),
            "step_count": state.step_count,
        }

    @torch.no_grad()
    def load_optimizer_state_dict(self, saved: dict[str, Any]) -> None:
        """Copy a checked :meth:`optimizer_state_dict` into this run's state (on its device)."""
        state = self.optimizer_state_
        for kind, tensors in (
            ("first_moments", state.first_moments),
            ("second_moments", state.second_moments),
            ("step_counts", state.step_counts),
        ):
            if not tensors:  # SGD has no second moments
                continue
            for name, tensor in zip(self.parameters_, tensors, strict=True):
                tensor.copy_(saved[kind][name])
        state.step_count = saved["step_count"]

    # -- helpers ---------------------------------------------------------------------------------

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            device_type=self.device_.type,
            dtype=torch.bfloat16,
            enabled=self.config.precision == "bf16",
        )

    def _split(self, features: torch.Tensor, targets: torch.Tensor) -> _Split:
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


def _config_dict(saved: Any, path: Path) -> dict[str, Any]:
    """A checkpoint's training options read back through :class:`TrainConfig` (an older file
    lacks newer options: they take their defaults)."""
    try:
        return TrainConfig.from_dict(dict(saved)).to_dict()
    except (ConfigError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: damaged checkpoint ({error})") from error


def resumable_options(train_config: dict[str, Any]) -> dict[str, Any]:
    """The options that must match to resume (more epochs, another device, early-stopping
    patience or thread count are allowed)."""
    return {
        key: value
        for key, value in train_config.items()
        if key not in ("epochs", "device", "checkpoint_every", "patience", "threads")
    }


def _check_part(
    part: str, features: torch.Tensor, targets: torch.Tensor | None, model_config: MLPConfig
) -> None:
    if not isinstance(features, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise ConfigError(f"{part} features and targets must be torch tensors")
    if features.dim() != 2 or features.shape[1] != model_config.n_features:
        raise ConfigError(
            f"{part} features must have shape (N, {model_config.n_features}), got "
            f"{tuple(features.shape)}"
        )
    if not features.is_floating_point():
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
    if not bool(torch.isfinite(features).all()):
        raise ConfigError(f"{part} features contain NaN or infinite values")


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


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def _named_copies(names: list[str], tensors: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies of ``tensors`` keyed by the parameter names (``{}`` when there are none)."""
    return _cpu_copy(dict(zip(names, tensors, strict=True))) if tensors else {}
