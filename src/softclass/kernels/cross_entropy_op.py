"""Load softclass's C++ cross-entropy operator (``cross_entropy_op.cpp``), the eager road of small
calls: one dispatcher call does the checks the loops rely on, the forward with the gradient
(one pass of the compiled loops) and the autograd node, whose backward scales the gradient in
C++ — where the Python road (an ``autograd.Function`` and ctypes calls) costs ~30 µs a call more.

setup.py builds it at install when torch is importable then (the file name carries that torch's
version: ``_cross_entropy_op_torch2_13_0_cpu*.so``) and nothing is compiled here. :func:`operator`
returns None — the Python road then runs, the same numbers — when it is missing (no C++ compiler or
no torch at build time), built against another torch, older than one of its sources (a
checkout), or not loadable; one :class:`~softclass.errors.NativeUnavailableWarning` per process
says so and what is slower. ``SOFTCLASS_NATIVE=0`` turns it off (no warning).
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from pathlib import Path

import torch
from torch import Tensor

from softclass.errors import NativeUnavailableWarning
from softclass.kernels.native import CE_SOURCES, built_path
from softclass.kernels.row_blocks import (
    TargetOutOfBoundsError,
    differentiable_gradients,
    unfused_loss,
)

__all__ = ["operator", "torch_tag", "unavailable_reason"]

_HERE = Path(__file__).parent
_STEM = "_cross_entropy_op_torch"
SOURCES = (_HERE / "cross_entropy_op.cpp", *CE_SOURCES)
# The flat index in the operator's message for an out-of-range target.
_FLAT_INDEX = re.compile(r"target out of bounds at flat index (\d+)")

_failure: list[str] = []


def torch_tag(version: str) -> str:
    """A torch version as a file-name part, as setup.py writes it (2.13.0+cpu: 2_13_0_cpu)."""
    return re.sub(r"[^0-9A-Za-z]", "_", version)


def _why_not(path: Path | None) -> str | None:
    if path is None:
        others = sorted(candidate.name for candidate in _HERE.glob(f"{_STEM}*"))
        if others:
            return (
                f"it was built against another torch ({others[0]}), this is torch "
                f"{torch.__version__}: reinstall softclass to rebuild it"
            )
        return "it was not built at install (no C++ compiler, or torch not importable then?)"
    newer = [source.name for source in SOURCES if source.stat().st_mtime > path.stat().st_mtime]
    if newer:
        return f"{path.name} is older than {', '.join(newer)}"
    return None


def _warn(reason: str) -> None:
    warnings.warn(
        f"softclass's C++ cross-entropy operator is unavailable ({reason}): small CPU "
        "cross_entropy calls take the Python road, ~30 µs more per forward + backward (e.g. "
        "256×3 slower than torch's own instead of faster); the numbers are the same. Build it "
        "against the installed torch: `pip install --no-build-isolation -e .` (the README's "
        "install line; pip's isolated build has no torch); SOFTCLASS_NATIVE=0 silences this",
        NativeUnavailableWarning,
        stacklevel=4,
    )


@functools.lru_cache(maxsize=1)
def operator():
    """``torch.ops.softclass_cpp.cross_entropy.default`` (loaded on first call): ``(logits,
    target, ignore_index: int, mean: bool) -> 0-d loss``, or None when unavailable."""
    if os.environ.get("SOFTCLASS_NATIVE", "1") == "0":
        _failure.append("disabled by SOFTCLASS_NATIVE=0")
        return None
    path = built_path(_HERE, _STEM + torch_tag(torch.__version__))
    reason = _why_not(path)
    if reason is None:
        try:
            torch.ops.load_library(str(path))
            _register_grad_graph()
        except (OSError, RuntimeError) as error:
            reason = f"{path.name} is not loadable ({str(error)[-200:]})"
    if reason is not None:
        _failure.append(reason)
        _warn(reason)
        return None
    return torch.ops.softclass_cpp.cross_entropy.default


def unavailable_reason() -> str | None:
    """Why :func:`operator` returned None (None when it is available or was not tried yet)."""
    return _failure[-1] if _failure else None


def flat_index(error: IndexError) -> int | None:
    """The flat target index an operator's out-of-range error names (None for another error)."""
    found = _FLAT_INDEX.search(str(error))
    return None if found is None else int(found.group(1))


def out_of_bounds(
    error: IndexError, target: Tensor, n_classes: int, ignore_index: int
) -> TargetOutOfBoundsError | None:
    """softclass's error for the out-of-range target an operator's ``error`` names (the value
    read from ``target``), or None when ``error`` is another IndexError."""
    index = flat_index(error)
    if index is None:
        return None
    return TargetOutOfBoundsError(index, int(target.reshape(-1)[index]), n_classes, ignore_index)


def _grad_graph(
    logits: Tensor, target: Tensor, ignore_index: int, mean: bool, grad_loss: Tensor
) -> Tensor:
    """The differentiable gradient (a backward under ``create_graph=True``): the unfused
    torch-op formula of the loss, differentiated by autograd."""
    reduction = "mean" if mean else "sum"

    def loss_of(values: Tensor) -> Tensor:
        if values.dim() > 2:
            rows = values.movedim(1, -1).reshape(-1, values.shape[1])
            return unfused_loss(rows, target.reshape(-1), None, ignore_index, reduction, 0.0)
        return unfused_loss(values, target, None, ignore_index, reduction, 0.0)

    return differentiable_gradients((True,), (logits,), loss_of, grad_loss)[0]


def _register_grad_graph() -> None:
    if _LIBRARIES:  # once per process (a second operator() after cache_clear, in tests)
        return
    library = torch.library.Library("softclass_cpp", "IMPL")
    library.impl("cross_entropy_grad_graph", _grad_graph, "CompositeImplicitAutograd")
    _LIBRARIES.append(library)


# Keeps the Python kernel's registration alive (a Library deregisters when collected).
_LIBRARIES: list[torch.library.Library] = []
