"""What softclass accepts when it reads its own files back: the rules for model.json, the
safetensors header and both kinds of checkpoint.pt (the autograd Trainer's ``torch.save`` archive,
the batched engine's safetensors file), in one place.

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
  refuses any pickled object that is not a tensor or a plain container;
- a batched-engine checkpoint (format :data:`BATCHED_CHECKPOINT_FORMAT`): a safetensors file
  whose header (the bound above) holds every non-tensor field as JSON; the tensors it declares
  must be exactly those of its network, members and epoch and fill the file, and the fields must
  match the resuming run, before the file's data is read (:func:`read_batched_checkpoint_header`,
  :func:`load_batched_checkpoint`).
"""

from __future__ import annotations

import itertools
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
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from softclass.errors import ConfigError, ModelFileError
from softclass.mlp.designs import Design, get_design
from softclass.mlp.model import MAX_HIDDEN_LAYERS, MAX_PARAMETERS, MLPConfig
from softclass.mlp.optimizers import get_optimizer
from softclass.training.config import MONITORS, TrainConfig

__all__ = [
    "BATCHED_CHECKPOINT_FORMAT",
    "BATCHED_ENGINE",
    "BATCHED_METADATA_KEY",
    "CHECKPOINT_FIELDS",
    "CHECKPOINT_FORMAT",
    "HISTORY_NAMES",
    "MAX_JSON_BYTES",
    "MAX_SAFETENSORS_HEADER_BYTES",
    "MAX_ZIP_ENTRIES",
    "MODEL_FORMAT",
    "MONITORED_HISTORY",
    "BatchedCheckpointHeader",
    "BatchedCheckpointTensors",
    "BatchedRun",
    "ModelMetadata",
    "SafetensorsLayout",
    "bad_field",
    "check_metadata",
    "check_optimizer_state",
    "check_weights_header",
    "checkpoint_byte_limit",
    "encode_batched_checkpoint",
    "is_torch_archive",
    "load_batched_checkpoint",
    "load_checkpoint_file",
    "model_config_field",
    "read_batched_checkpoint_header",
    "read_json_object",
    "read_safetensors_header",
    "read_safetensors_layout",
    "train_config_field",
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


@dataclass(frozen=True)
class SafetensorsLayout:
    """What a safetensors header declares, checked against the file (see
    :func:`read_safetensors_layout`).

    Attributes:
        tensors: name → (dtype code such as ``"F32"``, shape).
        offsets: name → ``(begin, end)`` byte range inside the data section.
        metadata: the ``__metadata__`` strings (empty when absent).
        header_size: bytes of the JSON header (after the 8-byte length).
        file_size: bytes of the whole file when its header was read.
    """

    tensors: dict[str, tuple[str, tuple[int, ...]]]
    offsets: dict[str, tuple[int, int]]
    metadata: dict[str, str]
    header_size: int
    file_size: int


def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name → (dtype, shape) of every tensor in a safetensors file, from its header alone
    (:func:`read_safetensors_layout` with at most 2 dimensions per tensor).

    Raises:
        ModelFileError: as :func:`read_safetensors_layout`.
    """
    return read_safetensors_layout(path).tensors


def read_safetensors_layout(path: Path, max_dims: int = 2) -> SafetensorsLayout:
    """The header of a safetensors file: every tensor's dtype, shape and byte range, and the
    ``__metadata__`` strings; no tensor is read.

    The format: an 8-byte little-endian header length, that many bytes of JSON, then the data.
    Each entry's byte range must lie inside the data and match its dtype and shape exactly.

    Raises:
        ModelFileError: the header is too short, longer than
            :data:`MAX_SAFETENSORS_HEADER_BYTES`, not JSON, or an entry is malformed (a float
            dtype, at most ``max_dims`` dimensions, a byte range of its size inside the data).
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
    offsets = {}
    metadata: dict[str, str] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(
                isinstance(item, str) for item in entry.values()
            ):
                raise bad_field(path, "__metadata__", entry, "a mapping of strings")
            metadata = entry
            continue
        field = f"header[{_key(name)}]"
        entry = _mapping(path, field, entry, ("dtype", "shape", "data_offsets"))
        dtype = entry["dtype"]
        if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPES:
            raise bad_field(
                path, f"{field}.dtype", dtype, f"a float dtype, one of {list(_SAFETENSORS_DTYPES)}"
            )
        shape = _kind(path, f"{field}.shape", entry["shape"], list, "a list of sizes")
        if len(shape) > max_dims:
            raise bad_field(path, f"{field}.shape", shape, f"at most {max_dims} dimensions")
        for axis, size in enumerate(shape):
            _integer(path, f"{field}.shape[{axis}]", size, 0, MAX_PARAMETERS)
        byte_range = entry["data_offsets"]
        if (
            not isinstance(byte_range, list)
            or len(byte_range) != 2
            or not all(isinstance(item, int) and not isinstance(item, bool) for item in byte_range)
            or not 0 <= byte_range[0] <= byte_range[1] <= data_size
        ):
            raise bad_field(
                path, f"{field}.data_offsets", byte_range, f"[begin, end] within 0..{data_size}"
            )
        n_bytes = math.prod(shape) * _SAFETENSORS_DTYPES[dtype]
        if byte_range[1] - byte_range[0] != n_bytes:
            raise bad_field(
                path,
                f"{field}.data_offsets",
                byte_range,
                f"a range of {n_bytes} bytes ({dtype} of shape {shape})",
            )
        tensors[name] = (dtype, tuple(shape))
        offsets[name] = (byte_range[0], byte_range[1])
    return SafetensorsLayout(tensors, offsets, metadata, header_size, file_size)


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
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError):
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


