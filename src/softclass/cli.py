"""The ``softclass`` command line: argument parsing and printing only.

Every command turns its options into calls of the library and prints what comes back. Errors of
softclass's own types are printed as one clear line with a non-zero exit code; ``--debug`` shows
the full traceback instead.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from softclass.errors import SoftclassError, SoftclassWarning
from softclass.version import __version__

if TYPE_CHECKING:
    from softclass.evaluation.report import RunContext
    from softclass.jobs.compare import ComparisonResult, PreparedData
    from softclass.training.distributed import DistContext
    from softclass.training.trainer import ProgressEvent, TrainConfig

app = typer.Typer(
    name="softclass",
    help="Multi-class classification with PyTorch: four output/loss designs, compared.",
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
    """Entry point of the console script: run the app, turning known errors into one line."""
    warnings.showwarning = _show_warning
    try:
        app()
    except (SoftclassError, ValueError, RuntimeError, IndexError, OSError) as error:
        if _state["debug"]:
            raise
        err_console.print(
            "[bold red]error:[/]", escape(str(error)), highlight=False, soft_wrap=True
        )
        sys.exit(2)


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated numbers like 2.5,3.5,1.5, got {text!r}", param_hint=option
        ) from None


@app.command()
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


@app.command()
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
        findings = check_saved_model(saved, read_table(data), rows)
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


@app.command()
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
    Path | None, typer.Argument(help="CSV or Parquet table (default: the bundled Iris).")
]
_Target = Annotated[
    str | None, typer.Option("--target", help="Class column (default: the last column).")
]
_Epochs = Annotated[int, typer.Option("--epochs", help="Passes over the training rows.")]
_Hidden = Annotated[
    str, typer.Option("--hidden", help="Hidden layer widths, comma-separated, e.g. 128,128.")
]
_Activation = Annotated[str, typer.Option("--activation", help="tanh, relu, sigmoid, gelu.")]
_Optimizer = Annotated[str, typer.Option("--optimizer", help="sgd (with momentum) or adam.")]
_LearningRate = Annotated[float, typer.Option("--lr", help="Learning rate.")]
_Momentum = Annotated[float, typer.Option("--momentum", help="SGD momentum.")]
_BatchSize = Annotated[int, typer.Option("--batch-size", help="Rows per optimizer step.")]
_Seed = Annotated[int, typer.Option("--seed", help="Seed of weights, batch order and split.")]
_Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
_Precision = Annotated[str, typer.Option("--precision", help="fp32 or bf16 (autocast).")]
_Normalize = Annotated[str, typer.Option("--normalize", help="zscore, minmax or divide.")]
_Divide = Annotated[
    list[str] | None,
    typer.Option("--divide", help="COLUMN=VALUE divisor for --normalize divide (repeat it)."),
]
_Missing = Annotated[str, typer.Option("--missing", help="error, drop or impute.")]
_Validation = Annotated[
    float, typer.Option("--validation", help="Share of each class held out for validation.")
]
_Patience = Annotated[
    int | None, typer.Option("--patience", help="Early stopping patience in epochs (off if unset).")
]
_Threads = Annotated[
    int,
    typer.Option(
        "--threads",
        help="CPU threads for torch; 0 = torch's default. One is fastest for small networks: "
        "on a shared 2-core machine two threads made Iris training 7x slower (see benchmarks).",
    ),
]


def _set_threads(threads: int) -> None:
    import torch

    if threads < 0:
        raise typer.BadParameter(f"expected 0 or more, got {threads}", param_hint="--threads")
    if threads > 0:
        torch.set_num_threads(threads)


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


def _prepared_data(
    data: Path | None,
    target: str | None,
    normalize: str,
    divide: list[str] | None,
    missing: str,
    validation: float,
    seed: int,
) -> PreparedData:
    from softclass.data import load_bundled, read_table
    from softclass.jobs.compare import prepare_table

    table = load_bundled("iris") if data is None else read_table(data)
    prepared = prepare_table(
        table,
        target,
        normalization=normalize,
        divisors=_parse_divisors(divide),
        missing=missing,
        validation_fraction=validation,
        seed=seed,
    )
    for warning in prepared.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    return prepared


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
    """A rich progress bar per training run, on stderr; the library only sends events."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            "{task.fields[loss]}",
            TimeElapsedColumn(),
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
            loss="" if loss is None else f"val loss {loss:.4f}",
        )


def _run_context(data: Path | None) -> RunContext:
    """The table's name and the command as typed, for report.html."""
    import shlex

    from softclass.evaluation.report import RunContext

    table = "bundled iris" if data is None else str(data)
    return RunContext(table=table, command=shlex.join(["softclass", *sys.argv[1:]]))


def _train_config(**options: object) -> TrainConfig:
    from softclass.training.trainer import TrainConfig

    return TrainConfig(**options)


