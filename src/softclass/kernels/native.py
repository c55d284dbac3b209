"""Load and call the compiled row loops of ``cpu_native.c`` (fused cross entropy on CPU).

The C code is compiled when softclass is installed (``setup.py``: optional setuptools
extensions, loaded here with ctypes; they call no Python API). ``import softclass`` never runs a
compiler and keeps no compiled code anywhere else: a library is the file the install put beside
this module (``_cpu_native*.so``; ``training/_mlp_native*.so`` for the training loops). In a
checkout used through ``PYTHONPATH=src``, ``pip install -e .`` or ``python setup.py build_ext
--inplace`` builds them in place.

When a library is not there (no compiler at install), cannot be loaded, lacks a function this
code calls, or — in a checkout — is older than a C file it is built from (it would no longer
match the ctypes declarations), :func:`library` returns None, :func:`unavailable_reason` says
why, one :class:`NativeUnavailableWarning` per process says what runs slower, and callers use the
plain torch path, which computes the same numbers. ``SOFTCLASS_NATIVE=0`` turns the compiled
path off (no warning).

Rows are split into ranges run by a pool of ``torch.get_num_threads()`` worker threads; ctypes
releases the GIL during each call. One pass over the logits is one call per range, so the loops
stay fast when other processes compete for the cores (unlike hundreds of small OpenMP regions).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import itertools
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

from softclass.errors import NativeUnavailableWarning

__all__ = [
    "CE_SOURCES",
    "SUPPORTED_DTYPES",
    "NativeUnavailableWarning",
    "drop_kept_gradient",
    "empty_gradient",
    "library",
    "load_built",
    "pointer",
    "row_ranges",
    "run_ranges",
    "unavailable_reason",
]

SUPPORTED_DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float64: "f64"}
# The files the library is built from (setup.py): the row loops, and the row math of the losses
# (log-sum-exp, cross entropy and its gradient, softmax, the design losses of probabilities) that
# the compiled MLP training loops (softclass/training/mlp_native.c) include too.
CE_SOURCES = tuple(
    Path(__file__).with_name(name) for name in ("cpu_native.c", "loss_rows.h", "spatial_loops.h")
)
# Below this many logit elements (~4 ms of work) a pass runs on the calling thread: handing off
# to the pool while torch's OpenMP threads still spin measured up to 10x slower at 65536x10.
_PARALLEL_MIN_ELEMENTS = 1 << 22
# Row ranges per worker: several, so a worker slowed by another process does not hold up the rest.
_RANGES_PER_WORKER = 8

_I64 = ctypes.c_int64
_F64 = ctypes.c_double
_PTR = ctypes.c_void_p
# The compiled functions library() binds, per dtype suffix ``<name>_<suffix>``: (argument types,
# result type). A library without one of them is not loaded.
_SIGNATURES = {
    # (logits, row_stride, n_classes, row_begin, row_end, target, target_stride, ignore_index,
    #  class_weight, label_smoothing, logsumexp, row_loss, row_loss_stride, sums, mean, loss,
    #  denominator, grad, grad_row_stride, grad_denominator) -> first bad row or -1
    "ce_forward": (
        (
            *(_PTR, _I64, _I64, _I64, _I64, _PTR, _I64, _I64, _PTR, _F64),
            *(_PTR, _PTR, _I64, _PTR, _I64, _PTR, _PTR, _PTR, _I64, _PTR),
        ),
        _I64,
    ),
    # (sums, n_parts, mean, loss, denominator)
    "ce_finish": ((_PTR, _I64, _I64, _PTR, _PTR), None),
    # (logits, row_stride, n_classes, row_begin, row_end, target, target_stride, ignore_index,
    #  class_weight, label_smoothing, logsumexp, grad_output, grad_output_stride, denominator,
    #  grad, grad_row_stride)
    "ce_backward": (
        (
            *(_PTR, _I64, _I64, _I64, _I64, _PTR, _I64, _I64, _PTR, _F64),
            *(_PTR, _PTR, _I64, _PTR, _PTR, _I64),
        ),
        None,
    ),
    # (grad, grad_row_stride, n_classes, row_begin, row_end, factor)
    "ce_scale": ((_PTR, _I64, _I64, _I64, _I64, _PTR), None),
    # (target, target_stride, n_rows, ignore_index, n_classes, class_weight, out)
    "ce_kept_weight_sum": ((_PTR, _I64, _I64, _I64, _I64, _PTR, _PTR), None),
    # (logits, batch_stride, n_classes, n_spatial, begin, end, target, ignore_index,
    #  class_weight, label_smoothing, logsumexp, row_loss, sums, grad, grad_denominator)
    #  -> first bad position or -1
    "ce_spatial_forward": (
        (_PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _I64, _PTR, _F64, _PTR, _PTR, _PTR, _PTR, _PTR),
        _I64,
    ),
    # (logits, batch_stride, n_classes, n_spatial, begin, end, target, ignore_index,
    #  class_weight, label_smoothing, logsumexp, grad_output, grad_output_stride, denominator,
    #  grad)
    "ce_spatial_backward": (
        (_PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _I64, _PTR, _F64, _PTR, _PTR, _I64, _PTR, _PTR),
        None,
    ),
    # (input, row_stride, n_classes, row_begin, row_end, out, out_row_stride, log_output)
    "softmax_forward": ((_PTR, _I64, _I64, _I64, _I64, _PTR, _I64, _I64), None),
    # (grad, grad_row_stride, output, output_row_stride, n_classes, row_begin, row_end, result,
    #  result_row_stride, log_output)
    "softmax_backward": ((_PTR, _I64, _PTR, _I64, _I64, _I64, _I64, _PTR, _I64, _I64), None),
}
# Functions without a dtype suffix: (argument types, result type).
_UNTYPED_SIGNATURES = {
    # (shape, ndim, DLPack type code, bits) -> DLManagedTensor* or NULL
    "gradient_block_take": ((_PTR, _I64, _I64, _I64), _PTR),
    "gradient_block_drop": ((), None),
    # (DLManagedTensor*): the block given back (kept for the next request)
    "gradient_block_release": ((_PTR,), None),
}
_SYMBOLS = (
    *(f"{name}_{dtype}" for dtype in SUPPORTED_DTYPES.values() for name in _SIGNATURES),
    *_UNTYPED_SIGNATURES,
)
# DLPack (type code, bits) of the dtypes gradient_block_take makes.
_DLPACK_TYPES = {torch.float32: (2, 32), torch.bfloat16: (4, 16), torch.float64: (2, 64)}
# Smallest gradient (bytes) made in the reused block of cpu_native.c. Below it the system
# allocator reuses freed memory itself: a fresh torch.empty + fill_ measured as fast as a warm
# fill_ up to 48 MiB, and 28 ms against 1.8 at 64 MiB (page faults), 1 thread.
_REUSED_MIN_BYTES = 1 << 26
# The name torch.from_dlpack expects of a capsule it takes (a constant: the capsule keeps the
# pointer, not a copy).
_CAPSULE_NAME = b"dltensor"
_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.argtypes, _new_capsule.restype = (_PTR, ctypes.c_char_p, _PTR), ctypes.py_object
# The error of a torch.from_dlpack that refused the block (then torch allocates every gradient).
_dlpack_refused: list[Exception] = []


T = TypeVar("T")

_failure: list[str] = []
# Whether this process has said (once) that compiled code is unavailable.
_warned: list[bool] = []


def built_path(directory: Path, stem: str) -> Path | None:
    """The library ``stem`` built by setup.py into ``directory`` (the file name carries one of
    Python's extension suffixes, e.g. ``.cpython-311-x86_64-linux-gnu.so``), or None."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _why_not_loadable(path: Path | None, sources: Sequence[Path]) -> str | None:
    if path is None:
        return "it was not built at install (no C compiler then?)"
    # Only a checkout carries the C files: there a library older than one of them is stale.
    built = path.stat().st_mtime
    newer = [file.name for file in sources if file.is_file() and file.stat().st_mtime > built]
    if newer:
        return f"{path.name} is older than {', '.join(newer)}"
    return None


def _warn_once(reason: str) -> None:
    if _warned:
        return
    _warned.append(True)
    warnings.warn(
        f"softclass's compiled C code is unavailable ({reason}): softclass runs its torch paths, "
        "which compute the same numbers more slowly: the training of small networks (`softclass "
        "compare`; 2.6x slower on benchmarks/ensemble.py's 40 Iris models) and cross_entropy's "
        "fused kernel on large CPU batches. "
        "Build it with a C compiler: `pip install -e .` (or `python setup.py build_ext --inplace` "
        "in a checkout); SOFTCLASS_NATIVE=0 silences this",
        NativeUnavailableWarning,
        stacklevel=3,
    )


def load_built(
    directory: Path, stem: str, sources: Sequence[Path], symbols: Sequence[str], failures: list[str]
) -> ctypes.CDLL | None:
    """Load the library ``stem`` that the install built from ``sources`` into ``directory`` and
    check that it exports ``symbols``; nothing is compiled here.

    Returns None, with the reason appended to ``failures``, when compiled code is turned off
    (``SOFTCLASS_NATIVE=0``, silently) or the library is missing, older than one of ``sources``
    present beside it (a checkout whose C changed since the build), not loadable or lacking a
    symbol — each of the latter with the one :class:`NativeUnavailableWarning` of the process.
    """
    if os.environ.get("SOFTCLASS_NATIVE", "1") == "0":
        failures.append("disabled by SOFTCLASS_NATIVE=0")
        return None
    path = built_path(directory, stem)
    reason = _why_not_loadable(path, sources)
    loaded = None
    if reason is None:
        try:
            loaded = ctypes.CDLL(str(path))
        except OSError as error:
            reason = f"{path.name} is not loadable ({str(error)[-200:]})"
    if loaded is not None:
        missing = [name for name in symbols if not hasattr(loaded, name)]
        if missing:
            reason, loaded = f"{path.name} lacks the functions {missing[:3]}", None
    if loaded is None:
        reason = f"{stem} in {directory}: {reason}"
        failures.append(reason)
        _warn_once(reason)
    return loaded


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled kernels (loaded on first call), or None if unavailable."""
    loaded = load_built(Path(__file__).parent, "_cpu_native", CE_SOURCES, _SYMBOLS, _failure)
    if loaded is None:
        return None
    for suffix in SUPPORTED_DTYPES.values():
        for name, (argtypes, restype) in _SIGNATURES.items():
            function = getattr(loaded, f"{name}_{suffix}")
            function.argtypes, function.restype = argtypes, restype
    for name, (argtypes, restype) in _UNTYPED_SIGNATURES.items():
        function = getattr(loaded, name)
        function.argtypes, function.restype = argtypes, restype
    return loaded


def empty_gradient(shape: Sequence[int], dtype: torch.dtype) -> Tensor:
    """An uninitialised contiguous CPU tensor for a gradient that the compiled loops fill
    completely: ``torch.empty(shape, dtype=dtype)``, except that from ``_REUSED_MIN_BYTES`` on it
    is the reused block of cpu_native.c (``gradient_block_take``), so that a training loop's
    large gradient does not pay the page faults of fresh memory on every step. The block comes
    back to the library when torch frees the tensor; the last one released stays allocated for
    the next step (``SOFTCLASS_REUSE_GRADIENT=0``: never; :func:`drop_kept_gradient` frees it).
    """
    size = dtype.itemsize * int(torch.Size(shape).numel())
    loaded = library() if size >= _REUSED_MIN_BYTES and dtype in _DLPACK_TYPES else None
    if loaded is None or _dlpack_refused or os.environ.get("SOFTCLASS_REUSE_GRADIENT", "1") == "0":
        return torch.empty(shape, dtype=dtype)
    sizes = (ctypes.c_int64 * len(shape))(*shape)
    address = loaded.gradient_block_take(sizes, len(shape), *_DLPACK_TYPES[dtype])
    if not address:  # no memory for it (or more dimensions than it takes): torch's own error
        return torch.empty(shape, dtype=dtype)
    try:
        return torch.utils.dlpack.from_dlpack(_new_capsule(address, _CAPSULE_NAME, None))
    except (RuntimeError, TypeError, ValueError, BufferError) as error:
        # A torch that does not take the capsule: the block goes back to the library and torch
        # allocates this and every later gradient (said once).
        loaded.gradient_block_release(address)
        _dlpack_refused.append(error)
        warnings.warn(
            f"softclass: torch.from_dlpack refused the reused gradient block ({error}); large "
            "gradients are allocated by torch from now on (each step pays the page faults of "
            "fresh memory)",
            RuntimeWarning,
            stacklevel=2,
        )
        return torch.empty(shape, dtype=dtype)


def drop_kept_gradient() -> None:
    """Free the gradient block kept for the next large gradient (:func:`empty_gradient`), if
    any."""
    loaded = library()
    if loaded is not None:
        loaded.gradient_block_drop()


def unavailable_reason() -> str | None:
    """Why :func:`library` returned None (None when it is available or was not tried yet)."""
    return _failure[-1] if _failure else None


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=torch.get_num_threads(), thread_name_prefix="softclass")


def pointer(tensor: Tensor | None) -> int | None:
    """The address of a tensor's first element (None for None)."""
    return None if tensor is None else tensor.data_ptr()


def row_ranges(n_rows: int, n_classes: int) -> list[tuple[int, int]]:
    """Split [0, n_rows) into the (begin, end) ranges one pass runs: one range (the calling
    thread) below ``_PARALLEL_MIN_ELEMENTS`` logits, else several per worker thread."""
    n_workers = torch.get_num_threads()
    if n_workers == 1 or n_rows * n_classes < _PARALLEL_MIN_ELEMENTS or n_rows <= 1:
        return [(0, n_rows)]
    n_ranges = min(n_rows, n_workers * _RANGES_PER_WORKER)
    bounds = [n_rows * index // n_ranges for index in range(n_ranges + 1)]
    return list(itertools.pairwise(bounds))


def run_ranges(call: Callable[[int, int, int], T], ranges: list[tuple[int, int]]) -> list[T]:
    """``[call(index, begin, end) for each range]``, on the calling thread for a single range,
    else spread over the worker threads; results in range order."""
    if len(ranges) == 1:
        return [call(0, *ranges[0])]
    futures = [_pool().submit(call, index, begin, end) for index, (begin, end) in enumerate(ranges)]
    return [future.result() for future in futures]
