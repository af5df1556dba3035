"""Plain float64 reference implementations of every torch_layerlr optimizer.

These are the independent oracles that the fused C++ optimizers are tested against. They follow the
shared spec ("torch_layerlr: public API and exact float64 semantics") and the research doc
(/work/shared/research/dals_and_peers.md, sections A.3-A.6, B.1, C.1, C.3) literally:

* one Python loop over parameters, ordinary torch ops, one line per formula;
* all math in float64: p, grad and state are float64 while computing; the result is written back with
  ``p.copy_(...)`` whatever the parameter dtype; per-tensor state buffers are kept in float64;
* per-parameter ``state["step"]`` is a float32 scalar tensor counting the updates of that parameter
  (t below is the count AFTER the increment, 1 on the first update);
* every optimizer honours the param-group key ``lr_mult`` (a float, or one float per parameter of the
  group, in order): lr_eff = group["lr"] * lr_mult[i];
* ``maximize=True`` flips the gradient sign first (g <- -g); every later formula sees the flipped g;
* params whose grad is None are skipped (no state change).

Clarity over speed. Nothing here imports torch_layerlr.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch.optim import Optimizer

__all__ = [
    "RefLayerwiseSGD",
    "RefLayerwiseAdamW",
    "RefGrokfastAdamW",
    "RefLARS",
    "RefLAMB",
    "RefDALS",
]


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------
def _per_param(value, i, n, key):
    """Group value `key` for the i-th of n params: a scalar applies to all, a sequence gives one each."""
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return float(value.item())
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{key}: expected {n} values (one per parameter of the group), got {len(values)}")
    return float(values[i])


def _norm(x):
    """L2 norm of a float64 tensor, as a Python float (float64)."""
    return float(torch.linalg.vector_norm(x).item())


def _grad64(p, maximize):
    """Common conventions: g = grad in float64, sign-flipped first if maximize."""
    g = p.grad.detach().to(torch.float64)
    if maximize:
        g = -g
    return g


def _init_step(state):
    if "step" not in state:
        state["step"] = torch.tensor(0.0, dtype=torch.float32)


def _increment_step(state):
    """state['step'] += 1; returns t = the count AFTER the increment (1 on the first update)."""
    state["step"] += 1
    return int(state["step"].item())


def _zeros64(p):
    return torch.zeros_like(p, dtype=torch.float64, memory_format=torch.preserve_format)


def _grokfast_filter(state, g, t, alpha, lam):
    """Grokfast-EMA (Lee et al. 2024, research doc B.1; spec "Grokfast-EMA filter").

    mu = g at t == 1 (state starts at the first gradient), else mu = a*mu + (1-a)*g;  ghat = g + lam*mu.
    """
    if t == 1:
        state["grokfast_ema"] = g.clone()                                   # mu = g   (t == 1)
    else:
        state["grokfast_ema"] = alpha * state["grokfast_ema"] + (1.0 - alpha) * g  # mu = a mu + (1-a) g
    return g + lam * state["grokfast_ema"]                                  # ghat = g + lam mu


def _eval_closure(closure):
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


# --------------------------------------------------------------------------------------------------
# LayerwiseSGD
# --------------------------------------------------------------------------------------------------
class RefLayerwiseSGD(Optimizer):
    """Spec "LayerwiseSGD": exactly torch.optim.SGD with lr_eff = lr * lr_mult[i], after an optional
    Grokfast-EMA filter (B.1) on the raw gradient."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                 grokfast_alpha=None, grokfast_lambda=2.0, lr_mult=1.0, *, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, grokfast_alpha=grokfast_alpha, grokfast_lambda=grokfast_lambda,
                        lr_mult=lr_mult, maximize=maximize)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = _eval_closure(closure)
        for group in self.param_groups:
            n = len(group["params"])
            mu = group["momentum"]
            dampening = group["dampening"]
            wd = group["weight_decay"]
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                lr_eff = group["lr"] * _per_param(group["lr_mult"], i, n, "lr_mult")
                state = self.state[p]
                _init_step(state)
                t = _increment_step(state)
                w = p.detach().to(torch.float64)
                g = _grad64(p, group["maximize"])
                if group["grokfast_alpha"] is not None:                     # filter on iff alpha given
                    g = _grokfast_filter(state, g, t, group["grokfast_alpha"], group["grokfast_lambda"])
                g = g + wd * w                                              # g += wd*p
                if mu != 0:
                    if "momentum_buffer" not in state:
                        buf = g.clone()                                     # buf = g at t == 1 (first use)
                    else:
                        buf = mu * state["momentum_buffer"] + (1.0 - dampening) * g  # buf = mu buf + (1-damp) g
                    state["momentum_buffer"] = buf
                    d = g + mu * buf if group["nesterov"] else buf          # d = g + mu buf | buf
                else:
                    d = g                                                   # d = g when momentum == 0
                p.copy_(w - lr_eff * d)                                     # p -= lr_eff d
        return loss


