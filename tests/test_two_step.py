"""Two-step layer balancing (arXiv 2606.00340): torch_layerlr.theory.two_step, the balancing models and the
validation checks, each against an independent reference written here: plain float64 NumPy simulations of
the surrogate and of gradient descent, autograd on literal whitened data, Monte Carlo of direct simulations,
the research note's closed forms (typed from /work/shared/research/layer_balancing.md, sections 2.3, 2.5,
3.3, 3.4) and the reproduction's reference rows (note 4.2)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torch_layerlr.models import (FixedHeadLinear, ThreeLayerLinear, TwoLayerLinear, haar_orthonormal,
                                  two_layer_target, unit_target, whitened_inputs)
from torch_layerlr.theory import two_step as ts
from torch_layerlr.validate import balancing

F64 = torch.float64


def assert_check(records):
    failed = [r for r in records if not r["passed"]]
    assert not failed, "\n".join(f"{r['name']}: {r['measured']} {r['op']} {r['bound']} ({r['detail']})" for r in failed)


# ---- references typed from the research note ---------------------------------------------------------------
def note_loss(p, q, h, steps, layers, form="paper"):
    """Note 2.3 (two layers) and 2.5 (three layers), written out term by term as printed there."""
    if layers == 2 and steps == 1:
        out = p ** 2 / h ** 4 + 1 / h + q ** 2 / h ** 7 - 2 * p / h ** 2 + 1  # (eta1 + eta2)^2 = p^2
        return out + (2 * q / h ** 5 if form == "paper" else 0)
    if layers == 2:
        return (1 / h) * (1 + q / h ** 3) ** 4 + 16 * q ** 2 / h ** 7 + (2 * p * (q + h ** 3) / h ** 5 - 1) ** 2 \
            + 8 * q * (1 + q / h ** 3) ** 2 / h ** 5
    if steps == 1:
        out = p ** 2 / h ** 2 + q ** 2 / h ** 4 - 2 * p / h + 1 / h + 1
        return out + (2 * q / h ** 3 if form == "paper" else 0)
    return (2 * p * (h + q) / h ** 2 - 1) ** 2 + 1 / h + 2 * q / h ** 2 + 10 * q / h ** 3 + q ** 2 / h ** 3 \
        + 37 * q ** 2 / h ** 4 + 12 * q ** 3 / h ** 5 + q ** 4 / h ** 6


def haar_np(rng, r, c):
    q, R = np.linalg.qr(rng.standard_normal((r, c)))
    return q * np.sign(np.diag(R))


def unit_np(rng, d):
    v = rng.standard_normal(d)
    return v / np.linalg.norm(v)


# ---- plain float64 simulations (NumPy, written here) -------------------------------------------------------
def sim_two_layer(w1, w2, beta, rates, exact=False):
    """Population loss after each step: surrogate W += eta A (A1 = beta W2^T / h, A2 = W1^T beta / h) or exact
    GD of (1/2)||W1 W2/h - beta||^2 (the whitened train loss)."""
    h = w2.shape[0]
    out = []
    for e1, e2 in rates:
        m = w1 @ w2 / h
        r = (m - beta) if exact else -beta
        g1, g2 = r @ w2.T / h, w1.T @ r / h
        w1, w2 = w1 - e1 * g1, w2 - e2 * g2
        out.append(np.sum((w1 @ w2 / h - beta) ** 2))
    return out


def sim_fixed_head(ws, a, beta, rates, exact=False):
    """Same for f = x W1 ... WK a / sqrt(h): gradients (1/sqrt h) (W_{k-1}^T..W_1^T r)(W_{k+1}..W_K a)^T."""
    h = a.shape[0]
    ws = [w.copy() for w in ws]
    out = []
    for eta in rates:
        right = [a]
        for w in reversed(ws):
            right.append(w @ right[-1])
        right.reverse()  # right[k] = W_k..W_K a (0-based), right[K] = a
        u = right[0] / math.sqrt(h)
        r = (u - beta) if exact else -beta
        left = [r]
        for w in ws[:-1]:
            left.append(w.T @ left[-1])
        grads = [np.outer(left[k], right[k + 1]) / math.sqrt(h) for k in range(len(ws))]
        ws = [w - e * g for w, e, g in zip(ws, eta, grads)]
        v = a
        for w in reversed(ws):
            v = w @ v
        out.append(np.sum((v / math.sqrt(h) - beta) ** 2))
    return out


# ---- expected_loss and the closed forms --------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(h=st.integers(4, 5000), f=st.floats(0.0, 1.0), alpha=st.floats(0.5, 1.6), layers=st.sampled_from([2, 3]))
def test_expected_loss_constant_rates_is_the_papers_closed_form(h, f, alpha, layers):
    P = 2 * h ** (alpha if layers == 2 else alpha - 0.9)
    e1, e2 = f * P, (1 - f) * P
    for steps in (1, 2):
        ours = ts.expected_loss([(e1, e2)] * steps, h, layers)
        ref = note_loss(e1 + e2, e1 * e2, h, steps, layers)
        assert ours == pytest.approx(ref, rel=1e-11, abs=1e-14)
        assert ts.closed_form_loss(e1 + e2, e1 * e2, h, steps, layers) == pytest.approx(ref, rel=1e-12, abs=1e-14)
    assert ts.closed_form_loss(e1 + e2, e1 * e2, h, 1, layers, form="code") == pytest.approx(
        note_loss(e1 + e2, e1 * e2, h, 1, layers, form="code"), rel=1e-12, abs=1e-14)


def test_expected_loss_matches_the_reproductions_reference_rows():
    """Note 4.2: landscape.csv symmetric losses (2-layer, eta1 = eta2 = h^alpha), formula_matrix_checks.csv
    formulas (eta = (0.3, 0.7) 2h^alpha), three_layer_figure2_landscape.csv midpoint losses."""
    rows2 = [(1000, 1.5, 1, 0.8795108935932648), (1000, 1.5, 2, 0.5900675743730593),
             (512, 1.1, 1, 0.9874277609294962), (512, 1.5, 2, 0.48051528912595254),
             (2048, 1.25, 2, 0.9738584167179559)]
    for h, alpha, steps, ref in rows2:
        e = h ** alpha
        assert ts.expected_loss([(e, e)] * steps, h) == pytest.approx(ref, rel=1e-12)
    for h, alpha, steps, ref in ((16, 1.25, 1, 0.6293968750000001), (16, 1.25, 2, 0.34370745687500004),
                                 (32, 1.4, 2, 0.30597471750000005)):
        P = 2 * h ** alpha
        assert ts.expected_loss([(0.3 * P, 0.7 * P)] * steps, h) == pytest.approx(ref, rel=1e-12)
    for lr_max, steps, ref in ((30, 1, 0.941900500625), (30, 2, 0.8599071373753906), (80, 1, 0.84740576),
                               (80, 2, 0.3479824256000001), (100, 2, 0.10273281250000003)):
        assert ts.expected_loss([(lr_max / 2, lr_max / 2)] * steps, 1000, 3) == pytest.approx(ref, rel=1e-12)
    # the grid minimum of the 3-layer one-step landscape sits at the edge fraction 0.001
    assert ts.expected_loss([(0.001 * 80, 0.999 * 80)], 1000, 3) == pytest.approx(0.8474000128280781, rel=1e-12)
    # the reproduction's negative control: a spurious q/h^5 at eta = (1200, 1800), h = 1000, is 2.16e-9
    assert 1200 * 1800 / 1000 ** 5 == pytest.approx(2.1599999566745964e-09, rel=1e-7)


def test_expected_loss_vectorized_and_zero_steps():
    f = np.linspace(0, 1, 7)
    P, h = 40000.0, 1000
    out = ts.expected_loss([(f * P, (1 - f) * P)] * 2, h)
    assert out.shape == (7,)
    assert np.allclose(out, [ts.expected_loss([(x * P, (1 - x) * P)] * 2, h) for x in f], rtol=1e-15)
    # no step: ||Z/h - Q/sqrt(h)||^2 has expectation 1 + 1/h (2 layers), |a|^2/h + |beta|^2 (3 layers)
    assert ts.expected_loss([], 100) == pytest.approx(1.01, rel=1e-15)
    assert ts.expected_loss([], 100, 3) == pytest.approx(1.01, rel=1e-15)
    hs = np.array([16, 64, 256])
    assert np.allclose(ts.expected_loss([(hs ** 1.2, hs ** 1.3)], hs), [ts.expected_loss([(x ** 1.2, x ** 1.3)], x)
                                                                        for x in hs], rtol=1e-14)


def test_bad_arguments():
    with pytest.raises(ValueError, match="layers"):
        ts.expected_loss([(1, 1)], 10, layers=4)
    with pytest.raises(ValueError, match="at most two"):
        ts.expected_loss([(1, 1)] * 3, 10)
    with pytest.raises(ValueError, match="pair"):
        ts.expected_loss([(1, 1, 1)], 10)
    with pytest.raises(ValueError, match="h must be positive"):
        ts.expected_loss([(1, 1)], 0)
    with pytest.raises(ValueError, match="NaN"):
        ts.expected_loss([(math.nan, 1)], 10)
    with pytest.raises(ValueError, match="steps"):
        ts.equal_split_curvature(10, 10, 3)
    with pytest.raises(ValueError, match="tr_u"):
        ts.realisation_loss([(1, 1)], 10, 2)
    with pytest.raises(ValueError, match="form"):
        ts.closed_form_loss(1, 0, 10, 1, form="released")


# ---- per-realisation identities against simulation (note 2.4, 2.6) ------------------------------------------
@pytest.mark.parametrize("h", [8, 33, 100])
def test_two_layer_identities_against_simulation(h):
    rng = np.random.default_rng(h)
    s = h ** 1.5
    for _ in range(2):
        w1, w2, q = haar_np(rng, h, h), haar_np(rng, h, h), haar_np(rng, h, h)
        beta = q / math.sqrt(h)
        u = (w1 @ w2).T @ q
        tu, tu2 = np.trace(u), np.trace(u @ u)
        for rates in ([(0.3 * s, 1.1 * s)] * 2, [(0.3 * s, 1.1 * s), (1.4 * s, 0.2 * s)], [(0.0, 2 * s), (2 * s, 0)]):
            sim = sim_two_layer(w1, w2, beta, rates)
            for k in (1, 2):
                ident = ts.realisation_loss(rates[:k], h, 2, tr_u=tu, tr_u2=tu2)
                assert ident == pytest.approx(sim[k - 1], rel=1e-10)
        rate = (0.7 * s, 0.4 * s)
        gd = sim_two_layer(w1, w2, beta, [rate], exact=True)[0]
        assert ts.gd_one_step_loss(rate, h, 2, tr_u=tu, tr_u2=tu2) == pytest.approx(gd, rel=1e-10)


@pytest.mark.parametrize("h", [8, 33, 100])
def test_three_layer_identities_against_simulation(h):
    rng = np.random.default_rng(100 + h)
    for a_sq, b_sq in ((1.0, 1.0), (0.8, 1.3)):
        w1, w2 = haar_np(rng, h, h), haar_np(rng, h, h)
        a, beta = math.sqrt(a_sq) * unit_np(rng, h), math.sqrt(b_sq) * unit_np(rng, h)
        s = (w1 @ w2 @ a) @ beta
        for rates in ([(0.3 * h, 1.1 * h)] * 2, [(0.3 * h, 1.1 * h), (1.4 * h, 0.2 * h)], [(0, 2 * h), (2 * h, 0)]):
            sim = sim_fixed_head([w1, w2], a, beta, rates)
            for k in (1, 2):
                ident = ts.realisation_loss(rates[:k], h, 3, s=s, a_sq=a_sq, beta_sq=b_sq)
                assert ident == pytest.approx(sim[k - 1], rel=1e-10)
        rate = (0.7 * h, 0.4 * h)
        gd = sim_fixed_head([w1, w2], a, beta, [rate], exact=True)[0]
        assert ts.gd_one_step_loss(rate, h, 3, s=s, a_sq=a_sq, beta_sq=b_sq) == pytest.approx(gd, rel=1e-10)


def test_surrogate_coefficients_reproduce_the_end_to_end_matrix():
    """W1 W2 = A Z + B Q + C Q Z^T Q after the surrogate steps (note 2.4), on the matrices themselves."""
    h = 20
    rng = np.random.default_rng(5)
    w1, w2, q = haar_np(rng, h, h), haar_np(rng, h, h), haar_np(rng, h, h)
    beta, z = q / math.sqrt(h), w1 @ w2
    rates = [(0.4 * h ** 1.5, 0.9 * h ** 1.5), (1.2 * h ** 1.5, 0.1 * h ** 1.5)]
    v1, v2 = w1, w2
    for e1, e2 in rates:
        v1, v2 = v1 + e1 * beta @ v2.T / h, v2 + e2 * v1.T @ beta / h
    A, B, C = ts.surrogate_coefficients(rates, h)
    assert np.abs(v1 @ v2 - (A * z + B * q + C * q @ z.T @ q)).max() < 1e-10 * np.abs(v1 @ v2).max()


# ---- reduced gradients against autograd (note 2.1) ---------------------------------------------------------
def test_reduced_gradients_against_autograd():
    assert_check(balancing.check_gradients())
    h, n = 10, 30
    g = torch.Generator().manual_seed(3)
    x = whitened_inputs(n, h, g, F64)
    assert torch.allclose(x.T @ x, n * torch.eye(h, dtype=F64), atol=1e-12)
    model, beta = TwoLayerLinear(h, dtype=F64, generator=g), two_layer_target(h, h, g, F64)
    loss = (model(x) - x @ beta).pow(2).sum() / (2 * n)
    g1, g2 = torch.autograd.grad(loss, [model.w1, model.w2])
    w1, w2 = model.w1.detach().numpy(), model.w2.detach().numpy()
    m = w1 @ w2 / h - beta.numpy()
    assert np.abs(g1.numpy() - m @ w2.T / h).max() <= 1e-12
    assert np.abs(g2.numpy() - w1.T @ m / h).max() <= 1e-12


def test_identities_check():
    """The validation's own simulations (literal whitened X, n = 2h; exact GD through LayerwiseSGD)."""
    assert_check(balancing.check_identities())


