r"""Validation of the multi-pathway theory (arXiv 2606.05219; :mod:`torch_layerlr.theory.multipath`) and of the
sharpness toolkit (:mod:`torch_layerlr.sharpness`), check groups ``multipath_*``:

* ``multipath_hessian``: :func:`~torch_layerlr.sharpness.top_eigenvalue` and
  :func:`~torch_layerlr.sharpness.layer_sharpness` against ``eigvalsh`` of the full autograd Hessian (float64)
  on small nets, and against the closed forms (eq. 13 of the scalar chain, E.2) at random balanced minima;
* ``multipath_gd``: gradient descent on :class:`~torch_layerlr.models.MultiPathLinear` (H = 2, L = 10 and 20,
  unequal small start) across :math:`\eta/(2/S_1)` from 0.3 to beyond :math:`2/\lambda^{\min}`: final split
  against :func:`~torch_layerlr.theory.multipath.predicted_split`, final sharpness against :math:`2/\eta`,
  winner-takes-all below :math:`2/S_1`, no convergence above :math:`2/\lambda^{\min}`;
* ``multipath_depths``: depths {3, 5, 7} at :math:`\eta` just below :math:`2/\lambda^{\min}`: the final split
  against :func:`~torch_layerlr.theory.multipath.flattest_split`;
* ``multipath_wcr``: :math:`\gamma_{\rm WCR}` against a brute-force scan of the single-path map, and the sign
  flip of gradient descent above :math:`\eta_{\rm WCR}` (none below);
* ``multipath_tanh``: a two-path Tanh MLP (the paper's nonlinear case): the minority path's share grows with
  :math:`\eta`, and the final sharpness sits at :math:`2/\eta`.

Long runs use the scalar reduction, which is exact for width 1 from a depth-balanced start: every layer of
path :math:`h` holds the same :math:`w_h`, GD keeps them equal, and
:math:`w_h \leftarrow w_h - \eta\,r\,w_h^{L_h-1}`, :math:`r = \sum_kw_k^{L_k} - \sigma_\star`
(:func:`balanced_paths_gd`); a check runs :class:`~torch_layerlr.optim.LayerwiseSGD` on the module itself
against it. All runs are float64 and cached, so checks and figures share them.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from torch_layerlr.models import MultiPathLinear
from torch_layerlr.optim import LayerwiseSGD
from torch_layerlr.sharpness import layer_sharpness, module_groups, top_eigenvalue
from torch_layerlr.theory import multipath as mp
from torch_layerlr.theory.scalar_chain import sharpness as chain_sharpness

__all__ = ["CHECKS", "balanced_paths_gd", "sweep", "hetero_runs", "tanh_runs", "check_hessian", "check_gd",
           "check_depths", "check_wcr", "check_tanh", "GD_DEPTHS", "INIT", "HETERO_DEPTHS", "FIGURE_RATIOS",
           "TRAJECTORY_EVERY"]

F64 = torch.float64
INIT = (1e-2, 5e-3)  # alpha_h: small and unequal, path 1 ahead
GD_DEPTHS = (10, 20)
GD_STEPS = 60_000  # the slowest in-window run (eta just above 2/S_1) converges in ~40 000 steps
BELOW = (0.3, 0.6, 0.9)  # eta / (2/S_1)
INSIDE = (1.05, 1.2, 1.4, 1.6)  # plus 0.99 of the upper edge 2/lambda_min
BEYOND = (1.02, 1.1)  # times the upper edge
HETERO_DEPTHS = (3, 5, 7)
HETERO_FRACTION = 0.999  # eta = 0.999 * 2/lambda_min
TOL_CONVERGED = 1e-9  # |residual| at the end of a converged run


def _record(*args: Any, **kwargs: Any) -> dict:
    from torch_layerlr.validate.checks import record

    return record(*args, **kwargs)


# ---- the scalar reduction ----------------------------------------------------------------------------------
def balanced_paths_gd(depths: Sequence[int], alphas: Sequence[float], lrs: Sequence[float], steps: int,
                      sigma: float = 1.0, every: int = 0) -> dict[str, np.ndarray]:
    r"""GD on the width-1 multi-path net from :math:`w_h(0) = \alpha_h^{1/L_h}`, one run per step size in
    ``lrs`` (vectorized): :math:`r = \sum_h w_h^{L_h} - \sigma`, :math:`w_h \leftarrow w_h - \eta r w_h^{L_h-1}`.

    Returns ``sigmas`` (runs, paths) and ``residual`` (runs,) at the end, ``flipped`` (runs,): some weight went
    below 0, and with ``every`` > 0 the path products ``trajectory`` (runs, steps // every + 1, paths)."""
    L = np.asarray(depths, dtype=np.float64)
    eta = np.asarray(lrs, dtype=np.float64)[:, None]
    w = np.tile(np.asarray(alphas, dtype=np.float64) ** (1.0 / L), (eta.shape[0], 1))
    flipped = np.zeros(eta.shape[0], dtype=bool)
    traj = [w ** L] if every else []
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, steps + 1):
            r = (w ** L).sum(1, keepdims=True) - sigma
            w = w - eta * r * w ** (L - 1.0)
            flipped |= (w < 0).any(1)
            if every and k % every == 0:
                traj.append(w ** L)
        r = (w ** L).sum(1) - sigma
    out = dict(sigmas=w ** L, residual=r, flipped=flipped)
    if every:
        out["trajectory"] = np.stack(traj, axis=1)
    return out


