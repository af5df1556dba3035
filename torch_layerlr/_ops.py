"""Thin Python wrappers over ``torch.ops.layerlr`` and their fake (meta) kernels for ``torch.compile``.

The engine runs one *recipe* per call: which pipeline stages are on and their constants
(``csrc/engine/recipe.h``). :class:`Recipe` holds them and expands into the op's keyword arguments.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["Recipe", "fused_step_", "fused_step_check", "tensor_norms", "dals_phase_", "dals_advance_"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The constant part of one fused step. See ``csrc/engine/recipe.h`` for each stage's meaning."""

    filter: str = "none"  # none | grokfast | blend
    decay: str = "coupled"  # coupled | decoupled | update
    moment: str = "sgd"  # sgd | adam
    trust: str = "none"  # none | lars | update
    filter_lambda: float = 0.0
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    bias_correction: bool = True
    trust_coefficient: float = 1.0
    trust_eps: float = 0.0
    ratio_min: float = 0.0
    ratio_max: float = math.inf
    norm_max: float = math.inf
    maximize: bool = False

    @property
    def state_names(self) -> tuple[str, ...]:
        """The per-parameter state buffers this recipe reads and writes, in the op's list order."""
        names = []
        if self.filter != "none":
            names.append("filter")
        if self.moment == "adam":
            names += ["exp_avg", "exp_avg_sq"]
        elif self.momentum != 0.0:
            names.append("momentum_buffer")
        return tuple(names)


def _fused_step_args(params, grads, states, steps, recipe, kwargs) -> tuple[tuple, dict]:
    """The op's positional and keyword arguments (NOTE: [schema conventions] in csrc/ops.cpp)."""
    args = (params, grads, states.get("filter", []), states.get("exp_avg", states.get("momentum_buffer", [])),
            states.get("exp_avg_sq", []), steps)
    return args, {**kwargs, **dataclasses.asdict(recipe)}


def fused_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: dict[str, Sequence[Tensor]],
    steps: Sequence[Tensor],
    recipe: Recipe,
    *,
    lr: Tensor,
    lr_mult: Tensor,
    weight_decay: Tensor,
    blend: Tensor,
    trust_mask: Tensor,
    filter_coef: Optional[Tensor] = None,
    grad_scale: Optional[Tensor] = None,
    found_inf: Optional[Tensor] = None,
    trust_ratios: Optional[Tensor] = None,
    sq_norms: Optional[Tensor] = None,
    trust_pass: str = "all",
    state_precision: str = "fp32",
    scales: Optional[dict[str, Sequence[Tensor]]] = None,
    seed: int = 0,
) -> None:
    """One fused step over a list of same-device, same-dtype tensors. Mutates params, states and steps.

    A trust-ratio step may be split in two calls around a reduction of the norms (sharded params; NOTE: [split
    trust step] in ``csrc/engine/step_args.h``): ``trust_pass="norms"`` advances filters and moments and writes
    each tensor's local squared norms [||p||^2, ||u||^2] into ``sq_norms`` (float64 ``[n, 2]``);
    ``trust_pass="update"`` computes the ratios from the ``sq_norms`` given, updates and advances the steps.

    Low-precision state (NOTE: [state precision] in ``csrc/engine/state_precision.h``): with
    ``state_precision="bf16"`` the states are bfloat16 tensors (stochastic rounding keyed by ``seed``, the step
    and the element); with ``"int8"`` they are uint8 codes and ``scales`` holds their float32 absmax lists by
    state name (``{"exp_avg": [...], ...}``, one ``[ceil(numel / 256)]`` tensor per state tensor).
    """
    args, kwargs = _fused_step_args(params, grads, states, steps, recipe, dict(
        lr=lr, lr_mult=lr_mult, weight_decay=weight_decay, blend=blend, trust_mask=trust_mask,
        filter_coef=filter_coef, grad_scale=grad_scale, found_inf=found_inf, trust_ratios=trust_ratios))
    _overload(torch.ops.layerlr.fused_step_, kwargs, sq_norms, trust_pass, state_precision, scales,
              seed)(*args, **kwargs)


def fused_step_check(params: Sequence[Tensor], grads: Sequence[Tensor], states: dict[str, Sequence[Tensor]],
                     steps: Sequence[Tensor], recipe: Recipe, *, sq_norms: Optional[Tensor] = None,
                     trust_pass: str = "all", state_precision: str = "fp32",
                     scales: Optional[dict[str, Sequence[Tensor]]] = None, seed: int = 0, **kwargs) -> None:
    """Every check :func:`fused_step_` makes, on metadata only, without running the step."""
    args, kwargs = _fused_step_args(params, grads, states, steps, recipe, kwargs)
    _overload(torch.ops.layerlr.fused_step_check, kwargs, sq_norms, trust_pass, state_precision, scales,
              seed)(*args, **kwargs)


def _overload(packet, kwargs: dict, sq_norms: Optional[Tensor], trust_pass: str, state_precision: str = "fp32",
              scales: Optional[dict[str, Sequence[Tensor]]] = None, seed: int = 0):
    """The op's default overload for a one-call step on full-precision state, its ``split`` overload for a split
    step, its ``state`` overload for low-precision state (``kwargs`` completed)."""
    if state_precision != "fp32" or scales:
        scales = scales or {}
        kwargs.update(sq_norms=sq_norms, trust_pass=trust_pass, state_precision=state_precision,
                      filter_scales=list(scales.get("filter", [])),
                      exp_avg_scales=list(scales.get("exp_avg", scales.get("momentum_buffer", []))),
                      exp_avg_sq_scales=list(scales.get("exp_avg_sq", [])), seed=seed)
        return packet.state
    if trust_pass == "all" and sq_norms is None:
        return packet.default
    kwargs.update(sq_norms=sq_norms, trust_pass=trust_pass)
    return packet.split