# --------------------------------------------------------------------------------------------------
# LayerwiseAdamW
# --------------------------------------------------------------------------------------------------
def _adamw_update(state, w, g, t, lr_eff, beta1, beta2, eps, wd):
    """Spec "LayerwiseAdamW" (torch.optim.AdamW math); returns the new float64 weight."""
    w = w * (1.0 - lr_eff * wd)                                             # p *= (1 - lr_eff wd)
    state["exp_avg"] = beta1 * state["exp_avg"] + (1.0 - beta1) * g         # m = b1 m + (1-b1) g
    state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * g * g  # v = b2 v + (1-b2) g^2
    bc1 = 1.0 - beta1 ** t                                                  # bc1 = 1 - b1^t
    bc2 = 1.0 - beta2 ** t                                                  # bc2 = 1 - b2^t
    denom = state["exp_avg_sq"].sqrt() / math.sqrt(bc2) + eps               # sqrt(v)/sqrt(bc2) + eps
    return w - (lr_eff / bc1) * state["exp_avg"] / denom                    # p -= (lr_eff/bc1) m / denom


class RefLayerwiseAdamW(Optimizer):
    """Spec "LayerwiseAdamW": exactly torch.optim.AdamW with lr_eff = lr * lr_mult[i]."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, lr_mult=1.0,
                 *, maximize=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, lr_mult=lr_mult,
                        maximize=maximize)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = _eval_closure(closure)
        for group in self.param_groups:
            n = len(group["params"])
            beta1, beta2 = group["betas"]
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                lr_eff = group["lr"] * _per_param(group["lr_mult"], i, n, "lr_mult")
                state = self.state[p]
                if "step" not in state:
                    _init_step(state)
                    state["exp_avg"] = _zeros64(p)
                    state["exp_avg_sq"] = _zeros64(p)
                t = _increment_step(state)
                w = p.detach().to(torch.float64)
                g = self._filtered(state, _grad64(p, group["maximize"]), t, group)
                p.copy_(_adamw_update(state, w, g, t, lr_eff, beta1, beta2, group["eps"],
                                      group["weight_decay"]))
        return loss

    def _filtered(self, state, g, t, group):
        """The gradient AdamW consumes (the raw one here; Grokfast overrides this)."""
        return g


# --------------------------------------------------------------------------------------------------
# GrokfastAdamW
# --------------------------------------------------------------------------------------------------
class RefGrokfastAdamW(RefLayerwiseAdamW):
    """Spec "GrokfastAdamW": Grokfast-EMA filter (B.1), then LayerwiseAdamW on ghat."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 grokfast_alpha=0.98, grokfast_lambda=2.0, lr_mult=1.0, *, maximize=False):
        Optimizer.__init__(self, params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                              grokfast_alpha=grokfast_alpha, grokfast_lambda=grokfast_lambda,
                                              lr_mult=lr_mult, maximize=maximize))

    def _filtered(self, state, g, t, group):
        return _grokfast_filter(state, g, t, group["grokfast_alpha"], group["grokfast_lambda"])


