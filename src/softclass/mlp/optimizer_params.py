"""The optimizer hyper-parameters, each declared once with its default and its option (no torch
import: the command line reads them for its help text). The optimizers themselves are in
:mod:`softclass.mlp.optimizers`; :class:`softclass.training.config.TrainConfig` extends this
class, so that a new hyper-parameter here is a training option, a command-line flag and (with a
scikit-learn name) an estimator parameter at once."""

from __future__ import annotations

from dataclasses import dataclass, fields

from softclass.option_table import Rule, option


def _parse_pair(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated numbers like 0.9,0.999, got {text!r}") from None


@dataclass(frozen=True)
class OptimizerParams:
    """Every optimizer hyper-parameter, with its one default (each optimizer reads its own)."""

    # step size; with momentum 0.9 fits z-scored Iris in 100 epochs
    learning_rate: float = option(
        0.01,
        "--lr",
        "Learning rate.",
        Rule("number", low_open=True),
        metavar="RATE",
        sklearn="learning_rate_init",
    )
    # SGD momentum μ (dampening 0); 0 = plain SGD; Adam/AdamW ignore it
    momentum: float = option(
        0.9,
        "--momentum",
        "SGD momentum (the Adam family ignores it).",
        Rule("number", high=1),
        metavar="M",
        sklearn="momentum",
    )
    nesterov: bool = option(
        False, "--nesterov", "SGD: Nesterov momentum (needs --momentum > 0).", Rule("flag")
    )
    betas: tuple[float, float] = option(
        (0.9, 0.999),
        "--betas",
        "Adam/AdamW moving-average rates, two numbers.",
        Rule("pair", high=1),
        metavar="B1,B2",
        parse=_parse_pair,
    )
    eps: float = option(
        1e-8, "--eps", "Adam/AdamW/RMSprop denominator guard.", Rule("number"), metavar="EPS"
    )
    # RMSprop's moving-average rate of the squared gradients (torch.optim.RMSprop's alpha)
    rms_decay: float = option(
        0.99,
        "--rms-decay",
        "RMSprop: moving-average rate of the squared gradients.",
        Rule("number", high=1),
        metavar="ALPHA",
    )
    # λ: L2 penalty (sgd, adam, rmsprop) or decoupled decay (adamw)
    weight_decay: float = option(
        0.0,
        "--weight-decay",
        "L2 penalty on the weights (decoupled with adamw).",
        Rule("number"),
        metavar="L2",
        sklearn="alpha",
    )

    def scalars(self) -> dict[str, float]:
        """Every hyper-parameter as one float, by name; a pair such as ``betas`` gives
        ``beta1`` and ``beta2``, a flag 1.0 or 0.0 (what the compiled loops receive)."""
        values: dict[str, float] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, tuple):
                stem = item.name.removesuffix("s")
                values |= {f"{stem}{index}": float(part) for index, part in enumerate(value, 1)}
            else:
                values[item.name] = float(value)
        return values


DEFAULTS = OptimizerParams()
