"""softclass.nn and softclass.functional where torch's own classes and functions go: the class
hierarchy (isinstance, state_dict, repr), FX, TorchScript, skorch, and the cases torch computes."""

from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from softclass import functional as S
from softclass import nn as snn

# (softclass module, torch module, constructor arguments, inputs maker)
_LOGITS = torch.randn(6, 5, dtype=torch.float64)
_TARGET = torch.tensor([0, 4, 2, -100, 1, 3])


def _class_inputs():
    return _LOGITS.clone().requires_grad_(), _TARGET


def _log_prob_inputs():
    return _LOGITS.log_softmax(1).detach().requires_grad_(), _TARGET


def _along_dim_inputs():
    return (_LOGITS.clone().requires_grad_(),)


MODULE_PAIRS = [
    (
        snn.CrossEntropyLoss,
        torch.nn.CrossEntropyLoss,
        {"weight": torch.rand(5, dtype=torch.float64) + 0.5, "label_smoothing": 0.1},
        _class_inputs,
    ),
    (snn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, {"reduction": "none"}, _class_inputs),
    (
        snn.NLLLoss,
        torch.nn.NLLLoss,
        {"weight": torch.rand(5, dtype=torch.float64) + 0.5, "reduction": "sum"},
        _log_prob_inputs,
    ),
    (snn.Softmax, torch.nn.Softmax, {"dim": 1}, _along_dim_inputs),
    (snn.LogSoftmax, torch.nn.LogSoftmax, {"dim": 0}, _along_dim_inputs),
]
_IDS = [f"{pair[0].__name__}-{index}" for index, pair in enumerate(MODULE_PAIRS)]


def _sum_and_grads(output: torch.Tensor, inputs) -> tuple[torch.Tensor, ...]:
    leaves = [tensor for tensor in inputs if tensor.requires_grad]
    return (output, *torch.autograd.grad(output.sum(), leaves))


@pytest.mark.parametrize(("ours", "theirs", "arguments", "inputs"), MODULE_PAIRS, ids=_IDS)
def test_modules_are_torch_classes_with_torch_state(ours, theirs, arguments, inputs):
    module, reference = ours(**arguments), theirs(**arguments)
    assert isinstance(module, theirs)
    assert repr(module) == repr(reference)
    assert list(module.state_dict()) == list(reference.state_dict())
    assert vars(module).keys() == vars(reference).keys()
    reference.load_state_dict(module.state_dict())
    module.load_state_dict(reference.state_dict())
    assert_close(_module_outputs(module, inputs), _module_outputs(reference, inputs))


def _module_outputs(module, make_inputs):
    inputs = make_inputs()
    return _sum_and_grads(module(*inputs), inputs)


@pytest.mark.parametrize(("ours", "theirs", "arguments", "inputs"), MODULE_PAIRS, ids=_IDS)
@pytest.mark.parametrize("convert", ["fx", "jit"])
def test_modules_trace_and_script(ours, theirs, arguments, inputs, convert):
    module = ours(**arguments)
    converted = torch.fx.symbolic_trace(module) if convert == "fx" else torch.jit.script(module)
    expected = _module_outputs(theirs(**arguments), inputs)
    assert_close(_module_outputs(converted, inputs), expected)


def test_fx_records_one_call_of_the_functional_form():
    graph = torch.fx.symbolic_trace(snn.CrossEntropyLoss(label_smoothing=0.2)).graph
    targets = [node.target for node in graph.nodes if node.op == "call_function"]
    assert targets == [S.cross_entropy]


