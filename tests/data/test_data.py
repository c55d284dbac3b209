"""Tests of softclass.data: reading, column typing, the recipe, the split and the bundled data."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softclass.data import (
    BUNDLED_NAMES,
    PEOPLE_DIVISORS,
    Recipe,
    bundled_path,
    load_bundled,
    read_table,
    stratified_split,
    type_columns,
)
from softclass.errors import ConfigError, DataError, ModelFileError

PEOPLE_TEXT = """age, income, weight, city
23, $72000, 155, Boulder
41,"$52,500", 180, Anaheim
35,"$95,000.50", 201, Chicago
29, $70100, 149, Boulder
52,"$49,999", 170, Anaheim
"""


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


@pytest.fixture
def people(tmp_path) -> pl.DataFrame:
    return read_table(write(tmp_path, "people.csv", PEOPLE_TEXT))


# --- reading and column typing ---------------------------------------------------------------


def test_read_csv_parses_money_and_types_columns(people):
    assert people.columns == ["age", "income", "weight", "city"]
    assert people.schema["income"] == pl.Float64
    assert people.schema["city"] == pl.String
    assert people["income"].to_list() == [72000.0, 52500.0, 95000.5, 70100.0, 49999.0]
    assert people["city"].to_list()[:2] == ["Boulder", "Anaheim"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$72,000", 72000.0),
        ("$72000", 72000.0),
        ("1,234.5", 1234.5),
        ("-$5", -5.0),
        ("$-5", -5.0),
        ("+3", 3.0),
        (".5", 0.5),
        ("1e-3", 0.001),
        ("1,234,567", 1234567.0),
        ("€12", 12.0),
        ("1,23", 1.23),  # a decimal comma: the only reading that fits
        ("1.234,56", 1234.56),
        ("7 858", 7858.0),
        ("1'234.5", 1234.5),
        ("45%", 0.45),
        ("12,50 €", 12.5),
        ("CHF 1'234.50", 1234.5),
        ("５.１", 5.1),  # full-width digits
        ("٣", 3.0),  # Arabic-Indic digit
    ],
)
def test_number_formats(text, value):
    typed = type_columns(pl.DataFrame({"x": [text, "1"]}))
    assert typed.schema["x"] == pl.Float64
    assert typed["x"][0] == pytest.approx(value)


@pytest.mark.parametrize("text", ["12,34,567", "$", "1.2.3", "%", "0x10", "1 00", "5%%", "٣x"])
def test_text_that_is_not_a_number_makes_a_categorical_column(text):
    typed = type_columns(pl.DataFrame({"x": [text, "other"]}))
    assert typed.schema["x"] == pl.String


def test_missing_markers_become_null(tmp_path):
    table = read_table(write(tmp_path, "m.csv", "a,b\n1,x\n,NA\nN/A,?\n4, \n"))
    assert table["a"].to_list() == [1.0, None, None, 4.0]
    assert table["b"].to_list() == ["x", None, None, None]


def test_non_finite_texts_stay_numbers(tmp_path):
    table = read_table(write(tmp_path, "n.csv", "a,b\nnan,1\n-inf,2\nInfinity,3\n"))
    values = table["a"].to_list()
    assert math.isnan(values[0]) and values[1] == -math.inf and values[2] == math.inf


def test_many_numbers_and_a_word_read_as_numbers_with_the_word_missing(tmp_path):
    rows = "".join(f"{value},x\n" for value in range(30)) + "abc,x\n"
    table = read_table(write(tmp_path, "mixed.csv", "income,city\n" + rows))
    assert table["income"].to_list() == [*map(float, range(30)), None]


def test_text_column_with_one_number_is_text(tmp_path):
    table = read_table(write(tmp_path, "t.csv", "city,y\nBoulder,1\nChicago,2\n123,3\n"))
    assert table["city"].to_list() == ["Boulder", "Chicago", "123"]


def test_bom_and_blank_lines_are_accepted(tmp_path):
    path = write(tmp_path, "bom.csv", b"\xef\xbb\xbfa,b\n1,x\n\n2,y\n")
    table = read_table(path)
    assert table.columns == ["a", "b"]
    assert table["a"].to_list() == [1.0, 2.0]


def test_quoted_fields_with_commas_quotes_and_newlines(tmp_path):
    path = write(tmp_path, "q.csv", 'a,b\n1,"x, ""y"""\n2,"two\nlines"\n')
    assert read_table(path)["b"].to_list() == ['x, "y"', "two\nlines"]


