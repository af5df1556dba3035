r"""Sharpness of a loss: the largest eigenvalue of its Hessian, for the whole network or for each layer.

The edge of stability of gradient descent at step size :math:`\eta` is :math:`\eta S = 2` with
:math:`S = \lambda_{\max}(\nabla^2\mathcal L)` (research note E.3); a layer-wise rate meets its own edge at
:math:`\eta_l S_l = 2` with :math:`S_l = \lambda_{\max}(H_{ll})`, the top eigenvalue of the layer's diagonal
Hessian block.

* :func:`top_eigenvalue`: :math:`S` by Lanczos with full reorthogonalisation on Hessian-vector products
  :math:`Hv = \nabla_\theta(\nabla_\theta\mathcal L\cdot v)` (double backward through one retained graph; no
  finite differences, any floating dtype, float64 included).
* :func:`layer_sharpness`: every :math:`S_l`, one Lanczos iteration per layer on vectors of the layer's own size,
  all through one graph. Layer :math:`l`'s product :math:`H_{ll}v = \nabla_{\theta_l}(\nabla_{\theta_l}\mathcal
  L\cdot v)` differentiates only the layer's gradient with respect to its own tensors, so autograd runs only
  through the part of the graph between them: a layer's product costs a share of a full one, the smaller the
  nearer the layer is to the loss (on a chain of :math:`L` similar layers all of them together cost about
  :math:`(L+1)/2` full products, not :math:`L`).
* :class:`SharpnessMonitor`: both, every ``every`` steps on a fixed batch (by default a training batch's
  size, :data:`MONITOR_BATCH`), by iterations of the global and layer rows that continue across measurements
  (a few steps each, :data:`MONITOR_ITERS`), recording :math:`\eta S`, :math:`\eta_l S_l`, the residuals (the
  accuracy reached) and what each measurement cost.

Convergence: after :math:`k` Lanczos steps the top Ritz value :math:`\theta` of the tridiagonal :math:`T_k` has
residual :math:`\|Hy - \theta y\| = \beta_k|s_k|` (:math:`s` the Ritz vector of :math:`T_k`, :math:`y = Q_ks`);
a block stops when that residual is at most ``tol`` :math:`\cdot|\theta|`, or when its Krylov space is
exhausted (:math:`k` = the block's size, or :math:`\beta_k = 0`). Then :math:`|\theta - \lambda| \le` residual
for an eigenvalue :math:`\lambda`, and :math:`\le` residual² / gap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["Eigenpair", "top_eigenvalue", "layer_sharpness", "module_groups", "SharpnessMonitor", "MONITOR_BATCH",
           "MONITOR_ITERS", "MONITOR_TOL"]

Groups = Union[Mapping[str, Sequence[Tensor]], Sequence[Sequence[Tensor]]]


@dataclass(frozen=True)
class Eigenpair:
    """The top eigenvalue of a (block of a) Hessian and how Lanczos got there.

    ``iterations``: Lanczos steps (Hessian-vector products) of this block; ``residual``:
    :math:`\\|Hv - \\text{value}\\,v\\|` of the unit vector ``vector`` (one tensor per parameter, detached) as
    Lanczos estimates it; ``converged``: the residual met ``tol`` or the Krylov space was exhausted.
    """

    value: float
    iterations: int
    residual: float
    converged: bool
    vector: tuple[Tensor, ...]


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_tol(tol: Any) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    return float(tol)


def _check_blocks(blocks: Sequence[Sequence[Tensor]], name: str) -> list[list[Tensor]]:
    out: list[list[Tensor]] = []
    seen: set[int] = set()
    for i, block in enumerate(blocks):
        if isinstance(block, Tensor):
            raise ValueError(f"{name}[{i}] must be a sequence of tensors, got a single tensor")
        block = list(block)
        if not block:
            raise ValueError(f"{name}[{i}] is empty")
        for t in block:
            if not isinstance(t, Tensor):
                raise ValueError(f"{name}[{i}] holds a {type(t).__name__}, not a tensor")
            if not t.is_floating_point() or not t.requires_grad:
                raise ValueError(f"{name}[{i}]: every tensor must be floating point and require grad")
            if id(t) in seen:
                raise ValueError(f"{name}: a tensor appears twice (blocks must not overlap)")
            seen.add(id(t))
        out.append(block)
    if not out:
        raise ValueError(f"{name} is empty")
    first = out[0][0]
    if any(t.dtype != first.dtype or t.device != first.device for b in out for t in b):
        raise ValueError(f"{name}: all tensors must share one dtype and device")
    return out


def _start_rows(start: Optional[Sequence[Optional[Sequence[Tensor]]]], blocks: list[list[Tensor]],
                seed: int, like: Tensor) -> list[Tensor]:
    """One unit start vector per block (flattened over its tensors): ``start[b]`` where given, else standard
    normal draws from ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    rows = []
    for b, block in enumerate(blocks):
        if start is not None and start[b] is not None:
            vec = list(start[b])
            if len(vec) != len(block) or any(v.shape != p.shape for v, p in zip(vec, block)):
                raise ValueError(f"start[{b}] must hold one tensor per parameter of block {b}, with its shape")
            row = torch.cat([v.detach().reshape(-1).to(like) for v in vec])
        else:
            row = torch.randn(sum(p.numel() for p in block), generator=gen, dtype=torch.float64).to(like)
        norm = float(row.double().norm())
        if not norm > 0 or not math.isfinite(norm):
            raise ValueError(f"start[{b}] must be a finite nonzero vector")
        rows.append(row / norm)
    return rows


