"""Build, cache and call the compiled row loops of ``cpu_native.c`` (fused cross entropy on CPU).

The C file is compiled at first use with the system C compiler (``$CC``, else ``cc``) into
``$SOFTCLASS_CACHE_DIR`` (default ``$XDG_CACHE_HOME/softclass`` or ``~/.cache/softclass``), under a
name that hashes the source, the flags, the compiler and the CPU's feature flags, so a cached
library is never loaded on a machine it was not built for; the file is written atomically, so
concurrent first uses are safe. It is loaded with ctypes (no torch headers, no Python.h: the build
takes about a second). If anything fails — no compiler, a read-only cache, a non-Linux platform —
:func:`library` returns None, :func:`unavailable_reason` says why, and callers use the plain torch
path, which computes the same numbers. ``SOFTCLASS_NATIVE=0`` turns the compiled path off.

Rows are split into ranges run by a pool of ``torch.get_num_threads()`` worker threads; ctypes
releases the GIL during each call. One pass over the logits is one call per range, so the loops
stay fast when other processes compete for the cores (unlike hundreds of small OpenMP regions).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

from softclass.io import atomic_path

__all__ = [
    "SUPPORTED_DTYPES",
    "library",
    "load_compiled",
    "pointer",
    "row_ranges",
    "run_ranges",
    "unavailable_reason",
]

SUPPORTED_DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float64: "f64"}
_SOURCE = Path(__file__).with_name("cpu_native.c")
_FLAGS = (
    "-O3",
    "-march=native",
    "-fopenmp-simd",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fPIC",
    "-shared",
)
_LIBRARIES = ("-lm",)
# Below this many logit elements (~4 ms of work) a pass runs on the calling thread: handing off
# to the pool while torch's OpenMP threads still spin measured up to 10x slower at 65536x10.
_PARALLEL_MIN_ELEMENTS = 1 << 22
# Row ranges per worker: several, so a worker slowed by another process does not hold up the rest.
_RANGES_PER_WORKER = 8

_I64 = ctypes.c_int64
_F64 = ctypes.c_double
_PTR = ctypes.c_void_p
# ce_forward_*(logits, row_stride, n_classes, row_begin, row_end, target, target_stride,
#   ignore_index, class_weight, label_smoothing, logsumexp, row_loss, row_loss_stride, sums,
#   mean, loss, denominator, grad, grad_row_stride, grad_denominator)
_FORWARD_ARGS = [
    *(_PTR, _I64, _I64, _I64, _I64, _PTR, _I64, _I64, _PTR, _F64),
    *(_PTR, _PTR, _I64, _PTR, _I64, _PTR, _PTR, _PTR, _I64, _PTR),
]
# ce_scale_*(grad, grad_row_stride, n_classes, row_begin, row_end, factor)
_SCALE_ARGS = [_PTR, _I64, _I64, _I64, _I64, _PTR]
# ce_kept_weight_sum_*(target, target_stride, n_rows, ignore_index, n_classes, class_weight, out)
_KEPT_WEIGHT_SUM_ARGS = [_PTR, _I64, _I64, _I64, _I64, _PTR, _PTR]
# ce_finish_*(sums, n_parts, mean, loss, denominator)
_FINISH_ARGS = [_PTR, _I64, _I64, _PTR, _PTR]
# ce_backward_*(logits, row_stride, n_classes, row_begin, row_end, target, target_stride,
#   ignore_index, class_weight, label_smoothing, logsumexp, grad_output, grad_output_stride,
#   denominator, grad, grad_row_stride)
_BACKWARD_ARGS = [
    *(_PTR, _I64, _I64, _I64, _I64, _PTR, _I64, _I64, _PTR, _F64),
    *(_PTR, _PTR, _I64, _PTR, _PTR, _I64),
]

T = TypeVar("T")

_failure: list[str] = []


def _cache_directory() -> Path:
    configured = os.environ.get("SOFTCLASS_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "softclass"


def _cpu_features() -> str:
    """The CPU's feature flags (Linux), so that -march=native builds are keyed by machine."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str, source: Path, flags: Sequence[str], libraries: Sequence[str]) -> Path:
    key = hashlib.sha256(
        b"\0".join(
            [
                source.read_bytes(),
                " ".join([*flags, *libraries]).encode(),
                compiler.encode(),
                _cpu_features().encode(),
            ]
        )
    ).hexdigest()[:16]
    target = _cache_directory() / f"{source.stem}-{key}.so"
    if not target.exists():
        with atomic_path(target) as temp_path:
            # Absolute source path: a file may include itself through __FILE__.
            subprocess.run(
                [compiler, *flags, "-o", str(temp_path), str(source.resolve()), *libraries],
                check=True,
                capture_output=True,
                timeout=120,
            )
    return target


def load_compiled(
    source: Path, flags: Sequence[str], libraries: Sequence[str], failures: list[str]
) -> ctypes.CDLL | None:
    """Compile ``source`` (once per source, flags, compiler and CPU; cached on disk) and load it.

    Returns None, with the reason appended to ``failures``, when compiled code is turned off
    (``SOFTCLASS_NATIVE=0``), the platform is not Linux, no compiler is found or the build fails.
    """
    if os.environ.get("SOFTCLASS_NATIVE", "1") == "0":
        failures.append("disabled by SOFTCLASS_NATIVE=0")
        return None
    if platform.system() != "Linux":
        failures.append(f"compiled kernels are built on Linux only, not {platform.system()}")
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        failures.append(f"no C compiler found (looked for {os.environ.get('CC', 'cc')!r})")
        return None
    try:
        return ctypes.CDLL(str(_build(compiler, source, flags, libraries)))
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        failures.append(f"building {source.name} failed: {error} {detail.decode()[-500:]}")
        return None


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled kernels (built on first call, then cached on disk), or None if unavailable."""
    loaded = load_compiled(_SOURCE, _FLAGS, _LIBRARIES, _failure)
    if loaded is None:
        return None
    for suffix in SUPPORTED_DTYPES.values():
        forward = getattr(loaded, f"ce_forward_{suffix}")
        forward.argtypes = _FORWARD_ARGS
        forward.restype = _I64
        finish = getattr(loaded, f"ce_finish_{suffix}")
        finish.argtypes = _FINISH_ARGS
        finish.restype = None
        for name, argtypes in (
            ("backward", _BACKWARD_ARGS),
            ("scale", _SCALE_ARGS),
            ("kept_weight_sum", _KEPT_WEIGHT_SUM_ARGS),
        ):
            function = getattr(loaded, f"ce_{name}_{suffix}")
            function.argtypes = argtypes
            function.restype = None
    return loaded


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
