r"""The validation checks: each measures an error of :mod:`torch_layerlr.theory` against an independent
reference (autograd Hessians in float64, gradient descent in float64, numerical quadrature) and returns
records ``{name, measured, bound, op, passed, detail}``: ``passed`` is ``measured <= bound`` (``op "<="``),
``measured < bound`` (``"<"``) or ``measured > bound`` (``">"``).  The tests in ``tests/test_theory.py`` and
``tests/test_depth_scaling.py`` and ``python -m torch_layerlr validate`` run these same functions.

Conventions: loss :math:`\frac{1}{2N}\sum(y - f(x))^2`; GD at the rule :math:`\eta = 1/(\tau S)` makes one step
one unit of the paper's time (eq. 6), so large :math:`\tau` (20 here) tracks gradient flow; :math:`\alpha` is
the network's coefficient over its target :math:`r = \mu_{yx}/\mu_{xx}`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy import integrate, special

from torch_layerlr import theory as th
from torch_layerlr.models import DeepLinear, ResidualChain, ScalarChain
from torch_layerlr.optim import DepthScaledSGD
from torch_layerlr.validate import sim

__all__ = ["record", "CHECKS", "check_sharpness", "check_stability", "check_time_course", "check_closed_forms",
           "check_plateau", "check_transfer", "check_matrix", "transfer_losses", "make_model", "run_all",
           "DEPTHS", "RATIOS", "RES2_RATIOS", "TRANSFER_DEPTHS", "TRANSFER_GRID"]

DEPTHS = (1, 2, 3, 8, 32)
RATIOS = (0.3, 1.0, 2.5)
RES2_RATIOS = (1.5, 2.5)  # res2 needs mu_yx/mu_xx > 1
MU_XX = 1.7  # a non-unit input variance, so that a lost mu_xx factor shows
TRANSFER_DEPTHS = (2, 4, 8, 16, 32)
TRANSFER_GRID = tuple(np.round(np.arange(0.1, 2.2 + 1e-9, 0.1), 10))  # tau^-1
TRANSFER_RATIOS = {"chain": (0.5, 2.0), "res1": (0.5, 2.0), "res2": (1.5, 2.0)}

Record = dict


def record(name: str, measured: float, bound: float, op: str = "<=", detail: str = "") -> Record:
    measured = float(measured)
    if op == "<=":
        passed = measured <= bound
    elif op == "<":
        passed = measured < bound
    elif op == ">":
        passed = measured > bound
    else:
        raise ValueError(f"unknown op {op!r}")
    return dict(name=name, measured=measured, bound=float(bound), op=op,
                passed=bool(passed and not math.isnan(measured)), detail=detail)


def _ratios(arch: str) -> Sequence[float]:
    return RES2_RATIOS if arch == "res2" else RATIOS


def make_model(arch: str, depth: int, alpha0: float, mu_xx: float, mu_yx: float) -> torch.nn.Module:
    """A float64 balanced network of ``arch`` with relative total weight ``alpha0``."""
    if arch == "chain":
        return ScalarChain.balanced(depth, alpha0, mu_xx, mu_yx, dtype=torch.float64)
    return ResidualChain.balanced(depth, int(arch[-1]), alpha0, mu_xx, mu_yx, dtype=torch.float64)


# ---- 1. sharpness = top Hessian eigenvalue ---------------------------------------------------------------
def check_sharpness(depths: Sequence[int] = DEPTHS, archs: Sequence[str] = th.ARCHS, bound: float = 1e-8
                    ) -> list[Record]:
    """Eq. 13/27/33 against the top eigenvalue of the autograd Hessian (float64) at the balanced minimum."""
    out = []
    for arch in archs:
        worst, where = 0.0, ""
        for L in depths:
            for r in _ratios(arch):
                x, y = sim.scalar_data(MU_XX, MU_XX * r)
                model = make_model(arch, L, 1.0, MU_XX, MU_XX * r)
                measured = sim.top_eigenvalue(sim.hessian(model, x, y))
                err = abs(measured / float(th.sharpness(L, MU_XX, MU_XX * r, arch)) - 1.0)
                if err >= worst:
                    worst, where = err, f"worst at depth {L}, r = {r:g}"
        eq = {"chain": "eq. 13", "res1": "eq. 27", "res2": "eq. 33"}[arch]
        out.append(record(f"sharpness {eq} = top Hessian eigenvalue ({arch}), rel. error", worst, bound,
                          detail=f"depths {tuple(depths)}, r in {tuple(_ratios(arch))}, mu_xx = {MU_XX}; {where}"))
    return out


# ---- 2. stability of DepthScaledSGD ------------------------------------------------------------------------
def _run_optimizer(arch: str, L: int, r: float, tau: float, alpha0: float, steps: int) -> tuple[float, list[float]]:
    x, y = sim.scalar_data(MU_XX, MU_XX * r)
    model = make_model(arch, L, alpha0, MU_XX, MU_XX * r)
    opt = DepthScaledSGD(model.parameters(), MU_XX, MU_XX * r, tau=tau, arch=arch)
    errors = []
    for _ in range(steps):
        opt.zero_grad()
        sim.half_mse(model(x), y).backward()
        opt.step()
        err = abs(model.alpha(MU_XX, MU_XX * r) - 1.0)
        errors.append(err if math.isfinite(err) else math.inf)
        if err > 1e6 or not math.isfinite(err) or (tau > 0.5 and err < 1e-13):
            break
    return errors[-1], errors


def check_stability(depths: Sequence[int] = DEPTHS, archs: Sequence[str] = th.ARCHS, alpha0: float = 0.9,
                    steps: int = 300, tol: float = 1e-8) -> list[Record]:
    """DepthScaledSGD (the fused engine, float64) from a balanced start at ``alpha0``: tau = 0.55 reaches
    |alpha - 1| < tol, tau = 0.45 does not (min of |alpha - 1| over its last 20 steps stays above tol)."""
    out = []
    for arch in archs:
        worst_stable, where_s = 0.0, ""
        best_unstable, where_u = math.inf, ""
        for L in depths:
            for r in _ratios(arch):
                final, _ = _run_optimizer(arch, L, r, 0.55, alpha0, steps)
                if not final <= worst_stable:
                    worst_stable, where_s = final, f"depth {L}, r = {r:g}"
                _, errors = _run_optimizer(arch, L, r, 0.45, alpha0, steps)
                closest = min(errors[-20:])
                if closest <= best_unstable:
                    best_unstable, where_u = closest, f"depth {L}, r = {r:g}"
        grid = f"depths {tuple(depths)}, r in {tuple(_ratios(arch))}, alpha(0) = {alpha0}, {steps} steps"
        out.append(record(f"stability ({arch}): tau = 0.55 converges, final |alpha - 1|", worst_stable, tol,
                          detail=f"{grid}; worst {where_s}"))
        out.append(record(f"stability ({arch}): tau = 0.45 does not, min |alpha - 1| over last 20 steps",
                          best_unstable, tol, op=">", detail=f"{grid}; closest {where_u} (inf = diverged)"))
    return out


# ---- 3. time course against GD ----------------------------------------------------------------------------
def _gd_crossings(depths: Sequence[float], ratios: Sequence[float], tau: float, alpha0: float,
                  targets: Sequence[float]) -> np.ndarray:
    """Interpolated GD steps to reach each target, shape (depths, ratios, targets)."""
    Ls = np.asarray(depths, dtype=np.float64)[:, None]
    rs = np.asarray(ratios, dtype=np.float64)[None, :]
    t_max = float(np.max(th.time_to_reach(max(targets), alpha0, Ls, tau)))
    steps = int(1.2 * t_max) + 10
    w0 = th.balanced_weight(alpha0 * rs, Ls, "chain")
    lr = th.max_stable_lr(Ls, MU_XX, MU_XX * rs, tau)
    alpha = 1.0 + sim.balanced_gd("chain", Ls, MU_XX, MU_XX * rs, w0, lr, steps)
    return sim.crossing_times(alpha, targets)


def check_time_course(depths: Sequence[int] = (2, 3, 8, 32), ratios: Sequence[float] = RATIOS, tau: float = 20.0,
                      alpha0: float = 0.01, targets: Sequence[float] = (0.1, 0.5, 0.9), bound: float = 0.02,
                      tau_depth1: float = 50.0) -> list[Record]:
    """GD at tau = 20 against eq. 7 (finite depth) and eq. 9/19 (infinite depth vs a depth-1000 chain)."""
    out = []
    gd = _gd_crossings(depths, ratios, tau, alpha0, targets)
    theory = np.asarray(th.time_to_reach(np.asarray(targets)[None, None, :], alpha0,
                                         np.asarray(depths, dtype=np.float64)[:, None, None], tau))
    err = np.abs(gd / theory - 1.0)
    i = np.unravel_index(np.nanargmax(err), err.shape)
    out.append(record(f"time course: GD (tau = {tau:g}) reach time / eq. 7, rel. error", np.nanmax(err), bound,
                      detail=f"depths {tuple(depths)}, r in {tuple(ratios)}, alpha(0) = {alpha0}, alpha in "
                             f"{tuple(targets)}; worst depth {depths[i[0]]}, alpha {targets[i[2]]}"))
    # depth 1 is linear: GD's (1 - 1/tau)^k against e^(-k/tau) is off by 1/(2 tau) in time, 2.5% at tau = 20
    gd1 = _gd_crossings([1], ratios, tau_depth1, alpha0, targets)
    err1 = np.abs(gd1 / np.asarray(th.time_to_reach(np.asarray(targets), alpha0, 1, tau_depth1)) - 1.0)
    out.append(record(f"time course, depth 1: GD (tau = {tau_depth1:g}) reach time / closed form, rel. error",
                      np.nanmax(err1), bound,
                      detail="depth 1 needs tau >= 25 for 2%: GD's (1 - 1/tau)^k vs e^(-k/tau) differ by "
                             "~1/(2 tau) in time"))
    # infinite depth: eq. 19 reach times and eq. 9 (Lambert W) alpha(t) against GD on a depth-1000 chain
    gd_inf = _gd_crossings([1000], ratios, tau, alpha0, targets)[0]
    t_inf = np.asarray(th.time_to_reach(np.asarray(targets), alpha0, math.inf, tau))
    err_t = np.nanmax(np.abs(gd_inf / t_inf - 1.0))
    steps = int(1.2 * t_inf[-1]) + 10
    eq9 = np.asarray(th.alpha_at(np.arange(steps + 1), alpha0, math.inf, tau))  # eq. 9 on the step grid
    err_9 = np.nanmax(np.abs(gd_inf / sim.crossing_times(eq9, targets) - 1.0))
    out.append(record("time course, infinite depth: depth-1000 GD reach time / eq. 19 and eq. 9, rel. error",
                      max(err_t, err_9), bound,
                      detail=f"tau = {tau:g}, alpha(0) = {alpha0}, alpha in {tuple(targets)}; against eq. 19 "
                             f"{err_t:.2e}, against eq. 9 (Lambert W) sampled per step {err_9:.2e}"))
    return out


# ---- 3b. the closed forms against each other and quadrature -----------------------------------------------
def check_closed_forms(depths: Sequence[float] = (1, 2, 3, 8, 32, 1000, math.inf), bound: float = 1e-9
                       ) -> list[Record]:
    """Eq. 7 (2F1) against numerical quadrature of eq. 6; alpha_at against time_to_reach (round trip) and
    monotone; eq. 9 via Wright omega against scipy's lambertw of e^beta."""
    out = []
    worst = 0.0
    for L in depths:
        p = 2.0 - (0.0 if math.isinf(L) else 2.0 / L)
        for a0, a in ((1e-4, 0.3), (0.01, 0.9), (0.3, 0.999), (0.5, 0.7)):
            ref, _ = integrate.quad(lambda z: 1.0 / (z ** p * (1.0 - z)), a0, a, epsabs=0.0, epsrel=1e-12,
                                    limit=200, points=[min(10 * a0, 0.5 * (a0 + a))])
            worst = max(worst, abs(float(th.time_to_reach(a, a0, L, 2.0)) / (2.0 * ref) - 1.0))
    out.append(record("eq. 7 / eq. 19 against quadrature of eq. 6, rel. error", worst, bound,
                      detail=f"depths {tuple(depths)}; alpha(0) from 1e-4, alpha up to 0.999"))
    worst, monotone = 0.0, True
    t = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 200)])
    for L in depths:
        for a0 in (1e-3, 0.2, 0.9):
            a = np.asarray(th.alpha_at(t, a0, L, 1.5))
            monotone &= bool(np.all(np.diff(a) >= 0) and np.all(a >= a0) and np.all(a < 1))
            targets = a0 + (1.0 - a0) * np.linspace(0.0, 1.0, 41)[1:-1]  # alpha in (alpha0, 1)
            back = np.asarray(th.alpha_at(th.time_to_reach(targets, a0, L, 1.5), a0, L, 1.5))
            worst = max(worst, float(np.max(np.abs(back - targets) / np.minimum(targets, 1.0 - targets))))
    out.append(record("alpha_at inverts time_to_reach (eq. 7, 9, 19, depth 1/2 forms), "
                      "|error| / min(alpha, 1 - alpha)", worst, bound,
                      detail=f"depths {tuple(depths)}; alpha_at nondecreasing in t and within [alpha0, 1): "
                             f"{monotone}"))
    if not monotone:
        out[-1]["passed"] = False
    beta = np.linspace(30.0, -30.0, 61)  # beta(t) = beta(0) - t/tau, from beta(0) = 30
    reference = 1.0 / (1.0 + special.lambertw(np.exp(beta)).real)
    ours = np.asarray(th.alpha_at(30.0 - beta, reference[0], math.inf, 1.0))
    out.append(record("eq. 9: alpha_at(depth=inf) against 1/(1 + lambertw(e^beta)), rel. error",
                      np.max(np.abs(ours / reference - 1.0)), bound, detail="beta from 30 down to -30"))
    return out


