"""Saved models: a directory with the weights in safetensors and everything else in JSON.

Layout of a model directory::

    model.safetensors   the MLP's state dict (tensors only; safetensors cannot hold code)
    model.json          format version, softclass version, design, network shape, the data
                        recipe, class names, training options and a history summary

:func:`load_model` checks every file and field and raises :class:`ModelFileError` naming the
missing or bad one. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from softclass.data import Recipe
from softclass.errors import ConfigError, DataError, ModelFileError
from softclass.io import atomic_path, atomic_write_json
from softclass.mlp.designs import Design, get_design
from softclass.mlp.model import MLP, MLPConfig
from softclass.training.trainer import TrainConfig
from softclass.version import __version__

MODEL_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"


@dataclass(frozen=True)
class SavedModel:
    """A model read back from disk, ready to predict on raw tables.

    Attributes:
        model: the MLP on the CPU, in eval mode.
        design: its output/loss design (decides how logits become probabilities).
        model_config: the network's shape.
        recipe: the preprocessing learned from the training table.
        train_config: the options it was trained with.
        history_summary: the last epoch's numbers, epochs, early-stopping outcome.
        softclass_version: the version that saved it.
    """

    model: MLP
    design: Design
    model_config: MLPConfig
    recipe: Recipe
    train_config: TrainConfig
    history_summary: dict[str, Any]
    softclass_version: str

    @property
    def classes(self) -> tuple[str, ...]:
        return self.recipe.classes

    @torch.no_grad()
    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Probabilities float32 (N, C), columns in :attr:`classes` order, for features (N, F)."""
        return self.design.predict_proba(self.model(features.to(torch.float32)))


def save_model(
    directory: str | Path,
    model: MLP,
    design: Design,
    recipe: Recipe,
    train_config: TrainConfig,
    history_summary: dict[str, Any],
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (each atomically).

    Raises:
        ConfigError: the recipe does not match the network (features or classes).
    """
    config: MLPConfig = model.config
    if recipe.n_features != config.n_features or recipe.n_classes != config.n_classes:
        raise ConfigError(
            f"the recipe gives {recipe.n_features} features and {recipe.n_classes} classes but "
            f"the network takes {config.n_features} and predicts {config.n_classes}"
        )
    directory = Path(directory)
    state = {
        name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()
    }
    with atomic_path(directory / WEIGHTS_FILE) as temporary:
        save_file(state, str(temporary), metadata={"format": str(MODEL_FORMAT)})
    atomic_write_json(
        directory / METADATA_FILE,
        {
            "format_version": MODEL_FORMAT,
            "softclass_version": __version__,
            "design": design.name,
            "model_config": config.to_dict(),
            "recipe": recipe.to_dict(),
            "classes": list(recipe.classes),
            "train_config": train_config.to_dict(),
            "history": history_summary,
        },
    )
    return directory


def load_model(directory: str | Path) -> SavedModel:
    """Read a model directory written by :func:`save_model`, checking every part.

    Raises:
        ModelFileError: the directory or a file is missing, a file is unreadable, a field is
            missing or has a bad value, the format version is unknown, or the weights do not fit
            the network described in model.json. The message names the file and field.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelFileError(f"{directory}: no such model directory")
    metadata_path = directory / METADATA_FILE
    weights_path = directory / WEIGHTS_FILE
    for path in (metadata_path, weights_path):
        if not path.is_file():
            raise ModelFileError(
                f"{path}: missing file; a model directory holds {METADATA_FILE} and {WEIGHTS_FILE}"
            )
    metadata = _read_metadata(metadata_path)
    design = _field(metadata_path, metadata, "design", str, get_design)
    model_config = _field(metadata_path, metadata, "model_config", dict, MLPConfig.from_dict)
    recipe = _field(
        metadata_path,
        metadata,
        "recipe",
        dict,
        lambda data: Recipe.from_dict(data, source=f"{metadata_path} field 'recipe'"),
    )
    train_config = _field(metadata_path, metadata, "train_config", dict, TrainConfig.from_dict)
    history_summary = _field(metadata_path, metadata, "history", dict, dict)
    classes = _field(metadata_path, metadata, "classes", list, tuple)
    if classes != tuple(recipe.classes):
        raise ModelFileError(
            f"{metadata_path}: field 'classes' {list(classes)} does not match the recipe's "
            f"classes {list(recipe.classes)}"
        )
    if (recipe.n_features, recipe.n_classes) != (model_config.n_features, model_config.n_classes):
        raise ModelFileError(
            f"{metadata_path}: the recipe gives {recipe.n_features} features and "
            f"{recipe.n_classes} classes but field 'model_config' describes "
            f"{model_config.n_features} and {model_config.n_classes}"
        )
    model = MLP(model_config)
    _load_weights(weights_path, model)
    return SavedModel(
        model=model.eval(),
        design=design,
        model_config=model_config,
        recipe=recipe,
        train_config=train_config,
        history_summary=history_summary,
        softclass_version=str(metadata.get("softclass_version", "unknown")),
    )


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path}: not readable JSON ({error})") from error
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: expected a JSON object, found {type(metadata).__name__}")
    version = metadata.get("format_version")
    if version != MODEL_FORMAT:
        raise ModelFileError(
            f"{path}: field 'format_version' is {version!r}; this softclass reads format "
            f"{MODEL_FORMAT}"
        )
    return metadata


def _field(path: Path, metadata: dict[str, Any], name: str, kind: type, parse: Any) -> Any:
    """``parse(metadata[name])``, with ModelFileError naming the file and field on any problem."""
    if name not in metadata:
        raise ModelFileError(f"{path}: missing field {name!r}")
    value = metadata[name]
    if not isinstance(value, kind):
        raise ModelFileError(
            f"{path}: field {name!r} should be a {kind.__name__}, found {type(value).__name__}"
        )
    try:
        return parse(value)
    except (ConfigError, DataError, KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: bad field {name!r}: {error}") from error


def _load_weights(path: Path, model: MLP) -> None:
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(f"{path}: not a readable safetensors file ({error})") from error
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in state.items()}
    if found != expected:
        missing = sorted(set(expected) - set(found))
        unexpected = sorted(set(found) - set(expected))
        wrong = sorted(name for name in set(found) & set(expected) if found[name] != expected[name])
        raise ModelFileError(
            f"{path}: the weights do not fit the network in {METADATA_FILE} (missing "
            f"{missing}, unexpected {unexpected}, wrong shape {wrong})"
        )
    bad_dtype = sorted(name for name, tensor in state.items() if not tensor.is_floating_point())
    if bad_dtype:
        raise ModelFileError(f"{path}: tensors {bad_dtype} are not floating point")
    model.load_state_dict({name: tensor.to(torch.float32) for name, tensor in state.items()})
