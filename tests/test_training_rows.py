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
    assert torch.equal(from_indices.table[:, 3:7], one_hot)
    assert torch.equal(from_indices.table[:, 7], weights)
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
