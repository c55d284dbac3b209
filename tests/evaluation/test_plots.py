"""The figures at 2, 10 and 50 classes: legible labels, captions, bin counts, clamped bands."""

import io
import itertools
import warnings

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from softclass.evaluation import metrics, plots
from softclass.mlp.designs import DESIGNS

CAPTION = "people.csv · target 'city' · the 30 validation rows"
STYLES = {name: (design.color, design.linestyle) for name, design in DESIGNS.items()}


def _predictions(n_classes: int, rows_per_class: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(n_classes).repeat_interleave(rows_per_class)
    logits = torch.randn(len(targets), n_classes, generator=generator)
    logits[torch.arange(len(targets)), targets] += 2.0
    return torch.softmax(logits, dim=1), targets


def _names(n_classes: int) -> list[str]:
    return [f"species number {index}" for index in range(n_classes)]


def _drawn(figure):
    """Draw the figure (as render_png does) and return its renderer."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def _overlaps(boxes) -> int:
    """How many pairs of neighbouring boxes overlap (boxes in drawing order)."""
    return sum(
        1
        for first, second in itertools.pairwise(boxes)
        if first.overlaps(second)
        and first.intersection(first, second).width > 0.5
        and first.intersection(first, second).height > 0.5
    )


def _assert_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.verify()
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize("n_classes", [2, 10, 50])
@pytest.mark.parametrize("normalised", [False, True])
def test_confusion_matrix_names_every_class_legibly(n_classes, normalised):
    probs, targets = _predictions(n_classes)
    matrix = metrics.confusion_matrix(targets, probs.argmax(1), n_classes)
    figure = plots.confusion_figure(
        matrix, _names(n_classes), normalised=normalised, title="design A", caption=CAPTION
    )
    renderer = _drawn(figure)
    panel = figure.axes[0]
    for labels in (panel.get_xticklabels(), panel.get_yticklabels()):
        assert [label.get_text() for label in labels] == [
            plots.short_label(name) for name in _names(n_classes)
        ]
        assert min(label.get_fontsize() for label in labels) >= 7
        boxes = [label.get_window_extent(renderer) for label in labels]
        assert _overlaps(boxes) == 0
    # At 50 classes a cell is at least 18 px (at the report's DPI): labels fit their rows.
    cell_pixels = panel.get_window_extent(renderer).height / n_classes * plots.DPI / figure.dpi
    assert cell_pixels >= 18
    assert figure._suptitle.get_text() == CAPTION
    image = _assert_png(plots.render_png(figure))
    assert image.size[0] <= 1600  # fits a screen at 50 classes


def test_confusion_counts_and_shares_are_written_in_small_matrices():
    matrix = torch.tensor([[3, 1], [0, 4]])
    counts = plots.confusion_figure(matrix, ["no", "yes"])
    shares = plots.confusion_figure(matrix, ["no", "yes"], normalised=True)
    assert [text.get_text() for text in counts.axes[0].texts] == ["3", "1", "0", "4"]
    assert [text.get_text() for text in shares.axes[0].texts] == ["0.75", "0.25", "0.00", "1.00"]


def test_beyond_fifty_classes_the_matrix_shows_the_pattern_only():
    probs, targets = _predictions(60, rows_per_class=2)
    matrix = metrics.confusion_matrix(targets, probs.argmax(1), 60)
    figure = plots.confusion_figure(matrix, _names(60))
    assert figure.axes[0].get_xticklabels() == [] and not figure.axes[0].texts
    # The size stops growing at 50 classes: the matrix stays on a screen.
    fifty = plots.confusion_figure(matrix[:50, :50], _names(50)).get_size_inches()
    assert (figure.get_size_inches() <= fifty).all()
    assert figure.get_size_inches()[0] > 0.8 * fifty[0]


@pytest.mark.parametrize("n_classes", [2, 10, 50])
def test_roc_and_pr_curves_one_vs_rest(n_classes):
    probs, targets = _predictions(n_classes)
    curves = metrics.one_vs_rest_curves(probs, targets)
    figure = plots.roc_pr_figure(curves, _names(n_classes), title="design A: ", caption=CAPTION)
    roc_panel, pr_panel = figure.axes
    legend = [text.get_text() for text in roc_panel.get_legend().get_texts()]
    if n_classes <= plots.CURVE_LEGEND_MAX_CLASSES:
        assert len(legend) == n_classes + 1  # every class and chance
        assert legend[0] == f"species number 0 (AUC {float(curves.roc_auc[0]):.3f})"
    else:
        assert len(legend) == 2 and legend[0].startswith("macro average of 50 classes (AUC ")
    assert len(roc_panel.get_lines()) == n_classes + (1 if n_classes <= 10 else 2)
    assert roc_panel.get_xlabel().startswith("false positive rate")
    assert pr_panel.get_xlabel() == "recall" and pr_panel.get_ylabel() == "precision"
    assert figure._suptitle.get_text() == CAPTION
    _assert_png(plots.render_png(figure))


def test_calibration_shows_adaptive_bins_and_their_counts():
    probs, targets = _predictions(3, rows_per_class=10)  # 30 rows → 5 bins
    calibration = metrics.calibration(probs, targets)
    assert len(calibration.counts) == metrics.calibration_bins(30) == 5
    figure = plots.calibration_figure({"A": calibration, "C": calibration}, CAPTION, styles=STYLES)
    reliability, histogram = figure.axes
    heights = [patch.get_height() for patch in histogram.patches]
    assert heights == calibration.counts.tolist() * 2  # one bar per bin per design
    filled = calibration.counts[calibration.counts > 0].tolist()
    assert [text.get_text() for text in reliability.texts] == [f"n={count}" for count in filled]
    assert histogram.get_ylabel() == "rows per bin"
    assert "5 bins" in reliability.get_legend().get_texts()[1].get_text()
    assert figure._suptitle.get_text() == CAPTION
    _assert_png(plots.render_png(figure))


@pytest.mark.parametrize(("n_rows", "bins"), [(1, 3), (30, 5), (150, 12), (10_000, 20)])
def test_calibration_bins_grow_with_the_rows(n_rows, bins):
    assert metrics.calibration_bins(n_rows) == bins


def test_seed_bands_are_clamped_and_labelled():
    epochs = 6
    bands = {
        "val_loss": {
            "A": {
                "mean": np.linspace(1, 0.1, epochs),
                "low": np.linspace(0.9, 0.05, epochs),
                "high": np.linspace(1.1, 0.2, epochs),
            }
        },
        "val_accuracy": {
            "A": {
                "mean": np.full(epochs, 0.97),
                "low": np.full(epochs, 0.9),
                "high": np.full(epochs, 1.08),
            }
        },  # a t interval past 1
    }
    figure = plots.seed_bands_figure(bands, CAPTION, styles=STYLES)
    loss_panel, accuracy_panel = figure.axes
    assert accuracy_panel.get_ylim() == (0, 1.02)
    band = accuracy_panel.collections[0].get_paths()[0].vertices[:, 1]
    assert band.max() <= 1.0 and band.min() >= 0.0
    assert accuracy_panel.get_ylabel() == "validation accuracy"
    assert loss_panel.get_ylabel() == "validation loss (each design's own)"
    assert figure._suptitle.get_text() == CAPTION


def test_each_design_has_its_own_loss_panel():
    class History:
        def __init__(self, values):
            self.values = values

        def column(self, name):
            return self.values if name == "train_loss" else [v * 1.1 for v in self.values]

    figure = plots.loss_curves_figure(
        {"A": History([1.0, 0.5, 0.2]), "C": History([0.5, 0.3, 0.1])},
        {"A": "cross_entropy", "C": "mse"},
        CAPTION,
        styles=STYLES,
    )
    assert [panel.get_ylabel() for panel in figure.axes] == ["cross_entropy loss", "mse loss"]
    assert not figure.axes[0].get_shared_y_axes().joined(figure.axes[0], figure.axes[1])
    assert figure._suptitle.get_text() == CAPTION


@pytest.mark.parametrize("n_classes", [3, 12])
def test_the_designs_confusion_matrices_share_one_colour_scale(n_classes):
    """The designs are judged on the same rows: a colour means the same count in every panel,
    and one bar per row of panels says which (not one per matrix)."""
    generator = torch.Generator().manual_seed(1)
    matrices = {
        name: torch.randint(0, top, (n_classes, n_classes), generator=generator)
        for name, top in zip("ABCD", (5, 40, 9, 17), strict=True)
    }
    figure = plots.confusion_matrices_figure(matrices, _names(n_classes), CAPTION)
    images = [image for panel in figure.axes for image in panel.get_images()]
    assert len(images) == 4
    highest = max(int(matrix.max()) for matrix in matrices.values())
    assert {image.get_clim() for image in images} == {(0.0, float(highest))}
    rows = 1 if n_classes <= 10 else 4
    assert len(figure.axes) == 4
    assert sum(len(panel.child_axes) for panel in figure.axes) == rows  # the colour bars
    _assert_png(plots.render_png(figure))


def test_plot_files_are_written_atomically(tmp_path):
    path = plots.plot_confusion_matrices(
        {"A": torch.tensor([[3, 1], [0, 4]]), "B": torch.tensor([[2, 2], [1, 3]])},
        ["no", "yes"],
        tmp_path / "confusion.png",
        caption=CAPTION,
    )
    assert _assert_png(path.read_bytes()).size[0] > 500
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]


def test_control_characters_in_class_names_are_drawn_as_replacement_marks():
    assert plots.short_label("a\x1b[31mb\x07") == "a\ufffd[31mb\ufffd"
    assert plots.short_label("x" * 30) == "x" * 17 + "…"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns of a glyph it cannot draw
        plots.render_png(plots.confusion_figure(torch.eye(2, dtype=torch.long), ["\x1b", "\x07"]))
