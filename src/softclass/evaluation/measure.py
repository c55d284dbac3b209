"""A trained model's final numbers: :func:`measure` and the table of what each number is.

Designs are set side by side only on common metrics (log loss, accuracy, Brier score and ECE of
the predicted probabilities, on the validation rows); a design's own training loss is reported as
such and never compared across designs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from softclass.data.expansion import in_blocks
from softclass.data.prepare import PreparedData
from softclass.evaluation import metric_table, metrics
from softclass.training.results import History, TrainResult


@dataclass(frozen=True)
class DesignRun:
    """One design trained with one seed, and its final measurements."""

    result: TrainResult
    seed: int
    metrics: dict[str, float]  # final numbers, see :func:`measure`
    confusion: torch.Tensor  # int64 (C, C) on the validation rows
    calibration: metrics.Calibration  # on the validation rows

    @property
    def design(self) -> str:
        return self.result.design.name

    @property
    def history(self) -> History:
        return self.result.history


# Each final metric of a run: its label, the rows it is measured on and whether it is common to
# every design (computed from the predicted probabilities, so designs may be compared on it) or a
# design's own training loss (cross entropy for A/B/D, squared error for C: never compared).
METRICS: dict[str, dict[str, str]] = {
    **{
        f"validation_{metric.key}": {"label": metric.name, "rows": "validation", "kind": "common"}
        for metric in metric_table.METRICS
    },
    "train_accuracy": {"label": "accuracy", "rows": "training", "kind": "common"},
    "train_loss": {"label": "own loss", "rows": "training", "kind": "own loss"},
    "validation_loss": {"label": "own loss", "rows": "validation", "kind": "own loss"},
    "epochs": {"label": "epochs trained", "rows": "", "kind": "run"},
    "seconds": {"label": "seconds of training", "rows": "", "kind": "run"},
}
METRIC_NAMES = tuple(METRICS)


@torch.no_grad()
def measure(result: TrainResult, data: PreparedData) -> DesignRun:
    """Final numbers of a trained model: its own loss and accuracy on both parts, and on the
    validation rows log loss, Brier score and calibration (ECE) of its probabilities. The own
    loss is the one it trained on (with the run's label smoothing)."""
    design, model = result.design.smoothed(result.config.label_smoothing), result.model
    numbers: dict[str, float] = {}
    for part, features, targets in (
        ("train", data.train_features, data.train_targets),
        ("validation", data.validation_features, data.validation_targets),
    ):
        logits = in_blocks(model, features)
        encoded = design.encode_targets(targets, data.n_classes)
        numbers[f"{part}_loss"] = float(design.loss_from_logits(logits, encoded))
        numbers[f"{part}_accuracy"] = float(metrics.accuracy(logits, targets))
    probs = design.predict_proba(logits)
    reliability = metrics.calibration(probs, data.validation_targets)
    numbers["validation_log_loss"] = float(
        metrics.log_loss(design.predict_log_proba(logits), data.validation_targets)
    )
    numbers["validation_brier"] = float(metrics.brier_score(probs, data.validation_targets))
    numbers["validation_ece"] = float(reliability.ece)
    numbers["epochs"] = float(result.history.epochs)
    numbers["seconds"] = result.history.seconds
    confusion = metrics.confusion_matrix(
        data.validation_targets, probs.argmax(dim=1), data.n_classes
    )
    return DesignRun(result, result.config.seed, numbers, confusion, reliability)
