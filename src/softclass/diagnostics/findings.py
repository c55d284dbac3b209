"""What the pairing checker reports (:class:`Finding`), shared by the checks of outputs
(:mod:`softclass.diagnostics.check`) and of targets (:mod:`softclass.diagnostics.check_targets`).
What it knows of a loss (:class:`LossSpec`) lives with the losses' kinds, in
:mod:`softclass.mlp.loss_kinds`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from softclass.mlp.loss_kinds import LossSpec

__all__ = ["Finding", "LossSpec", "Severity"]

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
