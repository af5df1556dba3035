"""The optimizer table: every generic test in test_optim.py / test_properties.py runs over it.

In the style of torch's ``common_optimizers.py`` (``OptimizerInfo`` / ``optim_db``): one row per optimizer
configuration, each pairing a fused optimizer of ``torch_layerlr.optim`` with its plain float64 oracle from
``tests/reference`` (same constructor signature) and the keyword arguments to build both with.

Values that have one entry per parameter (``lr_mult`` lists, per-parameter ``depth_ratio``) depend on the
parameter list a test uses, so the table holds a :class:`PerParam` recipe for them; :meth:`OptimizerInfo.build`
expands it for each param group. ``group_kwargs`` are param-group keys (DALS's ``depth_ratio``) set on every
group that does not set them itself.

DALS rows use small ``total_steps`` / ``restart_steps`` so that the warmup, the cosine (and its end) and the
SGDR restarts all happen within a test's 100 (or 20) steps; their loss sequence comes from
:func:`dals_losses`, built so that the phase detector visits all three phases, in a known order.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any, Callable, Optional, Sequence

from reference import RefDALS, RefGrokfastAdamW, RefLAMB, RefLARS, RefLayerwiseAdamW, RefLayerwiseSGD  # noqa: E402

from torch_layerlr.optim import LAMB, LARS, DALS, GrokfastAdamW, LayerwiseAdamW, LayerwiseSGD  # noqa: E402

__all__ = ["PerParam", "OptimizerInfo", "optim_db", "OPTIM_IDS", "by_name", "dals_losses", "dals_schedule",
           "PHASE_THRESHOLDS"]


class PerParam:
    """A value with one float per parameter of a group: ``fn(i, n)`` for the i-th of n parameters."""

    def __init__(self, fn: Callable[[int, int], float], text: str) -> None:
        self.fn = fn
        self.text = text

    def __call__(self, n: int) -> list[float]:
        return [float(self.fn(i, n)) for i in range(n)]

    def __repr__(self) -> str:
        return f"PerParam({self.text})"


def _spread(lo: float, hi: float) -> PerParam:
    """lo for the first parameter, hi for the last, linear in between."""
    return PerParam(lambda i, n: lo + (hi - lo) * (i / (n - 1) if n > 1 else 0.0), f"{lo}..{hi}")


@dataclasses.dataclass(frozen=True)
class OptimizerInfo:
    name: str
    fused_cls: type
    ref_cls: type
    kwargs: dict[str, Any]
    description: str
    group_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_dals(self) -> bool:
        return self.fused_cls is DALS

    @property
    def family(self) -> str:
        return self.fused_cls.__name__

    def __repr__(self) -> str:  # pytest ids
        return self.name

    def groups(self, params_or_groups: Sequence[Any], overrides: Optional[dict[str, Any]] = None
               ) -> list[dict[str, Any]]:
        """Param groups with this row's per-parameter values expanded (``overrides`` win, may be PerParam)."""
        if params_or_groups and isinstance(params_or_groups[0], dict):
            groups = [dict(g) for g in params_or_groups]
        else:
            groups = [{"params": list(params_or_groups)}]
        per_param_kwargs = {k: v for k, v in self.kwargs.items() if isinstance(v, PerParam)}
        for g in groups:
            g["params"] = list(g["params"])
            n = len(g["params"])
            for source in (overrides or {}, self.group_kwargs, per_param_kwargs):
                for key, value in source.items():
                    if key not in g:
                        g[key] = value(n) if isinstance(value, PerParam) else value
            for key, value in list(g.items()):
                if isinstance(value, PerParam):
                    g[key] = value(n)
        return groups

    def constructor_kwargs(self, **extra: Any) -> dict[str, Any]:
        kwargs = {k: v for k, v in self.kwargs.items() if not isinstance(v, PerParam)}
        kwargs.update(extra)
        return kwargs

    def build(self, cls: type, params_or_groups: Sequence[Any], overrides: Optional[dict[str, Any]] = None,
              **extra: Any):
        """``cls`` (the fused or the reference class) on these params/groups with this row's settings."""
        return cls(self.groups(params_or_groups, overrides), **self.constructor_kwargs(**extra))

    def fused(self, params_or_groups, overrides=None, **extra):
        return self.build(self.fused_cls, params_or_groups, overrides, **extra)

    def ref(self, params_or_groups, overrides=None, **extra):
        return self.build(self.ref_cls, params_or_groups, overrides, **extra)


def _info(name, fused_cls, ref_cls, description, group_kwargs=None, **kwargs) -> OptimizerInfo:
    return OptimizerInfo(name, fused_cls, ref_cls, kwargs, description, dict(group_kwargs or {}))