# --------------------------------------------------------------------------------------------------
# LARS
# --------------------------------------------------------------------------------------------------
class RefLARS(Optimizer):
    """Spec "LARS": You et al. 2017 eq. 6 / Alg. 1 (research doc C.1), TF-style ratio with zero tests."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001, eps=0.0,
                 nesterov=False, exclude_1d=True, grokfast_alpha=None, grokfast_lambda=2.0, lr_mult=1.0,
                 *, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, eps=eps, nesterov=nesterov,
                        exclude_1d=exclude_1d, grokfast_alpha=grokfast_alpha,
                        grokfast_lambda=grokfast_lambda, lr_mult=lr_mult, maximize=maximize)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = _eval_closure(closure)
        for group in self.param_groups:
            n = len(group["params"])
            mu = group["momentum"]
            tc = group["trust_coefficient"]
            eps = group["eps"]
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                lr_eff = group["lr"] * _per_param(group["lr_mult"], i, n, "lr_mult")
                state = self.state[p]
                if "step" not in state:
                    _init_step(state)
                    state["momentum_buffer"] = _zeros64(p)                 # v zero-initialised
                t = _increment_step(state)
                w = p.detach().to(torch.float64)
                g = _grad64(p, group["maximize"])
                if group["grokfast_alpha"] is not None:                     # filter on iff alpha given
                    g = _grokfast_filter(state, g, t, group["grokfast_alpha"], group["grokfast_lambda"])
                excluded = group["exclude_1d"] and p.ndim <= 1
                if excluded:
                    local = 1.0                                             # excluded: local = 1
                    wd = 0.0                                                #           and wd = 0
                else:
                    wd = group["weight_decay"]
                    w_norm = _norm(w)
                    g_norm = _norm(g)
                    if w_norm == 0.0 or g_norm == 0.0:
                        local = 1.0                                         # 1 if ||w|| == 0 or ||g|| == 0
                    else:
                        local = tc * w_norm / (g_norm + wd * w_norm + eps)  # eq. 6 (+ eps)
                s = lr_eff * local                                          # s = lr_eff * local
                u = s * (g + wd * w)                                        # s (g + wd w)
                state["momentum_buffer"] = mu * state["momentum_buffer"] + u  # v = mu v + s (g + wd w)
                if group["nesterov"]:
                    p.copy_(w - (mu * state["momentum_buffer"] + u))        # w -= mu v + s (g + wd w)
                else:
                    p.copy_(w - state["momentum_buffer"])                   # w -= v
        return loss


# --------------------------------------------------------------------------------------------------
# LAMB
# --------------------------------------------------------------------------------------------------
class RefLAMB(Optimizer):
    """Spec "LAMB": You et al. 2020 Alg. 2 (research doc C.3)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                 bias_correction=True, clamp_value=None, exclude_1d=False, grokfast_alpha=None,
                 grokfast_lambda=2.0, lr_mult=1.0, *, maximize=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction, clamp_value=clamp_value, exclude_1d=exclude_1d,
                        grokfast_alpha=grokfast_alpha, grokfast_lambda=grokfast_lambda, lr_mult=lr_mult,
                        maximize=maximize)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = _eval_closure(closure)
        for group in self.param_groups:
            n = len(group["params"])
            beta1, beta2 = group["betas"]
            wd = group["weight_decay"]
            clamp_value = group["clamp_value"]
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                lr_eff = group["lr"] * _per_param(group["lr_mult"], i, n, "lr_mult")
                state = self.state[p]
                if "step" not in state:
                    _init_step(state)
                    state["exp_avg"] = _zeros64(p)
                    state["exp_avg_sq"] = _zeros64(p)
                t = _increment_step(state)
                w = p.detach().to(torch.float64)
                g = _grad64(p, group["maximize"])
                if group["grokfast_alpha"] is not None:                     # filter on iff alpha given
                    g = _grokfast_filter(state, g, t, group["grokfast_alpha"], group["grokfast_lambda"])
                state["exp_avg"] = beta1 * state["exp_avg"] + (1.0 - beta1) * g          # m = b1 m + (1-b1) g
                state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * g * g  # v = b2 v + (1-b2) g^2
                if group["bias_correction"]:
                    mh = state["exp_avg"] / (1.0 - beta1 ** t)             # mh = m / bc1
                    vh = state["exp_avg_sq"] / (1.0 - beta2 ** t)          # vh = v / bc2
                else:
                    mh = state["exp_avg"]                                   # mh = m
                    vh = state["exp_avg_sq"]                                # vh = v
                r = mh / (vh.sqrt() + group["eps"]) + wd * w                # r = mh/(sqrt(vh)+eps) + wd w
                w_norm = _norm(w)
                r_norm = _norm(r)
                phi = min(w_norm, clamp_value) if clamp_value is not None else w_norm  # phi(||w||)
                excluded = group["exclude_1d"] and p.ndim <= 1
                if w_norm == 0.0 or r_norm == 0.0 or excluded:
                    ratio = 1.0                                             # ratio = 1 (zero norm / excluded)
                else:
                    ratio = phi / r_norm                                    # ratio = phi / ||r||
                p.copy_(w - lr_eff * ratio * r)                             # w -= lr_eff ratio r
        return loss


