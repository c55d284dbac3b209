"""Saved models: a directory with the weights in safetensors and everything else in JSON.

Layout of a model directory::

    model.safetensors   the MLP's state dict (tensors only; safetensors cannot hold code)
    model.json          format version, softclass version, design, network shape, the data
                        recipe, class names, training options and a history summary

:func:`load_model` treats the directory as untrusted input: it checks every file and field (the
rules live in :mod:`softclass.training.schema`) before allocating anything and raises
:class:`ModelFileError` naming the missing or bad one. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from softclass.data import Recipe
from softclass.errors import ConfigError, DataError, ModelFileError, TrainingDiverged
from softclass.io import atomic_directory
from softclass.mlp.designs import Design
from softclass.mlp.model import MLP, MLPConfig
from softclass.training.config import TrainConfig
from softclass.training.ensemble import AveragedMLP
from softclass.training.schema.model_dir import MODEL_FORMAT, check_metadata, read_json_object
from softclass.training.schema.tensors_file import check_weights_header, read_safetensors_header
from softclass.version import __version__

T = TypeVar("T")
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"


@dataclass(frozen=True)
class SavedModel:
    """A model read back from disk, ready to predict on raw tables.

    Attributes:
        model: the MLP on the CPU, in eval mode (an :class:`AveragedMLP` of
            ``train_config.members`` networks when that is above 1).
        design: its output/loss design (decides how logits become probabilities).
        model_config: the network's shape.
        recipe: the preprocessing learned from the training table.
        train_config: the options it was trained with.
        history_summary: the last epoch's numbers, epochs, early-stopping outcome.
        softclass_version: the version that saved it.
    """

    model: MLP | AveragedMLP
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
    def predict_proba(
        self, features: torch.Tensor, row_numbers: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Probabilities float32 (N, C), columns in :attr:`classes` order, for features (N, F).

        ``row_numbers`` (N,): how messages name the rows (default: 0 to N - 1).

        Raises:
            ModelFileError: a row's probabilities are NaN or infinite (weights or recipe
                scales too extreme for float32 arithmetic): never returned as a prediction.
        """
        probabilities = self.design.predict_proba(self.model(features.to(torch.float32)))
        finite = torch.isfinite(probabilities).all(dim=1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten()
            first = int(bad[0] if row_numbers is None else row_numbers[bad[0]])
            raise ModelFileError(
                f"{bad.numel()} of {finite.numel()} row(s) get NaN or infinite probabilities "
                f"(first: row {first}): the model's weights or its recipe's scales are too "
                "extreme for float32 arithmetic (a damaged or diverged model); nothing predicted"
            )
        return probabilities


def save_model(
    directory: str | Path,
    model: MLP | AveragedMLP,
    design: Design,
    recipe: Recipe,
    train_config: TrainConfig,
    history_summary: dict[str, Any],
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` as one unit.

    Both files are built in a staging directory beside ``directory`` and swapped in together
    (:func:`softclass.io.atomic_directory`): a reader, or a run killed at any moment, sees the
    complete earlier model or the complete new one, never weights of one with metadata of the
    other. Other files already in ``directory`` (a checkpoint) stay. An :class:`AveragedMLP`
    is stored as one network's tensors stacked on a leading member axis; ``train_config.members``
    says how many.

    Raises:
        ConfigError: the recipe does not match the network (features or classes), a recipe
            statistic is NaN or infinite, or ``train_config.members`` is not the model's count.
        TrainingDiverged: a weight is NaN or infinite (such a model is never saved).
        OutputError: the directory cannot be written (full device, read-only, a file in the way).
    """
    config: MLPConfig = model.config
    if recipe.n_features != config.n_features or recipe.n_classes != config.n_classes:
        raise ConfigError(
            f"the recipe gives {recipe.n_features} features and {recipe.n_classes} classes but "
            f"the network takes {config.n_features} and predicts {config.n_classes}"
        )
    directory = Path(directory)
    check_finite_recipe(recipe)
    n_members = model.n_members if isinstance(model, AveragedMLP) else 1
    if train_config.members != n_members:
        raise ConfigError(
            f"the training options say members={train_config.members} but the model holds "
            f"{n_members} network(s)"
        )
    stacked = model.stacked_state() if isinstance(model, AveragedMLP) else model.state_dict()
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in stacked.items()}
    check_finite_weights(state, f"the model for {directory}")
    metadata = {
        "format_version": MODEL_FORMAT,
        "softclass_version": __version__,
        "design": design.name,
        "model_config": config.to_dict(),
        "recipe": recipe.to_dict(),
        "classes": list(recipe.classes),
        "train_config": train_config.to_dict(),
        "history": history_summary,
    }
    metadata_text = json.dumps(metadata, indent=2, allow_nan=False) + "\n"
    weights = safetensors_bytes(state, metadata={"format": str(MODEL_FORMAT)})
    with atomic_directory(directory, replaced=(WEIGHTS_FILE, METADATA_FILE)) as staging:
        (staging / WEIGHTS_FILE).write_bytes(weights)
        (staging / METADATA_FILE).write_text(metadata_text, encoding="utf-8")
    return directory


def check_finite_weights(state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse a state dict holding NaN or an infinity.

    Raises:
        TrainingDiverged: naming the first tensor with non-finite values and how many.
    """
    for name, tensor in state.items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise TrainingDiverged(
                    f"{what}: {bad} of {tensor.numel()} values of {name!r} are NaN or infinite; "
                    "not saved. Lower the learning rate (--lr) or scale the features "
                    "(--normalize zscore)"
                )


def check_finite_recipe(recipe: Recipe) -> None:
    """Refuse a preprocessing recipe whose statistics are NaN or infinite.

    A column with values near the float64 limit (1e200) has an infinite spread; a model saved
    with it would turn every row into NaN at predict time.

    Raises:
        ConfigError: naming the field (e.g. ``columns[0].scale``) and its value.
    """
    for feature in recipe.to_dict()["features"]:
        for place, value in _non_finite(feature, "feature"):
            raise ConfigError(
                f"column {feature['name']!r}: the preprocessing statistic {place.split('.')[-1]!r}"
                f" is {value!r} (values too large for float64 arithmetic); rescale that column "
                "before training, e.g. --normalize divide --divide "
                f"{feature['name']}=<a power of ten>"
            )


def _non_finite(value: Any, place: str) -> Iterator[tuple[str, float]]:
    """(place, value) of every NaN or infinite float inside nested dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        yield place, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, f"{place}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _non_finite(item, f"{place}[{index}]")


def load_model(directory: str | Path) -> SavedModel:
    """Read a model directory written by :func:`save_model`, checking every part.

    Everything is checked before a tensor is allocated: model.json against the rules of
    :mod:`softclass.training.schema` (types, ranges, the network's size limits), then the
    safetensors header (read by hand, bounded) against the network model.json describes. Only
    then are the weights read; non-finite weights are refused.

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
    metadata = check_metadata(metadata_path, read_json_object(metadata_path, "model.json"))
    recipe = _parsed(
        metadata_path,
        "recipe",
        lambda data: Recipe.from_dict(data, source=f"{metadata_path} field 'recipe'"),
        metadata.recipe,
    )
    train_config = _parsed(
        metadata_path, "train_config", TrainConfig.from_dict, metadata.train_config
    )
    model_config = metadata.model_config
    if metadata.classes != tuple(recipe.classes):
        raise ModelFileError(
            f"{metadata_path}: field 'classes' {list(metadata.classes)} does not match the "
            f"recipe's classes {list(recipe.classes)}"
        )
    if (recipe.n_features, recipe.n_classes) != (model_config.n_features, model_config.n_classes):
        raise ModelFileError(
            f"{metadata_path}: the recipe gives {recipe.n_features} features and "
            f"{recipe.n_classes} classes but field 'model_config' describes "
            f"{model_config.n_features} and {model_config.n_classes}"
        )
    members = train_config.members
    header = read_safetensors_header(weights_path, 2 + (members > 1))
    check_weights_header(weights_path, header, model_config, METADATA_FILE, members)
    model = _load_weights(weights_path, model_config, members, metadata.design)
    return SavedModel(
        model=model.eval(),
        design=metadata.design,
        model_config=model_config,
        recipe=recipe,
        train_config=train_config,
        history_summary=metadata.history,
        softclass_version=metadata.softclass_version,
    )


def _parsed(
    path: Path, name: str, parse: Callable[[dict[str, Any]], T], value: dict[str, Any]
) -> T:
    """``parse(value)``, with ModelFileError naming the file and field on any problem."""
    try:
        return parse(value)
    except ModelFileError:
        raise
    except (ConfigError, DataError, KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: bad field {name!r}: {error}") from None


def _load_weights(path: Path, config: MLPConfig, members: int, design: Design) -> MLP | AveragedMLP:
    """The network (``members`` of them averaged when above 1) with the weights of ``path``,
    whose header was checked to fit ``config``."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(f"{path}: not a readable safetensors file ({error})") from None
    not_finite = sorted(name for name, tensor in state.items() if not tensor.isfinite().all())
    if not_finite:
        raise ModelFileError(
            f"{path}: tensors {not_finite[:5]} hold NaN or infinite values; the model diverged "
            "when it was trained"
        )
    state = {name: tensor.to(torch.float32) for name, tensor in state.items()}
    if members > 1:
        return AveragedMLP.from_stacked_state(config, state, design)
    model = MLP(config)
    model.load_state_dict(state)
    return model
