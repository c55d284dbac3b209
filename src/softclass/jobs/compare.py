"""The main job: train the same network with designs A–D on the same data, split and seed.

:func:`prepare_table` turns a table into training and validation tensors (the recipe is fitted on
the training rows only, so validation rows never leak into the normalisation); :func:`compare`
trains one :class:`~softclass.training.trainer.Trainer` per design in lockstep, epoch by epoch, so
that after
every epoch the weights and losses of A and B (and D, and C) can be compared directly; then it
measures each design on the validation rows and, when asked, writes models, history, report and
plots to a directory.

Several seeds (seed, seed + 1, ...) each have their own batch order and initial weights; the
split stays the one of the configured seed. With more than one seed every design × seed model is
trained in one batched run (:mod:`softclass.training.ensemble`, the same models to float
tolerance), the
first seed is also run in lockstep for the weight agreement, and the report adds each design's
mean ± 95 % interval over the seeds and paired comparisons (:mod:`softclass.evaluation.stats`).
Options the
batched engine lacks (early stopping, bf16, weight decay) fall back to one seed after the other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl
import torch

from softclass.data import Recipe, stratified_split
from softclass.errors import ConfigError, DataError
from softclass.evaluation import metrics
from softclass.evaluation.report import RunContext
from softclass.evaluation.stats import mean_interval, paired_comparison
from softclass.io import atomic_write_json
from softclass.jobs.report import write_report
from softclass.jobs.store import save_model
from softclass.mlp.designs import DESIGNS, get_design
from softclass.mlp.model import MLPConfig
from softclass.training.distributed import DistContext, barrier
from softclass.training.ensemble import EnsembleSettings, design_seed_grid, train_ensemble
from softclass.training.trainer import (
    EpochRecord,
    History,
    ProgressCallback,
    TrainConfig,
    Trainer,
    TrainResult,
    json_number,
    resolve_device,
)

# Pairs whose agreement the report shows: A vs B must be identical, D equals A up to rounding,
# C is another loss. Loss differences are only meaningful between the same loss quantity.
AGREEMENT_PAIRS = (("A", "B"), ("A", "D"), ("A", "C"))
_SAME_LOSS_QUANTITY = {("A", "B"), ("A", "D")}
# Weight differences at or below this are reported as "equal to float tolerance": float32
# training of D and A differs by rounding (log of a rounded softmax), which grows slowly.
FLOAT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class PreparedData:
    """Training and validation tensors of one table, and the recipe that made them.

    Attributes:
        train_features: float32 (N, F); train_targets: int64 (N,).
        validation_features: float32 (M, F) or None; validation_targets: int64 (M,) or None.
        class_names: C names, index order.
        recipe: the preprocessing (fitted on the training rows), or None for raw tensors.
        warnings: what the user should hear (ignored columns, dropped rows).
    """

    train_features: torch.Tensor
    train_targets: torch.Tensor
    validation_features: torch.Tensor | None
    validation_targets: torch.Tensor | None
    class_names: tuple[str, ...]
    recipe: Recipe | None = None
    warnings: tuple[str, ...] = ()

    @property
    def n_features(self) -> int:
        return int(self.train_features.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def prepare_table(
    table: pl.DataFrame,
    target: str | None = None,
    *,
    normalization: str = "zscore",
    divisors: dict[str, float] | None = None,
    missing: str = "error",
    validation_fraction: float = 0.2,
    seed: int = 0,
) -> PreparedData:
    """Split a table (stratified by class) and fit the recipe on its training rows.

    Args:
        table: the data, from :func:`softclass.data.read_table`.
        target: the class column (default: the last column).
        normalization, divisors, missing: as :meth:`softclass.data.Recipe.fit`.
        validation_fraction: share of each class held out; 0 for no validation rows.
        seed: seed of the split.

    Raises:
        DataError, ConfigError: as :meth:`Recipe.fit` and :func:`stratified_split`; DataError
            when no row is left for validation (every class has a single row).
    """
    options = {"normalization": normalization, "divisors": divisors, "missing": missing}
    whole = Recipe.fit(table, target, **options)
    prepared = whole.prepare(table)
    if validation_fraction == 0:
        return PreparedData(
            prepared.features,
            prepared.targets,
            None,
            None,
            whole.classes,
            whole,
            prepared.warnings,
        )
    train_positions, validation_positions = stratified_split(
        prepared.targets, validation_fraction, seed
    )
    train_rows = prepared.rows[train_positions]
    validation_rows = prepared.rows[validation_positions]
    if validation_rows.numel() == 0:
        raise DataError(
            f"no validation rows: the table has {table.height} rows; use more rows or "
            "validation_fraction=0"
        )
    train_table = table[train_rows.numpy()]
    # Every class keeps at least one training row (stratified_split), so the classes match.
    recipe = Recipe.fit(train_table, whole.target, **options)
    validation_table = table[validation_rows.numpy()]
    return PreparedData(
        recipe.transform(train_table),
        recipe.encode_targets(train_table),
        recipe.transform(validation_table),
        recipe.encode_targets(validation_table),
        recipe.classes,
        recipe,
        prepared.warnings,
    )


@dataclass
class Agreement:
    """How far two designs trained with the same seed are apart, epoch by epoch.

    Attributes:
        first, second: design names, e.g. "A" and "B".
        seed: the seed both runs used.
        weight_diff: per epoch, max |W_first - W_second| over every weight and bias.
        loss_diff: per epoch, max of |Δ training loss| and |Δ validation loss|; None when the two
            designs' losses are different quantities (C's squared error against a cross entropy).
    """

    first: str
    second: str
    seed: int
    weight_diff: list[float] = field(default_factory=list)
    loss_diff: list[float] | None = None

    @property
    def max_weight_diff(self) -> float:
        return max(self.weight_diff, default=0.0)

    @property
    def max_loss_diff(self) -> float | None:
        return None if self.loss_diff is None else max(self.loss_diff, default=0.0)

    @property
    def verdict(self) -> str:
        """ "identical", "equal to float tolerance" or "different"."""
        largest = max(self.max_weight_diff, self.max_loss_diff or 0.0)
        if largest == 0.0:
            return "identical"
        return "equal to float tolerance" if largest <= FLOAT_TOLERANCE else "different"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pair": f"{self.first}-{self.second}",
            "seed": self.seed,
            "verdict": self.verdict,
            "max_weight_diff": json_number(self.max_weight_diff),
            "max_loss_diff": json_number(self.max_loss_diff),
            "weight_diff_per_epoch": [json_number(value) for value in self.weight_diff],
            "loss_diff_per_epoch": (
                None if self.loss_diff is None else [json_number(v) for v in self.loss_diff]
            ),
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


# Final metrics compared over seeds (mean ± interval, paired differences).
SEED_METRICS = ("validation_loss", "validation_accuracy")

METRIC_NAMES = (
    "train_loss",
    "validation_loss",
    "train_accuracy",
    "validation_accuracy",
    "validation_log_loss",
    "validation_brier",
    "validation_ece",
    "epochs",
    "seconds",
)


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

    def runs_of(self, design: str) -> list[DesignRun]:
        return [run for run in self.runs if run.design == design]

    def summary(self, design: str) -> dict[str, float]:
        """The metrics of ``design`` averaged over the seeds."""
        runs = self.runs_of(design)
        return {name: sum(run.metrics[name] for run in runs) / len(runs) for name in METRIC_NAMES}

    def seed_statistics(self, confidence: float = 0.95) -> dict[str, Any] | None:
        """Over the seeds (2 or more): per design mean and interval of the validation loss and
        accuracy, and every pair of designs compared seed by seed; None with one seed.

        A metric with a non-finite value (a diverged run) is left out.
        """
        if len(self.seeds) < 2:
            return None
        summary: dict[str, dict[str, Any]] = {}
        pairs: dict[str, list[dict[str, Any]]] = {}
        for metric in SEED_METRICS:
            values = {
                name: [run.metrics[metric] for run in sorted(self.runs_of(name), key=_seed_of)]
                for name in self.designs
            }
            if not all(math.isfinite(value) for row in values.values() for value in row):
                continue
            summary[metric] = {
                name: _json_floats(mean_interval(row, confidence).to_dict())
                for name, row in values.items()
            }
            pairs[metric] = [
                _json_floats(
                    paired_comparison(
                        values[first], values[second], first, second, confidence
                    ).to_dict()
                )
                for position, first in enumerate(self.designs)
                for second in self.designs[position + 1 :]
            ]
        return {"confidence": confidence, "summary": summary, "pairs": pairs}

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
            "agreement": [agreement.to_dict() for agreement in self.agreements],
            "seeds": list(self.seeds),
            "classes": list(self.class_names),
            "rows": {"train": self.n_train, "validation": self.n_validation},
            "model_config": self.model_config.to_dict(),
            "train_config": self.config.to_dict(),
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


def parse_designs(designs: str | Sequence[str]) -> tuple[str, ...]:
    """ "ABCD", "a,c" or ["A", "B"] → ("A", "B", ...), in A–D order without repeats."""
    letters = [letter for letter in "".join(designs).replace(",", "").upper() if letter != " "]
    if not letters:
        raise ConfigError(f"no design given: expected letters from {''.join(DESIGNS)}")
    names = {get_design(letter).name for letter in letters}
    return tuple(name for name in DESIGNS if name in names)


def compare(
    data: PreparedData,
    designs: str | Sequence[str] = "ABCD",
    config: TrainConfig | None = None,
    *,
    hidden: Sequence[int] = (7,),
    activation: str = "tanh",
    seeds: int = 1,
    out_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    distributed: DistContext | None = None,
    context: RunContext | None = None,
) -> ComparisonResult:
    """Train ``designs`` on ``data`` with the same network, split and seed(s); measure; save.

    Args:
        data: from :func:`prepare_table` (or built from tensors); needs validation rows.
        designs: which designs, e.g. "ABCD" or "AB".
        config: training options (``config.seed`` is the first seed).
        hidden, activation: the MLP's hidden layers (default: the seed's 4-7-3 tanh).
        seeds: how many seeds to run (``config.seed``, ``config.seed + 1``, ...).
        out_dir: where to write models, history.json, report.json, report.html and PNG plots;
            None: nothing.
        progress: called after every epoch of every run.
        distributed: this process's place in a torchrun run; every design then trains data
            parallel (one seed after another: the batched seed engine is single-process) and
            rank 0 alone writes ``out_dir``.
        context: the table's name and the command, for report.html.

    Raises:
        ConfigError: bad designs, seeds, or data without validation rows.
    """
    config = TrainConfig() if config is None else config
    names = parse_designs(designs)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds={seeds!r} must be an integer ≥ 1")
    if data.validation_features is None or data.validation_targets is None:
        raise ConfigError("compare needs validation rows: set validation_fraction > 0")
    model_config = MLPConfig(data.n_features, data.n_classes, tuple(hidden), activation)
    seed_values = tuple(config.seed + offset for offset in range(seeds))
    runs: list[DesignRun] = []
    agreements: list[Agreement] = []
    bands = None
    distributed = DistContext() if distributed is None else distributed
    if seeds > 1 and _batched_engine_fits(config) and not distributed.enabled:
        _, agreements = _compare_one_seed(
            data,
            names,
            model_config,
            replace(config, seed=seed_values[0]),
            progress,
            True,
            distributed,
        )
        runs, bands = _batched_runs(data, names, model_config, config, seed_values)
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
    )
    if out_dir is not None and distributed.is_main:
        write_outputs(result, data, Path(out_dir), context)
    barrier(distributed)
    return result


def _seed_of(run: DesignRun) -> int:
    return run.seed


def _batched_engine_fits(config: TrainConfig) -> bool:
    """The batched engine trains fp32 models for every epoch, without weight decay."""
    return config.patience is None and config.precision == "fp32" and config.weight_decay == 0


def _batched_runs(
    data: PreparedData,
    names: tuple[str, ...],
    model_config: MLPConfig,
    config: TrainConfig,
    seed_values: tuple[int, ...],
) -> tuple[list[DesignRun], dict[str, dict[str, dict[str, Any]]]]:
    """Every design × seed in one :func:`softclass.training.ensemble.train_ensemble` run, measured
    like a
    :class:`Trainer` run (the training accuracy per epoch is not tracked there: NaN), and the
    per-epoch bands of the validation loss and accuracy."""
    settings = EnsembleSettings(
        epochs=config.epochs,
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        learning_rate=config.learning_rate,
        momentum=config.momentum if config.optimizer == "sgd" else 0.0,
    )
    start = time.perf_counter()
    result = train_ensemble(
        model_config,
        design_seed_grid(names, seed_values),
        data.train_features,
        data.train_targets,
        settings,
        data.validation_features,
        data.validation_targets,
        device=resolve_device(config.device),
    )
    # Wall time per epoch, shared out over the models trained together.
    seconds = (time.perf_counter() - start) / (config.epochs * len(result.members))
    runs = []
    for position, member in enumerate(result.members):
        history = History(
            [
                EpochRecord(
                    epoch + 1,
                    float(result.train_loss[position, epoch]),
                    math.nan,
                    float(result.val_loss[position, epoch]),
                    float(result.val_accuracy[position, epoch]),
                    seconds,
                )
                for epoch in range(config.epochs)
            ]
        )
        model = result.model(position).eval().requires_grad_(False)
        trained = TrainResult(
            model,
            get_design(member.design),
            model_config,
            replace(config, seed=member.seed),
            history,
        )
        runs.append(measure(trained, data))
    bands = {metric: result.bands(metric, names) for metric in ("val_loss", "val_accuracy")}
    return runs, bands


def _compare_one_seed(
    data: PreparedData,
    names: tuple[str, ...],
    model_config: MLPConfig,
    config: TrainConfig,
    progress: ProgressCallback | None,
    label_seed: bool,
    distributed: DistContext,
) -> tuple[list[DesignRun], list[Agreement]]:
    """Train every design with one seed in lockstep, comparing weights after every epoch."""
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
    for trainer in trainers.values():
        trainer.initialize(
            data.train_features,
            data.train_targets,
            data.validation_features,
            data.validation_targets,
        )
    agreements = [
        Agreement(
            first,
            second,
            config.seed,
            loss_diff=[] if (first, second) in _SAME_LOSS_QUANTITY else None,
        )
        for first, second in AGREEMENT_PAIRS
        if first in trainers and second in trainers
    ]
    while not all(trainer.finished_ for trainer in trainers.values()):
        ran = [name for name, trainer in trainers.items() if not trainer.finished_]
        for name in ran:
            trainers[name].run_epoch()
        for agreement in agreements:
            if agreement.first in ran and agreement.second in ran:
                _record_agreement(agreement, trainers[agreement.first], trainers[agreement.second])
    runs = []
    for trainer in trainers.values():
        result = trainer.finish()
        runs.append(measure(result, data))
    return runs, agreements


def _record_agreement(agreement: Agreement, first: Trainer, second: Trainer) -> None:
    with torch.no_grad():
        weight_diff = max(
            float((a - b).abs().max())
            for a, b in zip(first.model_.parameters(), second.model_.parameters(), strict=True)
        )
    agreement.weight_diff.append(weight_diff)
    if agreement.loss_diff is not None:
        last_first, last_second = first.history_.records[-1], second.history_.records[-1]
        agreement.loss_diff.append(
            max(
                abs(last_first.train_loss - last_second.train_loss),
                abs(last_first.validation_loss - last_second.validation_loss),
            )
        )


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


def write_outputs(
    result: ComparisonResult,
    data: PreparedData,
    out_dir: Path,
    context: RunContext | None = None,
) -> None:
    """Models of the first seed (when a recipe is known), history.json, report.json, report.html
    and plots."""
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
    atomic_write_json(
        out_dir / "history.json",
        {
            name: [{"seed": run.seed, **run.history.to_dict()} for run in result.runs_of(name)]
            for name in result.designs
        },
    )
    atomic_write_json(out_dir / "report.json", result.to_dict())
    write_report(result, data, out_dir, context)
