"""Streamed tables (issue 25): the hash split, the seeded windowed shuffle, rank shards, the
recipe fitted on a sample, and streamed training against the in-memory path."""

import dataclasses
import gzip
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest
import torch

from softclass.data.prepare import prepare_table
from softclass.data.recipe import Recipe, typed_table
from softclass.data.stream import (
    EpochPlan,
    TableSource,
    hashed_fraction,
    owned_chunks,
    parse_memory,
    row_hash,
    streamable,
)
from softclass.data.stream_prepare import fit_streamed_recipe, prepare_chunks, validation_mask
from softclass.errors import ConfigError, DataError
from softclass.jobs.stream_train import choose_streamed, prepare_streamed
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLPConfig
from softclass.training.config import TrainConfig
from softclass.training.distributed import DistContext
from softclass.training.streamed import StreamedTrainer


def _table(n_rows: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    number = rng.normal(size=n_rows)
    colour = rng.choice(["red", "green", "blue", "grey"], n_rows)
    label = np.where(number > 0.3, "high", np.where(colour == "red", "red", "low"))
    income = [f"${value:,.0f}" for value in rng.integers(1_000, 90_000, n_rows)]
    return pl.DataFrame(
        {
            "row_id": np.arange(n_rows, dtype=np.float64),
            "number": [
                None if gap else value
                for gap, value in zip(rng.random(n_rows) < 0.05, number, strict=True)
            ],
            "income": income,
            "colour": colour,
            "label": label,
        }
    )


@pytest.fixture
def parquet_table(tmp_path):
    path = tmp_path / "table.parquet"
    _table(2_000).write_parquet(path, row_group_size=150)
    return path


# -- --memory --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GB", 2 * 10**9), ("1.5GiB", 3 * 2**29), ("800M", 800 * 2**20), ("512 mb", 512 * 10**6)],
)
def test_memory_sizes_parse(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lots", r"memory size 'lots': expected a number and a unit such as 2GB"),
        ("2 parsecs", r"memory size '2 parsecs'"),
        ("-1GB", r"memory size '-1GB'"),
        ("10MB", r"memory size '10MB' is 10000000 bytes: expected at least 64MiB"),
    ],
)
def test_bad_memory_sizes_are_named(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_memory(text)


def test_the_cli_names_a_bad_memory_flag(tmp_path, parquet_table):
    from typer.testing import CliRunner

    from softclass.cli import app

    result = CliRunner().invoke(
        app, ["train", str(parquet_table), "--out", str(tmp_path / "m"), "--memory", "much"]
    )
    assert result.exit_code != 0
    assert "--memory" in result.output and "'much'" in result.output


# -- hash split, shards and the epoch plan ---------------------------------------------------


def test_the_hash_split_is_stable_and_takes_its_share():
    rows = np.arange(200_000)
    first = hashed_fraction(rows, 0.2, seed=3)
    assert np.array_equal(first, hashed_fraction(rows, 0.2, seed=3))
    assert abs(first.mean() - 0.2) < 0.005
    assert not np.array_equal(first, hashed_fraction(rows, 0.2, seed=4))
    # a row's fate depends on its index alone, not on the chunk it is read in
    pieces = [
        hashed_fraction(rows[start : start + 777], 0.2, 3) for start in range(0, 200_000, 777)
    ]
    assert np.array_equal(np.concatenate(pieces), first)
    assert len(np.unique(row_hash(rows, 0))) == len(rows)


def test_shards_are_disjoint_and_cover_every_chunk():
    for world in (1, 2, 3):
        shards = [owned_chunks(11, rank, world) for rank in range(world)]
        assert sorted(chunk for shard in shards for chunk in shard) == list(range(11))


def _epoch_rows(plan: EpochPlan, epoch: int, sizes, starts) -> list[list[int]]:
    """The global batches of an epoch as global row numbers, from one rank's plan."""
    batches, current, offset = [], [], 0
    for window, chunks in enumerate(plan.windows(epoch)):
        owned = [chunk for chunk in chunks if chunk in plan.owned]
        rows = np.concatenate(
            [np.arange(starts[c], starts[c] + sizes[c]) for c in owned] or [np.empty(0, int)]
        )
        for local, n_global in plan.pieces(epoch, window, chunks, offset):
            current += rows[local].tolist()
            offset += n_global
            if offset % plan.batch_size == 0 or offset == plan.n_rows():
                batches.append(current)
                current = []
    return batches


def test_the_shuffle_is_seeded_and_every_row_comes_once_per_epoch():
    sizes = [50, 7, 33, 50, 1, 49]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    plan = EpochPlan(sizes, batch_size=16, window_chunks=3, seed=5)
    first = _epoch_rows(plan, 0, sizes, starts)
    assert first == _epoch_rows(EpochPlan(sizes, 16, 3, seed=5), 0, sizes, starts)
    assert first != _epoch_rows(plan, 1, sizes, starts)
    assert first != _epoch_rows(EpochPlan(sizes, 16, 3, seed=6), 0, sizes, starts)
    assert sorted(row for batch in first for row in batch) == list(range(sum(sizes)))
    assert len(first) == plan.n_batches() == -(-sum(sizes) // 16)
    assert all(len(batch) == 16 for batch in first[:-1])


def test_ranks_take_their_rows_out_of_the_same_global_batches():
    sizes = [40, 40, 25, 40, 12]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    whole = _epoch_rows(EpochPlan(sizes, 10, 2, seed=1), 2, sizes, starts)
    ranks = [
        _epoch_rows(EpochPlan(sizes, 10, 2, 1, owned_chunks(5, rank, 2)), 2, sizes, starts)
        for rank in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(whole)
    for batch, part0, part1 in zip(whole, *ranks, strict=True):
        assert sorted(batch) == sorted(part0 + part1)
        assert not set(part0) & set(part1)


def _approx(value):
    """``value`` with every float compared to 1e-12 relative."""
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-12)
    if isinstance(value, dict):
        return {key: _approx(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_approx(item) for item in value)
    return value


# -- the recipe ------------------------------------------------------------------------------


def test_a_small_table_gets_the_in_memory_recipe(parquet_table, tmp_path):
    """Streamed (every chunk read, the sample is the whole table) and in-memory fits agree."""
    table = pl.read_parquet(parquet_table)
    in_memory = prepare_table(table, "label", validation_fraction=0, keep=["row_id"]).recipe
    streamed = fit_streamed_recipe(
        TableSource(parquet_table), "label", validation_fraction=0, keep=["row_id"]
    )
    assert streamed.to_dict() == in_memory.to_dict()
    csv = tmp_path / "table.csv"
    table.write_csv(csv)
    raw = pl.read_csv(csv, infer_schema=False)
    from_text = fit_streamed_recipe(
        TableSource(csv, chunk_rows=300), "label", validation_fraction=0, keep=["row_id"]
    )
    expected = prepare_table(raw, "label", validation_fraction=0, keep=["row_id"]).recipe
    # equal but for the last bits of float sums: polars sums a column per memory chunk, and
    # the whole-file CSV reader cuts its columns into other chunks than one buffer
    assert from_text.to_dict() == _approx(expected.to_dict())


def test_the_recipe_is_fitted_on_the_hashed_training_rows(parquet_table):
    table = pl.read_parquet(parquet_table)
    streamed = fit_streamed_recipe(
        TableSource(parquet_table), "label", validation_fraction=0.25, seed=2, keep=["row_id"]
    )
    training = table.filter(pl.Series(~validation_mask(np.arange(table.height), 0.25, 2)))
    typed, types = typed_table(training, "label")
    expected = Recipe.fit(typed, "label", keep=["row_id"], column_types=types)
    assert streamed.to_dict() == expected.to_dict()


def test_a_sample_of_a_larger_table_is_seeded(parquet_table):
    source = TableSource(parquet_table)
    first = fit_streamed_recipe(source, "label", sample_rows=500, keep=["row_id"])
    again = fit_streamed_recipe(source, "label", sample_rows=500, keep=["row_id"])
    whole = fit_streamed_recipe(source, "label", keep=["row_id"])
    assert first.to_dict() == again.to_dict()
    assert first.to_dict() != whole.to_dict()  # a sample's statistics are not the table's


# -- training ----------------------------------------------------------------------------------


def _streamed(path, memory=64 * 2**20, validation=0.2, seed=0):
    return prepare_streamed(
        path,
        memory=memory,
        validation_fraction=validation,
        seed=seed,
        distributed=DistContext(),
        target="label",
        options={"keep": ["row_id"]},
    )


def _train(data, epochs=3, **options):
    config = TrainConfig(epochs=epochs, batch_size=32, seed=0, learning_rate=0.05, **options)
    model_config = MLPConfig(data.n_features, data.n_classes, (8,), "tanh")
    trainer = StreamedTrainer(
        get_design("A"), model_config, config, data.chunks, data.window_chunks, data.identity
    )
    return trainer.fit_stream()


def test_streamed_training_is_reproducible_and_learns(parquet_table):
    data = _streamed(parquet_table)
    try:
        assert data.n_chunks == 14 and data.window_chunks >= 2
        first, again = _train(data), _train(data)
    finally:
        data.close()
    for a, b in zip(first.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)
    records = first.history.records
    assert records[-1].train_loss < records[0].train_loss
    assert records[-1].validation_accuracy > 0.6


def test_an_unknown_sync_is_refused(parquet_table):
    data = _streamed(parquet_table)
    try:
        with pytest.raises(ConfigError, match="sync='weights': expected 'auto', 'data' or"):
            StreamedTrainer(
                get_design("A"), MLPConfig(data.n_features, data.n_classes, (8,), "tanh"),
                TrainConfig(epochs=1), data.chunks, data.window_chunks, data.identity,
                sync="weights",
            )  # fmt: skip
    finally:
        data.close()


def test_progress_writes_a_line_every_interval_and_a_closing_line():
    from softclass.jobs.stream_train import RowProgress

    now, lines = [0.0], []
    progress = RowProgress("preparing", 1_000, lines.append, interval=5.0, clock=lambda: now[0])
    for _ in range(4):
        now[0] += 2.0
        progress.advance(100)
    assert lines == ["preparing: 300 of 1,000 rows done, 50 rows/s"]  # at 6 s, not at 2 or 4
    progress.finish()
    assert lines[-1] == "preparing: 400 rows done in 8.0 s, 50 rows/s"
    quiet = []
    RowProgress("preparing", None, quiet.append, interval=5.0, clock=lambda: 1.0).finish()
    assert quiet == []  # a pass shorter than the interval writes nothing


def test_streamed_preparation_reports_its_progress(parquet_table, monkeypatch):
    from softclass.jobs import stream_train

    monkeypatch.setattr(stream_train, "PROGRESS_SECONDS", 0.0)
    lines = []
    data = prepare_streamed(
        parquet_table,
        memory=64 * 2**20,
        validation_fraction=0.2,
        seed=0,
        distributed=DistContext(),
        target="label",
        progress=lines.append,
    )
    data.close()
    sample = [line for line in lines if line.startswith("reading the recipe's sample: ")]
    preparing = [line for line in lines if line.startswith("preparing: ")]
    assert len(sample) == len(preparing) == 14 + 1  # a line per chunk, then the closing line
    assert sample[0].startswith("reading the recipe's sample: 150 of 2,000 rows done, ")
    assert preparing[-1].startswith("preparing: 2,000 rows done in ")
    assert all(line.endswith(" rows/s") for line in lines)


def test_the_table_size_against_memory_chooses_the_path(parquet_table):
    source = TableSource(parquet_table)
    assert not choose_streamed(source, 2**40)
    assert choose_streamed(source, source.arrow_bytes)


_RANK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    from softclass.mlp.designs import get_design
    from softclass.mlp.model import MLPConfig
    from softclass.training.config import TrainConfig
    from softclass.training.streamed import StreamedTrainer
    from softclass.data.stream import EpochPlan
    from softclass.jobs.stream_train import prepare_streamed
    from softclass.training import distributed

    context = distributed.setup("cpu")
    data = prepare_streamed(sys.argv[1], memory=64 * 2**20, validation_fraction=0.2, seed=0,
                            distributed=context, target="label", options={"keep": ["row_id"]})
    feature = data.recipe.features[data.recipe.feature_names.index("row_id")]
    plan = EpochPlan(data.chunks.train_sizes, 32, data.window_chunks, 0, data.chunks.owned)
    seen, offset = [], 0
    for window, chunks in enumerate(plan.windows(1)):
        owned = [chunk for chunk in chunks if chunk in plan.owned]
        ids = np.concatenate([data.chunks.load(c)[0][:, 0].numpy() for c in owned] or [[]])
        ids = np.rint(ids.astype(np.float64) * feature.scale + feature.offset)
        for local, n_global in plan.pieces(1, window, chunks, offset):
            seen += ids[local].astype(int).tolist()
            offset += n_global
    validation = np.concatenate(
        [data.chunks.load(c, "validation")[0][:, 0].numpy() for c in data.chunks.owned])
    validation = np.rint(validation.astype(np.float64) * feature.scale + feature.offset)
    with open(f"{sys.argv[2]}.{context.rank}", "w") as file:
        json.dump({"train": seen, "validation": validation.astype(int).tolist()}, file)
    config = TrainConfig(epochs=3, batch_size=32, seed=0, learning_rate=0.05)
    trainer = StreamedTrainer(
        get_design("A"), MLPConfig(data.n_features, data.n_classes, (8,), "tanh"), config,
        data.chunks, data.window_chunks, data.identity, distributed=context, sync=sys.argv[3],
    )
    result = trainer.fit_stream()
    assert trainer.network_ is trainer.model_  # one flat all-reduce per step, no DDP wrapper
    torch.save(result.model.state_dict(), f"{sys.argv[2]}.weights.{context.rank}")
    data.close()
    distributed.teardown(context)
    """
)


def _run_ranks(script, table, out, n_processes, sync="gradients"):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    run = subprocess.run(
        [*command, f"--nproc-per-node={n_processes}", str(script), str(table), str(out), sync],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["gradients", "data"])
def test_two_gloo_ranks_see_every_row_once_per_epoch(parquet_table, tmp_path, sync):
    """Each rank prepares its own chunks; together they cover every row once per epoch (and
    the hash split's validation rows once), and train the weights of one process: to float
    tolerance when the ranks all-reduce gradients, bit for bit when they share the windows."""
    script = tmp_path / "ranks.py"
    script.write_text(_RANK_SCRIPT)
    _run_ranks(script, parquet_table, tmp_path / "one", 1, sync)
    _run_ranks(script, parquet_table, tmp_path / "seen", 2, sync)
    rank1 = torch.load(tmp_path / "seen.weights.1")
    for name, weights in torch.load(tmp_path / "one.weights.0").items():
        reached = torch.load(tmp_path / "seen.weights.0")[name]
        if sync == "data":
            assert torch.equal(reached, weights)
        else:
            torch.testing.assert_close(reached, weights, rtol=1e-5, atol=1e-6)
        assert torch.equal(rank1[name], reached)  # the ranks stay identical
    ranks = [json.loads((tmp_path / f"seen.{rank}").read_text()) for rank in range(2)]
    train = ranks[0]["train"] + ranks[1]["train"]
    validation = ranks[0]["validation"] + ranks[1]["validation"]
    assert not set(ranks[0]["train"]) & set(ranks[1]["train"])
    assert sorted(train + validation) == list(range(2_000))
    held_out = np.flatnonzero(validation_mask(np.arange(2_000), 0.2, 0)).tolist()
    assert sorted(validation) == held_out


def test_threads_are_shared_among_the_ranks_of_a_machine(monkeypatch):
    from softclass.training.distributed import threads_per_rank

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads_per_rank(2) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert threads_per_rank(2) == 2 and threads_per_rank(1) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert threads_per_rank(8) == 1


# -- errors ------------------------------------------------------------------------------------


def test_compressed_csv_and_json_lines_stream_through_the_table_reader(tmp_path, parquet_table):
    table = _table(2_000)
    plain, packed, lines = tmp_path / "t.csv", tmp_path / "t.csv.gz", tmp_path / "t.jsonl"
    table.write_csv(plain)
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    table.write_ndjson(lines)
    recipes = {}
    for path in (plain, packed, lines):
        source = TableSource(path, chunk_rows=150)
        frames = [frame for _, frame in source.read()]
        assert [chunk.n_rows for chunk in source.chunks] == [150] * 13 + [50]
        whole = pl.concat(frames)
        assert whole.height == 2_000 and whole["label"].to_list() == table["label"].to_list()
        recipes[path] = fit_streamed_recipe(source, "label").to_dict()
    assert recipes[packed] == recipes[plain]  # the same text, the same recipe
    assert (
        Recipe.from_dict(recipes[lines]).n_features == Recipe.from_dict(recipes[plain]).n_features
    )
    assert TableSource(packed).arrow_bytes == 4 * packed.stat().st_size
    assert streamable(packed) and streamable(lines) and streamable(parquet_table)
    assert not streamable(tmp_path / "t.txt") and not streamable(tmp_path / "missing.csv")


def test_a_ragged_streamed_csv_row_gets_the_table_readers_message(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b,label\n1,2,x\n3,4,5,y\n")
    with pytest.raises(DataError, match=r"ragged\.csv: row 3 has 4 fields but the header has 3"):
        TableSource(path).scan()


def test_train_streams_a_compressed_csv(tmp_path):
    from typer.testing import CliRunner

    from softclass.cli import app

    packed = tmp_path / "big.csv.gz"
    packed.write_bytes(gzip.compress(_table(60_000).write_csv().encode()))
    run = CliRunner().invoke(
        app,
        [
            "train", str(packed), "--out", str(tmp_path / "model"), "--memory", "64MiB",
            "--epochs", "1", "--batch-size", "256", "--target", "label",
        ],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "1 epochs, streamed, 1 chunks," in run.output


def test_a_missing_table_or_an_empty_directory_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.csv: no such table"):
        TableSource(tmp_path / "nothing.csv")
    with pytest.raises(DataError, match=r"nothing\.jsonl: no such table \(a CSV, JSON-lines"):
        TableSource(tmp_path / "nothing.jsonl")
    with pytest.raises(DataError, match=r"the directory holds no \.parquet files"):
        TableSource(tmp_path)


def test_a_bad_recipe_option_is_a_config_error_on_every_rank(parquet_table):
    with pytest.raises(ConfigError, match=r"--normalize 'bogus' is not allowed; expected one"):
        prepare_streamed(
            parquet_table,
            memory=64 * 2**20,
            validation_fraction=0.2,
            seed=0,
            distributed=DistContext(),
            target="label",
            options={"normalization": "bogus"},
        )


def test_a_table_without_training_rows_is_refused(parquet_table):
    with pytest.raises(DataError, match=r"no training row was sampled from its 2000 rows"):
        fit_streamed_recipe(TableSource(parquet_table), "label", validation_fraction=1.0)
    with pytest.raises(DataError, match=r"no training row was sampled"):
        _streamed(parquet_table, validation=1.0)


def test_a_bad_cell_outside_the_sample_names_its_row_in_the_table(tmp_path):
    table = _table(600).with_columns(pl.col("row_id").cast(pl.String))
    recipe = Recipe.fit(table, "label", keep=["row_id"])
    bad = tmp_path / "bad.csv"
    table.with_columns(
        pl.when(pl.int_range(600) == 450)
        .then(pl.lit("n/a?"))
        .otherwise(pl.col("income"))
        .alias("income")
    ).write_csv(bad)
    with pytest.raises(DataError, match=r"bad\.csv, rows 401-600 \(row numbers below count from"):
        prepare_chunks(
            TableSource(bad, chunk_rows=200), recipe, tmp_path, None, validation_fraction=0, seed=0
        )


def test_streamed_training_refuses_what_it_cannot_do(parquet_table, tmp_path):
    data = _streamed(parquet_table)
    try:
        config = TrainConfig(epochs=1)
        model_config = MLPConfig(data.n_features, data.n_classes, (4,), "tanh")
        trainer = StreamedTrainer(
            get_design("A"), model_config, config, data.chunks, 2, data.identity
        )
        with pytest.raises(ConfigError, match=r"resume needs a checkpoint_path"):
            trainer.fit_stream(resume=True)
        empty = dataclasses.replace(data.chunks, train_sizes=(0,) * data.n_chunks)
        trainer = StreamedTrainer(get_design("A"), model_config, config, empty, 2, "x")
        with pytest.raises(ConfigError, match=r"no training rows: every row of the table"):
            trainer.fit_stream()
    finally:
        data.close()


def test_train_says_which_path_it_took(tmp_path, parquet_table):
    from typer.testing import CliRunner

    from softclass.cli import app

    big = tmp_path / "big.csv"
    _table(120_000).write_csv(big)
    assert choose_streamed(TableSource(big), parse_memory("64MiB"))
    runs = {}
    for name, table in (("small", parquet_table), ("big", big)):
        runs[name] = CliRunner().invoke(
            app,
            [
                "train", str(table), "--out", str(tmp_path / name), "--memory", "64MiB",
                "--epochs", "1", "--batch-size", "256", "--target", "label", "--keep", "row_id",
            ],
        )  # fmt: skip
        assert runs[name].exit_code == 0, runs[name].output
        assert (tmp_path / name / "model.json").is_file()
    assert "1 epochs, in memory," in runs["small"].output
    assert "1 epochs, streamed, 2 chunks," in runs["big"].output
