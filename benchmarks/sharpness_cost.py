"""Cost and accuracy of the sharpness toolkit on the Fashion-MNIST MLP: ``python benchmarks/sharpness_cost.py``.

1. One-off measurements on a batch of 1024 training images, from a random start at tolerance 1e-3:
   ``top_eigenvalue`` and ``layer_sharpness`` (4 layers, each on its own block products), in forward-backward
   equivalents of that batch (medians of ``--repeats``, interleaved with the forward-backward they are
   divided by).
2. Accuracy of the monitor's cheap estimates: fixed-lr SGD (the comparison's ``fixed-sgd``, batch 128) for
   ``--epochs`` epochs with ``SharpnessMonitor.for_module`` every ``--every`` steps at its defaults (its own
   batch of 128, 2 warm-started Lanczos steps per call), and beside it monitors at 1 and 3 steps per call;
   at every call the converged values on the same batch (``top_eigenvalue`` / ``layer_sharpness``, tolerance
   1e-8, random start) and the relative errors: every call of the default, medians of the others.
3. Cost per call in training steps, interleaved at the finest grain (10 steps, then one call of each monitor
   configuration: batch size, Lanczos steps per call, per-layer rows or the global one only); a call of c
   training steps, 4.22 times per 422-step epoch, costs c % of an epoch.
4. Overhead: ``--pairs`` pairs of one-epoch runs of ``train_run`` without and with ``sharpness_every``,
   interleaved (the order alternates within pairs) because other jobs load the machine; per pair the
   monitor's time over the plain run's training time; medians.

Prints five markdown tables.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date

import torch
from torch.nn import functional as F

from torch_layerlr.data import batches, channel_stats, normalize
from torch_layerlr.models.vision import MLP
from torch_layerlr.sharpness import MONITOR_BATCH, MONITOR_ITERS, SharpnessMonitor, layer_sharpness, \
    module_groups, top_eigenvalue
from torch_layerlr.train import STRATEGIES, RunSpec, Setup, load_dataset, train_run


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def one_off(data, mean, std, repeats: int) -> None:
    torch.manual_seed(0)
    model = MLP()
    x, y = normalize(data.train_images[:1024], mean, std), data.train_labels[:1024]
    loss_fn = lambda: F.cross_entropy(model(x), y)  # noqa: E731

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn().backward()

    params, groups = list(model.parameters()), module_groups(model)
    top = top_eigenvalue(loss_fn, params, tol=1e-3)
    blocks = layer_sharpness(loss_fn, groups, tol=1e-3)
    fb, t_top, t_layer = [], [], []
    for _ in range(repeats):
        fb.append(statistics.median(timed(forward_backward) for _ in range(5)))
        t_top.append(timed(lambda: top_eigenvalue(loss_fn, params, tol=1e-3)))
        t_layer.append(timed(lambda: layer_sharpness(loss_fn, groups, tol=1e-3)))
    unit = statistics.median(fb)
    print("| one-off, batch 1024, random start, tol 1e-3 | products | seconds | forward-backward equivalents |")
    print("|---|---:|---:|---:|")
    print(f"| forward-backward (the unit) | — | {unit:.4f} | 1 |")
    print(f"| `top_eigenvalue` (S = {top.value:.3f}) | {top.iterations} | {statistics.median(t_top):.3f} | "
          f"{statistics.median(t / f for t, f in zip(t_top, fb)):.0f} |")
    print(f"| `layer_sharpness`, 4 layers | {'+'.join(str(b.iterations) for b in blocks.values())} | "
          f"{statistics.median(t_layer):.3f} | {statistics.median(t / f for t, f in zip(t_layer, fb)):.0f} |")
    print()


def accuracy(data, mean, std, epochs: int, every: int, other_iters: tuple[int, ...] = (1, 3)) -> None:
    torch.manual_seed(0)
    model = MLP()
    steps = -(-data.train_images.shape[0] // 128)
    sample = normalize(data.train_images[:4096], mean, std)
    opt, _ = STRATEGIES["fixed-sgd"].build(model, Setup(steps, epochs, sample, data.train_labels[:4096],
                                                       data.num_classes))
    x = normalize(data.train_images[:MONITOR_BATCH], mean, std)
    y = data.train_labels[:MONITOR_BATCH]
    # measuring leaves the model as it is, so the monitors share one training run
    iters = (MONITOR_ITERS,) + other_iters
    monitors = [SharpnessMonitor.for_module(model, x, y, every, optimizer=opt, iters=k) for k in iters]
    loss_fn = lambda: F.cross_entropy(model(x), y)  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(epochs):
        for xb, yb in batches(data.train_images, data.train_labels, 128, shuffle=True, generator=gen, mean=mean,
                              std=std):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            recs = [monitor.step() for monitor in monitors]
            if recs[0] is None:
                continue
            top = top_eigenvalue(loss_fn, list(model.parameters()), iters=300, tol=1e-8)
            blocks = layer_sharpness(loss_fn, module_groups(model, by="children"), iters=300, tol=1e-8)
            assert top.converged and all(b.converged for b in blocks.values())
            rows.append((recs, top.value, {k: b.value for k, b in blocks.items()}))
    names = list(rows[0][2])

    def errors(i: int) -> tuple[list[float], list[list[float]]]:
        glob = [abs(recs[i]["sharpness"] - s) / s for recs, s, _ in rows]
        per_layer = [[abs(recs[i]["layers"][n] - layers[n]) / layers[n] for n in names] for recs, _, layers in rows]
        return glob, per_layer

    glob, per_layer = errors(0)
    print(f"| step | S (monitor) | S (converged) | rel. error | monitor residual | "
          + " | ".join(f"{n} rel. error" for n in names) + " |")
    print("|---:|---:|---:|---:|---:|" + "---:|" * len(names))
    for (recs, s, _), err, lerr in zip(rows, glob, per_layer):
        rec = recs[0]
        print(f"| {rec['step']} | {rec['sharpness']:.3f} | {s:.3f} | {err:.1e} | {rec['residual']:.1e} | "
              + " | ".join(f"{e:.1e}" for e in lerr) + " |")
    print(f"| median | | | {statistics.median(glob):.1e} | "
          f"{statistics.median(recs[0]['residual'] for recs, _, _ in rows):.1e} | "
          f"{statistics.median(e for lerr in per_layer for e in lerr):.1e} (all layers) |" + " |" * (len(names) - 1))
    print()
    print("| Lanczos steps per call | S rel. error, median (from the 4th call) | layers' rel. error, median "
          "(from the 4th call) | monitor residual, median |")
    print("|---:|---:|---:|---:|")
    for i, k in enumerate(iters):
        glob, per_layer = errors(i)
        layer_all = [e for lerr in per_layer for e in lerr]
        layer_late = [e for lerr in per_layer[3:] for e in lerr]
        print(f"| {k}{' (default)' if i == 0 else ''} | {statistics.median(glob):.1e} "
              f"({statistics.median(glob[3:]):.1e}) | {statistics.median(layer_all):.1e} "
              f"({statistics.median(layer_late):.1e}) | "
              f"{statistics.median(recs[i]['residual'] for recs, _, _ in rows):.1e} |")
    print()


def per_call(data, mean, std, rounds: int, configs: list[tuple[int, int, bool]]) -> None:
    """Each round: 10 training steps (timed), then one call of each monitor (batch size, Lanczos steps per call,
    per-layer or global only, from ``configs``; rotating order), each call's time in units of that round's mean
    training step."""
    torch.manual_seed(0)
    model = MLP()
    steps = -(-data.train_images.shape[0] // 128)
    sample = normalize(data.train_images[:4096], mean, std)
    opt, _ = STRATEGIES["fixed-sgd"].build(model, Setup(steps, 1, sample, data.train_labels[:4096],
                                                       data.num_classes))
    x, y = normalize(data.train_images[:1024], mean, std), data.train_labels[:1024]
    monitors = [SharpnessMonitor.for_module(model, x, y, 1, optimizer=opt, batch_size=b, iters=k, per_layer=pl)
                for b, k, pl in configs]
    gen = torch.Generator().manual_seed(0)
    stream = batches(data.train_images, data.train_labels, 128, shuffle=True, generator=gen, mean=mean, std=std)
    ratios: list[list[float]] = [[] for _ in configs]
    for r in range(rounds):
        t0 = time.perf_counter()
        for _ in range(10):
            xb, yb = next(stream)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        step = (time.perf_counter() - t0) / 10
        for i in [(r + j) % len(configs) for j in range(len(configs))]:
            ratios[i].append(timed(monitors[i].measure) / step)
    print(f"| monitor batch | Lanczos steps per call | rows | per call, training steps (median of {rounds}) | "
          f"every 100 steps, % of an epoch |")
    print("|---:|---:|---:|---:|---:|")
    for (b, k, pl), ratio in zip(configs, ratios):
        cost = statistics.median(ratio)
        # 422 steps per epoch hold 4.22 calls: a call of c steps costs c % of an epoch
        print(f"| {b} | {k} | {'1 + 4 layers' if pl else '1 (global)'} | {cost:.1f} | {cost:.1f}% |")
    print()


def overhead(data, mean, std, pairs: int, every: int) -> None:
    plain_spec = RunSpec(data, "mlp", epochs=1, batch_size=128)
    watched_spec = RunSpec(data, "mlp", epochs=1, batch_size=128, sharpness_every=every)
    print(f"| pair | training s, plain | training s, monitored | monitor s (calls) | monitor / epoch | "
          f"per call, training steps |")
    print("|---:|---:|---:|---:|---:|---:|")
    fractions, per_call = [], []
    for p in range(pairs):
        order = (plain_spec, watched_spec) if p % 2 == 0 else (watched_spec, plain_spec)
        runs = {spec.sharpness_every: train_run(STRATEGIES["fixed-sgd"], spec, 0, mean, std) for spec in order}
        plain, watched = runs[0]["epochs"][0], runs[every]
        calls = len(watched["sharpness"])
        monitor_s = watched["epochs"][0]["sharpness_s"]
        fractions.append(monitor_s / plain["wall_s"])
        per_call.append(monitor_s / calls / (plain["wall_s"] / plain["steps"]))
        print(f"| {p + 1} | {plain['wall_s']:.2f} | {watched['epochs'][0]['wall_s']:.2f} | {monitor_s:.2f} ({calls}) "
              f"| {100 * fractions[-1]:.1f}% | {per_call[-1]:.1f} |")
    print(f"| median | | | | **{100 * statistics.median(fractions):.1f}%** | {statistics.median(per_call):.1f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=100, help="monitor every N steps (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="one-off measurements (default 5)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the accuracy run (default 2)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of the per-call cost (default 15)")
    parser.add_argument("--pairs", type=int, default=5, help="plain/monitored run pairs (default 5)")
    parser.add_argument("--skip", nargs="*", default=(), choices=("one-off", "accuracy", "per-call", "overhead"))
    args = parser.parse_args()

    data = load_dataset("fashion-mnist")
    mean, std = channel_stats(data.train_images)
    print(f"# Sharpness toolkit on the Fashion-MNIST MLP; monitor batch {MONITOR_BATCH}, {MONITOR_ITERS} Lanczos "
          f"steps per call, every {args.every} steps; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {date.today().isoformat()}")
    print()
    if "one-off" not in args.skip:
        one_off(data, mean, std, args.repeats)
    if "accuracy" not in args.skip:
        accuracy(data, mean, std, args.epochs, args.every)
    if "per-call" not in args.skip:
        per_call(data, mean, std, args.rounds, [(128, 1, True), (128, 2, True), (128, 3, True), (32, 2, True),
                                                (128, 2, False)])
    if "overhead" not in args.skip:
        overhead(data, mean, std, args.pairs, args.every)


if __name__ == "__main__":
    main()
