"""The optional Grokfast-EMA stage (Lee et al. 2024) of a recipe: its group entries, recipe switch and coefficients.

The filter keeps mu <- a*mu + (1-a)*g (mu starts at the first gradient) and hands the rest of the recipe
g_hat = g + lambda*mu, before weight decay. Any optimizer whose group has ``grokfast_alpha`` can run it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
from torch import Tensor

from torch_layerlr._ops import Recipe
from torch_layerlr.optim._base import check_float, to_device

__all__ = ["grokfast_defaults", "with_grokfast", "grokfast_coef"]


def grokfast_defaults(alpha: Optional[float], lam: float) -> dict[str, Any]:
    """Checked group entries of an optional Grokfast-EMA stage (off when ``alpha`` is None)."""
    if alpha is not None:
        check_float("grokfast_alpha", alpha, low=0.0, high=1.0, high_open=True)
    check_float("grokfast_lambda", lam, low=0.0)
    return dict(grokfast_alpha=alpha, grokfast_lambda=lam)


def with_grokfast(recipe: Recipe, group: dict[str, Any]) -> Recipe:
    """``recipe`` with the group's Grokfast stage switched on, if it has one."""
    if group["grokfast_alpha"] is None:
        return recipe
    return dataclasses.replace(recipe, filter="grokfast", filter_lambda=group["grokfast_lambda"])


def grokfast_coef(group: dict[str, Any], device: torch.device) -> Optional[Tensor]:
    """The engine's filter coefficients [alpha, gate] for the group's Grokfast stage."""
    if group["grokfast_alpha"] is None:
        return None
    return to_device(torch.tensor([group["grokfast_alpha"], 1.0], dtype=torch.float64), device)