def test_parquet_reads_like_csv(tmp_path, people):
    path = tmp_path / "people.parquet"
    people.write_parquet(path)
    assert read_table(path).equals(people)


def test_parquet_with_integer_boolean_and_text_money_columns(tmp_path):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"n": [1, 2], "flag": [True, False], "money": ["$1,000", "$2"]}).write_parquet(
        path
    )
    table = read_table(path)
    assert table.schema == pl.Schema({"n": pl.Float64, "flag": pl.Boolean, "money": pl.Float64})
    assert table["flag"].to_list() == [True, False]
    assert table["money"].to_list() == [1000.0, 2.0]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.csv", None, r"absent\.csv: no such file"),
        ("empty.csv", "", r"empty\.csv: the file is empty"),
        ("blank.csv", "\n \n", r"blank\.csv: the file is empty"),
        (
            "header.csv",
            "a,b\n",
            r"header\.csv: the table has a header \('a', 'b'\) but no data rows",
        ),
        ("nonl.csv", "a,b", r"nonl\.csv: the table has a header but no data rows"),
        ("long.csv", "a,b\n1,2\n3,4,5\n", r"long\.csv: row 3 has 3 fields but the header has 2"),
        ("open.csv", 'a,b\n1,"x\n2,y\n', r"open\.csv: row 2: a quoted value in this row is never"),
        ("after.csv", 'a,b\n1,2\n"x"y",3\n', r"after\.csv: row 3: .*must end at a comma"),
        (
            "short.csv",
            "a,b,c\n1,2,3\n4,5\n",
            r"short\.csv: row 3 has 2 fields but the header has 3",
        ),
        ("table.txt", "a,b\n1,2\n", r"table\.txt: unsupported file type '\.txt'; expected one of"),
        ("noext", "a,b\n1,2\n", r"noext: unsupported file type '\(no extension\)'"),
        ("dup.csv", "a,b,a\n1,2,3\n", r"dup\.csv: the header repeats the column name\(s\) 'a'"),
        (
            "noname.csv",
            "Unnamed: 1,,c\n1,2,3\n",
            r"noname\.csv: the header repeats the column name\(s\) 'Unnamed: 1'",
        ),
        ("bad.parquet", "not parquet", r"bad\.parquet: not a readable Parquet file"),
    ],
)
def test_read_errors_name_file_and_place(tmp_path, name, content, message):
    path = tmp_path / name if content is None else write(tmp_path, name, content)
    with pytest.raises(DataError, match=message):
        read_table(path)


def test_ragged_row_number_counts_blank_and_multiline_rows_as_the_file_shows(tmp_path):
    path = write(tmp_path, "r.csv", 'a,b\n1,"x\ny"\n\n2,3\n4\n')
    with pytest.raises(DataError, match=r"row 6 has 1 field but the header has 2"):
        read_table(path)


def test_blank_before_a_quote_gets_its_own_hint(tmp_path):
    path = write(tmp_path, "blank.csv", 'age, income\n23, "$72,000"\n')
    with pytest.raises(
        DataError, match=r"row 2 has 3 fields .* remove the blank between the comma"
    ):
        read_table(path)


def test_non_utf8_names_row_and_byte(tmp_path):
    path = write(tmp_path, "latin.csv", "city,n\nBoulder,1\nZürich,2\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv: row 3: byte 0xfc .* is not valid UTF-8"):
        read_table(path)


def test_unreadable_file_and_parser_failure_are_data_errors(tmp_path, monkeypatch):
    path = write(tmp_path, "t.csv", "a,b\n1,x\n")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pa, "input_stream", refuse)
    with pytest.raises(DataError, match=r"t\.csv: cannot be read: Permission denied"):
        read_table(path)
    monkeypatch.undo()

    def fail(*args, **kwargs):
        raise pa.ArrowInvalid("CSV parse error: something")

    monkeypatch.setattr(pa_csv, "read_csv", fail)
    with pytest.raises(DataError, match=r"t\.csv: cannot be parsed as CSV: CSV parse error"):
        read_table(path)


def test_directory_is_not_a_table(tmp_path):
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(DataError, match=r"folder\.csv: is a directory"):
        read_table(folder)


