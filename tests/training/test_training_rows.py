"""The batched engine's training table and the rows each step of the torch path sees."""

import pytest
import torch

from softclass.errors import ConfigError
from softclass.mlp.model import MLPConfig
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.config import TrainConfig
from softclass.training.stacked import Member


def _trainer(members):
    config = MLPConfig(3, 4, (40, 40), "relu")
    settings = TrainConfig(batch_size=8, optimizer="adam", backend="torch")
    trainer = BatchedTrainer(config, members, settings)
    assert not trainer.uses_compiled
    return trainer


@pytest.mark.parametrize("members", [[Member("A", 0)], [Member("A", 0), Member("C", 1)]])
def test_every_step_gets_its_members_rows_in_that_members_order(monkeypatch, members):
    trainer = _trainer(members)
    features = torch.randn(20, 3)
    classes = torch.arange(20) % 4
    rows = trainer.training_rows(features, targets=classes)
    seen = []
    step = BatchedTrainer._step

    def recording_step(self, batch_features, batch_targets, row_scale):
        seen.append((batch_features.clone(), batch_targets.clone()))
        return step(self, batch_features, batch_targets, row_scale)

    monkeypatch.setattr(BatchedTrainer, "_step", recording_step)
    for epoch in range(2):
        seen.clear()
        trainer.train_epoch(rows, epoch)
        order = trainer.epoch_order(20, epoch)
        got_features = torch.cat([batch for batch, _ in seen], dim=-2)
        got_targets = torch.cat([targets for _, targets in seen], dim=-1)
        if len(members) == 1:  # one model: no member axis
            order = order[0]
        assert [batch.shape[-2] for batch, _ in seen] == [8, 8, 4]
        assert torch.equal(got_features, features[order])
        assert torch.equal(got_targets, classes[order])


def test_the_table_from_class_indices_equals_the_one_from_one_hot_rows():
    trainer = _trainer([Member("A", 0)])
    features = torch.randn(6, 3, dtype=torch.float64)  # converted to the trainer's float32
    classes = torch.tensor([3, 0, 1, 1, 2, 3])
    weights = torch.rand(6)
    one_hot = torch.nn.functional.one_hot(classes, 4).float()
    from_indices = trainer.training_rows(features, row_weights=weights, targets=classes)
    from_one_hot = trainer.training_rows(features.float(), one_hot, weights)
    assert from_indices.table.dtype == torch.float32
    assert torch.equal(from_indices.table, from_one_hot.table)
    assert from_indices.table.shape == (6, 3 + 1 + 1)  # features, class index, weight
    assert torch.equal(from_indices.table[:, 3], classes.float())
    assert torch.equal(from_indices.table[:, 4], weights)
    assert torch.equal(from_indices.targets, from_one_hot.targets)
    assert torch.equal(from_indices.targets, classes)


def test_training_rows_takes_one_kind_of_targets():
    trainer = _trainer([Member("A", 0)])
    features = torch.randn(4, 3)
    classes = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ConfigError, match="takes targets_one_hot or targets, exactly one"):
        trainer.training_rows(features)
    with pytest.raises(ConfigError, match="takes targets_one_hot or targets, exactly one"):
        trainer.training_rows(
            features, torch.nn.functional.one_hot(classes, 4).float(), targets=classes
        )


@pytest.mark.parametrize("backend", ["torch", "compiled"])
def test_the_table_does_not_grow_with_the_number_of_classes(backend):
    # 5,000 classes in 6,000 rows: the table is (N, F + 1), never (N, F + C), and both backends
    # train on it with the targets each design needs built per batch.
    n_rows, n_classes = 6_000, 5_000
    config = MLPConfig(3, n_classes, (8,), "tanh")
    settings = TrainConfig(batch_size=256, optimizer="sgd", backend=backend)
    trainer = BatchedTrainer(config, [Member("A", 0), Member("C", 0)], settings)
    assert trainer.choose_backend(n_rows).backend == backend
    features = torch.randn(n_rows, 3)
    classes = torch.arange(n_rows) % n_classes
    rows = trainer.training_rows(features, targets=classes)
    assert rows.table.shape == (n_rows, 3 + 1)
    assert torch.equal(rows.table[:, 3].long(), classes)
    loss, accuracy = trainer.train_epoch(rows, 0)
    assert loss.shape == (2,) and bool(torch.isfinite(loss).all())
    assert bool(((accuracy >= 0) & (accuracy <= 1)).all())


def test_more_classes_than_the_table_holds_exactly_is_refused():
    config = MLPConfig(3, 2**24 + 2, (4,), "tanh")
    trainer = BatchedTrainer.__new__(BatchedTrainer)
    trainer.config, trainer.dtype, trainer.device = config, torch.float32, torch.device("cpu")
    with pytest.raises(ConfigError, match=r"16,777,218 classes: a torch.float32 training table"):
        trainer.training_rows(torch.zeros(2, 3), targets=torch.tensor([0, 1]))


def test_validation_scores_in_chunks_equal_the_whole_pass(monkeypatch):
    # Past the logits budget (thousands of classes) the rows are scored in chunks: the same
    # mean losses and accuracies as one pass over all rows.
    from softclass.training import stacked

    trainer = _trainer([Member("A", 0), Member("C", 1), Member("D", 2)])
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(1_000, 3, generator=generator)
    classes = torch.randint(0, 4, (1_000,), generator=generator)
    whole = stacked.member_scores(trainer.network, features, classes, trainer.members)
    monkeypatch.setattr(stacked, "_EVAL_LOGITS_BUDGET", 3 * 4 * 64)  # 64 rows a chunk
    chunked = trainer.evaluate(features, classes)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(chunked[1], whole[1], rtol=0, atol=1e-12)
    assert chunked[0].dtype == whole[0].dtype == torch.float32


def test_the_table_holds_the_same_numbers_for_4_classes_as_for_a_million():
    # O(N·F + N) memory: features, one class-index column and the row weight, whatever C.
    features = torch.randn(50, 3)
    classes = torch.arange(50) % 4
    weights = torch.rand(50)
    tables = []
    for n_classes in (4, 5_000, 2**20):
        config = MLPConfig(3, n_classes, (2,), "tanh")
        settings = TrainConfig(batch_size=8, optimizer="sgd", backend="torch")
        trainer = BatchedTrainer(config, [Member("A", 0), Member("C", 0)], settings)
        tables.append(trainer.training_rows(features, row_weights=weights, targets=classes).table)
    assert [table.shape for table in tables] == [(50, 3 + 1 + 1)] * 3
    assert all(torch.equal(table, tables[0]) for table in tables)
