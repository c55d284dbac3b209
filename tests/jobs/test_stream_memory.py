"""Streamed training under a memory bound (issue 25): progress lines during the epochs, the
memory plan (sample, window, the floor), ranks that hold only their own chunks, --sync."""

import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from softclass.data.stream import TableSource
from softclass.jobs.stream_train import START_BYTES, MemoryPlan, prepare_streamed
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLPConfig
from softclass.training.config import TrainConfig
from softclass.training.distributed import DistContext
from softclass.training.streamed import StreamedTrainer, _slabs, resolve_sync


def _table(n_rows: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    number = rng.normal(size=n_rows)
    colour = rng.choice(["red", "green", "blue", "grey"], n_rows)
    label = np.where(number > 0.3, "high", np.where(colour == "red", "red", "low"))
    return pl.DataFrame({"number": number, "colour": colour, "label": label})


@pytest.fixture
def parquet_table(tmp_path):
    path = tmp_path / "table.parquet"
    _table(2_000).write_parquet(path, row_group_size=150)
    return path


def _streamed(path, memory=64 * 2**20, distributed=None):
    return prepare_streamed(
        path,
        memory=memory,
        validation_fraction=0.2,
        seed=0,
        distributed=distributed or DistContext(),
        target="label",
    )


# -- progress --------------------------------------------------------------------------------

_SHORT_INTERVAL = (
    "import sys; import softclass.jobs.stream_train as stream; stream.PROGRESS_SECONDS = 0.0; "
    "from softclass.cli import main; sys.argv[0] = 'softclass'; main()"
)


def test_streamed_epochs_write_progress_lines_to_a_file(tmp_path):
    """stderr a file (no terminal): the epochs say rows done and rows/s as they go."""
    table = tmp_path / "big.csv"
    _table(200_000).write_csv(table)
    command = [
        sys.executable, "-c", _SHORT_INTERVAL, "train", str(table), "--out",
        str(tmp_path / "model"), "--memory", "64MiB", "--epochs", "2", "--batch-size", "4096",
        "--target", "label",
    ]  # fmt: skip
    with open(tmp_path / "stderr.txt", "w") as stderr:
        run = subprocess.run(command, stderr=stderr, stdout=subprocess.PIPE, text=True, check=False)
    errors = (tmp_path / "stderr.txt").read_text()
    assert run.returncode == 0, errors[-3000:]
    assert "streamed" in run.stdout
    for epoch in (1, 2):
        lines = [line for line in errors.splitlines() if line.startswith(f"epoch {epoch}: ")]
        done = [int(line.split()[2].replace(",", "")) for line in lines[:-1]]
        total = int(lines[0].split(" of ")[1].split()[0].replace(",", ""))
        assert 150_000 < total < 170_000  # the training rows (a fifth are validation rows)
        assert done == sorted(done) and done[0] == 4_096 and done[-1] == total
        assert all(line.endswith(" rows/s") for line in lines)
        assert lines[-1].startswith(f"epoch {epoch}: {total:,} rows done in ")


# -- the memory plan ----------------------------------------------------------------------------


def test_the_window_and_the_sample_grow_with_the_bound_above_the_floor(parquet_table):
    source = TableSource(parquet_table)
    plan = MemoryPlan.of(2**30, source)
    assert plan.start == START_BYTES and plan.chunk > 0  # a constant: the same on every run
    sizes, n_features = [120] * 14, 10
    windows = [
        MemoryPlan(memory, 300 * 2**20, 100 * 2**20, 1_000.0, 100_000).window_chunks(
            [100_000] * 40, 173
        )
        for memory in (2**30, 2 * 2**30, 8 * 2**30)
    ]
    assert windows[0] == 2 and windows[0] < windows[1] < windows[2] <= 40
    assert plan.window_chunks(sizes, n_features) == 14  # a small table: one window
    small = MemoryPlan(400 * 2**20, 300 * 2**20, 100 * 2**20, 1_000.0, 100_000)
    large = MemoryPlan(4 * 2**30, 300 * 2**20, 100 * 2**20, 1_000.0, 100_000)
    assert small.sample_rows() == 1_000 < large.sample_rows() <= 1_000_000
    assert small.warning(173) is not None and large.warning(173) is None
    assert large.floor(173) > large.start + large.chunk


def test_a_bound_below_the_floor_is_named_in_a_warning(parquet_table):
    data = _streamed(parquet_table, memory=64 * 2**20)
    try:
        below = [line for line in data.warnings if line.startswith("--memory 64 MiB is below")]
        assert len(below) == 1
        assert "needs at least, about " in below[0] and "this process at the start" in below[0]
    finally:
        data.close()
    data = _streamed(parquet_table, memory=64 * 2**30)
    try:
        assert not [line for line in data.warnings if line.startswith("--memory")]
    finally:
        data.close()


def test_a_rank_that_shares_the_data_loads_only_its_own_chunks(parquet_table):
    data = _streamed(parquet_table)
    try:
        owned = tuple(range(1, data.n_chunks, 2))  # rank 1 of 2
        chunks = type(data.chunks)(
            data.chunks.directory, owned, data.chunks.train_sizes, data.chunks.validation_sizes
        )
        context = DistContext(rank=1, world_size=2)
        trainer = StreamedTrainer(
            get_design("A"), MLPConfig(data.n_features, data.n_classes, (4,), "tanh"),
            TrainConfig(epochs=1), chunks, data.window_chunks, data.identity,
            distributed=context, sync="data",
        )  # fmt: skip
        trainer.replicated_, trainer.device_ = True, context.device
        window = list(range(6))
        rows = trainer._window(window)
        sizes = data.chunks.train_sizes
        assert rows.features.shape[0] == sum(sizes[chunk] for chunk in (1, 3, 5))
        assert len(rows.owner) == sum(sizes[:6])
        assert (rows.local >= 0).sum() == rows.features.shape[0]
        assert rows.owner.tolist() == np.repeat([0, 1] * 3, sizes[:6]).tolist()
    finally:
        data.close()


def test_slabs_hold_whole_pieces_of_at_least_the_rows_asked():
    pieces = [(np.arange(n), n) for n in (30, 30, 30, 10)]
    slabs = list(_slabs(pieces, 50))
    assert [[n for _, n in slab] for slab in slabs] == [[30, 30], [30, 10]]


# -- --sync --------------------------------------------------------------------------------------


def test_sync_auto_means_gradients_on_cuda_and_data_elsewhere():
    assert resolve_sync("auto", "cpu") == "data"
    assert resolve_sync("auto", "cuda") == "gradients"
    assert resolve_sync("gradients", "cpu") == "gradients"


def test_an_unknown_sync_flag_is_named(tmp_path, parquet_table):
    from typer.testing import CliRunner

    from softclass.cli import app

    run = CliRunner().invoke(
        app, ["train", str(parquet_table), "--out", str(tmp_path / "m"), "--sync", "weights"]
    )
    assert run.exit_code == 2
    assert "'weights': expected one of auto, data, gradients" in run.output


@pytest.mark.slow
def test_torchrun_says_which_sync_ran(tmp_path):
    table = tmp_path / "big.csv"
    _table(200_000).write_csv(table)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "softclass", "train", str(table), "--out", str(tmp_path / "model"),
        "--memory", "64MiB", "--epochs", "1", "--batch-size", "1024", "--target", "label",
        "--sync", "gradients",
    ]  # fmt: skip
    run = subprocess.run(
        command,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "on 2 ranks (gloo), streamed, 2 chunks, gradients all-reduced every step " in run.stdout
    assert "(--sync gradients)" in run.stdout
