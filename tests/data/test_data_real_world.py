"""Real-world tables: formats, decorated numbers, roles, unknown values, bad rows, messages.

Every messy table is generated here; none is shipped.
"""

from __future__ import annotations

import bz2
import gzip
import json
import re

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softclass.data import Recipe, TypingOptions, read_table, sources, type_columns
from softclass.data.messages import MESSAGE_LIMIT
from softclass.errors import DataError
from softclass.limits import ReadLimits

pytestmark = pytest.mark.usefixtures("one_thread")


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def penguins(n_rows: int = 60, seed: int = 0) -> pl.DataFrame:
    """A raw (all text) table with an id, a name per row, money, percent, a date, a boolean."""
    generator = np.random.default_rng(seed)
    species = generator.choice(["Adelie", "Gentoo", "Chinstrap"], n_rows)
    base = {"Adelie": 1000, "Gentoo": 2000, "Chinstrap": 3000}
    return pl.DataFrame(
        {
            "id": [str(index + 1) for index in range(n_rows)],
            "name": [f"bird{index}" for index in range(n_rows)],
            "price": [f"${base[kind] + index:,}.50" for index, kind in enumerate(species)],
            "discount": [f"{value}%" for value in generator.integers(0, 60, n_rows)],
            "seen": [f"2020-{month:02d}-15" for month in generator.integers(1, 13, n_rows)],
            "tagged": generator.choice(["yes", "no"], n_rows).tolist(),
            "island": generator.choice(["Biscoe", "Dream"], n_rows).tolist(),
            "species": species.tolist(),
        }
    )


# --- reading: delimiters, TSV, compression, Parquet datasets, long rows, wide tables ----------


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_delimiter_is_sniffed(tmp_path, delimiter):
    rows = [["x1", "x2", "label"], ["1,5", "2", "a"], ["3,25", "4", "b"]]
    if delimiter == ",":
        rows = [["x1", "x2", "label"], ['"1,5"', "2", "a"], ['"3,25"', "4", "b"]]
    path = write(tmp_path, "t.csv", "\n".join(delimiter.join(row) for row in rows) + "\n")
    table = read_table(path)
    assert table.columns == ["x1", "x2", "label"]
    assert table["x1"].to_list() == [1.5, 3.25]  # a decimal comma, detected


def test_delimiter_option_overrides_sniffing_and_tsv_uses_tabs(tmp_path):
    path = write(tmp_path, "t.csv", "a;b|c\n1;2|3\n")
    assert read_table(path, delimiter="|").columns == ["a;b", "c"]
    tsv = write(tmp_path, "t.tsv", "a,b\tc\n1,5\t2\n")
    assert read_table(tsv).columns == ["a,b", "c"]
    with pytest.raises(DataError, match=r"--delimiter '::': expected one character"):
        read_table(path, delimiter="::")


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [(".csv.gz", gzip.compress), (".csv.bz2", bz2.compress), (".tsv.zst", None)],
)
def test_compressed_csv_reads_like_plain(tmp_path, suffix, compress):
    text = "a,b,label\n1,$2,x\n3,$4,y\n".replace(",", "\t" if ".tsv" in suffix else ",")
    if compress is None:
        with pa.CompressedOutputStream(str(tmp_path / f"t{suffix}"), "zstd") as stream:
            stream.write(text.encode())
        path = tmp_path / f"t{suffix}"
    else:
        path = write(tmp_path, f"t{suffix}", compress(text.encode()))
    assert read_table(path).equals(
        pl.DataFrame({"a": [1.0, 3.0], "b": [2.0, 4.0], "label": ["x", "y"]})
    )


def test_parquet_directory_is_one_table(tmp_path):
    folder = tmp_path / "data.parquet"
    folder.mkdir()
    pl.DataFrame({"a": [1, 2], "label": ["x", "y"]}).write_parquet(folder / "part-0.parquet")
    pl.DataFrame({"a": [3], "label": ["x"]}).write_parquet(folder / "part-1.parquet")
    table = read_table(folder)
    assert sorted(table["a"].to_list()) == [1.0, 2.0, 3.0]
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "x.parquet").write_bytes((folder / "part-0.parquet").read_bytes())
    assert read_table(plain).height == 2


