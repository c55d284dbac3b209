"""softclass's C++ cross-entropy operator (kernels/cross_entropy_op.cpp, issue 23): the eager road
of small cross_entropy calls agrees with torch (loss and gradient, every dtype, shape and option it
takes), raises the Python road's errors, keeps autograd's guarantees (retain_graph, create_graph,
in-place changes), passes torch.library.opcheck, and when it is missing or built against another
torch softclass warns once and computes the same numbers on the Python road."""

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import softclass.functional as SF
from softclass.errors import NativeUnavailableWarning
from softclass.kernels import cross_entropy_op

REPOSITORY = Path(__file__).resolve().parents[2]
SHAPES = [(1, 1), (256, 3), (256, 10), (64, 1000), (7, 33), (4, 5, 33, 17), (2, 3, 8, 8), (3, 4, 5)]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]
TOLERANCE = {
    torch.float32: (1e-5, 1e-6),
    torch.float64: (1e-12, 1e-14),
    torch.bfloat16: (2e-2, 1e-2),
}


@pytest.fixture
def operator():
    found = cross_entropy_op.operator()
    assert found is not None, cross_entropy_op.unavailable_reason()
    return found


@pytest.fixture
def without_operator(monkeypatch):
    """The Python road (as when the operator is not built)."""
    monkeypatch.setattr(cross_entropy_op, "operator", lambda: None)


def _inputs(shape, dtype, ignore_index, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=generator, dtype=torch.float64) * 3).to(dtype)
    target_shape = (shape[0], *shape[2:])
    target = torch.randint(0, shape[1], target_shape, generator=generator)
    if ignore_index >= 0 and shape[1] > 1:
        target[::3] = ignore_index % shape[1]
    elif ignore_index < 0:
        target.view(-1)[::4] = ignore_index
    return logits.requires_grad_(), target


def _is_operator_node(loss):
    return "CrossEntropyFunction" in loss.grad_fn.name()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_loss_and_gradient_agree_with_torch(operator, shape, dtype, reduction, ignore_index):
    logits, target = _inputs(shape, dtype, ignore_index)
    loss = SF.cross_entropy(logits, target, ignore_index=ignore_index, reduction=reduction)
    assert _is_operator_node(loss)
    upstream = torch.tensor(1.7, dtype=dtype)
    (gradient,) = torch.autograd.grad(loss, logits, upstream)
    # torch in float64 (its bf16 loss sums in bf16: 2.41 against the exact 3.88 at (4, 5, 33, 17))
    exact = logits.detach().double().requires_grad_()
    expected = F.cross_entropy(exact, target, ignore_index=ignore_index, reduction=reduction)
    (expected_gradient,) = torch.autograd.grad(expected, exact, upstream.double())
    rtol, atol = TOLERANCE[dtype]
    assert loss.dtype == dtype and loss.shape == ()
    torch.testing.assert_close(loss, expected.to(dtype), rtol=rtol, atol=atol, equal_nan=True)
    torch.testing.assert_close(
        gradient, expected_gradient.to(dtype), rtol=rtol, atol=atol, equal_nan=True
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_numbers_are_those_of_the_python_road(operator, dtype, monkeypatch):
    logits, target = _inputs((256, 10), dtype, -100)
    loss = SF.cross_entropy(logits, target)
    (gradient,) = torch.autograd.grad(loss * 3, logits)
    monkeypatch.setattr(cross_entropy_op, "operator", lambda: None)
    python_loss = SF.cross_entropy(logits, target)
    (python_gradient,) = torch.autograd.grad(python_loss * 3, logits)
    assert not _is_operator_node(python_loss)
    assert torch.equal(loss, python_loss) and torch.equal(gradient, python_gradient)


def test_without_gradient_and_all_ignored(operator):
    logits, target = _inputs((8, 4), torch.float32, -100)
    with torch.no_grad():
        loss = SF.cross_entropy(logits, target)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, F.cross_entropy(logits.detach(), target))
    ignored = torch.full((8,), -100)
    assert torch.isnan(SF.cross_entropy(logits, ignored))
    assert SF.cross_entropy(logits, ignored, reduction="sum").item() == 0.0


@pytest.mark.parametrize(
    ("shape", "bad", "shown"), [((6, 4), (5,), "5"), ((2, 4, 3, 5), (1, 2, 3), r"\(1, 2, 3\)")]
)
def test_out_of_range_targets_raise_the_python_roads_error(operator, shape, bad, shown):
    logits, target = _inputs(shape, torch.float32, -100)
    target[bad] = 9
    with pytest.raises(IndexError, match=rf"\b9\b.*{shown}") as caught:
        SF.cross_entropy(logits, target)
    with pytest.raises(IndexError) as direct:
        operator(logits, target, -100, True)
    assert cross_entropy_op.flat_index(direct.value) is not None
    lean_operator = cross_entropy_op.operator
    try:
        cross_entropy_op.operator = lambda: None
        with pytest.raises(IndexError) as python_road:
            SF.cross_entropy(logits, target)
    finally:
        cross_entropy_op.operator = lean_operator
    assert str(caught.value) == str(python_road.value)


