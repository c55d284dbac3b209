"""model.json of a saved model directory: its fields, checked before the weights are read.

A model directory is input like any other: it may be damaged, edited by hand or written by
someone else. Every field is checked here for type, range and size before anything is allocated
from it (at most :data:`MAX_JSON_BYTES`; the network within
:data:`~softclass.mlp.model.MAX_HIDDEN_LAYERS` layers and
:data:`~softclass.mlp.model.MAX_PARAMETERS` parameters, checked on the shape).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softclass.errors import ConfigError, ModelFileError
from softclass.mlp.designs import Design, get_design
from softclass.mlp.model import MLPConfig
from softclass.training.schema.fields import (
    _describe,
    _kind,
    _string,
    bad_field,
    model_config_field,
)

MAX_JSON_BYTES = 64 << 20  # model.json: the recipe lists categories; 64 MiB is far beyond any


# -- model.json ------------------------------------------------------------------------------------


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path`` (at most :data:`MAX_JSON_BYTES`), for error messages ``what``.

    Raises:
        ModelFileError: unreadable, too large, not UTF-8 JSON, nested too deeply, or not an object.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_JSON_BYTES + 1)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read {what} ({error.strerror})") from None
    if len(data) > MAX_JSON_BYTES:
        raise ModelFileError(f"{path}: larger than {MAX_JSON_BYTES >> 20} MiB; not a {what}")
    try:
        metadata = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ModelFileError(f"{path}: not readable JSON (not UTF-8: {error.reason})") from None
    except json.JSONDecodeError as error:
        raise ModelFileError(
            f"{path}: not readable JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    except (ValueError, RecursionError) as error:  # huge integers, nesting deeper than Python's
        raise ModelFileError(f"{path}: not readable JSON ({str(error)[:100]})") from None
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: expected a JSON object, found {type(metadata).__name__}")
    return metadata


@dataclass(frozen=True)
class ModelMetadata:
    """The checked fields of a model.json; ``recipe`` and ``train_config`` are still plain
    mappings, read by their own classes (``Recipe.from_dict``, ``TrainConfig.from_dict``)."""

    design: Design
    model_config: MLPConfig
    classes: tuple[str, ...]
    recipe: dict[str, Any]
    train_config: dict[str, Any]
    history: dict[str, Any]
    softclass_version: str


MODEL_FORMAT = 1
_METADATA_FIELDS = (
    "format_version",
    "softclass_version",
    "design",
    "model_config",
    "recipe",
    "classes",
    "train_config",
    "history",
)


def check_metadata(path: Path, metadata: dict[str, Any]) -> ModelMetadata:
    """Check the fields of a model.json (as read by :func:`read_json_object`).

    Raises:
        ModelFileError: a field is missing, unknown or out of its range; the design is unknown;
            the network is over the size limits; the classes do not fit ``n_classes``.
    """
    version = metadata.get("format_version")
    if version != MODEL_FORMAT or isinstance(version, bool):
        raise ModelFileError(
            f"{path}: field 'format_version' is {_describe(version)}; this softclass reads "
            f"format {MODEL_FORMAT}"
        )
    missing = [name for name in _METADATA_FIELDS if name not in metadata]
    if missing:
        raise ModelFileError(f"{path}: missing field {missing[0]!r}")
    design_name = _string(path, "design", metadata["design"])
    try:
        design = get_design(design_name)
    except ConfigError as error:
        raise ModelFileError(f"{path}: bad field 'design': {error}") from None
    model_config = model_config_field(path, "model_config", metadata["model_config"])
    classes = _kind(path, "classes", metadata["classes"], list, "a list of class names")
    if len(classes) != model_config.n_classes:
        raise bad_field(
            path, "classes", classes, f"{model_config.n_classes} names (model_config.n_classes)"
        )
    for index, name in enumerate(classes):
        _string(path, f"classes[{index}]", name)
    if len(set(classes)) != len(classes):
        raise bad_field(path, "classes", classes, "distinct class names")
    recipe = _kind(path, "recipe", metadata["recipe"], dict, "a mapping (the data recipe)")
    train_config = _kind(
        path, "train_config", metadata["train_config"], dict, "a mapping of training options"
    )
    history = _kind(path, "history", metadata["history"], dict, "a mapping (history summary)")
    return ModelMetadata(
        design=design,
        model_config=model_config,
        classes=tuple(classes),
        recipe=recipe,
        train_config=train_config,
        history=history,
        softclass_version=_string(path, "softclass_version", metadata["softclass_version"]),
    )
