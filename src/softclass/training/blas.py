"""The BLAS that the compiled training step calls for its matrix products (``mlp_step.c``).

The step's C code links no BLAS at build time: it receives the addresses of a ``cblas_sgemm`` and
a ``cblas_dgemm`` (32-bit integers) when it is called. They come from the ``scipy-openblas32``
wheel (OpenBLAS built to be linked against: its shared library exports ``scipy_cblas_sgemm``,
``scipy_cblas_dgemm`` and ``scipy_openblas_set_num_threads``), a dependency of softclass. Without
it — or with ``SOFTCLASS_BLAS=0`` — :func:`gemm` returns None, :func:`unavailable_reason` says
why, one :class:`~softclass.errors.NativeUnavailableWarning` per process says what runs slower,
and wide networks train on the torch path, which computes the same numbers.
"""

from __future__ import annotations

import ctypes
import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from softclass.errors import NativeUnavailableWarning

__all__ = ["Gemm", "gemm", "unavailable_reason"]

_failure: list[str] = []
_warned: list[bool] = []


@dataclass(frozen=True)
class Gemm:
    """A loaded BLAS: the addresses of its row-major-capable CBLAS gemm functions.

    Attributes:
        sgemm, dgemm: addresses of ``cblas_sgemm`` / ``cblas_dgemm`` (32-bit integer variant).
        set_threads: the library's ``openblas_set_num_threads`` (threads of its products).
        origin: the library's file.
        core: the kernels OpenBLAS runs (its ``openblas_get_corename``, e.g. ``"Haswell"``:
            AVX2; ``"SkylakeX"``: AVX-512), as it detected the CPU or as ``OPENBLAS_CORETYPE``
            told it.
    """

    sgemm: int
    dgemm: int
    set_threads: ctypes._CFuncPtr
    origin: str
    core: str = ""


@functools.lru_cache(maxsize=1)
def gemm() -> Gemm | None:
    """The BLAS of the compiled step (loaded on first call), or None when unavailable (then one
    warning per process, unless turned off by ``SOFTCLASS_BLAS=0`` or ``SOFTCLASS_NATIVE=0``)."""
    for variable in ("SOFTCLASS_NATIVE", "SOFTCLASS_BLAS"):
        if os.environ.get(variable, "1") == "0":
            _failure.append(f"disabled by {variable}=0")
            return None
    try:
        import scipy_openblas32
    except ImportError as error:
        return _unavailable(f"the scipy-openblas32 package is not installed ({error})")
    path = Path(scipy_openblas32.get_lib_dir()) / scipy_openblas32.get_library(fullname=True)
    prefix = "scipy_"
    try:
        library = ctypes.CDLL(str(path))
        sgemm, dgemm = library[f"{prefix}cblas_sgemm"], library[f"{prefix}cblas_dgemm"]
        set_threads = library[f"{prefix}openblas_set_num_threads"]
        corename = library[f"{prefix}openblas_get_corename"]
    except (OSError, AttributeError) as error:
        return _unavailable(f"{path} is not a usable OpenBLAS ({str(error)[-200:]})")
    set_threads.argtypes = [ctypes.c_int]
    set_threads.restype = None
    corename.argtypes = []
    corename.restype = ctypes.c_char_p
    return Gemm(
        sgemm=ctypes.cast(sgemm, ctypes.c_void_p).value,
        dgemm=ctypes.cast(dgemm, ctypes.c_void_p).value,
        set_threads=set_threads,
        origin=str(path),
        core=corename().decode(errors="replace"),
    )


def unavailable_reason() -> str | None:
    """Why :func:`gemm` returned None (None when it is available or was not tried yet)."""
    return _failure[-1] if _failure else None


def _unavailable(reason: str) -> None:
    _failure.append(reason)
    if not _warned:
        _warned.append(True)
        warnings.warn(
            f"softclass's BLAS for the compiled training step is unavailable ({reason}): "
            "networks with wide layers train on softclass's torch path, which computes the same "
            "numbers 1.2-2.6x more slowly on one CPU thread (benchmarks/train_step.py). Install it "
            "with `pip install scipy-openblas32`; SOFTCLASS_BLAS=0 silences this",
            NativeUnavailableWarning,
            stacklevel=4,
        )
    return None