def test_unusable_column_type_is_named(tmp_path):
    path = tmp_path / "lists.parquet"
    pl.DataFrame({"when": [[1, 2]], "y": ["a"]}).write_parquet(path)
    with pytest.raises(
        DataError, match=r"column 'when' has type List\(Int64\), which softclass cannot use"
    ):
        read_table(path)


# --- the recipe: the seed's example and normalizations ---------------------------------------


def test_seed_example_divide_by_constants(people):
    recipe = Recipe.fit(people, normalization="divide", divisors=PEOPLE_DIVISORS)
    assert recipe.classes == ("Anaheim", "Boulder", "Chicago")
    features = recipe.transform(people)
    assert features.dtype == torch.float32 and features.shape == (5, 3)
    torch.testing.assert_close(features[0], torch.tensor([0.23, 0.72, 0.155]), rtol=0, atol=0)
    targets = recipe.encode_targets(people)
    assert targets.dtype == torch.int64
    assert targets.tolist() == [1, 0, 2, 1, 0]
    assert recipe.decode(targets[:1]) == ["Boulder"]


def test_zscore_uses_training_mean_and_population_std(people):
    recipe = Recipe.fit(people)
    ages = np.array([23, 41, 35, 29, 52], dtype=np.float64)
    expected = (ages - ages.mean()) / ages.std()
    torch.testing.assert_close(recipe.transform(people)[:, 0], torch.tensor(expected).float())
    assert recipe.features[0].std == pytest.approx(ages.std())


def test_minmax_maps_training_range_to_unit_interval(people):
    features = Recipe.fit(people, normalization="minmax").transform(people)
    torch.testing.assert_close(features.min(dim=0).values, torch.zeros(3))
    torch.testing.assert_close(features.max(dim=0).values, torch.ones(3))


@pytest.mark.parametrize("normalization", ["zscore", "minmax"])
def test_constant_column_becomes_zeros_without_dividing_by_zero(normalization):
    table = pl.DataFrame({"constant": [7.0, 7.0, 7.0], "y": ["a", "b", "a"]})
    recipe = Recipe.fit(table, normalization=normalization)
    assert recipe.features[0].scale == 1.0
    assert recipe.transform(table).tolist() == [[0.0], [0.0], [0.0]]


def test_categorical_inputs_are_one_hot_over_sorted_training_categories():
    table = pl.DataFrame(
        {"size": [1.0, 2.0, 3.0], "color": ["red", "blue", "red"], "y": list("aba")}
    )
    recipe = Recipe.fit(table, normalization="minmax")
    assert recipe.feature_names == ("size", "color=blue", "color=red")
    assert recipe.n_features == 3
    assert recipe.transform(table).tolist() == [[0, 0, 1], [0.5, 1, 0], [1, 0, 1]]
    assert recipe.features[1].counts == (1, 2)