def test_second_backward_and_double_backward(operator):
    logits, target = _inputs((16, 5), torch.float64, -100)
    loss = SF.cross_entropy(logits, target)
    first = torch.autograd.grad(loss, logits, retain_graph=True)[0]
    second = torch.autograd.grad(loss, logits)[0]
    assert torch.equal(first, second)
    vector = torch.randn_like(logits)
    for function in (SF.cross_entropy, F.cross_entropy):
        loss = function(logits, target)
        (gradient,) = torch.autograd.grad(loss, logits, create_graph=True)
        (hessian_vector,) = torch.autograd.grad((gradient * vector).sum(), logits)
        if function is SF.cross_entropy:
            ours = hessian_vector
    torch.testing.assert_close(ours, hessian_vector)


def test_logits_changed_in_place_after_the_loss(operator):
    logits, target = _inputs((16, 5), torch.float32, -100)
    leaf = logits.detach().clone().requires_grad_()
    values = leaf * 1.0
    loss = SF.cross_entropy(values, target)
    values.data.add_(1.0)  # as torch's own loss allows: the gradient was made in the forward
    loss.backward(retain_graph=True)
    expected = torch.autograd.grad(F.cross_entropy(leaf * 1.0, target), leaf)[0]
    torch.testing.assert_close(leaf.grad, expected)
    values = leaf * 1.0
    loss = SF.cross_entropy(values, target)
    loss.backward(retain_graph=True)
    values.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize(
    ("shape", "ignore_index", "mean"),
    list(itertools.product([(12, 4), (2, 3, 4, 5)], [-100, 2], [True, False])),
)
def test_opcheck(operator, shape, ignore_index, mean):
    logits, target = _inputs(shape, torch.float32, ignore_index)
    torch.library.opcheck(operator, (logits, target, ignore_index, mean))
    torch.library.opcheck(
        torch.ops.softclass_cpp.cross_entropy_fused.default,
        (logits.detach(), target, ignore_index, mean),
        test_utils=("test_schema", "test_faketensor"),
    )


class _Loss(torch.nn.Module):
    def forward(self, logits, target):
        return SF.cross_entropy(logits, target)


def test_compile_and_export_still_work(operator):
    logits, target = _inputs((32, 6), torch.float32, -100)
    expected = F.cross_entropy(logits, target)
    compiled = torch.compile(_Loss(), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(logits, target), expected)
    exported = torch.export.export(_Loss(), (logits.detach(), target))
    torch.testing.assert_close(exported.module()(logits.detach(), target), expected.detach())


@pytest.fixture
def reload_operator(monkeypatch):
    """operator() tried afresh (and cached again as installed afterwards)."""
    monkeypatch.delenv("SOFTCLASS_NATIVE", raising=False)
    cross_entropy_op.operator.cache_clear()
    yield
    cross_entropy_op.operator.cache_clear()


def _python_road_computes():
    logits, target = _inputs((64, 7), torch.float32, -100)
    loss = SF.cross_entropy(logits, target)
    assert not _is_operator_node(loss)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))


def test_missing_operator_warns_and_falls_back(reload_operator, monkeypatch):
    monkeypatch.setattr(cross_entropy_op, "built_path", lambda directory, stem: None)
    monkeypatch.setattr(cross_entropy_op, "_STEM", "_no_such_operator")
    with pytest.warns(NativeUnavailableWarning, match=r"not built at install.*~30 µs more"):
        assert cross_entropy_op.operator() is None
    _python_road_computes()


