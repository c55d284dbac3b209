"""Checks of the names and choices a caller passes to the data layer, with their messages."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from softclass.data.messages import clip, did_you_mean, quoted_names
from softclass.errors import ConfigError, DataError

_OPTIONS = {  # the CLI flag of each option, for messages
    "normalization": "--normalize",
    "missing": "--missing",
    "unknown": "--unknown",
    "on_error": "--on-error",
}


def source_index(position: int, keep: pl.Series | None) -> int:
    """The row index in the caller's table of row ``position`` of a table filtered by ``keep``."""
    return int(position) if keep is None else int(keep.arg_true()[int(position)])


def check_choice(option: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{_OPTIONS.get(option, option)} {clip(repr(value))} is not allowed; expected one of "
            f"{quoted_names(allowed)}"
        )


MAX_BINS = 256
"""The most quantile bins a number may get (``--bins``)."""


def check_bins(bins: object) -> None:
    """``bins`` is a whole number from 0 to MAX_BINS (``--bins``)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or not 0 <= bins <= MAX_BINS:
        raise ConfigError(
            f"--bins {clip(repr(bins))} is not allowed; expected a whole number from 0 (no bins) "
            f"to {MAX_BINS}"
        )


def check_has_columns(table: pl.DataFrame, names: Sequence[object], role: str) -> None:
    present = set(table.columns)
    absent = [name for name in names if name not in present]
    if not absent:
        return
    available = f"the table's columns are {quoted_names(table.columns)}"
    if role == "the target":
        name = absent[0]
        hint = did_you_mean(name, table.columns) if isinstance(name, str) else ""
        raise DataError(
            f"no column {clip(repr(name))} to use as the target{hint}; {available} (--target "
            "COL chooses it)"
        )
    raise DataError(f"the table lacks the {role} column(s) {quoted_names(absent)}; {available}")


def check_named_columns(
    table: pl.DataFrame, names: Sequence[str], option: str, target: str | None
) -> None:
    """Every name a column of ``table``, and not the ``target`` (None: may be the target)."""
    present = set(table.columns)
    for name in names:
        if name not in present:
            raise DataError(
                f"{option} {clip(repr(name))}: no such column{did_you_mean(name, table.columns)}"
                f"; the table's columns are {quoted_names(table.columns)}"
            )
        if name == target:
            raise DataError(f"{option} {clip(repr(name))}: that is the target column")
