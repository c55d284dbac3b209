"""The batched engine gathers every epoch's rows into one buffer kept for the whole fit."""

import torch

from softclass.mlp.model import MLPConfig
from softclass.training.config import TrainConfig
from softclass.training.ensemble import BatchedTrainer, Member


def test_epochs_gather_into_the_same_buffer_in_each_members_order():
    config = MLPConfig(3, 4, (40, 40), "relu")
    members = [Member("A", 0), Member("C", 1)]
    settings = TrainConfig(batch_size=8, optimizer="adam", backend="torch")
    trainer = BatchedTrainer(config, members, settings)
    assert not trainer.uses_compiled
    features = torch.randn(20, 3)
    targets = torch.nn.functional.one_hot(torch.arange(20) % 4, 4).float()
    rows = trainer.training_rows(features, targets)
    assert rows.epoch_table.shape == (2 * 20, 7)
    address = rows.epoch_table.data_ptr()
    for epoch in range(2):
        trainer.train_epoch(rows, epoch)
        order = trainer.epoch_order(20, epoch).reshape(-1)
        assert rows.epoch_table.data_ptr() == address
        assert torch.equal(rows.epoch_table, rows.table[order])