def test_probability_losses_and_linear_cross_entropy_script():
    probs = torch.softmax(torch.randn(4, 3), 1)
    labels = torch.tensor([0, 2, 1, 1])
    for module, function in ((snn.MCEELoss(), S.mcee), (snn.OneHotMSELoss(), S.mse_onehot)):
        scripted = torch.jit.script(module)
        assert_close(scripted(probs, labels), function(probs, labels))
        assert_close(torch.fx.symbolic_trace(module)(probs, labels), function(probs, labels))
    module = snn.LinearCrossEntropyLoss(4, 5, bias=True)
    assert isinstance(module, torch.nn.LinearCrossEntropyLoss)
    scripted = torch.jit.script(module)
    features = torch.randn(3, 4, requires_grad=True)
    target = torch.tensor([0, 4, 1])
    assert_close(
        _sum_and_grads(scripted(features, target), (features,)),
        _sum_and_grads(module(features, target), (features,)),
    )


def test_scripted_module_keeps_the_errors():
    """The TorchScript interpreter reports an operator's error as a RuntimeError (torch's own
    scripted CrossEntropyLoss too) that carries the original message."""
    scripted = torch.jit.script(snn.CrossEntropyLoss())
    with pytest.raises(
        RuntimeError, match=r"IndexError: .*Target 9 is out of bounds at position 1"
    ):
        scripted(torch.randn(2, 3), torch.tensor([0, 9]))
    with pytest.raises(RuntimeError, match=r"TorchScript interpreter"):
        torch.jit.script(torch.nn.CrossEntropyLoss())(torch.randn(2, 3), torch.tensor([0, 9]))


def test_linear_module_refuses_torch_chunking_options():
    with pytest.raises(NotImplementedError, match=r"options=.*leave options=None"):
        snn.LinearCrossEntropyLoss(4, 5, options=object())


def _skorch_fit(criterion, softmax_output: bool):
    import skorch  # a test dependency (pyproject's test extra): never skipped

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 4)) * 2.0
    labels = rng.integers(0, 3, 240)
    features = (centres[labels] + rng.normal(size=(240, 4))).astype(np.float32)
    layers = [torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)]
    if softmax_output:
        layers.append(torch.nn.Softmax(dim=1))
    net = skorch.NeuralNetClassifier(
        torch.nn.Sequential(*layers),
        criterion=criterion,
        max_epochs=8,
        lr=0.1,
        batch_size=32,
        train_split=None,
        iterator_train__shuffle=False,
        verbose=0,
    )
    net.fit(features, labels)
    probabilities = net.predict_proba(features)
    return probabilities, float((probabilities.argmax(1) == labels).mean())


@pytest.mark.parametrize(
    ("ours", "theirs", "softmax_output"),
    [
        (snn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, False),
        (snn.NLLLoss, torch.nn.NLLLoss, True),
    ],
)
def test_skorch_treats_the_criteria_as_torch_ones(ours, theirs, softmax_output):
    """skorch applies softmax in predict_proba for a CrossEntropyLoss and takes the log of the
    probabilities for an NLLLoss — only if it recognises the class."""
    probabilities, accuracy = _skorch_fit(ours, softmax_output)
    expected_probabilities, expected_accuracy = _skorch_fit(theirs, softmax_output)
    assert_close(probabilities.sum(1), np.ones(len(probabilities), dtype=np.float32))
    assert_close(probabilities, expected_probabilities, atol=1e-5, rtol=1e-4)
    assert accuracy == expected_accuracy
    assert accuracy > 0.8


# The cases torch computes: forward and gradient parity over shapes, dtypes and options.
_SHAPES = [(7, 5), (1, 1), (4, 3, 2), (5,), (300, 33)]
_DTYPES = [torch.float32, torch.float64, torch.bfloat16]
_TOLERANCE = {torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2}, torch.float32: {}, torch.float64: {}}


def _problem(shape, dtype, probability: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=generator) * 3).to(dtype)
    n_classes = shape[1] if len(shape) > 1 else shape[0]
    if probability:
        target = torch.softmax(torch.randn(shape, generator=generator), 1 if len(shape) > 1 else 0)
        return logits, target.to(dtype)
    item_shape = (shape[0], *shape[2:]) if len(shape) > 1 else ()
    return logits, torch.randint(0, n_classes, item_shape, generator=generator)


