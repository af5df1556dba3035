"""The shared base of every optimizer here: per-group bookkeeping in Python, the step in the fused engine.

A subclass says which recipe a group runs (:meth:`FusedOptimizer._recipe`) and, per tensor, its weight
decay, depth blend and trust-ratio switch (:meth:`FusedOptimizer._tensor_settings`). The base builds the
engine's 1-D per-tensor inputs and calls it once per (device, dtype) bucket of each group: never once per
tensor, and never one param group per layer.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Any, Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from torch_layerlr._ops import Recipe, fused_step_

__all__ = ["FusedOptimizer", "check_float", "check_betas", "to_device"]


def check_float(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` naming ``name`` if it is not in the range."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a one-element tensor, got shape {tuple(value.shape)}")
        number = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"{name} must be a number, got {value!r}")
    below = number <= low if low_open else number < low
    above = number >= high if high_open else number > high
    if math.isnan(number) or below or above:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"Invalid {name}: {value!r} (expected a value in {lo}{low}, {high}{hi})")
    return number


def check_betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return (check_float("betas[0]", betas[0], low=0.0, high=1.0, high_open=True),
            check_float("betas[1]", betas[1], low=0.0, high=1.0, high_open=True))


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """A small CPU tensor (the engine's inputs) on ``device``, without waiting for the device.

    A blocking host-to-device copy synchronizes with the stream (and raises under
    ``torch.cuda.set_sync_debug_mode("error")``). These sources are fresh pageable tensors, which
    ``cudaMemcpyAsync`` stages before it returns, so the non-blocking copy is safe. On the CPU, ``x`` itself.
    """
    return x if device.type == "cpu" else x.to(device, non_blocking=True)


def _new_step(value: float, device: torch.device) -> Tensor:
    """A float32 step counter holding ``value``: on the CPU for CPU params (as in ``torch.optim``), on the
    param's device otherwise, where the fused CUDA kernels read and advance it in place."""
    if device.type == "cpu":
        return torch.tensor(value, dtype=torch.float32)
    return torch.full((), value, dtype=torch.float32, device=device)


def _lr_tensor(lr: Any, device: torch.device) -> Tensor:
    """The group's lr as the engine's float64 ``lr`` tensor on ``device`` (no host sync on a GPU)."""
    if device.type == "cpu":
        return torch.as_tensor(lr, dtype=torch.float64, device=device)
    if isinstance(lr, Tensor):
        return lr.to(device=device, dtype=torch.float64, non_blocking=True)
    return torch.full((), float(lr), dtype=torch.float64, device=device)


class FusedOptimizer(Optimizer):
    """Base class: param groups, state, GradScaler and closures as in ``torch.optim``; the math in C++."""

    #: group keys that may hold one float per parameter of the group instead of one float, with their range
    per_param_keys: dict[str, tuple[float, float]] = {"lr_mult": (0.0, math.inf)}

    def __init__(self, params: Iterable, defaults: dict[str, Any]) -> None:
        defaults.setdefault("lr_mult", 1.0)
        defaults.setdefault("maximize", False)
        super().__init__(params, defaults)
        # GradScaler hands us grad_scale/found_inf instead of unscaling and checking on the host.
        self._step_supports_amp_scaling = True
        self._trust_ratios: dict[int, tuple[list[Tensor], Tensor]] = {}
        self._plans: dict[int, _Plan] = {}

    # ---- what subclasses provide -------------------------------------------------------------------------
    def _recipe(self, group: dict[str, Any]) -> Recipe:
        raise NotImplementedError

    def _tensor_settings(self, group: dict[str, Any], index: int, param: Tensor) -> tuple[float, float, bool]:
        """(weight decay, depth blend, trust ratio on) of the ``index``-th parameter of ``group``."""
        return float(group.get("weight_decay", 0.0)), 0.0, True

    def _group_lr(self, group: dict[str, Any]) -> Any:
        return group["lr"]

    def _filter_coef(self, group: dict[str, Any], device: torch.device) -> Optional[Tensor]:
        return None

    # ---- torch.optim plumbing ----------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            self._check_per_param_keys(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()  # a rejected group must not stay behind
            raise

    def _check_per_param_keys(self, group: dict[str, Any]) -> None:
        n = len(group["params"])
        for key, (low, high) in self.per_param_keys.items():
            value = group.get(key)
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                if len(value) != n:
                    raise ValueError(f"{key} has {len(value)} entries but its param group has {n} parameters")
                group[key] = [check_float(f"{key}[{i}]", v, low=low, high=high) for i, v in enumerate(value)]
            else:
                check_float(key, value, low=low, high=high)

    @staticmethod
    def _per_param(group: dict[str, Any], key: str, index: int) -> float:
        value = group[key]
        return float(value[index]) if isinstance(value, list) else float(value)

    def trust_ratios(self) -> dict[Tensor, float]:
        """The per-tensor trust ratios of the last step (recipes with a trust ratio), keyed by parameter."""
        out: dict[Tensor, float] = {}
        for params, ratios in self._trust_ratios.values():
            out.update(zip(params, ratios.tolist()))
        return out

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Perform one optimization step. ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._step_groups()
        return loss

    def _step_groups(self) -> None:
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        self._trust_ratios = {}
        for group_index, group in enumerate(self.param_groups):
            plan = self._plan(group_index, group)
            lr = self._group_lr(group)
            for bucket in plan.buckets:
                self._run_bucket(group, plan.recipe, bucket, lr, grad_scale, found_inf)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._plans.clear()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._plans = {}
        self._trust_ratios = {}

    # ---- the plan: everything about a group's step that does not change from step to step ----------------
    def _plan(self, group_index: int, group: dict[str, Any]) -> "_Plan":
        """The group's cached plan, rebuilt when which params have grads, or any group setting, changes."""
        has_grad = tuple(p.grad is not None for p in group["params"])
        settings = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in group.items()
                         if k not in ("params", "lr", "initial_lr"))
        key = (id(self.state), has_grad, settings)
        plan = self._plans.get(group_index)
        if plan is None or plan.key != key:
            plan = self._plans[group_index] = self._make_plan(group_index, group, key)
        return plan

    def _make_plan(self, group_index: int, group: dict[str, Any], key: tuple) -> "_Plan":
        recipe = self._recipe(group)
        by_device: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
        for i, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients "
                                   f"(param {i} of group {group_index})")
            if p.is_complex() or g.is_complex():
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters or gradients "
                                   f"(param {i} of group {group_index})")
            by_device[(p.device, p.dtype)].append(i)
        return _Plan(key, recipe, [self._make_bucket(group, recipe, indices, device)
                                   for (device, _), indices in by_device.items()])

    def _make_bucket(self, group: dict[str, Any], recipe: Recipe, indices: list[int],
                     device: torch.device) -> "_Bucket":
        params = [group["params"][i] for i in indices]
        states: dict[str, list[Tensor]] = {name: [] for name in recipe.state_names}
        steps, lr_mult, wd, blend, trust = [], [], [], [], []
        for i, p in zip(indices, params):
            state = self.state[p]
            step = state.get("step", 0.0)
            if not (isinstance(step, Tensor) and step.is_floating_point()):
                state["step"] = _new_step(float(step), p.device)
            elif step.device != p.device:
                # e.g. a state_dict from another device: torch.optim's load_state_dict leaves "step" where it was
                state["step"] = step.to(p.device)
            for name in recipe.state_names:
                if name not in state:
                    state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
                states[name].append(state[name])
            steps.append(state["step"])
            lr_mult.append(self._per_param(group, "lr_mult", i))
            w, b, t = self._tensor_settings(group, i, p)
            wd.append(w)
            blend.append(b)
            trust.append(1.0 if t else 0.0)

        def per_tensor(values: list[float]) -> Tensor:
            return to_device(torch.tensor(values, dtype=torch.float64), device)

        inputs = dict(lr_mult=per_tensor(lr_mult), weight_decay=per_tensor(wd), blend=per_tensor(blend),
                      trust_mask=per_tensor(trust))
        return _Bucket(params, states, steps, inputs, device)

    def _run_bucket(self, group: dict[str, Any], recipe: Recipe, bucket: "_Bucket", lr: Any,
                    grad_scale: Optional[Tensor], found_inf: Optional[Tensor]) -> None:
        device = bucket.device
        ratios = torch.ones(len(bucket.params), dtype=torch.float64, device=device) if recipe.trust != "none" else None
        fused_step_(
            bucket.params,
            [p.grad for p in bucket.params],
            bucket.states,
            bucket.steps,
            recipe,
            lr=_lr_tensor(lr, device),
            filter_coef=self._filter_coef(group, device),
            grad_scale=None if grad_scale is None else grad_scale.to(device, non_blocking=True),
            found_inf=None if found_inf is None else found_inf.to(device, non_blocking=True),
            trust_ratios=ratios,
            **bucket.inputs,
        )
        if ratios is not None:
            self._trust_ratios[len(self._trust_ratios)] = (bucket.params, ratios)


@dataclasses.dataclass
class _Bucket:
    """One engine call: a group's tensors on one (device, dtype), their state and per-tensor inputs."""

    params: list[Tensor]
    states: dict[str, list[Tensor]]
    steps: list[Tensor]
    inputs: dict[str, Tensor]  # lr_mult, weight_decay, blend, trust_mask
    device: torch.device


@dataclasses.dataclass
class _Plan:
    key: tuple
    recipe: Recipe
    buckets: list[_Bucket]
