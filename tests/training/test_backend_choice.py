"""backend="auto" picks the compiled loops or the torch backend by measured speed, per shape.

Times are never asserted: a fake clock, advanced by the measured runs themselves, makes the
measurement deterministic, so each side of the boundary can be shown to pick the faster backend.
The measured rule is that of an install without the compiled step's BLAS (the tests turn it off);
with it, every step above the row loops' bound goes to the BLAS step (the last tests).
"""

import math

import pytest
import torch

from softclass.mlp.model import MLPConfig
from softclass.training import backend_choice, blas, mlp_native
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.batching import batch_bounds
from softclass.training.config import TrainConfig
from softclass.training.ensemble import Member, train_ensemble

# A shape between the two "obvious" bounds: 2·64·(16·32 + 32·4) = 81,920 multiply-adds per step.
NEAR_BOUNDARY = MLPConfig(16, 4, hidden=(32,))
NEAR_SETTINGS = TrainConfig(batch_size=64, epochs=200, optimizer="adam", learning_rate=0.01)
MEMBERS = [Member("A", 0), Member("D", 1)]


@pytest.fixture(autouse=True)
def _fresh_decisions(monkeypatch, request):
    monkeypatch.delenv("SOFTCLASS_MEASURE_BACKEND", raising=False)
    if "blas_on" not in request.fixturenames:
        monkeypatch.setattr(blas, "gemm", lambda: None)
    backend_choice.clear_decisions()
    yield
    backend_choice.clear_decisions()


@pytest.fixture
def fake_clock(monkeypatch):
    """A clock that only the measured runs advance: ``costs[backend]`` seconds per step."""
    state = {"now": 0.0, "costs": {"compiled": 1e-4, "torch": 1e-4}, "runs": []}
    monkeypatch.setattr(backend_choice, "_clock", lambda: state["now"])
    monkeypatch.setattr(backend_choice, "_wall_clock", lambda: state["now"])
    run_compiled, train_epoch = BatchedTrainer.run_compiled_epochs, BatchedTrainer.train_epoch

    def advance(trainer, rows, backend):
        steps = len(batch_bounds(rows.table.shape[0], trainer.settings.batch_size))
        state["now"] += steps * state["costs"][backend]
        state["runs"].append(backend)

    def compiled(self, rows, first_epoch, n_epochs, *args, **kwargs):
        result = run_compiled(self, rows, first_epoch, n_epochs, *args, **kwargs)
        advance(self, rows, "compiled")
        return result

    def torch_epoch(self, rows, epoch):
        result = train_epoch(self, rows, epoch)
        advance(self, rows, "compiled" if self.uses_compiled else "torch")
        return result

    monkeypatch.setattr(BatchedTrainer, "run_compiled_epochs", compiled)
    monkeypatch.setattr(BatchedTrainer, "train_epoch", torch_epoch)
    return state


def _trainer(config=NEAR_BOUNDARY, settings=NEAR_SETTINGS, members=MEMBERS):
    return BatchedTrainer(config, members, settings)


@pytest.mark.parametrize(
    ("compiled_cost", "torch_cost", "expected"),
    [(1e-4, 4e-4, "compiled"), (4e-4, 1e-4, "torch"), (2.0e-4, 1.9e-4, "torch")],
)
def test_near_the_boundary_the_measured_faster_backend_is_chosen(
    fake_clock, compiled_cost, torch_cost, expected
):
    fake_clock["costs"] = {"compiled": compiled_cost, "torch": torch_cost}
    trainer = _trainer()
    before = [tensor.clone() for tensor in trainer.network.parameters()]
    choice = trainer.choose_backend(4096)
    assert choice.backend == expected
    assert choice.seconds_per_step == pytest.approx((compiled_cost, torch_cost))
    assert choice.reason.startswith(
        f"measured {compiled_cost * 1e3:.3f} ms per step compiled against "
        f"{torch_cost * 1e3:.3f} ms torch"
    )
    # a warm-up and the timed runs of each backend (two when a backend is 3x faster), on a copy
    timed = 2 if max(compiled_cost, torch_cost) >= 3 * min(compiled_cost, torch_cost) else 3
    assert fake_clock["runs"] == ["compiled", "torch"] * (1 + timed)
    for got, want in zip(trainer.network.parameters(), before, strict=True):
        assert torch.equal(got, want)
    assert trainer.optimizer_state.step_count == 0
    assert trainer.uses_compiled == (expected == "compiled")


def test_the_decision_is_deterministic_and_made_once_per_shape(fake_clock):
    fake_clock["costs"] = {"compiled": 3e-4, "torch": 1e-4}
    first = _trainer().choose_backend(4096)
    runs = len(fake_clock["runs"])
    fake_clock["costs"] = {"compiled": 1e-4, "torch": 3e-4}  # would flip it if measured again
    second = _trainer().choose_backend(4096)
    assert second == first and second.backend == "torch"
    assert len(fake_clock["runs"]) == runs  # cached: not measured again
    other_batch = _trainer(settings=TrainConfig(batch_size=48, epochs=200)).choose_backend(4096)
    assert other_batch.backend == "compiled"  # another shape is measured on its own


def _no_measuring(*args):
    raise AssertionError("measured although the answer is obvious")


