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
* :class:`SharpnessMonitor`: both, every ``every`` steps on a fixed batch (by default a training batch's
  size, :data:`MONITOR_BATCH`), in one batched iteration of global and layer rows that continues across
  measurements (a few steps each, :data:`MONITOR_ITERS`), recording :math:`\eta S`, :math:`\eta_l S_l`, the
  residuals (the accuracy reached) and what each measurement cost.

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


def _closure_products(loss_fn: Callable[[], Tensor], params: list[Tensor]) -> Callable[[Tensor], Tensor]:
    r"""``X -> X H`` for a batch of row vectors over ``params`` (flattened, concatenated), by double backward:
    :math:`Hv = \nabla_\theta(\nabla_\theta\mathcal L\cdot v)` through one graph of ``loss_fn()`` kept for all
    products (a batch of rows is one ``is_grads_batched`` backward)."""
    loss = loss_fn()
    if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        raise ValueError("loss_fn must return a floating-point scalar tensor")
    if not loss.requires_grad:
        raise ValueError("loss_fn's result does not depend on the given parameters (it does not require grad)")
    grads = torch.autograd.grad(loss.reshape(()), params, create_graph=True, allow_unused=True)
    # gradients that are constant in the parameters (None, or without a graph) have a zero Hessian row
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    offsets = np.cumsum([0] + [p.numel() for p in params]).tolist()

    def products(x: Tensor) -> Tensor:
        out = torch.zeros_like(x)
        if not live:
            return out
        rows = x.shape[0]
        vs = [x[:, offsets[i]:offsets[i + 1]].reshape((rows,) + tuple(params[i].shape)) for i in live]
        if rows == 1:
            hv = torch.autograd.grad([grads[i] for i in live], params, [v[0] for v in vs], retain_graph=True,
                                     allow_unused=True)
            hv = [None if h is None else h.unsqueeze(0) for h in hv]
        else:
            hv = torch.autograd.grad([grads[i] for i in live], params, vs, retain_graph=True, allow_unused=True,
                                     is_grads_batched=True)
        for i, h in enumerate(hv):
            if h is not None:
                out[:, offsets[i]:offsets[i + 1]] = h.reshape(rows, -1)
        return out

    return products


def _functional_products(loss_of: Callable[[tuple[Tensor, ...]], Tensor],
                         params: list[Tensor]) -> Callable[[Tensor], Tensor]:
    r"""``X -> X H`` as :func:`_closure_products`, for a loss given as a function of the parameter tensors, by
    forward-over-reverse differentiation: :math:`Hv` is the directional derivative of the gradient along
    :math:`v` (``torch.func.jvp`` of ``torch.func.grad``), one forward-mode pass per batch of rows
    (``torch.func.vmap``). Nothing is kept between products; on the MLP it costs about half a double backward."""
    primals = tuple(p.detach() for p in params)
    offsets = np.cumsum([0] + [p.numel() for p in params]).tolist()
    gradient = torch.func.grad(loss_of)

    def along(*tangents: Tensor) -> tuple[Tensor, ...]:
        return torch.func.jvp(gradient, (primals,), (tangents,))[1]

    def products(x: Tensor) -> Tensor:
        rows = x.shape[0]
        vs = [x[:, offsets[i]:offsets[i + 1]].reshape((rows,) + tuple(p.shape)) for i, p in enumerate(params)]
        hv = along(*[v[0] for v in vs]) if rows == 1 else torch.func.vmap(along)(*vs)
        return torch.cat([h.reshape(rows, -1) for h in hv], dim=1)

    return products


@dataclass(frozen=True)
class _Row:
    """One block's Lanczos result, flattened over the whole parameter vector: the Ritz vector ``vector`` and the
    start for a continuation, ``ahead`` = the power step :math:`Hy/\theta` (normalised) on it."""

    value: float
    iterations: int
    residual: float
    converged: bool
    vector: Tensor
    ahead: Tensor


