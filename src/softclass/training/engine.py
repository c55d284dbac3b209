"""One entry for training: picks the backend that supports the run and is fastest for it.

Backends, in the order "auto" tries them:

* **compiled** — whole epochs in C (:mod:`softclass.training.mlp_native`), for small layers;
* **torch** — the batched engine (:class:`softclass.training.backends.batched.BatchedTrainer`):
  stacked parameters, batched matmuls, the design's loss gradient from
  :mod:`softclass.functional`;
* **autograd** — :class:`softclass.training.backends.autograd.Trainer`, one model,
  ``torch.autograd`` and the optimizer registry's update (torch.optim's arithmetic): the
  reference the others are tested against, and the one backend for bf16 autocast and torchrun
  data parallelism.

Every backend runs through the one loop (:mod:`softclass.training.loop`) and writes the one
checkpoint (:mod:`softclass.training.checkpoint`), so any of them resumes a run another wrote.

Between compiled and torch the choice is by measured speed, per problem shape
(:mod:`softclass.training.backend_choice`: obvious shapes by a wide margin are not measured, those
near the boundary are timed once per process; :attr:`EnsembleResult.backend_reason` says which rule
or measurement decided). Every backend trains the same models (the parity tests hold them to the
autograd reference): a backend that cannot train a run refuses it naming the option.
"""

from __future__ import annotations

from pathlib import Path

import torch

from softclass.errors import ConfigError
from softclass.mlp.designs import Design
from softclass.mlp.model import MLPConfig
from softclass.training.backends.autograd import Trainer
from softclass.training.callbacks import DivergenceCheck, ProgressReport
from softclass.training.checkpoint import checkpoint_progress
from softclass.training.config import TrainConfig, resolve_device
from softclass.training.distributed import DistContext
from softclass.training.ensemble import AveragedMLP, Member, member_seeds, train_ensemble
from softclass.training.loop import Callback
from softclass.training.results import ProgressCallback, TrainResult

__all__ = ["checkpoint_progress", "choose_backend", "train_model"]


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
    """Train one model on the backend :func:`choose_backend` picks: one network, or with
    ``config.members`` = K > 1 K networks trained at once by the batched engine (seeds
    :func:`~softclass.training.ensemble.member_seeds`) whose probabilities are averaged.

    Args and raises: as :meth:`softclass.training.backends.autograd.Trainer.fit`
    (``config.seed`` is the model's seed); ConfigError: ``config.members`` > 1 on the autograd
    backend (bf16, torchrun), which trains one network.

    Returns:
        :class:`TrainResult` with the model on the CPU (float32, eval mode; an
        :class:`~softclass.training.ensemble.AveragedMLP` for K > 1) and its history (the first
        member's for K > 1).
    """
    if choose_backend(config, distributed) == "autograd":
        if config.members > 1:
            raise ConfigError(
                f"members={config.members}: the autograd backend (bf16, torchrun) trains one "
                "network; use members=1 or the batched engine (backend 'auto', fp32, one process)"
            )
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
    validation = validation_features is not None
    callbacks: list[Callback] = [
        DivergenceCheck(
            [design] * config.members,
            [design.name] * config.members,
            model_config,
            config.learning_rate,
            validation=validation,
        )
    ]
    if progress is not None:
        callbacks.append(ProgressReport(progress, {0: design.name}, validation=validation))
    result = train_ensemble(
        model_config,
        [Member(design.name, seed) for seed in member_seeds(config.seed, config.members)],
        train_features,
        train_targets,
        config,
        validation_features,
        validation_targets,
        device=resolve_device(config.device),
        callbacks=callbacks,
        checkpoint_path=checkpoint_path,
        resume=resume,
    )
    models = [result.model(member).float().eval() for member in range(config.members)]
    model = models[0] if len(models) == 1 else AveragedMLP(models, design).eval()
    return TrainResult(model, design, model_config, config, result.history(0))
