"""The options of ``compare`` and ``train``, declared once (:data:`_SPECS`), their parsing, and
how an error names an option as typed (``--lr 0`` for the library's ``learning_rate=0``)."""

from __future__ import annotations

import functools
import inspect
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from softclass.errors import (
    OptionError,
    python_spelling,
)
from softclass.jobs.defaults import DEMONSTRATION, TABLE
from softclass.limits import DEFAULT_LIMITS
from softclass.training.config import BACKENDS, DEVICES, MONITORS, PRECISIONS, TrainConfig

if TYPE_CHECKING:
    pass


_MAX_FLOATS = 1000  # explain prints every value a few times: a screenful, not a file


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    if text.count(",") >= _MAX_FLOATS:
        raise typer.BadParameter(
            f"{text.count(',') + 1:,} values: at most {_MAX_FLOATS:,} are explained",
            param_hint=option,
        )
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated numbers like 2.5,3.5,1.5, got {text!r}", param_hint=option
        ) from None


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
    *(
        _spec(
            name,
            "--" + name.replace("_", "-"),
            kind,
            help_text,
            metavar="N",
            default=getattr(DEFAULT_LIMITS, name),
            **_DATA,
        )
        for name, kind, help_text in (
            ("max_bytes", int, "Most bytes a .gz/.bz2/.zst table may decompress to."),
            ("max_ratio", float, "Most a compressed table may grow when decompressed (times)."),
            ("max_columns", int, "Most columns a table may have."),
            ("max_cells", int, "Most rows × columns a table may have."),
            ("max_classes", int, "Most distinct classes the target may have."),
        )
    ),
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
