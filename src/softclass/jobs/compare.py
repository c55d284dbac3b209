"""The main job: train the same network with every design on the same data, split and seed.

:func:`softclass.data.prepare.prepare_table` turns a table into training and validation tensors;
:func:`compare` trains every design × seed model at once in the batched engine
(:func:`softclass.training.ensemble.train_ensemble`: compiled loops for small layers, batched torch
above), each model once, comparing the first seed's designs' weights and losses after every
epoch; then it measures each design on the validation rows and, when asked, writes models,
history, report and plots to a directory.

Several seeds (seed, seed + 1, ...) each have their own batch order and initial weights; the
split stays the one of the configured seed. With several seeds the report adds each design's
mean ± 95 % interval over the seeds and paired comparisons (:mod:`softclass.evaluation.stats`).
What the batched engine refuses (bf16, torchrun, ``backend="autograd"``) trains in lockstep
autograd :class:`Trainer` runs, one seed after the other.

Designs are set side by side only on common metrics (:mod:`softclass.evaluation.measure`). With
early stopping the training rows are split once more: the epoch is chosen on *stopping* rows, and
the reported numbers come from validation rows that neither trained the weights nor chose the
epoch (three-way split). Whether two designs are the same computation is decided on their
float64 gradients at the same weights (:mod:`softclass.evaluation.agreement`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from softclass.data import stratified_split
from softclass.data.expansion import take_rows
from softclass.data.prepare import PreparedData
from softclass.errors import ConfigError, DataError
from softclass.evaluation.agreement import (
    Agreement,
    AgreementProbe,
    Probe,
    agreement_plan,
    noise_floor,
)
from softclass.evaluation.measure import DesignRun, measure
from softclass.evaluation.report import RunContext
from softclass.evaluation.seeds import seed_bands
from softclass.io import atomic_write_json, claim_output_directory
from softclass.jobs.comparison import ComparisonResult
from softclass.jobs.defaults import Defaults
from softclass.jobs.destination import check_output_directory, replace_run, unit_fingerprint
from softclass.jobs.file_thread import FileThread
from softclass.jobs.report import write_report
from softclass.jobs.store import check_finite_recipe, save_model
from softclass.kernels import native
from softclass.mlp.designs import DESIGNS, get_design
from softclass.mlp.model import MLPConfig
from softclass.training import mlp_native
from softclass.training.backends.autograd import AutogradEpochs, Trainer
from softclass.training.callbacks import (
    DivergenceCheck,
    EarlyStoppingCallback,
    ProgressReport,
    history_of,
)
from softclass.training.config import TrainConfig, resolve_device
from softclass.training.distributed import DistContext, barrier
from softclass.training.early_stopping import EarlyStopping
from softclass.training.ensemble import design_seed_grid, train_ensemble
from softclass.training.loop import Callback, FitLoop
from softclass.training.results import ProgressCallback, TrainResult

MAX_SEEDS = 1000  # seeds of one comparison (each trains every design once more)
# Share of the training rows held out to choose the epoch when early stopping (three-way split).
STOPPING_FRACTION = 0.1


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
        ConfigError: bad designs, seeds, stopping fraction, ``config.members`` above 1, or
            data without validation rows;
            ``out_dir`` holds another comparison and ``overwrite`` is False, or is no place for
            one (:func:`softclass.jobs.destination.check_output_directory`).
        OutputBusyError: another run is writing ``out_dir``.
        OutputError: ``out_dir`` is a file or not writable (checked before training), or the
            device fills up while writing.
        TrainingDiverged: a design's loss or weights became NaN or infinite, or the loss
            exploded (:func:`softclass.training.callbacks.divergence`).
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
    if config.members > 1:
        raise ConfigError(
            f"members={config.members}: compare trains one network per design and seed (its "
            "seeds show the spread); averaged members are for train (--members)"
        )
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
    one_time = _load_compiled(config)
    together = _engine_fits(config, distributed)
    if together:
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
        one_time_seconds=one_time,
        trained_together=together,
    )
    if out_dir is not None and distributed.is_main:
        with replace_run(out_dir) as staging:  # the whole run replaces the earlier one at once
            write_outputs(result, data, staging, context)
    barrier(distributed)
    return result


def _load_compiled(config: TrainConfig) -> float:
    """Seconds spent loading the compiled code the run may use (built at install), measured
    apart so that a one-time cost is never reported as training time."""
    started = time.perf_counter()
    native.library()
    if config.backend in ("auto", "compiled"):
        mlp_native.library()
    return time.perf_counter() - started


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
    stopping = (take_rows(data.train_features, stopping_rows), data.train_targets[stopping_rows])
    fitted = replace(
        data,
        train_features=take_rows(data.train_features, fit_rows),
        train_targets=data.train_targets[fit_rows],
    )
    return fitted, stopping


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
    compared after every epoch (:class:`AgreementProbe`); with several seeds, the per-epoch bands
    of the validation loss and accuracy.

    The engine watches ``stopping`` rows when early stopping, else the validation rows; its
    per-epoch validation numbers come from those rows.
    """
    members = design_seed_grid(names, seed_values)
    index = {(member.design, member.seed): m for m, member in enumerate(members)}
    seed = seed_values[0]
    watched = _watched(data, stopping)
    agreements, probe, probe_every = agreement_plan(
        names, seed, data, config.epochs, config.label_smoothing
    )
    first_seed = {name: index[(name, seed)] for name in names}
    suffix = f" × {len(seed_values)} seeds" if len(seed_values) > 1 else ""
    labels = {m: name + suffix for name, m in first_seed.items()}
    callbacks: list[Callback] = [
        DivergenceCheck(
            [get_design(member.design) for member in members],
            [f"{member.design} seed {member.seed}" for member in members],
            model_config,
            config.learning_rate,
            validation=True,
        )
    ]
    if progress is not None:
        callbacks.append(ProgressReport(progress, labels, validation=True))
    callbacks.append(AgreementProbe(agreements, first_seed, probe, probe_every))
    result = train_ensemble(
        model_config,
        members,
        data.train_features,
        data.train_targets,
        config,
        *watched,
        device=resolve_device(config.device),
        callbacks=callbacks,
    )
    runs = []
    for m, member in enumerate(result.members):
        model = result.model(m).float().eval().requires_grad_(False)
        design, member_config = get_design(member.design), replace(config, seed=member.seed)
        history = result.history(m, shared=True)
        runs.append(measure(TrainResult(model, design, model_config, member_config, history), data))
    if any(agreement.needs_noise_floor for agreement in agreements):
        # The same backend as the comparison (the choice is per problem shape, and A alone is
        # another shape): only the inputs may differ.
        pinned = replace(config, backend=result.backend, seed=seed)

        def train_again(features: torch.Tensor) -> torch.nn.Module:
            again = train_ensemble(
                model_config,
                design_seed_grid(("A",), (seed,)),
                features,
                data.train_targets,
                pinned,
                *watched,
                device=resolve_device(config.device),
            )
            return again.model(0).float()

        _set_noise_floor(agreements, runs[first_seed["A"]].result.model, data, seed, train_again)
    bands = (
        {metric: seed_bands(result, metric, names) for metric in ("val_loss", "val_accuracy")}
        if len(seed_values) > 1
        else None
    )
    return runs, agreements, bands


