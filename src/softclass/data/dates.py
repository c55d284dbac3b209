"""Dates in text cells: the formats tried, the one a column uses, and reading by it."""

from __future__ import annotations

import polars as pl

DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d",
    "%d.%m.%Y",
    "%m/%d/%Y",
    "%d/%m/%Y",
)
"""Date and date-time formats (polars/chrono ``strptime`` syntax) tried in this order."""

_DATE_LIKE = r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"
_SAMPLE = 256  # cells checked first, so that a column of another kind costs little


def date_format_of(distinct: pl.Series) -> str | None:
    """The first of :data:`DATE_FORMATS` reading every distinct text, or None."""
    if distinct.len() == 0 or not bool(distinct.head(_SAMPLE).str.contains(_DATE_LIKE).all()):
        return None
    if not bool(distinct.str.contains(_DATE_LIKE).all()):
        return None
    for date_format in DATE_FORMATS:
        if parse_dates(distinct, date_format).null_count() == 0:
            return date_format
    return None


def parse_dates(text: pl.Series, date_format: str | None) -> pl.Series:
    if date_format is None:
        return pl.Series(text.name, [None] * text.len(), dtype=pl.Datetime("us"))
    return text.str.to_datetime(date_format, strict=False, time_unit="us", exact=True)
