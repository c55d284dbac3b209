"""Figures of a comparison, drawn with matplotlib's Agg backend.

Each ``*_figure`` function takes plain results keyed by design name ("A", "B", ...) and returns a
:class:`~matplotlib.figure.Figure`; :func:`render_png` turns it into PNG bytes (the HTML report
embeds them) and each ``plot_*`` function writes one figure to a path, atomically. None of them
touches pyplot's global figure state, so they are safe in scripts, tests and threads.

Every figure carries a ``caption`` line above it (the report passes the table, the target and
the rows the numbers come from), so a PNG seen alone still says what it shows.
"""

from __future__ import annotations

import io
import math
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from softclass.evaluation.curves import as_array, macro_average_precision, macro_average_roc
from softclass.evaluation.figure_layout import pin_titles
from softclass.evaluation.metric_table import band_facts
from softclass.evaluation.stacking import coinciding, stacked_label, stacked_style
from softclass.io import atomic_write_bytes

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn (0.6 s of start-up)
    import torch
    from matplotlib.figure import Figure

    from softclass.evaluation.metrics import Calibration, OneVsRest

# Each design's (Design.color, Design.linestyle), passed in: the figure helpers never import
# the registry (it imports torch).
Styles = Mapping[str, tuple[str, str]]
DPI = 100
# Confusion matrices: every class named up to this many (beyond, the report lists the largest
# confusions); each cell prints its number up to ANNOTATE_MAX_CLASSES.
CONFUSION_MAX_CLASSES = 50
ANNOTATE_MAX_CLASSES = 20
# ROC / PR: one coloured, labelled curve per class up to this many; beyond, thin grey lines.
CURVE_LEGEND_MAX_CLASSES = 10
LABEL_MAX_CHARS = 18  # class names are cut (with "…") beyond this in ticks and legends


class History(Protocol):
    """What the plots read of a training history (``softclass.training.results.History``)."""

    def column(self, name: str) -> list[float | None]: ...


class HistoryColumns:
    """A training history as plain columns (what the figures read of one), e.g. for a process
    without torch: ``HistoryColumns({"train_loss": [...], ...}).column("train_loss")``."""

    def __init__(self, columns: Mapping[str, list[float | None]]) -> None:
        self.columns = {name: list(values) for name, values in columns.items()}

    def column(self, name: str) -> list[float | None]:
        return self.columns.get(name, [])


def warm_up() -> None:
    """Import matplotlib and draw one small figure with text: the fonts, the Agg canvas and the
    PNG writer load here rather than in the first real figure."""
    figure, panels = _fixed_figure(2.0, 1.5)
    panels[0, 0].plot([1, 2], [1, 2], label="warm-up")
    panels[0, 0].set_title("warm-up")
    panels[0, 0].legend()
    render_png(figure)


def render_png(figure: Figure) -> bytes:
    """The figure as PNG bytes at ``DPI`` dots per inch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    pin_titles(figure)
    buffer = io.BytesIO()
    # Constrained layout already fits every label: no "tight" bounding box (a second draw).
    # zlib level 1 instead of 6: the eight figures of a compare report encode in ~0.07 s instead
    # of ~0.22 s of CPU, for files ~8 % larger (493 KB against 457 KB together).
    figure.savefig(buffer, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def _fixed_figure(
    width: float,
    height: float,
    rows: int = 1,
    columns: int = 1,
    *,
    left: float = 0.75,
    right: float = 0.2,
    bottom: float = 0.6,
    top: float = 0.75,
    gap_x: float = 0.85,
    gap_y: float = 0.3,
    **subplot_options,
) -> tuple[Figure, np.ndarray]:
    """A figure with margins fixed in inches (room for labels, titles and the caption line).

    Curves and bars have labels of known length, so a fixed layout fits them; it draws once,
    where constrained layout draws twice (about half the time of the report's figures).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    axis_width = (width - left - right - (columns - 1) * gap_x) / columns
    axis_height = (height - bottom - top - (rows - 1) * gap_y) / rows
    figure.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=gap_x / axis_width,
        hspace=gap_y / axis_height,
    )
    panels = figure.subplots(rows, columns, squeeze=False, **subplot_options)
    return figure, panels