def _load_torch_archive(path: Path, byte_limit: int) -> object:
    """The object in a ``torch.save`` archive: the archive bounded by :func:`_check_archive`
    first, then ``torch.load(weights_only=True)``, which refuses any pickled object that is not a
    tensor or a plain container; every failure is one ModelFileError."""
    _check_archive(path, byte_limit)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols of damaged files
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
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
    if _looks_like_safetensors(path):
        raise ModelFileError(
            f"{path}: a checkpoint of the batched engine (a safetensors file); the autograd "
            "Trainer (--precision bf16, torchrun or backend='autograd') cannot resume it: resume "
            "with the run's own options"
        )
    state = _load_torch_archive(path, checkpoint_byte_limit(config))
    if isinstance(state, dict) and state.get("engine") == BATCHED_ENGINE:
        raise _old_batched_format(path, state.get("format"))
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


# -- checkpoints of the batched engine -------------------------------------------------------------
#
# Format 2 (format 1 was a torch.save archive): one safetensors file. Its tensors are the stacked
# parameters, the optimizer's moments, the early-stopping best weights and the histories; every
# other field is one JSON document in the safetensors metadata under BATCHED_METADATA_KEY. The
# header (at most MAX_SAFETENSORS_HEADER_BYTES) is read and checked field by field, and the tensor
# layout it declares is checked against the network, members and epoch of that document (and
# those against the resuming run) before a single tensor byte is read; safetensors holds no code.

