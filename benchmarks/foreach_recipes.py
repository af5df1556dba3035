"""The optimizers of torch_layerlr written with ``torch._foreach_*`` ops: the baseline of the step benchmark.

One function per algorithm. Each takes lists (params, grads, per-parameter state buffers) and does the step
with list-wide ``torch._foreach_*`` ops, the way ``torch.optim``'s ``foreach`` implementations are written:

* no per-tensor Python math loop; per-tensor numbers are either host constants passed as scalar lists
  (``lr_mult``, DALS's depth blend, LARS's per-tensor weight decay) or 1-D tensors (trust ratios computed
  from ``torch._foreach_norm`` results) that are ``unbind``-ed into lists of 0-d tensors and used as
  broadcasting tensor-list operands, so no ``.item()`` / host sync happens inside a step;
* the step count is the caller's (a host int: all tensors of the list step together); what changes from
  step to step (Adam's bias corrections, DALS's scheduled lr, Grokfast's first-step filter weight) is
  computed from it on the host in float64, as the fused engine does, and passed in as 0-d / 1-D tensors, so
  nothing syncs and the same function can be ``torch.compile``-d with ``fullgraph=True`` without recompiling
  every step;
* the recipes with a trust ratio return the per-tensor ratios (a 1-D float64 tensor), as the fused
  optimizers' ``trust_ratios()`` report them;
* state buffers are zero-initialised by :func:`init_state` (as in the fused optimizers), with the
  exceptions spelled out per function (SGD's and LARS's "buffer = update on the first step" is identical to
  a zero-initialised buffer when dampening is 0; Grokfast's "filter = first gradient" is a lerp with weight 1
  on step 1).

The math is the one in the shared spec (and in the fused engine): see each function. Per-step scalars are
computed in float64 and applied to float32 tensors (the engine does the same: double on the host, cast to
the math type), so results agree with the fused optimizers to float32 rounding.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "STATE_NAMES",
    "init_state",
    "dals_schedule",
    "dals_foreach",
    "lars_foreach",
    "lamb_foreach",
    "grokfast_adamw_foreach",
    "adam_bias",
    "sgd_foreach",
    "adamw_foreach",
]

F64 = torch.float64

#: per-parameter state lists of each recipe (all zero-initialised, same shape as the param). The step count
#: is the caller's (a host int): step-dependent scalars come in as float64 tensors (:func:`adam_bias`).
STATE_NAMES = {
    "DALS": ("filters", "bufs"),
    "LARS": ("bufs",),
    "LAMB": ("exp_avgs", "exp_avg_sqs"),
    "GrokfastAdamW": ("filters", "exp_avgs", "exp_avg_sqs"),
    "LayerwiseSGD": ("bufs",),
    "LayerwiseAdamW": ("exp_avgs", "exp_avg_sqs"),
}


def init_state(name: str, params: Sequence[Tensor]) -> dict:
    """Zero-initialised state of recipe ``name`` for ``params``."""
    return {key: [torch.zeros_like(p) for p in params] for key in STATE_NAMES[name]}


def dals_schedule(k: int, total_steps: int, warmup_frac: float) -> float:
    """Warmup + cosine factor s of DALS's global step k (1 on the first step). Host-side, from the spec."""
    t = k - 1
    warmup = math.floor(warmup_frac * total_steps)
    if t < warmup:
        return t / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (t - warmup) / (total_steps - warmup))))


def _stack64(tensors: Sequence[Tensor]) -> Tensor:
    return torch.stack(list(tensors)).to(F64)


def _per_tensor(values: list[float]) -> list:
    """Per-tensor host constants as a foreach operand: a plain scalar list in eager mode (the ScalarList
    overloads), a list of 0-d tensors under ``torch.compile``: inductor lowers the tensor-list overloads into
    its fused kernels but runs the ScalarList ones as eager fallbacks, which would split its fusion."""
    if torch.compiler.is_compiling():
        return list(torch.tensor(values, dtype=F64).unbind(0))
    return list(values)


