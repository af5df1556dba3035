"""PNG figures of the multi-pathway checks (:mod:`torch_layerlr.validate.multipath`), in the style of
:mod:`torch_layerlr.validate.figures`: theory dashed or as lines, simulations as markers.

* ``fig_multipath_windows.png``: final dominant share against eta (H = 2, L = 10 and 20) with the windows
  marked and :func:`~torch_layerlr.theory.multipath.predicted_split` drawn; final sharpness against 2/eta;
  depths {3, 5, 7}: final split against the flattest split.
* ``fig_multipath_trajectories.png``: loss and dominant share against the step (L = 20) for step sizes in every
  window; the two-path Tanh MLP's minority share against the step and at the end against eta.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from torch_layerlr.theory import multipath as mp
from torch_layerlr.validate import multipath as mv

__all__ = ["make_figures", "figure_windows", "figure_trajectories"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(L: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The figures' step sizes (eta / (2/S_1)) and their runs, out of the checks' sweep."""
    s = mv.sweep(L)
    sel = s["kind"] == "grid"
    return s["ratios"][sel], {k: s[k][sel] for k in ("sigmas", "residual")}


def _mark_windows(ax: Any, L: int, H: int = 2) -> None:
    edge, wcr = 1.0 / float(mp.sharpness_ratio(H, L)), float(mp.gamma_wcr(L)) / 2.0
    for x, label, color in ((1.0, "$2/S_1$", "C2"), (edge, r"$2/\lambda^{\min}$", "C3"),
                            (wcr, r"$\eta_{\rm WCR}$", "C4")):
        ax.axvline(x, color=color, ls=":", lw=1.2)
        ax.text(x, 0.03, " " + label, color=color, fontsize=8, ha="left", va="bottom",
                transform=ax.get_xaxis_transform())