# --------------------------------------------------------------------------------------------------
# DALS
# --------------------------------------------------------------------------------------------------
# Variant defaults (spec "DALS", research doc A.6).
#   phase_alphas(a0) -> (alpha in phase 0, 1, 2); None in phase 0 means "bypass the filter" (fast).
_DALS_VARIANTS = {
    "dals": dict(lr=0.03, momentum=0.9, weight_decay=1e-4, alpha=0.6, warmup_frac=0.05,
                 thresholds=(0.01, 0.002), schedule="warmup_cosine",
                 phase_alphas=lambda a0: (max(0.3, a0 - 0.3), a0, min(0.9, a0 + 0.1))),
    "fast": dict(lr=0.05, momentum=0.85, weight_decay=1e-4, alpha=0.6, warmup_frac=0.02,
                 thresholds=(0.01, 0.002), schedule="warmup_cosine",
                 phase_alphas=lambda a0: (None, a0, min(0.9, a0 + 0.1))),
    "acc": dict(lr=0.03, momentum=0.9, weight_decay=5e-4, alpha=0.7, warmup_frac=None,
                thresholds=(0.01, 0.001), schedule="sgdr",
                phase_alphas=lambda a0: (max(0.4, a0 - 0.15), a0, min(0.9, a0 + 0.1))),
}


