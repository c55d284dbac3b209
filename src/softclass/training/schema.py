"""What softclass accepts when it reads its own files back: the rules for model.json, the
safetensors header and checkpoint.pt, in one place.

A model directory or a checkpoint is input like any other: it may be damaged, edited by hand or
written by someone else. Every field is checked here for type, range and size *before* anything
is allocated from it, and every failure is a :class:`ModelFileError` of one line naming the file,
the field and what was expected::

    model/model.json: field 'model_config.hidden[0]' is 1e+30; expected an integer ≥ 1

Size bounds (each named in its error):

- the network: at most :data:`~softclass.mlp.model.MAX_HIDDEN_LAYERS` hidden layers and
  :data:`~softclass.mlp.model.MAX_PARAMETERS` parameters (checked on the shape, not on tensors);
- model.json: at most :data:`MAX_JSON_BYTES`;
- the safetensors header: at most :data:`MAX_SAFETENSORS_HEADER_BYTES`, read with our own 8-byte
  length + JSON parser, every tensor's dtype, shape and byte range checked against the file size
  and the network in model.json before safetensors reads a tensor;
- a checkpoint: a zip archive (what ``torch.save`` writes) of at most :data:`MAX_ZIP_ENTRIES`
  uncompressed entries, whose sizes (from the zip directory, before ``torch.load``) add up to at
  most :func:`checkpoint_byte_limit` of the network; ``torch.load(weights_only=True)`` then
  refuses any pickled object that is not a tensor or a plain container.
"""

from __future__ import annotations

import json
import math
import os
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from softclass.errors import ConfigError, ModelFileError
from softclass.mlp.designs import Design, get_design
from softclass.mlp.model import MAX_HIDDEN_LAYERS, MAX_PARAMETERS, MLPConfig

__all__ = [
    "CHECKPOINT_FIELDS",
    "CHECKPOINT_FORMAT",
    "MAX_JSON_BYTES",
    "MAX_SAFETENSORS_HEADER_BYTES",
    "MAX_ZIP_ENTRIES",
    "MODEL_FORMAT",
    "ModelMetadata",
    "bad_field",
    "check_metadata",
    "check_optimizer_state",
    "check_weights_header",
    "checkpoint_byte_limit",
    "load_checkpoint_file",
    "model_config_field",
    "read_json_object",
    "read_safetensors_header",
]

# The autograd Trainer's checkpoint. Format 1 held torch.optim's state_dict; format 2 holds the
# optimizer registry's state (moments and step counts keyed by parameter name).
CHECKPOINT_FORMAT = 2
MAX_JSON_BYTES = 64 << 20  # model.json: the recipe lists categories; 64 MiB is far beyond any
MAX_SAFETENSORS_HEADER_BYTES = 1 << 20  # ~100 bytes per tensor; 2 tensors per layer
MAX_ZIP_ENTRIES = 10_000  # torch.save writes one entry per tensor storage plus a few
# Everything in a checkpoint besides the tensors (history of every epoch, options, pickle framing).
_CHECKPOINT_OVERHEAD_BYTES = 64 << 20
# float32 copies of the network in a checkpoint: the weights, the best weights, Adam's 2 moments.
_CHECKPOINT_COPIES = 4
_MAX_NAME_CHARS = 1000
_MAX_EPOCHS = 100_000_000
_MAX_STEPS = 2**53  # optimizer steps: exact as a float64
_NUMBER_PAIR_OPTIONS = ("betas",)  # training options saved as two numbers (Adam's betas)
# Lines of torch.load's weights-only errors that say what to do, not what was refused.
_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation")
_SAFETENSORS_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}

CHECKPOINT_FIELDS = (
    "format",
    "design",
    "model_config",
    "train_config",
    "data_fingerprint",
    "epoch",
    "finished",
    "model",
    "optimizer",
    "history",
    "best_loss",
    "best_state",
    "epochs_without_improvement",
)

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


def _optional_number(path: Path, name: str, value: object) -> float | None:
    return None if value is None else _number(path, name, value, finite=False)


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


# -- safetensors -----------------------------------------------------------------------------------