def figure_windows(path: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(1, 4, figsize=(18, 4.2))
    grid = np.linspace(0.2, 3.2, 400)
    for k, L in enumerate(mv.GD_DEPTHS):
        ratios, run = _grid(L)
        share = run["sigmas"].max(1) / run["sigmas"].sum(1)
        converged = np.abs(run["residual"]) < mv.TOL_CONVERGED
        ax[k].plot(ratios[converged], share[converged], "o", ms=4, color="C0", label="GD, converged")
        bad = ~converged & np.isfinite(share)
        ax[k].plot(ratios[bad], share[bad], "x", ms=5, color="C1", label="GD, not converged (last step)")
        pred = mp.predicted_split(1.0, 2, L, grid * 2.0 / L)[:, 0]
        ax[k].plot(grid, pred, "k--", lw=1, label="predicted_split (E.3)")
        _mark_windows(ax[k], L)
        ax[k].set(xlabel=r"$\eta\,/\,(2/S_1)$", ylabel="dominant path's share", ylim=(0.4, 1.05),
                  title=f"H = 2, L = {L}: final share")
    ax[0].legend(fontsize=7, loc="lower left")
    for L, color in zip(mv.GD_DEPTHS, ("C0", "C3")):
        ratios, run = _grid(L)
        lrs = ratios * 2.0 / L
        converged = np.abs(run["residual"]) < mv.TOL_CONVERGED
        sharp = np.asarray(mp.mode_sharpness(run["sigmas"][converged], L))
        ax[2].plot(2.0 / lrs[converged], sharp, "o", ms=4, color=color, label=f"L = {L}")
        ax[2].axhline(L, color=color, ls=":", lw=1)  # S_1 for sigma = 1
    lim = ax[2].get_xlim()
    ax[2].plot(lim, lim, "k--", lw=1, label=r"$S = 2/\eta$")
    ax[2].set(xlabel=r"$2/\eta$", ylabel="final sharpness (E.2)", title="final sharpness; dotted: $S_1 = L$",
              xscale="log", yscale="log")
    ax[2].legend(fontsize=8)
    h = mv.hetero_runs()
    x = np.arange(len(mv.HETERO_DEPTHS))
    ax[3].bar(x - 0.27, h["flat"], 0.25, color="0.6", label="flattest_split")
    for i, (start, s) in enumerate(zip(h["starts"], h["sigmas"])):
        ax[3].bar(x + (i - 0.5) * 0.27 + 0.135, s, 0.25, color=f"C{i}", label=f"GD from {start}")
    ax[3].set_xticks(x, [f"L = {L}" for L in mv.HETERO_DEPTHS])
    ax[3].set(ylabel=r"final $\sigma_h$",
              title=rf"depths {mv.HETERO_DEPTHS}, $\eta$ = {mv.HETERO_FRACTION} $\times 2/\lambda^{{\min}}$")
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure_trajectories(path: str) -> str:
    plt = _plt()
    L = 20
    edge, wcr = 1.0 / float(mp.sharpness_ratio(2, L)), float(mp.gamma_wcr(L)) / 2.0
    s = mv.sweep(L)
    ratios = (0.6, 1.2, 1.6, 0.99 * edge, 1.1 * edge, 1.05 * wcr)
    rows = [int(np.argmin(np.abs(s["ratios"] - r))) for r in ratios]
    run = dict(trajectory=s["trajectory"][rows])
    steps = np.arange(run["trajectory"].shape[1]) * mv.TRAJECTORY_EVERY
    colors = [plt.get_cmap("viridis")(i / (len(ratios) - 1) * 0.9) for i in range(len(ratios))]
    fig, ax = plt.subplots(1, 4, figsize=(18, 4.2))
    with np.errstate(invalid="ignore", divide="ignore"):
        for r, c, traj in zip(ratios, colors, run["trajectory"]):
            loss = 0.5 * (traj.sum(1) - 1.0) ** 2
            share = traj.max(1) / traj.sum(1)
            ax[0].plot(steps[1:], np.clip(loss[1:], 1e-30, None), color=c, lw=1,
                       label=rf"$\eta$ = {r:.3g} $\times 2/S_1$")
            ax[1].plot(steps[1:], share[1:], color=c, lw=1)
    ax[0].set(xscale="log", yscale="log", xlabel="GD step", ylabel="loss", ylim=(1e-30, 10),
              title=f"H = 2, L = {L}: loss")
    ax[0].legend(fontsize=7)
    ax[1].set(xscale="log", xlabel="GD step", ylabel="dominant path's share", ylim=(0.45, 1.02),
              title=rf"share ($2/\lambda^{{\min}}$ = {edge:.2f}, $\eta_{{\rm WCR}}$ = {wcr:.2f} $\times 2/S_1$)")
    t = mv.tanh_runs()
    tsteps = np.arange(t["trajectory"].shape[0]) * t["every"]
    for k, lr in enumerate(t["lrs"]):
        ax[2].plot(tsteps, t["trajectory"][:, k], color=plt.get_cmap("viridis")(k / (len(t["lrs"]) - 1) * 0.9),
                   label=rf"$\eta$ = {lr:g}")
    ax[2].set(xlabel="GD step", ylabel="minority path's share of the output norm",
              title="Tanh MLP, 2 paths of depth 4")
    ax[2].legend(fontsize=7)
    ax[3].plot(t["lrs"], t["minority"], "o-", color="C0", label="minority share at the end")
    ax[3].set(xlabel=r"$\eta$", ylabel="minority share", title=r"Tanh MLP: share and $\eta S/2$ at the end")
    twin = ax[3].twinx()
    twin.plot(t["lrs"], t["sharpness"] * t["lrs"] / 2.0, "s--", color="C3", label=r"$\eta S/2$")
    twin.axhline(1.0, color="C3", ls=":", lw=1)
    twin.set_ylabel(r"$\eta S / 2$ (1 = edge of stability)", color="C3")
    ax[3].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def make_figures(out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    return [figure_windows(os.path.join(out_dir, "fig_multipath_windows.png")),
            figure_trajectories(os.path.join(out_dir, "fig_multipath_trajectories.png"))]