@pytest.mark.parametrize(
    ("content", "row"), [("a,b\n1,2\n{long},3\n4,5\n", 3), ("{long},b\n1,2\n", 1)]
)
def test_a_row_longer_than_the_limit_is_one_line_naming_the_limit(
    tmp_path, monkeypatch, content, row
):
    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 4096)
    path = write(tmp_path, "long.csv", content.format(long="x" * 10_000))
    with pytest.raises(DataError) as caught:
        read_table(path)
    message = str(caught.value)
    assert f"row {row} is longer than" in message and "MAX_LINE_BYTES" in message
    assert "\n" not in message and len(message) <= MESSAGE_LIMIT


def test_wide_table_reads_and_repeated_names_are_listed_briefly(tmp_path):
    n_columns = 20_000
    header = ",".join(f"c{index}" for index in range(n_columns))
    row = ",".join(str(index % 7) for index in range(n_columns))
    path = write(tmp_path, "wide.csv", f"{header}\n{row}\n{row}\n")
    # Past the default column limit (10,000): refused in one line unless raised (--max-columns).
    with pytest.raises(DataError, match=r"20,000 columns, more than the limit of 10,000"):
        read_table(path)
    wide = ReadLimits(max_columns=n_columns)
    assert read_table(path, limits=wide).shape == (2, n_columns)
    repeated = ",".join(f"c{index % (n_columns // 2)}" for index in range(n_columns))
    path = write(tmp_path, "dup.csv", f"{repeated}\n{row}\n")
    with pytest.raises(
        DataError, match=r"repeats the column name\(s\) 'c0', 'c1', .* and \d+ more"
    ):
        read_table(path, limits=wide)


def test_unsupported_compressed_parquet_is_refused(tmp_path):
    path = write(tmp_path, "t.parquet.gz", b"x")
    with pytest.raises(DataError, match=r"unsupported file type '\.parquet\.gz'"):
        read_table(path)


# --- typing: decorated numbers, decimal commas, booleans, dates, missing markers --------------


@pytest.mark.parametrize(
    ("cells", "values"),
    [
        (["45%", "12.5%"], [0.45, 0.125]),
        (["1.234,56", "7,5"], [1234.56, 7.5]),
        (["7 858", "1\u00a0000"], [7858.0, 1000.0]),
        (["1'234.5", "12"], [1234.5, 12.0]),
        (["12,50 €", "€3"], [12.5, 3.0]),
        (["USD 1,000", "-$5"], [1000.0, -5.0]),
        (["５.１", "٣"], [5.1, 3.0]),
    ],
)
def test_decorated_numbers_parse(cells, values):
    column = type_columns(pl.DataFrame({"x": cells}))["x"]
    assert column.dtype == pl.Float64
    assert column.to_list() == pytest.approx(values)


def test_decimal_comma_forced_and_ambiguity_noted():
    table = pl.DataFrame({"x": ["1,234", "5"], "y": ["a", "b"]})
    assert type_columns(table)["x"].to_list() == [1234.0, 5.0]
    forced = type_columns(table, options=TypingOptions(decimal=","))
    assert forced["x"].to_list() == [1.234, 5.0]
    recipe = Recipe.fit(table)
    assert any("'1,234' is read as 1234; pass --decimal ," in note for note in recipe.notes)
    with pytest.raises(DataError, match=r"--decimal ';' is not a decimal mark"):
        TypingOptions(decimal=";")


def test_numbers_that_could_be_dot_grouped_thousands_are_noted():
    table = pl.DataFrame({"x": ["1.234", "5.678", None, "2.500"], "y": ["a", "b", "a", "b"]})
    notes = Recipe.fit(table, missing="impute").notes
    assert any("'1.234' is read as 1.234; pass --decimal ," in note for note in notes)
    plain = pl.DataFrame({"x": ["1.234", "0.5"], "y": ["a", "b"]})
    assert not any("--decimal" in note for note in Recipe.fit(plain).notes)
    forced = type_columns(table, options=TypingOptions(decimal=","))["x"]
    assert forced.to_list() == [1234.0, 5678.0, None, 2500.0]