def _loss_and_grads(function, logits, target, weight, grad_weight: bool, **options):
    logits = logits.clone().requires_grad_()
    leaves = [logits]
    if grad_weight:
        weight = weight.clone().requires_grad_()
        leaves.append(weight)
    loss = function(logits, target, weight, **options)
    grad_output = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    return (loss, *torch.autograd.grad(loss, leaves, grad_output))


@pytest.mark.parametrize(
    ("shape", "dtype", "reduction", "probability"),
    list(itertools.product(_SHAPES, _DTYPES, ["mean", "sum", "none"], [False, True])),
)
def test_negative_label_smoothing_computes_as_torch(shape, dtype, reduction, probability):
    logits, target = _problem(shape, dtype, probability)
    options = {"reduction": reduction, "label_smoothing": -0.1}
    ours = _loss_and_grads(S.cross_entropy, logits, target, None, False, **options)
    theirs = _loss_and_grads(F.cross_entropy, logits, target, None, False, **options)
    assert_close(ours, theirs, **_TOLERANCE[dtype])


@pytest.mark.parametrize(
    ("shape", "dtype", "reduction", "smoothing"),
    list(itertools.product(_SHAPES, _DTYPES, ["mean", "sum", "none"], [0.0, 0.2])),
)
def test_probability_targets_give_a_weight_its_gradient(shape, dtype, reduction, smoothing):
    logits, target = _problem(shape, dtype, probability=True)
    n_classes = shape[1] if len(shape) > 1 else shape[0]
    weight = (torch.rand(n_classes, generator=torch.Generator().manual_seed(1)) + 0.5).to(dtype)
    options = {"reduction": reduction, "label_smoothing": smoothing}
    ours = _loss_and_grads(S.cross_entropy, logits, target, weight, True, **options)
    theirs = _loss_and_grads(F.cross_entropy, logits, target, weight, True, **options)
    assert_close(ours, theirs, **_TOLERANCE[dtype])


def test_index_targets_still_refuse_a_weight_that_requires_grad():
    weight = torch.rand(4, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"not differentiable with respect to argument 'weight'"):
        S.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 2]), weight)


def _changed_after_the_loss(function, logits, target, reduction, smoothing, change):
    logits = logits.clone().requires_grad_()
    scores = logits * 1.0  # a non-leaf, changed in place below
    loss = function(scores, target, reduction=reduction, label_smoothing=smoothing)
    with torch.no_grad():
        change(scores)
    grad_output = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    return (loss, *torch.autograd.grad(loss, logits, grad_output))


@pytest.mark.parametrize(
    ("shape", "dtype", "reduction", "probability", "smoothing"),
    list(itertools.product(_SHAPES, _DTYPES, ["mean", "sum", "none"], [False, True], [0.0, 0.1])),
)
def test_logits_changed_in_place_before_backward(shape, dtype, reduction, probability, smoothing):
    """torch's backward does not read the logits: changing them after the loss is allowed."""
    logits, target = _problem(shape, dtype, probability)
    for change in (lambda scores: scores.mul_(0.0), lambda scores: scores.add_(5.0)):
        ours = _changed_after_the_loss(
            S.cross_entropy, logits, target, reduction, smoothing, change
        )
        theirs = _changed_after_the_loss(
            F.cross_entropy, logits, target, reduction, smoothing, change
        )
        assert_close(ours, theirs, **_TOLERANCE[dtype])


def test_a_second_backward_after_an_in_place_change_names_the_logits():
    logits = torch.randn(5, 4, requires_grad=True)
    scores = logits * 1.0
    loss = S.cross_entropy(scores, torch.tensor([0, 1, 2, 3, 0]))
    with torch.no_grad():
        scores.add_(1.0)
    torch.autograd.grad(loss, logits, retain_graph=True)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation: the logits"):
        torch.autograd.grad(loss, logits)


