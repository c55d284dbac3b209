"""Issue 14's hostile model files, each run as a fresh ``softclass`` process: exit code, wall time
and peak memory against a good ``softclass predict`` of the same model measured in the same run.

    python -m benchmarks.hostile_files           # issue 14's model files, then issue 22's cases
    python -m benchmarks.hostile_files issue22 [TEXT]   # issue 22's cases (named with TEXT)
    python -m benchmarks.hostile_files classes [--before SRC] [--only PART] [--classes K,..]

Appends one row per case to RESULTS.md ("Hostile model files"); the last column is the in-process
time of the load call alone (``load_model``, or for checkpoints
``read_batched_checkpoint_header`` + ``load_batched_checkpoint``) until it
raises. Before the schema checks these cases took 23 s (``hidden: [1e30]``), >60 s (200,000
layers), 26.6 s and 6.6 GB (``[200000000]``), 53 s and 2.6 GB (a 2.1 MB checkpoint inflating to
2 GiB).

It then times writing and reading the good run's batched checkpoint in format 2 (safetensors +
JSON header, every field checked) against format 1 (``torch.save`` of the same fields, read back
archive-bounded with ``torch.load(weights_only=True)``), the reference of the same run
("Batched checkpoints: cost of format 2").
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from benchmarks._results import append_row, commit, machine
from softclass.data import bundled_path
from softclass.errors import ModelFileError
from softclass.io import atomic_write_bytes
from softclass.jobs.store import load_model
from softclass.training import schema

SECTION = "## Hostile model files (issue 14)"
HEADER = (
    "| date | commit | machine | case | exit | wall s | ÷ good predict | peak RSS MiB "
    "| load call s |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _run(*args: str, source: str | None = None) -> tuple[int, float, float, str]:
    """Exit code, wall seconds, peak RSS (MiB) and stderr of ``softclass ARGS`` in a new process
    (importing softclass from the ``source`` folder when given)."""
    command = [sys.executable, "-c", _MEASURED, *args]
    environment = dict(os.environ)
    if source is not None:
        environment["PYTHONPATH"] = source
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment)
    seconds = time.perf_counter() - started
    peak = float(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else float("nan")
    return done.returncode, seconds, peak, done.stderr.strip()


# Runs the CLI and prints its own peak RSS on exit, whatever the exit code.
_MEASURED = """
import atexit, resource, sys
atexit.register(lambda: print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
sys.argv = ["softclass", *sys.argv[1:]]
from softclass.cli import main
main()
"""


def _edit(directory: Path, hidden: list) -> Path:
    path = directory / "model.json"
    metadata = json.loads(path.read_text())
    metadata["model_config"]["hidden"] = hidden
    path.write_text(json.dumps(metadata))
    return directory


def main() -> None:
    if sys.argv[1:2] == ["issue22"]:
        _issue_22(*sys.argv[2:3])
        return
    if sys.argv[1:2] == ["classes"]:
        from benchmarks.many_classes import CLASS_COUNTS, many_classes

        options = dict(zip(sys.argv[2::2], sys.argv[3::2], strict=False))
        counts = options.get("--classes")
        many_classes(
            options.get("--before"),
            _run,
            options.get("--only", ""),
            tuple(int(count) for count in counts.split(",")) if counts else CLASS_COUNTS,
        )
        return
    iris = str(bundled_path("iris"))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        good = root / "good"
        code, *_ = _run("train", iris, "--out", str(good), "--epochs", "2")
        assert code == 0, "training the reference model failed"
        cases: dict[str, list[str]] = {"good predict (reference)": ["predict", str(good), iris]}
        loads = {"good predict (reference)": lambda: load_model(good)}
        for name, hidden in (
            ("hidden [1e30]", [1e30]),
            ("200,000 hidden layers", [1] * 200_000),
            ("hidden [200000000]", [200_000_000]),
        ):
            directory = root / name.replace(" ", "_").replace(",", "")
            shutil.copytree(good, directory)
            cases[f"predict, {name}"] = ["predict", str(_edit(directory, hidden)), iris]
            loads[f"predict, {name}"] = lambda directory=directory: load_model(directory)
        for name, make in (
            ("--resume, /etc/passwd as checkpoint", _passwd),
            ("--resume, 2 GiB deflated checkpoint", _bomb),
        ):
            directory = root / name.split(", ")[1].replace(" ", "_").replace("/", "_")
            directory.mkdir()
            make(directory / "checkpoint.pt")
            cases[name] = ["train", iris, "--out", str(directory), "--resume", "--epochs", "2"]
            loads[name] = lambda path=directory / "checkpoint.pt": _load_batched(path)
        good_checkpoint = good / "checkpoint.pt"
        for name, make in BATCHED_CASES.items():
            directory = root / f"batched_{len(cases)}"
            shutil.copytree(good, directory)
            (directory / "model.json").unlink()  # a run that was interrupted: only the checkpoint
            (directory / "model.safetensors").unlink()
            make(directory / "checkpoint.pt")
            cases[f"--resume, batched: {name}"] = [
                "train", iris, "--out", str(directory), "--resume", "--epochs", "3"
            ]  # fmt: skip
            loads[f"--resume, batched: {name}"] = lambda path=directory / "checkpoint.pt": (
                _load_batched(path)
            )
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        reference = None
        for name, args in cases.items():
            code, seconds, peak, stderr = _run(*args)
            reference = seconds if reference is None else reference
            load_seconds = _time_load(loads[name])
            print(
                f"{name:40s} exit {code}  {seconds:6.2f} s  ({seconds / reference:4.2f}x)  "
                f"{peak:7.0f} MiB  load call {load_seconds:.3f} s  {stderr[-150:]}"
            )
            append_row(
                SECTION,
                HEADER,
                f"| {stamp} | {commit()} | {machine()} | {name} | {code} | {seconds:.2f} | "
                f"{seconds / reference:.2f}× | {peak:.0f} | {load_seconds:.3f} |",
            )
        _format_cost(good_checkpoint, stamp)
    _issue_22()


def _issue_22(only: str = "") -> None:
    """Issue 22's cases (:mod:`benchmarks.hostile_outputs`), with the counts per outcome."""
    from benchmarks import hostile_outputs

    with tempfile.TemporaryDirectory() as scratch:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        hostile_outputs.run_all(
            Path(scratch), bundled_path("iris"), stamp, commit(), machine(), append_row, only
        )


def _time_load(load: Callable[[], object]) -> float:
    """Seconds for the in-process load call to return or raise ModelFileError."""
    started = time.perf_counter()
    try:
        load()
    except ModelFileError:
        pass
    return time.perf_counter() - started


def _passwd(path: Path) -> None:
    path.write_bytes(
        Path("/etc/passwd").read_bytes()
        if Path("/etc/passwd").exists()
        else b"root:x:0:0::/root:/bin/sh\n"
    )


def _bomb(path: Path) -> None:
    """A checkpoint-named zip whose one entry inflates to 2 GiB (about 2 MB on disk)."""
    block = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as entry:
            for _ in range(2048):
                entry.write(block)


# -- the batched engine's checkpoints --------------------------------------------------------------


def _load_batched(path: Path) -> None:
    """What ``train --resume`` reads: the header, then the tensors for a run that matches it."""
    header = schema.read_batched_checkpoint_header(path)
    run = schema.BatchedRun(header.dtype, header.epoch + 1, header.step_count // header.epoch, True)
    schema.load_batched_checkpoint(path, header, run)


def _split(path: Path) -> tuple[dict, dict, dict]:
    """(safetensors header, the checkpoint's JSON document, its tensors)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    return (
        header,
        json.loads(header["__metadata__"][schema.BATCHED_METADATA_KEY]),
        (safetensors_load(raw)),
    )


def _with_document(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        _, document, tensors = _split(path)
        change(document)
        metadata = {schema.BATCHED_METADATA_KEY: json.dumps(document)}
        path.write_bytes(safetensors_save(tensors, metadata=metadata))

    return make


def _huge_tensor(path: Path) -> None:
    """One history declared as 10**8 float64s (800 MB) in a file of a few kB."""
    raw = path.read_bytes()
    header, _, _ = _split(path)
    (size,) = struct.unpack("<Q", raw[:8])
    header["history.train_loss"]["shape"] = [1, 10**8]
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size :])


def _big_header(path: Path) -> None:
    _, document, tensors = _split(path)
    metadata = {schema.BATCHED_METADATA_KEY: json.dumps(document), "pad": "x" * (64 << 20)}
    path.write_bytes(safetensors_save(tensors, metadata=metadata))


def _nan_weights(path: Path) -> None:
    _, document, tensors = _split(path)
    tensors["parameters.0"].fill_(float("nan"))
    metadata = {schema.BATCHED_METADATA_KEY: json.dumps(document)}
    path.write_bytes(safetensors_save(tensors, metadata=metadata))


def _format_1(path: Path) -> None:
    path.write_bytes(_format_1_bytes(path))


def _format_1_bytes(path: Path) -> bytes:
    """The same checkpoint as format 1 wrote it: ``torch.save`` of one dict."""
    _, document, tensors = _split(path)
    groups = _groups(path, tensors)
    state = {
        **{key: document[key] for key in document if key not in ("early_stopping", "dtype")},
        "format": 1,
        **groups,
        "histories": {name: tensors[f"history.{name}"] for name in schema.HISTORY_NAMES},
        "early_stopping": document["early_stopping"],
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _groups(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """The checkpoint's tensors per group (parameters, moments, best), in the layout's order."""
    layout = schema.read_batched_checkpoint_header(path).tensor_layout()
    return {
        group: [tensors[name] for name in layout if name.startswith(f"{group}.")]
        for group in ("parameters", "first_moments", "second_moments", "best")
    }


BATCHED_CASES: dict[str, Callable[[Path], None]] = {
    "epoch -1": _with_document(lambda document: document.update(epoch=-1)),
    "members [['A', 'x']]": _with_document(lambda document: document.update(members=[["A", "x"]])),
    "10**8 epochs declared": _with_document(
        lambda document: document.update(
            epoch=10**8,
            step_count=10**9,
            epochs_run=[10**8],
            train_config={**document["train_config"], "epochs": 10**8},
        )
    ),
    "a tensor declared 800 MB": _huge_tensor,
    "a 64 MiB header": _big_header,
    "NaN weights": _nan_weights,
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:-100]),
    "format 1 (torch.save)": _format_1,
}

COST_SECTION = "## Batched checkpoints: cost of format 2 (safetensors + checked JSON header)"
COST_HEADER = (
    "| date | commit | machine | network | format 1 bytes | format 2 bytes | write ms f1 / f2 "
    "| read ms f1 / f2 | read f2 ÷ f1 |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _best_ms(action: Callable[[], object], repeats: int = 200) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def _format_cost(checkpoint: Path, stamp: str) -> None:
    """Best-of-200 write (serialise + atomic write) and read (every check, then the tensors) of
    the good run's checkpoint in both formats; the network is Iris's 4-7-3 (M = 1)."""
    header = schema.read_batched_checkpoint_header(checkpoint)
    _, _, tensors = _split(checkpoint)
    old_bytes = _format_1_bytes(checkpoint)
    old_state = torch.load(io.BytesIO(old_bytes), weights_only=True)
    groups = _groups(checkpoint, tensors)
    named = schema.BatchedCheckpointTensors(
        groups["parameters"],
        groups["first_moments"],
        groups["second_moments"],
        groups["best"] if header.has_best else None,
        {name: tensors[f"history.{name}"] for name in schema.HISTORY_NAMES},
    )
    with tempfile.TemporaryDirectory() as scratch:
        old_path, new_path = Path(scratch) / "old.pt", Path(scratch) / "new.pt"

        def write_old() -> None:
            buffer = io.BytesIO()
            torch.save(old_state, buffer)
            atomic_write_bytes(old_path, buffer.getvalue())

        def write_new() -> None:
            atomic_write_bytes(new_path, schema.encode_batched_checkpoint(header, named))

        write_ms = (_best_ms(write_old), _best_ms(write_new))
        read_ms = (
            _best_ms(lambda: torch.load(old_path, map_location="cpu", weights_only=True)),
            _best_ms(lambda: _load_batched(new_path)),
        )
        sizes = (old_path.stat().st_size, new_path.stat().st_size)
    network = "-".join(
        str(width)
        for width in (
            header.model_config.n_features,
            *header.model_config.hidden,
            header.model_config.n_classes,
        )
    )
    print(
        f"checkpoint {network}: {sizes[0]} vs {sizes[1]} bytes; write {write_ms[0]:.2f} vs "
        f"{write_ms[1]:.2f} ms; read {read_ms[0]:.2f} vs {read_ms[1]:.2f} ms "
        f"({read_ms[1] / read_ms[0]:.2f}x)"
    )
    append_row(
        COST_SECTION,
        COST_HEADER,
        f"| {stamp} | {commit()} | {machine()} | {network} | {sizes[0]} | {sizes[1]} | "
        f"{write_ms[0]:.2f} / {write_ms[1]:.2f} | {read_ms[0]:.2f} / {read_ms[1]:.2f} | "
        f"{read_ms[1] / read_ms[0]:.2f}× |",
    )


if __name__ == "__main__":
    main()