# ---- Monte Carlo of direct simulations against the expectations --------------------------------------------
def _haar_batch(g, m, h):
    q, r = torch.linalg.qr(torch.randn(m, h, h, generator=g, dtype=F64))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def test_monte_carlo_of_simulations_rejects_the_released_code_form():
    """24 000 Haar draws at h = 16, surrogate simulated directly (batched matrices, no identity used): the
    paper's expectation is within 4 SE for one step, two constant steps and a general schedule, and the
    released code's one-step form (without 2q/h^5) is rejected.  The same for the 3-layer net (2q/h^3)."""
    h, m = 16, 24000
    g = torch.Generator().manual_seed(11)
    P = 2 * h ** 1.25
    w1, w2, q = _haar_batch(g, m, h), _haar_batch(g, m, h), _haar_batch(g, m, h)
    beta = q / math.sqrt(h)
    for rates in ([(0.3 * P, 0.7 * P)], [(0.3 * P, 0.7 * P)] * 2, [(0.3 * P, 0.7 * P), (0.9 * P, 0.1 * P)]):
        v1, v2 = w1, w2
        for e1, e2 in rates:
            v1, v2 = v1 + e1 * beta @ v2.transpose(-1, -2) / h, v2 + e2 * v1.transpose(-1, -2) @ beta / h
        losses = (v1 @ v2 / h - beta).pow(2).sum((-1, -2)).numpy()
        mean, se = losses.mean(), losses.std(ddof=1) / math.sqrt(m)
        assert abs(mean - ts.expected_loss(rates, h)) < 4 * se
        if len(rates) == 1:
            p, qq = sum(rates[0]), rates[0][0] * rates[0][1]
            assert abs(mean - note_loss(p, qq, h, 1, 2, form="code")) > 4 * se
    # three layers: unit a and beta; v = W1 W2 a is uniform on the sphere
    P = 2 * h ** 0.5
    a = torch.zeros(h, dtype=F64)
    a[0] = 1.0
    b = torch.zeros(h, dtype=F64)
    b[1] = 1.0
    w1, w2 = _haar_batch(g, m, h), _haar_batch(g, m, h)
    for rates in ([(0.3 * P, 0.7 * P)], [(0.3 * P, 0.7 * P)] * 2, [(0.3 * P, 0.7 * P), (0.9 * P, 0.1 * P)]):
        v1, v2 = w1, w2
        for e1, e2 in rates:
            a1 = b[None, :, None] * (v2 @ a)[:, None, :] / math.sqrt(h)
            a2 = (v1.transpose(-1, -2) @ b)[:, :, None] * a[None, None, :] / math.sqrt(h)
            v1, v2 = v1 + e1 * a1, v2 + e2 * a2
        losses = ((v1 @ (v2 @ a)[..., None])[..., 0] / math.sqrt(h) - b).pow(2).sum(-1).numpy()
        mean, se = losses.mean(), losses.std(ddof=1) / math.sqrt(m)
        assert abs(mean - ts.expected_loss(rates, h, 3)) < 4 * se
        if len(rates) == 1:
            p, qq = sum(rates[0]), rates[0][0] * rates[0][1]
            assert abs(mean - note_loss(p, qq, h, 1, 3, form="code")) > 4 * se