def _watched(
    data: PreparedData, stopping: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows the engine scores after every epoch: the stopping rows when early stopping
    (they choose the epoch), else the validation rows."""
    if stopping is not None:
        return stopping
    return data.validation_features, data.validation_targets


def _set_noise_floor(
    agreements: list[Agreement],
    trained: torch.nn.Module,
    data: PreparedData,
    seed: int,
    train_again: Callable[[torch.Tensor], torch.nn.Module],
) -> None:
    """Measure the rounding noise floor once (:func:`noise_floor`) for the pairs that need it."""
    floor = noise_floor(trained, data.train_features, seed, train_again)
    for agreement in agreements:
        if agreement.needs_noise_floor:
            agreement.noise_floor = floor


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
    """Train every design with one seed in lockstep autograd :class:`Trainer` runs (one loop,
    :class:`AutogradEpochs`), comparing them after every epoch; the rounding noise floor as the
    engine's (design A trained again with its inputs one float32 ulp away)."""
    watched = _watched(data, stopping)

    def trainers_for(designs: Sequence[str], label: Callable[[str], str]) -> list[Trainer]:
        return [
            Trainer(
                get_design(name), model_config, config, label=label(name), distributed=distributed
            )
            for name in designs
        ]

    trainers = trainers_for(
        names, lambda name: f"{name} seed {config.seed}" if label_seed else name
    )
    agreements, probe, probe_every = agreement_plan(
        names, config.seed, data, config.epochs, config.label_smoothing
    )
    results = _lockstep(
        trainers, data.train_features, data, watched, progress, agreements, probe, probe_every
    )
    runs = [measure(result, data) for result in results]
    if "A" in names and any(agreement.needs_noise_floor for agreement in agreements):

        def train_again(features: torch.Tensor) -> torch.nn.Module:
            nudged = trainers_for("A", lambda _: f"A (noise floor, seed {config.seed})")
            return _lockstep(nudged, features, data, watched, progress, [], probe, probe_every)[
                0
            ].model

        _set_noise_floor(
            agreements, results[names.index("A")].model, data, config.seed, train_again
        )
    return runs, agreements


def _lockstep(
    trainers: list[Trainer],
    features: torch.Tensor,
    data: PreparedData,
    watched: tuple[torch.Tensor, torch.Tensor],
    progress: ProgressCallback | None,
    agreements: list[Agreement],
    probe: Probe,
    probe_every: int,
) -> list[TrainResult]:
    """``trainers`` through one loop, epoch by epoch together, with their early stopping,
    divergence check, progress and the agreement probe; their results in order."""
    for trainer in trainers:
        trainer.initialize(features, data.train_targets, *watched)
    config = trainers[0].config
    early = (
        EarlyStoppingCallback(
            EarlyStopping.from_config(config, len(trainers)), restore_best=config.restore_best
        )
        if config.patience is not None
        else None
    )
    callbacks: list[Callback] = [] if early is None else [early]
    callbacks.append(
        DivergenceCheck(
            [trainer.design for trainer in trainers],
            [trainer.label for trainer in trainers],
            trainers[0].model_config,
            config.learning_rate,
            validation=True,
        )
    )
    if progress is not None:
        labels = {m: trainer.label for m, trainer in enumerate(trainers)}
        callbacks.append(ProgressReport(progress, labels, validation=True))
    members = {trainer.design.name: m for m, trainer in enumerate(trainers)}
    callbacks.append(AgreementProbe(agreements, members, probe, probe_every))
    loop = FitLoop(AutogradEpochs(trainers), config.epochs, callbacks).fit()
    results = []
    for m, trainer in enumerate(trainers):
        best_epoch = None if early is None else early.rule.best_epoch[m]
        history = history_of(loop, m, validation=True, best_epoch=best_epoch)
        model = trainer.model_.to("cpu").eval()
        results.append(TrainResult(model, trainer.design, trainer.model_config, config, history))
    return results


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
    report = result.to_dict()  # holds every run's history: history.json reuses them
    # The files below need nothing from the page: they are written by a second thread while
    # this one waits for the figure helpers (the wait releases the GIL), so that a run with
    # long histories (--seeds 10 --epochs 1000) serializes its JSON while its figures are drawn.
    files = FileThread(lambda: _write_files(result, data, out_dir, report))
    try:
        files.start()
        write_report(result, data, out_dir, context, summary=report)
    except BaseException:
        files.wait()  # the page's error is the one reported; the staging is then dropped
        raise
    files.finish()


def _write_files(
    result: ComparisonResult, data: PreparedData, out_dir: Path, report: dict[str, Any]
) -> None:
    """The first seed's models (when a recipe is known), history.json and report.json."""
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
            name: [
                {"seed": run["seed"], **run["history"]}
                for run in report["designs"][name]["per_seed"]
            ]
            for name in result.designs
        },
    )
    atomic_write_json(out_dir / "report.json", report)
