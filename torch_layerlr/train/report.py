"""What a comparison writes: ``results.json``, the markdown table (mean ± std over seeds) and ``curves.png`` (with a
third panel, eta * S against the step, when the runs carry sharpness measurements).

The table never picks anything on the test set. The best single-LR baseline is the non-layer-wise strategy with
the highest mean *validation* accuracy at the last epoch; every strategy's final test accuracy is then compared
with it (difference of the means, and the two spreads).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from typing import Any, Optional

from torch_layerlr.train.zoo import STRATEGIES

__all__ = ["summarize", "markdown_table", "plot_curves", "save_json", "load_json"]

#: The accuracy panel of ``curves.png`` spans the strategies ending within this many points of the best.
ACC_SPAN = 15.0


def save_json(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (a crash mid-run never leaves a truncated file)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def load_json(path: str) -> Optional[dict[str, Any]]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _epochs_to(run: dict[str, Any], target: float) -> Optional[int]:
    for e in run["epochs"]:
        if e["val_acc"] >= target:
            return e["epoch"]
    return None


def summarize(runs: Sequence[dict[str, Any]], targets: Sequence[float]) -> list[dict[str, Any]]:
    """One row per strategy (in the order first seen): final test / validation accuracy, best validation
    accuracy, final training loss (mean and std over seeds), epochs to each validation target (mean over the
    seeds that reached it, and how many did), optimizer-step and epoch times."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_name.setdefault(run["strategy"], []).append(run)
    rows = []
    for name, group in by_name.items():
        finished = [r for r in group if r["epochs"] and not r["diverged"]]
        last = [r["epochs"][-1] for r in finished]
        steps = sum(r["epochs"][-1]["steps"] for r in finished)
        row = dict(strategy=name, label=STRATEGIES[name].label if name in STRATEGIES else name,
                   layerwise=STRATEGIES[name].layerwise if name in STRATEGIES else None,
                   seeds=len(group), diverged=len(group) - len(finished),
                   test_acc=_mean_std([e["test_acc"] for e in last]),
                   val_acc=_mean_std([e["val_acc"] for e in last]),
                   best_val_acc=_mean_std([max(x["val_acc"] for x in r["epochs"]) for r in finished]),
                   train_loss=_mean_std([e["train_loss"] for e in last]),
                   step_ms=1e3 * sum(e["step_s"] for e in last) / steps if steps else math.nan,
                   epoch_s=statistics.fmean(e["wall_s"] / e["epoch"] for e in last) if last else math.nan,
                   epochs_to={})
        for t in targets:
            reached = [k for k in (_epochs_to(r, t) for r in finished) if k is not None]
            row["epochs_to"][t] = (statistics.fmean(reached) if reached else None, len(reached), len(group))
        rows.append(row)
    return rows