def _edge_ratio(L: int, paths: int = 2) -> float:
    """(2/lambda_min) / (2/S_1) = 1/rho."""
    return 1.0 / float(mp.sharpness_ratio(paths, L))


def _wcr_ratio(L: int) -> float:
    """eta_WCR / (2/S_1)."""
    return float(mp.gamma_wcr(L)) / 2.0


FIGURE_RATIOS = tuple(np.round(np.linspace(0.2, 3.2, 46), 4))  # eta / (2/S_1): the figures' grid
TRAJECTORY_EVERY = 20


@functools.lru_cache(maxsize=None)
def sweep(L: int) -> dict[str, Any]:
    """H = 2, depth L, start :data:`INIT`: final states (and trajectories every 20th step) over eta/(2/S_1) below,
    inside and beyond the window and around eta_WCR (``kind``), then the figures' grid (``kind`` "grid"); one
    vectorized run, whose cost hardly depends on the number of step sizes."""
    edge, wcr = _edge_ratio(L), _wcr_ratio(L)
    ratios = np.array(BELOW + INSIDE + (0.99 * edge,) + tuple(b * edge for b in BEYOND)
                      + (0.95 * wcr, 1.05 * wcr, 1.2 * wcr) + FIGURE_RATIOS)
    kind = np.array(["below"] * len(BELOW) + ["inside"] * (len(INSIDE) + 1) + ["beyond"] * len(BEYOND)
                    + ["wcr-"] + ["wcr+"] * 2 + ["grid"] * len(FIGURE_RATIOS))
    S1 = float(mp.single_path_sharpness(1.0, L))
    lrs = ratios * 2.0 / S1
    run = balanced_paths_gd((L, L), INIT, lrs, GD_STEPS, every=TRAJECTORY_EVERY)
    return dict(L=L, ratios=ratios, kind=kind, lrs=lrs, S1=S1, edge=edge, wcr=wcr, **run)


@functools.lru_cache(maxsize=None)
def hetero_runs() -> dict[str, Any]:
    """Depths {3, 5, 7}, two starts (the deepest path ahead, then behind), eta = 0.999 * 2/lambda_min."""
    flat = mp.flattest_split(1.0, HETERO_DEPTHS)
    lam = float(mp.mode_sharpness(flat, HETERO_DEPTHS))
    lr = HETERO_FRACTION * 2.0 / lam
    starts = ((1e-2, 5e-3, 2e-3), (2e-3, 5e-3, 1e-2))
    runs = [balanced_paths_gd(HETERO_DEPTHS, a, [lr], GD_STEPS) for a in starts]
    return dict(flat=flat, lam=lam, lr=lr, starts=starts, sigmas=np.concatenate([r["sigmas"] for r in runs]),
                residual=np.concatenate([r["residual"] for r in runs]))


