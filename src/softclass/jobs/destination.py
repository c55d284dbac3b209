"""Where a run may write: an output never destroys an input or another kind of run.

``softclass train``, ``compare`` and ``predict`` check their output path here, before any work:

- the path is resolved (a symlinked ``--out`` is followed to the directory it names, and every
  rule below applies to that directory; it is never replaced by a copy or by hard links);
- it may not be, or lie inside, an input: the table (or a Parquet dataset directory) being read,
  the model directory being read;
- it may not lie inside another softclass run (a model directory, a comparison);
- an existing directory must be empty, or a run of the same kind: a ``train`` directory for
  ``train``, a comparison for ``compare``. Replacing such a run needs ``overwrite`` (``train``'s
  ``resume`` continues one instead). A directory holding other files is refused: it may be a
  dataset.

A run's own files (:data:`RUN_FILES`) are replaced as one unit at the end of the run
(:func:`softclass.io.atomic_directory`); other files in its directory are carried over.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from softclass.errors import ConfigError
from softclass.io import atomic_directory, is_temporary_name
from softclass.jobs.report import PNG_FILES, REPORT_FILE

__all__ = [
    "RUN_FILES",
    "check_output_directory",
    "check_output_file",
    "replace_run",
    "run_kind",
    "unit_fingerprint",
]

MODEL_FILES = ("model.json", "model.safetensors")
CHECKPOINT_FILE = "checkpoint.pt"
COMPARE_FILES = ("models", "report.json", "history.json")
# Every name a train or compare run writes into its directory: replaced together at its end.
RUN_FILES = frozenset(
    (
        *MODEL_FILES,
        CHECKPOINT_FILE,
        *COMPARE_FILES,
        REPORT_FILE,
        *PNG_FILES.values(),
        "confusion_matrices.png",
    )
)
_KINDS = ("train", "compare")
_LISTED = 3  # foreign entries named in a refusal


def run_kind(directory: str | os.PathLike[str]) -> str | None:
    """ "train" (a model directory: model.json with model.safetensors, or checkpoint.pt),
    "compare" (report.json with history.json, report.html or models/), or None when
    ``directory`` holds neither (or does not exist)."""
    directory = Path(directory)
    if (directory / CHECKPOINT_FILE).is_file() or all(
        (directory / name).is_file() for name in MODEL_FILES
    ):
        return "train"
    if (directory / "report.json").is_file() and (
        (directory / "models").is_dir()
        or any((directory / name).is_file() for name in ("history.json", REPORT_FILE))
    ):
        return "compare"
    return None


def unit_fingerprint(directory: str | os.PathLike[str]) -> int | None:
    """The inode of ``directory`` when it holds a run, else None.

    A run's outputs are swapped in as a new directory, so the inode changes exactly when they
    were replaced: compared before and after a run, it tells whether the earlier outputs are
    still there (what the command line's message after an interrupt must say truthfully).
    """
    directory = Path(directory)
    if run_kind(directory) is None:
        return None
    try:
        return directory.stat().st_ino
    except OSError:
        return None


@contextlib.contextmanager
def replace_run(out_dir: str | os.PathLike[str], keep: Iterable[str] = ()) -> Iterator[Path]:
    """Yield an empty staging directory; when the block succeeds, every run file of ``out_dir``
    (:data:`RUN_FILES`, except ``keep``) is replaced by what the block wrote there, in one swap.

    Other files of ``out_dir`` and the names in ``keep`` are carried over. If the block (or the
    swap) fails, ``out_dir`` is untouched: the earlier run stays whole.

    Raises:
        OutputError: the staging directory or a file in it cannot be written (full device).
    """
    with atomic_directory(out_dir, replaced=RUN_FILES - set(keep)) as staging:
        yield staging


def check_output_directory(
    out_dir: str | os.PathLike[str],
    kind: str,
    *,
    inputs: Iterable[str | os.PathLike[str]] = (),
    overwrite: bool = False,
    resume: bool = False,
) -> Path:
    """Check that ``kind`` ("train" or "compare") may write its run into ``out_dir``; return the
    directory the run must then use (``out_dir`` itself, or the resolved one when a symlink is
    on its path).

    Raises:
        ConfigError: one line naming the path and the rule: ``out_dir`` is or lies inside an
            input, lies inside another run, holds a run of the other kind, holds files that are
            no run's, or holds a run of the same kind and neither ``overwrite`` nor (train)
            ``resume`` was given.
    """
    if kind not in _KINDS:
        raise ConfigError(f"kind={kind!r}: expected one of {', '.join(_KINDS)}")
    given = Path(out_dir)
    resolved = _resolved(given)
    shown = given if resolved == given.absolute() else f"{given} (→ {resolved})"
    # The directory as the user wrote it when no symlink is involved (messages show it so).
    usable = given if resolved == given.absolute() else resolved
    _refuse_inputs(resolved, shown, inputs, "--out")
    _refuse_inside_run(resolved, shown, "--out")
    if resolved.exists() and not resolved.is_dir():
        return usable  # the writer's own one-line error: "is a file, expected a directory"
    found = run_kind(resolved)
    if found is None:
        foreign = _foreign_entries(resolved)
        if foreign:
            raise ConfigError(
                f"--out {shown} holds files that no softclass run wrote "
                f"({_listed(foreign)}): it may be a dataset; choose a new or empty directory"
            )
        return usable
    if found != kind:
        raise ConfigError(
            f"--out {shown} holds a {found} run; {kind} writes a different kind of directory: "
            "choose another --out"
        )
    if overwrite or (kind == "train" and resume):
        return usable
    hint = "--resume to continue it, " if kind == "train" else ""
    raise ConfigError(
        f"--out {shown} already holds a {kind} run: pass {hint}--overwrite to replace it, or "
        "choose another directory"
    )


def check_output_file(
    output: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]], option: str
) -> Path:
    """Check that a single output file (``predict --output``) destroys no input; return it
    resolved.

    Raises:
        ConfigError: ``output`` is an input or lies inside one (the table, a dataset directory,
            the model directory), lies inside another run's directory, or is a directory.
    """
    given = Path(output)
    resolved = _resolved(given)
    shown = given if resolved == given.absolute() else f"{given} (→ {resolved})"
    _refuse_inputs(resolved, shown, inputs, option)
    _refuse_inside_run(resolved, shown, option)
    if resolved.is_dir():
        raise ConfigError(f"{option} {shown} is a directory, expected a file name")
    return resolved


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop
        raise ConfigError(f"{path}: cannot resolve the path ({error})") from None


def _refuse_inputs(
    resolved: Path, shown: object, inputs: Iterable[str | os.PathLike[str]], option: str
) -> None:
    for item in inputs:
        source = _resolved(Path(item))
        if resolved == source:
            raise ConfigError(
                f"{option} {shown} is the input {item}: writing there would destroy it; choose "
                "another path"
            )
        if resolved.is_relative_to(source):
            raise ConfigError(
                f"{option} {shown} lies inside the input {item}: writing there would change it; "
                "choose a path outside"
            )


def _refuse_inside_run(resolved: Path, shown: object, option: str) -> None:
    for ancestor in resolved.parents:
        found = run_kind(ancestor)
        if found is not None:
            raise ConfigError(
                f"{option} {shown} lies inside the {found} run {ancestor}: writing there would "
                "change another run's files; choose a path outside"
            )


def _foreign_entries(directory: Path) -> list[str]:
    try:
        names = sorted(entry.name for entry in os.scandir(directory))
    except OSError:
        return []
    return [name for name in names if name not in RUN_FILES and not is_temporary_name(name)]


def _listed(names: list[str]) -> str:
    more = len(names) - _LISTED
    return ", ".join(names[:_LISTED]) + (f" and {more} more" if more > 0 else "")
