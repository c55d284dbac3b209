"""The output/loss designs as objects: one registry, :data:`DESIGNS`, that owns every fact.

Each design knows the network's output activation (applied to the logits of the last layer), its
loss, how targets are encoded for it, how to turn outputs into probabilities, how tables and
figures show it (loss label, colour, line style) and what it is expected to give against the
reference design A (:data:`RELATIONS`, and the sentence that explains it). Every per-design
table of the project (agreement pairs, report, plots, the command line's defaults and help) is
derived from this registry; :func:`register_design` adds one. The four shipped designs:

====== ====================== ==================== ========== ====================
design output                 loss                 targets    probabilities
====== ====================== ==================== ========== ====================
A      logits                 cross entropy        indices    softmax(output)
B      log_softmax(logits)    NLL                  indices    exp(output)
C      softmax(logits)        squared error (sum)  one-hot    output
D      softmax(logits)        mean CE error        one-hot    output
====== ====================== ==================== ========== ====================

A and B are the same computation; D equals them mathematically (but takes the log of a rounded
probability); C is a different loss. Label smoothing ε is an option of a run, not a design: every
shipped design's loss takes ``label_smoothing`` and :meth:`Design.smoothed` gives the entry a run
trains with (the target rows become ``(1 - ε)·onehot + ε/C``; each entry's ``smoothing`` fact
says what that means for it), so A = B = D still holds with smoothing on. All losses come from
:mod:`softclass.functional` (B's smoothed NLL, :func:`nll_smoothed`, is written with it), and so
does the gradient of the loss with respect to the logits that the batched engine uses
(:meth:`Design.output_gradient`: autograd through the design's output and loss only). Each design
also names its branch of the compiled training loops (``training/mlp_native.c``), or None when
they lack it.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch

from softclass import functional
from softclass.errors import ConfigError
from softclass.mlp.loss_kinds import loss_spec
from softclass.mlp.registry import add_entry


# The designs' outputs (public: a new entry built from them and a functional loss computes a
# compiled branch, see NATIVE_BRANCHES).
def identity(logits: torch.Tensor) -> torch.Tensor:
    """The logits themselves ``(N, C)``: A's output, B's log-probabilities."""
    return logits


def log_softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the classes (dim 1)."""
    return functional.log_softmax(logits, 1)


def softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """softmax over the classes (dim 1)."""
    return functional.softmax(logits, 1)


