"""Build, cache and call the compiled row loops of ``cpu_native.c`` (fused cross entropy on CPU).

The C file is compiled at first use with the system C compiler (``$CC``, else ``cc``) into
``$SOFTCLASS_CACHE_DIR`` (default ``$XDG_CACHE_HOME/softclass`` or ``~/.cache/softclass``), keyed
by a hash of the source, the flags, the compiler and the CPU's feature flags, so a cached library
is never loaded on a machine it was not built for. The cache is not trusted blindly: a library is
loaded only if it, its hash record and the directory (created 0700) belong to the user and are not
writable by others, and its content hash is the one recorded when it was built (see
:func:`load_compiled`); anything else is rebuilt. Files are published atomically, so concurrent
first uses are safe. It is loaded with ctypes (no torch headers, no Python.h: the build
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
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

from softclass.errors import NativeCacheWarning

__all__ = [
    "CE_SOURCE",
    "LOSS_ROWS_HEADER",
    "SUPPORTED_DTYPES",
    "NativeCacheWarning",
    "library",
    "load_compiled",
    "pointer",
    "row_ranges",
    "run_ranges",
    "unavailable_reason",
]

SUPPORTED_DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float64: "f64"}
_SOURCE = CE_SOURCE = Path(__file__).with_name("cpu_native.c")
# The row math of the losses (log-sum-exp, cross entropy and its gradient, softmax, the design
# losses of probabilities), included by cpu_native.c; the compiled MLP training loops
# (softclass/training/mlp_native.c) include both: one source compiled into both libraries.
LOSS_ROWS_HEADER = Path(__file__).with_name("loss_rows.h")
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

# Hex digits of the content hash in a cached library's file name.
_NAME_DIGITS = 16
_MAX_RECORD_BYTES = 128
_MAX_LIBRARY_BYTES = 64 << 20

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

# Every function library() binds: a cached library without one of them is rebuilt.
_SYMBOLS = tuple(
    f"ce_{step}_{suffix}"
    for suffix in SUPPORTED_DTYPES.values()
    for step in ("forward", "finish", "backward", "scale", "kept_weight_sum")
)

T = TypeVar("T")

_failure: list[str] = []
# Cache directories already warned about in this process.
_distrusted_warned: set[Path] = set()


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


def _user_id() -> int:
    return os.geteuid()


def _untrusted(status: os.stat_result, kind: str) -> str | None:
    """Why a file or directory with this ``stat`` must not be trusted, or None if it can be:
    it must be of ``kind`` ("file" or "directory"), owned by this user, not writable by others."""
    is_kind = stat.S_ISDIR if kind == "directory" else stat.S_ISREG
    if not is_kind(status.st_mode):
        return f"not a {kind}"
    if status.st_uid != _user_id():
        return f"owned by uid {status.st_uid}, not by this user (uid {_user_id()})"
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by others (mode {stat.S_IMODE(status.st_mode):04o})"
    return None


def _private_directory(directory: Path) -> str | None:
    """Create ``directory`` with mode 0700 (whatever the umask) if missing; return why it cannot
    be trusted to hold libraries, or None if it can."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)
        os.chmod(directory, 0o700)  # the umask may have taken bits; never give any
    except FileExistsError:
        pass
    return _untrusted(os.stat(directory), "directory")


