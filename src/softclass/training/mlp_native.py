"""Load and call ``mlp_native.c``: whole training runs of small stacked MLPs in C.

At the ensemble's sizes (the Iris 4-7-3 network, batches of 10) a training step is ~40 torch ops
of 2–4 µs dispatch each and almost no arithmetic; the compiled loop runs every batch of every
epoch of a member in one call. Built at install time and loaded like
:mod:`softclass.kernels.native` (``_mlp_native*.so`` beside this module, ctypes, no torch
headers, nothing compiled at run time); ``SOFTCLASS_NATIVE=0`` turns it off, and :func:`library`
returns None — with :func:`unavailable_reason` saying why — whenever it cannot be had, so that
callers keep their torch path. Used by :class:`softclass.training.ensemble.BatchedTrainer`.

The C code implements the registry entries that carry a ``native_code``
(:mod:`softclass.mlp.activations`, :mod:`softclass.mlp.designs`, :mod:`softclass.mlp.optimizers`);
its branches are numbered by those codes, and :func:`train` refuses an entry without one, or
whose code the library does not implement (:func:`implements`). Each design's loss and its
gradient come from the compiled kernels of :mod:`softclass.functional`: ``mlp_native.c`` includes
``softclass/kernels/cpu_native.c`` (fused cross entropy, softmax and their backward, called on each
batch of logits) and its row functions ``softclass/kernels/loss_rows.h`` (C's and D's losses of
probabilities), so both libraries are compiled from one source of that math.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from softclass.data.expansion import InputExpansion
from softclass.errors import ConfigError
from softclass.kernels.native import CE_SOURCES, load_built, pointer
from softclass.mlp.activations import Activation
from softclass.mlp.designs import Design
from softclass.mlp.optimizers import MAX_OPTIMIZER_PARAMS, Optimizer, OptimizerParams
from softclass.training.blas import Gemm

__all__ = [
    "REGISTRY_KINDS",
    "SUPPORTED_DTYPES",
    "RunTensors",
    "implements",
    "library",
    "step_library",
    "step_unavailable_reason",
    "train",
    "unavailable_reason",
]

SUPPORTED_DTYPES = {torch.float32: "f32", torch.float64: "f64"}
# The registries whose native_code picks a branch of the C code, as mlp_implements numbers them.
REGISTRY_KINDS = {"activation": 0, "design": 1, "optimizer": 2}
# The files the library is built from (setup.py): this loop and the fused CE kernels it includes.
_SOURCES = (Path(__file__).with_name("mlp_native.c"), *CE_SOURCES)
# The step whose products call a BLAS (mlp_step.c) includes mlp_native.c.
_STEP_SOURCES = (
    Path(__file__).with_name("mlp_step.c"),
    Path(__file__).with_name("small_gemm.c"),
    *_SOURCES,
)

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
        ("optimizer_params", _F64 * MAX_OPTIMIZER_PARAMS),
        ("tiny", _F64),
        ("batch_size", _I64),
        ("n_rows", _I64),
        ("n_columns", _I64),
        ("weighted", _I64),
        ("n_epochs", _I64),
        ("step_count", _I64),
        ("n_val_rows", _I64),
        ("n_raw", _I64),
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
        ("design_params_of_member", _PTR),
        ("val_features", _PTR),
        ("val_targets", _PTR),
        ("train_loss", _PTR),
        ("train_accuracy", _PTR),
        ("val_loss", _PTR),
        ("val_accuracy", _PTR),
        ("snapshot_of_member", _PTR),
        ("snapshots", _PTR),
        ("input_sources", _PTR),
        ("input_lower", _PTR),
        ("input_width", _PTR),
        ("raw", _PTR),
        ("val_raw", _PTR),
        ("input_bound", _PTR),
    ]


# cblas_sgemm's C type (32-bit integers, pointers as addresses): the own gemm's and OpenBLAS's,
# for calling either from Python (``SGEMM(address)(101, 111, 112, m, n, k, 1.0, a, lda, ...)``).
SGEMM = ctypes.CFUNCTYPE(
    None, *[ctypes.c_int] * 6, ctypes.c_float, _PTR, ctypes.c_int, _PTR, ctypes.c_int,
    ctypes.c_float, _PTR, ctypes.c_int,
)  # fmt: skip


class _GemmFunctions(ctypes.Structure):
    """Mirror of ``GemmFunctions`` in mlp_step.c: the BLAS's gemm addresses."""

    _fields_ = [("sgemm", _PTR), ("dgemm", _PTR)]