def test_monte_carlo_check():
    assert_check(balancing.check_monte_carlo())


# ---- curvature, optimal splits, windows ---------------------------------------------------------------------
def note_midpoint_curvature(e, h, steps, layers):
    if steps == 1:
        return -4 * (e ** 2 + h ** 2) / h ** 7 if layers == 2 else -4 * (e ** 2 + h) / h ** 4
    if layers == 2:
        return -8 * (e ** 6 + 11 * e ** 4 * h ** 3 + 6 * e ** 4 * h ** 2 + 19 * e ** 2 * h ** 6 + 8 * e ** 2 * h ** 5
                     - 2 * e * h ** 8 + h ** 9 + 2 * h ** 8) / h ** 13
    return -4 * (2 * e ** 6 + 16 * e ** 4 * h ** 2 + 18 * e ** 4 * h + 17 * e ** 2 * h ** 3 + 37 * e ** 2 * h ** 2
                 - 4 * e * h ** 4 + h ** 4 + 5 * h ** 3) / h ** 6


@pytest.mark.parametrize("layers,alphas", [(2, (1.10, 1.25, 1.40, 1.50)), (3, (0.25, 0.40, 0.50, 0.55))])
def test_curvature_signs(layers, alphas):
    for h in (512, 1000, 2048):
        for a in alphas:
            e = float(h) ** a
            k1 = ts.equal_split_curvature(2 * e, h, 1, layers)
            k2 = ts.equal_split_curvature(2 * e, h, 2, layers)
            assert k1 == pytest.approx(note_midpoint_curvature(e, float(h), 1, layers), rel=1e-12)
            assert k2 == pytest.approx(note_midpoint_curvature(e, float(h), 2, layers), rel=1e-12)
            assert k1 < 0 < k2
            # -2 dL/dq at q = e^2 by a centred difference of the note's closed form (section 3.2)
            d = 1e-3 * e * e
            fd = -(note_loss(2 * e, e * e + d, h, 2, layers) - note_loss(2 * e, e * e - d, h, 2, layers)) / d
            assert fd == pytest.approx(k2, rel=1e-5)
    # control: h = 256, alpha = 1.5 is outside the strict window: not a two-step minimum (repro: -1.138e-10)
    if layers == 2:
        assert ts.equal_split_curvature(2 * 256 ** 1.5, 256, 2) < 0
    # the reproduction's 80-digit values at h = 1000, alpha = 0.55 (three_layer_attempts.json)
    if layers == 3:
        assert ts.equal_split_curvature(2 * 1000 ** 0.55, 1000, 1, 3) == pytest.approx(-1.1981049259875518e-08, rel=1e-12)
        assert ts.equal_split_curvature(2 * 1000 ** 0.55, 1000, 2, 3) == pytest.approx(3.19561838625227e-04, rel=1e-12)


