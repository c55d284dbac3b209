"""The ``softclass`` command line: argument parsing and printing only.

Every command turns its options into calls of the library and prints what comes back. Errors of
softclass's own types are printed as one clear line with a non-zero exit code; ``--debug`` shows
the full traceback instead.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import os
import re
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from softclass.errors import (
    Interrupted,
    OptionError,
    SoftclassError,
    SoftclassWarning,
    python_spelling,
)
from softclass.jobs.defaults import DEMONSTRATION, TABLE, Defaults, defaults_for
from softclass.training.config import BACKENDS, DEVICES, MONITORS, PRECISIONS, TrainConfig

if TYPE_CHECKING:
    from softclass.evaluation.report import RunContext
    from softclass.jobs.compare import ComparisonResult, PreparedData
    from softclass.training.distributed import DistContext
    from softclass.training.trainer import ProgressEvent


def _flags_without_placeholder(params: list) -> list:
    """Flags (``--json``, ``--help``) take no value: show no type placeholder for them."""
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    return params


class _Command(typer.core.TyperCommand):
    """A command whose help shows flags without a type placeholder and lists the names of the
    registries (activations, optimizers ...) where an option's help asks for them."""

    def get_params(self, ctx):
        return _with_registry_names(_flags_without_placeholder(super().get_params(ctx)))


class _Group(typer.core.TyperGroup):
    """The root group, with the same flag display as :class:`_Command`."""

    def get_params(self, ctx):
        return _flags_without_placeholder(super().get_params(ctx))


