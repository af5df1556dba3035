r"""Closed forms for deep scalar linear networks and scalar residual networks.

Source: Zhang, Latham, Vankadara, Saxe, "Optimal learning rate scaling depends on data in deep scalar
linear networks" (the seed text in ``shared/seeds/002_*``; equation numbers below are the paper's).

Setting.  Data moments :math:`\mu_{xx}=\frac1N\sum x_n^2`, :math:`\mu_{yx}=\frac1N\sum y_nx_n`, their ratio
:math:`r=\mu_{yx}/\mu_{xx}` (the target coefficient), and the loss with the **½ convention**

.. math:: \mathcal L = \frac{1}{2N}\sum_n (y_n - f(x_n))^2 .

Three architectures, each with ``depth`` = L scalar weights (eq. 1 and eq. 11):

* ``"chain"``: :math:`f = \prod_l w_l\,x`;
* ``"res1"`` (residual, block depth one): :math:`f = \prod_l (1 + w_l/\sqrt L)\,x`;
* ``"res2"`` (residual, block depth two): :math:`f = \prod_l (1 + w_l^2/L)\,x`.

With this convention the sharpness S at the balanced global minimum is the top eigenvalue of the loss
Hessian there, gradient descent with step :math:`\eta` is linearly stable iff :math:`\eta < 2/S`, and the
paper's learning-rate rule is :math:`\eta = 1/(\tau S)` (eq. 5, 28, 34): stable for :math:`\tau > 1/2`,
one-step optimal at :math:`\tau = 1`, and a gradient-flow approximation for :math:`\tau \gg 1`, in which
one GD step is one unit of time :math:`t`.

Under that rule and balanced initialisation, the chain's relative total weight
:math:`\alpha = w^L/r` obeys :math:`\tau\dot\alpha = \alpha^{2-2/L}(1-\alpha)` (eq. 6), independent of the
data; :func:`time_to_reach`, :func:`alpha_at` and :func:`plateau_duration` solve it.

Every function takes NumPy-broadcastable arguments, computes in float64, and returns a NumPy scalar for
scalar arguments and an array otherwise.  ``depth`` is a positive integer or ``math.inf``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

__all__ = ["ARCHS", "sharpness", "max_stable_lr", "agnostic_lr", "time_to_reach", "alpha_at",
           "plateau_duration", "balanced_weight", "coefficient"]

ARCHS = ("chain", "res1", "res2")

#: the largest float64 below 1: :func:`alpha_at` never returns 1 (the flow only reaches it as t -> inf)
_BELOW_ONE = float(np.nextafter(1.0, 0.0))


# ---- argument handling ----------------------------------------------------------------------------------
def _arr(name: str, value: Any) -> np.ndarray:
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number or an array of numbers, got {value!r}") from exc
    if np.isnan(out).any():
        raise ValueError(f"{name} must not be NaN")
    return out


def _out(x: np.ndarray) -> Any:
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


def _depth(depth: Any, *, low: int = 1) -> np.ndarray:
    L = _arr("depth", depth)
    finite = np.isfinite(L)
    if (L < low).any() or (finite & (L != np.round(L))).any():
        raise ValueError(f"depth must be an integer >= {low} or math.inf, got {depth!r}")
    return L


def _positive(name: str, value: Any) -> np.ndarray:
    x = _arr(name, value)
    if (x <= 0).any() or np.isinf(x).any():
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return x


def _arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    return arch


def _ratio(mu_xx: Any, mu_yx: Any, arch: str) -> tuple[np.ndarray, np.ndarray]:
    mxx = _positive("mu_xx", mu_xx)
    myx = _arr("mu_yx", mu_yx)
    r = myx / mxx
    if arch == "res2":
        if (r <= 1).any():
            raise ValueError(
                f"arch='res2' needs mu_yx/mu_xx > 1, got {_out(r)!r}: its layers 1 + w^2/L are >= 1, so the "
                "balanced minimum (1 + w^2/L)^L = mu_yx/mu_xx has a real solution with nonzero sharpness "
                "only for a ratio above 1")
    elif (r <= 0).any() or np.isinf(r).any():
        raise ValueError(f"mu_yx/mu_xx must be positive and finite (the target reached with positive layers), "
                         f"got {_out(r)!r}")
    return mxx, r


def _alpha(name: str, value: Any, *, allow_one: bool = False) -> np.ndarray:
    a = _arr(name, value)
    bad = (a <= 0) | ((a > 1) if allow_one else (a >= 1))
    if bad.any():
        interval = "(0, 1]" if allow_one else "(0, 1)"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return a


# ---- sharpness and learning rates ----------------------------------------------------------------------
def sharpness(depth: Any, mu_xx: Any, mu_yx: Any, arch: str = "chain") -> Any:
    r"""Sharpness S of the loss at the balanced global minimum: the top Hessian eigenvalue there.

    * ``"chain"``, eq. 13: :math:`S = \mu_{xx} L\, r^{2-2/L}`;
    * ``"res1"``, eq. 27: :math:`S = \mu_{xx}\, r^{2-2/L}`;
    * ``"res2"``, eq. 33: :math:`S = 4\mu_{xx}\, r^{2-2/L}\,(r^{1/L} - 1)` (needs r > 1).

    ``depth=math.inf`` gives the limits: inf, :math:`\mu_{xx}r^2` and 0.
    """
    arch = _arch(arch)
    L = _depth(depth)
    mxx, r = _ratio(mu_xx, mu_yx, arch)
    L, mxx, r = np.broadcast_arrays(L, mxx, r)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        power = r ** (2.0 - 2.0 / L)
        if arch == "chain":
            s = mxx * L * power
        elif arch == "res1":
            s = mxx * power
        else:  # r^(1/L) - 1 through expm1: exact to the last bits at large L
            s = 4.0 * mxx * power * np.expm1(np.log(r) / L)
    return _out(np.asarray(s, dtype=np.float64))


def max_stable_lr(depth: Any, mu_xx: Any, mu_yx: Any, tau: Any = 1.0, arch: str = "chain") -> Any:
    r"""The learning-rate rule :math:`\eta = 1/(\tau S)`: eq. 5 (chain), eq. 28 (res1), eq. 34 (res2).

    .. math::
        \eta_{\rm chain} = \frac{\tau^{-1}}{\mu_{xx}L}\,r^{-2+2/L},\quad
        \eta_{\rm res1} = \frac{\tau^{-1}}{\mu_{xx}}\,r^{-2+2/L},\quad
        \eta_{\rm res2} = \frac{\tau^{-1}}{4\mu_{xx}}\,r^{-2+2/L}\,(r^{1/L}-1)^{-1}.

    Gradient descent at the balanced minimum is stable iff :math:`\tau > 1/2` (``tau=0.5`` is the edge
    :math:`2/S`); ``tau=1`` is the one-step-optimal step.
    """
    t = _positive("tau", tau)
    s = np.asarray(sharpness(depth, mu_xx, mu_yx, arch))
    with np.errstate(divide="ignore"):
        return _out(np.asarray(1.0 / (t * s), dtype=np.float64))


def agnostic_lr(depth: Any, mu_xx: Any, mu_yx: Any, tau: Any = 1.0, arch: str = "chain",
                calibration_depth: int = 2) -> Any:
    r"""The data-agnostic power-law rule of Fig. 2, calibrated to :func:`max_stable_lr` at one depth.

    :math:`\eta \propto L^{-1}` (chain), :math:`\propto 1` (res1), :math:`\propto L` (res2, from the large-L
    form eq. 35), equal to :func:`max_stable_lr` at ``depth == calibration_depth``.
    """
    arch = _arch(arch)
    L = _depth(depth)
    L0 = float(_depth(calibration_depth))
    base = np.asarray(max_stable_lr(L0, mu_xx, mu_yx, tau, arch))
    power = {"chain": -1.0, "res1": 0.0, "res2": 1.0}[arch]
    return _out(np.asarray(base * (L / L0) ** power, dtype=np.float64))


# ---- the chain's time course (eq. 6-10, 19) ------------------------------------------------------------
def _antiderivative(alpha: np.ndarray, L: np.ndarray, one_minus: Any = None) -> np.ndarray:
    r""":math:`F(\alpha) = \int^\alpha a^{2/L-2}(1-a)^{-1}\,da`, so that :math:`t = \tau F|_{\alpha_0}^{\alpha}`.

    ``one_minus`` is :math:`1-\alpha` where the caller has it more accurately than ``1 - alpha``.
    """
    if one_minus is None:
        one_minus = 1.0 - np.asarray(alpha, dtype=np.float64)
    alpha, L, om = np.broadcast_arrays(alpha, L, one_minus)
    out = np.empty(alpha.shape, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        one, two, inf = L == 1, L == 2, np.isinf(L)
        # depth 1: t/tau = -ln(1 - alpha)
        out[one] = -np.log(om[one])
        # depth 2: t/tau = ln(alpha / (1 - alpha))
        out[two] = np.log(alpha[two]) - np.log(om[two])
        # infinite depth, eq. 19: t/tau = -1/alpha - ln(1/alpha - 1)
        a = alpha[inf]
        out[inf] = -1.0 / a - (np.log(om[inf]) - np.log(a))
        # any other depth, eq. 7: t/tau = alpha^b / b * 2F1(1, b; b + 1; alpha), b = 2/L - 1
        rest = ~(one | two | inf)
        far = rest & (om >= 0.1)
        a, b = alpha[far], 2.0 / L[far] - 1.0
        out[far] = a ** b / b * special.hyp2f1(1.0, b, b + 1.0, a)
        near = rest & (om < 0.1)
        out[near] = _antiderivative_near_one(alpha[near], om[near], 2.0 / L[near] - 1.0)
    out[om == 0.0] = np.inf
    return out


def _antiderivative_near_one(alpha: np.ndarray, om: np.ndarray, b: np.ndarray, terms: int = 40) -> np.ndarray:
    r"""Eq. 7's :math:`\frac{\alpha^b}{b}{}_2F_1(1,b;b+1;\alpha)` for :math:`1-\alpha < 0.1`, from the logarithmic
    connection formula (Abramowitz & Stegun 15.3.10 with a = 1, c = a + b):

    .. math:: \alpha^b\sum_{n\ge0}\frac{(b)_n}{n!}\big[\psi(n+1)-\psi(b+n)-\ln(1-\alpha)\big](1-\alpha)^n,

    accurate up to :math:`\alpha` one ulp below 1, where SciPy's ``hyp2f1`` loses digits and then fails."""
    log_om = np.log(om)
    coef = np.ones_like(b)  # (b)_n / n!
    digamma = special.digamma(1.0) - special.digamma(b)  # psi(n + 1) - psi(b + n)
    power = np.ones_like(om)
    total = np.zeros_like(om)
    for n in range(terms):
        total += coef * (digamma - log_om) * power
        coef = coef * (b + n) / (n + 1)
        digamma = digamma + 1.0 / (n + 1) - 1.0 / (b + n)
        power = power * om
    return alpha ** b * total


