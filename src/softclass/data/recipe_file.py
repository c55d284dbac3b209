"""The recipe file: a recipe as JSON, and the field-by-field check of a file being loaded.

Saved with a format name and version (:data:`RECIPE_VERSION`; version 1 files still load);
loading only reads and checks data, it never executes anything.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from softclass.data.column_types import (
    BOOLEAN_PAIRS,
    DECIMAL_MARKS,
    KINDS,
    ColumnType,
)
from softclass.data.features import (
    DATE_PARTS,
    NORMALIZATIONS,
    OTHER_CATEGORY,
    CategoricalFeature,
    Feature,
    NumericFeature,
)
from softclass.data.messages import quoted_names
from softclass.data.missing import INDICATOR_PART, MISSING_POLICIES
from softclass.data.typing_table import ROLES, ColumnInfo
from softclass.errors import ModelFileError

RECIPE_FORMAT = "softclass-recipe"
RECIPE_VERSION = 3
"""Version 2 added the column typing table, id columns, missing markers and date features;
version 3 the missing indicators (numeric features with part "missing")."""


def recipe_to_dict(recipe: Any) -> dict[str, Any]:
    """The JSON-safe form of a :class:`~softclass.data.recipe.Recipe`, with format and version."""
    return {
        "format": RECIPE_FORMAT,
        "version": RECIPE_VERSION,
        "target": recipe.target,
        "classes": list(recipe.classes),
        "class_counts": list(recipe.class_counts),
        "normalization": recipe.normalization,
        "missing": recipe.missing,
        "n_rows": recipe.n_rows,
        "features": [feature_to_dict(feature) for feature in recipe.features],
        "columns": [info.to_dict() for info in recipe.columns],
        "id_columns": list(recipe.id_columns),
        "missing_markers": list(recipe.missing_markers),
    }


def read_recipe_json(path: str | Path) -> Any:
    """The JSON data of a recipe file, unchecked.

    Raises:
        ModelFileError: the file is missing, not UTF-8 or not JSON.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{path}: cannot be read as a recipe: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelFileError(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
            "the recipe file is damaged or incomplete"
        ) from None
    return data


def feature_to_dict(feature: Feature) -> dict[str, Any]:
    if isinstance(feature, NumericFeature):
        data = {
            "name": feature.name,
            "kind": feature.kind,
            "offset": feature.offset,
            "scale": feature.scale,
            "fill_value": feature.fill_value,
            "mean": feature.mean,
            "std": feature.std,
            "minimum": feature.minimum,
            "maximum": feature.maximum,
        }
        if feature.column is not None:
            data.update(column=feature.column, part=feature.part)
        if feature.clip is not None:
            data["clip"] = feature.clip
        if feature.edges:
            data["edges"] = list(feature.edges)
        return data
    return {
        "name": feature.name,
        "kind": feature.kind,
        "categories": list(feature.categories),
        "counts": list(feature.counts),
        "fill_value": feature.fill_value,
        **({"other": True} if feature.other else {}),
    }


