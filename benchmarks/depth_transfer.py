"""Depth transfer: does a rate rule's best setting stay put as the network gets deeper? MLPs of depth 2 .. 32,
plain and residual, on Fashion-MNIST; each rule swept at each depth.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/depth_transfer.py

Protocol (fixed before the runs):
* models: ``deep-mlp-L`` and ``res-mlp-L`` (:class:`torch_layerlr.models.DeepMLP`, width 128, L weight layers,
  residual branches scaled by 1/sqrt(L-2)), L in 2, 4, 8, 16, 32; 1 epoch, batch 128;
* rules, each a rate eta(L) times a multiplier c: constant (SGD, eta = 0.03 c), 1/L (SGD, eta = 0.03 c 4/L,
  equal to the constant rule at the 4-layer MLP's depth), the sharpness rate (the zoo's ``sharpness-rate``:
  plain SGD with eta = c/S, S measured on a batch at steps 0, 1, 2, 4, ... then every 100, i.e. tau = 1/c),
  LARS (the zoo's, eta = 0.03 c) and LAMB (the zoo's, eta = 1e-3 c); SGD with momentum 0.9 and weight decay
  5e-4 except the sharpness rate (plain SGD, the method its rule is derived for);
* at every depth each rule is tuned alike (seed 0 at c = 3^-2 .. 3^2, best final validation accuracy), then 3
  seeds at the chosen c;
* the transfer measure, as ``validate`` reports it for linear networks: the spread (max - min) across depths of
  log10 of the best c (0 when one setting is best at every depth; one grid step is log10 3 = 0.48), over the
  depths at which the best setting trains (test accuracy above twice chance).
Results: ``benchmarks/results/depth-transfer/`` (``runs.json``, ``table.md``, ``optimal_lr.png``).
"""

from __future__ import annotations

import argparse
import math
import os

import torch

from regimes import RESULTS, Store, fashion_mnist, markdown, mean_std, pm, strategy, test_acc, write
from torch_layerlr.train import STRATEGIES, RunSpec
from torch_layerlr.train.sweep import SWEEP_FACTORS
from torch_layerlr.train.zoo import SGD_WD

DEPTHS = (2, 4, 8, 16, 32)
#: A depth counts for the transfer measure where the chosen setting beats twice chance (10 classes): where no
#: setting of the grid trains, the "best" one is a tie-break among failures and says nothing about the rule.
TRAINED = 20.0
ARCHS = {"plain": "deep-mlp", "residual": "res-mlp"}


def _sgd(rate):
    return lambda model, setup: (torch.optim.SGD(model.parameters(), lr=rate(model) * setup.lr_scale, momentum=0.9,
                                                 weight_decay=SGD_WD), None)


def _depth(model) -> int:
    return sum(1 for p in model.parameters() if p.ndim == 2)


#: rule -> strategy
RULES = {
    "constant": strategy("constant", _sgd(lambda m: 0.03), "SGD lr 0.03 c", layerwise=False),
    "1/L": strategy("1/L", _sgd(lambda m: 0.12 / _depth(m)), "SGD lr 0.03 c 4/L", layerwise=False),
    "sharpness-rate": STRATEGIES["sharpness-rate"],
    "lars": STRATEGIES["lars"],
    "lamb": STRATEGIES["lamb"],
}


def plot(best: dict, eta: dict, acc: dict, path: str) -> None:
    """Best c and best eta against depth; depths where no setting trains are left out."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for col, arch in enumerate(ARCHS):
        for row, (values, label) in enumerate(((best, "best multiplier c"), (eta, "best eta (final lr)"))):
            ax = axes[row, col]
            for rule in RULES:
                ax.plot(DEPTHS, [values[arch, rule, L] if acc[arch, rule, L][0] > TRAINED else math.nan
                                 for L in DEPTHS], marker="o", label=rule)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_ylabel(label)
            ax.set_title(f"{arch} MLP")
        axes[1, col].set_xlabel("depth L (weight layers)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Depth transfer on Fashion-MNIST: a rule transfers if its best c is flat in L "
                 "(depths where no setting trains left out)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(RESULTS, "depth-transfer"))
    args = parser.parse_args()
    data, mean, std = fashion_mnist()
    config = dict(depths=list(DEPTHS), archs=list(ARCHS), rules=list(RULES), factors=list(SWEEP_FACTORS),
                  epochs=args.epochs, seeds=args.seeds, width=128)
    store = Store(os.path.join(args.out, "runs.json"), config)
    best, acc, eta = {}, {}, {}
    for arch, prefix in ARCHS.items():
        for L in DEPTHS:
            spec = RunSpec(data, f"{prefix}-{L}", args.epochs, 128)
            for rule, strat in RULES.items():
                t = store.tuned(f"{arch}/{rule}/L{L}", strat, spec, SWEEP_FACTORS, args.seeds, mean, std)
                best[arch, rule, L] = t.chosen
                acc[arch, rule, L] = mean_std([test_acc(r) for r in t.runs])
                eta[arch, rule, L] = mean_std([r["epochs"][-1]["lr"] for r in t.runs])[0]
    head = ["arch", "rule"] + [f"L={L}: best c / test %" for L in DEPTHS] + ["spread of log10 c (transfer)"]
    rows = []
    for arch in ARCHS:
        for rule in RULES:
            trained = [L for L in DEPTHS if acc[arch, rule, L][0] > TRAINED]
            logs = [math.log10(best[arch, rule, L]) for L in trained]
            spread = f"{max(logs) - min(logs):.2f}" if len(logs) > 1 else "—"
            if len(trained) < len(DEPTHS):
                spread += f" (L = {', '.join(map(str, trained))})" if trained else " (none trained)"
            rows.append([arch, rule] + [(f"{best[arch, rule, L]:.3g} / " if L in trained else "no c trains / ")
                                        + pm(*acc[arch, rule, L]) for L in DEPTHS] + [spread])
    text = (f"# Depth transfer: Fashion-MNIST, width-128 MLPs, {args.epochs} epoch(s), best multiplier c of each "
            f"rule and the final test accuracy % at it (mean ± std over {args.seeds} seeds)\n\n"
            + markdown(head, rows))
    lrs = [[arch, rule] + [f"{eta[arch, rule, L]:.3g}" for L in DEPTHS] + [
        f"{math.log10(max(eta[arch, rule, L] for L in DEPTHS) / min(eta[arch, rule, L] for L in DEPTHS)):.2f}"]
        for arch in ARCHS for rule in RULES]
    text += ("\nBest learning rate: the first group's lr at the end of the tuned runs (mean over seeds; for the "
             "sharpness rate, c/S at its last measurement):\n\n"
             + markdown(["arch", "rule"] + [f"L={L}" for L in DEPTHS] + ["spread of log10 eta"], lrs))
    write(args.out, "table.md", text)
    plot(best, eta, acc, os.path.join(args.out, "optimal_lr.png"))


if __name__ == "__main__":
    main()