def test_a_number_declared_missing_is_missing():
    table = pl.DataFrame({"x": ["1", "-999", "3"], "y": ["a", "b", "a"]})
    typed = type_columns(table, options=TypingOptions(na_values=("-999",)))
    assert typed["x"].to_list() == [1.0, None, 3.0]


def test_mixed_decimal_marks_are_an_error_naming_both():
    with pytest.raises(DataError, match=r"column 'x' writes numbers with '\.' .* and with ','"):
        type_columns(pl.DataFrame({"x": ["1.5", "2,5"]}))


def test_booleans_and_dates_become_numeric_features():
    raw = penguins()
    recipe = Recipe.fit(raw, target="species", ids=["id"])
    names = recipe.feature_names
    assert "tagged" in names and {"seen.year", "seen.month", "seen.day_of_week"} <= set(names)
    kinds = {info.name: (info.type.kind, info.role) for info in recipe.columns}
    assert kinds["tagged"] == ("boolean", "feature")
    assert kinds["seen"] == ("date", "feature") and kinds["id"] == ("number", "id")
    features = recipe.transform(raw)
    month = features[:, names.index("seen.month")]
    expected = raw["seen"].str.slice(5, 2).cast(pl.Float64).to_numpy()
    month_feature = recipe.features[names.index("seen.month")]
    torch.testing.assert_close(
        month.double(),
        torch.from_numpy((expected - month_feature.offset) / month_feature.scale),
        rtol=1e-6,
        atol=1e-6,
    )


def test_date_formats_and_parquet_dates(tmp_path):
    table = pl.DataFrame({"d": ["15.03.2021", "01.12.2020"], "y": ["a", "b"]})
    assert type_columns(table)["d"].dt.month().to_list() == [3, 12]
    path = tmp_path / "d.parquet"
    pl.select(d=pl.date(2021, 3, 15), y=pl.lit("a")).write_parquet(path)
    assert read_table(path)["d"].dt.year().to_list() == [2021]


def test_na_values_declare_extra_missing_markers(tmp_path):
    path = write(tmp_path, "t.csv", "a,b,label\n1,-,x\nn/a,2,y\n3,4,x\n")
    assert read_table(path).schema["a"] == pl.String  # "1", "n/a", "3": three categories
    table = read_table(path, typing=TypingOptions(na_values=("n/a", "-")))
    assert table["a"].to_list() == [1.0, None, 3.0] and table["b"].to_list() == [None, 2.0, 4.0]
    recipe = Recipe.fit(
        read_table(path, raw=True), missing="impute", typing=TypingOptions(na_values=("n/a", "-"))
    )
    assert "n/a" in Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))).missing_markers
    assert recipe.transform(pl.DataFrame({"a": ["n/a"], "b": ["-"]})).isfinite().all()


@pytest.mark.parametrize("text", ["3.5e38", "1e300", "-1e39"])
def test_numbers_beyond_float32_are_an_error_naming_row_and_column(text):
    table = pl.DataFrame({"x": ["1", text, "2"], "y": ["a", "b", "a"]})
    with pytest.raises(DataError, match=r"row 3, column 'x': .* is outside float32's range"):
        Recipe.fit(table)
    recipe = Recipe.fit(pl.DataFrame({"x": ["1", "2"], "y": ["a", "b"]}))
    with pytest.raises(DataError, match=r"row 2, column 'x': .* is outside float32's range"):
        recipe.transform(pl.DataFrame({"x": [text]}))
    prepared = recipe.prepare(pl.DataFrame({"x": [text, "1"]}), on_error="skip")
    assert prepared.rows.tolist() == [1] and prepared.skipped[0][0] == 0


# --- roles: ID-like columns, --keep, --drop, --id ----------------------------------------------


def test_id_like_columns_are_dropped_with_a_note_unless_kept():
    raw = penguins()
    recipe = Recipe.fit(raw, target="species")
    roles = {info.name: info.role for info in recipe.columns}
    assert roles["name"] == "dropped" and roles["id"] == "dropped"  # text ids, counting integers
    assert any("dropped ID-like column(s) 'id', 'name'" in note for note in recipe.notes)
    kept = Recipe.fit(raw, target="species", keep=["id"], drop=["name"])
    assert "id" in kept.feature_names
    assert {info.name: info.action for info in kept.columns}["name"] == "dropped (--drop)"
    with pytest.raises(DataError, match=r"--keep 'nmae': no such column \(did you mean 'name'\?\)"):
        Recipe.fit(raw, target="species", keep=["nmae"])
    with pytest.raises(DataError, match=r"--drop 'species': that is the target column"):
        Recipe.fit(raw, target="species", drop=["species"])