def time_to_reach(alpha: Any, alpha0: Any, depth: Any, tau: Any = 1.0) -> Any:
    r"""Time for the chain's relative total weight to go from ``alpha0`` to ``alpha`` (eq. 7).

    .. math::
        t = \tau\,\frac{\alpha^{2/L-1}}{2/L-1}\,{}_2F_1\!\left(1, \tfrac2L-1; \tfrac2L; \alpha\right)
        \Big|_{\alpha(0)}^{\alpha(t)}

    with its elementary forms :math:`t = -\tau\ln(1-\alpha)|` for L = 1,
    :math:`t = \tau\ln\frac{\alpha}{1-\alpha}|` for L = 2 and, for ``depth=math.inf``, eq. 19:
    :math:`t = \tau\,(-\frac1\alpha - \ln(\frac1\alpha - 1))|`.  Time is in GD steps of the rule
    :func:`max_stable_lr` with this ``tau`` (accurate for large ``tau``).  ``alpha`` may be 1 (time inf);
    ``alpha < alpha0`` gives the (negative) time backwards.
    """
    a = _alpha("alpha", alpha, allow_one=True)
    a0 = _alpha("alpha0", alpha0)
    L = _depth(depth)
    t = _positive("tau", tau)
    return _out(np.asarray(t * (_antiderivative(a, L) - _antiderivative(a0, L)), dtype=np.float64))


