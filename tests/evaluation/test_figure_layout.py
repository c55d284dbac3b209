"""Pinned titles: the same pixels as matplotlib's automatic placement, only where that is safe."""

from __future__ import annotations

import io

import pytest

matplotlib = pytest.importorskip("matplotlib")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from softclass.evaluation.figure_layout import pin_titles  # noqa: E402


def _figure(values: list[float], log: bool = False) -> Figure:
    figure = Figure(figsize=(3.0, 2.5))
    panel = figure.subplots()
    panel.plot(range(len(values)), values)
    if log:
        panel.set_yscale("log")
    panel.set_title("a title", fontsize="medium")
    return figure


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=60)
    return buffer.getvalue()


@pytest.mark.parametrize(("values", "log"), [([0.1, 0.9, 0.4], False), ([1e-3, 1.0, 30.0], True)])
def test_pinned_titles_draw_the_same_pixels(values, log):
    pinned = _figure(values, log)
    pin_titles(pinned)
    assert pinned.axes[0]._autotitlepos is False  # the extra layout pass is skipped
    assert pinned.axes[0].title.get_fontsize() == _figure(values, log).axes[0].title.get_fontsize()
    assert _png(pinned) == _png(_figure(values, log))


def test_a_panel_that_may_show_an_offset_text_keeps_the_automatic_placement():
    figure = _figure([1e7, 3e7, 2e7])  # a linear axis written "1e7" above the panel
    pin_titles(figure)
    assert figure.axes[0]._autotitlepos is not False
