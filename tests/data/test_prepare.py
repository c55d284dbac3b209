"""Preparing a table: the split and the recipe fitted on the training rows only."""

import numpy as np
import polars as pl
import pytest
import torch

from softclass.data import Recipe, load_bundled, read_table
from softclass.data.expansion import as_dense
from softclass.data.features import NumericFeature, encoded_rows
from softclass.data.prepare import prepare_file, prepare_table
from softclass.data.reading import read_raw
from softclass.errors import DataError


@pytest.fixture(scope="module")
def iris():
    return prepare_table(load_bundled("iris"), seed=0)


def test_prepare_table_fits_the_recipe_on_training_rows_only(iris):
    assert iris.train_features.shape == (120, 4) and iris.validation_features.shape == (30, 4)
    assert iris.recipe.n_rows == 120
    torch.testing.assert_close(iris.train_features.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    assert iris.validation_features.mean(0).abs().max() > 1e-3
    assert torch.bincount(iris.validation_targets).tolist() == [10, 10, 10]
    assert iris.class_names == ("setosa", "versicolor", "virginica")


def test_prepare_table_without_validation_and_with_too_few_rows():
    whole = prepare_table(load_bundled("iris"), validation_fraction=0)
    assert whole.validation_features is None and whole.train_features.shape == (150, 4)
    tiny = pl.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]})
    with pytest.raises(DataError, match="no validation rows: the table has 2 rows"):
        prepare_table(tiny)


def _mixed_table(n_rows: int = 400) -> pl.DataFrame:
    """Numbers (some missing), a category (some missing), a date and a 3-class label, as text."""
    generator = np.random.default_rng(1)
    numbers = generator.normal(0, 3, n_rows).round(2).astype(str).tolist()
    numbers = [None if index % 17 == 0 else cell for index, cell in enumerate(numbers)]
    colours = [["red", "green", "blue", None][index % 4] for index in range(n_rows)]
    days = [f"2021-0{1 + index % 9}-1{index % 10}" for index in range(n_rows)]
    return pl.DataFrame(
        {
            "x": numbers,
            "z": generator.integers(0, 50, n_rows).astype(str).tolist(),
            "colour": colours,
            "day": days,
            "label": [["a", "b", "c"][index % 3] for index in range(n_rows)],
        }
    )


def test_prepare_table_with_validation_fits_bins_and_scales_on_the_training_rows_alone():
    table = _mixed_table()
    options = {"normalization": "robust", "bins": 8}
    prepared = prepare_table(table, "label", validation_fraction=0.25, **options)
    is_validation = np.zeros(table.height, dtype=bool)
    is_validation[prepared.validation_rows.numpy()] = True
    train_table = table.filter(pl.Series(~is_validation))
    alone = Recipe.fit(train_table, "label", **options)
    assert prepared.recipe.features == alone.features
    assert any(len(feature.edges) > 2 for feature in alone.features if feature.kind == "numeric")
    assert torch.equal(as_dense(prepared.train_features), alone.transform(train_table))
    validation_table = table.filter(pl.Series(is_validation))
    assert torch.equal(as_dense(prepared.validation_features), alone.transform(validation_table))
    assert torch.equal(prepared.train_targets, alone.encode_targets(train_table))


def test_prepare_without_features_gives_the_rows_and_targets_of_prepare():
    table = _mixed_table(60).with_columns(
        label=pl.when(pl.int_range(60) == 7).then(None).otherwise(pl.col("label"))
    )
    recipe = Recipe.fit(table, "label", missing="drop")
    full = recipe.prepare(table)
    rows_only = recipe.prepare(table, features=False)
    assert rows_only.features.shape == (full.features.shape[0], 0)
    assert full.features.shape[0] < 60
    assert torch.equal(rows_only.rows, full.rows)
    assert torch.equal(rows_only.targets, full.targets)
    assert rows_only.warnings == full.warnings


