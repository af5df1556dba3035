"""torch_layerlr.theory against independent references: numerical quadrature and ODE integration of eq. 6,
scipy's Lambert W, autograd Hessians (float64), and the validation checks shared with ``validate``."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from torch_layerlr import theory as th
from torch_layerlr.models import DeepLinear
from torch_layerlr.validate import checks, sim

DEPTHS = [1, 2, 3, 5, 8, 32, 1000, math.inf]


def assert_check(records):
    failed = [r for r in records if not r["passed"]]
    assert not failed, "\n".join(f"{r['name']}: {r['measured']} {r['op']} {r['bound']} ({r['detail']})" for r in failed)


# ---- sharpness and learning rates -------------------------------------------------------------------------
def test_sharpness_matches_hessian_all_archs():
    """Eq. 13/27/33 = top autograd Hessian eigenvalue at the balanced minimum, depths {1,2,3,8,32}, <= 1e-8."""
    assert_check(checks.check_sharpness())


@pytest.mark.parametrize("arch", th.ARCHS)
def test_sharpness_hessian_direct(arch):
    """The same comparison written out here, on a model the test builds with plain torch ops."""
    L, mxx, r = 6, 0.8, 2.2
    w = torch.full((L,), float(th.balanced_weight(r, L, arch)), dtype=torch.float64)
    x, y = sim.scalar_data(mxx, mxx * r, seed=3)

    def loss(v):
        factors = {"chain": v, "res1": 1 + v / math.sqrt(L), "res2": 1 + v * v / L}[arch]
        return 0.5 * ((y - torch.prod(factors) * x) ** 2).mean()

    top = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, w))[-1].item()
    assert top == pytest.approx(float(th.sharpness(L, mxx, mxx * r, arch)), rel=1e-10)


def test_sharpness_vectorized_and_limits():
    depths = np.array([1, 2, 4, math.inf])
    s = th.sharpness(depths[:, None], 1.5, np.array([0.5, 3.0])[None, :])
    assert s.shape == (4, 2)
    assert np.isinf(s[-1]).all()
    assert th.sharpness(math.inf, 1.5, 3.0, "res1") == pytest.approx(1.5 * 2.0 ** 2)
    assert th.sharpness(math.inf, 1.5, 3.0, "res2") == 0.0
    assert isinstance(th.sharpness(3, 1.0, 2.0), np.floating)
    # eq. 35: res2 sharpness ~ (4/L) mu_xx r^2 ln r at large L
    L = 1e6
    assert th.sharpness(L, 1.5, 3.0, "res2") == pytest.approx(4 / L * 1.5 * 2.0 ** 2 * math.log(2.0), rel=1e-5)


def test_max_stable_lr_is_one_over_tau_s():
    for arch, r in (("chain", 0.4), ("res1", 2.0), ("res2", 3.0)):
        for L in (1, 3, 17):
            S = th.sharpness(L, 2.0, 2.0 * r, arch)
            assert th.max_stable_lr(L, 2.0, 2.0 * r, 0.7, arch) == pytest.approx(1 / (0.7 * S), rel=1e-14)
    # eq. 5 written out
    L, mxx, myx, tau = 5, 1.3, 0.6, 2.0
    assert th.max_stable_lr(L, mxx, myx, tau) == pytest.approx(1 / tau / (mxx * L) * (myx / mxx) ** (-2 + 2 / L))


def test_agnostic_lr_calibrated_at_depth_two():
    for arch, power in (("chain", -1), ("res1", 0), ("res2", 1)):
        base = th.max_stable_lr(2, 1.0, 2.0, 1.0, arch)
        assert th.agnostic_lr(2, 1.0, 2.0, 1.0, arch) == pytest.approx(base)
        assert th.agnostic_lr(16, 1.0, 2.0, 1.0, arch) == pytest.approx(base * 8.0 ** power)


@pytest.mark.parametrize("bad, match", [
    (lambda: th.sharpness(3, 1.0, 1.0, "res2"), "res2.*> 1"),
    (lambda: th.sharpness(3, 1.0, 0.5, "res2"), "res2.*> 1"),
    (lambda: th.max_stable_lr(3, 1.0, 0.9, arch="res2"), "res2.*> 1"),
    (lambda: th.sharpness(3, 1.0, -1.0), "positive"),
    (lambda: th.sharpness(0, 1.0, 1.0), "depth"),
    (lambda: th.sharpness(2.5, 1.0, 1.0), "depth"),
    (lambda: th.sharpness(3, 0.0, 1.0), "mu_xx"),
    (lambda: th.sharpness(3, 1.0, 1.0, "resnet"), "arch"),
    (lambda: th.max_stable_lr(3, 1.0, 1.0, tau=0.0), "tau"),
    (lambda: th.time_to_reach(1.2, 0.1, 3), "alpha"),
    (lambda: th.time_to_reach(0.5, 0.0, 3), "alpha0"),
    (lambda: th.alpha_at(-1.0, 0.1, 3), "t must"),
    (lambda: th.alpha_at(1.0, 1.0, 3), "alpha0"),
    (lambda: th.plateau_duration(0.01, 1), "depth"),
    (lambda: th.balanced_weight(0.5, 3, "res2"), "res2"),
])
def test_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_balanced_weight_round_trip():
    for arch in th.ARCHS:
        for L in (1, 2, 7, 64):
            c = np.array([1.3, 2.0, 5.0])
            assert np.allclose(th.coefficient(th.balanced_weight(c, L, arch), L, arch), c, rtol=1e-13)


# ---- time course ------------------------------------------------------------------------------------------
def _flow_rhs(L):
    p = 2.0 if math.isinf(L) else 2.0 - 2.0 / L
    return lambda t, a: a ** p * (1 - a)  # eq. 6 with tau = 1


@pytest.mark.parametrize("L", DEPTHS)
def test_time_to_reach_against_quadrature(L):
    p = 2.0 if math.isinf(L) else 2.0 - 2.0 / L
    tau = 3.0
    for a0, a in ((1e-3, 0.2), (0.05, 0.95), (0.4, 0.9999)):
        ref = tau * integrate.quad(lambda z: 1 / (z ** p * (1 - z)), a0, a, epsrel=1e-12, limit=200,
                                   points=[min(10 * a0, 0.5)])[0]
        assert th.time_to_reach(a, a0, L, tau) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("L", DEPTHS)
def test_alpha_at_against_ode_integration(L):
    tau, a0 = 2.0, 0.02
    t_end = float(th.time_to_reach(0.99, a0, L, tau))
    ts = np.linspace(0, t_end, 50)
    sol = integrate.solve_ivp(_flow_rhs(L), (0, t_end / tau), [a0], t_eval=ts / tau, rtol=1e-12, atol=1e-14,
                              method="DOP853")
    assert np.allclose(th.alpha_at(ts, a0, L, tau), sol.y[0], rtol=1e-8, atol=1e-10)


def test_alpha_at_monotone_bounded_and_broadcast():
    t = np.concatenate([[0.0], np.geomspace(1e-6, 1e9, 400)])
    for L in DEPTHS:
        for a0 in (1e-8, 0.3, 0.999):
            a = th.alpha_at(t, a0, L)
            assert np.all(np.diff(a) >= 0)
            assert a[0] == a0 and np.all(a >= a0) and np.all(a < 1)
    grid = th.alpha_at(np.array([1.0, 10.0])[:, None, None], np.array([0.01, 0.1])[None, :, None],
                       np.array([2, 3, math.inf])[None, None, :])
    assert grid.shape == (2, 2, 3)
    assert isinstance(th.alpha_at(1.0, 0.1, 4), np.floating)


def test_lambert_w_form_eq9():
    """Eq. 9 written with scipy's lambertw, against alpha_at(depth=inf)."""
    a0, tau = 0.05, 1.7
    t = np.linspace(0, 200, 101)
    beta = -t / tau + 1 / a0 + np.log(1 / a0 - 1) - 1
    expected = 1 / (1 + special.lambertw(np.exp(beta)).real)
    assert np.allclose(th.alpha_at(t, a0, math.inf, tau), expected, rtol=1e-13)


