"""The one training configuration, shared by ``softclass train``, ``softclass compare``,
``softclass.Classifier`` and every engine and backend.

The optimizer hyper-parameters are declared once, in
:class:`softclass.mlp.optimizer_params.OptimizerParams`, which :class:`TrainConfig` extends;
every field carries its option (flag, help, allowed values, scikit-learn name:
:mod:`softclass.option_table`); the allowed optimizer names come from the optimizer registry;
the early stopping rule is :class:`softclass.training.early_stopping.EarlyStopping` (a
monitored metric, patience, a minimum improvement and restoring the best weights).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from softclass.errors import ConfigError, OptionError
from softclass.mlp.optimizer_params import OptimizerParams
from softclass.option_table import Rule, names_text, option, options_of

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
# Where each metric the early-stopping rule may monitor is better: lower or higher.
MONITORS = {"validation_loss": "min", "validation_accuracy": "max", "train_loss": "min"}
# "auto": the engine picks (softclass.training.engine.choose_backend); the others force one.
BACKENDS = ("auto", "compiled", "torch", "autograd")


def _optimizer_names() -> tuple[str, ...]:
    from softclass.mlp.optimizers import OPTIMIZERS  # the registry (imports torch)

    return tuple(OPTIMIZERS)


def _choice(names: tuple[str, ...]) -> Rule:
    return Rule("choice", choices=lambda: names)


# Bounds on what one option may cost: a run's histories grow with the epochs, a batch's work
# space with its rows, and each seed fits in the 64-bit seeds of the generators (with room for
# seed + K of --seeds); threads beyond a few hundred only exhaust the system's task table.
MAX_EPOCHS = 1_000_000
MAX_BATCH_SIZE = 2**24
MAX_SEED = 2**62
MAX_THREADS = 1024
MAX_MEMBERS = 64  # each member is a whole network: 64 is far beyond what averaging gains


@dataclass(frozen=True)
class TrainConfig(OptimizerParams):
    """How to train. The defaults train the seed's Iris network (4-7-3 tanh, SGD) in seconds.

    The optimizer hyper-parameters are the fields of :class:`OptimizerParams`, which this class
    extends; every field is an option of the option table (:mod:`softclass.option_table`):
    checked here by its rule, a flag of ``compare`` and ``train``, and through its scikit-learn
    name a parameter of :class:`softclass.Classifier`.
    """

    epochs: int = option(
        100,
        "--epochs",
        "Passes over the training rows (at most, with --patience).",
        Rule("integer", low=1, high=MAX_EPOCHS),
        metavar="N",
        sklearn="max_iter",
    )
    batch_size: int = option(
        16,
        "--batch-size",
        "Rows per optimizer step.",
        Rule("integer", low=1, high=MAX_BATCH_SIZE),
        metavar="ROWS",
        sklearn="batch_size",
    )
    optimizer: str = option(
        "sgd",
        "--optimizer",
        "{optimizers}.",
        Rule("choice", choices=_optimizer_names),
        metavar="NAME",
        sklearn="solver",
    )
    label_smoothing: float = option(
        0.0,
        "--label-smoothing",
        "Train every design against the smoothed targets (1 - ε)·onehot + ε/C (A: torch's "
        "cross_entropy(label_smoothing=ε); B, C, D the same targets in their own loss).",
        Rule("number", high=1, note=" (0 = none)"),
        metavar="EPSILON",
        sklearn="label_smoothing",
    )
    members: int = option(
        1,
        "--members",
        "Networks trained at once from different initial weights (seeds seed, seed + 1000, "
        "...) on the same rows, each early-stopped on its own; the model predicts the mean of "
        "their probabilities. Runs the in-memory engine trains (not torchrun, bf16 or a "
        "streamed table, which train one).",
        Rule("integer", low=1, high=MAX_MEMBERS),
        metavar="K",
        sklearn="n_members",
        commands=("train",),
    )
    seed: int = option(
        0,
        "--seed",
        "Seed of weights, batch order and split.",
        Rule("integer", high=MAX_SEED),
        metavar="N",
    )
    validation_fraction: float = option(
        0.2,
        "--validation",
        "Share of each class held out as validation rows: every reported validation number "
        "comes from them (train: 0 = none).",
        Rule("number", high=1, note=" (0 = none)"),
        metavar="FRACTION",
        panel="Data",
    )
    patience: int | None = option(
        None,
        "--patience",
        "Early stopping: stop after this many epochs without a better --monitor value on "
        "held-out rows and keep the best weights (compare: the --stopping rows, apart from the "
        "validation rows; train: the validation rows); 0 turns it off.",
        Rule("integer", low=1, optional=True),
        metavar="EPOCHS",
    )
    monitor: str = option(
        "validation_loss",
        "--monitor",
        f"What early stopping watches: {names_text(MONITORS)}.",
        _choice(tuple(MONITORS)),
        metavar="NAME",
    )
    min_delta: float = option(
        0.0,
        "--min-delta",
        "Early stopping: an improvement must beat the best value by more than this.",
        Rule("number"),
        metavar="D",
        sklearn="tol",
    )
    restore_best: bool = option(
        True,
        "--restore-best/--no-restore-best",
        "Early stopping: end on the best epoch's weights (or on the last epoch's).",
        Rule("flag"),
    )
    device: str = option(
        "auto",
        "--device",
        f"{names_text(DEVICES)} (auto: cuda when available).",
        _choice(DEVICES),
        metavar="NAME",
    )
    # "fp32", or "bf16" autocast of the network (losses accumulate in fp32)
    precision: str = option(
        "fp32",
        "--precision",
        f"{names_text(PRECISIONS)} (bf16: autocast of the network).",
        _choice(PRECISIONS),
        metavar="NAME",
    )
    checkpoint_every: int = option(
        1,
        "--checkpoint-every",
        "Epochs between checkpoints.",
        Rule("integer", low=1),
        metavar="EPOCHS",
        commands=("train",),
    )
    backend: str = option(
        "auto",
        "--backend",
        f"Training backend: {names_text(BACKENDS)} (auto: the fastest that supports the run).",
        _choice(BACKENDS),
        metavar="NAME",
    )
    threads: int = option(
        0,
        "--threads",
        "CPU threads for torch; 0 = chosen by the size of a training step: one for small "
        "networks (a second thread only adds synchronisation there), every idle core for large "
        "ones.",
        Rule("integer", high=MAX_THREADS),
        metavar="N",
    )

    def __post_init__(self) -> None:
        for name, declared in options_of(TrainConfig).items():
            object.__setattr__(self, name, declared.rule.check(name, getattr(self, name)))
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise OptionError(
                "{nesterov=} needs {optimizer:sgd} with {momentum} > 0, got {optimizer=}, "
                "{momentum=}",
                nesterov=self.nesterov,
                optimizer=self.optimizer,
                momentum=self.momentum,
            )

    @property
    def optimizer_params(self) -> OptimizerParams:
        """The optimizer hyper-parameters of this configuration (its OptimizerParams fields)."""
        return OptimizerParams(
            **{item.name: getattr(self, item.name) for item in fields(OptimizerParams)}
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


def resolve_device(name: str) -> torch.device:
    """The torch device for a :class:`TrainConfig` device name ("auto" picks cuda if present)."""
    import torch

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
