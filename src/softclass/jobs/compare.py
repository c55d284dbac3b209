"""The main job: train the same network with every design on the same data, split and seed.

:func:`softclass.data.prepare.prepare_table` turns a table into training and validation tensors;
:func:`compare` trains every design × seed model at once in the batched engine
(:func:`softclass.training.ensemble.train_ensemble`: compiled loops for small layers, batched torch
above), each model once, comparing the first seed's designs' weights and losses after every
epoch; then it measures each design on the validation rows and, when asked, writes models,
history, report and plots to a directory.

Several seeds (seed, seed + 1, ...) each have their own batch order and initial weights; the
split stays the one of the configured seed. Every design × seed model is trained once, in one
batched run (:mod:`softclass.training.ensemble`); the first seed's designs are compared after
every epoch from the engine's weights, and with several seeds the report adds each design's
mean ± 95 % interval over the seeds and paired comparisons (:mod:`softclass.evaluation.stats`).
What the batched engine refuses (bf16, torchrun, ``backend="autograd"``) trains in lockstep
autograd :class:`Trainer` runs, one seed after the other.

Designs are set side by side only on common metrics (log loss, accuracy, Brier score and ECE of
the predicted probabilities, on the validation rows); a design's own training loss is reported as
such and never compared across designs. With early stopping the training rows are split once
more: the epoch is chosen on *stopping* rows, and the reported numbers come from validation rows
that neither trained the weights nor chose the epoch (three-way split).

Are A and B (and A and D) the same computation? Trained in float32, their weights drift apart by
rounding, and over many steps that drift can grow large. :class:`Agreement` therefore decides on
the two designs' loss gradients at the *same* weights in float64, after a sample of the epochs
(equal to ~1e-15 for the same loss, far apart for another one), and shows the float32 drift
beside the rounding noise floor of the same run (design A trained again from the same initial
weights with its inputs one float32 ulp away), measured when the drift exceeds 1e-3.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from softclass.data import stratified_split
from softclass.data.prepare import PreparedData
from softclass.data.prepare import prepare_table as prepare_table  # the CLI's import path
from softclass.errors import ConfigError, DataError
from softclass.evaluation import metrics
from softclass.evaluation.report import RunContext
from softclass.evaluation.stats import COMMON_METRICS, compare_designs, mean_interval
from softclass.io import atomic_write_json, claim_output_directory
from softclass.jobs.defaults import Defaults
from softclass.jobs.destination import check_output_directory, replace_run, unit_fingerprint
from softclass.jobs.report import write_report
from softclass.jobs.store import check_finite_recipe, save_model
from softclass.mlp.designs import DESIGNS, Design, agreement_pairs, get_design
from softclass.mlp.model import MLPConfig
from softclass.training.distributed import DistContext, barrier
from softclass.training.engine import check_batched_divergence
from softclass.training.ensemble import design_seed_grid, train_ensemble
from softclass.training.trainer import (
    EpochRecord,
    History,
    ProgressCallback,
    ProgressEvent,
    TrainConfig,
    Trainer,
    TrainResult,
    json_number,
    resolve_device,
)

MAX_SEEDS = 1000  # seeds of one comparison (each trains every design once more)

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
# Share of the training rows held out to choose the epoch when early stopping (three-way split).
STOPPING_FRACTION = 0.1


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
            far
            rounding alone moves the weights on this problem. Measured only when this pair is the
            same loss quantity and drifts beyond FLOAT_TOLERANCE; None otherwise.
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


@dataclass(frozen=True)
class DesignRun:
    """One design trained with one seed, and its final measurements."""

    result: TrainResult
    seed: int
    metrics: dict[str, float]  # final numbers, see :func:`measure`
    confusion: torch.Tensor  # int64 (C, C) on the validation rows
    calibration: metrics.Calibration  # on the validation rows

    @property
    def design(self) -> str:
        return self.result.design.name

    @property
    def history(self) -> History:
        return self.result.history


# Each final metric of a run: its label, the rows it is measured on and whether it is common to
# every design (computed from the predicted probabilities, so designs may be compared on it) or a
# design's own training loss (cross entropy for A/B/D, squared error for C: never compared).
METRICS: dict[str, dict[str, str]] = {
    "validation_accuracy": {"label": "accuracy", "rows": "validation", "kind": "common"},
    "validation_log_loss": {"label": "log loss", "rows": "validation", "kind": "common"},
    "validation_brier": {"label": "Brier score", "rows": "validation", "kind": "common"},
    "validation_ece": {"label": "ECE", "rows": "validation", "kind": "common"},
    "train_accuracy": {"label": "accuracy", "rows": "training", "kind": "common"},
    "train_loss": {"label": "own loss", "rows": "training", "kind": "own loss"},
    "validation_loss": {"label": "own loss", "rows": "validation", "kind": "own loss"},
    "epochs": {"label": "epochs trained", "rows": "", "kind": "run"},
    "seconds": {"label": "seconds of training", "rows": "", "kind": "run"},
}
METRIC_NAMES = tuple(METRICS)

# What each set of rows is used for, as report.json states it.
ROW_ROLES = {
    "train": "fit the weights; the normalisation recipe was fitted on them (and on the stopping "
    "rows, which are held out of the training rows afterwards)",
    "stopping": "choose the epoch when early stopping (--patience); never reported as a result",
    "validation": "every reported validation number; never trained on, never chose the epoch",
}


@dataclass(frozen=True)
class ComparisonResult:
    """Everything :func:`compare` measured."""

    designs: tuple[str, ...]
    seeds: tuple[int, ...]
    runs: tuple[DesignRun, ...]
    agreements: tuple[Agreement, ...]
    class_names: tuple[str, ...]
    model_config: MLPConfig
    config: TrainConfig
    n_train: int
    n_validation: int
    out_dir: Path | None = None
    # With several seeds from the batched engine: per metric, per design, the per-epoch mean and
    # 95 % band ({"mean", "low", "high"} arrays); None otherwise.
    bands: dict[str, dict[str, dict[str, Any]]] | None = None
    n_stopping: int = 0  # rows that chose the epoch (early stopping), apart from both others
    defaults: Defaults | None = None  # the default set the options came from, when known

    @property
    def history_rows(self) -> str:
        """Which rows the per-epoch validation numbers of the histories come from."""
        return "stopping" if self.n_stopping else "validation"

    def runs_of(self, design: str) -> list[DesignRun]:
        return [run for run in self.runs if run.design == design]

    def summary(self, design: str) -> dict[str, float]:
        """The metrics of ``design`` averaged over the seeds."""
        runs = self.runs_of(design)
        return {name: sum(run.metrics[name] for run in runs) / len(runs) for name in METRIC_NAMES}

    def seed_statistics(self, confidence: float = 0.95) -> dict[str, Any] | None:
        """Over the seeds (2 or more), on the common metrics only: per design the mean and
        interval, and every pair of designs compared seed by seed; None with one seed.

        A design's own loss gets its mean and interval per design (``own_loss``) but is never
        paired across designs. A metric with a non-finite value (a diverged run) is left out.
        """
        if len(self.seeds) < 2:
            return None
        summary: dict[str, dict[str, Any]] = {}
        pairs: dict[str, list[dict[str, Any]]] = {}
        for metric in COMMON_METRICS:
            values = {name: self._per_seed(name, metric) for name in self.designs}
            if not all(math.isfinite(value) for row in values.values() for value in row):
                continue
            summary[metric] = {
                name: _json_floats(mean_interval(row, confidence).to_dict())
                for name, row in values.items()
            }
            if len(self.designs) > 1:
                pairs[metric] = [
                    _json_floats(pair.to_dict())
                    for pair in compare_designs(values, metric, confidence)
                ]
        own_losses = {name: self._per_seed(name, "validation_loss") for name in self.designs}
        own_loss = {
            name: {
                "loss": get_design(name).loss_name,
                **_json_floats(mean_interval(row, confidence).to_dict()),
            }
            for name, row in own_losses.items()
            if all(math.isfinite(value) for value in row)
        }
        return {
            "confidence": confidence,
            "rows": "validation",
            "summary": summary,
            "pairs": pairs,
            "own_loss": own_loss,
        }

    def _per_seed(self, design: str, metric: str) -> list[float]:
        return [run.metrics[metric] for run in sorted(self.runs_of(design), key=_seed_of)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (``softclass compare --json`` prints it)."""
        return {
            "seed_statistics": self.seed_statistics(),
            "designs": {
                name: {
                    "title": get_design(name).title,
                    "loss": get_design(name).loss_name,
                    "mean_over_seeds": _json_numbers(self.summary(name)),
                    "per_seed": [
                        {
                            "seed": run.seed,
                            **_json_numbers(run.metrics),
                            "history": run.history.to_dict(),
                            "confusion_matrix": run.confusion.tolist(),
                            "calibration": run.calibration.to_dict(),
                        }
                        for run in self.runs_of(name)
                    ],
                }
                for name in self.designs
            },
            "metrics": METRICS,
            "history_rows": self.history_rows,
            "agreement": [agreement.to_dict() for agreement in self.agreements],
            "seeds": list(self.seeds),
            "classes": list(self.class_names),
            "rows": {
                "train": self.n_train,
                "stopping": self.n_stopping,
                "validation": self.n_validation,
            },
            "row_roles": {
                role: text
                for role, text in ROW_ROLES.items()
                if role != "stopping" or self.n_stopping
            },
            "model_config": self.model_config.to_dict(),
            "train_config": self.config.to_dict(),
            "defaults": None if self.defaults is None else self.defaults.to_dict(),
            "out_dir": None if self.out_dir is None else str(self.out_dir),
        }