_failure: list[str] = []
_step_failure: list[str] = []


@functools.lru_cache(maxsize=1)
def step_library() -> ctypes.CDLL | None:
    """The compiled step whose products call a BLAS (``mlp_step.c``; loaded on first call), or
    None if unavailable (:func:`step_unavailable_reason`)."""
    symbols = [f"mlp_step_train_{suffix}" for suffix in SUPPORTED_DTYPES.values()]
    symbols += ["small_sgemm", "small_sgemm_supported"]
    loaded = load_built(Path(__file__).parent, "_mlp_step", _STEP_SOURCES, symbols, _step_failure)
    if loaded is None:
        return None
    loaded.small_sgemm_supported.argtypes = []
    loaded.small_sgemm_supported.restype = ctypes.c_int
    for suffix in SUPPORTED_DTYPES.values():
        function = getattr(loaded, f"mlp_step_train_{suffix}")
        function.argtypes = [
            ctypes.POINTER(_RunSettings),
            ctypes.POINTER(_RunBuffers),
            _I64,
            _I64,
            ctypes.POINTER(_GemmFunctions),
        ]
        function.restype = _I64
    return loaded


def step_unavailable_reason() -> str | None:
    """Why :func:`step_library` returned None (None when available or not tried yet)."""
    return _step_failure[-1] if _step_failure else None


@functools.lru_cache(maxsize=1)
def own_sgemm() -> int | None:
    """The address of the step's own float32 gemm (``small_gemm.c``), or None where it does not
    run: no compiled step, a CPU without AVX-512 (F, DQ, VL, BW), or ``SOFTCLASS_OWN_GEMM=0``.

    On one thread it computes the step's products in 0.52 of the time of OpenBLAS's AVX2 kernels
    (those OpenBLAS runs under ``OPENBLAS_CORETYPE=Haswell``, as on the machine that measured it)
    and 0.90 of its AVX-512 ones (50-128-128-10 at batch 256, benchmarks/RESULTS.md, session 12).
    """
    loaded = step_library()
    if os.environ.get("SOFTCLASS_OWN_GEMM", "1") == "0" or loaded is None:
        return None
    if not loaded.small_sgemm_supported():
        return None
    return ctypes.cast(loaded.small_sgemm, ctypes.c_void_p).value


