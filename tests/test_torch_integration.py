"""softclass.functional as a drop-in inside the rest of PyTorch, checked against torch itself.

Every public function (and nn module) goes through: FakeTensor and meta (torch's shapes and
dtypes), torch.compile(fullgraph=True) with 0 graph breaks matching eager, torch.export,
torch.func (grad, vmap per-sample gradients, jacrev, jacfwd), forward-mode AD, gradcheck and
gradgradcheck in float64, determinism and two Python threads. Cheap checks run the whole option
grid; compile and export (seconds each) run a representative part of it.
"""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from softclass import functional as S
from softclass import nn as snn


@dataclasses.dataclass(frozen=True)
class Case:
    """One call: ``ours(*inputs)`` must equal ``theirs(*inputs)``; ``inputs(dtype)`` makes fresh
    inputs, of which those at ``grads`` are differentiated (class weights never are: torch
    refuses them)."""

    name: str
    ours: Callable
    theirs: Callable
    inputs: Callable[[torch.dtype], tuple]
    grads: tuple[int, ...] = (0,)

    def __repr__(self) -> str:
        return self.name


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits(shape, dtype, seed=0):
    return torch.randn(shape, generator=_generator(seed), dtype=torch.float64).to(dtype)


def _index_target(shape, n_classes, ignore_index=None, seed=1):
    target = torch.randint(0, n_classes, shape, generator=_generator(seed))
    if ignore_index is not None:
        target.view(-1)[::3] = ignore_index
    return target


def _probability_target(shape, dtype, seed=2):
    return torch.softmax(_logits(shape, torch.float64, seed), 1).to(dtype)


def _softmax_cases():
    for name, ours, theirs in (
        ("softmax", S.softmax, F.softmax),
        ("log_softmax", S.log_softmax, F.log_softmax),
    ):
        for shape, dim in (((5, 7), 1), ((3, 4, 6), -1), ((3, 4, 6), 1), ((6,), 0)):
            yield Case(
                f"{name}-{list(shape)}-dim{dim}",
                lambda x, ours=ours, dim=dim: ours(x, dim),
                lambda x, theirs=theirs, dim=dim: theirs(x, dim),
                lambda dtype, shape=shape: (_logits(shape, dtype),),
            )
    yield Case(
        "logsumexp-dim1",
        lambda x: S.logsumexp(x, 1),
        lambda x: torch.logsumexp(x, 1),
        lambda dtype: (_logits((5, 7), dtype),),
    )


def _loss_options():
    return itertools.product(("mean", "sum", "none"), (False, True), (-100, 2))


def _nll_cases():
    for reduction, weighted, ignore_index in _loss_options():
        options = dict(reduction=reduction, ignore_index=ignore_index)

        def inputs(dtype, weighted=weighted, ignore_index=ignore_index):
            log_probs = torch.log_softmax(_logits((6, 5), torch.float64), 1).to(dtype)
            weight = torch.rand(5, generator=_generator(3), dtype=torch.float64).to(dtype) + 0.5
            return (log_probs, _index_target((6,), 5, ignore_index), weight if weighted else None)

        yield Case(
            f"nll_loss-{reduction}-w{int(weighted)}-ii{ignore_index}",
            lambda x, t, w, options=options: S.nll_loss(x, t, w, **options),
            lambda x, t, w, options=options: F.nll_loss(x, t, w, **options),
            inputs,
        )


def _cross_entropy_cases():
    shapes = {"2d": ((6, 5), (6,)), "kdim": ((3, 5, 2, 2), (3, 2, 2)), "1d": ((5,), ())}
    for (reduction, weighted, ignore_index), smoothing, kind in itertools.product(
        _loss_options(), (0.0, 0.2), ("2d", "kdim", "1d")
    ):
        options = dict(reduction=reduction, ignore_index=ignore_index, label_smoothing=smoothing)
        logits_shape, target_shape = shapes[kind]

        def inputs(dtype, shapes=(logits_shape, target_shape), weighted=weighted, ii=ignore_index):
            weight = torch.rand(5, generator=_generator(3), dtype=torch.float64).to(dtype) + 0.5
            target = _index_target(shapes[1], 5, ii if shapes[1] else None)
            return (_logits(shapes[0], dtype), target, weight if weighted else None)

        yield Case(
            f"cross_entropy-{kind}-{reduction}-w{int(weighted)}-ii{ignore_index}-ls{smoothing}",
            lambda x, t, w, options=options: S.cross_entropy(x, t, w, **options),
            lambda x, t, w, options=options: F.cross_entropy(x, t, w, **options),
            inputs,
        )
    for reduction, weighted, smoothing in itertools.product(
        ("mean", "sum", "none"), (False, True), (0.0, 0.2)
    ):
        options = dict(reduction=reduction, label_smoothing=smoothing)

        def inputs(dtype, weighted=weighted):
            weight = torch.rand(5, generator=_generator(3), dtype=torch.float64).to(dtype) + 0.5
            target = _probability_target((6, 5), dtype)
            return (_logits((6, 5), dtype), target, weight if weighted else None)

        yield Case(
            f"cross_entropy-probs-{reduction}-w{int(weighted)}-ls{smoothing}",
            lambda x, t, w, options=options: S.cross_entropy(x, t, w, **options),
            lambda x, t, w, options=options: F.cross_entropy(x, t, w, **options),
            inputs,
        )


