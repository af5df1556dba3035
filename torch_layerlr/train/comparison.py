"""A comparison: every strategy x seed on one dataset and model, written to ``results.json``, ``table.md`` and
``curves.png`` (``python -m torch_layerlr train``)."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import date
from typing import Any, Optional

import torch

from torch_layerlr.data import ImageDataset, channel_stats, cifar10, fashion_mnist, split_train, synthetic_images
from torch_layerlr.train.loop import RunSpec, train_run
from torch_layerlr.distributed.data_parallel import is_main
from torch_layerlr.train.report import load_json, markdown_table, plot_curves, save_json, summarize
from torch_layerlr.train.sweep import parse_factors, sweep_table, tune
from torch_layerlr.train.zoo import Strategy

__all__ = ["DATASETS", "DEFAULT_TARGETS", "load_dataset", "resolve_dataset", "compare"]

DATASETS = ("fashion-mnist", "cifar10", "synthetic")

#: Validation accuracies (%) whose first epoch the table reports, per dataset.
DEFAULT_TARGETS = {"fashion-mnist": (85.0, 88.0, 90.0), "cifar10": (60.0, 70.0, 75.0), "synthetic": (80.0, 90.0)}

#: The held-out share of the training set; the split is the same for every seed and strategy.
VAL_FRACTION = 0.1


def resolve_dataset(name: str, root: Optional[str] = None) -> str:
    """``"auto"`` is Fashion-MNIST where its files are found (``root``, ``$LAYERLR_DATA``, Debian's location), else
    the synthetic task; any other name is returned as it is."""
    if name != "auto":
        return name
    try:
        fashion_mnist(root)
    except FileNotFoundError:
        return "synthetic"
    return "fashion-mnist"


def load_dataset(name: str, root: Optional[str] = None) -> ImageDataset:
    """The dataset ``name`` (one of :data:`DATASETS`) with its validation split."""
    if name == "fashion-mnist":
        data = fashion_mnist(root)
    elif name == "cifar10":
        if root is None:
            raise ValueError("cifar10 needs --data-root: the directory holding cifar-10-batches-py or "
                             "cifar-10-batches-bin (nothing is downloaded)")
        data = cifar10(root)
    elif name == "synthetic":
        data = synthetic_images()
    else:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    return split_train(data, VAL_FRACTION, seed=0)


def _machine(device: str) -> dict[str, Any]:
    info = dict(python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
                cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(), device=device,
                date=date.today().isoformat())
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def compare(dataset: str, model: str, strategies: Sequence[Strategy], epochs: int, seeds: int, out: str, *,
            data_root: Optional[str] = None, batch_size: int = 128, augment: Optional[bool] = None,
            device: str = "cpu", targets: Optional[Sequence[float]] = None, resume: bool = True,
            show_progress: bool = True, parallel: str = "none", sharpness_every: int = 0,
            lr_sweep: Optional[Sequence[float]] = None) -> str:
    """Run every strategy with seeds ``0 .. seeds-1`` and write ``out/results.json`` (after every run),
    ``out/table.md`` and ``out/curves.png``. Returns the table.

    ``parallel`` (``"ddp"`` or ``"fsdp2"``, under torchrun): every rank trains on its share of each batch; rank 0
    alone prints and writes the files.

    ``sharpness_every`` = N > 0: every run measures the global and per-layer sharpness every N steps
    (:class:`~torch_layerlr.sharpness.SharpnessMonitor`; ``RunSpec.sharpness_every``), and N is part of the
    configuration under which runs are resumed.

    ``lr_sweep`` (factors of every strategy's default rates): equal tuning (:mod:`~torch_layerlr.train.sweep`):
    seed 0 at every factor, the best on the validation split chosen, then the seeds at it; the table shows the
    runs at the chosen factors, and ``out/sweep.md`` every sweep run.

    ``augment`` defaults to random crop + flip on CIFAR-10 only. With ``resume``, runs already in
    ``out/results.json`` under the same configuration are kept and not repeated.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    data = load_dataset(dataset, data_root)
    augment = (dataset == "cifar10") if augment is None else bool(augment)
    spec = RunSpec(data, model, epochs, batch_size, augment, device, sharpness_every=sharpness_every,
                   parallel=parallel)
    main = is_main()
    targets = tuple(DEFAULT_TARGETS[dataset] if targets is None else targets)
    mean, std = channel_stats(data.train_images)
    config = dict(dataset=dataset, model=model, epochs=epochs, batch_size=batch_size, augment=augment,
                  val_fraction=VAL_FRACTION, train=data.train_images.shape[0], val=data.val_images.shape[0],
                  test=data.test_images.shape[0])
    if sharpness_every:  # absent when off, so that results written before the monitor existed still resume
        config["sharpness_every"] = sharpness_every
    if lr_sweep is not None:
        lr_sweep = parse_factors(lr_sweep)
        config["lr_sweep"] = list(lr_sweep)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "results.json")
    previous = load_json(path) if resume else None
    runs: list[dict[str, Any]] = []
    if previous is not None and previous.get("config") == config:
        runs = list(previous["runs"])

    from tqdm import tqdm

    steps_per_epoch = -(-data.train_images.shape[0] // batch_size)

    def train(strategy: Strategy, scale: float, seed: int) -> dict[str, Any]:
        with tqdm(total=epochs * steps_per_epoch, desc=f"{strategy.name} x{scale:.3g} seed {seed}", unit="step",
                  disable=not (show_progress and main), leave=False, mininterval=1.0) as bar:
            run = train_run(strategy, spec, seed, mean, std, progress=lambda epoch, i: bar.update(1), lr_scale=scale)
        last = run["epochs"][-1]
        if main:
            print(f"  {strategy.name:<14} x{scale:<6.3g} seed {seed}: test {last['test_acc']:.2f}%  "
                  f"val {last['val_acc']:.2f}%  train loss {last['train_loss']:.4f}  {last['wall_s']:.1f} s"
                  + ("  DIVERGED" if run["diverged"] else ""), flush=True)
        return run

    def save(run: dict[str, Any]) -> None:
        runs.append(run)
        if main:
            save_json(path, dict(config=config, machine=_machine(device), runs=runs))

    done = {(r["strategy"], r.get("lr_scale", 1.0), r["seed"]) for r in runs}
    if lr_sweep is None:
        todo = f"{sum((s.name, 1.0, seed) not in done for s in strategies for seed in range(seeds))} runs to do"
    else:  # the seeds after the first depend on the factor the sweep chooses
        wanted = {(s.name, f, 0) for s in strategies for f in lr_sweep}
        todo = f"{len(wanted - done)} sweep runs and up to {len(strategies) * (seeds - 1)} more to do"
    if main:
        print(f"{dataset} ({config['train']} train / {config['val']} val / {config['test']} test), {model}, "
              f"{epochs} epochs, {todo} -> {out}")
    shown: list[dict[str, Any]] = []
    tunings = {}
    for strategy in strategies:
        mine = [r for r in runs if r["strategy"] == strategy.name]
        if lr_sweep is None:
            for seed in range(seeds):
                run = next((r for r in mine if r["seed"] == seed), None)
                if run is None:
                    run = train(strategy, 1.0, seed)
                    save(run)
                shown.append(run)
        else:
            tunings[strategy.name] = tune(lambda scale, seed: train(strategy, scale, seed), lr_sweep, seeds,
                                          previous=mine, on_run=save)
            shown += tunings[strategy.name].runs

    table = markdown_table(summarize(shown, targets), targets)
    title = f"{dataset} / {model}, {seeds} seed(s) x {epochs} epochs"
    if not main:
        return table
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(f"# {title}\n\n{table}")
    plot_curves(shown, os.path.join(out, "curves.png"), title)
    if tunings:
        with open(os.path.join(out, "sweep.md"), "w") as f:
            f.write(f"# {title}: LR sweep (seed 0, final validation accuracy %)\n\n{sweep_table(tunings)}")
    return table
