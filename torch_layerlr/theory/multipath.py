r"""Multi-pathway deep linear networks: large-step gradient descent restores symmetry (Kim & Lee,
arXiv 2606.05219, seed 004; formulas in research note E).

Model (E.1): :math:`H` parallel paths, path :math:`h` of depth :math:`L_h` computing
:math:`\Omega_h = W_{h,L_h}\cdots W_{h,1}`, output :math:`M = \sum_h\Omega_h`, loss
:math:`\tfrac12\|M - M_\star\|_F^2`, plain GD at step :math:`\eta`. On the target-aligned, depth-balanced set each
mode :math:`i` of :math:`M_\star` (singular value :math:`\sigma_{\star i}`) is a sum of scalar paths
:math:`\sigma_{hi} = w_h^{L_h}`, and its loss is :math:`\tfrac12(\sum_h\sigma_{hi} - \sigma_{\star i})^2`.

* E.2: at a global minimum (balanced layers) the mode's Hessian block is rank one,
  :math:`JJ^\top` with :math:`\partial\sigma_h/\partial w_{h\ell} = \sigma_h^{1-1/L_h}`, so its eigenvalue is
  :math:`\lambda = \sum_h L_h|\sigma_h|^{2-2/L_h}` (:func:`mode_sharpness`); one path carrying the mode gives
  :math:`S_1 = L\sigma_\star^{2-2/L}` (:func:`single_path_sharpness`), the equal split of :math:`H` paths of
  depth :math:`L` gives :math:`\lambda^{\min} = LH^{2/L-1}\sigma_\star^{2-2/L}`, and their ratio is
  :math:`\rho(H, L) = H^{2/L-1}` (:func:`sharpness_ratio`).
* E.2, heterogeneous depths: the flattest split minimises :math:`\sum_hL_h\sigma_h^{2-2/L_h}` under
  :math:`\sum_h\sigma_h = \sigma_\star`; its Lagrange condition is :math:`(2L_h - 2)\sigma_h^{1-2/L_h} = \nu` for
  every :math:`h` (the digest's eq. 18) (:func:`flattest_split`).
* E.3: windows of the step size (:func:`step_size_windows`): winner-takes-all below :math:`2/S_1`, re-balancing
  to the minimum whose sharpness is :math:`2/\eta` up to :math:`\min(2/\lambda^{\min}, \eta_{\rm WCR})`, no stable
  minimum above :math:`2/\lambda^{\min}`; :math:`\eta_{\rm WCR} = \gamma_{\rm WCR}(L)/S_1` is the largest step at
  which the single-path map :math:`w \leftarrow w - \eta w^{L-1}(w^L - \sigma_\star)` returns from any
  :math:`w\in(0, w_\star)` into :math:`(0, w_\star)` in two steps (:func:`gamma_wcr`); above it the dominant path
  overshoots through zero (sign flip). :func:`predicted_split` puts these together for two paths.

All functions are float64 NumPy, vectorized over broadcast arguments; paths run along the last axis.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["mode_sharpness", "single_path_sharpness", "sharpness_ratio", "flattest_split", "gamma_wcr",
           "Windows", "step_size_windows", "predicted_split"]

_BISECTIONS = 200  # halvings of a bracket: far below float64 resolution of any bracket used here
_GOLDEN = 1.0 / ((1.0 + 5.0 ** 0.5) / 2.0)


def _real(name: str, value: Any) -> np.ndarray:
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number or an array of numbers, got {value!r}") from exc
    if np.isnan(out).any():
        raise ValueError(f"{name} must not be NaN")
    return out


def _positive(name: str, value: Any) -> np.ndarray:
    out = _real(name, value)
    if not (np.all(out > 0) and np.all(np.isfinite(out))):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return out


def _integers(name: str, value: Any, low: int) -> np.ndarray:
    out = _real(name, value)
    if not (np.all(np.isfinite(out)) and np.all(out == np.round(out)) and np.all(out >= low)):
        raise ValueError(f"{name} must be integers >= {low}, got {value!r}")
    return out


def _out(x: np.ndarray) -> Any:
    return float(x) if np.ndim(x) == 0 else x


def mode_sharpness(sigmas: Any, depths: Any) -> Any:
    r"""E.2: the Hessian eigenvalue of one mode at a global minimum on the balanced set,
    :math:`\lambda = \sum_h L_h|\sigma_h|^{2-2/L_h}`.

    ``sigmas``: the paths' mode coefficients, paths on the last axis; ``depths``: one depth for all paths or
    one per path (broadcast against ``sigmas``)."""
    s = _real("sigmas", sigmas)
    L = _integers("depths", depths, 1)
    return _out(np.sum(L * np.abs(s) ** (2.0 - 2.0 / L), axis=-1))


def single_path_sharpness(sigma: Any, depth: Any) -> Any:
    r"""E.2: the sharpness of the minimum where one path of depth :math:`L` carries the whole mode,
    :math:`S_1 = L|\sigma_\star|^{2-2/L}` (the scalar chain's eq. 13 with :math:`\mu_{xx} = 1`)."""
    s = _real("sigma", sigma)
    L = _integers("depth", depth, 1)
    return _out(L * np.abs(s) ** (2.0 - 2.0 / L))


def sharpness_ratio(paths: Any, depth: Any) -> Any:
    r"""E.2: :math:`\rho(H, L) = \lambda^{\min}/S_1 = H^{2/L-1}` (< 1 for :math:`L > 2`, :math:`\to 1/H` as
    :math:`L\to\infty`)."""
    H = _integers("paths", paths, 1)
    L = _integers("depth", depth, 1)
    return _out(H ** (2.0 / L - 1.0))


def flattest_split(sigma: Any, depths: Any) -> np.ndarray:
    r"""E.2 (heterogeneous depths): the split :math:`(\sigma_1,\dots,\sigma_H)`, :math:`\sum_h\sigma_h = \sigma`,
    of least sharpness :math:`\sum_hL_h\sigma_h^{2-2/L_h}`.

    The objective is strictly convex for :math:`L_h > 2`, so the minimiser is the Lagrange point
    :math:`(2L_h-2)\sigma_h^{1-2/L_h} = \nu`, i.e. :math:`\sigma_h(\nu) = (\nu/(2L_h-2))^{L_h/(L_h-2)}`, with
    :math:`\nu` found by bisection of :math:`\sum_h\sigma_h(\nu) = \sigma` in :math:`\log\nu` (equal depths give
    the equal split). ``sigma`` > 0 of any shape; ``depths``: one per path, each >= 3. Returns
    ``sigma.shape + (H,)``."""
    s = _positive("sigma", sigma)
    L = _integers("depths", depths, 3)
    if L.ndim != 1:
        raise ValueError(f"depths must be one depth per path (a 1-D sequence), got shape {L.shape}")
    p = L / (L - 2.0)  # sigma_h = exp(p_h (t - log(2 L_h - 2))), t = log nu
    c = np.log(2.0 * L - 2.0)
    log_s = np.log(s)[..., None]
    # bracket: every path at sigma / H (sum <= sigma) .. every path at sigma (sum >= sigma)
    lo = np.min(c + (np.log(s)[..., None] - np.log(L.size)) / p, axis=-1)
    hi = np.max(c + log_s / p, axis=-1)
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        total = np.sum(np.exp(p * (mid[..., None] - c) - log_s), axis=-1)  # sum_h sigma_h / sigma
        lo, hi = np.where(total < 1.0, mid, lo), np.where(total < 1.0, hi, mid)
    split = np.exp(p * (0.5 * (lo + hi))[..., None] - p * c)
    return split * (s[..., None] / split.sum(-1, keepdims=True))  # exact sum; a relative change ~1e-16


def _chain_map(w: np.ndarray, gamma: np.ndarray, L: np.ndarray) -> np.ndarray:
    r"""One GD step of a single balanced path with :math:`\sigma_\star = 1` at :math:`\eta = \gamma/S_1`:
    :math:`w \leftarrow w - (\gamma/L)w^{L-1}(w^L - 1)`."""
    return w - (gamma / L) * w ** (L - 1.0) * (w ** L - 1.0)


def _peak(gamma: np.ndarray, L: np.ndarray) -> np.ndarray:
    r"""The worst first step :math:`\max_{w\in(0,1)}` of :func:`_chain_map`, by golden section (the map rises
    then falls on (0, 1): its slope :math:`1 + (\gamma/L)w^{L-2}((L-1) - (2L-1)w^L)` changes sign once)."""
    a, b = np.zeros_like(gamma), np.ones_like(gamma)
    for _ in range(100):
        x1, x2 = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
        left = _chain_map(x1, gamma, L) >= _chain_map(x2, gamma, L)
        a, b = np.where(left, a, x1), np.where(left, x2, b)
    return _chain_map(0.5 * (a + b), gamma, L)


def gamma_wcr(depth: Any) -> Any:
    r"""E.3: :math:`\gamma_{\rm WCR}(L) > 2`, the root of :math:`f_\gamma(\max_{w\in(0,1)}f_\gamma(w)) = 0` for the
    single-path map :math:`f_\gamma` (:math:`\sigma_\star = 1`, :math:`\eta = \gamma/S_1`): the worst start in
    :math:`(0, 1)` jumps to the peak above 1 and the next step lands exactly at 0. Bisection on :math:`\gamma`;
    it grows like :math:`2\ln L` (the peak is :math:`\approx 1 + \gamma/(4L)`, and the return step vanishes when
    :math:`\gamma e^{\gamma/2} \approx L`). ``depth`` >= 2."""
    L = _integers("depth", depth, 2)
    lo = np.full(L.shape, 2.0)
    hi = 4.0 + 4.0 * np.log(L)
    if np.any(_chain_map(_peak(hi, L), hi, L) >= 0):
        raise ValueError(f"no sign change of the two-step return below gamma = 4 + 4 ln L for depth {depth!r}")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        positive = _chain_map(_peak(mid, L), mid, L) > 0
        lo, hi = np.where(positive, mid, lo), np.where(positive, hi, mid)
    return _out(0.5 * (lo + hi))


class Windows(NamedTuple):
    """Step-size windows of one mode (E.3)."""

    single: Any  #: 2 / S_1: below it the single-path minimum is stable (winner-takes-all)
    flattest: Any  #: 2 / lambda_min: above it no minimum on the balanced set is stable
    wcr: Any  #: gamma_WCR(L) / S_1: above it the dominant path overshoots through zero
    upper: Any  #: min(flattest, wcr): the top of the re-balancing window


def step_size_windows(sigma: Any, paths: Any, depth: Any) -> Windows:
    r"""E.3: :math:`2/S_1`, :math:`2/\lambda^{\min} = 2/(\rho S_1)` and :math:`\eta_{\rm WCR} = \gamma_{\rm WCR}(L)/S_1`
    for a mode :math:`\sigma > 0` shared by ``paths`` paths of equal ``depth`` >= 2 (broadcast)."""
    s = _positive("sigma", sigma)
    S1 = np.asarray(single_path_sharpness(s, _integers("depth", depth, 2)))
    rho = np.asarray(sharpness_ratio(paths, depth))
    single, flattest = 2.0 / S1, 2.0 / (rho * S1)
    wcr = np.asarray(gamma_wcr(depth)) / S1
    return Windows(_out(single), _out(flattest), _out(wcr), _out(np.minimum(flattest, wcr)))


def predicted_split(sigma: Any, paths: Any, depth: Any, lr: Any) -> np.ndarray:
    r"""E.3, two paths of equal depth :math:`L \ge 3`: the final split (dominant path first) of GD at step
    ``lr`` from a small, unequal start.

    * :math:`\eta < 2/S_1`: winner-takes-all, :math:`(\sigma, 0)`;
    * :math:`2/S_1 \le \eta \le \min(2/\lambda^{\min}, \eta_{\rm WCR})`: the split whose sharpness is :math:`2/\eta`,
      :math:`L(p^{2-2/L} + (\sigma - p)^{2-2/L}) = 2/\eta` with :math:`p \in [\sigma/2, \sigma]` (bisection; the
      sharpness rises with :math:`p` there, by convexity);
    * above: none (NaN).

    With more than two paths the minima of sharpness :math:`2/\eta` form a manifold and which one GD reaches
    depends on the start, so ``paths`` must be 2. Returns ``broadcast(sigma, lr).shape + (2,)``."""
    if _integers("paths", paths, 1).ndim or int(paths) != 2:
        raise ValueError(f"paths must be 2 (with more paths the split at sharpness 2/lr is not unique), got {paths!r}")
    L = _integers("depth", depth, 3)
    if L.ndim:
        raise ValueError(f"depth must be one integer, got {depth!r}")
    s, eta = np.broadcast_arrays(_positive("sigma", sigma), _positive("lr", lr))
    win = step_size_windows(s, 2, L)
    a = 2.0 - 2.0 / L
    target = 2.0 / eta
    lo, hi = 0.5 * s, s.copy()
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        above = L * (mid ** a + (s - mid) ** a) > target
        lo, hi = np.where(above, lo, mid), np.where(above, mid, hi)
    p = np.where(eta < np.asarray(win.single), s, 0.5 * (lo + hi))
    out = np.stack([p, s - p], axis=-1)
    return np.where((eta > np.asarray(win.upper))[..., None], np.nan, out)
