"""The options of ``compare`` and ``train``, declared once (:data:`_SPECS`), their parsing, and
how an error names an option as typed (``--lr 0`` for the library's ``learning_rate=0``)."""

from __future__ import annotations

import functools
import inspect
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from softclass.errors import ConfigError, OptionError, python_spelling
from softclass.jobs.defaults import DEMONSTRATION, TABLE
from softclass.limits import DEFAULT_LIMITS
from softclass.option_table import Option, names_text, options_of
from softclass.training.config import TrainConfig

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
    "{designs}": ("softclass.mlp.designs", "DESIGNS"),
    "{reference}": ("softclass.mlp.designs", "REFERENCE"),
    "{activations}": ("softclass.mlp.activations", "ACTIVATIONS"),
    "{optimizers}": ("softclass.mlp.optimizers", "OPTIMIZERS"),
    "{normalizations}": ("softclass.data.recipe", "NORMALIZATIONS"),
    "{missing}": ("softclass.data.recipe", "MISSING_POLICIES"),
}


def _with_registry_names(params: list) -> list:
    """Each ``{activations}``-like placeholder of an option's help replaced by the names of its
    registry (imported only now: listing or parsing a command's options)."""
    import importlib

    for param in params:
        text = getattr(param, "help", None) or ""
        for placeholder, (module, registry) in _REGISTRY_NAMES.items():
            if placeholder in text:
                names = getattr(importlib.import_module(module), registry)
                text = text.replace(
                    placeholder, names if isinstance(names, str) else names_text(names)
                )
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


_DATA = {"panel": "Data"}
_TRAINERS = ("compare", "train")
_READERS = (*_TRAINERS, "predict")  # the options of reading a table, which predict shares
# Option → its value's type as typed (a pair is typed as text and parsed).
_TYPED_KINDS = {"integer": int, "number": float, "flag": bool, "choice": str, "pair": str}


def _typed_parser(parse: Callable[[str], Any], flag: str) -> Callable[[str], Any]:
    """``parse``, its ValueError shown as an error of ``flag``."""

    def parse_typed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint=flag) from None

    return parse_typed


def _positive(flag: str) -> Callable[[float], float]:
    def positive(value: float) -> float:
        if value <= 0:
            raise ConfigError(f"{flag} {value}: expected a positive number")
        return value

    return positive


def _config_spec(library: str, declared: Option) -> _Spec:
    """The spec of TrainConfig field ``library``, from its option
    (:mod:`softclass.option_table`)."""
    flag = declared.flag.split("/")[0]
    return _spec(
        flag[2:].replace("-", "_"),
        declared.flag,
        _TYPED_KINDS[declared.rule.kind] | None,
        declared.help,
        library=library,
        metavar=declared.metavar,
        parse=None if declared.parse is None else _typed_parser(declared.parse, flag),
        commands=declared.commands,
        panel=declared.panel,
    )


_SPECS: tuple[_Spec, ...] = (
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
    *(_config_spec(name, declared) for name, declared in options_of(TrainConfig).items()),
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
        "{normalizations}. Default: "
        f"{DEMONSTRATION.normalization} on the bundled Iris, {TABLE.normalization} on your table.",
        library="normalization",
        metavar="NAME",
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
        "bins",
        "--bins",
        int,
        "Quantile bins of each number column, each one more input (0: none). Default: "
        f"{DEMONSTRATION.bins} on the bundled Iris, {TABLE.bins} on your table.",
        metavar="N",
        **_DATA,
    ),
    _spec(
        "missing",
        "--missing",
        str,
        "Missing cells: {missing}.",
        metavar="NAME",
        default="impute",
        **_DATA,
    ),
    _Spec("delimiter", "--delimiter", "delimiter", _Delimiter, commands=_READERS, panel="Data"),
    *(
        _spec(
            name,
            "--" + name.replace("_", "-"),
            kind,
            help_text,
            metavar="N",
            default=getattr(DEFAULT_LIMITS, name),
            parse=_positive("--" + name.replace("_", "-")),
            commands=commands,
            **_DATA,
        )
        for name, kind, help_text, commands in (
            ("max_bytes", int, "Most bytes a .gz/.bz2/.zst table may decompress to.", _READERS),
            (
                "max_ratio",
                float,
                "Most a compressed table may grow when decompressed (times).",
                _READERS,
            ),
            ("max_columns", int, "Most columns a table may have.", _READERS),
            ("max_cells", int, "Most rows × columns a table may have.", _READERS),
            ("max_classes", int, "Most distinct classes the target may have.", _TRAINERS),
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
    *(  # the columns a user types by name
        _spec(name, f"--{name}", list[str] | None, help_text, metavar="COLUMN", **_DATA)
        for name, help_text in {
            "categorical": "Read this column as text: each value a category (repeat).",
            "numeric": "Read this column as numbers: other cell text is missing (repeat).",
            "keep": "Keep this column as a feature even if it looks like an ID.",
            "drop": "Leave this column out (repeat).",
        }.items()
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
    _Spec("unknown", "--unknown", "unknown", _Unknown, "ignore", commands=_READERS, panel="Data"),
    _spec(
        "memory",
        "--memory",
        str | None,
        "Most memory a run may take, e.g. 2GB or 1.5GiB (each rank's, under torchrun): a "
        "larger Parquet or CSV table is streamed from disk in chunks, its sample and window "
        "sized to stay under it (default: half the machine's memory).",
        metavar="SIZE",
        parse=_typed_parser(lambda text: _parse_memory(text), "--memory"),
        commands=("train",),
        **_DATA,
    ),
    _spec(
        "sync",
        "--sync",
        str | None,
        "How torchrun ranks keep in step on a streamed table: data (the ranks share their "
        "chunks and each takes every step: one process's weights, bit for bit) or gradients "
        "(each steps on its own rows, one all-reduce per step). Default: auto, gradients on "
        "CUDA, else data.",
        metavar="MODE",
        parse=_typed_parser(lambda text: _parse_sync(text), "--sync"),
        commands=("train",),
    ),
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


def _parse_memory(text: str) -> int:
    """``--memory``'s bytes (:func:`softclass.data.stream.parse_memory`)."""
    from softclass.data.stream import parse_memory

    return parse_memory(text)


def _parse_sync(text: str) -> str:
    """``--sync``'s mode (:data:`softclass.training.streamed.SYNC_MODES`)."""
    from softclass.training.streamed import SYNC_MODES

    if text not in SYNC_MODES:
        raise ValueError(f"{text!r}: expected one of {', '.join(SYNC_MODES)}")
    return text