def test_elementary_forms_depth_one_and_two():
    t, a0, tau = np.linspace(0, 10, 11), 0.1, 1.5
    assert np.allclose(th.alpha_at(t, a0, 1, tau), 1 - (1 - a0) * np.exp(-t / tau), rtol=1e-14)
    assert np.allclose(th.alpha_at(t, a0, 2, tau), 1 / (1 + (1 / a0 - 1) * np.exp(-t / tau)), rtol=1e-14)


@settings(max_examples=60, deadline=None)
@given(L=st.sampled_from([3, 4, 6, 10, 50, 400]), a0=st.floats(1e-6, 0.95), frac=st.floats(0.01, 0.999),
       tau=st.floats(0.6, 50))
def test_alpha_at_inverts_time_to_reach(L, a0, frac, tau):
    a = a0 + frac * (1 - a0)
    t = th.time_to_reach(a, a0, L, tau)
    assert th.alpha_at(t, a0, L, tau) == pytest.approx(a, rel=1e-9)


def test_plateau_is_leading_term_of_escape_time():
    """Eq. 10 over the exact time to alpha = 1/2 tends to 1 as alpha(0) -> 0."""
    for L in (2, 3, 8, math.inf):
        errs = [abs(th.time_to_reach(0.5, a0, L) / th.plateau_duration(a0, L) - 1) for a0 in (1e-2, 1e-5, 1e-9)]
        assert errs[-1] < errs[0] and errs[-1] < 0.01


