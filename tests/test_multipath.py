"""torch_layerlr.theory.multipath and MultiPathLinear against independent references: autograd Hessians of a
plain float64 multi-path scalar net written here, scipy optimisers and root finders, the research note's
numbers (E.2), and plain NumPy gradient descent."""

import numpy as np
import pytest
import torch
from scipy import optimize

from torch_layerlr import theory as th
from torch_layerlr.models import MultiPathLinear
from torch_layerlr.optim import LayerwiseSGD
from torch_layerlr.theory import multipath as mp
from torch_layerlr.validate import multipath as mv

F64 = torch.float64


def path_hessian(split, depths, target):
    """Hessian of 0.5 (sum_h prod_l w_hl - target)^2 over all scalar layers, at w_hl = split_h^(1/L_h)."""
    w0 = torch.cat([torch.full((L,), s ** (1.0 / L), dtype=F64) for s, L in zip(split, depths)])
    cuts = np.cumsum([0] + list(depths))

    def loss(w):
        return 0.5 * (sum(torch.prod(w[a:b]) for a, b in zip(cuts[:-1], cuts[1:])) - target) ** 2

    return torch.autograd.functional.hessian(loss, w0)


@pytest.mark.parametrize("depths", [(4,), (3, 3), (10, 10), (3, 5, 7), (2, 6), (20, 20, 20)])
def test_mode_sharpness_is_the_hessian_eigenvalue(depths):
    rng = np.random.default_rng(len(depths) + sum(depths))
    for _ in range(3):
        target = rng.uniform(0.3, 2.0)
        split = rng.dirichlet(np.ones(len(depths))) * target
        eig = torch.linalg.eigvalsh(path_hessian(split, depths, target)).numpy()
        assert mp.mode_sharpness(split, depths) == pytest.approx(eig[-1], rel=1e-10)
        assert np.all(np.abs(eig[:-1]) <= 1e-10 * eig[-1])  # rank one at a minimum


def test_single_path_and_ratio():
    L = np.array([1, 2, 3, 8, 32])
    assert np.allclose(mp.single_path_sharpness(1.7, L), th.sharpness(L, 1.0, 1.7))  # eq. 13, mu_xx = 1
    assert mp.single_path_sharpness(0.8, 5) == pytest.approx(mp.mode_sharpness([0.8], [5]))
    # research note E.2: (H, L) = (2, 4) -> 0.707, (2, 10) -> 0.574, (2, 20) -> 0.536
    assert np.round(mp.sharpness_ratio(2, [4, 10, 20]), 3).tolist() == [0.707, 0.574, 0.536]
    assert mp.sharpness_ratio(3, 2) == 1.0
    equal = mp.mode_sharpness(np.full(4, 1.3 / 4), 9)
    assert equal / mp.single_path_sharpness(1.3, 9) == pytest.approx(mp.sharpness_ratio(4, 9), rel=1e-12)


@pytest.mark.parametrize("depths", [(3, 5, 7), (4, 4), (3, 20), (6, 3, 9, 12)])
def test_flattest_split_minimises_the_sharpness(depths):
    L = np.asarray(depths, dtype=float)
    for sigma in (0.4, 1.0, 3.0):
        got = mp.flattest_split(sigma, depths)
        assert got.sum() == pytest.approx(sigma, rel=1e-14)
        ref = optimize.minimize(lambda s: np.sum(L * np.abs(s) ** (2 - 2 / L)), np.full(L.size, sigma / L.size),
                                constraints=[dict(type="eq", fun=lambda s: s.sum() - sigma)],
                                bounds=[(0, sigma)] * L.size, method="SLSQP", options=dict(ftol=1e-15))
        assert np.allclose(got, ref.x, atol=1e-5)
        assert mp.mode_sharpness(got, depths) <= ref.fun * (1 + 1e-12)
        lagrange = (2 * L - 2) * got ** (1 - 2 / L)
        assert np.allclose(lagrange, lagrange[0], rtol=1e-10)
    assert mp.flattest_split([1.0, 2.0], depths).shape == (2, len(depths))


def test_flattest_split_equal_depths_is_equal():
    assert np.allclose(mp.flattest_split(2.0, (5, 5, 5, 5)), 0.5, rtol=1e-13)


def reference_gamma(L):
    def second(gamma):
        f = lambda w: w + gamma / L * w ** (L - 1) * (1 - w ** L)  # noqa: E731
        peak = optimize.minimize_scalar(lambda w: -f(w), bounds=(0, 1), method="bounded",
                                        options=dict(xatol=1e-14))
        return f(-peak.fun)

    return optimize.brentq(second, 2.0001, 60.0, xtol=1e-14)


def test_gamma_wcr():
    depths = [2, 3, 10, 20, 100, 1000]
    got = mp.gamma_wcr(depths)
    assert np.allclose(got, [reference_gamma(L) for L in depths], rtol=1e-8)
    assert np.all(got > 2) and np.all(np.diff(got) > 0)
    ratio = got / np.log(depths)
    assert 1.0 < ratio[-1] < ratio[-2]  # Theta(log L)


