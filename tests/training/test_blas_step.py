"""The compiled step with its products through the BLAS (mlp_step.c, softclass.training.blas).

Wide networks train through it: the same weights as the torch backend to float32 rounding after
many steps, for every design (the float64 grid of every registry entry against autograd is in
test_engine.py); OpenBLAS runs on torch's thread count; without the BLAS the torch path trains,
with one warning.
"""

import sys
import warnings

import pytest
import torch
from torch.testing import assert_close

from softclass.errors import NativeUnavailableWarning
from softclass.mlp.designs import DESIGNS
from softclass.mlp.model import MLPConfig
from softclass.training import backend_choice, blas, mlp_native
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.config import TrainConfig
from softclass.training.ensemble import Member

# One member's step: 64 · (20·48 + 48·32 + 32·7) = 172,032 multiply-adds (the BLAS step).
CONFIG = MLPConfig(20, 7, hidden=(48, 32), activation="relu")
N_ROWS, N_VAL = 700, 90


@pytest.fixture(autouse=True)
def _fresh_decisions():
    backend_choice.clear_decisions()
    yield
    backend_choice.clear_decisions()


def _data(dtype=torch.float32):
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(N_ROWS + N_VAL, CONFIG.n_features, generator=generator, dtype=dtype)
    targets = torch.randint(0, CONFIG.n_classes, (N_ROWS + N_VAL,), generator=generator)
    return features, targets


def _trained(backend: str, members, row_weights=None, epochs=3):
    """(parameters, per-epoch (train loss, train accuracy, val loss, val accuracy)) of a run."""
    settings = TrainConfig(
        batch_size=64, epochs=epochs, optimizer="adam", learning_rate=3e-3, backend=backend
    )
    trainer = BatchedTrainer(CONFIG, members, settings)
    features, targets = _data()
    rows = trainer.training_rows(
        features[:N_ROWS], targets=targets[:N_ROWS], row_weights=row_weights
    )
    val = (features[N_ROWS:], targets[N_ROWS:])
    if backend == "compiled":
        assert trainer.blas_step(N_ROWS) is blas.gemm() is not None
        scores = trainer.run_compiled_epochs(rows, 0, epochs, *val)
    else:
        columns = []
        for epoch in range(epochs):
            loss, accuracy = trainer.train_epoch(rows, epoch)
            columns.append(torch.stack([loss.double(), accuracy, *trainer.evaluate(*val)]))
        scores = torch.stack(columns, dim=2).double()
    return trainer.network.parameters(), torch.stack(list(scores))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("design", list(DESIGNS))
def test_the_blas_step_trains_the_weights_of_the_torch_backend(design, weighted):
    """33 Adam steps of two members, float32: the same weights, losses and accuracies."""
    members = [Member(design, 0), Member(design, 5)]
    row_weights = (
        torch.rand(N_ROWS, generator=torch.Generator().manual_seed(1)) if weighted else None
    )
    compiled, compiled_scores = _trained("compiled", members, row_weights)
    torch_path, torch_scores = _trained("torch", members, row_weights)
    for got, want in zip(compiled, torch_path, strict=True):
        assert_close(got, want, rtol=2e-4, atol=2e-5)
    assert_close(compiled_scores[[0, 2]], torch_scores[[0, 2]], rtol=1e-4, atol=1e-5)
    # accuracies: a row whose two best logits are within rounding may flip
    assert (compiled_scores[[1, 3]] - torch_scores[[1, 3]]).abs().max() <= 2 / N_VAL


def test_openblas_runs_on_torchs_thread_count(monkeypatch):
    loaded = blas.gemm()
    calls = []
    recording = blas.Gemm(loaded.sgemm, loaded.dgemm, calls.append, loaded.origin)
    monkeypatch.setattr(blas, "gemm", lambda: recording)
    before = torch.get_num_threads()
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            _trained("compiled", [Member("A", 0)], epochs=1)
    finally:
        torch.set_num_threads(before)
    assert calls == [2, 1]


def test_without_the_blas_wide_networks_train_on_torch_with_one_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy_openblas32", None)  # import fails
    monkeypatch.setattr(blas, "_warned", [])
    monkeypatch.delenv("SOFTCLASS_BLAS", raising=False)
    blas.gemm.cache_clear()
    try:
        with pytest.warns(NativeUnavailableWarning, match="scipy-openblas32 package is not inst"):
            assert blas.gemm() is None
        assert "scipy-openblas32" in blas.unavailable_reason()
        trainer = BatchedTrainer(CONFIG, [Member("A", 0)], TrainConfig(batch_size=64, epochs=9))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once per process, not again
            choice = trainer.choose_backend(N_ROWS)
        assert trainer.blas_step(N_ROWS) is None
        assert choice.backend in ("compiled", "torch")  # today's rule decides, measured
        assert "BLAS" not in choice.reason
    finally:
        blas.gemm.cache_clear()


def test_softclass_blas_0_turns_the_blas_step_off_silently(monkeypatch):
    monkeypatch.setenv("SOFTCLASS_BLAS", "0")
    blas.gemm.cache_clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert blas.gemm() is None
        assert blas.unavailable_reason() == "disabled by SOFTCLASS_BLAS=0"
    finally:
        blas.gemm.cache_clear()


def test_a_library_that_is_not_openblas_is_refused(monkeypatch, tmp_path):
    import scipy_openblas32

    (tmp_path / "libscipy_openblas.so").write_bytes(b"not a shared library")
    monkeypatch.setattr(scipy_openblas32, "get_lib_dir", lambda: str(tmp_path))
    monkeypatch.setattr(scipy_openblas32, "get_library", lambda fullname: "libscipy_openblas.so")
    monkeypatch.setattr(blas, "_warned", [])
    blas.gemm.cache_clear()
    try:
        with pytest.warns(NativeUnavailableWarning, match="is not a usable OpenBLAS"):
            assert blas.gemm() is None
    finally:
        blas.gemm.cache_clear()
    assert mlp_native.step_library() is not None