def _hessian_blocks(loss_fn: Callable[[], Tensor], params: list[Tensor],
                    blocks: list[list[Tensor]]) -> list[Callable[[Tensor], Tensor]]:
    r"""Per block :math:`b` (tensors of ``params``), ``v -> H_bb v`` over the block's tensors (flattened,
    concatenated), by double backward through one graph of ``loss_fn()`` kept for all products:
    :math:`H_{bb}v = \nabla_{\theta_b}(\nabla_{\theta_b}\mathcal L\cdot v)`. Each product differentiates only the
    block's own gradient with respect to its own tensors, so autograd runs only through the part of the graph
    between them: a layer's product costs a fraction of a full one (the last layer's the least)."""
    loss = loss_fn()
    if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        raise ValueError("loss_fn must return a floating-point scalar tensor")
    if not loss.requires_grad:
        raise ValueError("loss_fn's result does not depend on the given parameters (it does not require grad)")
    grads = torch.autograd.grad(loss.reshape(()), params, create_graph=True, allow_unused=True)
    of = {id(p): g for p, g in zip(params, grads)}
    return [_block_product(block, [of[id(p)] for p in block]) for block in blocks]


def _block_product(block: list[Tensor], grads: list[Optional[Tensor]]) -> Callable[[Tensor], Tensor]:
    # gradients that are constant in the parameters (None, or without a graph) have a zero Hessian row
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    sizes = [p.numel() for p in block]

    def product(v: Tensor) -> Tensor:
        if not live:
            return torch.zeros_like(v)
        pieces = v.split(sizes)
        hv = torch.autograd.grad([grads[i] for i in live], block, [pieces[i].view_as(block[i]) for i in live],
                                 retain_graph=True, allow_unused=True)
        return torch.cat([v.new_zeros(n) if h is None else h.reshape(-1) for h, n in zip(hv, sizes)])

    return product


@dataclass(frozen=True)
class _Row:
    r"""One block's Lanczos result, flattened over the block's tensors: the top Ritz value, and its Ritz vector
    :math:`y` as coordinates ``coeffs`` (:math:`s`) in the Krylov vectors ``krylov`` (rows), with ``remainder``
    the unnormalised next Lanczos vector :math:`w`, so that :math:`Hy - \theta y = s_k w`."""

    value: float
    iterations: int
    residual: float
    converged: bool
    krylov: Tensor
    coeffs: Tensor
    remainder: Tensor

    def vector(self) -> Tensor:
        """The Ritz vector :math:`y`."""
        return torch.mv(self.krylov.t(), self.coeffs)

    def ahead(self) -> Tensor:
        r"""The start of a continuation: the power step :math:`Hy/\theta = y + s_k w/\theta` (for
        :math:`\theta > 0`), a step toward the top of the spectrum, as a unit vector (:math:`y` when it is 0)."""
        scale = float(self.coeffs[-1]) / max(abs(self.value), 1e-300)
        ahead = torch.addmv(self.remainder, self.krylov.t(), self.coeffs, beta=scale)
        norm = float(torch.linalg.vector_norm(ahead))
        if not (norm > 0 and math.isfinite(norm)):
            return self.vector()
        # entries under eps/sqrt(size) of the unit vector (together at most eps, its rounding level) are dropped:
        # repeated power steps would shrink them (the directions of tiny eigenvalues) into subnormal floats, which
        # make every later product several times slower on CPUs
        return F.hardshrink(ahead, norm * torch.finfo(ahead.dtype).eps / math.sqrt(ahead.numel())).div_(norm)


