"""Draw the report's figures in helper processes started before torch is imported.

Drawing a figure is Python-heavy matplotlib work (about 0.05–0.1 s each, eight or more per
report) and importing matplotlib and loading its fonts costs another ~0.5 s. A command that will
write a report (``softclass compare``, ``softclass train``) starts a :class:`FigurePool` first
thing: one or two processes forked from the command line's process while it has not imported
torch yet, which import matplotlib and draw a warm-up figure while the main process imports torch,
reads the table and trains. The report then hands them its figures (plain numpy data, see
:func:`plain`) and fills its page meanwhile.

Nothing depends on the helpers: :func:`render_figures` draws in-process whatever a helper did
not return (no pool, no ``os.fork``, a helper that died or answered garbage), so a figure is
never lost, only drawn more slowly. The helpers ignore SIGINT (the main process decides what an
interruption means), exit when their pipe closes (the main process died) and are stopped and
reaped by :meth:`FigurePool.close`.
The pipes carry pickles between this process and its own children only.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import pickle
import select
import signal
import struct
import sys
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FigureJob", "FigurePool", "figure_pool", "plain", "render_figures"]

# A helper that has not answered a batch within this many seconds is abandoned (killed) and its
# figures are drawn in-process.
ANSWER_TIMEOUT = 120.0
_HEADER = struct.Struct("<Q")  # byte length of the pickle that follows
_ACTIVE: contextvars.ContextVar[FigurePool | None] = contextvars.ContextVar(
    "softclass_figure_pool", default=None
)


@dataclass(frozen=True)
class FigureJob:
    """One figure to draw: ``softclass.evaluation.plots.<builder>(*args, **kwargs)``.

    ``args`` and ``kwargs`` hold plain data (:func:`plain`) so that a helper without torch can
    rebuild them; ``weight`` (the number of panels) balances the helpers' shares.
    """

    name: str
    builder: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0


def plain(value: Any) -> Any:
    """``value`` with every torch tensor replaced by a numpy array, every dataclass by a
    namespace of its fields and every training history by its columns: what a figure reads,
    picklable without torch. Other values pass through (containers are copied)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if hasattr(value, "column") and hasattr(value, "records"):  # a training History
        from softclass.evaluation.plots import HistoryColumns

        return HistoryColumns(
            {name.name: value.column(name.name) for name in dataclasses.fields(value.records[0])}
            if value.records
            else {}
        )
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return types.SimpleNamespace(
            **{item.name: plain(getattr(value, item.name)) for item in dataclasses.fields(value)}
        )
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(item) for item in value)
    return value


def _draw(job: FigureJob) -> bytes:
    from softclass.evaluation import plots

    return plots.render_png(getattr(plots, job.builder)(*job.args, **job.kwargs))


def _send(fd: int, payload: Any, deadline: float | None = None) -> None:
    """One message to ``fd``; TimeoutError when the reader takes none past ``deadline``."""
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([], [fd], [], wait)[1]:
                raise TimeoutError("the figure helper takes no work")
        view = view[os.write(fd, view[: 1 << 16]) :]


def _receive(fd: int, deadline: float | None = None) -> Any:
    """One message from ``fd``; EOFError at a closed pipe, TimeoutError past ``deadline``."""

    def read(size: int) -> bytes:
        chunks, left = [], size
        while left:
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                    raise TimeoutError("no answer from the figure helper")
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError("the figure helper's pipe closed")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    (size,) = _HEADER.unpack(read(_HEADER.size))
    return pickle.loads(read(size))