def _linear_cases():
    for (reduction, weighted, ignore_index), with_bias in itertools.product(
        _loss_options(), (False, True)
    ):
        options = dict(reduction=reduction, ignore_index=ignore_index)

        def inputs(dtype, weighted=weighted, with_bias=with_bias, ii=ignore_index):
            weight = torch.rand(5, generator=_generator(3), dtype=torch.float64).to(dtype) + 0.5
            return (
                _logits((6, 4), dtype),
                _logits((5, 4), dtype, seed=4),
                _index_target((6,), 5, ii),
                _logits((5,), dtype, seed=5) if with_bias else None,
                weight if weighted else None,
            )

        yield Case(
            f"linear_cross_entropy-{reduction}-w{int(weighted)}-ii{ignore_index}-b{int(with_bias)}",
            lambda x, lw, t, lb, w, options=options: S.linear_cross_entropy(
                x, lw, t, linear_bias=lb, weight=w, **options
            ),
            lambda x, lw, t, lb, w, options=options: F.linear_cross_entropy(
                x, lw, t, linear_bias=lb, weight=w, **options
            ),
            inputs,
            (0, 1, 3) if with_bias else (0, 1),
        )


def _module_cases():
    """The loss modules are built inside the call (class weights in the input's dtype), so no
    module state is shared between tests, traces and dtypes."""
    weight = torch.rand(5, generator=_generator(3), dtype=torch.float64) + 0.5
    pairs = (
        ("CrossEntropyLoss", dict(label_smoothing=0.1, ignore_index=2)),
        ("NLLLoss", dict(reduction="sum")),
    )
    for name, options in pairs:
        yield Case(
            f"nn.{name}",
            lambda x, t, name=name, options=options: getattr(snn, name)(
                weight=weight.to(x.device, x.dtype), **options
            )(x, t),
            lambda x, t, name=name, options=options: getattr(torch.nn, name)(
                weight=weight.to(x.device, x.dtype), **options
            )(x, t),
            lambda dtype: (_logits((6, 5), dtype), _index_target((6,), 5, 2)),
        )
    for name in ("Softmax", "LogSoftmax"):
        ours, theirs = getattr(snn, name)(dim=1), getattr(torch.nn, name)(dim=1)
        yield Case(
            f"nn.{name}",
            lambda x, ours=ours: ours(x),
            lambda x, theirs=theirs: theirs(x),
            lambda dtype: (_logits((6, 5), dtype),),
        )


CASES = [
    *_softmax_cases(),
    *_nll_cases(),
    *_cross_entropy_cases(),
    *_linear_cases(),
    *_module_cases(),
]
BY_NAME = {case.name: case for case in CASES}
# Compile and export take seconds per case: one of each kind, the awkward options included.
REPRESENTATIVE = [
    BY_NAME[name]
    for name in (
        "softmax-[5, 7]-dim1",
        "log_softmax-[3, 4, 6]-dim1",
        "logsumexp-dim1",
        "nll_loss-mean-w1-ii2",
        "cross_entropy-2d-mean-w1-ii2-ls0.2",
        "cross_entropy-kdim-none-w0-ii-100-ls0.0",
        "cross_entropy-probs-sum-w1-ls0.2",
        "linear_cross_entropy-mean-w1-ii2-b1",
        "linear_cross_entropy-none-w0-ii-100-b0",
        "nn.CrossEntropyLoss",
    )
]


def _with_grad(case, inputs):
    return tuple(
        value.detach().clone().requires_grad_() if index in case.grads else value
        for index, value in enumerate(inputs)
    )


def _value_and_grads(case, function, inputs):
    inputs = _with_grad(case, inputs)
    output = function(*inputs)
    grads = torch.autograd.grad(output, [inputs[i] for i in case.grads], torch.ones_like(output))
    return output.detach(), grads