def _open_trusted(path: Path, max_bytes: int) -> tuple[int, bytes] | str:
    """Open ``path`` (no symlinks) and read it whole: ``(descriptor, content)`` if it is a regular
    file of this user, not writable by others and at most ``max_bytes``, else why not."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"not readable ({error.strerror})"
    status = os.fstat(descriptor)
    reason = _untrusted(status, "file")
    if reason is None and status.st_size > max_bytes:
        reason = f"larger than {max_bytes} bytes"
    if reason is not None:
        os.close(descriptor)
        return reason
    with os.fdopen(os.dup(descriptor), "rb") as handle:
        content = handle.read(max_bytes + 1)
    return descriptor, content


def _load_descriptor(descriptor: int, symbols: Sequence[str]) -> ctypes.CDLL | str:
    """dlopen the file open as ``descriptor`` (the very bytes that were checked, not whatever the
    path names now) and check that it exports ``symbols``; the library, or why not.

    A loaded library's descriptor stays open: the dynamic loader recognises libraries by the name
    they were opened under, and a reused ``/proc/self/fd/N`` would return the earlier library.
    """
    try:
        loaded = ctypes.CDLL(f"/proc/self/fd/{descriptor}")
    except OSError as error:
        os.close(descriptor)
        return f"not loadable ({str(error)[-200:]})"
    missing = [name for name in symbols if not hasattr(loaded, name)]
    if missing:
        return f"missing the symbols {missing[:3]}"
    return loaded


def _load_cached(stem: str, directory: Path, symbols: Sequence[str]) -> ctypes.CDLL | str:
    """The cached library of ``stem`` if its record (``stem.sha256``) and the library it names
    are trusted and the library's SHA-256 equals the recorded one; else why not."""
    record = _open_trusted(directory / f"{stem}.sha256", _MAX_RECORD_BYTES)
    if isinstance(record, str):
        return f"its hash record is {record}"
    os.close(record[0])
    digest = record[1].decode("ascii", "replace").strip()
    if len(digest) != 64 or any(char not in "0123456789abcdef" for char in digest):
        return "its hash record is damaged"
    opened = _open_trusted(directory / f"{stem}-{digest[:_NAME_DIGITS]}.so", _MAX_LIBRARY_BYTES)
    if isinstance(opened, str):
        return f"the library is {opened}"
    descriptor, content = opened
    if hashlib.sha256(content).hexdigest() != digest:
        os.close(descriptor)
        return "the library's content does not match the hash recorded when it was built"
    return _load_descriptor(descriptor, symbols)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600."""
    descriptor, temp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    finally:
        Path(temp_name).unlink(missing_ok=True)


def _build(
    compiler: str,
    source: Path,
    flags: Sequence[str],
    libraries: Sequence[str],
    stem: str,
    directory: Path,
    symbols: Sequence[str],
) -> ctypes.CDLL | str:
    """Compile into a private temporary file, load that file, then publish it in ``directory``
    under its content hash with the hash record beside it. The library, or why it failed."""
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".so.tmp", dir=directory)
    os.close(descriptor)
    temp_path = Path(temp_name)
    try:
        # Absolute source path: a file may include itself through __FILE__.
        subprocess.run(
            [compiler, *flags, "-o", str(temp_path), str(source.resolve()), *libraries],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.chmod(temp_path, 0o600)  # the linker may recreate the file with the umask's mode
        opened = _open_trusted(temp_path, _MAX_LIBRARY_BYTES)
        if isinstance(opened, str):
            return f"the freshly built library is {opened}"
        descriptor, content = opened
        digest = hashlib.sha256(content).hexdigest()
        os.replace(temp_path, directory / f"{stem}-{digest[:_NAME_DIGITS]}.so")
        _write_private(directory / f"{stem}.sha256", (digest + "\n").encode())
        return _load_descriptor(descriptor, symbols)
    finally:
        temp_path.unlink(missing_ok=True)


def load_compiled(
    source: Path,
    flags: Sequence[str],
    libraries: Sequence[str],
    failures: list[str],
    symbols: Sequence[str],
    *,
    headers: Sequence[Path] = (),
) -> ctypes.CDLL | None:
    """Compile ``source`` (once per source, headers, flags, compiler and CPU; cached on disk) and
    load it. ``headers``: the files ``source`` includes from other directories (their directories
    are put on the include path); their content is part of the cache key, so a changed header
    rebuilds every library that includes it.

    The cache is trusted only as far as it is checked: the cache directory is created 0700
    whatever the umask; a cached library is loaded only if the directory, the library and its
    hash record are owned by this user and not writable by others, and the library's SHA-256
    equals the one recorded when softclass built it. The checked bytes themselves are loaded
    (through their open file descriptor), then they must export ``symbols``. Anything else — a
    planted, truncated, foreign or stale file — is never loaded: the library is rebuilt, with one
    :class:`NativeCacheWarning` saying why. When the directory itself cannot be trusted, the
    library is built in a private temporary directory for this process.

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
    flags = [*flags, *(f"-I{directory}" for directory in dict.fromkeys(h.parent for h in headers))]
    key = hashlib.sha256(
        b"\0".join(
            [
                source.read_bytes(),
                *(header.read_bytes() for header in headers),
                " ".join([*flags, *libraries]).encode(),
                compiler.encode(),
                _cpu_features().encode(),
            ]
        )
    ).hexdigest()[:16]
    stem = f"{source.stem}-{key}"
    directory = _cache_directory()
    try:
        distrust = _private_directory(directory)
        if distrust is not None:
            if directory not in _distrusted_warned:  # one warning per run, not per library
                _distrusted_warned.add(directory)
                warnings.warn(
                    f"softclass's compiled-code cache {directory} is {distrust}: nothing is "
                    "loaded from it; the compiled kernels are built in a private temporary "
                    "directory for this run (make the cache yours with mode 0700, or set "
                    "SOFTCLASS_CACHE_DIR)",
                    NativeCacheWarning,
                    stacklevel=2,
                )
            with tempfile.TemporaryDirectory(prefix="softclass-native-") as private:
                loaded = _build(compiler, source, flags, libraries, stem, Path(private), symbols)
        else:
            loaded = _load_cached(stem, directory, symbols)
            if isinstance(loaded, str):
                if loaded != "its hash record is missing":
                    warnings.warn(
                        f"compiled library {stem} in {directory} was not loaded: {loaded}; "
                        "rebuilt it",
                        NativeCacheWarning,
                        stacklevel=2,
                    )
                loaded = _build(compiler, source, flags, libraries, stem, directory, symbols)
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        failures.append(f"building {source.name} failed: {error} {detail.decode()[-500:]}")
        return None
    if isinstance(loaded, str):
        failures.append(f"building {source.name} failed: {loaded}")
        return None
    return loaded


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled kernels (built on first call, then cached on disk), or None if unavailable."""
    loaded = load_compiled(
        _SOURCE, _FLAGS, _LIBRARIES, _failure, _SYMBOLS, headers=(LOSS_ROWS_HEADER,)
    )
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