BATCHED_CHECKPOINT_FORMAT = 2
BATCHED_ENGINE = "batched"
BATCHED_METADATA_KEY = "softclass_checkpoint"
# History name → the training metric it records, (M, epochs) float64 each.
HISTORY_NAMES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
# The history the early-stopping rule reads for each monitor of softclass.training.config.MONITORS.
MONITORED_HISTORY = {
    "validation_loss": "val_loss",
    "validation_accuracy": "val_accuracy",
    "train_loss": "train_loss",
}
_BATCHED_FIELDS = (
    "format",
    "engine",
    "members",
    "model_config",
    "train_config",
    "data_fingerprint",
    "dtype",
    "epoch",
    "step_count",
    "epochs_run",
    "early_stopping",
)
_EARLY_STOPPING_FIELDS = ("best", "best_epoch", "bad_epochs", "stopped")
# Parameter dtypes a batched checkpoint may hold: name → (torch dtype, safetensors code).
_BATCHED_DTYPES = {
    "float16": (torch.float16, "F16"),
    "bfloat16": (torch.bfloat16, "BF16"),
    "float32": (torch.float32, "F32"),
    "float64": (torch.float64, "F64"),
}
_MAX_SEED = 2**63 - 1
_MAX_STEPS = 2**53  # optimizer steps: exact as a float64 (Adam's bias correction reads them)
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class BatchedCheckpointHeader:
    """The checked non-tensor fields of a batched-engine checkpoint.

    Attributes:
        members: ``(design, seed)`` of each of the M stacked models, in stacking order.
        model_config, train_config: the network and the options of the run that wrote it.
        data_fingerprint: SHA-256 hex digest of the training data (see
            :func:`softclass.training.trainer.data_fingerprint`).
        dtype: the parameters' dtype.
        epoch: epochs run, in ``[1, train_config.epochs]``.
        step_count: optimizer steps taken (``epoch`` × batches per epoch).
        epochs_run: per member, ``train_config.epochs`` or, once it stopped early, its last
            epoch.
        early_stopping: :meth:`softclass.training.early_stopping.EarlyStopping.to_dict` (best
            values ±inf before a member's first improvement), None without early stopping.
    """

    members: tuple[tuple[str, int], ...]
    model_config: MLPConfig
    train_config: TrainConfig
    data_fingerprint: str
    dtype: torch.dtype
    epoch: int
    step_count: int
    epochs_run: tuple[int, ...]
    early_stopping: dict[str, list[Any]] | None

    @property
    def has_best(self) -> bool:
        """Whether the checkpoint holds the early-stopping best weights."""
        return self.early_stopping is not None and self.train_config.restore_best

    def tensor_layout(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        """Name → (dtype, shape) of every tensor the file must hold, in file order: per
        parameter ``i`` of :meth:`StackedMLP.parameters` (``W0, b0, W1, ...``: ``(M, out, in)``
        and ``(M, out)``) ``parameters.i``, ``first_moments.i``, ``second_moments.i`` (optimizers
        with two moments), ``best.i`` (:attr:`has_best`); then ``history.NAME`` ``(M, epoch)``
        float64 for each of :data:`HISTORY_NAMES`."""
        n_members = len(self.members)
        widths = [self.model_config.n_features, *self.model_config.hidden]
        widths.append(self.model_config.n_classes)
        shapes = [
            shape
            for fan_in, fan_out in itertools.pairwise(widths)
            for shape in ((n_members, fan_out, fan_in), (n_members, fan_out))
        ]
        groups = ["parameters", "first_moments"]
        if get_optimizer(self.train_config.optimizer).n_moments == 2:
            groups.append("second_moments")
        if self.has_best:
            groups.append("best")
        layout = {
            f"{group}.{index}": (self.dtype, shape)
            for group in groups
            for index, shape in enumerate(shapes)
        }
        for name in HISTORY_NAMES:
            layout[f"history.{name}"] = (torch.float64, (n_members, self.epoch))
        return layout


@dataclass(frozen=True)
class BatchedCheckpointTensors:
    """The tensors of a batched-engine checkpoint (CPU; shapes in
    :meth:`BatchedCheckpointHeader.tensor_layout`).

    Attributes:
        parameters, first_moments, second_moments: per parameter of the stacked network
            (``second_moments`` empty for optimizers with one moment).
        best: the early-stopping best weights per parameter, or None.
        histories: :data:`HISTORY_NAMES` → ``(M, epoch)`` float64 (the validation ones NaN
            without validation rows).
    """

    parameters: list[torch.Tensor]
    first_moments: list[torch.Tensor]
    second_moments: list[torch.Tensor]
    best: list[torch.Tensor] | None
    histories: dict[str, torch.Tensor]

    def named(self) -> list[torch.Tensor]:
        """Every tensor in the order of :meth:`BatchedCheckpointHeader.tensor_layout`."""
        return [
            *self.parameters,
            *self.first_moments,
            *self.second_moments,
            *(self.best or []),
            *(self.histories[name] for name in HISTORY_NAMES),
        ]


@dataclass(frozen=True)
class BatchedRun:
    """What the resuming run allows, checked before any tensor of its checkpoint is read.

    Attributes:
        dtype: the run's parameter dtype.
        epochs: the epochs the run asks for (a checkpoint may not have run more).
        batches_per_epoch: optimizer steps per epoch (from its rows and batch size).
        has_validation: whether the run scores validation rows after every epoch.
    """

    dtype: torch.dtype
    epochs: int
    batches_per_epoch: int
    has_validation: bool


def encode_batched_checkpoint(
    header: BatchedCheckpointHeader, tensors: BatchedCheckpointTensors
) -> bytes:
    """The bytes of a format-:data:`BATCHED_CHECKPOINT_FORMAT` checkpoint (a safetensors file
    whose metadata holds the header's fields as JSON); write them with an atomic write.

    Raises:
        ConfigError: the parameters' dtype is not a float dtype a checkpoint can hold.
    """
    dtype_names = {dtype: name for name, (dtype, _) in _BATCHED_DTYPES.items()}
    if header.dtype not in dtype_names:
        raise ConfigError(
            f"checkpoints hold parameters of dtype {', '.join(_BATCHED_DTYPES)}, not {header.dtype}"
        )
    document = {
        "format": BATCHED_CHECKPOINT_FORMAT,
        "engine": BATCHED_ENGINE,
        "members": [[design, seed] for design, seed in header.members],
        "model_config": header.model_config.to_dict(),
        "train_config": header.train_config.to_dict(),
        "data_fingerprint": header.data_fingerprint,
        "dtype": dtype_names[header.dtype],
        "epoch": header.epoch,
        "step_count": header.step_count,
        "epochs_run": list(header.epochs_run),
        "early_stopping": header.early_stopping,
    }
    named = dict(
        zip(
            header.tensor_layout(),
            (tensor.detach().cpu().contiguous() for tensor in tensors.named()),
            strict=True,
        )
    )
    return safetensors_bytes(named, metadata={BATCHED_METADATA_KEY: json.dumps(document)})


def is_torch_archive(path: Path) -> bool:
    """Whether ``path`` starts like the zip archive ``torch.save`` writes (the autograd
    Trainer's checkpoints, and the batched engine's before format 2); False when unreadable."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
    except OSError:
        return False


def _looks_like_safetensors(path: Path) -> bool:
    """Whether ``path`` starts like a safetensors file: 8 bytes of header length, then the
    header's ``{`` (a length past the end of the file, as in a truncated file, or over the size
    limit is then refused by :func:`read_safetensors_layout` naming it)."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(9)
    except OSError:
        return False
    return start[8:] == b"{"


