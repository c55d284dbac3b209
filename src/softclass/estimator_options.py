"""The parameters of :class:`softclass.Classifier` that are training options, read from the
option table (:mod:`softclass.option_table`): their scikit-learn constraints, the ones generated
beyond those ``__init__`` spells out (every optimizer hyper-parameter of
:class:`softclass.mlp.optimizer_params.OptimizerParams`), and the :class:`TrainConfig` they make.
"""

from __future__ import annotations

import dataclasses
import inspect
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from softclass.errors import OptionError
from softclass.mlp.optimizer_params import OptimizerParams
from softclass.option_table import Option, Rule, options_of
from softclass.training.config import TrainConfig

# Values a parameter takes beyond its training option's rule.
_EXTRA_VALUES = {"batch_size": [StrOptions({"auto"})]}


def _estimator_options() -> dict[str, tuple[str, Option]]:
    """scikit-learn name → (training option, its Option) of every training option the
    estimator takes: those with a scikit-learn name, and every optimizer hyper-parameter
    (without a scikit-learn name it keeps its own), so that a hyper-parameter declared in
    OptimizerParams is a parameter of the estimator at once."""
    optimizer_fields = set(options_of(OptimizerParams))
    return {
        declared.sklearn or name: (name, declared)
        for name, declared in options_of(TrainConfig).items()
        if declared.sklearn is not None or name in optimizer_fields
    }


OPTIONS = _estimator_options()
# Each training option's default (TrainConfig's, which extends OptimizerParams').
_TRAIN_DEFAULTS = {item.name: item.default for item in dataclasses.fields(TrainConfig)}
# The parameters generated beyond the ones __init__ spells out, with their defaults (set by
# add_generated_parameters).
_GENERATED: dict[str, Any] = {}


def _constraint(rule: Rule) -> object:
    """An option table rule as a scikit-learn parameter constraint."""
    if rule.kind == "choice":
        return StrOptions(set(rule.choices()))
    if rule.kind == "flag":
        return "boolean"
    if rule.kind == "pair":
        return "array-like"  # the two numbers' range: checked by the training option's rule
    closed = "neither" if rule.low_open else "left"
    if rule.kind == "integer" and rule.high is not None:
        closed = "both"  # an integer rule's bound is included
    kind = Integral if rule.kind == "integer" else Real
    return Interval(kind, rule.low, rule.high, closed=closed)


def generated_constraints() -> dict[str, list]:
    """scikit-learn's constraints of every training-option parameter, from its rule (choices
    read from the registries as they are now)."""
    return {
        sklearn: [*_EXTRA_VALUES.get(sklearn, []), _constraint(declared.rule)]
        for sklearn, (_, declared) in OPTIONS.items()
    }


def add_generated_parameters(cls: type) -> None:
    """Give ``cls.__init__`` (which ends in ``**optimizer_params``) one keyword-only parameter
    per training option it does not spell out, with its registry default: what scikit-learn's
    get_params, clone and repr read."""
    init = cls.__init__
    signature = inspect.signature(init)
    spelled = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in spelled}
    _GENERATED.update(
        {
            sklearn: _TRAIN_DEFAULTS[name]
            for sklearn, (name, _) in OPTIONS.items()
            if sklearn not in names
        }
    )
    generated = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
        for name, default in _GENERATED.items()
    ]
    init.__signature__ = signature.replace(parameters=[*spelled, *generated])


def generated_values(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """Every generated parameter's value: ``given``'s, else its default; TypeError naming an
    unknown keyword (as Python would, listing the parameters)."""
    unknown = sorted(set(given) - set(_GENERATED))
    if unknown:
        raise TypeError(
            f"{cls.__name__} got unexpected keyword argument(s) {unknown}; its parameters are "
            f"{sorted(inspect.signature(cls).parameters)}"
        )
    return {name: given.get(name, default) for name, default in _GENERATED.items()}


def _python_value(value: object) -> object:
    """A numpy scalar as its Python number, an array or list (a pair) as a tuple."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | np.ndarray):
        return tuple(float(part) for part in value)
    return value


def train_config(estimator: Any, seed: int) -> TrainConfig:
    """The training options of ``estimator``'s parameters (momentum only with sgd, "auto"
    batches of 200); a value the option table refuses is a ValueError naming the parameter."""
    values = {
        name: _python_value(getattr(estimator, sklearn)) for sklearn, (name, _) in OPTIONS.items()
    }
    values["momentum"] = values["momentum"] if estimator.solver == "sgd" else 0.0
    if values["batch_size"] == "auto":
        values["batch_size"] = 200
    try:
        return TrainConfig(**values, seed=seed)
    except OptionError as error:
        spelling = {name: sklearn for sklearn, (name, _) in OPTIONS.items()}
        raise ValueError(
            error.spelled(
                lambda name, value: spelling.get(name, name) + (f"={value[0]!r}" if value else "")
            )
        ) from None
