"""What kind of loss a loss is (:class:`LossSpec`), found from its name, function or module.

The design registry asks it when a design is registered, and the pairing checker
(:mod:`softclass.diagnostics.check`, which reads the registry) asks it which checks a loss gets;
it lives here, below both, so that neither imports upward."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LossSpec:
    """What the checker needs to know about a loss."""

    name: str  # a design's loss_name (softclass.diagnostics.check.LOSS_NAMES)
    index_targets_ok: bool  # mse/mcee implementation that also takes class indices (softclass's)
    ignore_index: int | None  # label value skipped by cross_entropy / nll


TORCH_DEFAULT_IGNORE_INDEX = -100
# Loss names after lower-casing, dropping "_" and a trailing "loss": "CrossEntropyLoss",
# "cross_entropy", "NLLLoss", "nll_loss", "MSELoss", "mse_loss", "mse_onehot", "MCEELoss", ...
_KIND_BY_KEY = {
    "crossentropy": "cross_entropy",
    "nll": "nll",
    "nllsmoothed": "nll",  # design B's loss (softclass.mlp.designs.nll_smoothed)
    "mse": "mse",
    "mseonehot": "mse",
    "onehotmse": "mse",
    "mcee": "mcee",
}


def loss_spec(
    loss: Any, ignore_index: int | None = None, designs: Iterable = ()
) -> LossSpec | None:
    """The checks ``loss`` gets (a name such as "cross_entropy" or "NLLLoss", a function, a
    ``functools.partial`` of one, or a torch loss module), or None when it is none the checker
    knows. The ``loss_name`` of one of ``designs`` stands for that design's loss function."""
    if isinstance(loss, str):
        raw_name, module_name, ignore_default = loss, "", TORCH_DEFAULT_IGNORE_INDEX
    else:
        function = loss.func if isinstance(loss, functools.partial) else loss
        raw_name = getattr(function, "__name__", None) or type(function).__name__
        module_name = getattr(function, "__module__", None) or ""
        ignore_default = getattr(loss, "ignore_index", TORCH_DEFAULT_IGNORE_INDEX)
        if isinstance(loss, functools.partial):
            ignore_default = loss.keywords.get("ignore_index", ignore_default)
    key = raw_name.lower().replace("_", "")
    if key.endswith("loss") and key != "loss":
        key = key[: -len("loss")]
    if key not in _KIND_BY_KEY:
        entry = next((d for d in designs if isinstance(loss, str) and d.loss_name == loss), None)
        return None if entry is None else loss_spec(entry.loss, ignore_index)
    name = _KIND_BY_KEY[key]
    if name in ("cross_entropy", "nll"):
        chosen_ignore = ignore_default if ignore_index is None else ignore_index
        return LossSpec(name, index_targets_ok=True, ignore_index=chosen_ignore)
    index_ok = key in ("mseonehot", "onehotmse") or module_name.startswith("softclass")
    return LossSpec(name, index_targets_ok=index_ok, ignore_index=None)
