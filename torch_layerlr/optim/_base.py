"""The shared base of every optimizer here: per-group bookkeeping in Python, the step in the fused engine.

A subclass says which recipe a group runs (:meth:`FusedOptimizer._recipe`) and, per tensor, its weight
decay, depth blend and trust-ratio switch (:meth:`FusedOptimizer._tensor_settings`). The base builds the
engine's 1-D per-tensor inputs and calls it once per (device, dtype) bucket of each group: never once per
tensor, and never one param group per layer.

NOTE: [state is the truth]
The per-group *plan* (buckets, state lists, per-tensor inputs) is a cache. Before each step it is checked
against what ``param_groups`` and ``opt.state`` hold now, by identity of every param and state tensor (O(number
of tensors), no tensor data read): a user or a library that replaces, deletes or clears state, or swaps a
param, gets a step on exactly the tensors ``state_dict()`` shows.

NOTE: [atomic steps]
A step first builds and checks every group's plan (new state is made on the side), then checks every engine
call it will make, and only then commits new state and runs the kernels. A step with one engine call is
checked by the op itself before it touches memory; with several, each call is checked first by
``layerlr::fused_step_check``. So an error leaves params, state and step counters exactly as they were.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Any, Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from torch_layerlr._ops import Recipe, fused_step_, fused_step_check
from torch_layerlr.optim._checks import (check_betas, check_float, check_param_state, check_state_dict_layout,
                                         check_state_tensor, check_step_value, check_unique_params)

__all__ = ["FusedOptimizer", "check_float", "check_betas", "to_device"]


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
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        params = param_group.get("params")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                            "of tensors in sets will change between runs. Please use a list instead.")
        else:
            params = list(params) if params is not None else []
        where = f"param group {len(self.param_groups)}"
        check_unique_params(params, where)
        super().add_param_group({**param_group, "params": params})
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
        self._run_calls(*self._prepare_step())
        return loss

    # ---- the step: prepare (plan, check, commit new state), then run ----------------------------------------
    def _prepare_step(self) -> tuple[list["_Plan"], list["_Call"]]:
        """Every group's plan and every engine call of this step, checked (NOTE: [atomic steps])."""
        plans = [self._plan(i, group) for i, group in enumerate(self.param_groups)]
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        calls = [self._call(group, plan.recipe, bucket, grad_scale, found_inf)
                 for group, plan in zip(self.param_groups, plans) for bucket in plan.buckets]
        if len(calls) > 1:
            for call in calls:
                call.check()
        return plans, calls

    def _run_calls(self, plans: list["_Plan"], calls: list["_Call"]) -> None:
        """Runs the calls; new state joins ``opt.state`` once the engine has taken the step (a refused first call
        leaves no trace)."""
        self._trust_ratios = {}
        ran = False
        try:
            for call in calls:
                call.run()
                ran = True
                if call.trust_ratios is not None:
                    self._trust_ratios[len(self._trust_ratios)] = (call.params, call.trust_ratios)
        finally:
            if ran:
                for group_index, plan in enumerate(plans):
                    plan.commit(self.state)
                    self._plans[group_index] = plan

    def _call(self, group: dict[str, Any], recipe: Recipe, bucket: "_Bucket", grad_scale: Optional[Tensor],
              found_inf: Optional[Tensor]) -> "_Call":
        device = bucket.device
        grads = [p.grad for p in bucket.params]
        ratios = torch.ones(len(bucket.params), dtype=torch.float64, device=device) if recipe.trust != "none" else None
        return _Call(bucket.params, grads, bucket.states, bucket.steps, recipe, dict(
            lr=_lr_tensor(self._group_lr(group), device),
            filter_coef=self._filter_coef(group, device),
            grad_scale=None if grad_scale is None else grad_scale.to(device, non_blocking=True),
            found_inf=None if found_inf is None else found_inf.to(device, non_blocking=True),
            trust_ratios=ratios,
            **bucket.inputs,
        ))

    # ---- checkpoints --------------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """``torch.optim``'s load, after every value of ``state_dict`` is checked (checkpoints are untrusted
        input): groups, settings, per-parameter state (keys, shapes, dtypes, step counts). An invalid checkpoint
        raises ``ValueError`` naming its key and leaves the optimizer as it was."""
        self._check_state_dict(state_dict)
        super().load_state_dict(state_dict)
        self._plans.clear()

    def _check_state_dict(self, state_dict: Any) -> None:
        id_map = check_state_dict_layout(state_dict, self.param_groups)
        recipes: dict[Any, Recipe] = {}
        for i, (saved, group) in enumerate(zip(state_dict["param_groups"], self.param_groups)):
            merged = {**group, **{k: v for k, v in saved.items() if k != "params"}}
            where = f"state_dict['param_groups'][{i}]"
            self._check_group_values(merged, where)
            for key in saved["params"]:
                recipes[key] = recipes.get(key) or self._recipe(merged)
        for key, state in state_dict["state"].items():
            # Loading casts each buffer to its param's dtype and device, so only shape and kind must match here.
            check_param_state(f"state_dict['state'][{key!r}]", state, id_map[key], recipes[key].state_names,
                              same_device=False)

    def _check_group_values(self, group: dict[str, Any], where: str) -> None:
        """The settings of a loaded group: numbers finite where they must be, per-parameter lists of the right
        length, and a recipe that can be built from them."""
        try:
            lr = group.get("lr")
            if lr is not None:
                check_float("lr", lr, low=0.0, high=math.inf, high_open=True)
            for key, value in group.items():
                if key in ("params", "lr") or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)) and math.isnan(value):
                    raise ValueError(f"{key} is nan")
            self._check_per_param_keys(dict(group))
            self._recipe(group)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{where}: {exc}") from exc

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._plans = {}
        self._trust_ratios = {}

    # ---- the plan: everything about a group's step that does not change from step to step ----------------
    def _plan(self, group_index: int, group: dict[str, Any]) -> "_Plan":
        """The group's cached plan if it still describes the group and its state, else a new one (uncommitted)."""
        params = group["params"]
        has_grad = tuple(p.grad is not None for p in params)
        settings = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in group.items()
                         if k not in ("params", "lr", "initial_lr"))
        key = (has_grad, settings)
        plan = self._plans.get(group_index)
        if plan is not None and plan.key == key and plan.matches(params, self.state):
            return plan
        return self._make_plan(group_index, group, key)

    def _make_plan(self, group_index: int, group: dict[str, Any], key: tuple) -> "_Plan":
        recipe = self._recipe(group)
        by_device: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
        for i, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            where = f"param {i} of group {group_index}"
            if g.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients ({where})")
            if p.is_complex() or g.is_complex():
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters or gradients "
                                   f"({where})")
            by_device[(p.device, p.dtype)].append(i)
        buckets = [self._make_bucket(group_index, group, recipe, indices, device)
                   for (device, _), indices in by_device.items()]
        return _Plan(key, recipe, buckets, list(group["params"]))

    def _make_bucket(self, group_index: int, group: dict[str, Any], recipe: Recipe, indices: list[int],
                     device: torch.device) -> "_Bucket":
        params = [group["params"][i] for i in indices]
        states: dict[str, list[Tensor]] = {name: [] for name in recipe.state_names}
        steps, lr_mult, wd, blend, trust, entries = [], [], [], [], [], []
        for i, p in zip(indices, params):
            where = f"state of param {i} of group {group_index}"
            current = self.state.get(p, {})
            entry = _StateEntry(p, current if p in self.state else None, {})
            step = current.get("step", 0.0)
            # A step on a device is checked for shape and dtype by the engine; reading its value here would
            # wait for the device (checkpoints are checked on load, where the value is read once).
            value = 0.0 if isinstance(step, Tensor) and step.device.type != "cpu" else \
                check_step_value(f"{where}: 'step'", step)
            if not (isinstance(step, Tensor) and step.is_floating_point() and step.device == p.device):
                entry.new["step"] = _new_step(value, p.device)  # e.g. a step loaded as an int, or elsewhere
            for name in recipe.state_names:
                if name in current:
                    check_state_tensor(f"{where}: {name!r}", current[name], p)
                else:
                    entry.new[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for name in recipe.state_names:
                states[name].append(entry.value(name))
            steps.append(entry.value("step"))
            entries.append(entry)
            lr_mult.append(self._per_param(group, "lr_mult", i))
            w, b, t = self._tensor_settings(group, i, p)
            wd.append(w)
            blend.append(b)
            trust.append(1.0 if t else 0.0)

        def per_tensor(values: list[float]) -> Tensor:
            return to_device(torch.tensor(values, dtype=torch.float64), device)

        inputs = dict(lr_mult=per_tensor(lr_mult), weight_decay=per_tensor(wd), blend=per_tensor(blend),
                      trust_mask=per_tensor(trust))
        return _Bucket(params, states, steps, inputs, device, entries)


@dataclasses.dataclass
class _StateEntry:
    """One param's state as a plan uses it: the dict it lives in (None: not made yet) and the entries the plan
    adds to it when it is committed."""

    param: Tensor
    state: Optional[dict[str, Any]]
    new: dict[str, Tensor]

    def value(self, name: str) -> Tensor:
        return self.new[name] if name in self.new else self.state[name]


@dataclasses.dataclass
class _Bucket:
    """One engine call: a group's tensors on one (device, dtype), their state and per-tensor inputs."""

    params: list[Tensor]
    states: dict[str, list[Tensor]]
    steps: list[Tensor]
    inputs: dict[str, Tensor]  # lr_mult, weight_decay, blend, trust_mask
    device: torch.device
    entries: list[_StateEntry]


@dataclasses.dataclass
class _Plan:
    key: tuple
    recipe: Recipe
    buckets: list[_Bucket]
    params: list[Tensor]

    def matches(self, params: list[Tensor], state: dict[Tensor, dict[str, Any]]) -> bool:
        """Whether the group still has these params and ``state`` still holds the tensors the plan runs on."""
        if len(params) != len(self.params) or any(a is not b for a, b in zip(params, self.params)):
            return False
        for bucket in self.buckets:
            for k, entry in enumerate(bucket.entries):
                current = state.get(entry.param)
                if current is None or current is not entry.state or current.get("step") is not bucket.steps[k]:
                    return False
                for name, tensors in bucket.states.items():
                    if current.get(name) is not tensors[k]:
                        return False
        return True

    def commit(self, state: dict[Tensor, dict[str, Any]]) -> None:
        """Put the state the plan made into ``state``; from here on the plan runs on what ``state`` holds."""
        for bucket in self.buckets:
            for entry in bucket.entries:
                if not entry.new:
                    continue
                if entry.state is None:
                    entry.state = state[entry.param]  # makes the (defaultdict) entry
                entry.state.update(entry.new)
                entry.new = {}


@dataclasses.dataclass
class _Call:
    """The arguments of one engine call of this step."""

    params: list[Tensor]
    grads: list[Tensor]
    states: dict[str, list[Tensor]]
    steps: list[Tensor]
    recipe: Recipe
    kwargs: dict[str, Any]

    @property
    def trust_ratios(self) -> Optional[Tensor]:
        return self.kwargs["trust_ratios"]

    def check(self) -> None:
        fused_step_check(self.params, self.grads, self.states, self.steps, self.recipe, **self.kwargs)

    def run(self) -> None:
        fused_step_(self.params, self.grads, self.states, self.steps, self.recipe, **self.kwargs)