# ---- 4. plateau -------------------------------------------------------------------------------------------
def check_plateau(depths: Sequence[int] = (2, 3, 4, 8, 32), alpha0s: Sequence[float] = (1e-2, 1e-4, 1e-6),
                  tau: float = 20.0, bound: float = 0.05) -> list[Record]:
    """GD escape time (steps to alpha = 1/2) over eq. 10: within 5% at the smallest alpha(0), and for
    depth >= 3 its error shrinks as alpha(0) shrinks (depth 2's eq. 10 is exact to O(alpha(0)); what is
    left there is GD's discretisation, ~1/(4 tau))."""
    ratios = np.array([[sim.escape_steps(L, a0, tau) / float(th.plateau_duration(a0, L, tau)) for a0 in alpha0s]
                       for L in depths])
    err = np.abs(ratios - 1.0)
    table = "; ".join(f"L={L}: " + ", ".join(f"{v:.4f}" for v in row) for L, row in zip(depths, ratios))
    out = [record(f"plateau: GD escape time / eq. 10 at alpha(0) = {alpha0s[-1]:g}, |ratio - 1|", err[:, -1].max(),
                  bound, detail=f"tau = {tau:g}; ratios at alpha(0) = {tuple(alpha0s)}: {table}")]
    deep = [i for i, L in enumerate(depths) if L >= 3]
    shrink = float(np.max(err[deep, -1] / err[deep, 0]))
    out.append(record(f"plateau: error at alpha(0) = {alpha0s[-1]:g} over error at {alpha0s[0]:g} (depth >= 3)",
                      shrink, 1.0, op="<", detail="the ratio tends to 1 as alpha(0) shrinks"))
    return out


