"""One entry for training: picks the backend that supports the run and is fastest for it.

Backends, in the order "auto" tries them:

* **compiled** — whole epochs in C (:mod:`softclass.training.mlp_native`), for small layers;
* **torch** — the batched engine (:class:`softclass.training.ensemble.BatchedTrainer`): stacked
  parameters, batched matmuls, the design's loss gradient from :mod:`softclass.functional`;
* **autograd** — :class:`softclass.training.trainer.Trainer`, one model, ``torch.autograd`` and
  the optimizer registry's update (torch.optim's arithmetic): the reference the others are
  tested against, and the one backend for bf16 autocast and torchrun data parallelism.

Between compiled and torch the choice is by measured speed, per problem shape
(:mod:`softclass.training.backend_choice`: obvious shapes by a wide margin are not measured, those
near the boundary are timed once per process; :attr:`EnsembleResult.backend_reason` says which rule
or measurement decided). Every backend trains the same models (the parity tests hold them to the
autograd reference): a backend that cannot train a run refuses it naming the option.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from softclass.errors import ConfigError, TrainingDiverged
from softclass.mlp.designs import Design, get_design
from softclass.mlp.model import MLPConfig
from softclass.training.config import TrainConfig, resolve_device
from softclass.training.distributed import DistContext
from softclass.training.ensemble import EnsembleResult, Member, train_ensemble
from softclass.training.schema import (
    is_torch_archive,
    load_checkpoint_file,
    read_batched_checkpoint_header,
)
from softclass.training.trainer import (
    EXPLODED_LOSS_FACTOR,
    EpochRecord,
    History,
    ProgressCallback,
    ProgressEvent,
    Trainer,
    TrainResult,
    divergence,
)

__all__ = [
    "check_batched_divergence",
    "checkpoint_progress",
    "choose_backend",
    "train_model",
]


def choose_backend(config: TrainConfig, distributed: DistContext | None = None) -> str:
    """ "autograd" or "batched" (compiled or torch, decided per run by the batched engine).

    Raises:
        ConfigError: ``config.backend`` names a batched backend for a run only the autograd
            engine supports (bf16 precision, torchrun).
    """
    needs_autograd = [
        reason
        for reason, applies in (
            (f"precision={config.precision!r}", config.precision != "fp32"),
            ("torchrun data parallelism", distributed is not None and distributed.enabled),
        )
        if applies
    ]
    if config.backend == "autograd" or (config.backend == "auto" and needs_autograd):
        return "autograd"
    if needs_autograd:
        raise ConfigError(
            f"backend={config.backend!r} cannot train with {' and '.join(needs_autograd)}: "
            "only backend='autograd' (or 'auto') does"
        )
    return "batched"


def train_model(
    design: Design,
    model_config: MLPConfig,
    config: TrainConfig,
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    validation_features: torch.Tensor | None = None,
    validation_targets: torch.Tensor | None = None,
    *,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    distributed: DistContext | None = None,
) -> TrainResult:
    """Train one model (M = 1) on the backend :func:`choose_backend` picks.

    Args and raises: as :meth:`softclass.training.trainer.Trainer.fit` (``config.seed`` is the
    model's seed); a checkpoint is only resumed by the engine kind that wrote it.

    Returns:
        :class:`TrainResult` with the model on the CPU (float32, eval mode) and its history.
    """
    if choose_backend(config, distributed) == "autograd":
        trainer = Trainer(
            design,
            model_config,
            config,
            checkpoint_path=checkpoint_path,
            progress=progress,
            distributed=distributed,
        )
        return trainer.fit(
            train_features,
            train_targets,
            validation_features,
            validation_targets,
            resume=resume,
        )
    if (validation_features is None) != (validation_targets is None):
        raise ConfigError("give both validation_features and validation_targets, or neither")
    started = time.perf_counter()
    epochs_done = [0]
    has_validation = validation_features is not None

    def on_epoch(epoch: int, trainer, histories, epochs_run) -> None:
        epochs_done[0] = epoch
        if epoch > epochs_run[0]:
            return
        # Before this epoch's checkpoint is written: the last sound one is what stays.
        problem = divergence(
            float(histories["train_loss"][0, epoch - 1]),
            None,
            True,
            design,
            model_config,
            config.learning_rate,
        )
        if problem is not None:
            raise TrainingDiverged(
                f"training diverged at epoch {epoch} (design {design.name}): {problem}"
            )
        if progress is None:
            return
        record = _record(histories, epoch, (time.perf_counter() - started) / epoch, has_validation)
        progress(ProgressEvent(design.name, epoch, config.epochs, record, epoch == epochs_run[0]))

    result = train_ensemble(
        model_config,
        [Member(design.name, config.seed)],
        train_features,
        train_targets,
        config,
        validation_features,
        validation_targets,
        device=resolve_device(config.device),
        on_epoch=on_epoch,
        checkpoint_path=checkpoint_path,
        resume=resume,
    )
    seconds = (time.perf_counter() - started) / max(1, epochs_done[0])
    histories = {
        "train_loss": torch.from_numpy(result.train_loss),
        "train_accuracy": torch.from_numpy(result.train_accuracy),
        "val_loss": torch.from_numpy(result.val_loss),
        "val_accuracy": torch.from_numpy(result.val_accuracy),
    }
    records = [
        _record(histories, epoch, seconds, has_validation)
        for epoch in range(1, result.epochs_run[0] + 1)
    ]
    history = History(
        records,
        None if result.best_epoch is None else result.best_epoch[0],
        result.epochs_run[0] < config.epochs,
    )
    model = result.model(0).float().eval()
    return TrainResult(model, design, model_config, config, history)


def checkpoint_progress(path: str | Path) -> tuple[int, int | None]:
    """Epochs done and epochs asked for, read from a checkpoint of either trainer.

    Raises:
        ModelFileError: the file is missing, unsafe or not a softclass checkpoint.
    """
    path = Path(path)
    if is_torch_archive(path):  # the autograd Trainer's (or a batched one of format 1: refused)
        state = load_checkpoint_file(path)
        return int(state["epoch"]), state["train_config"].get("epochs")
    header = read_batched_checkpoint_header(path)  # its header only, checked field by field
    return header.epoch, header.train_config.epochs


def check_batched_divergence(
    result: EnsembleResult, model_config: MLPConfig, config: TrainConfig
) -> None:
    """Report the first epoch where a model of a batched run diverged.

    The rule is :func:`softclass.training.trainer.divergence` (the autograd trainer's, on the
    training loss; non-finite weights make that loss NaN). The batched backends run their epochs
    without a host check, so this looks at the histories once training has returned.

    Raises:
        TrainingDiverged: naming the model (design, seed) and the epoch.
    """
    # One pass over the (M, epochs) training losses; the message is the rule's own.
    losses = np.asarray(result.train_loss, dtype=np.float64)
    uniform = {
        name: get_design(name).uniform_loss(model_config.n_classes)
        for name in {member.design for member in result.members}
    }
    limits = np.array([EXPLODED_LOSS_FACTOR * uniform[m.design] for m in result.members])
    ran = np.arange(losses.shape[1])[None, :] < np.asarray(result.epochs_run)[:, None]
    with np.errstate(invalid="ignore"):
        sound = np.isfinite(losses) & (losses <= limits[:, None])
    diverged = ran & ~sound
    if not diverged.any():
        return
    epoch = int(np.flatnonzero(diverged.any(axis=0))[0])
    position = int(np.flatnonzero(diverged[:, epoch])[0])
    member = result.members[position]
    problem = divergence(
        float(losses[position, epoch]),
        None,
        True,
        get_design(member.design),
        model_config,
        config.learning_rate,
    )
    raise TrainingDiverged(
        f"training diverged at epoch {epoch + 1} (design {member.design} seed "
        f"{member.seed}): {problem}"
    )


def _record(
    histories: dict[str, torch.Tensor], epoch: int, seconds: float, has_validation: bool
) -> EpochRecord:
    """Epoch ``epoch`` (1-based) of the single model as an :class:`EpochRecord`."""
    values = [float(histories[name][0, epoch - 1]) for name in histories]
    return EpochRecord(
        epoch,
        values[0],
        values[1],
        values[2] if has_validation else None,
        values[3] if has_validation else None,
        seconds,
    )
