"""Build, cache and call ``mlp_native.c``: whole training runs of small stacked MLPs in C.

At the ensemble's sizes (the Iris 4-7-3 network, batches of 10) a training step is ~40 torch ops
of 2–4 µs dispatch each and almost no arithmetic; the compiled loop runs every batch of every
epoch of a member in one call. Built and loaded like :mod:`softclass.kernels.native` (system C
compiler at first use, a cache file keyed by source, flags, compiler and CPU, ctypes, no torch
headers); ``SOFTCLASS_NATIVE=0`` turns it off, and :func:`library` returns None — with
:func:`unavailable_reason` saying why — whenever it cannot be had, so that callers keep their
torch path. Used by :class:`softclass.training.ensemble.BatchedTrainer`.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from softclass.kernels.native import load_compiled, pointer

__all__ = [
    "ACTIVATION_CODES",
    "LOSS_CODES",
    "SUPPORTED_DTYPES",
    "RunTensors",
    "library",
    "train",
    "unavailable_reason",
]

SUPPORTED_DTYPES = {torch.float32: "f32", torch.float64: "f64"}
# Codes of mlp_native.c's enums.
ACTIVATION_CODES = {"tanh": 0, "relu": 1, "sigmoid": 2, "gelu": 3, "identity": 4}
LOSS_CODES = {"A": 0, "B": 0, "C": 1, "D": 2}  # cross entropy, squared error, MCEE
_OPTIMIZER_CODES = {"sgd": 0, "adam": 1}
_SOURCE = Path(__file__).with_name("mlp_native.c")
# No -ffast-math: the loops must round like torch's elementwise ops (design D's p·(1/p) included).
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared")

_I64 = ctypes.c_int64
_F64 = ctypes.c_double
_PTR = ctypes.c_void_p


class _RunSettings(ctypes.Structure):
    """Mirror of ``RunSettings`` in mlp_native.c (field order and types must match)."""

    _fields_ = [
        ("n_layers", _I64),
        ("widths", _PTR),
        ("activation", _I64),
        ("optimizer", _I64),
        ("learning_rate", _F64),
        ("momentum", _F64),
        ("beta1", _F64),
        ("beta2", _F64),
        ("eps", _F64),
        ("tiny", _F64),
        ("batch_size", _I64),
        ("n_rows", _I64),
        ("n_columns", _I64),
        ("weighted", _I64),
        ("n_epochs", _I64),
        ("step_count", _I64),
        ("n_val_rows", _I64),
    ]


class _RunBuffers(ctypes.Structure):
    """Mirror of ``RunBuffers`` in mlp_native.c."""

    _fields_ = [
        ("parameters", _PTR),
        ("first_moments", _PTR),
        ("second_moments", _PTR),
        ("table", _PTR),
        ("orders", _PTR),
        ("order_of_member", _PTR),
        ("loss_of_member", _PTR),
        ("val_features", _PTR),
        ("val_targets", _PTR),
        ("train_loss", _PTR),
        ("val_loss", _PTR),
        ("val_accuracy", _PTR),
    ]


_failure: list[str] = []


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled training loops (built on first call, then cached on disk), or None."""
    symbols = [f"mlp_train_{suffix}" for suffix in SUPPORTED_DTYPES.values()]
    loaded = load_compiled(_SOURCE, _FLAGS, (), _failure, symbols)
    if loaded is None:
        return None
    for suffix in SUPPORTED_DTYPES.values():
        function = getattr(loaded, f"mlp_train_{suffix}")
        function.argtypes = [ctypes.POINTER(_RunSettings), ctypes.POINTER(_RunBuffers), _I64, _I64]
        function.restype = _I64
    return loaded


def unavailable_reason() -> str | None:
    """Why :func:`library` returned None (None when it is available or was not tried yet)."""
    return _failure[-1] if _failure else None