# ---- 5. transfer (Fig. 2) -----------------------------------------------------------------------------------
def transfer_losses(arch: str, r: float, rule: str, depths: Sequence[int] = TRANSFER_DEPTHS,
                    grid: Sequence[float] = TRANSFER_GRID, steps: int = 30) -> np.ndarray:
    """Excess loss after ``steps`` GD steps, shape (depths, grid), for the data-dependent rule (``"dep"``:
    max_stable_lr with tau = 1/grid) or the data-agnostic rule (``"agn"``: L^-1 / 1 / L calibrated at depth 2).
    Init as in Fig. 2: w^L = 0.1 (chain), w = 0.01 (residual).  Diverged runs are inf."""
    Ls = np.asarray(depths, dtype=np.float64)[:, None]
    taus = 1.0 / np.asarray(grid, dtype=np.float64)[None, :]
    fn = th.max_stable_lr if rule == "dep" else th.agnostic_lr
    lr = fn(Ls, 1.0, r, taus, arch)
    w0 = th.balanced_weight(0.1, Ls, "chain") if arch == "chain" else np.full_like(Ls, 0.01)
    e = sim.balanced_gd(arch, Ls, 1.0, r, w0, lr, steps)[..., -1]
    loss = 0.5 * (r * e) ** 2
    return np.where(np.isfinite(loss), loss, np.inf)