# ---- 1. Hessians ---------------------------------------------------------------------------------------------
def _full_hessian(loss_fn: Callable[[], Tensor], params: Sequence[Tensor]) -> Tensor:
    """The full Hessian by autograd (one gradient, then each of its entries differentiated)."""
    grads = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_fn(), params, create_graph=True)])
    rows = [torch.cat([h.reshape(-1) for h in torch.autograd.grad(g, params, retain_graph=True)]) for g in grads]
    return torch.stack(rows)


def _matrix_loss(net: MultiPathLinear, target: Tensor) -> Callable[[], Tensor]:
    r""":math:`\frac12\|M - M_\star\|_F^2`: the net on the identity batch gives :math:`M^\top`."""
    eye = torch.eye(net.width, dtype=F64)
    return lambda: 0.5 * (net(eye) - target.T).pow(2).sum()


def _balanced_net(split: np.ndarray, depths: Sequence[int]) -> MultiPathLinear:
    """Layers of path h set to diag(split[h]^(1/L_h)): a balanced point with path products diag(split[h])."""
    split = np.atleast_2d(np.asarray(split, dtype=np.float64).T).T  # (paths, width)
    net = MultiPathLinear(len(depths), list(depths), width=split.shape[1], alphas=1.0, dtype=F64)
    with torch.no_grad():
        for layers, row, L in zip(net.paths, split, depths):
            for w in layers:
                w.copy_(torch.diag(torch.from_numpy(row ** (1.0 / L))))
    return net


def _small_mlp() -> tuple[nn.Module, Callable[[], Tensor]]:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64)
    x, y = torch.randn(24, 3, generator=g, dtype=F64), torch.randint(0, 2, (24,), generator=g)
    return net, lambda: nn.functional.cross_entropy(net(x), y)


def check_hessian(bound: float = 1e-8, tol: float = 1e-12) -> list[dict]:
    """Lanczos (top_eigenvalue, layer_sharpness) against eigvalsh of the autograd Hessian and of its diagonal
    blocks; and against E.2 / eq. 13 at random balanced minima."""
    rng = np.random.default_rng(0)
    nets = [("Tanh MLP 3-5-4-2 (cross-entropy)",) + _small_mlp()]
    split = rng.dirichlet((1.0, 1.0), size=2).T * np.array([1.0, 0.6])  # two paths x two modes
    net = _balanced_net(split, (3, 4))
    nets.append(("MultiPathLinear H = 2, depths (3, 4), width 2", net,
                 _matrix_loss(net, torch.diag(torch.tensor([1.0, 0.6], dtype=F64)))))
    worst_top = worst_layer = 0.0
    for _, model, loss_fn in nets:
        params = list(model.parameters())
        hess = _full_hessian(loss_fn, params)
        top = top_eigenvalue(loss_fn, params, tol=tol)
        worst_top = max(worst_top, abs(top.value / float(torch.linalg.eigvalsh(hess)[-1]) - 1.0))
        groups = module_groups(model) if not isinstance(model, MultiPathLinear) else \
            {f"path {h} layer {l}": [w] for h, layers in enumerate(model.paths) for l, w in enumerate(layers)}
        pairs = layer_sharpness(loss_fn, groups, tol=tol)
        offsets = {id(p): o for p, o in zip(params, np.cumsum([0] + [p.numel() for p in params]))}
        for name, ps in groups.items():
            idx = torch.cat([torch.arange(offsets[id(p)], offsets[id(p)] + p.numel()) for p in ps])
            block = torch.linalg.eigvalsh(hess[idx][:, idx])[-1]
            worst_layer = max(worst_layer, abs(pairs[name].value / float(block) - 1.0))
    names = "; ".join(n for n, _, _ in nets)
    out = [_record("multipath: top_eigenvalue = eigvalsh of the autograd Hessian (float64), rel. error",
                   worst_top, bound, detail=names),
           _record("multipath: layer_sharpness = eigvalsh of each diagonal Hessian block (float64), rel. error",
                   worst_layer, bound, detail=names + "; all blocks in one batched Lanczos")]
    # closed forms at random balanced minima, width 1: eq. 13 (one path), E.2 (paths of equal or mixed depth)
    worst_top = worst_layer = 0.0
    for depths in ((2,), (5,), (12,), (10, 10), (3, 5, 7), (20, 20)):
        for _ in range(3):
            target = float(rng.uniform(0.5, 2.0))
            split = rng.dirichlet(np.ones(len(depths))) * target
            net = _balanced_net(split[:, None], depths)
            loss_fn = _matrix_loss(net, torch.tensor([[target]], dtype=F64))
            closed = float(chain_sharpness(depths[0], 1.0, target)) if len(depths) == 1 else \
                float(mp.mode_sharpness(split, depths))
            top = top_eigenvalue(loss_fn, list(net.parameters()), tol=tol)
            worst_top = max(worst_top, abs(top.value / closed - 1.0))
            # a layer's 1x1 block at the minimum: (d sigma_h / d w)^2 = sigma_h^(2 - 2/L_h)
            groups = [[w] for layers in net.paths for w in layers]
            per_layer = np.concatenate([np.full(L, s ** (2.0 - 2.0 / L)) for s, L in zip(split, depths)])
            got = np.array([p.value for p in layer_sharpness(loss_fn, groups, tol=tol)])
            worst_layer = max(worst_layer, float(np.max(np.abs(got / per_layer - 1.0))))
    # width 2: two modes; the top eigenvalue is the larger mode's E.2 value
    for _ in range(3):
        targets = rng.uniform(0.3, 2.0, size=2)
        split = rng.dirichlet((1.0, 1.0), size=2).T * targets  # (paths, modes)
        net = _balanced_net(split, (4, 6))
        loss_fn = _matrix_loss(net, torch.diag(torch.from_numpy(targets)))
        closed = float(np.max(mp.mode_sharpness(split.T, (4, 6))))
        worst_top = max(worst_top, abs(top_eigenvalue(loss_fn, list(net.parameters()), tol=tol).value / closed - 1))
    cases_text = "one path L in (2, 5, 12) (eq. 13); paths (10, 10), (3, 5, 7), (20, 20) (E.2); width 2 with " \
                 "depths (4, 6), two modes (E.2, the larger mode); 3 random splits and targets each"
    out += [_record("multipath: top_eigenvalue = eq. 13 / E.2 at random balanced minima, rel. error", worst_top,
                    bound, detail=cases_text),
            _record("multipath: layer_sharpness = sigma_h^(2-2/L_h) per layer at random balanced minima, rel. error",
                    worst_layer, bound, detail="width 1, the same cases")]
    return out