def test_step_size_windows():
    w = mp.step_size_windows([1.0, 2.0], 2, 10)
    S1 = mp.single_path_sharpness(np.array([1.0, 2.0]), 10)
    assert np.allclose(w.single, 2 / S1)
    assert np.allclose(w.flattest, 2 / mp.mode_sharpness(np.array([[0.5, 0.5], [1.0, 1.0]]), 10))
    assert np.allclose(w.wcr, mp.gamma_wcr(10) / S1)
    assert np.allclose(w.upper, np.minimum(w.flattest, w.wcr))
    four = mp.step_size_windows(1.0, 4, 10)  # four paths: the WCR bound is below 2/lambda_min
    assert four.upper == four.wcr < four.flattest


def numpy_gd(L, ratios, steps, alphas=(1e-2, 5e-3)):
    """Plain GD of the two-path width-1 net at eta = ratio * 2/S_1, sigma = 1."""
    out = []
    for ratio in ratios:
        eta = ratio * 2.0 / L
        w = np.asarray(alphas) ** (1.0 / L)
        with np.errstate(all="ignore"):
            for _ in range(steps):
                w = w - eta * (np.sum(w ** L) - 1.0) * w ** (L - 1)
        out.append(w ** L)
    return np.array(out)


def test_predicted_split_against_simulation():
    L = 10
    ratios = [0.5, 1.3, 1.5, 1.9]  # 2/lambda_min is 1.74 in these units
    final = numpy_gd(L, ratios, 20_000)
    pred = mp.predicted_split(1.0, 2, L, np.asarray(ratios) * 2.0 / L)
    assert pred[0].tolist() == [1.0, 0.0] and final[0].min() < 0.02  # winner takes all
    for k in (1, 2):
        assert np.allclose(np.sort(final[k])[::-1], pred[k], atol=0.02)
        assert pred[k].sum() == pytest.approx(1.0)
        sharp = mp.mode_sharpness(pred[k], L)
        assert sharp == pytest.approx(2.0 / (ratios[k] * 2.0 / L), rel=1e-12)  # exactly 2/eta
    assert np.isnan(pred[3]).all() and abs(final[3].sum() - 1.0) > 1e-3  # no convergence above 2/lambda_min


def test_theory_bad_inputs():
    with pytest.raises(ValueError, match="paths must be 2"):
        mp.predicted_split(1.0, 3, 10, 0.1)
    with pytest.raises(ValueError, match="lr"):
        mp.predicted_split(1.0, 2, 10, -0.1)
    with pytest.raises(ValueError, match="depth"):
        mp.predicted_split(1.0, 2, 2, 0.1)
    with pytest.raises(ValueError, match="depths"):
        mp.flattest_split(1.0, (2, 5))
    with pytest.raises(ValueError, match="sigma"):
        mp.flattest_split(0.0, (3, 5))
    with pytest.raises(ValueError, match="depths"):
        mp.mode_sharpness([0.5, 0.5], [2.5, 3])
    with pytest.raises(ValueError, match="depth"):
        mp.gamma_wcr(1)
    with pytest.raises(ValueError, match="sigmas"):
        mp.mode_sharpness([np.nan], 3)


def test_multipath_linear_structure():
    net = MultiPathLinear(3, [2, 3, 4], width=2, alphas=[0.5, 0.2, 0.1], dtype=F64)
    assert net.depths == (2, 3, 4) and len(list(net.parameters())) == 9
    for layers, a, L in zip(net.paths, (0.5, 0.2, 0.1), (2, 3, 4)):
        for w in layers:
            assert torch.allclose(w, a ** (1 / L) * torch.eye(2, dtype=F64))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(2, 2, dtype=F64))
    x = torch.randn(5, 2, dtype=F64)
    manual = []
    for layers in net.paths:
        m = torch.eye(2, dtype=F64)
        for w in layers:
            m = w @ m
        manual.append(m)
    assert torch.allclose(net.path_products(), torch.stack(manual))
    assert torch.allclose(net(x), x @ sum(manual).T)
    default = MultiPathLinear(2, 4)
    products = default.path_products()[:, 0, 0]
    assert products[0] > products[1] > 0  # unequal small start


def test_multipath_linear_bad_inputs():
    with pytest.raises(ValueError, match="paths"):
        MultiPathLinear(0, 3)
    with pytest.raises(ValueError, match="depth"):
        MultiPathLinear(2, [3])
    with pytest.raises(ValueError, match="alphas"):
        MultiPathLinear(2, 3, alphas=[0.1, -0.1])
    with pytest.raises(ValueError, match="width"):
        MultiPathLinear(2, 3, width=0)
    with pytest.raises(ValueError, match="last dimension"):
        MultiPathLinear(2, 3, width=2)(torch.ones(3, 3))


def test_layerwise_sgd_on_the_module_follows_plain_gd():
    L, ratio, steps = 6, 1.3, 300
    net = MultiPathLinear(2, L, alphas=(1e-2, 5e-3), dtype=F64)
    opt = LayerwiseSGD(net.parameters(), lr=ratio * 2.0 / L)
    one = torch.ones(1, 1, dtype=F64)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (net(one) - 1.0).pow(2).sum()).backward()
        opt.step()
    got = net.path_products()[:, 0, 0].detach().numpy()
    assert np.allclose(got, numpy_gd(L, [ratio], steps)[0], rtol=1e-9, atol=1e-12)


def test_validation_hessian_checks_pass():
    failed = [r for r in mv.check_hessian() if not r["passed"]]
    assert not failed, failed
