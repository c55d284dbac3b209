"""Curves that coincide, drawn so that each stays visible.

Designs A, B and D often give the same curve (the same computation): drawn one over the other,
only the last is seen and the reader wonders where the others went. :func:`coinciding` finds such
curves; the figures then draw each stack widest first (:func:`stacked_style`) and say in the
legend which curve lies on which (:func:`stacked_label`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def coinciding(
    curves: Mapping[str, np.ndarray], span: float, fraction: float = 2e-3
) -> dict[str, str]:
    """Each design whose curve lies on an earlier one's → that earlier design's name.

    Two curves coincide when they have the same length and differ nowhere by more than
    ``fraction`` of the axis ``span`` (under a pixel of a 700-pixel axis), or by ``fraction``
    relatively (for log axes, pass ``span=0``). The figures draw them stacked, widest first, and
    say so in the legend, so that a curve hidden under another can still be seen.
    """
    under: dict[str, str] = {}
    for name, values in curves.items():
        for earlier, other in curves.items():
            if earlier == name:
                break
            if earlier in under or other.shape != values.shape:
                continue
            if np.allclose(values, other, rtol=fraction, atol=fraction * span, equal_nan=True):
                under[name] = earlier
                break
    return under


def stacked_style(name: str, under: Mapping[str, str], names: Sequence[str]) -> dict[str, float]:
    """Line width and marker size of ``name`` so that a stack of coinciding curves shows each
    (the first drawn widest, each one on top narrower)."""
    root = under.get(name, name)
    group = [other for other in names if under.get(other, other) == root]
    above = len(group) - 1 - group.index(name)
    return {"linewidth": 1.5 + 2.0 * above, "markersize": 5 + 3 * above}


def stacked_label(label: str, name: str, under: Mapping[str, str]) -> str:
    """``label``, saying when the curve is drawn on top of an identical one."""
    if name not in under:
        return label
    return f"{label}: identical to {under[name]}, drawn on top of it"
