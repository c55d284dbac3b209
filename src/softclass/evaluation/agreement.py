"""Are two designs the same computation? The agreement of their trainings (:class:`Agreement`),
probed during training (:class:`AgreementProbe`), and the rounding noise floor that gives a
float32 drift its scale (:func:`noise_floor`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from softclass.data.expansion import as_dense
from softclass.data.prepare import PreparedData
from softclass.mlp.designs import Design, agreement_pairs, get_design
from softclass.training.config import json_number
from softclass.training.loop import Callback, FitLoop

# Above this float32 weight drift, the rounding noise floor is measured to give it a scale.
FLOAT_TOLERANCE = 1e-3
# Two losses are the same computation when their float64 gradients at the same weights agree to
# this relative size (the same loss computed in another order: ~1e-15; A against C: ~1).
GRADIENT_TOLERANCE = 1e-9
# Rows of the float64 gradient probe: the first training rows, at most this many.
PROBE_ROWS = 512
# Epochs the gradient probe runs after: the first and about this many more, evenly spaced (the
# probe is a property of the two losses, so a sample of the trajectory suffices).
PROBE_CHECKS = 10


@dataclass
class Agreement:
    """Are two designs the same computation? Their gradients at the same weights, and how far
    their float32 trainings with the same seed drift apart, epoch by epoch.

    The verdict rests on the float64 gradients: two designs whose losses have the same gradient
    at the same weights make the same update at every step, so whatever their float32 weights
    drift apart by is rounding, however large it grows over many steps (a ReLU unit or Adam's
    small second moments can turn a one-ulp difference into a visible one). The drift and, when
    it exceeds FLOAT_TOLERANCE, the noise floor of the same run give it a scale.

    Attributes:
        first, second: design names, e.g. "A" and "B".
        seed: the seed both runs used.
        weight_diff: per epoch, max |W_first - W_second| over every weight and bias (float32).
        loss_diff: per epoch, max of |Δ training loss| and |Δ validation loss|; None when the two
            designs' losses are different quantities (C's squared error against a cross entropy).
        gradient_diff: after each epoch of ``gradient_epochs``, max |g_first - g_second| /
            max |g_first|, where g is the gradient of each design's loss with respect to every
            weight, computed in float64 at the *same* weights (``first``'s after that epoch) on
            the probe rows.
        gradient_epochs: the 1-based epochs the gradient probe ran after.
        noise_floor: max |W_A - W_A'| after the last epoch, where A' is design A trained again
            with the same initial weights and its training features moved by one float32 ulp: how
            far rounding alone moves the weights on this problem. Measured only when this pair is
            the same loss quantity and drifts beyond FLOAT_TOLERANCE; None otherwise.
        probe_rows: how many training rows the gradient probe used.
    """

    first: str
    second: str
    seed: int
    weight_diff: list[float] = field(default_factory=list)
    loss_diff: list[float] | None = None
    gradient_diff: list[float] = field(default_factory=list)
    gradient_epochs: list[int] = field(default_factory=list)
    noise_floor: float | None = None
    probe_rows: int = 0

    @property
    def max_weight_diff(self) -> float:
        return max(self.weight_diff, default=0.0)

    @property
    def max_loss_diff(self) -> float | None:
        return None if self.loss_diff is None else max(self.loss_diff, default=0.0)

    @property
    def max_gradient_diff(self) -> float:
        return max(self.gradient_diff, default=0.0)

    @property
    def same_gradients(self) -> bool:
        """The two losses have the same float64 gradient at the same weights, every time."""
        return self.max_gradient_diff <= GRADIENT_TOLERANCE

    @property
    def needs_noise_floor(self) -> bool:
        """Same computation, but drifting visibly: the noise floor gives the drift a scale."""
        return (
            self.loss_diff is not None
            and self.same_gradients
            and self.max_weight_diff > FLOAT_TOLERANCE
        )

    @property
    def verdict(self) -> str:
        """ "identical" (bit for bit), "equal up to rounding" (the same float64 gradients at the
        same weights: any float32 drift is rounding) or "different" (other gradients, whatever
        the weights did)."""
        if not self.same_gradients:
            return "different"
        if self.max_weight_diff == 0.0 and not self.max_loss_diff:
            return "identical"
        return "equal up to rounding"

    @property
    def method(self) -> str:
        """How the verdict was reached, in one sentence."""
        floor = (
            "; the float32 drift set against the noise floor of the same run (design A trained "
            "again with its inputs one float32 ulp away)"
            if self.noise_floor is not None
            else ""
        )
        return (
            f"both losses' gradients in float64 at the same weights, on {self.probe_rows} "
            f"training rows after {len(self.gradient_epochs)} of the epochs: the same "
            f"computation if they agree to {GRADIENT_TOLERANCE:.0e}{floor}"
        )

    def explanation(self) -> str:
        """What the numbers say, in one line (the terminal prints it after the verdict)."""
        epochs = len(self.weight_diff)
        if self.verdict == "identical":
            return (
                f"bit for bit the same weights over {epochs} epochs; float64 gradients at the "
                f"same weights agree to {self.max_gradient_diff:.0e}"
            )
        if not self.same_gradients:
            return (
                f"float64 gradients at the same weights differ by {self.max_gradient_diff:.1e} "
                f"(relative): another loss; weights apart by up to {self.max_weight_diff:.2e}"
            )
        floor = (
            ""
            if self.noise_floor is None
            else f"; A against itself nudged by one ulp: {self.noise_floor:.2e}"
        )
        return (
            f"float64 gradients at the same weights agree to {self.max_gradient_diff:.0e}, so "
            f"every step makes the same update; float32 rounding moves the weights apart by up "
            f"to {self.max_weight_diff:.2e} over {epochs} epochs{floor}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "pair": f"{self.first}-{self.second}",
            "seed": self.seed,
            "verdict": self.verdict,
            "explanation": self.explanation(),
            "method": self.method,
            "max_weight_diff": json_number(self.max_weight_diff),
            "max_loss_diff": json_number(self.max_loss_diff),
            "max_gradient_diff": json_number(self.max_gradient_diff),
            "noise_floor": json_number(self.noise_floor),
            "probe_rows": self.probe_rows,
            "weight_diff_per_epoch": [json_number(value) for value in self.weight_diff],
            "loss_diff_per_epoch": (
                None if self.loss_diff is None else [json_number(v) for v in self.loss_diff]
            ),
            "gradient_diff": [json_number(value) for value in self.gradient_diff],
            "gradient_epochs": list(self.gradient_epochs),
        }


def agreement_plan(
    names: tuple[str, ...],
    seed: int,
    data: PreparedData,
    epochs: int,
    label_smoothing: float = 0.0,
) -> tuple[list[Agreement], Probe, int]:
    """The pairs of ``names`` to compare (empty records), the rows of the float64 gradient probe
    (the first training rows, at most PROBE_ROWS, and the run's label smoothing) and every how
    many epochs it runs."""
    rows = min(PROBE_ROWS, int(data.train_features.shape[0]))
    agreements = [
        Agreement(
            first,
            second,
            seed,
            loss_diff=[] if get_design(second).same_loss_quantity else None,
            probe_rows=rows,
        )
        for first, second in agreement_pairs()
        if first in names and second in names
    ]
    probe = Probe(
        data.train_features[:rows], data.train_targets[:rows], data.n_classes, label_smoothing
    )
    return agreements, probe, max(1, epochs // PROBE_CHECKS)


@dataclass(frozen=True)
class Probe:
    """The rows the float64 gradient check runs on: features (P, F), targets (P,); the run's
    label smoothing (each design's gradient is that of the loss it trains on)."""

    features: torch.Tensor
    targets: torch.Tensor
    n_classes: int
    label_smoothing: float = 0.0


def perturb_one_ulp(tensors: list[torch.Tensor], seed: int) -> None:
    """Move every value of float32 ``tensors`` (in place) by about one ulp, |x|·eps, up or down
    (a seeded random sign per value)."""
    generator = torch.Generator().manual_seed(seed)
    epsilon = torch.finfo(torch.float32).eps
    with torch.no_grad():
        for tensor in tensors:
            signs = torch.randint(0, 2, tensor.shape, generator=generator) * 2 - 1
            step = tensor.detach().abs().cpu() * epsilon * signs
            tensor.add_(step.to(tensor.device, tensor.dtype))


def max_weight_diff(first: torch.nn.Module, second: torch.nn.Module) -> float:
    with torch.no_grad():
        return max(
            float((a - b).abs().max())
            for a, b in zip(first.parameters(), second.parameters(), strict=True)
        )


def gradients_float64(model: torch.nn.Module, design: Design, probe: Probe) -> list[torch.Tensor]:
    """Gradient of ``design``'s mean loss on the probe rows with respect to every weight of
    ``model``, evaluated on float64 copies of the weights (the model is left untouched)."""
    weights = {
        name: parameter.detach().to("cpu", torch.float64).requires_grad_(True)
        for name, parameter in model.named_parameters()
    }
    logits = torch.func.functional_call(model, weights, (probe.features.double(),))
    targets = design.encode_targets(probe.targets, probe.n_classes)
    if targets.is_floating_point():
        targets = targets.double()
    loss = design.loss_from_logits(logits, targets)
    return list(torch.autograd.grad(loss, list(weights.values())))


def record_gradient_pair(
    agreement: Agreement,
    model: torch.nn.Module,
    gradients: dict[str, list[torch.Tensor]],
    probe: Probe,
    epoch: int,
) -> None:
    """The pair's relative float64 gradient difference at ``model``'s weights (the first
    design's after ``epoch``); ``gradients`` caches each design's gradient at those weights."""
    for name in (agreement.first, agreement.second):
        if name not in gradients:
            design = get_design(name).smoothed(probe.label_smoothing)
            gradients[name] = gradients_float64(model, design, probe)
    reference, other = gradients[agreement.first], gradients[agreement.second]
    scale = max(float(gradient.abs().max()) for gradient in reference)
    difference = max(float((a - b).abs().max()) for a, b in zip(reference, other, strict=True))
    agreement.gradient_diff.append(difference / scale if scale > 0 else difference)
    agreement.gradient_epochs.append(epoch)


class AgreementProbe(Callback):
    """The training loop's callback that fills :class:`Agreement` records while the designs
    train: after every epoch each pair's max |ΔW| (one host sync for all pairs) and loss
    difference; after the first, every ``probe_every``-th and each pair's last epoch the float64
    gradient probe at the first design's weights.

    Args:
        agreements: from :func:`agreement_plan` (filled in place).
        members: design name → the loop's member position of that design (the probed seed).
        probe, probe_every: from :func:`agreement_plan`.
    """

    def __init__(
        self,
        agreements: list[Agreement],
        members: dict[str, int],
        probe: Probe,
        probe_every: int,
    ) -> None:
        self.pairs = [
            (agreement, members[agreement.first], members[agreement.second])
            for agreement in agreements
        ]
        self.probe = probe
        self.probe_every = probe_every
        self.watched = False  # the backend reports the pairs' differences (on_train_begin)
        self.seen = 0  # epochs recorded

    def on_train_begin(self, loop: FitLoop) -> None:
        """Ask the backend for each pair's max |ΔW| after every epoch of a call (then the loop
        may run several epochs per call); a backend without ``watch`` is asked after each."""
        watch = getattr(loop.backend, "watch", None)
        self.watched = bool(watch([(i, j) for _, i, j in self.pairs])) if watch else False
        self.seen = loop.epoch

    @property
    def per_epoch(self) -> bool:  # type: ignore[override]
        return not self.watched

    def next_needed_epoch(self, loop: FitLoop) -> int | None:
        """The next epoch of a gradient probe (the first, every ``probe_every``-th, the last)."""
        if not self.watched:
            return loop.epoch + 1
        following = (loop.epoch // self.probe_every + 1) * self.probe_every
        return min(following, loop.epochs) if loop.epoch >= 1 else 1

    def on_epoch_end(self, loop: FitLoop) -> None:
        first, self.seen = self.seen, loop.epoch
        watched = loop.extras.get("pair_weight_diff") if self.watched else None
        for epoch in range(first + 1, loop.epoch + 1):
            column = None if watched is None else watched[:, epoch - first - 1].tolist()
            self._record_epoch(loop, epoch, column)

    def _record_epoch(self, loop: FitLoop, epoch: int, watched: list[float] | None) -> None:
        """Epoch ``epoch``'s weight and loss differences; the gradient probe when due (only at
        the call's last epoch, where the members' weights are)."""
        epochs_run = loop.epochs_run
        live = [
            (k, a, i, j)
            for k, (a, i, j) in enumerate(self.pairs)
            if epoch <= min(epochs_run[i], epochs_run[j])
        ]
        if not live:
            return
        backend = loop.backend
        if watched is None:
            weight_diffs = backend.max_weight_differences([(i, j) for _, _, i, j in live])
        else:
            weight_diffs = [watched[k] for k, _, _, _ in live]
        # Per member whose weights the probe ran at: its network and each design's gradient.
        probed: dict[int, tuple[torch.nn.Module, dict[str, list[torch.Tensor]]]] = {}
        for (_, agreement, i, j), weight_diff in zip(live, weight_diffs, strict=True):
            agreement.weight_diff.append(float(weight_diff))
            if agreement.loss_diff is not None:
                agreement.loss_diff.append(
                    max(
                        abs(float(history[i, epoch - 1] - history[j, epoch - 1]))
                        for history in (loop.histories["train_loss"], loop.histories["val_loss"])
                    )
                )
            last = epoch in (epochs_run[i], epochs_run[j])
            due = epoch == 1 or epoch % self.probe_every == 0 or last
            if due and epoch == loop.epoch:
                if i not in probed:
                    probed[i] = (backend.member_model(i), {})
                record_gradient_pair(agreement, *probed[i], self.probe, epoch)


def noise_floor(
    trained: torch.nn.Module,
    train_features: torch.Tensor,
    seed: int,
    train_again: Callable[[torch.Tensor], torch.nn.Module],
) -> float:
    """max |W_A - W_A'| at the end: ``trained`` is design A of the comparison; A' is
    ``train_again(features)``, design A trained again with the same seed and initial weights on
    the training features moved by one float32 ulp (the inputs differ at every step, as two
    kernels' rounding does): how far rounding alone moves the weights on this problem."""
    nudged_features = as_dense(train_features).clone()
    perturb_one_ulp([nudged_features], seed)
    return max_weight_diff(trained, train_again(nudged_features))