def test_target_by_name_and_numeric_classes_sorted_by_value():
    table = pl.DataFrame({"label": [10, 2, 2, 10, 1], "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    recipe = Recipe.fit(table, target="label")
    assert recipe.classes == ("1", "2", "10")
    assert recipe.class_counts == (1, 2, 2)
    assert recipe.encode_targets(table).tolist() == [2, 1, 1, 2, 0]
    assert recipe.feature_names == ("x",)


# --- the recipe: missing values --------------------------------------------------------------

GAPPY = pl.DataFrame(
    {
        "age": [20.0, None, 40.0, 50.0, 30.0],
        "color": ["red", "blue", None, "red", "blue"],
        "y": ["a", "b", "a", "b", "a"],
    }
)


def test_missing_values_are_an_error_under_missing_error_naming_rows_and_columns():
    with pytest.raises(
        DataError, match=r"missing values: row 3, column 'age'; row 4, column 'color'; fill"
    ):
        Recipe.fit(GAPPY, missing="error")


def test_missing_drop_fits_on_complete_rows_and_prepare_reports_dropped_rows():
    recipe = Recipe.fit(GAPPY, missing="drop", normalization="minmax")
    assert recipe.n_rows == 3
    assert recipe.features[0].minimum == 20.0 and recipe.features[0].maximum == 50.0
    prepared = recipe.prepare(GAPPY)
    assert prepared.rows.tolist() == [0, 3, 4]
    assert prepared.targets.tolist() == [0, 1, 0]
    assert prepared.features.shape == (3, 3)
    assert prepared.warnings == (
        "dropped 2 row(s) with missing values: rows 3, 4 (rows counted as in the file: "
        "header = row 1)",
    )
    with pytest.raises(DataError, match=r"row 3, column 'age'.*use Recipe\.prepare"):
        recipe.transform(GAPPY)


def test_prepare_errors_name_rows_of_the_given_table_after_dropping():
    recipe = Recipe.fit(GAPPY, missing="drop")
    new = pl.DataFrame({"age": [None, 30.0], "color": ["red", "green"], "y": ["a", "b"]})
    with pytest.raises(DataError, match=r"row 3, column 'color': unknown category 'green'"):
        recipe.prepare(new, unknown="error")


def test_missing_impute_fills_median_with_an_indicator_and_a_missing_category():
    recipe = Recipe.fit(GAPPY, normalization="minmax")  # impute is the default
    assert recipe.missing == "impute"
    assert recipe.feature_names == (
        "age",
        "age.missing",
        "color=(missing)",
        "color=blue",
        "color=red",
    )
    assert recipe.features[0].fill_value == pytest.approx(35.0)  # median of 20, 30, 40, 50
    assert recipe.features[2].fill_value == "(missing)"
    features = recipe.transform(GAPPY)
    assert features[1, :2].tolist() == pytest.approx([(35.0 - 20.0) / 30.0, 1.0])
    assert features[0, 1].item() == 0.0
    assert features[2, 2:].tolist() == [1.0, 0.0, 0.0]
    actions = {info.name: info.action for info in recipe.columns}
    assert actions["age"] == "scaled (minmax); missing: median 35, indicator 'age.missing'"
    assert actions["color"] == "one-hot, 3 categories; missing: category '(missing)'"


def test_impute_without_missing_in_training_fills_the_most_frequent_category():
    recipe = Recipe.fit(GAPPY.drop_nulls())
    assert recipe.feature_names == ("age", "color=blue", "color=red")
    later = pl.DataFrame(
        {"age": [None], "color": [None]}, schema={"age": pl.Float64, "color": pl.String}
    )
    assert (
        recipe.transform(later).tolist()
        == recipe.transform(pl.DataFrame({"age": [30.0], "color": ["red"]})).tolist()
    )


@pytest.mark.parametrize("missing", ["error", "drop", "impute"])
def test_missing_target_rows_are_left_out_with_one_warning(missing):
    table = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": ["a", None, "b", "b"]})
    recipe = Recipe.fit(table, missing=missing)
    assert recipe.class_counts == (1, 2) and recipe.n_rows == 3
    line = (
        "left out 1 row(s) with no class in the target column 'y': row 3 (rows counted as in "
        "the file: header = row 1)"
    )
    assert recipe.notes[0] == line
    prepared = recipe.prepare(table)
    assert prepared.rows.tolist() == [0, 2, 3] and prepared.warnings == (line,)


def test_a_target_without_any_class_is_refused():
    table = pl.DataFrame({"x": [1.0, 2.0]}).with_columns(y=pl.lit(None, pl.String))
    with pytest.raises(DataError, match=r"no row has a class: every cell of the target column 'y'"):
        Recipe.fit(table)


def test_missing_target_rows_are_dropped_under_drop():
    table = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": ["a", None, "b", "b"]})
    assert Recipe.fit(table, missing="drop").class_counts == (1, 2)


def test_column_without_values_is_named():
    table = pl.DataFrame({"x": [1.0, 2.0], "empty": ["", "NA"], "y": ["a", "b"]})
    assert type_columns(table).schema["empty"] == pl.Float64
    recipe = Recipe.fit(table)
    assert recipe.dropped_columns == ("empty",)
    assert "dropped column(s) 'empty': every cell is missing" in recipe.notes


def test_no_rows_left_after_dropping():
    table = pl.DataFrame({"x": [None, 2.0, 3.0], "z": [1.0, None, 3.0], "y": ["a", "b", None]})
    with pytest.raises(DataError, match=r"no rows are left after dropping"):
        Recipe.fit(table, missing="drop")


def test_missing_target_at_evaluation_is_named():
    recipe = Recipe.fit(pl.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]}))
    with pytest.raises(DataError, match=r"the target column 'y' is empty in row\(s\) 3"):
        recipe.encode_targets(pl.DataFrame({"x": [1.0, 2.0], "y": ["a", None]}))