@pytest.mark.parametrize("mode", ["compile", "export"])
def test_out_of_range_target_message_is_the_eager_one_when_traced(mode):
    torch._dynamo.reset()
    logits, target = torch.randn(3, 4), torch.tensor([0, 7, 1])
    with pytest.raises(IndexError, match=r"Target 7 is out of bounds at position 1") as eager:
        S.cross_entropy(logits, target)
    if mode == "compile":
        traced = torch.compile(S.cross_entropy, backend="aot_eager", fullgraph=True)
    else:
        program = torch.export.export(snn.CrossEntropyLoss(), (logits, torch.tensor([0, 1, 1])))
        traced = program.module()
    with pytest.raises(IndexError) as caught:
        traced(logits, target)
    assert str(eager.value) in str(caught.value)


@pytest.mark.parametrize(
    ("dtype", "reduction", "ignore_index", "shape"),
    list(
        itertools.product(_DTYPES, ["mean", "sum"], [-100, 1], [(1, 1), (9, 3), (33, 17), (5, 40)])
    ),
)
def test_lean_road_matches_torch(monkeypatch, dtype, reduction, ignore_index, shape):
    """The common call takes softclass.kernels.lean; its loss, gradient (for grad_output 1 and
    not), second backward and double backward are torch's."""
    from softclass.kernels import lean

    taken = []
    for road in ("_forward", "_operator_forward"):  # Python road, C++ operator
        original = getattr(lean, road)
        monkeypatch.setattr(lean, road, lambda *a, f=original: taken.append(1) or f(*a))
    logits, target = _problem(shape, dtype, probability=False, seed=3)
    target[::3] = ignore_index if shape[1] > 1 else 0
    results = []
    for function in (S.cross_entropy, F.cross_entropy):
        leaf = logits.clone().requires_grad_()
        loss = function(leaf, target, ignore_index=ignore_index, reduction=reduction)
        first = torch.autograd.grad(2.5 * loss, leaf, retain_graph=True)
        second = torch.autograd.grad(loss, leaf, create_graph=True)
        (curvature,) = torch.autograd.grad((second[0] ** 2).sum(), leaf)
        with torch.no_grad():
            no_grad_loss = function(leaf, target, ignore_index=ignore_index, reduction=reduction)
        results.append((loss, *first, *second, curvature, no_grad_loss))
    assert_close(results[0], results[1], **_TOLERANCE[dtype])
    assert len(taken) == 2


def test_lean_road_reports_the_target_position():
    with pytest.raises(IndexError, match=r"Target 5 is out of bounds at position 2"):
        S.cross_entropy(torch.randn(3, 4, requires_grad=True), torch.tensor([0, 1, 5]))


class _Classifier(torch.nn.Module):
    """A small network whose forward returns its loss, computed by ``criterion``."""

    def __init__(self, criterion: torch.nn.Module) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(8, 16)
        self.out = torch.nn.Linear(16, 5)
        self.criterion = criterion

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.out(torch.tanh(self.hidden(features))), target)


_CRITERION_OPTIONS = [
    {},
    {"weight": torch.rand(5) + 0.5, "label_smoothing": 0.1, "ignore_index": 2},
    {"reduction": "sum"},
]


def _twin_classifiers(options):
    torch.manual_seed(0)
    theirs = _Classifier(torch.nn.CrossEntropyLoss(**options))
    ours = _Classifier(snn.CrossEntropyLoss(**options))
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _train_steps(model, batches) -> list[torch.Tensor]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for features, target in batches:
        loss = model(features, target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach())
    return losses


def _batches(n_batches: int = 4, rows: int = 32):
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(n_batches, rows, 8, generator=generator)
    target = torch.randint(0, 5, (n_batches, rows), generator=generator)
    return list(zip(features, target, strict=True))