def _old_batched_format(path: Path, found: object) -> ModelFileError:
    return ModelFileError(
        f"{path}: a batched-engine checkpoint of format {_describe(found)} (a torch.save archive "
        f"of an earlier softclass); this softclass reads format {BATCHED_CHECKPOINT_FORMAT}: "
        "train again without --resume, or finish the run with the softclass that wrote it"
    )


def read_batched_checkpoint_header(
    path: str | Path, config: MLPConfig | None = None
) -> BatchedCheckpointHeader:
    """Read and check the header of a batched-engine checkpoint; no tensor is read.

    The safetensors header (at most :data:`MAX_SAFETENSORS_HEADER_BYTES`) is read by
    :func:`read_safetensors_layout`; every JSON field is typed and range-checked (members
    registered designs with integer seeds, the network within the size limits, the options a
    valid :class:`TrainConfig`, epoch counts within ``[1, train_config.epochs]``, early-stopping
    state consistent with the options); the tensors it declares must be exactly
    :meth:`BatchedCheckpointHeader.tensor_layout` and tile the data section. A ``torch.save``
    archive (bounded by :func:`checkpoint_byte_limit` of ``config``) is recognised to say whose it
    is: the autograd Trainer's, or a batched one of format 1.

    Raises:
        ModelFileError: one line naming the file, the field and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no checkpoint to resume from (the file does not exist)")
    if is_torch_archive(path):
        state = _load_torch_archive(path, checkpoint_byte_limit(config))
        if isinstance(state, dict) and state.get("engine") == BATCHED_ENGINE:
            raise _old_batched_format(path, state.get("format"))
        raise ModelFileError(
            f"{path}: not a checkpoint of the batched engine (written by the autograd Trainer?); "
            "resume it with backend='autograd'"
        )
    if not _looks_like_safetensors(path):
        raise ModelFileError(
            f"{path}: not a softclass checkpoint (neither the safetensors file of the batched "
            "engine nor the zip archive torch.save writes)"
        )
    layout = read_safetensors_layout(path, max_dims=3)
    if BATCHED_METADATA_KEY not in layout.metadata:
        raise ModelFileError(
            f"{path}: not a softclass checkpoint (a safetensors file without the "
            f"{BATCHED_METADATA_KEY!r} metadata; a model's weights?)"
        )
    header = _check_batched_document(path, _json_document(path, layout.metadata))
    _check_batched_layout(path, layout, header.tensor_layout())
    return header


def _json_document(path: Path, metadata: dict[str, str]) -> object:
    """The JSON value of the checkpoint's metadata string (NaN and ±Infinity allowed: the best
    value of an early-stopping rule before its first improvement is infinite)."""
    try:
        return json.loads(metadata[BATCHED_METADATA_KEY])
    except (ValueError, RecursionError) as error:  # also huge integers, nesting too deep
        raise ModelFileError(
            f"{path}: field {BATCHED_METADATA_KEY!r} is not readable JSON "
            f"({str(error).splitlines()[0][:100]})"
        ) from None


def _check_batched_document(path: Path, document: object) -> BatchedCheckpointHeader:
    if not isinstance(document, dict):
        raise bad_field(path, BATCHED_METADATA_KEY, document, "a JSON object of checkpoint fields")
    found_format = document.get("format")
    if found_format != BATCHED_CHECKPOINT_FORMAT or isinstance(found_format, bool):
        if found_format == 1 and not isinstance(found_format, bool):
            raise _old_batched_format(path, found_format)
        raise ModelFileError(
            f"{path}: batched-engine checkpoint format {_describe(found_format)}; this softclass "
            f"reads format {BATCHED_CHECKPOINT_FORMAT}"
        )
    data = _mapping(path, BATCHED_METADATA_KEY, document, _BATCHED_FIELDS)
    if data["engine"] != BATCHED_ENGINE:
        raise bad_field(path, "engine", data["engine"], repr(BATCHED_ENGINE))
    members = _members_field(path, data["members"])
    model_config = model_config_field(path, "model_config", data["model_config"])
    train_config = train_config_field(path, "train_config", data["train_config"])
    fingerprint = data["data_fingerprint"]
    if (
        not isinstance(fingerprint, str)
        or len(fingerprint) != 64
        or any(char not in "0123456789abcdef" for char in fingerprint)
    ):
        raise bad_field(path, "data_fingerprint", fingerprint, "a SHA-256 hex digest")
    dtype_name = data["dtype"]
    if not isinstance(dtype_name, str) or dtype_name not in _BATCHED_DTYPES:
        raise bad_field(path, "dtype", dtype_name, f"one of {list(_BATCHED_DTYPES)}")
    epoch = _integer(path, "epoch", data["epoch"], 1, train_config.epochs)
    step_count = _integer(path, "step_count", data["step_count"], epoch, _MAX_STEPS)
    epochs_run = _kind(path, "epochs_run", data["epochs_run"], list, "a list of epoch counts")
    if len(epochs_run) != len(members):
        raise bad_field(path, "epochs_run", epochs_run, f"{len(members)} counts (one per member)")
    for index, count in enumerate(epochs_run):
        _integer(path, f"epochs_run[{index}]", count, 1, train_config.epochs)
    early = _early_stopping_field(path, data["early_stopping"], train_config, epoch, len(members))
    _check_epochs_run(path, epochs_run, early, epoch, train_config.epochs)
    return BatchedCheckpointHeader(
        members=members,
        model_config=model_config,
        train_config=train_config,
        data_fingerprint=fingerprint,
        dtype=_BATCHED_DTYPES[dtype_name][0],
        epoch=epoch,
        step_count=step_count,
        epochs_run=tuple(epochs_run),
        early_stopping=early,
    )


def _members_field(path: Path, value: object) -> tuple[tuple[str, int], ...]:
    members = _kind(path, "members", value, list, "a list of [design, seed] pairs")
    if not members:
        raise bad_field(path, "members", members, "at least one [design, seed] pair")
    checked = []
    for index, member in enumerate(members):
        field = f"members[{index}]"
        if not isinstance(member, list) or len(member) != 2:
            raise bad_field(path, field, member, "a [design, seed] pair")
        design = _string(path, f"{field}[0]", member[0])
        try:
            canonical = get_design(design).name
        except ConfigError as error:
            raise ModelFileError(f"{path}: field '{field}[0]': {error}") from None
        if canonical != design:
            raise bad_field(path, f"{field}[0]", design, f"the design's name {canonical!r}")
        checked.append((design, _integer(path, f"{field}[1]", member[1], 0, _MAX_SEED)))
    return tuple(checked)


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


def _early_stopping_field(
    path: Path, value: object, train_config: TrainConfig, epoch: int, n_members: int
) -> dict[str, list[Any]] | None:
    """The early-stopping state: present exactly when ``train_config.patience`` is set; M entries
    per list; a best value of the monitored metric's range at a best epoch in ``[1, epoch]``, or
    the rule's starting ±inf with no best epoch."""
    if train_config.patience is None:
        if value is not None:
            raise bad_field(path, "early_stopping", value, "null (train_config.patience is null)")
        return None
    if value is None:
        raise bad_field(
            path,
            "early_stopping",
            value,
            f"the rule's state (train_config.patience is {train_config.patience})",
        )
    data = _mapping(path, "early_stopping", value, _EARLY_STOPPING_FIELDS)
    for key in _EARLY_STOPPING_FIELDS:
        items = _kind(path, f"early_stopping.{key}", data[key], list, f"a list of {n_members}")
        if len(items) != n_members:
            raise bad_field(path, f"early_stopping.{key}", items, f"{n_members} items (members)")
    lower_is_better = MONITORS[train_config.monitor] == "min"
    start = math.inf if lower_is_better else -math.inf
    for member in range(n_members):
        best_epoch = data["best_epoch"][member]
        best = _number(path, f"early_stopping.best[{member}]", data["best"][member], finite=False)
        if best_epoch is None:
            if best != start:
                raise bad_field(
                    path,
                    f"early_stopping.best[{member}]",
                    best,
                    f"{start} (no best epoch yet for {train_config.monitor})",
                )
        else:
            _integer(path, f"early_stopping.best_epoch[{member}]", best_epoch, 1, epoch)
            if not (0.0 <= best < math.inf if lower_is_better else 0.0 <= best <= 1.0):
                bounds = "a number ≥ 0" if lower_is_better else "a number in [0, 1]"
                raise bad_field(
                    path,
                    f"early_stopping.best[{member}]",
                    best,
                    f"{bounds} (the best {train_config.monitor}, epoch {best_epoch})",
                )
        _integer(path, f"early_stopping.bad_epochs[{member}]", data["bad_epochs"][member], 0, epoch)
        _kind(
            path,
            f"early_stopping.stopped[{member}]",
            data["stopped"][member],
            bool,
            "true or false",
        )
    return {
        "best": [float(item) for item in data["best"]],
        "best_epoch": list(data["best_epoch"]),
        "bad_epochs": list(data["bad_epochs"]),
        "stopped": list(data["stopped"]),
    }


