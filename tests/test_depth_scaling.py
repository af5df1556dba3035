"""DepthScaledSGD, the linear models, and the GD-based validation checks (stability, time course, plateau,
transfer), each against gradient descent in float64 written out here or in torch_layerlr.validate.sim."""

import math

import numpy as np
import pytest
import torch

from torch_layerlr import theory as th
from torch_layerlr.models import DeepLinear, ResidualChain, ScalarChain, balanced_factors
from torch_layerlr.optim import DepthScaledSGD, LayerwiseSGD
from torch_layerlr.validate import checks, sim
from torch_layerlr.validate.report import validate


def assert_check(records):
    failed = [r for r in records if not r["passed"]]
    assert not failed, "\n".join(f"{r['name']}: {r['measured']} {r['op']} {r['bound']} ({r['detail']})" for r in failed)


# ---- models -----------------------------------------------------------------------------------------------
def test_models_forward():
    x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    ws = [0.5, 2.0, 1.5]
    assert torch.allclose(ScalarChain(3, ws, dtype=torch.float64)(x), 1.5 * x)
    r1 = ResidualChain(4, 1, [0.2, -0.4, 0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(r1(x), math.prod(1 + w / 2 for w in [0.2, -0.4, 0.0, 1.0]) * x)
    r2 = ResidualChain(4, 2, [0.2, -0.4, 0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(r2(x), math.prod(1 + w * w / 4 for w in [0.2, -0.4, 0.0, 1.0]) * x)
    assert len(list(r2.parameters())) == 4 and r2.arch == "res2"
    with pytest.raises(ValueError, match="block"):
        ResidualChain(3, 3)
    with pytest.raises(ValueError, match="depth"):
        ScalarChain(0)
    with pytest.raises(ValueError, match="init"):
        ScalarChain(3, [1.0, 2.0])


@pytest.mark.parametrize("arch", th.ARCHS)
def test_balanced_models_hit_alpha0(arch):
    for L in (1, 3, 16):
        model = checks.make_model(arch, L, 0.7, 1.3, 1.3 * 2.5)
        assert model.alpha(1.3, 1.3 * 2.5) == pytest.approx(0.7, rel=1e-13)
        assert len({p.item() for p in model.parameters()}) == 1


def test_balanced_factors():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((3, 4))
    fs = balanced_factors(target, [4, 5, 6, 3])
    assert np.allclose(fs[2] @ fs[1] @ fs[0], target)
    for lower, upper in zip(fs[:-1], fs[1:]):
        assert np.allclose(upper.T @ upper, lower @ lower.T)
    model = DeepLinear([4, 5, 6, 3], dtype=torch.float64).balanced_(target)
    x = torch.randn(7, 4, dtype=torch.float64)
    assert torch.allclose(model(x), x @ torch.from_numpy(target).T)
    with pytest.raises(ValueError, match="rank"):
        balanced_factors(target, [4, 2, 3])


def test_gradient_descent_keeps_balance():
    """Equal layers get bit-identical gradients (torch.prod's backward), so the engine keeps them equal."""
    for model in (ScalarChain(8, 0.8, torch.float64), ResidualChain(8, 2, 0.3, torch.float64)):
        x, y = sim.scalar_data(1.0, 2.0)
        opt = DepthScaledSGD(model.parameters(), 1.0, 2.0, tau=0.45, arch=getattr(model, "arch", "chain"))
        for _ in range(50):
            opt.zero_grad()
            sim.half_mse(model(x), y).backward()
            opt.step()
        assert len({p.item() for p in model.parameters()}) == 1


# ---- DepthScaledSGD ---------------------------------------------------------------------------------------
def test_depth_scaled_sgd_lr_and_default_depth():
    model = ScalarChain(5, 0.9, torch.float64)
    opt = DepthScaledSGD(model.parameters(), 1.5, 0.75, tau=2.0)
    # eq. 5 written out
    assert opt.param_groups[0]["lr"] == pytest.approx(1 / 2.0 / (1.5 * 5) * (0.5) ** (-2 + 2 / 5), rel=1e-14)
    assert opt.depth_scaling["depth"] == 5
    assert isinstance(opt, LayerwiseSGD)
    groups = [{"params": list(model.parameters())[:2]}, {"params": list(model.parameters())[2:]}]
    assert DepthScaledSGD(groups, 1.0, 2.0).depth_scaling["depth"] == 5
    opt = DepthScaledSGD(model.parameters(), 1.0, 2.0, depth=12, arch="res2", momentum=0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(th.max_stable_lr(12, 1.0, 2.0, arch="res2"))
    assert opt.param_groups[0]["momentum"] == 0.5
    assert DepthScaledSGD(model.parameters(), None, None, sharpness=4.0, tau=0.5).param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize("bad, match", [
    (dict(mu_xx=1.0, mu_yx=1.0, arch="res2"), "res2"),
    (dict(mu_xx=1.0, mu_yx=2.0, tau=0.0), "tau"),
    (dict(mu_xx=1.0, mu_yx=2.0, arch="nope"), "arch"),
    (dict(mu_xx=1.0, mu_yx=2.0, depth=0), "depth"),
    (dict(mu_xx=None, mu_yx=2.0), "mu_xx"),
])
def test_depth_scaled_sgd_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        DepthScaledSGD(ScalarChain(3).parameters(), **bad)


def test_depth_scaled_sgd_rejects_lr_and_empty():
    with pytest.raises(TypeError, match="lr"):
        DepthScaledSGD(ScalarChain(3).parameters(), 1.0, 2.0, lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        DepthScaledSGD([], 1.0, 2.0)


@pytest.mark.parametrize("arch", th.ARCHS)
def test_depth_scaled_sgd_is_plain_gd(arch):
    """The fused optimizer's trajectory = plain float64 GD written out here (eq. 2/24/30 per layer)."""
    L, mxx, r, tau = 6, 1.4, 2.0, 0.8
    x, y = sim.scalar_data(mxx, mxx * r)
    init = [0.9, 1.1, 0.8, 1.0, 1.2, 0.95] if arch == "chain" else [0.3, 0.5, 0.2, 0.4, 0.6, 0.35]
    model = checks.make_model(arch, L, 0.5, mxx, mxx * r)
    with torch.no_grad():
        for p, v in zip(model.parameters(), init):
            p.fill_(v)
    opt = DepthScaledSGD(model.parameters(), mxx, mxx * r, tau=tau, arch=arch)
    eta = 1 / (tau * float(th.sharpness(L, mxx, mxx * r, arch)))
    w = list(init)
    for _ in range(25):
        opt.zero_grad()
        sim.half_mse(model(x), y).backward()
        opt.step()
        if arch == "chain":
            f, d = [v for v in w], [1.0] * L
        elif arch == "res1":
            f, d = [1 + v / math.sqrt(L) for v in w], [1 / math.sqrt(L)] * L
        else:
            f, d = [1 + v * v / L for v in w], [2 * v / L for v in w]
        c = math.prod(f)
        w = [v + eta * (mxx * r - mxx * c) * c / f[i] * d[i] for i, v in enumerate(w)]
        got = [p.item() for p in model.parameters()]
        assert got == pytest.approx(w, rel=1e-12, abs=1e-14)


def test_from_data_scalar_and_matrix():
    x, y = sim.scalar_data(1.7, 1.7 * 0.6)
    model = ScalarChain(4, 0.5, torch.float64)
    a = DepthScaledSGD.from_data(model.parameters(), x, y, tau=1.5)
    b = DepthScaledSGD(model.parameters(), 1.7, 1.7 * 0.6, tau=1.5)
    assert a.param_groups[0]["lr"] == pytest.approx(b.param_groups[0]["lr"], rel=1e-12)
    # aligned matrix data: exact top Hessian eigenvalue
    xa, ya = sim.aligned_data((2.0, 0.5, 1.3), (1.5, 0.4), 2)
    net = DeepLinear([3, 3, 2], dtype=torch.float64)
    m = th.data_moments(xa, ya)
    opt = DepthScaledSGD.from_data(net.parameters(), xa, ya)
    net.balanced_(m.target)
    top = sim.top_eigenvalue(sim.hessian(net, xa, ya))
    assert opt.param_groups[0]["lr"] == pytest.approx(1 / top, rel=1e-10)


def test_from_data_unaligned_converges():
    """Conservative bound on unaligned data: GD at tau = 0.55 of the bound still converges to the optimum."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    y = x @ torch.randn(3, 2, generator=g, dtype=torch.float64)
    m = th.data_moments(x, y)
    net = DeepLinear([3, 3, 2], dtype=torch.float64)
    net.balanced_(m.target * 0.999)  # start close to the minimum: this tests stability, not escape
    opt = DepthScaledSGD.from_data(net.parameters(), x, y, tau=0.55)
    for _ in range(3000):
        opt.zero_grad()
        sim.half_mse(net(x), y).backward()
        opt.step()
    assert torch.allclose(net.product(), torch.from_numpy(m.target), atol=1e-8)


# ---- the GD simulator used by the checks and figures --------------------------------------------------------
@pytest.mark.parametrize("arch, r", [("chain", 0.4), ("res1", 2.0), ("res2", 2.5)])
def test_balanced_gd_matches_plain_loop(arch, r):
    L, mxx, tau, steps = 7, 1.2, 0.7, 40
    w = w0 = 0.8 if arch == "chain" else 0.4
    eta = float(th.max_stable_lr(L, mxx, mxx * r, tau, arch))
    e = sim.balanced_gd(arch, L, mxx, mxx * r, w0, eta, steps)
    for k in range(steps + 1):
        v, dv = {"chain": (w, 1.0), "res1": (1 + w / math.sqrt(L), 1 / math.sqrt(L)),
                 "res2": (1 + w * w / L, 2 * w / L)}[arch]
        assert v ** L / r - 1 == pytest.approx(e[k], rel=1e-9, abs=1e-13)
        w = w + eta * (mxx * r - mxx * v ** L) * v ** (L - 1) * dv


# ---- the validation checks ------------------------------------------------------------------------------
def test_stability_check():
    """tau = 0.55 converges to |alpha - 1| < 1e-8 and tau = 0.45 does not: all archs, depths {1,2,3,8,32}."""
    assert_check(checks.check_stability())


def test_time_course_check():
    assert_check(checks.check_time_course())


def test_plateau_check():
    assert_check(checks.check_plateau())


def test_transfer_check():
    assert_check(checks.check_transfer())


def test_validate_cli_writes_report(tmp_path):
    from torch_layerlr.cli import main

    main(["validate", "--out", str(tmp_path), "--only", "sharpness", "matrix"])
    report = (tmp_path / "report.md").read_text()
    assert "sharpness eq. 13" in report and "FAIL" not in report
    import json

    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["passed"] and len(doc["checks"]) == 6
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["fig1_sharpness.png", "fig2_transfer.png",
                                                               "fig3_lr_regimes.png", "fig4_plateau.png"]


def test_validate_rejects_unknown_group(tmp_path):
    with pytest.raises(ValueError, match="unknown check group"):
        validate(str(tmp_path), figures=False, only=["sharpnes"])


def test_validate_reports_failure(tmp_path, monkeypatch):
    monkeypatch.setitem(checks.CHECKS, "sharpness", lambda: [checks.record("broken", 1.0, 0.5)])
    assert not validate(str(tmp_path), figures=False, only=["sharpness"], print_fn=lambda s: None)
    assert "**FAIL**" in (tmp_path / "report.md").read_text()