def _lerp(start: list[Tensor], end: list[Tensor], weights: list[float]) -> list[Tensor]:
    """start + w_i (end - start) per tensor (a new list). One ``_foreach_lerp`` in eager mode; spelled out
    with tensor-list ops under ``torch.compile`` (see :func:`_per_tensor`)."""
    if torch.compiler.is_compiling():
        out = torch._foreach_sub(end, start)
        torch._foreach_mul_(out, _per_tensor(weights))
        torch._foreach_add_(out, start)
        return out
    return torch._foreach_lerp(start, end, weights)


# ------------------------------------------------------------------------------------------------------
# DALS
# ------------------------------------------------------------------------------------------------------
def dals_foreach(params: list[Tensor], grads: list[Tensor], filters: list[Tensor], bufs: list[Tensor],
                 eta: Tensor, *, alpha: float, blend: list[float], lr_mult: list[float], momentum: float,
                 weight_decay: float, trust_coefficient: float, ratio_min: float = 0.2, ratio_max: float = 5.0,
                 gate: bool = True) -> Tensor:
    """DALS step. ``eta`` (0-d) = group lr * schedule factor; ``blend[i]`` = 0.3 + 0.4*depth_ratio[i].

    f = a f + (1-a) g;  ghat = b g + (1-b) f + wd*theta   (gate False: ghat = g + wd*theta, f frozen)
    r = clamp(tc ||theta|| / ||ghat||, 0.2, 5)  (1 if either norm is 0);  m = mu m + ghat;
    theta -= eta * lr_mult * r * m
    """
    if gate:
        torch._foreach_lerp_(filters, grads, 1.0 - alpha)              # f <- a f + (1-a) g
        ghat = _lerp(filters, grads, blend)                            # b g + (1-b) f   (temporary list)
    else:
        ghat = torch._foreach_mul(grads, 1.0)
    torch._foreach_add_(ghat, params, alpha=weight_decay)              # coupled weight decay
    w = _stack64(torch._foreach_norm(params))
    u = _stack64(torch._foreach_norm(ghat))
    ratio = torch.where((w > 0) & (u > 0), (trust_coefficient * w / u).clamp(ratio_min, ratio_max), 1.0)
    torch._foreach_mul_(bufs, momentum)
    torch._foreach_add_(bufs, ghat)                                    # m <- mu m + ghat
    del ghat
    coef = (-eta) * torch.tensor(lr_mult, dtype=F64) * ratio
    torch._foreach_addcmul_(params, bufs, coef.unbind(0))              # theta += coef_i * m
    return ratio


# ------------------------------------------------------------------------------------------------------
# LARS
# ------------------------------------------------------------------------------------------------------
def lars_foreach(params: list[Tensor], grads: list[Tensor], bufs: list[Tensor], *, lr: float,
                 lr_mult: list[float], momentum: float, weight_decay: list[float], trust: list[bool],
                 trust_coefficient: float, eps: float = 0.0, nesterov: bool = False) -> Tensor:
    """LARS step (You et al. 2017, eq. 6 / Alg. 1). ``weight_decay``/``trust`` per tensor (excluded: 0/False).

    local = tc ||w|| / (||g|| + wd ||w|| + eps)  (1 if excluded or a norm is 0);  s = lr*lr_mult*local;
    v = mu v + s (g + wd w);  w -= v   (nesterov: w -= mu v + s (g + wd w))
    Zero-initialised v equals the engine's "v = first update" on step 1.
    """
    w = _stack64(torch._foreach_norm(params))
    gn = _stack64(torch._foreach_norm(grads))
    wd = torch.tensor(weight_decay, dtype=F64)
    on = torch.tensor(trust, dtype=torch.bool)
    local = torch.where(on & (w > 0) & (gn > 0), trust_coefficient * w / (gn + wd * w + eps), 1.0)
    scaled = (lr * torch.tensor(lr_mult, dtype=F64) * local).unbind(0)
    d = torch._foreach_mul(params, _per_tensor(weight_decay))           # wd w   (temporary list)
    torch._foreach_add_(d, grads)                                       # g + wd w
    torch._foreach_mul_(bufs, momentum)
    torch._foreach_addcmul_(bufs, d, scaled)                            # v <- mu v + s (g + wd w)
    if nesterov:
        torch._foreach_mul_(d, scaled)
        torch._foreach_add_(d, bufs, alpha=momentum)
        torch._foreach_sub_(params, d)
    else:
        torch._foreach_sub_(params, bufs)
    return local


