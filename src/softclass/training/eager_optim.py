"""SGD (with momentum) and Adam over a list of tensors, without ``torch.optim``.

Building any ``torch.optim`` optimizer imports ``torch._dynamo`` (``Optimizer.add_param_group``,
``zero_grad``, ``state_dict`` and ``step`` are wrapped by ``torch._disable_dynamo``, which imports
it on first call): about 1 s of start-up on a quiet 2-core machine and ~4.5 s under load, paid by
every ``softclass train`` for a compiler it never uses. :class:`TensorOptimizer` runs the same
arithmetic through the same aten kernels — ``torch._fused_sgd_`` / ``torch._fused_adam_`` when
``fused`` (what ``torch.optim.SGD/Adam(fused=True)`` call), otherwise torch's single-tensor
formulas op for op — so its updates are bitwise those of ``torch.optim.SGD`` / ``torch.optim.Adam``
with the same ``fused`` flag, and its :meth:`state_dict` has their layout (checkpoints written with
either load in the other).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

KINDS = ("sgd", "adam")


class TensorOptimizer:
    """SGD with momentum (torch's: dampening 0, not Nesterov) or Adam (L2 added to the gradient).

    Args:
        parameters: the tensors to update in place (their ``.grad`` is read by :meth:`step`).
        kind: "sgd" or "adam".
        learning_rate: step size.
        momentum: SGD's momentum (0 = plain SGD; Adam ignores it).
        weight_decay: L2 coefficient added to each gradient (``grad + weight_decay · param``).
        betas, eps: Adam's moving-average rates and denominator guard (torch's defaults).
        fused: one fused kernel per step for all tensors instead of a few ops per tensor (faster
            from ~10k weights on, slower for tiny networks; the caller decides).
    """

    def __init__(
        self,
        parameters: Iterable[torch.Tensor],
        kind: str,
        learning_rate: float,
        *,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool = False,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"optimizer kind {kind!r}: expected one of {', '.join(KINDS)}")
        self.parameters = list(parameters)
        self.kind = kind
        self.hyper = {
            "lr": float(learning_rate),
            "momentum": float(momentum),
            "weight_decay": float(weight_decay),
            "betas": (float(betas[0]), float(betas[1])),
            "eps": float(eps),
            "fused": bool(fused),
        }
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.parameters]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """One group, as torch.optim's: ``{"params": [the tensors], "lr": ..., ...}``."""
        return [{"params": self.parameters, **self.hyper}]

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (``set_to_none``, as torch's default)."""
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (the others are left alone)."""
        indices = [i for i, parameter in enumerate(self.parameters) if parameter.grad is not None]
        if not indices:
            return
        if self.kind == "sgd":
            self._sgd(indices)
        else:
            self._adam(indices)

    def _sgd(self, indices: list[int]) -> None:
        hyper = self.hyper
        lr, momentum, weight_decay = hyper["lr"], hyper["momentum"], hyper["weight_decay"]
        params = [self.parameters[i] for i in indices]
        grads = [parameter.grad for parameter in params]
        if hyper["fused"]:
            first_step = momentum != 0 and all(
                "momentum_buffer" not in self.state[i] for i in indices
            )
            if first_step:
                for i, grad in zip(indices, grads, strict=True):
                    self.state[i]["momentum_buffer"] = torch.empty_like(grad)
            torch._fused_sgd_(
                params,
                grads,
                [] if momentum == 0 else [self.state[i]["momentum_buffer"] for i in indices],
                weight_decay=weight_decay,
                momentum=momentum,
                lr=lr,
                dampening=0.0,
                nesterov=False,
                maximize=False,
                is_first_step=first_step,
            )
            return
        for i, parameter, grad in zip(indices, params, grads, strict=True):
            if weight_decay != 0:
                grad = grad.add(parameter, alpha=weight_decay)
            if momentum != 0:
                buffer = self.state[i].get("momentum_buffer")
                if buffer is None:
                    buffer = self.state[i]["momentum_buffer"] = grad.detach().clone()
                else:
                    buffer.mul_(momentum).add_(grad)
                grad = buffer
            parameter.add_(grad, alpha=-lr)

    def _adam(self, indices: list[int]) -> None:
        hyper = self.hyper
        lr, weight_decay, eps = hyper["lr"], hyper["weight_decay"], hyper["eps"]
        beta1, beta2 = hyper["betas"]
        for i in indices:
            if not self.state[i]:
                parameter = self.parameters[i]
                self.state[i] = {
                    "step": torch.zeros(
                        (), dtype=torch.float32, device=parameter.device if hyper["fused"] else None
                    ),
                    "exp_avg": torch.zeros_like(parameter, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(parameter, memory_format=torch.preserve_format),
                }
        states = [self.state[i] for i in indices]
        params = [self.parameters[i] for i in indices]
        grads = [parameter.grad for parameter in params]
        if hyper["fused"]:
            steps = [state["step"] for state in states]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params,
                grads,
                [state["exp_avg"] for state in states],
                [state["exp_avg_sq"] for state in states],
                [],
                steps,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=weight_decay,
                eps=eps,
                amsgrad=False,
                maximize=False,
            )
            return
        for parameter, grad, state in zip(params, grads, states, strict=True):
            state["step"] += 1
            if weight_decay != 0:
                grad = grad.add(parameter, alpha=weight_decay)
            state["exp_avg"].lerp_(grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step = state["step"].item()  # torch's eager formula: the step count as a number
            step_size = lr / (1 - beta1**step)
            denominator = (state["exp_avg_sq"].sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
            parameter.addcdiv_(state["exp_avg"], denominator, value=-step_size)

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {name: tensor}}, "param_groups": [options]}`` as torch.optim's,
        with the same option keys (the ones this class does not vary at their fixed values), so
        checkpoints written by either pass the same checks and load in the other."""
        hyper = self.hyper
        fixed = {"maximize": False, "foreach": None, "differentiable": False}
        if self.kind == "sgd":
            options = {"momentum": hyper["momentum"], "dampening": 0, "nesterov": False}
        else:
            options = {
                "betas": hyper["betas"],
                "eps": hyper["eps"],
                "amsgrad": False,
                "capturable": False,
                "decoupled_weight_decay": False,
            }
        group = {
            "lr": hyper["lr"],
            "weight_decay": hyper["weight_decay"],
            **options,
            **fixed,
            "fused": hyper["fused"],
            "params": list(range(len(self.parameters))),
        }
        return {
            "state": {
                i: {name: tensor.clone() for name, tensor in state.items()}
                for i, state in enumerate(self.state)
                if state
            },
            "param_groups": [group],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` (or the torch.optim optimizer of the same kind) saved.

        Raises:
            ValueError: the saved state is for another number of tensors or holds other entries.
        """
        groups = state_dict["param_groups"]
        saved = sum(len(group["params"]) for group in groups)
        if len(groups) != 1 or saved != len(self.parameters):
            raise ValueError(
                f"optimizer state for {saved} tensors in {len(groups)} group(s); this optimizer "
                f"has {len(self.parameters)} tensors in 1 group"
            )
        names = {"sgd": {"momentum_buffer"}, "adam": {"step", "exp_avg", "exp_avg_sq"}}[self.kind]
        restored: list[dict[str, torch.Tensor]] = [{} for _ in self.parameters]
        for key, entries in state_dict["state"].items():
            index = groups[0]["params"].index(key)
            parameter = self.parameters[index]
            if set(entries) != names:
                raise ValueError(
                    f"optimizer state of tensor {index} holds {sorted(entries)}; a {self.kind} "
                    f"state holds {sorted(names)}"
                )
            for name, tensor in entries.items():
                if name == "step":
                    device = parameter.device if self.hyper["fused"] else None
                    restored[index][name] = tensor.to(device=device, dtype=torch.float32).clone()
                else:
                    restored[index][name] = tensor.to(parameter).clone()
        self.state = restored