def test_obvious_shapes_are_not_measured(monkeypatch):
    monkeypatch.setattr(backend_choice, "_measure", _no_measuring)
    iris = BatchedTrainer(  # softclass compare on Iris: 4 designs, 100 epochs
        MLPConfig(4, 3, hidden=(7,)),
        [Member(design, 0) for design in "ABCD"],
        TrainConfig(batch_size=16, epochs=100),
    )
    choice = iris.choose_backend(120)
    assert choice.backend == "compiled"
    assert choice.seconds_per_step is None
    assert "multiply-adds per step (<= 16,384): the compiled loops win" in choice.reason
    wide = BatchedTrainer(
        MLPConfig(50, 10, hidden=(128, 128)), [Member("A", 0)], TrainConfig(batch_size=256)
    )
    choice = wide.choose_backend(200_000)
    assert choice.backend == "torch"
    assert "a layer of 16,384 weights (>= 4,096): torch's matmuls win" in choice.reason


@pytest.mark.parametrize(
    ("config", "expected"),
    [(NEAR_BOUNDARY, "compiled"), (MLPConfig(40, 4, hidden=(64,)), "torch")],
)
def test_without_measuring_the_fixed_threshold_decides(monkeypatch, config, expected):
    monkeypatch.setattr(backend_choice, "_measure", _no_measuring)
    monkeypatch.setenv("SOFTCLASS_MEASURE_BACKEND", "0")
    choice = _trainer(config).choose_backend(4096)
    assert choice.backend == expected
    assert choice.reason.startswith("measuring turned off by SOFTCLASS_MEASURE_BACKEND=0: ")
    backend_choice.clear_decisions()
    monkeypatch.delenv("SOFTCLASS_MEASURE_BACKEND")
    short = _trainer(config, TrainConfig(batch_size=64, epochs=2)).choose_backend(640)
    assert short.backend == expected
    assert "a run of 20 steps (< 400) does not pay for measuring" in short.reason


def test_a_failed_measurement_falls_back_to_the_threshold(monkeypatch):
    def fail(*args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(backend_choice, "_measure", fail)
    choice = _trainer().choose_backend(4096)
    assert choice.backend == "compiled"
    assert choice.reason == (
        "measuring failed (out of memory): the largest layer has 512 weights (<= 1,024)"
    )


def test_forced_and_unsupported_backends_say_why(monkeypatch):
    monkeypatch.setattr(backend_choice, "_measure", _no_measuring)
    for backend in ("compiled", "torch"):
        choice = _trainer(settings=TrainConfig(backend=backend)).choose_backend(100)
        assert choice == backend_choice.BackendChoice(backend, f"backend={backend!r} was asked")
    monkeypatch.setattr(mlp_native, "library", lambda: None)
    monkeypatch.setattr(mlp_native, "unavailable_reason", lambda: "no C compiler found")
    choice = _trainer().choose_backend(100)
    assert choice.backend == "torch"
    assert choice.reason == (
        "the compiled loops cannot train this run: the compiled library is unavailable "
        "(no C compiler found)"
    )


def test_the_result_states_the_backend_and_why():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(30, 4, generator=generator)
    targets = torch.arange(30) % 3
    result = train_ensemble(
        MLPConfig(4, 3), [Member("A", 0)], features, targets, TrainConfig(epochs=2, batch_size=8)
    )
    assert result.backend == "compiled"
    assert result.backend_reason.endswith("the compiled loops win by a wide margin (not measured)")
    assert math.isfinite(result.train_loss[0, -1])


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_time_is_measured_unless_torch_runs_on_several_threads(monkeypatch, threads):
    calls = {"cpu": 0, "wall": 0}

    def clock(kind):
        def read():
            calls[kind] += 1
            return float(calls[kind])

        return read

    monkeypatch.setattr(backend_choice, "_clock", clock("cpu"))
    monkeypatch.setattr(backend_choice, "_wall_clock", clock("wall"))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        choice = _trainer().choose_backend(4096)
    finally:
        torch.set_num_threads(before)
    assert choice.seconds_per_step is not None
    # two reads per timed run; the compiled runs always on the thread's CPU clock
    assert calls["wall"] == (0 if threads == 1 else calls["cpu"])
    assert calls["cpu"] >= 4


@pytest.fixture
def blas_on():
    """The compiled step and its BLAS, which this checkout's install must provide."""
    assert mlp_native.step_library() is not None, mlp_native.step_unavailable_reason()
    assert blas.gemm() is not None, blas.unavailable_reason()


def test_with_a_blas_wide_steps_go_to_the_compiled_step_unmeasured(monkeypatch, blas_on):
    monkeypatch.setattr(backend_choice, "_measure", _no_measuring)
    wide = BatchedTrainer(
        MLPConfig(50, 10, hidden=(128, 128)), [Member("A", 0)], TrainConfig(batch_size=256)
    )
    choice = wide.choose_backend(200_000)
    assert choice.backend == "compiled"
    assert (
        "6,160,384 multiply-adds per step: the compiled step computes the products through "
        "BLAS's gemm" in choice.reason
    )
    assert wide.blas_step(200_000) is blas.gemm()
    iris = _trainer(MLPConfig(4, 3, hidden=(7,)), TrainConfig(batch_size=16))
    assert iris.choose_backend(120).backend == "compiled"
    assert iris.blas_step(120) is None  # the row loops
