"""The data layer: reading tables, typing columns, the preprocessing recipe, splits, bundled data.

Typical use::

    from softclass.data import Recipe, read_table, stratified_split

    table = read_table("people.csv")                  # typed polars DataFrame
    recipe = Recipe.fit(table, target="city")         # zscore, one-hot, sorted classes
    prepared = recipe.prepare(table)                  # features (N, F) float32, targets (N,) int64
    train_rows, validation_rows = stratified_split(prepared.targets, 0.2, seed=0)
    recipe.save("model/recipe.json")
    ...
    recipe = Recipe.load("model/recipe.json")
    features = recipe.transform(read_table("new_people.csv"))
    names = recipe.decode(probabilities.argmax(dim=1))

Modules: :mod:`~softclass.data.reading` (files), :mod:`~softclass.data.column_types` (numeric or
categorical, money parsing), :mod:`~softclass.data.recipe` (normalization, encoding, missing
values, save/load), :mod:`~softclass.data.split` (stratified split), :mod:`~softclass.data.bundled`
(iris, people) and :mod:`~softclass.data.messages` (how errors name rows and columns).
"""

from softclass.data.bundled import BUNDLED_NAMES, PEOPLE_DIVISORS, bundled_path, load_bundled
from softclass.data.column_types import MISSING_MARKERS, type_columns
from softclass.data.reading import TABLE_SUFFIXES, read_table
from softclass.data.recipe import (
    MISSING_POLICIES,
    NORMALIZATIONS,
    RECIPE_VERSION,
    CategoricalFeature,
    NumericFeature,
    PreparedTable,
    Recipe,
)
from softclass.data.split import stratified_split

__all__ = [
    "BUNDLED_NAMES",
    "MISSING_MARKERS",
    "MISSING_POLICIES",
    "NORMALIZATIONS",
    "PEOPLE_DIVISORS",
    "RECIPE_VERSION",
    "TABLE_SUFFIXES",
    "CategoricalFeature",
    "NumericFeature",
    "PreparedTable",
    "Recipe",
    "bundled_path",
    "load_bundled",
    "read_table",
    "stratified_split",
    "type_columns",
]