def _lanczos(product: Callable[[Tensor], Tensor], start: Tensor, iters: int, tol: float) -> _Row:
    """Top eigenpair of one block's Hessian from the unit vector ``start`` (see the module doc)."""
    size = start.numel()
    # the Krylov vectors are the rows of one buffer (grown by doubling): reorthogonalisation is two
    # matrix-vector products, and each vector is written in place rather than allocated
    basis = start.new_empty(min(iters, size, 8), size)
    basis[0] = start
    alphas, betas = [], []
    for k in range(iters):
        w = product(basis[k])
        krylov = basis[:k + 1]
        # the three-term recurrence w - alpha q - beta q_prev is subsumed by full reorthogonalisation against
        # every Krylov vector; the coefficient on q_k is alpha_k = q_k . H q_k
        coeffs = torch.mv(krylov, w)
        alphas.append(float(coeffs[k]))
        w.addmv_(krylov.t(), coeffs, alpha=-1)
        beta = float(torch.linalg.vector_norm(w))
        value, s = _top_ritz(alphas, betas)
        residual = beta * abs(float(s[-1]))
        met = residual <= tol * abs(value) or k + 1 >= size or beta == 0.0
        if met or k == iters - 1:
            break
        # a second pass before w becomes the next Krylov vector (classical Gram-Schmidt is not enough once); the
        # last w is only the residual's direction (its norm is right to rounding after one pass)
        w.addmv_(krylov.t(), torch.mv(krylov, w), alpha=-1)
        beta = float(torch.linalg.vector_norm(w))
        betas.append(beta)
        if k + 1 == basis.shape[0]:
            basis = torch.cat([basis, basis.new_empty(min(2 * (k + 1), iters, size) - k - 1, size)])
        torch.div(w, beta, out=basis[k + 1])
    return _Row(value, k + 1, residual, met, krylov, torch.as_tensor(s, dtype=start.dtype, device=start.device), w)


def _top_ritz(alphas: list[float], betas: list[float]) -> tuple[float, np.ndarray]:
    """The top eigenpair of the Lanczos tridiagonal (diagonal ``alphas``, off-diagonal ``betas``)."""
    if len(alphas) == 1:  # the first step's 1x1 matrix, without the solver's call overhead
        return alphas[0], np.ones(1)
    k = len(alphas) - 1
    theta, vecs = eigh_tridiagonal(np.array(alphas), np.array(betas), select="i", select_range=(k, k))
    return float(theta[0]), vecs[:, 0]


def _pieces(row: Tensor, block: list[Tensor]) -> tuple[Tensor, ...]:
    return tuple(piece.view_as(p).clone() for piece, p in zip(row.split([p.numel() for p in block]), block))


def _block_pairs(loss_fn: Callable[[], Tensor], blocks: list[list[Tensor]], iters: int, tol: float, seed: int,
                 start: Optional[Sequence[Sequence[Tensor]]]) -> list[Eigenpair]:
    """:func:`_lanczos` on every (disjoint) block of the closure's Hessian, all through one graph."""
    params = [p for block in blocks for p in block]
    starts = _start_rows(start, blocks, seed, params[0].detach())
    rows = [_lanczos(product, row, iters, tol)
            for product, row in zip(_hessian_blocks(loss_fn, params, blocks), starts)]
    return [Eigenpair(r.value, r.iterations, r.residual, r.converged, _pieces(r.vector(), block))
            for r, block in zip(rows, blocks)]


def top_eigenvalue(loss_fn: Callable[[], Tensor], params: Sequence[Tensor], *, iters: int = 100,
                   tol: float = 1e-6, seed: int = 0, start: Optional[Sequence[Tensor]] = None) -> Eigenpair:
    r"""The largest eigenvalue :math:`S = \lambda_{\max}(\nabla^2_\theta\,\text{loss\_fn}())` over ``params``
    (other tensors held fixed), by Lanczos on Hessian-vector products.

    ``loss_fn`` is called once (its graph is kept for all products). ``iters`` bounds the products, ``tol`` is
    the relative residual :math:`\|Hv - Sv\|/|S|` to stop at, ``seed`` draws the start vector unless ``start``
    (one tensor per parameter, e.g. a previous :attr:`Eigenpair.vector`) is given.
    """
    params = list(params)
    if not params:
        raise ValueError("params is empty")
    blocks = _check_blocks([params], "params")
    return _block_pairs(loss_fn, blocks, _check_positive_int("iters", iters), _check_tol(tol), seed,
                        None if start is None else [start])[0]