def test_small_tables_keep_every_column():
    table = pl.DataFrame({"name": ["a", "b", "c", "d"], "y": ["x", "y", "x", "y"]})
    assert Recipe.fit(table).feature_names == ("name=a", "name=b", "name=c", "name=d")


# --- unknown categories and classes, bad rows, predict ------------------------------------------


def test_unknown_categories_are_zeros_and_counted_or_refused():
    recipe = Recipe.fit(pl.DataFrame({"island": ["Biscoe", "Dream"], "y": ["a", "b"]}))
    new = pl.DataFrame({"island": ["Anvers", "Dream", "Anvers", "Torgersen"]})
    prepared = recipe.prepare(new)
    assert prepared.features.tolist() == [[0, 0], [0, 1], [0, 0], [0, 0]]
    assert prepared.unknown_categories == {"island": 3}
    assert "encoded as all zeros (cells per column): 'island' 3" in prepared.warnings[-1]
    with pytest.raises(DataError, match=r"row 2, column 'island': unknown category 'Anvers'"):
        recipe.prepare(new, unknown="error")
    skipped = recipe.prepare(new, unknown="error", on_error="skip")
    assert skipped.rows.tolist() == [1]


def test_skip_reports_each_bad_row_and_predicts_the_others():
    recipe = Recipe.fit(
        pl.DataFrame({"a": ["1", "2", "3"], "b": ["x", "y", "x"], "y": ["p", "q", "p"]}),
        missing="error",
    )
    new = pl.DataFrame({"a": ["1", "abc", "", "4"], "b": ["x", "y", "y", "x"]})
    with pytest.raises(DataError, match=r"row 3, column 'a': 'abc' is not a number"):
        recipe.prepare(new)
    prepared = recipe.prepare(new, on_error="skip")
    assert prepared.rows.tolist() == [0, 3]
    assert prepared.skipped == (
        (1, "column 'a': 'abc' is not a number"),
        (2, "column 'a': missing value"),
    )
    assert prepared.warnings[-1].startswith("skipped 2 row(s) (--on-error skip): row 3 (")
    with pytest.raises(DataError, match=r"no row is left: all 1 rows were skipped"):
        recipe.prepare(new[1:2], on_error="skip")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unknown": "maybe"}, r"--unknown 'maybe' is not allowed; expected one of 'ignore'"),
        ({"on_error": "retry"}, r"--on-error 'retry' is not allowed; expected one of 'error'"),
    ],
)
def test_prepare_option_errors_name_the_flags(options, message):
    recipe = Recipe.fit(pl.DataFrame({"a": [1.0, 2.0], "y": ["p", "q"]}))
    with pytest.raises(Exception, match=message):
        recipe.prepare(pl.DataFrame({"a": [1.0]}), **options)


def test_labels_are_ignored_unless_asked_and_unknown_ones_counted():
    recipe = Recipe.fit(pl.DataFrame({"a": [1.0, 2.0, 3.0], "y": ["p", "q", "p"]}))
    new = pl.DataFrame({"a": [1.0, 2.0, 3.0], "y": ["p", "Denver", None]})
    assert recipe.prepare(new, use_target=False).targets is None
    assert recipe.label_indices(new).tolist() == [0, -1, -1]
    numeric = Recipe.fit(pl.DataFrame({"a": [1.0, 2.0, 3.0], "y": ["1", "2", "1"]}))
    assert numeric.label_indices(pl.DataFrame({"y": ["2", "x", "7"]})).tolist() == [1, -1, -1]


# --- target sanity ---------------------------------------------------------------------------