def _best(loss: np.ndarray, grid: Sequence[float]) -> list[float]:
    """The best grid point per row; a row whose minimum is shared by several points gives nan."""
    out = []
    for row in loss:
        hits = np.flatnonzero(row == row.min())
        out.append(float(grid[hits[0]]) if hits.size == 1 else math.nan)
    return out


def check_transfer(archs: Sequence[str] = th.ARCHS, depths: Sequence[int] = TRANSFER_DEPTHS,
                   grid: Sequence[float] = TRANSFER_GRID) -> list[Record]:
    """Fig. 2: the best tau^-1 after 30 steps is the same at every depth under the data-dependent rule, and
    moves under the data-agnostic one.  Measured: the spread (max - min) of the best tau^-1 across depths,
    worst over the data ratios (dependent) or smallest over them (agnostic)."""
    out = []
    for arch in archs:
        spreads = {"dep": [], "agn": []}
        text = {"dep": [], "agn": []}
        for r in TRANSFER_RATIOS[arch]:
            for rule in ("dep", "agn"):
                best = _best(transfer_losses(arch, r, rule, depths, grid), grid)
                spreads[rule].append(max(best) - min(best) if not any(map(math.isnan, best)) else math.nan)
                text[rule].append(f"r = {r:g}: " + ", ".join(f"{b:g}" for b in best))
        dep = max(spreads["dep"]) if not any(map(math.isnan, spreads["dep"])) else math.nan
        agn = min(spreads["agn"]) if not any(map(math.isnan, spreads["agn"])) else math.nan
        rule_text = {"chain": "L^-1", "res1": "L^0", "res2": "L^1"}[arch]
        eq = {"chain": "eq. 5", "res1": "eq. 28", "res2": "eq. 34"}[arch]
        out.append(record(f"transfer ({arch}, {eq}): spread of best tau^-1 across depths", dep, 0.0,
                          detail=f"best tau^-1 at depths {tuple(depths)}: " + "; ".join(text["dep"])))
        out.append(record(f"transfer ({arch}, agnostic eta ~ {rule_text}): spread of best tau^-1", agn, 0.0, op=">",
                          detail=f"best tau^-1 at depths {tuple(depths)}: " + "; ".join(text["agn"])))
    return out