def step_functions(gemm: Gemm, dtype: torch.dtype, threads: int) -> _GemmFunctions:
    """The gemm functions a step run calls: :func:`own_sgemm` for float32 on one thread where it
    runs, else the BLAS's (whose own threads then split each product)."""
    own = own_sgemm() if dtype == torch.float32 and threads == 1 else None
    return _GemmFunctions(sgemm=own or gemm.sgemm, dgemm=gemm.dgemm)


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled training loops (loaded on first call), or None if unavailable."""
    symbols = ["mlp_implements", *(f"mlp_train_{suffix}" for suffix in SUPPORTED_DTYPES.values())]
    loaded = load_built(Path(__file__).parent, "_mlp_native", _SOURCES, symbols, _failure)
    if loaded is None:
        return None
    loaded.mlp_implements.argtypes = [_I64, _I64]
    loaded.mlp_implements.restype = _I64
    for suffix in SUPPORTED_DTYPES.values():
        function = getattr(loaded, f"mlp_train_{suffix}")
        function.argtypes = [ctypes.POINTER(_RunSettings), ctypes.POINTER(_RunBuffers), _I64, _I64]
        function.restype = _I64
    return loaded


def unavailable_reason() -> str | None:
    """Why :func:`library` returned None (None when it is available or was not tried yet)."""
    return _failure[-1] if _failure else None


def implements(compiled: ctypes.CDLL, kind: str, code: int) -> bool:
    """Whether the compiled loops have the branch numbered ``code`` of registry ``kind``
    ("activation", "design" or "optimizer"; see :data:`REGISTRY_KINDS`)."""
    return bool(compiled.mlp_implements(REGISTRY_KINDS[kind], code))


@dataclass
class RunTensors:
    """The tensors of one compiled run; every tensor contiguous, on CPU, in one float dtype
    (``parameters``, moments, ``table``, ``val_features``) or int64 / float64 as stated.

    Attributes:
        parameters: ``[W0, b0, W1, b1, ...]``, ``W_k (M, out, in)``, ``b_k (M, out)``; updated.
        first_moments, second_moments: optimizer state of the same shapes (second: Adam only).
        table: ``(N, F + 1 [+ 1])`` features, the class index (a whole number stored in the
            table's float dtype), optional row weights; with ``expansion`` F is its compact
            columns and the network's inputs are expanded row by row as the loops gather them.
        orders: ``(S, epochs, N)`` int64 row orders; ``order_of_member (M,)`` int64 picks one.
        loss_of_member: ``(M,)`` int64 ``native_code`` of each member's design.
        design_params_of_member: ``(M, MAX_NATIVE_PARAMS)`` float64, each member's design
            parameters (:func:`softclass.mlp.designs.native_values`).
        val_features ``(V, F)``, val_targets ``(V,)`` int64: validation rows, or None.
        expansion: how the network's inputs are made from compact features (None: the table
            holds them); raw, val_raw: float64 ``(N, B)`` / ``(V, B)`` binned values with it.
        train_loss, train_accuracy, val_loss, val_accuracy: ``(M, epochs)`` float64 outputs.
        snapshot_of_member: ``(M,)`` int64, each member's slot in ``snapshots`` or -1; None: no
            snapshots. snapshots: ``(slots, epochs, P)`` in the parameters' dtype, output: the
            member's ``P`` weights and biases (``W0, b0, W1, ...`` flattened) after each epoch.
    """

    parameters: list[Tensor]
    first_moments: list[Tensor]
    second_moments: list[Tensor] | None
    table: Tensor
    orders: Tensor
    order_of_member: Tensor
    loss_of_member: Tensor
    design_params_of_member: Tensor
    val_features: Tensor | None
    val_targets: Tensor | None
    train_loss: Tensor
    train_accuracy: Tensor
    val_loss: Tensor
    val_accuracy: Tensor
    snapshot_of_member: Tensor | None = None
    snapshots: Tensor | None = None
    expansion: InputExpansion | None = None
    raw: Tensor | None = None
    val_raw: Tensor | None = None


def train(
    compiled: ctypes.CDLL,
    tensors: RunTensors,
    widths: list[int],
    activation: Activation,
    optimizer: Optimizer,
    params: OptimizerParams,
    batch_size: int,
    weighted: bool,
    step_count: int,
    designs: Sequence[Design] = (),
    gemm: Gemm | None = None,
) -> None:
    """Run ``tensors.orders.shape[1]`` epochs of every member in one C call.

    ``widths``: features, hidden widths, classes. ``activation``, ``optimizer``: registry entries
    (their ``native_code`` picks the C branch); ``designs``: the members' designs (their codes are
    ``tensors.loss_of_member``), checked like them. ``step_count``: optimizer steps already taken
    (SGD momentum starts its buffer on step 1, Adam's bias corrections count from it).
    ``gemm`` None: the row loops of ``mlp_native.c``, one thread. Else the matrix step of
    ``mlp_step.c`` (:func:`step_library`, which must be available), its products through that
    BLAS on ``torch.get_num_threads()`` threads.

    Raises:
        ConfigError: an activation, optimizer or design has no ``native_code``, or one the
            compiled loops do not implement.
    """
    _check_entries(
        compiled,
        [
            ("activation", activation),
            ("optimizer", optimizer),
            *(("design", design) for design in designs),
        ],
    )
    dtype = tensors.table.dtype
    widths_array = (ctypes.c_int64 * len(widths))(*widths)
    n_members = tensors.parameters[0].shape[0]
    settings = _RunSettings(
        n_layers=len(widths) - 1,
        widths=ctypes.cast(widths_array, _PTR),
        activation=activation.native_code,
        optimizer=optimizer.native_code,
        optimizer_params=(_F64 * MAX_OPTIMIZER_PARAMS)(*optimizer.native_values(params)),
        tiny=torch.finfo(dtype).tiny,
        batch_size=batch_size,
        n_rows=tensors.table.shape[0],
        n_columns=tensors.table.shape[1],
        weighted=int(weighted),
        n_epochs=tensors.orders.shape[1],
        step_count=step_count,
        n_val_rows=0 if tensors.val_features is None else tensors.val_features.shape[0],
        n_raw=0 if tensors.expansion is None else tensors.expansion.n_raw,
    )
    buffers = _buffers(tensors)
    suffix = SUPPORTED_DTYPES[dtype]
    if gemm is None:
        status = getattr(compiled, f"mlp_train_{suffix}")(
            ctypes.byref(settings), ctypes.byref(buffers), 0, n_members
        )
    else:
        gemm.set_threads(torch.get_num_threads())
        functions = step_functions(gemm, dtype, torch.get_num_threads())
        status = getattr(step_library(), f"mlp_step_train_{suffix}")(
            ctypes.byref(settings), ctypes.byref(buffers), 0, n_members, ctypes.byref(functions)
        )
    if status != 0:
        raise MemoryError("mlp_native: could not allocate the work space of a training run")


def _check_entries(compiled: ctypes.CDLL, entries: Sequence[tuple[str, object]]) -> None:
    """ConfigError for the first ``(kind, entry)`` without a ``native_code``, then for the first
    whose code the compiled loops do not implement."""
    for kind, entry in entries:
        if entry.native_code is None:
            raise ConfigError(
                f"{kind} {entry.name!r} has no compiled implementation (no native_code in its "
                "registry): the compiled backend cannot train it; use backend='torch'"
            )
    for kind, entry in entries:
        if not implements(compiled, kind, entry.native_code):
            raise ConfigError(
                f"{kind} {entry.name!r} claims native_code {entry.native_code}, which the "
                "compiled loops (training/mlp_native.c) do not implement: add its branch there "
                "or set native_code=None"
            )


def _pointers(tensors: Sequence[Tensor] | None) -> ctypes.c_void_p | None:
    """A C array of the tensors' data pointers, as one pointer (None for None)."""
    if tensors is None:
        return None
    array = (ctypes.c_void_p * len(tensors))(*(pointer(tensor) for tensor in tensors))
    return ctypes.cast(array, _PTR)


def _buffers(tensors: RunTensors) -> _RunBuffers:
    """The C view of ``tensors`` (pointers only: the tensors must outlive the call; the
    expansion's arrays live as long as it)."""
    spec = tensors.expansion
    expansion = (
        (None, None, None, None)
        if spec is None
        else tuple(
            array.ctypes.data for array in (spec.sources, spec.lower, spec.width, spec.bound)
        )
    )
    return _RunBuffers(
        parameters=_pointers(tensors.parameters),
        first_moments=_pointers(tensors.first_moments),
        second_moments=_pointers(tensors.second_moments),
        table=pointer(tensors.table),
        orders=pointer(tensors.orders),
        order_of_member=pointer(tensors.order_of_member),
        loss_of_member=pointer(tensors.loss_of_member),
        design_params_of_member=pointer(tensors.design_params_of_member),
        val_features=pointer(tensors.val_features),
        val_targets=pointer(tensors.val_targets),
        train_loss=pointer(tensors.train_loss),
        train_accuracy=pointer(tensors.train_accuracy),
        val_loss=pointer(tensors.val_loss),
        val_accuracy=pointer(tensors.val_accuracy),
        snapshot_of_member=pointer(tensors.snapshot_of_member),
        snapshots=pointer(tensors.snapshots),
        input_sources=expansion[0],
        input_lower=expansion[1],
        input_width=expansion[2],
        raw=pointer(tensors.raw),
        val_raw=pointer(tensors.val_raw),
        input_bound=expansion[3],
    )
