"""The figure helpers: the same PNG bytes as drawing in-process, and never a lost figure."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from softclass.evaluation import metrics
from softclass.evaluation.figure_pool import FigureJob, figure_pool, plain, render_figures
from softclass.training.results import EpochRecord, History

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SRC = Path(__file__).resolve().parents[2] / "src"

# Runs in a fresh interpreter without torch (the pool refuses to fork a process running torch).
_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    from softclass.evaluation.figure_pool import FigureJob, figure_pool, render_figures
    from softclass.evaluation.plots import HistoryColumns

    mode = sys.argv[1]
    history = HistoryColumns({"train_loss": [1.0, 0.5, 0.25], "validation_loss": [1.1, 0.6, 0.4]})
    styles = {"styles": {"A": ("#1f77b4", "-"), "B": ("#ff7f0e", "--"), "C": ("#2ca02c", "-")}}
    jobs = [
        FigureJob("curves", "loss_curves_figure", ({"A": history, "B": history},
                  {"A": "cross entropy", "B": "nll"}, "caption"), styles, weight=2),
        FigureJob("agreement", "agreement_figure", ({"A vs B": [0.0, 1e-7, 3e-7]}, "cap"), styles),
        FigureJob("agreement-2", "agreement_figure", ({"A vs C": [0.1, 0.2, 0.3]},), styles),
    ]
    if mode == "fails-in-helper":
        from softclass.evaluation import plots
        parent, original = os.getpid(), plots.agreement_figure
        def agreement_figure(*args, **kwargs):
            if os.getpid() != parent:
                raise RuntimeError("broken in the helper")
            return original(*args, **kwargs)
        plots.agreement_figure = agreement_figure
    in_process = render_figures(jobs)
    with figure_pool() as pool:
        helpers = [] if pool is None else pool.pids()
        if mode == "killed":
            for pid in helpers:
                os.kill(pid, signal.SIGKILL)
        pooled = render_figures(jobs)
    leftover = []
    for pid in helpers:
        try:
            os.waitpid(pid, os.WNOHANG)
            leftover.append(pid)
        except ChildProcessError:
            pass
    # the spares (forked by the first helper) end once their pipes close: none runs on
    import time
    for _ in range(100):
        running = []
        for pid in helpers:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[0] != "Z":
                        running.append(pid)
            except FileNotFoundError:
                pass
        if not running:
            break
        time.sleep(0.05)
    leftover += running
    print(json.dumps({
        "helpers": len(helpers),
        "same": {name: pooled[name] == in_process[name] for name in in_process},
        "png": all(png.startswith(b"\\x89PNG") for png in pooled.values()),
        "torch": "torch" in sys.modules,
        "leftover": leftover,
    }))
    """
)


def _python(*arguments: str) -> str:
    """stdout of a fresh interpreter (this checkout's softclass) that must succeed."""
    completed = subprocess.run(
        [sys.executable, *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def _run(mode: str) -> dict:
    return json.loads(_python("-c", _SCRIPT, mode).splitlines()[-1])


@pytest.mark.parametrize("mode", ["healthy", "killed", "fails-in-helper"])
def test_helpers_draw_the_same_bytes_and_a_failed_helper_loses_nothing(mode):
    outcome = _run(mode)
    assert outcome["helpers"] >= 1  # a fresh interpreter without torch may fork
    assert not outcome["torch"]  # neither the pool nor the figures import torch
    assert outcome["same"] == {"curves": True, "agreement": True, "agreement-2": True}
    assert outcome["png"] and outcome["leftover"] == []


def test_no_helpers_in_a_process_running_torch():
    assert "torch" in sys.modules
    with figure_pool() as pool:
        assert pool is None
        styles = {"styles": {"B": ("#ff7f0e", "--")}}
        drawn = render_figures(
            [FigureJob("a", "agreement_figure", ({"A vs B": [0.0, 1.0]},), styles)]
        )
    assert drawn["a"].startswith(PNG_SIGNATURE)


def test_plain_data_pickles_without_torch():
    probabilities = torch.softmax(torch.randn(40, 3, generator=torch.Generator().manual_seed(0)), 1)
    targets = torch.arange(40) % 3
    history = History([EpochRecord(1, 1.0, 0.5, 1.2, 0.4, 0.01)], None, False)
    value = plain(
        {
            "calibration": metrics.calibration(probabilities, targets),
            "curves": metrics.one_vs_rest_curves(probabilities, targets),
            "matrix": torch.eye(3, dtype=torch.int64),
            "history": history,
        }
    )
    data = pickle.dumps(value)
    assert b"torch" not in data
    assert value["history"].column("validation_loss") == [1.2]
    assert value["matrix"].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert value["curves"].roc_auc.shape == (3,)


# The command line as the console script runs it, counting the figures its helpers returned.
_COUNTING_CLI = textwrap.dedent(
    """
    import sys
    from softclass.evaluation import figure_pool

    returned = []
    original = figure_pool.FigurePool.render

    def render(self, jobs):
        drawn = original(self, jobs)
        returned.extend(drawn)
        return drawn

    figure_pool.FigurePool.render = render
    from softclass.cli import main

    count_file, *sys.argv[1:] = sys.argv[1:]
    try:
        main()
    finally:
        with open(count_file, "w") as file:
            file.write(str(len(returned)))
    """
)


@pytest.mark.parametrize("command", ["compare", "train"])
def test_the_command_line_writes_every_figure_through_its_helpers(tmp_path, command):
    out, count = tmp_path / "run", tmp_path / "count"
    arguments = ["--epochs", "5", "--out", str(out)]
    if command == "train":  # the bundled Iris table as a file
        from softclass.data.bundled import bundled_path

        arguments = [str(bundled_path("iris")), *arguments]
    _python("-c", _COUNTING_CLI, str(count), command, *arguments)
    # the helpers were forked before the options (and torch) were read, and drew every figure
    # compare: loss curves, calibration, agreement, ROC/PR of each design, confusion matrices;
    # train: the same for its one design, without the agreement
    from softclass.mlp.designs import DESIGNS

    assert int(count.read_text()) == (4 + len(DESIGNS) if command == "compare" else 4)
    if command == "train":
        assert (out / "report.html").read_text().count("data:image/png;base64,") >= 3
        return
    for name in ("loss_curves.png", "calibration.png", "confusion_matrices.png"):
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)
    page = (out / "report.html").read_text()
    # loss curves, calibration, agreement and one ROC/PR figure per design, all inline
    assert page.count("data:image/png;base64,") >= 3 + len(DESIGNS)
