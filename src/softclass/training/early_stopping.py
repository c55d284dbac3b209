"""The one early-stopping rule, used by every engine and by ``softclass.Classifier``.

After each epoch the monitored metric is compared with the best value so far: it improves when
it beats the best by more than ``min_delta`` (lower for losses, higher for accuracy); an
improvement resets the count and, with ``restore_best``, marks this epoch's weights as the ones to
end on; ``patience`` epochs in a row without improvement stop the run. One :class:`EarlyStopping`
tracks M models at once (each its own best and count), with plain floats: no tensors, no host
synchronisation of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from softclass.training.config import MONITORS, TrainConfig


@dataclass
class EarlyStopping:
    """Per-model state of the rule for ``n_models`` models trained together.

    Attributes:
        monitor: a key of :data:`softclass.training.config.MONITORS`.
        patience: epochs without improvement that stop a model; None never stops.
        min_delta: the margin an improvement must beat the best by.
        best: best value per model so far (±inf before the first epoch).
        best_epoch: 1-based epoch of that value per model (None before).
        bad_epochs: epochs since the last improvement, per model.
        stopped: whether each model has stopped.
    """

    monitor: str
    patience: int | None
    min_delta: float
    n_models: int = 1
    best: list[float] = field(default_factory=list)
    best_epoch: list[int | None] = field(default_factory=list)
    bad_epochs: list[int] = field(default_factory=list)
    stopped: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        start = math.inf if self.lower_is_better else -math.inf
        self.best = self.best or [start] * self.n_models
        self.best_epoch = self.best_epoch or [None] * self.n_models
        self.bad_epochs = self.bad_epochs or [0] * self.n_models
        self.stopped = self.stopped or [False] * self.n_models

    @classmethod
    def from_config(cls, config: TrainConfig, n_models: int = 1) -> EarlyStopping:
        """The rule as ``config`` sets it (``patience``, ``monitor``, ``min_delta``)."""
        return cls(config.monitor, config.patience, float(config.min_delta), n_models)

    @property
    def lower_is_better(self) -> bool:
        return MONITORS[self.monitor] == "min"

    def update(self, model: int, epoch: int, value: float) -> bool:
        """Record model ``model``'s metric after 1-based ``epoch``; True when it improved (its
        weights are then the ones to keep). A NaN never improves."""
        margin = (self.best[model] - value) if self.lower_is_better else (value - self.best[model])
        improved = margin > self.min_delta
        if improved:
            self.best[model] = value
            self.best_epoch[model] = epoch
            self.bad_epochs[model] = 0
        else:
            self.bad_epochs[model] += 1
            if self.patience is not None and self.bad_epochs[model] >= self.patience:
                self.stopped[model] = True
        return improved

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers and lists (a checkpoint holds it)."""
        return {
            "best": list(self.best),
            "best_epoch": list(self.best_epoch),
            "bad_epochs": list(self.bad_epochs),
            "stopped": list(self.stopped),
        }

    def load_dict(self, data: dict[str, Any]) -> None:
        """Inverse of :meth:`to_dict`."""
        self.best = [float(value) for value in data["best"]]
        self.best_epoch = [None if value is None else int(value) for value in data["best_epoch"]]
        self.bad_epochs = [int(value) for value in data["bad_epochs"]]
        self.stopped = [bool(value) for value in data["stopped"]]
