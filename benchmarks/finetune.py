"""Fine-tuning: pretrain on Fashion-MNIST classes 0-4, fine-tune on classes 5-9 with 1k and 5k labels; single-LR
SGD and AdamW (tuned) against discriminative LR, STLR + discriminative, layer-wise LR decay and DALS.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/finetune.py --model mlp
    OMP_WAIT_POLICY=PASSIVE python benchmarks/finetune.py --model convnet

Protocol (fixed before the runs):
* source task: classes 0-4 of the training split (5-way head), trained once with the zoo's Cosine SGD (seed 100;
  MLP 5 epochs, ConvNet 3);
* target task: classes 5-9 relabelled 0-4; ``labels`` (1000 or 5000) training images drawn once (seed 0) from
  the target classes of the training split; validation on the target classes of the held-out split, test on
  their test images;
* fine-tuning starts from every pretrained weight except the head (the last ``Linear``), which is re-initialised
  from the seed; batch 64, about 240 steps (15 epochs at 1k labels, 3 at 5k), evaluated after the last epoch;
* strategies: the zoo's rows ``fixed-sgd`` (SGD lr 0.01), ``adamw`` (3e-4), ``disc``, ``stlr-disc``, ``llrd``
  (AdamW 1e-3, x0.75 per layer below the top) and ``dals``, each tuned alike (seed 0 at 3^-2 .. 3^2 times its
  default rate, best final validation accuracy), then 3 seeds at the chosen rate.
Results: ``benchmarks/results/finetune-<model>/``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

import torch
from torch import nn

from regimes import RESULTS, Store, fashion_mnist, markdown, mean_std, pm, test_acc, write
from torch_layerlr.data import ImageDataset
from torch_layerlr.train import STRATEGIES, RunSpec, train_run
from torch_layerlr.train.sweep import SWEEP_FACTORS

SOURCE, TARGET = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
LABELS = (1000, 5000)
ROWS = ("fixed-sgd", "adamw", "disc", "stlr-disc", "llrd", "dals")
PRETRAIN_EPOCHS = {"mlp": 5, "convnet": 3}
BATCH, STEPS = 64, 240


def classes(data: ImageDataset, keep: tuple[int, ...], train_labels: int | None = None) -> ImageDataset:
    """The images of classes ``keep``, relabelled 0 .. len(keep)-1; with ``train_labels``, that many training
    images drawn once (seed 0)."""
    table = torch.full((10,), -1, dtype=torch.int64)
    table[list(keep)] = torch.arange(len(keep))

    def part(images, labels):
        mask = table[labels] >= 0
        return images[mask], table[labels[mask]]

    train = part(data.train_images, data.train_labels)
    if train_labels is not None:
        pick = torch.randperm(train[0].shape[0], generator=torch.Generator().manual_seed(0))[:train_labels]
        train = train[0][pick.sort().values], train[1][pick.sort().values]
    val, test = part(data.val_images, data.val_labels), part(data.test_images, data.test_labels)
    return replace(data, classes=tuple(data.classes[c] for c in keep), train_images=train[0], train_labels=train[1],
                   val_images=val[0], val_labels=val[1], test_images=test[0], test_labels=test[1])


def pretrain(model: str, data: ImageDataset, mean, std, path: str) -> dict[str, torch.Tensor]:
    """The source model's weights (trained once, kept in ``path``)."""
    if os.path.exists(path):
        return torch.load(path, weights_only=True)
    trained: list[nn.Module] = []
    spec = RunSpec(classes(data, SOURCE), model, PRETRAIN_EPOCHS[model], init=lambda m, seed: trained.append(m))
    run = train_run(STRATEGIES["cosine-sgd"], spec, 100, mean, std)
    print(f"pretrained {model} on classes 0-4: test {run['epochs'][-1]['test_acc']:.2f}%", flush=True)
    state = {k: v.detach().clone() for k, v in trained[0].state_dict().items()}
    torch.save(state, path)
    return state


def from_pretrained(state: dict[str, torch.Tensor]):
    """``RunSpec.init``: load the source weights, then re-initialise the head (the last ``Linear``) from the seed."""
    def init(model: nn.Module, seed: int) -> None:
        model.load_state_dict(state)
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        torch.manual_seed(seed)
        head.reset_parameters()
    return init


def plot(cells: dict, model: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(LABELS)
    for i, n in enumerate(LABELS):
        means = [cells[row, n][1][0] for row in ROWS]
        stds = [cells[row, n][1][1] for row in ROWS]
        ax.bar([k + i * width for k in range(len(ROWS))], means, width, yerr=stds, capsize=3, label=f"{n} labels")
    ax.set_xticks([k + width * (len(LABELS) - 1) / 2 for k in range(len(ROWS))], [STRATEGIES[r].label for r in ROWS],
                  rotation=20, fontsize=8)
    low = min(cells[key][1][0] for key in cells)
    ax.set_ylim(low - 2, None)
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(f"Fine-tuning the {model} (classes 0-4 -> 5-9), equal tuning, mean ± std over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("mlp", "convnet"), default="mlp")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or os.path.join(RESULTS, f"finetune-{args.model}")
    data, mean, std = fashion_mnist()
    config = dict(model=args.model, labels=list(LABELS), rows=list(ROWS), factors=list(SWEEP_FACTORS),
                  seeds=args.seeds, batch=BATCH, steps=STEPS, pretrain_epochs=PRETRAIN_EPOCHS[args.model])
    store = Store(os.path.join(out, "runs.json"), config)
    os.makedirs(out, exist_ok=True)
    state = pretrain(args.model, data, mean, std, os.path.join(out, "pretrained.pt"))
    cells = {}
    for n in LABELS:
        target = classes(data, TARGET, n)
        epochs = max(1, round(STEPS / -(-n // BATCH)))
        spec = RunSpec(target, args.model, epochs, BATCH, init=from_pretrained(state), eval_every=epochs)
        for row in ROWS:
            t = store.tuned(f"{row}/{n}", STRATEGIES[row], spec, SWEEP_FACTORS, args.seeds, mean, std)
            cells[row, n] = (t.chosen, mean_std([test_acc(r) for r in t.runs]))
    best = {n: max((cells[r, n][1][0] for r in ("fixed-sgd", "adamw"))) for n in LABELS}
    head = ["strategy"] + [c for n in LABELS for c in (f"{n} labels: test %", "Δ best single-LR", "tuned x")]
    rows = [[STRATEGIES[row].label] + [c for n in LABELS for c in (
        pm(*cells[row, n][1]), f"{cells[row, n][1][0] - best[n]:+.2f}", f"x{cells[row, n][0]:.3g}")]
        for row in ROWS]
    text = (f"# Fine-tuning: Fashion-MNIST {args.model}, classes 0-4 -> 5-9, final test accuracy %, mean ± std over "
            f"{args.seeds} seeds (Δ to the better of tuned SGD and AdamW)\n\n" + markdown(head, rows))
    write(out, "table.md", text)
    plot(cells, args.model, os.path.join(out, "accuracy.png"))


if __name__ == "__main__":
    main()
