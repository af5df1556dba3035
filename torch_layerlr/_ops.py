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

__all__ = ["Recipe", "fused_step_", "tensor_norms", "dals_phase_"]


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
) -> None:
    """One fused step over a list of same-device, same-dtype tensors. Mutates params, states and steps."""
    fields = dataclasses.asdict(recipe)
    torch.ops.layerlr.fused_step_(
        params,
        grads,
        states.get("filter", []),
        states.get("exp_avg", states.get("momentum_buffer", [])),
        states.get("exp_avg_sq", []),
        steps,
        lr=lr,
        lr_mult=lr_mult,
        weight_decay=weight_decay,
        blend=blend,
        trust_mask=trust_mask,
        filter_coef=filter_coef,
        grad_scale=grad_scale,
        found_inf=found_inf,
        trust_ratios=trust_ratios,
        **fields,
    )


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


# Fake kernels: shapes only, for FakeTensor tracing (torch.compile, opcheck). The mutating ops return nothing.
@torch.library.register_fake("layerlr::fused_step_")
def _fused_step_fake(params, grads, filters, exp_avgs, exp_avg_sqs, steps, **kwargs) -> None:
    return None


@torch.library.register_fake("layerlr::tensor_norms")
def _tensor_norms_fake(tensors):
    dtype = tensors[0].dtype if tensors else torch.float32
    opmath = torch.float64 if dtype == torch.float64 else torch.float32
    device = tensors[0].device if tensors else torch.device("cpu")
    return torch.empty(len(tensors), dtype=opmath, device=device)


@torch.library.register_fake("layerlr::dals_phase_")
def _dals_phase_fake(detector, filter_coef, loss, **kwargs) -> None:
    return None
