"""The worked numbers of the softmax/loss story, computed exactly, beside the published ones.

The articles this project grew from round or simplify some figures, and one is wrong. Every step
here is computed in float64 with :mod:`softclass.functional`; where a published figure differs,
the step carries it and a note on why. The library returns data; the CLI prints it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from softclass import functional
from softclass.errors import ConfigError

SEED_LOGITS = (2.5, 3.5, 1.5)
SEED_TARGET = 1
NOT_LOG_SOFTMAX = (-1.6563, -1.7563, -1.5563)
BATCH_LOGITS = ((1.0, 2.0, 0.5, 0.1), (0.1, 0.2, 0.3, 0.4), (2.0, 1.0, 0.1, 0.5))
BATCH_TARGETS = (1, 3, 0)
PUBLISHED_BATCH_CE = "1.2321"


@dataclass(frozen=True)
class Step:
    """One line of a worked example: what is computed, its exact value(s), the published figure."""

    label: str
    exact: tuple[float, ...]
    published: tuple[str, ...] | None = None  # as printed, so "0.20" keeps its precision
    note: str = ""

    @property
    def differs(self) -> bool:
        """True when a published figure is not the exact value rounded to the figure's decimals."""
        if self.published is None:
            return False
        return any(
            f"{exact:.{_decimals(published)}f}" != published
            for exact, published in zip(self.exact, self.published, strict=True)
        )


@dataclass(frozen=True)
class Example:
    """A titled sequence of steps with an optional closing remark."""

    title: str
    steps: list[Step] = field(default_factory=list)
    remark: str = ""


def _decimals(figure: str) -> int:
    """Number of decimals a published figure was written with ("0.36" → 2)."""
    return len(figure.split(".")[1]) if "." in figure else 0


def _values(tensor: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(v) for v in tensor.reshape(-1))


def explain_vector(
    logits: tuple[float, ...] | list[float],
    target: int,
    published: dict[str, tuple[str, ...]] | None = None,
) -> Example:
    """Explain softmax, log-softmax and the four losses for one logit vector and target class.

    Args:
        logits: the raw scores, at least one.
        target: the true class, in ``[0, len(logits))``.
        published: optional published figures per step label, shown beside the exact values.

    Returns:
        An :class:`Example` whose steps follow the computation: exp, sum, softmax, log-softmax,
        NLL = CE = MCEE, and the squared error against the one-hot target.
    """
    if len(logits) == 0:
        raise ConfigError("explain needs at least one logit, got none")
    if not 0 <= target < len(logits):
        raise ConfigError(
            f"target class {target} is out of range for {len(logits)} logits: expected 0 to "
            f"{len(logits) - 1}"
        )
    published = published or {}
    scores = torch.tensor(logits, dtype=torch.float64)
    exps = scores.exp()
    probs = functional.softmax(scores, 0)
    log_probs = functional.log_softmax(scores, 0)
    target_tensor = torch.tensor(target)
    one_hot = functional.one_hot(target_tensor, len(logits), dtype=torch.float64)
    nll = functional.nll_loss(log_probs, target_tensor)
    ce = functional.cross_entropy(scores, target_tensor)
    mcee = functional.mcee(probs, target_tensor)
    squared = functional.mse_onehot(probs, one_hot)

    def step(label: str, exact: tuple[float, ...], note: str = "") -> Step:
        return Step(label, exact, published.get(label), note)

    return Example(
        title=f"logits {tuple(logits)}, target class {target}",
        steps=[
            step("exp(logits)", _values(exps)),
            step("sum of exp", (float(exps.sum()),)),
            step("softmax = exp / sum", _values(probs)),
            step("log_softmax = x - max - log sum exp(x - max)", _values(log_probs)),
            step(
                f"NLL = -log_softmax[{target}] (= CE = MCEE)",
                (float(nll),),
                f"cross_entropy(logits) = {float(ce):.4f}; mcee(softmax) = {float(mcee):.4f}",
            ),
            step(
                f"squared error vs one-hot {tuple(int(v) for v in one_hot.tolist())}",
                (float(squared),),
                "design C's loss: a different number from the other three",
            ),
        ],
    )


