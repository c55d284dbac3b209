"""The option table: each training option declared once, as a dataclass field with metadata.

A field of :class:`softclass.training.config.TrainConfig` (or of the
:class:`softclass.mlp.optimizer_params.OptimizerParams` it extends) made with :func:`option`
carries an :class:`Option`: its command-line flag, help, metavar, how typed text becomes its
value, its scikit-learn name, and the :class:`Rule` of its allowed values. From that one
declaration the configuration checks its values, the command line builds its flags and the
estimator its parameter constraints. No torch import: ``softclass --help`` reads this table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from softclass.errors import OptionError

__all__ = ["Option", "Rule", "names_text", "option", "options_of"]


def names_text(names: Iterable[str]) -> str:
    """``"tanh, relu or gelu"``: accepted names, for a help text."""
    *rest, last = names
    return f"{', '.join(rest)} or {last}" if rest else last


@dataclass(frozen=True)
class Rule:
    """The allowed values of one option, and the message that refuses the others.

    Attributes:
        kind: "integer" (an int ≥ ``low``), "number" (a real in ``[low, high)``, or
            ``(low, high)`` with ``low_open``), "flag" (True or False), "choice" (one of
            ``choices()``) or "pair" (two numbers in ``[low, high)``).
        low, high: the bounds (``high`` None: unbounded).
        low_open: the lower bound itself is refused (``> low``).
        choices: returns the accepted names (called at each check: registries may grow).
        optional: None is accepted too (the option is then off).
        note: appended to the message of a value out of range, e.g. "(0 = none)".
    """

    kind: str
    low: float = 0
    high: float | None = None
    low_open: bool = False
    choices: Callable[[], Iterable[str]] | None = None
    optional: bool = False
    note: str = ""

    def check(self, name: str, value: Any) -> Any:
        """``value`` as the option holds it (a pair becomes a tuple of floats); OptionError
        naming the option, the value and what is accepted otherwise."""
        if value is None and self.optional:
            return value
        if self.kind == "choice":
            names = tuple(self.choices())
            if value not in names:
                raise OptionError(
                    "{" + name + "=}: expected one of " + ", ".join(names), **{name: value}
                )
            return value
        problem = self._problem(value)
        if problem is not None:
            raise OptionError("{" + name + "=} " + problem, **{name: value})
        return tuple(float(part) for part in value) if self.kind == "pair" else value

    def _problem(self, value: Any) -> str | None:
        if self.kind == "flag":
            return None if isinstance(value, bool) else "must be True or False"
        if self.kind == "integer":
            valid = isinstance(value, int) and not isinstance(value, bool) and value >= self.low
            if valid and self.high is not None and value > self.high:  # integers: high included
                return f"must be at most {int(self.high):,} (a bound on time and memory)"
            return None if valid else f"must be an integer ≥ {self.low:g}"
        if self.kind == "pair":
            parts = tuple(value) if isinstance(value, tuple | list) else ()
            valid = len(parts) == 2 and all(self._in_range(part) for part in parts)
            return None if valid else f"must be two numbers in [{self.low:g}, {self.high:g})"
        if not _is_number(value) or not value >= self.low:
            return f"must be a number ≥ {self.low:g}"
        if self.low_open and not value > self.low:
            return f"must be > {self.low:g}"
        if self.high is not None and not value < self.high:
            return f"must lie in [{self.low:g}, {self.high:g}){self.note}"
        return None

    def _in_range(self, value: Any) -> bool:
        return _is_number(value) and self.low <= value and (self.high is None or value < self.high)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Option:
    """One training option as the command line and the estimator show it.

    Attributes:
        flag: as typed, e.g. ``--lr``; a flag option may add its negation
            (``--restore-best/--no-restore-best``).
        help: one sentence; ``{optimizers}``-like placeholders are filled in by the command line
            with a registry's names.
        rule: the allowed values (:class:`Rule`).
        metavar: the value's placeholder in --help (None for flags).
        parse: typed text → the value, for values typed as text (``--betas 0.9,0.99``); raises
            ValueError with a message saying what was expected.
        sklearn: the parameter of :class:`softclass.Classifier` that sets it, or None.
        commands: the commands that take it.
        panel: its --help panel: "Data" (reading and splitting the table) or the network and
            its training.
    """

    flag: str
    help: str
    rule: Rule
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    sklearn: str | None = None
    commands: tuple[str, ...] = ("compare", "train")
    panel: str = "Network and training"


def option(default: Any, flag: str, help: str, rule: Rule, **details: Any) -> Any:
    """A dataclass field with default ``default`` that carries its :class:`Option`."""
    return dataclasses.field(
        default=default, metadata={"option": Option(flag, help, rule, **details)}
    )


def options_of(cls: type) -> dict[str, Option]:
    """Field name → :class:`Option` of every field of dataclass ``cls`` made with :func:`option`,
    in field order."""
    return {
        item.name: item.metadata["option"]
        for item in dataclasses.fields(cls)
        if "option" in item.metadata
    }
