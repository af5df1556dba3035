"""The shared base of every optimizer here: per-group bookkeeping in Python, the step in the fused engine.

A subclass says which recipe a group runs (:meth:`FusedOptimizer._recipe`) and, per tensor, its weight
decay, depth blend and trust-ratio switch (:meth:`FusedOptimizer._tensor_settings`). The base builds the
engine's 1-D per-tensor inputs and calls it once per (recipe, device, dtype) across all param groups: never
once per tensor, and never once per group (models fine-tuned with layer-wise LR decay come with one group per
layer). Each group's ``lr`` reaches the engine as a per-tensor value when the groups of a call differ in it.

NOTE: [state is the truth]
The *plan* (calls, state lists, per-tensor inputs) is a cache. Before each step it is checked against what
``param_groups`` and ``opt.state`` hold now, by identity of every param and state tensor (O(number of tensors),
no tensor data read): a user or a library that replaces, deletes or clears state, or swaps a param, gets a step
on exactly the tensors ``state_dict()`` shows.

NOTE: [atomic steps]
A step first builds and checks the plan (new state is made on the side), then checks every engine call it will
make, and only then runs the kernels; new state joins ``opt.state`` once the engine has taken the step. A step
with one engine call is checked by the op itself before it touches memory; with several, each call is checked
first by ``layerlr::fused_step_check``. So an error leaves params, state and step counters exactly as they were.

NOTE: [complex params]
A complex parameter is stepped as its real view (``torch.view_as_real``), as ``torch.optim`` does: its state is
kept complex in ``opt.state`` and handed to the engine as real views, and the norms of a trust ratio are those
of the real view (equal to the complex tensor's norm).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Hashable, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from torch_layerlr._ops import Recipe, fused_step_, fused_step_check
from torch_layerlr.optim import _state_precision as sp
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
    """The group's lr as the engine's float64 ``lr`` tensor on ``device`` (no host sync on a GPU).

    NOTE: [lr under torch.compile] A Python-float lr that a scheduler changes becomes a symbolic float after
    one recompilation (as for torch's own optimizers); ``torch.as_tensor`` / ``torch.full`` of it would
    specialize it again and recompile every step, a product with a tensor keeps it symbolic.
    """
    if torch.compiler.is_compiling() and not isinstance(lr, Tensor):
        return torch.ones((), dtype=torch.float64, device=device) * lr
    if device.type == "cpu":
        return torch.as_tensor(lr, dtype=torch.float64, device=device)
    if isinstance(lr, Tensor):
        return lr.to(device=device, dtype=torch.float64, non_blocking=True)
    return torch.full((), float(lr), dtype=torch.float64, device=device)


_HAS_DISTRIBUTED = torch.distributed.is_available()


def _distributed(calls: list["_Call"]) -> Any:
    """:mod:`torch_layerlr.distributed.step` when a call of this step has DTensor (FSDP2) or FSDP1 params, else
    None: without torch.distributed initialised, one ``is_initialized()`` is all a step pays."""
    if not (_HAS_DISTRIBUTED and torch.distributed.is_initialized()):
        return None
    from torch_layerlr.distributed import step

    return step if step.is_distributed_step(calls) else None


class FusedOptimizer(Optimizer):
    """Base class: param groups, state, GradScaler and closures as in ``torch.optim``; the math in C++.

    ``state_precision`` (every optimizer's keyword, also a param-group key) sets how the per-parameter state
    (momentum buffer, ``exp_avg``, ``exp_avg_sq``, the Grokfast/DALS filter) is stored; step counters and params
    are never affected:

    * ``"fp32"`` (default): in the param's dtype, as ``torch.optim`` does.
    * ``"bf16"``: bfloat16, updated in float32 and written back with stochastic rounding (a counter-based
      generator keyed by the step and the element: reproducible, independent of threads). Half the bytes.
    * ``"int8"``: blockwise 8-bit quantization as in bitsandbytes' 8-bit optimizers (Dettmers et al., ICLR 2022):
      uint8 codes of the dynamic map (signed for first moments, buffers and filters, unsigned for second moments)
      and one float32 absmax per 256 elements, kept as ``<name>`` and ``<name>_absmax``. Tensors of fewer than
      4096 elements keep fp32 state. About a quarter of the bytes.

    Decoding, the update and re-encoding happen inside the fused kernels, in the same pass over memory (CPU
    only so far; trust-ratio norms are taken on the values before rounding). ``state_dict()`` holds the state as
    it is kept; ``load_state_dict`` converts a checkpoint of any precision to the optimizer's own (a checkpoint
    already in it loads bit for bit). Complex params take ``"fp32"`` only.
    """

    #: group keys that may hold one float per parameter of the group instead of one float, with their range
    per_param_keys: dict[str, tuple[float, float]] = {"lr_mult": (0.0, math.inf)}

    def __init__(self, params: Iterable, defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):  # torch.optim's error, before anything iterates the tensor's rows
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {torch.typename(params)}")
        defaults.setdefault("lr_mult", 1.0)
        defaults.setdefault("maximize", False)
        defaults["state_precision"] = sp.check_precision(defaults.get("state_precision", "fp32"))
        super().__init__(params, defaults)
        # GradScaler hands us grad_scale/found_inf instead of unscaling and checking on the host.
        self._step_supports_amp_scaling = True
        self._trust_ratios: list[tuple[list[Tensor], Tensor]] = []
        self._cached_plan: Optional[_Plan] = None

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

    def _filter_key(self, group: dict[str, Any]) -> Hashable:
        """Groups with equal keys share :meth:`_filter_coef` and so may share an engine call."""
        return group.get("grokfast_alpha")

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
            sp.check_precision(self.param_groups[-1]["state_precision"])
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
        for params, ratios in self._trust_ratios:
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

    # ---- the step: prepare (plan, check), then run and commit new state ------------------------------------
    def _prepare_step(self) -> tuple["_Plan", list["_Call"]]:
        """The plan and every engine call of this step, checked (NOTE: [atomic steps])."""
        plan = self._plan()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        calls = [self._call(bucket, grad_scale, found_inf) for bucket in plan.buckets]
        sharded = _distributed(calls)
        if sharded is not None:  # both calls of a split trust step are checked too (NOTE: [split trust step])
            sharded.check_calls(calls, type(self).__name__)
        elif len(calls) > 1:
            for call in calls:
                call.check()
        return plan, calls

    def _run_calls(self, plan: "_Plan", calls: list["_Call"]) -> None:
        """Runs the calls; new state joins ``opt.state`` once the engine has taken the step (a refused first call
        leaves no trace)."""
        ran = False
        try:
            sharded = _distributed(calls)
            if sharded is not None:  # on local shards; trust ratios of the whole tensors (one collective)
                sharded.run_calls(calls)
                ran = True
            else:
                for call in calls:
                    call.run()
                    ran = True
        finally:
            if ran:
                plan.commit(self.state)
                self._cached_plan = plan
        self._trust_ratios = [(c.owners, c.trust_ratios) for c in calls if c.trust_ratios is not None]

    def _call(self, bucket: "_Bucket", grad_scale: Optional[Tensor], found_inf: Optional[Tensor]) -> "_Call":
        device = bucket.device
        groups = self.param_groups
        grads = [p.grad for p in bucket.owners]
        if bucket.complex:
            grads = [torch.view_as_real(g) for g in grads]
        ratios = torch.ones(len(bucket.params), dtype=torch.float64, device=device) \
            if bucket.recipe.trust != "none" else None
        return _Call(bucket.owners, bucket.params, grads, bucket.states, bucket.steps, bucket.recipe, dict(
            lr=bucket.lr(groups, self._group_lr),
            filter_coef=bucket.filter_coef,
            grad_scale=None if grad_scale is None else grad_scale.to(device, non_blocking=True),
            found_inf=None if found_inf is None else found_inf.to(device, non_blocking=True),
            trust_ratios=ratios,
            **bucket.inputs,
            **({} if bucket.precision == "fp32" else dict(state_precision=bucket.precision, scales=bucket.scales)),
        ))

    # ---- checkpoints --------------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """``torch.optim``'s load, after every value of ``state_dict`` is checked (checkpoints are untrusted
        input): groups, settings, per-parameter state (keys, shapes, dtypes, step counts). An invalid checkpoint
        raises ``ValueError`` naming its key and leaves the optimizer as it was."""
        id_map, recipes = self._check_state_dict(state_dict)
        converted = self._converted_state(state_dict, id_map, recipes)
        precisions = [group["state_precision"] for group in self.param_groups]
        super().load_state_dict(state_dict)
        # NOTE: [state precision] in csrc/engine/state_precision.h: the optimizer keeps its own precision, the
        # checkpoint's state was converted to it (torch.optim's load has cast every buffer to its param's dtype).
        for group, precision in zip(self.param_groups, precisions):
            group["state_precision"] = precision
        for p, buffers in converted.items():
            state = self.state[p]
            for key in [k for k in state if k != "step"]:
                del state[key]
            state.update((k, v.to(p.device)) for k, v in buffers.items())
        self._cached_plan = None

    def _check_state_dict(self, state_dict: Any) -> tuple[dict[Any, Tensor], dict[Any, Recipe]]:
        id_map = check_state_dict_layout(state_dict, self.param_groups)
        recipes: dict[Any, Recipe] = {}
        for i, (saved, group) in enumerate(zip(state_dict["param_groups"], self.param_groups)):
            merged = {**group, **{k: v for k, v in saved.items() if k != "params"}}
            recipe = self._check_group_values(merged, f"state_dict['param_groups'][{i}]")
            recipes.update((key, recipe) for key in saved["params"])
        for key, state in state_dict["state"].items():
            # Loading casts each buffer to its param's dtype and device, so only shape and kind must match here.
            check_param_state(f"state_dict['state'][{key!r}]", state, id_map[key], recipes[key].state_names,
                              same_device=False)
        return id_map, recipes

    def _converted_state(self, state_dict: dict[str, Any], id_map: dict[Any, Tensor],
                         recipes: dict[Any, Recipe]) -> dict[Tensor, dict[str, Tensor]]:
        """The checkpoint's buffers in the form this optimizer keeps them (a form it has already is kept as it
        is, so a resume is bit-exact; another one goes through float32 values)."""
        precision_of = {id(p): group["state_precision"] for group in self.param_groups for p in group["params"]}
        out: dict[Tensor, dict[str, Tensor]] = {}
        for key, state in state_dict["state"].items():
            p = id_map[key]
            target = sp.tensor_precision(precision_of[id(p)], p)
            buffers: dict[str, Tensor] = {}
            for name in recipes[key].state_names if state else ():
                form = sp.form_of(name, state)
                if form == target == "fp32":
                    buffers[name] = state[name].to(p.dtype)
                elif form == target:
                    buffers[name] = state[name]
                    if form == "int8":
                        buffers[f"{name}_absmax"] = state[f"{name}_absmax"]
                else:
                    buffers.update(sp.from_float(name, sp.to_float(name, state, p.shape), p, target))
            out[p] = buffers
        return out

    def _check_group_values(self, group: dict[str, Any], where: str) -> Recipe:
        """The settings of a loaded group: numbers finite where they must be, per-parameter lists of the right
        length, and a recipe that can be built from them (returned)."""
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
            return self._recipe(group)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{where}: {exc}") from exc

    # ---- copies: deepcopy and pickle keep every setting (torch.optim's own keep only defaults/state/groups) ---
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key, value in self.__dict__.items():
            if key not in _TORCH_ATTRS and key not in self._transient_attrs:
                state[key] = value
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._cached_plan = None
        self._trust_ratios = []

    #: attributes that are caches or belong to one step (GradScaler's), never copied
    _transient_attrs = frozenset({"_cached_plan", "_trust_ratios", "grad_scale", "found_inf"})

    # ---- the plan: everything about a step that does not change from step to step -------------------------
    def _plan(self) -> "_Plan":
        """The cached plan if it still describes the groups and their state, else a new one (uncommitted)."""
        key = tuple((tuple(p.grad is not None for p in group["params"]),
                     tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in group.items()
                           if k not in ("params", "lr", "initial_lr")))
                    for group in self.param_groups)
        plan = self._cached_plan
        if plan is not None and plan.key == key and plan.matches(self.param_groups, self.state):
            return plan
        return self._make_plan(key)

    def _make_plan(self, key: tuple) -> "_Plan":
        builders: dict[tuple, _BucketBuilder] = {}
        for group_index, group in enumerate(self.param_groups):
            recipe = self._recipe(group)
            filter_key = self._filter_key(group)
            for i, p in enumerate(group["params"]):
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients "
                                       f"(param {i} of group {group_index})")
                if g.is_complex() != p.is_complex():
                    raise RuntimeError(f"param {i} of group {group_index} has dtype {p.dtype} but its grad has "
                                       f"{g.dtype}")
                precision = sp.tensor_precision(group["state_precision"], p)
                if precision != "fp32" and p.is_complex():
                    raise ValueError(f"state_precision={precision!r} does not support complex params (param {i} of "
                                     f"group {group_index} is {p.dtype})")
                if precision != "fp32" and hasattr(p, "to_local"):  # a DTensor: its state would be unsharded
                    raise ValueError(f"state_precision={precision!r} does not support sharded (DTensor) params yet "
                                     f"(param {i} of group {group_index})")
                bucket_key = (recipe, p.device, p.dtype, filter_key, precision)
                builder = builders.get(bucket_key)
                if builder is None:
                    # the filter's [alpha, gate] is made once here: a fresh host copy every step could not be
                    # captured in a CUDA graph
                    builder = builders[bucket_key] = _BucketBuilder(recipe, p.device, p.is_complex(),
                                                                    self._filter_coef(group, p.device), precision)
                self._add_to_bucket(builder, group_index, group, i, p)
        return _Plan(key, [b.build() for b in builders.values()],
                     [list(group["params"]) for group in self.param_groups])

    def _add_to_bucket(self, builder: "_BucketBuilder", group_index: int, group: dict[str, Any], i: int,
                       p: Tensor) -> None:
        current = self.state.get(p, {})
        entry = _StateEntry(p, current if p in self.state else None, {}, {})
        names = builder.recipe.state_names
        if not torch.compiler.is_compiling():  # a compiled step leaves these checks to the engine's
            self._check_state(f"state of param {i} of group {group_index}", current, p, names, builder.precision)
        step = current.get("step", 0.0)
        if isinstance(step, Tensor) and step.is_floating_point() and step.device == p.device:
            entry.used["step"] = step
        elif isinstance(step, Tensor):  # e.g. a step loaded as an integer tensor, or on another device
            entry.used["step"] = entry.new["step"] = step.detach().to(p.device, torch.float32).reshape(()).clone()
        else:
            entry.used["step"] = entry.new["step"] = _new_step(float(step), p.device)
        for name in names:
            if name in current:
                entry.used[name] = current[name]
                if builder.precision == "int8":
                    entry.used[f"{name}_absmax"] = current[f"{name}_absmax"]
            else:
                made = sp.new_state(name, p, builder.precision)
                entry.used.update(made)
                entry.new.update(made)
        w, b, t = self._tensor_settings(group, i, p)
        builder.add(group_index, entry, self._per_param(group, "lr_mult", i), w, b, 1.0 if t else 0.0)

    @staticmethod
    def _check_state(where: str, state: dict[str, Any], p: Tensor, names: tuple[str, ...],
                     precision: str = "fp32") -> None:
        """What a user may have put into ``opt.state[p]``: a valid step and buffers the engine can use as they
        are, in the form of ``precision``. A step on a device is checked by the engine: reading it here would wait
        for the device."""
        step = state.get("step", 0.0)
        if not (isinstance(step, Tensor) and step.device.type != "cpu"):
            check_step_value(f"{where}: 'step'", step)
        for name in names:
            if name in state:
                check_state_tensor(f"{where}: {name!r}", state[name], p, precision=precision)
                if precision == "int8":
                    check_state_tensor(f"{where}: {name + '_absmax'!r}", state.get(f"{name}_absmax"), p,
                                       precision="absmax")


# The attributes every torch.optim.Optimizer has: its own __getstate__ keeps what it needs of them.
_TORCH_ATTRS = frozenset(Optimizer([torch.nn.Parameter(torch.zeros(1))], {}).__dict__)


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


@dataclasses.dataclass
class _StateEntry:
    """One param's state as the plan uses it: the dict it lives in (None: not made yet), the tensors the plan
    runs on (``used``, by name, as kept in ``opt.state``), and those it made and adds on commit (``new``)."""

    param: Tensor
    state: Optional[dict[str, Any]]
    used: dict[str, Tensor]
    new: dict[str, Tensor]


class _BucketBuilder:
    """Collects the tensors of one engine call, group by group, in the groups' order."""

    def __init__(self, recipe: Recipe, device: torch.device, is_complex: bool,
                 filter_coef: Optional[Tensor], precision: str) -> None:
        self.recipe, self.device, self.complex, self.filter_coef = recipe, device, is_complex, filter_coef
        self.precision = precision
        self.entries: list[_StateEntry] = []
        self.group_of: list[int] = []
        self.values: dict[str, list[float]] = {"lr_mult": [], "weight_decay": [], "blend": [], "trust_mask": []}

    def add(self, group_index: int, entry: _StateEntry, lr_mult: float, wd: float, blend: float,
            trust: float) -> None:
        self.entries.append(entry)
        self.group_of.append(group_index)
        for key, value in zip(self.values, (lr_mult, wd, blend, trust)):
            self.values[key].append(value)

    def build(self) -> "_Bucket":
        owners = [e.param for e in self.entries]
        group_ids = list(dict.fromkeys(self.group_of))
        counts = [self.group_of.count(g) for g in group_ids]
        inputs = {k: to_device(torch.tensor(v, dtype=torch.float64), self.device) for k, v in self.values.items()}
        return _Bucket(
            recipe=self.recipe, device=self.device, complex=self.complex, owners=owners,
            params=[_real(p) for p in owners],
            states={name: [_real(e.used[name]) for e in self.entries] for name in self.recipe.state_names},
            precision=self.precision,
            scales={name: [e.used[f"{name}_absmax"] for e in self.entries] for name in self.recipe.state_names}
            if self.precision == "int8" else {},
            steps=[e.used["step"] for e in self.entries], inputs=inputs, entries=self.entries,
            group_ids=group_ids, counts=to_device(torch.tensor(counts), self.device), filter_coef=self.filter_coef)