@dataclass
class RunTensors:
    """The tensors of one compiled run; every tensor contiguous, on CPU, in one float dtype
    (``parameters``, moments, ``table``, ``val_features``) or int64 / float64 as stated.

    Attributes:
        parameters: ``[W0, b0, W1, b1, ...]``, ``W_k (M, out, in)``, ``b_k (M, out)``; updated.
        first_moments, second_moments: optimizer state of the same shapes (second: Adam only).
        table: ``(N, F + C [+ 1])`` features, one-hot targets, optional row weights.
        orders: ``(S, epochs, N)`` int64 row orders; ``order_of_member (M,)`` int64 picks one.
        loss_of_member: ``(M,)`` int64 :data:`LOSS_CODES` of each member's design.
        val_features ``(V, F)``, val_targets ``(V,)`` int64: validation rows, or None.
        train_loss, val_loss, val_accuracy: ``(M, epochs)`` float64 outputs.
    """

    parameters: list[Tensor]
    first_moments: list[Tensor]
    second_moments: list[Tensor] | None
    table: Tensor
    orders: Tensor
    order_of_member: Tensor
    loss_of_member: Tensor
    val_features: Tensor | None
    val_targets: Tensor | None
    train_loss: Tensor
    val_loss: Tensor
    val_accuracy: Tensor


def train(
    compiled: ctypes.CDLL,
    tensors: RunTensors,
    widths: list[int],
    activation: str,
    optimizer: str,
    learning_rate: float,
    momentum: float,
    adam_betas: tuple[float, float],
    adam_eps: float,
    batch_size: int,
    weighted: bool,
    step_count: int,
) -> None:
    """Run ``tensors.orders.shape[1]`` epochs of every member in one C call (one thread).

    ``widths``: features, hidden widths, classes. ``step_count``: optimizer steps already taken
    (SGD momentum starts its buffer on step 1, Adam's bias corrections count from it).
    """
    dtype = tensors.table.dtype
    widths_array = (ctypes.c_int64 * len(widths))(*widths)
    parameter_pointers = (ctypes.c_void_p * len(tensors.parameters))(
        *(pointer(tensor) for tensor in tensors.parameters)
    )
    first_pointers = (ctypes.c_void_p * len(tensors.first_moments))(
        *(pointer(tensor) for tensor in tensors.first_moments)
    )
    second_pointers = (
        None
        if tensors.second_moments is None
        else (ctypes.c_void_p * len(tensors.second_moments))(
            *(pointer(tensor) for tensor in tensors.second_moments)
        )
    )
    n_members = tensors.parameters[0].shape[0]
    settings = _RunSettings(
        n_layers=len(widths) - 1,
        widths=ctypes.cast(widths_array, _PTR),
        activation=ACTIVATION_CODES[activation],
        optimizer=_OPTIMIZER_CODES[optimizer],
        learning_rate=learning_rate,
        momentum=momentum,
        beta1=adam_betas[0],
        beta2=adam_betas[1],
        eps=adam_eps,
        tiny=torch.finfo(dtype).tiny,
        batch_size=batch_size,
        n_rows=tensors.table.shape[0],
        n_columns=tensors.table.shape[1],
        weighted=int(weighted),
        n_epochs=tensors.orders.shape[1],
        step_count=step_count,
        n_val_rows=0 if tensors.val_features is None else tensors.val_features.shape[0],
    )
    buffers = _RunBuffers(
        parameters=ctypes.cast(parameter_pointers, _PTR),
        first_moments=ctypes.cast(first_pointers, _PTR),
        second_moments=None if second_pointers is None else ctypes.cast(second_pointers, _PTR),
        table=pointer(tensors.table),
        orders=pointer(tensors.orders),
        order_of_member=pointer(tensors.order_of_member),
        loss_of_member=pointer(tensors.loss_of_member),
        val_features=pointer(tensors.val_features),
        val_targets=pointer(tensors.val_targets),
        train_loss=pointer(tensors.train_loss),
        val_loss=pointer(tensors.val_loss),
        val_accuracy=pointer(tensors.val_accuracy),
    )
    status = getattr(compiled, f"mlp_train_{SUPPORTED_DTYPES[dtype]}")(
        ctypes.byref(settings), ctypes.byref(buffers), 0, n_members
    )
    if status != 0:
        raise MemoryError("mlp_native: could not allocate the work space of a training run")
