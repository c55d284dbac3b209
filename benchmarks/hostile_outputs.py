"""Issue 22's cases for ``benchmarks.hostile_files``: outputs over inputs, closed and full
standard output, flag values, extreme model files, decompression bombs, wide and many-class
tables. Each runs as a fresh ``softclass`` process; the outcome is classified (one line and
exit 2, exit 141, success, traceback, killed) and whether every input is still intact, and the
counts per outcome are printed.

    python -m benchmarks.hostile_files issue22
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa

SECTION = "## Hostile outputs, streams, flags and tables (issue 22)"
HEADER = (
    "| date | commit | machine | case | exit | outcome | inputs intact | wall s | peak RSS MiB |\n"
    "|---|---|---|---|---|---|---|---|---|"
)
_LIMIT_BYTES = 4 * 1024**3  # a case past this address space is "killed" (the bombs' old fate)


def _digest(paths: list[Path]) -> str:
    """One hash over every file under ``paths`` (names and contents)."""
    digest = hashlib.sha256()
    for root in paths:
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.is_file():
                digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_LIMIT_BYTES, _LIMIT_BYTES))


def _softclass(args: list[str], stdout, close_stdout: bool = False) -> subprocess.Popen:
    def prepare() -> None:
        _limit_memory()
        if close_stdout:
            os.close(1)

    return subprocess.Popen(
        [sys.executable, "-m", "softclass", *args],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        preexec_fn=prepare,
    )


def run_case(args: list[str], inputs: list[Path], stdout: str = "capture") -> dict:
    """Run ``softclass ARGS``; stdout "capture", "full" (/dev/full), "closed" (``>&-``) or
    "head" (a reader that takes one line and goes away)."""
    before = _digest(inputs)
    started = time.perf_counter()
    if stdout == "full":
        with open("/dev/full", "w") as full:
            process = _softclass(args, full)
    elif stdout == "head":
        process = _softclass(args, subprocess.PIPE)
        process.stdout.readline()
        process.stdout.close()
    else:
        process = _softclass(args, subprocess.DEVNULL, close_stdout=stdout == "closed")
    err = process.stderr.read()
    process.stderr.close()
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not all children's
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code
    seconds = time.perf_counter() - started
    text = err.decode("utf-8", "replace").strip()
    return {
        "exit": code,
        "outcome": _outcome(code, text),
        "intact": _digest(inputs) == before,
        "seconds": seconds,
        "peak": usage.ru_maxrss / 1024,
        "stderr": text.splitlines()[-1] if text else "",
    }


def _outcome(code: int, text: str) -> str:
    if "Traceback" in text:
        return "traceback"
    if code < 0:
        return f"killed by signal {-code}"
    if code == 141:
        return "exit 141 (reader gone)"
    if code == 0:
        return "success"
    lines = [line for line in text.splitlines() if line.strip()]
    if code == 2 and lines and lines[-1].startswith("error: "):
        return "one line, exit 2"
    return f"exit {code}, {len(lines)} lines"


def _tables(root: Path) -> dict[str, Path]:
    """The hostile tables: bombs, 100,001 columns, 50,000 classes."""
    block = b"1,2,3\n" * (1 << 18)
    tables = {}
    for suffix, codec in (("gz", "gzip"), ("bz2", "bz2"), ("zst", "zstd")):
        path = root / f"bomb.csv.{suffix}"
        with pa.output_stream(str(path), compression=codec) as out:
            out.write(b"a,b,c\n")
            for _ in range(64 if codec == "bz2" else 640):  # 0.1 / 1 GB inside
                out.write(block)
        tables[f"bomb .{suffix}"] = path
    wide = root / "wide.csv"
    with wide.open("w") as out:
        out.write(",".join(f"c{i}" for i in range(100_001)) + "\n")
        row = ",".join("1" for _ in range(100_001)) + "\n"
        out.writelines(row for _ in range(200))
    tables["100,001 columns"] = wide
    many = root / "many_classes.csv"
    generator = random.Random(0)
    many.write_text(
        "x,y\n" + "".join(f"{generator.random()},c{i % 50_000}\n" for i in range(100_000))
    )
    tables["50,000 classes"] = many
    return tables


def _extreme_models(root: Path, good: Path) -> dict[str, Path]:
    import torch
    from safetensors.torch import load_file, save_file

    models = {}
    for name, scale in (("recipe scale 1e-300", 1e-300), ("negative recipe scale", -1.0)):
        directory = root / name.replace(" ", "_")
        directory.mkdir()
        for path in good.iterdir():
            (directory / path.name).write_bytes(path.read_bytes())
        metadata = json.loads((directory / "model.json").read_text())
        for feature in metadata["recipe"]["features"]:
            feature["scale"] = scale
        (directory / "model.json").write_text(json.dumps(metadata))
        models[name] = directory
    directory = root / "weights_1e38"
    directory.mkdir()
    for path in good.iterdir():
        (directory / path.name).write_bytes(path.read_bytes())
    weights = load_file(str(directory / "model.safetensors"))
    save_file(
        {name: torch.full_like(tensor, 1e38) for name, tensor in weights.items()},
        str(directory / "model.safetensors"),
        metadata={"format": "1"},
    )
    models["weights 1e38"] = directory
    return models


def cases(root: Path, iris: Path) -> dict[str, tuple[list[str], list[Path], str]]:
    """Every case: (arguments, inputs that must stay intact, stdout)."""
    good = root / "good"
    assert run_case(["train", str(iris), "--out", str(good), "--epochs", "2"], [])["exit"] == 0
    rows = root / "rows.csv"
    rows.write_bytes(iris.read_bytes())
    dataset = root / "dataset"
    dataset.mkdir()
    pl.read_csv(iris).write_parquet(dataset / "part-0.parquet")
    compared = root / "compared"
    assert run_case(["compare", "--epochs", "2", "--out", str(compared)], [])["exit"] == 0
    victim = root / "victim"
    victim.mkdir()
    (root / "link").symlink_to(compared)
    train = ["train", str(iris), "--epochs", "2", "--out"]
    found = {
        "predict --output = the input table": (
            ["predict", str(good), str(rows), "--output", str(rows)],
            [rows, good],
            "capture",
        ),
        "predict --output M/model.json": (
            ["predict", str(good), str(rows), "--output", str(good / "model.json")],
            [good],
            "capture",
        ),
        "predict --output M/model.safetensors": (
            ["predict", str(good), str(rows), "--output", str(good / "model.safetensors")],
            [good],
            "capture",
        ),
        "train dataset/ --out dataset/": (
            ["train", str(dataset), "--epochs", "2", "--out", str(dataset)],
            [dataset],
            "capture",
        ),
        "train --out a compare run": ([*train, str(compared)], [compared], "capture"),
        "compare twice, no --overwrite": (
            ["compare", "--epochs", "2", "--out", str(compared)],
            [compared],
            "capture",
        ),
        "train --out link → a compare run": ([*train, str(root / "link")], [compared], "capture"),
        "predict > /dev/full": (["predict", str(good), str(iris)], [good], "full"),
        "predict >&-": (["predict", str(good), str(iris)], [good], "closed"),
        "train | head -1": ([*train, str(root / "piped")], [], "head"),
        "explain | head -1": (["explain"], [], "head"),
        "--help | head -1": (["--help"], [], "head"),
    }
    for flags in (
        ["--batch-size", "1e20"],
        ["--batch-size", str(10**20)],
        ["--seed", str(2**63)],
        ["--epochs", "1e18"],
        ["--epochs", str(10**18)],
        ["--hidden", "1000000000"],
        ["--normalize", "divide", "--divide", "a"],
        ["--patience", "-1"],
        ["--threads", "1000000"],
    ):
        found[f"train {' '.join(flags)}"] = ([*train, str(root / "flags"), *flags], [], "capture")
    found["compare --seeds 1000000"] = (
        ["compare", "--seeds", "1000000", "--out", str(root / "seeds")],
        [],
        "capture",
    )
    found["explain --logits (2,000 values)"] = (
        ["explain", "--logits", ",".join(["1"] * 2000)],
        [],
        "capture",
    )
    for name, directory in _extreme_models(root, good).items():
        found[f"predict, {name}"] = (["predict", str(directory), str(iris)], [directory], "capture")
    for name, path in _tables(root).items():
        found[f"train, {name}"] = (
            ["train", str(path), "--epochs", "1", "--out", str(root / "tables")],
            [path],
            "capture",
        )
    return found


def run_all(
    root: Path, iris: Path, stamp: str, commit: str, machine: str, append_row, only: str = ""
) -> None:
    """Run every case whose name holds ``only``; print and append each, then the counts."""
    outcomes: Counter[str] = Counter()
    for name, (args, inputs, stdout) in cases(root, iris).items():
        if only not in name:
            continue
        result = run_case(args, inputs, stdout)
        outcomes[result["outcome"]] += 1
        outcomes["inputs intact" if result["intact"] else "INPUT CHANGED"] += 1
        print(
            f"{name:42s} exit {result['exit']:4d}  {result['outcome']:24s} "
            f"intact {result['intact']!s:5s} {result['seconds']:6.1f} s  "
            f"{result['stderr'][:110]}"
        )
        append_row(
            SECTION,
            HEADER,
            f"| {stamp} | {commit} | {machine} | {name} | {result['exit']} | "
            f"{result['outcome']} | {'yes' if result['intact'] else 'NO'} | "
            f"{result['seconds']:.1f} | {result['peak']:.0f} |",
        )
    print("\ncounts per outcome:")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {outcome:28s} {count}")
