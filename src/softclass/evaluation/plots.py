"""Figures of a comparison, drawn with matplotlib's Agg backend and saved atomically as PNG.

Each function takes plain results keyed by design name ("A".."D") and a destination path; none
of them touches pyplot's global figure state, so they are safe in scripts, tests and threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from softclass.evaluation.metrics import Calibration
from softclass.io import atomic_path

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn (0.6 s): train never draws
    from matplotlib.figure import Figure

# One colour per design, kept across figures (matplotlib's default cycle, colour-blind safe).
DESIGN_COLORS = {"A": "#1f77b4", "B": "#ff7f0e", "C": "#2ca02c", "D": "#d62728"}
# B is drawn dashed over A so that two identical curves stay visible.
DESIGN_LINESTYLES = {"A": "-", "B": "--", "C": "-", "D": ":"}


class History(Protocol):
    """What the plots read of a training history (``softclass.training.trainer.History``)."""

    def column(self, name: str) -> list[float | None]: ...


def _figure(**options: object) -> Figure:
    """A new matplotlib Figure outside pyplot (``options`` as ``Figure``'s)."""
    from matplotlib.figure import Figure

    return Figure(**options)


def _save(figure: Figure, path: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def plot_loss_curves(
    histories: Mapping[str, History], loss_names: Mapping[str, str], path: str | Path
) -> Path:
    """Training and validation loss per epoch of every design, on one figure (two panels).

    Each design's curve is its own loss (``loss_names[design]``), so C's squared error sits on
    another scale than the cross entropies of A, B and D; the legend says which is which.
    """
    figure = _figure(figsize=(11, 4.2))
    panels = figure.subplots(1, 2, sharey=False)
    for panel, column, title in (
        (panels[0], "train_loss", "training loss"),
        (panels[1], "validation_loss", "validation loss"),
    ):
        for name, history in histories.items():
            values = [np.nan if value is None else value for value in history.column(column)]
            panel.plot(
                range(1, len(values) + 1),
                values,
                label=f"{name}: {loss_names[name]}",
                color=DESIGN_COLORS.get(name),
                linestyle=DESIGN_LINESTYLES.get(name, "-"),
            )
        panel.set_title(title)
        panel.set_xlabel("epoch")
        panel.set_yscale("log")
        panel.grid(True, alpha=0.3)
    panels[0].set_ylabel("loss (each design's own)")
    panels[1].legend(loc="upper right", fontsize="small")
    return _save(figure, path)


def plot_confusion_matrices(
    matrices: Mapping[str, torch.Tensor], class_names: Sequence[str], path: str | Path
) -> Path:
    """One panel per design: counts of true class (rows) against predicted class (columns)."""
    figure = _figure(figsize=(3.4 * len(matrices) + 0.8, 3.8), layout="constrained")
    panels = np.atleast_1d(figure.subplots(1, len(matrices), sharey=True))
    ticks = range(len(class_names))
    for panel, (name, matrix) in zip(panels, matrices.items(), strict=True):
        counts = matrix.cpu().numpy()
        panel.imshow(counts, cmap="Blues", vmin=0)
        threshold = counts.max() / 2 if counts.size else 0
        for row in ticks:
            for column in ticks:
                panel.text(
                    column,
                    row,
                    str(counts[row, column]),
                    ha="center",
                    va="center",
                    color="white" if counts[row, column] > threshold else "black",
                )
        panel.set_title(f"design {name}")
        panel.set_xticks(list(ticks), list(class_names), rotation=45, ha="right")
        panel.set_xlabel("predicted")
    panels[0].set_yticks(list(ticks), list(class_names))  # shared: inner panels hide them
    panels[0].set_ylabel("true")
    return _save(figure, path)


def plot_calibration(calibrations: Mapping[str, Calibration], path: str | Path) -> Path:
    """Reliability diagram: mean confidence against accuracy per bin, one line per design."""
    figure = _figure(figsize=(5.2, 5))
    panel = figure.subplots()
    panel.plot([0, 1], [0, 1], color="grey", linewidth=1, label="perfectly calibrated")
    for name, result in calibrations.items():
        filled = result.counts > 0
        panel.plot(
            result.confidence[filled].numpy(),
            result.accuracy[filled].numpy(),
            marker="o",
            color=DESIGN_COLORS.get(name),
            linestyle=DESIGN_LINESTYLES.get(name, "-"),
            label=f"{name} (ECE {float(result.ece):.3f})",
        )
    panel.set_xlim(0, 1)
    panel.set_ylim(0, 1.02)
    panel.set_xlabel("confidence (top-class probability)")
    panel.set_ylabel("accuracy")
    panel.set_title("calibration (validation rows)")
    panel.grid(True, alpha=0.3)
    panel.legend(loc="upper left", fontsize="small")
    return _save(figure, path)


def plot_seed_bands(
    bands: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], path: str | Path
) -> Path:
    """Validation loss and accuracy per epoch over seeds: each design's mean and 95 % band.

    ``bands[metric][design]`` holds ``mean``, ``low`` and ``high`` arrays ``(epochs,)``, as
    :meth:`softclass.training.ensemble.SeedComparison.bands` returns them ("val_loss",
    "val_accuracy").
    """
    figure = _figure(figsize=(11, 4.2))
    panels = figure.subplots(1, 2, sharey=False)
    for panel, (metric, title) in zip(
        panels,
        (("val_loss", "validation loss"), ("val_accuracy", "validation accuracy")),
        strict=True,
    ):
        for name, band in bands[metric].items():
            epochs = np.arange(1, len(band["mean"]) + 1)
            color = DESIGN_COLORS.get(name)
            panel.plot(
                epochs,
                band["mean"],
                label=name,
                color=color,
                linestyle=DESIGN_LINESTYLES.get(name, "-"),
            )
            panel.fill_between(epochs, band["low"], band["high"], color=color, alpha=0.2)
        panel.set_title(f"{title} (mean and 95 % band over seeds)")
        panel.set_xlabel("epoch")
        panel.grid(True, alpha=0.3)
    panels[0].set_yscale("log")
    panels[1].legend(loc="lower right", fontsize="small")
    return _save(figure, path)
