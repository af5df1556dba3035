"""LARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017, arXiv:1708.03888)."""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import Tensor

from torch_layerlr._ops import Recipe
from torch_layerlr.optim._base import FusedOptimizer, check_float
from torch_layerlr.optim._grokfast_stage import grokfast_coef, grokfast_defaults, with_grokfast
from torch_layerlr.optim.layerwise import LrMult

__all__ = ["LARS"]


class LARS(FusedOptimizer):
    r"""LARS, eq. 6 and Algorithm 1 of You et al. (2017).

    .. math::
        \begin{aligned}
        \lambda_l &= \frac{\gamma\,\|w_l\|}{\|g_l\| + \beta\|w_l\| + \epsilon}
            \quad (1 \text{ if } \|w_l\| = 0 \text{ or } \|g_l\| = 0) \\
        v_l &\leftarrow \mu v_l + \eta\, m_l\, \lambda_l\, (g_l + \beta w_l), \qquad
        w_l \leftarrow w_l - v_l
        \end{aligned}

    The local rate scales the gradient *before* it enters the momentum buffer. With ``nesterov`` the step is
    :math:`\mu v_l + \eta m_l \lambda_l (g_l + \beta w_l)`. With ``exclude_1d`` (the usual practice for biases and
    norm layers) tensors with ``ndim <= 1`` get :math:`\lambda_l = 1` and no weight decay. With
    ``grokfast_alpha`` set, :math:`g` is first replaced by its Grokfast-EMA filtered version.

    Args:
        params: parameters or param groups (groups may set ``lr_mult``, a float or one float per parameter).
        lr: base learning rate :math:`\eta` (default 1e-3, as ``torch.optim.SGD``; groups may set their own).
        momentum: :math:`\mu`.
        weight_decay: :math:`\beta`.
        trust_coefficient: :math:`\gamma` (the paper's "trust" coefficient).
        eps: :math:`\epsilon` in the denominator.
        nesterov: Nesterov momentum.
        exclude_1d: exempt tensors with ``ndim <= 1`` from adaptation and weight decay.
        grokfast_alpha, grokfast_lambda: optional Grokfast-EMA stage (off when ``grokfast_alpha`` is None).
        lr_mult: per-tensor learning-rate multiplier(s).
        maximize: maximize the objective.
        state_precision: ``"fp32"`` (default), ``"bf16"`` or ``"int8"`` optimizer state (see
            :class:`~torch_layerlr.optim.FusedOptimizer`).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 0.0, nesterov: bool = False,
                 exclude_1d: bool = True, grokfast_alpha: Optional[float] = None, grokfast_lambda: float = 2.0,
                 lr_mult: LrMult = 1.0, *, maximize: bool = False, state_precision: str = "fp32") -> None:
        check_float("lr", lr, low=0.0)
        check_float("momentum", momentum, low=0.0, high=1.0)
        check_float("weight_decay", weight_decay, low=0.0)
        check_float("trust_coefficient", trust_coefficient, low=0.0)
        check_float("eps", eps, low=0.0)
        if nesterov and momentum <= 0:
            raise ValueError("nesterov momentum requires a momentum > 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        eps=eps, nesterov=nesterov, exclude_1d=exclude_1d, lr_mult=lr_mult, maximize=maximize,
                        state_precision=state_precision,
                        **grokfast_defaults(grokfast_alpha, grokfast_lambda))
        super().__init__(params, defaults)

    def _recipe(self, group: dict[str, Any]) -> Recipe:
        recipe = Recipe(moment="sgd", decay="coupled", trust="lars", momentum=group["momentum"],
                        nesterov=group["nesterov"], trust_coefficient=group["trust_coefficient"],
                        trust_eps=group["eps"], maximize=group["maximize"])
        return with_grokfast(recipe, group)

    def _tensor_settings(self, group: dict[str, Any], index: int, param: Tensor) -> tuple[float, float, bool]:
        if group["exclude_1d"] and param.ndim <= 1:
            return 0.0, 0.0, False
        return float(group["weight_decay"]), 0.0, True

    def _filter_coef(self, group: dict[str, Any], device: torch.device) -> Optional[Tensor]:
        return grokfast_coef(group, device)
