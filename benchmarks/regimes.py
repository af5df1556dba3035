"""What the regime benchmarks (``large_batch.py``, ``finetune.py``, ``depth_transfer.py``) share: the data, a
resumable store of runs, equal tuning through :func:`torch_layerlr.train.sweep.tune`, and summaries.

Every run is a :func:`torch_layerlr.train.train_run` record plus the ``key`` naming its cell (e.g.
``"sgd/b128"``); the store is rewritten after every run, so an interrupted benchmark resumes where it stopped
(unless the configuration it was started with changed)."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import torch

from torch_layerlr.data import ImageDataset, channel_stats
from torch_layerlr.train import RunSpec, Strategy, load_dataset, train_run
from torch_layerlr.train.sweep import Tuning, find_run, tune

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

Run = dict[str, Any]


def fashion_mnist() -> tuple[ImageDataset, tuple[float, ...], tuple[float, ...]]:
    """Fashion-MNIST with the comparison's validation split (10%, seed 0) and its channel statistics."""
    data = load_dataset("fashion-mnist")
    mean, std = channel_stats(data.train_images)
    return data, mean, std


class Store:
    """Runs by cell key, in ``path`` (JSON), kept while ``config`` is unchanged."""

    def __init__(self, path: str, config: dict[str, Any], resume: bool = True) -> None:
        self.path, self.config = path, config
        self.runs: list[Run] = []
        if resume and os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            if old.get("config") == config:
                self.runs = old["runs"]
        os.makedirs(os.path.dirname(path), exist_ok=True)

    def of(self, key: str) -> list[Run]:
        return [r for r in self.runs if r["key"] == key]

    def add(self, key: str, run: Run) -> None:
        run["key"] = key
        self.runs.append(run)
        machine = dict(python=platform.python_version(), torch=torch.__version__, cpu=platform.processor(),
                       threads=torch.get_num_threads(), date=date.today().isoformat())
        with open(self.path + ".tmp", "w") as f:
            json.dump(dict(config=self.config, machine=machine, runs=self.runs), f)
        os.replace(self.path + ".tmp", self.path)

    def run(self, key: str, strategy: Strategy, spec: RunSpec, seed: int, lr_scale: float,
            mean: Sequence[float], std: Sequence[float]) -> Run:
        """The run of ``key`` with this seed and ``lr_scale``: from the store, or trained now and stored."""
        run = find_run(self.of(key), lr_scale, seed)
        if run is not None:
            return run
        run = train_run(strategy, spec, seed, mean, std, lr_scale=lr_scale)
        last = run["epochs"][-1]
        print(f"  {key:<28} x{lr_scale:<8.3g} seed {seed}: val {last['val_acc']:6.2f}  test {last['test_acc']:6.2f}"
              f"  {last['wall_s']:6.1f} s" + ("  DIVERGED" if run["diverged"] else ""), flush=True)
        self.add(key, run)
        return run

    def tuned(self, key: str, strategy: Strategy, spec: RunSpec, factors: Sequence[float], seeds: int,
              mean: Sequence[float], std: Sequence[float]) -> Tuning:
        """Equal tuning of ``strategy`` in cell ``key`` (:func:`~torch_layerlr.train.sweep.tune`)."""
        return tune(lambda scale, seed: self.run(key, strategy, spec, seed, scale, mean, std), factors, seeds,
                    previous=self.of(key))


def test_acc(run: Run) -> float:
    """Final test accuracy; NaN for a diverged run."""
    return math.nan if run["diverged"] else run["epochs"][-1]["test_acc"]


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and (sample) standard deviation over the finite values, and how many were not (diverged runs);
    the mean is NaN when none is finite."""
    finite = [v for v in values if math.isfinite(v)]
    t = torch.tensor(finite, dtype=torch.float64)
    mean = float(t.mean()) if finite else math.nan
    return mean, float(t.std()) if len(finite) > 1 else 0.0, len(values) - len(finite)


def pm(mean: float, std: float, diverged: int = 0) -> str:
    if math.isnan(mean):
        return f"diverged ({diverged}/{diverged})"
    return f"{mean:.2f} ± {std:.2f}" + (f" ({diverged} diverged)" if diverged else "")


def markdown(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write(out: str, name: str, text: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name), "w") as f:
        f.write(text)
    print(text)


def strategy(name: str, build: Callable, settings: str = "", layerwise: bool = True) -> Strategy:
    """A benchmark's own row (same fields as the zoo's)."""
    return Strategy(name, name, layerwise, settings, build)


