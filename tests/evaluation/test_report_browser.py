"""report.html opened in a real browser (headless Chromium): every figure and table present and
drawn, and not a single console error or warning.

Needs Debian's ``chromium`` package (``.ci/run`` installs it); skipped, saying so, where absent.
"""

import json

import polars as pl
import pytest
import torch
from browser import find_chromium, render
from PIL import Image

from softclass.data import load_bundled
from softclass.data.prepare import prepare_table
from softclass.evaluation.report import RunContext
from softclass.evaluation.verdicts import verdict_sentences
from softclass.jobs.compare import compare
from softclass.training.config import TrainConfig

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(
        find_chromium() is None,
        reason="no Chromium on PATH (apt-get install -y chromium; .ci/run installs it)",
    ),
]

# Runs in the page after load: what a reader would see.
INSPECT = """JSON.stringify({
  images: [...document.images].map(image => ({
    id: image.closest("figure").id, complete: image.complete, width: image.naturalWidth,
    height: image.naturalHeight, shown: image.getBoundingClientRect().width
  })),
  tables: [...document.querySelectorAll("table")].map(table => ({
    id: table.id, rows: table.rows.length
  })),
  sections: [...document.querySelectorAll("main > section")].map(section => section.id),
  title: document.title,
  overflow: document.documentElement.scrollWidth > window.innerWidth
})"""


def test_report_renders_in_chromium_without_console_errors(tmp_path):
    data = prepare_table(load_bundled("iris"), seed=0)
    compare(
        data,
        "ABCD",
        TrainConfig(epochs=5),
        seeds=2,
        out_dir=tmp_path,
        context=RunContext("bundled iris", "softclass compare --epochs 5 --seeds 2"),
    )
    page = render(find_chromium(), tmp_path / "report.html", INSPECT, screenshot_width=1280)
    assert page.problems == []
    seen = json.loads(page.value)
    assert seen["title"] == "softclass compare: bundled iris → species"
    assert seen["sections"] == [
        "answer",
        "metrics",
        "data",
        "training",
        "agreement",
        "calibration",
        "design-A",
        "design-B",
        "design-C",
        "design-D",
        "seeds",
        "reproduce",
    ]
    figures = {image["id"]: image for image in seen["images"]}
    expected = {"fig-loss_curves", "fig-agreement", "fig-calibration", "fig-seed_bands"}
    expected |= {f"fig-curves-{name}" for name in "ABCD"}
    assert set(figures) == expected
    for image in figures.values():
        assert image["complete"] and image["width"] >= 600 and image["height"] >= 300, image
    # The open design shows its figure at a readable size (folded ones have no box yet).
    assert figures["fig-curves-A"]["shown"] >= 600
    tables = {table["id"]: table["rows"] for table in seen["tables"]}
    for name in "ABCD":
        assert tables[f"table-per-class-{name}"] == 5  # header, 3 classes, macro average
        assert tables[f"table-confusion-{name}-counts"] == 4
        assert tables[f"table-confusion-{name}-normalised"] == 4
    for table in (
        "table-common-metrics",
        "table-agreement",
        "table-seeds-validation_accuracy",
        "table-seeds-own-loss",
        "table-pairs-validation_log_loss",
    ):
        assert tables[table] >= 3
    assert not seen["overflow"]  # nothing wider than the window
    screenshot = tmp_path / "screenshot.png"
    screenshot.write_bytes(page.screenshot)
    with Image.open(screenshot) as image:
        assert image.size[0] == 1280 and image.size[1] > 3000


# What the first screen shows: each element's box, and whether it ends above the fold.
FIRST_SCREEN = """JSON.stringify([
  ...document.querySelectorAll("#answer p.answer"), document.getElementById("table-common-metrics")
].map(element => {
  const box = element.getBoundingClientRect();
  return {id: element.id, text: element.innerText, top: box.top, bottom: box.bottom,
          shown: box.bottom <= window.innerHeight && box.width > 0};
}))"""


def test_first_screen_shows_the_verdicts_and_the_common_metrics(tmp_path):
    """At 1280 x 800 a reader sees, without scrolling, one verdict sentence per pair and the
    common-metric table; the screenshot is kept for a person to look at."""
    data = prepare_table(load_bundled("iris"), seed=0)
    compare(data, "ABCD", TrainConfig(epochs=5), out_dir=tmp_path, context=RunContext("iris"))
    report = json.loads((tmp_path / "report.json").read_text())
    page = render(
        find_chromium(),
        tmp_path / "report.html",
        FIRST_SCREEN,
        screenshot_width=1280,
        height=800,
        first_screen=True,
    )
    assert page.problems == []
    seen = json.loads(page.value)
    expected = [verdict.sentence for verdict in verdict_sentences(report)]
    assert len(expected) == 3
    assert [element["text"] for element in seen[:-1]] == expected
    assert [element["id"] for element in seen] == [
        "verdict-A-B",
        "verdict-A-D",
        "verdict-A-C",
        "table-common-metrics",
    ]
    for element in seen:
        assert element["shown"], element  # above the fold
    (tmp_path / "first_screen.png").write_bytes(page.screenshot)
    with Image.open(tmp_path / "first_screen.png") as image:
        assert image.size == (1280, 800)


MATRIX_GEOMETRY = """JSON.stringify([...document.querySelectorAll("table.confusion")].map(table => {
  const cell = table.tBodies[0].rows[0].cells[1];
  const wrapper = table.parentElement;
  return {
    id: table.id, rows: table.rows.length, visible: table.getBoundingClientRect().width > 0,
    fits: wrapper.scrollWidth <= wrapper.clientWidth + 1,
    cell: cell.getBoundingClientRect().width,
    font: parseFloat(getComputedStyle(cell).fontSize),
  };
}))"""


def test_fifty_class_matrices_fit_the_page_legibly(tmp_path):
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(50).repeat_interleave(6)
    features = torch.randn(50, 4, generator=generator)[labels] * 2 + torch.randn(300, 4)
    table = pl.DataFrame(
        {
            **{f"x{index}": features[:, index].numpy() for index in range(4)},
            "plant": [f"cultivar {value:02d}" for value in labels.tolist()],
        }
    )
    data = prepare_table(table, validation_fraction=0.5, seed=0)
    compare(data, "A", TrainConfig(epochs=2), hidden=(16,), out_dir=tmp_path)
    page = render(find_chromium(), tmp_path / "report.html", MATRIX_GEOMETRY)
    assert page.problems == []
    matrices = json.loads(page.value)
    assert [matrix["id"] for matrix in matrices] == [
        "table-confusion-A-counts",
        "table-confusion-A-normalised",
    ]
    for matrix in matrices:
        assert matrix["rows"] == 51 and matrix["visible"]
        assert matrix["fits"], matrix  # all 50 columns on a 1280-px window, no scrolling
        assert matrix["cell"] >= 15 and matrix["font"] >= 10, matrix
