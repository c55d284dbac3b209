"""The HTML report of a run: one self-contained file (figures inline as PNG), made with Jinja2.

:func:`render_report` takes plain inputs — the run's ``report.json`` dictionary, and for each
design the first seed's history, confusion matrix, calibration and held-out probabilities — and
returns the page and its figures. Every number the page shows that ``report.json`` also holds is
read from that dictionary and tagged with its path (``data-json="designs.A.mean_over_seeds.
validation_accuracy"``, full-precision ``data-value``), so a test can check the two agree. The
page needs no network: no script, font or image is fetched (the template is in
``templates/report.html.j2``).
"""

from __future__ import annotations

import base64
import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
import torch
from markupsafe import Markup

from softclass.evaluation import metric_table, metrics, plots
from softclass.evaluation.figure_pool import FigureJob, render_figures
from softclass.evaluation.stats import common_metrics
from softclass.evaluation.verdicts import verdict_sentences
from softclass.mlp.designs import get_design
from softclass.version import __version__

# Up to this many classes the per-class tables are open; beyond, folded (still in the page).
OPEN_TABLE_MAX_CLASSES = 12
TOP_CONFUSIONS = 15  # rows of the largest-confusions table
WORST_ROWS = 10  # rows of the worst-predicted table


def _styles(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Each design's (colour, line style) from its registry entry, for the figures."""
    return {name: (get_design(name).color, get_design(name).linestyle) for name in names}


# Row parts of a run, and what each is used for.
ROW_PURPOSES = {
    "train": "fit the weights and the preprocessing (normalisation, encodings)",
    "validation": "held out from training: the metrics on held-out rows are measured here",
    "test": "held out from training and from choosing the epoch: final metrics",
}


@dataclass(frozen=True)
class RunContext:
    """What the run was, as the user asked for it (the command line fills it in).

    Attributes:
        table: the table's name as given (a path, "bundled iris").
        command: the command line that reproduces the run, or None when run from Python.
        columns: a column typing summary, one dict per column (keys become table headers),
            when the data layer provides one; None: the report derives one from the recipe.
    """

    table: str = "a table given in code"
    command: str | None = None
    columns: Sequence[Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class DesignDetail:
    """One design's first-seed results, for the figures and per-class tables.

    Attributes:
        name: "A".."D"; title, loss_name: as the design registry names them.
        history: its training history (``column(name)`` per epoch).
        confusion: int64 (C, C) on the held-out rows.
        calibration: on the held-out rows.
        probabilities: float (N, C) on the held-out rows; targets: int64 (N,).
    """

    name: str
    title: str
    loss_name: str
    history: plots.History
    confusion: torch.Tensor
    calibration: metrics.Calibration
    probabilities: torch.Tensor
    targets: torch.Tensor


@dataclass(frozen=True)
class ReportInput:
    """Everything :func:`render_report` needs, as plain data.

    Attributes:
        kind: "compare" or "train".
        summary: the run's ``report.json`` dictionary (``ComparisonResult.to_dict()``).
        designs: first-seed details of every design, in order.
        target: the class column; class_names: C names in index order.
        columns: column typing rows (see :class:`RunContext`).
        held_out: which part of ``summary["rows"]`` the held-out metrics come from.
        patience: early stopping patience (None: off); the page says which rows chose the epoch.
        bands: per metric, per design, the per-epoch mean and 95 % band over seeds, or None.
        context: the table's name and the command.
        notes: lines the user should read (ignored columns, dropped rows).
        held_out_rows: per held-out row, every cell as the table had it (column name → text
            as read), shown beside the worst-predicted rows; empty: none shown.
        held_out_row_numbers: per held-out row, its row number in the table as ``predict`` and
            the error messages count it (header = row 1); empty: rows not from a table.
    """

    kind: str
    summary: Mapping[str, Any]
    designs: Sequence[DesignDetail]
    target: str
    class_names: Sequence[str]
    columns: Sequence[Mapping[str, Any]]
    held_out: str = "validation"
    patience: int | None = None
    bands: Mapping[str, Any] | None = None
    context: RunContext = field(default_factory=RunContext)
    notes: Sequence[str] = ()
    held_out_rows: Sequence[Mapping[str, str]] = ()
    held_out_row_numbers: Sequence[int] = ()


@dataclass(frozen=True)
class RenderedReport:
    """The page and its figures (name → PNG bytes, also embedded in the page)."""

    html: str
    figures: dict[str, bytes]


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("softclass.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["fmt"] = format_number
    return environment


def format_number(value: Any, spec: str = ".4f") -> str:
    """``value`` formatted with ``spec``; None or a non-finite number gives "—"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)


def json_at(document: Any, path: str) -> Any:
    """The value at a dotted path of a JSON document: ``"designs.A.per_seed.0.epochs"``."""
    value = document
    for key in path.split("."):
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def _figure(name: str, png: bytes, alt: str, caption: str) -> dict[str, Any]:
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return {"id": f"fig-{name}", "src": Markup(source), "alt": alt, "caption": caption}


def _rows_phrase(summary: Mapping[str, Any], part: str) -> str:
    return f"the {summary['rows'][part]} {part} rows"


def _design_sections(
    inputs: ReportInput, caption: str, jobs: list[FigureJob]
) -> list[dict[str, Any]]:
    """Per design: per-class table, confusion matrices (or top confusions), ROC and PR (its
    figure appended to ``jobs``; the section's ``curve_figure`` names it until it is drawn)."""
    sections = []
    n_classes = len(inputs.class_names)
    rows = _rows_phrase(inputs.summary, inputs.held_out)
    for detail in inputs.designs:
        scores = metrics.class_scores(detail.confusion)
        curves = metrics.one_vs_rest_curves(detail.probabilities, detail.targets)
        per_class = [
            {
                "name": name,
                "precision": float(scores.precision[index]),
                "recall": float(scores.recall[index]),
                "f1": float(scores.f1[index]),
                "support": int(scores.support[index]),
                "roc_auc": float(curves.roc_auc[index]),
                "average_precision": float(curves.average_precision[index]),
            }
            for index, name in enumerate(inputs.class_names)
        ]
        macro = scores.macro()
        finite_auc = curves.roc_auc[curves.roc_auc.isfinite()]
        finite_ap = curves.average_precision[curves.average_precision.isfinite()]
        macro["roc_auc"] = float(finite_auc.mean()) if finite_auc.numel() else math.nan
        macro["average_precision"] = float(finite_ap.mean()) if finite_ap.numel() else math.nan
        name = f"curves-{detail.name}"
        jobs.append(
            FigureJob(
                name,
                "roc_pr_figure",
                (curves, inputs.class_names),
                {"title": f"design {detail.name}: ", "caption": caption},
                weight=2,
            )
        )
        curve_figure = (  # drawn with the other figures, then made an <img> (render_report)
            name,
            f"one-vs-rest ROC and precision-recall curves of design {detail.name}",
            f"One-vs-rest ROC (left) and precision-recall (right) curves of design {detail.name} "
            f"on {rows}: each class's probability ranks the rows against all other classes.",
        )
        confusions = [
            {
                "true": inputs.class_names[cell.true],
                "predicted": inputs.class_names[cell.predicted],
                "count": cell.count,
                "share": cell.share_of_true,
            }
            for cell in metrics.top_confusions(detail.confusion, TOP_CONFUSIONS)
        ]
        sections.append(
            {
                "worst_rows": _worst_rows(detail, inputs),
                "name": detail.name,
                "title": detail.title,
                "loss_name": detail.loss_name,
                "per_class": per_class,
                "macro": macro,
                "open_table": n_classes <= OPEN_TABLE_MAX_CLASSES,
                "matrix_shown": n_classes <= plots.CONFUSION_MAX_CLASSES,
                "counts": _heat_rows(detail.confusion, inputs.class_names, normalised=False),
                "normalised": _heat_rows(detail.confusion, inputs.class_names, normalised=True),
                "curve_figure": curve_figure,
                "top_confusions": confusions,
            }
        )
    return sections


def _worst_rows(detail: DesignDetail, inputs: ReportInput) -> list[dict[str, Any]]:
    """The ``WORST_ROWS`` held-out rows with the lowest probability on their true class (ties:
    lower position first): the row's number in the table (header = row 1; without a table, its
    position among the held-out rows from 1), classes, probabilities, cells as read."""
    on_target = detail.probabilities.double().gather(1, detail.targets.long().unsqueeze(1))[:, 0]
    on_target = torch.nan_to_num(on_target, nan=-1.0)  # a diverged model's rows come first
    order = on_target.argsort(stable=True)[:WORST_ROWS].tolist()
    predicted = detail.probabilities.argmax(dim=1)
    rows = []
    for position in order:
        guess = int(predicted[position])
        rows.append(
            {
                "row": (
                    inputs.held_out_row_numbers[position]
                    if inputs.held_out_row_numbers
                    else position + 1
                ),
                "true": inputs.class_names[int(detail.targets[position])],
                "predicted": inputs.class_names[guess],
                "p_true": float(detail.probabilities[position, detail.targets[position]]),
                "p_predicted": float(detail.probabilities[position, guess]),
                "values": inputs.held_out_rows[position] if inputs.held_out_rows else {},
            }
        )
    return rows


def _heat_rows(
    confusion: torch.Tensor, class_names: Sequence[str], *, normalised: bool
) -> list[dict[str, Any]]:
    """A confusion matrix as table rows of cells with a text and a background shade in [0, 1]
    (counts shaded by the largest count; shares by themselves). Beyond
    ``OPEN_TABLE_MAX_CLASSES`` classes zeros are left blank and shares are whole percents, so 50
    columns fit the page. Empty beyond
    ``plots.CONFUSION_MAX_CLASSES`` classes (the page then shows the largest confusions only)."""
    if len(class_names) > plots.CONFUSION_MAX_CLASSES:
        return []
    counts = confusion.double()
    totals = counts.sum(dim=1, keepdim=True)
    shares = torch.where(totals > 0, counts / totals.clamp_min(1), torch.zeros_like(counts))
    shades = shares if normalised else counts / max(float(counts.max()), 1.0)
    if len(class_names) <= OPEN_TABLE_MAX_CLASSES:
        texts = (
            [[f"{value:.2f}" for value in row] for row in shares.tolist()]
            if normalised
            else [[str(int(value)) for value in row] for row in counts.tolist()]
        )
    else:  # many narrow cells: empty cells stay blank, shares in whole percent
        texts = (
            [[f"{value:.0%}"[:-1] if value > 0 else "" for value in row] for row in shares.tolist()]
            if normalised
            else [
                [str(int(value)) if value > 0 else "" for value in row] for row in counts.tolist()
            ]
        )
    rows = []
    for index, (name, row_texts, row_shades, row_shares, row_counts) in enumerate(
        zip(class_names, texts, shades.tolist(), shares.tolist(), counts.tolist(), strict=True)
    ):
        cells = [
            {
                "text": text,
                "shade": round(shade, 3),
                "dark": shade > 0.55,
                "title": f"true {name}, predicted {class_names[column]}: {int(count)} rows "
                f"({share:.0%} of {name})",
                "diagonal": column == index,
            }
            for column, (text, shade, share, count) in enumerate(
                zip(row_texts, row_shades, row_shares, row_counts, strict=True)
            )
        ]
        rows.append({"name": name, "cells": cells})
    return rows


def render_report(inputs: ReportInput, extra_figures: Sequence[FigureJob] = ()) -> RenderedReport:
    """Draw the figures and fill the template; nothing is written here.

    The figures are drawn together (:func:`softclass.evaluation.figure_pool.render_figures`:
    by the helper processes when a command started them), with ``extra_figures``, whose PNG
    bytes come back in the result's ``figures`` beside the page's own.

    Raises:
        KeyError: ``inputs.summary`` lacks a number the page shows (a report.json of another
            shape than ``ComparisonResult.to_dict()``).
    """
    summary = inputs.summary
    rows_phrase = _rows_phrase(summary, inputs.held_out)
    caption = f"{inputs.context.table} · target {inputs.target!r} · {rows_phrase}"
    agreements = _first_seed_agreements(summary)
    jobs = _figure_jobs(inputs, caption, rows_phrase, agreements)
    design_sections = _design_sections(inputs, caption, jobs)
    figures = render_figures([*jobs, *extra_figures])
    for section in design_sections:
        name, alt, text = section["curve_figure"]
        section["curve_figure"] = _figure(name, figures[name], alt, text)
    page = (
        _environment()
        .get_template("report.html.j2")
        .render(
            **_page_values(inputs, rows_phrase),
            agreements=agreements,
            design_sections=design_sections,
            figure=lambda name, alt, text: _figure(name, figures[name], alt, text),
            has_figure=lambda name: name in figures,
        )
    )
    return RenderedReport(page, figures)


def _first_seed_agreements(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The agreement rows of the first seed, each with its index and the registry's sentence
    on what the pair is expected to give."""
    return [
        {
            **agreement,
            "index": index,
            "meaning": get_design(agreement["pair"].split("-")[1]).meaning,
        }
        for index, agreement in enumerate(summary["agreement"])
        if agreement["seed"] == summary["seeds"][0]
    ]


def _figure_jobs(
    inputs: ReportInput, caption: str, rows_phrase: str, agreements: Sequence[Mapping[str, Any]]
) -> list[FigureJob]:
    """The page's run-wide figures: loss curves, calibration, the agreement of the first seed's
    pairs and, with several seeds, the seed bands."""
    summary = inputs.summary
    first = {detail.name: detail for detail in inputs.designs}
    styles = _styles(first)
    where = f"{inputs.context.table} · target {inputs.target!r}"
    # The per-epoch held-out loss comes from the rows that chose the epoch when there are some.
    history_rows = summary.get("history_rows", inputs.held_out)
    jobs = [
        FigureJob(
            "loss_curves",
            "loss_curves_figure",
            (
                {name: detail.history for name, detail in first.items()},
                {name: detail.loss_name for name, detail in first.items()},
                f"{where} · training and {history_rows} rows",
            ),
            {"held_out_label": f"{history_rows} rows", "styles": styles},
            weight=len(first),
        ),
        FigureJob(
            "calibration",
            "calibration_figure",
            ({name: detail.calibration for name, detail in first.items()}, caption),
            {"styles": styles},
            weight=2,
        ),
    ]
    if agreements:
        weight_diffs = {
            agreement["pair"].replace("-", " vs "): [
                math.nan if value is None else value for value in agreement["weight_diff_per_epoch"]
            ]
            for agreement in agreements
        }
        jobs.append(
            FigureJob(
                "agreement",
                "agreement_figure",
                (weight_diffs, f"{where} · seed {summary['seeds'][0]}"),
                {"styles": _styles(summary["designs"])},
            )
        )
    if inputs.bands is not None:
        jobs.append(
            FigureJob(
                "seed_bands",
                "seed_bands_figure",
                (inputs.bands, f"{where} · {rows_phrase}, {len(summary['seeds'])} seeds"),
                {"styles": styles},
                weight=len(inputs.bands),
            )
        )
    return jobs


def _page_values(inputs: ReportInput, rows_phrase: str) -> dict[str, Any]:
    """The template's values that need no figure."""
    summary = inputs.summary
    held_out = inputs.held_out
    names = [detail.name for detail in inputs.designs]
    return {
        "kind": inputs.kind,
        "summary": summary,
        "lookup": lambda path: json_at(summary, path),
        "context": inputs.context,
        "target": inputs.target,
        "held_out": held_out,
        "rows_phrase": rows_phrase,
        "row_parts": [
            {"name": name, "count": count, "purpose": _row_purpose(name, inputs)}
            for name, count in summary["rows"].items()
            if count or name in ("train", held_out)  # no stopping rows without --patience
        ],
        "class_rows": _class_rows(inputs),
        "columns": inputs.columns,
        "column_headers": list(inputs.columns[0]) if inputs.columns else [],
        "designs": names,
        "design_titles": {detail.name: detail.title for detail in inputs.designs},
        "loss_names": {detail.name: detail.loss_name for detail in inputs.designs},
        "common": metric_table.METRICS,
        "several_seeds": len(summary["seeds"]) > 1,
        "verdicts": verdict_sentences(summary),
        "epochs": epochs_shown(summary, names),
        "timing": _timing(summary),
        "statistics": summary.get("seed_statistics"),
        "notes": inputs.notes,
        "settings": {"model": summary["model_config"], "training": summary["train_config"]},
        "version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "patience": inputs.patience,
        "history_rows": summary.get("history_rows", held_out),
        "max_matrix_classes": plots.CONFUSION_MAX_CLASSES,
        # how the seed statistics' captions name a metric of report.json
        "metric_labels": {key: f"validation {m.name}" for key, m in common_metrics().items()},
        "bins": len(inputs.designs[0].calibration.counts),
    }


def epochs_shown(summary: Mapping[str, Any], names: Sequence[str]) -> dict[str, str]:
    """Per design, its epochs as the terminal and the page show them: "best/trained" where
    early stopping chose an epoch ("9/19"; with several seeds the means, "9.5/19"), else the
    epochs trained."""

    def mean(values: Sequence[float]) -> str:
        return f"{sum(values) / len(values):.1f}".removesuffix(".0")

    shown = {}
    for name in names:
        runs = summary["designs"][name]["per_seed"]
        trained = mean([run["epochs"] for run in runs])
        best = [run["history"].get("best_epoch") for run in runs]
        shown[name] = trained if None in best else f"{mean(best)}/{trained}"
    return shown


def _timing(summary: Mapping[str, Any]) -> dict[str, Any]:
    """How the page labels the seconds: each design's own, or its share of one batched run; and
    the one-time cost (loading the compiled code) measured apart from training."""
    timing = summary.get("timing") or {}
    together = bool(timing.get("trained_together"))
    return {
        "one_time": timing.get("one_time_seconds"),
        "together": together,
        "label": "seconds (share)" if together else "seconds",
        "help": (
            "the designs trained together in one batched run: each design's seconds are an "
            "equal share of that run's training time"
            if together
            else "each design's own training time"
        ),
    }


def _row_purpose(part: str, inputs: ReportInput) -> str:
    """What a part of the rows is used for: the run's own words (``row_roles`` of report.json)
    when it has them, else ours; held-out rows that also chose the epoch are said to be so."""
    roles = inputs.summary.get("row_roles") or {}
    if part in roles:
        return roles[part]
    purpose = ROW_PURPOSES.get(part, "")
    if part == inputs.held_out and inputs.patience is not None:
        purpose += (
            f"; they also chose the stopping epoch (--patience {inputs.patience}), so the "
            "held-out numbers are somewhat optimistic"
        )
    return purpose


def _class_rows(inputs: ReportInput) -> list[dict[str, Any]]:
    """Per class: rows of each part (from the first design's held-out targets and the summary)."""
    held_out_counts = torch.bincount(
        inputs.designs[0].targets.long().cpu(), minlength=len(inputs.class_names)
    ).tolist()
    return [
        {"index": index, "name": name, "held_out": held_out_counts[index]}
        for index, name in enumerate(inputs.class_names)
    ]