# ---- 2. GD across the windows --------------------------------------------------------------------------------
def _optimizer_run(L: int, ratio: float, steps: int, every: int = 10) -> np.ndarray:
    """LayerwiseSGD (full batch, float64) on MultiPathLinear(2, L) from INIT: path products every ``every``."""
    net = MultiPathLinear(2, L, alphas=INIT, dtype=F64)
    opt = LayerwiseSGD(net.parameters(), lr=ratio * 2.0 / float(mp.single_path_sharpness(1.0, L)))
    loss_fn = _matrix_loss(net, torch.ones(1, 1, dtype=F64))
    out = [net.path_products()[:, 0, 0].detach().numpy().copy()]
    for k in range(1, steps + 1):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
        if k % every == 0:
            out.append(net.path_products()[:, 0, 0].detach().numpy().copy())
    return np.array(out)


def check_gd(optimizer_steps: int = 1200) -> list[dict]:
    """The window checks on the scalar reduction, and the reduction against LayerwiseSGD on the module."""
    worst_end = worst_path = 0.0
    for L in GD_DEPTHS:
        ratio = 1.6  # converges within ~1100 steps at both depths
        got = _optimizer_run(L, ratio, optimizer_steps)
        ref = balanced_paths_gd((L, L), INIT, [ratio * 2.0 / L], optimizer_steps, every=10)["trajectory"][0]
        worst_end = max(worst_end, float(np.max(np.abs(got[-1] - ref[-1]))))
        worst_path = max(worst_path, float(np.max(np.abs(got - ref))))
    out = [_record("multipath GD: LayerwiseSGD on MultiPathLinear = scalar reduction at the end, max |path product "
                   "diff|", worst_end, 1e-9,
                   detail=f"H = 2, L in {GD_DEPTHS}, eta = 1.6 * 2/S_1, {optimizer_steps} steps (converged after "
                          f"the edge-of-stability drift); largest difference on the way {worst_path:.1e} (rounding "
                          "amplified while the dominant path overshoots, then contracted)")]
    below, split_err, sharp_err, resid, beyond = 0.0, 0.0, 0.0, 0.0, math.inf
    text = []
    for L in GD_DEPTHS:
        s = sweep(L)
        minority = s["sigmas"].min(1) / s["sigmas"].sum(1)
        pred = mp.predicted_split(1.0, 2, L, s["lrs"])
        inside = s["kind"] == "inside"
        final_sharp = np.asarray(mp.mode_sharpness(s["sigmas"][inside], L))
        below = max(below, float(minority[s["kind"] == "below"].max()))
        split_err = max(split_err, float(np.max(np.abs(np.sort(s["sigmas"][inside], 1)[:, ::-1] - pred[inside]))))
        sharp_err = max(sharp_err, float(np.max(np.abs(final_sharp * s["lrs"][inside] / 2.0 - 1.0))))
        resid = max(resid, float(np.max(np.abs(s["residual"][inside]))))
        over = np.isin(s["kind"], ("beyond", "wcr-", "wcr+"))
        r = np.abs(s["residual"][over])
        beyond = min(beyond, float(np.min(np.where(np.isfinite(r), r, np.inf))))
        text.append(f"L = {L}: 2/lambda_min = {s['edge']:.3f}, eta_WCR = {s['wcr']:.3f} (units of 2/S_1); "
                    + ", ".join(f"{x:.3f}: {p:.4f}" for x, p, k in zip(s["ratios"], 1.0 - minority, s["kind"])
                                if k != "grid"))
    grid = (f"H = 2, L in {GD_DEPTHS}, alpha(0) = {INIT}, {GD_STEPS} steps; eta/(2/S_1) below {BELOW}, inside "
            f"{INSIDE} and 0.99 * 2/lambda_min, beyond {BEYOND} x 2/lambda_min and 0.95, 1.05, 1.2 x eta_WCR")
    out += [
        _record("multipath GD, eta < 2/S_1: winner-takes-all, largest minority share", below, 0.02,
                detail=grid + "; dominant share per eta: " + "; ".join(text)),
        _record("multipath GD, 2/S_1 < eta < 2/lambda_min: final split - predicted_split, max |share diff|",
                split_err, 0.02, detail="the drift stops just below sharpness 2/eta, so the split is slightly "
                                        "more balanced than predicted"),
        _record("multipath GD, inside the window: final sharpness (E.2) / (2/eta), |ratio - 1|", sharp_err, 0.02),
        _record("multipath GD, inside the window: converged, max |residual| at the end", resid, TOL_CONVERGED),
        _record("multipath GD, eta > 2/lambda_min: no convergence, min |residual| at the end", beyond, 1e-3, op=">",
                detail="period-2 orbits beyond 2/lambda_min; collapse to the saddle at 0 near and above eta_WCR"),
    ]
    return out