def test_missing_at_transform_under_error_policy():
    recipe = Recipe.fit(pl.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]}), missing="error")
    with pytest.raises(DataError, match=r"missing values: row 2, column 'x'; fill them in"):
        recipe.transform(pl.DataFrame({"x": [None]}, schema={"x": pl.Float64}))


# --- the recipe: errors at fit time ----------------------------------------------------------


def test_wrong_target_lists_columns_and_suggests(people):
    with pytest.raises(
        DataError,
        match=r"no column 'cty' to use as the target \(did you mean 'city'\?\); "
        r"the table's columns are 'age', 'income', 'weight', 'city'",
    ):
        Recipe.fit(people, target="cty")


def test_single_class_target():
    table = pl.DataFrame({"x": [1.0, 2.0], "y": ["only", "only"]})
    with pytest.raises(
        DataError, match=r"target column 'y' \(the last column, .*\) has only one class \('only'\)"
    ):
        Recipe.fit(table)


def test_table_with_only_a_target():
    with pytest.raises(DataError, match=r"only the target column 'y'"):
        Recipe.fit(pl.DataFrame({"y": ["a", "b"]}))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_feature_names_row_and_column(value):
    table = pl.DataFrame({"x": [1.0, 2.0, value], "y": ["a", "b", "a"]})
    with pytest.raises(DataError, match=r"row 4, column 'x': .* is not a finite number"):
        Recipe.fit(table)


def test_non_finite_numeric_target():
    table = pl.DataFrame({"x": [1.0, 2.0], "y": [0.0, math.nan]})
    with pytest.raises(DataError, match=r"row 3, column 'y': the class nan is not a finite number"):
        Recipe.fit(table)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"normalization": "quantile"}, r"--normalize 'quantile' is not allowed; expected one of"),
        ({"missing": "ignore"}, r"--missing 'ignore' is not allowed"),
        (
            {"divisors": {"age": 1}},
            r"--divide is only used with --normalize divide, not --normalize zscore",
        ),
        (
            {"normalization": "divide", "divisors": {"age": 100}},
            r"needs a divisor for every number feature column \(--divide COL=VALUE\); missing "
            r"for 'income', 'weight'",
        ),
        (
            {"normalization": "divide", "divisors": {**PEOPLE_DIVISORS, "city": 2}},
            r"divisors given for 'city', which are not numeric feature columns",
        ),
        (
            {"normalization": "divide", "divisors": {**PEOPLE_DIVISORS, "age": 0}},
            r"the divisor for 'age' must be a finite positive number, got 0",
        ),
        (
            {"normalization": "divide", "divisors": {**PEOPLE_DIVISORS, "age": "100"}},
            r"the divisor for 'age' must be a number, got '100'",
        ),
    ],
)
def test_option_errors(people, options, message):
    with pytest.raises(ConfigError, match=message):
        Recipe.fit(people, **options)


# --- the recipe: prediction-time checks ------------------------------------------------------


def test_predict_table_without_target_and_with_extra_columns(people):
    recipe = Recipe.fit(people)
    new = people.drop("city").with_columns(pl.lit("x").alias("id"))
    prepared = recipe.prepare(new)
    assert prepared.targets is None
    torch.testing.assert_close(prepared.features, recipe.transform(people))
    assert prepared.warnings == ("ignoring column(s) not used by the model: 'id'",)
    assert recipe.unused_columns(new) == ["id"]


def test_predict_missing_feature_columns_are_named(people):
    recipe = Recipe.fit(people)
    with pytest.raises(DataError, match=r"lacks the feature column\(s\) 'age', 'weight'"):
        recipe.transform(people.drop("age", "weight"))


def test_raw_text_columns_at_predict_time_are_parsed(people):
    recipe = Recipe.fit(people, normalization="divide", divisors=PEOPLE_DIVISORS)
    raw = pl.DataFrame({"age": ["23"], "income": ["$72,000"], "weight": ["155"]})
    torch.testing.assert_close(recipe.transform(raw), torch.tensor([[0.23, 0.72, 0.155]]))


