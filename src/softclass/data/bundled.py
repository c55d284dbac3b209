"""Data sets shipped inside the package, so that the main commands run offline.

* ``"iris"``: Fisher's Iris, 150 rows; numeric ``sepal_length``, ``sepal_width``,
  ``petal_length``, ``petal_width`` (cm) and the class ``species`` (setosa, versicolor,
  virginica), written from scikit-learn's bundled copy by ``scripts/make_iris.py``.
* ``"people"``: the seed's example, 200 rows (the seed's own row first, 199 generated) of
  ``age``, ``income`` (written like ``$72,000``), ``weight`` and the class ``city`` (Anaheim,
  Boulder, Chicago), made by ``scripts/make_people.py`` with a fixed seed. The seed normalizes it
  by dividing by constants: :data:`PEOPLE_DIVISORS`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import polars as pl

from softclass.data.messages import did_you_mean, quoted_names
from softclass.data.reading import read_table
from softclass.errors import DataError

BUNDLED_NAMES = ("iris", "people")
"""Names accepted by :func:`bundled_path` and :func:`load_bundled`."""

PEOPLE_DIVISORS = {"age": 100.0, "income": 100_000.0, "weight": 1000.0}
"""The seed's normalization of the people data: age/100, income/100000, weight/1000."""


def bundled_path(name: str) -> Path:
    """Path of the bundled CSV file called ``name`` ("iris" or "people").

    Raises:
        DataError: ``name`` is not a bundled data set (the message lists the names).
    """
    if name not in BUNDLED_NAMES:
        raise DataError(
            f"no bundled data set {name!r}{did_you_mean(name, BUNDLED_NAMES)}; the bundled data "
            f"sets are {quoted_names(BUNDLED_NAMES)}"
        )
    return Path(str(resources.files(__package__).joinpath(f"{name}.csv")))


def load_bundled(name: str) -> pl.DataFrame:
    """The bundled data set ``name`` read by :func:`~softclass.data.read_table` (class last)."""
    return read_table(bundled_path(name))