def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name → (dtype, shape) of every tensor in a safetensors file, from its header alone.

    The format: an 8-byte little-endian header length, that many bytes of JSON, then the data.
    Each entry's byte range must lie inside the data and match its dtype and shape exactly.

    Raises:
        ModelFileError: the header is too short, longer than
            :data:`MAX_SAFETENSORS_HEADER_BYTES`, not JSON, or an entry is malformed.
    """
    try:
        with open(path, "rb") as handle:
            file_size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ModelFileError(
                    f"{path}: not a safetensors file ({len(prefix)} bytes; the header length "
                    "alone takes 8)"
                )
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > MAX_SAFETENSORS_HEADER_BYTES or header_size > file_size - 8:
                raise ModelFileError(
                    f"{path}: safetensors header length {header_size} is over the "
                    f"{MAX_SAFETENSORS_HEADER_BYTES >> 20} MiB limit or past the end of the "
                    f"{file_size}-byte file"
                )
            raw_header = handle.read(header_size)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read the weights ({error.strerror})") from None
    try:
        header = json.loads(raw_header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ModelFileError(f"{path}: the safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise bad_field(path, "header", header, "a JSON object")
    data_size = file_size - 8 - header_size
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(
                isinstance(item, str) for item in entry.values()
            ):
                raise bad_field(path, "__metadata__", entry, "a mapping of strings")
            continue
        field = f"header[{_key(name)}]"
        entry = _mapping(path, field, entry, ("dtype", "shape", "data_offsets"))
        dtype = entry["dtype"]
        if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPES:
            raise bad_field(
                path, f"{field}.dtype", dtype, f"a float dtype, one of {list(_SAFETENSORS_DTYPES)}"
            )
        shape = _kind(path, f"{field}.shape", entry["shape"], list, "a list of sizes")
        if len(shape) > 2:
            raise bad_field(path, f"{field}.shape", shape, "at most 2 dimensions")
        for axis, size in enumerate(shape):
            _integer(path, f"{field}.shape[{axis}]", size, 0, MAX_PARAMETERS)
        offsets = entry["data_offsets"]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(item, int) and not isinstance(item, bool) for item in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise bad_field(
                path, f"{field}.data_offsets", offsets, f"[begin, end] within 0..{data_size}"
            )
        n_bytes = math.prod(shape) * _SAFETENSORS_DTYPES[dtype]
        if offsets[1] - offsets[0] != n_bytes:
            raise bad_field(
                path,
                f"{field}.data_offsets",
                offsets,
                f"a range of {n_bytes} bytes ({dtype} of shape {shape})",
            )
        tensors[name] = (dtype, tuple(shape))
    return tensors


def check_weights_header(
    path: Path, tensors: Mapping[str, tuple[str, tuple[int, ...]]], config: MLPConfig, source: str
) -> None:
    """The tensors named in a safetensors header must be exactly the network's (``source`` says
    where the network was described, e.g. ``model.json``).

    Raises:
        ModelFileError: a tensor is missing, unexpected, or of another shape.
    """
    expected = config.parameter_shapes()
    found = {name: shape for name, (_, shape) in tensors.items()}
    if found == expected:
        return
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(name for name in set(found) & set(expected) if found[name] != expected[name])
    raise ModelFileError(
        f"{path}: the weights do not fit the network in {source} (missing "
        f"{missing[:5]}, unexpected {ascii(unexpected[:5])[:200]}, wrong shape {wrong[:5]})"
    )


# -- checkpoints -----------------------------------------------------------------------------------


def checkpoint_byte_limit(config: MLPConfig | None = None) -> int:
    """Largest uncompressed checkpoint accepted for a network (the largest allowed one if None):
    four float32 copies of its parameters plus 64 MiB for everything else."""
    n_parameters = MAX_PARAMETERS if config is None else config.n_parameters
    return _CHECKPOINT_COPIES * 4 * n_parameters + _CHECKPOINT_OVERHEAD_BYTES


def _check_archive(path: Path, byte_limit: int) -> None:
    """A checkpoint must be the zip archive ``torch.save`` writes: stored (uncompressed) entries
    whose total size is within ``byte_limit``. Read from the zip directory, before any inflating."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise ModelFileError(
            f"{path}: not a softclass checkpoint (not the zip archive torch.save writes)"
        ) from None
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read the checkpoint ({error.strerror})") from None
    if len(entries) > MAX_ZIP_ENTRIES:
        raise ModelFileError(
            f"{path}: {len(entries)} archive entries; a checkpoint holds at most {MAX_ZIP_ENTRIES}"
        )
    total = 0
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED:
            raise ModelFileError(
                f"{path}: archive entry {entry.filename[:80]!a} is compressed; torch.save "
                "writes stored entries, so this is not a softclass checkpoint"
            )
        total += entry.file_size
    if total > byte_limit:
        raise ModelFileError(
            f"{path}: the checkpoint unpacks to {total:,} bytes; at most {byte_limit:,} are "
            "allowed for this network"
        )


