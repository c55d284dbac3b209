"""The pairing checker's look at the targets: their shape against the outputs', one-hot rows
where class indices are expected (and the reverse), label dtype and range (negative, 1-based,
out of range), skipping ``ignore_index``. Called by
:func:`softclass.diagnostics.check.check_pairing` once the outputs are checked."""

from __future__ import annotations

import math

import torch

from softclass.diagnostics.findings import Finding, LossSpec


def check_targets(outputs: torch.Tensor, targets: torch.Tensor, spec: LossSpec) -> list[Finding]:
    """Targets against outputs ``(N, C, ...)`` with C >= 2 and at least one element."""
    n_classes = outputs.shape[1]
    index_shape = outputs.shape[:1] + outputs.shape[2:]
    is_column = outputs.ndim == 2 and tuple(targets.shape) == (outputs.shape[0], 1)
    if targets.shape == outputs.shape:
        return _check_dense_targets(targets, spec, n_classes, tuple(index_shape))
    if targets.shape != index_shape and not is_column:
        return [
            Finding(
                "shape-mismatch",
                "error",
                f"targets have shape {tuple(targets.shape)} "
                f"but outputs {tuple(outputs.shape)} take "
                f"class indices of shape {tuple(index_shape)} or one-hot / probability targets of "
                f"shape {tuple(outputs.shape)}.",
                "Give one target per item: class indices `(N,)` or one-hot rows `(N, C)`, in the "
                "same order as the outputs.",
            )
        ]
    if spec.name in ("mse", "mcee") and not spec.index_targets_ok:
        return [_index_targets_for_one_hot_loss(spec, targets, tuple(outputs.shape))]
    findings: list[Finding] = []
    if is_column:
        findings.append(
            Finding(
                "target-shape",
                "error",
                f"class indices have shape {tuple(targets.shape)}; {spec.name} expects shape "
                f"({outputs.shape[0]},).",
                "Drop the extra dimension: `targets = targets.squeeze(1)`.",
            )
        )
        targets = targets.squeeze(1)
    findings += _check_labels(targets, n_classes, spec.ignore_index)
    return findings


def _check_dense_targets(
    targets: torch.Tensor, spec: LossSpec, n_classes: int, index_shape: tuple[int, ...]
) -> list[Finding]:
    if spec.name in ("mse", "mcee"):
        return []
    if spec.name == "cross_entropy" and targets.is_floating_point():
        return []  # class-probability targets: valid for cross_entropy since torch 1.10
    rows = targets.movedim(1, -1).reshape(-1, n_classes).to(torch.float64)
    is_one_hot = bool((((rows == 0) | (rows == 1)).all() & (rows.sum(dim=1) == 1).all()).item())
    shape = tuple(targets.shape)
    if is_one_hot:
        return [
            Finding(
                "onehot-targets",
                "error",
                f"targets are one-hot rows of shape {shape} and dtype {targets.dtype}; "
                f"{spec.name} expects class indices of shape {index_shape}.",
                "Convert to class indices: `targets = targets.argmax(dim=1)`.",
            )
        ]
    return [
        Finding(
            "target-shape",
            "error",
            f"targets of shape {shape} and dtype {targets.dtype} are neither class indices "
            f"(shape {index_shape}) nor one-hot rows; {spec.name} takes class indices"
            + (" or float class probabilities." if spec.name == "cross_entropy" else "."),
            "Pass class indices: `targets` of shape (N,) and dtype torch.long.",
        )
    ]


