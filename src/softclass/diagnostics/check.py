"""The pairing checker: catches the silent mistakes made when pairing outputs, targets and a loss.

torch accepts most wrong pairings without a word: probabilities fed to ``cross_entropy`` (the
"double softmax"), raw logits or probabilities fed to ``nll_loss``, ``log(softmax(x))`` that
underflows to ``-inf``, softmax over the batch dimension, index targets broadcast against
``(N, C)`` probabilities by ``mse_loss``... :func:`check_pairing` looks at one batch of model
outputs and targets, knowing which loss they are meant for, and returns a list of
:class:`Finding` — each says what was seen (with numbers) and how to fix it. The trainer runs it
on the first batch and reports the findings once through :func:`warn_findings` as a
:class:`PairingWarning`.

How outputs are recognised (rows are the class vectors, one per item; ``tol`` comes from
:func:`pairing_tolerance`):

* **probabilities** — every value in ``[-tol, 1 + tol]`` and every row sums to 1 within ``tol``;
* **log-probabilities** — no value above ``tol`` and every row's logsumexp within
  ``max(tol, 1e-3)`` of 0 (a smaller error shifts the loss by less than 1e-3 nats);
* **softmax over the wrong dimension** — not probabilities by rows, all values in ``[0, 1]``, but
  the sums over some other dimension are all 1;
* anything else is taken for **logits**.

The tolerance is tight (a few float32 epsilons): correct pairings never warn, even when random
logits of a tiny batch could look like probabilities: a single row of random float32 logits
passes the probability test with a probability of about 1e-6 (measured: at most 9 in 10 million
rows, C = 2 or 3, scales 0.3..2), two rows about 1e-12 (property-tested over shapes, scales and
the four designs). The price is that probabilities rounded by hand (``0.24, 0.67, 0.09``) are
not recognised as probabilities.

Odd but valid inputs: an empty batch gives no findings; a single class (``C = 1``) gives the one
finding ``"single-class"`` (softmax over one class is always 1 and the loss is constant); 1-D
outputs ``(C,)`` are one item with a 0-D index target or a ``(C,)`` one-hot target; outputs
``(N, C, d1, ..., dK)`` are checked per position, with class dimension 1, as torch does.
Float one-hot or probability targets given to ``cross_entropy`` are valid in torch (class
probabilities) and not reported.

Cost: O(N·C) work and memory (one float32 copy of half-precision outputs), a handful of host
syncs per call, no autograd (inputs are detached; ``grad_fn`` is only read, to recognise
``log(softmax(x))`` in the graph). Meant for the first batch, not every step.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence

import torch

from softclass import functional
from softclass.diagnostics.check_targets import check_targets
from softclass.diagnostics.findings import Finding, LossSpec
from softclass.mlp.designs import DESIGNS
from softclass.mlp.loss_kinds import loss_spec

__all__ = [
    "LOSS_NAMES",
    "Finding",
    "PairingWarning",
    "check_pairing",
    "format_findings",
    "pairing_tolerance",
    "warn_findings",
]

LOSS_NAMES = tuple(dict.fromkeys(design.loss_name for design in DESIGNS.values()))
"""The losses :func:`check_pairing` knows, as accepted in its ``loss`` argument: the
``loss_name`` of each design of the registry (:data:`softclass.mlp.designs.DESIGNS`); a design
registered later is known too."""

# grad_fn class names of torch's and softclass.functional's softmax / log_softmax
_SOFTMAX_GRAD_FNS = frozenset({"SoftmaxBackward0", "_SoftmaxBackward"})
_LOG_SOFTMAX_GRAD_FNS = frozenset({"LogSoftmaxBackward0", "_LogSoftmaxBackward"})
# A log-softmax row whose logsumexp is off by less than this shifts the NLL by less than this
# many nats: not worth a warning (hand-rounded log-probabilities are off by about 1e-5).
_LOG_NORMALIZATION_FLOOR = 1e-3


class PairingWarning(UserWarning):
    """Warning category of the pairing checker: outputs, targets and loss do not fit together."""


def pairing_tolerance(dtype: torch.dtype, n_summed: int) -> float:
    """Largest deviation from 1 (row sums) or 0 (logsumexp) that rounding alone can explain.

    Measured with torch 2.13 on CPU over scales 1e-3..1e3: softmax row sums and log_softmax
    logsumexps deviate by at most 18 eps in float32 (C up to 50 000) and 4.2 eps in float16 and
    bfloat16. The bound is ``max(4 eps(dtype), 16 eps(float32)) * max(1, sqrt(n_summed) / 8)``:
    float32 and float64 use the float32 epsilon so that float32 probabilities cast to float64
    are still recognised.

    Args:
        dtype: floating dtype of the values summed.
        n_summed: how many values each sum adds up (the number of classes for row sums).

    Returns:
        The tolerance, a positive float.
    """
    epsilon = max(4.0 * torch.finfo(dtype).eps, 16.0 * torch.finfo(torch.float32).eps)
    return epsilon * max(1.0, math.sqrt(n_summed) / 8.0)


def check_pairing(
    outputs: torch.Tensor,
    targets: torch.Tensor,
    loss: str | Callable[..., torch.Tensor] | torch.nn.Module,
    *,
    ignore_index: int | None = None,
) -> list[Finding]:
    """Check that model outputs, targets and a loss fit together; return what does not.

    Args:
        outputs: what the model gives the loss, float ``(N, C)``, ``(C,)`` or
            ``(N, C, d1, ..., dK)`` (class dimension 1). Not modified; grad not required.
        targets: class indices ``(N,)`` / ``(N, d1, ..., dK)`` / 0-D, or one-hot / probability
            targets of the same shape as ``outputs``.
        loss: ``"cross_entropy"``, ``"nll"``, ``"mse"`` or ``"mcee"``, or a loss function or
            module (``torch.nn.CrossEntropyLoss()``, ``torch.nn.functional.nll_loss``, the
            ``softclass.nn`` / ``softclass.functional`` equivalents), recognised by name. The
            strings ``"mse"`` and ``"mcee"`` stand for the textbook formulas, which need one-hot
            targets; softclass's own ``mse_onehot`` and ``mcee`` also take class indices.
        ignore_index: label value that cross_entropy / nll skip; by default the loss module's
            ``ignore_index`` attribute, else torch's -100.

    Returns:
        The findings, errors and warnings in the order checked (outputs first, then targets);
        empty when the pairing looks right or the batch is empty.

    Raises:
        ValueError: ``loss`` is not one of the known losses, or ``outputs`` is 0-D or not
            floating point.
        TypeError: ``outputs`` or ``targets`` is not a tensor.
    """
    spec = _resolve_loss(loss, ignore_index)
    for argument_name, value in (("outputs", outputs), ("targets", targets)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"check_pairing: {argument_name} must be a torch.Tensor, got {type(value).__name__}"
            )
    if outputs.ndim == 0 or not outputs.is_floating_point():
        raise ValueError(
            f"check_pairing: outputs must be a floating-point tensor with a class dimension "
            f"((C,), (N, C) or (N, C, d1, ...)), got shape {tuple(outputs.shape)} and dtype "
            f"{outputs.dtype}"
        )
    log_of_softmax_in_graph = _is_log_of_softmax(outputs.grad_fn)
    mask_from_log_softmax = _grad_fn_name(outputs.grad_fn) in _LOG_SOFTMAX_GRAD_FNS
    single_item = outputs.ndim == 1
    batched_outputs = outputs.detach().unsqueeze(0) if single_item else outputs.detach()
    batched_targets = targets.detach().unsqueeze(0) if single_item else targets.detach()
    n_classes = batched_outputs.shape[1]
    if batched_outputs.numel() == 0:
        return []
    if n_classes == 1:
        return [_single_class_finding(spec)]
    findings = _check_outputs(
        batched_outputs, spec, single_item, log_of_softmax_in_graph, mask_from_log_softmax
    )
    findings += check_targets(batched_outputs, batched_targets, spec)
    return findings


def format_findings(findings: Sequence[Finding]) -> str:
    """Render findings as one multi-line message (the text of the :class:`PairingWarning`)."""
    count = len(findings)
    header = f"softclass pairing check: {count} problem{'s' if count != 1 else ''} found"
    return "\n".join([header, *(f"  {finding}" for finding in findings)])


def warn_findings(findings: Sequence[Finding], *, stacklevel: int = 2) -> None:
    """Issue one :class:`PairingWarning` listing all findings; do nothing when there are none.

    Args:
        findings: what :func:`check_pairing` returned.
        stacklevel: as for :func:`warnings.warn`; the default points at the caller of this function.
    """
    if findings:
        warnings.warn(format_findings(findings), PairingWarning, stacklevel=stacklevel)


# ---------------------------------------------------------------------------------------------
# loss resolution


def _resolve_loss(
    loss: str | Callable[..., torch.Tensor] | torch.nn.Module, ignore_index: int | None
) -> LossSpec:
    spec = loss_spec(loss, ignore_index, DESIGNS.values())
    if spec is None:
        function = loss.func if isinstance(loss, functools.partial) else loss
        raw_name = loss if isinstance(loss, str) else getattr(function, "__name__", None)
        raw_name = raw_name or type(function).__name__
        names = dict.fromkeys(design.loss_name for design in DESIGNS.values())
        accepted = ", ".join(repr(name) for name in names)
        raise ValueError(
            f"check_pairing: unknown loss {loss!r} (name {raw_name!r}); expected one of "
            f"{accepted} or a matching torch / softclass loss function or module "
            f"(e.g. torch.nn.CrossEntropyLoss(), torch.nn.functional.nll_loss)"
        )
    return spec


def _grad_fn_name(grad_fn: object) -> str:
    return type(grad_fn).__name__ if grad_fn is not None else ""


def _is_log_of_softmax(grad_fn: object) -> bool:
    """True when the graph shows ``log(softmax(x))``: a LogBackward0 fed by a softmax."""
    if _grad_fn_name(grad_fn) != "LogBackward0":
        return False
    return any(_grad_fn_name(parent) in _SOFTMAX_GRAD_FNS for parent, _ in grad_fn.next_functions)


# ---------------------------------------------------------------------------------------------
# outputs


def _check_outputs(
    outputs: torch.Tensor,
    spec: LossSpec,
    single_item: bool,
    log_of_softmax_in_graph: bool,
    mask_from_log_softmax: bool,
) -> list[Finding]:
    """Outputs ``(N, C, ...)`` with C >= 2 and at least one element."""
    n_classes = outputs.shape[1]
    work_dtype = torch.float64 if outputs.dtype == torch.float64 else torch.float32
    work = outputs.to(work_dtype)
    rows = work.movedim(1, -1).reshape(-1, n_classes)
    tol = pairing_tolerance(outputs.dtype, n_classes)

    n_nan, n_pos_inf, n_neg_inf = torch.stack(
        [rows.isnan().sum(), rows.isposinf().sum(), rows.isneginf().sum()]
    ).tolist()
    if n_nan or n_pos_inf:
        return [_non_finite_finding(n_nan, n_pos_inf, rows.numel())]

    row_sums = rows.sum(dim=1)
    log_norms = functional.logsumexp(rows, dim=1)
    low, high, row_sum_min, row_sum_max, norm_min, norm_max, n_positive = torch.stack(
        [
            rows.min(),
            rows.max(),
            row_sums.min(),
            row_sums.max(),
            log_norms.min(),
            log_norms.max(),
            (rows > tol).sum().to(work_dtype),
        ]
    ).tolist()
    in_unit_interval = low >= -tol and high <= 1 + tol
    row_deviation = max(abs(row_sum_min - 1), abs(row_sum_max - 1))
    rows_are_probabilities = in_unit_interval and row_deviation <= tol
    norm_deviation = max(abs(norm_min), abs(norm_max))
    rows_are_log_probabilities = high <= tol and norm_deviation <= max(
        tol, _LOG_NORMALIZATION_FLOOR
    )

    findings: list[Finding] = []
    wrong_dim = None
    if in_unit_interval and not rows_are_probabilities and not single_item:
        wrong_dim = _dim_summing_to_one(work, outputs.dtype)
    if rows_are_probabilities:
        if spec.name == "cross_entropy":
            findings.append(_double_softmax_finding(row_deviation, low, high))
        elif spec.name == "nll":
            findings.append(_probabilities_into_nll_finding(row_deviation, low, high))
    elif wrong_dim is not None:
        findings.append(
            _wrong_dim_finding(spec, wrong_dim, outputs.shape[wrong_dim], row_sum_min, row_sum_max)
        )
    elif spec.name == "nll":
        if n_neg_inf and not mask_from_log_softmax:
            findings.append(_log_of_softmax_finding(n_neg_inf, rows.numel()))
        if n_positive:
            findings.append(_logits_into_nll_finding(int(n_positive), rows.numel(), high))
        elif not rows_are_log_probabilities:
            findings.append(_unnormalized_finding(norm_min, norm_max, rows.shape[0]))
    elif spec.name in ("mse", "mcee"):
        findings.append(
            _not_probabilities_finding(
                spec, rows_are_log_probabilities, low, high, row_sum_min, row_sum_max
            )
        )
    if log_of_softmax_in_graph and not any(f.code == "log-of-softmax" for f in findings):
        findings.append(
            Finding(
                "log-of-softmax",
                "warning",
                "the outputs were computed as torch.log(softmax(x)) (seen in the autograd graph); "
                "it is finite on this batch but underflows to -inf, and NaN gradients, once a "
                "probability rounds to 0 (logit gaps above ~104 in float32).",
                "Use `F.log_softmax(logits, dim=1)` instead of `torch.log(F.softmax(logits, "
                "dim=1))`.",
            )
        )
    return findings


def _dim_summing_to_one(work: torch.Tensor, dtype: torch.dtype) -> int | None:
    """First dimension other than the class dimension 1 along which all sums are 1."""
    for dim in range(work.ndim):
        if dim == 1:
            continue
        deviation = (work.sum(dim=dim) - 1).abs().max().item()
        if deviation <= pairing_tolerance(dtype, work.shape[dim]):
            return dim
    return None


def _single_class_finding(spec: LossSpec) -> Finding:
    return Finding(
        "single-class",
        "warning",
        f"outputs have a single class (C = 1): softmax over one class is always 1, so "
        f"{spec.name} is constant and nothing trains.",
        "Give the last layer one output per class (C >= 2); for a yes/no problem use 2 classes or "
        "`F.binary_cross_entropy_with_logits(logits.squeeze(1), targets.float())`.",
    )


def _non_finite_finding(n_nan: int, n_pos_inf: int, n_values: int) -> Finding:
    return Finding(
        "non-finite-outputs",
        "error",
        f"outputs contain {n_nan} NaN and {n_pos_inf} +inf among {n_values} values; the loss and "
        f"every gradient will be NaN.",
        "Find where they first appear (`torch.autograd.set_detect_anomaly(True)`), check the "
        "inputs "
        "and the learning rate, and use `F.log_softmax` / `F.cross_entropy` rather than "
        "`torch.log(F.softmax(...))`.",
    )


def _double_softmax_finding(row_deviation: float, low: float, high: float) -> Finding:
    return Finding(
        "double-softmax",
        "error",
        f"cross_entropy got probabilities: rows sum to 1 within {row_deviation:.1e} and all values "
        f"lie in [{low:.3g}, {high:.3g}]; cross_entropy applies its own softmax, so the loss "
        f"cannot fall below log(1 + (C-1)/e) and training stalls.",
        "Pass the raw logits: `F.cross_entropy(logits, targets)`; keep "
        "`F.softmax(logits, dim=1)` for predictions only.",
    )


def _probabilities_into_nll_finding(row_deviation: float, low: float, high: float) -> Finding:
    return Finding(
        "probs-into-nll",
        "error",
        f"nll_loss got probabilities, not log-probabilities: rows sum to 1 within "
        f"{row_deviation:.1e} and all values lie in [{low:.3g}, {high:.3g}]; "
        "the loss is -p[target], "
        f"stuck in [-1, 0].",
        "Take the log stably: `F.nll_loss(F.log_softmax(logits, dim=1), targets)`, or use "
        "`F.cross_entropy(logits, targets)`.",
    )


def _wrong_dim_finding(
    spec: LossSpec, dim: int, dim_size: int, row_sum_min: float, row_sum_max: float
) -> Finding:
    fixes = {
        "cross_entropy": "Drop the softmax and pass the raw logits: `F.cross_entropy(logits, "
        "targets)` (it normalizes over dim=1 itself).",
        "nll": "Normalize over the classes: `F.nll_loss(F.log_softmax(logits, dim=1), targets)`.",
        "mse": "Normalize over the classes: `probs = F.softmax(logits, dim=1)`.",
        "mcee": "Normalize over the classes: `probs = F.softmax(logits, dim=1)`.",
    }
    return Finding(
        "softmax-wrong-dim",
        "error",
        f"values sum to 1 along dim {dim} (size {dim_size}), not along the class dim 1: class rows "
        f"sum to between {row_sum_min:.3g} and {row_sum_max:.3g}; the softmax was taken over the "
        f"wrong dimension.",
        fixes[spec.name],
    )


def _log_of_softmax_finding(n_neg_inf: int, n_values: int) -> Finding:
    return Finding(
        "log-of-softmax",
        "error",
        f"{n_neg_inf} of {n_values} log-probabilities are -inf: softmax rounded them to 0 and the "
        f"log of 0 is -inf (torch.log(softmax(x))), so the loss is inf where a target sits on one "
        f"and gradients through log(0) are NaN; log_softmax stays finite.",
        "Use `F.log_softmax(logits, dim=1)` instead of `torch.log(F.softmax(logits, dim=1))` "
        "(ignore this if the -inf mask classes on purpose).",
    )


def _logits_into_nll_finding(n_positive: int, n_values: int, high: float) -> Finding:
    return Finding(
        "logits-into-nll",
        "error",
        f"nll_loss got values above 0 ({n_positive} of {n_values}, largest {high:.4g}); "
        f"log-probabilities are <= 0, so these look like raw logits: the loss is -logit[target], "
        f"can go negative and is unbounded below.",
        "End the model with `F.log_softmax(logits, dim=1)` before `F.nll_loss`, or use "
        "`F.cross_entropy(logits, targets)`.",
    )


def _unnormalized_finding(norm_min: float, norm_max: float, n_rows: int) -> Finding:
    if n_rows == 1:
        observed = f"is {norm_min:.4f}"
    else:
        observed = f"ranges from {norm_min:.4f} to {norm_max:.4f} over the {n_rows} rows"
    return Finding(
        "unnormalized-log-probs",
        "warning",
        f"nll_loss got values <= 0 whose rows do not normalize: their logsumexp over the classes "
        f"{observed} (0 for log-probabilities), so the loss is off by up to that many nats.",
        "Normalize with `F.log_softmax(outputs, dim=1)` (if these are raw scores, use "
        "`F.cross_entropy(outputs, targets)`).",
    )


def _not_probabilities_finding(
    spec: LossSpec,
    looks_like_log_probabilities: bool,
    low: float,
    high: float,
    row_sum_min: float,
    row_sum_max: float,
) -> Finding:
    if looks_like_log_probabilities:
        what = "log-probabilities (all <= 0, rows' logsumexp 0)"
        fix = "Turn them into probabilities: `probs = log_probs.exp()`."
    else:
        what = "logits"
        fix = "Apply softmax over the classes first: `probs = F.softmax(logits, dim=1)`."
    return Finding(
        "not-probabilities",
        "error",
        f"{spec.name} needs probabilities but got {what}: "
        f"values lie in [{low:.3g}, {high:.3g}] and "
        f"rows sum to between {row_sum_min:.3g} and {row_sum_max:.3g}.",
        fix,
    )
