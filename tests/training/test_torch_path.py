"""The torch backend's one-model path (the estimator's): oneDNN products for wide float32 layers.
Its parity with the autograd reference over the registries is in test_engine (one model)."""

import torch
from torch.testing import assert_close

from softclass.mlp.model import MLPConfig
from softclass.training.backends import batched
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.config import TrainConfig
from softclass.training.stacked import Member


def _wide_trainer():
    config = MLPConfig(50, 10, (128, 64), "relu")
    settings = TrainConfig(
        batch_size=96, optimizer="sgd", learning_rate=0.5, momentum=0.0, backend="torch"
    )
    return BatchedTrainer(config, [Member("A", 0)], settings)


def test_wide_float32_layers_of_one_model_take_onednn_products_and_narrow_ones_blas(monkeypatch):
    trainer = _wide_trainer()
    assert trainer._tensors().onednn == [True, True, False]  # 50-128, 128-64; 64-10 on BLAS
    stacked = BatchedTrainer(
        trainer.config, [Member("A", 0), Member("A", 1)], trainer.settings
    )  # the batched (M, B, F) products are BLAS's
    assert stacked._tensors().onednn == [False, False, False]
    double = BatchedTrainer(trainer.config, [Member("A", 0)], trainer.settings, torch.float64)
    assert double._tensors().onednn == [False, False, False]
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # the user's switch
    assert _wide_trainer()._tensors().onednn == [False, False, False]


def test_onednn_products_give_blas_products_gradients_to_float32_rounding(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 50, generator=generator)
    targets = torch.randint(0, 10, (200,), generator=generator)
    # One epoch of plain SGD (lr 0.5): each parameter moves by -0.5 x its summed gradients, so
    # the changes compare the gradients the products gave (float64: the exact reference).
    changes = {}
    for products in ("onednn", "blas", "float64"):
        if products == "blas":
            monkeypatch.setattr(batched, "_onednn_linear", lambda: None)
        trainer = _wide_trainer()
        if products == "float64":
            trainer = BatchedTrainer(
                trainer.config, trainer.members, trainer.settings, torch.float64
            )
        assert any(trainer._tensors().onednn) == (products == "onednn")
        rows = trainer.training_rows(features, targets=targets)
        before = [tensor.detach().clone().double() for tensor in trainer.network.parameters()]
        trainer.train_epoch(rows, 0)
        changes[products] = [
            tensor.double() - start
            for tensor, start in zip(trainer.network.parameters(), before, strict=True)
        ]
    for onednn, blas, exact in zip(*changes.values(), strict=True):
        scale = float(exact.abs().max())
        assert_close(onednn, exact, rtol=0, atol=1e-4 * scale)
        assert_close(blas, exact, rtol=0, atol=1e-4 * scale)
