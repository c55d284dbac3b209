"""Averaged members (issue 19 part 2, TabM's lever): K networks trained at once by the engine,
their probabilities averaged — through the engine, the model directory, ``train``/``predict``,
``compare`` (which trains one network) and ``softclass.Classifier``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from softclass.data import bundled_path
from softclass.data.prepare import prepare_table
from softclass.errors import ConfigError, ModelFileError
from softclass.jobs.compare import compare
from softclass.jobs.defaults import DEMONSTRATION, TABLE
from softclass.jobs.store import load_model, save_model
from softclass.jobs.train_predict import one_network_where_needed
from softclass.mlp.designs import DESIGNS, get_design
from softclass.mlp.model import MLPConfig, build_mlp
from softclass.training.config import TrainConfig
from softclass.training.distributed import DistContext
from softclass.training.engine import train_model
from softclass.training.ensemble import AveragedMLP, member_seeds

SHAPE = MLPConfig(3, 4, (5,), "relu")


@pytest.fixture
def rows():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(60, 3, generator=generator)
    targets = (features[:, 0] > 0).long() + 2 * (features[:, 1] > 0).long()
    return features, targets


def test_the_table_default_is_four_members_and_the_demonstration_one():
    assert (TABLE.members, DEMONSTRATION.members) == (4, 1)
    assert TABLE.train_options()["members"] == 4
    assert TrainConfig().members == 1
    assert member_seeds(7, 3) == [7, 1007, 2007]


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_every_design_predicts_the_mean_of_the_members_probabilities(name):
    design = get_design(name)
    members = [build_mlp(SHAPE, seed).eval() for seed in (0, 1, 2)]
    features = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    averaged = AveragedMLP(members, design)
    with torch.no_grad():
        expected = torch.stack([design.predict_proba(m(features)) for m in members]).mean(0)
        got = design.predict_proba(averaged(features))
        log_got = design.predict_log_proba(averaged(features))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_got.exp(), expected, rtol=1e-5, atol=1e-6)
    assert (averaged(features).argmax(1) == expected.argmax(1)).all()


def test_an_averaged_model_needs_two_members():
    with pytest.raises(ConfigError, match=r"^an averaged model needs at least 2 members, got 1$"):
        AveragedMLP([build_mlp(SHAPE, 0)], get_design("A"))


def test_stacked_state_round_trips():
    design = get_design("A")
    averaged = AveragedMLP([build_mlp(SHAPE, seed) for seed in (0, 1)], design)
    state = averaged.stacked_state()
    assert state["layers.0.weight"].shape == (2, 5, 3)
    again = AveragedMLP.from_stacked_state(SHAPE, state, design)
    features = torch.randn(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(again(features), averaged(features))


def test_the_engine_trains_the_members_at_once_the_first_as_alone(rows):
    features, targets = rows
    config = TrainConfig(epochs=5, batch_size=16, optimizer="adam", learning_rate=1e-2)
    design = get_design("A")
    alone = train_model(design, SHAPE, config, features, targets)
    together = train_model(design, SHAPE, dataclasses.replace(config, members=3), features, targets)
    assert isinstance(together.model, AveragedMLP) and together.model.n_members == 3
    first = together.model.members[0]
    for name, tensor in alone.model.state_dict().items():
        torch.testing.assert_close(first.state_dict()[name], tensor)
    second = together.model.members[1].state_dict()["layers.0.weight"]
    assert not torch.equal(second, alone.model.state_dict()["layers.0.weight"])
    assert together.history.epochs == alone.history.epochs == 5


def test_members_on_the_autograd_backend_are_refused(rows):
    features, targets = rows
    config = TrainConfig(epochs=1, backend="autograd", members=2)
    with pytest.raises(ConfigError, match=r"^members=2: the autograd backend \(bf16, torchrun\)"):
        train_model(get_design("A"), SHAPE, config, features, targets)


def test_runs_that_train_one_network_say_so_in_their_configuration():
    config = TrainConfig(members=4)
    data = prepare_table(_iris(), "species")
    assert one_network_where_needed(config, data, DistContext()).members == 4
    bf16 = TrainConfig(members=4, precision="bf16")
    assert one_network_where_needed(bf16, data, DistContext()).members == 1
    assert one_network_where_needed(TrainConfig(), data, DistContext()) == TrainConfig()


def test_a_saved_model_keeps_its_members_and_predicts_their_mean(tmp_path):
    data = prepare_table(_iris(), "species")
    shape = MLPConfig(data.n_features, data.n_classes, (5,), "relu")
    design = get_design("B")
    averaged = AveragedMLP([build_mlp(shape, seed).eval() for seed in (0, 1, 2)], design)
    config = TrainConfig(members=3)
    save_model(tmp_path / "m", averaged, design, data.recipe, config, {})
    saved = load_model(tmp_path / "m")
    assert isinstance(saved.model, AveragedMLP) and saved.model.n_members == 3
    with torch.no_grad():
        torch.testing.assert_close(
            saved.predict_proba(data.train_features),
            design.predict_proba(averaged(data.train_features)),
        )
    with pytest.raises(ConfigError, match=r"members=1 but the model holds 3 network"):
        save_model(tmp_path / "n", averaged, design, data.recipe, TrainConfig(), {})


def test_a_model_json_whose_member_count_does_not_fit_the_weights_is_refused(tmp_path):
    data = prepare_table(_iris(), "species")
    shape = MLPConfig(data.n_features, data.n_classes, (5,), "relu")
    design = get_design("A")
    averaged = AveragedMLP([build_mlp(shape, seed) for seed in (0, 1)], design)
    save_model(tmp_path / "m", averaged, design, data.recipe, TrainConfig(members=2), {})
    metadata_path = tmp_path / "m" / "model.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["train_config"]["members"] = 3
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(ModelFileError, match=r"the weights do not fit the network in model.json"):
        load_model(tmp_path / "m")
    metadata["train_config"]["members"] = 1
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(ModelFileError, match=r"expected at most 2 dimensions"):
        load_model(tmp_path / "m")


def test_compare_refuses_members():
    data = prepare_table(_iris(), "species")
    with pytest.raises(ConfigError, match=r"^members=2: compare trains one network per design"):
        compare(data, "A", TrainConfig(epochs=1, members=2))


def test_train_on_a_table_averages_four_and_predict_reads_them(run, table_file, tmp_path):
    code, out, err = run("train", table_file, "--out", tmp_path / "m", "--epochs", "3")
    assert code == 0, err
    assert "mean of 4 networks" in out
    saved = load_model(tmp_path / "m")
    assert saved.train_config.members == 4 and saved.model.n_members == 4
    code, out, err = run("predict", tmp_path / "m", table_file, "--accuracy")
    assert code == 0, err
    assert "accuracy" in err + out
    code, out, err = run(
        "train", table_file, "--out", tmp_path / "one", "--epochs", "3", "--members", "1"
    )
    assert code == 0, err
    assert "mean of" not in out
    assert load_model(tmp_path / "one").train_config.members == 1


def test_a_bf16_run_on_a_table_says_it_trained_one_network(run, table_file, tmp_path):
    out_dir = tmp_path / "m"
    code, out, err = run(
        "train", table_file, "--out", out_dir, "--epochs", "2", "--precision", "bf16"
    )
    assert code == 0, err
    assert "one network (members 4 needs one fp32 in-memory run)" in out
    assert load_model(out_dir).train_config.members == 1


def test_the_bundled_iris_trains_one_network_and_compare_one_per_design(run, tmp_path):
    code, out, err = run("train", bundled_path("iris"), "--out", tmp_path / "m", "--epochs", "3")
    assert code == 0, err
    assert "mean of" not in out and load_model(tmp_path / "m").train_config.members == 1


def test_compare_on_a_table_trains_one_network_per_design(run, table_file, tmp_path):
    code, out, err = run("compare", table_file, "--out", tmp_path / "c", "--epochs", "3", "--json")
    assert code == 0, err
    assert json.loads(out)["train_config"]["members"] == 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_classifier_averages_n_members():
    from softclass.estimator import Classifier

    generator = np.random.default_rng(0)
    X = generator.normal(size=(80, 3))
    y = np.where(X[:, 0] > 0, "yes", "no")
    one = Classifier(max_iter=5, random_state=0).fit(X, y)
    four = Classifier(max_iter=5, random_state=0, n_members=4).fit(X, y)
    assert one.get_params()["n_members"] == 1
    network = four.to_mlp()
    assert isinstance(network, AveragedMLP) and network.n_members == 4
    with torch.no_grad():
        members = [member(torch.tensor(X, dtype=torch.float32)) for member in network.members]
        expected = torch.stack([m.softmax(1) for m in members]).mean(0).numpy()
        first = one.to_mlp()(torch.tensor(X, dtype=torch.float32)).softmax(1).numpy()
    np.testing.assert_allclose(four.predict_proba(X), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(members[0].softmax(1).numpy(), first, rtol=1e-4, atol=1e-5)
    assert (four.predict(X) == four.classes_[expected.argmax(1)]).all()
    with pytest.raises(ValueError, match=r"n_members"):
        Classifier(n_members=0).fit(X, y)


def _iris():
    from softclass.data import load_bundled

    return load_bundled("iris")
