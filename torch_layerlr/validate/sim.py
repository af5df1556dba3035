"""Reference computations the checks compare the closed forms with: data sets with given moments,
autograd Hessians in float64, and plain float64 gradient descent on balanced scalar networks."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["scalar_data", "aligned_data", "half_mse", "hessian", "top_eigenvalue", "balanced_gd",
           "crossing_times", "escape_steps"]


# ---- data ------------------------------------------------------------------------------------------------
def scalar_data(mu_xx: float, mu_yx: float, n: int = 16, noise: float = 0.3, seed: int = 0) -> tuple[Tensor, Tensor]:
    r"""Float64 samples with exactly :math:`\frac1N\sum x^2 = \mu_{xx}`, :math:`\frac1N\sum yx = \mu_{yx}`
    (up to rounding): y = r x plus noise orthogonal to x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    x = x * math.sqrt(mu_xx / x.pow(2).mean().item())
    e = torch.randn(n, generator=g, dtype=torch.float64)
    e = e - (e @ x) / (x @ x) * x
    y = (mu_yx / mu_xx) * x + noise * e / e.pow(2).mean().sqrt()
    return x, y


def aligned_data(lam: Sequence[float], s: Sequence[float], d_out: int, n: int = 32, seed: int = 0
                 ) -> tuple[Tensor, Tensor]:
    r"""Float64 samples with :math:`\Sigma_{xx} = V\mathrm{diag}(\lambda)V^\top` and
    :math:`\Sigma_{yx} = \sum_{i<k}s_iu_iv_i^\top` (k = len(s)) for random orthogonal U, V: aligned data whose
    first k input eigen-directions carry the signal, plus output noise orthogonal to the inputs."""
    rng = np.random.default_rng(seed)
    lam = np.asarray(lam, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    d_in, k = lam.size, s.size
    v, _ = np.linalg.qr(rng.standard_normal((d_in, d_in)))
    u, _ = np.linalg.qr(rng.standard_normal((d_out, d_out)))
    o, _ = np.linalg.qr(rng.standard_normal((n, n)))
    o_x, o_rest = o[:, :d_in], o[:, d_in:]
    x = math.sqrt(n) * o_x @ np.diag(np.sqrt(lam)) @ v.T
    m = np.zeros((d_in, d_out))
    m[:k, :k] = np.diag(s / np.sqrt(lam[:k]))
    y = math.sqrt(n) * o_x @ m[:, :k] @ u[:, :k].T
    y = y + 0.1 * o_rest @ rng.standard_normal((n - d_in, d_out))
    return torch.from_numpy(x), torch.from_numpy(y)


def half_mse(pred: Tensor, y: Tensor) -> Tensor:
    r"""The paper's loss :math:`\frac{1}{2N}\sum_n\|y_n - f(x_n)\|^2`."""
    return 0.5 * (y - pred).pow(2).reshape(y.shape[0], -1).sum(1).mean()


# ---- Hessians --------------------------------------------------------------------------------------------
def hessian(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Full Hessian, by autograd, of :func:`half_mse` of ``model`` on (x, y) over all its parameters
    (flattened in ``named_parameters`` order), in the parameters' dtype."""
    names, shapes, sizes = [], [], []
    for name, p in model.named_parameters():
        names.append(name)
        shapes.append(p.shape)
        sizes.append(p.numel())
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(v: Tensor) -> Tensor:
        params = {n: c.reshape(s) for n, c, s in zip(names, torch.split(v, sizes), shapes)}
        return half_mse(torch.func.functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss_of, flat)


def top_eigenvalue(h: Tensor) -> float:
    return float(torch.linalg.eigvalsh(h)[-1])


# ---- gradient descent on balanced scalar networks -------------------------------------------------------
def balanced_gd(arch: str, depth: Any, mu_xx: Any, mu_yx: Any, w0: Any, lr: Any, steps: int) -> np.ndarray:
    r"""Gradient descent, float64, on balanced scalar networks (every layer holds the same ``w``, which GD
    preserves), vectorized over broadcast configurations.

    Returns the relative error of the network's coefficient, :math:`e = c/r - 1 = \alpha - 1`, after
    0..``steps`` steps, shape ``config_shape + (steps + 1,)``; a diverged run holds inf/nan from then on.  The
    excess loss is :math:`\frac12\mu_{xx}r^2e^2`.

    The state is the layer weight's relative distance to the balanced minimum, :math:`w = w_*(1+u)`, and the
    update is the full network's gradient (eq. 2, 24, 30 at equal layers) written in ``u`` with ``expm1`` and
    ``log1p``, so that e keeps its relative precision down to ~1e-300 instead of stopping at 1e-16: the
    loss after 30 steps (Fig. 2) spans 30 orders of magnitude and its minimum over a grid is otherwise lost
    in rounding.  With :math:`g = r^{1/L} - 1` and :math:`\eta S/L` the per-step gain:

    * chain, res1 (:math:`v = w` or :math:`1 + w/\sqrt L`, :math:`v_* = r^{1/L}`, :math:`v = v_*(1+u)`):
      :math:`e = \mathrm{expm1}(L\,\mathrm{log1p}\,u)`,
      :math:`u \leftarrow u - \eta\mu_{xx}r^{2-2/L}c_L\,e\,(1+u)^{L-1}` with :math:`c_L = 1` (chain),
      :math:`1/L` (res1);
    * res2 (:math:`w_*^2 = Lg`): :math:`e = \mathrm{expm1}(L\,\mathrm{log1p}(g\,u(2+u)/(1+g)))`,
      :math:`u \leftarrow u - \frac{2\eta}{L}\mu_{xx}r\,e\,(1+u)(1 + g(1+u)^2)^{L-1}`.
    """
    if arch not in ("chain", "res1", "res2"):
        raise ValueError(f"unknown arch {arch!r}")
    L, mxx, myx, w, eta = (np.asarray(a, dtype=np.float64) for a in (depth, mu_xx, mu_yx, w0, lr))
    L, mxx, myx, w, eta = np.broadcast_arrays(L, mxx, myx, w, eta)
    r = myx / mxx
    g = np.expm1(np.log(r) / L)  # r^(1/L) - 1
    if arch == "chain":
        u = w / (1.0 + g) - 1.0
        gain = eta * mxx * r ** (2.0 - 2.0 / L)
    elif arch == "res1":
        u = (1.0 + w / np.sqrt(L)) / (1.0 + g) - 1.0
        gain = eta * mxx * r ** (2.0 - 2.0 / L) / L
    else:
        u = w / np.sqrt(L * g) - 1.0
        gain = 2.0 * eta * mxx * r / L
    out = np.empty(u.shape + (steps + 1,))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for k in range(steps + 1):
            if arch == "res2":
                e = np.expm1(L * np.log1p(g * u * (2.0 + u) / (1.0 + g)))
                step = gain * e * (1.0 + u) * (1.0 + g * (1.0 + u) ** 2) ** (L - 1)
            else:
                e = np.expm1(L * np.log1p(u))
                step = gain * e * (1.0 + u) ** (L - 1)
            out[..., k] = e
            u = u - step
    return out


def crossing_times(traj: np.ndarray, targets: Sequence[float]) -> np.ndarray:
    """First time each trajectory (last axis = step) reaches each target, linearly interpolated between steps;
    nan if never.  Shape ``traj.shape[:-1] + (len(targets),)``."""
    traj = np.asarray(traj)
    out = np.full(traj.shape[:-1] + (len(targets),), np.nan)
    flat = traj.reshape(-1, traj.shape[-1])
    res = out.reshape(-1, len(targets))
    for i, row in enumerate(flat):
        for j, target in enumerate(targets):
            hit = np.flatnonzero(row >= target)
            if hit.size == 0:
                continue
            k = hit[0]
            res[i, j] = 0.0 if k == 0 else (k - 1) + (target - row[k - 1]) / (row[k] - row[k - 1])
    return out


def escape_steps(depth: int, alpha0: float, tau: float, target: float = 0.5, max_steps: int = 10_000_000) -> float:
    r"""GD steps (interpolated) for a balanced chain with :math:`\mu_{xx} = \mu_{yx} = 1` to go from
    :math:`\alpha_0` to ``target`` at the rule :math:`\eta = 1/(\tau S)`: a plain scalar loop (the plateau needs
    up to ~1e6 steps, which a Python float loop does faster than NumPy)."""
    L = int(depth)
    eta = 1.0 / (tau * L)  # eq. 5 with mu_xx = mu_yx = 1
    w = alpha0 ** (1.0 / L)
    a_prev = alpha0
    for k in range(1, max_steps + 1):
        w = w + eta * (1.0 - w ** L) * w ** (L - 1)
        a = w ** L
        if a >= target:
            return (k - 1) + (target - a_prev) / (a - a_prev)
        a_prev = a
    return math.nan
