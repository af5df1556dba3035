"""Final test accuracy of AdamW, LAMB and DALS with ``state_precision`` fp32 / bf16 / int8 on Fashion-MNIST, with the
strategy zoo's settings (torch_layerlr/train/zoo.py) and its train loop (torch_layerlr.train.loop.train_run).

Usage (from the repository root)::

    python benchmarks/state_precision_accuracy.py --model mlp --epochs 15 --seeds 3 \
        --out benchmarks/results/state-precision-mlp

AdamW is our LayerwiseAdamW with the zoo's torch-AdamW settings (lr 3e-4, weight decay 0.01); LAMB and DALS are the
zoo's rows with the state precision added. Runs already in ``out/results.json`` (same configuration) are kept.
Prints and writes (``out/table.md``) the mean and standard deviation over seeds of the final test accuracy per
optimizer and precision, and the difference of each mean from fp32's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from torch_layerlr.data import channel_stats  # noqa: E402
from torch_layerlr.optim import DALS, LAMB, LayerwiseAdamW  # noqa: E402
from torch_layerlr.train.comparison import load_dataset  # noqa: E402
from torch_layerlr.train.loop import RunSpec, train_run  # noqa: E402
from torch_layerlr.train.zoo import SGD_WD, Strategy  # noqa: E402

PRECISIONS = ("fp32", "bf16", "int8")


def strategies(precision: str) -> list[Strategy]:
    p = dict(state_precision=precision)

    def adamw(model, setup):
        return LayerwiseAdamW(model.parameters(), lr=3e-4, weight_decay=0.01, **p), None

    def lamb(model, setup):
        return LAMB(model.parameters(), lr=1e-3, weight_decay=0.01, **p), None

    def dals(model, setup):  # the zoo's "dals" row
        return DALS(model, variant="dals", weight_decay=SGD_WD, total_steps=setup.total_steps,
                    restart_steps=10 * setup.steps_per_epoch, **p), None

    return [Strategy(f"{name}-{precision}", f"{name} {precision}", True, precision, build)
            for name, build in (("adamw", adamw), ("lamb", lamb), ("dals", dals))]


def table(runs: list[dict]) -> str:
    acc: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        name, precision = r["strategy"].rsplit("-", 1)
        acc.setdefault((name, precision), []).append(r["epochs"][-1]["test_acc"])
    lines = ["| optimizer | state | seeds | test acc % (mean ± sd) | min / max | Δ mean vs fp32 (points) |",
             "|---|---|---:|---:|---:|---:|"]
    for name in dict.fromkeys(k[0] for k in acc):
        base = statistics.mean(acc[(name, "fp32")]) if (name, "fp32") in acc else None
        for precision in PRECISIONS:
            xs = acc.get((name, precision))
            if not xs:
                continue
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            delta = "" if base is None or precision == "fp32" else f"{statistics.mean(xs) - base:+.2f}"
            lines.append(f"| {name} | {precision} | {len(xs)} | {statistics.mean(xs):.2f} ± {sd:.2f} | "
                         f"{min(xs):.2f} / {max(xs):.2f} | {delta} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="run seeds first-seed .. seeds-1 (to split the runs over processes)")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help="comma list of " + ",".join(PRECISIONS))
    ap.add_argument("--merge", nargs="*", default=[], help="also tabulate the runs of these results.json files")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    data = load_dataset("fashion-mnist", args.data_root)
    mean, std = channel_stats(data.train_images)
    spec = RunSpec(data, args.model, args.epochs)
    config = dict(model=args.model, epochs=args.epochs, train=data.train_images.shape[0])
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    runs = []
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        runs = saved["runs"] if saved.get("config") == config else []
    done = {(r["strategy"], r["seed"]) for r in runs}
    for seed in range(args.first_seed, args.seeds):  # seed-major: a cut-short run still has every cell
        for precision in args.precisions.split(","):
            for s in strategies(precision):
                if (s.name, seed) in done:
                    continue
                run = train_run(s, spec, seed, mean, std)
                runs.append(run)
                print(f"{s.name:<12} seed {seed}: test {run['epochs'][-1]['test_acc']:.2f}%"
                      + ("  DIVERGED" if run["diverged"] else ""), flush=True)
                with open(path, "w") as f:
                    json.dump(dict(config=config, runs=runs), f)
    text = f"# Fashion-MNIST / {args.model}, {args.epochs} epochs: final test accuracy per state precision\n\n"
    merged = list(runs)
    for other in args.merge:
        with open(other) as f:
            have = {(r["strategy"], r["seed"]) for r in merged}
            merged += [r for r in json.load(f)["runs"] if (r["strategy"], r["seed"]) not in have]
    if args.merge:  # the merged runs are this run's record from now on
        with open(path, "w") as f:
            json.dump(dict(config=config, runs=merged), f)
    text += table(merged)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
