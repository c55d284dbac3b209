"""The field checkers every softclass file reader shares: one line per failure, naming the file,
the field and what was expected::

    model/model.json: field 'model_config.hidden[0]' is 1e+30; expected an integer ≥ 1
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from softclass.errors import ConfigError, ModelFileError
from softclass.mlp.model import MAX_HIDDEN_LAYERS, MLPConfig
from softclass.training.config import TrainConfig

_MAX_NAME_CHARS = 1000
_MAX_EPOCHS = 100_000_000
_NUMBER_PAIR_OPTIONS = ("betas",)  # training options saved as two numbers (Adam's betas)

# -- one-line errors -------------------------------------------------------------------------------


def _describe(value: object) -> str:
    """A short, single-line description of a found value (never its whole content)."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} entries"
    if isinstance(value, list | tuple):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:40] + "…"
        return ascii(text)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def _key(name: str) -> str:
    """A mapping key for a field path: ASCII, unquoted, at most 60 characters."""
    return ascii(name[:60])[1:-1]


def bad_field(path: Path | str, name: str, value: object, expected: str) -> ModelFileError:
    """The error for field ``name`` of file ``path`` holding ``value`` instead of ``expected``."""
    return ModelFileError(f"{path}: field {name!r} is {_describe(value)}; expected {expected}")


def _integer(path: Path, name: str, value: object, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"in [{low}, {high}]" if high is not None else f"≥ {low}"
        raise bad_field(path, name, value, f"an integer {bound}")
    return value


def _number(path: Path, name: str, value: object, *, finite: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_field(path, name, value, "a number")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise bad_field(path, name, value, "a number of float range")
    if finite and not math.isfinite(value):
        raise bad_field(path, name, value, "a finite number")
    return float(value)


def _kind(path: Path, name: str, value: object, kind: type, expected: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad_field(path, name, value, expected)
    return value


def _string(path: Path, name: str, value: object, max_chars: int = _MAX_NAME_CHARS) -> str:
    if not isinstance(value, str) or len(value) > max_chars:
        raise bad_field(path, name, value, f"a string of at most {max_chars} characters")
    return value


def _mapping(
    path: Path, name: str, value: object, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``value`` as a dict with string keys holding every ``required`` key and nothing unknown."""
    if not isinstance(value, dict):
        raise bad_field(path, name, value, f"a mapping with keys {list(required)}")
    unknown = [key for key in value if key not in required and key not in optional]
    if unknown:
        raise ModelFileError(
            f"{path}: field {name!r} has unknown key(s) {ascii(unknown[:5])[:200]}; expected "
            f"{list(required + optional)}"
        )
    missing = [key for key in required if key not in value]
    if missing:
        raise ModelFileError(f"{path}: field {name!r} lacks key(s) {missing}")
    return value


def model_config_field(path: Path, name: str, value: object) -> MLPConfig:
    """Check field ``name`` (an :meth:`MLPConfig.to_dict` form) and build the config.

    No tensor is allocated: the layer count and parameter count are bounded from the shape.
    """
    data = _mapping(path, name, value, ("n_features", "n_classes", "hidden", "activation"))
    n_features = _integer(path, f"{name}.n_features", data["n_features"], 1)
    n_classes = _integer(path, f"{name}.n_classes", data["n_classes"], 1)
    hidden = _kind(path, f"{name}.hidden", data["hidden"], list, "a list of layer widths")
    if len(hidden) > MAX_HIDDEN_LAYERS:
        raise bad_field(
            path, f"{name}.hidden", hidden, f"at most {MAX_HIDDEN_LAYERS} hidden layer widths"
        )
    for index, width in enumerate(hidden):
        _integer(path, f"{name}.hidden[{index}]", width, 1)
    activation = _string(path, f"{name}.activation", data["activation"])
    try:
        return MLPConfig(n_features, n_classes, tuple(hidden), activation)
    except ConfigError as error:
        raise ModelFileError(f"{path}: field {name!r}: {error}") from None


def train_config_field(path: Path, name: str, value: object) -> TrainConfig:
    """Check field ``name`` (a :meth:`TrainConfig.to_dict` form) and build the options.

    Raises:
        ModelFileError: not a mapping; a value not a number, string, boolean or null (``betas``:
            two numbers); an option :class:`TrainConfig` refuses; more than 100,000,000 epochs.
    """
    options = _kind(path, name, value, dict, "a mapping of training options")
    for key, item in options.items():
        field = f"{name}.{_key(key)}" if isinstance(key, str) else name
        _string(path, field, key)
        if key in _NUMBER_PAIR_OPTIONS:
            if not isinstance(item, list) or len(item) != 2:
                raise bad_field(path, field, item, "a list of two numbers")
            for index, number in enumerate(item):
                _number(path, f"{field}[{index}]", number)
        elif isinstance(item, str):
            _string(path, field, item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            _number(path, field, item, finite=False)
        elif item is not None and not isinstance(item, bool):
            raise bad_field(path, field, item, "a number, string, true, false or null")
    try:
        config = TrainConfig.from_dict(options)
    except ConfigError as error:
        raise ModelFileError(f"{path}: field {name!r}: {error}") from None
    _integer(path, f"{name}.epochs", config.epochs, 1, _MAX_EPOCHS)
    return config