def load_checkpoint_file(path: str | Path, config: MLPConfig | None = None) -> dict[str, Any]:
    """Read and check a checkpoint written by :meth:`softclass.training.trainer.Trainer.
    save_checkpoint`; never unpickles objects.

    The archive is inspected before ``torch.load`` (size bounded by :func:`checkpoint_byte_limit`
    of ``config``, or of the largest allowed network), loaded with ``weights_only=True``, and every
    field is checked: types, ranges, tensor names and shapes against its own ``model_config``.

    Returns:
        The checkpoint's fields (:data:`CHECKPOINT_FIELDS`); ``model`` and ``best_state`` are
        dicts of float32 CPU tensors, ``best_loss`` a float.

    Raises:
        ModelFileError: the file is missing, unreadable, too large, refused as unsafe, or a field
            is missing or malformed (the message names the field and what was expected).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no checkpoint to resume from (the file does not exist)")
    _check_archive(path, checkpoint_byte_limit(config))
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols of damaged files
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged pickle fails as KeyError, IndexError, ValueError...
        # torch's weights-only refusals wrap the one telling line in advice to load unsafely.
        lines = [
            line.strip()
            for line in str(error).splitlines()
            if line.strip() and not line.startswith(_TORCH_ADVICE)
        ]
        reason = lines[0][:200] if lines else "no detail"
        raise ModelFileError(
            f"{path}: refused to load the checkpoint: not a safe softclass checkpoint "
            f"({type(error).__name__}: {reason})"
        ) from None
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: not a softclass checkpoint (found {type(state).__name__})")
    if "format" in state:
        _check_format(path, state["format"])
    missing = [key for key in CHECKPOINT_FIELDS if key not in state]
    if missing:
        raise ModelFileError(f"{path}: not a softclass checkpoint, missing field(s) {missing}")
    return _check_checkpoint(path, state)


def _check_format(path: Path, found: object) -> None:
    """The checkpoint's format number must be :data:`CHECKPOINT_FORMAT`; format 1 (torch.optim's
    optimizer state) gets its own message saying what to do."""
    if found == CHECKPOINT_FORMAT and not isinstance(found, bool):
        return
    if found == 1 and not isinstance(found, bool):
        raise ModelFileError(
            f"{path}: checkpoint format 1, written by an older softclass (torch.optim's optimizer "
            f"state); this softclass reads format {CHECKPOINT_FORMAT}: delete it and train again "
            "without --resume, or finish the run with the older softclass"
        )
    raise ModelFileError(
        f"{path}: checkpoint format {_describe(found)}, this softclass reads {CHECKPOINT_FORMAT}: "
        "delete it and train again without --resume, or resume with the softclass that wrote it"
    )


def _check_checkpoint(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    _string(path, "design", state["design"])
    config = model_config_field(path, "model_config", state["model_config"])
    train_config = _kind(path, "train_config", state["train_config"], dict, "a mapping of options")
    for key, value in train_config.items():
        _string(path, "train_config", key)
        if key in _NUMBER_PAIR_OPTIONS:
            if not (
                isinstance(value, list)
                and len(value) == 2
                and all(isinstance(item, int | float) for item in value)
            ):
                raise bad_field(path, f"train_config.{key}", value, "a list of two numbers")
        elif value is not None and not isinstance(value, bool | int | float | str):
            raise bad_field(path, f"train_config.{key}", value, "a number, string or null")
    fingerprint = state["data_fingerprint"]
    if not isinstance(fingerprint, str) or len(fingerprint) != 64:
        raise bad_field(path, "data_fingerprint", fingerprint, "a SHA-256 hex digest")
    epoch = _integer(path, "epoch", state["epoch"], 0, _MAX_EPOCHS)
    _kind(path, "finished", state["finished"], bool, "true or false")
    shapes = config.parameter_shapes()
    model = _state_dict(path, "model", state["model"], shapes)
    best_state = state["best_state"]
    if best_state is not None:
        best_state = _state_dict(path, "best_state", best_state, shapes)
    optimizer = check_optimizer_state(
        path, state["optimizer"], shapes, _optimizer_moments(path, train_config)
    )
    _check_history(path, state["history"], epoch)
    best_loss = _number(path, "best_loss", state["best_loss"], finite=False)
    _integer(path, "epochs_without_improvement", state["epochs_without_improvement"], 0, epoch)
    return {
        **state,
        "model": model,
        "best_state": best_state,
        "best_loss": best_loss,
        "optimizer": optimizer,
    }


def _state_dict(
    path: Path, name: str, value: object, shapes: dict[str, tuple[int, ...]]
) -> dict[str, torch.Tensor]:
    """``value`` must hold exactly the network's tensors, float32, of the right shapes."""
    if not isinstance(value, dict):
        raise bad_field(path, name, value, "a mapping of tensor names to tensors")
    for key, tensor in value.items():
        field = f"{name}[{_key(key)}]" if isinstance(key, str) else name
        if key not in shapes:
            raise bad_field(path, field, key, f"a tensor name among {list(shapes)[:4]}…")
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
            raise bad_field(path, field, tensor, "a float32 tensor")
        if tuple(tensor.shape) != shapes[key]:
            raise bad_field(path, field, tensor, f"shape {shapes[key]}")
    missing = [key for key in shapes if key not in value]
    if missing:
        raise ModelFileError(f"{path}: field {name!r} lacks tensor(s) {missing[:5]}")
    return value