def _check_epochs_run(
    path: Path,
    epochs_run: list[int],
    early: dict[str, list[Any]] | None,
    epoch: int,
    epochs: int,
) -> None:
    """Each member's epoch count is ``epochs`` until it stops early, then its last epoch (at most
    ``epoch``); the early-stopping rule updates a member every epoch until it stops, so its
    epochs without improvement are the epochs since its best one, and at least 1 once stopped."""
    for member, count in enumerate(epochs_run):
        stopped = early is not None and early["stopped"][member]
        if stopped and count > epoch:
            raise bad_field(
                path, f"epochs_run[{member}]", count, f"at most {epoch} (the member stopped early)"
            )
        if not stopped and count != epochs:
            raise bad_field(
                path,
                f"epochs_run[{member}]",
                count,
                f"{epochs} (train_config.epochs: the member has not stopped)",
            )
        if early is None:
            continue
        last = count if stopped else epoch
        best_epoch, bad_epochs = early["best_epoch"][member], early["bad_epochs"][member]
        if best_epoch is not None and bad_epochs != last - best_epoch:
            raise bad_field(
                path,
                f"early_stopping.bad_epochs[{member}]",
                bad_epochs,
                f"{last - best_epoch} (epochs from its best epoch {best_epoch} to epoch {last})",
            )
        if stopped and bad_epochs < 1:
            raise bad_field(
                path,
                f"early_stopping.bad_epochs[{member}]",
                bad_epochs,
                "at least 1 (the member stopped early)",
            )