optim_db: list[OptimizerInfo] = [
    # ---- LayerwiseSGD -------------------------------------------------------------------------------------
    _info("sgd_plain", LayerwiseSGD, RefLayerwiseSGD, "plain SGD, no momentum (no buffer)", lr=0.05),
    _info("sgd_momentum", LayerwiseSGD, RefLayerwiseSGD, "heavy-ball momentum", lr=0.02, momentum=0.9),
    _info("sgd_dampening_wd", LayerwiseSGD, RefLayerwiseSGD, "momentum with dampening and weight decay",
          lr=0.03, momentum=0.8, dampening=0.3, weight_decay=1e-2),
    _info("sgd_nesterov_wd", LayerwiseSGD, RefLayerwiseSGD, "Nesterov momentum with weight decay",
          lr=0.02, momentum=0.85, nesterov=True, weight_decay=5e-3),
    _info("sgd_lr_mult_list", LayerwiseSGD, RefLayerwiseSGD, "one lr multiplier per tensor (constructor list)",
          lr=0.05, momentum=0.5, weight_decay=1e-3, lr_mult=_spread(0.25, 2.0)),
    _info("sgd_maximize_lr_mult_float", LayerwiseSGD, RefLayerwiseSGD, "maximize, a float lr multiplier",
          lr=0.04, momentum=0.9, lr_mult=0.5, maximize=True),
    _info("sgd_grokfast", LayerwiseSGD, RefLayerwiseSGD,
          "Grokfast-EMA before dampened momentum and weight decay (the DALS benchmark's Grokfast)",
          lr=0.03, momentum=0.9, dampening=0.9, weight_decay=5e-4, grokfast_alpha=0.98, grokfast_lambda=1.0),
    # ---- LayerwiseAdamW -----------------------------------------------------------------------------------
    _info("adamw", LayerwiseAdamW, RefLayerwiseAdamW, "AdamW defaults but lr", lr=0.01),
    _info("adamw_wd_betas_lr_mult", LayerwiseAdamW, RefLayerwiseAdamW,
          "AdamW with strong decoupled decay, other betas, eps and an lr_mult list",
          lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, lr_mult=_spread(2.0, 0.5)),
    _info("adamw_maximize", LayerwiseAdamW, RefLayerwiseAdamW, "AdamW, maximize", lr=0.01, weight_decay=0.0,
          maximize=True),
    # ---- GrokfastAdamW ------------------------------------------------------------------------------------
    _info("grokfast_adamw", GrokfastAdamW, RefGrokfastAdamW, "Grokfast-EMA defaults (alpha .98, lambda 2)",
          lr=0.01),
    _info("grokfast_adamw_custom", GrokfastAdamW, RefGrokfastAdamW,
          "fast filter, small lambda, weight decay and an lr_mult list",
          lr=0.005, betas=(0.85, 0.995), weight_decay=0.05, grokfast_alpha=0.5, grokfast_lambda=0.7,
          lr_mult=_spread(0.5, 1.5)),
    # ---- LARS ---------------------------------------------------------------------------------------------
    _info("lars", LARS, RefLARS, "LARS defaults: exclude_1d on, no weight decay", lr=0.5, trust_coefficient=0.02),
    _info("lars_wd_all_tensors", LARS, RefLARS, "exclude_1d off, weight decay, eps",
          lr=0.3, momentum=0.8, weight_decay=1e-3, trust_coefficient=0.05, eps=1e-3, exclude_1d=False),
    _info("lars_nesterov", LARS, RefLARS, "Nesterov, weight decay, exclude_1d on",
          lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4, trust_coefficient=0.01),
    _info("lars_grokfast", LARS, RefLARS, "Grokfast-EMA filter before LARS, lr_mult list",
          lr=0.3, weight_decay=1e-4, trust_coefficient=0.02, grokfast_alpha=0.9, grokfast_lambda=1.5,
          lr_mult=_spread(1.0, 0.5)),
    _info("lars_maximize", LARS, RefLARS, "LARS, maximize, no momentum", lr=0.5, momentum=0.0,
          trust_coefficient=0.02, exclude_1d=False, maximize=True),
    # ---- LAMB ---------------------------------------------------------------------------------------------
    _info("lamb", LAMB, RefLAMB, "LAMB defaults but lr", lr=0.01),
    _info("lamb_clamp", LAMB, RefLAMB, "clamp_value below the weight norms of most tensors",
          lr=0.01, weight_decay=0.05, clamp_value=1.5),
    _info("lamb_no_bias_correction", LAMB, RefLAMB, "no bias correction, other betas",
          lr=0.005, betas=(0.8, 0.95), bias_correction=False),
    _info("lamb_exclude_1d", LAMB, RefLAMB, "exclude_1d, eps, lr_mult list",
          lr=0.01, eps=1e-4, exclude_1d=True, lr_mult=_spread(0.5, 2.0)),
    _info("lamb_grokfast", LAMB, RefLAMB, "Grokfast-EMA filter before LAMB, clamp",
          lr=0.01, grokfast_alpha=0.8, grokfast_lambda=2.0, clamp_value=3.0),
    # ---- DALS ---------------------------------------------------------------------------------------------
    _info("dals", DALS, RefDALS, "variant dals: warmup (W=3) then cosine ending at step 61 of 100",
          group_kwargs={"depth_ratio": 0.25}, variant="dals", total_steps=60),
    _info("dals_per_param_depth", DALS, RefDALS,
          "variant dals, per-parameter depth ratios, lr_mult list, own lr/momentum/wd/alpha, W=4",
          group_kwargs={"depth_ratio": _spread(0.0, 1.0)}, variant="dals", lr=0.05, momentum=0.8,
          weight_decay=1e-3, trust_coefficient=0.05, alpha=0.5, warmup_frac=0.1, total_steps=45,
          lr_mult=_spread(1.5, 0.5)),
    _info("dals_fast", DALS, RefDALS, "variant fast (phase 0 bypasses the filter), W=2, T=80",
          group_kwargs={"depth_ratio": 0.75}, variant="fast", total_steps=80, warmup_frac=0.03),
    _info("dals_fast_maximize", DALS, RefDALS, "variant fast, maximize, per-parameter depth",
          group_kwargs={"depth_ratio": _spread(1.0, 0.0)}, variant="fast", total_steps=30, maximize=True),
    _info("dals_acc", DALS, RefDALS, "variant acc: SGDR restarts at steps 5, 15, 35, 75",
          group_kwargs={"depth_ratio": 0.5}, variant="acc", restart_steps=5, restart_mult=2),
    _info("dals_acc_mult1", DALS, RefDALS, "variant acc, fixed 7-step cycles, per-parameter depth",
          group_kwargs={"depth_ratio": _spread(0.1, 0.9)}, variant="acc", restart_steps=7, restart_mult=1,
          alpha=0.85, trust_coefficient=0.1),
]