def test_non_number_in_numeric_feature_at_predict_time(people):
    recipe = Recipe.fit(people)
    raw = pl.DataFrame({"age": ["23", "old"], "income": ["1", "2"], "weight": ["1", "2"]})
    with pytest.raises(DataError, match=r"row 3, column 'age': 'old' is not a number"):
        recipe.transform(raw)


def test_unknown_category_names_value_and_known_categories():
    recipe = Recipe.fit(pl.DataFrame({"color": ["red", "blue"], "y": ["a", "b"]}))
    with pytest.raises(
        DataError,
        match=r"row 3, column 'color': unknown category 'green'; the categories seen in "
        r"training are 'blue', 'red'",
    ):
        recipe.transform(pl.DataFrame({"color": ["red", "green"]}), unknown="error")


def test_unknown_class_names_class_and_known_classes(people):
    recipe = Recipe.fit(people)
    new = people.with_columns(pl.Series("city", ["Boulder", "Denver", "Chicago", "x", "y"]))
    with pytest.raises(
        DataError,
        match=r"row 3, column 'city': unknown class 'Denver'; the classes seen in training are "
        r"'Anaheim', 'Boulder', 'Chicago'",
    ):
        recipe.encode_targets(new)


def test_encode_targets_needs_the_target_column(people):
    recipe = Recipe.fit(people)
    with pytest.raises(DataError, match=r"no column 'city' to use as the target"):
        recipe.encode_targets(people.drop("city"))


@pytest.mark.parametrize("indices", [[3], [-1], [0.5]])
def test_decode_rejects_indices_out_of_range(people, indices):
    with pytest.raises(DataError, match=r"class index .* is out of range; this recipe has 3"):
        Recipe.fit(people).decode(indices)


# --- the recipe: save and load ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "missing"),
    [
        ({}, "error"),
        ({"normalization": "minmax"}, "drop"),
        ({"normalization": "divide", "divisors": {"age": 10.0}}, "impute"),
    ],
)
def test_fit_save_load_transform_round_trip(tmp_path, options, missing):
    table = GAPPY.drop_nulls() if missing == "error" else GAPPY
    recipe = Recipe.fit(table, missing=missing, **options)
    path = recipe.save(tmp_path / "model" / "recipe.json")
    loaded = Recipe.load(path)
    assert loaded == recipe
    original, reloaded = recipe.prepare(table), loaded.prepare(table)
    assert torch.equal(original.features, reloaded.features)
    assert torch.equal(original.targets, reloaded.targets)
    assert json.loads(path.read_text()) == recipe.to_dict()


def broken(change):
    data = Recipe.fit(GAPPY, missing="impute").to_dict()
    change(data)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], r"field '\(top level\)' should be a JSON object"),
        (broken(lambda d: d.update(format="pickle")), r"not a softclass recipe"),
        (broken(lambda d: d.update(version=4)), r"format version 4 cannot be read.*upgrade"),
        (broken(lambda d: d.update(version="1")), r"field 'version' should be a whole number"),
        (broken(lambda d: d.pop("classes")), r"the field 'classes' is missing"),
        (broken(lambda d: d.update(classes=["a"])), r"'classes' should be at least two"),
        (broken(lambda d: d.update(classes=["a", "a"])), r"'classes' should be a non-empty list"),
        (broken(lambda d: d.update(class_counts=[1])), r"'class_counts' should be a list of 2"),
        (broken(lambda d: d.update(normalization="x")), r"'normalization' should be one of"),
        (broken(lambda d: d.update(missing="x")), r"'missing' should be one of"),
        (broken(lambda d: d.update(features=[])), r"'features' should be a non-empty list"),
        (broken(lambda d: d["features"][0].update(scale=0)), r"'features\[0\]\.scale' should be a"),
        (
            broken(lambda d: d["features"][0].update(offset=True)),
            r"'features\[0\]\.offset' should be a finite number",
        ),
        (broken(lambda d: d["features"][0].pop("mean")), r"'features\[0\]\.mean' is missing"),
        (broken(lambda d: d["features"][0].update(kind="x")), r"'features\[0\]\.kind' should be"),
        (
            broken(lambda d: d["features"][2].update(fill_value="green")),
            r"'features\[2\]\.fill_value' should be one of the categories",
        ),
        (
            broken(lambda d: d["features"][0].update(fill_value=None)),
            r"'features\[0\]\.fill_value' should be a finite number",
        ),
        (broken(lambda d: d["features"][1].update(name="age")), r"'features' should be distinct"),
        (broken(lambda d: d.update(target="age")), r"'features' should be distinct names"),
        (broken(lambda d: d.update(n_rows=-1)), r"'n_rows' should be a whole number"),
        (broken(lambda d: d.update(features=[3])), r"'features\[0\]' should be a JSON object"),
    ],
)
def test_from_dict_rejects_bad_recipes(data, message):
    with pytest.raises(ModelFileError, match=message):
        Recipe.from_dict(data)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"no such recipe file"),
        (b'{"format": "softclass-recipe", "vers', r"not valid JSON \(line 1, column"),
        (b"\x80\x04\x95 pickle", r"cannot be read as a recipe"),
        (b'{"format": "softclass-recipe"}', r"recipe\.json: the field 'version' is missing"),
    ],
)
def test_load_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "recipe.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        Recipe.load(path)