def nll_smoothed(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """B's loss: NLL of log-probabilities ``(N, C)`` at class indices ``(N,)``, against
    label-smoothed targets ``(1 - ε)·onehot + ε/C``.

    Per row ``(1 - ε)·(-log_probs[target]) + ε·mean_c(-log_probs[c])``: with ``log_probs =
    log_softmax(logits)`` the number ``cross_entropy(logits, targets, label_smoothing=ε)`` gives
    (torch's formula). ε = 0 is :func:`softclass.functional.nll_loss` itself (whose signature
    stays torch's, without smoothing). ``reduction``: "none" ``(N,)``, "sum" or "mean" (0-dim).
    """
    loss = functional.nll_loss(log_probs, targets, reduction=reduction)
    if label_smoothing == 0.0:
        return loss
    uniform = -log_probs.mean(-1)
    if reduction != "none":
        uniform = uniform.sum() if reduction == "sum" else uniform.mean()
    return (1.0 - label_smoothing) * loss + label_smoothing * uniform


def _exp(log_probs: torch.Tensor) -> torch.Tensor:
    return log_probs.exp()


def _clamped_log(probs: torch.Tensor) -> torch.Tensor:
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


# What a design is expected to give against the reference design, best agreement first:
# the reference itself; the same computation (identical up to float rounding); the same loss
# written another way, so the same minimiser (rounding differences may grow); another loss.
RELATIONS = ("reference", "same computation", "same minimiser", "another loss")
REFERENCE = "A"
"""The design every other is compared with (its relation is "reference")."""
MAX_NATIVE_PARAMS = 2
"""How many values a compiled loss branch may read (``MAX_DESIGN_PARAMS`` of mlp_native.c)."""


# The facts of a design with a closed set of values: fact → (test, what is expected).
_FACT_RULES = {
    "target_encoding": (lambda value: value in ("index", "one_hot"), "'index' or 'one_hot'"),
    "relation": (lambda value: value in RELATIONS, "one of " + ", ".join(RELATIONS)),
    "color": (lambda value: re.fullmatch(r"#[0-9a-fA-F]{6}", value), "#rrggbb"),
    "linestyle": (lambda value: value in ("-", "--", ":", "-."), "-, --, : or -."),
}


@dataclass(frozen=True)
class Design:
    """One output/loss pairing.

    Attributes:
        name: "A", "B", "C" or "D".
        title: a short human description.
        loss_name: the loss as the pairing checker names it ("cross_entropy", "nll", "mse", "mcee").
        target_encoding: "index" (int64 ``(N,)``) or "one_hot" (float ``(N, C)``).
        output: logits ``(N, C)`` → the network's output ``(N, C)``.
        loss: (output, encoded targets) → scalar mean loss.
        output_to_proba: output → probabilities ``(N, C)``.
        output_to_log_proba: output → log-probabilities ``(N, C)``, as stable as the design allows.
        label: the design's own loss, briefly, for tables ("CE", "sq. error").
        color: its colour in every figure, "#rrggbb".
        linestyle: its matplotlib line style ("-", "--", ":", "-.").
        relation: what it is expected to give against :data:`REFERENCE`, one of
            :data:`RELATIONS`.
        meaning: the sentence explaining that relation (shown in the report beside the numbers).
        native_code: the loss branch of ``mlp_native.c`` that computes this design (0 fused
            cross entropy, 1 squared error of softmax, 2 MCEE of softmax, 3 NLL of log_softmax),
            or None (the compiled backend then refuses it); see :data:`NATIVE_BRANCHES`.
        native_params: the values that branch reads, passed to it as data, in the order of
            :data:`NATIVE_BRANCHES` (every branch: the label smoothing); () = all 0.
        smoothing: what label smoothing ε means for this design (shown with ``--help`` and in
            the report), or None when it refuses smoothing; when given, ``loss`` takes a
            ``label_smoothing`` keyword (:meth:`smoothed` passes ε to it).

    A missing or empty fact raises ConfigError naming it when the entry is made.
    """

    name: str
    title: str
    loss_name: str
    target_encoding: str
    output: Callable[[torch.Tensor], torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    output_to_proba: Callable[[torch.Tensor], torch.Tensor]
    output_to_log_proba: Callable[[torch.Tensor], torch.Tensor]
    label: str
    color: str
    linestyle: str
    relation: str
    meaning: str
    native_code: int | None = None
    native_params: tuple[float, ...] = ()
    smoothing: str | None = None

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            optional = item.name in ("native_code", "native_params", "smoothing")
            if (isinstance(value, str) and not value) or (value is None and not optional):
                raise ConfigError(f"design {self.name!r}: fact {item.name!r} is missing")
        if not re.fullmatch(r"[A-Z]", self.name):
            raise ConfigError(
                f"design name {self.name!r}: expected one capital letter (--design takes letters)"
            )
        for fact, (valid, expected) in _FACT_RULES.items():
            if not valid(getattr(self, fact)):
                raise ConfigError(
                    f"design {self.name!r}: fact {fact!r} is {getattr(self, fact)!r}, "
                    f"expected {expected}"
                )
        if len(self.native_params) > MAX_NATIVE_PARAMS:
            raise ConfigError(
                f"design {self.name!r}: fact 'native_params' has {len(self.native_params)} "
                f"values, expected at most {MAX_NATIVE_PARAMS}"
            )
        if self.smoothing is not None and not _takes_label_smoothing(self.loss):
            raise ConfigError(
                f"design {self.name!r}: fact 'smoothing' is given but its loss "
                f"{getattr(self.loss, '__name__', self.loss)!r} takes no label_smoothing keyword"
            )

    def smoothed(self, label_smoothing: float) -> Design:
        """This design as a run with label smoothing ε trains it: its loss with
        ``label_smoothing=ε`` and the compiled branch told ε; itself when ε = 0.

        Raises:
            ConfigError: ε outside [0, 1), or ε > 0 for a design without a ``smoothing`` fact.
        """
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(
                f"label smoothing {label_smoothing!r} for design {self.name!r}: expected a "
                "number in [0, 1)"
            )
        if label_smoothing == 0.0:
            return self
        if self.smoothing is None:
            takers = [design.name for design in DESIGNS.values() if design.smoothing]
            raise ConfigError(
                f"design {self.name!r} does not take label smoothing (its entry has no "
                f"'smoothing' fact), got label smoothing {label_smoothing}: use 0, or one of the "
                f"designs {', '.join(takers)}"
            )
        return replace(
            self,
            loss=functools.partial(self.loss, label_smoothing=label_smoothing),
            native_params=(float(label_smoothing), *self.native_params[1:]),
        )

    @property
    def same_loss_quantity(self) -> bool:
        """Whether its loss is the reference's quantity (so the two losses can be compared)."""
        return self.relation in RELATIONS[:3]

    def encode_targets(self, targets: torch.Tensor, n_classes: int) -> torch.Tensor:
        """Class indices ``(N,)`` → what this design's loss takes (indices or one-hot floats)."""
        if self.target_encoding == "index":
            return targets
        return functional.one_hot(targets, n_classes, dtype=torch.float32)

    def loss_from_logits(self, logits: torch.Tensor, encoded_targets: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch of logits ``(N, C)``."""
        return self.loss(self.output(logits), encoded_targets)

    def row_losses(self, logits: torch.Tensor, encoded_targets: torch.Tensor) -> torch.Tensor:
        """Per-row losses ``(N,)`` of logits ``(N, C)`` (the loss with ``reduction="none"``)."""
        return self.loss(self.output(logits), encoded_targets, reduction="none")

    def output_gradient(
        self, logits: torch.Tensor, encoded_targets: torch.Tensor, row_scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Row losses and the gradient of ``Σ_rows row_scale·loss_row`` w.r.t. the logits.

        The loss is this design's :mod:`softclass.functional` loss (for A the cross entropy and
        its fused kernel); autograd runs through the design's output and loss only, so a fast
        backend that writes the network's backward by hand gets the project's own loss gradient.

        Args:
            logits: ``(N, C)`` float, detached; encoded_targets: from :meth:`encode_targets`.
            row_scale: ``(N,)`` weight of each row (1/N for a plain mean).

        Returns:
            ``(row_losses (N,), grad_logits (N, C))``, both detached, in the logits' dtype.
        """
        with torch.enable_grad():
            leaf = logits.detach().requires_grad_()
            rows = self.row_losses(leaf, encoded_targets)
            (grad,) = torch.autograd.grad(rows, leaf, row_scale)
        return rows.detach(), grad

    def mean_loss_gradient(
        self, logits: torch.Tensor, encoded_targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean loss (0-dim) and its gradient w.r.t. the logits ``(N, C)``: as
        :meth:`output_gradient` with ``row_scale = 1/N`` (the cheaper scalar path of the loss)."""
        with torch.enable_grad():
            leaf = logits.detach().requires_grad_()
            loss = self.loss(self.output(leaf), encoded_targets)
            (grad,) = torch.autograd.grad(loss, leaf)
        return loss.detach(), grad

    def uniform_loss(self, n_classes: int) -> float:
        """The loss of one row predicted uniformly (all-zero logits) over ``n_classes`` classes:
        ln C for the likelihood designs, the scale the divergence rule measures losses by."""
        logits = torch.zeros(1, n_classes)
        targets = self.encode_targets(torch.zeros(1, dtype=torch.long), n_classes)
        return float(self.loss_from_logits(logits, targets))

    def predict_proba(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(N, C)`` by this design's own rule."""
        return self.output_to_proba(self.output(logits))

    def predict_log_proba(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``(N, C)`` by this design's own rule."""
        return self.output_to_log_proba(self.output(logits))


def _takes_label_smoothing(loss: Callable[..., torch.Tensor]) -> bool:
    """Whether ``loss`` has a ``label_smoothing`` parameter (or takes any keyword)."""
    try:
        parameters = inspect.signature(loss).parameters.values()
    except (TypeError, ValueError):  # a callable Python cannot read the signature of
        return False
    return any(
        parameter.name == "label_smoothing" or parameter.kind is parameter.VAR_KEYWORD
        for parameter in parameters
    )


DESIGNS: dict[str, Design] = {}
"""The registry: design name → :class:`Design`, in the order tables and defaults list them."""


def register_design(design: Design) -> Design:
    """Add ``design`` to :data:`DESIGNS` (every table, default and help text then has it).

    Raises ConfigError when its name is taken, when it says it is the reference and is not
    :data:`REFERENCE`, or when the pairing checker cannot tell what its loss takes (the entry
    itself checks its other facts when it is made)."""
    if design.name not in DESIGNS and (design.relation == "reference") != (
        design.name == REFERENCE
    ):
        raise ConfigError(
            f"design {design.name!r}: fact 'relation' is {design.relation!r}; only the reference "
            f"design {REFERENCE} has relation 'reference'"
        )
    if loss_spec(design.loss_name) is None and loss_spec(design.loss) is None:
        raise ConfigError(
            f"design {design.name!r}: fact 'loss' ({design.loss!r}, loss name "
            f"{design.loss_name!r}) is no loss the pairing checker knows: build it on one of "
            "softclass.functional's (cross_entropy, nll_loss, mse_onehot, mcee; functools.partial "
            "of one is fine) or name it after one (loss_name)"
        )
    return add_entry(DESIGNS, "design", design)


register_design(
    Design(
        "A",
        "logits + cross entropy",
        "cross_entropy",
        "index",
        identity,
        functional.cross_entropy,
        softmax_rows,
        log_softmax_rows,
        label="CE",
        color="#1f77b4",
        linestyle="-",
        relation="reference",
        meaning="A (logits + cross entropy) is the reference every other design is compared with.",
        native_code=0,
        smoothing="cross entropy against (1 - ε)·onehot + ε/C: torch's "
        "cross_entropy(label_smoothing=ε).",
    )
)
register_design(
    Design(
        "B",
        "log_softmax + NLL",
        "nll",
        "index",
        log_softmax_rows,
        nll_smoothed,
        _exp,
        identity,
        label="NLL",
        color="#ff7f0e",
        linestyle="--",  # dashed over A, so that two identical curves stay visible
        relation="same computation",
        meaning="A (logits + cross entropy) and B (log_softmax + NLL) are the same computation: "
        "the same loss, gradients and weights for the same seed. Any difference is float32 "
        "rounding (A's loss runs softclass's fused kernel, B's runs log_softmax then NLL).",
        native_code=3,
        smoothing="NLL against (1 - ε)·onehot + ε/C: (1 - ε)·NLL + ε·mean of -log p over the "
        "classes, the number A's smoothed cross entropy gives (still the same computation).",
    )
)
register_design(
    Design(
        "C",
        "softmax + MSE (one-hot)",
        "mse",
        "one_hot",
        softmax_rows,
        functional.mse_onehot,
        identity,
        _clamped_log,
        label="sq. error",
        color="#2ca02c",
        linestyle="-",
        relation="another loss",
        meaning="C (softmax + squared error against the one-hot target) minimises another loss, "
        "so its weights are expected to differ; compare it with the others on the common "
        "metrics (accuracy, log loss, Brier, ECE), never on its own loss.",
        native_code=1,
        smoothing="squared error against the smoothed one-hot rows (1 - ε)·onehot + ε/C: its "
        "minimiser becomes that smoothed distribution, as for the likelihood designs (still "
        "another loss).",
    )
)
register_design(
    Design(
        "D",
        "softmax + mean cross-entropy error",
        "mcee",
        "one_hot",
        softmax_rows,
        functional.mcee,
        identity,
        _clamped_log,
        label="MCEE",
        color="#d62728",
        linestyle=":",
        relation="same minimiser",
        meaning="D (softmax, then the mean of -log p at the one-hot 1) equals A mathematically; "
        "in float32 it takes the log of a rounded softmax, so tiny differences can grow slowly "
        "over the epochs.",
        native_code=2,
        smoothing="mean cross-entropy error against the smoothed one-hot rows "
        "(1 - ε)·onehot + ε/C: A's smoothed cross entropy written on probabilities (still the "
        "same minimiser).",
    )
)


def designs_for(label_smoothing: float) -> tuple[tuple[str, ...], str | None]:
    """The designs a run with ``label_smoothing`` trains when none are named (every registered
    one at 0, else those with a ``smoothing`` fact), and a sentence naming any left out."""
    names = tuple(
        name for name, design in DESIGNS.items() if not label_smoothing or design.smoothing
    )
    left_out = [name for name in DESIGNS if name not in names]
    if not left_out:
        return names, None
    return names, (
        f"design {', '.join(left_out)} left out: its entry has no 'smoothing' fact and this run's "
        f"label smoothing is {label_smoothing} (--label-smoothing 0 compares every design)"
    )


def agreement_pairs() -> tuple[tuple[str, str], ...]:
    """``(REFERENCE, name)`` for every other design, closest expected agreement first (the
    same computation, then the same minimiser, then another loss), registry order within."""
    others = sorted(
        (design for design in DESIGNS.values() if design.name != REFERENCE),
        key=lambda design: RELATIONS.index(design.relation),
    )
    return tuple((REFERENCE, design.name) for design in others)


@dataclass(frozen=True)
class NativeBranch:
    """What a loss branch of ``mlp_native.c`` computes: ``loss(output(logits), targets,
    **dict(zip(params, native_params)))`` with these functions of this module and
    :mod:`softclass.functional`."""

    output: Callable[[torch.Tensor], torch.Tensor]
    loss: Callable[..., torch.Tensor]
    params: tuple[str, ...] = ()


NATIVE_BRANCHES = {
    0: NativeBranch(identity, functional.cross_entropy, ("label_smoothing",)),
    1: NativeBranch(softmax_rows, functional.mse_onehot, ("label_smoothing",)),
    2: NativeBranch(softmax_rows, functional.mcee, ("label_smoothing",)),
    3: NativeBranch(log_softmax_rows, nll_smoothed, ("label_smoothing",)),
}
"""native_code → what its branch computes. A design computes its branch when its ``output`` is
the branch's and its ``loss`` is the branch's loss, or ``functools.partial`` of it with exactly
the keywords its ``native_params`` give (zeros left out): so a label-smoothed cross entropy is
``Design(..., output=identity, loss=functools.partial(functional.cross_entropy,
label_smoothing=0.1), native_code=0, native_params=(0.1,))``. An entry changed or replaced at
run time so that it no longer computes its branch is refused by the compiled backend (the
parity tests of every backend hold each branch to autograd through these functions)."""


def computes_native_branch(design: Design) -> bool:
    """Whether ``design`` computes what the compiled branch of its ``native_code`` computes
    (True for a code without a branch here: the compiled loops refuse those by number)."""
    branch = NATIVE_BRANCHES.get(design.native_code)
    if branch is None:
        return True
    if len(design.native_params) > len(branch.params):
        return False
    expected = {
        name: value
        for name, value in zip(branch.params, design.native_params, strict=False)
        if value != 0
    }
    loss, keywords = design.loss, {}
    if isinstance(loss, functools.partial) and not loss.args:
        loss, keywords = loss.func, dict(loss.keywords)
    return design.output is branch.output and loss is branch.loss and keywords == expected


def native_values(design: Design) -> tuple[float, ...]:
    """``design.native_params`` padded with zeros to :data:`MAX_NATIVE_PARAMS` floats."""
    values = tuple(float(value) for value in design.native_params)
    return values + (0.0,) * (MAX_NATIVE_PARAMS - len(values))


def get_design(name: str) -> Design:
    """The design called ``name`` (case-insensitive); ConfigError listing the valid names."""
    key = str(name).strip().upper()
    if key not in DESIGNS:
        raise ConfigError(
            f"unknown design {name!r}: expected one of {', '.join(DESIGNS)} "
            f"({'; '.join(f'{d.name} = {d.title}' for d in DESIGNS.values())})"
        )
    return DESIGNS[key]
