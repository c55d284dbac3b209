"""A run's files written by a second thread while the main thread does something else, waited for
through interruptions so that their staging directory is never removed under them."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable

__all__ = ["FileThread"]


class FileThread(threading.Thread):
    """Runs ``write`` in a thread, in a copy of the caller's context (where :mod:`softclass.io`
    keeps the staging directory). Start it inside the ``try`` whose handler calls :meth:`wait`:
    an interruption during :meth:`start` then either cancels the writes before they begin or
    waits for them to end. :meth:`finish` waits and re-raises what ``write`` raised."""

    def __init__(self, write: Callable[[], None]) -> None:
        super().__init__(name="softclass-files", daemon=True)
        self._write, self._error = write, None
        self._context = contextvars.copy_context()
        self._lock = threading.Lock()
        self._begun = self._cancelled = False
        self._done = threading.Event()

    def run(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._begun = True
        try:
            self._context.run(self._write)
        except BaseException as error:  # re-raised in the caller's thread by finish()
            self._error = error
        finally:
            self._done.set()

    def wait(self) -> None:
        """Cancel the writes if they have not begun, else wait for them to end, also through a
        Ctrl-C while waiting (re-raised after). An event, not join(): an interrupted join marks
        a running thread as stopped (CPython 3.11)."""
        interrupted: BaseException | None = None
        while True:
            try:
                with self._lock:
                    self._cancelled = True
                    begun = self._begun
                if begun:
                    self._done.wait()
                break
            except BaseException as error:
                interrupted = interrupted or error
        if interrupted is not None:
            raise interrupted

    def finish(self) -> None:
        self.wait()
        if self._error is not None:
            raise self._error