def tensor_norms(tensors: Sequence[Tensor]) -> Tensor:
    """Per-tensor L2 norms (deterministic), in float32 (float64 for float64 inputs)."""
    if len(tensors) == 0:  # nothing to dispatch on
        return torch.empty(0)
    return torch.ops.layerlr.tensor_norms(tensors)


def dals_phase_(
    detector: Tensor,
    filter_coef: Tensor,
    loss: Tensor,
    *,
    tau1: float,
    tau2: float,
    phase_alpha: Sequence[float],
    phase_gate: Sequence[float],
) -> None:
    """Advance the DALS loss-phase detector and write the phase's filter coefficients [alpha, gate]."""
    torch.ops.layerlr.dals_phase_(
        detector, filter_coef, loss, tau1=tau1, tau2=tau2, phase_alpha=list(phase_alpha), phase_gate=list(phase_gate)
    )


def dals_advance_(
    clock: Tensor,
    scale: Tensor,
    detector: Tensor,
    filter_coef: Tensor,
    loss: Optional[Tensor],
    found_inf: Optional[Tensor],
    *,
    variant: str,
    schedule: bool,
    total_steps: int,
    warmup_frac: float,
    restart_mult: int,
    tau1: float,
    tau2: float,
    phase_alpha: Sequence[float],
    phase_gate: Sequence[float],
) -> None:
    """DALS's global state for one step, where its tensors are (no host sync): unless ``found_inf`` is set,
    feed ``loss`` (if given) to the phase detector, advance the clock [step, cycle, cycle length] and write the
    step's schedule factor into ``scale``."""
    torch.ops.layerlr.dals_advance_(
        clock, scale, detector, filter_coef, loss, found_inf, variant=variant, schedule=schedule,
        total_steps=total_steps, warmup_frac=warmup_frac, restart_mult=restart_mult, tau1=tau1, tau2=tau2,
        phase_alpha=list(phase_alpha), phase_gate=list(phase_gate))


# Fake kernels: shapes only, for FakeTensor tracing (torch.compile, opcheck). The mutating ops return nothing.
# NOTE: [meta is all or nothing]
# A call with one meta tensor among real ones is dispatched here (Meta outranks CPU and CUDA). Doing nothing
# would be a silent no-op on the real tensors, so such a call is refused; a call on meta (or fake) tensors
# only is shape propagation, and the real kernels check everything else when they run.
def _check_not_mixed_meta(op: str, named: dict[str, object]) -> None:
    tensors = []
    for name, value in named.items():
        if isinstance(value, Tensor):
            tensors.append((name, value))
        elif isinstance(value, (list, tuple)):
            tensors += [(f"{name}[{i}]", t) for i, t in enumerate(value) if isinstance(t, Tensor)]
    metas = [name for name, t in tensors if t.is_meta]
    reals = [name for name, t in tensors if not t.is_meta]
    if metas and reals:
        raise ValueError(f"{op}: {metas[0]} is a meta tensor but {reals[0]} is not: meta tensors cannot be mixed "
                         f"with real ones (the call would update nothing)")


def _fused_step_fake(op: str):
    """The fake of ``op`` (fused_step_, fused_step_check and their .split overloads): checks, returns nothing."""
    def fake(params, grads, filters, exp_avgs, exp_avg_sqs, steps, **kwargs) -> None:
        _check_not_mixed_meta(op, dict(params=params, grads=grads, filters=filters, exp_avgs=exp_avgs,
                                       exp_avg_sqs=exp_avg_sqs, steps=steps, **kwargs))
    return fake


for _op in ("fused_step_", "fused_step_.split", "fused_step_.state", "fused_step_check", "fused_step_check.split",
            "fused_step_check.state"):
    torch.library.register_fake(f"layerlr::{_op}")(_fused_step_fake(_op.split(".")[0]))


@torch.library.register_fake("layerlr::tensor_norms")
def _tensor_norms_fake(tensors):
    _check_not_mixed_meta("tensor_norms", dict(tensors=tensors))
    dtype = tensors[0].dtype if tensors else torch.float32
    opmath = torch.float64 if dtype == torch.float64 else torch.float32
    device = tensors[0].device if tensors else torch.device("cpu")
    return torch.empty(len(tensors), dtype=opmath, device=device)


@torch.library.register_fake("layerlr::dals_phase_")
def _dals_phase_fake(detector, filter_coef, loss, **kwargs) -> None:
    _check_not_mixed_meta("dals_phase_", dict(detector=detector, filter_coef=filter_coef, loss=loss))
    return None


@torch.library.register_fake("layerlr::dals_advance_")
def _dals_advance_fake(clock, scale, detector, filter_coef, loss, found_inf, **kwargs) -> None:
    _check_not_mixed_meta("dals_advance_", dict(clock=clock, scale=scale, detector=detector, filter_coef=filter_coef,
                                                loss=loss, found_inf=found_inf))
    return None