# ------------------------------------------------------------------------------------------------------
# Adam family
# ------------------------------------------------------------------------------------------------------
def _adam_moments(grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor], beta1: float,
                  beta2: float) -> None:
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)                 # m <- b1 m + (1-b1) g
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)  # v <- b2 v + (1-b2) g^2


def adam_bias(step: int, beta1: float, beta2: float, bias_correction: bool = True) -> list[float]:
    """[1 / (1 - beta1^t), 1 / sqrt(1 - beta2^t)] of step t (1 on the first step), in float64 on the host.

    The host knows the step count (every tensor of the list steps together), so the per-step scalars are
    computed there, as the fused engine does, and handed to the recipe as a float64 tensor: no host sync. (Under
    torch.compile, computing ``pow(beta, step)`` from a step tensor inside the recipe gets inlined into
    inductor's element loops and recomputed per vector of elements, several times slower.)"""
    if not bias_correction:
        return [1.0, 1.0]
    return [1.0 / (1.0 - beta1 ** step), 1.0 / math.sqrt(1.0 - beta2 ** step)]


def _adamw_update(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                  bias: Tensor, *, lr: float, lr_mult: list[float], beta1: float, beta2: float, eps: float,
                  weight_decay: float) -> None:
    """p *= 1 - lr_i wd;  m, v;  p -= (lr_i / bc1) m / (sqrt(v) / sqrt(bc2) + eps)   (lr_i = lr * lr_mult_i)."""
    torch._foreach_mul_(params, _per_tensor([1.0 - lr * m * weight_decay for m in lr_mult]))
    _adam_moments(grads, exp_avgs, exp_avg_sqs, beta1, beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)                           # (temporary list)
    torch._foreach_mul_(denom, bias[1])
    torch._foreach_add_(denom, eps)                                    # sqrt(v) / sqrt(bc2) + eps
    neg_inv_step = (-1.0 / (lr * torch.tensor(lr_mult, dtype=F64) * bias[0])).unbind(0)
    torch._foreach_mul_(denom, neg_inv_step)                           # denom * (-bc1 / lr_i)
    torch._foreach_addcdiv_(params, exp_avgs, denom)


def adamw_foreach(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                  bias: Tensor, *, lr: float, lr_mult: list[float], beta1: float, beta2: float, eps: float,
                  weight_decay: float) -> None:
    """LayerwiseAdamW step (torch.optim.AdamW with per-tensor lr multipliers). ``bias`` = :func:`adam_bias`."""
    _adamw_update(params, grads, exp_avgs, exp_avg_sqs, bias, lr=lr, lr_mult=lr_mult, beta1=beta1,
                  beta2=beta2, eps=eps, weight_decay=weight_decay)