def test_a_continuous_target_is_refused_with_the_flag_to_use():
    table = pl.DataFrame(
        {"x": [float(i % 3) for i in range(100)], "y": [i * 0.37 for i in range(100)]}
    )
    with pytest.raises(
        DataError,
        match=r"'y' \(the last column, .*\) looks continuous: 100 "
        r"distinct numbers in 100 rows.*--target COL",
    ):
        Recipe.fit(table)


def test_default_numeric_target_and_single_row_classes_are_noted():
    table = pl.DataFrame(
        {"x": [1.0, 2.0, 3.0, 4.0, 5.0], "year": ["2007", "2008", "2007", "2008", "2009"]}
    )
    notes = Recipe.fit(table).notes
    assert any(
        note.startswith("no --target given: predicting the last column 'year'") for note in notes
    )
    assert any("1 class(es) with a single row ('2009')" in note for note in notes)


# --- the typing table and the saved recipe ----------------------------------------------------


def test_typing_table_round_trips_and_version_1_recipes_load(tmp_path):
    recipe = Recipe.fit(penguins(), target="species", ids=["id"], drop=["name"])
    loaded = Recipe.load(recipe.save(tmp_path / "recipe.json"))
    assert loaded == recipe and loaded.typing_table() == recipe.typing_table()
    rows = {row["name"]: row for row in recipe.typing_table()}
    assert rows["species"]["role"] == "target" and rows["species"]["action"] == "target, 3 classes"
    assert rows["price"]["kind"] == "number" and rows["discount"]["n_distinct"] > 1
    assert rows["name"]["action"] == "dropped (--drop)"
    torch.testing.assert_close(loaded.transform(penguins()), recipe.transform(penguins()))

    plain = Recipe.fit(
        pl.DataFrame({"a": ["$1", "$2", "$4"], "c": ["u", "v", "u"], "y": ["p", "q", "p"]})
    )
    version_1 = plain.to_dict()
    for key in ("columns", "id_columns", "missing_markers"):
        del version_1[key]
    version_1["version"] = 1
    old = Recipe.from_dict(version_1)
    assert old.columns == () and old.transform(pl.DataFrame({"a": ["$3"], "c": ["v"]})).shape == (
        1,
        3,
    )


def test_messages_stay_short_on_wide_tables():
    wide = pl.DataFrame({f"column_{index}": [1.0, 2.0] for index in range(2000)}).with_columns(
        y=pl.Series(["a", "b"])
    )
    with pytest.raises(DataError) as caught:
        Recipe.fit(wide, target="label")
    assert len(str(caught.value)) <= MESSAGE_LIMIT and "… and 1993 more" in str(caught.value)
    recipe = Recipe.fit(wide)
    with pytest.raises(DataError) as caught:
        recipe.transform(wide.select("y"))
    assert len(str(caught.value)) <= MESSAGE_LIMIT


# --- properties ------------------------------------------------------------------------------

CELL = st.sampled_from(
    [
        "",
        "1",
        "-2.5",
        "$72,000",
        "1.234,56",
        "45%",
        "7 858",
        "yes",
        "no",
        "2020-01-02",
        "abc",
        "NA",
        "nan",
        "3.5e38",
        "５",
        '"',
        ";",
        "\t",
        "x y",
    ]
)


@st.composite
def csv_text(draw) -> bytes:
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    n_columns = draw(st.integers(1, 4))
    rows = draw(st.lists(st.lists(CELL, min_size=n_columns, max_size=n_columns), max_size=6))
    header = [f"c{index}" for index in range(n_columns)]
    lines = [delimiter.join(header)]
    for row in rows:
        lines.append(delimiter.join(row))
    return ("\n".join(lines) + draw(st.sampled_from(["", "\n"]))).encode()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=csv_text(), suffix=st.sampled_from([".csv", ".tsv", ".csv.gz"]))
def test_any_csv_text_loads_or_raises_the_projects_error(tmp_path, data, suffix):
    path = tmp_path / f"t{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    try:
        raw = read_table(path, raw=True)
        recipe = Recipe.fit(raw, missing="impute")
        prepared = recipe.prepare(raw, on_error="skip")
        assert prepared.features.shape[1] == recipe.n_features
    except DataError as error:
        assert "\n" not in str(error) and len(str(error)) <= 2 * MESSAGE_LIMIT


