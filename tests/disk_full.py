"""A full disk for tests, without a small file system: every file opened for writing through
``open``/``io.open`` (``Path.write_bytes`` and ``write_text`` included) counts its ``write``
calls, and from the chosen one on each raises ``OSError(ENOSPC)``, as a full device does."""

from __future__ import annotations

import builtins
import errno
import io
import os

_REAL_OPEN = io.open


class _CountedFile:
    def __init__(self, handle, disk: DiskFull) -> None:
        self._handle = handle
        self._disk = disk

    def write(self, data):
        self._disk.writes += 1
        if self._disk.fail_at is not None and self._disk.writes > self._disk.fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._handle.name)
        return self._handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __iter__(self):
        return iter(self._handle)


class DiskFull:
    """Patch ``open`` (with pytest's ``monkeypatch``) so that writes after the first
    ``fail_at`` fail with ENOSPC; ``fail_at=None`` only counts them (in ``writes``)."""

    def __init__(self, monkeypatch, fail_at: int | None = None) -> None:
        self.writes = 0
        self.fail_at = fail_at

        def counted_open(file, mode="r", *args, **kwargs):
            handle = _REAL_OPEN(file, mode, *args, **kwargs)
            if any(flag in mode for flag in "wax+") and isinstance(file, str | os.PathLike):
                return _CountedFile(handle, self)
            return handle

        monkeypatch.setattr(io, "open", counted_open)
        monkeypatch.setattr(builtins, "open", counted_open)
