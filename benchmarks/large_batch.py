"""Large batch: Fashion-MNIST MLP, batch 128 -> 8192 at a fixed number of epochs, SGD and AdamW under the linear
and square-root LR scaling rules against LARS, LAMB and DALS.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/large_batch.py [--epochs 5] [--seeds 3]

Protocol (fixed before the runs):
* every optimizer gets the same tuning budget at batch 128: seed 0 at the 5 factors 3^-2 .. 3^2 of its default
  rate, the best final validation accuracy chosen (``torch_layerlr.train.sweep``);
* at batch B the rate is the chosen batch-128 rate times the row's scaling rule, B/128 (linear; Goyal et al. 2017,
  and LARS as You et al. 2017 ran it) or sqrt(B/128) (square root; Krizhevsky 2014, and LAMB as You et al. 2020
  ran it; DALS, which has no published rule, takes LAMB's), with no re-tuning: what a layer-wise rule is claimed
  to make unnecessary;
* every row warms up linearly for the first epoch, then decays by a cosine to 0 (DALS: its own warmup + cosine,
  with its warmup set to the same first epoch);
* 3 seeds per cell; the table reports the final test accuracy (mean ± std) and the first batch size of the grid
  at which the row's accuracy falls more than 1 point below its batch-128 accuracy.
Results: ``benchmarks/results/large-batch/`` (``runs.json``, ``table.md``, ``accuracy.png``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os

import torch

from regimes import RESULTS, Store, fashion_mnist, markdown, mean_std, pm, strategy, test_acc, write
from torch_layerlr.optim import DALS, LAMB, LARS
from torch_layerlr.schedules import WarmupCosine
from torch_layerlr.train import RunSpec
from torch_layerlr.train.sweep import SWEEP_FACTORS
from torch_layerlr.train.zoo import SGD_WD

BATCHES = (128, 512, 2048, 8192)


def _warmup_cosine(make):
    def build(model, setup):
        opt = make(model, setup)
        return opt, WarmupCosine(opt, total_steps=setup.total_steps, warmup_steps=setup.steps_per_epoch)
    return build


def _dals(model, setup):
    return DALS(model, lr=0.03 * setup.lr_scale, weight_decay=SGD_WD, total_steps=setup.total_steps,
                warmup_frac=1.0 / setup.epochs, restart_steps=10 * setup.steps_per_epoch), None


#: optimizer -> (strategy, default lr)
OPTIMIZERS = {
    "sgd": strategy("sgd", _warmup_cosine(lambda m, s: torch.optim.SGD(m.parameters(), lr=0.03 * s.lr_scale,
                                                                       momentum=0.9, weight_decay=SGD_WD)),
                    "SGD lr 0.03, momentum 0.9, wd 5e-4", layerwise=False),
    "adamw": strategy("adamw", _warmup_cosine(lambda m, s: torch.optim.AdamW(m.parameters(), lr=3e-4 * s.lr_scale,
                                                                             weight_decay=0.01)),
                      "AdamW lr 3e-4, wd 0.01", layerwise=False),
    "lars": strategy("lars", _warmup_cosine(lambda m, s: LARS(m.parameters(), lr=0.03 * s.lr_scale, momentum=0.9,
                                                              weight_decay=SGD_WD, trust_coefficient=0.02)),
                     "LARS lr 0.03, trust 0.02, momentum 0.9, wd 5e-4"),
    "lamb": strategy("lamb", _warmup_cosine(lambda m, s: LAMB(m.parameters(), lr=1e-3 * s.lr_scale,
                                                              weight_decay=0.01)),
                     "LAMB lr 1e-3, wd 0.01"),
    "dals": strategy("dals", _dals, "DALS lr 0.03, momentum 0.9, alpha 0.6, wd 5e-4"),
}

#: row -> (optimizer, scaling rule)
ROWS = {"sgd-linear": ("sgd", "linear"), "sgd-sqrt": ("sgd", "sqrt"), "adamw-linear": ("adamw", "linear"),
        "adamw-sqrt": ("adamw", "sqrt"), "lars-linear": ("lars", "linear"), "lamb-sqrt": ("lamb", "sqrt"),
        "dals-sqrt": ("dals", "sqrt")}


def rule(name: str, batch: int) -> float:
    return batch / 128 if name == "linear" else math.sqrt(batch / 128)


def first_drop(cells: dict[int, tuple[float, float, int]]) -> str:
    """The first batch size whose mean accuracy is more than 1 point below batch 128's, or where a seed diverged."""
    for b in BATCHES[1:]:
        mean, _, diverged = cells[b]
        if diverged or not mean >= cells[128][0] - 1.0:
            return str(b)
    return f"> {BATCHES[-1]}"


def plot(table: dict[str, dict[int, tuple[float, float, int]]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row, cells in table.items():
        m = [cells[b][0] for b in BATCHES]
        s = [cells[b][1] for b in BATCHES]
        ax.errorbar(BATCHES, m, yerr=s, marker="o", capsize=3, label=row)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("Fashion-MNIST MLP, fixed epochs: LR scaling rules vs layer-wise rules")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(RESULTS, "large-batch"))
    args = parser.parse_args()
    data, mean, std = fashion_mnist()
    config = dict(model="mlp", epochs=args.epochs, batches=list(BATCHES), factors=list(SWEEP_FACTORS),
                  seeds=args.seeds)
    store = Store(os.path.join(args.out, "runs.json"), config)
    base = RunSpec(data, "mlp", args.epochs, 128)
    chosen = {}
    for name, strat in OPTIMIZERS.items():
        t = store.tuned(f"{name}/b128", strat, base, SWEEP_FACTORS, args.seeds, mean, std)
        chosen[name] = t.chosen
    table: dict[str, dict[int, tuple[float, float, int]]] = {}
    for row, (opt, rule_name) in ROWS.items():
        table[row] = {}
        for b in BATCHES:
            scale = chosen[opt] * rule(rule_name, b)
            key = f"{opt}/b128" if b == 128 else f"{row}/b{b}"
            runs = [store.run(key, OPTIMIZERS[opt], dataclasses.replace(base, batch_size=b), seed, scale, mean, std)
                    for seed in range(args.seeds)]
            table[row][b] = mean_std([test_acc(r) for r in runs])
    head = ["row", "tuned x default (b128)"] + [f"b{b}" for b in BATCHES] + ["first batch > 1 pt below b128"]
    rows = [[row, f"x{chosen[opt]:.3g}"] + [pm(*table[row][b]) for b in BATCHES]
            + [first_drop(table[row])] for row, (opt, _) in ROWS.items()]
    text = (f"# Large batch: Fashion-MNIST MLP, {args.epochs} epochs, final test accuracy %, "
            f"mean ± std over {args.seeds} seeds\n\n" + markdown(head, rows))
    write(args.out, "table.md", text)
    plot(table, os.path.join(args.out, "accuracy.png"))


if __name__ == "__main__":
    main()