@app.command()
def compare(
    data: _DataArgument = None,
    target: _Target = None,
    epochs: _Epochs = 100,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds to run (seed, seed+1, ...).")] = 1,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output directory (default runs/compare-<date>-<time>)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    design: Annotated[str, typer.Option("--design", help="Designs to train, e.g. ABCD or AB.")] = (
        "ABCD"
    ),
    hidden: _Hidden = "7",
    activation: _Activation = "tanh",
    optimizer: _Optimizer = "sgd",
    lr: _LearningRate = 0.01,
    momentum: _Momentum = 0.9,
    batch_size: _BatchSize = 16,
    seed: _Seed = 0,
    device: _Device = "auto",
    precision: _Precision = "fp32",
    normalize: _Normalize = "zscore",
    divide: _Divide = None,
    missing: _Missing = "error",
    validation: _Validation = 0.2,
    patience: _Patience = None,
    threads: _Threads = 1,
) -> None:
    """Train the same network with designs A-D on the same data, split and seed; compare them.

    Under ``torchrun --nproc-per-node N -m softclass compare ...`` every design trains data
    parallel on the N processes; rank 0 alone writes and prints.
    """
    import datetime
    import json

    from softclass.jobs.compare import compare as run_comparison

    _set_threads(threads)
    config = _train_config(
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        learning_rate=lr,
        momentum=momentum,
        seed=seed,
        validation_fraction=validation,
        patience=patience,
        device=device,
        precision=precision,
    )
    with _distributed_context(device) as context:
        hidden_widths = _parse_hidden(hidden)
        prepared = _prepared_data(data, target, normalize, divide, missing, validation, seed)
        if out is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"compare-{stamp}"
        with _ProgressBars(enabled=context.is_main and not json_output) as bars:
            result = run_comparison(
                prepared,
                design,
                config,
                hidden=hidden_widths,
                activation=activation,
                seeds=seeds,
                out_dir=out,
                progress=bars,
                distributed=context,
                context=_run_context(data),
            )
        if not context.is_main:
            return
        if json_output:
            sys.stdout.write(json.dumps(result.to_dict()) + "\n")
            return
        _print_comparison(result)


