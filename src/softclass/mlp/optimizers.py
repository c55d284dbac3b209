"""Optimizers: one registry and one parameter set, looked up by every engine and backend.

:class:`OptimizerParams` holds every optimizer hyper-parameter with its one default (the training
configuration, the CLI and ``softclass.Classifier`` take their defaults from it). Each
:class:`Optimizer` entry updates a list of parameter tensors in place — the autograd Trainer's
module parameters, or the batched engine's stacked ones — through torch's fused multi-tensor
kernels (the ones behind ``torch.optim.SGD/Adam/AdamW(fused=True)``, so the updates are bitwise
torch.optim's), and names its branch in the compiled loops (``training/mlp_native.c``), or None
when those lack it. No ``torch.optim`` object is built: building one imports ``torch._dynamo``
(``Optimizer.add_param_group`` is wrapped by ``torch._disable_dynamo``), ~1.7 s of CPU at start-up
that no softclass command needs.

======= ============================================= ============== =========
name    update (g = gradient, p = parameter, λ = wd)  state          C id
======= ============================================= ============== =========
sgd     g += λp; b = μb + g (b = g at step 1);        momentum b     0
        p -= lr·(g + μb if nesterov else b)
adam    g += λp; Adam's moments and bias correction   m, v           1
adamw   p *= 1 - lr·λ; then Adam without the λp term  m, v           2
rmsprop g += λp; v = αv + (1 - α)g²; p -= lr·g/(√v + ε) v              —
======= ============================================= ============== =========

Measured on one CPU thread, six tensors of the 50-128-128-10 network: fused Adam 12 µs against
82 µs for the equivalent ``torch._foreach_*`` sequence.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from softclass.errors import ConfigError
from softclass.mlp.optimizer_params import DEFAULTS, OptimizerParams
from softclass.mlp.registry import add_entry, get_entry, native_entries

__all__ = [
    "DEFAULTS",
    "MAX_OPTIMIZER_PARAMS",
    "OPTIMIZERS",
    "BatchedState",
    "Optimizer",
    "OptimizerParams",
    "get_optimizer",
    "register_optimizer",
]

# The most hyper-parameters a compiled branch reads (optimizer_params[] in mlp_native.c).
MAX_OPTIMIZER_PARAMS = 8


@dataclass
class BatchedState:
    """Optimizer state of a list of parameter tensors: one tensor of each kind per parameter.

    The momentum buffers start at zero (torch.optim starts SGD's from the first gradient: with
    dampening 0 that is the same value, ``μ·0 + g = g``), so a parameter that skipped steps
    (no gradient) needs no special case.
    """

    first_moments: list[torch.Tensor]  # SGD momentum buffers / Adam first moments
    second_moments: list[torch.Tensor]  # Adam second moments ([] for SGD)
    step_counts: list[torch.Tensor] = field(default_factory=list)  # 0-dim float32, fused Adam's
    step_count: int = 0  # optimizer steps taken
    # When set: the vector step_counts are views of, counted up with one add per step (six
    # 0-dim adds through _foreach_add_ cost ~10 µs a step on one CPU thread, this one ~2 µs).
    step_vector: torch.Tensor | None = None

    def subset(self, indices: list[int]) -> BatchedState:
        """The state of the parameters at ``indices`` (the same tensors, not copies; the caller
        writes ``step_count`` back after stepping the subset)."""
        return BatchedState(
            [self.first_moments[i] for i in indices],
            [self.second_moments[i] for i in indices] if self.second_moments else [],
            [self.step_counts[i] for i in indices],
            self.step_count,
        )


@dataclass(frozen=True)
class Optimizer:
    """One optimizer.

    Attributes:
        name: the key in :data:`OPTIMIZERS` (what ``--optimizer`` takes).
        title: a short description for help texts.
        n_moments: state tensors per parameter tensor (1 for SGD's momentum, 2 for Adam's).
        batched_step: ``(parameters, gradients, state, params)`` → None; updates in place with
            torch.optim's arithmetic, on tensors of any shape (stacked or not); the caller runs it
            under ``torch.no_grad()`` when the parameters require gradients.
        native_code: the branch of ``mlp_native.c``'s ``update``, or None.
        native_params: the hyper-parameters that branch reads, in its order, as named by
            :meth:`OptimizerParams.scalars` (at most :data:`MAX_OPTIMIZER_PARAMS`); the
            compiled loops receive their values as one array, no field per hyper-parameter.

    A missing fact raises ConfigError naming it when the entry is made.
    """

    name: str
    title: str
    n_moments: int
    batched_step: Callable[
        [list[torch.Tensor], list[torch.Tensor], BatchedState, OptimizerParams], None
    ]
    native_code: int | None
    native_params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("name", "title", "n_moments", "batched_step"):
            if getattr(self, name) in (None, ""):
                raise ConfigError(f"optimizer {self.name!r}: fact {name!r} is missing")
        if self.n_moments not in (0, 1, 2):
            raise ConfigError(
                f"optimizer {self.name!r}: fact 'n_moments' is {self.n_moments!r}, expected 0, 1 "
                "or 2 state tensors per parameter"
            )
        if self.native_code is not None and not self.native_params:
            raise ConfigError(
                f"optimizer {self.name!r}: fact 'native_params' is missing (its compiled branch "
                f"{self.native_code} reads hyper-parameters)"
            )
        unknown = sorted(set(self.native_params) - set(DEFAULTS.scalars()))
        if unknown or len(self.native_params) > MAX_OPTIMIZER_PARAMS:
            raise ConfigError(
                f"optimizer {self.name!r}: fact 'native_params' is {self.native_params!r}: "
                f"expected at most {MAX_OPTIMIZER_PARAMS} of {', '.join(DEFAULTS.scalars())}"
            )

    def native_values(self, params: OptimizerParams) -> list[float]:
        """The values of :attr:`native_params` in ``params``, in order."""
        scalars = params.scalars()
        return [scalars[name] for name in self.native_params]

    def new_state(self, parameters: list[torch.Tensor]) -> BatchedState:
        """Zero state for ``parameters`` (stacked or not), on their devices."""
        devices = {tensor.device for tensor in parameters}
        vector = (
            torch.zeros(len(parameters), dtype=torch.float32, device=devices.pop())
            if len(devices) == 1
            else None
        )
        return BatchedState(
            [torch.zeros_like(tensor) for tensor in parameters],
            [torch.zeros_like(tensor) for tensor in parameters] if self.n_moments == 2 else [],
            list(vector.unbind())
            if vector is not None
            else [
                torch.zeros((), dtype=torch.float32, device=tensor.device) for tensor in parameters
            ],
            step_vector=vector,
        )


def _sgd_step(
    parameters: list[torch.Tensor],
    gradients: list[torch.Tensor],
    state: BatchedState,
    params: OptimizerParams,
) -> None:
    state.step_count += 1
    if params.momentum == 0.0 and params.weight_decay == 0.0:
        torch._foreach_add_(parameters, gradients, alpha=-params.learning_rate)
        return
    torch._fused_sgd_(
        parameters,
        gradients,
        state.first_moments if params.momentum != 0.0 else [],
        weight_decay=params.weight_decay,
        momentum=params.momentum,
        lr=params.learning_rate,
        dampening=0.0,
        nesterov=params.nesterov,
        maximize=False,
        is_first_step=state.step_count == 1,
    )


def _adam_family_step(
    kernel: Callable[..., None],
    parameters: list[torch.Tensor],
    gradients: list[torch.Tensor],
    state: BatchedState,
    params: OptimizerParams,
) -> None:
    """Adam's and AdamW's step: ``kernel`` is torch's fused Adam or AdamW (bound per entry)."""
    state.step_count += 1
    if state.step_vector is not None:
        state.step_vector.add_(1.0)
    else:
        torch._foreach_add_(state.step_counts, 1.0)
    kernel(
        parameters,
        gradients,
        state.first_moments,
        state.second_moments,
        [],
        state.step_counts,
        lr=params.learning_rate,
        beta1=params.betas[0],
        beta2=params.betas[1],
        weight_decay=params.weight_decay,
        eps=params.eps,
        amsgrad=False,
        maximize=False,
    )


