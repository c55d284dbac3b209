"""Many MLPs trained at once: designs × seeds as one batched run of the training loop.

:func:`train_ensemble` builds a :class:`~softclass.training.backends.batched.BatchedTrainer`
(the compiled loops for small layers, batched torch above) and runs it through the one loop
(:class:`softclass.training.loop.FitLoop`) with the shared callbacks: early stopping per member,
checkpoints, and whatever the caller adds (progress, divergence, the agreement probe). Every
member equals the same model trained alone (the parity tests hold it to the autograd reference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from softclass.data.expansion import FeatureRows, fingerprint_tensors
from softclass.errors import ConfigError, DataError
from softclass.mlp.designs import Design, get_design
from softclass.mlp.model import MLP, MLPConfig
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.backends.epochs import BatchedEpochs
from softclass.training.batching import batch_bounds
from softclass.training.callbacks import EarlyStoppingCallback, ProgressReport
from softclass.training.checkpoint import Checkpoint, data_fingerprint
from softclass.training.config import TrainConfig
from softclass.training.early_stopping import EarlyStopping
from softclass.training.loop import Callback, FitLoop
from softclass.training.results import EpochRecord, History
from softclass.training.stacked import Member, StackedMLP

__all__ = [
    "AveragedMLP",
    "EnsembleResult",
    "Member",
    "design_seed_grid",
    "member_seeds",
    "train_ensemble",
]


def member_seeds(seed: int, members: int) -> list[int]:
    """The seeds of ``members`` networks of one run: ``seed``, ``seed + 1000``, … (the first is
    the run's own, so one member is the network the run trains alone)."""
    return [seed + 1000 * member for member in range(members)]


class AveragedMLP(torch.nn.Module):
    """Several MLPs of one shape and design whose probabilities are averaged.

    ``forward``: features ``(N, F)`` → ``log(mean_k p_k)`` ``(N, C)``, the log of the members'
    mean probabilities (a logsumexp of their log-probabilities, finite where each member's is).
    Every design turns it back into that mean: softmax of a log-probability row is the row's
    probabilities, so A (softmax), B (exp of log_softmax), C and D (softmax) all predict the
    mean, and argmax is the class the mean favours.
    """

    def __init__(self, members: Sequence[MLP], design: Design) -> None:
        super().__init__()
        if len(members) < 2:
            raise ConfigError(f"an averaged model needs at least 2 members, got {len(members)}")
        self.members = torch.nn.ModuleList(members)
        self.config: MLPConfig = members[0].config
        self.design = design

    @property
    def n_members(self) -> int:
        return len(self.members)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([self.design.predict_log_proba(m(features)) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))

    def stacked_state(self) -> dict[str, torch.Tensor]:
        """The members' parameters under one network's names, stacked on a leading member axis
        (``layers.0.weight``: ``(K, out, in)``), as a model directory stores them."""
        states = [member.state_dict() for member in self.members]
        return {name: torch.stack([state[name] for state in states]) for name in states[0]}

    @classmethod
    def from_stacked_state(
        cls, config: MLPConfig, state: dict[str, torch.Tensor], design: Design
    ) -> AveragedMLP:
        """Inverse of :meth:`stacked_state` (tensors already checked to fit ``config``)."""
        n_members = next(iter(state.values())).shape[0]
        members = []
        for member in range(n_members):
            mlp = MLP(config)
            mlp.load_state_dict({name: tensor[member] for name, tensor in state.items()})
            members.append(mlp.eval())
        return cls(members, design).eval()


@dataclass
class EnsembleResult:
    """What :func:`train_ensemble` returns.

    Attributes:
        members: design and seed of each member, in the order of the arrays' first axis.
        train_loss, train_accuracy, val_loss, val_accuracy: ``(M, epochs)`` float64 histories
            (validation ones NaN without validation rows; every one NaN after the epoch a
            member stopped early).
        network: the trained stacked parameters (each member's best epoch's when early
            stopping restored them).
        epochs_run: ``(M,)`` epochs each member trained (fewer than asked when it stopped early).
        best_epoch: ``(M,)`` 1-based epoch whose weights each member ended on under early
            stopping; None without early stopping.
        backend: "compiled" or "torch": which backend trained the run.
        backend_reason: why that backend (the option asked, or the rule or measurement of
            :meth:`BatchedTrainer.choose_backend`).
        epoch_seconds: per epoch, the wall time of training every member together.
    """

    members: list[Member]
    train_loss: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    network: StackedMLP = field(repr=False)
    train_accuracy: np.ndarray | None = None
    epochs_run: list[int] = field(default_factory=list)
    best_epoch: list[int | None] | None = None
    backend: str = "torch"
    backend_reason: str = ""
    epoch_seconds: list[float] = field(default_factory=list)

    def model(self, member: int) -> MLP:
        """Member ``member``'s trained weights as a normal :class:`MLP`."""
        return self.network.to_mlp(member)

    def history(self, member: int, *, shared: bool = False) -> History:
        """Member ``member``'s :class:`~softclass.training.results.History` (no validation
        numbers when the run had no validation rows); ``shared``: each epoch's wall time is
        divided among the members trained together."""
        ran = self.epochs_run[member]
        validation = not np.isnan(self.val_loss[member, :ran]).all()
        divide = len(self.members) if shared else 1
        # Whole rows as Python floats at once (``tolist``), not one numpy scalar per number.
        train_loss = self.train_loss[member, :ran].tolist()
        train_accuracy = self.train_accuracy[member, :ran].tolist()
        no_validation = [None] * ran
        val_loss = self.val_loss[member, :ran].tolist() if validation else no_validation
        val_accuracy = self.val_accuracy[member, :ran].tolist() if validation else no_validation
        records = [
            EpochRecord(
                epoch,
                train_loss[epoch - 1],
                train_accuracy[epoch - 1],
                val_loss[epoch - 1],
                val_accuracy[epoch - 1],
                self.epoch_seconds[epoch - 1] / divide,
            )
            for epoch in range(1, ran + 1)
        ]
        best_epoch = None if self.best_epoch is None else self.best_epoch[member]
        return History(records, best_epoch, ran < len(self.epoch_seconds))

    def indices(self, design: str) -> list[int]:
        """Positions of the members with design ``design``, in seed order."""
        name = get_design(design).name
        return sorted(
            (m for m, member in enumerate(self.members) if member.design == name),
            key=lambda m: self.members[m].seed,
        )


def train_ensemble(
    config: MLPConfig,
    members: Sequence[Member],
    features: torch.Tensor,
    targets: torch.Tensor,
    settings: TrainConfig,
    val_features: torch.Tensor | None = None,
    val_targets: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    *,
    row_weights: torch.Tensor | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
) -> EnsembleResult:
    """Train every member for up to ``settings.epochs`` epochs as one batched computation.

    Early stopping (``settings.patience``) applies the shared rule per member: a member that
    stops keeps training with the others, but its history ends there (with ``restore_best``, on
    its best epoch's weights); the run ends when every member stopped.

    Args:
        config: network shape; ``config.n_features`` must equal ``features.shape[1]``.
        members: ``(design, seed)`` of each model.
        features: ``(N, F)`` float training rows; targets: ``(N,)`` int64 class indices.
        settings: the training configuration (batch size, optimizer, epochs, early stopping,
            backend).
        val_features, val_targets: optional validation rows, scored after every epoch.
        dtype, device: of the parameters and the computation.
        row_weights: optional ``(N,)`` non-negative weights (class weights as ``w[target]``).
        callbacks: run after every epoch, after early stopping and before the checkpoint
            (:class:`softclass.training.loop.Callback`).
        checkpoint_path: where to write the run's state every ``settings.checkpoint_every``
            epochs and after the last (:class:`softclass.training.checkpoint.Checkpoint`).
        resume: continue from ``checkpoint_path``: the same weights as an uninterrupted run.

    Returns:
        :class:`EnsembleResult` with per-member, per-epoch histories and the trained weights.

    Raises:
        ConfigError: early stopping on a validation metric without validation rows; resume
            without a checkpoint path; the trainer's errors (:class:`BatchedTrainer`).
        ModelFileError: the checkpoint to resume from is missing, unsafe or from another run.
    """
    if resume and checkpoint_path is None:
        raise ConfigError("resume needs a checkpoint_path to resume from")
    fingerprint = (
        ""
        if checkpoint_path is None
        else _fingerprint(features, targets, val_features, val_targets, row_weights)
    )
    features, targets = _check_rows(features, targets, config, "training")
    has_val = val_features is not None and val_targets is not None
    if has_val:
        val_features, val_targets = _check_rows(val_features, val_targets, config, "validation")
        val_features, val_targets = val_features.to(device, dtype), val_targets.to(device)
    elif settings.patience is not None and settings.monitor != "train_loss":
        raise ConfigError(_NEEDS_VALIDATION.format(patience=settings.patience))
    trainer = BatchedTrainer(config, members, settings, dtype, device)
    weights = None if row_weights is None else torch.as_tensor(row_weights).to(device)
    rows = trainer.training_rows(features.to(device), row_weights=weights, targets=targets)
    backend = BatchedEpochs(trainer, rows, val_features, val_targets)
    early = _early_stopping(settings, len(trainer.members))
    checkpoint = None
    if checkpoint_path is not None:
        checkpoint = Checkpoint(
            checkpoint_path,
            fingerprint,
            every=settings.checkpoint_every,
            batches_per_epoch=len(batch_bounds(features.shape[0], settings.batch_size)),
            has_validation=has_val,
            early_stopping=early,
            resume=resume,
        )
    loop = FitLoop(backend, settings.epochs, _in_order(early, callbacks, checkpoint)).fit()
    return _result(backend, loop, early)


def _result(
    backend: BatchedEpochs, loop: FitLoop, early: EarlyStoppingCallback | None
) -> EnsembleResult:
    """The ensemble's result after ``loop`` ran ``backend``."""
    histories = {name: history.numpy() for name, history in loop.histories.items()}
    return EnsembleResult(
        members=backend.trainer.members,
        train_loss=histories["train_loss"],
        val_loss=histories["val_loss"],
        val_accuracy=histories["val_accuracy"],
        network=backend.trainer.network,
        train_accuracy=histories["train_accuracy"],
        epochs_run=loop.epochs_run,
        best_epoch=None if early is None else list(early.rule.best_epoch),
        backend=backend.choice.backend,
        backend_reason=backend.choice.reason,
        epoch_seconds=loop.seconds,
    )


def _in_order(
    early: EarlyStoppingCallback | None,
    callbacks: Sequence[Callback],
    checkpoint: Checkpoint | None,
) -> list[Callback]:
    """Early stopping, the caller's callbacks, the checkpoint, then the progress reports (an
    epoch reported done is an epoch saved)."""
    reports = [c for c in callbacks if isinstance(c, ProgressReport)]
    others = [c for c in callbacks if not isinstance(c, ProgressReport)]
    return [
        *([] if early is None else [early]),
        *others,
        *([] if checkpoint is None else [checkpoint]),
        *reports,
    ]


def _early_stopping(settings: TrainConfig, n_members: int) -> EarlyStoppingCallback | None:
    """The shared rule per member when ``settings.patience`` asks for it, else None."""
    if not settings.patience:
        return None
    rule = EarlyStopping.from_config(settings, n_members)
    return EarlyStoppingCallback(rule, restore_best=settings.restore_best)


_NEEDS_VALIDATION = (
    "early stopping (patience={patience}) needs validation rows: set validation_fraction > 0, "
    "monitor='train_loss' or patience=None"
)


def _fingerprint(*tensors: torch.Tensor | FeatureRows | None) -> str:
    flat = fingerprint_tensors(*tensors)
    return data_fingerprint(*(None if t is None else torch.as_tensor(t) for t in flat))


def design_seed_grid(designs: Sequence[str], seeds: Sequence[int]) -> list[Member]:
    """Every design with every seed, design-major: ``[(A, s0), (A, s1), ..., (D, sK)]``."""
    return [Member(get_design(name).name, int(seed)) for name in designs for seed in seeds]


def _check_rows(
    features: torch.Tensor, targets: torch.Tensor, config: MLPConfig, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    features = features if isinstance(features, FeatureRows) else torch.as_tensor(features)
    targets = torch.as_tensor(targets)
    if features.dim() != 2 or features.shape[1] != config.n_features:
        raise DataError(
            f"{where} features must be (rows, {config.n_features}), got shape "
            f"{tuple(features.shape)}"
        )
    if targets.shape != (features.shape[0],) or targets.dtype != torch.int64:
        raise DataError(
            f"{where} targets must be int64 class indices of shape ({features.shape[0]},), got "
            f"{targets.dtype} {tuple(targets.shape)}"
        )
    if features.shape[0] and (int(targets.min()) < 0 or int(targets.max()) >= config.n_classes):
        raise DataError(
            f"{where} targets must lie in [0, {config.n_classes - 1}], got values in "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )
    return features, targets
