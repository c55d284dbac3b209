"""Every backend against the autograd reference, over the registries (float64).

The grid is read from the registries (designs × activations × optimizers × row/class weights), so a
new entry is held to the reference without anyone listing it; an entry a backend lacks is refused
by name.
"""

import dataclasses
import functools
import re

import pytest
import torch
from torch.testing import assert_close
from torch_reference import torch_optimizer

from softclass import functional
from softclass.errors import ConfigError
from softclass.mlp import activations, designs, optimizers
from softclass.mlp.activations import ACTIVATIONS, Activation, get_activation
from softclass.mlp.designs import DESIGNS, get_design
from softclass.mlp.model import MLPConfig, build_mlp
from softclass.mlp.optimizers import OPTIMIZERS, get_optimizer
from softclass.training import blas, mlp_native
from softclass.training.backends import compiled
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.batching import batch_bounds, epoch_permutation
from softclass.training.config import TrainConfig
from softclass.training.early_stopping import EarlyStopping
from softclass.training.ensemble import Member, train_ensemble

N_FEATURES, N_CLASSES = 3, 4
CLASS_WEIGHTS = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)


def _optimizer_options(name: str) -> dict:
    """Each optimizer with every parameter it reads away from zero (weight decay included)."""
    if name == "sgd":
        return {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01, "learning_rate": 0.1}
    return {"weight_decay": 0.01, "learning_rate": 0.01}


def _table(n_rows=23, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n_rows, N_FEATURES, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, N_CLASSES, (n_rows,), generator=generator)
    return features, targets


def _reference(config, model_config, member, features, targets, row_weights):
    """One model trained by autograd, torch.optim (the registry entry's counterpart) and the
    design's loss."""
    design = get_design(member.design)
    model = build_mlp(model_config, member.seed).double()
    optimizer = torch_optimizer(config.optimizer, model.parameters(), config.optimizer_params)
    for epoch in range(config.epochs):
        order = epoch_permutation(features.shape[0], member.seed, epoch)
        for start, stop in batch_bounds(features.shape[0], config.batch_size):
            rows = order[start:stop]
            output = design.output(model(features[rows]))
            encoded = design.encode_targets(targets[rows], N_CLASSES)
            if row_weights is None:
                loss = design.loss(output, encoded)
            else:
                per_row = design.loss(output, encoded, reduction="none")
                loss = (per_row * row_weights[rows]).sum() / row_weights[rows].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


def _weights(kind, targets):
    if kind == "none":
        return None
    if kind == "class":
        return CLASS_WEIGHTS[targets]
    return torch.rand(targets.shape[0], generator=torch.Generator().manual_seed(9)).double()


# Backends and how many models train at once: the stacked members of compare, and one model
# alone (the estimator's and train's path: no member axis on the torch backend). "compiled blas":
# the compiled step with its products through the BLAS (mlp_step.c), which wide layers take.
PATHS = [
    ("compiled", "stacked"),
    ("compiled blas", "stacked"),
    ("torch", "stacked"),
    ("torch", "one model"),
]