@pytest.mark.parametrize("options", _CRITERION_OPTIONS, ids=["plain", "weighted", "sum"])
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_model_with_the_module_trains_as_torchs(options, backend):
    """torch.compile(fullgraph=True) of a model whose loss is softclass.nn.CrossEntropyLoss takes
    the same training steps as the same model with torch's loss, compiled and eager."""
    torch._dynamo.reset()
    ours, theirs = _twin_classifiers(options)
    batches = _batches()
    our_losses = _train_steps(torch.compile(ours, fullgraph=True, backend=backend), batches)
    their_losses = _train_steps(torch.compile(theirs, fullgraph=True, backend=backend), batches)
    assert_close(our_losses, their_losses, rtol=1e-5, atol=1e-6)
    for got, want in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert_close(got, want, rtol=1e-5, atol=1e-6)
    _, eager = _twin_classifiers(options)
    assert_close(our_losses, _train_steps(eager, batches), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", _CRITERION_OPTIONS, ids=["plain", "weighted", "sum"])
def test_exported_model_with_the_module_matches_torchs(options):
    """torch.export of the model (dynamic batch) holds softclass's op, keeps the criterion's
    weight buffer, and gives torch's loss on batches of other sizes."""
    ours, theirs = _twin_classifiers(options)
    batch = torch.export.Dim("batch", min=2)
    features, target = _batches(1, rows=16)[0]
    program = torch.export.export(ours, (features, target), dynamic_shapes=({0: batch}, {0: batch}))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert any("softclass" in target for target in targets), targets
    assert ("criterion.weight" in program.state_dict) == ("weight" in options)
    for features, target in _batches(3, rows=29):
        assert_close(program.module()(features, target), theirs(features, target))


def test_linear_cross_entropy_has_torchs_signature():
    ours = inspect.signature(S.linear_cross_entropy).parameters
    theirs = inspect.signature(F.linear_cross_entropy).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == [
        (p.name, p.kind, p.default) for p in theirs.values() if p.name != "options"
    ]


def test_linear_cross_entropy_loss_module_matches_torchs():
    torch.manual_seed(3)
    ours = snn.LinearCrossEntropyLoss(4, 5, bias=True, weight=torch.rand(5), ignore_index=1)
    theirs = torch.nn.LinearCrossEntropyLoss(4, 5, bias=True, weight=ours.weight, ignore_index=1)
    theirs.load_state_dict(ours.state_dict())
    hidden, target = torch.randn(6, 4), torch.randint(0, 5, (6,))
    torch.testing.assert_close(ours(hidden, target), theirs(hidden, target))
    with pytest.raises(NotImplementedError, match=r"out_features=\(2,\)"):
        snn.LinearCrossEntropyLoss(4, 5, out_features=(2,))
    with pytest.raises(RuntimeError, match=r"expected weight shape to be \(5,\), got \(4,\)"):
        snn.LinearCrossEntropyLoss(4, 5, weight=torch.rand(4))


def test_one_hot_is_torchs():
    target = torch.tensor([0, 2, 1])
    assert torch.equal(S.one_hot(target, num_classes=4), F.one_hot(target, num_classes=4))
    assert S.one_hot(target).dtype == torch.int64
    assert S.one_hot(tensor=target, num_classes=3, dtype=torch.float32).dtype == torch.float32


def test_class_weight_that_requires_grad_raises_as_torch():
    weight = torch.rand(5, requires_grad=True)
    logits, target = torch.randn(3, 5, requires_grad=True), torch.tensor([0, 1, 2])
    for function in (S.cross_entropy, S.nll_loss):
        with pytest.raises(RuntimeError, match="not differentiable with respect to argument"):
            function(logits, target, weight)
    with torch.no_grad():
        S.cross_entropy(logits, target, weight)  # torch allows it without grad mode


def test_elementwise_mean_is_mean_with_torchs_warning():
    logits, target = torch.randn(3, 5), torch.tensor([0, 1, 2])
    with pytest.warns(UserWarning, match="elementwise_mean"):
        loss = S.cross_entropy(logits, target, reduction="elementwise_mean")
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))


def test_label_smoothing_is_checked_when_the_module_is_called():
    module = snn.CrossEntropyLoss(label_smoothing=1.2)  # constructs, as torch's does
    with pytest.raises(RuntimeError, match=r"label_smoothing must be between 0\.0 and 1\.0"):
        module(torch.randn(3, 5), torch.tensor([0, 1, 2]))
