"""Saved model directories: round trip, and every missing or bad part named."""

import dataclasses
import errno
import json
import math
import os
import pickle
from pathlib import Path

import polars as pl
import pytest
import torch

from softclass.data import Recipe, load_bundled
from softclass.errors import ConfigError, ModelFileError, OutputError, TrainingDiverged
from softclass.jobs.store import METADATA_FILE, WEIGHTS_FILE, load_model, save_model
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLPConfig, build_mlp
from softclass.training.config import TrainConfig


@pytest.fixture(scope="module")
def iris_recipe():
    return Recipe.fit(load_bundled("iris"))


@pytest.fixture
def saved_dir(tmp_path, iris_recipe):
    model = build_mlp(MLPConfig(4, 3), seed=5)
    save_model(
        tmp_path / "model",
        model,
        get_design("B"),
        iris_recipe,
        TrainConfig(epochs=3),
        {"epochs": 3},
    )
    return tmp_path / "model", model


def test_round_trip_keeps_weights_design_recipe_and_options(saved_dir, iris_recipe):
    directory, model = saved_dir
    saved = load_model(directory)
    for name, tensor in model.state_dict().items():
        assert torch.equal(saved.model.state_dict()[name], tensor)
    assert saved.design.name == "B"
    assert saved.classes == iris_recipe.classes == ("setosa", "versicolor", "virginica")
    assert saved.train_config == TrainConfig(epochs=3)
    assert saved.history_summary == {"epochs": 3}
    features = iris_recipe.transform(load_bundled("iris"))[:5]
    expected = torch.softmax(model(features), dim=1)
    torch.testing.assert_close(saved.predict_proba(features), expected)
    metadata = json.loads((directory / METADATA_FILE).read_text())
    assert metadata["format_version"] == 1 and metadata["design"] == "B"


def test_save_refuses_a_recipe_that_does_not_fit_the_network(tmp_path, iris_recipe):
    with pytest.raises(ConfigError, match="the network takes 5 and predicts 3"):
        save_model(
            tmp_path, build_mlp(MLPConfig(5, 3), 0), get_design("A"), iris_recipe, TrainConfig(), {}
        )


def _edit_metadata(directory, change):
    path = directory / METADATA_FILE
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("design"), r"model.json: missing field 'design'"),
        (
            lambda m: m.update(design="no-such-design"),
            r"bad field 'design': unknown design 'no-such-design'",
        ),
        (lambda m: m.update(format_version=7), r"'format_version' is 7; this softclass reads"),
        (
            lambda m: m.update(model_config=[4, 3]),
            r"field 'model_config' is a list of 2 items; expected a mapping",
        ),
        (
            lambda m: m["model_config"].pop("hidden"),
            r"field 'model_config' lacks key\(s\) \['hidden'\]",
        ),
        (lambda m: m["train_config"].update(epochs=0), r"bad field 'train_config': epochs=0"),
        (lambda m: m.update(classes=["a", "b", "c"]), r"field 'classes' \['a', 'b', 'c'\]"),
        (lambda m: m.update(recipe={"nonsense": 1}), r"bad field 'recipe'|field 'recipe'"),
        (lambda m: m["model_config"].update(n_features=5), r"describes 5 and 3"),
    ],
)
def test_bad_metadata_fields_are_named(saved_dir, change, message):
    directory, _ = saved_dir
    _edit_metadata(directory, change)
    with pytest.raises(ModelFileError, match=message):
        load_model(directory)


def test_missing_directory_and_files_are_named(saved_dir, tmp_path):
    directory, _ = saved_dir
    with pytest.raises(ModelFileError, match="no such model directory"):
        load_model(tmp_path / "nowhere")
    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelFileError, match=r"model.safetensors: missing file"):
        load_model(directory)
    (directory / METADATA_FILE).write_text("{not json")
    (directory / WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"model.json: not readable JSON"):
        load_model(directory)
    (directory / METADATA_FILE).write_text("[1]")
    with pytest.raises(ModelFileError, match="expected a JSON object, found list"):
        load_model(directory)


def test_weights_of_another_shape_are_refused(saved_dir, iris_recipe, tmp_path):
    directory, _ = saved_dir
    other = tmp_path / "other"
    save_model(
        other, build_mlp(MLPConfig(4, 3, (9,)), 0), get_design("B"), iris_recipe, TrainConfig(), {}
    )
    (directory / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(ModelFileError, match=r"do not fit the network .* wrong shape"):
        load_model(directory)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_in_place_of_the_weights_is_refused_not_executed(saved_dir, tmp_path):
    directory, _ = saved_dir
    marker = tmp_path / "pwned"
    (directory / WEIGHTS_FILE).write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ModelFileError, match=r"safetensors header length .* is over the 1 MiB"):
        load_model(directory)
    torch.save({"weights": _Exploit(marker)}, directory / WEIGHTS_FILE)
    with pytest.raises(ModelFileError, match=r"safetensors header length .* is over the 1 MiB"):
        load_model(directory)
    assert not marker.exists()