def _json_numbers(numbers: dict[str, float]) -> dict[str, float | None]:
    """NaN or infinite numbers (a diverged run) become None, which JSON can hold."""
    return {name: json_number(value) for name, value in numbers.items()}


def _json_floats(record: dict[str, Any]) -> dict[str, Any]:
    """The floats of ``record`` made JSON-safe (infinite t statistic, NaN → None); the rest kept."""
    return {
        key: json_number(value) if isinstance(value, float) else value
        for key, value in record.items()
    }


def parse_designs(designs: str | Sequence[str] | None) -> tuple[str, ...]:
    """ "ABCD", "a,c" or ["A", "B"] → ("A", "B", ...), in registry order without repeats;
    None: every registered design."""
    if designs is None:
        return tuple(DESIGNS)
    letters = [letter for letter in "".join(designs).replace(",", "").upper() if letter != " "]
    if not letters:
        raise ConfigError(f"no design given: expected letters from {''.join(DESIGNS)}")
    names = {get_design(letter).name for letter in letters}
    return tuple(name for name in DESIGNS if name in names)


def compare(
    data: PreparedData,
    designs: str | Sequence[str] | None = None,
    config: TrainConfig | None = None,
    *,
    hidden: Sequence[int] = (7,),
    activation: str = "tanh",
    seeds: int = 1,
    out_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    distributed: DistContext | None = None,
    stopping_fraction: float = STOPPING_FRACTION,
    defaults: Defaults | None = None,
    context: RunContext | None = None,
    overwrite: bool = False,
) -> ComparisonResult:
    """Train ``designs`` on ``data`` with the same network, split and seed(s); measure; save.

    Args:
        data: from :func:`prepare_table` (or built from tensors); needs validation rows.
        designs: which designs, e.g. "ABCD" or "AB"; None: every registered design.
        config: training options (``config.seed`` is the first seed).
        hidden, activation: the MLP's hidden layers (default: the seed's 4-7-3 tanh).
        seeds: how many seeds to run (``config.seed``, ``config.seed + 1``, ...).
        out_dir: where to write models, history.json, report.json, report.html and PNG plots;
            None: nothing.
        progress: called after every epoch of every run.
        distributed: this process's place in a torchrun run; every design then trains data
            parallel (one seed after another: the batched seed engine is single-process) and
            rank 0 alone writes ``out_dir``.
        stopping_fraction: with early stopping (``config.patience``), the share of each class
            of the training rows held out to choose the epoch; the validation rows stay apart
            for the reported numbers. Unused without early stopping.
        defaults: the default set the options came from; recorded in the report.
        context: the table's name and the command, for report.html.
        overwrite: replace the comparison already in ``out_dir`` (else refused). The run's
            files replace the earlier ones in one swap at the end
            (:func:`softclass.jobs.destination.replace_run`).

    Raises:
        ConfigError: bad designs, seeds, stopping fraction, or data without validation rows;
            ``out_dir`` holds another comparison and ``overwrite`` is False, or is no place for
            one (:func:`softclass.jobs.destination.check_output_directory`).
        OutputBusyError: another run is writing ``out_dir``.
        OutputError: ``out_dir`` is a file or not writable (checked before training), or the
            device fills up while writing.
        TrainingDiverged: a design's loss or weights became NaN or infinite, or the loss
            exploded (:func:`softclass.training.trainer.divergence`).
    """
    distributed = DistContext() if distributed is None else distributed
    if out_dir is None or not distributed.is_main:
        claim = contextlib.nullcontext()
    else:
        if data.recipe is not None:
            check_finite_recipe(data.recipe)
        out_dir = check_output_directory(out_dir, "compare", overwrite=overwrite)
        claim = claim_output_directory(out_dir)
    with claim:
        return _compare(
            data,
            designs,
            config,
            hidden,
            activation,
            seeds,
            out_dir,
            progress,
            distributed,
            stopping_fraction,
            defaults,
            context,
        )


