"""An output never destroys an input, and a run's files change together or not at all."""

import os
from pathlib import Path

import polars as pl
import pytest
from disk_full import DiskFull

from softclass.data import bundled_path
from softclass.data.prepare import prepare_table
from softclass.errors import ConfigError, OutputError
from softclass.jobs.compare import compare, describe_written
from softclass.jobs.destination import (
    check_output_directory,
    check_output_file,
    run_kind,
    unit_fingerprint,
)
from softclass.jobs.store import load_model
from softclass.jobs.train_predict import describe_kept, train_to_directory
from softclass.mlp.designs import get_design
from softclass.training.config import TrainConfig

IRIS = bundled_path("iris")
QUICK = TrainConfig(epochs=2)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def iris():
    return prepare_table(pl.read_csv(IRIS))


def _tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden ones included) by relative path → content."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _hidden_leftovers(root: Path) -> list[str]:
    return sorted(str(path) for path in root.rglob(".*"))


def _train(iris, out, **kwargs):
    return train_to_directory(iris, get_design("A"), out, QUICK, **kwargs)


def _model_dir(root: Path) -> Path:
    model = root / "model"
    model.mkdir()
    (model / "model.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    return model


# -- the rules, one by one ----------------------------------------------------------------------


def test_an_output_file_may_not_be_the_input_table(tmp_path):
    table = tmp_path / "rows.csv"
    table.write_text("a\n1\n")
    with pytest.raises(ConfigError, match=r"--output .*rows.csv is the input .*would destroy it"):
        check_output_file(table, [table], "--output")


def test_an_output_file_may_not_lie_inside_the_model_being_read(tmp_path):
    model = _model_dir(tmp_path)
    with pytest.raises(ConfigError, match=r"lies inside the input .*model"):
        check_output_file(model / "model.json", [model, tmp_path / "rows.csv"], "--output")


def test_a_symlink_to_the_input_is_resolved_and_refused(tmp_path):
    table = tmp_path / "rows.csv"
    table.write_text("a\n1\n")
    (tmp_path / "link.csv").symlink_to(table)
    with pytest.raises(ConfigError, match=r"link.csv \(→ .*rows.csv\) is the input"):
        check_output_file(tmp_path / "link.csv", [table], "--output")


def test_an_output_file_may_not_lie_inside_another_run(tmp_path):
    model = _model_dir(tmp_path)
    with pytest.raises(ConfigError, match=r"lies inside the train run .*model"):
        check_output_file(model / "predictions.csv", [], "--output")


def test_an_output_file_may_not_be_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, expected a file name"):
        check_output_file(tmp_path, [], "--output")


def test_a_new_output_file_beside_the_input_is_accepted(tmp_path):
    table = tmp_path / "rows.csv"
    assert check_output_file(tmp_path / "out.csv", [table], "--output") == tmp_path / "out.csv"


def test_out_may_not_be_the_dataset_directory_being_read(tmp_path):
    dataset = tmp_path / "data"
    dataset.mkdir()
    pl.DataFrame({"a": [1]}).write_parquet(dataset / "part-0.parquet")
    with pytest.raises(ConfigError, match=r"is the input .*data"):
        check_output_directory(dataset, "train", inputs=[dataset])
    with pytest.raises(ConfigError, match=r"lies inside the input"):
        check_output_directory(dataset / "run", "train", inputs=[dataset])


def test_out_holding_other_files_is_refused_as_a_possible_dataset(tmp_path):
    for index in range(5):
        (tmp_path / f"part-{index}.parquet").write_bytes(b"PAR1")
    with pytest.raises(
        ConfigError,
        match=r"holds files that no softclass run wrote \(part-0.parquet, part-1.parquet, "
        r"part-2.parquet and 2 more\): it may be a dataset",
    ):
        check_output_directory(tmp_path, "compare")


def test_out_of_another_kind_is_refused_even_with_overwrite(tmp_path):
    model = _model_dir(tmp_path)
    with pytest.raises(ConfigError, match=r"holds a train run; compare writes a different kind"):
        check_output_directory(model, "compare", overwrite=True)


def test_out_inside_another_run_is_refused(tmp_path):
    model = _model_dir(tmp_path)
    with pytest.raises(ConfigError, match=r"--out .*sub lies inside the train run"):
        check_output_directory(model / "sub", "train")


def test_out_of_the_same_kind_needs_overwrite_or_resume(tmp_path):
    model = _model_dir(tmp_path)
    with pytest.raises(
        ConfigError, match=r"already holds a train run: pass --resume .*--overwrite"
    ):
        check_output_directory(model, "train")
    assert check_output_directory(model, "train", overwrite=True) == model
    assert check_output_directory(model, "train", resume=True) == model


def test_a_symlinked_out_is_followed_to_its_directory(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "link").symlink_to(victim)
    assert check_output_directory(tmp_path / "link", "train") == victim


def test_an_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"kind='predict': expected one of train, compare"):
        check_output_directory(tmp_path, "predict")


