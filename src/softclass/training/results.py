"""What training produces: per-epoch records, a run's history, progress events, the result.

These types live below every engine and job (the loop, the backends, compare, the report's
figures and the CLI's progress bars all read them), so none of them imports a trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from softclass.mlp.designs import Design
from softclass.mlp.model import MLP, MLPConfig
from softclass.training.config import TrainConfig, json_number

__all__ = ["EpochRecord", "History", "ProgressCallback", "ProgressEvent", "TrainResult"]


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch measured. Losses are the design's own loss (mean over items)."""

    epoch: int  # 1-based
    train_loss: float  # mean loss over the epoch's batches, weighted by batch size
    train_accuracy: float  # share of training rows classified right while training
    validation_loss: float | None  # after the epoch; None without a validation set
    validation_accuracy: float | None
    seconds: float  # wall time of the epoch, validation included

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: non-finite numbers become None."""
        numbers = {item.name: json_number(getattr(self, item.name)) for item in fields(self)}
        return numbers | {"epoch": self.epoch}


@dataclass
class History:
    """Per-epoch records of one training run, plus where early stopping left it."""

    records: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None  # epoch whose weights were kept (early stopping), else None
    stopped_early: bool = False

    def column(self, name: str) -> list[float | None]:
        """One field of every record, e.g. ``history.column("validation_loss")``."""
        return [getattr(record, name) for record in self.records]

    @property
    def epochs(self) -> int:
        return len(self.records)

    @property
    def seconds(self) -> float:
        return sum(record.seconds for record in self.records)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: non-finite losses become null."""
        return {
            "records": [record.to_dict() for record in self.records],
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict` (null losses read back as NaN)."""

        def number(value: float | None) -> float:
            return math.nan if value is None else float(value)

        def measured(value: float | None) -> float | None:  # None: no validation rows
            return None if value is None else float(value)

        records = [
            EpochRecord(
                epoch=int(item["epoch"]),
                train_loss=number(item["train_loss"]),
                train_accuracy=number(item["train_accuracy"]),
                validation_loss=measured(item["validation_loss"]),
                validation_accuracy=measured(item["validation_accuracy"]),
                seconds=number(item["seconds"]),
            )
            for item in data["records"]
        ]
        best_epoch = data.get("best_epoch")
        return cls(
            records,
            None if best_epoch is None else int(best_epoch),
            bool(data.get("stopped_early", False)),
        )

    def summary(self) -> dict[str, Any]:
        """The last record, the epoch count and the best epoch (saved in model.json)."""
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "seconds": self.seconds,
            "last": self.records[-1].to_dict() if self.records else None,
        }


@dataclass(frozen=True)
class ProgressEvent:
    """Sent to the progress callback after each epoch (the library itself never prints)."""

    label: str  # which run, e.g. "A" or "A seed 1"
    epoch: int  # epochs done so far (1-based)
    epochs: int  # the configured total
    record: EpochRecord
    finished: bool  # True on the run's last epoch (the total, or an early stop)


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class TrainResult:
    """A trained model (on the CPU, in eval mode) and how it got there."""

    model: MLP
    design: Design
    model_config: MLPConfig
    config: TrainConfig
    history: History
