"""The fields of a checkpoint's header that only a checkpoint has: its members, its early-stopping
state and each member's epoch count, each checked against the options and the epoch it claims.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from softclass.errors import ConfigError, ModelFileError
from softclass.mlp.designs import get_design
from softclass.training.config import MONITORS, TrainConfig
from softclass.training.schema.fields import (
    _integer,
    _kind,
    _mapping,
    _number,
    _string,
    bad_field,
)

_EARLY_STOPPING_FIELDS = ("best", "best_epoch", "bad_epochs", "stopped")
_MAX_SEED = 2**63 - 1


def _members_field(path: Path, value: object) -> tuple[tuple[str, int], ...]:
    members = _kind(path, "members", value, list, "a list of [design, seed] pairs")
    if not members:
        raise bad_field(path, "members", members, "at least one [design, seed] pair")
    checked = []
    for index, member in enumerate(members):
        field = f"members[{index}]"
        if not isinstance(member, list) or len(member) != 2:
            raise bad_field(path, field, member, "a [design, seed] pair")
        design = _string(path, f"{field}[0]", member[0])
        try:
            canonical = get_design(design).name
        except ConfigError as error:
            raise ModelFileError(f"{path}: field '{field}[0]': {error}") from None
        if canonical != design:
            raise bad_field(path, f"{field}[0]", design, f"the design's name {canonical!r}")
        checked.append((design, _integer(path, f"{field}[1]", member[1], 0, _MAX_SEED)))
    return tuple(checked)


def _early_stopping_field(
    path: Path, value: object, train_config: TrainConfig, epoch: int, n_members: int
) -> dict[str, list[Any]] | None:
    """The early-stopping state: present exactly when ``train_config.patience`` is set; M entries
    per list; a best value of the monitored metric's range at a best epoch in ``[1, epoch]``, or
    the rule's starting ±inf with no best epoch."""
    if train_config.patience is None:
        if value is not None:
            raise bad_field(path, "early_stopping", value, "null (train_config.patience is null)")
        return None
    if value is None:
        raise bad_field(
            path,
            "early_stopping",
            value,
            f"the rule's state (train_config.patience is {train_config.patience})",
        )
    data = _mapping(path, "early_stopping", value, _EARLY_STOPPING_FIELDS)
    for key in _EARLY_STOPPING_FIELDS:
        items = _kind(path, f"early_stopping.{key}", data[key], list, f"a list of {n_members}")
        if len(items) != n_members:
            raise bad_field(path, f"early_stopping.{key}", items, f"{n_members} items (members)")
    lower_is_better = MONITORS[train_config.monitor] == "min"
    start = math.inf if lower_is_better else -math.inf
    for member in range(n_members):
        best_epoch = data["best_epoch"][member]
        best = _number(path, f"early_stopping.best[{member}]", data["best"][member], finite=False)
        if best_epoch is None:
            if best != start:
                raise bad_field(
                    path,
                    f"early_stopping.best[{member}]",
                    best,
                    f"{start} (no best epoch yet for {train_config.monitor})",
                )
        else:
            _integer(path, f"early_stopping.best_epoch[{member}]", best_epoch, 1, epoch)
            if not (0.0 <= best < math.inf if lower_is_better else 0.0 <= best <= 1.0):
                bounds = "a number ≥ 0" if lower_is_better else "a number in [0, 1]"
                raise bad_field(
                    path,
                    f"early_stopping.best[{member}]",
                    best,
                    f"{bounds} (the best {train_config.monitor}, epoch {best_epoch})",
                )
        _integer(path, f"early_stopping.bad_epochs[{member}]", data["bad_epochs"][member], 0, epoch)
        _kind(
            path,
            f"early_stopping.stopped[{member}]",
            data["stopped"][member],
            bool,
            "true or false",
        )
    return {
        "best": [float(item) for item in data["best"]],
        "best_epoch": list(data["best_epoch"]),
        "bad_epochs": list(data["bad_epochs"]),
        "stopped": list(data["stopped"]),
    }


def _check_epochs_run(
    path: Path,
    epochs_run: list[int],
    early: dict[str, list[Any]] | None,
    epoch: int,
    epochs: int,
) -> None:
    """Each member's epoch count is ``epochs`` until it stops early, then its last epoch (at most
    ``epoch``); the early-stopping rule updates a member every epoch until it stops, so its
    epochs without improvement are the epochs since its best one, and at least 1 once stopped."""
    for member, count in enumerate(epochs_run):
        stopped = early is not None and early["stopped"][member]
        if stopped and count > epoch:
            raise bad_field(
                path, f"epochs_run[{member}]", count, f"at most {epoch} (the member stopped early)"
            )
        if not stopped and count != epochs:
            raise bad_field(
                path,
                f"epochs_run[{member}]",
                count,
                f"{epochs} (train_config.epochs: the member has not stopped)",
            )
        if early is None:
            continue
        last = count if stopped else epoch
        best_epoch, bad_epochs = early["best_epoch"][member], early["bad_epochs"][member]
        if best_epoch is not None and bad_epochs != last - best_epoch:
            raise bad_field(
                path,
                f"early_stopping.bad_epochs[{member}]",
                bad_epochs,
                f"{last - best_epoch} (epochs from its best epoch {best_epoch} to epoch {last})",
            )
        if stopped and bad_epochs < 1:
            raise bad_field(
                path,
                f"early_stopping.bad_epochs[{member}]",
                bad_epochs,
                "at least 1 (the member stopped early)",
            )