def test_integer_weights_are_refused(saved_dir):
    from safetensors.torch import save_file

    directory, model = saved_dir
    integers = {
        name: torch.zeros(tensor.shape, dtype=torch.int32)
        for name, tensor in model.state_dict().items()
    }
    save_file(integers, str(directory / WEIGHTS_FILE))
    with pytest.raises(
        ModelFileError,
        match=r"field 'header\[layers.0.bias\].dtype' is 'I32'; expected a float dtype",
    ):
        load_model(directory)


# -- saved as one unit ----------------------------------------------------------------------------


def _save(directory, recipe, hidden, epochs):
    model = build_mlp(MLPConfig(4, 3, (hidden,)), seed=hidden)
    save_model(directory, model, get_design("A"), recipe, TrainConfig(), {"epochs": epochs})
    return model


def test_saving_over_a_model_replaces_both_files_and_keeps_the_checkpoint(tmp_path, iris_recipe):
    directory = tmp_path / "model"
    _save(directory, iris_recipe, 7, 20)
    (directory / "checkpoint.pt").write_bytes(b"the run's checkpoint")
    _save(directory, iris_recipe, 9, 40)
    saved = load_model(directory)
    assert saved.model_config.hidden == (9,) and saved.history_summary == {"epochs": 40}
    assert (directory / "checkpoint.pt").read_bytes() == b"the run's checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("failing", [WEIGHTS_FILE, METADATA_FILE])
def test_a_full_disk_while_saving_keeps_the_earlier_model_whole(
    tmp_path, iris_recipe, monkeypatch, failing
):
    directory = tmp_path / "model"
    _save(directory, iris_recipe, 7, 20)
    real = {"write_bytes": Path.write_bytes, "write_text": Path.write_text}

    def full_disk(kind):
        def write(path, data, *args, **kwargs):
            if path.name == failing:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real[kind](path, data, *args, **kwargs)

        return write

    for kind in real:
        monkeypatch.setattr(Path, kind, full_disk(kind))
    with pytest.raises(OutputError, match=rf"no space left on the device holding {tmp_path}"):
        _save(directory, iris_recipe, 9, 40)
    monkeypatch.undo()
    saved = load_model(directory)
    assert saved.model_config.hidden == (7,) and saved.history_summary == {"epochs": 20}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_weights_are_never_saved(tmp_path, iris_recipe, value):
    model = build_mlp(MLPConfig(4, 3), seed=0)
    with torch.no_grad():
        model.state_dict()["layers.0.weight"][1, 2] = value
    with pytest.raises(TrainingDiverged, match=r"1 of 28 values of 'layers.0.weight' are NaN"):
        save_model(tmp_path / "m", model, get_design("A"), iris_recipe, TrainConfig(), {})
    assert list(tmp_path.iterdir()) == []


def test_non_finite_recipe_statistics_are_refused_at_save_time(tmp_path):
    # Recipe.fit itself refuses values beyond float32 (issue 12), so the overflow is planted.
    table = pl.DataFrame(
        {"x": [1.0, -1.0, 3.0, 1.0] * 5, "y": [1.0, 2, 3, 4] * 5, "c": ["a", "b"] * 10}
    )
    recipe = Recipe.fit(table, "c")
    recipe = dataclasses.replace(
        recipe,
        features=(dataclasses.replace(recipe.features[0], scale=math.inf), *recipe.features[1:]),
    )
    model = build_mlp(MLPConfig(2, 2), seed=0)
    with pytest.raises(
        ConfigError, match=r"column 'x': the preprocessing statistic 'scale' is inf"
    ):
        save_model(tmp_path / "m", model, get_design("A"), recipe, TrainConfig(), {})
    assert list(tmp_path.iterdir()) == []


# -- extreme but finite model files (issue 22) ---------------------------------------------------


def _edit_recipe_scales(directory: Path, scale: float) -> None:
    path = directory / METADATA_FILE
    metadata = json.loads(path.read_text())
    for feature in metadata["recipe"]["features"]:
        feature["scale"] = scale
    path.write_text(json.dumps(metadata))


def test_a_tiny_recipe_scale_gives_an_error_not_nan_predictions(saved_dir):
    from softclass.jobs.predict import predict_table

    directory, _ = saved_dir
    _edit_recipe_scales(directory, 1e-300)
    with pytest.raises(ModelFileError, match=r"150 of 150 row\(s\) get NaN or infinite .*row 2\)"):
        predict_table(load_model(directory), load_bundled("iris"))


def test_a_negative_recipe_scale_is_refused(saved_dir):
    directory, _ = saved_dir
    _edit_recipe_scales(directory, -1.0)
    with pytest.raises(ModelFileError, match=r"field .*scale' should be a positive number, got -1"):
        load_model(directory)


def test_huge_weights_give_an_error_not_nan_predictions(saved_dir):
    from safetensors.torch import load_file, save_file

    directory, _ = saved_dir
    weights = load_file(str(directory / WEIGHTS_FILE))
    weights = {name: torch.full_like(tensor, 1e38) for name, tensor in weights.items()}
    save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "1"})
    saved = load_model(directory)
    with pytest.raises(ModelFileError, match=r"get NaN or infinite probabilities .*first: row 0"):
        saved.predict_proba(torch.ones(3, 4))