_RECORD_FIELDS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "validation_loss",
    "validation_accuracy",
    "seconds",
)


def _check_history(path: Path, value: object, epoch: int) -> None:
    history = _mapping(path, "history", value, ("records", "best_epoch", "stopped_early"))
    records = _kind(path, "history.records", history["records"], list, "a list of epochs")
    if len(records) != epoch:
        raise bad_field(path, "history.records", records, f"{epoch} records (field 'epoch')")
    for index, record in enumerate(records):
        field = f"history.records[{index}]"
        record = _mapping(path, field, record, _RECORD_FIELDS)
        _integer(path, f"{field}.epoch", record["epoch"], 1, _MAX_EPOCHS)
        for key in _RECORD_FIELDS[1:]:
            _optional_number(path, f"{field}.{key}", record[key])
    if history["best_epoch"] is not None:
        _integer(path, "history.best_epoch", history["best_epoch"], 1, max(epoch, 1))
    _kind(path, "history.stopped_early", history["stopped_early"], bool, "true or false")


_OPTIMIZER_FIELDS = ("first_moments", "second_moments", "step_counts", "step_count")


def _optimizer_moments(path: Path, train_config: dict[str, Any]) -> int:
    """State tensors per parameter of the checkpoint's optimizer (``train_config.optimizer``)."""
    from softclass.mlp.optimizers import OPTIMIZERS

    name = train_config.get("optimizer")
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise bad_field(
            path, "train_config.optimizer", name, f"one of {', '.join(OPTIMIZERS)} (the optimizer)"
        )
    return OPTIMIZERS[name].n_moments


def check_optimizer_state(
    path: Path, value: object, shapes: dict[str, tuple[int, ...]], n_moments: int
) -> dict[str, Any]:
    """The checkpoint's ``optimizer`` field: the optimizer registry's state of the network
    (:meth:`softclass.training.trainer.Trainer.optimizer_state_dict`).

    Every tensor must be float32, finite, named and shaped as the network's parameter it belongs
    to (``shapes``: name → shape); second moments (only when ``n_moments`` is 2) ≥ 0; each step
    count a 0-dim whole number in [0, step_count].

    Returns:
        The field, checked (``{"first_moments": {name: tensor}, "second_moments": {...},
        "step_counts": {name: 0-dim tensor}, "step_count": int}``).

    Raises:
        ModelFileError: naming the first field that differs from that.
    """
    state = _mapping(path, "optimizer", value, _OPTIMIZER_FIELDS)
    step_count = _integer(path, "optimizer.step_count", state["step_count"], 0, _MAX_STEPS)
    if n_moments == 1 and state["second_moments"] != {}:
        raise bad_field(
            path,
            "optimizer.second_moments",
            state["second_moments"],
            "an empty mapping (train_config.optimizer keeps one moment)",
        )
    expected = {
        "first_moments": shapes,
        "second_moments": shapes if n_moments == 2 else {},
        "step_counts": {name: () for name in shapes},
    }
    for kind, kind_shapes in expected.items():
        tensors = _state_dict(path, f"optimizer.{kind}", state[kind], kind_shapes)
        for name, tensor in tensors.items():
            field = f"optimizer.{kind}[{_key(name)}]"
            if not bool(torch.isfinite(tensor).all()):
                raise bad_field(path, field, tensor, "finite values")
            if kind == "second_moments" and bool((tensor < 0).any()):
                raise bad_field(path, field, tensor, "values ≥ 0 (squared gradients)")
            if kind == "step_counts" and not (
                float(tensor) == int(tensor) and 0 <= int(tensor) <= step_count
            ):
                raise ModelFileError(
                    f"{path}: field {field!r} is {float(tensor):g}; expected a whole number in "
                    f"[0, {step_count}] (field 'optimizer.step_count')"
                )
    return state