def _tolerance(dtype):
    return dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else {}


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_fake_tensor_and_meta_give_torchs_shapes_and_dtypes(case):
    expected = case.theirs(*case.inputs(torch.float32))
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_inputs = tuple(
            mode.from_tensor(value) if isinstance(value, torch.Tensor) else value
            for value in case.inputs(torch.float32)
        )
        fake = case.ours(*fake_inputs)
    meta_inputs = tuple(
        value.to("meta") if isinstance(value, torch.Tensor) else value
        for value in case.inputs(torch.float32)
    )
    meta = case.ours(*meta_inputs)
    for result in (fake, meta):
        assert (result.shape, result.dtype) == (expected.shape, expected.dtype)
    assert meta.device.type == "meta"


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_gradcheck_and_gradgradcheck_in_float64(case):
    inputs = _with_grad(case, case.inputs(torch.float64))

    def function(*differentiable):
        values = list(inputs)
        for index, value in zip(case.grads, differentiable, strict=True):
            values[index] = value
        return case.ours(*values)

    chosen = tuple(inputs[i] for i in case.grads)
    # fast_mode: one random projection of the Jacobian instead of all of it (the whole grid
    # stays within seconds); the slow mode runs on the representative cases below.
    assert torch.autograd.gradcheck(function, chosen, fast_mode=True)
    assert torch.autograd.gradgradcheck(function, chosen, fast_mode=True)


@pytest.mark.parametrize("case", REPRESENTATIVE, ids=repr)
def test_gradcheck_and_gradgradcheck_full_jacobian(case):
    inputs = _with_grad(case, case.inputs(torch.float64))

    def function(*differentiable):
        values = list(inputs)
        for index, value in zip(case.grads, differentiable, strict=True):
            values[index] = value
        return case.ours(*values)

    chosen = tuple(inputs[i] for i in case.grads)
    assert torch.autograd.gradcheck(function, chosen)
    assert torch.autograd.gradgradcheck(function, chosen)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_torch_func_grad_jacrev_and_jacfwd_match_torch(case):
    inputs = case.inputs(torch.float64)
    index = case.grads[0]

    def on(function):
        def of_one(value):
            values = list(inputs)
            values[index] = value
            return function(*values)

        return of_one

    ours, theirs = on(case.ours), on(case.theirs)
    point = inputs[index]
    torch.testing.assert_close(torch.func.jacrev(ours)(point), torch.func.jacrev(theirs)(point))
    torch.testing.assert_close(torch.func.jacfwd(ours)(point), torch.func.jacrev(theirs)(point))
    torch.testing.assert_close(
        torch.func.grad(lambda value: ours(value).sum())(point),
        torch.func.grad(lambda value: theirs(value).sum())(point),
    )


PER_SAMPLE = [
    case
    for case in CASES
    if case.name.split("-")[0] in {"nll_loss", "linear_cross_entropy", "nn.CrossEntropyLoss"}
    or case.name.startswith(("cross_entropy-2d", "cross_entropy-probs"))
]


@pytest.mark.parametrize("case", [case for case in PER_SAMPLE if "none" not in case.name], ids=repr)
def test_vmap_per_sample_gradients_match_torch(case):
    """Per-sample gradients of a linear model's loss with torch.func.functional_call + vmap."""
    inputs = case.inputs(torch.float64)
    model = torch.nn.Linear(3, 5, dtype=torch.float64)
    features = torch.randn(inputs[0].shape[0], 3, generator=_generator(7), dtype=torch.float64)
    params = {name: value.detach() for name, value in model.named_parameters()}
    if case.name.startswith("linear_cross_entropy"):
        return _linear_per_sample(case, inputs, params, features)
    rest = inputs[2:]

    def loss_of(function):
        def loss(params, feature, target):
            logits = torch.func.functional_call(model, params, (feature.unsqueeze(0),))
            if case.name.startswith("nll_loss"):
                logits = torch.log_softmax(logits, 1)
            return function(logits, target.unsqueeze(0), *rest)

        return torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))

    target = inputs[1]
    ours = loss_of(case.ours)(params, features, target)
    theirs = loss_of(case.theirs)(params, features, target)
    for name in params:
        torch.testing.assert_close(ours[name], theirs[name])


