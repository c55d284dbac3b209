"""Shared by the benchmarks: the results file, the commit and a one-line machine description."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from softclass.io import atomic_write_text

RESULTS = Path(__file__).with_name("RESULTS.md")


def commit() -> str:
    """Short hash of the checked-out commit ("unknown" outside git)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    """CPU, core count, torch version and threads, and the 1-minute load (the machine is shared)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load avg {load:.1f}"
    )


def append_row(section: str, header: str, row: str) -> None:
    """Append a table row under ``section`` of RESULTS.md (created with ``header`` if missing)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if section not in text:
        text = text.rstrip("\n") + f"\n\n{section}\n\n{header}\n"
    lines = text.rstrip("\n").split("\n")
    end = lines.index(section) + 1
    while end < len(lines) and not lines[end].startswith("## "):
        end += 1
    while lines[end - 1] == "":
        end -= 1
    lines.insert(end, row)
    atomic_write_text(RESULTS, "\n".join(lines) + "\n")
