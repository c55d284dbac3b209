"""The compiled step's own float32 gemm (small_gemm.c, mlp_native.own_sgemm / step_functions).

Its products equal torch's matmul to float32 rounding on every layout, size and tail the step can
ask for (and the plain loop for the cases the step never asks for); the step calls it for float32
on one thread, the BLAS otherwise; a step run through it trains the weights of a run through the
BLAS.
"""

import os
import subprocess
import sys

import pytest
import torch
from torch.testing import assert_close

from softclass.mlp.model import MLPConfig
from softclass.training import backend_choice, blas, mlp_native
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.config import TrainConfig
from softclass.training.ensemble import Member

# A step wide enough for the BLAS step: 64 · (20·48 + 48·32 + 32·7) multiply-adds.
CONFIG = MLPConfig(20, 7, hidden=(48, 32), activation="relu")
N_ROWS, N_VAL = 700, 90

NO_TRANS, TRANS = 111, 112

needs_own_gemm = pytest.mark.skipif(
    mlp_native.own_sgemm() is None, reason="the CPU has no AVX-512 (the step uses the BLAS)"
)


def _call(address, a, b, trans_a, trans_b, m, n, k, out, alpha=1.0, beta=0.0, order=101):
    mlp_native.SGEMM(address)(
        order, TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS, m, n, k, alpha,
        a.data_ptr(), a.stride(0), b.data_ptr(), b.stride(0), beta, out.data_ptr(), out.stride(0),
    )  # fmt: skip


def _operands(m, n, k, trans_a, trans_b, pad, seed):
    """op(a) (m, k) and op(b) (k, n) as stored (transposed when asked), rows padded by ``pad``."""
    generator = torch.Generator().manual_seed(seed)

    def stored(rows, columns):
        full = torch.randn(rows, columns + pad, generator=generator)
        return full[:, :columns]

    a = stored(k, m) if trans_a else stored(m, k)
    b = stored(n, k) if trans_b else stored(k, n)
    return a, b, (a.t() if trans_a else a), (b.t() if trans_b else b)


SHAPES = [
    (256, 128, 50),  # the benchmark's first layer, forward
    (128, 50, 256),  # its weight gradient
    (256, 10, 128),  # a last layer of 10 classes: one panel of 10 columns
    (256, 128, 10),  # its input gradient: k = 10
    (7, 33, 1),  # rows below one tile, a 1-column second panel, k = 1
    (9, 16, 300),  # one full tile and one row; k over one block of 256
    (1, 1, 1),
    (37, 65, 513),  # two k blocks and a tail; three panels, the last of 1 column
    (64, 32, 0),  # k = 0: zeros
]


@needs_own_gemm
@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
def test_own_gemm_equals_torch_matmul(m, n, k, trans_a, trans_b, pad):
    a, b, left, right = _operands(m, n, k, trans_a, trans_b, pad, seed=m * n + k)
    out = torch.full((m, n + pad), float("nan"))[:, :n]
    _call(mlp_native.own_sgemm(), a, b, trans_a, trans_b, m, n, k, out)
    want = (left.double() @ right.double()).float()
    assert_close(out, want, rtol=1e-5, atol=1e-5 * max(k, 1) ** 0.5)
    if pad:  # nothing written beyond n in a padded output row
        assert torch.isnan(out.as_strided((m, pad), (n + pad, 1), n)).all()


@needs_own_gemm
def test_own_gemm_takes_other_alpha_and_beta_through_its_plain_loop():
    a, b, left, right = _operands(19, 21, 23, False, True, 0, seed=4)
    before = torch.randn(19, 21, generator=torch.Generator().manual_seed(5))
    out = before.clone()
    _call(mlp_native.own_sgemm(), a, b, False, True, 19, 21, 23, out, alpha=0.5, beta=2.0)
    assert_close(out, 0.5 * (left @ right) + 2.0 * before, rtol=1e-5, atol=1e-5)


