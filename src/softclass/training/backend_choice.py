"""Compiled C or batched torch for a run of the batched engine, chosen by measured speed.

The compiled loops (:mod:`softclass.training.mlp_native`) take a step's rows one at a time on one
thread: their cost grows with the step's arithmetic, ``M·B·Σ_k in_k·out_k`` multiply-adds for the
forward (the backward about twice that). The torch backend pays ~40 op dispatches per step
(~0.1 ms) whatever the size, then runs BLAS on torch's threads. So small steps belong to C, large
ones to torch, and in between the answer depends on the machine, the thread count and the layer
shapes; there it is measured. When the compiled step has a BLAS (``mlp_step.c``: a batch's
products through gemm, the rest of the step in C, no per-op dispatch), it serves the large steps
too.

The rule (:func:`choose_by_speed`), per problem shape (:class:`StepShape`):

* obvious by a wide margin, not measured: at most ``_COMPILED_SURE_WORK`` multiply-adds per step
  → compiled; above it, when the compiled step has a BLAS for its products
  (:meth:`~softclass.training.backends.compiled.CompiledLoops.blas_step`) → compiled (the same
  products as torch's, the rest of the step in C); else at least ``_TORCH_SURE_WORK`` with a
  layer of at least ``_TORCH_SURE_LAYER`` weights → torch (the bounds are a factor ~4 outside
  the crossings measured in benchmarks/RESULTS.md);
* otherwise measured: a copy of the trainer runs ``_MEASURED_STEPS`` steps of each backend on
  synthetic rows of the run's shape (its widths, members, batch size, dtype, optimizer, designs and
  torch's thread count), after a one-step warm-up, best of up to ``_MEASURED_REPEATS`` interleaved
  timings (CPU time of the calling thread; wall time for torch on several threads); the faster per
  step wins. The run's own parameters and optimizer state are not
  touched.
* when measuring is not possible or not worth it (``SOFTCLASS_MEASURE_BACKEND=0``, a run shorter
  than ``_MIN_RUN_STEPS`` steps, or the measurement failed) the fixed rule of
  ``_COMPILED_MAX_LAYER_WEIGHTS`` decides.

Decisions are cached per shape for the life of the process, so a shape is measured once. Since
the backends agree only to rounding, two processes that measure differently may train float32
models that differ in the last bits; ``backend="compiled"`` or ``"torch"`` fixes the backend.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from softclass.mlp.model import MLPConfig
from softclass.training.batching import batch_bounds
from softclass.training.config import TrainConfig

__all__ = ["BackendChoice", "StepShape", "choose_by_speed", "clear_decisions"]

# The fixed rule, when measuring is not possible: compiled when every layer has at most this many
# weights (above, torch's BLAS matmuls measured faster at batch 32-256; benchmarks/RESULTS.md).
_COMPILED_MAX_LAYER_WEIGHTS = 1024
# Forward multiply-adds per step (M·B·Σ in·out) up to which the compiled loops win without
# measuring: measured ≤ 0.03 ms per step there against ≥ 0.1 ms of torch dispatch alone.
_COMPILED_SURE_WORK = 16_384
# From this many forward multiply-adds per step, with a layer of at least _TORCH_SURE_LAYER
# weights, torch wins without measuring (its BLAS measured ≥ 3x the compiled loops there).
_TORCH_SURE_WORK = 4_194_304
_TORCH_SURE_LAYER = 4 * _COMPILED_MAX_LAYER_WEIGHTS
# Steps per timed run, and timed runs per backend (after a one-step warm-up of each); after two,
# the repeats stop once one backend is _CLEAR_MARGIN times faster than the other (a single run
# can be slowed by another process: at load 15 one such run picked the wrong backend).
_MEASURED_STEPS = 3
_MEASURED_REPEATS = 3
_CLEAR_MARGIN = 3.0
# A run shorter than this many steps does not pay for measuring (~4·_MEASURED_STEPS steps of
# each backend): the fixed rule decides.
_MIN_RUN_STEPS = 400

# The clocks of the measurements (tests replace them): the calling thread's CPU time, exact for
# the compiled loops and for torch on one thread even when other processes take the cores (wall
# time measured a run 3.5x too slow at load 9); wall time for torch on several threads, whose
# work runs on other threads too.
_clock = time.thread_time
_wall_clock = time.perf_counter

_decisions: dict[StepShape, BackendChoice] = {}


class BatchedRun(Protocol):
    """What the chooser reads of a batched trainer (:class:`softclass.training.backends.batched.
    BatchedTrainer`): its shape, and one epoch of each backend on rows of its own."""

    config: MLPConfig
    settings: TrainConfig
    members: Sequence[Any]  # each with a ``design`` name
    dtype: torch.dtype
    device: torch.device
    activation: Any  # registry entries: ``.name``
    optimizer: Any

    def training_rows(self, features: torch.Tensor, *, targets: torch.Tensor) -> Any: ...

    def run_compiled_epochs(self, rows: Any, first_epoch: int, n_epochs: int) -> Any: ...

    def train_epoch(self, rows: Any, epoch: int) -> Any: ...

    def blas_step(self, n_rows: int | None = None) -> Any: ...


@dataclass(frozen=True)
class BackendChoice:
    """Which backend trains a run and why.

    Attributes:
        backend: "compiled" or "torch".
        reason: one line saying why (the rule applied, or the measured times).
        seconds_per_step: ``(compiled, torch)`` measured seconds per step, or None when the
            choice was not measured.
    """

    backend: str
    reason: str
    seconds_per_step: tuple[float, float] | None = None


@dataclass(frozen=True)
class StepShape:
    """What a step's speed depends on: the key of the cached decisions.

    Attributes:
        widths: features, hidden widths, classes.
        batch_rows: rows per step (the batch size, or the row count when smaller).
        n_members: M, models trained together.
        dtype: parameter dtype, e.g. "torch.float32".
        threads: torch's thread count (the compiled loops use one thread).
        activation, optimizer: registry names.
        designs: the members' design names, sorted, once each.
    """

    widths: tuple[int, ...]
    batch_rows: int
    n_members: int
    dtype: str
    threads: int
    activation: str
    optimizer: str
    designs: tuple[str, ...]

    @property
    def work(self) -> int:
        """Forward multiply-adds of one step of every member: ``M·B·Σ_k in_k·out_k``."""
        layers = sum(a * b for a, b in itertools.pairwise(self.widths))
        return self.n_members * self.batch_rows * layers

    @property
    def largest_layer(self) -> int:
        """Weights of the largest layer."""
        return max(a * b for a, b in itertools.pairwise(self.widths))


def step_shape(trainer: BatchedRun, n_rows: int | None) -> StepShape:
    """The :class:`StepShape` of ``trainer``'s run on ``n_rows`` training rows (None: a full
    batch)."""
    config = trainer.config
    batch_size = trainer.settings.batch_size
    return StepShape(
        widths=(config.n_features, *config.hidden, config.n_classes),
        batch_rows=batch_size if n_rows is None else max(1, min(batch_size, n_rows)),
        n_members=len(trainer.members),
        dtype=str(trainer.dtype),
        threads=torch.get_num_threads(),
        activation=trainer.activation.name,
        optimizer=trainer.optimizer.name,
        designs=tuple(sorted({member.design for member in trainer.members})),
    )


def clear_decisions() -> None:
    """Forget every cached decision (the next run of each shape decides again)."""
    _decisions.clear()


def choose_by_speed(trainer: BatchedRun, n_rows: int | None = None) -> BackendChoice:
    """The faster of the compiled loops and the torch backend for ``trainer``'s run on
    ``n_rows`` rows (see the module's rule); the compiled loops must support the run.

    Cached per :class:`StepShape`: a shape is decided (and measured at most) once per process.
    """
    shape = step_shape(trainer, n_rows)
    choice = _decisions.get(shape)
    if choice is None:
        choice = _decisions[shape] = _decide(trainer, shape, n_rows)
    return choice


def _decide(trainer: BatchedRun, shape: StepShape, n_rows: int | None) -> BackendChoice:
    work = shape.work
    if work <= _COMPILED_SURE_WORK:
        return BackendChoice(
            "compiled",
            f"{work:,} multiply-adds per step (<= {_COMPILED_SURE_WORK:,}): the compiled loops "
            "win by a wide margin (not measured)",
        )
    if trainer.blas_step(n_rows) is not None:
        return BackendChoice(
            "compiled",
            f"{work:,} multiply-adds per step: the compiled step computes the products through "
            "BLAS's gemm, as torch does, without torch's per-op dispatch and allocations "
            "(1.2-2.6x faster per step on one thread in benchmarks/train_step.py; not measured)",
        )
    if work >= _TORCH_SURE_WORK and shape.largest_layer >= _TORCH_SURE_LAYER:
        return BackendChoice(
            "torch",
            f"{work:,} multiply-adds per step (>= {_TORCH_SURE_WORK:,}) and a layer of "
            f"{shape.largest_layer:,} weights (>= {_TORCH_SURE_LAYER:,}): torch's matmuls win by "
            "a wide margin (not measured)",
        )
    if os.environ.get("SOFTCLASS_MEASURE_BACKEND", "1") == "0":
        return _fixed_rule(shape, "measuring turned off by SOFTCLASS_MEASURE_BACKEND=0")
    run_steps = trainer.settings.epochs * (
        math.ceil(n_rows / shape.batch_rows) if n_rows is not None else 1
    )
    if n_rows is not None and run_steps < _MIN_RUN_STEPS:
        return _fixed_rule(
            shape, f"a run of {run_steps:,} steps (< {_MIN_RUN_STEPS:,}) does not pay for measuring"
        )
    try:
        compiled, torch_path = _measure(trainer, shape)
    except (MemoryError, RuntimeError) as error:
        return _fixed_rule(shape, f"measuring failed ({str(error)[:200]})")
    faster = "compiled" if compiled <= torch_path else "torch"
    return BackendChoice(
        faster,
        f"measured {compiled * 1e3:.3f} ms per step compiled against {torch_path * 1e3:.3f} ms "
        f"torch ({shape.threads} threads) at {work:,} multiply-adds per step",
        (compiled, torch_path),
    )


def _fixed_rule(shape: StepShape, why: str) -> BackendChoice:
    """The threshold rule: compiled when every layer has at most _COMPILED_MAX_LAYER_WEIGHTS."""
    small = shape.largest_layer <= _COMPILED_MAX_LAYER_WEIGHTS
    return BackendChoice(
        "compiled" if small else "torch",
        f"{why}: the largest layer has {shape.largest_layer:,} weights "
        f"({'<=' if small else '>'} {_COMPILED_MAX_LAYER_WEIGHTS:,})",
    )


def _measure(trainer: BatchedRun, shape: StepShape) -> tuple[float, float]:
    """Seconds per step ``(compiled, torch)`` of a copy of ``trainer`` on synthetic rows of the
    run's shape: after a one-step warm-up of each backend, the best of up to
    ``_MEASURED_REPEATS`` interleaved runs of ``_MEASURED_STEPS`` steps (two once one backend is
    ``_CLEAR_MARGIN`` times faster)."""
    probe = copy.deepcopy(trainer)
    probe.settings = dataclasses.replace(trainer.settings, backend="torch")
    n_rows = shape.batch_rows * _MEASURED_STEPS
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(n_rows, shape.widths[0], generator=generator).to(
        probe.device, probe.dtype
    )
    classes = torch.arange(n_rows, device=probe.device) % shape.widths[-1]
    warm_up = probe.training_rows(features[: shape.batch_rows], targets=classes[: shape.batch_rows])
    rows = probe.training_rows(features, targets=classes)
    steps = len(batch_bounds(n_rows, shape.batch_rows))
    runs = {
        "compiled": lambda table: probe.run_compiled_epochs(table, 0, 1),
        "torch": lambda table: probe.train_epoch(table, 0),
    }
    for run in runs.values():
        run(warm_up)
    best = dict.fromkeys(runs, math.inf)
    clocks = {"compiled": _clock, "torch": _clock if shape.threads == 1 else _wall_clock}
    for repeat in range(_MEASURED_REPEATS):
        for name, run in runs.items():
            clock = clocks[name]
            start = clock()
            run(rows)
            best[name] = min(best[name], clock() - start)
        if repeat >= 1 and max(best.values()) >= _CLEAR_MARGIN * min(best.values()):
            break
    return best["compiled"] / steps, best["torch"] / steps