def test_run_kind_needs_a_full_signature(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    assert run_kind(tmp_path) is None  # a lone report.json is somebody else's
    (tmp_path / "history.json").write_text("{}")
    assert run_kind(tmp_path) == "compare"


# -- runs ----------------------------------------------------------------------------------------


def test_a_second_train_needs_overwrite_and_replaces_the_whole_unit(iris, tmp_path):
    out = tmp_path / "run"
    _train(iris, out)
    (out / "notes.txt").write_text("mine")
    before = unit_fingerprint(out)
    with pytest.raises(ConfigError, match="already holds a train run: pass --resume"):
        _train(iris, out)
    assert describe_kept(out, before).endswith(
        f"the model saved in {out} before this run is untouched"
    )
    _train(iris, out, overwrite=True)
    assert unit_fingerprint(out) != before
    assert (out / "notes.txt").read_text() == "mine"  # not the run's: carried over
    assert {"model.json", "model.safetensors", "checkpoint.pt", "report.html"} <= {
        path.name for path in out.iterdir()
    }
    assert describe_kept(out, before) == (
        f"this run's model, checkpoint and report were saved in {out} before it stopped"
    )
    assert _hidden_leftovers(tmp_path) == []


def test_a_second_compare_needs_overwrite(iris, tmp_path):
    out = tmp_path / "run"
    compare(iris, "A", QUICK, out_dir=out)
    before = unit_fingerprint(out)
    with pytest.raises(ConfigError, match="already holds a compare run: pass --overwrite"):
        compare(iris, "A", QUICK, out_dir=out)
    assert describe_written(out, before) == (
        f"the comparison saved in {out} before this run is untouched"
    )
    compare(iris, "AB", QUICK, out_dir=out, overwrite=True)
    assert sorted(path.name for path in (out / "models").iterdir()) == ["A", "B"]
    assert describe_written(out, before).startswith("this run's models, report and figures")


def test_train_through_a_symlink_writes_into_its_target_and_keeps_the_link(iris, tmp_path):
    victim = tmp_path / "victim"
    link = tmp_path / "link"
    victim.mkdir()
    link.symlink_to(victim)
    _train(iris, link)
    assert link.is_symlink() and os.readlink(link) == str(victim)
    assert load_model(victim).design.name == "A"
    assert _hidden_leftovers(tmp_path) == []


@pytest.mark.parametrize("job", ["train", "compare"])
def test_disk_full_at_each_write_keeps_the_earlier_run_whole(job, iris, tmp_path, monkeypatch):
    out = tmp_path / "run"

    def run(**kwargs):
        if job == "train":
            return _train(iris, out, **kwargs)
        return compare(iris, "AB", QUICK, out_dir=out, **kwargs)

    run()
    earlier = _tree(out)
    with monkeypatch.context() as patch:
        counting = DiskFull(patch)
        run(overwrite=True)
    assert counting.writes >= 6  # checkpoints or models, report, figures, history
    earlier = _tree(out)
    for fail_at in range(counting.writes):
        with monkeypatch.context() as patch:
            DiskFull(patch, fail_at)
            with pytest.raises(OutputError, match=r"no space left .*nothing was replaced"):
                run(overwrite=True)
        assert _tree(out) == earlier, fail_at
        assert _hidden_leftovers(tmp_path) == [], fail_at
