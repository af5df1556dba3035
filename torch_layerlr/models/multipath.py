r"""Multi-pathway deep linear network (Kim & Lee, arXiv 2606.05219; research note E.1): :math:`H` parallel
paths, path :math:`h` a product of :math:`L_h` square matrices, the output the sum of the paths,

.. math:: f(x) = Mx, \qquad M = \sum_{h=1}^{H}\Omega_h, \qquad \Omega_h = W_{h,L_h}\cdots W_{h,1}.

One parameter tensor per layer (``paths.<h>.<l>``, layer :math:`l` of path :math:`h`, input side first), so
per-layer optimizers see the real structure. Depth-balanced start (E.1): every layer of path :math:`h` is
:math:`\alpha_h^{1/L_h}I`, so :math:`\Omega_h(0) = \alpha_h I` and each mode of a diagonal target is a sum of
scalar paths :math:`\sigma_h = w_h^{L_h}` (:mod:`torch_layerlr.theory.multipath`).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

__all__ = ["MultiPathLinear"]


class MultiPathLinear(nn.Module):
    r"""``paths`` parallel deep linear paths of ``depth`` layers (one int, or one per path) of
    ``width`` x ``width`` matrices; the output is the sum of the path products applied to the input.

    ``alphas``: each path's initial end-to-end scale :math:`\alpha_h > 0` (a number for all paths or one per
    path); every layer of path :math:`h` starts at :math:`\alpha_h^{1/L_h}I`. Default: :math:`\alpha_h =
    10^{-2}\,2^{-h}`, small and unequal, the start from which GD breaks the paths' symmetry (E.3).
    """

    def __init__(self, paths: int, depth: Union[int, Sequence[int]], width: int = 1,
                 alphas: Optional[Union[float, Sequence[float]]] = None, *, dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None) -> None:
        super().__init__()
        for name, value in (("paths", paths), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        depths = [depth] * paths if isinstance(depth, int) and not isinstance(depth, bool) else list(depth)
        if len(depths) != paths or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in depths):
            raise ValueError(f"depth must be a positive integer or {paths} positive integers, got {depth!r}")
        if alphas is None:
            alphas = [1e-2 * 2.0 ** -h for h in range(paths)]
        elif isinstance(alphas, (int, float)) and not isinstance(alphas, bool):
            alphas = [float(alphas)] * paths
        alphas = [float(a) for a in alphas]
        if len(alphas) != paths or not all(a > 0 and a < float("inf") for a in alphas):
            raise ValueError(f"alphas must be a positive number or {paths} positive numbers, got {alphas!r}")
        self.depths, self.width = tuple(depths), width
        eye = torch.eye(width, dtype=dtype or torch.get_default_dtype(), device=device)
        self.paths = nn.ModuleList(
            nn.ParameterList([nn.Parameter(a ** (1.0 / L) * eye.clone()) for _ in range(L)])
            for a, L in zip(alphas, depths))

    def path_products(self) -> Tensor:
        r"""Each path's end-to-end map :math:`\Omega_h = W_{h,L_h}\cdots W_{h,1}`, shape (paths, width, width)."""
        out = []
        for layers in self.paths:
            omega = layers[0]
            for w in layers[1:]:
                omega = w @ omega
            out.append(omega)
        return torch.stack(out)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (..., width) -> (..., width): :math:`x M^\\top`, applied layer by layer along each path."""
        if x.shape[-1] != self.width:
            raise ValueError(f"x must have last dimension {self.width}, got shape {tuple(x.shape)}")
        total = None
        for layers in self.paths:
            y = x
            for w in layers:
                y = y @ w.T
            total = y if total is None else total + y
        return total