def _check_batched_layout(
    path: Path,
    layout: SafetensorsLayout,
    expected: dict[str, tuple[torch.dtype, tuple[int, ...]]],
) -> None:
    """The tensors of ``layout`` must be exactly ``expected`` (names, dtypes, shapes) and their
    byte ranges must tile the data section, with nothing before, between or after them."""
    codes = {dtype: code for dtype, code in _BATCHED_DTYPES.values()}
    unexpected = [name for name in layout.tensors if name not in expected]
    if unexpected:
        raise ModelFileError(
            f"{path}: {len(unexpected)} unexpected tensor(s) {ascii(unexpected[:5])[:200]}; a "
            f"checkpoint of this network holds {list(expected)[:3]}…"
        )
    for name, (dtype, shape) in expected.items():
        if name not in layout.tensors:
            raise ModelFileError(
                f"{path}: lacks tensor {name!r} ({codes[dtype]} of shape {shape}, from fields "
                "'members', 'model_config', 'train_config' and 'epoch')"
            )
        found_code, found_shape = layout.tensors[name]
        if (found_code, found_shape) != (codes[dtype], shape):
            raise ModelFileError(
                f"{path}: tensor {name!r} is {found_code} of shape {found_shape}; expected "
                f"{codes[dtype]} of shape {shape} (from fields 'members', 'model_config', "
                "'dtype' and 'epoch')"
            )
    position = 0
    for name, (begin, end) in sorted(layout.offsets.items(), key=lambda item: item[1]):
        if begin != position:
            raise bad_field(
                path,
                f"header[{name}].data_offsets",
                [begin, end],
                f"a range starting at byte {position} (tensors packed one after another)",
            )
        position = end
    data_size = layout.file_size - 8 - layout.header_size
    if position != data_size:
        raise ModelFileError(
            f"{path}: {data_size - position} bytes after the last tensor; a checkpoint's "
            "tensors fill the file"
        )


