"""The safetensors header, read with our own parser before safetensors reads a tensor: at most
:data:`MAX_SAFETENSORS_HEADER_BYTES`, every tensor's dtype, shape and byte range checked against
the file size (and, for a model's weights, against the network in model.json).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from softclass.errors import ModelFileError
from softclass.mlp.model import MAX_PARAMETERS, MLPConfig
from softclass.training.schema.fields import _integer, _key, _kind, _mapping, bad_field

MAX_SAFETENSORS_HEADER_BYTES = 1 << 20  # ~100 bytes per tensor; 2 tensors per layer
_SAFETENSORS_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}


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


def read_safetensors_header(
    path: Path, max_dims: int = 2
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name → (dtype, shape) of every tensor in a safetensors file, from its header alone
    (:func:`read_safetensors_layout` with at most ``max_dims`` dimensions per tensor: 2 for a
    network, 3 for networks stacked on a member axis).

    Raises:
        ModelFileError: as :func:`read_safetensors_layout`.
    """
    return read_safetensors_layout(path, max_dims).tensors


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
        dtype, shape, byte_range = _entry(path, name, entry, max_dims, data_size)
        tensors[name] = (dtype, shape)
        offsets[name] = byte_range
    return SafetensorsLayout(tensors, offsets, metadata, header_size, file_size)


def _entry(
    path: Path, name: str, entry: object, max_dims: int, data_size: int
) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """One tensor's checked ``(dtype, shape, (begin, end))`` from the safetensors header."""
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
    return dtype, tuple(shape), (byte_range[0], byte_range[1])


def check_weights_header(
    path: Path,
    tensors: Mapping[str, tuple[str, tuple[int, ...]]],
    config: MLPConfig,
    source: str,
    members: int = 1,
) -> None:
    """The tensors named in a safetensors header must be exactly the network's (``source`` says
    where the network was described, e.g. ``model.json``); with ``members`` > 1, each stacked
    on a leading axis of that many networks.

    Raises:
        ModelFileError: a tensor is missing, unexpected, or of another shape.
    """
    expected = config.parameter_shapes()
    if members > 1:
        expected = {name: (members, *shape) for name, shape in expected.items()}
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