def test_operator_built_against_another_torch_is_not_loaded(reload_operator, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.99.0+cpu")
    with pytest.warns(NativeUnavailableWarning, match=r"built against another torch.*2\.99\.0"):
        assert cross_entropy_op.operator() is None
    assert "reinstall softclass" in cross_entropy_op.unavailable_reason()
    _python_road_computes()


def test_unloadable_or_stale_operator_is_reported(reload_operator, monkeypatch, tmp_path):
    damaged = tmp_path / "_op.so"
    damaged.write_bytes(b"not a library")
    monkeypatch.setattr(cross_entropy_op, "built_path", lambda directory, stem: damaged)
    monkeypatch.setattr(cross_entropy_op, "SOURCES", ())
    with pytest.warns(NativeUnavailableWarning, match="is not loadable"):
        assert cross_entropy_op.operator() is None
    cross_entropy_op.operator.cache_clear()
    newer = tmp_path / "cross_entropy_op.cpp"
    newer.write_text("// changed\n")
    os.utime(damaged, (1_000_000_000, 1_000_000_000))
    monkeypatch.setattr(cross_entropy_op, "SOURCES", (newer,))
    with pytest.warns(NativeUnavailableWarning, match="older than cross_entropy_op.cpp"):
        assert cross_entropy_op.operator() is None
    _python_road_computes()


def test_operator_can_be_turned_off_silently(reload_operator, monkeypatch):
    monkeypatch.setenv("SOFTCLASS_NATIVE", "0")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cross_entropy_op.operator() is None
    assert "SOFTCLASS_NATIVE=0" in cross_entropy_op.unavailable_reason()


def _build_without_compilers(tmp_path, extra_path=None):
    environment = {
        **os.environ,
        "CC": str(tmp_path / "no-such-compiler"),
        "CXX": str(tmp_path / "no-such-compiler"),
    }
    if extra_path is not None:
        environment["PYTHONPATH"] = f"{extra_path}{os.pathsep}{environment.get('PYTHONPATH', '')}"
    done = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "temp")],
        cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_the_install_succeeds_without_torch_or_a_compiler_at_build_time(tmp_path):
    """setup.py lists the operator only when torch is importable at build time; without a
    compiler every extension fails as a warning and the install goes on."""
    with_torch = _build_without_compilers(tmp_path / "a")
    assert re.search(r"building '[^']*_cross_entropy_op_torch\w+' extension", with_torch)
    assert with_torch.count("failed") >= 4
    no_torch = tmp_path / "no_torch" / "torch"
    no_torch.mkdir(parents=True)
    (no_torch / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    without_torch = _build_without_compilers(tmp_path / "b", no_torch.parent)
    assert "_cross_entropy_op" not in without_torch and "_cpu_native" in without_torch


@pytest.mark.parametrize(
    "make",
    [
        lambda: (torch.randn(5, 7).t(), torch.randint(0, 5, (7,))),  # class stride 7
        lambda: (torch.randn(2, 3, 8)[:, :, ::2], torch.randint(0, 3, (2, 4))),  # not contiguous
        lambda: (torch.randn(4, 3), torch.randint(0, 3, (4,), dtype=torch.uint8)),  # uint8
    ],
)
def test_inputs_the_operator_refuses_take_the_general_path(operator, monkeypatch, make):
    """The lean road leaves dtype and layout checks to the operator: its refusal (and nothing
    else) sends the call to the general path, which agrees with torch."""
    from softclass.kernels import lean

    refused = []
    original = lean._operator_forward
    monkeypatch.setattr(
        lean, "_operator_forward", lambda *a: refused.append(original(*a) is None) or None
    )
    values, target = make()
    logits = values.requires_grad_()
    loss = SF.cross_entropy(logits, target)
    loss.backward()
    reference = values.detach().clone().requires_grad_()
    expected = F.cross_entropy(reference, target.long())
    expected.backward()
    assert refused == [True]
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits.grad, reference.grad)


def test_other_operator_errors_propagate():
    """Only the operator's input refusal falls back; any other RuntimeError reaches the caller."""
    from softclass.kernels import lean

    def failing(*args):
        raise RuntimeError("something else went wrong")

    logits, target = _inputs((4, 3), torch.float32, -100)
    with pytest.raises(RuntimeError, match="something else went wrong"):
        lean._operator_forward(failing, logits, target, -100, True)


def _refused_case(case):
    generator = torch.Generator().manual_seed(1)
    logits, target = torch.randn(6, 4, generator=generator), torch.tensor([0, 1, 2, 3, 0, 1])
    if case == "float16 logits":
        return logits.half(), target
    if case == "int32 target":
        return logits, target.int()
    if case == "class stride 6":
        return torch.randn(4, 6, generator=generator).t(), target
    if case == "(N, C, d1, d2) not contiguous":
        logits = torch.randn(2, 5, 4, 3, generator=generator).transpose(2, 3)
        return logits, torch.randint(0, 5, (2, 3, 4), generator=generator)
    return torch.randn(0, 4), torch.zeros(0, dtype=torch.long)  # no rows


@pytest.mark.parametrize(
    "case",
    [
        "float16 logits",
        "int32 target",
        "class stride 6",
        "(N, C, d1, d2) not contiguous",
        "no rows",
    ],
)
def test_inputs_the_loops_do_not_take_are_refused_by_type_and_computed_elsewhere(operator, case):
    # The refusal is NotImplementedError (not a RuntimeError told apart by its message): the lean
    # road gives such a call to the general path, which computes torch's numbers.
    logits, target = _refused_case(case)
    with pytest.raises(NotImplementedError, match=r"^softclass_cpp::cross_entropy: "):
        operator(logits, target, -100, True)
    if case != "int32 target":  # torch takes int64 class indices only
        torch.testing.assert_close(
            SF.cross_entropy(logits, target), F.cross_entropy(logits, target), equal_nan=True
        )
