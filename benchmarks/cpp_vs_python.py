"""C++ against Python: the same training epoch of the DALS paper's MLP on Fashion-MNIST with the same optimizer.

Both sides run the loop of ``examples/cpp/train_fashion_mnist.cpp``: batch 128 in a random order, images normalized
with the training set's pixel mean and std, ``zero_grad``, forward, cross-entropy, backward, then the optimizer
step (for DALS ``update_phase(loss)`` then ``step()``; for the others a cosine lr set on the groups, then ``step()``),
with the example's hyperparameters (the training comparison's, LAMB at lr 4e-3).
The table gives, per optimizer, the wall time of one epoch and the time spent in the optimizer steps (summed over
the epoch's 469 steps), C++ and Python side by side (each the fastest of ``--repeats`` runs, C++ and Python
interleaved, so that other load on the machine disturbs both alike), and the test accuracy after the epoch.

    make cpp-example && python benchmarks/cpp_vs_python.py [--optimizers lamb,dals,lars,sgd] [--threads 2]

OpenMP threads wait passively on both sides (``OMP_WAIT_POLICY=PASSIVE`` unless set): spinning waits cost a
shared machine several times the epoch.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp; the C++ run inherits it

import argparse
import math
import platform
import re
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from torch_layerlr.data.fashion import read_idx
from torch_layerlr.models.vision import MLP
from torch_layerlr.optim import DALS, LAMB, LARS, LayerwiseSGD

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "build" / "cpp-example" / "train_fashion_mnist"
DATA = ROOT / "build" / "fashion-mnist-idx"
WD = 5e-4  # the SGD-family weight decay of the comparison


def make_optimizer(name: str, model: MLP, total_steps: int):
    if name == "lamb":
        return LAMB(model.parameters(), lr=4e-3, weight_decay=0.01)
    if name == "dals":
        return DALS(model, variant="dals", weight_decay=WD, total_steps=total_steps)
    if name == "lars":
        return LARS(model.parameters(), lr=0.03, momentum=0.9, weight_decay=WD, trust_coefficient=0.02)
    if name == "sgd":
        return LayerwiseSGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=WD)
    raise ValueError(f"unknown optimizer {name!r}")


def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(DATA / f"{split}-images-idx3-ubyte").float().div(255.0).unsqueeze(1)
    labels = read_idx(DATA / f"{split}-labels-idx1-ubyte").long()
    return images, labels


def python_epoch(name: str, batch_size: int = 128, seed: int = 0) -> dict[str, float]:
    torch.manual_seed(seed)
    train_x, train_y = load("train")
    test_x, test_y = load("t10k")
    mean, std = train_x.mean(), train_x.std()
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    n = train_x.shape[0]
    steps = -(-n // batch_size)
    model = MLP()
    opt = make_optimizer(name, model, steps)
    base_lr = opt.param_groups[0]["lr"]
    start = time.perf_counter()
    step_seconds = 0.0
    order = torch.randperm(n)
    for b in range(steps):
        idx = order[b * batch_size:(b + 1) * batch_size]
        opt.zero_grad()
        loss = F.cross_entropy(model(train_x.index_select(0, idx)), train_y.index_select(0, idx))
        loss.backward()
        t0 = time.perf_counter()
        if isinstance(opt, DALS):
            opt.update_phase(loss)
        else:
            for group in opt.param_groups:
                group["lr"] = 0.5 * base_lr * (1.0 + math.cos(math.pi * b / steps))
        opt.step()
        step_seconds += time.perf_counter() - t0
        loss.item()
    epoch_seconds = time.perf_counter() - start
    with torch.no_grad():
        correct = sum(int((model(test_x[i:i + 1000]).argmax(1) == test_y[i:i + 1000]).sum())
                      for i in range(0, test_x.shape[0], 1000))
    return dict(epoch_seconds=epoch_seconds, step_seconds=step_seconds, test_accuracy=100.0 * correct / test_x.shape[0])


def cpp_epoch(name: str, threads: int) -> dict[str, float]:
    out = subprocess.run([str(BINARY), "--optimizer", name, "--epochs", "1", "--threads", str(threads),
                          "--data", str(DATA)], capture_output=True, text=True, check=True).stdout
    fields = re.search(r"RESULT epoch=1 epoch_seconds=(\S+) step_seconds=(\S+) test_accuracy=(\S+)", out)
    if fields is None:
        raise RuntimeError(f"no RESULT line in the example's output:\n{out}")
    return dict(zip(("epoch_seconds", "step_seconds", "test_accuracy"), map(float, fields.groups())))


def fastest(runs: list[dict[str, float]]) -> dict[str, float]:
    """The shortest epoch and the shortest step total of the runs (each run's accuracy is the same)."""
    return dict(epoch_seconds=min(r["epoch_seconds"] for r in runs), step_seconds=min(r["step_seconds"] for r in runs),
                test_accuracy=runs[0]["test_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default="lamb,dals,lars,sgd")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not BINARY.exists() or not DATA.exists():
        raise SystemExit("run `make cpp-example` first (it builds the C++ example and decompresses the data)")
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, fastest of {args.repeats} runs")
    print("| optimizer | epoch C++ (s) | epoch Python (s) | Python/C++ | steps C++ (s) | steps Python (s) "
          "| Python/C++ | test acc C++ / Python (%) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.optimizers.split(","):
        cpp_runs, py_runs = [], []
        for _ in range(args.repeats):
            cpp_runs.append(cpp_epoch(name, args.threads))
            py_runs.append(python_epoch(name))
        cpp, py = fastest(cpp_runs), fastest(py_runs)
        print(f"| {name} | {cpp['epoch_seconds']:.2f} | {py['epoch_seconds']:.2f} | "
              f"{py['epoch_seconds'] / cpp['epoch_seconds']:.2f} | {cpp['step_seconds']:.3f} | "
              f"{py['step_seconds']:.3f} | {py['step_seconds'] / cpp['step_seconds']:.2f} | "
              f"{cpp['test_accuracy']:.2f} / {py['test_accuracy']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
