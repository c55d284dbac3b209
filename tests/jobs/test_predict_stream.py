"""predict streamed (issue 25): one output row per input row at any chunk size, the same
predictions as the whole table, Parquet output, progress on a stderr that is not a terminal."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softclass.cli.commands import predict as predict_command
from softclass.data import Recipe
from softclass.data.chunks import TableChunks
from softclass.jobs.predict import PredictionStream, predict_table
from softclass.jobs.store import SavedModel, save_model
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLP, MLPConfig
from softclass.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _training(n_rows: int = 60) -> pl.DataFrame:
    rng = np.random.default_rng(2)
    return pl.DataFrame(
        {
            "size": [f"{value:.2f}" for value in rng.normal(size=n_rows)],
            "color": [["red", "blue", "green"][index % 3] for index in range(n_rows)],
            "kind": [["a", "b", "c"][index % 3] for index in range(n_rows)],
        }
    )


def _saved(missing: str = "error") -> SavedModel:
    recipe = Recipe.fit(_training(), "kind", missing=missing)
    torch.manual_seed(0)
    config = MLPConfig(recipe.n_features, recipe.n_classes)
    return SavedModel(
        MLP(config).eval(), get_design("A"), config, recipe, TrainConfig(), {}, "test"
    )


def _new_rows(n_rows: int = 23) -> pl.DataFrame:
    """Rows to predict, some of which cannot be: a word, a missing value, an unknown colour."""
    rng = np.random.default_rng(5)
    sizes = [f"{value:.3f}" for value in rng.normal(size=n_rows)]
    colors = [["red", "blue", "green", "violet"][index % 4] for index in range(n_rows)]
    sizes[4], sizes[11], colors[17] = "lots", "", ""
    return pl.DataFrame(
        {"size": sizes, "color": colors, "kind": [["a", "b"][i % 2] for i in range(n_rows)]}
    )


def _streamed(saved, path, chunk_rows, accuracy=False):
    stream = PredictionStream(
        saved, TableChunks(path, chunk_rows=chunk_rows), accuracy=accuracy, source="new.csv"
    )
    return stream, pl.concat(list(stream))


@pytest.mark.parametrize("missing", ["error", "drop", "impute"])
@pytest.mark.parametrize("chunk_rows", [1, 7, 23, 100])
def test_streamed_predictions_are_the_whole_tables_row_for_row(tmp_path, missing, chunk_rows):
    saved = _saved(missing)
    table = _new_rows()
    path = tmp_path / "new.csv"
    table.write_csv(path)
    whole = predict_table(saved, table, on_error="skip", accuracy=True, source="new.csv")
    stream, streamed = _streamed(saved, path, chunk_rows, accuracy=True)
    assert streamed.height == table.height == stream.rows
    assert streamed["row"].to_list() == list(range(2, table.height + 2))
    assert stream.streamed == (chunk_rows < table.height)
    columns = whole.table.columns
    assert streamed.select(columns).equals(whole.table)
    if stream.streamed or stream.n_skipped:
        assert streamed.columns == [*columns, "reason"] or streamed.columns == columns
    assert stream.warnings == whole.warnings
    assert stream.accuracy == pytest.approx(whole.accuracy)
    assert stream.n_skipped == len(whole.skipped)


def test_a_table_of_many_chunks_has_the_reason_column_even_when_every_row_is_predicted(
    tmp_path,
):
    saved = _saved("impute")
    path = tmp_path / "new.csv"
    _new_rows().with_columns(pl.lit("1.5").alias("size")).write_csv(path)
    _, one_chunk = _streamed(saved, path, 100)
    _, many = _streamed(saved, path, 5)
    assert "reason" not in one_chunk.columns
    assert many["reason"].null_count() == many.height
    assert many.drop("reason").equals(one_chunk)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cells=st.lists(
        st.tuples(st.sampled_from(["", "1", "-2.5", "abc", "NA"]), st.sampled_from(["red", ""])),
        min_size=1,
        max_size=30,
    ),
    chunk_rows=st.integers(1, 40),
)
def test_the_output_has_one_row_per_input_row_at_any_chunk_size(
    tmp_path_factory, cells, chunk_rows
):
    path = tmp_path_factory.mktemp("rows") / "new.csv"
    pl.DataFrame(
        {"size": [size for size, _ in cells], "color": [color for _, color in cells]}
    ).write_csv(path)
    stream, streamed = _streamed(_saved(), path, chunk_rows)
    assert streamed.height == len(cells) == stream.rows
    assert streamed["row"].to_list() == list(range(2, len(cells) + 2))
    has_prediction = streamed["predicted"].is_not_null()
    if "reason" in streamed.columns:
        assert (streamed["reason"].is_null() == has_prediction).all()
    assert stream.n_skipped == int((~has_prediction).sum())


def test_accuracy_without_the_target_column_is_an_error(tmp_path):
    path = tmp_path / "new.csv"
    _new_rows().drop("kind").write_csv(path)
    with pytest.raises(Exception, match=r"--accuracy needs the target column 'kind'"):
        _streamed(_saved(), path, 5, accuracy=True)


@pytest.fixture
def model_dir(tmp_path):
    saved = _saved("impute")
    directory = tmp_path / "model"
    save_model(directory, saved.model, saved.design, saved.recipe, TrainConfig(), {})
    return directory


def test_parquet_output_round_trips_the_csv_output(run, tmp_path, model_dir):
    data = tmp_path / "new.csv"
    _new_rows(40).write_csv(data)
    code, csv_text, err = run("predict", model_dir, data, "--chunk-rows", "7", "--on-error", "skip")
    assert code == 0, err
    output = tmp_path / "out.parquet"
    code, out, err = run(
        "predict", model_dir, data, "--chunk-rows", "7", "--on-error", "skip", "--output", output
    )
    assert code == 0 and out == "", err
    parquet = pl.read_parquet(output)
    text = pl.read_csv(csv_text.encode(), schema=parquet.schema)
    assert parquet.height == 40
    assert parquet.drop("a", "b", "c").equals(text.drop("a", "b", "c"))
    for name in ("a", "b", "c"):
        assert (parquet[name] - text[name]).abs().max() < 1e-9


def test_the_output_format_follows_the_extension_unless_format_is_given(run, tmp_path, model_dir):
    data = tmp_path / "new.csv"
    _new_rows(23).write_csv(data)
    lines = tmp_path / "out.jsonl"
    assert run("predict", model_dir, data, "--on-error", "skip", "--output", lines)[0] == 0
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [record["row"] for record in records] == list(range(2, 25))
    forced = tmp_path / "out.parquet"
    code, _, err = run("predict", model_dir, data, "--format", "csv", "--output", forced)
    assert code == 2 and forced.read_text().startswith("row,")  # exit 2: a row has no prediction
    code, _, err = run("predict", model_dir, data, "--format", "parquet")
    assert code == 2 and "--format parquet needs --output FILE" in err


def test_progress_lines_go_to_a_stderr_that_is_not_a_terminal_unless_quiet(
    run, tmp_path, model_dir, monkeypatch
):
    data = tmp_path / "new.csv"
    _new_rows(30).write_csv(data)
    code, _, err = run("predict", model_dir, data, "--on-error", "skip")
    assert code == 0 and "rows done" not in err  # shorter than a progress interval: quiet
    monkeypatch.setattr(predict_command, "_PROGRESS_SECONDS", 0.0)
    code, _, err = run("predict", model_dir, data, "--chunk-rows", "7", "--on-error", "skip")
    assert code == 0
    assert "predict: 7 rows done, " in err and "predict: 28 rows done, " in err
    assert "predict: 30 rows done in" in err and "rows/s (streamed in chunks of 7 rows)" in err
    code, _, err = run("predict", model_dir, data, "--on-error", "skip")
    assert "rows/s (in one chunk)" in err
    code, _, err = run("predict", model_dir, data, "--on-error", "skip", "--quiet")
    assert code == 0 and "rows done" not in err


def test_a_progress_line_every_few_seconds_without_a_terminal(capsys):
    now = [0.0]
    progress = predict_command._Progress(None, enabled=True, clock=lambda: now[0])
    with progress:
        for _ in range(10):
            now[0] += 1.0
            progress.advance(1000)
        progress.finish("in one chunk")
    err = capsys.readouterr().err
    assert err.count("predict: ") == 3  # at 5 s and 10 s, then the closing line
    assert "predict: 5,000 rows done, 1,000 rows/s" in err
    assert "predict: 10,000 rows done in 10.0 s, 1,000 rows/s (in one chunk)" in err


def test_the_read_limits_flags_reach_the_reader(run, tmp_path, model_dir):
    data = tmp_path / "new.csv"
    _new_rows(23).write_csv(data)
    code, _, err = run("predict", model_dir, data, "--max-columns", "2")
    assert code == 2 and "3 columns, more than the limit of 2 (--max-columns raises it" in err
    code, _, err = run("predict", model_dir, data, "--max-cells", "0")
    assert code == 2 and "--max-cells 0: expected a positive number" in err
    code, _, err = run("predict", model_dir, data, "--chunk-rows", "0")
    assert code == 2 and "--chunk-rows 0: expected a number of rows, 1 or more" in err