def _caption(figure: Figure, caption: str | None) -> None:
    """The caption line above the figure, in a font small enough to fit its width (about 0.55
    em a character; 10 pt at most, 6 pt at least, then cut with "…")."""
    if not caption:
        return
    fitting = figure.get_figwidth() * 72 / (0.55 * len(caption))
    size = min(10.0, max(6.0, fitting))
    if fitting < 6.0:
        keep = int(len(caption) * fitting / 6.0) - 1
        caption = caption[:keep] + "…"
    figure.suptitle(caption, fontsize=size, color="#333333")


def short_label(name: str) -> str:
    """A class name for ticks and legends: control characters (no glyph to draw) shown as "�",
    cut to ``LABEL_MAX_CHARS`` characters."""
    name = "".join("\ufffd" if unicodedata.category(char) == "Cc" else char for char in name)
    return name if len(name) <= LABEL_MAX_CHARS else name[: LABEL_MAX_CHARS - 1] + "…"


def _plain_log_labels(panel, label_minor: bool = False) -> None:
    """Tick labels of a log or symlog y axis as plain text: 0.2, 4, 1e-05 (``%g``) instead of
    matplotlib's default 2×10⁻¹, which is typeset as mathematics (a third of a figure's drawing
    time) and too wide for the panel's margin."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    panel.yaxis.set_major_formatter(plain)
    panel.yaxis.set_minor_formatter(plain if label_minor else NullFormatter())
    if not label_minor and panel.get_yscale() == "log":
        # Unlabelled minor ticks at 2 and 5 of each decade, not all eight: every tick is a
        # costly object to draw (most of a long-run loss figure's time) and adds nothing here.
        panel.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))


def _finite(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if value is None else value for value in values], dtype=np.float64)


def loss_curves_figure(
    histories: Mapping[str, History],
    loss_names: Mapping[str, str],
    caption: str | None = None,
    *,
    styles: Styles,
    held_out_label: str = "validation rows",
) -> Figure:
    """Each design's own loss per epoch in its own panel: training and held-out rows (named by
    ``held_out_label``: the rows of the history's ``validation_loss``).

    The panels do not share an axis: C's squared error and the cross entropies of A, B and D are
    different quantities and are never drawn on one scale.
    """
    names = list(histories)
    figure, panels = _fixed_figure(3.6 * len(names) + 0.7, 3.6, 1, len(names), left=0.85, gap_x=1.0)
    panels = panels[0]
    for panel, name in zip(panels, names, strict=True):
        history = histories[name]
        for column, label, style in (
            ("train_loss", "training rows", "-"),
            ("validation_loss", held_out_label, "--"),
        ):
            values = _finite(history.column(column))
            if np.isfinite(values).any():
                panel.plot(
                    np.arange(1, len(values) + 1),
                    values,
                    label=label,
                    color=styles[name][0],
                    linestyle=style,
                )
        drawn = [value for line in panel.get_lines() for value in line.get_ydata()]
        if drawn and all(math.isfinite(value) and value > 0 for value in drawn):
            panel.set_yscale("log")
            # Minor ticks are labelled only when the curves span less than ~1.3 decades.
            _plain_log_labels(panel, math.log10(max(drawn) / min(drawn)) < 1.3)
        panel.set_title(f"design {name}: {loss_names[name]}", fontsize="medium")
        panel.set_xlabel("epoch")
        panel.set_ylabel(f"{loss_names[name]} loss")
        panel.grid(True, alpha=0.3)
        if panel.get_lines():
            panel.legend(fontsize="small")
        else:  # a diverged run: nothing finite to draw
            panel.text(0.5, 0.5, "no finite loss", ha="center", transform=panel.transAxes)
    _caption(figure, caption)
    return figure


def _confusion_labels(class_names: Sequence[str]) -> tuple[float, float, int]:
    """Label font size (pt), the longest label's width (inches, about 0.6 em a character) and
    the column labels' rotation: horizontal when the longest fits its cell, else vertical, so
    that labels never overlap whatever their length."""
    n_classes = len(class_names)
    size = 9 if n_classes <= 15 else 7
    if n_classes > CONFUSION_MAX_CLASSES:
        return size, 0.0, 0
    widest = max(len(short_label(name)) for name in class_names) * 0.6 * size / 72
    cell_inches = _confusion_side(n_classes) / n_classes
    return size, widest, 0 if widest < 0.9 * cell_inches else 90


def _draw_confusion(
    panel, matrix: np.ndarray, class_names: Sequence[str], normalised: bool, title: str, top=None
):
    """One confusion matrix on ``panel``, true class down, predicted class across; returns its
    image. ``top``: the count of the darkest colour (default: the matrix's largest)."""
    n_classes, values = len(class_names), matrix
    if normalised:
        totals = matrix.sum(axis=1, keepdims=True)
        values = np.divide(
            matrix, totals, out=np.zeros(matrix.shape, dtype=np.float64), where=totals > 0
        )
    top = 1.0 if normalised else top
    image = panel.imshow(values, cmap="Blues", vmin=0, vmax=top, interpolation="nearest")
    label_size, _, rotation = _confusion_labels(class_names)
    if n_classes <= ANNOTATE_MAX_CLASSES:
        threshold = max(float(values.max() if top is None else top), 1.0) / 2
        cell_size = 9 if n_classes <= 10 else 6.5
        for row in range(n_classes):
            for column in range(n_classes):
                value = values[row, column]
                panel.text(
                    column,
                    row,
                    f"{value:.2f}" if normalised else str(int(value)),
                    ha="center",
                    va="center",
                    fontsize=cell_size,
                    color="white" if value > threshold else "black",
                )
    if n_classes <= CONFUSION_MAX_CLASSES:
        labels = [short_label(name) for name in class_names]
        ticks = np.arange(n_classes)
        panel.set_xticks(ticks, labels, rotation=rotation, fontsize=label_size)
        panel.set_yticks(ticks, labels, fontsize=label_size)
    else:  # too many names to print: the pattern only, the report's table names the classes
        panel.set_xticks([])
        panel.set_yticks([])
    panel.set_xlabel("predicted class")
    panel.set_ylabel("true class")
    panel.set_title(title, fontsize="medium")
    return image


def _colour_bar(panel, image, n_classes: int, normalised: bool) -> None:
    """``image``'s colour scale in a bar just right of ``panel``."""
    side = _confusion_side(n_classes)  # the panel's size in inches (see _confusion_grid)
    bar = panel.inset_axes([1 + 0.1 / side, 0.0, 0.18 / side, 1.0])
    panel.figure.colorbar(image, cax=bar, label="share of the true class" if normalised else "rows")


def _confusion_side(n_classes: int) -> float:
    """Inches of one matrix: 0.21 in (21 px at ``DPI``) per class from 15 classes on, no more
    than ``CONFUSION_MAX_CLASSES`` classes need (beyond, the classes are not named)."""
    return max(3.2, 0.5 + 0.21 * min(n_classes, CONFUSION_MAX_CLASSES))


def _confusion_grid(class_names: Sequence[str], rows: int, columns: int) -> tuple[Figure, list]:
    """A figure of ``rows`` x ``columns`` matrices with margins fitted to the class names."""
    side = _confusion_side(len(class_names))
    _, widest, rotation = _confusion_labels(class_names)
    left = widest + 0.6  # row names and the axis label
    right = 1.2  # the colour bar (0.1 in away, 0.18 in wide), its numbers and label
    bottom = (widest if rotation else 0.2) + 0.6
    top = 0.85  # caption and title
    figure, panels = _fixed_figure(
        columns * (left + side + right),
        rows * (top + side + bottom),
        rows,
        columns,
        left=left,
        right=right,
        bottom=bottom,
        top=top,
        gap_x=left + right,
        gap_y=top + bottom,
    )
    return figure, list(panels.reshape(-1))


def confusion_figure(
    matrix: torch.Tensor,
    class_names: Sequence[str],
    *,
    normalised: bool = False,
    title: str = "",
    caption: str | None = None,
) -> Figure:
    """One confusion matrix, sized so that every class name stays legible up to
    ``CONFUSION_MAX_CLASSES`` classes (cells and labels grow with the class count); beyond, the
    matrix shows its pattern without class names (see
    :func:`softclass.evaluation.metrics.top_confusions` for a table).

    Args:
        matrix: int (C, C) counts, true class in rows.
        class_names: C names.
        normalised: show each row divided by its total (recall on the diagonal).
    """
    figure, panels = _confusion_grid(class_names, 1, 1)
    image = _draw_confusion(panels[0], as_array(matrix), class_names, normalised, title)
    _colour_bar(panels[0], image, len(class_names), normalised)
    _caption(figure, caption)
    return figure


def confusion_matrices_figure(
    matrices: Mapping[str, torch.Tensor],
    class_names: Sequence[str],
    caption: str | None = None,
) -> Figure:
    """Counts of every design, side by side up to 10 classes, one above the other beyond, in one
    colour scale (the designs are judged on the same rows) shown right of each row's last."""
    columns = len(matrices) if len(class_names) <= 10 else 1
    figure, panels = _confusion_grid(class_names, math.ceil(len(matrices) / columns), columns)
    top = max(1, *(int(matrix.max()) for matrix in matrices.values()))
    for index, (panel, (name, matrix)) in enumerate(zip(panels, matrices.items(), strict=True)):
        image = _draw_confusion(panel, as_array(matrix), class_names, False, f"design {name}", top)
        if (index + 1) % columns == 0 or index == len(matrices) - 1:
            _colour_bar(panel, image, len(class_names), False)
    _caption(figure, caption)
    return figure


def roc_pr_figure(
    curves: OneVsRest,
    class_names: Sequence[str],
    *,
    title: str = "",
    caption: str | None = None,
) -> Figure:
    """One-vs-rest ROC (left) and precision-recall (right) curves of every class.

    Up to ``CURVE_LEGEND_MAX_CLASSES`` classes each curve is coloured and its area given in the
    legend; beyond, every class is a thin grey line and the macro average is drawn bold.
    """
    figure, panels = _fixed_figure(10.5, 4.8, 1, 2, right=0.3)
    roc_panel, pr_panel = panels[0]
    n_classes = len(class_names)
    labelled = n_classes <= CURVE_LEGEND_MAX_CLASSES
    colors = [f"C{index % 10}" for index in range(n_classes)]
    for index, name in enumerate(class_names):
        style = (
            {"color": colors[index], "linewidth": 1.6}
            if labelled
            else {"color": "#9a9a9a", "linewidth": 0.6, "alpha": 0.7}
        )
        auc = float(curves.roc_auc[index])
        precision = float(curves.average_precision[index])
        roc_panel.plot(
            as_array(curves.false_positive_rate[index]),
            as_array(curves.true_positive_rate[index]),
            label=f"{short_label(name)} (AUC {auc:.3f})" if labelled else None,
            drawstyle="default",
            **style,
        )
        pr_panel.plot(
            as_array(curves.recall[index]),
            as_array(curves.precision[index]),
            label=f"{short_label(name)} (AP {precision:.3f})" if labelled else None,
            drawstyle="steps-post",
            **style,
        )
    if not labelled:
        grid = np.linspace(0, 1, 201)
        macro_auc = float(np.nanmean(as_array(curves.roc_auc)))
        macro_ap = float(np.nanmean(as_array(curves.average_precision)))
        roc_panel.plot(
            grid,
            macro_average_roc(curves, grid),
            color="black",
            linewidth=2,
            label=f"macro average of {n_classes} classes (AUC {macro_auc:.3f})",
        )
        pr_panel.plot(
            grid,
            macro_average_precision(curves, grid),
            color="black",
            linewidth=2,
            label=f"macro average, interpolated (mean AP {macro_ap:.3f})",
        )
        pr_panel.plot([], [], color="#9a9a9a", label=f"each of {n_classes} classes")
    roc_panel.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="chance")
    roc_panel.set_xlabel("false positive rate (rest predicted as the class)")
    roc_panel.set_ylabel("true positive rate (recall)")
    roc_panel.set_title(f"{title}ROC, one class vs the rest".strip(), fontsize="medium")
    pr_panel.set_xlabel("recall")
    pr_panel.set_ylabel("precision")
    pr_panel.set_title(f"{title}precision-recall, one vs rest".strip(), fontsize="medium")
    for panel in (roc_panel, pr_panel):
        panel.set_xlim(-0.01, 1.01)  # curves along the edges stay visible
        panel.set_ylim(0, 1.02)
        panel.grid(True, alpha=0.3)
        panel.legend(fontsize="small", loc="lower right" if panel is roc_panel else "lower left")
    _caption(figure, caption)
    return figure


