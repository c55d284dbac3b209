"""The metrics designs are set side by side on, one entry each: :data:`METRICS`.

Each is computed from a design's predicted probabilities on the held-out rows, so it measures the
same quantity whatever loss the design trained with (a design's own loss is not here: cross
entropy for one design, squared error for another). The terminal table, report.html's rows and
captions, report.json's metric labels, the verdict sentences, the seed statistics and the seed
band plots all read their metrics, labels and number formats from this table.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from softclass.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """One metric and everything shown about it.

    Attributes:
        key: its name after the rows' prefix in a run's metrics: "log_loss" is
            "validation_log_loss" on the validation rows, "test_log_loss" on the test rows.
        label: its short name in tables and sentences, e.g. "Brier".
        name: its full name in captions and statistics, e.g. "Brier score".
        header: its terminal column header, e.g. "acc".
        format: its number format in report.html and the verdict sentences, e.g. ".4f".
        terminal_format: its number format in the terminal table.
        explanation: what it measures, one clause (report.html's notes and tooltips).
        paired: its position (1 first) among the metrics designs are paired on seed by seed;
            0: not paired.
        quoted: the verdict sentences quote it for two designs that differ.
        unit_interval: its values lie in [0, 1]; the seed band plots clamp its bands to it.
    """

    key: str
    label: str
    name: str
    header: str
    format: str
    terminal_format: str
    explanation: str
    paired: int = 0
    quoted: bool = False
    unit_interval: bool = False

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "str" and not (isinstance(value, str) and value.strip()):
                raise ConfigError(
                    f"metric {self.key!r} of the metric table: {field.name} must be a non-empty "
                    f"string, got {value!r}"
                )


# key, label, name, header, format, terminal_format, explanation; then the flags.
METRICS: tuple[Metric, ...] = (
    Metric(
        "accuracy", "accuracy", "accuracy", "acc", ".3f", ".3f",
        "share of rows whose most probable class is the true one",
        paired=2, quoted=True, unit_interval=True,
    ),
    Metric(
        "log_loss", "log loss", "log loss", "log loss", ".4f", ".4f",
        "mean -log p(true class); lower is better", paired=1, quoted=True,
    ),
    Metric(
        "brier", "Brier", "Brier score", "Brier", ".4f", ".4f",
        "mean squared distance of the probabilities to the one-hot target",
        paired=3, unit_interval=True,
    ),
    Metric(
        "ece", "ECE", "ECE", "ECE", ".4f", ".3f",
        "expected calibration error: mean |accuracy - confidence| over bins", unit_interval=True,
    ),
)  # fmt: skip


def paired_metrics() -> list[Metric]:
    """The metrics designs are paired on seed by seed, in their order (read from
    :data:`METRICS` at call time)."""
    return sorted((metric for metric in METRICS if metric.paired), key=lambda m: m.paired)


def band_facts(history: str) -> tuple[str, bool]:
    """A per-epoch history's panel title in the seed band plots and whether its band is clamped
    to [0, 1] (an interval cannot leave the metric's range): "val_brier" → ("validation Brier
    score", True); "val_loss" is each design's own loss."""
    bounded = any(metric.unit_interval and metric.key in history for metric in METRICS)
    titles = {f"val_{metric.key}": f"validation {metric.name}" for metric in METRICS}
    titles["val_loss"] = "validation loss (each design's own)"
    return titles.get(history, history.replace("_", " ")), bounded