# --- stratified split ------------------------------------------------------------------------


def test_stratified_split_is_deterministic_disjoint_and_covers_every_class():
    targets = torch.tensor([0] * 10 + [1] * 5 + [2] * 2 + [3])
    train, validation = stratified_split(targets, 0.3, seed=7)
    again = stratified_split(targets, 0.3, seed=7)
    assert torch.equal(train, again[0]) and torch.equal(validation, again[1])
    assert sorted(train.tolist() + validation.tolist()) == list(range(targets.numel()))
    assert train.dtype == validation.dtype == torch.int64
    assert torch.bincount(targets[validation], minlength=4).tolist() == [3, 2, 1, 0]
    assert torch.bincount(targets[train], minlength=4).tolist() == [7, 3, 1, 1]
    other = stratified_split(targets, 0.3, seed=8)
    assert not torch.equal(validation, other[1])


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_stratified_split_keeps_each_class_quota_with_many_classes(fraction):
    # 20,000 classes of 1 to 9 rows, shuffled: every class gives round(n * fraction) rows,
    # clamped to [1, n - 1], to validation (0 for single-row classes), whatever its position.
    generator = torch.Generator().manual_seed(3)
    sizes = torch.randint(1, 10, (20_000,), generator=generator)
    targets = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
    targets = targets[torch.randperm(targets.numel(), generator=generator)]
    train, validation = stratified_split(targets, fraction, seed=11)
    assert torch.equal(
        torch.sort(torch.cat([train, validation])).values, torch.arange(targets.numel())
    )
    expected = [0 if n == 1 else min(max(round(n * fraction), 1), n - 1) for n in sizes.tolist()]
    assert torch.bincount(targets[validation], minlength=sizes.numel()).tolist() == expected
    # the rows drawn within a class depend on the seed
    other = stratified_split(targets, fraction, seed=12)[1]
    assert not torch.equal(validation, other)


def test_stratified_split_of_50000_two_row_classes_holds_one_row_of_each_out():
    # Issue 22's shape: 50,000 classes in 100,000 rows. round(2 × 0.2) = 0 is clamped to 1, so
    # every class has exactly one row on each side, and the draw is the seed's.
    targets = torch.arange(100_000) % 50_000
    train, validation = stratified_split(targets, 0.2, seed=3)
    assert torch.bincount(targets[validation], minlength=50_000).eq(1).all()
    assert torch.bincount(targets[train], minlength=50_000).eq(1).all()
    assert torch.equal(train, torch.sort(train).values)
    assert torch.equal(validation, stratified_split(targets, 0.2, seed=3)[1])
    assert not torch.equal(validation, stratified_split(targets, 0.2, seed=4)[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, True])
def test_stratified_split_fraction_must_be_inside_zero_one(fraction):
    with pytest.raises(
        ConfigError, match=r"validation_fraction=.* must be strictly between 0 and 1"
    ):
        stratified_split(torch.tensor([0, 1]), fraction, seed=0)


@pytest.mark.parametrize(
    "targets", [torch.zeros(2, 2, dtype=torch.int64), torch.tensor([0.0, 1.0])]
)
def test_stratified_split_needs_1d_integer_targets(targets):
    with pytest.raises(DataError, match=r"targets must be a 1-D tensor of class indices"):
        stratified_split(targets, 0.5, seed=0)


# --- bundled data ----------------------------------------------------------------------------


