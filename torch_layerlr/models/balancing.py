r"""The linear nets of two-step layer balancing (arXiv 2606.00340; research note ``layer_balancing.md``,
section 1), their Haar-orthogonal initialisation and whitened data.

Inputs are **rows** (``x`` has shape ``(N, d)``), as in the paper:

* :class:`TwoLayerLinear`: :math:`f(x) = \frac1h\,xW_1W_2 \in \mathbb R^{1\times h}`, :math:`W_1 \in \mathbb R^{d\times h}`,
  :math:`W_2 \in \mathbb R^{h\times h}`, both trained (the paper's "2-NN"; its fixed :math:`a = I_h` is left out);
* :class:`FixedHeadLinear`: :math:`f(x) = \frac1{\sqrt h}\,xW_1W_2\cdots W_{L-1}a`, a scalar, with a fixed vector
  :math:`a \in \mathbb R^h` (a buffer, never trained) and ``depth - 1`` trained matrices: the "3-NN"
  (:class:`ThreeLayerLinear`, ``depth=3``), "4-NN" and "8-NN" of the paper count :math:`a` as a layer.

Initialisation (the theory's *orthogonal setting*): :func:`haar_orthonormal` (QR of a Gaussian matrix with
the column signs fixed by :math:`\mathrm{sign}(\mathrm{diag}\,R)`, i.e. Haar), :math:`W_1` with orthonormal
columns and the square layers orthogonal; :math:`a` a uniformly random unit vector.  Data:
:func:`whitened_inputs` (:math:`X = \sqrt n\cdot` orthonormal columns, so :math:`X^\top X = nI`), targets
:func:`two_layer_target` (:math:`\beta = Q/\sqrt d`, :math:`\|\beta\|_F^2 = h/d`) and :func:`unit_target`.

With whitened, noiseless data the train loss :math:`\frac1{2n}\|f(X) - X\beta\|_F^2` equals
:math:`\frac12\|\hat W - \beta\|_F^2` for the end-to-end map :math:`\hat W` (:meth:`whitened_train_loss`, which
needs no :math:`X`), and the test loss is the population :math:`\|\hat W - \beta\|_F^2`
(:meth:`population_loss`, no ½).  Parameters are in forward order, so per-layer learning rates are an
optimizer's per-parameter ``lr_mult`` list ``[eta_1, eta_2, ...]`` with ``lr = 1``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["haar_orthonormal", "whitened_inputs", "two_layer_target", "unit_target", "TwoLayerLinear",
           "FixedHeadLinear", "ThreeLayerLinear"]


def _dtype(dtype: Optional[torch.dtype]) -> torch.dtype:
    return dtype or torch.get_default_dtype()


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def haar_orthonormal(rows: int, cols: int, generator: Optional[torch.Generator] = None,
                     dtype: Optional[torch.dtype] = None) -> Tensor:
    """A ``rows x cols`` matrix with orthonormal columns (``rows >= cols``), Haar distributed: the Q factor
    of a Gaussian matrix with each column's sign set so that ``diag(R) > 0`` (the authors'
    ``orthonormal_columns``). The QR runs in float64."""
    rows, cols = _positive_int("rows", rows), _positive_int("cols", cols)
    if rows < cols:
        raise ValueError(f"orthonormal columns need rows >= cols, got {rows} x {cols}")
    g = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    sign = torch.sign(torch.diagonal(r))
    sign[sign == 0] = 1.0
    return (q * sign).to(_dtype(dtype))


def whitened_inputs(n: int, d: int, generator: Optional[torch.Generator] = None,
                    dtype: Optional[torch.dtype] = None) -> Tensor:
    r""":math:`X = \sqrt n\cdot` ``haar_orthonormal(n, d)``, so :math:`X^\top X = nI_d` (needs ``n >= d``)."""
    return math.sqrt(n) * haar_orthonormal(n, d, generator, dtype)


def two_layer_target(d: int, h: int, generator: Optional[torch.Generator] = None,
                     dtype: Optional[torch.dtype] = None) -> Tensor:
    r"""The two-layer target :math:`\beta = Q/\sqrt d \in \mathbb R^{d\times h}`, ``Q = haar_orthonormal(d, h)``
    (:math:`\|\beta\|_F^2 = h/d`, 1 when ``d = h``)."""
    return haar_orthonormal(d, h, generator, dtype) / math.sqrt(d)


def unit_target(d: int, generator: Optional[torch.Generator] = None, dtype: Optional[torch.dtype] = None) -> Tensor:
    r"""A uniformly random unit vector in :math:`\mathbb R^d`: the three-layer target :math:`\beta` and the fixed
    head :math:`a` of the theory (:math:`\|a\| = \|\beta\| = 1`; the authors' scripts draw Gaussians with about
    that norm, which biases the closed forms by O(1/h))."""
    v = torch.randn(_positive_int("d", d), generator=generator, dtype=torch.float64)
    return (v / v.norm()).to(_dtype(dtype))


class TwoLayerLinear(nn.Module):
    r"""The paper's two-layer net :math:`f(x) = \frac1h\,xW_1W_2` (1/h output scale), inputs of width ``d``
    (default ``h``), output width ``h``.  Parameters ``w1`` (``d x h``) and ``w2`` (``h x h``), in that order,
    Haar-orthogonal at construction (``generator`` for reproducibility)."""

    def __init__(self, h: int, d: Optional[int] = None, dtype: Optional[torch.dtype] = None,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        self.h = _positive_int("h", h)
        self.d = self.h if d is None else _positive_int("d", d)
        if self.d < self.h:
            raise ValueError(f"the orthogonal setting needs d >= h, got d = {self.d}, h = {self.h}")
        dtype = _dtype(dtype)
        self.w1 = nn.Parameter(torch.empty(self.d, self.h, dtype=dtype))
        self.w2 = nn.Parameter(torch.empty(self.h, self.h, dtype=dtype))
        self.orthogonal_(generator)

    @torch.no_grad()
    def orthogonal_(self, generator: Optional[torch.Generator] = None) -> "TwoLayerLinear":
        """Haar-orthogonal ``w1`` (orthonormal columns) and ``w2``, in place; returns ``self``."""
        self.w1.copy_(haar_orthonormal(self.d, self.h, generator, torch.float64))
        self.w2.copy_(haar_orthonormal(self.h, self.h, generator, torch.float64))
        return self

    def end_to_end(self) -> Tensor:
        r"""The linear map :math:`\hat W = W_1W_2/h` (``d x h``), ``f(x) = x @ end_to_end()``."""
        return self.w1 @ self.w2 / self.h

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.w1) @ self.w2 / self.h

    def population_loss(self, beta: Tensor) -> Tensor:
        r"""Test loss :math:`\|\hat W - \beta\|_F^2` (= :math:`E_x\|f(x) - x\beta\|^2` for :math:`x \sim N(0, I)`)."""
        return (self.end_to_end() - beta).pow(2).sum()

    def whitened_train_loss(self, beta: Tensor) -> Tensor:
        r"""Train loss :math:`\frac1{2n}\|f(X) - X\beta\|_F^2` on whitened data (:math:`X^\top X = nI`), which is
        :math:`\frac12\|\hat W - \beta\|_F^2` for every such :math:`X`."""
        return 0.5 * self.population_loss(beta)


class FixedHeadLinear(nn.Module):
    r""":math:`f(x) = \frac1{\sqrt h}\,xW_1W_2\cdots W_{L-1}a` with ``depth = L`` counting the fixed head
    :math:`a` (a buffer, unit norm by default): ``depth=3`` is the paper's "3-NN", 4 and 8 its deeper nets.
    Trained parameters ``weights[0]`` (``d x h``) and ``weights[1:]`` (``h x h``), Haar-orthogonal.  The output
    is a scalar per row (shape ``(N,)``); products are taken right to left (``W_1(W_2(\cdots a))``), so a
    forward/backward costs matrix-vector products only."""

    def __init__(self, h: int, depth: int = 3, d: Optional[int] = None, dtype: Optional[torch.dtype] = None,
                 generator: Optional[torch.Generator] = None, head: Optional[Tensor] = None) -> None:
        super().__init__()
        self.h = _positive_int("h", h)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer >= 2 (it counts the fixed head a), got {depth!r}")
        self.d = self.h if d is None else _positive_int("d", d)
        if self.d < self.h:
            raise ValueError(f"the orthogonal setting needs d >= h, got d = {self.d}, h = {self.h}")
        dtype = _dtype(dtype)
        shapes = [(self.d, self.h)] + [(self.h, self.h)] * (depth - 2)
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(*s, dtype=dtype)) for s in shapes])
        if head is None:
            head = unit_target(self.h, generator, torch.float64)
        head = torch.as_tensor(head, dtype=dtype).detach().clone()
        if head.shape != (self.h,):
            raise ValueError(f"head must have shape ({self.h},), got {tuple(head.shape)}")
        self.register_buffer("a", head)
        self.orthogonal_(generator)

    @property
    def depth(self) -> int:
        return len(self.weights) + 1

    @torch.no_grad()
    def orthogonal_(self, generator: Optional[torch.Generator] = None) -> "FixedHeadLinear":
        """Haar-orthogonal weights (``weights[0]`` with orthonormal columns), in place; returns ``self``."""
        for w in self.weights:
            w.copy_(haar_orthonormal(w.shape[0], w.shape[1], generator, torch.float64))
        return self

    def end_to_end(self) -> Tensor:
        r"""The linear map :math:`u = W_1\cdots W_{L-1}a/\sqrt h` (length ``d``), ``f(x) = x @ u``."""
        v = self.a
        for w in reversed(list(self.weights)):
            v = w @ v
        return v / math.sqrt(self.h)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.end_to_end()

    def population_loss(self, beta: Tensor) -> Tensor:
        r"""Test loss :math:`\|u - \beta\|^2`."""
        return (self.end_to_end() - beta).pow(2).sum()

    def whitened_train_loss(self, beta: Tensor) -> Tensor:
        r"""Train loss :math:`\frac1{2n}\|f(X) - X\beta\|^2` on whitened data, :math:`= \frac12\|u - \beta\|^2`."""
        return 0.5 * self.population_loss(beta)


class ThreeLayerLinear(FixedHeadLinear):
    r"""The paper's three-layer net :math:`f(x) = \frac1{\sqrt h}\,xW_1W_2a` (1/√h output scale, fixed ``a``);
    trained parameters ``weights[0]`` (:math:`W_1`) and ``weights[1]`` (:math:`W_2`)."""

    def __init__(self, h: int, d: Optional[int] = None, dtype: Optional[torch.dtype] = None,
                 generator: Optional[torch.Generator] = None, head: Optional[Tensor] = None) -> None:
        super().__init__(h, 3, d, dtype, generator, head)
