"""torch.distributed helpers: the single-process context and the sharding arithmetic."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from softclass.data import bundled_path
from softclass.errors import ConfigError
from softclass.mlp.optimizers import OPTIMIZERS
from softclass.training.distributed import DistContext, loss_scale, setup, shard_rows


def test_single_process_without_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = setup(device="cpu")
    assert not context.enabled and context.is_main and context.device.type == "cpu"
    rows = torch.arange(10)
    assert torch.equal(shard_rows(rows, context), rows)


def test_shards_cover_the_global_batch_once():
    rows = torch.tensor([7, 3, 9, 1, 4])
    shards = [shard_rows(rows, DistContext(rank=r, world_size=2)) for r in range(2)]
    assert shards[0].tolist() == [7, 9, 4] and shards[1].tolist() == [3, 1]
    assert sorted(torch.cat(shards).tolist()) == sorted(rows.tolist())


def test_scaled_shard_sums_average_to_the_global_mean():
    losses = torch.tensor([0.5, 1.5, 2.0, 4.0, 1.0])
    world = 2
    per_rank = [
        losses[shard_rows(torch.arange(5), DistContext(rank=r, world_size=world))].sum()
        * loss_scale(5, DistContext(rank=r, world_size=world))
        for r in range(world)
    ]
    assert torch.isclose(sum(per_rank) / world, losses.mean())


def test_bad_environment_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match=r"WORLD_SIZE='two' must be an integer"):
        setup(device="cpu")


def test_cuda_without_a_device_is_refused(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: nothing to refuse")
    with pytest.raises(ConfigError, match=r"no CUDA device is available"):
        setup(device="cuda")


# -- multi-process runs under torchrun (gloo on this CPU) -----------------------------------------


def _train_command(out_dir, n_processes, epochs, optimizer="sgd"):
    train = [
        "-m",
        "softclass",
        "train",
        str(bundled_path("iris")),
        "--out",
        str(out_dir),
        "--epochs",
        str(epochs),
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--optimizer",
        optimizer,
    ]
    if n_processes == 1:
        return [sys.executable, *train]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={n_processes}",
        *train,
    ]


def _environment():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_two_gloo_processes_give_the_weights_of_one(tmp_path, optimizer):
    """Two ranks (the autograd Trainer under DDP, stepping through the optimizer registry) train
    the weights of one process (the batched engine), for every registry optimizer."""
    results = {}
    for n_processes in (1, 2):
        out_dir = tmp_path / f"ranks{n_processes}"
        run = subprocess.run(
            _train_command(out_dir, n_processes, epochs=12, optimizer=optimizer),
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        results[n_processes] = load_file(out_dir / "model.safetensors")
        assert not list(out_dir.glob(".*.tmp")), "a temporary file was left behind"
    assert "on 2 ranks (gloo)" in run.stdout
    for name, weights in results[1].items():
        torch.testing.assert_close(results[2][name], weights, rtol=1e-5, atol=1e-6)


def _children(pid):
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_dead_rank_ends_the_whole_run_with_an_error(tmp_path):
    out_dir = tmp_path / "model"
    launcher = subprocess.Popen(
        _train_command(out_dir, 2, epochs=100000),
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out_dir / "checkpoint.pt").exists():
            assert launcher.poll() is None, launcher.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "training never wrote its first checkpoint"
            time.sleep(0.2)
        workers = _children(launcher.pid)
        assert len(workers) == 2, workers
        os.kill(max(workers), signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=180)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
    assert launcher.returncode != 0
    assert "FAILED" in stderr and "SIGKILL" in stderr
    assert not (out_dir / "model.safetensors").exists()


@pytest.mark.slow
def test_compare_under_torchrun_matches_one_process(tmp_path):
    reports = {}
    for n_processes in (1, 2):
        command = [
            sys.executable,
            "-m",
            "softclass",
            "compare",
            "--design",
            "AB",
            "--epochs",
            "6",
            "--json",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / f"ranks{n_processes}"),
        ]
        if n_processes == 2:
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node=2",
                *command[1:],
            ]
        run = subprocess.run(
            command, env=_environment(), capture_output=True, text=True, timeout=300, check=False
        )
        assert run.returncode == 0, run.stderr[-3000:]
        reports[n_processes] = json.loads(run.stdout)
    for design in ("A", "B"):
        one, two = (reports[n]["designs"][design]["mean_over_seeds"] for n in (1, 2))
        assert two["validation_loss"] == pytest.approx(one["validation_loss"], rel=1e-5)
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert (tmp_path / "ranks2" / "loss_curves.png").exists()