@pytest.mark.parametrize(("backend", "models"), PATHS, ids=[" ".join(path) for path in PATHS])
@pytest.mark.parametrize("weights", ["none", "row", "class"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_backend_matches_autograd_over_the_registries(
    backend, models, weights, optimizer, activation, monkeypatch
):
    if backend == "compiled blas":
        monkeypatch.setattr(compiled, "BLAS_MIN_WORK", 0)
        assert mlp_native.step_library() is not None and blas.gemm() is not None
        backend = "compiled"
    features, targets = _table()
    model_config = MLPConfig(N_FEATURES, N_CLASSES, hidden=(5, 4), activation=activation)
    config = TrainConfig(
        epochs=2,
        batch_size=6,
        optimizer=optimizer,
        backend=backend,
        **_optimizer_options(optimizer),
    )
    members = [Member(name, seed) for seed in (1, 2) for name in DESIGNS]
    runs = [members] if models == "stacked" else [[member] for member in members[: len(DESIGNS)]]
    row_weights = _weights(weights, targets)
    lacking = [
        f"{kind} {entry.name!r}"
        for kind, entry in (
            ("activation", ACTIVATIONS[activation]),
            ("optimizer", OPTIMIZERS[optimizer]),
            *(("design", design) for design in DESIGNS.values()),
        )
        if entry.native_code is None
    ]
    if backend == "compiled" and lacking:
        # An entry without a compiled branch (it did not ask for speed) is refused by name.
        with pytest.raises(ConfigError, match=re.escape(lacking[0])):
            train_ensemble(model_config, members, features, targets, config, dtype=torch.float64)
        return
    for run in runs:
        result = train_ensemble(
            model_config, run, features, targets, config, dtype=torch.float64,
            row_weights=row_weights,
        )  # fmt: skip
        assert result.backend == backend
        for position, member in enumerate(run):
            expected = _reference(config, model_config, member, features, targets, row_weights)
            for got, want in zip(
                result.model(position).parameters(), expected.parameters(), strict=True
            ):
                assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_class_weights_as_row_weights_equal_functional_weight_argument():
    logits = torch.randn(7, N_CLASSES, dtype=torch.float64)
    _, targets = _table(7)
    row_weights = CLASS_WEIGHTS[targets]
    per_row = get_design("A").row_losses(logits, targets)
    weighted = (per_row * row_weights).sum() / row_weights.sum()
    assert_close(weighted, functional.cross_entropy(logits, targets, weight=CLASS_WEIGHTS))


@pytest.mark.parametrize("name", list(DESIGNS))
def test_design_output_gradient_is_autograd_through_functional(name):
    design = get_design(name)
    logits = torch.randn(6, N_CLASSES, dtype=torch.float64, requires_grad=True)
    _, targets = _table(6)
    encoded = design.encode_targets(targets, N_CLASSES)
    scale = torch.full((6,), 1 / 6, dtype=torch.float64)
    rows, grad = design.output_gradient(logits.detach(), encoded, scale)
    design.loss_from_logits(logits, encoded).backward()
    assert_close(grad, logits.grad)
    assert_close(rows.mean(), design.loss_from_logits(logits.detach(), encoded))
    mean, mean_grad = design.mean_loss_gradient(logits.detach(), encoded)
    assert_close(mean, rows.mean())
    assert_close(mean_grad, grad)


def _silu_backward(grad, pre, out):
    sigmoid = torch.sigmoid(pre)
    return grad * (sigmoid * (1 + pre * (1 - sigmoid)))


SILU = Activation("silu", torch.nn.SiLU, torch.nn.functional.silu, _silu_backward, None)


def test_a_new_activation_is_refused_by_the_compiled_backend_and_trained_by_torch(monkeypatch):
    monkeypatch.setitem(activations.ACTIVATIONS, "silu", SILU)
    features, targets = _table()
    model_config = MLPConfig(N_FEATURES, N_CLASSES, hidden=(5,), activation="silu")
    members = [Member("A", 0), Member("C", 1)]
    with pytest.raises(ConfigError, match="activation 'silu' has no compiled implementation"):
        train_ensemble(
            model_config, members, features, targets, TrainConfig(epochs=1, backend="compiled")
        )
    config = TrainConfig(epochs=2, batch_size=6)
    auto = train_ensemble(model_config, members, features, targets, config, dtype=torch.float64)
    assert auto.backend == "torch"  # "auto" leaves the compiled loops for what they lack
    for position, member in enumerate(members):
        expected = _reference(config, model_config, member, features, targets, None)
        for got, want in zip(auto.model(position).parameters(), expected.parameters(), strict=True):
            assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_mlp_native_refuses_entries_without_native_code(monkeypatch):
    monkeypatch.setitem(activations.ACTIVATIONS, "silu", SILU)
    with pytest.raises(ConfigError, match="activation 'silu' has no compiled implementation"):
        mlp_native.train(None, None, [3, 4], SILU, get_optimizer("sgd"), None, 1, False, 0)
    no_code = dataclasses.replace(get_optimizer("adam"), name="adam2", native_code=None)
    with pytest.raises(ConfigError, match="optimizer 'adam2' has no compiled implementation"):
        mlp_native.train(None, None, [3, 4], get_activation("tanh"), no_code, None, 1, False, 0)


def test_a_new_design_or_optimizer_without_native_code_is_refused_by_name(monkeypatch):
    monkeypatch.setitem(
        designs.DESIGNS, "E", dataclasses.replace(DESIGNS["A"], name="E", native_code=None)
    )
    monkeypatch.setitem(
        optimizers.OPTIMIZERS,
        "adam2",
        dataclasses.replace(OPTIMIZERS["adam"], name="adam2", native_code=None),
    )
    model_config = MLPConfig(N_FEATURES, N_CLASSES)
    with pytest.raises(ConfigError, match="design 'E' has no compiled implementation"):
        BatchedTrainer(model_config, [Member("E", 0)], TrainConfig(backend="compiled"))
    with pytest.raises(ConfigError, match="optimizer 'adam2' has no compiled implementation"):
        BatchedTrainer(
            model_config, [Member("A", 0)], TrainConfig(optimizer="adam2", backend="compiled")
        )
    trainer = BatchedTrainer(model_config, [Member("E", 0)], TrainConfig())
    assert not trainer.uses_compiled


def _doubled_nll(outputs, targets, **options):
    return 2 * functional.nll_loss(outputs, targets, **options)


def test_an_entry_changed_at_run_time_is_refused_by_the_compiled_backend_and_trained_by_torch(
    monkeypatch,
):
    # B keeps its native_code but now trains twice the NLL: the compiled branch does not compute
    # that, so "compiled" is refused by name and "auto" trains the registry's loss with torch.
    doubled = dataclasses.replace(DESIGNS["B"], loss=_doubled_nll)
    monkeypatch.setitem(designs.DESIGNS, "B", doubled)
    features, targets = _table()
    model_config = MLPConfig(N_FEATURES, N_CLASSES)
    with pytest.raises(ConfigError, match=r"design .B. is not what its compiled branch"):
        train_ensemble(
            model_config, [Member("B", 0)], features, targets, TrainConfig(backend="compiled")
        )
    config = TrainConfig(epochs=2, batch_size=6)
    auto = train_ensemble(
        model_config, [Member("B", 0)], features, targets, config, dtype=torch.float64
    )
    assert auto.backend == "torch"
    expected = _reference(config, model_config, Member("B", 0), features, targets, None)
    for got, want in zip(auto.model(0).parameters(), expected.parameters(), strict=True):
        assert_close(got, want, rtol=1e-10, atol=1e-12)
    changed = dataclasses.replace(ACTIVATIONS["tanh"], forward=torch.sigmoid)
    monkeypatch.setitem(activations.ACTIVATIONS, "tanh", changed)
    with pytest.raises(ConfigError, match=r"activation .tanh. is not what its compiled branch"):
        BatchedTrainer(model_config, [Member("A", 0)], TrainConfig(backend="compiled"))


@pytest.mark.parametrize(
    ("kind", "registry"),
    [("activation", ACTIVATIONS), ("design", DESIGNS), ("optimizer", OPTIMIZERS)],
)
def test_every_native_code_of_the_registries_is_implemented_by_the_compiled_loops(kind, registry):
    compiled = mlp_native.library()
    assert compiled is not None, mlp_native.unavailable_reason()
    claimed = {
        name: entry.native_code for name, entry in registry.items() if entry.native_code is not None
    }
    missing = [
        name for name, code in claimed.items() if not mlp_native.implements(compiled, kind, code)
    ]
    assert missing == [], f"{kind}s claiming a native_code mlp_native.c lacks: {missing}"
    assert not mlp_native.implements(compiled, kind, max(claimed.values()) + 1)
    assert not mlp_native.implements(compiled, kind, -1)


def test_a_design_claiming_a_native_code_the_compiled_loops_lack_is_refused(monkeypatch):
    monkeypatch.setitem(
        designs.DESIGNS, "E", dataclasses.replace(DESIGNS["A"], name="E", native_code=7)
    )
    features, targets = _table()
    with pytest.raises(ConfigError, match=r"design 'E' claims native_code 7, which the compiled"):
        train_ensemble(
            MLPConfig(N_FEATURES, N_CLASSES),
            [Member("A", 0), Member("E", 1)],
            features,
            targets,
            TrainConfig(epochs=1, backend="compiled"),
        )


@pytest.mark.parametrize(
    ("lookup", "name", "match"),
    [
        (
            get_activation,
            "no-such-activation",
            f"unknown activation 'no-such-activation': expected one of {', '.join(ACTIVATIONS)}$",
        ),
        (
            get_optimizer,
            "no-such-optimizer",
            f"unknown optimizer 'no-such-optimizer': expected one of {', '.join(OPTIMIZERS)}$",
        ),
        (
            get_design,
            "no-such-design",
            f"unknown design 'no-such-design': expected one of {', '.join(DESIGNS)} \\(A = ",
        ),
    ],
)
def test_unknown_names_list_the_accepted_ones(lookup, name, match):
    with pytest.raises(ConfigError, match=match):
        lookup(name)


def test_batched_backends_refuse_what_they_cannot_train():
    model_config = MLPConfig(N_FEATURES, N_CLASSES)
    with pytest.raises(ConfigError, match="precision='bf16' is not supported by the batched"):
        BatchedTrainer(model_config, [Member("A", 0)], TrainConfig(precision="bf16"))
    with pytest.raises(ConfigError, match="backend='autograd' is the Trainer"):
        BatchedTrainer(model_config, [Member("A", 0)], TrainConfig(backend="autograd"))
    features, targets = _table()
    with pytest.raises(ConfigError, match=r"early stopping \(patience=2\) needs validation rows"):
        train_ensemble(model_config, [Member("A", 0)], features, targets, TrainConfig(patience=2))


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_early_stopping_per_member_equals_the_trainer(backend):
    from softclass.training.backends.autograd import fit

    features, targets = _table(40)
    val_features, val_targets = _table(15, seed=4)
    model_config = MLPConfig(N_FEATURES, N_CLASSES)
    config = TrainConfig(
        epochs=60, batch_size=8, learning_rate=0.3, patience=3, backend=backend, device="cpu"
    )
    members = [Member(name, 0) for name in DESIGNS]
    result = train_ensemble(
        model_config,
        members,
        features,
        targets,
        config,
        val_features,
        val_targets,
        torch.float64,
    )
    assert min(result.epochs_run) < 60  # something stopped early
    for position, member in enumerate(members):
        alone = fit(
            get_design(member.design),
            model_config,
            features.float(),
            targets,
            val_features.float(),
            val_targets,
            dataclasses.replace(config, seed=member.seed, backend="autograd"),
        )
        assert result.epochs_run[position] == alone.history.epochs
        assert result.best_epoch[position] == alone.history.best_epoch
        for got, want in zip(
            result.model(position).parameters(), alone.model.parameters(), strict=True
        ):
            assert_close(got.float(), want, rtol=1e-4, atol=1e-5)


def test_early_stopping_rule_min_delta_and_monitor_direction():
    rule = EarlyStopping("validation_accuracy", patience=2, min_delta=0.05, n_models=2)
    assert rule.update(0, 1, 0.5) and rule.best[0] == 0.5
    assert not rule.update(0, 2, 0.52)  # better, but not by more than min_delta
    assert not rule.update(0, 3, 0.4) and rule.stopped[0] and not rule.stopped[1]
    loss_rule = EarlyStopping("validation_loss", patience=None, min_delta=0.0)
    assert loss_rule.update(0, 1, 1.0) and loss_rule.update(0, 2, 0.9)
    assert not loss_rule.update(0, 3, float("nan")) and not loss_rule.stopped[0]


def _resume_config(backend, optimizer, **options):
    return TrainConfig(
        batch_size=7,
        optimizer=optimizer,
        learning_rate=0.05,
        weight_decay=1e-3,
        backend=backend,
        device="cpu",
        **options,
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("backend", ["compiled", "torch", "autograd"])
def test_resume_gives_the_weights_of_an_uninterrupted_run_on_every_backend(
    backend, optimizer, tmp_path
):
    from softclass.training.engine import train_model

    features, targets = (_table(40)[0].float(), _table(40)[1])
    val_features, val_targets = _table(12, seed=5)
    data = (features, targets, val_features.float(), val_targets)
    design, model_config = get_design("C"), MLPConfig(N_FEATURES, N_CLASSES)
    patience = {"patience": 50}  # early-stopping state crosses the checkpoint too
    whole = train_model(
        design, model_config, _resume_config(backend, optimizer, epochs=9, **patience), *data
    )
    path = tmp_path / "checkpoint.pt"
    train_model(
        design,
        model_config,
        _resume_config(backend, optimizer, epochs=4, **patience),
        *data,
        checkpoint_path=path,
    )
    resumed = train_model(
        design,
        model_config,
        _resume_config(backend, optimizer, epochs=9, **patience),
        *data,
        checkpoint_path=path,
        resume=True,
    )
    for got, want in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        assert torch.equal(got, want)
    assert resumed.history.column("validation_loss") == whole.history.column("validation_loss")
    assert resumed.history.best_epoch == whole.history.best_epoch
    assert all(value is not None for value in resumed.history.column("train_accuracy"))


def test_batched_resume_refuses_what_it_cannot_continue(tmp_path):
    from softclass.errors import ModelFileError
    from softclass.training.backends.autograd import fit
    from softclass.training.engine import train_model

    features, targets = (_table(30)[0].float(), _table(30)[1])
    design, model_config = get_design("A"), MLPConfig(N_FEATURES, N_CLASSES)
    config = TrainConfig(epochs=2, device="cpu")
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(ConfigError, match="resume needs a checkpoint_path"):
        train_model(design, model_config, config, features, targets, resume=True)
    with pytest.raises(ModelFileError, match="does not exist"):
        train_model(
            design, model_config, config, features, targets, checkpoint_path=path, resume=True
        )
    train_model(design, model_config, config, features, targets, checkpoint_path=path)
    with pytest.raises(ModelFileError, match="written for other training data"):
        train_model(
            design, model_config, config, features + 1, targets, checkpoint_path=path, resume=True
        )
    with pytest.raises(ModelFileError, match=r"members \[\['A', 0\]\] differs"):
        train_model(
            get_design("B"),
            model_config,
            config,
            features,
            targets,
            checkpoint_path=path,
            resume=True,
        )
    fit(design, model_config, features, targets, config=config, checkpoint_path=path)
    resumed = train_model(  # the one format: the autograd reference's M = 1 checkpoint
        design, model_config, config, features, targets, checkpoint_path=path, resume=True
    )
    assert resumed.history.epochs == 2
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="not a softclass checkpoint"):
        train_model(
            design, model_config, config, features, targets, checkpoint_path=path, resume=True
        )


def test_backend_choice_names_what_forces_the_autograd_engine():
    from softclass.training.distributed import DistContext
    from softclass.training.engine import choose_backend

    assert choose_backend(TrainConfig()) == "batched"
    assert choose_backend(TrainConfig(precision="bf16")) == "autograd"
    assert choose_backend(TrainConfig(), DistContext(world_size=2)) == "autograd"
    with pytest.raises(ConfigError, match="backend='torch' cannot train with precision='bf16'"):
        choose_backend(TrainConfig(backend="torch", precision="bf16"))
    with pytest.raises(ConfigError, match="cannot train with torchrun data parallelism"):
        choose_backend(TrainConfig(backend="compiled"), DistContext(world_size=2))


def test_a_checkpoint_with_malformed_betas_is_refused_naming_the_field(tmp_path):
    from softclass.errors import ModelFileError
    from softclass.training.backends.autograd import fit

    features, targets = (_table(20)[0].float(), _table(20)[1])
    design, model_config = get_design("A"), MLPConfig(N_FEATURES, N_CLASSES)
    config = TrainConfig(epochs=1, device="cpu", optimizer="adam")
    path = tmp_path / "checkpoint.pt"
    fit(design, model_config, features, targets, config=config, checkpoint_path=path)
    _rewrite_document(path, lambda document: document["train_config"].update(betas=[0.9]))
    with pytest.raises(ModelFileError, match=r"train_config\.betas' is a list of 1 items"):
        fit(
            design,
            model_config,
            features,
            targets,
            config=config,
            checkpoint_path=path,
            resume=True,
        )


def _rewrite_document(path, change):
    """Change the JSON header of the checkpoint at ``path`` (its tensors kept, in file order)."""
    import json
    import struct

    from softclass.training.schema.checkpoint import BATCHED_METADATA_KEY

    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    document = json.loads(header["__metadata__"][BATCHED_METADATA_KEY])
    change(document)
    header["__metadata__"][BATCHED_METADATA_KEY] = json.dumps(document)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size :])


