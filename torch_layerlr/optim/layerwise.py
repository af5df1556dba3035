"""SGD and AdamW with per-layer learning-rate multipliers, on the fused engine."""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

from torch_layerlr._ops import Recipe
from torch_layerlr.optim._base import FusedOptimizer, check_betas, check_float
from torch_layerlr.optim._grokfast_stage import grokfast_coef, grokfast_defaults, with_grokfast

__all__ = ["LayerwiseSGD", "LayerwiseAdamW", "adamw_recipe"]

LrMult = Union[float, Sequence[float]]


class LayerwiseSGD(FusedOptimizer):
    r"""``torch.optim.SGD`` with a learning-rate multiplier per parameter tensor.

    .. math::
        \begin{aligned}
        g &\leftarrow \pm\nabla_\theta + \lambda\theta, \qquad
        b \leftarrow \begin{cases} g & t = 1 \\ \mu b + (1-\tau) g & t > 1\end{cases}, \qquad
        d = \begin{cases} g + \mu b & \text{nesterov} \\ b \end{cases} \\
        \theta &\leftarrow \theta - \eta\, m_l\, d
        \end{aligned}

    where :math:`m_l` is the tensor's entry of ``lr_mult`` (a float, or one float per parameter of the
    group, e.g. :func:`torch_layerlr.layers.discriminative_multipliers`). With ``momentum=0`` no buffer is kept.

    With ``grokfast_alpha`` set, the gradient first goes through the Grokfast-EMA filter (Lee et al. 2024),
    :math:`\mu \leftarrow \alpha\mu + (1-\alpha)\nabla` (:math:`\mu = \nabla` at the first step),
    :math:`\nabla \leftarrow \nabla + \lambda\mu`, before weight decay is added.

    .. note:: The buffer starts at the gradient on a tensor's first step. If momentum is switched on later
       (``momentum`` was 0), the new buffer starts at zero: the same as ``torch.optim.SGD`` unless
       ``dampening`` is nonzero, where the first buffer is :math:`(1-\tau) g` instead of :math:`g`.
    ``state_precision``: ``"fp32"`` (default), ``"bf16"`` or ``"int8"`` optimizer state (see
    :class:`~torch_layerlr.optim.FusedOptimizer`).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, grokfast_alpha: Optional[float] = None,
                 grokfast_lambda: float = 2.0, lr_mult: LrMult = 1.0, *, maximize: bool = False,
                 state_precision: str = "fp32") -> None:
        check_float("lr", lr, low=0.0)
        check_float("momentum", momentum, low=0.0, high=1.0)
        check_float("dampening", dampening, low=0.0, high=1.0)
        check_float("weight_decay", weight_decay, low=0.0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, lr_mult=lr_mult, maximize=maximize, state_precision=state_precision,
                        **grokfast_defaults(grokfast_alpha, grokfast_lambda))
        super().__init__(params, defaults)

    def _recipe(self, group: dict[str, Any]) -> Recipe:
        recipe = Recipe(moment="sgd", decay="coupled", momentum=group["momentum"], dampening=group["dampening"],
                        nesterov=group["nesterov"], maximize=group["maximize"])
        return with_grokfast(recipe, group)

    def _filter_coef(self, group: dict[str, Any], device: torch.device) -> Optional[Tensor]:
        return grokfast_coef(group, device)


class LayerwiseAdamW(FusedOptimizer):
    r"""``torch.optim.AdamW`` with a learning-rate multiplier per parameter tensor.

    .. math::
        \begin{aligned}
        \theta &\leftarrow \theta (1 - \eta m_l \lambda), \quad
        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad v \leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        \theta &\leftarrow \theta - \frac{\eta m_l}{1-\beta_1^t}\,
            \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}
        \end{aligned}
    ``state_precision``: ``"fp32"`` (default), ``"bf16"`` or ``"int8"`` optimizer state (see
    :class:`~torch_layerlr.optim.FusedOptimizer`).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, lr_mult: LrMult = 1.0, *,
                 maximize: bool = False, state_precision: str = "fp32") -> None:
        check_float("lr", lr, low=0.0)
        check_float("eps", eps, low=0.0)
        check_float("weight_decay", weight_decay, low=0.0)
        defaults = dict(lr=lr, betas=check_betas(betas), eps=eps, weight_decay=weight_decay, lr_mult=lr_mult,
                        maximize=maximize, state_precision=state_precision)
        super().__init__(params, defaults)

    def _recipe(self, group: dict[str, Any]) -> Recipe:
        return adamw_recipe(group)


def adamw_recipe(group: dict[str, Any]) -> Recipe:
    """AdamW's recipe: Adam moments, decoupled weight decay."""
    beta1, beta2 = group["betas"]
    return Recipe(moment="adam", decay="decoupled", beta1=beta1, beta2=beta2, eps=group["eps"],
                  maximize=group["maximize"])
