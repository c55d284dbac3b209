"""Terminal tables: the typing table, checker findings, the comparison and its seed statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from softclass.cli.app import console
from softclass.evaluation import metric_table
from softclass.training.config import TrainConfig

if TYPE_CHECKING:
    from softclass.jobs.comparison import ComparisonResult


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


_SHOWN_COLUMNS = 40
"""Rows of the typing table printed; the rest are summarized."""


def _print_typing_table(recipe) -> None:
    """The typing table: each column's type, missing and distinct counts, and what is done."""
    from rich import box
    from rich.table import Table

    classes = ", ".join(recipe.classes[:8]) + (
        f" … and {recipe.n_classes - 8} more" if recipe.n_classes > 8 else ""
    )
    console.line(
        f"{len(recipe.columns)} columns; target {recipe.target!r}: {recipe.n_classes} classes "
        f"({classes}); {recipe.n_features} features"
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


def _print_comparison(result: ComparisonResult, source: str) -> None:
    """The run in brief: what trained on which rows, the common metrics, each design's own loss,
    the agreement of A with B, D and C, and the seed statistics."""

    seeds = len(result.seeds)
    shape = result.model_config
    config = result.config
    from softclass.evaluation.report import epochs_shown

    summary = result.to_dict()
    _print_answer(summary)
    epochs = epochs_shown(summary, result.designs)
    console.line(
        f"[bold]{' vs '.join(result.designs)}[/] on {escape(source)}: MLP {shape.n_features}-"
        f"{'-'.join(str(w) for w in shape.hidden)}-{shape.n_classes} {shape.activation}, "
        f"{config.optimizer} lr {config.learning_rate:g}, batch {config.batch_size}, "
        + (f"label smoothing {config.label_smoothing:g}, " if config.label_smoothing else "")
        + (f"mean of {seeds} seeds" if seeds > 1 else f"seed {result.seeds[0]}")
        + ("" if result.defaults is None else f" ({result.defaults.name} defaults)")
    )
    stopping = (
        f", {result.n_stopping} stopping rows chose the epoch (patience {config.patience})"
        if result.n_stopping
        else ""
    )
    console.line(
        f"rows: {result.n_train} trained the weights{stopping}, {result.n_validation} validation "
        "rows gave every number below"
    )
    console.print(_design_table(result, epochs))
    seconds = sum(run.metrics["seconds"] for run in result.runs)
    _print_wrapped(
        f"  {', '.join(metric.header for metric in metric_table.METRICS)}: the same measure for "
        "every design, on the validation rows. own loss: the design's training loss (C's is "
        "squared error) on the training and validation rows, not comparable across designs"
        + (
            ". epochs: best/trained" + (", means over the seeds" if seeds > 1 else "")
            if "/" in "".join(epochs.values())
            else ""
        )
        + f". {seconds:.1f} s of training"
        + (" (the designs trained together)" if result.trained_together else "")
        + (
            "."
            if result.one_time_seconds is None
            else f"; before it, {result.one_time_seconds:.1f} s loading the compiled code "
            "(not counted in the training time)."
        ),
    )
    shown = [a for a in result.agreements if a.seed == result.seeds[0]]
    for agreement in shown:
        colour = "yellow" if agreement.verdict == "different" else "green"
        console.line(
            f"{agreement.first} vs {agreement.second}: [{colour}]{agreement.verdict}[/] "
            f"({escape(agreement.explanation())})"
        )
    if shown:
        _print_wrapped(f"  how: {shown[0].method}", indent="    ")
    statistics = result.seed_statistics()
    if statistics is not None:
        _print_seed_statistics(statistics, len(result.seeds))
    if result.out_dir is not None:
        console.line(
            f"models, history.json, report.json, report.html and plots written to {result.out_dir}"
        )


def _print_wrapped(text: str, indent: str = "  ") -> None:
    """``text`` wrapped at the terminal's width, its continuation lines indented."""
    import textwrap

    lines = textwrap.wrap(text, width=console.width, subsequent_indent=indent)
    console.line("\n".join(escape(line) for line in lines))


def _print_answer(summary: dict) -> None:
    """The answer first: one plain sentence per compared pair (the first seed's) of a run's
    report.json dictionary, then a blank line; nothing when no pair was compared."""
    from softclass.evaluation.verdicts import verdict_sentences

    verdicts = verdict_sentences(summary)
    for verdict in verdicts:
        _print_wrapped(verdict.sentence)
    if verdicts:
        console.print()


def _design_table(result: ComparisonResult, epochs: dict[str, str]):
    """One row per design: the common metrics on the validation rows, its own loss (labelled by
    its registry entry), and ``epochs`` (:func:`softclass.evaluation.report.epochs_shown`)."""
    from rich import box
    from rich.table import Table

    from softclass.mlp.designs import get_design

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    metrics = metric_table.METRICS
    columns = ("design", *(m.header for m in metrics), "own loss", "train", "val", "epochs")
    for column in columns:
        table.add_column(column, justify="left" if "design" in column else "right", no_wrap=True)
    for name in result.designs:
        numbers = result.summary(name)
        table.add_row(
            name,
            *(f"{numbers[f'validation_{m.key}']:{m.terminal_format}}" for m in metrics),
            get_design(name).label,
            f"{numbers['train_loss']:.4f}",
            f"{numbers['validation_loss']:.4f}",
            epochs[name],
        )
    return table


# Verdicts of softclass.evaluation.stats, shortened so the paired table fits 80 columns.
_SHORT_VERDICTS = {"equal to float tolerance": "rounding", "not significant": "not signif."}


def _print_seed_statistics(statistics: dict, n_seeds: int) -> None:
    """Per design mean ± 95 % interval over the seeds, then the paired comparisons, both on the
    common metrics only."""
    from rich import box
    from rich.table import Table

    from softclass.evaluation.stats import common_metrics

    common = common_metrics()
    summary, pairs = statistics["summary"], statistics["pairs"]
    table = Table(
        title=f"{n_seeds} seeds, validation rows: mean ± 95 % interval",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("design", no_wrap=True)
    for metric in summary:
        table.add_column(common[metric].name, justify="right", no_wrap=True)
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
                common[metric].name,
                f"{pair['mean_difference']:+.1e}",
                escape(f"[{pair['low']:+.1e}, {pair['high']:+.1e}]"),
                f"{pair['p_value']:.2g}",
                _SHORT_VERDICTS.get(pair["verdict"], pair["verdict"]),
            )
    console.print(paired)
    console.line(
        "  common metrics only (a design's own loss is never paired: C's squared error is not a "
        "cross entropy); rounding: every paired difference within float tolerance (1e-5); "
        "every pair of designs in report.json"
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