def _linear_per_sample(case, inputs, params, features):
    _, _, target, _, class_weight = inputs

    def loss_of(function):
        def loss(params, feature, target):
            return function(
                feature.unsqueeze(0),
                params["weight"],
                target.unsqueeze(0),
                params["bias"],
                class_weight,
            )

        return torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))

    ours = loss_of(case.ours)(params, features, target)
    theirs = loss_of(case.theirs)(params, features, target)
    for name in params:
        torch.testing.assert_close(ours[name], theirs[name])


@pytest.mark.parametrize("case", [BY_NAME["cross_entropy-2d-mean-w1-ii2-ls0.2"]], ids=repr)
def test_vmap_of_the_forward_matches_torch(case):
    logits, target, weight = case.inputs(torch.float64)
    stacked_logits = torch.stack([logits, logits.flip(0)])
    stacked_target = torch.stack([target, target.flip(0)])
    ours = torch.func.vmap(lambda x, t: case.ours(x, t, weight))(stacked_logits, stacked_target)
    theirs = torch.stack(
        [case.theirs(x, t, weight) for x, t in zip(stacked_logits, stacked_target, strict=True)]
    )
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("case", [c for c in CASES if "softmax" in c.name][:4], ids=repr)
def test_forward_mode_ad_matches_torch(case):
    import torch.autograd.forward_ad as fwAD

    (point,) = case.inputs(torch.float64)
    tangent = torch.randn(point.shape, generator=_generator(8), dtype=torch.float64)
    results = []
    for function in (case.ours, case.theirs):
        with fwAD.dual_level():
            results.append(fwAD.unpack_dual(function(fwAD.make_dual(point, tangent))).tangent)
    torch.testing.assert_close(*results)


def _compile_and_compare(case, backend):
    inputs = case.inputs(torch.float32)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(case.ours)(*inputs)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), (
        explanation.break_reasons
    )
    compiled = torch.compile(case.ours, fullgraph=True, backend=backend)
    value, grads = _value_and_grads(case, compiled, inputs)
    expected_value, expected_grads = _value_and_grads(case, case.ours, inputs)
    torch.testing.assert_close(value, expected_value, **_tolerance(torch.float32))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, **_tolerance(torch.float32))
    torch.testing.assert_close(value, case.theirs(*inputs).detach(), **_tolerance(torch.float32))


@pytest.mark.parametrize("case", REPRESENTATIVE, ids=repr)
def test_compile_fullgraph_aot_eager_has_no_graph_break_and_matches_eager(case):
    _compile_and_compare(case, "aot_eager")


@pytest.mark.parametrize(
    "case", [REPRESENTATIVE[1], REPRESENTATIVE[4], REPRESENTATIVE[7]], ids=repr
)
def test_compile_fullgraph_inductor_matches_eager(case):
    _compile_and_compare(case, "inductor")


class _Wrapped(torch.nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, *inputs):
        return self.function(*inputs)


@pytest.mark.parametrize("case", REPRESENTATIVE, ids=repr)
def test_export_matches_eager(case):
    inputs = case.inputs(torch.float32)
    program = torch.export.export(_Wrapped(case.ours), inputs)
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert not any("nll_loss" in str(target) or "log_softmax" in str(target) for target in targets)
    torch.testing.assert_close(program.module()(*inputs), case.ours(*inputs))


def test_the_fused_ops_appear_as_one_opaque_op_in_the_exported_graph():
    logits, target = torch.randn(6, 5), torch.randint(0, 5, (6,))
    program = torch.export.export(_Wrapped(S.cross_entropy), (logits, target))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert sum("softclass.cross_entropy" in target for target in targets) == 1


def test_out_of_range_target_raises_inside_a_compiled_graph():
    compiled = torch.compile(S.cross_entropy, fullgraph=True, backend="aot_eager")
    with pytest.raises(IndexError, match=r"Target 9 is out of bounds"):
        compiled(torch.randn(4, 5), torch.tensor([0, 9, 1, 2]))
    compiled_nll = torch.compile(S.nll_loss, fullgraph=True, backend="aot_eager")
    with pytest.raises(IndexError, match=r"Target 7 is out of bounds"):
        compiled_nll(torch.randn(4, 5), torch.tensor([0, 1, 7, 2]))