def layer_sharpness(loss_fn: Callable[[], Tensor], groups: Groups, *, iters: int = 100, tol: float = 1e-6,
                    seed: int = 0, start: Optional[Any] = None) -> Union[dict[str, Eigenpair], list[Eigenpair]]:
    r"""The top eigenvalue :math:`S_l = \lambda_{\max}(H_{ll})` of every diagonal Hessian block, one block per
    group of tensors (a layer): one Lanczos iteration per block on the block's own products (see the module
    doc), all through one graph of ``loss_fn()``.

    ``groups``: a mapping name -> tensors (returns a dict) or a sequence of tensor sequences (returns a list).
    ``start``: per group, start tensors (same container kind as ``groups``). Other arguments as in
    :func:`top_eigenvalue`.
    """
    named = isinstance(groups, Mapping)
    keys = list(groups.keys()) if named else None
    blocks = _check_blocks(list(groups.values()) if named else list(groups), "groups")
    if start is not None:
        start = [start[k] for k in keys] if named else list(start)
        if len(start) != len(blocks):
            raise ValueError(f"start must hold one entry per group ({len(blocks)}), got {len(start)}")
    pairs = _block_pairs(loss_fn, blocks, _check_positive_int("iters", iters), _check_tol(tol), seed, start)
    return dict(zip(keys, pairs)) if named else pairs


