"""The table defaults of issue 19 part 2 reach ``train`` and ``compare``: robust scaling and
quantile bins on a user's table, the articles' z-score on the bundled Iris; flags override."""

from __future__ import annotations

from softclass.data import bundled_path
from softclass.jobs.defaults import DEMONSTRATION, TABLE
from softclass.jobs.store import load_model


def _train(run, data, out, *flags):
    code, _, err = run("train", data, "--out", out, "--epochs", "3", *flags)
    assert code == 0, err
    return load_model(out).recipe


def test_a_users_table_gets_robust_scaling_and_bins(run, table_file, tmp_path):
    recipe = _train(run, table_file, tmp_path / "model")
    assert (TABLE.normalization, TABLE.bins) == ("robust", 8)
    assert recipe.normalization == TABLE.normalization
    size = recipe.features[0]
    assert size.clip is not None and len(size.edges) == TABLE.bins + 1
    assert recipe.feature_names[:3] == ("size", "size#bin1", "size#bin2")


def test_flags_override_the_table_defaults(run, table_file, tmp_path):
    recipe = _train(run, table_file, tmp_path / "model", "--normalize", "zscore", "--bins", "0")
    assert recipe.normalization == "zscore"
    assert recipe.features[0].clip is None and recipe.features[0].edges == ()


def test_the_bundled_iris_keeps_the_articles_zscore_without_bins(run, tmp_path):
    recipe = _train(run, bundled_path("iris"), tmp_path / "model")
    assert (DEMONSTRATION.normalization, DEMONSTRATION.bins) == ("zscore", 0)
    assert recipe.normalization == "zscore" and recipe.n_features == 4


def test_bins_out_of_range_on_the_command_line_is_one_error_line(run, table_file, tmp_path):
    code, _, err = run("train", table_file, "--out", tmp_path / "model", "--bins", "-3")
    assert code == 2
    assert "--bins -3 is not allowed; expected a whole number from 0 (no bins) to 256" in err


def test_a_table_of_binned_numbers_only_trains_on_every_backend(run, tmp_path):
    # A copy of Iris is a user's table: its four numbers are all binned (robust + 8 bins), so the
    # stored rows have no column of their own and every input comes from the expansion. The torch
    # backend refused that with a reshape error from inside torch.
    data = tmp_path / "flowers.csv"
    data.write_bytes(bundled_path("iris").read_bytes())
    for backend in ("torch", "compiled", "autograd"):
        for members in ("1", "4"):
            recipe = _train(
                run,
                data,
                tmp_path / f"{backend}-{members}",
                "--backend",
                backend,
                "--members",
                members,
            )
            assert len(recipe.features[0].edges) == TABLE.bins + 1
