"""The answer first: one plain sentence per compared pair of designs, from a run's report.json.

A learner runs ``softclass compare`` to find out whether two designs are the same computation.
:func:`verdict_sentences` says so in one sentence per pair (A with B, D and C), in words first
and with the measured numbers in brackets; the terminal and report.html both open with them, and
the technical detail (how the verdict was reached, per-epoch drift) follows below.

Every number in a sentence is an honest bound or a value of the table: a bound ("≤ 4e-7") is
rounded *up* to two significant digits, so it never claims less than was measured, and a metric is
printed with the digits of its entry in ``metric_table.METRICS``. The sentences read the design's
title and loss from report.json, which takes them from the design registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from softclass.evaluation import metric_table


@dataclass(frozen=True)
class Verdict:
    """One pair's answer.

    Attributes:
        pair: "A-B" as in report.json's ``agreement`` list; index: its position there.
        verdict: "identical", "equal up to rounding" or "different".
        sentence: the plain sentence.
    """

    pair: str
    index: int
    verdict: str
    sentence: str

    @property
    def same(self) -> bool:
        return self.verdict != "different"


def bound(value: float | None) -> str:
    """``value`` rounded up to two significant digits, in short scientific form: 3.58e-7 →
    "3.6e-7", 3.01e-15 → "3.1e-15", 2e-3 → "2e-3", 0 → "0"; None or NaN → "?" (not
    measured). Rounded up, so that "≤ bound" is true of the measured value."""
    if value is None or not math.isfinite(value):
        return "?"
    if value <= 0:
        return "0"
    exponent = math.floor(math.log10(value))
    digits = math.ceil(round(value / 10 ** (exponent - 1), 6))  # 10..100
    if digits == 100:
        digits, exponent = 10, exponent + 1
    mantissa = f"{digits // 10}" if digits % 10 == 0 else f"{digits // 10}.{digits % 10}"
    return f"{mantissa}e{exponent}"


def _named(summary: Mapping[str, Any], name: str) -> str:
    title = summary["designs"][name].get("title")
    return f"{name} ({title})" if title else name


def _metrics_phrase(summary: Mapping[str, Any], first: str, second: str) -> str:
    """ "on the validation rows C's accuracy is 0.967 (A: 0.967) and its log loss ..." """
    rows = summary.get("held_out", "validation")
    parts = []
    for metric in (metric for metric in metric_table.METRICS if metric.quoted):
        numbers = [
            summary["designs"][name]["mean_over_seeds"].get(f"{rows}_{metric.key}")
            for name in (second, first)
        ]
        if any(number is None for number in numbers):
            continue
        spec = metric.format
        parts.append(f"{metric.label} {numbers[0]:{spec}} ({first}: {numbers[1]:{spec}})")
    if not parts:
        return ""
    return f"; on the {rows} rows {second} has " + " and ".join(parts)


def sentence(summary: Mapping[str, Any], agreement: Mapping[str, Any]) -> str:
    """The plain sentence of one entry of report.json's ``agreement`` list."""
    first, second = agreement["pair"].split("-")
    both = f"{_named(summary, first)} and {_named(summary, second)}"
    gradients = bound(agreement.get("max_gradient_diff"))
    weights = bound(agreement.get("max_weight_diff"))
    if agreement["verdict"] == "identical":
        return (
            f"{both} are the same computation: every step made the same update (float64 "
            f"gradients equal to within {gradients}) and the float32 weights came out bit for bit "
            "the same."
        )
    if agreement["verdict"] != "different":
        floor = agreement.get("noise_floor")
        rounding = (
            f"their float32 weights differ only by rounding (≤ {weights})"
            if floor is None
            else f"their float32 weights drift apart by rounding (≤ {weights}; {first} against "
            f"itself with inputs one float32 step away drifts ≤ {bound(floor)})"
        )
        return (
            f"{both} are the same computation: every step made the same update (float64 "
            f"gradients equal to within {gradients}); {rounding}."
        )
    losses = [summary["designs"][name].get("loss", name) for name in (first, second)]
    loss = "another loss" if losses[0] != losses[1] else "the same loss differently"
    return (
        f"{both} are different computations: {second} minimises {loss} (float64 gradients "
        f"differ by {_percent(agreement.get('max_gradient_diff'))}), so its weights end "
        f"elsewhere (up to {_short(agreement.get('max_weight_diff'))} apart)"
        f"{_metrics_phrase(summary, first, second)}."
    )


def _percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "an unmeasured amount"
    return f"{value:.0%}" if value >= 0.01 else f"{bound(value)} (relative)"


def _short(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "?"
    return f"{value:.2g}"


def verdict_sentences(summary: Mapping[str, Any]) -> list[Verdict]:
    """One :class:`Verdict` per pair compared with the first seed, in report.json's order.

    Args:
        summary: a run's report.json dictionary (``ComparisonResult.to_dict()``); its
            ``agreement`` list, ``designs`` (title, loss, mean_over_seeds) and ``seeds``.
    """
    first_seed = summary["seeds"][0]
    return [
        Verdict(agreement["pair"], index, agreement["verdict"], sentence(summary, agreement))
        for index, agreement in enumerate(summary.get("agreement", ()))
        if agreement["seed"] == first_seed
    ]