def test_curvature_check():
    assert_check(balancing.check_curvature())


@pytest.mark.parametrize("layers", [2, 3])
def test_optimal_split_against_a_dense_grid(layers):
    h = 1000
    budgets = (40000.0, 63000.0, 5000.0, 150000.0) if layers == 2 else (80.0, 30.0, 3.0, 300.0)
    x = np.linspace(0.0, 0.5, 200001)
    for P in budgets:
        for steps in (1, 2):
            sp = ts.optimal_split(P, h, steps, layers)
            grid = note_loss(P, x * P * (1 - x) * P, h, steps, layers)
            assert sp.eta1 <= sp.eta2 and sp.eta1 + sp.eta2 == pytest.approx(P, rel=1e-15)
            assert sp.loss <= grid.min() + 1e-14
            assert sp.loss == pytest.approx(note_loss(P, sp.eta1 * sp.eta2, h, steps, layers), rel=1e-13)
            if steps == 1:
                assert sp.eta1 == 0.0  # one step: train a single layer
    # inside the window the equal split is the two-step optimum on the budget line
    assert ts.optimal_split(40000.0 if layers == 2 else 80.0, h, 2, layers).eta1 == pytest.approx(
        20000.0 if layers == 2 else 40.0, rel=1e-9)
    vec = ts.optimal_split(np.array([30.0, 80.0]), h, 2, layers)
    assert vec.eta1.shape == (2,)


