r"""Deep linear networks of the depth-scaling theory (:mod:`torch_layerlr.theory`), one parameter tensor
per layer so that per-layer optimizers and ``depth = number of layers`` see the real structure.

* :class:`ScalarChain`: :math:`f(x) = \prod_{l=1}^L w_l\,x` (eq. 1);
* :class:`ResidualChain`: :math:`f(x) = \prod_l (1 + w_l/\sqrt L)\,x` (``block=1``) or
  :math:`\prod_l (1 + w_l^2/L)\,x` (``block=2``) (eq. 11, 23, 29);
* :class:`DeepLinear`: :math:`f(x) = W_L\cdots W_1x` (Saxe et al. 2014; research notes F.3).

Balanced initialisation: every scalar layer equal (:meth:`ScalarChain.balanced`,
:meth:`ResidualChain.balanced`, :func:`balanced_weight`), or, for matrices, a balanced factorisation
:math:`W_{l+1}^\top W_{l+1} = W_lW_l^\top` of a target map (:func:`balanced_factors`,
:meth:`DeepLinear.balanced_`).  The scalar products are taken with ``torch.prod`` over the stacked layers,
whose backward gives every layer of an equal-weight network the bit-identical gradient, so gradient descent
keeps a balanced network exactly balanced.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from torch_layerlr.theory.scalar_chain import balanced_weight

__all__ = ["ScalarChain", "ResidualChain", "DeepLinear", "balanced_weight", "balanced_factors"]

Init = Union[float, Sequence[float], Tensor]


def _check_depth(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    return depth


def _scalar_layers(depth: int, init: Init, dtype: Optional[torch.dtype]) -> nn.ParameterList:
    values = torch.as_tensor(init, dtype=dtype or torch.get_default_dtype()).detach()
    if values.ndim == 0:
        values = values.expand(depth)
    if values.shape != (depth,):
        raise ValueError(f"init must be a number or {depth} numbers, got shape {tuple(values.shape)}")
    if not torch.isfinite(values).all():
        raise ValueError("init must be finite")
    return nn.ParameterList([nn.Parameter(v.clone()) for v in values])


def _input(x: Tensor, like: Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


class _ScalarNet(nn.Module):
    weights: nn.ParameterList

    def layer_factors(self) -> Tensor:
        raise NotImplementedError

    def coefficient(self) -> Tensor:
        """The network's map as a number: :math:`f(x) = c\\,x`."""
        return torch.prod(self.layer_factors())

    def forward(self, x: Tensor) -> Tensor:
        return self.coefficient() * _input(x, self.weights[0])

    @torch.no_grad()
    def alpha(self, mu_xx: float, mu_yx: float) -> float:
        r"""Relative total weight :math:`\alpha = c\,\mu_{xx}/\mu_{yx}` (1 at the global minimum)."""
        return float(self.coefficient()) * float(mu_xx) / float(mu_yx)

    @property
    def depth(self) -> int:
        return len(self.weights)