def _lanczos(products: Callable[[Tensor], Tensor], masks: Tensor, starts: Tensor, sizes: Sequence[int],
             iters: int, tol: float) -> tuple[list[_Row], int]:
    """Top eigenpair of every block ``P_b H P_b`` (``P_b`` = the 0/1 row ``masks[b]``), all blocks advanced
    together, one batched product per step (see the module doc). ``starts``: unit rows inside their masks.
    Returns the rows and the number of batched products."""
    nb = masks.shape[0]
    q = starts
    basis: list[Tensor] = []  # Krylov vectors, each (blocks, n)
    alphas: list[list[float]] = [[] for _ in range(nb)]
    betas: list[list[float]] = [[] for _ in range(nb)]
    done: list[Optional[tuple[float, np.ndarray, float, bool, Tensor]]] = [None] * nb
    calls = 0
    for k in range(iters):
        basis.append(q)
        w = products(q) * masks
        calls += 1
        alpha = torch.einsum("bn,bn->b", q, w).double()
        # the three-term recurrence w - alpha q - beta q_prev is subsumed by full reorthogonalisation against
        # every Krylov vector, done twice (classical Gram-Schmidt is not enough once)
        stack = torch.stack(basis)
        for _ in range(2):
            w = w - torch.einsum("kb,kbn->bn", torch.einsum("kbn,bn->kb", stack, w), stack)
        beta = w.norm(dim=1).double()
        for b in range(nb):
            if done[b] is not None:
                continue
            alphas[b].append(float(alpha[b]))
            theta, vecs = eigh_tridiagonal(np.array(alphas[b]), np.array(betas[b]),
                                           select="i", select_range=(k, k))
            s = vecs[:, 0]
            residual = float(beta[b]) * abs(float(s[-1]))
            exhausted = k + 1 >= sizes[b] or float(beta[b]) == 0.0
            if residual <= tol * abs(float(theta[0])) or exhausted or k == iters - 1:
                # H y - theta y = beta_k s_k q_{k+1} = s_k w: the residual vector, kept for the power step
                done[b] = (float(theta[0]), s, residual, residual <= tol * abs(float(theta[0])) or exhausted,
                           float(s[-1]) * w[b])
            else:
                betas[b].append(float(beta[b]))
        if all(d is not None for d in done):
            break
        active = torch.tensor([d is None for d in done], device=w.device)
        q = torch.where(active[:, None], w / beta.clamp_min(1e-300).to(w.dtype)[:, None], torch.zeros_like(w))
    rows = []
    for b in range(nb):
        value, s, residual, converged, res_vec = done[b]
        coeffs = torch.as_tensor(s, dtype=q.dtype, device=q.device)
        y = torch.einsum("k,kn->n", coeffs, torch.stack([v[b] for v in basis[:s.size]]))
        # the power step y + r/|theta| (= H y / theta for theta > 0) moves toward the top of the spectrum
        ahead = y + res_vec / max(abs(value), 1e-300)
        norm = float(ahead.double().norm())
        ahead = ahead / norm if norm > 0 and math.isfinite(norm) else y
        rows.append(_Row(value, int(s.size), residual, converged, y, ahead))
    return rows, calls


def _layout(params: list[Tensor], blocks: list[list[Tensor]]) -> tuple[Tensor, list[int], list[list[slice]]]:
    """0/1 masks (blocks, n) of each block inside the concatenation of ``params``, the blocks' sizes, and each
    block tensor's slice of it."""
    index, off = {}, 0
    for p in params:
        index[id(p)] = slice(off, off + p.numel())
        off += p.numel()
    like = params[0].detach()
    masks = torch.zeros(len(blocks), off, dtype=like.dtype, device=like.device)
    slices = []
    for b, block in enumerate(blocks):
        slices.append([index[id(p)] for p in block])
        for sl in slices[-1]:
            masks[b, sl] = 1
    return masks, [sum(p.numel() for p in block) for block in blocks], slices


def _embed(rows: list[Tensor], slices: list[list[slice]], n: int) -> Tensor:
    out = rows[0].new_zeros(len(rows), n)
    for b, (row, sls) in enumerate(zip(rows, slices)):
        off = 0
        for sl in sls:
            width = sl.stop - sl.start
            out[b, sl] = row[off:off + width]
            off += width
    return out


def _pieces(row: Tensor, block: list[Tensor], slices: list[slice]) -> tuple[Tensor, ...]:
    return tuple(row[sl].view_as(p).clone() for sl, p in zip(slices, block))


