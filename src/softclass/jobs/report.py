"""Write a run's ``report.html`` and PNG figures from what ``compare`` (or ``train``) measured.

:func:`write_report` turns a :class:`~softclass.jobs.compare.ComparisonResult` into the plain
inputs of :func:`softclass.evaluation.report.render_report` (the numbers come from
``result.to_dict()``, the same dictionary as ``report.json``), then writes the page and the
figures the README lists (``loss_curves.png``, ``confusion_matrices.png``, ``calibration.png``,
``seed_bands.png`` with several seeds), each atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from softclass.data import Recipe
from softclass.evaluation.figure_pool import FigureJob
from softclass.evaluation.report import DesignDetail, ReportInput, RunContext, render_report
from softclass.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from softclass.data.prepare import PreparedData
    from softclass.jobs.compare import ComparisonResult

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


# Feature columns shown beside the worst-predicted rows (a wide table stops being readable).
SHOWN_FEATURES = 8


def raw_feature_values(recipe: Recipe | None, features: torch.Tensor) -> list[dict[str, Any]]:
    """The held-out rows' feature values as the table had them, undoing the recipe's encoding:
    ``value * scale + offset`` for a numeric column (a float32 round trip: about 7 digits), the
    one-hot category for a categorical one ("(unseen)" when no category matched). The first
    ``SHOWN_FEATURES`` columns; empty rows without a recipe."""
    if recipe is None:
        return [{} for _ in range(features.shape[0])]
    encoded = features.double().cpu()
    columns: dict[str, list[Any]] = {}
    start = 0
    for feature in recipe.features:
        width = len(feature.output_names)
        block = encoded[:, start : start + width]
        start += width
        if len(columns) == SHOWN_FEATURES:
            continue
        if feature.kind == "numeric":
            columns[feature.name] = [
                float(f"{value:.6g}") for value in (block[:, 0] * feature.scale + feature.offset)
            ]
        else:
            hot = block.argmax(dim=1).tolist()
            seen = (block.max(dim=1).values > 0.5).tolist()
            columns[feature.name] = [
                feature.categories[index] if known else "(unseen)"
                for index, known in zip(hot, seen, strict=True)
            ]
    return [{name: values[row] for name, values in columns.items()} for row in range(len(encoded))]


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
        probabilities = design.predict_proba(model(features)).float().cpu()
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
            held_out_rows=raw_feature_values(data.recipe, features),
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
