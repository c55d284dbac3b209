"""The metric table: a metric added as one entry shows up everywhere the table is read."""

import pytest

from softclass.cli.render import _design_table
from softclass.data import load_bundled
from softclass.data.prepare import prepare_table
from softclass.errors import ConfigError
from softclass.evaluation import metric_table
from softclass.evaluation.metric_table import Metric, band_facts
from softclass.evaluation.stats import common_metrics
from softclass.evaluation.verdicts import verdict_sentences
from softclass.jobs import comparison
from softclass.jobs.compare import compare
from softclass.jobs.report import write_report
from softclass.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

ERROR = Metric(
    "error", "error", "error rate", "err", ".3f", ".3f", "share of rows misclassified",
    paired=4, quoted=True, unit_interval=True,
)  # fmt: skip


def test_a_metric_added_to_the_table_appears_in_every_place_derived_from_it(monkeypatch, tmp_path):
    data = prepare_table(load_bundled("iris"), seed=0)
    result = compare(data, "AC", TrainConfig(epochs=3), seeds=2)
    # What the table does not hold: the number itself, which measure() computes per run.
    for run in result.runs:
        run.metrics["validation_error"] = 1.0 - run.metrics["validation_accuracy"]
    monkeypatch.setattr(comparison, "METRIC_NAMES", (*comparison.METRIC_NAMES, "validation_error"))
    monkeypatch.setattr(metric_table, "METRICS", (*metric_table.METRICS, ERROR))

    assert list(common_metrics())[-1] == "validation_error"
    statistics = result.seed_statistics()
    assert [pair["metric"] for pair in statistics["pairs"]["validation_error"]] == [
        "validation error rate"
    ]
    summary = result.to_dict()
    expected = 1.0 - summary["designs"]["C"]["mean_over_seeds"]["validation_accuracy"]
    assert summary["designs"]["C"]["mean_over_seeds"]["validation_error"] == pytest.approx(expected)
    different = next(v for v in verdict_sentences(summary) if v.pair == "A-C")
    assert f"error {expected:.3f} (A: " in different.sentence
    headers = [column.header for column in _design_table(result, {"A": "3", "C": "3"}).columns]
    assert headers[1:6] == ["acc", "log loss", "Brier", "ECE", "err"]
    assert band_facts("val_error") == ("validation error rate", True)

    page = write_report(result, data, tmp_path, summary=summary).read_text()
    assert 'title="share of rows misclassified">validation error</th>' in page
    assert 'data-json="designs.C.mean_over_seeds.validation_error"' in page
    assert 'id="table-seeds-validation_error"' in page
    assert "validation error rate: paired differences" in page


def test_an_entry_missing_a_fact_is_refused_naming_it():
    with pytest.raises(ConfigError, match="metric 'error' of the metric table: explanation must"):
        Metric("error", "error", "error rate", "err", ".3f", ".3f", " ")
    with pytest.raises(ConfigError, match="metric '' of the metric table: key must be a non-empty"):
        Metric("", "error", "error rate", "err", ".3f", ".3f", "share of rows misclassified")
    with pytest.raises(TypeError, match="explanation"):
        Metric("error", "error", "error rate", "err", ".3f", ".3f")  # type: ignore[call-arg]


def test_the_table_gives_the_shown_labels_and_formats():
    assert [m.key for m in metric_table.METRICS] == ["accuracy", "log_loss", "brier", "ece"]
    assert [m.key for m in metric_table.paired_metrics()] == ["log_loss", "accuracy", "brier"]
    assert [m.key for m in metric_table.METRICS if m.quoted] == ["accuracy", "log_loss"]
    assert band_facts("val_loss") == ("validation loss (each design's own)", False)
    assert band_facts("val_accuracy") == ("validation accuracy", True)
    assert band_facts("val_log_loss") == ("validation log loss", False)