SMOOTHED_CE = designs.Design(
    "E",
    "logits + label-smoothed cross entropy",
    "cross_entropy",
    "index",
    designs.identity,
    functools.partial(functional.cross_entropy, label_smoothing=0.1),
    designs.softmax_rows,
    designs.log_softmax_rows,
    label="CE ε=0.1",
    color="#9467bd",
    linestyle="-.",
    relation="another loss",
    meaning="E smooths the targets of A (ε = 0.1): another loss, with another minimiser.",
    native_code=0,
    native_params=(0.1,),
)


@pytest.mark.parametrize("weights", ["none", "row"])
@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_a_design_registered_at_run_time_trains_through_its_compiled_branch_with_its_parameters(
    monkeypatch, backend, weights
):
    # E is the cross-entropy branch with its label smoothing passed to the C code as data: the
    # compiled loops train it (with A beside it, smoothing 0) as autograd through its own loss.
    monkeypatch.setitem(designs.DESIGNS, "E", SMOOTHED_CE)
    features, targets = _table()
    model_config = MLPConfig(N_FEATURES, N_CLASSES, hidden=(5,))
    config = TrainConfig(epochs=2, batch_size=6, optimizer="adam", backend=backend)
    members = [Member("E", 1), Member("A", 1)]
    row_weights = _weights(weights, targets)
    result = train_ensemble(
        model_config, members, features, targets, config, dtype=torch.float64,
        val_features=features[:7], val_targets=targets[:7], row_weights=row_weights,
    )  # fmt: skip
    assert result.backend == backend
    for position, member in enumerate(members):
        expected = _reference(config, model_config, member, features, targets, row_weights)
        for got, want in zip(
            result.model(position).parameters(), expected.parameters(), strict=True
        ):
            assert_close(got, want, rtol=1e-10, atol=1e-12)
        with torch.no_grad():
            logits = expected(features[:7])
            design = get_design(member.design)
            val_loss = design.loss(design.output(logits), targets[:7])
        assert result.val_loss[position, -1] == pytest.approx(float(val_loss), rel=1e-9)
    smoothed, plain = (next(iter(result.model(i).parameters())) for i in (0, 1))
    assert not torch.equal(smoothed, plain)  # the smoothing was read


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"native_params": (0.2,)}, "the loss smooths by 0.1, the branch is told 0.2"),
        ({"native_params": ()}, "the loss smooths, the branch would not"),
        ({"output": lambda logits: logits}, "not the branch's output function"),
        ({"native_params": (0.1, 0.5)}, "the branch reads one parameter"),
    ],
)
def test_a_design_that_does_not_compute_its_branch_is_refused_by_the_compiled_backend(
    monkeypatch, change, why
):
    monkeypatch.setitem(designs.DESIGNS, "E", dataclasses.replace(SMOOTHED_CE, **change))
    assert not designs.computes_native_branch(designs.DESIGNS["E"]), why
    with pytest.raises(ConfigError, match=r"design 'E' is not what its compiled branch"):
        BatchedTrainer(
            MLPConfig(N_FEATURES, N_CLASSES), [Member("E", 0)], TrainConfig(backend="compiled")
        )


def test_a_design_with_too_many_native_params_is_refused_when_made():
    with pytest.raises(ConfigError, match=r"design 'E': fact 'native_params' has 3 values"):
        dataclasses.replace(SMOOTHED_CE, native_params=(0.1, 0.0, 0.0))