def _seed_vector_example() -> Example:
    simplified = "the article rounded the probabilities to (0.20, 0.70, 0.10) 'for simplicity'"
    published = {
        "exp(logits)": ("12.18", "33.11", "4.48"),
        "sum of exp": ("49.78",),
        "softmax = exp / sum": ("0.20", "0.70", "0.10"),
        "log_softmax = x - max - log sum exp(x - max)": ("-1.61", "-0.36", "-2.30"),
        f"NLL = -log_softmax[{SEED_TARGET}] (= CE = MCEE)": ("0.36",),
        "squared error vs one-hot (0, 1, 0)": ("0.14",),
    }
    example = explain_vector(SEED_LOGITS, SEED_TARGET, published)
    notes = {
        "exp(logits)": "33.1155 is 33.12 to two decimals: the article cut the digits off",
        "softmax = exp / sum": simplified,
        "log_softmax = x - max - log sum exp(x - max)": (
            "published values are log(0.20), log(0.70), log(0.10) of the simplified probabilities"
        ),
        f"NLL = -log_softmax[{SEED_TARGET}] (= CE = MCEE)": (
            "published 0.36 = -log(0.70) of the simplified probability"
        ),
        "squared error vs one-hot (0, 1, 0)": (
            "published 0.14 = 0.04 + 0.09 + 0.01 from the simplified probabilities"
        ),
    }
    steps = [Step(s.label, s.exact, s.published, notes.get(s.label, s.note)) for s in example.steps]
    return Example("The seed's example: " + example.title, steps)


def _not_log_softmax_example() -> Example:
    values = torch.tensor(NOT_LOG_SOFTMAX, dtype=torch.float64)
    target = 2
    nll = functional.nll_loss(values, torch.tensor(target))
    total = functional.logsumexp(values, 0)
    return Example(
        title=f"NLL of {NOT_LOG_SOFTMAX}, target class {target}",
        steps=[
            Step(f"NLL = -input[{target}]", (float(nll),), ("1.5563",), "NLL only picks a value"),
            Step(
                "logsumexp of the input",
                (float(total),),
                None,
                "a log-softmax output has logsumexp 0 (its exp sums to 1)",
            ),
            Step("sum of exp(input)", (float(values.exp().sum()),), None, "should be 1"),
        ],
        remark=(
            "The loss is right for the numbers given, but the vector is not a log-softmax output: "
            "`softclass check` flags rows whose exp does not sum to 1."
        ),
    )


def _batch_example() -> Example:
    logits = torch.tensor(BATCH_LOGITS, dtype=torch.float64)
    targets = torch.tensor(BATCH_TARGETS)
    per_item = functional.cross_entropy(logits, targets, reduction="none")
    mean = functional.cross_entropy(logits, targets)
    via_nll = functional.nll_loss(functional.log_softmax(logits, 1), targets)
    n_rows, n_classes = logits.shape
    attainable = [
        float(functional.cross_entropy(logits, torch.tensor(choice)))
        for choice in itertools.product(range(n_classes), repeat=n_rows)
    ]
    closest = min(attainable, key=lambda value: abs(value - float(PUBLISHED_BATCH_CE)))
    return Example(
        title=f"cross entropy of a 3x4 batch, targets {list(BATCH_TARGETS)}",
        steps=[
            Step("per-item CE", _values(per_item)),
            Step("sum", (float(per_item.sum()),)),
            Step(
                "mean CE",
                (float(mean),),
                (PUBLISHED_BATCH_CE,),
                f"no choice of the {len(attainable)} possible target vectors gives "
                f"{PUBLISHED_BATCH_CE}; the closest is {closest:.4f}",
            ),
            Step("NLL(log_softmax) mean", (float(via_nll),), None, "agrees with CE"),
        ],
    )


def _log_of_softmax_example() -> Example:
    scores = torch.tensor([1000.0, 0.0, -1000.0], dtype=torch.float32, requires_grad=True)
    naive = functional.softmax(scores, 0).log()
    (naive_grad,) = torch.autograd.grad(naive[1], scores)
    stable = functional.log_softmax(scores, 0)
    (stable_grad,) = torch.autograd.grad(stable[1], scores)
    return Example(
        title="log(softmax(x)) against log_softmax(x) for large logits (1000, 0, -1000), float32",
        steps=[
            Step("log(softmax(x))", _values(naive.detach()), None, "exp underflows to 0: -inf"),
            Step("log_softmax(x)", _values(stable.detach()), None, "exact and finite"),
            Step("d log(softmax(x))[1] / dx", _values(naive_grad), None, "0 * inf: NaN"),
            Step("d log_softmax(x)[1] / dx", _values(stable_grad), None, "finite"),
        ],
        remark="Use log_softmax (or cross_entropy on logits), never log(softmax(x)).",
    )


def worked_examples() -> list[Example]:
    """Every worked example of the specification, computed exactly."""
    return [
        _seed_vector_example(),
        _not_log_softmax_example(),
        _batch_example(),
        _log_of_softmax_example(),
    ]
