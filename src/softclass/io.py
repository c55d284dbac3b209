"""Atomic file writing: a file is either the old version or the complete new one, never half.

Every file softclass writes (models, checkpoints, recipes, history, plots, predictions) goes
through here: the content is written to a temporary file in the same directory, flushed and
fsynced, then renamed over the destination (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; on success it is renamed into place.

    For libraries that insist on writing to a path themselves (matplotlib, safetensors). If the
    block raises, the temporary file is removed and ``destination`` is left untouched.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
    )
    os.close(handle)
    temp_path = Path(temp_name)
    try:
        yield temp_path
        with open(temp_path, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(temp_path, _default_file_mode())
        os.replace(temp_path, destination)
    finally:
        temp_path.unlink(missing_ok=True)
    _fsync_directory(destination.parent)


def atomic_write_bytes(destination: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``destination`` atomically and return the destination path."""
    with atomic_path(destination) as temp_path:
        temp_path.write_bytes(data)
    return Path(destination)


def atomic_write_text(destination: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``destination`` atomically and return the destination path."""
    return atomic_write_bytes(destination, text.encode("utf-8"))


def atomic_write_json(destination: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``destination`` atomically."""
    return atomic_write_text(destination, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _default_file_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask); mkstemp would leave 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable where the platform allows opening a directory."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