def _rmsprop_step(
    parameters: list[torch.Tensor],
    gradients: list[torch.Tensor],
    state: BatchedState,
    params: OptimizerParams,
) -> None:
    """torch.optim.RMSprop's update (not centred, no momentum), ``v`` in ``first_moments``."""
    state.step_count += 1
    if params.weight_decay != 0.0:
        gradients = torch._foreach_add(gradients, parameters, alpha=params.weight_decay)
    torch._foreach_mul_(state.first_moments, params.rms_decay)
    torch._foreach_addcmul_(state.first_moments, gradients, gradients, value=1 - params.rms_decay)
    denominators = torch._foreach_sqrt(state.first_moments)
    torch._foreach_add_(denominators, params.eps)
    torch._foreach_addcdiv_(parameters, gradients, denominators, value=-params.learning_rate)


OPTIMIZERS: dict[str, Optimizer] = {}
"""The registry: optimizer name → :class:`Optimizer` (what ``--optimizer`` takes)."""


def register_optimizer(optimizer: Optimizer) -> Optimizer:
    """Add ``optimizer`` to :data:`OPTIMIZERS` (the command line, the estimator and every
    backend then take it); ConfigError when its name is taken."""
    return add_entry(OPTIMIZERS, "optimizer", optimizer)


_SGD_PARAMS = ("learning_rate", "weight_decay", "momentum", "nesterov")
_ADAM_PARAMS = ("learning_rate", "weight_decay", "beta1", "beta2", "eps")
register_optimizer(
    Optimizer("sgd", "SGD with momentum (Nesterov optional)", 1, _sgd_step, 0, _SGD_PARAMS)
)
_adam_step = functools.partial(_adam_family_step, torch._fused_adam_)
_adamw_step = functools.partial(_adam_family_step, torch._fused_adamw_)
register_optimizer(Optimizer("adam", "Adam (L2 weight decay)", 2, _adam_step, 1, _ADAM_PARAMS))
register_optimizer(
    Optimizer("adamw", "AdamW (decoupled weight decay)", 2, _adamw_step, 2, _ADAM_PARAMS)
)
register_optimizer(Optimizer("rmsprop", "RMSprop (not centred)", 1, _rmsprop_step, None))


NATIVE_ENTRIES: dict[int, Optimizer] = native_entries(OPTIMIZERS)


def get_optimizer(name: str) -> Optimizer:
    """The optimizer called ``name``; ConfigError listing the accepted names otherwise."""
    return get_entry(OPTIMIZERS, "optimizer", name)