def _compare(
    data: PreparedData,
    designs: str | Sequence[str],
    config: TrainConfig | None,
    hidden: Sequence[int],
    activation: str,
    seeds: int,
    out_dir: str | Path | None,
    progress: ProgressCallback | None,
    distributed: DistContext,
    stopping_fraction: float,
    defaults: Defaults | None,
    context: RunContext | None,
) -> ComparisonResult:
    config = TrainConfig() if config is None else config
    names = parse_designs(designs)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"seeds={seeds!r} must be an integer from 1 to {MAX_SEEDS:,}")
    if data.validation_features is None or data.validation_targets is None:
        raise ConfigError("compare needs validation rows: set validation_fraction > 0")
    stopping = None
    if config.patience is not None:
        data, stopping = split_stopping_rows(data, stopping_fraction, config.seed)
    model_config = MLPConfig(data.n_features, data.n_classes, tuple(hidden), activation)
    seed_values = tuple(config.seed + offset for offset in range(seeds))
    runs: list[DesignRun] = []
    agreements: list[Agreement] = []
    bands = None
    distributed = DistContext() if distributed is None else distributed
    if _engine_fits(config, distributed):
        # Every design × seed model trained once, in one batched run; the first seed's designs
        # are compared after every epoch from the engine's own weights.
        runs, agreements, bands = _engine_compare(
            data, names, model_config, config, seed_values, progress, stopping
        )
    else:
        for seed in seed_values:
            seed_runs, seed_agreements = _compare_one_seed(
                data,
                names,
                model_config,
                replace(config, seed=seed),
                progress,
                seeds > 1,
                distributed,
                stopping,
            )
            runs.extend(seed_runs)
            agreements.extend(seed_agreements)
    result = ComparisonResult(
        designs=names,
        seeds=seed_values,
        runs=tuple(runs),
        agreements=tuple(agreements),
        class_names=data.class_names,
        model_config=model_config,
        config=config,
        n_train=int(data.train_features.shape[0]),
        n_validation=int(data.validation_features.shape[0]),
        out_dir=None if out_dir is None else Path(out_dir),
        bands=bands,
        n_stopping=0 if stopping is None else int(stopping[0].shape[0]),
        defaults=defaults,
    )
    if out_dir is not None and distributed.is_main:
        with replace_run(out_dir) as staging:  # the whole run replaces the earlier one at once
            write_outputs(result, data, staging, context)
    barrier(distributed)
    return result


