"""PNG figures reproducing the paper's Figures 1-4, with the closed forms drawn next to the simulations.

matplotlib is imported inside :func:`make_figures` only (Agg backend), so nothing else needs it.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from torch_layerlr import theory as th
from torch_layerlr.validate import checks, sim

__all__ = ["make_figures"]

_LOSS_FLOOR = 1e-35  # Fig. 2 plots loss on a log axis; losses below (down to exact 0) are drawn at the floor


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(plt: Any, n: int) -> list:
    cmap = plt.get_cmap("viridis")
    return [cmap(i / max(n - 1, 1) * 0.9) for i in range(n)]


def figure1(path: str) -> str:
    """Fig. 1: sharper minima with depth (A), stable GD at tau = 1 (B), oscillation at tau = 0.5 (C); plus (D)
    the sharpness eq. 13/27/33 against autograd Hessians."""
    plt = _plt()
    depths = [1, 2, 4, 8, 16]
    colors = _colors(plt, len(depths))
    fig, ax = plt.subplots(1, 4, figsize=(17, 3.8))
    w = np.linspace(0.0, 1.4, 400)
    for L, c in zip(depths, colors):
        ax[0].plot(w, 0.5 * (1 - w ** L) ** 2, color=c, label=f"L={L}")
        # along the balanced line, d^2/dw^2 = L * S with S from eq. 13 (mu = 1)
        S = float(th.sharpness(L, 1.0, 1.0))
        ax[0].plot(w, 0.5 * L * S * (w - 1) ** 2, color=c, ls=":", lw=1)
    ax[0].set(ylim=(0, 0.6), xlabel="w", ylabel=r"$\mathcal{L}(w) = (1-w^L)^2/2$",
              title="A: loss; dotted: curvature $L\\cdot S$ (eq. 13)")
    ax[0].legend(fontsize=8)
    for k, tau, title in ((1, 1.0, r"B: GD, $\tau = 1$ (eq. 5)"), (2, 0.5, r"C: GD, $\tau = 0.5$ (stability edge)")):
        steps = 40
        alpha0 = 0.1
        for L, c in zip(depths, colors):
            w0 = th.balanced_weight(alpha0, L)
            a = 1 + sim.balanced_gd("chain", L, 1.0, 1.0, w0, th.max_stable_lr(L, 1.0, 1.0, tau), steps)
            ax[k].plot(np.arange(steps + 1), a, color=c, marker=".", ms=3, lw=1, label=f"L={L}")
            if tau == 1.0:
                ax[k].plot(np.linspace(0, steps, 200), th.alpha_at(np.linspace(0, steps, 200), alpha0, L, tau),
                           color=c, ls="--", lw=0.8)
        ax[k].set(xlabel="GD step", ylabel=r"total weight $w^L$", title=title, ylim=(0, 1.6))
    ax[1].text(0.98, 0.05, "dashed: gradient flow, eq. 7/9", transform=ax[1].transAxes, ha="right", fontsize=8)
    ax[1].legend(fontsize=8)
    # D: sharpness against the Hessian
    Ls = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32])
    for arch, r, c in (("chain", 2.0, "C0"), ("res1", 2.0, "C1"), ("res2", 2.0, "C2"), ("chain", 0.5, "C3"),
                       ("res1", 0.5, "C4")):
        grid = np.arange(1, 33)
        ax[3].plot(grid, th.sharpness(grid, 1.0, r, arch), color=c, lw=1, label=f"{arch}, r={r:g}")
        measured = []
        for L in Ls:
            x, y = sim.scalar_data(1.0, r)
            model = checks.make_model(arch, int(L), 1.0, 1.0, r)
            measured.append(sim.top_eigenvalue(sim.hessian(model, x, y)))
        ax[3].plot(Ls, measured, "o", color=c, ms=4, mfc="none")
    ax[3].set(xscale="log", yscale="log", xlabel="depth L", ylabel="sharpness S",
              title="D: eq. 13/27/33 (lines), Hessian (circles)")
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure2(path: str) -> str:
    """Fig. 2: loss after 30 GD steps against tau^-1, data-dependent rule (left two columns) vs data-agnostic
    rule (right two), for the chain, res1 and res2."""
    plt = _plt()
    depths = checks.TRANSFER_DEPTHS
    grid = np.asarray(checks.TRANSFER_GRID)
    colors = _colors(plt, len(depths))
    fig, axes = plt.subplots(3, 4, figsize=(17, 10), sharex=True)
    agn_text = {"chain": r"$\eta \propto L^{-1}$", "res1": r"$\eta \propto 1$", "res2": r"$\eta \propto L$"}
    dep_text = {"chain": "eq. 5", "res1": "eq. 28", "res2": "eq. 34"}
    for row, arch in enumerate(th.ARCHS):
        r_a, r_b = checks.TRANSFER_RATIOS[arch]
        for col, (rule, r) in enumerate([("dep", r_a), ("dep", r_b), ("agn", r_a), ("agn", r_b)]):
            ax = axes[row, col]
            loss = checks.transfer_losses(arch, r, rule)
            for i, (L, c) in enumerate(zip(depths, colors)):
                shown = np.clip(loss[i], _LOSS_FLOOR, 1e3)
                ax.plot(grid, shown, color=c, marker=".", ms=3, lw=1, label=f"L={L}")
                j = int(np.argmin(loss[i]))
                ax.plot(grid[j], shown[j], "*", color=c, ms=10, mec="k", mew=0.5)
            rule_name = f"data-dependent ({dep_text[arch]})" if rule == "dep" else f"agnostic {agn_text[arch]}"
            ax.set(yscale="log", ylim=(_LOSS_FLOOR / 10, 1e3),
                   title=f"{arch}: {rule_name}, " + r"$\mu_{yx}/\mu_{xx}$" + f" = {r:g}")
            if row == 2:
                ax.set_xlabel(r"$\tau^{-1}$ (learning rate / rule at $\tau=1$)")
            if col == 0:
                ax.set_ylabel("loss after 30 steps")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Fig. 2: stars mark the best grid point; agnostic rules calibrated to the data-dependent one at "
                 f"L = 2; losses below {_LOSS_FLOOR:g} drawn at the floor", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure3(path: str) -> str:
    """Fig. 3: alpha(t) for tau^-1 = 1, 1.5, 1.95, 2.05; alpha(0) = 0.01, mu = 1; dashed: gradient flow."""
    plt = _plt()
    depths = [1, 2, 4, 8, 16]
    colors = _colors(plt, len(depths))
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), sharey=True)
    steps, alpha0 = 120, 0.01
    for ax, inv_tau in zip(axes, (1.0, 1.5, 1.95, 2.05)):
        tau = 1.0 / inv_tau
        for L, c in zip(depths, colors):
            w0 = th.balanced_weight(alpha0, L)
            a = 1 + sim.balanced_gd("chain", L, 1.0, 1.0, w0, th.max_stable_lr(L, 1.0, 1.0, tau), steps)
            ax.plot(np.arange(steps + 1), a, color=c, lw=1, label=f"L={L}")
            t = np.linspace(0, steps, 300)
            ax.plot(t, th.alpha_at(t, alpha0, L, tau), color=c, ls="--", lw=0.8)
        ax.set(title=r"$\tau^{-1}$" + f" = {inv_tau:g}", xlabel="GD step", ylim=(-0.05, 2.0))
    axes[0].set_ylabel(r"$\alpha(t)$")
    axes[0].legend(fontsize=8)
    axes[0].text(0.98, 0.05, "dashed: gradient flow (eq. 7/9)", transform=axes[0].transAxes, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure4(path: str) -> str:
    """Fig. 4: total weight (top) and loss (bottom) against time for several depths and alpha(0); tau^-1 = 0.1,
    mu = 1.  Thick: GD; black dashed: eq. 7 inverted (red: eq. 9, L = inf); dotted verticals: plateau eq. 10.
    Log time axis, so that depth 1 and depth 32 are both readable."""
    plt = _plt()
    depths = [1, 2, 3, 4, 8, 32]
    colors = _colors(plt, len(depths))
    tau = 10.0
    alpha0s = (0.1, 0.01, 0.001)
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    for col, alpha0 in enumerate(alpha0s):
        steps = int(1.05 * float(th.time_to_reach(0.995, alpha0, math.inf, tau)))
        t = np.geomspace(1.0, steps, 400)
        k = np.arange(1, steps + 1)
        for L, c in zip(depths, colors):
            w0 = th.balanced_weight(alpha0, L)
            a = (1 + sim.balanced_gd("chain", L, 1.0, 1.0, w0, th.max_stable_lr(L, 1.0, 1.0, tau), steps))[1:]
            a_th = np.asarray(th.alpha_at(t, alpha0, L, tau))
            axes[0, col].plot(k, a, color=c, lw=3, alpha=0.5, label=f"L={L}")
            axes[1, col].plot(k, 0.5 * (1 - a) ** 2, color=c, lw=3, alpha=0.5)
            axes[0, col].plot(t, a_th, color="k", ls="--", lw=0.7)
            axes[1, col].plot(t, 0.5 * (1 - a_th) ** 2, color="k", ls="--", lw=0.7)
            if L >= 2:
                axes[0, col].axvline(float(th.plateau_duration(alpha0, L, tau)), color=c, ls=":", lw=1)
        a_inf = np.asarray(th.alpha_at(t, alpha0, math.inf, tau))
        axes[0, col].plot(t, a_inf, color="C3", ls="--", lw=1.5, label="L=inf (eq. 9)")
        axes[1, col].plot(t, 0.5 * (1 - a_inf) ** 2, color="C3", ls="--", lw=1.5)
        axes[0, col].axvline(float(th.plateau_duration(alpha0, math.inf, tau)), color="C3", ls=":", lw=1)
        axes[0, col].set(xscale="log", title=r"$\alpha(0)$" + f" = {alpha0:g}", ylabel=r"total weight $w^L$",
                         ylim=(0, 1.05))
        axes[1, col].set(xscale="log", xlabel="GD step", ylabel="loss", ylim=(0, 0.55))
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(r"Fig. 4: $\tau^{-1} = 0.1$, $\mu_{yx} = \mu_{xx} = 1$. Thick: GD; black dashed: eq. 7 inverted; "
                 "red dashed: eq. 9 (L = inf); dotted verticals: plateau T (eq. 10)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def make_figures(out_dir: str, balancing: bool = True) -> list[str]:
    """Write fig1..fig4 PNGs into ``out_dir``, and with ``balancing`` the two-step layer-balancing figures
    (:func:`torch_layerlr.validate.balancing.make_figures`); returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [figure1(os.path.join(out_dir, "fig1_sharpness.png")),
             figure2(os.path.join(out_dir, "fig2_transfer.png")),
             figure3(os.path.join(out_dir, "fig3_lr_regimes.png")),
             figure4(os.path.join(out_dir, "fig4_plateau.png"))]
    if balancing:
        from torch_layerlr.validate import balancing as bal

        paths += bal.make_figures(out_dir)
    return paths