@needs_own_gemm
@pytest.mark.parametrize(("trans_a", "trans_b"), [(False, False), (True, False), (False, True)])
def test_own_gemm_takes_column_major_storage_as_cblas_does(trans_a, trans_b):
    """Column-major (102) with the operands swapped writes the row-major product's buffer."""
    a, b, left, right = _operands(13, 40, 29, trans_a, trans_b, 2, seed=6)
    out = torch.empty(13, 40)
    _call(mlp_native.own_sgemm(), b, a, trans_b, trans_a, 40, 13, 29, out, order=102)
    assert_close(out, left @ right, rtol=1e-5, atol=1e-5)
    _call(mlp_native.own_sgemm(), b, a, trans_b, trans_a, 40, 13, 29, out, 0.5, 1.0, order=102)
    assert_close(out, 1.5 * (left @ right), rtol=1e-5, atol=1e-5)


@needs_own_gemm
def test_the_step_calls_its_own_gemm_for_float32_on_one_thread_only(monkeypatch):
    loaded = blas.gemm()
    own = mlp_native.own_sgemm()
    assert own not in (None, loaded.sgemm)
    assert mlp_native.step_functions(loaded, torch.float32, 1).sgemm == own
    assert mlp_native.step_functions(loaded, torch.float32, 2).sgemm == loaded.sgemm
    assert mlp_native.step_functions(loaded, torch.float64, 1).sgemm == loaded.sgemm
    assert mlp_native.step_functions(loaded, torch.float64, 1).dgemm == loaded.dgemm
    monkeypatch.setenv("SOFTCLASS_OWN_GEMM", "0")
    mlp_native.own_sgemm.cache_clear()
    try:
        assert mlp_native.own_sgemm() is None
        assert mlp_native.step_functions(loaded, torch.float32, 1).sgemm == loaded.sgemm
    finally:
        mlp_native.own_sgemm.cache_clear()


def _step_run(monkeypatch, own: bool):
    """Parameters after 2 epochs of two members through the compiled step on one thread, and the
    sgemm address the step was given."""
    monkeypatch.setenv("SOFTCLASS_OWN_GEMM", "1" if own else "0")
    mlp_native.own_sgemm.cache_clear()
    backend_choice.clear_decisions()
    given = []
    real = mlp_native.step_functions

    def recording(*args):
        functions = real(*args)
        given.append(functions.sgemm)
        return functions

    monkeypatch.setattr(mlp_native, "step_functions", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        settings = TrainConfig(
            batch_size=64, epochs=2, optimizer="adam", learning_rate=3e-3, backend="compiled"
        )
        trainer = BatchedTrainer(CONFIG, [Member("A", 0), Member("D", 1)], settings)
        generator = torch.Generator().manual_seed(3)
        features = torch.randn(N_ROWS + N_VAL, CONFIG.n_features, generator=generator)
        targets = torch.randint(0, CONFIG.n_classes, (N_ROWS + N_VAL,), generator=generator)
        rows = trainer.training_rows(features[:N_ROWS], targets=targets[:N_ROWS])
        trainer.run_compiled_epochs(rows, 0, 2, features[N_ROWS:], targets[N_ROWS:])
    finally:
        torch.set_num_threads(before)
        mlp_native.own_sgemm.cache_clear()
        backend_choice.clear_decisions()
    return [p.detach().clone() for p in trainer.network.parameters()], set(given)


@needs_own_gemm
def test_a_step_run_through_its_own_gemm_trains_the_weights_of_one_through_the_blas(
    monkeypatch,
):
    through_own, given_own = _step_run(monkeypatch, own=True)
    through_blas, given_blas = _step_run(monkeypatch, own=False)
    assert given_blas == {blas.gemm().sgemm}
    assert len(given_own) == 1 and given_own != given_blas
    assert any(not torch.equal(x, y) for x, y in zip(through_own, through_blas, strict=True))
    for got, want in zip(through_own, through_blas, strict=True):
        assert_close(got, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("core", ["Haswell", "Sandybridge"])
def test_the_blas_reports_the_kernels_openblas_runs(core):
    """OPENBLAS_CORETYPE tells OpenBLAS which kernels to run; Gemm.core reads back its choice."""
    script = "from softclass.training import blas; print(blas.gemm().core)"
    environment = {**os.environ, "OPENBLAS_CORETYPE": core}
    shown = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == core
