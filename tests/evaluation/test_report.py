"""report.html: every section present, figures that decode, numbers equal to report.json."""

import base64
import io
import json
import math
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

from softclass.data import load_bundled, read_table
from softclass.data.prepare import prepare_table
from softclass.evaluation.report import RunContext, format_number, json_at
from softclass.evaluation.verdicts import verdict_sentences
from softclass.jobs.compare import compare
from softclass.jobs.train_predict import train_to_directory
from softclass.mlp.designs import get_design
from softclass.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SECTIONS = (
    "answer",
    "metrics",
    "data",
    "training",
    "agreement",
    "calibration",
    "seeds",
    "reproduce",
)
COMMAND = "softclass compare --epochs 5 --out run"


class Page(HTMLParser):
    """The parts of report.html the tests read: ids, images, tables, tagged numbers, text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[dict[str, str]] = []
        self.tagged: list[dict[str, str]] = []  # elements with data-json
        self.per_class: list[dict[str, str]] = []  # cells with data-metric
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.text: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._class: str | None = None
        self._table_of_class: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids.add(attributes["id"])
        if tag == "img":
            self.images.append(attributes)
        for name in ("href", "src"):
            if name in attributes and tag in ("link", "script", "img", "a", "iframe"):
                self.links.append(attributes[name])
        if tag == "table":
            self._table = attributes.get("id", "")
            self.tables[self._table] = []
        if tag == "tr" and self._table is not None:
            self._row = []
            self._class = attributes.get("data-class")
        if tag in ("td", "th") and self._row is not None:
            self._cell = []
        if "data-json" in attributes:
            self.tagged.append(attributes)
        if "data-metric" in attributes:
            self.per_class.append({**attributes, "class": self._class, "table": self._table})

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def iris():
    return prepare_table(load_bundled("iris"), seed=0)


@pytest.fixture(scope="module")
def one_seed_run(iris, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    torch.set_num_threads(1)
    context = RunContext(table="bundled iris", command=COMMAND)
    result = compare(iris, "ABCD", TrainConfig(epochs=5), out_dir=out, context=context)
    html = (out / "report.html").read_text()
    return result, Page(html), json.loads((out / "report.json").read_text()), out


def _decoded_images(page):
    images = []
    for image in page.images:
        prefix, _, data = image["src"].partition(",")
        assert prefix == "data:image/png;base64", image["src"][:40]
        picture = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        picture.verify()
        images.append(picture)
    return images


def test_every_section_and_table_is_present(one_seed_run):
    _, page, _, _ = one_seed_run
    for section in (*SECTIONS, *(f"design-{name}" for name in "ABCD")):
        assert section in page.ids, section
    for table in (
        "table-rows",
        "table-classes",
        "table-columns",
        "table-common-metrics",
        "table-own-loss",
        "table-agreement",
        "table-calibration",
        "table-settings",
    ):
        assert table in page.tables and len(page.tables[table]) > 1, table
    for name in "ABCD":
        for table in (
            "per-class",
            "confusion-{}-counts",
            "confusion-{}-normalised",
            "top-confusions",
        ):
            key = f"table-{table.format(name)}" if "{}" in table else f"table-{table}-{name}"
            assert key in page.tables, key
    figures = {"fig-loss_curves", "fig-calibration", "fig-agreement"}
    figures |= {f"fig-curves-{name}" for name in "ABCD"}
    assert figures <= page.ids
    assert "fig-seed_bands" not in page.ids  # one seed: no band


def test_figures_decode_as_png_and_nothing_is_fetched(one_seed_run):
    _, page, _, _ = one_seed_run
    images = _decoded_images(page)
    assert len(images) == 7
    assert all(image.format == "PNG" and image.size[0] >= 600 for image in images)
    assert all(image["alt"] for image in page.images)
    # Self-contained: every link is a data: URI or a fragment of the page itself.
    assert all(link.startswith(("data:", "#")) for link in page.links), page.links


def test_numbers_equal_report_json(one_seed_run):
    _, page, report, _ = one_seed_run
    assert len(page.tagged) >= 60
    paths = {element["data-json"] for element in page.tagged}
    for name in "ABCD":
        for metric in ("accuracy", "log_loss", "brier", "ece"):
            assert f"designs.{name}.mean_over_seeds.validation_{metric}" in paths
    for element in page.tagged:
        expected = json_at(report, element["data-json"])
        if isinstance(expected, list):  # a confusion matrix: compare the table's cells
            continue
        shown = element["data-value"]
        if isinstance(expected, str):
            assert shown == expected
        elif expected is None:
            assert shown == "null"
        else:
            assert float(shown) == expected, element["data-json"]


def test_confusion_tables_hold_the_counts_of_report_json(one_seed_run):
    _, page, report, _ = one_seed_run
    for name in "ABCD":
        rows = page.tables[f"table-confusion-{name}-counts"][1:]
        counts = [[int(cell) for cell in row[1:]] for row in rows]
        assert counts == report["designs"][name]["per_seed"][0]["confusion_matrix"]
        shares = page.tables[f"table-confusion-{name}-normalised"][1:]
        for row, count_row in zip(shares, counts, strict=True):
            expected = [count / sum(count_row) for count in count_row]
            assert [float(cell) for cell in row[1:]] == pytest.approx(expected, abs=0.005)


def test_per_class_scores_match_scikit_learn(one_seed_run, iris):
    result, page, report, _ = one_seed_run
    classes = report["classes"]
    for run in result.runs:
        matrix = np.array(report["designs"][run.design]["per_seed"][0]["confusion_matrix"])
        true = np.repeat(np.arange(3), matrix.sum(axis=1))
        predicted = np.concatenate([np.repeat(np.arange(3), row) for row in matrix])
        precision, recall, f1, support = precision_recall_fscore_support(
            true, predicted, labels=[0, 1, 2], zero_division=np.nan
        )
        probabilities = run.result.design.predict_proba(
            run.result.model(iris.validation_features)
        ).detach()
        cells = {
            (cell["class"], cell["data-metric"]): float(cell["data-value"])
            for cell in page.per_class
            if cell["table"] == f"table-per-class-{run.design}"
        }
        for index, name in enumerate(classes):
            positives = (iris.validation_targets == index).numpy()
            scores = probabilities[:, index].numpy()
            assert cells[(name, "precision")] == pytest.approx(precision[index], nan_ok=True)
            assert cells[(name, "recall")] == pytest.approx(recall[index])
            assert cells[(name, "f1")] == pytest.approx(f1[index], nan_ok=True)
            assert cells[(name, "support")] == support[index]
            assert cells[(name, "roc_auc")] == pytest.approx(roc_auc_score(positives, scores))
            assert cells[(name, "average_precision")] == pytest.approx(
                average_precision_score(positives, scores)
            )


def test_the_page_says_where_numbers_come_from_and_how_to_reproduce(one_seed_run):
    _, page, _, out = one_seed_run
    text = " ".join(" ".join(page.text).split())
    assert "bundled iris" in text and "species" in text
    assert "on the 30 validation rows (never used for training)" in text
    roles = json.loads((out / "report.json").read_text())["row_roles"]
    assert page.tables["table-rows"][1:] == [
        ["train", "120", roles["train"]],
        ["validation", "30", roles["validation"]],
    ]  # no early stopping: no stopping rows
    assert COMMAND in text
    assert [row[0] for row in page.tables["table-columns"][1:]] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
        "species",
    ]
    assert "are the same computation" in text and "minimises another loss" in text
    assert "One seed (0): no interval or paired test" in text
    for name in ("loss_curves.png", "confusion_matrices.png", "calibration.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seed_statistics_section_with_several_seeds(iris, tmp_path):
    result = compare(iris, "AC", TrainConfig(epochs=4), seeds=3, out_dir=tmp_path)
    page = Page((tmp_path / "report.html").read_text())
    report = json.loads((tmp_path / "report.json").read_text())
    assert "fig-seed_bands" in page.ids
    _decoded_images(page)
    for metric in report["seed_statistics"]["summary"]:
        assert f"table-seeds-{metric}" in page.tables
        assert f"table-pairs-{metric}" in page.tables
    pair = page.tables["table-pairs-validation_accuracy"][1]
    assert (
        pair[0] == "A vs C"
        and pair[-1] == report["seed_statistics"]["pairs"]["validation_accuracy"][0]["verdict"]
    )
    for element in page.tagged:
        expected = json_at(report, element["data-json"])
        if isinstance(expected, (int, float)) and not isinstance(expected, bool):
            assert float(element["data-value"]) == expected
    text = " ".join(" ".join(page.text).split())
    assert "each number is the mean over 3 seeds (0, 1, 2)" in text
    # A design's own loss: its interval per design, never a pair across designs.
    assert "table-seeds-own-loss" in page.tables
    assert "table-pairs-validation_loss" not in page.tables
    assert [row[1] for row in page.tables["table-seeds-own-loss"][1:]] == ["cross_entropy", "mse"]
    assert len(result.seeds) == 3


def test_early_stopping_rows_are_named_apart_from_the_reported_rows(iris, tmp_path):
    compare(iris, "A", TrainConfig(epochs=3, patience=1), out_dir=tmp_path)
    page = Page((tmp_path / "report.html").read_text())
    report = json.loads((tmp_path / "report.json").read_text())
    rows = page.tables["table-rows"][1:]
    assert [row[0] for row in rows] == ["train", "stopping", "validation"]
    assert int(rows[1][1]) == report["rows"]["stopping"] > 0
    assert rows[1][2] == report["row_roles"]["stopping"]
    text = " ".join(" ".join(page.text).split())
    assert "on the training rows (solid) and on the stopping rows (dashed)" in text
    assert "on the 30 validation rows (never used for training)" in text


def _many_classes(n_classes: int, rows_per_class: int) -> pl.DataFrame:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(n_classes).repeat_interleave(rows_per_class)
    centres = torch.randn(n_classes, 4, generator=generator) * 2
    features = centres[labels] + torch.randn(len(labels), 4, generator=generator)
    columns = {f"x{index}": features[:, index].numpy() for index in range(4)}
    return pl.DataFrame({**columns, "label": [f"class {value:02d}" for value in labels]})


def test_fifty_classes_get_a_matrix_and_a_top_confusions_table(tmp_path):
    data = prepare_table(_many_classes(50, 6), validation_fraction=0.5, seed=0)
    compare(data, "A", TrainConfig(epochs=3), out_dir=tmp_path, hidden=(16,))
    page = Page((tmp_path / "report.html").read_text())
    counts = page.tables["table-confusion-A-counts"]
    assert len(counts) == 51 and len(counts[0]) == 51
    confusions = page.tables["table-top-confusions-A"]
    assert 2 <= len(confusions) <= 16
    per_class = page.tables["table-per-class-A"]
    assert len(per_class) == 52  # header, 50 classes, macro average
    _decoded_images(page)


def test_more_than_fifty_classes_keep_only_the_top_confusions(tmp_path):
    data = prepare_table(_many_classes(60, 4), validation_fraction=0.5, seed=0)
    compare(data, "A", TrainConfig(epochs=2), out_dir=tmp_path, hidden=(8,))
    page = Page((tmp_path / "report.html").read_text())
    assert "table-confusion-A-counts" not in page.tables
    assert "table-top-confusions-A" in page.tables
    assert "60 classes: more than 50 can be shown legibly" in " ".join(page.text)


def test_train_writes_a_one_design_report(iris, tmp_path):
    context = RunContext(table="iris.csv", command="softclass train iris.csv --out model")
    train_to_directory(iris, get_design("B"), tmp_path, TrainConfig(epochs=3), context=context)
    page = Page((tmp_path / "report.html").read_text())
    assert {"data", "metrics", "design-B", "reproduce"} <= page.ids
    assert "design-A" not in page.ids
    text = " ".join(" ".join(page.text).split())
    assert "softclass train iris.csv --out model" in text
    assert "Only B trained: agreement needs A with B, C or D" in text
    assert "Only B trained: a verdict needs A with B, C or D" in text
    # One design trained alone: its own seconds, and no one-time cost it did not measure.
    assert page.tables["table-common-metrics"][0][-1] == "seconds"
    assert "one-time-seconds" not in page.ids
    _decoded_images(page)


def test_train_without_held_out_rows_says_its_numbers_are_on_training_rows(tmp_path):
    whole = prepare_table(load_bundled("iris"), validation_fraction=0)
    train_to_directory(whole, get_design("A"), tmp_path, TrainConfig(epochs=2))
    text = " ".join(" ".join(Page((tmp_path / "report.html").read_text()).text).split())
    assert "no rows were held out (--validation 0)" in text


def test_column_summary_from_the_data_layer_is_shown_as_given(iris, tmp_path):
    columns = [
        {"column": "sepal_length", "type": "float", "missing": 0, "action": "scaled"},
        {"column": "species", "type": "text", "missing": 0, "action": "target"},
    ]
    context = RunContext(table="iris.csv", columns=columns)
    compare(iris, "A", TrainConfig(epochs=1), out_dir=tmp_path, context=context)
    table = Page((tmp_path / "report.html").read_text()).tables["table-columns"]
    assert table == [
        ["column", "type", "missing", "action"],
        ["sepal_length", "float", "0", "scaled"],
        ["species", "text", "0", "target"],
    ]


def test_format_and_lookup_helpers():
    assert format_number(None) == "—" and format_number(math.nan) == "—"
    assert format_number(0.96666, ".3f") == "0.967"
    assert json_at({"a": [{"b": 2}]}, "a.0.b") == 2
    with pytest.raises(KeyError, match="'missing'"):
        json_at({"a": 1}, "missing")


def test_class_names_are_escaped(tmp_path):
    table = load_bundled("iris").with_columns(
        pl.col("species").str.replace("setosa", "<script>alert(1)</script>")
    )
    compare(prepare_table(table), "A", TrainConfig(epochs=1), out_dir=tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_worst_predicted_rows_show_the_rows_of_the_file_as_read(tmp_path):
    """Every column, each cell's text as in the file (no inverse-transform noise such as
    -2.9e-09 for a 0), and the row number predict and the error messages use (header = row 1)."""
    lines = ["id,Ba,RI,kind,label"]
    for row in range(60):
        label = "yes" if row % 3 else "no"
        barium = "0" if row % 2 else "0.0600"
        lines.append(f"r{row},{barium},{1.5 + row / 997:.5f},k{row % 4},{label}")
    path = tmp_path / "glass.csv"
    path.write_text("\n".join(lines) + "\n")
    data = prepare_table(read_table(path, raw=True), "label", seed=0)
    result = compare(data, "A", TrainConfig(epochs=2), out_dir=tmp_path / "run")
    page = Page((tmp_path / "run" / "report.html").read_text())
    table = page.tables["table-worst-A"]
    assert table[0] == [
        "row",
        "true class",
        "predicted",
        "p(true)",
        "p(predicted)",
        "id",
        "Ba",
        "RI",
        "kind",
        "label",
    ]
    file_rows = {number: line.split(",") for number, line in enumerate(lines, start=1)}
    probabilities = result.runs[0].result.design.predict_proba(
        result.runs[0].result.model(data.validation_features)
    )
    on_target = probabilities.gather(1, data.validation_targets.unsqueeze(1))[:, 0]
    worst = on_target.argsort(stable=True)[:10].tolist()
    assert [int(row[0]) for row in table[1:]] == [
        int(data.validation_rows[position]) + 2 for position in worst
    ]
    for row in table[1:]:
        assert row[5:] == file_rows[int(row[0])]  # the file's text, every column
        assert row[1] == row[-1]  # the true class is the row's label
    text = " ".join(" ".join(page.text).split())
    assert "(header = row 1)" in text


def test_the_answer_opens_the_page_with_one_sentence_per_pair(one_seed_run):
    _, page, report, _ = one_seed_run
    text = " ".join(" ".join(page.text).split())
    answer = text.index("The answer")
    assert answer < text.index("Common metrics on held-out rows") < text.index("Column typing")
    verdicts = verdict_sentences(report)
    assert [verdict.pair for verdict in verdicts] == ["A-B", "A-D", "A-C"]
    for verdict in verdicts:
        assert verdict.sentence in text
        assert f"verdict-{verdict.pair}" in page.ids
    assert "are the same computation" in verdicts[0].sentence
    assert "are different computations: C minimises another loss" in verdicts[2].sentence


def test_epochs_show_best_and_trained_with_early_stopping(iris, tmp_path):
    result = compare(iris, "AB", TrainConfig(epochs=30, patience=2), out_dir=tmp_path)
    page = Page((tmp_path / "report.html").read_text())
    header, *rows = page.tables["table-common-metrics"]
    assert header[-2] == "epochs (best/trained)"
    for row, name in zip(rows, "AB", strict=True):
        history = result.runs_of(name)[0].history
        assert row[-2] == f"{history.best_epoch}/{history.epochs}"


def test_seconds_say_whether_they_are_a_share_and_one_time_costs_apart(one_seed_run):
    result, page, report, _ = one_seed_run
    assert report["timing"]["trained_together"] is result.trained_together is True
    assert page.tables["table-common-metrics"][0][-1] == "seconds (share)"
    assert "one-time-seconds" in page.ids
    text = " ".join(" ".join(page.text).split())
    assert "each design's seconds are an equal share of that run's training time" in text
    assert "loading the compiled code took" in text
