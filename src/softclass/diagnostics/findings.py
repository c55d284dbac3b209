"""What the pairing checker reports (:class:`Finding`) and what it knows of a loss
(:class:`LossSpec`): shared by the checks of outputs (:mod:`softclass.diagnostics.check`) and
of targets (:mod:`softclass.diagnostics.check_targets`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem found by :func:`check_pairing`.

    Attributes:
        code: stable short id of the mistake, e.g. ``"double-softmax"``.
        severity: ``"error"`` when training is wrong or will crash, ``"warning"`` when the pairing
            is suspicious or only degrades results.
        seen: what was observed, with numbers.
        fix: one sentence on how to fix it, with code.
    """

    code: str
    severity: Severity
    seen: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.severity}] {self.code}: {self.seen} Fix: {self.fix}"


@dataclass(frozen=True)
class LossSpec:
    """What the checker needs to know about a loss."""

    name: str  # a design's loss_name (softclass.diagnostics.check.LOSS_NAMES)
    index_targets_ok: bool  # mse/mcee implementation that also takes class indices (softclass's)
    ignore_index: int | None  # label value skipped by cross_entropy / nll
