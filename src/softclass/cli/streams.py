"""Standard output whose every byte is accounted for, and standard streams that may be closed.

Python's own ``sys.stdout`` may take part of a write on a full disk and lose the rest without
an error, and click turns a closed pipe into exit code 1 with no message. The command line
installs :class:`CheckedStdout` instead: each ``write(2)`` is checked
(:func:`softclass.io.write_all`), and the first failure raises :class:`StdoutFailed` — not an
``OSError``, so that nothing on the way (click, a library's ``except Exception``) takes it for
something else — which :func:`softclass.cli.app.main` turns into exit code 141 (the reader went
away) or 2 with one line (a full disk, a closed descriptor). Later writes are dropped: the
output is already known to be incomplete.

A standard descriptor closed when the program starts (``softclass predict ... >&-``) is
reopened on ``/dev/null`` at once, so that no file opened later takes its number (the output
would land in a model file); writing to a closed stdout is then the failure above.
"""

from __future__ import annotations

import errno
import io
import os
import sys

from softclass.io import write_all

__all__ = ["CheckedStdout", "StdoutFailed", "install_checked_stdout"]

_STDOUT = 1


class StdoutFailed(BaseException):
    """Writing to standard output failed; ``error`` says why (EPIPE, ENOSPC, EBADF...)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class CheckedStdout(io.RawIOBase):
    """Descriptor 1 written with every ``write(2)`` checked; see the module docstring."""

    def __init__(self, closed_at_start: bool = False) -> None:
        super().__init__()
        self._closed_at_start = closed_at_start
        self.failed = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return _STDOUT

    def isatty(self) -> bool:
        return not self._closed_at_start and os.isatty(_STDOUT)

    def write(self, data) -> int:
        size = len(data)
        if self.failed:
            return size
        if self._closed_at_start:
            error = OSError(errno.EBADF, "standard output is closed")
        else:
            try:
                write_all(_STDOUT, bytes(data))
                return size
            except OSError as failure:
                error = failure
        self.failed = True
        raise StdoutFailed(error)


def _reopen_closed_descriptors() -> set[int]:
    """Put ``/dev/null`` on each of descriptors 0, 1, 2 that is closed; return those."""
    closed = set()
    for descriptor in (0, 1, 2):
        try:
            os.fstat(descriptor)
        except OSError:
            closed.add(descriptor)
    for descriptor in sorted(closed):
        opened = os.open(os.devnull, os.O_RDWR)
        if opened != descriptor:
            os.dup2(opened, descriptor)
            os.close(opened)
    return closed


def install_checked_stdout() -> None:
    """Reopen closed standard descriptors on ``/dev/null`` and, when ``sys.stdout`` is the
    process's own (not replaced, e.g. by a test's capture), put a :class:`CheckedStdout`
    behind it."""
    closed = _reopen_closed_descriptors()
    if 2 in closed:
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    original = sys.stdout
    if original is not None and original is not sys.__stdout__:
        return
    if original is not None:
        try:
            original.flush()
        except OSError:
            pass
    encoding = getattr(original, "encoding", None) or "utf-8"
    line_buffering = bool(getattr(original, "line_buffering", False))
    raw = CheckedStdout(closed_at_start=_STDOUT in closed or original is None)
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=encoding,
        errors=getattr(original, "errors", None) or "strict",
        line_buffering=line_buffering,
    )
