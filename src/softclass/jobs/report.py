"""Write a run's ``report.html`` and PNG figures from what ``compare`` (or ``train``) measured.

:func:`write_report` turns a :class:`~softclass.jobs.comparison.ComparisonResult` into the plain
inputs of :func:`softclass.evaluation.report.render_report` (the numbers come from
``result.to_dict()``, the same dictionary as ``report.json``), then writes the page and the
figures the README lists (``loss_curves.png``, ``confusion_matrices.png``, ``calibration.png``,
``seed_bands.png`` with several seeds), each atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from softclass.data import Recipe
from softclass.data.expansion import in_blocks
from softclass.data.messages import row_number
from softclass.data.prepare import PreparedData
from softclass.evaluation.figure_pool import FigureJob
from softclass.evaluation.report import DesignDetail, ReportInput, RunContext, render_report
from softclass.io import atomic_write_bytes, atomic_write_text
from softclass.jobs.comparison import ComparisonResult

REPORT_FILE = "report.html"
# Figures of the page also written as PNG files beside it (name in the page → file name).
PNG_FILES = {
    "loss_curves": "loss_curves.png",
    "calibration": "calibration.png",
    "seed_bands": "seed_bands.png",
}


def held_out_part(data: PreparedData) -> tuple[str, torch.Tensor, torch.Tensor]:
    """The rows the final metrics come from: ("test", ...) when the data has a test part, else
    ("validation", features, targets)."""
    test_features = getattr(data, "test_features", None)
    if test_features is not None:
        return "test", test_features, data.test_targets
    return "validation", data.validation_features, data.validation_targets


def _derived_columns(recipe: Recipe) -> list[dict[str, Any]]:
    """A column typing table from a :class:`softclass.data.Recipe` (feature columns, target)."""
    rows: list[dict[str, Any]] = []
    for feature in recipe.features:
        if feature.kind == "numeric":
            treatment = {
                "zscore": f"z-score: (x - {feature.offset:.4g}) / {feature.scale:.4g}",
                "minmax": f"min-max: (x - {feature.offset:.4g}) / {feature.scale:.4g}",
                "divide": f"divided by {feature.scale:.4g}",
                "robust": f"robust: (x - {feature.offset:.4g}) / {feature.scale:.4g}, smoothly "
                f"clipped to ±{feature.clip or 0:g}",
            }.get(recipe.normalization, f"(x - {feature.offset:.4g}) / {feature.scale:.4g}")
            values = f"{feature.minimum:.4g} … {feature.maximum:.4g} (mean {feature.mean:.4g})"
        else:
            treatment = f"one-hot, {len(feature.categories)} columns"
            values = ", ".join(feature.categories[:6]) + (
                f" … and {len(feature.categories) - 6} more" if len(feature.categories) > 6 else ""
            )
        if feature.fill_value is not None:
            treatment += f"; missing cells filled with {feature.fill_value!r}"
        rows.append(
            {"column": feature.name, "type": feature.kind, "values": values, "use": treatment}
        )
    rows.append(
        {
            "column": recipe.target,
            "type": "target",
            "values": f"{len(recipe.classes)} classes",
            "use": "predicted (class indices in the order of the class table)",
        }
    )
    return rows


def source_rows(data: PreparedData, held_out: str) -> tuple[list[dict[str, str]], list[int]]:
    """The held-out rows as the input table had them — every column, each cell's text as read
    (a missing cell empty) — and each row's number as ``predict`` and the error messages count
    it (header = row 1). Two empty lists when the rows do not come from a table."""
    source = data.validation_source if held_out == "validation" else None
    if source is None or data.validation_rows is None:
        return [], []
    texts = [
        {name: "" if value is None else str(value) for name, value in row.items()}
        for row in source.iter_rows(named=True)
    ]
    return texts, [row_number(int(index)) for index in data.validation_rows.tolist()]


def column_rows(recipe: Recipe | None, context: RunContext) -> list[dict[str, Any]]:
    """The column typing table: the context's summary when given, else one from the recipe."""
    if context.columns is not None:
        return [dict(row) for row in context.columns]
    return [] if recipe is None else _derived_columns(recipe)


@torch.no_grad()
def write_report(
    result: ComparisonResult,
    data: PreparedData,
    out_dir: str | Path,
    context: RunContext | None = None,
    *,
    kind: str = "compare",
    summary: dict[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` (self-contained) and the PNG figures; return the page's path.

    Args:
        result: what :func:`softclass.jobs.compare.compare` returned (one design for ``train``).
        data: the prepared data the run used (its held-out rows give the curves).
        out_dir: the run's directory.
        context: the table's name, the command, a column typing summary; None: defaults.
        kind: "compare" or "train" (the page's title).
        summary: ``result.to_dict()`` when the caller already made it (it holds every history).
    """
    context = RunContext() if context is None else context
    out_dir = Path(out_dir)
    held_out, features, targets = held_out_part(data)
    first_seed = result.seeds[0]
    details = []
    for name in result.designs:
        run = next(run for run in result.runs_of(name) if run.seed == first_seed)
        model, design = run.result.model, run.result.design
        probabilities = design.predict_proba(in_blocks(model, features)).float().cpu()
        details.append(
            DesignDetail(
                name=name,
                title=design.title,
                loss_name=design.loss_name,
                history=run.history,
                confusion=run.confusion.cpu(),
                calibration=run.calibration,
                probabilities=probabilities,
                targets=targets.cpu(),
            )
        )
    target = data.recipe.target if data.recipe is not None else "target"
    values, numbers = source_rows(data, held_out)
    matrices = FigureJob(
        "confusion_matrices",
        "confusion_matrices_figure",
        (
            {detail.name: detail.confusion for detail in details},
            result.class_names,
            f"{context.table} · target {target!r} · the {len(targets)} {held_out} rows",
        ),
        weight=len(details),
    )
    rendered = render_report(
        ReportInput(
            kind=kind,
            summary=result.to_dict() if summary is None else summary,
            designs=details,
            target=target,
            class_names=result.class_names,
            columns=column_rows(data.recipe, context),
            held_out_rows=values,
            held_out_row_numbers=numbers,
            held_out=held_out,
            patience=result.config.patience,
            bands=result.bands,
            context=context,
            notes=data.warnings,
        ),
        extra_figures=[matrices],
    )
    for name, file_name in {**PNG_FILES, matrices.name: "confusion_matrices.png"}.items():
        if name in rendered.figures:
            atomic_write_bytes(out_dir / file_name, rendered.figures[name])
    return atomic_write_text(out_dir / REPORT_FILE, rendered.html)
