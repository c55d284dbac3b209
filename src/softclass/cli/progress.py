"""Progress bars on stderr for the training runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from softclass.cli.app import err_console

if TYPE_CHECKING:
    from softclass.training.trainer import ProgressEvent


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