class _RecipeReader:
    """Checks a recipe dictionary field by field; every problem is a ModelFileError."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, expected: str, value: object) -> ModelFileError:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return ModelFileError(
            f"{self.source}: field {field!r} should be {expected}, got {shown}; the recipe file "
            "is damaged or was not written by softclass"
        )

    def field(self, data: dict[str, Any], key: str, where: str) -> Any:
        if key not in data:
            raise ModelFileError(
                f"{self.source}: the field {where + key!r} is missing; the recipe file is "
                "incomplete"
            )
        return data[key]

    def text(self, data: dict[str, Any], key: str, where: str = "") -> str:
        value = self.field(data, key, where)
        if not isinstance(value, str) or not value:
            raise self.fail(where + key, "a non-empty string", value)
        return value

    def number(self, data: dict[str, Any], key: str, where: str = "") -> float:
        value = self.field(data, key, where)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(where + key, "a finite number", value)
        return float(value)

    def clip(self, data: dict[str, Any], where: str) -> float | None:
        """A numeric feature's smooth-clipping bound: absent (files before "robust") is None."""
        if "clip" not in data:
            return None
        value = self.number(data, "clip", where)
        if not value > 0:
            raise self.fail(where + "clip", "a positive number", value)
        return value

    def edges(self, data: dict[str, Any], where: str) -> tuple[float, ...]:
        """A numeric feature's bin edges: absent (files before ``bins``) is ()."""
        if "edges" not in data:
            return ()
        values = data["edges"]
        numbers = isinstance(values, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        )
        if not numbers or len(values) < 3 or any(a >= b for a, b in itertools.pairwise(values)):
            raise self.fail(where + "edges", "3 or more increasing finite numbers", values)
        return tuple(float(value) for value in values)

    def count(self, data: dict[str, Any], key: str, where: str = "") -> int:
        value = self.field(data, key, where)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(where + key, "a whole number ≥ 0", value)
        return value

    def texts(self, data: dict[str, Any], key: str, where: str = "") -> tuple[str, ...]:
        value = self.field(data, key, where)
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(item, str) for item in value)
            or len(set(value)) != len(value)
        ):
            raise self.fail(where + key, "a non-empty list of distinct strings", value)
        return tuple(value)

    def counts(
        self, data: dict[str, Any], key: str, length: int, where: str = ""
    ) -> tuple[int, ...]:
        value = self.field(data, key, where)
        if (
            not isinstance(value, list)
            or len(value) != length
            or not all(isinstance(item, int) and not isinstance(item, bool) for item in value)
            or any(item < 0 for item in value)
        ):
            raise self.fail(where + key, f"a list of {length} whole numbers ≥ 0", value)
        return tuple(value)

    def fields(self, data: Any) -> dict[str, Any]:
        """The keyword arguments of the recipe that ``data`` describes."""
        if not isinstance(data, dict):
            raise self.fail("(top level)", "a JSON object", data)
        if data.get("format") != RECIPE_FORMAT:
            raise ModelFileError(
                f"{self.source}: not a softclass recipe (field 'format' is "
                f"{data.get('format')!r}, expected {RECIPE_FORMAT!r})"
            )
        version = self.count(data, "version")
        if version not in (1, 2, RECIPE_VERSION):
            raise ModelFileError(
                f"{self.source}: recipe format version {version} cannot be read by this softclass, "
                f"which reads versions 1 to {RECIPE_VERSION}"
                + ("; upgrade softclass" if version > RECIPE_VERSION else "")
            )
        normalization = self.text(data, "normalization")
        if normalization not in NORMALIZATIONS:
            raise self.fail(
                "normalization", f"one of {quoted_names(NORMALIZATIONS)}", normalization
            )
        missing = self.text(data, "missing")
        if missing not in MISSING_POLICIES:
            raise self.fail("missing", f"one of {quoted_names(MISSING_POLICIES)}", missing)
        classes = self.texts(data, "classes")
        if len(classes) < 2:
            raise self.fail("classes", "at least two class names", list(classes))
        raw_features = self.field(data, "features", "")
        if not isinstance(raw_features, list) or not raw_features:
            raise self.fail("features", "a non-empty list", raw_features)
        features = tuple(
            self.feature(item, f"features[{position}].", missing)
            for position, item in enumerate(raw_features)
        )
        target = self.text(data, "target")
        names = [feature.name for feature in features]
        if len(set(names)) != len(names) or target in names:
            raise self.fail("features", "distinct names different from the target", names)
        extra: dict[str, Any] = {}
        if version >= 2:
            raw_columns = self.field(data, "columns", "")
            if not isinstance(raw_columns, list):
                raise self.fail("columns", "a list", raw_columns)
            extra["columns"] = tuple(
                self.column(item, f"columns[{position}].")
                for position, item in enumerate(raw_columns)
            )
            extra["id_columns"] = self.names(data, "id_columns")
            extra["missing_markers"] = self.names(data, "missing_markers", allow_empty=True)
        return dict(
            target=target,
            classes=classes,
            class_counts=self.counts(data, "class_counts", len(classes)),
            features=features,
            normalization=normalization,
            missing=missing,
            n_rows=self.count(data, "n_rows"),
            **extra,
        )

    def names(self, data: dict[str, Any], key: str, allow_empty: bool = False) -> tuple[str, ...]:
        value = self.field(data, key, "")
        if not isinstance(value, list) or not all(
            isinstance(item, str) and (item or allow_empty) for item in value
        ):
            raise self.fail(key, "a list of strings", value)
        return tuple(value)

    def column(self, data: Any, where: str) -> ColumnInfo:
        if not isinstance(data, dict):
            raise self.fail(where.rstrip("."), "a JSON object", data)
        kind = self.text(data, "kind", where)
        if kind not in KINDS:
            raise self.fail(where + "kind", f"one of {quoted_names(KINDS)}", kind)
        role = self.text(data, "role", where)
        if role not in ROLES:
            raise self.fail(where + "role", f"one of {quoted_names(ROLES)}", role)
        decimal = self.text(data, "decimal", where)
        if decimal not in DECIMAL_MARKS:
            raise self.fail(where + "decimal", "'.' or ','", decimal)
        date_format = self.field(data, "date_format", where)
        if date_format is not None and (not isinstance(date_format, str) or not date_format):
            raise self.fail(where + "date_format", "null or a format string", date_format)
        boolean_texts = tuple(self.texts(data, "boolean_texts", where))
        if boolean_texts not in BOOLEAN_PAIRS:
            raise self.fail(where + "boolean_texts", f"one of {list(BOOLEAN_PAIRS)}", boolean_texts)
        words_as_missing = data.get("words_as_missing", False)
        if not isinstance(words_as_missing, bool):
            raise self.fail(where + "words_as_missing", "true or false", words_as_missing)
        note = self.field(data, "note", where)
        action = self.field(data, "action", where)
        if not isinstance(note, str) or not isinstance(action, str):
            raise self.fail(where + "note", "strings (note and action)", (note, action))
        return ColumnInfo(
            type=ColumnType(
                self.text(data, "name", where),
                kind,
                decimal=decimal,
                date_format=date_format,
                boolean_texts=boolean_texts,
                words_as_missing=words_as_missing,
                note=note,
            ),
            role=role,
            action=action,
            n_missing=self.count(data, "n_missing", where),
            n_distinct=self.count(data, "n_distinct", where),
        )

    def feature(self, data: Any, where: str, missing: str) -> Feature:
        if not isinstance(data, dict):
            raise self.fail(where.rstrip("."), "a JSON object", data)
        kind = self.text(data, "kind", where)
        name = self.text(data, "name", where)
        needs_fill = missing == "impute"
        if kind == "numeric":
            scale = self.number(data, "scale", where)
            if not scale > 0:  # zscore and minmax give positive scales, divide positive divisors
                raise self.fail(where + "scale", "a positive number", scale)
            fill_value = self.field(data, "fill_value", where)
            if needs_fill or fill_value is not None:
                fill_value = self.number(data, "fill_value", where)
            column, part = data.get("column"), data.get("part")
            if column is not None or part is not None:
                column = self.text(data, "column", where)
                if part not in (*DATE_PARTS, INDICATOR_PART):
                    raise self.fail(
                        where + "part",
                        f"one of {quoted_names((*DATE_PARTS, INDICATOR_PART))}",
                        part,
                    )
            return NumericFeature(
                column=column,
                part=part,
                name=name,
                offset=self.number(data, "offset", where),
                scale=scale,
                fill_value=fill_value,
                mean=self.number(data, "mean", where),
                std=self.number(data, "std", where),
                minimum=self.number(data, "minimum", where),
                maximum=self.number(data, "maximum", where),
                clip=self.clip(data, where),
                edges=self.edges(data, where),
            )
        if kind == "categorical":
            categories = self.texts(data, "categories", where)
            fill_value = self.field(data, "fill_value", where)
            if (needs_fill or fill_value is not None) and fill_value not in categories:
                raise self.fail(where + "fill_value", "one of the categories", fill_value)
            other = data.get("other", False)
            if not isinstance(other, bool) or (other and OTHER_CATEGORY not in categories):
                raise self.fail(where + "other", f"false, or true with {OTHER_CATEGORY!r}", other)
            return CategoricalFeature(
                name=name,
                categories=categories,
                counts=self.counts(data, "counts", len(categories), where),
                fill_value=fill_value,
                other=other,
            )
        raise self.fail(where + "kind", "'numeric' or 'categorical'", kind)


def recipe_fields(data: Any, source: str = "recipe") -> dict[str, Any]:
    """The keyword arguments of ``Recipe`` described by ``data`` (version 1 or 2), all checked.

    Raises:
        ModelFileError: a field is missing, has the wrong type or an impossible value, or the
            format version is not one this softclass reads. ``source`` prefixes the message.
    """
    return _RecipeReader(source).fields(data)
