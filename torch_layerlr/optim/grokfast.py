"""Grokfast-EMA (Lee, Kang, Kim, Lee 2024, arXiv:2405.20233): the filter stage, and AdamW on its output.

The filter keeps mu <- a*mu + (1-a)*g (mu starts at the first gradient) and hands the optimizer
g_hat = g + lambda*mu. LayerwiseSGD, LARS and LAMB take it as an option (``grokfast_alpha``); GrokfastAdamW
always runs it.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import Tensor

from torch_layerlr._ops import Recipe
from torch_layerlr.optim._base import FusedOptimizer, check_betas, check_float
from torch_layerlr.optim._grokfast_stage import grokfast_coef, grokfast_defaults, with_grokfast
from torch_layerlr.optim.layerwise import LrMult, adamw_recipe

__all__ = ["GrokfastAdamW"]


class GrokfastAdamW(FusedOptimizer):
    r"""AdamW on the Grokfast-EMA filtered gradient.

    .. math::
        \mu \leftarrow \begin{cases} g & t = 1 \\ \alpha\mu + (1-\alpha) g & t > 1 \end{cases}, \qquad
        \hat g = g + \lambda \mu

    then :class:`~torch_layerlr.optim.LayerwiseAdamW` on :math:`\hat g`. The defaults are the authors'
    ``gradfilter_ema`` (:math:`\alpha = 0.98`, :math:`\lambda = 2`).
    ``state_precision``: ``"fp32"`` (default), ``"bf16"`` or ``"int8"`` optimizer state (see
    :class:`~torch_layerlr.optim.FusedOptimizer`).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, grokfast_alpha: float = 0.98,
                 grokfast_lambda: float = 2.0, lr_mult: LrMult = 1.0, *, maximize: bool = False,
                 state_precision: str = "fp32") -> None:
        check_float("lr", lr, low=0.0)
        check_float("eps", eps, low=0.0)
        check_float("weight_decay", weight_decay, low=0.0)
        if grokfast_alpha is None:
            raise ValueError("grokfast_alpha must be a number in [0, 1) for GrokfastAdamW, got None")
        defaults = dict(lr=lr, betas=check_betas(betas), eps=eps, weight_decay=weight_decay, lr_mult=lr_mult,
                        maximize=maximize, state_precision=state_precision,
                        **grokfast_defaults(grokfast_alpha, grokfast_lambda))
        super().__init__(params, defaults)

    def _recipe(self, group: dict[str, Any]) -> Recipe:
        return with_grokfast(adamw_recipe(group), group)

    def _filter_coef(self, group: dict[str, Any], device: torch.device) -> Optional[Tensor]:
        return grokfast_coef(group, device)