def test_bundled_iris():
    iris = load_bundled("iris")
    assert iris.shape == (150, 5)
    assert iris.columns == ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    recipe = Recipe.fit(iris)
    assert recipe.classes == ("setosa", "versicolor", "virginica")
    assert recipe.class_counts == (50, 50, 50)
    assert recipe.feature_names == tuple(iris.columns[:4])


def test_bundled_people_is_raw_money_and_learnable():
    path = bundled_path("people")
    assert '23,"$72,000",155,Boulder' in path.read_text().splitlines()[1]
    people = load_bundled("people")
    assert people.shape == (200, 4)
    recipe = Recipe.fit(people, normalization="divide", divisors=PEOPLE_DIVISORS)
    assert recipe.classes == ("Anaheim", "Boulder", "Chicago")
    torch.testing.assert_close(
        recipe.transform(people[:1]), torch.tensor([[0.23, 0.72, 0.155]]), rtol=0, atol=0
    )
    assert recipe.encode_targets(people[:1]).tolist() == [1]
    # well-separated class means: nearest class mean classifies most rows correctly
    features, targets = recipe.transform(people), recipe.encode_targets(people)
    standardized = (features - features.mean(0)) / features.std(0)
    means = torch.stack([standardized[targets == c].mean(0) for c in range(3)])
    nearest = torch.cdist(standardized, means).argmin(dim=1)
    assert (nearest == targets).float().mean().item() > 0.9


def test_unknown_bundled_name_lists_names():
    assert set(BUNDLED_NAMES) == {"iris", "people"}
    with pytest.raises(DataError, match=r"no bundled data set 'irs' \(did you mean 'iris'\?\); "):
        bundled_path("irs")


# --- fuzz: anything either loads or raises DataError -----------------------------------------

CELL = st.one_of(
    st.sampled_from(["", "1", "-2.5", "$72,000", "1,234", "NA", "nan", "inf", "abc", "x y", "?"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6),
)
NUMBER_CELL = st.sampled_from(["", "1", "-2.5", "$72,000", "1,234", " 7 ", "1e3", "NA", "0"])
TEXT_CELL = st.sampled_from(["", "red", "blue", "x y", "?", "ü", '"', "a,b", "two\nlines"])
SEPARATOR = st.sampled_from([",", ",", ";", "\t", '"', "\n", "\r\n", "", ", "])


@st.composite
def csv_bytes(draw) -> bytes:
    """CSV-like bytes: mostly well-formed tables, with odd cells, quotes, separators and bytes."""
    well_formed = draw(st.booleans())
    if well_formed:  # distinct names, a class column last: reaches Recipe.fit and transform
        n_columns = draw(st.integers(2, 4))
        header = [*(f"c{position}" for position in range(n_columns - 1)), "class"]
        kinds = [draw(st.sampled_from([NUMBER_CELL, TEXT_CELL, CELL])) for _ in header[:-1]]
        row = st.tuples(*kinds, st.sampled_from(["x", "y", "z", ""]))
        rows = draw(st.lists(row.map(list), min_size=1, max_size=8))
    else:
        n_columns = draw(st.integers(1, 4))
        names = st.sampled_from(["a", "b", "c", "", "a b", '"q"', "$1"])
        header = [draw(names) for _ in range(n_columns)]
        width = st.integers(0, 5)
        rows = draw(st.lists(width.flatmap(lambda n: st.lists(CELL, min_size=n, max_size=n))))
    lines = []
    for row in [header, *rows]:
        pieces = []
        for cell in row:
            if draw(st.booleans()):
                cell = '"' + cell.replace('"', '""') + '"'
            pieces.append(cell + ("," if well_formed else draw(SEPARATOR)))
        lines.append("".join(pieces)[:-1] if well_formed else "".join(pieces))
    data = "\n".join(lines).encode("utf-8")
    if not well_formed and draw(st.booleans()):
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(st.binary(max_size=3)) + data[position:]
    return data


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=csv_bytes(), missing=st.sampled_from(["impute", "drop"]))
def test_fuzz_read_and_fit_raise_only_data_errors(tmp_path, data, missing):
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    try:
        table = read_table(path)
        recipe = Recipe.fit(table, missing=missing)
        prepared = recipe.prepare(table)
        assert prepared.features.shape == (prepared.rows.numel(), recipe.n_features)
    except DataError:
        pass
