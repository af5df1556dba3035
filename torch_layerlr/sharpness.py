r"""Sharpness of a loss: the largest eigenvalue of its Hessian, for the whole network or for each layer.

The edge of stability of gradient descent at step size :math:`\eta` is :math:`\eta S = 2` with
:math:`S = \lambda_{\max}(\nabla^2\mathcal L)` (research note E.3); a layer-wise rate meets its own edge at
:math:`\eta_l S_l = 2` with :math:`S_l = \lambda_{\max}(H_{ll})`, the top eigenvalue of the layer's diagonal
Hessian block.

* :func:`top_eigenvalue`: :math:`S` by Lanczos with full reorthogonalisation on Hessian-vector products
  :math:`Hv = \nabla_\theta(\nabla_\theta\mathcal L\cdot v)` (double backward through one retained graph; no
  finite differences, any floating dtype, float64 included).
* :func:`layer_sharpness`: every :math:`S_l` in one batched Lanczos iteration. Block :math:`l`'s Krylov vector
  :math:`q_l` is placed in row :math:`l` of a batch of vectors that are zero outside block :math:`l`, so one
  batched double backward (``is_grads_batched``) gives every :math:`H_{:l}q_l`, of which the rows of block
  :math:`l` are :math:`H_{ll}q_l`.
* :class:`SharpnessMonitor`: both, every ``every`` steps on a fixed batch, warm-started from the previous
  eigenvectors, recording :math:`\eta S`, :math:`\eta_l S_l` and what each measurement cost.

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

__all__ = ["Eigenpair", "top_eigenvalue", "layer_sharpness", "module_groups", "SharpnessMonitor"]

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


def _start_rows(start: Optional[Sequence[Sequence[Tensor]]], blocks: list[list[Tensor]], sizes: list[int],
                n_max: int, seed: int, like: Tensor) -> Tensor:
    """Unit start vectors, one row per block (zero beyond the block's size): ``start`` where given, else
    standard normal draws from ``seed``."""
    rows = torch.zeros(len(blocks), n_max, dtype=like.dtype, device=like.device)
    gen = torch.Generator().manual_seed(int(seed))
    for b, (block, n) in enumerate(zip(blocks, sizes)):
        if start is not None and start[b] is not None:
            vec = list(start[b])
            if len(vec) != len(block) or any(v.shape != p.shape for v, p in zip(vec, block)):
                raise ValueError(f"start[{b}] must hold one tensor per parameter of block {b}, with its shape")
            row = torch.cat([v.detach().reshape(-1).to(like) for v in vec])
        else:
            row = torch.randn(n, generator=gen, dtype=torch.float64).to(like)
        norm = float(row.double().norm())
        if not norm > 0 or not math.isfinite(norm):
            raise ValueError(f"start[{b}] must be a finite nonzero vector")
        rows[b, :n] = row / norm
    return rows


def _lanczos(loss_fn: Callable[[], Tensor], blocks: list[list[Tensor]], iters: int, tol: float, seed: int,
             start: Optional[Sequence[Sequence[Tensor]]] = None) -> list[Eigenpair]:
    """Top eigenpair of every diagonal Hessian block, all blocks advanced together (see the module doc)."""
    params = [p for block in blocks for p in block]
    loss = loss_fn()
    if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        raise ValueError("loss_fn must return a floating-point scalar tensor")
    if not loss.requires_grad:
        raise ValueError("loss_fn's result does not depend on the given parameters (it does not require grad)")
    grads = torch.autograd.grad(loss.reshape(()), params, create_graph=True, allow_unused=True)
    # gradients that are constant in the parameters (None, or without a graph) have a zero Hessian row
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    sizes = [sum(p.numel() for p in block) for block in blocks]
    n_max, nb = max(sizes), len(blocks)
    where = []  # (block, offset) of every parameter
    for b, block in enumerate(blocks):
        off = 0
        for p in block:
            where.append((b, off))
            off += p.numel()

    def matvec(x: Tensor) -> Tensor:
        out = torch.zeros_like(x)
        if not live:
            return out
        outputs = [grads[i] for i in live]
        if nb == 1:
            vs = [x[0, where[i][1]:where[i][1] + params[i].numel()].view_as(params[i]) for i in live]
            hv = torch.autograd.grad(outputs, params, vs, retain_graph=True, allow_unused=True)
            for i, (p, h) in enumerate(zip(params, hv)):
                if h is not None:
                    out[0, where[i][1]:where[i][1] + p.numel()] = h.reshape(-1)
            return out
        vs = []
        for i in live:
            b, off = where[i]
            v = x.new_zeros((nb,) + tuple(params[i].shape))
            v[b] = x[b, off:off + params[i].numel()].view_as(params[i])
            vs.append(v)
        hv = torch.autograd.grad(outputs, params, vs, retain_graph=True, allow_unused=True, is_grads_batched=True)
        for i, (p, h) in enumerate(zip(params, hv)):
            if h is not None:
                b, off = where[i]
                out[b, off:off + p.numel()] = h[b].reshape(-1)
        return out

    q = _start_rows(start, blocks, sizes, n_max, seed, params[0].detach())
    basis: list[Tensor] = []  # Krylov vectors, each (blocks, n_max)
    alphas: list[list[float]] = [[] for _ in range(nb)]
    betas: list[list[float]] = [[] for _ in range(nb)]
    done: list[Optional[tuple[float, np.ndarray, float, bool]]] = [None] * nb
    prev, beta_prev = torch.zeros_like(q), torch.zeros(nb, dtype=torch.float64)
    for k in range(iters):
        basis.append(q)
        w = matvec(q)
        alpha = (q.double() * w.double()).sum(1)
        w = w - alpha.to(w.dtype)[:, None] * q - beta_prev.to(w.dtype)[:, None] * prev
        stack = torch.stack(basis)  # full reorthogonalisation, twice (classical Gram-Schmidt is not enough once)
        for _ in range(2):
            w = w - torch.einsum("kb,kbn->bn", torch.einsum("kbn,bn->kb", stack, w), stack)
        beta = w.double().norm(dim=1)
        for b in range(nb):
            if done[b] is not None:
                continue
            alphas[b].append(float(alpha[b]))
            theta, vecs = eigh_tridiagonal(np.array(alphas[b]), np.array(betas[b]),
                                           select="i", select_range=(k, k))
            s = vecs[:, 0]
            residual = float(beta[b]) * abs(float(s[-1]))
            exhausted = k + 1 >= sizes[b] or float(beta[b]) == 0.0
            if residual <= tol * abs(float(theta[0])) or exhausted:
                done[b] = (float(theta[0]), s, residual, True)
            elif k == iters - 1:
                done[b] = (float(theta[0]), s, residual, False)
            else:
                betas[b].append(float(beta[b]))
        if all(d is not None for d in done):
            break
        active = torch.tensor([d is None for d in done], device=w.device)
        prev, beta_prev = q, torch.where(active.cpu(), beta, torch.zeros_like(beta))
        q = torch.where(active[:, None], w / beta.clamp_min(1e-300).to(w.dtype)[:, None], torch.zeros_like(w))
    out = []
    for b, block in enumerate(blocks):
        value, s, residual, converged = done[b]
        coeffs = torch.as_tensor(s, dtype=q.dtype, device=q.device)
        row = torch.einsum("k,kn->n", coeffs, torch.stack([v[b] for v in basis[:s.size]]))
        pieces, off = [], 0
        for p in block:
            pieces.append(row[off:off + p.numel()].view_as(p).clone())
            off += p.numel()
        out.append(Eigenpair(value, int(s.size), residual, converged, tuple(pieces)))
    return out


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
    return _lanczos(loss_fn, blocks, _check_positive_int("iters", iters), _check_tol(tol), seed,
                    None if start is None else [start])[0]


def layer_sharpness(loss_fn: Callable[[], Tensor], groups: Groups, *, iters: int = 100, tol: float = 1e-6,
                    seed: int = 0, start: Optional[Any] = None) -> Union[dict[str, Eigenpair], list[Eigenpair]]:
    r"""The top eigenvalue :math:`S_l = \lambda_{\max}(H_{ll})` of every diagonal Hessian block, one block per
    group of tensors (a layer), all blocks in one batched Lanczos iteration.

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
    pairs = _lanczos(loss_fn, blocks, _check_positive_int("iters", iters), _check_tol(tol), seed, start)
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


class SharpnessMonitor:
    r"""Global and per-layer sharpness every ``every`` steps on a fixed batch, with the edge-of-stability
    indicators :math:`\eta S` and :math:`\eta_l S_l` (2 at the edge, for plain gradient descent).

    ``loss_fn``: a closure computing the loss on the fixed batch; ``groups``: name -> tensors (e.g.
    :func:`module_groups`); the global sharpness is over all of them. The step size comes from ``optimizer``
    (:math:`\eta` = the first group's ``lr``; :math:`\eta_l` = the layer's largest ``lr`` times ``lr_mult``) or is
    the number ``lr``. Each measurement is warm-started from the previous eigenvectors, so that a slowly
    moving Hessian costs few products; ``iters``/``tol`` bound each.

    Call :meth:`step` after every optimizer step; every ``every``-th call measures and appends to
    :attr:`records` a dict ``step, sharpness, eta, eta_s, layers, layer_eta_s, hvps, seconds, converged``
    (``hvps``: Hessian-vector products, a batched per-layer product counted once per layer).
    """

    def __init__(self, loss_fn: Callable[[], Tensor], groups: Mapping[str, Sequence[Tensor]], every: int, *,
                 optimizer: Optional[torch.optim.Optimizer] = None, lr: Optional[float] = None,
                 per_layer: bool = True, iters: int = 20, tol: float = 1e-3, seed: int = 0) -> None:
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
        self._global_vec: Optional[tuple[Tensor, ...]] = None
        self._layer_vecs: Optional[dict[str, tuple[Tensor, ...]]] = None

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
        params = [p for ps in self.groups.values() for p in ps]
        top = top_eigenvalue(self.loss_fn, params, iters=self.iters, tol=self.tol, seed=self.seed,
                             start=self._global_vec)
        self._global_vec = top.vector
        hvps, converged = top.iterations, top.converged
        layers: dict[str, float] = {}
        if self.per_layer:
            pairs = layer_sharpness(self.loss_fn, self.groups, iters=self.iters, tol=self.tol, seed=self.seed,
                                    start=self._layer_vecs)
            self._layer_vecs = {k: v.vector for k, v in pairs.items()}
            layers = {k: v.value for k, v in pairs.items()}
            hvps += len(pairs) * max(v.iterations for v in pairs.values())
            converged = converged and all(v.converged for v in pairs.values())
        eta, etas = self._rates()
        rec = dict(step=self._calls, sharpness=top.value, eta=eta, eta_s=eta * top.value, layers=layers,
                   layer_eta_s={k: etas[k] * s for k, s in layers.items()}, hvps=hvps,
                   seconds=time.perf_counter() - t0, converged=converged)
        self.records.append(rec)
        return rec

    @property
    def seconds(self) -> float:
        """Total time spent measuring."""
        return sum(r["seconds"] for r in self.records)