def test_encoded_bins_are_piecewise_linear_between_the_edges():
    feature = NumericFeature("x", 0.0, 1.0, None, 0.0, 1.0, 0.0, 4.0, edges=(0.0, 1.0, 4.0))
    values = np.array([-1.0, 0.5, 1.0, 2.5, 9.0])
    matrix = encoded_rows([(feature, values)], len(values), 3)
    expected = [[-1, 0, 0], [0.5, 0.5, 0], [1, 1, 0], [2.5, 1, 0.5], [9, 1, 1]]
    assert torch.equal(matrix, torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_prepare_file_gives_what_prepare_table_gives_on_the_raw_table(tmp_path, suffix):
    path = tmp_path / f"mixed.{suffix}"
    table = _mixed_table().with_columns(  # a row without a class: a warning
        label=pl.when(pl.int_range(400) == 7).then(None).otherwise(pl.col("label"))
    )
    table.write_csv(path) if suffix == "csv" else table.write_parquet(path)
    options = {"normalization": "robust", "bins": 4, "validation_fraction": 0.25}
    expected = prepare_table(read_table(path, raw=True), "label", source=str(path), **options)
    prepared = prepare_file(path, "label", **options)
    for name in ("train_features", "train_targets", "validation_features", "validation_targets"):
        assert torch.equal(as_dense(getattr(prepared, name)), as_dense(getattr(expected, name))), (
            name
        )
    assert torch.equal(prepared.validation_rows, expected.validation_rows)
    assert prepared.validation_source.equals(expected.validation_source)
    assert prepared.recipe.to_dict() == expected.recipe.to_dict()
    assert prepared.warnings == expected.warnings and prepared.warnings


def test_a_released_raw_table_refuses_to_give_cells(tmp_path):
    path = tmp_path / "mixed.csv"
    _mixed_table(30).write_csv(path)
    raw = read_raw(path)
    assert raw.get_column("x").dtype == pl.String and raw.height == 30 and raw.width == 5
    assert raw.rows(np.array([3, 0])).get_column("label").to_list() == ["a", "a"]
    raw.release()
    with pytest.raises(RuntimeError, match="the raw table was released"):
        raw.get_column("x")


def test_raw_rows_of_a_csv_read_in_several_blocks_are_the_rows_as_read(tmp_path):
    # pyarrow parses a CSV in blocks of 1 MiB, each a chunk of every column: the rows are taken
    # from each column's joined chunks, in the order asked
    path = tmp_path / "long.csv"
    _mixed_table(100_000).write_csv(path)
    raw = read_raw(path)
    assert path.stat().st_size > 2**21 and raw._held().column("x").num_chunks > 1
    positions = np.array([99_999, 0, 51_000, 7, 51_000])
    assert raw.rows(positions).equals(read_table(path, raw=True)[positions])


def test_validation_rows_with_a_category_training_never_saw(tmp_path):
    table = _mixed_table(60).with_columns(
        label=pl.when(pl.int_range(60) >= 58).then(pl.lit("d")).otherwise(pl.col("label")),
        colour=pl.when(pl.int_range(60) >= 58).then(pl.lit("pink")).otherwise(pl.col("colour")),
    )
    table = table.with_columns(colour=table["colour"].scatter([59], "purple"))
    prepared = prepare_table(table, "label", validation_fraction=0.5)
    assert (
        "validation rows: categories not seen in training, encoded as all zeros (cells per "
        "column): 'colour' 1; --unknown error refuses them"
    ) in prepared.warnings
    unseen = int(prepared.validation_rows[prepared.validation_targets == 3][0])
    assert prepared.validation_features[prepared.validation_rows == unseen, 3:7].sum() == 0
    with pytest.raises(DataError, match=rf"row {unseen + 2}, column 'colour': unknown category"):
        prepare_table(table, "label", validation_fraction=0.5, unknown="error")


def _robust(values: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Robust scaling and smooth clipping, straight from the formulas (float64)."""
    low, median, high = np.quantile(train, [0.25, 0.5, 0.75])
    spread = high - low if high > low else (train.max() - train.min()) / 2
    scaled = (values - median) / (spread or 1.0)  # a constant: scale 1
    return scaled / np.sqrt(1 + (scaled / 3) ** 2)


def _bins(values: np.ndarray, train: np.ndarray, bins: int) -> np.ndarray:
    """Piecewise-linear encoding on the training quantiles: (N, edges - 1)."""
    if not ((train > train.min()) & (train < train.max())).any():
        return np.empty((len(values), 0))
    edges = np.unique(np.quantile(train, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return np.empty((len(values), 0))
    return np.clip((values[:, None] - edges[:-1]) / np.diff(edges), 0, 1)


def _reference_features(table: pl.DataFrame, train: np.ndarray, bins: int) -> np.ndarray:
    """The features of ``_mixed_table`` (robust scaling, bins, missing median + indicator,
    one-hot with a '(missing)' category, date → year, month, weekday), computed with numpy."""
    outputs = []
    x = np.array([np.nan if cell is None else float(cell) for cell in table["x"]])
    present = ~np.isnan(x)
    filled = np.where(present, x, np.median(x[train][present[train]]))
    outputs += [
        _robust(filled, x[train][present[train]])[:, None],
        _bins(filled, x[train][present[train]], bins),
    ]
    indicator = (~present).astype(float)
    outputs.append(_robust(indicator, indicator[train])[:, None])
    z = table["z"].cast(pl.Float64).to_numpy()
    outputs += [_robust(z, z[train])[:, None], _bins(z, z[train], bins)]
    colours = np.array(["(missing)" if cell is None else cell for cell in table["colour"]])
    outputs.append(colours[:, None] == np.array(sorted(set(colours[train])))[None, :])
    days = np.array(table["day"].to_list(), dtype="datetime64[D]")
    years = days.astype("datetime64[Y]").astype(int) + 1970
    months = days.astype("datetime64[M]").astype(int) % 12 + 1
    weekdays = (days.astype(int) + 3) % 7 + 1  # 1970-01-01 was a Thursday; Monday = 1
    for part in (years, months, weekdays):
        part = part.astype(float)
        outputs += [_robust(part, part[train])[:, None], _bins(part, part[train], bins)]
    return np.concatenate([np.asarray(block, dtype=np.float64) for block in outputs], axis=1)


def test_prepared_features_equal_a_numpy_reference():
    table = _mixed_table(500)
    prepared = prepare_table(table, "label", normalization="robust", bins=5)
    is_train = np.ones(table.height, dtype=bool)
    is_train[prepared.validation_rows.numpy()] = False
    expected = _reference_features(table, is_train, 5)
    assert prepared.n_features == expected.shape[1]
    torch.testing.assert_close(
        as_dense(prepared.train_features), torch.tensor(expected[is_train], dtype=torch.float32)
    )
    torch.testing.assert_close(
        as_dense(prepared.validation_features),
        torch.tensor(expected[~is_train], dtype=torch.float32),
    )


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_prepare_file_splitting_before_typing_gives_what_prepare_table_gives(
    tmp_path, suffix, monkeypatch
):
    # under "impute" the split is drawn from the target alone, each column as read let go once
    # typed, numbers held in pages of their own and the binned values transposed block by block
    import softclass.data.prepare as prepare_module
    import softclass.data.typing_table as typing_module

    monkeypatch.setattr(typing_module, "OWN_PAGES_ROWS", 1)
    monkeypatch.setattr(prepare_module, "_GATHER_BLOCK_VALUES", 4096)
    table = _mixed_table(3000).with_columns(
        label=pl.when(pl.int_range(3000) % 101 == 5).then(None).otherwise(pl.col("label")),
        x=pl.when(pl.int_range(3000) == 7).then(pl.lit("-0.0")).otherwise(pl.col("x")),
    )
    path = tmp_path / f"unlabelled.{suffix}"
    table.write_csv(path) if suffix == "csv" else table.write_parquet(path)
    options = {"normalization": "robust", "bins": 8, "validation_fraction": 0.2}
    expected = prepare_table(read_table(path, raw=True), "label", source=str(path), **options)
    prepared = prepare_file(path, "label", **options)
    for name in ("train_features", "validation_features"):
        ours, theirs = getattr(prepared, name), getattr(expected, name)
        assert torch.equal(ours.compact, theirs.compact) and ours.raw.is_contiguous()
        assert np.array_equal(ours.raw.numpy().view(np.int64), theirs.raw.numpy().view(np.int64))
    for name in ("train_targets", "validation_targets", "validation_rows"):
        assert torch.equal(getattr(prepared, name), getattr(expected, name)), name
    assert prepared.validation_source.equals(expected.validation_source)
    assert prepared.recipe.to_dict() == expected.recipe.to_dict()
    assert prepared.warnings == expected.warnings and "no class" in " ".join(prepared.warnings)


def test_prepare_file_names_a_bad_number_as_prepare_table_does(tmp_path):
    table = _mixed_table(60).with_columns(
        z=pl.when(pl.int_range(60) == 41).then(pl.lit("inf")).otherwise(pl.col("z"))
    )
    path = tmp_path / "infinite.csv"
    table.write_csv(path)
    with pytest.raises(DataError) as expected:
        prepare_table(read_table(path, raw=True), "label", validation_fraction=0.2)
    with pytest.raises(DataError, match="row 43, column 'z'") as found:
        prepare_file(path, "label", validation_fraction=0.2)
    assert str(found.value) == str(expected.value)


def test_a_consumed_raw_table_hands_out_each_column_once(tmp_path):
    path = tmp_path / "mixed.csv"
    _mixed_table(30).write_csv(path)
    raw = read_raw(path)
    raw.consume()
    assert raw.get_column("x").len() == 30 and raw.columns[0] == "x" and raw.height == 30
    assert "x" not in raw._held().column_names
    with pytest.raises(RuntimeError, match="its rows are gone"):
        raw.rows(np.array([0]))


def test_a_parquet_file_read_raw_holds_the_cells_read_table_gives(tmp_path):
    import datetime

    table = pl.DataFrame(
        {
            "f": [1.5, None, -0.0, 2.0],
            "i": [1, 2, None, 4],
            "b": [True, None, False, True],
            "d": [datetime.date(2021, 1, 2), None, datetime.date(2022, 3, 4), None],
            "t": [datetime.datetime(2021, 1, 2, 3, 4), None, None, None],
            "s": ["a", None, "ccccccccccccccccccccc", "é"],
            "c": pl.Series(["x", "y", None, "x"], dtype=pl.Categorical),
        }
    )
    path = tmp_path / "typed.parquet"
    table.write_parquet(path)
    raw = read_raw(path)
    positions = np.array([3, 0, 2, 1])
    expected = read_table(path, raw=True)
    assert raw.rows(positions).equals(expected[positions])
    assert raw.rows(positions).schema == expected.schema
    assert all(raw.get_column(name).equals(expected.get_column(name)) for name in table.columns)


@pytest.mark.parametrize("bins", [0, 8])
def test_sources_made_before_the_binned_values_encode_what_the_group_sources_encode(
    monkeypatch, bins
):
    # missing indicators as uint8 and category indices (with unseen cells) made early
    import softclass.data.prepare as prepare_module

    table = _mixed_table(600).with_columns(
        label=pl.when(pl.int_range(600) >= 590).then(pl.lit("d")).otherwise(pl.col("label")),
        colour=pl.when(pl.int_range(600) >= 590)
        .then(pl.format("pink{}", pl.int_range(600)))  # each once: some only in validation
        .otherwise(pl.col("colour")),
    )
    options = {"normalization": "robust", "bins": bins, "validation_fraction": 0.5}
    made = []
    early = prepare_module._early_sources

    def recorded(features, inputs, unknown):
        ready = early(features, inputs, unknown)
        made.append({name: values.dtype for name, (values, _) in ready.items()})
        return ready

    monkeypatch.setattr(prepare_module, "_early_sources", recorded)
    ours = prepare_table(table, "label", **options)
    assert made == [{"x.missing": np.uint8, "colour": np.int16}]
    monkeypatch.setattr(prepare_module, "_early_sources", lambda *arguments: {})
    theirs = prepare_table(table, "label", **options)
    assert "'colour' 5" in " ".join(ours.warnings) and ours.warnings == theirs.warnings
    for name in ("train_features", "validation_features"):
        mine, reference = getattr(ours, name), getattr(theirs, name)
        if bins:
            assert torch.equal(mine.raw, reference.raw)
            mine, reference = mine.compact, reference.compact
        assert torch.equal(mine, reference)
    monkeypatch.setattr(prepare_module, "_early_sources", recorded)
    with pytest.raises(DataError, match=r"column 'colour': unknown category 'pink"):
        prepare_table(table, "label", unknown="error", **options)
    assert made[-1] == {"x.missing": np.uint8}  # "error" names the cell from the column


def test_missing_indicators_read_as_one_byte_hold_the_same_zeros_and_ones():
    table = _mixed_table(200)
    recipe = Recipe.fit(table, "label", normalization="robust")
    wide, _ = recipe.read_inputs(table, skip=False)
    narrow, _ = recipe.read_inputs(table, skip=False, indicators=pl.UInt8)
    assert wide["x.missing"].dtype == pl.Float64 and narrow["x.missing"].dtype == pl.UInt8
    assert narrow["x.missing"].sum() == 12 and narrow["x.missing"].cast(pl.Float64).equals(
        wide["x.missing"]
    )
    assert all(narrow[name].equals(wide[name]) for name in wide if name != "x.missing")


def test_malloc_is_trimmed_from_a_thread_while_a_csv_file_is_parsed(tmp_path, monkeypatch):
    import threading
    import time

    import softclass.data.reading as reading_module

    calls = []
    monkeypatch.setattr(reading_module, "_MALLOC_TRIM", lambda pad: calls.append(pad) or 1)
    with reading_module._trimming(0.001):
        time.sleep(0.05)
        assert any(thread.name == "softclass-trim" for thread in threading.enumerate())
    done = len(calls)
    assert done >= 3 and set(calls) == {0}
    time.sleep(0.01)
    assert len(calls) == done  # stopped with the block
    assert not any(thread.name == "softclass-trim" for thread in threading.enumerate())
    monkeypatch.setattr(reading_module, "_MALLOC_TRIM", None)  # no glibc: nothing to trim
    with reading_module._trimming(0.001):
        assert not any(thread.name == "softclass-trim" for thread in threading.enumerate())
    monkeypatch.setattr(reading_module, "_MALLOC_TRIM", lambda pad: calls.append(pad) or 1)
    monkeypatch.setattr(reading_module, "_TRIM_PERIOD", 0.001)
    read_csv = reading_module.read_csv
    monkeypatch.setattr(  # a parse long enough for the thread to trim
        reading_module, "read_csv", lambda *arguments: time.sleep(0.05) or read_csv(*arguments)
    )
    path = tmp_path / "mixed.csv"
    _mixed_table(30).write_csv(path)
    calls.clear()
    assert read_raw(path).get_column("x").len() == 30
    assert len(calls) >= 3  # the parse's trims and hand_back's