def _index_targets_for_one_hot_loss(
    spec: LossSpec, targets: torch.Tensor, outputs_shape: tuple[int, ...]
) -> Finding:
    shape = tuple(targets.shape)
    n_items, n_classes = outputs_shape[0], outputs_shape[1]
    if spec.name == "mcee":
        return Finding(
            "index-targets",
            "error",
            f"targets are class indices of shape {shape}, but mcee (-sum(targets * log(probs))) "
            f"expects one-hot rows of shape {outputs_shape}.",
            f"Convert to one-hot: `targets = F.one_hot(targets, num_classes={n_classes}).float()` "
            f"(or use softclass.functional.mcee, which also takes indices).",
        )
    if len(shape) == 2:
        consequence = (
            "mse_loss silently broadcasts it to every column: each probability is compared with "
            "the label number"
        )
    elif len(outputs_shape) == 2 and n_items == n_classes:
        consequence = (
            "since N == C, mse_loss silently broadcasts it along the rows: every row is compared "
            "with the whole label vector"
        )
    else:
        consequence = "mse_loss cannot broadcast it and raises a size mismatch"
    return Finding(
        "mse-broadcast",
        "error",
        f"mse got class indices of shape {shape} against probabilities of shape {outputs_shape}; "
        f"{consequence}.",
        f"One-hot the targets first: `F.mse_loss(probs, F.one_hot(targets.long().view(-1), "
        f"num_classes={n_classes}).float())`.",
    )


def _check_labels(labels: torch.Tensor, n_classes: int, ignore_index: int | None) -> list[Finding]:
    """Class indices of any shape: dtype and range, skipping ``ignore_index``."""
    findings: list[Finding] = []
    values = labels.to(torch.float64)
    if labels.is_floating_point():
        integral = bool((torch.isfinite(values) & (values == values.round())).all().item())
        findings.append(
            Finding(
                "float-labels",
                "error",
                f"class indices have dtype {labels.dtype}"
                + ("." if integral else ", and some are not whole numbers (or not finite)."),
                "Cast the class indices: `targets = targets.long()`"
                + ("." if integral else "; for soft labels pass (N, C) probabilities instead."),
            )
        )
        if not integral:
            return findings
    elif labels.dtype not in (torch.int64, torch.uint8):
        findings.append(
            Finding(
                "label-dtype",
                "error",
                f"class indices have dtype {labels.dtype}; torch's losses take int64 (or uint8).",
                "Cast the class indices: `targets = targets.long()`.",
            )
        )
    kept = values != ignore_index if ignore_index is not None else torch.ones_like(values).bool()
    lowest, highest, n_negative, n_at_least_classes, n_kept = torch.stack(
        [
            torch.where(kept, values, math.inf).min(),
            torch.where(kept, values, -math.inf).max(),
            (kept & (values < 0)).sum().to(torch.float64),
            (kept & (values >= n_classes)).sum().to(torch.float64),
            kept.sum().to(torch.float64),
        ]
    ).tolist()
    if n_kept == 0:
        return findings
    skipped = f" (ignore_index {ignore_index} skipped)" if ignore_index is not None else ""
    if n_negative:
        findings.append(
            Finding(
                "negative-labels",
                "error",
                f"{int(n_negative)} class indices are negative (smallest {lowest:.0f}){skipped}; "
                f"valid indices are 0..{n_classes - 1}.",
                "Map the labels to 0..C-1 (e.g. `targets = torch.unique(targets, "
                "return_inverse=True)[1]`), or pass `ignore_index=<value>` if it marks items to "
                "skip.",
            )
        )
    if lowest >= 1 and highest == n_classes:
        findings.append(
            Finding(
                "one-based-labels",
                "error",
                f"class indices run from {lowest:.0f} to {highest:.0f} = C: they look 1-based; "
                f"valid indices are 0..{n_classes - 1}.",
                "Shift them to 0-based: `targets = targets - 1`.",
            )
        )
    elif n_at_least_classes:
        findings.append(
            Finding(
                "labels-out-of-range",
                "error",
                f"{int(n_at_least_classes)} class indices are >= C = {n_classes} (largest "
                f"{highest:.0f}){skipped}; valid indices are 0..{n_classes - 1}.",
                f"Give the model at least {highest + 1:.0f} outputs, or remap the labels to "
                f"0..{n_classes - 1}.",
            )
        )
    return findings