def check_depths(bound: float = 0.03) -> list[dict]:
    """Heterogeneous depths {3, 5, 7}: the final split at eta = 0.999 * 2/lambda_min against flattest_split."""
    h = hetero_runs()
    err = float(np.max(np.abs(h["sigmas"] - h["flat"])))
    sharp = np.asarray(mp.mode_sharpness(h["sigmas"], HETERO_DEPTHS))
    return [
        _record(f"multipath GD, depths {HETERO_DEPTHS} at eta = {HETERO_FRACTION} x 2/lambda_min: final split - "
                "flattest_split, max |diff|", err, bound,
                detail=f"flattest split {np.round(h['flat'], 4).tolist()}, lambda_min = {h['lam']:.4f}; final splits "
                       + "; ".join(f"start {a}: {np.round(s, 4).tolist()}" for a, s in zip(h["starts"], h["sigmas"]))
                       + " (a sharpness 0.1% above the minimum allows ~sqrt(0.001) of split)"),
        _record(f"multipath GD, depths {HETERO_DEPTHS}: final sharpness / (2/eta), |ratio - 1|",
                float(np.max(np.abs(sharp * h["lr"] / 2.0 - 1.0))), 0.02),
        _record(f"multipath GD, depths {HETERO_DEPTHS}: converged, max |residual| at the end",
                float(np.max(np.abs(h["residual"]))), TOL_CONVERGED),
    ]