def _print_comparison(result: ComparisonResult) -> None:
    from rich import box
    from rich.table import Table

    from softclass.mlp.designs import get_design

    seeds = len(result.seeds)
    title = (
        f"{' vs '.join(result.designs)}: {result.n_train} training rows, {result.n_validation} "
        f"validation rows, MLP {result.model_config.n_features}-"
        f"{'-'.join(str(w) for w in result.model_config.hidden)}-{result.model_config.n_classes}"
        f" {result.model_config.activation}, {result.config.optimizer}"
        + (f", mean of {seeds} seeds" if seeds > 1 else f", seed {result.seeds[0]}")
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in (
        "design",
        "train\nloss",
        "val\nloss",
        "train\nacc",
        "val\nacc",
        "val log\nloss",
        "val\nBrier",
        "epochs",
        "time",
    ):
        table.add_column(column, justify="left" if column == "design" else "right", no_wrap=True)
    for name in result.designs:
        numbers = result.summary(name)
        table.add_row(
            name,
            f"{numbers['train_loss']:.4f}",
            f"{numbers['validation_loss']:.4f}",
            f"{numbers['train_accuracy']:.3f}",
            f"{numbers['validation_accuracy']:.3f}",
            f"{numbers['validation_log_loss']:.4f}",
            f"{numbers['validation_brier']:.4f}",
            f"{numbers['epochs']:.0f}",
            f"{numbers['seconds']:.1f}s",
        )
    console.print(table)
    for name in result.designs:
        console.print(
            f"  {name}: {get_design(name).title} (loss: {get_design(name).loss_name})",
            highlight=False,
            soft_wrap=True,
        )
    notes = {
        ("A", "B"): "same computation; the fused CE kernel may round differently",
        ("A", "D"): "same loss mathematically, log of a rounded softmax",
        ("A", "C"): "a different loss",
    }
    for agreement in result.agreements:
        if agreement.seed != result.seeds[0] and seeds > 1:
            continue
        pair = (agreement.first, agreement.second)
        loss_part = (
            ""
            if agreement.max_loss_diff is None
            else f", max |Δloss| {agreement.max_loss_diff:.2e}"
        )
        colour = {"identical": "green", "equal to float tolerance": "green"}.get(
            agreement.verdict, "yellow"
        )
        console.print(
            f"{agreement.first} vs {agreement.second}: [{colour}]{agreement.verdict}[/] "
            f"(max |ΔW| {agreement.max_weight_diff:.2e}{loss_part} over "
            f"{len(agreement.weight_diff)} epochs; {notes[pair]})",
            highlight=False,
            soft_wrap=True,
        )
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
_SHORT_VERDICTS = {"equal to float tolerance": "rounding only", "not significant": "not signif."}


def _print_seed_statistics(statistics: dict, n_seeds: int) -> None:
    """Per design mean ± 95 % interval over the seeds, then the paired comparisons."""
    from rich import box
    from rich.table import Table

    names = {"validation_loss": "val loss", "validation_accuracy": "val acc"}
    summary, pairs = statistics["summary"], statistics["pairs"]
    table = Table(
        title=f"{n_seeds} seeds: mean ± 95 % interval",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("design", no_wrap=True)
    for metric in summary:
        table.add_column(names[metric], justify="right", no_wrap=True)
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
    paired = Table(
        title="paired over the same seeds (a - b)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("pair", "metric", "mean diff", "95 % interval", "p", "verdict"):
        paired.add_column(
            column, justify="left" if column in ("pair", "metric") else "right", no_wrap=True
        )
    for metric, comparisons in pairs.items():
        for pair in comparisons:
            paired.add_row(
                f"{pair['a']} vs {pair['b']}",
                names[metric],
                f"{pair['mean_difference']:+.1e}",
                f"[{pair['low']:+.1e}, {pair['high']:+.1e}]",
                f"{pair['p_value']:.2g}",
                _SHORT_VERDICTS.get(pair["verdict"], pair["verdict"]),
            )
    console.print(paired)
    console.print("  rounding only: every paired difference is within float tolerance (1e-5)")


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="CSV or Parquet training table.")],
    out: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
    design: Annotated[str, typer.Option("--design", help="A, B, C or D.")] = "A",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the checkpoint in --out.")
    ] = False,
    target: _Target = None,
    epochs: _Epochs = 100,
    hidden: _Hidden = "7",
    activation: _Activation = "tanh",
    optimizer: _Optimizer = "sgd",
    lr: _LearningRate = 0.01,
    momentum: _Momentum = 0.9,
    batch_size: _BatchSize = 16,
    seed: _Seed = 0,
    device: _Device = "auto",
    precision: _Precision = "fp32",
    normalize: _Normalize = "zscore",
    divide: _Divide = None,
    missing: _Missing = "error",
    validation: _Validation = 0.2,
    patience: _Patience = None,
    threads: _Threads = 1,
) -> None:
    """Train one design on a table and save the model (with checkpoints, resumable).

    Under ``torchrun --nproc-per-node N -m softclass train ...`` the N processes train together
    (DistributedDataParallel; gloo on CPU, nccl on CUDA) and rank 0 alone writes and prints.
    """
    from softclass.jobs.train_predict import train_to_directory
    from softclass.mlp.designs import get_design

    _set_threads(threads)
    chosen = get_design(design)
    with _distributed_context(device) as context:
        config = _train_config(
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            learning_rate=lr,
            momentum=momentum,
            seed=seed,
            validation_fraction=validation,
            patience=patience,
            device=device,
            precision=precision,
        )
        hidden_widths = _parse_hidden(hidden)
        prepared = _prepared_data(data, target, normalize, divide, missing, validation, seed)
        with _ProgressBars(enabled=context.is_main) as bars:
            result = train_to_directory(
                prepared,
                chosen,
                out,
                config,
                hidden=hidden_widths,
                activation=activation,
                resume=resume,
                progress=bars,
                distributed=context,
                context=_run_context(data),
            )
        if not context.is_main:
            return
        ranks = f" on {context.world_size} ranks ({context.backend})" if context.enabled else ""
        last = result.history.records[-1]
        validation_part = (
            ""
            if last.validation_loss is None
            else f", validation loss {last.validation_loss:.4f}, accuracy "
            f"{last.validation_accuracy:.3f}"
        )
        console.print(
            f"design {chosen.name} ({chosen.title}): {result.history.epochs} epochs{ranks}, "
            "training loss "
            f"{last.train_loss:.4f}{validation_part}; model saved to {out}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="Model directory written by train/compare.")],
    data: Annotated[Path, typer.Argument(help="CSV or Parquet table of raw rows.")],
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
) -> None:
    """Class probabilities and the predicted class name for each row of a table.

    Probability columns are named by their classes (``proba_<name>`` when a class is called
    ``row`` or ``predicted`` or would collide with another column).
    """
    import json

    from softclass.data import read_table
    from softclass.errors import ConfigError
    from softclass.io import atomic_write_text
    from softclass.jobs.output import spreadsheet_safe
    from softclass.jobs.store import load_model
    from softclass.jobs.train_predict import predict_table

    if output_format not in ("csv", "json"):
        raise ConfigError(f"--format {output_format!r}: expected csv or json")
    saved = load_model(model_dir)
    prediction = predict_table(saved, read_table(data))
    for warning in prediction.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if output_format == "csv":
        text = (prediction.table if raw else spreadsheet_safe(prediction.table)).write_csv()
    else:
        text = json.dumps(prediction.table.to_dicts(), indent=1) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(output, text)
    if prediction.accuracy is not None:
        err_console.print(
            f"accuracy {prediction.accuracy:.3f} on {prediction.table.height} rows with a "
            f"{saved.recipe.target!r} column",
            highlight=False,
            soft_wrap=True,
        )