def test_balance_window_against_the_note():
    """Roots of the note's curvature polynomials (np.roots here) and its table 3.4."""
    table = {256: ((0.880, 1.4997), (-0.246, 0.555)), 1000: ((0.901, 1.549), (-0.200, 0.586)),
             4096: ((0.917, 1.574), (-0.166, 0.604))}
    for h, (w2, w3) in table.items():
        for layers, ref in ((2, w2), (3, w3)):
            lo, hi = ts.balance_window(h, layers)
            digits = 1e-4 if h == 256 and layers == 2 else 1e-3
            assert abs(lo - ref[0]) <= 1e-3 and abs(hi - ref[1]) <= digits
            grid = np.linspace(lo - 0.2, hi + 0.2, 4001)
            k = np.asarray([note_midpoint_curvature(float(h) ** a, float(h), 2, layers) for a in grid])
            inside = grid[k > 0]
            assert inside.min() == pytest.approx(lo, abs=1e-3) and inside.max() == pytest.approx(hi, abs=1e-3)
    ws = ts.balance_window(np.array([512, 2048]))
    assert ws.alpha_lo.shape == (2,)
    # asymptotically (1, 5/3) and (0, 2/3)
    lo, hi = ts.balance_window(1e12, 2)
    assert 0.95 < lo < 1.0 and 1.6 < hi < 5 / 3
    lo, hi = ts.balance_window(1e12, 3)
    assert -0.06 < lo < 0.0 and 0.6 < hi < 2 / 3
    assert all(math.isnan(v) for v in ts.balance_window(2, 2))


