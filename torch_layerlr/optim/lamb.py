"""LAMB: layer-wise adaptive moments for large-batch training (You et al., ICLR 2020, arXiv:1904.00962)."""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

import torch
from torch import Tensor

from torch_layerlr._ops import Recipe
from torch_layerlr.optim._base import FusedOptimizer, check_betas, check_float
from torch_layerlr.optim._grokfast_stage import grokfast_coef, grokfast_defaults, with_grokfast
from torch_layerlr.optim.layerwise import LrMult

__all__ = ["LAMB"]


class LAMB(FusedOptimizer):
    r"""LAMB, Algorithm 2 of You et al. (2020).

    .. math::
        \begin{aligned}
        m &\leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2, \qquad
        \hat m = \frac{m}{1-\beta_1^t}, \quad \hat v = \frac{v}{1-\beta_2^t} \\
        r_l &= \frac{\hat m}{\sqrt{\hat v} + \epsilon} + \lambda w_l, \qquad
        w_l \leftarrow w_l - \eta\, m_l\, \frac{\phi(\|w_l\|)}{\|r_l\|}\, r_l
        \end{aligned}

    with :math:`\phi(z) = \min(z, \text{clamp\_value})` when ``clamp_value`` is set, else :math:`\phi(z) = z`.
    The ratio is 1 where :math:`\|w_l\|` or :math:`\|r_l\|` is 0, and for excluded tensors (``exclude_1d``
    and ``ndim <= 1``). Without ``bias_correction``, :math:`\hat m = m, \hat v = v`. With ``grokfast_alpha``
    set, :math:`g` is first replaced by its Grokfast-EMA filtered version.

    .. note:: Like apex's ``FusedLAMB``, the step reuses each gradient's memory for :math:`r_l`: after
       ``step()``, ``p.grad`` holds the tensor's update direction, not its gradient. Read or clip gradients
       before ``step()`` (``zero_grad()`` afterwards is unaffected). This halves the step's arithmetic.
    ``state_precision``: ``"fp32"`` (default), ``"bf16"`` or ``"int8"`` optimizer state (see
    :class:`~torch_layerlr.optim.FusedOptimizer`).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, bias_correction: bool = True,
                 clamp_value: Optional[float] = None, exclude_1d: bool = False,
                 grokfast_alpha: Optional[float] = None, grokfast_lambda: float = 2.0, lr_mult: LrMult = 1.0, *,
                 maximize: bool = False, state_precision: str = "fp32") -> None:
        check_float("lr", lr, low=0.0)
        check_float("eps", eps, low=0.0)
        check_float("weight_decay", weight_decay, low=0.0)
        if clamp_value is not None:
            check_float("clamp_value", clamp_value, low=0.0, low_open=True)
        defaults = dict(lr=lr, betas=check_betas(betas), eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction, clamp_value=clamp_value, exclude_1d=exclude_1d,
                        lr_mult=lr_mult, maximize=maximize, state_precision=state_precision,
                        **grokfast_defaults(grokfast_alpha, grokfast_lambda))
        super().__init__(params, defaults)

    def _recipe(self, group: dict[str, Any]) -> Recipe:
        beta1, beta2 = group["betas"]
        clamp = group["clamp_value"]
        recipe = Recipe(moment="adam", decay="update", trust="update", beta1=beta1, beta2=beta2, eps=group["eps"],
                        bias_correction=group["bias_correction"],
                        norm_max=math.inf if clamp is None else float(clamp), maximize=group["maximize"])
        return with_grokfast(recipe, group)

    def _tensor_settings(self, group: dict[str, Any], index: int, param: Tensor) -> tuple[float, float, bool]:
        return float(group["weight_decay"]), 0.0, not (group["exclude_1d"] and param.ndim <= 1)

    def _filter_coef(self, group: dict[str, Any], device: torch.device) -> Optional[Tensor]:
        return grokfast_coef(group, device)