def load_batched_checkpoint(
    path: str | Path, header: BatchedCheckpointHeader, run: BatchedRun
) -> BatchedCheckpointTensors:
    """The tensors of a checkpoint whose ``header`` :func:`read_batched_checkpoint_header`
    checked and whose members, network, options and data the caller compared with the run.

    Before reading: the dtype, the epochs (at most ``run.epochs``) and the step count
    (``epoch`` × ``run.batches_per_epoch``) must fit the run. The file (whose size the header
    fixed) is then read once with :func:`safetensors.torch.load` (no pickle), and the values
    checked: finite parameters, moments and best weights; second moments ≥ 0; accuracies in
    [0, 1], losses ≥ 0 or NaN; validation histories NaN exactly when the run has no validation
    rows; each early-stopping best equal to its history at the best epoch.

    Raises:
        ModelFileError: one line naming the file, the field or tensor and what was expected.
    """
    path = Path(path)
    if header.dtype != run.dtype:
        raise bad_field(
            path,
            "dtype",
            str(header.dtype).removeprefix("torch."),
            f"{str(run.dtype).removeprefix('torch.')!r} (this run's parameters)",
        )
    if header.epoch > run.epochs:
        raise ModelFileError(
            f"{path}: cannot resume, the checkpoint has run {header.epoch} epochs, more than the "
            f"{run.epochs} this run asks for (--epochs)"
        )
    steps = header.epoch * run.batches_per_epoch
    if header.step_count != steps:
        raise bad_field(
            path,
            "step_count",
            header.step_count,
            f"{steps} ({header.epoch} epochs × {run.batches_per_epoch} batches of this run)",
        )
    layout = header.tensor_layout()
    loaded = _read_safetensors_tensors(path, layout)
    for name, tensor in loaded.items():
        if name.startswith("history."):
            continue
        if not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(
                f"{path}: tensor {name!r} holds NaN or infinite values; a resumable checkpoint "
                "holds finite ones"
            )
        if name.startswith("second_moments.") and bool((tensor < 0).any()):
            raise ModelFileError(
                f"{path}: tensor {name!r} holds negative values; second moments are ≥ 0"
            )
    histories = {name: loaded[f"history.{name}"] for name in HISTORY_NAMES}
    _check_histories(path, histories, run.has_validation)
    if header.early_stopping is not None:
        monitored = histories[MONITORED_HISTORY[header.train_config.monitor]]
        early = header.early_stopping
        for member, (best, best_epoch) in enumerate(
            zip(early["best"], early["best_epoch"], strict=True)
        ):
            if best_epoch is not None and best != float(monitored[member, best_epoch - 1]):
                raise bad_field(
                    path,
                    f"early_stopping.best[{member}]",
                    best,
                    f"the {header.train_config.monitor} of its best epoch {best_epoch} "
                    f"({float(monitored[member, best_epoch - 1])!r})",
                )
    groups = {
        group: [loaded[name] for name in layout if name.startswith(f"{group}.")]
        for group in ("parameters", "first_moments", "second_moments", "best")
    }
    return BatchedCheckpointTensors(
        parameters=groups["parameters"],
        first_moments=groups["first_moments"],
        second_moments=groups["second_moments"],
        best=groups["best"] if header.has_best else None,
        histories=histories,
    )


