r"""Two-step layer balancing (Pang et al., "Balancing Learning Rates Across Layers: Exact Two-Step Dynamics
and Optimal Scaling in Linear Neural Networks", arXiv 2606.00340): exact expected test losses after one and
two steps of the *gradient approximation* (surrogate), and what they say about per-layer learning rates.
Research note: ``research/layer_balancing.md`` (section numbers below refer to it).

**Nets** (section 1; inputs are rows, :math:`n = d = h`, whitened data :math:`X^\top X = nI`, no label noise):

* ``layers=2``: :math:`f(x) = \frac1h\,xW_1W_2` with :math:`W_1, W_2 \in \mathbb R^{h\times h}` Haar orthogonal
  at initialisation and target :math:`\beta = Q/\sqrt h`, :math:`Q` orthogonal.
* ``layers=3``: :math:`f(x) = \frac1{\sqrt h}\,xW_1W_2a` with a fixed unit-norm :math:`a` (not trained),
  :math:`W_1, W_2` Haar orthogonal and a unit-norm target :math:`\beta \in \mathbb R^h`.

Train loss :math:`\frac1{2n}\|f(X) - Y\|^2`; test loss the population :math:`\|\hat W - \beta\|_F^2` (no ½).
Learning rates :math:`(\eta_1, \eta_2)` are per layer and may change between the two steps: ``rates`` is a list
of per-step pairs, ``[(eta1, eta2)]`` for one step and ``[(eta1, eta2), (eta1_, eta2_)]`` for two.

**Surrogate** (section 2.2): drop the self-interaction part :math:`B_\ell` of each gradient and update
simultaneously, :math:`W_\ell \leftarrow W_\ell + \eta_\ell A_\ell`.  The losses below are the *exact*
expectations, over the Haar initialisation, of the surrogate's population test loss (section 2.3, 2.5); the
only approximation is surrogate versus true gradient descent (section 2.7).

*Two layers* (per realisation, section 2.4): with :math:`c_\ell = \eta_\ell/h^{3/2}` (step 1),
:math:`d_\ell = \eta'_\ell/h^{3/2}` (step 2), :math:`Z = W_1W_2`, :math:`Q = \sqrt h\beta`, :math:`U = Z^\top Q`,
the end-to-end matrix is :math:`W_1W_2 = \mathfrak A Z + \mathfrak B Q + \mathfrak C QZ^\top Q` and

.. math:: L = \tfrac1h(\mathfrak A^2 + B^2 + \mathfrak C^2)
              + \tfrac2{h^2}\big[\mathfrak A\mathfrak C\,\mathrm{tr}\,U^2 + (\mathfrak A + \mathfrak C)B\,\mathrm{tr}\,U\big],
   \qquad B = \mathfrak B - \sqrt h,

step 1: :math:`(\mathfrak A, \mathfrak B, \mathfrak C) = (1, c_1 + c_2, c_1c_2)`; step 2 (general schedule):
:math:`\mathfrak A = 1 + d_2c_1 + d_1c_2 + d_1d_2c_1c_2`,
:math:`\mathfrak B = c_1 + c_2 + d_2(1 + c_1^2) + d_1(1 + c_2^2) + d_1d_2(c_1 + c_2)`,
:math:`\mathfrak C = c_1c_2 + d_2c_1 + d_1c_2 + d_1d_2`.  :math:`U` is Haar, so :math:`E\,\mathrm{tr}\,U = 0`,
:math:`E\,\mathrm{tr}\,U^2 = 1`.  With :math:`p = \eta_1 + \eta_2`, :math:`q = \eta_1\eta_2` and constant rates
this gives the paper's Thm 5.3 (section 2.3):

.. math:: L^1 = (p/h^2 - 1)^2 + 1/h + q^2/h^7 + 2q/h^5,

.. math:: L^2 = \tfrac1h(1 + q/h^3)^4 + 16q^2/h^7 + (2p(q + h^3)/h^5 - 1)^2 + 8q(1 + q/h^3)^2/h^5.

*Three layers* (section 2.6): with :math:`k_\ell = \eta_\ell/\sqrt h`, :math:`l_\ell = \eta'_\ell/\sqrt h`,
:math:`\alpha = \|a\|^2`, :math:`\gamma = \|\beta\|^2`, :math:`v = W_1W_2a`, :math:`s = v^\top\beta`
(:math:`E s = 0`, :math:`E s^2 = \alpha\gamma/h`): step 1 :math:`m = \alpha(k_1 + k_2 + k_1k_2s)`,
:math:`L^1 = \alpha/h + \gamma(m/\sqrt h - 1)^2 + 2s(m/\sqrt h - 1)/\sqrt h`; step 2
:math:`c_v = 1 + l_2k_1\alpha\gamma`,
:math:`c_\beta = m + l_2\alpha(1 + k_1s + k_1^2\alpha\gamma) + l_1\alpha(1 + 2k_2s + k_2^2\alpha\gamma) + l_1l_2\alpha(s + m\gamma)`,
:math:`L^2 = c_v^2\alpha/h + \gamma(c_\beta/\sqrt h - 1)^2 + 2c_vs(c_\beta/\sqrt h - 1)/\sqrt h`.  Both are
quadratic in :math:`s`, so the expectation is exact; with :math:`\alpha = \gamma = 1` and constant rates it is
the paper's Thm 5.5 (section 2.5):

.. math:: L^1 = (p/h - 1)^2 + 1/h + q^2/h^4 + 2q/h^3,

.. math:: L^2 = (2p(h + q)/h^2 - 1)^2 + 1/h + 2q/h^2 + 10q/h^3 + q^2/h^3 + 37q^2/h^4 + 12q^3/h^5 + q^4/h^6.

The authors' released code drops the one-step interaction terms :math:`2q/h^5` and :math:`2q/h^3`
(``form="code"`` of :func:`closed_form_loss`); Monte Carlo of the identities rejects that form (section 2.3).

**Balance** (section 3.2): on the budget line :math:`\eta_1 + \eta_2 = p` the constant-rate loss depends on the
split only through :math:`q`, and with :math:`\eta_{1,2} = p/2 \pm t`,
:math:`d^2L/dt^2|_{t=0} = -2\,\partial L/\partial q|_{q = p^2/4}` (:func:`equal_split_curvature`): the equal
split is a local minimum iff this is positive.  One step: never (section 3.3).  Two steps: inside a budget
window :math:`p = 2h^\alpha`, :math:`\alpha \in` :func:`balance_window` (section 3.4).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np
from scipy import optimize

from torch_layerlr.theory.scalar_chain import _arr

__all__ = ["expected_loss", "realisation_loss", "surrogate_coefficients", "gd_one_step_loss",
           "closed_form_loss", "loss_q_derivative", "equal_split_curvature", "optimal_split", "balance_window",
           "best_two_step_schedule", "Split", "Window", "TwoStepSchedule", "NETS"]

NETS = (2, 3)


class Split(NamedTuple):
    """A split of a per-step budget between the two trained layers (``eta1 <= eta2``) and its loss."""

    eta1: Any
    eta2: Any
    loss: Any


class Window(NamedTuple):
    r"""Budget exponents :math:`\alpha` (budget :math:`2h^\alpha`) between which the equal split is a two-step
    local minimum: ``(nan, nan)`` if there is none."""

    alpha_lo: Any
    alpha_hi: Any


class TwoStepSchedule(NamedTuple):
    """Per-step rate pairs ``[(eta1, eta2), (eta1_, eta2_)]`` and their expected two-step loss."""

    rates: list
    loss: float


# ---- argument handling ----------------------------------------------------------------------------------
def _out(x: Any) -> Any:
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


def _width(h: Any) -> np.ndarray:
    h = _arr("h", h)
    if (h <= 0).any() or not np.isfinite(h).all():
        raise ValueError(f"h must be positive and finite, got {h!r}")
    return h


def _net(layers: Any) -> int:
    if layers not in NETS or isinstance(layers, bool):
        raise ValueError(f"layers must be 2 (the 1/h two-layer net) or 3 (the 1/sqrt(h) net with a fixed a), "
                         f"got {layers!r}")
    return int(layers)


def _steps(steps: Any) -> int:
    if steps not in (1, 2) or isinstance(steps, bool):
        raise ValueError(f"steps must be 1 or 2, got {steps!r}")
    return int(steps)


def _rates(rates: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    try:
        pairs = list(rates)
    except TypeError as exc:
        raise ValueError(f"rates must be a list of per-step pairs (eta1, eta2), got {rates!r}") from exc
    if len(pairs) > 2:
        raise ValueError(f"rates has {len(pairs)} steps; the closed forms cover at most two")
    out = []
    for i, pair in enumerate(pairs):
        try:
            e1, e2 = pair
        except (TypeError, ValueError) as exc:
            raise ValueError(f"rates[{i}] must be a pair (eta1, eta2), got {pair!r}") from exc
        out.append((_arr(f"rates[{i}][0]", e1), _arr(f"rates[{i}][1]", e2)))
    return out


# ---- two layers: coefficients and per-realisation loss (section 2.4) ----------------------------------------
def surrogate_coefficients(rates: Sequence, h: Any) -> tuple[Any, Any, Any]:
    r"""Two-layer :math:`(\mathfrak A, \mathfrak B, \mathfrak C)` with :math:`W_1W_2 = \mathfrak AZ + \mathfrak BQ +
    \mathfrak C\,QZ^\top Q` after ``len(rates)`` (0, 1 or 2) surrogate steps (section 2.4)."""
    pairs = _rates(rates)
    s = _width(h) ** 1.5
    if not pairs:
        one = np.ones_like(s)
        return _out(one), _out(0.0 * s), _out(0.0 * s)
    c1, c2 = pairs[0][0] / s, pairs[0][1] / s
    if len(pairs) == 1:
        return _out(np.ones_like(c1 + c2)), _out(c1 + c2), _out(c1 * c2)
    d1, d2 = pairs[1][0] / s, pairs[1][1] / s
    A = 1 + d2 * c1 + d1 * c2 + d1 * d2 * c1 * c2
    B = (c1 + c2) + d2 * (1 + c1 * c1) + d1 * (1 + c2 * c2) + d1 * d2 * (c1 + c2)
    C = c1 * c2 + d2 * c1 + d1 * c2 + d1 * d2
    return _out(A), _out(B), _out(C)


def _two_layer_loss(A: Any, B: Any, C: Any, h: np.ndarray, tr_u: Any, tr_u2: Any) -> np.ndarray:
    b = np.asarray(B) - np.sqrt(h)
    return (A * A + b * b + C * C) / h + 2.0 / (h * h) * (A * C * tr_u2 + (A + C) * b * tr_u)


# ---- three layers (section 2.6) ---------------------------------------------------------------------------
def _three_layer_loss(pairs: list, h: np.ndarray, s: Any, a_sq: Any, beta_sq: Any) -> np.ndarray:
    al, ga = _arr("a_sq", a_sq), _arr("beta_sq", beta_sq)
    s = _arr("s", s)
    r = np.sqrt(h)
    if not pairs:
        c_v, c_b = np.ones_like(s), np.zeros_like(s)
    else:
        k1, k2 = pairs[0][0] / r, pairs[0][1] / r
        m = al * (k1 + k2 + k1 * k2 * s)
        if len(pairs) == 1:
            c_v, c_b = np.ones_like(m), m
        else:
            l1, l2 = pairs[1][0] / r, pairs[1][1] / r
            c_v = 1 + l2 * k1 * al * ga
            c_b = (m + l2 * al * (1 + k1 * s + k1 * k1 * al * ga) + l1 * al * (1 + 2 * k2 * s + k2 * k2 * al * ga)
                   + l1 * l2 * al * (s + m * ga))
    e = c_b / r - 1
    return c_v * c_v * al / h + ga * e * e + 2 * c_v * s * e / r


def realisation_loss(rates: Sequence, h: Any, layers: int = 2, *, tr_u: Any = None, tr_u2: Any = None,
                     s: Any = None, a_sq: Any = 1.0, beta_sq: Any = 1.0) -> Any:
    r"""Population test loss of one initialisation after ``len(rates)`` (0, 1 or 2) surrogate steps
    (section 2.4 / 2.6): for ``layers=2`` a function of :math:`\mathrm{tr}\,U` and :math:`\mathrm{tr}\,U^2`
    (``tr_u``, ``tr_u2``) with :math:`U = (W_1W_2)^\top\sqrt h\beta`; for ``layers=3`` of
    :math:`s = (W_1W_2a)^\top\beta` and the squared norms ``a_sq`` :math:`= \|a\|^2`, ``beta_sq``
    :math:`= \|\beta\|^2`.  Vectorized over every argument."""
    layers = _net(layers)
    h = _width(h)
    if layers == 2:
        if tr_u is None or tr_u2 is None:
            raise ValueError("layers=2 needs tr_u and tr_u2")
        A, B, C = surrogate_coefficients(rates, h)
        return _out(_two_layer_loss(A, B, C, h, _arr("tr_u", tr_u), _arr("tr_u2", tr_u2)))
    if s is None:
        raise ValueError("layers=3 needs s")
    return _out(_three_layer_loss(_rates(rates), h, s, a_sq, beta_sq))


def gd_one_step_loss(rate: Sequence, h: Any, layers: int = 2, *, tr_u: Any = None, tr_u2: Any = None,
                     s: Any = None, a_sq: Any = 1.0, beta_sq: Any = 1.0) -> Any:
    r"""Population test loss of one initialisation after one step of *exact* gradient descent with rates
    ``rate = (eta1, eta2)`` (section 2.4 / 2.6).  Two layers: the surrogate form with
    :math:`(\mathfrak A, \mathfrak B, \mathfrak C) = ((1 - \eta_1/h^2)(1 - \eta_2/h^2),
    c_1(1 - \eta_2/h^2) + c_2(1 - \eta_1/h^2), c_1c_2)` (at initialisation :math:`W_\ell W_\ell^\top = I`, so the
    self-interaction only rescales the weights).  Three layers: the residual rescales,
    :math:`L = (1 - \mu)^2L^0` with :math:`L^0 = \gamma + \alpha/h - 2s/\sqrt h` and
    :math:`\mu = \alpha[p/h + (q/h^{3/2})(s - \alpha/\sqrt h)]`."""
    layers = _net(layers)
    h = _width(h)
    (e1, e2), = _rates([rate])
    if layers == 2:
        c = h ** 1.5
        r1, r2 = 1 - e1 / (h * h), 1 - e2 / (h * h)
        A, B, C = r1 * r2, e1 / c * r2 + e2 / c * r1, e1 * e2 / (c * c)
        return _out(_two_layer_loss(A, B, C, h, _arr("tr_u", tr_u), _arr("tr_u2", tr_u2)))
    al, ga, s = _arr("a_sq", a_sq), _arr("beta_sq", beta_sq), _arr("s", s)
    r = np.sqrt(h)
    loss0 = ga + al / h - 2 * s / r
    mu = al * ((e1 + e2) / h + e1 * e2 / (h * r) * (s - al / r))
    return _out((1 - mu) ** 2 * loss0)


def expected_loss(rates: Sequence, h: Any, layers: int = 2) -> Any:
    r"""Exact expected population test loss after ``len(rates)`` surrogate steps (0, 1 or 2) with per-step,
    per-layer rates ``rates = [(eta1, eta2), (eta1_, eta2_)]`` (any schedule), over the Haar initialisation.

    ``layers=2``: :math:`E L = \frac1h(\mathfrak A^2 + B^2 + \mathfrak C^2) + \frac2{h^2}\mathfrak A\mathfrak C`
    (section 2.4 with :math:`E\,\mathrm{tr}\,U = 0`, :math:`E\,\mathrm{tr}\,U^2 = 1`); ``layers=3`` (unit-norm
    :math:`a` and :math:`\beta`): the section 2.6 loss is quadratic in :math:`s`, so
    :math:`E L = \frac12[L(s = h^{-1/2}) + L(s = -h^{-1/2})]` exactly.  For constant rates these are the paper's
    Thm 5.3 / 5.5 (:func:`closed_form_loss`, the module docstring), with the one-step interaction terms.
    Vectorized over the rates and ``h``."""
    layers = _net(layers)
    h = _width(h)
    if layers == 2:
        return realisation_loss(rates, h, 2, tr_u=0.0, tr_u2=1.0)
    sigma = 1.0 / np.sqrt(h)
    pairs = _rates(rates)
    return _out(0.5 * (_three_layer_loss(pairs, h, sigma, 1.0, 1.0) + _three_layer_loss(pairs, h, -sigma, 1.0, 1.0)))


# ---- constant rates on a budget line: closed forms in (p, q) ------------------------------------------------
def closed_form_loss(p: Any, q: Any, h: Any, steps: int, layers: int = 2, form: str = "paper") -> Any:
    r"""The paper's closed forms for *constant* rates (the same pair at both steps), in
    :math:`p = \eta_1 + \eta_2`, :math:`q = \eta_1\eta_2` (section 2.3, Thm 5.3; section 2.5, Thm 5.5).
    ``form="code"`` is the authors' released code, which drops the one-step interaction term
    (:math:`2q/h^5`, resp. :math:`2q/h^3`); at two steps both forms agree."""
    layers, steps = _net(layers), _steps(steps)
    if form not in ("paper", "code"):
        raise ValueError(f"form must be 'paper' or 'code', got {form!r}")
    p, q, h = _arr("p", p), _arr("q", q), _width(h)
    if layers == 2:
        if steps == 1:
            out = (p / h ** 2 - 1) ** 2 + 1 / h + q ** 2 / h ** 7
            return _out(out + (2 * q / h ** 5 if form == "paper" else 0.0))
        g = 1 + q / h ** 3
        return _out(g ** 4 / h + 16 * q ** 2 / h ** 7 + (2 * p * (q + h ** 3) / h ** 5 - 1) ** 2
                    + 8 * q * g ** 2 / h ** 5)
    if steps == 1:
        out = (p / h - 1) ** 2 + 1 / h + q ** 2 / h ** 4
        return _out(out + (2 * q / h ** 3 if form == "paper" else 0.0))
    return _out((2 * p * (h + q) / h ** 2 - 1) ** 2 + 1 / h + 2 * q / h ** 2 + 10 * q / h ** 3 + q ** 2 / h ** 3
                + 37 * q ** 2 / h ** 4 + 12 * q ** 3 / h ** 5 + q ** 4 / h ** 6)


def loss_q_derivative(p: Any, q: Any, h: Any, steps: int, layers: int = 2) -> Any:
    r""":math:`\partial L/\partial q` of :func:`closed_form_loss` (paper form) at fixed :math:`p`:

    * 2 layers, step 1: :math:`2q/h^7 + 2/h^5`; step 2:
      :math:`\frac4{h^4}g^3 + \frac{32q}{h^7} + \frac{4p}{h^5}\big(\frac{2p(q + h^3)}{h^5} - 1\big) + \frac{8g^2}{h^5}
      + \frac{16qg}{h^8}`, :math:`g = 1 + q/h^3` (section 3.4);
    * 3 layers, step 1: :math:`2q/h^4 + 2/h^3`; step 2:
      :math:`\frac{4p}{h^2}\big(\frac{2p(h + q)}{h^2} - 1\big) + \frac2{h^2} + \frac{10}{h^3} + \frac{2q}{h^3}
      + \frac{74q}{h^4} + \frac{36q^2}{h^5} + \frac{4q^3}{h^6}`."""
    layers, steps = _net(layers), _steps(steps)
    p, q, h = _arr("p", p), _arr("q", q), _width(h)
    if layers == 2:
        if steps == 1:
            return _out(2 * q / h ** 7 + 2 / h ** 5)
        g = 1 + q / h ** 3
        return _out(4 * g ** 3 / h ** 4 + 32 * q / h ** 7 + 4 * p / h ** 5 * (2 * p * (q + h ** 3) / h ** 5 - 1)
                    + 8 * g ** 2 / h ** 5 + 16 * q * g / h ** 8)
    if steps == 1:
        return _out(2 * q / h ** 4 + 2 / h ** 3)
    return _out(4 * p / h ** 2 * (2 * p * (h + q) / h ** 2 - 1) + 2 / h ** 2 + 10 / h ** 3 + 2 * q / h ** 3
                + 74 * q / h ** 4 + 36 * q ** 2 / h ** 5 + 4 * q ** 3 / h ** 6)


def equal_split_curvature(budget: Any, h: Any, steps: int, layers: int = 2) -> Any:
    r"""Curvature of the constant-rate loss along the budget line at the equal split,
    :math:`d^2L/dt^2|_{t=0} = -2\,\partial L/\partial q|_{q = p^2/4}` with :math:`\eta_{1,2} = p/2 \pm t`,
    ``p = budget`` (section 3.2).  Positive: the equal split is a local minimum; negative: a local maximum."""
    p = _arr("budget", budget)
    if (p < 0).any():
        raise ValueError(f"budget must be non-negative, got {budget!r}")
    return _out(-2.0 * np.asarray(loss_q_derivative(p, p * p / 4, h, steps, layers)))


def _optimal_split_scalar(p: float, h: float, steps: int, layers: int) -> tuple[float, float, float]:
    qmax = p * p / 4
    candidates = [0.0, qmax]
    if qmax > 0:
        x = np.linspace(0.0, qmax, 257)
        d = np.asarray(loss_q_derivative(p, x, h, steps, layers))
        for i in np.flatnonzero(np.sign(d[:-1]) * np.sign(d[1:]) < 0):
            candidates.append(optimize.brentq(lambda z: float(loss_q_derivative(p, z, h, steps, layers)),
                                              x[i], x[i + 1], xtol=1e-15 * qmax, rtol=4 * np.finfo(float).eps))
        candidates += [float(v) for v in x[1:-1][d[1:-1] == 0]]
    losses = [float(closed_form_loss(p, c, h, steps, layers)) for c in candidates]
    q = candidates[int(np.argmin(losses))]
    root = math.sqrt(max(p * p - 4 * q, 0.0))
    eta1 = 0.0 if q == 0.0 else 2 * q / (p + root)  # the smaller root, without cancellation
    return eta1, p - eta1, min(losses)


def optimal_split(budget: Any, h: Any, steps: int, layers: int = 2) -> Split:
    r"""The constant-rate pair on the budget line :math:`\eta_1 + \eta_2 =` ``budget`` (the same pair at every step,
    as in the paper's figures) that minimises the expected loss after ``steps`` steps: the minimum of the
    polynomial :func:`closed_form_loss` over :math:`q \in [0, p^2/4]` (end points and the roots of
    :func:`loss_q_derivative`).  Returns ``Split(eta1, eta2, loss)`` with ``eta1 <= eta2`` (the loss is symmetric
    in the layers).  One step: always ``(0, budget)``, i.e. train one layer only (section 3.3)."""
    layers, steps = _net(layers), _steps(steps)
    p, h = np.broadcast_arrays(_arr("budget", budget), _width(h))
    if (p < 0).any():
        raise ValueError(f"budget must be non-negative, got {budget!r}")
    out = np.array([_optimal_split_scalar(float(a), float(b), steps, layers) for a, b in zip(p.ravel(), h.ravel())])
    out = out.reshape(p.shape + (3,)) if out.size else np.zeros(p.shape + (3,))
    return Split(_out(out[..., 0]), _out(out[..., 1]), _out(out[..., 2]))


def _window_scalar(h: float, layers: int) -> tuple[float, float]:
    def f(a: float) -> float:
        return float(equal_split_curvature(2 * h ** a, h, 2, layers))

    grid = np.arange(-2.0, 3.0 + 1e-12, 0.01)
    vals = np.array([f(a) for a in grid])
    pos = vals > 0
    if not pos.any():
        return math.nan, math.nan
    i, j = int(np.argmax(pos)), len(pos) - 1 - int(np.argmax(pos[::-1]))
    if i == 0 or j == len(grid) - 1:
        raise RuntimeError(f"balance window of h = {h} reaches the scan's edge")
    lo = optimize.brentq(f, grid[i - 1], grid[i], xtol=1e-14)
    hi = optimize.brentq(f, grid[j], grid[j + 1], xtol=1e-14)
    return lo, hi


def balance_window(h: Any, layers: int = 2) -> Window:
    r"""The budget exponents :math:`(\alpha_{lo}, \alpha_{hi})` with budget :math:`\eta_1 + \eta_2 = 2h^\alpha`
    between which the equal split is a two-step local minimum (:func:`equal_split_curvature` > 0), section 3.4:
    e.g. :math:`h = 1000` gives about (0.901, 1.549) for two layers and (-0.200, 0.586) for three; the windows
    tend to (1, 5/3) and (0, 2/3) as :math:`h \to \infty`.  The curvature's numerator has one negative term, so
    (Descartes) at most two sign changes: the window is one interval.  ``(nan, nan)`` if there is none."""
    layers = _net(layers)
    h = _width(h)
    out = np.array([_window_scalar(float(x), layers) for x in h.ravel()]).reshape(h.shape + (2,))
    return Window(_out(out[..., 0]), _out(out[..., 1]))


def best_two_step_schedule(budget: float, h: float, layers: int = 2, grid: int = 201) -> TwoStepSchedule:
    r"""The best pair of per-step splits ``[(eta1, budget - eta1), (eta1_, budget - eta1_)]`` with rates in
    ``[0, budget]``, minimising :func:`expected_loss` after two steps (the general-schedule formula).  A
    ``grid`` x ``grid`` scan of both splits, then a bounded quasi-Newton polish of the best grid points.  Of
    the two mirror-image optima (swap the layers at both steps) the one with ``eta1 <= eta2`` at step 1 is
    returned."""
    layers = _net(layers)
    P = float(_arr("budget", budget))
    h = float(_width(h))
    if P <= 0:
        raise ValueError(f"budget must be positive, got {budget!r}")

    def loss(u: Any, v: Any) -> Any:
        return expected_loss([(u * P, (1 - u) * P), (v * P, (1 - v) * P)], h, layers)

    f = np.linspace(0.0, 1.0, grid)
    values = np.asarray(loss(f[:, None], f[None, :]))
    order = np.argsort(values, axis=None)[:8]
    best = (math.inf, 0.0, 0.0)
    for idx in order:
        i, j = np.unravel_index(idx, values.shape)
        res = optimize.minimize(lambda z: float(loss(z[0], z[1])), x0=[f[i], f[j]], method="L-BFGS-B",
                                bounds=[(0.0, 1.0), (0.0, 1.0)], options=dict(ftol=1e-16, gtol=1e-14, maxiter=500))
        for cand in ((float(res.fun), *map(float, res.x)), (float(values[i, j]), float(f[i]), float(f[j]))):
            if cand[0] < best[0]:
                best = cand
    value, u, v = best
    if u > 0.5:  # the mirror image: swap the layers at both steps
        u, v = 1.0 - u, 1.0 - v
    return TwoStepSchedule([(u * P, (1 - u) * P), (v * P, (1 - v) * P)], value)