app = typer.Typer(
    name="softclass",
    help="Multi-class classification with PyTorch: four output/loss designs, compared.",
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _DataSafeConsole(Console):
    """A rich console that prints every string through
    :func:`softclass.jobs.output.terminal_text`: class names, column names and values from the
    user's files cannot send escape sequences to the terminal (rich adds its own styles after)."""

    def render_str(self, text: str, **options: Any) -> Text:
        from softclass.jobs.output import terminal_text

        return super().render_str(terminal_text(text), **options)


console = _DataSafeConsole()
err_console = _DataSafeConsole(stderr=True)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        from softclass.version import __version__

        console.print(f"softclass {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    """softclass's own warnings as one ``warning:`` line; others as Python shows them."""
    if issubclass(category, SoftclassWarning):
        err_console.print(
            "[yellow]warning:[/]", escape(str(message)), highlight=False, soft_wrap=True
        )
    else:
        _python_show_warning(message, category, *args, **kwargs)


_python_show_warning = warnings.showwarning


def main() -> None:
    """Entry point of the console script: run the app, turning known errors into one line.

    Exit codes: 0 success; 2 an error (one line on stderr); 128 + the signal number when
    SIGINT (130) or SIGTERM (143) stopped the command, after one line saying what was kept;
    141 (128 + SIGPIPE, what a shell reports for a writer killed by SIGPIPE) without a message
    when the reader of stdout went away (``softclass predict ... | head``).
    """
    warnings.showwarning = _show_warning
    with _signals_interrupt():
        try:
            try:
                app()
            finally:
                _flush_stdout()
        except Interrupted as interrupt:
            name = signal.Signals(interrupt.signal_number).name
            err_console.print(
                f"interrupted by {name}: {escape(interrupt.kept or 'nothing was written')}",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(128 + interrupt.signal_number)
        except (SoftclassError, ValueError, RuntimeError, IndexError, OSError) as error:
            if _state["debug"]:
                raise
            err_console.print(
                "[bold red]error:[/]",
                escape(_as_typed(error)),
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(2)


_EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """While the command runs, SIGINT and SIGTERM raise :class:`Interrupted` (once: a second
    signal during the clean-up is ignored), so that temporary files and locks are released."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def handler(signal_number: int, _frame: object) -> None:
        if arrived:
            return
        arrived.append(signal_number)
        raise Interrupted(signal_number)

    previous = {number: signal.signal(number, handler) for number in _INTERRUPTS}
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action)


_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def _write_stdout(text: str) -> None:
    """Write ``text`` to stdout and flush, so that a failed write is seen here, not lost at exit.

    Raises:
        SystemExit: code 141, quietly, when the reader closed the pipe (``| head``).
        OutputError: any other failure (``> file`` on a full disk): the output is incomplete.
    """
    try:
        sys.stdout.write(text)
    except OSError as error:
        _stdout_failed(error)
    _flush_stdout()


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except OSError as error:
        _stdout_failed(error)


def _stdout_failed(error: OSError) -> NoReturn:
    _silence_stdout()
    if isinstance(error, BrokenPipeError):
        sys.exit(_EXIT_BROKEN_PIPE)
    from softclass.errors import OutputError

    problem = (
        "no space left on the device behind standard output"
        if error.errno == errno.ENOSPC
        else f"writing to standard output failed ({error.strerror or error})"
    )
    raise OutputError(f"{problem}: the output is incomplete") from None


def _silence_stdout() -> None:
    """Point stdout's descriptor at /dev/null: what is still buffered is dropped at exit
    instead of failing again (a second error message, or exit code 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated numbers like 2.5,3.5,1.5, got {text!r}", param_hint=option
        ) from None


@app.command(cls=_Command)
def explain(
    logits: Annotated[
        str | None,
        typer.Option(help="Explain this logit vector instead, e.g. 2.5,3.5,1.5."),
    ] = None,
    target: Annotated[int, typer.Option(help="True class of --logits (0-based).")] = 0,
) -> None:
    """Print the worked numbers step by step: exact values beside the published ones."""
    from rich.table import Table

    from softclass.diagnostics import explain as worked

    if logits is None:
        examples = worked.worked_examples()
    else:
        examples = [worked.explain_vector(_parse_floats(logits, "--logits"), target)]
    for example in examples:
        table = Table(title=example.title, title_justify="left", show_lines=False)
        table.add_column("step")
        table.add_column("exact (float64)", justify="right")
        table.add_column("published", justify="right")
        table.add_column("note")
        for step in example.steps:
            exact = ", ".join(f"{value:.4f}" for value in step.exact)
            published = "" if step.published is None else ", ".join(step.published)
            if step.differs:
                published = f"[yellow]{published} ≠[/]"
            table.add_row(step.label, exact, published, step.note)
        console.print(table)
        if example.remark:
            console.print(f"  {example.remark}\n", highlight=False)


@app.command(cls=_Command)
def check(
    model_dir: Annotated[
        Path | None, typer.Argument(help="Model directory written by train/compare.")
    ] = None,
    data: Annotated[Path | None, typer.Argument(help="CSV or Parquet table with targets.")] = None,
    rows: Annotated[int, typer.Option("--rows", help="Rows of DATA to check.", min=1)] = 256,
    demo: Annotated[
        bool, typer.Option("--demo", help="Make each of the nine classic mistakes and check it.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the findings as JSON.")
    ] = False,
) -> None:
    """Check how outputs, targets and the loss are paired: a saved model on a table, or --demo."""
    import dataclasses
    import json

    from rich.panel import Panel

    from softclass.diagnostics.check_demo import run_demo
    from softclass.errors import ConfigError

    if demo:
        results = [
            (mistake.title, mistake.code, mistake.snippet, found) for mistake, found in run_demo()
        ]
    elif model_dir is not None and data is not None:
        from softclass.data import read_table
        from softclass.jobs.store import load_model
        from softclass.jobs.train_predict import check_saved_model

        saved = load_model(model_dir)
        findings = check_saved_model(saved, read_table(data, raw=True), rows)
        snippet = (
            f"outputs = design_{saved.design.name}.output(model(first {rows} rows))\n"
            f"loss = {saved.design.loss_name}(outputs, targets)"
        )
        results = [
            (
                f"model {model_dir} (design {saved.design.name}: {saved.design.title}) on {data}",
                "saved-model",
                snippet,
                findings,
            )
        ]
    else:
        raise ConfigError(
            "softclass check needs MODEL_DIR and DATA (a saved model and a table with its "
            "target column), or --demo"
        )
    if json_output:
        records = [
            {
                "title": title,
                "mistake": code,
                "snippet": snippet,
                "findings": [dataclasses.asdict(finding) for finding in found],
            }
            for title, code, snippet, found in results
        ]
        console.print_json(json.dumps(records))
        return
    for number, (title, _code, snippet, found) in enumerate(results, start=1):
        empty = "[red]nothing found[/]" if demo else "[green]no pairing problem found[/]"
        body = _findings_table(snippet, found, empty)
        console.print(Panel(body, title=f"{number}. {title}", title_align="left"))


def _findings_table(snippet: str, findings, empty: str):
    """A two-column grid: the checked code, then each finding (severity, what was seen, fix)."""
    from rich.syntax import Syntax
    from rich.table import Table

    body = Table.grid(padding=(0, 1))
    body.add_column(style="bold", no_wrap=True)
    body.add_column()
    body.add_row("code", Syntax(snippet, "python", word_wrap=True))
    for finding in findings:
        colour = "red" if finding.severity == "error" else "yellow"
        body.add_row("checker", f"[{colour}]{finding.severity}[/] [bold]{finding.code}[/]")
        body.add_row("seen", escape(finding.seen))
        body.add_row("fix", escape(finding.fix))
    if not findings:
        body.add_row("checker", empty)
    return body


@app.command(cls=_Command)
def bench(
    repeats: Annotated[int, typer.Option(help="Timed runs per implementation and case.")] = 5,
    memory: Annotated[
        bool, typer.Option(help="Also measure peak extra memory (one subprocess per case).")
    ] = True,
) -> None:
    """Benchmark softclass's cross entropy against torch's: time and peak extra memory."""
    from softclass.jobs import bench as benchmarks

    results = benchmarks.run_benchmarks(
        repeats=repeats,
        measure_memory=memory,
        on_result=lambda result: err_console.print(f"done: {result.case.name}"),
    )
    console.print(benchmarks.format_markdown(results), highlight=False)
    console.print(benchmarks.machine_description(), highlight=False)


# -- compare / train / predict ---------------------------------------------------------------------

_DataArgument = Annotated[
    Path | None,
    typer.Argument(
        help="CSV or Parquet table (default: the bundled Iris).", metavar="DATA", show_default=False
    ),
]
_Delimiter = Annotated[
    str | None,
    typer.Option(
        "--delimiter",
        metavar="CHAR",
        help="CSV field delimiter, e.g. ';' or '\\t' (default: tab for .tsv, else sniffed).",
        rich_help_panel="Data",
    ),
]
_Unknown = Annotated[
    str,
    typer.Option(
        "--unknown",
        metavar="NAME",
        help="Categories not seen in training: ignore (all zeros, warning) or error.",
        rich_help_panel="Data",
    ),
]
_DEFAULTS_HELP = (
    f"Defaults. On the bundled Iris: {DEMONSTRATION.reason}. On your table: {TABLE.reason}. "
    "Any option given overrides its default; report.json records which defaults were used."
)

# Help text placeholders filled in when a command's options are listed, from the registries
# themselves (they import torch, which ``softclass --help`` must not): placeholder → module and
# name of the registry.
_REGISTRY_NAMES = {
    "{activations}": ("softclass.mlp.activations", "ACTIVATIONS"),
    "{optimizers}": ("softclass.mlp.optimizers", "OPTIMIZERS"),
    "{normalizations}": ("softclass.data.recipe", "NORMALIZATIONS"),
    "{missing}": ("softclass.data.recipe", "MISSING_POLICIES"),
}


def _names(names: Iterable[str]) -> str:
    """``"tanh, relu or gelu"``: the accepted names of an option, for its help."""
    *rest, last = names
    return f"{', '.join(rest)} or {last}" if rest else last


def _with_registry_names(params: list) -> list:
    """Each ``{activations}``-like placeholder of an option's help replaced by the names of its
    registry (imported only now: listing or parsing a command's options)."""
    import importlib

    for param in params:
        text = getattr(param, "help", None) or ""
        for placeholder, (module, registry) in _REGISTRY_NAMES.items():
            if placeholder in text:
                names = getattr(importlib.import_module(module), registry)
                text = text.replace(placeholder, _names(names))
                param.help = text
    return params


_TRAINING_DEFAULTS = {item.name: item.default for item in fields(TrainConfig)}
# The options whose default depends on the table (softclass.jobs.defaults), beside the network.
_TABLE_DEPENDENT = (*DEMONSTRATION.train_options(), "hidden", "activation")


def _default_text(name: str) -> str:
    """ "Default: 0.9." or "Default: 7 on the bundled Iris, 100 on your table.": the defaults
    of a TrainConfig field (or ``hidden``, ``activation``) as --help states them."""
    if name in _TABLE_DEPENDENT:
        demonstration, table = (_help_value(name, getattr(d, name)) for d in (DEMONSTRATION, TABLE))
    else:
        demonstration = table = _help_value(name, _TRAINING_DEFAULTS[name])
    if demonstration == table:
        return f"Default: {table}."
    return f"Default: {demonstration} on the bundled Iris, {table} on your table."


def _help_value(name: str, value: object) -> str:
    if name == "patience":
        return "off" if value is None else f"{value} epochs"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


@dataclass(frozen=True)
class _Spec:
    """One option of ``compare`` and ``train``, declared once for both.

    Attributes:
        name: the command's parameter name (the attribute of :data:`_Typed`).
        flag: the option as typed, e.g. ``--lr``.
        library: the library's name of the option: a TrainConfig field (``learning_rate``), an
            argument of ``prepare_table`` (``normalization``) or of the network (``hidden``).
        annotation: ``Annotated[type, typer.Option(...)]``, the declaration typer reads.
        default: the value when the option is not typed; None for every training option (the
            table's default, else TrainConfig's, fills it in: :func:`_resolve`).
        parse: turns the typed text into the library's value (``--betas 0.9,0.99``), or None.
        commands: the commands that take it.
        panel: the --help panel: "Data" (reading and preparing the table) or the network and
            its training.
    """

    name: str
    flag: str
    library: str
    annotation: Any
    default: Any = None
    parse: Callable[[Any], Any] | None = None
    commands: tuple[str, ...] = ("compare", "train")
    panel: str = "Network and training"


def _spec(
    name: str,
    flag: str,
    kind: Any,
    help_text: str,
    *,
    library: str | None = None,
    metavar: str | None = None,
    default: Any = None,
    parse: Callable[[Any], Any] | None = None,
    commands: tuple[str, ...] = ("compare", "train"),
    panel: str = "Network and training",
) -> _Spec:
    """A :class:`_Spec`; a training option (no ``default``) says its defaults in its help."""
    library = library or name
    if default is None and library in (*_TRAINING_DEFAULTS, "hidden", "activation"):
        help_text = f"{help_text} {_default_text(library)}"
    option = typer.Option(
        flag,
        metavar=metavar,
        help=help_text,
        show_default=default is not None,
        rich_help_panel=panel,
    )
    annotation = Annotated[kind, option]
    return _Spec(name, flag.split("/")[0], library, annotation, default, parse, commands, panel)


def _parse_betas(text: str) -> tuple[float, ...]:
    return _parse_floats(text, "--betas")


_DATA = {"panel": "Data"}
_SPECS: tuple[_Spec, ...] = (
    _spec(
        "epochs",
        "--epochs",
        int | None,
        "Passes over the training rows (at most, with --patience).",
        metavar="N",
    ),
    _spec(
        "hidden",
        "--hidden",
        str | None,
        "Hidden layer widths, comma-separated, e.g. 128,128.",
        metavar="WIDTHS",
        parse=lambda text: _parse_hidden(text),  # defined below
    ),
    _spec(
        "activation",
        "--activation",
        str | None,
        "Activation of the hidden layers: {activations}.",
        metavar="NAME",
    ),
    _spec("optimizer", "--optimizer", str | None, "{optimizers}.", metavar="NAME"),
    _spec("lr", "--lr", float | None, "Learning rate.", library="learning_rate", metavar="RATE"),
    _spec(
        "momentum",
        "--momentum",
        float | None,
        "SGD momentum (the Adam family ignores it).",
        metavar="M",
    ),
    _spec("nesterov", "--nesterov", bool | None, "SGD: Nesterov momentum (needs --momentum > 0)."),
    _spec(
        "betas",
        "--betas",
        str | None,
        "Adam/AdamW moving-average rates, two numbers.",
        metavar="B1,B2",
        parse=_parse_betas,
    ),
    _spec("eps", "--eps", float | None, "Adam/AdamW denominator guard.", metavar="EPS"),
    _spec(
        "weight_decay",
        "--weight-decay",
        float | None,
        "L2 penalty on the weights (decoupled with adamw).",
        metavar="L2",
    ),
    _spec("batch_size", "--batch-size", int | None, "Rows per optimizer step.", metavar="ROWS"),
    _spec("seed", "--seed", int | None, "Seed of weights, batch order and split.", metavar="N"),
    _spec(
        "patience",
        "--patience",
        int | None,
        "Early stopping: stop after this many epochs "
        "without a better --monitor value on held-out rows and keep the best weights "
        "(compare: the --stopping rows, apart from the validation rows; train: the validation "
        "rows); 0 turns it off.",
        metavar="EPOCHS",
    ),
    _spec(
        "monitor",
        "--monitor",
        str | None,
        f"What early stopping watches: {_names(MONITORS)}.",
        metavar="NAME",
    ),
    _spec(
        "min_delta",
        "--min-delta",
        float | None,
        "Early stopping: an improvement must beat the best value by more than this.",
        metavar="D",
    ),
    _spec(
        "restore_best",
        "--restore-best/--no-restore-best",
        bool | None,
        "Early stopping: end on the best epoch's weights (or on the last epoch's).",
    ),
    _spec(
        "device",
        "--device",
        str | None,
        f"{_names(DEVICES)} (auto: cuda when available).",
        metavar="NAME",
    ),
    _spec(
        "precision",
        "--precision",
        str | None,
        f"{_names(PRECISIONS)} (bf16: autocast of the network).",
        metavar="NAME",
    ),
    _spec(
        "backend",
        "--backend",
        str | None,
        f"Training backend: {_names(BACKENDS)} (auto: the fastest that supports the run).",
        metavar="NAME",
    ),
    _spec(
        "threads",
        "--threads",
        int | None,
        "CPU threads for torch; 0 = chosen by the size of a "
        "training step: one for small networks (a second thread only adds synchronisation "
        "there), every idle core for large ones.",
        metavar="N",
    ),
    _spec(
        "checkpoint_every",
        "--checkpoint-every",
        int | None,
        "Epochs between checkpoints.",
        metavar="EPOCHS",
        commands=("train",),
    ),
    _spec(
        "validation",
        "--validation",
        float | None,
        "Share of each class held out as validation "
        "rows: every reported validation number comes from them (train: 0 = none).",
        library="validation_fraction",
        metavar="FRACTION",
        **_DATA,
    ),
    _spec(
        "target",
        "--target",
        str | None,
        "Class column (default: the last column).",
        metavar="COLUMN",
        **_DATA,
    ),
    _spec(
        "normalize",
        "--normalize",
        str,
        "{normalizations}.",
        library="normalization",
        metavar="NAME",
        default="zscore",
        **_DATA,
    ),
    _spec(
        "divide",
        "--divide",
        list[str] | None,
        "Divisor of a column for --normalize divide (repeat it).",
        library="divisors",
        metavar="COLUMN=VALUE",
        parse=lambda items: _parse_divisors(items),
        **_DATA,
    ),
    _spec(
        "missing",
        "--missing",
        str,
        "Missing cells: {missing}.",
        metavar="NAME",
        default="error",
        **_DATA,
    ),
    _Spec("delimiter", "--delimiter", "delimiter", _Delimiter, panel="Data"),
    _spec(
        "decimal",
        "--decimal",
        str | None,
        "Decimal mark of numbers: '.' or ',' (default: detected per column).",
        metavar="MARK",
        **_DATA,
    ),
    _spec(
        "na_values",
        "--na-values",
        list[str] | None,
        "Extra cell text meaning missing, e.g. n/a or - (repeat).",
        metavar="TEXT",
        **_DATA,
    ),
    _spec(
        "keep",
        "--keep",
        list[str] | None,
        "Keep this column as a feature even if it looks like an ID.",
        metavar="COLUMN",
        **_DATA,
    ),
    _spec(
        "drop",
        "--drop",
        list[str] | None,
        "Leave this column out (repeat).",
        metavar="COLUMN",
        **_DATA,
    ),
    _spec(
        "id_columns",
        "--id",
        list[str] | None,
        "Column that identifies rows: not a feature, carried to predict.",
        metavar="COLUMN",
        library="ids",
        **_DATA,
    ),
    _Spec("unknown", "--unknown", "unknown", _Unknown, default="ignore", panel="Data"),
)

# The options as one command received them (None: not typed, the defaults fill it in).
_Typed = make_dataclass(
    "_Typed", [(spec.name, Any, field(default=None)) for spec in _SPECS], frozen=True
)


def _with_options(command: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command function, besides its own parameters, every :data:`_SPECS` option of
    ``command``; the function receives them as one ``options: _Typed`` argument."""

    def decorate(function: Callable[..., None]) -> Callable[..., None]:
        specs = [spec for spec in _SPECS if command in spec.commands]
        own = inspect.signature(function, eval_str=True).parameters.values()
        parameters = [parameter for parameter in own if parameter.name != "options"] + [
            inspect.Parameter(
                spec.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=spec.annotation,
                default=spec.default,
            )
            for spec in specs
        ]

        @functools.wraps(function)
        def with_options(**values: Any) -> None:
            typed = _Typed(**{spec.name: values.pop(spec.name) for spec in specs})
            function(**values, options=typed)

        with_options.__signature__ = inspect.Signature(parameters)
        with_options.__annotations__ = {item.name: item.annotation for item in parameters}
        return with_options

    return decorate


# Each option as the library names it → as typed: how the command line names options in errors.
_FLAGS = {spec.library: spec.flag for spec in _SPECS} | {"seeds": "--seeds"}
# Messages of modules that still name TrainConfig fields in their text ("patience=3"):
# rewritten through the same table (an OptionError carries its options instead).
_OPTION_IN_TEXT = re.compile(
    r"(?<![\w-])("
    + "|".join(name for name in _FLAGS if name in _TRAINING_DEFAULTS or name == "seeds")
    + r")(=(?:None\b)?| >| must\b)"
)
# How the command line types a value the library spells None: --patience 0 turns it off.
_TYPED_NONE = {"patience": "0"}


def _as_typed(error: BaseException) -> str:
    """The message of ``error`` with each option named as typed: ``--lr 0 must be > 0`` for
    the library's ``learning_rate=0.0 must be > 0``."""
    if isinstance(error, OptionError):
        return error.spelled(_typed_spelling)
    return _OPTION_IN_TEXT.sub(_typed_in_text, str(error))


def _typed_in_text(match: re.Match[str]) -> str:
    name, after = match[1], match[2]
    if after == "=None":
        return f"{_FLAGS[name]} {_TYPED_NONE.get(name, 'None')}"
    return _FLAGS[name] + (" " if after == "=" else after)


def _typed_spelling(name: str, value: tuple[object, ...]) -> str:
    """``--lr``, ``--lr 0``, ``--nesterov``, ``--optimizer sgd``: an option as typed (an option
    without a flag keeps the library's spelling)."""
    if name not in _FLAGS:
        return python_spelling(name, value)
    flag = _FLAGS[name]
    if not value:
        return flag
    if isinstance(value[0], bool):
        return flag if value[0] else f"--no-{flag[2:]}"
    if value[0] is None and name in _TYPED_NONE:
        return f"{flag} {_TYPED_NONE[name]}"
    return f"{flag} {_typed_value(value[0])}"


def _typed_value(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return shlex.quote(value)
    if isinstance(value, tuple | list):
        return ",".join(map(_typed_value, value))
    return str(value)


def _torch_threads(
    config: TrainConfig, prepared: PreparedData, hidden: tuple[int, ...]
) -> contextlib.AbstractContextManager[int]:
    """``--threads`` torch threads for the training run (0: chosen by the size of a step)."""
    from softclass.training.threads import choose_threads, torch_threads

    threads = config.threads or choose_threads(
        config.batch_size, (prepared.n_features, *hidden, prepared.n_classes)
    )
    return torch_threads(threads)


def _parse_hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated integers like 7 or 128,128, got {text!r}",
            param_hint="--hidden",
        ) from None
    return widths


def _parse_divisors(items: list[str] | None) -> dict[str, float] | None:
    if not items:
        return None
    divisors = {}
    for item in items:
        column, separator, value = item.rpartition("=")
        try:
            divisors[column] = float(value)
        except ValueError:
            separator = ""
        if not separator or not column:
            raise typer.BadParameter(
                f"expected COLUMN=VALUE like income=100000, got {item!r}", param_hint="--divide"
            )
    return divisors


def _read_options(delimiter: str | None, decimal: str | None, na_values: list[str] | None):
    """``(delimiter, TypingOptions)`` from the data flags (``\\t`` typed as two characters: tab)."""
    from softclass.data import TypingOptions

    if delimiter in ("\\t", "tab"):
        delimiter = "\t"
    return delimiter, TypingOptions(decimal=decimal, na_values=tuple(na_values or ()))


def _prepared_data(
    data: Path | None, typed: _Typed, config: TrainConfig, *, show: bool = True
) -> PreparedData:
    """Read ``data`` (the bundled Iris when None) and prepare it with the data options typed;
    the split follows ``config`` (its validation fraction and seed)."""
    from softclass.data import load_bundled, read_table
    from softclass.jobs.compare import prepare_table

    delimiter, typing = _read_options(typed.delimiter, typed.decimal, typed.na_values)
    data_options = {
        spec.library: value
        for spec, value in _library_values(typed).items()
        if spec.panel == "Data"
        and spec.library not in ("validation_fraction", "delimiter", "decimal", "na_values")
    }
    with (
        err_console.status(f"reading and typing {'the bundled Iris' if data is None else data} …")
        if show and err_console.is_terminal
        else contextlib.nullcontext()
    ):
        table = (
            load_bundled("iris")
            if data is None
            else read_table(data, delimiter=delimiter, typing=typing, raw=True)
        )
        prepared = prepare_table(
            table,
            **data_options,
            validation_fraction=config.validation_fraction,
            seed=config.seed,
            typing=typing,
            source="the bundled Iris" if data is None else str(data),
        )
    if show:
        _print_typing_table(prepared.recipe)
        for warning in prepared.warnings:
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    return prepared


def _library_values(typed: _Typed) -> dict[_Spec, Any]:
    """Each option typed (or with a default of its own), as the library takes it."""
    values = {}
    for spec in _SPECS:
        value = getattr(typed, spec.name)
        if value is not None:
            values[spec] = value if spec.parse is None else spec.parse(value)
    return values


_SHOWN_COLUMNS = 40
"""Rows of the typing table printed; the rest are summarized."""


def _print_typing_table(recipe) -> None:
    """The typing table: each column's type, missing and distinct counts, and what is done."""
    from rich import box
    from rich.table import Table

    classes = ", ".join(recipe.classes[:8]) + (
        f" … and {recipe.n_classes - 8} more" if recipe.n_classes > 8 else ""
    )
    console.print(
        f"{len(recipe.columns)} columns; target {recipe.target!r}: {recipe.n_classes} classes "
        f"({classes}); {recipe.n_features} features",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("column", "type", "missing", "distinct", "use"):
        table.add_column(column, justify="right" if column in ("missing", "distinct") else "left")
    for info in recipe.columns[:_SHOWN_COLUMNS]:
        kind = info.type.kind
        if kind == "number" and info.type.decimal != ".":
            kind += f" (decimal {info.type.decimal!r})"
        elif kind == "date" and info.type.date_format:
            kind += f" ({info.type.date_format})"
        style = {"target": "bold", "dropped": "dim"}.get(info.role, "")
        table.add_row(
            escape(info.name),
            kind,
            str(info.n_missing),
            str(info.n_distinct),
            f"[{style}]{escape(info.action)}[/]" if style else escape(info.action),
        )
    console.print(table)
    if len(recipe.columns) > _SHOWN_COLUMNS:
        console.print(
            f"  … and {len(recipe.columns) - _SHOWN_COLUMNS} more columns (--json lists all)",
            highlight=False,
        )


def _draws_figures(command: Callable[..., None]) -> Callable[..., None]:
    """Run ``command`` with figure helpers started first (they import matplotlib and load its
    fonts while the command imports torch and trains; see
    :mod:`softclass.evaluation.figure_pool`). Not under torchrun, where only rank 0 draws."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        from softclass.evaluation.figure_pool import figure_pool

        with figure_pool(enabled=int(os.environ.get("WORLD_SIZE", "1")) <= 1):
            command(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _distributed_context(device: str) -> Iterator[DistContext]:
    """Join the torchrun process group if there is one (else a single-process context)."""
    from softclass.training import distributed

    context = distributed.setup(device)
    try:
        yield context
    finally:
        distributed.teardown(context)


class _ProgressBars:
    """A rich progress bar per training run, with its time left, on stderr; the library only
    sends events."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            "{task.fields[loss]}",
            TimeElapsedColumn(),
            "ETA",
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            disable=not enabled,
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> _ProgressBars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.__exit__(*exc_info)

    def __call__(self, event: ProgressEvent) -> None:
        if event.label not in self.tasks:
            self.tasks[event.label] = self.progress.add_task(
                f"design {event.label}", total=event.epochs, loss=""
            )
        loss = event.record.validation_loss
        self.progress.update(
            self.tasks[event.label],
            completed=event.epochs if event.finished else event.epoch,
            loss="" if loss is None else f"loss {loss:.4f}",
        )


def _run_context(data: Path | None) -> RunContext:
    """The table's name and the command as typed, for report.html."""
    import shlex

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


_COMPARE_HELP = "\n\n".join(
    (
        "Train the same network with designs A-D on the same data, split and seed, and compare "
        "them on the same held-out rows.",
        _DEFAULTS_HELP,
        "Under torchrun (torchrun --nproc-per-node N -m softclass compare ...) every design "
        "trains data parallel on the N processes; rank 0 alone writes and prints.",
    )
)


@app.command(cls=_Command, help=_COMPARE_HELP)
@_draws_figures
@_with_options("compare")
def compare(
    data: _DataArgument = None,
    seeds: Annotated[
        int, typer.Option("--seeds", metavar="K", help="Seeds to run (seed, seed+1, ...).")
    ] = 1,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="DIR", help="Output directory (default runs/compare-DATE-TIME)."
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    design: Annotated[
        str, typer.Option("--design", metavar="LETTERS", help="Designs to train, e.g. ABCD or AB.")
    ] = "ABCD",
    stopping: Annotated[
        float,
        typer.Option(
            "--stopping",
            metavar="FRACTION",
            help="With --patience: share of the training rows held out to choose the epoch on, "
            "apart from the validation rows (three-way split).",
        ),
    ] = TABLE.stopping_fraction,
    *,
    options: _Typed,
) -> None:
    """Train the same network with designs A-D on the same data, split and seed; compare them."""
    import datetime
    import json

    from softclass.jobs.compare import compare as run_comparison
    from softclass.jobs.compare import describe_written

    network = _resolve(_is_bundled_iris(data), options)
    config = network.config
    with _distributed_context(config.device) as context:
        prepared = _prepared_data(data, options, config, show=context.is_main and not json_output)
        if out is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"compare-{stamp}"
        try:
            with (
                _torch_threads(config, prepared, network.hidden),
                _ProgressBars(enabled=context.is_main and not json_output) as bars,
            ):
                result = run_comparison(
                    prepared,
                    design,
                    config,
                    hidden=network.hidden,
                    activation=network.activation,
                    seeds=seeds,
                    out_dir=out,
                    progress=bars,
                    distributed=context,
                    stopping_fraction=stopping,
                    defaults=network.defaults,
                    context=_run_context(data),
                )
        except Interrupted as interrupt:
            interrupt.kept = describe_written(out)
            raise
        if not context.is_main:
            return
        if json_output:
            report = {"columns": prepared.recipe.typing_table(), **result.to_dict()}
            _write_stdout(json.dumps(report) + "\n")
            return
        _print_comparison(result, "the bundled Iris" if data is None else str(data))


def _print_comparison(result: ComparisonResult, source: str) -> None:
    """The run in brief: what trained on which rows, the common metrics, each design's own loss,
    the agreement of A with B, D and C, and the seed statistics."""
    from rich import box
    from rich.table import Table

    from softclass.mlp.designs import get_design

    seeds = len(result.seeds)
    shape = result.model_config
    config = result.config
    console.print(
        f"[bold]{' vs '.join(result.designs)}[/] on {escape(source)}: MLP {shape.n_features}-"
        f"{'-'.join(str(w) for w in shape.hidden)}-{shape.n_classes} {shape.activation}, "
        f"{config.optimizer} lr {config.learning_rate:g}, batch {config.batch_size}, "
        + (f"mean of {seeds} seeds" if seeds > 1 else f"seed {result.seeds[0]}")
        + ("" if result.defaults is None else f" ({result.defaults.name} defaults)"),
        highlight=False,
        soft_wrap=True,
    )
    stopping = (
        f", {result.n_stopping} stopping rows chose the epoch (patience {config.patience})"
        if result.n_stopping
        else ""
    )
    console.print(
        f"rows: {result.n_train} trained the weights{stopping}, {result.n_validation} validation "
        "rows gave every number below",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    columns = ("design", "acc", "log loss", "Brier", "ECE", "own loss", "train", "val", "epochs")
    for column in columns:
        table.add_column(column, justify="left" if "design" in column else "right", no_wrap=True)
    for name in result.designs:
        numbers = result.summary(name)
        best = [run.history.best_epoch for run in result.runs_of(name)]
        epochs = f"{numbers['epochs']:.0f}"
        if seeds == 1 and best[0] is not None:
            epochs = f"{best[0]}/{epochs}"
        table.add_row(
            name,
            f"{numbers['validation_accuracy']:.3f}",
            f"{numbers['validation_log_loss']:.4f}",
            f"{numbers['validation_brier']:.4f}",
            f"{numbers['validation_ece']:.3f}",
            _LOSS_LABELS.get(get_design(name).loss_name, get_design(name).loss_name),
            f"{numbers['train_loss']:.4f}",
            f"{numbers['validation_loss']:.4f}",
            epochs,
        )
    console.print(table)
    seconds = sum(run.metrics["seconds"] for run in result.runs)
    console.print(
        "  acc, log loss, Brier, ECE: the same measure for every design, on the validation "
        "rows. own loss: the design's training loss (C's is squared error) on the training and "
        "validation rows, not comparable across designs"
        + (". epochs: best/trained" if result.n_stopping and seeds == 1 else "")
        + f". {seconds:.1f} s of training.",
        highlight=False,
        soft_wrap=True,
    )
    shown = [a for a in result.agreements if a.seed == result.seeds[0]]
    for agreement in shown:
        colour = "yellow" if agreement.verdict == "different" else "green"
        console.print(
            f"{agreement.first} vs {agreement.second}: [{colour}]{agreement.verdict}[/] "
            f"({escape(agreement.explanation())})",
            highlight=False,
            soft_wrap=True,
        )
    if shown:
        console.print(f"  how: {escape(shown[0].method)}", highlight=False, soft_wrap=True)
    statistics = result.seed_statistics()
    if statistics is not None:
        _print_seed_statistics(statistics, len(result.seeds))
    if result.out_dir is not None:
        console.print(
            f"models, history.json, report.json, report.html and plots written to {result.out_dir}",
            highlight=False,
            soft_wrap=True,
        )


# Verdicts of softclass.evaluation.stats, shortened so the paired table fits 80 columns.
_SHORT_VERDICTS = {"equal to float tolerance": "rounding", "not significant": "not signif."}
# Each design's own loss, named briefly for the table (the report names it in full).
_LOSS_LABELS = {"cross_entropy": "CE", "nll": "NLL", "mse": "sq. error", "mcee": "MCEE"}


def _print_seed_statistics(statistics: dict, n_seeds: int) -> None:
    """Per design mean ± 95 % interval over the seeds, then the paired comparisons, both on the
    common metrics only."""
    from rich import box
    from rich.table import Table

    from softclass.evaluation.stats import COMMON_METRICS

    summary, pairs = statistics["summary"], statistics["pairs"]
    table = Table(
        title=f"{n_seeds} seeds, validation rows: mean ± 95 % interval",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("design", no_wrap=True)
    for metric in summary:
        table.add_column(COMMON_METRICS[metric].label, justify="right", no_wrap=True)
    designs = next(iter(summary.values())).keys() if summary else []
    for name in designs:
        table.add_row(
            name,
            *(
                f"{summary[metric][name]['mean']:.4f} ± {summary[metric][name]['half_width']:.4f}"
                for metric in summary
            ),
        )
    console.print(table)
    if not pairs:
        return
    reference = next(iter(designs), "")
    paired = Table(
        title=f"{reference} against each design, paired over the same seeds (a - b)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("pair", "metric", "mean diff", "95 % interval", "p", "verdict"):
        paired.add_column(
            column, justify="left" if column in ("pair", "metric") else "right", no_wrap=True
        )
    for metric, comparisons in pairs.items():
        for pair in (pair for pair in comparisons if pair["a"] == reference):
            paired.add_row(
                f"{pair['a']} vs {pair['b']}",
                COMMON_METRICS[metric].label,
                f"{pair['mean_difference']:+.1e}",
                escape(f"[{pair['low']:+.1e}, {pair['high']:+.1e}]"),
                f"{pair['p_value']:.2g}",
                _SHORT_VERDICTS.get(pair["verdict"], pair["verdict"]),
            )
    console.print(paired)
    console.print(
        "  common metrics only (a design's own loss is never paired: C's squared error is not a "
        "cross entropy); rounding: every paired difference within float tolerance (1e-5); "
        "every pair of designs in report.json",
        highlight=False,
        soft_wrap=True,
    )


_TRAIN_HELP = "\n\n".join(
    (
        "Train one design on a table and save the model (with checkpoints, resumable).",
        _DEFAULTS_HELP,
        "Under torchrun (torchrun --nproc-per-node N -m softclass train ...) the N processes "
        "train together (DistributedDataParallel; gloo on CPU, nccl on CUDA) and rank 0 alone "
        "writes and prints.",
    )
)


@app.command(cls=_Command, help=_TRAIN_HELP)
@_draws_figures
@_with_options("train")
def train(
    data: Annotated[Path, typer.Argument(help="CSV or Parquet training table.", metavar="DATA")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Model directory to write.")],
    design: Annotated[str, typer.Option("--design", metavar="LETTER", help="A, B, C or D.")] = "A",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the checkpoint in --out.")
    ] = False,
    *,
    options: _Typed,
) -> None:
    """Train one design on a table and save the model (with checkpoints, resumable)."""
    from softclass.errors import TrainingDiverged
    from softclass.jobs.train_predict import describe_kept, train_to_directory
    from softclass.mlp.designs import get_design

    chosen = get_design(design)
    network = _resolve(_is_bundled_iris(data), options)
    config = network.config
    with _distributed_context(config.device) as context:
        prepared = _prepared_data(data, options, config, show=context.is_main)
        try:
            with (
                _torch_threads(config, prepared, network.hidden),
                _ProgressBars(enabled=context.is_main) as bars,
            ):
                result = train_to_directory(
                    prepared,
                    chosen,
                    out,
                    config,
                    hidden=network.hidden,
                    activation=network.activation,
                    resume=resume,
                    progress=bars,
                    distributed=context,
                    context=_run_context(data),
                )
        except Interrupted as interrupt:
            interrupt.kept = describe_kept(out)
            raise
        except TrainingDiverged as diverged:
            raise TrainingDiverged(f"{diverged}; {describe_kept(out)}") from diverged
        if not context.is_main:
            return
        ranks = f" on {context.world_size} ranks ({context.backend})" if context.enabled else ""
        history = result.history
        kept = history.records[(history.best_epoch or history.epochs) - 1]
        console.print(
            f"design {chosen.name} ({chosen.title}): {history.epochs} epochs{ranks}, "
            f"training loss {kept.train_loss:.4f}{_measured_rows(history, config)}; model "
            f"saved to {out}",
            highlight=False,
            soft_wrap=True,
        )


def _measured_rows(history, config: TrainConfig) -> str:
    """What ``train`` measured beside the training loss, each number named by its rows: the
    validation rows, or (``--validation 0``) none, the report then measuring the training rows."""
    kept = history.records[(history.best_epoch or history.epochs) - 1]
    if kept.validation_loss is None:
        text = (
            "; no validation rows (--validation 0): report.html measures the model on its "
            "training rows, which is optimistic"
        )
    else:
        text = (
            f", validation loss {kept.validation_loss:.4f}, accuracy {kept.validation_accuracy:.3f}"
        )
    if history.best_epoch is not None:
        chosen_on = (
            "the training loss"
            if config.monitor == "train_loss"
            else "these validation rows, so their numbers are optimistic; softclass compare "
            "keeps separate rows for that"
        )
        text += f" (epoch {history.best_epoch} kept: chosen on {chosen_on})"
    return text


_PREDICT_HELP = "\n\n".join(
    (
        "Class probabilities and the predicted class name for each row of a table.",
        "Probability columns are named by their classes (proba_NAME when a class is called row "
        "or predicted, or would collide with another column).",
    )
)


@app.command(cls=_Command, help=_PREDICT_HELP)
def predict(
    model_dir: Annotated[
        Path, typer.Argument(help="Model directory written by train/compare.", metavar="MODEL_DIR")
    ],
    data: Annotated[Path, typer.Argument(help="CSV or Parquet table of raw rows.", metavar="DATA")],
    output_format: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", help="Write to this file instead of stdout.")
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="CSV: write class names exactly as trained. By default a name starting with "
            "= + - @ (a spreadsheet formula) gets a leading ' and control characters become "
            "U+FFFD.",
        ),
    ] = False,
    on_error: Annotated[
        str,
        typer.Option(
            "--on-error",
            help="A row with a bad cell: error (stop) or skip (report it, predict the others).",
        ),
    ] = "error",
    unknown: _Unknown = "ignore",
    accuracy: Annotated[
        bool,
        typer.Option(
            "--accuracy",
            help="Measure accuracy on the target column (else the column is ignored).",
        ),
    ] = False,
    delimiter: _Delimiter = None,
) -> None:
    """Class probabilities and the predicted class name for each row of a table.

    The row column counts rows as every message does: header = row 1, first data row = 2.
    """
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from softclass.data import read_table
    from softclass.errors import ConfigError
    from softclass.io import atomic_write_text
    from softclass.jobs.output import spreadsheet_safe
    from softclass.jobs.store import load_model
    from softclass.jobs.train_predict import predict_table

    if output_format not in ("csv", "json"):
        raise ConfigError(f"--format {output_format!r}: expected csv or json")
    saved = load_model(model_dir)
    delimiter, _ = _read_options(delimiter, None, None)
    live = err_console.is_terminal  # progress only on a terminal: a pipe gets just the results
    with err_console.status(f"reading {data} …") if live else contextlib.nullcontext():
        table = read_table(data, delimiter=delimiter, raw=True)
    with Progress(
        "predicting",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not live,
    ) as bar:
        task = bar.add_task("predict", total=table.height)
        prediction = predict_table(
            saved,
            table,
            on_error=on_error,
            unknown=unknown,
            accuracy=accuracy,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            source=str(data),
        )
    for warning in prediction.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if output_format == "csv":
        text = (prediction.table if raw else spreadsheet_safe(prediction.table)).write_csv()
    else:
        text = json.dumps(prediction.table.to_dicts(), indent=1) + "\n"
    if output is None:
        _write_stdout(text)
    else:
        try:
            atomic_write_text(output, text)
        except Interrupted as interrupt:
            interrupt.kept = f"nothing was written to {output} (an earlier file there is kept)"
            raise
    if prediction.accuracy is not None:
        counted = prediction.table.height - prediction.unknown_labels
        err_console.print(
            f"accuracy {prediction.accuracy:.3f} on {counted} rows with a known class in "
            f"{saved.recipe.target!r}",
            highlight=False,
            soft_wrap=True,
        )