OPTIM_IDS = [info.name for info in optim_db]
assert len(set(OPTIM_IDS)) == len(OPTIM_IDS)


def by_name(name: str) -> OptimizerInfo:
    return next(info for info in optim_db if info.name == name)


# ---- the DALS loss sequence --------------------------------------------------------------------------------
#: (tau1, tau2) of each variant: the published thresholds (spec "DALS").
PHASE_THRESHOLDS = {"dals": (0.01, 0.002), "fast": (0.01, 0.002), "acc": (0.01, 0.001)}

#: loss / EMA ratio that puts the detector in phase 0, 1, 2: delta = 0.05 * (1 - ratio), so 0.025, 0.005, -0.0005.
_PHASE_RATIO = {0: 0.5, 1: 0.9, 2: 1.01}


def dals_losses(steps: int, seed: int = 0) -> tuple[list[float], list[int]]:
    """A loss sequence and the phase (spec "Phase detector") the detector is in after each loss.

    The test tracks the detector's EMA itself and picks each loss relative to it, so the phase is known in
    advance: runs of random length of random phases, all three present whenever ``steps >= 12``.
    """
    rng = random.Random(seed)
    targets = [0]  # the first loss only seeds the EMA: phase stays 0
    order = [1, 2, 0, 2, 1, 0]  # make sure every phase and every transition shows up early
    while len(targets) < steps:
        phase = order.pop(0) if order else rng.randrange(3)
        targets += [phase] * rng.randint(1, 4)
    targets = targets[:steps]
    losses, phases = [], []
    ema = None
    for phase in targets:
        if ema is None:
            loss = 2.0
            ema = loss
            phases.append(0)
        else:
            loss = ema * _PHASE_RATIO[phase]
            prev = ema
            ema = 0.95 * ema + 0.05 * loss
            delta = (prev - ema) / max(abs(prev), 1e-8)
            for tau1, tau2 in PHASE_THRESHOLDS.values():  # the phase is the same for every variant
                assert (delta > tau1) == (phase == 0) and (delta <= tau2) == (phase == 2)
            phases.append(phase)
        losses.append(loss)
    return losses, phases


def dals_schedule(info: OptimizerInfo, k: int) -> float:
    """Closed form of the DALS schedule factor s at global step k (spec "DALS"), for sanity checks."""
    kw = info.kwargs
    variant = kw.get("variant", "dals")
    if variant == "acc":
        c, ti = 0, kw.get("restart_steps", 1000)
        for _ in range(k):
            c += 1
            if c >= ti:
                c, ti = 0, ti * kw.get("restart_mult", 2)
        return 0.5 * (1 + math.cos(math.pi * c / ti))
    frac = kw.get("warmup_frac") or {"dals": 0.05, "fast": 0.02}[variant]
    total = kw.get("total_steps", 10000)
    w, t = math.floor(frac * total), k - 1
    if t < w:
        return t / w
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (t - w) / (total - w))))