def test_best_two_step_schedule_against_brute_force():
    """The best pair of per-step splits, against a fine grid of the note's general-schedule coefficients
    (2.4 / 2.6) evaluated here."""
    for layers, h, P in ((2, 1000, 40000.0), (3, 1000, 80.0), (2, 64, 2 * 64 ** 1.3)):
        best = ts.best_two_step_schedule(P, h, layers)
        u = np.linspace(0, 1, 401)[:, None]
        v = np.linspace(0, 1, 401)[None, :]
        if layers == 2:
            c1, c2, d1, d2 = (x / h ** 1.5 for x in (u * P, (1 - u) * P, v * P, (1 - v) * P))
            A = 1 + d2 * c1 + d1 * c2 + d1 * d2 * c1 * c2
            B = (c1 + c2) + d2 * (1 + c1 ** 2) + d1 * (1 + c2 ** 2) + d1 * d2 * (c1 + c2) - math.sqrt(h)
            C = c1 * c2 + d2 * c1 + d1 * c2 + d1 * d2
            grid = (A * A + B * B + C * C) / h + 2 * A * C / h ** 2
        else:
            k1, k2, l1, l2 = (x / math.sqrt(h) for x in (u * P, (1 - u) * P, v * P, (1 - v) * P))
            vals = []
            for s in (1 / math.sqrt(h), -1 / math.sqrt(h)):  # E over s with E s = 0, E s^2 = 1/h (quadratic in s)
                m = k1 + k2 + k1 * k2 * s
                cv = 1 + l2 * k1
                cb = m + l2 * (1 + k1 * s + k1 ** 2) + l1 * (1 + 2 * k2 * s + k2 ** 2) + l1 * l2 * (s + m)
                vals.append(cv ** 2 / h + (cb / math.sqrt(h) - 1) ** 2 + 2 * cv * s * (cb / math.sqrt(h) - 1) / math.sqrt(h))
            grid = 0.5 * (vals[0] + vals[1])
        assert best.loss <= grid.min() + 1e-12
        assert best.loss == pytest.approx(ts.expected_loss(best.rates, h, layers), rel=1e-14)
        (a1, b1), (a2, b2) = best.rates
        assert a1 <= b1 and a1 + b1 == pytest.approx(P) and a2 + b2 == pytest.approx(P)
    # the best schedule is (close to) alternating, and better than unequal-then-equal
    best = ts.best_two_step_schedule(80.0, 1000, 3)
    assert best.rates[0][0] == pytest.approx(0.0, abs=1e-6) and best.rates[1][1] < 0.1
    assert best.loss < ts.expected_loss([(0, 80), (40, 40)], 1000, 3)