class ScalarChain(_ScalarNet):
    r"""Deep scalar linear chain :math:`f(x) = \prod_{l=1}^{L} w_l\,x` (eq. 1).

    ``init``: one number for every layer or one per layer.  Inputs of any shape are scaled elementwise.
    """

    def __init__(self, depth: int, init: Init = 1.0, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.weights = _scalar_layers(_check_depth(depth), init, dtype)

    def layer_factors(self) -> Tensor:
        return torch.stack(list(self.weights))

    @classmethod
    def balanced(cls, depth: int, alpha0: float, mu_xx: float = 1.0, mu_yx: float = 1.0,
                 dtype: Optional[torch.dtype] = None) -> "ScalarChain":
        r"""Equal positive layers with relative total weight ``alpha0``: :math:`w = (\alpha_0 r)^{1/L}`."""
        return cls(depth, float(balanced_weight(alpha0 * mu_yx / mu_xx, depth, "chain")), dtype)


class ResidualChain(_ScalarNet):
    r"""Scalar linear residual network, block depth one or two (eq. 11):

    .. math:: f_{\rm block1}(x) = \prod_{l=1}^{L}\Big(1 + \frac{w_l}{\sqrt L}\Big)x,\qquad
              f_{\rm block2}(x) = \prod_{l=1}^{L}\Big(1 + \frac{w_l^2}{L}\Big)x.

    These are the paper's eq. 23 and eq. 29, which the research notes F.2 call "b1"/"b2".  ``init`` defaults
    to 0 (the identity map).
    """

    def __init__(self, depth: int, block: int = 1, init: Init = 0.0, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        if block not in (1, 2):
            raise ValueError(f"block must be 1 or 2, got {block!r}")
        self.block = block
        self.weights = _scalar_layers(_check_depth(depth), init, dtype)

    @property
    def arch(self) -> str:
        return f"res{self.block}"

    def layer_factors(self) -> Tensor:
        w = torch.stack(list(self.weights))
        L = len(self.weights)
        return 1 + w / math.sqrt(L) if self.block == 1 else 1 + w * w / L

    @classmethod
    def balanced(cls, depth: int, block: int, alpha0: float, mu_xx: float = 1.0, mu_yx: float = 1.0,
                 dtype: Optional[torch.dtype] = None) -> "ResidualChain":
        r"""Equal layers with relative total weight ``alpha0`` (block 2 needs :math:`\alpha_0 r \ge 1`)."""
        return cls(depth, block, float(balanced_weight(alpha0 * mu_yx / mu_xx, depth, f"res{block}")), dtype)


def balanced_factors(target: Union[np.ndarray, Tensor], dims: Sequence[int],
                     generator: Optional[np.random.Generator] = None) -> list[np.ndarray]:
    r"""Balanced, target-aligned factors of ``target`` (shape ``(dims[-1], dims[0])``): float64 arrays
    :math:`W_l = Q_{l+1}\,\mathrm{diag}(\sigma^{1/L})\,Q_l^\top` with :math:`Q_1 = V`, :math:`Q_{L+1} = U` from the
    SVD :math:`U\,\mathrm{diag}(\sigma)V^\top` of the target and random orthonormal hidden bases.  Their product is
    the target and :math:`W_{l+1}^\top W_{l+1} = W_lW_l^\top`.  Hidden widths must be at least the target's rank.
    """
    t = target.detach().cpu().numpy() if isinstance(target, Tensor) else np.asarray(target)
    t = t.astype(np.float64)
    dims = [int(d) for d in dims]
    if len(dims) < 2 or min(dims) < 1:
        raise ValueError(f"dims must list at least two positive widths, got {dims!r}")
    if t.shape != (dims[-1], dims[0]):
        raise ValueError(f"target must have shape {(dims[-1], dims[0])}, got {t.shape}")
    u, s, vt = np.linalg.svd(t, full_matrices=False)
    k = int((s > s.max(initial=0.0) * 1e-12).sum())
    if k > min(dims[1:-1], default=k):
        raise ValueError(f"hidden widths {dims[1:-1]} are smaller than the target's rank {k}")
    rng = generator if generator is not None else np.random.default_rng(0)
    L = len(dims) - 1
    bases = [vt[:k].T]
    for d in dims[1:-1]:
        q, _ = np.linalg.qr(rng.standard_normal((d, k)))
        bases.append(q)
    bases.append(u[:, :k])
    scale = np.diag(s[:k] ** (1.0 / L))
    return [bases[l + 1] @ scale @ bases[l].T for l in range(L)]


class DeepLinear(nn.Module):
    r"""Deep linear network :math:`f(x) = W_L\cdots W_1x`, no biases, ``dims = [d_in, h_1, ..., d_out]``.

    ``x`` has shape ``(N, d_in)``; the output ``(N, d_out)``.  Weights start small and random (std ``init_std``)
    unless set with :meth:`balanced_`.
    """

    def __init__(self, dims: Sequence[int], init_std: float = 1e-2, dtype: Optional[torch.dtype] = None,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        if len(dims) < 2 or min(dims) < 1:
            raise ValueError(f"dims must list at least two positive widths, got {dims!r}")
        self.dims = dims
        dtype = dtype or torch.get_default_dtype()
        self.weights = nn.ParameterList([
            nn.Parameter(init_std * torch.randn(dims[l + 1], dims[l], dtype=dtype, generator=generator))
            for l in range(len(dims) - 1)])

    @property
    def depth(self) -> int:
        return len(self.weights)

    def product(self) -> Tensor:
        """The end-to-end map :math:`W_L\\cdots W_1`, shape ``(d_out, d_in)``."""
        out = self.weights[0]
        for w in list(self.weights)[1:]:
            out = w @ out
        return out

    def forward(self, x: Tensor) -> Tensor:
        h = _input(x, self.weights[0])
        for w in self.weights:
            h = h @ w.T
        return h

    @torch.no_grad()
    def balanced_(self, target: Union[np.ndarray, Tensor], generator: Optional[np.random.Generator] = None
                  ) -> "DeepLinear":
        """Set the layers to :func:`balanced_factors` of ``target`` (in place); returns ``self``."""
        for w, f in zip(self.weights, balanced_factors(target, self.dims, generator)):
            w.copy_(torch.from_numpy(f))
        return self
