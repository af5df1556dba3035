"""Command line: ``python -m torch_layerlr demo | validate | train``."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch
from torch import nn

from torch_layerlr.optim import DALS


def demo(steps: int = 200, seed: int = 0, report_every: int = 40) -> None:
    """Train a small MLP with DALS on a synthetic 10-class task and print per-layer trust ratios."""
    torch.manual_seed(seed)
    centers = torch.randn(10, 32)
    labels = torch.randint(0, 10, (4096,))
    inputs = centers[labels] + 2.0 * torch.randn(4096, 32)
    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = DALS(model, total_steps=steps)
    names = {p: n for n, p in model.named_parameters()}

    print(f"DALS on a synthetic 10-class task: MLP 32-128-128-10, {steps} steps, batch 128")
    for step in range(1, steps + 1):
        batch = torch.randint(0, inputs.shape[0], (128,))

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        if step == 1 or step % report_every == 0:
            ratios = optimizer.trust_ratios()
            accuracy = (model(inputs).argmax(1) == labels).float().mean().item()
            print(f"\nstep {step:4d}  loss {loss.item():.4f}  accuracy {accuracy:.3f}  phase {optimizer.phase}")
            depth = dict(zip(optimizer.param_groups[0]["params"], optimizer.param_groups[0]["depth_ratio"]))
            print(f"  {'tensor':<10} {'depth':>6} {'trust ratio':>12}")
            for p, ratio in ratios.items():
                print(f"  {names[p]:<10} {depth[p]:>6.2f} {ratio:>12.4f}")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``train`` (shared with ``benchmarks/strategies.py``)."""
    from torch_layerlr.models.vision import MODELS
    from torch_layerlr.train import DATASETS, STRATEGIES

    parser.add_argument("--dataset", choices=DATASETS + ("auto",), default="fashion-mnist",
                        help="auto: Fashion-MNIST if its files are found, else the synthetic task")
    parser.add_argument("--data-root", default=None,
                        help="directory with the dataset files (Fashion-MNIST default: $LAYERLR_DATA, then "
                             "/usr/share/datasets/fashion-mnist; CIFAR-10: required)")
    parser.add_argument("--model", default="mlp", metavar="MODEL",
                        help=f"one of {', '.join(sorted(MODELS))}, or deep-mlp-L / res-mlp-L (L weight layers, "
                             "plain or residual); default mlp")
    parser.add_argument("--optimizer", default="all", metavar="NAME[,NAME...]",
                        help="strategies to compare, or 'all': " + ", ".join(STRATEGIES))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3, help="runs per strategy, with seeds 0 .. K-1")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random crop (padding 4) and flip; default: on for cifar10 only")
    parser.add_argument("--targets", type=float, nargs="+", default=None, metavar="ACC",
                        help="validation accuracies (%%) whose first epoch the table reports")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-resume", action="store_true", help="redo runs already in OUT/results.json")
    parser.add_argument("--sharpness-every", type=int, default=0, metavar="N",
                        help="measure the global and per-layer sharpness (top Hessian eigenvalues) every N steps on "
                             "a fixed batch of 128 training images, and plot eta*S (0: off; N is part of the "
                             "configuration runs resume under)")
    parser.add_argument("--lr-sweep", nargs="?", const="default", default=None, metavar="FACTORS",
                        help="equal tuning: seed 0 at each factor (comma-separated; default 1/9,1/3,1,3,9) times "
                             "every strategy's default rates, the best on the validation split chosen, then the "
                             "seeds at it; every sweep run is kept and tabled in OUT/sweep.md")
    parser.add_argument("--out", default="out/train", help="output directory (default: out/train)")
    parser.add_argument("--parallel", choices=("none", "ddp", "fsdp2"), default="none",
                        help="under torchrun: train data-parallel with DDP or FSDP2, each rank on its share of "
                             "every batch (rank 0 writes the results)")


def train(args: argparse.Namespace) -> None:
    """``python -m torch_layerlr train``: run the comparison and print the table and where the files are."""
    from torch_layerlr.train import compare, parse_strategies, resolve_dataset

    if args.sharpness_every < 0:
        sys.exit(f"error: --sharpness-every must be >= 0, got {args.sharpness_every}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from torch_layerlr.distributed.data_parallel import init_from_env, is_main

    if args.parallel != "none" and not init_from_env(args.device):
        sys.exit("error: --parallel needs torchrun: torchrun --nproc-per-node N -m torch_layerlr train ...")
    try:
        strategies = parse_strategies(args.optimizer)
    except ValueError as exc:
        sys.exit(f"error: --optimizer: {exc}")
    from torch_layerlr.train.sweep import SWEEP_FACTORS, parse_factors

    try:
        lr_sweep = None if args.lr_sweep is None else (
            SWEEP_FACTORS if args.lr_sweep == "default" else parse_factors(args.lr_sweep))
    except ValueError as exc:
        sys.exit(f"error: --lr-sweep: {exc}")
    from torch_layerlr.models.vision import build_model

    try:
        build_model(args.model, 1, 28, 10)
    except ValueError as exc:
        sys.exit(f"error: --model: {exc}")
    dataset = resolve_dataset(args.dataset, args.data_root)
    if dataset != args.dataset:
        print(f"--dataset auto: using {dataset}" + (" (Fashion-MNIST files not found)" if dataset == "synthetic" else ""))
    table = compare(dataset, args.model, strategies, args.epochs, args.seeds, args.out,
                    data_root=args.data_root, batch_size=args.batch_size, augment=args.augment,
                    device=args.device, targets=args.targets, resume=not args.no_resume,
                    parallel=args.parallel, sharpness_every=args.sharpness_every, lr_sweep=lr_sweep)
    if not is_main():
        return
    print()
    print(table)
    print(f"Results: {args.out}/results.json, {args.out}/table.md, {args.out}/curves.png"
          + (f", {args.out}/sweep.md" if lr_sweep is not None else ""))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m torch_layerlr")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="train a small model with DALS and print per-layer trust ratios")
    p_demo.add_argument("--steps", type=int, default=200)
    p_demo.add_argument("--seed", type=int, default=0)
    p_val = sub.add_parser("validate", help="check the depth-scaling, two-step layer-balancing and multi-pathway "
                                            "closed forms against Hessians, simulations and GD, draw the papers' "
                                            "figures, write report.md/report.json")
    p_val.add_argument("--out", default="out/validate", help="output directory (default: out/validate)")
    p_val.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p_val.add_argument("--only", nargs="+", metavar="CHECK",
                       help="run only these check groups: sharpness stability time_course closed_forms plateau "
                            "transfer matrix balance_gradients balance_identities balance_monte_carlo "
                            "balance_curvature balance_gd balance_schedules multipath_hessian multipath_gd "
                            "multipath_depths multipath_wcr multipath_tanh")
    p_train = sub.add_parser("train", help="train a model with several learning-rate strategies and seeds; write "
                                           "results.json, table.md and curves.png")
    add_train_arguments(p_train)
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args)
    elif args.command == "demo":
        demo(steps=args.steps, seed=args.seed)
    elif args.command == "validate":
        from torch_layerlr.validate.report import validate

        print("validating the depth-scaling theory, two-step layer balancing and multi-pathway networks -> "
              + args.out)
        if not validate(args.out, figures=not args.no_figures, only=args.only):
            sys.exit(1)