# ---- 3. worst-case return -----------------------------------------------------------------------------------
WCR_DEPTHS = (3, 10, 20, 100)


def _two_step_min(L: int, gamma: float, points: int = 200_001) -> float:
    r"""Brute force: :math:`\min_w f(f(w))` over a grid of starts :math:`w\in(0, 1)` of the single-path map
    (positive, if tiny, when every start returns; negative when one overshoots through 0)."""
    w = np.linspace(0.0, 1.0, points)[1:-1]
    for _ in range(2):
        w = w - (gamma / L) * w ** (L - 1) * (w ** L - 1.0)
    return float(w.min())


def _gamma_scan(L: int) -> float:
    """gamma_WCR without the golden-section peak: bisection on the sign of the brute-force two-step minimum."""
    lo, hi = 2.0, 4.0 + 4.0 * math.log(L)
    for _ in range(36):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _two_step_min(L, mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def check_wcr(bound: float = 1e-6) -> list[dict]:
    """gamma_WCR(L) (golden section + bisection) against a brute-force scan of starts; GD's sign flips."""
    gam = {L: float(mp.gamma_wcr(L)) for L in WCR_DEPTHS}
    scan = {L: _gamma_scan(L) for L in WCR_DEPTHS}
    err = max(abs(scan[L] / gam[L] - 1.0) for L in WCR_DEPTHS)
    text = ", ".join(f"L = {L}: {g:.6f} (scan {scan[L]:.6f})" for L, g in gam.items())
    out = [_record("multipath WCR: gamma_WCR against a scan of 2e5 starts w in (0, 1), rel. error", err, bound,
                   detail=f"gamma_WCR {text}; grows like 2 ln L")]
    flips_below, flips_above, n_above, failed_loss, lines = 0, 0, 0, math.inf, []
    checked = [(sweep(L)["kind"] != "grid") for L in GD_DEPTHS]
    runs = [(2, L, sweep(L)["ratios"][c], {k: sweep(L)[k][c] for k in ("flipped", "residual")})
            for L, c in zip(GD_DEPTHS, checked)]
    L, H = 10, 4  # here eta_WCR < 2/lambda_min: the WCR bound is the top of the window
    ratios = np.array([0.6, 0.8, 0.9, 1.1, 1.2]) * _wcr_ratio(L)
    runs.append((H, L, ratios, balanced_paths_gd((L,) * H, np.geomspace(1e-2, 2e-3, H), ratios * 2.0 / L,
                                                 GD_STEPS // 2)))
    for H, L, ratios, run in runs:
        over = ratios > _wcr_ratio(L)
        flips_below += int(np.sum(run["flipped"][~over]))
        flips_above += int(np.sum(run["flipped"][over]))
        n_above += int(np.sum(over))
        failed_loss = min(failed_loss, float(np.min(0.5 * run["residual"][over] ** 2)))
        lines.append(f"H = {H}, L = {L} (2/lambda_min = {_edge_ratio(L, H):.3f}, eta_WCR = {_wcr_ratio(L):.3f}): "
                     "flips at " + ", ".join(f"{x:.2f}" for x in ratios[run["flipped"]]))
    detail = "; ".join(lines) + " (eta in units of 2/S_1)"
    out += [_record("multipath WCR: GD runs below eta_WCR whose weights flip sign (count)", flips_below, 0,
                    detail=detail + "; runs at 0.95 x eta_WCR still fail, by collapse to 0 without a flip"),
            _record(f"multipath WCR: GD runs above eta_WCR that flip sign (count of {n_above}; the worst case needs "
                    "not be met)", flips_above, 0, op=">"),
            _record("multipath WCR: final loss of the runs above eta_WCR (re-balancing fails)", failed_loss, 0.1,
                    op=">")]
    return out


# ---- 4. two-path Tanh MLP -----------------------------------------------------------------------------------
TANH_LRS = (0.04, 0.1, 0.16, 0.24, 0.34)
TANH_STEPS = 1200


def _tanh_path(d: int, width: int, depth: int, scale: float, g: torch.Generator) -> nn.ParameterList:
    dims = [d] + [width] * (depth - 1) + [1]
    return nn.ParameterList([nn.Parameter(scale * torch.randn(o, i, generator=g, dtype=F64) / math.sqrt(i))
                             for i, o in zip(dims[:-1], dims[1:])])


def _tanh_out(layers: nn.ParameterList, x: Tensor) -> Tensor:
    for w in layers[:-1]:
        x = torch.tanh(x @ w.T)
    return x @ layers[-1].T


@functools.lru_cache(maxsize=None)
def tanh_runs() -> dict[str, Any]:
    """Two paths of depth 4 (tanh, width 6) on 64 samples of a unit linear teacher, path 1 started larger
    (scale 0.6 vs 0.4); one LayerwiseSGD per step size in :data:`TANH_LRS`, all runs in one loop (one param group
    each). Returns the shares, the final losses and sharpness (top_eigenvalue), and the share trajectories."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g, dtype=F64)
    beta = torch.randn(4, generator=g, dtype=F64)
    y = (x @ (beta / beta.norm()))[:, None]
    runs = []
    for _ in TANH_LRS:
        init = torch.Generator().manual_seed(1)
        runs.append(nn.ModuleList([_tanh_path(4, 6, 4, scale, init) for scale in (0.6, 0.4)]))
    opt = LayerwiseSGD([dict(params=list(r.parameters()), lr=lr) for r, lr in zip(runs, TANH_LRS)], lr=0.0)

    def loss_of(paths: nn.ModuleList) -> Tensor:
        return 0.5 * (_tanh_out(paths[0], x) + _tanh_out(paths[1], x) - y).pow(2).sum(1).mean()

    def shares() -> list[float]:
        with torch.no_grad():
            norms = [[float(_tanh_out(p, x).norm()) for p in r] for r in runs]
        return [min(n) / sum(n) for n in norms]

    traj = [shares()]
    for k in range(1, TANH_STEPS + 1):
        opt.zero_grad()
        sum(loss_of(r) for r in runs).backward()
        opt.step()
        if k % 50 == 0:
            traj.append(shares())
    sharp = [top_eigenvalue(lambda r=r: loss_of(r), list(r.parameters()), tol=1e-8).value for r in runs]
    with torch.no_grad():
        losses = [float(loss_of(r)) for r in runs]
    return dict(lrs=np.array(TANH_LRS), minority=np.array(traj[-1]), sharpness=np.array(sharp),
                loss=np.array(losses), trajectory=np.array(traj), every=50)


def check_tanh() -> list[dict]:
    """Qualitative: the minority path's share rises with eta (monotone), and the runs whose eta exceeds 2/S of
    the smallest-eta run end near the edge of stability."""
    t = tanh_runs()
    drops = int(np.sum(np.diff(t["minority"]) <= 0))
    edge = 2.0 / t["sharpness"][0]
    eos = t["lrs"] > edge
    ratio = t["sharpness"][eos] * t["lrs"][eos] / 2.0
    detail = ", ".join(f"eta {lr:g}: share {m:.3f}, eta S/2 {s * lr / 2:.3f}, loss {l:.1e}"
                       for lr, m, s, l in zip(t["lrs"], t["minority"], t["sharpness"], t["loss"]))
    return [_record("multipath Tanh MLP: minority share not increasing from one eta to the next (count)", drops, 0,
                    detail=f"{TANH_STEPS} full-batch steps; " + detail),
            _record(f"multipath Tanh MLP, eta > 2/S(smallest eta) = {edge:.3f}: final sharpness / (2/eta), "
                    "max |ratio - 1|", float(np.max(np.abs(ratio - 1.0))) if eos.any() else math.inf, 0.15,
                    detail="qualitative: edge-of-stability oscillation keeps S near 2/eta at the end")]


CHECKS: dict[str, Callable[[], list[dict]]] = {
    "multipath_hessian": check_hessian,
    "multipath_gd": check_gd,
    "multipath_depths": check_depths,
    "multipath_wcr": check_wcr,
    "multipath_tanh": check_tanh,
}
