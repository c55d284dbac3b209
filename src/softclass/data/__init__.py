"""The data layer: reading tables, typing columns, the preprocessing recipe, splits, bundled data.

Typical use::

    from softclass.data import Recipe, read_table, stratified_split

    table = read_table("people.csv", raw=True)        # every cell as text
    recipe = Recipe.fit(table, target="city")         # types, zscore, one-hot, sorted classes
    recipe.typing_table()                             # each column: kind, role, action, counts
    prepared = recipe.prepare(table)                  # features (N, F) float32, targets (N,) int64
    train_rows, validation_rows = stratified_split(prepared.targets, 0.2, seed=0)
    recipe.save("model/recipe.json")
    ...
    recipe = Recipe.load("model/recipe.json")
    prepared = recipe.prepare(read_table("new_people.csv", raw=True), on_error="skip")
    names = recipe.decode(probabilities.argmax(dim=1))

Modules: :mod:`~softclass.data.reading` (files), :mod:`~softclass.data.column_types` (number,
boolean, date or text; decorated numbers), :mod:`~softclass.data.recipe` (fit, transform,
prepare), :mod:`~softclass.data.typing_table` (roles, ID-like columns),
:mod:`~softclass.data.features` (normalization, encoding), :mod:`~softclass.data.missing`
(missing values), :mod:`~softclass.data.target` (classes), :mod:`~softclass.data.prepared`
(rows left out), :mod:`~softclass.data.recipe_file` (save/load),
:mod:`~softclass.data.split` (stratified split), :mod:`~softclass.data.bundled` (iris, people),
:mod:`~softclass.data.messages` and :mod:`~softclass.data.checks` (how errors name rows and
columns).
"""

from softclass.data.bundled import BUNDLED_NAMES, PEOPLE_DIVISORS, bundled_path, load_bundled
from softclass.data.column_types import (
    DECIMAL_MARKS,
    KINDS,
    MISSING_MARKERS,
    ColumnType,
    TypingOptions,
    infer_types,
    type_columns,
)
from softclass.data.reading import DELIMITERS, MAX_LINE_BYTES, TABLE_SUFFIXES, read_table
from softclass.data.recipe import (
    ERROR_POLICIES,
    MISSING_POLICIES,
    NORMALIZATIONS,
    RECIPE_VERSION,
    UNKNOWN_POLICIES,
    CategoricalFeature,
    ColumnInfo,
    NumericFeature,
    PreparedTable,
    Recipe,
)
from softclass.data.split import stratified_split

__all__ = [
    "BUNDLED_NAMES",
    "DECIMAL_MARKS",
    "DELIMITERS",
    "ERROR_POLICIES",
    "KINDS",
    "MAX_LINE_BYTES",
    "MISSING_MARKERS",
    "MISSING_POLICIES",
    "NORMALIZATIONS",
    "PEOPLE_DIVISORS",
    "RECIPE_VERSION",
    "TABLE_SUFFIXES",
    "UNKNOWN_POLICIES",
    "CategoricalFeature",
    "ColumnInfo",
    "ColumnType",
    "NumericFeature",
    "PreparedTable",
    "Recipe",
    "TypingOptions",
    "bundled_path",
    "infer_types",
    "load_bundled",
    "read_table",
    "stratified_split",
    "type_columns",
]
