"""From the typed options to a run: the network and TrainConfig (:func:`_resolve`), the prepared
table, torch threads, the distributed context and the report's run context."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from softclass.cli.app import err_console
from softclass.cli.options import _SPECS, _TRAINING_DEFAULTS, _Spec, _Typed
from softclass.cli.render import _print_typing_table
from softclass.jobs.defaults import Defaults, defaults_for
from softclass.training.config import TrainConfig

if TYPE_CHECKING:
    from softclass.data.prepare import PreparedData
    from softclass.evaluation.report import RunContext
    from softclass.jobs.stream_train import StreamedData
    from softclass.limits import ReadLimits
    from softclass.training.distributed import DistContext


def _torch_threads(
    config: TrainConfig, prepared: PreparedData | StreamedData, hidden: tuple[int, ...]
) -> contextlib.AbstractContextManager[int]:
    """``--threads`` torch threads for the training run (0: chosen by the size of a step, and
    shared among the torchrun ranks of this machine)."""
    from softclass.training.distributed import threads_per_rank
    from softclass.training.threads import choose_threads, torch_threads

    threads = config.threads or threads_per_rank(
        choose_threads(config.batch_size, (prepared.n_features, *hidden, prepared.n_classes))
    )
    return torch_threads(threads)


def _delimiter(delimiter: str | None) -> str | None:
    """The delimiter flag's value (``\\t`` typed as two characters, or ``tab``: a tab)."""
    return "\t" if delimiter in ("\\t", "tab") else delimiter


def _read_options(typed: _Typed):
    """``(delimiter, TypingOptions)`` from the data flags (``\\t`` typed as two characters: tab)."""
    from softclass.data import TypingOptions

    return _delimiter(typed.delimiter), TypingOptions(
        decimal=typed.decimal,
        na_values=tuple(typed.na_values or ()),
        categorical=tuple(typed.categorical or ()),
        numeric=tuple(typed.numeric or ()),
    )


_READ_OPTIONS = (  # data flags for reading and the split, not passed to prepare_table
    "validation_fraction",
    "delimiter",
    "decimal",
    "na_values",
    "categorical",
    "numeric",
    "memory",
)


def _prepared_data(
    data: Path | None, typed: _Typed, config: TrainConfig, *, show: bool = True
) -> PreparedData:
    """Read ``data`` (the bundled Iris when None) and prepare it with the data options typed;
    the split follows ``config`` (its validation fraction and seed)."""
    from softclass.data import load_bundled
    from softclass.data.prepare import prepare_file, prepare_table

    delimiter, typing = _read_options(typed)
    limits = _read_limits(typed)
    data_options = {
        spec.library: value
        for spec, value in _library_values(typed).items()
        if spec.panel == "Data"
        and spec.library not in _READ_OPTIONS
        and not hasattr(limits, spec.library)
    }
    defaults = defaults_for(_is_bundled_iris(data))
    data_options.setdefault("normalization", defaults.normalization)
    data_options.setdefault("bins", defaults.bins)
    with (
        err_console.status(f"reading and typing {'the bundled Iris' if data is None else data} …")
        if show and err_console.is_terminal
        else contextlib.nullcontext()
    ):
        options = {
            **data_options,
            "validation_fraction": config.validation_fraction,
            "seed": config.seed,
            "typing": typing,
            "source": "the bundled Iris" if data is None else str(data),
        }
        prepared = (
            prepare_table(load_bundled("iris"), **options)
            if data is None
            else prepare_file(data, delimiter=delimiter, limits=limits, **options)
        )
    limits.check_classes(prepared.n_classes, data)  # before any N × classes table is built
    if show:
        _print_typing_table(prepared.recipe)
        for warning in prepared.warnings:
            err_console.line(f"[yellow]warning:[/] {warning}")
    return prepared


def _read_limits(typed: _Typed) -> ReadLimits:
    """The read limits typed (``--max-cells``, ...), else their defaults."""
    from softclass.limits import ReadLimits

    values = _library_values(typed).items()
    return ReadLimits(
        **{spec.library: value for spec, value in values if hasattr(ReadLimits, spec.library)}
    )


def _library_values(typed: _Typed) -> dict[_Spec, Any]:
    """Each option typed (or with a default of its own), as the library takes it."""
    values = {}
    for spec in _SPECS:
        value = getattr(typed, spec.name)
        if value is not None:
            values[spec] = value if spec.parse is None else spec.parse(value)
    return values


@contextlib.contextmanager
def _distributed_context(device: str) -> Iterator[DistContext]:
    """Join the torchrun process group if there is one (else a single-process context)."""
    from softclass.training import distributed

    context = distributed.setup(device)
    try:
        yield context
    finally:
        distributed.teardown(context)


def _run_context(data: Path | None) -> RunContext:
    """The table's name and the command as typed, for report.html."""

    from softclass.evaluation.report import RunContext

    table = "bundled iris" if data is None else str(data)
    return RunContext(table=table, command=shlex.join(["softclass", *sys.argv[1:]]))


@dataclass(frozen=True)
class _Network:
    """The network and training options after the defaults filled in what was not typed."""

    defaults: Defaults
    hidden: tuple[int, ...]
    activation: str
    config: TrainConfig


def _is_bundled_iris(data: Path | None) -> bool:
    """No table given, or the bundled Iris file itself: the demonstration defaults apply."""
    from softclass.data import bundled_path

    return data is None or Path(data).resolve() == bundled_path("iris").resolve()


def _resolve(bundled: bool, typed: _Typed) -> _Network:
    """The network and the :class:`TrainConfig` of a run, the one mapping of ``compare`` and
    ``train``: each option typed, else the table's default (:mod:`softclass.jobs.defaults`),
    else TrainConfig's own.

    ``--patience 0`` turns early stopping off; so does ``--validation 0`` when early stopping
    only came from the table's defaults (it needs held-out rows).
    """
    defaults = defaults_for(bundled)
    if typed.patience is not None and typed.patience < 0:
        raise typer.BadParameter(
            f"expected 0 (off) or more, got {typed.patience}", param_hint="--patience"
        )
    values = {spec.library: value for spec, value in _library_values(typed).items()}
    options = defaults.train_options() | {
        name: value for name, value in values.items() if name in _TRAINING_DEFAULTS
    }
    without_rows = (
        options.get("validation_fraction") == 0 and options.get("monitor") != "train_loss"
    )
    if options["patience"] == 0 or (typed.patience is None and without_rows):
        options["patience"] = None
    return _Network(
        defaults,
        values.get("hidden", defaults.hidden),
        values.get("activation", defaults.activation),
        TrainConfig(**options),
    )