@dataclasses.dataclass
class _Bucket:
    """One engine call: the tensors of one (recipe, device, dtype) across groups, their state and inputs."""

    recipe: Recipe
    device: torch.device
    complex: bool
    owners: list[Tensor]           # the params as the groups hold them
    params: list[Tensor]           # what the engine gets: the params, real views of complex ones
    states: dict[str, list[Tensor]]
    steps: list[Tensor]
    inputs: dict[str, Tensor]      # lr_mult, weight_decay, blend, trust_mask
    entries: list[_StateEntry]
    group_ids: list[int]           # the groups of the call, in order, and how many tensors each has
    counts: Tensor
    filter_coef: Optional[Tensor]  # [alpha, gate] of the filter stage, if the recipe has one
    precision: str = "fp32"        # the form of the call's state (_state_precision.py)
    scales: dict[str, list[Tensor]] = dataclasses.field(default_factory=dict)  # int8: the absmax lists by name

    def lr(self, groups: list[dict[str, Any]], group_lr: Callable[[dict[str, Any]], Any]) -> Tensor:
        """The engine's lr: one value, or one per tensor when the call's groups differ in lr."""
        lrs = [group_lr(groups[g]) for g in self.group_ids]
        floats = not any(isinstance(x, Tensor) for x in lrs)
        if len(lrs) == 1 or (floats and len(set(lrs)) == 1):
            return _lr_tensor(lrs[0], self.device)
        if floats and not torch.compiler.is_compiling():  # one small copy to the device, not one per group
            values = to_device(torch.tensor(lrs, dtype=torch.float64), self.device)
        else:
            values = torch.stack([_lr_tensor(x, self.device) for x in lrs])
        return values.repeat_interleave(self.counts, output_size=len(self.params))


@dataclasses.dataclass
class _Plan:
    key: tuple
    buckets: list[_Bucket]
    params: list[list[Tensor]]     # every group's params when the plan was made

    def matches(self, groups: list[dict[str, Any]], state: dict[Tensor, dict[str, Any]]) -> bool:
        """Whether the groups still have these params and ``state`` still holds the tensors the plan runs on."""
        if len(groups) != len(self.params):
            return False
        for group, params in zip(groups, self.params):
            now = group["params"]
            if len(now) != len(params) or any(a is not b for a, b in zip(now, params)):
                return False
        for bucket in self.buckets:
            for entry in bucket.entries:
                current = state.get(entry.param)
                if current is None or current is not entry.state:
                    return False
                for name, tensor in entry.used.items():
                    if current.get(name) is not tensor:
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

    owners: list[Tensor]           # the params as the groups hold them (trust_ratios() keys)
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