def test_closed_form_checks():
    assert_check(checks.check_closed_forms())


# ---- matrix networks --------------------------------------------------------------------------------------
def test_data_moments_scalar():
    x, y = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    m = th.data_moments(x, y)
    assert m.scalar
    assert m.mu_xx == pytest.approx(float((x * x).mean()))
    assert m.mu_yx == pytest.approx(float((x * y).mean()))
    assert th.data_sharpness(4, th.data_moments(x, 2 * x)) == pytest.approx(th.sharpness(4, m.mu_xx, 2 * m.mu_xx))
    with pytest.raises(ValueError, match="same"):
        th.data_moments(np.ones(3), np.ones(4))


def test_data_moments_aligned_recovers_modes():
    lam, s = (3.0, 0.5, 1.2), (2.0, 0.3)
    x, y = sim.aligned_data(lam, s, d_out=3)
    m = th.data_moments(x, y)
    assert m.aligned and not m.scalar
    assert np.allclose(m.s, s) and np.allclose(m.mode_lam, lam[:2]) and np.allclose(m.lam_rest, lam[2:])
    kappa = 3 * np.array(lam[:2]) * (np.array(s) / lam[:2]) ** (4 / 3)
    assert np.allclose(th.mode_sharpness(3, m.mode_lam, m.s), kappa)


def test_matrix_hessian_spectrum_and_bound():
    assert_check(checks.check_matrix())


def test_matrix_bound_unaligned_direct():
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.standard_normal((40, 3)) * [3.0, 1.0, 0.2])
    y = x @ torch.from_numpy(rng.standard_normal((3, 2))) + 0.1 * torch.from_numpy(rng.standard_normal((40, 2)))
    m = th.data_moments(x, y)
    assert not m.aligned
    model = DeepLinear([3, 3, 3, 2], dtype=torch.float64).balanced_(m.target)
    assert torch.allclose(model.product(), torch.from_numpy(m.target), atol=1e-12)
    top = torch.linalg.eigvalsh(sim.hessian(model, x, y))[-1].item()
    assert top <= th.sharpness_bound(3, m) * (1 + 1e-12)
    assert th.data_sharpness(3, m) == th.sharpness_bound(3, m)
    with pytest.raises(ValueError, match="not aligned"):
        th.aligned_sharpness(3, m)
    with pytest.raises(ValueError, match="scalar data"):
        th.data_sharpness(3, m, "res1")
