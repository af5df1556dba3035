"""The model, data and optimizer settings the distributed tests share.

Every optimizer class of torch_layerlr.optim, with settings that exercise its stages (weight decay, momentum,
filters; trust ratios on 1-D tensors too, so that empty shards of biases take part). The model's shapes shard
unevenly over 3 ranks (dim 0 of 7 and 2 rows), so one rank holds an empty shard of the last layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torch_layerlr.optim import DALS, LAMB, LARS, DepthScaledSGD, GrokfastAdamW, LayerwiseAdamW, LayerwiseSGD

__all__ = ["OPTIMIZERS", "TRUST", "ELEMENTWISE", "make_model", "make_batch", "make_optimizer", "rank_rows",
           "loss_of"]

BATCH = 12  # divisible by 2 and 3 ranks

# name -> (class, keyword arguments); DALS gets a depth per parameter from make_optimizer
OPTIMIZERS: dict[str, tuple[type, dict[str, Any]]] = {
    "LayerwiseSGD": (LayerwiseSGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-3, lr_mult=[1.0, 0.5, 2.0, 1.5])),
    "LayerwiseAdamW": (LayerwiseAdamW, dict(lr=1e-2, weight_decay=1e-2)),
    "GrokfastAdamW": (GrokfastAdamW, dict(lr=1e-2, grokfast_alpha=0.9, grokfast_lambda=2.0)),
    # depth given: its default (the number of tensors given) would differ between ZeRO's partitions
    "DepthScaledSGD": (DepthScaledSGD, dict(mu_xx=1.0, mu_yx=0.5, depth=4, momentum=0.5)),
    "LARS": (LARS, dict(lr=0.5, momentum=0.9, weight_decay=1e-3, trust_coefficient=0.02, exclude_1d=False)),
    "LAMB": (LAMB, dict(lr=2e-2, weight_decay=1e-2)),
    # trust_coefficient 0.5: ratios inside DALS's clamp [0.2, 5], so that they depend on the (global) norms
    "DALS": (DALS, dict(variant="dals", total_steps=10, weight_decay=1e-3, trust_coefficient=0.5)),
}
TRUST = ("LARS", "LAMB", "DALS")
ELEMENTWISE = tuple(name for name in OPTIMIZERS if name not in TRUST)


def make_model(dtype: torch.dtype, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2)).to(dtype)


def make_batch(step: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The union batch of ``step`` (the same on every rank)."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(BATCH, 5, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randn(BATCH, 2, generator=g, dtype=torch.float64).to(dtype)
    return x, y


def rank_rows(rank: int, world_size: int) -> slice:
    share = BATCH // world_size
    return slice(rank * share, (rank + 1) * share)


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(x), y)


def make_optimizer(name: str, params: list, **extra: Any):
    cls, kwargs = OPTIMIZERS[name]
    kwargs = {**kwargs, **extra}
    if cls is DALS:
        return cls([{"params": params, "depth_ratio": [0.0, 0.0, 1.0, 1.0]}], **kwargs)
    return cls(params, **kwargs)


def step_with_loss(opt, loss: torch.Tensor) -> None:
    """``opt.step()``, feeding DALS (or a ZeroRedundancyOptimizer over DALS, which passes keywords on) its loss."""
    if isinstance(opt, DALS) or isinstance(getattr(opt, "optim", None), DALS):
        opt.step(loss=loss.detach())
    else:
        opt.step()