# ---- 6. matrix networks (section F.3) ------------------------------------------------------------------------
def check_matrix(depths: Sequence[int] = (1, 2, 3, 4), bound: float = 1e-8) -> list[Record]:
    """Deep matrix networks: the aligned Hessian spectrum (per-mode kappa_i and the cross-mode blocks)
    against the autograd Hessian at the balanced minimum; the conservative bound on unaligned data."""
    out = []
    lam, s = (2.0, 0.5, 1.3), (1.5, 0.4)  # two signal modes, one signal-free input direction
    worst, kappa_note = 0.0, ""
    for d_out in (2, 3):
        x, y = sim.aligned_data(lam, s, d_out)
        m = th.data_moments(x, y)
        for L in depths:
            dims = [3] + [3] * (L - 1) + [d_out]
            model = DeepLinear(dims, dtype=torch.float64).balanced_(m.target)
            eig = torch.linalg.eigvalsh(sim.hessian(model, x, y)).numpy()[::-1]
            pred = th.aligned_hessian_spectrum(L, m.mode_lam, m.s, m.lam_rest, d_out - m.s.size)
            top = eig[: pred.size]
            rest = float(np.max(np.abs(eig[pred.size:]), initial=0.0)) / eig[0]  # predicted zero
            err = max(float(np.max(np.abs(top / pred - 1.0))), rest)
            worst = max(worst, err)
            if L == 2 and d_out == 2:
                kappa = np.asarray(th.mode_sharpness(L, m.mode_lam, m.s))
                kappa_note = (f"depth 2: kappa_i = {', '.join(f'{k:.4f}' for k in kappa)} but top eigenvalue "
                              f"{eig[0]:.4f} (a cross-mode block)")
    out.append(record("matrix, aligned data: Hessian spectrum = per-mode kappa_i + cross-mode blocks, rel. error",
                      worst, bound, detail=f"depths {tuple(depths)}, lam = {lam}, s = {s}, d_out in (2, 3); "
                                           + kappa_note))
    # whitened, aligned data: the conservative bound is exact, and equals max kappa_i
    x, y = sim.aligned_data((1.0, 1.0, 1.0), (1.5, 0.4), 2)
    m = th.data_moments(x, y)
    worst = 0.0
    for L in depths:
        model = DeepLinear([3] + [3] * (L - 1) + [2], dtype=torch.float64).balanced_(m.target)
        top = sim.top_eigenvalue(sim.hessian(model, x, y))
        kappa_max = float(np.max(th.mode_sharpness(L, m.mode_lam, m.s)))
        worst = max(worst, abs(top / float(th.sharpness_bound(L, m)) - 1.0), abs(top / kappa_max - 1.0))
    out.append(record("matrix, whitened aligned data: top eigenvalue = max kappa_i = bound, rel. error", worst,
                      bound, detail=f"depths {tuple(depths)}"))
    # unaligned random data: top eigenvalue <= bound
    rng = np.random.default_rng(1)
    ratio_max = 0.0
    for trial in range(3):
        x = torch.from_numpy(rng.standard_normal((64, 4)) @ rng.standard_normal((4, 4)))
        y = x @ torch.from_numpy(rng.standard_normal((4, 3))) + 0.3 * torch.from_numpy(rng.standard_normal((64, 3)))
        m = th.data_moments(x, y)
        for L in (2, 3):
            model = DeepLinear([4] + [4] * (L - 1) + [3], dtype=torch.float64).balanced_(m.target)
            top = sim.top_eigenvalue(sim.hessian(model, x, y))
            ratio_max = max(ratio_max, top / float(th.sharpness_bound(L, m)))
    out.append(record("matrix, unaligned data: top eigenvalue / conservative bound", ratio_max, 1.0,
                      detail="3 random data sets, depths 2 and 3, widths 4"))
    return out


CHECKS: dict[str, Callable[[], list[Record]]] = {
    "sharpness": check_sharpness,
    "stability": check_stability,
    "time_course": check_time_course,
    "closed_forms": check_closed_forms,
    "plateau": check_plateau,
    "transfer": check_transfer,
    "matrix": check_matrix,
}


# two-step layer balancing (arXiv 2606.00340): groups balance_* of torch_layerlr.validate.balancing
from torch_layerlr.validate import balancing as _balancing  # noqa: E402  (needs record() above)

CHECKS.update(_balancing.CHECKS)

# multi-pathway networks and the sharpness toolkit (arXiv 2606.05219): groups multipath_* of
# torch_layerlr.validate.multipath
from torch_layerlr.validate import multipath as _multipath  # noqa: E402

CHECKS.update(_multipath.CHECKS)


def run_all(progress: Callable[[str], Any] = lambda s: None) -> list[Record]:
    records = []
    for name, fn in CHECKS.items():
        progress(name)
        records += fn()
    return records
