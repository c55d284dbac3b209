"""What :func:`softclass.jobs.compare.compare` returns: every run, every agreement, the seeds'
statistics, and their JSON form (``softclass compare --json``, report.json).

A type of its own module so that the report writer (:mod:`softclass.jobs.report`) and the job
both import it, and neither imports the other's module for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softclass.evaluation.agreement import Agreement
from softclass.evaluation.measure import METRIC_NAMES, METRICS, DesignRun
from softclass.evaluation.stats import common_metrics, compare_designs, mean_interval
from softclass.jobs.defaults import Defaults
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLPConfig
from softclass.training.config import TrainConfig, json_number

# What each set of rows is used for, as report.json states it.
ROW_ROLES = {
    "train": "fit the weights; the normalisation recipe was fitted on them (and on the stopping "
    "rows, which are held out of the training rows afterwards)",
    "stopping": "choose the epoch when early stopping (--patience); never reported as a result",
    "validation": "every reported validation number; never trained on, never chose the epoch",
}


@dataclass(frozen=True)
class ComparisonResult:
    """Everything :func:`compare` measured."""

    designs: tuple[str, ...]
    seeds: tuple[int, ...]
    runs: tuple[DesignRun, ...]
    agreements: tuple[Agreement, ...]
    class_names: tuple[str, ...]
    model_config: MLPConfig
    config: TrainConfig
    n_train: int
    n_validation: int
    out_dir: Path | None = None
    # With several seeds from the batched engine: per metric, per design, the per-epoch mean and
    # 95 % band ({"mean", "low", "high"} arrays); None otherwise.
    bands: dict[str, dict[str, dict[str, Any]]] | None = None
    n_stopping: int = 0  # rows that chose the epoch (early stopping), apart from both others
    defaults: Defaults | None = None  # the default set the options came from, when known
    # Seconds spent once before training (loading the compiled code), not counted in any
    # design's training time; None: not measured (train's one-design page). And whether the
    # designs trained together (one batched run, whose wall time each design's "seconds" is an
    # equal share of) or one after another.
    one_time_seconds: float | None = None
    trained_together: bool = False

    @property
    def history_rows(self) -> str:
        """Which rows the per-epoch validation numbers of the histories come from."""
        return "stopping" if self.n_stopping else "validation"

    def runs_of(self, design: str) -> list[DesignRun]:
        return [run for run in self.runs if run.design == design]

    def summary(self, design: str) -> dict[str, float]:
        """The metrics of ``design`` averaged over the seeds."""
        runs = self.runs_of(design)
        return {name: sum(run.metrics[name] for run in runs) / len(runs) for name in METRIC_NAMES}

    def seed_statistics(self, confidence: float = 0.95) -> dict[str, Any] | None:
        """Over the seeds (2 or more), on the common metrics only: per design the mean and
        interval, and every pair of designs compared seed by seed; None with one seed.

        A design's own loss gets its mean and interval per design (``own_loss``) but is never
        paired across designs. A metric with a non-finite value (a diverged run) is left out.
        """
        if len(self.seeds) < 2:
            return None
        summary: dict[str, dict[str, Any]] = {}
        pairs: dict[str, list[dict[str, Any]]] = {}
        for metric in common_metrics():
            values = {name: self._per_seed(name, metric) for name in self.designs}
            if not all(math.isfinite(value) for row in values.values() for value in row):
                continue
            summary[metric] = {
                name: _json_floats(mean_interval(row, confidence).to_dict())
                for name, row in values.items()
            }
            if len(self.designs) > 1:
                pairs[metric] = [
                    _json_floats(pair.to_dict())
                    for pair in compare_designs(values, metric, confidence)
                ]
        own_losses = {name: self._per_seed(name, "validation_loss") for name in self.designs}
        own_loss = {
            name: {
                "loss": get_design(name).loss_name,
                **_json_floats(mean_interval(row, confidence).to_dict()),
            }
            for name, row in own_losses.items()
            if all(math.isfinite(value) for value in row)
        }
        return {
            "confidence": confidence,
            "rows": "validation",
            "summary": summary,
            "pairs": pairs,
            "own_loss": own_loss,
        }

    def _per_seed(self, design: str, metric: str) -> list[float]:
        return [run.metrics[metric] for run in sorted(self.runs_of(design), key=_seed_of)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (``softclass compare --json`` prints it)."""
        return {
            "seed_statistics": self.seed_statistics(),
            "designs": {
                name: {
                    "title": get_design(name).title,
                    "loss": get_design(name).loss_name,
                    "mean_over_seeds": _json_numbers(self.summary(name)),
                    "per_seed": [
                        {
                            "seed": run.seed,
                            **_json_numbers(run.metrics),
                            "history": run.history.to_dict(),
                            "confusion_matrix": run.confusion.tolist(),
                            "calibration": run.calibration.to_dict(),
                        }
                        for run in self.runs_of(name)
                    ],
                }
                for name in self.designs
            },
            "metrics": METRICS,
            "history_rows": self.history_rows,
            "agreement": [agreement.to_dict() for agreement in self.agreements],
            "seeds": list(self.seeds),
            "classes": list(self.class_names),
            "rows": {
                "train": self.n_train,
                "stopping": self.n_stopping,
                "validation": self.n_validation,
            },
            "row_roles": {
                role: text
                for role, text in ROW_ROLES.items()
                if role != "stopping" or self.n_stopping
            },
            "model_config": self.model_config.to_dict(),
            "train_config": self.config.to_dict(),
            "defaults": None if self.defaults is None else self.defaults.to_dict(),
            "timing": {
                "one_time_seconds": json_number(self.one_time_seconds),
                "trained_together": self.trained_together,
            },
            "out_dir": None if self.out_dir is None else str(self.out_dir),
        }


def _json_numbers(numbers: dict[str, float]) -> dict[str, float | None]:
    """NaN or infinite numbers (a diverged run) become None, which JSON can hold."""
    return {name: json_number(value) for name, value in numbers.items()}


def _json_floats(record: dict[str, Any]) -> dict[str, Any]:
    """The floats of ``record`` made JSON-safe (infinite t statistic, NaN → None); the rest kept."""
    return {
        key: json_number(value) if isinstance(value, float) else value
        for key, value in record.items()
    }


def _seed_of(run: DesignRun) -> int:
    return run.seed