def split_stopping_rows(
    data: PreparedData, fraction: float, seed: int
) -> tuple[PreparedData, tuple[torch.Tensor, torch.Tensor]]:
    """Hold out ``fraction`` of each class of the training rows to choose the epoch.

    Returns:
        ``(data with the remaining training rows, (stopping features (S, F) float32, stopping
        targets (S,) int64))``; the validation rows are untouched.

    Raises:
        ConfigError: ``fraction`` is not strictly between 0 and 1 (named as --stopping).
        DataError: no training row is left to hold out (every class has a single row).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ConfigError(f"--stopping {fraction!r}: expected a number strictly between 0 and 1")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(
            f"--stopping {fraction!r}: early stopping needs a share of the training rows "
            "strictly between 0 and 1 to choose the epoch on"
        )
    fit_rows, stopping_rows = stratified_split(data.train_targets, fraction, seed)
    if stopping_rows.numel() == 0:
        raise DataError(
            f"no rows left to choose the epoch on: {data.train_targets.numel()} training rows, "
            "one per class; use more rows or leave --patience unset"
        )
    stopping = (data.train_features[stopping_rows], data.train_targets[stopping_rows])
    fitted = replace(
        data,
        train_features=data.train_features[fit_rows],
        train_targets=data.train_targets[fit_rows],
    )
    return fitted, stopping


def _seed_of(run: DesignRun) -> int:
    return run.seed


def _engine_fits(config: TrainConfig, distributed: DistContext) -> bool:
    """Whether the batched engine (compiled or torch backend) trains this comparison: one
    process, fp32, and no backend forced to "autograd" (the lockstep Trainers)."""
    return not distributed.enabled and config.precision == "fp32" and config.backend != "autograd"


def _engine_compare(
    data: PreparedData,
    names: tuple[str, ...],
    model_config: MLPConfig,
    config: TrainConfig,
    seed_values: tuple[int, ...],
    progress: ProgressCallback | None,
    stopping: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[list[DesignRun], list[Agreement], dict[str, dict[str, dict[str, Any]]] | None]:
    """Every design × seed in one :func:`softclass.training.ensemble.train_ensemble` run (each
    model trained once), measured like a :class:`Trainer` run; the first seed's pairs of designs
    compared after every epoch (:class:`Agreement`); with several seeds, the per-epoch bands of
    the validation loss and accuracy.

    The engine watches ``stopping`` rows when early stopping, else the validation rows; its
    per-epoch validation numbers come from those rows.
    """
    members = design_seed_grid(names, seed_values)
    index = {(member.design, member.seed): m for m, member in enumerate(members)}
    seed = seed_values[0]
    watched = (data.validation_features, data.validation_targets) if stopping is None else stopping
    agreements, probe, probe_every = _agreement_plan(names, seed, data, config.epochs)
    labels = {
        name: name if len(seed_values) == 1 else f"{name} × {len(seed_values)} seeds"
        for name in names
    }

    def on_epoch(epoch: int, trainer, histories, epochs_run: list[int]) -> None:
        # Runs after every epoch; member m ran this epoch while epoch <= epochs_run[m].
        if progress is not None:
            for name in names:
                m = index[(name, seed)]
                if epoch <= epochs_run[m]:
                    record = _epoch_record(histories, m, epoch, 0.0)
                    finished = epoch == epochs_run[m]
                    progress(ProgressEvent(labels[name], epoch, config.epochs, record, finished))
        pairs = [
            (agreement, index[(agreement.first, seed)], index[(agreement.second, seed)])
            for agreement in agreements
        ]
        pairs = [(a, i, j) for a, i, j in pairs if epoch <= min(epochs_run[i], epochs_run[j])]
        if not pairs:
            return
        with torch.no_grad():  # every pair's max |ΔW| at once: one host sync per epoch
            first = torch.tensor([i for _, i, _ in pairs])
            second = torch.tensor([j for _, _, j in pairs])
            differences = torch.stack(
                [
                    (tensor[first] - tensor[second]).abs().flatten(1).amax(1)
                    for tensor in trainer.network.parameters()  # stacked: (M, ...) each
                ]
            )
            weight_diffs = differences.amax(0).tolist()
        # Per member whose weights the probe ran at: its network and each design's gradient.
        probed: dict[int, tuple[torch.nn.Module, dict[str, list[torch.Tensor]]]] = {}
        for (agreement, i, j), weight_diff in zip(pairs, weight_diffs, strict=True):
            agreement.weight_diff.append(weight_diff)
            if agreement.loss_diff is not None:
                agreement.loss_diff.append(
                    max(
                        abs(float(histories[name][i, epoch - 1] - histories[name][j, epoch - 1]))
                        for name in ("train_loss", "val_loss")
                    )
                )
            last = epoch in (epochs_run[i], epochs_run[j])
            if epoch == 1 or epoch % probe_every == 0 or last:
                if i not in probed:
                    probed[i] = (trainer.network.to_mlp(i), {})
                _record_gradient_pair(agreement, *probed[i], probe, epoch)

    started = time.perf_counter()
    result = train_ensemble(
        model_config,
        members,
        data.train_features,
        data.train_targets,
        config,
        *watched,
        device=resolve_device(config.device),
        on_epoch=on_epoch,
    )
    check_batched_divergence(result, model_config, config)
    # Wall time per epoch, shared out over the models trained together.
    seconds = (time.perf_counter() - started) / (max(result.epochs_run) * len(members))
    runs = []
    for m, member in enumerate(result.members):
        ran = result.epochs_run[m]
        columns = [getattr(result, name)[m, :ran].tolist() for name in _HISTORY_NAMES]
        history = History(
            [
                EpochRecord(epoch, *values, seconds)
                for epoch, values in enumerate(zip(*columns, strict=True), start=1)
            ],
            None if result.best_epoch is None else result.best_epoch[m],
            result.epochs_run[m] < config.epochs,
        )
        model = result.model(m).float().eval().requires_grad_(False)
        trained = TrainResult(
            model,
            get_design(member.design),
            model_config,
            replace(config, seed=member.seed),
            history,
        )
        runs.append(measure(trained, data))
    if any(agreement.needs_noise_floor for agreement in agreements):
        first = next(run for run in runs if run.design == "A" and run.seed == seed)
        # The same backend as the comparison (the choice is per problem shape, and A alone is
        # another shape): only the inputs may differ.
        pinned = replace(config, backend=result.backend)
        floor = _engine_noise_floor(first.result.model, data, model_config, pinned, seed, watched)
        for agreement in agreements:
            if agreement.needs_noise_floor:
                agreement.noise_floor = floor
    bands = (
        {metric: result.bands(metric, names) for metric in ("val_loss", "val_accuracy")}
        if len(seed_values) > 1
        else None
    )
    return runs, agreements, bands


def _epoch_record(
    histories: dict[str, torch.Tensor], member: int, epoch: int, seconds: float
) -> EpochRecord:
    """Member ``member``'s numbers of 1-based ``epoch`` from the engine's ``(M, epochs)``
    histories."""
    return EpochRecord(
        epoch, *(float(histories[name][member, epoch - 1]) for name in _HISTORY_NAMES), seconds
    )


def _engine_noise_floor(
    trained: torch.nn.Module,
    data: PreparedData,
    model_config: MLPConfig,
    config: TrainConfig,
    seed: int,
    watched: tuple[torch.Tensor | None, torch.Tensor | None],
) -> float:
    """max |W_A - W_A'| at the end: ``trained`` is design A of the comparison; A' is design A
    trained again by the engine with the same seed and its training features moved by one
    float32 ulp (the inputs differ at every step, as two kernels' rounding does)."""
    nudged_features = data.train_features.clone()
    _perturb_one_ulp([nudged_features], seed)
    again = train_ensemble(
        model_config,
        design_seed_grid(("A",), (seed,)),
        nudged_features,
        data.train_targets,
        replace(config, seed=seed),
        *watched,
        device=resolve_device(config.device),
    )
    return _max_weight_diff(trained, again.model(0).float())


# The engine's history names, in EpochRecord's order (train loss and accuracy, validation ones).
_HISTORY_NAMES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def _compare_one_seed(
    data: PreparedData,
    names: tuple[str, ...],
    model_config: MLPConfig,
    config: TrainConfig,
    progress: ProgressCallback | None,
    label_seed: bool,
    distributed: DistContext,
    stopping: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[list[DesignRun], list[Agreement]]:
    """Train every design with one seed in lockstep, comparing them after every epoch.

    The trainers watch ``stopping`` rows when early stopping, else the validation rows. When a
    pair with the same gradients drifts beyond FLOAT_TOLERANCE, the rounding noise floor is
    measured: design A trained once more with its inputs one float32 ulp away.
    """
    watched = (data.validation_features, data.validation_targets) if stopping is None else stopping
    trainers = {
        name: Trainer(
            get_design(name),
            model_config,
            config,
            progress=progress,
            label=f"{name} seed {config.seed}" if label_seed else name,
            distributed=distributed,
        )
        for name in names
    }
    agreements, probe, probe_every = _agreement_plan(names, config.seed, data, config.epochs)
    for trainer in trainers.values():
        trainer.initialize(data.train_features, data.train_targets, *watched)
    while not all(trainer.finished_ for trainer in trainers.values()):
        ran = [name for name, trainer in trainers.items() if not trainer.finished_]
        for name in ran:
            trainers[name].run_epoch()
        gradients: dict[str, list[torch.Tensor]] = {}
        for agreement in agreements:
            if agreement.first in ran and agreement.second in ran:
                first, second = trainers[agreement.first], trainers[agreement.second]
                _record_agreement(agreement, first, second)
                epoch = first.history_.epochs
                if epoch == 1 or epoch % probe_every == 0 or first.finished_ or second.finished_:
                    _record_gradient_pair(agreement, first.model_, gradients, probe, epoch)
    if "A" in trainers and any(agreement.needs_noise_floor for agreement in agreements):
        floor = _noise_floor(
            trainers["A"].model_, data, model_config, config, watched, distributed, progress
        )
        for agreement in agreements:
            if agreement.needs_noise_floor:
                agreement.noise_floor = floor
    runs = []
    for trainer in trainers.values():
        result = trainer.finish()
        runs.append(measure(result, data))
    return runs, agreements


def _agreement_plan(
    names: tuple[str, ...], seed: int, data: PreparedData, epochs: int
) -> tuple[list[Agreement], _Probe, int]:
    """The pairs of ``names`` to compare (empty records), the rows of the float64 gradient probe
    (the first training rows, at most PROBE_ROWS) and every how many epochs it runs."""
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
    probe = _Probe(data.train_features[:rows], data.train_targets[:rows], data.n_classes)
    return agreements, probe, max(1, epochs // PROBE_CHECKS)


@dataclass(frozen=True)
class _Probe:
    """The rows the float64 gradient check runs on: features (P, F), targets (P,)."""

    features: torch.Tensor
    targets: torch.Tensor
    n_classes: int


def _noise_floor(
    trained: torch.nn.Module,
    data: PreparedData,
    model_config: MLPConfig,
    config: TrainConfig,
    watched: tuple[torch.Tensor | None, torch.Tensor | None],
    distributed: DistContext,
    progress: ProgressCallback | None = None,
) -> float:
    """max |W_A - W_A'| after the last epoch: ``trained`` is design A as the lockstep run left
    it; A' is design A trained again from the same initial weights with its training features
    moved by one float32 ulp (the features differ at every step, as two kernels' rounding does;
    the same rule as the engine's :func:`_engine_noise_floor`)."""
    nudged_features = data.train_features.clone()
    _perturb_one_ulp([nudged_features], config.seed)
    nudged = Trainer(
        get_design("A"),
        model_config,
        config,
        progress=progress,
        label=f"A (noise floor, seed {config.seed})",
        distributed=distributed,
    )
    nudged.initialize(nudged_features, data.train_targets, *watched)
    while not nudged.finished_:
        nudged.run_epoch()
    return _max_weight_diff(trained, nudged.model_)


def _perturb_one_ulp(tensors: list[torch.Tensor], seed: int) -> None:
    """Move every value of float32 ``tensors`` (in place) by about one ulp, |x|·eps, up or down
    (a seeded random sign per value)."""
    generator = torch.Generator().manual_seed(seed)
    epsilon = torch.finfo(torch.float32).eps
    with torch.no_grad():
        for tensor in tensors:
            signs = torch.randint(0, 2, tensor.shape, generator=generator) * 2 - 1
            step = tensor.detach().abs().cpu() * epsilon * signs
            tensor.add_(step.to(tensor.device, tensor.dtype))


def _max_weight_diff(first: torch.nn.Module, second: torch.nn.Module) -> float:
    with torch.no_grad():
        return max(
            float((a - b).abs().max())
            for a, b in zip(first.parameters(), second.parameters(), strict=True)
        )


def _gradients_float64(model: torch.nn.Module, design: Design, probe: _Probe) -> list[torch.Tensor]:
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


def _record_agreement(agreement: Agreement, first: Trainer, second: Trainer) -> None:
    """Weight and loss differences of the pair after an epoch."""
    agreement.weight_diff.append(_max_weight_diff(first.model_, second.model_))
    if agreement.loss_diff is not None:
        last_first, last_second = first.history_.records[-1], second.history_.records[-1]
        agreement.loss_diff.append(
            max(
                abs(last_first.train_loss - last_second.train_loss),
                abs(last_first.validation_loss - last_second.validation_loss),
            )
        )


def _record_gradient_pair(
    agreement: Agreement,
    model: torch.nn.Module,
    gradients: dict[str, list[torch.Tensor]],
    probe: _Probe,
    epoch: int,
) -> None:
    """The pair's relative float64 gradient difference at ``model``'s weights (the first
    design's after ``epoch``); ``gradients`` caches each design's gradient at those weights."""
    for name in (agreement.first, agreement.second):
        if name not in gradients:
            gradients[name] = _gradients_float64(model, get_design(name), probe)
    reference, other = gradients[agreement.first], gradients[agreement.second]
    scale = max(float(gradient.abs().max()) for gradient in reference)
    difference = max(float((a - b).abs().max()) for a, b in zip(reference, other, strict=True))
    agreement.gradient_diff.append(difference / scale if scale > 0 else difference)
    agreement.gradient_epochs.append(epoch)


@torch.no_grad()
def measure(result: TrainResult, data: PreparedData) -> DesignRun:
    """Final numbers of a trained model: its own loss and accuracy on both parts, and on the
    validation rows log loss, Brier score and calibration (ECE) of its probabilities."""
    design, model = result.design, result.model
    numbers: dict[str, float] = {}
    for part, features, targets in (
        ("train", data.train_features, data.train_targets),
        ("validation", data.validation_features, data.validation_targets),
    ):
        logits = model(features)
        encoded = design.encode_targets(targets, data.n_classes)
        numbers[f"{part}_loss"] = float(design.loss_from_logits(logits, encoded))
        numbers[f"{part}_accuracy"] = float(metrics.accuracy(logits, targets))
    logits = model(data.validation_features)
    probs = design.predict_proba(logits)
    reliability = metrics.calibration(probs, data.validation_targets)
    numbers["validation_log_loss"] = float(
        metrics.log_loss(design.predict_log_proba(logits), data.validation_targets)
    )
    numbers["validation_brier"] = float(metrics.brier_score(probs, data.validation_targets))
    numbers["validation_ece"] = float(reliability.ece)
    numbers["epochs"] = float(result.history.epochs)
    numbers["seconds"] = result.history.seconds
    confusion = metrics.confusion_matrix(
        data.validation_targets, probs.argmax(dim=1), data.n_classes
    )
    return DesignRun(result, result.config.seed, numbers, confusion, reliability)


def describe_written(out_dir: str | Path, before: int | None = None) -> str:
    """One line on what a stopped ``compare`` left in ``out_dir``, read from the files.

    ``before``: :func:`softclass.jobs.destination.unit_fingerprint` of ``out_dir`` taken before
    the run (None: no run was there); the run's files are swapped in together, so a changed
    fingerprint means they were all saved. For the command line's message; never raises.
    """
    out_dir = Path(out_dir)
    now = unit_fingerprint(out_dir)
    if now is not None and now != before:
        return f"this run's models, report and figures were saved in {out_dir} before it stopped"
    if now is not None:
        return f"the comparison saved in {out_dir} before this run is untouched"
    return "nothing was kept (compare keeps no checkpoints: run it again)"


def write_outputs(
    result: ComparisonResult,
    data: PreparedData,
    out_dir: Path,
    context: RunContext | None = None,
) -> None:
    """Models of the first seed (when a recipe is known), history.json, report.json, report.html
    and plots.

    Each model directory is replaced as one unit and each file atomically: a run stopped while
    writing leaves every file complete (the new or the earlier version), never half of one.
    """
    recipe = data.recipe
    first_runs = {run.design: run for run in result.runs if run.seed == result.seeds[0]}
    if recipe is not None:
        for name, run in first_runs.items():
            save_model(
                out_dir / "models" / name,
                run.result.model,
                run.result.design,
                recipe,
                run.result.config,
                run.history.summary(),
            )
    report = result.to_dict()  # holds every run's history: history.json reuses them
    atomic_write_json(
        out_dir / "history.json",
        {
            name: [
                {"seed": run["seed"], **run["history"]}
                for run in report["designs"][name]["per_seed"]
            ]
            for name in result.designs
        },
    )
    atomic_write_json(out_dir / "report.json", report)
    write_report(result, data, out_dir, context, summary=report)