def _block_pairs(loss_fn: Callable[[], Tensor], blocks: list[list[Tensor]], iters: int, tol: float, seed: int,
                 start: Optional[Sequence[Sequence[Tensor]]]) -> list[Eigenpair]:
    """:func:`_lanczos` on the closure's Hessian (double backward), one row per (disjoint) block."""
    params = [p for block in blocks for p in block]
    masks, sizes, slices = _layout(params, blocks)
    starts = _embed(_start_rows(start, blocks, seed, params[0].detach()), slices, masks.shape[1])
    rows, _ = _lanczos(_closure_products(loss_fn, params), masks, starts, sizes, iters, tol)
    return [Eigenpair(r.value, r.iterations, r.residual, r.converged, _pieces(r.vector, block, sls))
            for r, block, sls in zip(rows, blocks, slices)]


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

    ``loss_fn``: a closure computing the loss on the fixed batch (products by double backward); or build the
    monitor with :meth:`for_module`, which takes a model and a batch (products by forward-over-reverse, about
    half the cost). ``groups``: name -> tensors (e.g. :func:`module_groups`); the global sharpness is over all of
    them. The step size comes from ``optimizer`` (:math:`\eta` = the first group's ``lr``; :math:`\eta_l` = the
    layer's largest ``lr`` times ``lr_mult``) or is the number ``lr``.

    Cost. A measurement is ``iters`` Lanczos steps (default :data:`MONITOR_ITERS`), each *one* batched product
    of the global vector and every layer's block vector (``1 + layers`` rows), fewer when every row's relative
    residual falls below ``tol``. It does not start afresh: it starts from the power step :math:`Hy/\theta` on
    the previous measurement's Ritz vectors :math:`y`, so the iteration continues across measurements while the
    Hessian moves slowly, and a few steps per measurement keep it close to the top eigenvector.

    Accuracy. Each value is a Ritz value of the current Hessian, so :math:`\theta \le S` (a lower bound) and some
    eigenvalue lies within the residual :math:`\|Hy - \theta y\|` of it; each record carries the relative
    residuals, so a user sees the accuracy bought (tighten with larger ``iters``).

    Call :meth:`step` after every optimizer step; every ``every``-th call measures and appends to
    :attr:`records` a dict ``step, sharpness, eta, eta_s, residual, layers, layer_eta_s, layer_residuals,
    products, hvps, seconds, converged``: ``residual`` the global relative residual, ``layer_residuals`` per
    layer; ``products`` the batched products, ``hvps`` the Hessian-vector products they computed
    (``products`` x rows).
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
        blocks = [self._params] + (list(self.groups.values()) if self.per_layer else [])
        self._masks, self._sizes, slices = _layout(self._params, blocks)
        self._starts = _embed(_start_rows(None, blocks, seed, self._params[0].detach()), slices,
                              self._masks.shape[1])
        self._products: Callable[[], Callable[[Tensor], Tensor]] = lambda: _closure_products(loss_fn, self._params)

    @classmethod
    def for_module(cls, model: nn.Module, inputs: Tensor, targets: Tensor, every: int, *,
                   batch_size: int = MONITOR_BATCH, loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
                   by: str = "children", **options: Any) -> "SharpnessMonitor":
        """A monitor of ``loss(model(x), y)`` on the fixed batch of the first ``batch_size`` rows of ``inputs``
        and ``targets`` (all of them when fewer; default :data:`MONITOR_BATCH`), one layer per
        :func:`module_groups` ``(model, by)``, with forward-over-reverse products. The model's buffers are
        read, never written (a train-mode BatchNorm runs on copies of its statistics). ``options``: those of
        the constructor (``optimizer`` or ``lr``, ``per_layer``, ``iters``, ``tol``, ``seed``)."""
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        batch_size = _check_positive_int("batch_size", batch_size)
        x, y = inputs[:batch_size], targets[:batch_size]
        groups = module_groups(model, by=by)
        names = {id(p): n for n, p in model.named_parameters()}
        # the closure is the constructor's (double-backward) view of the same loss; the products below replace it
        monitor = cls(lambda: loss(model(x), y), groups, every, **options)
        keys = [names[id(p)] for p in monitor._params]

        def loss_of(params: tuple[Tensor, ...]) -> Tensor:
            state = dict(zip(keys, params))
            state.update((name, b.clone()) for name, b in model.named_buffers())
            return loss(torch.func.functional_call(model, state, (x,)), y)

        monitor._products = lambda: _functional_products(loss_of, monitor._params)
        return monitor

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
        rows, calls = _lanczos(self._products(), self._masks, self._starts, self._sizes, self.iters, self.tol)
        self._starts = torch.stack([r.ahead for r in rows])
        relative = [r.residual / max(abs(r.value), 1e-300) for r in rows]
        top, names = rows[0], list(self.groups) if self.per_layer else []
        layers = {k: r.value for k, r in zip(names, rows[1:])}
        eta, etas = self._rates()
        rec = dict(step=self._calls, sharpness=top.value, eta=eta, eta_s=eta * top.value, residual=relative[0],
                   layers=layers, layer_eta_s={k: etas[k] * s for k, s in layers.items()},
                   layer_residuals=dict(zip(names, relative[1:])), products=calls, hvps=calls * len(rows),
                   seconds=time.perf_counter() - t0, converged=all(r.converged for r in rows))
        self.records.append(rec)
        return rec

    @property
    def seconds(self) -> float:
        """Total time spent measuring."""
        return sum(r["seconds"] for r in self.records)
