"""Cost of the sharpness toolkit on the Fashion-MNIST MLP: ``python benchmarks/sharpness_cost.py [--every 100]``.

1. The unit: one forward-backward of the MLP (784-256-256-256-10) on a batch of 1024 training images.
2. ``top_eigenvalue`` and ``layer_sharpness`` (4 layers, one batched Lanczos) on that batch from a random start,
   at the monitor's tolerance: Hessian-vector products, seconds, and seconds in forward-backward equivalents.
3. One epoch of fixed-lr SGD (batch 128, the training comparison's loop) without and with
   ``SharpnessMonitor`` every N steps (global and per-layer, warm-started, the same batch of 1024): the
   monitor's time as a fraction of the epoch's training time, and the largest N-th with which it stays <= 10%.

Prints one markdown table. Timings are medians of ``--repeats`` runs where a run is short.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from datetime import date

import torch
from torch.nn import functional as F

from torch_layerlr.data import channel_stats, normalize
from torch_layerlr.models.vision import MLP
from torch_layerlr.sharpness import layer_sharpness, module_groups, top_eigenvalue
from torch_layerlr.train import STRATEGIES, RunSpec, load_dataset, train_run
from torch_layerlr.train.loop import SHARPNESS_BATCH


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=100, help="monitor every N steps (default 100)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tol", type=float, default=1e-3, help="Lanczos tolerance (the monitor's default, 1e-3)")
    args = parser.parse_args()

    data = load_dataset("fashion-mnist")
    mean, std = channel_stats(data.train_images)
    torch.manual_seed(0)
    model = MLP()
    x = normalize(data.train_images[:SHARPNESS_BATCH], mean, std)
    y = data.train_labels[:SHARPNESS_BATCH]
    loss_fn = lambda: F.cross_entropy(model(x), y)  # noqa: E731

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn().backward()

    for _ in range(3):
        forward_backward()
    fb = median_time(forward_backward, 4 * args.repeats)
    params = list(model.parameters())
    groups = module_groups(model)
    top = top_eigenvalue(loss_fn, params, tol=args.tol)
    t_top = median_time(lambda: top_eigenvalue(loss_fn, params, tol=args.tol), args.repeats)
    blocks = layer_sharpness(loss_fn, groups, tol=args.tol)
    t_layer = median_time(lambda: layer_sharpness(loss_fn, groups, tol=args.tol), args.repeats)
    layer_iters = max(b.iterations for b in blocks.values())

    spec = RunSpec(data, "mlp", epochs=1, batch_size=128)
    plain = train_run(STRATEGIES["fixed-sgd"], spec, 0, mean, std)["epochs"][0]
    watched_run = train_run(STRATEGIES["fixed-sgd"], RunSpec(data, "mlp", epochs=1, batch_size=128,
                                                             sharpness_every=args.every), 0, mean, std)
    watched = watched_run["epochs"][0]
    records = watched_run["sharpness"]
    per_call = statistics.fmean(r["seconds"] for r in records)
    hvps = statistics.fmean(r["hvps"] for r in records)
    fraction = watched["sharpness_s"] / plain["wall_s"]
    steps = plain["steps"]
    every_10 = math.ceil(args.every * fraction / 0.10)

    print(f"# Sharpness toolkit cost: Fashion-MNIST MLP, batch {SHARPNESS_BATCH}, tol {args.tol:g}; "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, {date.today().isoformat()}")
    print()
    print("| measurement | Hessian-vector products | seconds | forward-backward equivalents |")
    print("|---|---:|---:|---:|")
    print(f"| forward-backward, batch {SHARPNESS_BATCH} (the unit) | — | {fb:.4f} | 1 |")
    print(f"| top_eigenvalue, random start (S = {top.value:.3f}) | {top.iterations} | {t_top:.3f} | "
          f"{t_top / fb:.0f} |")
    print(f"| layer_sharpness, 4 layers, random start | {layer_iters} batched x 4 | {t_layer:.3f} | "
          f"{t_layer / fb:.0f} |")
    print(f"| monitor call (global + 4 layers, warm start), mean of {len(records)} | {hvps:.0f} | {per_call:.3f} | "
          f"{per_call / fb:.0f} |")
    print()
    print("| epoch of fixed-lr SGD, batch 128 | steps | training s | monitor s | monitor / epoch |")
    print("|---|---:|---:|---:|---:|")
    print(f"| without monitor | {steps} | {plain['wall_s']:.2f} | — | — |")
    print(f"| monitor every {args.every} steps | {steps} | {watched['wall_s']:.2f} | {watched['sharpness_s']:.2f} | "
          f"{100 * fraction:.0f}% |")
    print()
    print(f"At this cost the monitor stays within 10% of an epoch from every ~{every_10} steps on.")
    print("Layer sharpness S_l at the last measurement: "
          + ", ".join(f"{k} {v:.3f}" for k, v in records[-1]["layers"].items())
          + f"; global S {records[-1]['sharpness']:.3f}, eta*S {records[-1]['eta_s']:.3f}")


if __name__ == "__main__":
    main()