# ---- models --------------------------------------------------------------------------------------------------
def test_models():
    g = torch.Generator().manual_seed(0)
    q = haar_orthonormal(9, 5, g, F64)
    assert torch.allclose(q.T @ q, torch.eye(5, dtype=F64), atol=1e-14)
    with pytest.raises(ValueError, match="rows >= cols"):
        haar_orthonormal(3, 5)
    m = TwoLayerLinear(6, d=8, dtype=F64, generator=g)
    assert [tuple(p.shape) for p in m.parameters()] == [(8, 6), (6, 6)]
    assert torch.allclose(m.w1.T @ m.w1, torch.eye(6, dtype=F64), atol=1e-14)
    assert torch.allclose(m.w2 @ m.w2.T, torch.eye(6, dtype=F64), atol=1e-14)
    x = torch.randn(4, 8, dtype=F64, generator=g)
    assert torch.allclose(m(x), x @ m.w1 @ m.w2 / 6)
    beta = two_layer_target(8, 6, g, F64)
    assert float(beta.pow(2).sum()) == pytest.approx(6 / 8, rel=1e-13)
    # population loss = E_x ||f(x) - x beta||^2 for x ~ N(0, I): exact via the d unit vectors
    eye = torch.eye(8, dtype=F64)
    with torch.no_grad():
        assert float(m.population_loss(beta)) == pytest.approx(float((m(eye) - eye @ beta).pow(2).sum()), rel=1e-13)
    # whitened train loss = literal (1/2n)||f(X) - X beta||^2
    X = whitened_inputs(20, 8, g, F64)
    with torch.no_grad():
        assert float(m.whitened_train_loss(beta)) == pytest.approx(float((m(X) - X @ beta).pow(2).sum() / 40),
                                                                    rel=1e-12)
    m3 = ThreeLayerLinear(7, dtype=F64, generator=g)
    assert m3.depth == 3 and len(list(m3.parameters())) == 2 and float(m3.a.norm()) == pytest.approx(1.0)
    x = torch.randn(5, 7, dtype=F64, generator=g)
    w1, w2 = m3.weights
    assert torch.allclose(m3(x), x @ w1 @ w2 @ m3.a / math.sqrt(7))
    m8 = FixedHeadLinear(5, depth=8, dtype=F64, generator=g)
    assert len(list(m8.parameters())) == 7 and m8.depth == 8
    prod = torch.eye(5, dtype=F64)
    for w in m8.weights:
        prod = prod @ w
    assert torch.allclose(m8.end_to_end(), prod @ m8.a / math.sqrt(5))
    with pytest.raises(ValueError, match="depth"):
        FixedHeadLinear(5, depth=1)
    with pytest.raises(ValueError, match="d >= h"):
        TwoLayerLinear(6, d=4)
    # Haar: E Q[0, 0]^2 = 1/n
    vals = [float(haar_orthonormal(4, 4, g)[0, 0]) ** 2 for _ in range(4000)]
    assert np.mean(vals) == pytest.approx(0.25, abs=4 * np.std(vals) / math.sqrt(4000))
    assert float(unit_target(12, g).norm()) == pytest.approx(1.0, rel=1e-6)