def test_fake_tensor_cannot_crash_the_interpreter():
    """Run in a subprocess: a crash in compiled code (a pointer to no storage) would kill it."""
    script = """
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
import softclass.functional as SF
with FakeTensorMode():
    logits, target = torch.randn(16, 10), torch.randint(0, 10, (16,))
    shapes = [
        SF.cross_entropy(logits, target).shape,
        SF.cross_entropy(torch.randn(4096, 4096), torch.randint(0, 4096, (4096,))).shape,
        SF.nll_loss(SF.log_softmax(logits, 1), target, reduction="none").shape,
        SF.softmax(logits, 1).shape,
        SF.linear_cross_entropy(torch.randn(16, 4), torch.randn(10, 4), target).shape,
    ]
print(shapes)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == (
        "[torch.Size([]), torch.Size([]), torch.Size([16]), torch.Size([16, 10]), torch.Size([])]"
    )


@pytest.mark.parametrize("case", REPRESENTATIVE, ids=repr)
def test_deterministic_and_thread_safe(case):
    inputs = case.inputs(torch.float32)
    serial = _value_and_grads(case, case.ours, inputs)
    assert torch.equal(serial[0], _value_and_grads(case, case.ours, inputs)[0])
    results: list = [None, None]

    def run(slot):
        for _ in range(5):
            results[slot] = _value_and_grads(case, case.ours, inputs)

    threads = [threading.Thread(target=run, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for value, grads in results:
        assert torch.equal(value, serial[0])
        assert all(torch.equal(a, b) for a, b in zip(grads, serial[1], strict=True))


@pytest.mark.parametrize(
    "layout",
    ["transposed", "channels_last", "sliced"],
)
def test_non_contiguous_inputs_match_torch(layout):
    if layout == "transposed":
        logits = torch.randn(5, 8).t()
        target = torch.randint(0, 5, (8,))
    elif layout == "channels_last":
        logits = torch.randn(2, 5, 3, 4).to(memory_format=torch.channels_last)
        target = torch.randint(0, 5, (2, 3, 4))
    else:
        logits = torch.randn(8, 10)[:, ::2]
        target = torch.randint(0, 5, (8,))
    case = Case("layout", S.cross_entropy, F.cross_entropy, None)
    ours, ours_grads = _value_and_grads(case, S.cross_entropy, (logits, target))
    theirs, theirs_grads = _value_and_grads(case, F.cross_entropy, (logits, target))
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_grads, theirs_grads)
    for function, reference in ((S.log_softmax, F.log_softmax), (S.softmax, F.softmax)):
        output = function(logits, 1)
        assert output.is_contiguous()
        torch.testing.assert_close(output, reference(logits, 1))


def test_log_softmax_of_a_transposed_input_can_be_viewed_flat():
    logits = torch.randn(4, 6)
    torch.testing.assert_close(
        S.log_softmax(logits.t(), 1).view(-1), F.log_softmax(logits.t(), 1).view(-1)
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("kind", ["index", "probability", "nll"])
def test_autocast_bf16_computes_the_losses_in_float32_as_torch(kind, smoothing):
    logits = torch.randn(64, 10) * 3
    target = torch.randint(0, 10, (64,)) if kind != "probability" else torch.rand(64, 10)
    weight = torch.rand(10) + 0.5
    if kind == "nll":
        ours_fn = lambda x: S.nll_loss(x, target, weight)  # noqa: E731
        theirs_fn = lambda x: F.nll_loss(x, target, weight)  # noqa: E731
    else:
        ours_fn = lambda x: S.cross_entropy(x, target, weight, label_smoothing=smoothing)  # noqa: E731
        theirs_fn = lambda x: F.cross_entropy(x, target, weight, label_smoothing=smoothing)  # noqa: E731
    with torch.autocast("cpu", torch.bfloat16):
        ours, theirs = ours_fn(logits.bfloat16()), theirs_fn(logits.bfloat16())
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs)


def test_autocast_keeps_softmax_family_in_bf16_as_torch():
    logits = torch.randn(8, 5).bfloat16()
    with torch.autocast("cpu", torch.bfloat16):
        assert S.log_softmax(logits, 1).dtype == F.log_softmax(logits, 1).dtype == torch.bfloat16
        assert S.softmax(logits, 1).dtype == torch.bfloat16


@pytest.mark.parametrize("function", [S.softmax, S.log_softmax], ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", [(0, 10), (10, 0)])
def test_double_backward_on_empty_inputs(function, shape):
    logits = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: function(x, 1), (logits,))


@pytest.mark.parametrize("case", REPRESENTATIVE, ids=repr)
def test_hessian_matches_torch(case):
    inputs = case.inputs(torch.float64)
    index = case.grads[0]

    def on(function):
        def of_one(value):
            values = list(inputs)
            values[index] = value
            return function(*values).sum()

        return of_one

    point = inputs[index]
    torch.testing.assert_close(
        torch.func.hessian(on(case.ours))(point), torch.func.hessian(on(case.theirs))(point)
    )
