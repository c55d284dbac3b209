"""report.html opened in a real browser (headless Chromium): every figure and table present and
drawn, and not a single console error or warning.

Needs Debian's ``chromium`` package (``.ci/run`` installs it); skipped, saying so, where absent.
"""

import json

import pytest
from browser import find_chromium, render
from PIL import Image

from softclass.data import load_bundled
from softclass.evaluation.report import RunContext
from softclass.jobs.compare import compare, prepare_table
from softclass.training.trainer import TrainConfig

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
        "data",
        "metrics",
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
    for table in ("table-common-metrics", "table-agreement", "table-seeds-validation_loss"):
        assert tables[table] >= 3
    assert not seen["overflow"]  # nothing wider than the window
    screenshot = tmp_path / "screenshot.png"
    screenshot.write_bytes(page.screenshot)
    with Image.open(screenshot) as image:
        assert image.size[0] == 1280 and image.size[1] > 3000