# ---- gradient descent ------------------------------------------------------------------------------------------
def test_two_layer_gd_through_layerwise_sgd_h1000():
    """Full GD at h = 1000, budget 40 000, through LayerwiseSGD with lr_mult = [eta1, eta2]: within 0.5% (step 1)
    and 3% (step 2) of the formula; step-1 argmin at the grid edge, step-2 argmin at the equal split.  One
    split is also redone here with plain float64 NumPy GD."""
    assert_check(balancing.check_two_layer_gd())
    gd, theory = balancing._two_layer_grid()
    assert np.abs(gd[:, 0] / theory[:, 0] - 1).max() < 0.005 and np.abs(gd[:, 1] / theory[:, 1] - 1).max() < 0.03
    i1, i2 = np.argmin(gd[:, 0]), np.argmin(gd[:, 1])
    assert i1 in (0, len(gd) - 1) and balancing.FRACTIONS[i2] == 0.5
    model, beta = balancing._two_layer_problem(1000, balancing.SEEDS[0])
    w1, w2 = model.w1.detach().numpy(), model.w2.detach().numpy()
    ref = sim_two_layer(w1, w2, beta.numpy(), [(0.25 * 40000, 0.75 * 40000)] * 2, exact=True)
    assert gd[balancing.FRACTIONS.index(0.25)] == pytest.approx(ref, rel=1e-10)


def test_fixed_head_gd_against_numpy_and_checks():
    """The batched low-rank GD of the validation against plain NumPy GD written here (3 and 4 layers, h = 64,
    a general schedule), then the validation's own GD checks (3/4/8 layers at h = 1000)."""
    for depth in (3, 4):
        rates = np.array([[[5.0] + [3.0] * (depth - 2), [1.0] + [7.0] * (depth - 2)],
                          [[2.0] * (depth - 1), [2.0] * (depth - 1)]])
        sim = balancing.fixed_head_gd(64, depth, 9, rates)
        model, beta = balancing._fixed_head_problem(64, depth, 9)
        ws = [w.detach().numpy() for w in model.weights]
        for i in range(2):
            ref = sim_fixed_head(ws, model.a.numpy(), beta.numpy(), rates[i], exact=True)
            assert sim[i, 1:] == pytest.approx(ref, rel=1e-11)
    assert_check(balancing.check_fixed_head_gd(budgets3=(80.0,), budgets_deep=(40.0,), seeds=balancing.SEEDS[:3]))


def test_schedule_checks_and_report_section():
    assert_check(balancing.check_schedules(seeds2=(2020,), seeds3=(2020, 2021, 2022)))
    text = balancing.report_section()
    assert "not the best second step" in text and "| alternating |" in text