def calibration_figure(
    calibrations: Mapping[str, Calibration], caption: str | None = None, *, styles: Styles
) -> Figure:
    """Reliability diagram (top) and the rows in each confidence bin (bottom), every design.

    The top panel plots accuracy against mean confidence in each non-empty bin, each point
    labelled with its row count; the bottom panel shows the counts per bin, so a point made of
    three rows is seen as such.
    """
    figure, panels = _fixed_figure(
        7.5, 7.2, 2, 1, gap_y=0.2, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    reliability, histogram = panels[:, 0]
    reliability.plot([0, 1], [0, 1], color="grey", linewidth=1, label="perfectly calibrated")
    names = list(calibrations)
    under = coinciding(
        {
            name: np.concatenate([as_array(result.confidence), as_array(result.accuracy)])
            for name, result in calibrations.items()
        },
        span=1.0,
    )
    for offset, name in enumerate(names):
        result = calibrations[name]
        filled = as_array(result.counts) > 0
        confidence = as_array(result.confidence)[filled]
        accuracy = as_array(result.accuracy)[filled]
        counts = as_array(result.counts)[filled]
        ece = float(result.ece)
        reliability.plot(
            confidence,
            accuracy,
            marker="o",
            color=styles[name][0],
            linestyle=styles[name][1],
            label=stacked_label(f"{name} (ECE {ece:.3f}, {len(result.counts)} bins)", name, under),
            **stacked_style(name, under, names),
        )
        if offset == 0:
            for x, y, count in zip(confidence, accuracy, counts, strict=True):
                reliability.annotate(
                    f"n={count}",
                    (x, y),
                    textcoords="offset points",
                    xytext=(-8, -12) if x > 0.85 else (5, -12),
                    ha="right" if x > 0.85 else "left",
                    fontsize=7,
                    color=styles[name][0],
                )
        edges = as_array(result.bin_edges)
        width = (edges[1:] - edges[:-1]) / (len(names) + 0.5)
        histogram.bar(
            edges[:-1] + width * (offset + 0.25),
            as_array(result.counts),
            width=width,
            align="edge",
            color=styles[name][0],
            label=name,
        )
    reliability.set_xlim(0, 1)
    reliability.set_ylim(0, 1.02)
    reliability.set_ylabel("accuracy in the bin")
    reliability.set_title("calibration: top-class confidence against accuracy", fontsize="medium")
    reliability.grid(True, alpha=0.3)
    reliability.legend(loc="lower right", fontsize="small")
    histogram.set_xlabel("confidence (top-class probability), binned")
    histogram.set_ylabel("rows per bin")
    histogram.grid(True, alpha=0.3, axis="y")
    histogram.legend(fontsize="small", ncols=len(names), loc="upper left")
    _caption(figure, caption)
    return figure


def seed_bands_figure(
    bands: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    caption: str | None = None,
    *,
    styles: Styles,
) -> Figure:
    """Each metric per epoch over seeds: every design's mean and 95 % band, one panel a metric.

    ``bands[metric][design]`` holds ``mean``, ``low`` and ``high`` arrays ``(epochs,)``, as
    :meth:`softclass.evaluation.seeds.SeedComparison.bands` returns them ("val_loss",
    "val_accuracy", ...). Metrics bounded by [0, 1] (accuracy, Brier...) have their bands
    clamped to it; a t interval over few seeds can otherwise cross 1.
    """
    metrics = list(bands)
    figure, panels = _fixed_figure(5.6 * len(metrics) + 0.4, 4.4, 1, len(metrics), left=0.85)
    panels = panels[0]
    for panel, metric in zip(panels, metrics, strict=True):
        label, bounded = band_facts(metric)
        means = {name: as_array(band["mean"]) for name, band in bands[metric].items()}
        finite = np.concatenate([values[np.isfinite(values)] for values in means.values()])
        under = coinciding(means, span=float(np.ptp(finite)) if finite.size else 0.0)
        for name, band in bands[metric].items():
            mean, low, high = (
                np.asarray(band[key], dtype=np.float64) for key in ("mean", "low", "high")
            )
            if bounded:
                mean, low, high = (np.clip(values, 0.0, 1.0) for values in (mean, low, high))
            epochs = np.arange(1, len(mean) + 1)
            color, linestyle = styles[name]
            panel.plot(
                epochs,
                mean,
                label=stacked_label(name, name, under),
                color=color,
                linestyle=linestyle,
                **stacked_style(name, under, list(means)),
            )
            panel.fill_between(epochs, low, high, color=color, alpha=0.2)
        if bounded:
            panel.set_ylim(0, 1.02)
        else:
            drawn = np.concatenate([np.asarray(band["mean"]) for band in bands[metric].values()])
            if drawn.size and np.all(np.isfinite(drawn)) and np.all(drawn > 0):
                panel.set_yscale("log")
                _plain_log_labels(panel, math.log10(drawn.max() / drawn.min()) < 1.3)
        panel.set_title(f"{label}: mean and 95 % band over seeds", fontsize="medium")
        panel.set_xlabel("epoch")
        panel.set_ylabel(label)
        panel.grid(True, alpha=0.3)
        panel.legend(fontsize="small")
    _caption(figure, caption)
    return figure


def agreement_figure(
    weight_diffs: Mapping[str, Sequence[float]], caption: str | None = None, *, styles: Styles
) -> Figure:
    """Largest weight difference per epoch of each pair of designs ("A vs B": values).

    Symmetric-log axis: exact zeros (identical weights) stay on the plot, at 0.
    """
    figure, panels = _fixed_figure(7.5, 4.0, left=0.95)
    panel = panels[0, 0]
    curves = {pair: _finite(values) for pair, values in weight_diffs.items()}
    under = coinciding(curves, span=0.0)
    for pair, values in curves.items():
        second = pair.split()[-1]
        epochs = np.arange(1, len(values) + 1)
        panel.plot(
            epochs,
            values,
            label=stacked_label(pair, pair, under),
            color=styles[second][0],
            linestyle=styles[second][1],
            **stacked_style(pair, under, list(curves)),
        )
    panel.set_yscale("symlog", linthresh=1e-8)
    _plain_log_labels(panel)
    panel.axhline(1e-3, color="grey", linewidth=0.8, linestyle=":", label="float tolerance 1e-3")
    panel.set_xlabel("epoch")
    panel.set_ylabel("max |ΔW| over all weights")
    panel.set_title("weights of two designs trained with the same seed", fontsize="medium")
    panel.grid(True, alpha=0.3)
    panel.legend(fontsize="small")
    _caption(figure, caption)
    return figure


def plot_confusion_matrices(
    matrices: Mapping[str, torch.Tensor],
    class_names: Sequence[str],
    path: str | Path,
    *,
    caption: str | None = None,
) -> Path:
    """:func:`confusion_matrices_figure` written to ``path`` as PNG."""
    figure = confusion_matrices_figure(matrices, class_names, caption)
    return atomic_write_bytes(path, render_png(figure))
