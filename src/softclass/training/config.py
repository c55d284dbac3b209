"""The one training configuration, shared by ``softclass train``, ``softclass compare``,
``softclass.Classifier`` and every engine and backend.

Optimizer hyper-parameters take their defaults from :data:`softclass.mlp.optimizer_params.DEFAULTS`
(one set of defaults); the allowed optimizer names come from the optimizer registry; the early
stopping rule is :class:`softclass.training.early_stopping.EarlyStopping` (a monitored metric,
patience, a minimum improvement and restoring the best weights).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from softclass.errors import ConfigError, OptionError
from softclass.mlp.optimizer_params import DEFAULTS, OptimizerParams

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
# Where each metric the early-stopping rule may monitor is better: lower or higher.
MONITORS = {"validation_loss": "min", "validation_accuracy": "max", "train_loss": "min"}
# "auto": the engine picks (softclass.training.engine.choose_backend); the others force one.
BACKENDS = ("auto", "compiled", "torch", "autograd")


# Bounds on what one option may cost: a run's histories grow with the epochs, a batch's work
# space with its rows, and each seed fits in the 64-bit seeds of the generators (with room for
# seed + K of --seeds); threads beyond a few hundred only exhaust the system's task table.
MAX_EPOCHS = 1_000_000
MAX_BATCH_SIZE = 2**24
MAX_SEED = 2**62
MAX_THREADS = 1024


@dataclass(frozen=True)
class TrainConfig:
    """How to train. The defaults train the seed's Iris network (4-7-3 tanh, SGD) in seconds."""

    epochs: int = 100  # passes over the training rows (an upper bound with early stopping)
    batch_size: int = 16  # rows per optimizer step; the last batch of an epoch may be shorter
    optimizer: str = "sgd"  # a key of softclass.mlp.optimizers.OPTIMIZERS
    learning_rate: float = DEFAULTS.learning_rate  # step size
    momentum: float = DEFAULTS.momentum  # SGD momentum (Adam/AdamW ignore it)
    nesterov: bool = DEFAULTS.nesterov  # SGD: Nesterov momentum
    betas: tuple[float, float] = DEFAULTS.betas  # Adam/AdamW moving-average rates
    eps: float = DEFAULTS.eps  # Adam/AdamW denominator guard
    weight_decay: float = DEFAULTS.weight_decay  # L2 penalty (sgd, adam), decoupled (adamw)
    seed: int = 0  # initial weights, batch order and the validation split
    validation_fraction: float = 0.2  # share of each class held out for validation; 0 = none
    patience: int | None = None  # early stopping: epochs without improvement; None = off
    monitor: str = "validation_loss"  # what early stopping watches (a key of MONITORS)
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    restore_best: bool = True  # early stopping ends on the best epoch's weights
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"
    precision: str = "fp32"  # "fp32", or "bf16" autocast of the network (losses accumulate in fp32)
    checkpoint_every: int = 1  # epochs between checkpoints (when a checkpoint path is given)
    backend: str = "auto"  # training backend, one of BACKENDS ("auto": fastest that supports it)
    threads: int = 0  # CPU threads for torch; 0 = leave torch's setting

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, minimum=1, maximum=MAX_EPOCHS)
        _check_int("batch_size", self.batch_size, minimum=1, maximum=MAX_BATCH_SIZE)
        _check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        _check_int("checkpoint_every", self.checkpoint_every, minimum=1)
        _check_int("threads", self.threads, minimum=0, maximum=MAX_THREADS)
        if self.patience is not None:
            _check_int("patience", self.patience, minimum=1)
        from softclass.mlp.optimizers import OPTIMIZERS  # the registry (imports torch)

        _check_choice("optimizer", self.optimizer, tuple(OPTIMIZERS))
        _check_choice("device", self.device, DEVICES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("monitor", self.monitor, tuple(MONITORS))
        _check_choice("backend", self.backend, BACKENDS)
        for name in ("learning_rate", "momentum", "weight_decay", "eps", "min_delta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise _invalid(name, value, "must be a number ≥ 0")
        if not self.learning_rate > 0:
            raise _invalid("learning_rate", self.learning_rate, "must be > 0")
        if not self.momentum < 1:
            raise _invalid("momentum", self.momentum, "must lie in [0, 1)")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(
            isinstance(beta, int | float) and 0.0 <= beta < 1.0 for beta in betas
        ):
            raise _invalid("betas", self.betas, "must be two numbers in [0, 1)")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        for name in ("nesterov", "restore_best"):
            if not isinstance(getattr(self, name), bool):
                raise _invalid(name, getattr(self, name), "must be True or False")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise OptionError(
                "{nesterov=} needs {optimizer:sgd} with {momentum} > 0, got {optimizer=}, "
                "{momentum=}",
                nesterov=self.nesterov,
                optimizer=self.optimizer,
                momentum=self.momentum,
            )
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise _invalid("validation_fraction", fraction, "must be a number in [0, 1)")
        if not 0.0 <= fraction < 1.0:
            raise _invalid("validation_fraction", fraction, "must be in [0, 1) (0 = none)")

    @property
    def optimizer_params(self) -> OptimizerParams:
        """The optimizer hyper-parameters of this configuration."""
        return OptimizerParams(
            learning_rate=float(self.learning_rate),
            momentum=float(self.momentum),
            nesterov=self.nesterov,
            betas=self.betas,
            eps=float(self.eps),
            weight_decay=float(self.weight_decay),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (saved in model.json and checkpoints)."""
        return {**asdict(self), "betas": list(self.betas)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (older files lack newer keys: defaults); unknown keys raise
        ConfigError naming them."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {unknown}; expected {sorted(known)}")
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


def _invalid(name: str, value: object, problem: str) -> OptionError:
    """``name=value problem``: an error naming the option (the command line names its flag)."""
    return OptionError("{" + name + "=} " + problem, **{name: value})


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _invalid(name, value, f"must be an integer ≥ {minimum}")
    if maximum is not None and value > maximum:
        raise _invalid(name, value, f"must be at most {maximum:,} (a bound on time and memory)")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise OptionError("{" + name + "=}: expected one of " + ", ".join(choices), **{name: value})


def resolve_device(name: str) -> torch.device:
    """The torch device for a :class:`TrainConfig` device name ("auto" picks cuda if present)."""
    import torch

    _check_choice("device", name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionError(
            "{device:cuda} was asked for but no CUDA device is available; use {device:cpu}"
        )
    return torch.device(name)


def json_number(value: float | None) -> float | None:
    """A float JSON can hold: NaN and infinities (a diverged loss) become None."""
    return None if value is None or not math.isfinite(value) else float(value)