class RefDALS(Optimizer):
    """Spec "DALS" (arXiv 2604.27295; research doc A.3-A.6), variants "dals", "fast", "acc".

    Param groups may set ``depth_ratio`` (float or one float per parameter; default 0.5) and ``lr_mult``.
    Global (optimizer-level) state lives in plain attributes:
      ``global_step`` (k, 1 on the first step), ``loss_ema``, ``phase``, ``lr_scale`` (s of the last
      step), and for SGDR ``sgdr_cycle`` (c) / ``sgdr_cycle_len`` (Ti).
    Per-tensor state: ``step``, ``filtered_grad`` (f) and ``momentum_buffer`` (m), both zero-initialised.
    """

    def __init__(self, params, variant="dals", lr=None, momentum=None, weight_decay=None,
                 trust_coefficient=0.02, alpha=None, warmup_frac=None, total_steps=10000,
                 restart_steps=1000, restart_mult=2, *, maximize=False):
        if variant not in _DALS_VARIANTS:
            raise ValueError(f"unknown DALS variant {variant!r}; expected one of {sorted(_DALS_VARIANTS)}")
        vd = _DALS_VARIANTS[variant]
        self.variant = variant
        self.warmup_frac = vd["warmup_frac"] if warmup_frac is None else warmup_frac
        self.total_steps = total_steps
        self.restart_steps = restart_steps
        self.restart_mult = restart_mult
        self.thresholds = vd["thresholds"]                                  # (tau1, tau2)
        self.schedule = vd["schedule"]
        defaults = dict(
            lr=vd["lr"] if lr is None else lr,
            momentum=vd["momentum"] if momentum is None else momentum,
            weight_decay=vd["weight_decay"] if weight_decay is None else weight_decay,
            trust_coefficient=trust_coefficient,
            alpha=vd["alpha"] if alpha is None else alpha,
            depth_ratio=0.5,
            lr_mult=1.0,
            maximize=maximize,
        )
        super().__init__(params, defaults)
        # global state
        self.global_step = 0                     # k (1 on the first step)
        self.loss_ema = None                     # float64 loss EMA (None before the first update_phase)
        self.phase = 0                           # 0, 1, 2; stays 0 if update_phase is never called
        self.lr_scale = None                     # s of the last step
        self.sgdr_cycle = 0                      # c, starts at 0
        self.sgdr_cycle_len = restart_steps      # Ti, starts at restart_steps

    # ---- phase detector (A.4) ---------------------------------------------------------------------
    def update_phase(self, loss):
        """Feed one loss value (float or 0-d tensor); called BEFORE step. Returns the new phase."""
        if isinstance(loss, torch.Tensor):
            loss = loss.item()
        loss = float(loss)
        if self.loss_ema is None:
            self.loss_ema = loss                                            # first call: ema = loss, phase stays 0
            return self.phase
        tau1, tau2 = self.thresholds
        prev = self.loss_ema                                                # prev = ema
        self.loss_ema = 0.95 * self.loss_ema + 0.05 * loss                  # ema = 0.95 ema + 0.05 loss
        delta = (prev - self.loss_ema) / max(abs(prev), 1e-8)               # delta = (prev-ema)/max(|prev|,1e-8)
        if delta > tau1:
            self.phase = 0                                                  # delta > tau1
        elif delta > tau2:
            self.phase = 1                                                  # tau2 < delta <= tau1
        else:
            self.phase = 2                                                  # otherwise
        return self.phase

    # ---- schedules (A.3 step 1, A.6) ----------------------------------------------------------------
    def _next_lr_scale(self):
        """Advance the schedule for global step k (already incremented) and return s."""
        if self.schedule == "sgdr":
            self.sgdr_cycle += 1                                            # c += 1
            if self.sgdr_cycle >= self.sgdr_cycle_len:                      # if c >= Ti:
                self.sgdr_cycle = 0                                         #   c = 0
                self.sgdr_cycle_len *= self.restart_mult                    #   Ti *= restart_mult
            return 0.5 * (1.0 + math.cos(math.pi * self.sgdr_cycle / self.sgdr_cycle_len))  # s = cos
        T = self.total_steps
        t = self.global_step - 1                                            # t = k - 1
        W = math.floor(self.warmup_frac * T)                                # W = floor(warmup_frac T)
        if t < W:
            return t / W                                                    # s = t / W
        # (T <= W would divide by zero; the schedule is then past its end: progress 1, s = 0)
        progress = min(1.0, (t - W) / (T - W)) if T > W else 1.0           # min(1, (t-W)/(T-W))
        return 0.5 * (1.0 + math.cos(math.pi * progress))                   # s = 0.5 (1 + cos(pi ...))

    # ---- step (A.3) ---------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None, loss=None):
        """One DALS step. A closure's return value (else ``loss=``) goes to update_phase first."""
        closure_loss = _eval_closure(closure)
        phase_loss = closure_loss if closure is not None else loss
        if phase_loss is not None:
            self.update_phase(phase_loss)                                   # A.3 step 0 (before the update)

        self.global_step += 1                                               # k += 1
        s = self._next_lr_scale()
        self.lr_scale = s

        for group in self.param_groups:
            n = len(group["params"])
            mu = group["momentum"]
            wd = group["weight_decay"]
            tc = group["trust_coefficient"]
            eta = group["lr"] * s                                           # eta = group lr * s
            alpha = _DALS_VARIANTS[self.variant]["phase_alphas"](group["alpha"])[self.phase]
            bypass = alpha is None                                          # fast variant, phase 0
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                lr_mult = _per_param(group["lr_mult"], i, n, "lr_mult")
                d = _per_param(group["depth_ratio"], i, n, "depth_ratio")
                state = self.state[p]
                if "step" not in state:
                    _init_step(state)
                    state["filtered_grad"] = _zeros64(p)                   # f zero-init
                    state["momentum_buffer"] = _zeros64(p)                 # m zero-init
                _increment_step(state)
                theta = p.detach().to(torch.float64)
                g = _grad64(p, group["maximize"])
                b = 0.3 + 0.4 * d                                           # b = 0.3 + 0.4 depth_ratio
                if bypass:
                    ghat = g                                                # fast, phase 0: ghat = g, f frozen
                else:
                    state["filtered_grad"] = alpha * state["filtered_grad"] + (1.0 - alpha) * g  # f = a f + (1-a) g
                    ghat = b * g + (1.0 - b) * state["filtered_grad"]       # ghat = b g + (1-b) f
                ghat = ghat + wd * theta                                    # coupled weight decay
                theta_norm = _norm(theta)
                ghat_norm = _norm(ghat)
                if theta_norm == 0.0 or ghat_norm == 0.0:
                    r = 1.0                                                 # zero norm -> r = 1 (unclamped)
                else:
                    r = min(max(tc * theta_norm / ghat_norm, 0.2), 5.0)     # clamp(tc ||theta||/||ghat||, 0.2, 5)
                state["momentum_buffer"] = mu * state["momentum_buffer"] + ghat  # m = mu m + ghat
                p.copy_(theta - eta * lr_mult * r * state["momentum_buffer"])    # theta -= eta lr_mult r m
        return closure_loss