def module_groups(model: nn.Module, by: str = "module") -> dict[str, list[nn.Parameter]]:
    """Layers as groups of parameters that require grad, in registration order, named by module path:
    ``by="module"``: one group per submodule that owns parameters directly (e.g. each ``Linear``: weight and
    bias); ``by="children"``: one group per top-level child with parameters (the DALS authors' layers), plus the
    model's own direct parameters as ``"(root)"``."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if by not in ("module", "children"):
        raise ValueError(f"by must be 'module' or 'children', got {by!r}")
    if by == "module":
        units = [(name, module.parameters(recurse=False)) for name, module in model.named_modules()]
    else:
        units = [("", model.parameters(recurse=False))] + [(n, c.parameters()) for n, c in model.named_children()]
    out = {}
    for name, params in units:
        params = [p for p in params if p.requires_grad]
        if params:
            out[name or "(root)"] = params
    return out


def _lr_of(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    """Each parameter's effective step size: its group's ``lr`` times its ``lr_mult`` entry (if any)."""
    out = {}
    for group in optimizer.param_groups:
        mult = group.get("lr_mult", 1.0)
        mults = [float(mult)] * len(group["params"]) if isinstance(mult, (int, float)) else [float(m) for m in mult]
        for p, m in zip(group["params"], mults):
            out[id(p)] = float(group["lr"]) * m
    return out


#: The monitor's defaults: the rows of its fixed batch (a training batch, not the 1024 of a one-off
#: measurement), Lanczos steps per measurement, and the relative residual at which a measurement stops early.
MONITOR_BATCH = 128
MONITOR_ITERS = 2
MONITOR_TOL = 1e-2


class SharpnessMonitor:
    r"""Global and per-layer sharpness every ``every`` steps on a fixed batch, with the edge-of-stability
    indicators :math:`\eta S` and :math:`\eta_l S_l` (2 at the edge, for plain gradient descent).

    ``loss_fn``: a closure computing the loss on the fixed batch; or build the monitor with :meth:`for_module`,
    which takes a model and a batch. ``groups``: name -> tensors (e.g. :func:`module_groups`); the global
    sharpness is over all of them. The step size comes from ``optimizer`` (:math:`\eta` = the first group's
    ``lr``; :math:`\eta_l` = the layer's largest ``lr`` times ``lr_mult``) or is the number ``lr``.

    Cost. A measurement builds one graph of the loss (a forward and a backward that keeps its graph) and takes
    ``iters`` Lanczos steps (default :data:`MONITOR_ITERS`) on each row: the global vector and every layer's
    block vector (``1 + layers`` rows); a row stops earlier when its relative residual falls below ``tol``. Each
    step costs one full Hessian-vector product for the global row and the layers' cheaper block products (see
    :func:`layer_sharpness`). It does not start afresh: it starts from the power step :math:`Hy/\theta` on
    the previous measurement's Ritz vectors :math:`y`, so the iteration continues across measurements while the
    Hessian moves slowly, and a few steps per measurement keep it close to the top eigenvector.

    Accuracy. Each value is a Ritz value of the current Hessian, so :math:`\theta \le S` (a lower bound) and some
    eigenvalue lies within the residual :math:`\|Hy - \theta y\|` of it; each record carries the relative
    residuals, so a user sees the accuracy bought (tighten with larger ``iters``).

    Call :meth:`step` after every optimizer step; every ``every``-th call measures and appends to
    :attr:`records` a dict ``step, sharpness, eta, eta_s, residual, layers, layer_eta_s, layer_residuals,
    products, hvps, seconds, converged``: ``residual`` the global relative residual, ``layer_residuals`` per
    layer; ``products`` the Lanczos steps of the longest row (at most ``iters``), ``hvps`` the Hessian-vector
    products of all rows together (each row's steps, summed).
    """

    def __init__(self, loss_fn: Callable[[], Tensor], groups: Mapping[str, Sequence[Tensor]], every: int, *,
                 optimizer: Optional[torch.optim.Optimizer] = None, lr: Optional[float] = None,
                 per_layer: bool = True, iters: int = MONITOR_ITERS, tol: float = MONITOR_TOL,
                 seed: int = 0) -> None:
        if not callable(loss_fn):
            raise ValueError("loss_fn must be callable")
        if not isinstance(groups, Mapping) or not groups:
            raise ValueError("groups must be a non-empty mapping name -> tensors")
        _check_blocks(list(groups.values()), "groups")
        self.every = _check_positive_int("every", every)
        if (optimizer is None) == (lr is None):
            raise ValueError("give exactly one of optimizer and lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.loss_fn, self.groups = loss_fn, {k: list(v) for k, v in groups.items()}
        self.optimizer, self.lr, self.per_layer = optimizer, lr, bool(per_layer)
        self.iters, self.tol, self.seed = _check_positive_int("iters", iters), _check_tol(tol), seed
        self.records: list[dict[str, Any]] = []
        self._calls = 0
        self._params = [p for ps in self.groups.values() for p in ps]
        self._blocks = [self._params] + (list(self.groups.values()) if self.per_layer else [])
        self._starts = _start_rows(None, self._blocks, seed, self._params[0].detach())

    @classmethod
    def for_module(cls, model: nn.Module, inputs: Tensor, targets: Tensor, every: int, *,
                   batch_size: int = MONITOR_BATCH, loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
                   by: str = "children", **options: Any) -> "SharpnessMonitor":
        """A monitor of ``loss(model(x), y)`` on the fixed batch of the first ``batch_size`` rows of ``inputs``
        and ``targets`` (all of them when fewer; default :data:`MONITOR_BATCH`), one layer per
        :func:`module_groups` ``(model, by)``. The model's buffers are read, never written (a train-mode
        BatchNorm runs on copies of its statistics). ``options``: those of the constructor (``optimizer`` or
        ``lr``, ``per_layer``, ``iters``, ``tol``, ``seed``)."""
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        batch_size = _check_positive_int("batch_size", batch_size)
        x, y = inputs[:batch_size], targets[:batch_size]

        def loss_fn() -> Tensor:
            state = dict(model.named_parameters())
            state.update((name, b.clone()) for name, b in model.named_buffers())
            return loss(torch.func.functional_call(model, state, (x,)), y)

        return cls(loss_fn, module_groups(model, by=by), every, **options)

    def step(self) -> Optional[dict[str, Any]]:
        """Count one training step; measure (and return the record) on every ``every``-th."""
        self._calls += 1
        return self.measure() if self._calls % self.every == 0 else None

    def _rates(self) -> tuple[float, dict[str, float]]:
        if self.optimizer is None:
            return float(self.lr), {k: float(self.lr) for k in self.groups}
        lrs = _lr_of(self.optimizer)
        eta = float(self.optimizer.param_groups[0]["lr"])
        return eta, {k: max(lrs.get(id(p), 0.0) for p in ps) for k, ps in self.groups.items()}

    def measure(self) -> dict[str, Any]:
        """Measure now (whatever the step count) and append the record."""
        t0 = time.perf_counter()
        products = _hessian_blocks(self.loss_fn, self._params, self._blocks)
        rows = [_lanczos(product, start, self.iters, self.tol) for product, start in zip(products, self._starts)]
        self._starts = [r.ahead() for r in rows]
        relative = [r.residual / max(abs(r.value), 1e-300) for r in rows]
        top, names = rows[0], list(self.groups) if self.per_layer else []
        layers = {k: r.value for k, r in zip(names, rows[1:])}
        eta, etas = self._rates()
        rec = dict(step=self._calls, sharpness=top.value, eta=eta, eta_s=eta * top.value, residual=relative[0],
                   layers=layers, layer_eta_s={k: etas[k] * s for k, s in layers.items()},
                   layer_residuals=dict(zip(names, relative[1:])),
                   products=max(r.iterations for r in rows), hvps=sum(r.iterations for r in rows),
                   seconds=time.perf_counter() - t0, converged=all(r.converged for r in rows))
        self.records.append(rec)
        return rec

    @property
    def seconds(self) -> float:
        """Total time spent measuring."""
        return sum(r["seconds"] for r in self.records)