def alpha_at(t: Any, alpha0: Any, depth: Any, tau: Any = 1.0) -> Any:
    r"""The chain's relative total weight :math:`\alpha(t)` from :math:`\alpha(0)=` ``alpha0``: the inverse of
    :func:`time_to_reach`.

    * L = 1: :math:`\alpha = 1 - (1-\alpha_0)e^{-t/\tau}`;
    * L = 2: :math:`\alpha = \sigma\!\left(t/\tau + \ln\frac{\alpha_0}{1-\alpha_0}\right)` (logistic);
    * ``math.inf``, eq. 9: :math:`\alpha = 1/(1 + W_0(e^{\beta}))`,
      :math:`\beta = -t/\tau + 1/\alpha_0 + \ln(1/\alpha_0 - 1) - 1`, computed as Wright's omega
      :math:`\omega(\beta) = W_0(e^\beta)` so that :math:`e^\beta` never overflows;
    * other depths: safeguarded Newton on :math:`s = \operatorname{logit}\alpha` inside the bracket
      :math:`s_0 + t'\alpha_0^{1-2/L} \le s \le s_0 + t'` (:math:`t' = t/\tau`; both follow from
      :math:`ds/dt' = \alpha^{1-2/L}`), falling back to bisection; converges to a few ulp.

    The result is nondecreasing in ``t`` and lies in ``[alpha0, 1)`` (``alpha0`` at t = 0; values that round
    to 1 are returned as the largest float below 1).  ``t`` must be >= 0 and ``alpha0`` in (0, 1).
    """
    tt = _arr("t", t)
    if (tt < 0).any():
        raise ValueError(f"t must be >= 0, got {t!r}")
    a0 = _alpha("alpha0", alpha0)
    L = _depth(depth)
    tau_ = _positive("tau", tau)
    tt, a0, L, tau_ = np.broadcast_arrays(tt, a0, L, tau_)
    x = tt / tau_  # t' = t / tau
    out = np.empty(x.shape, dtype=np.float64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        one, two, inf = L == 1, L == 2, np.isinf(L)
        out[one] = -np.expm1(np.log1p(-a0[one]) - x[one])
        out[two] = special.expit(special.logit(a0[two]) + x[two])
        b0 = a0[inf]
        beta = -x[inf] + 1.0 / b0 + np.log1p(-b0) - np.log(b0) - 1.0
        out[inf] = 1.0 / (1.0 + special.wrightomega(beta))
        rest = ~(one | two | inf)
        if rest.any():
            out[rest] = _invert_general(x[rest], a0[rest], L[rest])
    return _out(np.clip(out, a0, _BELOW_ONE))


def _invert_general(x: np.ndarray, a0: np.ndarray, L: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Solve F(alpha) - F(alpha0) = x for alpha, elementwise (depth not in {1, 2, inf})."""
    s0 = special.logit(a0)
    f0 = _antiderivative(a0, L)
    p = 1.0 - 2.0 / L  # ds/dt' = alpha^p
    lo = s0 + x * a0 ** p
    hi = s0 + x
    s = 0.5 * (lo + hi)
    active = np.ones(s.shape, dtype=bool)
    for _ in range(iterations):
        a = special.expit(s)
        g = _antiderivative(a, L, special.expit(-s)) - f0 - x  # increasing in s
        too_high = g > 0
        hi = np.where(too_high, s, hi)
        lo = np.where(too_high, lo, s)
        with np.errstate(invalid="ignore", over="ignore"):
            newton = s - g * a ** p
        inside = np.isfinite(newton) & (newton >= lo) & (newton <= hi)
        s_new = np.where(g == 0, s, np.where(inside, newton, 0.5 * (lo + hi)))
        s_new = np.where(active, s_new, s)
        active &= np.abs(s_new - s) > 4 * np.finfo(np.float64).eps * (1.0 + np.abs(s))
        s = s_new
        if not active.any():
            break
    return special.expit(s)


def plateau_duration(alpha0: Any, depth: Any, tau: Any = 1.0) -> Any:
    r"""Approximate length of the initial plateau from small :math:`\alpha(0)` (eq. 10).

    .. math::
        T = \tau\ln\frac{1}{\alpha(0)} \;(L = 2),\qquad
        T = \frac{\tau}{(1-\frac2L)\,\alpha(0)^{1-2/L}} \;(L \ge 3),

    and :math:`T = \tau/\alpha(0)` for ``depth=math.inf`` (the paper's bound).  It is the leading term, as
    :math:`\alpha(0)\to0`, of the time to reach :math:`\alpha = 1/2`.  Depth 1 has no plateau (0 is not a
    fixed point): ``ValueError``.
    """
    a0 = _alpha("alpha0", alpha0)
    L = _depth(depth, low=2)
    t = _positive("tau", tau)
    a0, L, t = np.broadcast_arrays(a0, L, t)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 1.0 - 2.0 / L
        T = np.where(L == 2, t * -np.log(a0), t / (p * a0 ** p))
    return _out(np.asarray(T, dtype=np.float64))


# ---- balanced initialisation -----------------------------------------------------------------------------
def coefficient(weight: Any, depth: Any, arch: str = "chain") -> Any:
    r"""The network's coefficient :math:`f(x)/x` when every layer holds ``weight`` (eq. 1, eq. 11)."""
    arch = _arch(arch)
    L = _depth(depth)
    w = _arr("weight", weight)
    w, L = np.broadcast_arrays(w, L)
    with np.errstate(over="ignore", invalid="ignore"):
        if arch == "chain":
            c = w ** L
        elif arch == "res1":
            c = np.exp(L * np.log1p(w / np.sqrt(L)))
        else:
            c = np.exp(L * np.log1p(w * w / L))
    return _out(np.asarray(c, dtype=np.float64))


def balanced_weight(coef: Any, depth: Any, arch: str = "chain") -> Any:
    r"""The per-layer weight ``w`` (the same in every layer, positive) whose network coefficient is ``coef``.

    Chain :math:`w = c^{1/L}`; res1 :math:`w = \sqrt L\,(c^{1/L}-1)`; res2 :math:`w = \sqrt{L(c^{1/L}-1)}`
    (needs c >= 1).  For the balanced minimum use ``coef = mu_yx / mu_xx``; for a start at relative total
    weight :math:`\alpha_0` use ``coef = alpha0 * mu_yx / mu_xx``.
    """
    arch = _arch(arch)
    L = _depth(depth)
    c = _arr("coef", coef)
    if (c <= 0).any():
        raise ValueError(f"coef must be positive, got {coef!r}")
    if arch == "res2" and (c < 1).any():
        raise ValueError(f"arch='res2' reaches only coefficients >= 1 (each layer is 1 + w^2/L), got {coef!r}")
    c, L = np.broadcast_arrays(c, L)
    g = np.expm1(np.log(c) / L)  # c^(1/L) - 1
    if arch == "chain":
        w = g + 1.0
    elif arch == "res1":
        w = np.sqrt(L) * g
    else:
        w = np.sqrt(L * g)
    return _out(np.asarray(w, dtype=np.float64))