def _read_safetensors_tensors(
    path: Path, layout: dict[str, tuple[torch.dtype, tuple[int, ...]]]
) -> dict[str, torch.Tensor]:
    """Every tensor of ``path``, read once into memory (never mapped: a file truncated while
    mapped would crash the process) and checked again against ``layout`` (the file may have
    changed since its header was read)."""
    limit = 8 + MAX_SAFETENSORS_HEADER_BYTES
    limit += sum(math.prod(shape) * dtype.itemsize for dtype, shape in layout.values())
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read the checkpoint ({error.strerror})") from None
    if len(data) > limit:
        raise ModelFileError(
            f"{path}: the checkpoint changed while it was read (larger than its header says); "
            "read it again once its writer has finished"
        )
    try:
        loaded = safetensors_load(data)
    except Exception as error:  # safetensors' own checks of a file changed since its header
        raise ModelFileError(
            f"{path}: not a readable safetensors file ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:150] if str(error) else 'no detail'})"
        ) from None
    found = {name: (tensor.dtype, tuple(tensor.shape)) for name, tensor in loaded.items()}
    if found != layout:
        raise ModelFileError(
            f"{path}: the checkpoint changed while it was read (its tensors no longer match its "
            "header); read it again once its writer has finished"
        )
    return loaded


def _check_histories(path: Path, histories: dict[str, torch.Tensor], has_validation: bool) -> None:
    """Accuracies in [0, 1] and losses ≥ 0 (NaN or +inf: a diverged member) for every epoch run;
    the validation ones NaN throughout exactly when the run has no validation rows."""
    for name, history in histories.items():
        field = f"history.{name}"
        if name.startswith("val_") and not has_validation:
            if not bool(history.isnan().all()):
                raise ModelFileError(
                    f"{path}: tensor {field!r} holds numbers; expected NaN throughout (this run "
                    "has no validation rows)"
                )
            continue
        if name.endswith("accuracy"):
            if not bool(((history >= 0) & (history <= 1)).all()):
                raise ModelFileError(
                    f"{path}: tensor {field!r} holds values outside [0, 1] (or NaN); expected "
                    "the share of rows classified right"
                )
        elif bool((history < 0).any()):
            raise ModelFileError(
                f"{path}: tensor {field!r} holds negative values; expected losses ≥ 0"
            )