def _pm(stat: tuple[float, float], digits: int = 2) -> str:
    mean, std = stat
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(rows: Sequence[dict[str, Any]], targets: Sequence[float]) -> str:
    """The comparison as markdown: one line per strategy, then the reference baseline named below."""
    baselines = [r for r in rows if r["layerwise"] is False and not math.isnan(r["val_acc"][0])]
    best = max(baselines, key=lambda r: r["val_acc"][0]) if baselines else None
    head = ["strategy", "layer-wise", "test acc % (final)", "val acc % (final)", "best val acc %",
            "train loss (final)"]
    head += [f"epochs to {t:g}% val" for t in targets]
    head += ["Δ test vs best single-LR", "step ms", "epoch s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"] + (f" ({r['diverged']}/{r['seeds']} diverged)" if r["diverged"] else ""),
                 "yes" if r["layerwise"] else "no", _pm(r["test_acc"]), _pm(r["val_acc"]), _pm(r["best_val_acc"]),
                 _pm(r["train_loss"], 4)]
        for t in targets:
            mean, hit, n = r["epochs_to"][t]
            cells.append("—" if mean is None else (f"{mean:.1f}" if hit == n else f"{mean:.1f} ({hit}/{n})"))
        if best is None or r is best or math.isnan(r["test_acc"][0]):
            cells.append("reference" if r is best else "—")
        else:
            cells.append(f"{r['test_acc'][0] - best['test_acc'][0]:+.2f} (± {r['test_acc'][1]:.2f} / "
                         f"{best['test_acc'][1]:.2f})")
        cells += [f"{r['step_ms']:.2f}", f"{r['epoch_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if best is not None:
        lines.append("")
        lines.append(f"Best single-LR baseline (highest mean final validation accuracy): {best['label']}. "
                     "Δ is the difference of mean final test accuracy, with each side's standard deviation "
                     "over seeds.")
    return "\n".join(lines) + "\n"


def plot_curves(runs: Sequence[dict[str, Any]], path: str, title: str) -> None:
    """Validation accuracy and training loss per epoch, mean over seeds with a ±1 std band; layer-wise
    strategies dashed. The accuracy axis spans the strategies that end within :data:`ACC_SPAN` points of the
    best; the others are marked "off scale" in the legend (their numbers are in the table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by_name: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_name.setdefault(run["strategy"], []).append(run)
    curves = {}
    for name, group in by_name.items():
        n = min(len(r["epochs"]) for r in group)
        if n:
            curves[name] = {key: np.array([[e[key] for e in r["epochs"][:n]] for r in group])
                            for key in ("val_acc", "train_loss")}
    finals = {name: float(np.nanmean(c["val_acc"][:, -1])) for name, c in curves.items()}
    top = max((v for v in finals.values() if np.isfinite(v)), default=100.0)
    shown = [name for name, v in finals.items() if v >= top - ACC_SPAN]
    low = min((float(np.nanmin(curves[name]["val_acc"].mean(0))) for name in shown), default=0.0)

    monitored = [run for run in runs if run.get("sharpness")]
    if monitored:
        fig, (ax_acc, ax_loss, ax_eos) = plt.subplots(1, 3, figsize=(21, 5.5))
    else:
        fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(14, 5.5))
    colors = plt.get_cmap("tab20")
    for k, (name, c) in enumerate(curves.items()):
        epochs = np.arange(1, c["val_acc"].shape[1] + 1)
        style = "--" if STRATEGIES.get(name) is not None and STRATEGIES[name].layerwise else "-"
        label = (STRATEGIES[name].label if name in STRATEGIES else name) + ("" if name in shown else " (off scale)")
        color = colors((2 * k) % 20 + (2 * k) // 20 % 2)  # the dark shades first, then the light ones
        for ax, key in ((ax_acc, "val_acc"), (ax_loss, "train_loss")):
            mean, std = c[key].mean(0), c[key].std(0)
            ax.plot(epochs, mean, style, color=color, label=label)
            ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.15)
    ax_acc.set_ylim(max(0.0, low - 1.0), min(100.0, top + 1.0))
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title=f"{title}: validation accuracy")
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="training loss (mean over batches)")
    ax_acc.grid(alpha=0.3)
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8, ncol=2)
    if monitored:
        _plot_sharpness(ax_eos, monitored, {name: colors((2 * k) % 20 + (2 * k) // 20 % 2)
                                            for k, name in enumerate(curves)})
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_sharpness(ax: Any, runs: Sequence[dict[str, Any]], colors: dict[str, Any]) -> None:
    """eta * S of every monitored run against the step (the first seed of each strategy labelled), with the
    gradient-descent edge of stability at 2. For adaptive or trust-ratio rules eta is the base learning rate, so
    the line at 2 is a reference, not their edge."""
    labelled = set()
    for run in runs:
        name = run["strategy"]
        steps = [r["step"] for r in run["sharpness"]]
        values = [r["eta_s"] for r in run["sharpness"]]
        label = None if name in labelled else (STRATEGIES[name].label if name in STRATEGIES else name)
        labelled.add(name)
        ax.plot(steps, values, "-", color=colors.get(name), lw=1, marker=".", ms=3, label=label)
    ax.axhline(2.0, color="k", ls=":", lw=1)
    ax.set(xlabel="step", ylabel=r"$\eta\,S$ (S: top Hessian eigenvalue on a fixed batch)", yscale="log",
           title="sharpness x learning rate (2: GD's edge of stability)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