VALUE = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda value: f"{value:.3f}"),
    st.sampled_from(["red", "blue", "green", "yes", "no", "2021-05-06", "$1,250", "12%", ""]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(columns=st.lists(st.lists(VALUE, min_size=3, max_size=3), min_size=1, max_size=4))
def test_csv_and_parquet_are_typed_the_same(tmp_path, columns):
    raw = pl.DataFrame({f"c{index}": values for index, values in enumerate(columns)})
    csv_path, parquet_path = tmp_path / "t.csv", tmp_path / "t.parquet"
    raw.write_csv(csv_path)
    raw.write_parquet(parquet_path)
    try:
        from_csv = read_table(csv_path)
    except DataError as error:
        with pytest.raises(DataError, match=re.escape(str(error).split(": ", 1)[1])):
            read_table(parquet_path)
        return
    assert from_csv.equals(read_table(parquet_path))


@settings(max_examples=40, deadline=None)
@given(
    order=st.permutations(["a", "b", "c", "d"]),
    extra=st.booleans(),
    missing=st.sampled_from([None, "a", "c"]),
)
def test_predict_on_reordered_extra_and_missing_columns(order, extra, missing):
    train = pl.DataFrame(
        {
            "a": ["1", "2", "3", "4"],
            "b": ["x", "y", "x", "y"],
            "c": ["1%", "5%", "2%", "9%"],
            "d": ["p", "q", "p", "q"],
        }
    )
    recipe = Recipe.fit(train)
    new = train.select(order)
    if extra:
        new = new.with_columns(extra=pl.lit("z"))
    if missing is not None:
        with pytest.raises(DataError, match=rf"lacks the feature column\(s\) '{missing}'"):
            recipe.prepare(new.drop(missing))
        return
    prepared = recipe.prepare(new)
    torch.testing.assert_close(prepared.features, recipe.transform(train))
    assert prepared.targets.tolist() == [0, 1, 0, 1]
    assert any("'extra'" in warning for warning in prepared.warnings) == extra


# --- the command line ------------------------------------------------------------------------


def test_cli_shows_the_typing_table_and_carries_ids_into_predictions(run, tmp_path):
    raw = penguins(90)
    path = tmp_path / "penguins.csv"
    raw.write_csv(path, separator=";")
    model = tmp_path / "model"
    code, out, err = run(
        "train", path, "--out", model, "--epochs", "2", "--target", "species", "--id", "id"
    )
    assert code == 0, err
    assert "8 columns; target 'species': 3 classes (Adelie, Chinstrap, Gentoo)" in out
    assert "dropped: ID-like" in out and "id: carried to predictions" in out
    assert "dropped ID-like column(s) 'name'" in err
    new = raw.head(3).with_columns(pl.Series("island", ["Anvers", "Dream", "Biscoe"]))
    new = new.with_columns(pl.Series("price", ["$1,000.50", "lots", "$3,000.50"]))
    new_path = tmp_path / "new.csv"
    new.write_csv(new_path)
    code, out, err = run("predict", model, new_path)
    assert code == 2 and "row 3 (column 'price': 'lots' is not a number)" in err
    assert "1 of 3 row(s)" in err and pl.read_csv(out.encode()).height == 3  # every row written
    code, out, err = run("predict", model, new_path, "--on-error", "skip", "--accuracy")
    assert code == 0, err
    predictions = pl.read_csv(out.encode())
    assert predictions["row"].to_list() == [2, 3, 4] and predictions["id"].to_list() == [1, 2, 3]
    assert predictions["predicted"].is_null().to_list() == [False, True, False]
    assert predictions["reason"][1] == "column 'price': 'lots' is not a number"
    assert "1 of 3 row(s) of " in err and "have no prediction: row 3 (column 'price'" in err
    assert "'island' 1" in err and "accuracy" in err


def test_compare_json_carries_the_typing_table(run, tmp_path):
    code, out, err = run(
        "compare", "--json", "--epochs", "1", "--design", "AB", "--out", tmp_path / "o"
    )
    assert code == 0, err
    report = json.loads(out)
    assert [row["name"] for row in report["columns"]][-1] == "species"
    assert report["columns"][-1]["role"] == "target"