def _serve(jobs_fd: int, answers_fd: int, spares: Sequence[_Pipes] = ()) -> None:
    """A helper's life: warm matplotlib up, start the ``spares`` (further helpers forked from this
    one once matplotlib is loaded, so its import is paid once), then draw every batch it is sent
    until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from softclass.evaluation import plots

    plots.warm_up()
    for index, pipes in enumerate(spares):
        others = [fd for other in spares[index + 1 :] for fd in other.helper_ends]
        with contextlib.suppress(OSError):  # a spare not started: its pipe closes, main draws
            if os.fork() == 0:
                _run_helper(pipes, [jobs_fd, answers_fd, *others], hello=True)
        for fd in pipes.helper_ends:
            os.close(fd)
    _answer(jobs_fd, answers_fd)


def _answer(jobs_fd: int, answers_fd: int) -> None:
    while True:
        try:
            jobs = _receive(jobs_fd)
        except EOFError:
            return
        answers: dict[str, bytes] = {}
        for job in jobs:
            with contextlib.suppress(Exception):  # the main process draws what is missing
                answers[job.name] = _draw(job)
        _send(answers_fd, answers)


def _run_helper(pipes: _Pipes, closing: Sequence[int], hello: bool = False, spares=()) -> None:
    """The body of a forked helper; never returns into the caller's code. A spare first sends
    its process id (the main process did not fork it, so it does not know it)."""
    status = 0
    try:
        for fd in closing:
            os.close(fd)
        if hello:
            _send(pipes.answers_write, os.getpid())
            _answer(pipes.jobs_read, pipes.answers_write)
        else:
            _serve(pipes.jobs_read, pipes.answers_write, spares)
    except BaseException:
        status = 1
    finally:
        os._exit(status)


@dataclass(frozen=True)
class _Pipes:
    """The two pipes between the main process and one helper."""

    jobs_read: int
    jobs_write: int
    answers_read: int
    answers_write: int

    @classmethod
    def open(cls) -> _Pipes:
        jobs_read, jobs_write = os.pipe()
        answers_read, answers_write = os.pipe()
        return cls(jobs_read, jobs_write, answers_read, answers_write)

    @property
    def helper_ends(self) -> tuple[int, int]:
        return self.jobs_read, self.answers_write

    @property
    def main_ends(self) -> tuple[int, int]:
        return self.jobs_write, self.answers_read


@dataclass
class _Helper:
    pid: int | None  # None: a spare that has not sent its process id yet
    jobs_fd: int  # the main process writes batches here
    answers_fd: int  # and reads the drawn figures here


class FigurePool:
    """Helper processes that draw figures; see the module's description.

    Use through :func:`figure_pool`; :meth:`render` is called by :func:`render_figures`.
    """

    def __init__(self, helpers: int) -> None:
        self._helpers: list[_Helper] = []
        self._first: _Helper | None = None
        if helpers < 1:
            return
        pipes = [_Pipes.open() for _ in range(helpers)]
        try:
            pid = os.fork()
        except OSError:
            for pair in pipes:
                for fd in (*pair.helper_ends, *pair.main_ends):
                    os.close(fd)
            return
        if pid == 0:  # the first helper; it forks the others once matplotlib is loaded
            closing = [fd for pair in pipes for fd in pair.main_ends]
            _run_helper(pipes[0], closing, spares=pipes[1:])
        for index, pair in enumerate(pipes):
            for fd in pair.helper_ends:
                os.close(fd)
            self._helpers.append(_Helper(pid if index == 0 else None, *pair.main_ends))
        self._first = self._helpers[0]

    @property
    def size(self) -> int:
        """How many helpers are running (or starting)."""
        return len(self._helpers)

    def pids(self, deadline: float | None = None) -> list[int]:
        """The helpers' process ids, waiting for the spares' (a spare that never says is
        dropped)."""
        for helper in list(self._helpers):
            if helper.pid is None:
                try:
                    pid = _receive(helper.answers_fd, deadline)
                except (EOFError, TimeoutError, OSError, pickle.UnpicklingError, struct.error):
                    pid = None
                if not isinstance(pid, int):
                    self._drop(helper)  # its id unknown: closing the pipes is all there is
                    continue
                helper.pid = pid
        return [helper.pid for helper in self._helpers if helper.pid is not None]

    def render(self, jobs: Sequence[FigureJob]) -> dict[str, bytes]:
        """Draw ``jobs`` in the helpers, balanced by weight; returns what they drew (a helper
        that fails or times out is dropped, its figures are simply absent)."""
        if not self._helpers or not jobs:
            return {}
        deadline = time.monotonic() + ANSWER_TIMEOUT
        self.pids(deadline)
        if not self._helpers:
            return {}
        shares: list[list[FigureJob]] = [[] for _ in self._helpers]
        loads = [0.0] * len(self._helpers)
        for job in sorted(jobs, key=lambda job: -job.weight):
            lightest = loads.index(min(loads))
            shares[lightest].append(job)
            loads[lightest] += job.weight
        sent = []
        for helper, share in zip(list(self._helpers), shares, strict=True):
            if not share:
                continue
            try:
                _send(
                    helper.jobs_fd,
                    [
                        dataclasses.replace(job, args=plain(job.args), kwargs=plain(job.kwargs))
                        for job in share
                    ],
                    deadline,
                )
                sent.append(helper)
            except (OSError, TimeoutError) as error:
                self._drop(helper, stuck=isinstance(error, TimeoutError))
        drawn: dict[str, bytes] = {}
        for helper in sent:
            try:
                answers = _receive(helper.answers_fd, deadline)
            except (EOFError, TimeoutError, OSError, pickle.UnpicklingError, struct.error) as error:
                self._drop(helper, stuck=isinstance(error, TimeoutError))
                continue
            if isinstance(answers, dict):
                drawn.update((name, png) for name, png in answers.items() if isinstance(png, bytes))
        return drawn

    def _drop(self, helper: _Helper, stuck: bool = False) -> None:
        """Forget ``helper``: closing its pipes ends it. The own child is also killed and
        reaped; a spare (the first helper's child) only when ``stuck`` — one that closed its
        pipe may have exited already, and its process id may belong to another process now."""
        self._helpers.remove(helper)
        if helper.pid is not None and (stuck or helper is self._first):
            with contextlib.suppress(OSError):
                os.kill(helper.pid, signal.SIGKILL)
        for fd in (helper.jobs_fd, helper.answers_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        if helper is self._first:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(helper.pid, 0)

    def close(self) -> None:
        """Stop the helpers. They hold nothing but figures already returned, so the first is
        killed rather than waited for (a command that fails early, a missing file, does not wait
        for its matplotlib import); the spares end when their pipes close."""
        for helper in list(self._helpers):
            self._drop(helper)


def _helper_count() -> int:
    """One helper per core beyond the first (at least one, at most two): the main process keeps
    a core for torch's import and the training."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


@contextlib.contextmanager
def figure_pool(enabled: bool = True) -> Iterator[FigurePool | None]:
    """Start the helpers for this block (when ``enabled``, ``os.fork`` exists and torch is not
    imported yet: forking a process that runs torch's thread pools is not safe); every
    :func:`render_figures` inside uses them. Yields the pool, or None when none was started."""
    if not enabled or not hasattr(os, "fork") or "torch" in sys.modules:
        yield None
        return
    pool = FigurePool(_helper_count())
    token = _ACTIVE.set(pool if pool.size else None)
    try:
        yield pool if pool.size else None
    finally:
        _ACTIVE.reset(token)
        pool.close()


def render_figures(jobs: Sequence[FigureJob]) -> dict[str, bytes]:
    """PNG bytes of every job, by name: drawn by the active pool's helpers, the rest (or all,
    without a pool) in this process."""
    pool = _ACTIVE.get()
    drawn = pool.render(jobs) if pool is not None else {}
    return {job.name: drawn[job.name] if job.name in drawn else _draw(job) for job in jobs}