def grokfast_adamw_foreach(params: list[Tensor], grads: list[Tensor], filters: list[Tensor],
                           exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor], bias: Tensor, filter_weight: Tensor,
                           *, lr: float, lr_mult: list[float], beta1: float, beta2: float, eps: float,
                           weight_decay: float, lam: float) -> None:
    """GrokfastAdamW step: mu = g (t = 1) else a mu + (1-a) g;  ghat = g + lam mu;  AdamW on ghat.

    ``filter_weight`` (0-d, float32): 1 - a, and 1 on the first step (mu = g: lerp from the zero state with
    weight 1); ``bias`` = :func:`adam_bias`.
    """
    if torch.compiler.is_compiling():  # inductor has no lowering for _foreach_lerp.List (see _per_tensor)
        delta = torch._foreach_sub(grads, filters)
        torch._foreach_mul_(delta, filter_weight)
        torch._foreach_add_(filters, delta)
    else:
        torch._foreach_lerp_(filters, grads, [filter_weight] * len(filters))
    ghat = torch._foreach_add(grads, filters, alpha=lam)               # (temporary list)
    _adamw_update(params, ghat, exp_avgs, exp_avg_sqs, bias, lr=lr, lr_mult=lr_mult, beta1=beta1,
                  beta2=beta2, eps=eps, weight_decay=weight_decay)


def lamb_foreach(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                 bias: Tensor, *, lr: float, lr_mult: list[float], beta1: float, beta2: float, eps: float,
                 weight_decay: float, trust: list[bool], clamp_value: Optional[float] = None) -> Tensor:
    """LAMB step (You et al. 2020, Alg. 2). ``bias`` = :func:`adam_bias` (all ones without bias correction).

    m, v (Adam);  r = (m/bc1) / (sqrt(v/bc2) + eps) + wd w;  ratio = phi(||w||)/||r|| (1 if excluded or a
    norm is 0), phi = min(., clamp_value);  w -= lr * lr_mult * ratio * r
    """
    _adam_moments(grads, exp_avgs, exp_avg_sqs, beta1, beta2)
    r = torch._foreach_sqrt(exp_avg_sqs)                               # (temporary list)
    torch._foreach_mul_(r, bias[1])
    torch._foreach_add_(r, eps)
    torch._foreach_reciprocal_(r)
    torch._foreach_mul_(r, exp_avgs)                                   # m / (sqrt(v/bc2) + eps)
    torch._foreach_mul_(r, bias[0])
    if weight_decay != 0.0:
        torch._foreach_add_(r, params, alpha=weight_decay)
    w = _stack64(torch._foreach_norm(params))
    rn = _stack64(torch._foreach_norm(r))
    phi = w if clamp_value is None else w.clamp(max=clamp_value)
    on = torch.tensor(trust, dtype=torch.bool)
    ratio = torch.where(on & (w > 0) & (rn > 0), phi / rn, 1.0)
    coef = (-lr * torch.tensor(lr_mult, dtype=F64) * ratio).unbind(0)
    torch._foreach_addcmul_(params, r, coef)                           # w += coef_i * r
    return ratio


# ------------------------------------------------------------------------------------------------------
# SGD
# ------------------------------------------------------------------------------------------------------
def sgd_foreach(params: list[Tensor], grads: list[Tensor], bufs: list[Tensor], *, lr: float, lr_mult: list[float],
                momentum: float, weight_decay: float = 0.0, nesterov: bool = False) -> None:
    """LayerwiseSGD step (torch.optim.SGD, dampening 0, per-tensor lr multipliers).

    d = g + wd p;  buf = mu buf + d (zero-initialised buf: buf = d on step 1, as torch.optim.SGD);
    p -= lr * lr_mult * (d + mu buf if nesterov else buf)
    """
    d = torch._foreach_add(grads, params, alpha=weight_decay) if weight_decay != 0.0 else grads
    torch._foreach_mul_(bufs, momentum)
    torch._foreach_add_(bufs, d)
    neg_lr = torch.tensor([-lr * m for m in lr_mult], dtype=F64).unbind(0)
    if nesterov:
        if d is grads:
            d = torch._foreach_mul(grads, 1.0)
        torch._foreach_add_(d, bufs, alpha=momentum)
        torch._foreach_addcmul_(params, d, neg_lr)
    else:
        torch._foreach_addcmul_(params, bufs, neg_lr)
