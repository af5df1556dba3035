"""The sharpness rate (SharpnessLR, DepthScaledSGD.from_sharpness) against the depth-scaling paper's closed form on
deep linear chains and against the full autograd Hessian on a small nonlinear net."""

import math

import pytest
import torch
from torch import nn

from torch_layerlr.models import ScalarChain
from torch_layerlr.optim import DepthScaledSGD, LayerwiseSGD, SharpnessLR

pytest.importorskip("scipy")


def closed_form_lr(depth, mu_xx, mu_yx, tau):
    """Eq. 5 of the depth-scaling paper, written out: eta = 1/(tau S), S = mu_xx L r^(2 - 2/L), r = mu_yx/mu_xx."""
    r = mu_yx / mu_xx
    return 1.0 / (tau * mu_xx * depth * r ** (2 - 2 / depth))


def scalar_data(n=64, slope=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    y = slope * x + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y, float((x * x).mean()), float((y * x).mean())


def half_mse(net, x, y):
    return lambda: 0.5 * ((y - net(x)) ** 2).mean()


@pytest.mark.parametrize("depth", [1, 3, 6])
@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_from_sharpness_at_the_balanced_minimum_is_the_closed_form(depth, tau):
    x, y, mxx, myx = scalar_data()
    net = ScalarChain.balanced(depth, 1.0, mxx, myx, dtype=torch.float64)  # alpha0 = 1: the global minimum
    opt = DepthScaledSGD.from_sharpness(net.parameters(), half_mse(net, x, y), tau=tau)
    expected = closed_form_lr(depth, mxx, myx, tau)
    assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-6)
    assert opt.depth_scaling["sharpness"] == pytest.approx(1.0 / (tau * expected), rel=1e-6)


def test_sharpness_rate_converges_to_the_closed_form_while_training():
    depth, tau = 4, 1.0
    x, y, mxx, myx = scalar_data()
    net = ScalarChain.balanced(depth, 0.3, mxx, myx, dtype=torch.float64)  # balanced start, far from the minimum
    opt = LayerwiseSGD(net.parameters(), lr=1.0)
    sched = SharpnessLR(opt, half_mse(net, x, y), tau=tau, every=20, tol=1e-8, iters=depth)
    first = opt.param_groups[0]["lr"]
    for _ in range(400):
        opt.zero_grad()
        half_mse(net, x, y)().backward()
        opt.step()
        sched.step()
    expected = closed_form_lr(depth, mxx, myx, tau)
    assert abs(first - expected) / expected > 0.5  # the rate moved: it was measured away from the minimum
    assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-6)


def small_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (16,))
    return net, (lambda: nn.functional.cross_entropy(net(x), y)), (x, y)


def hessian_top(net, x, y):
    """The top eigenvalue of the full autograd Hessian over the flat parameter vector (torch.func.hessian)."""
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss_of(v):
        pieces = torch.split(v, [math.prod(s) for s in shapes])
        state = {n: t.view(s) for n, t, s in zip(names, pieces, shapes)}
        return nn.functional.cross_entropy(torch.func.functional_call(net, state, (x,)), y)

    return float(torch.linalg.eigvalsh(torch.func.hessian(loss_of)(flat))[-1])


@pytest.mark.parametrize("momentum,dampening,correction", [(0.0, 0.0, True), (0.9, 0.0, True), (0.9, 0.5, True),
                                                           (0.9, 0.0, False)])
def test_rate_against_the_full_hessian_with_momentum_correction(momentum, dampening, correction):
    net, loss_fn, (x, y) = small_net()
    top = hessian_top(net, x, y)
    opt = LayerwiseSGD(net.parameters(), lr=1.0, momentum=momentum, dampening=dampening)
    SharpnessLR(opt, loss_fn, tau=2.0, tol=1e-10, iters=sum(p.numel() for p in net.parameters()),
                momentum_correction=correction)
    factor = (1 - momentum) / (1 - dampening) if correction and momentum else 1.0
    assert opt.param_groups[0]["lr"] == pytest.approx(factor / (2.0 * top), rel=1e-8)


def stepped(steps, **options):
    """A SharpnessLR on the small net, stepped ``steps`` times (the net itself does not move: no gradients)."""
    net, loss_fn, _ = small_net()
    opt = LayerwiseSGD(net.parameters(), lr=1.0)
    sched = SharpnessLR(opt, loss_fn, **options)
    for _ in range(steps):
        opt.step()
        sched.step()
    return opt, sched


def test_measures_at_0_1_2_4_then_every_period():
    _, sched = stepped(35, every=10)
    expected = [0, 1, 2, 4, 8, 10, 20, 30]
    assert [r["step"] for r in sched.records] == expected
    assert all(r["lr"] == pytest.approx(1.0 / r["sharpness"]) for r in sched.records)


def test_state_dict_round_trip_continues_identically():
    opt, sched = stepped(5, every=3)
    saved = sched.state_dict()
    assert "loss_fn" not in saved and "optimizer" not in saved
    net2, loss_fn2, _ = small_net()
    opt2 = LayerwiseSGD(net2.parameters(), lr=1.0)
    sched2 = SharpnessLR(opt2, loss_fn2, every=3)
    sched2.load_state_dict(saved)
    for s, o in ((sched, opt), (sched2, opt2)):
        o.step()
        s.step()
    assert sched2.last_epoch == sched.last_epoch == 6
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert sched2.records[-1]["sharpness"] == sched.records[-1]["sharpness"]


def test_cosine_anneals_the_measured_rate():
    net, loss_fn, _ = small_net()
    opt = LayerwiseSGD(net.parameters(), lr=1.0)
    sched = SharpnessLR(opt, loss_fn, every=1000, cosine_steps=8)
    for k in range(1, 11):
        opt.step()
        sched.step()
        factor = 0.5 * (1 + math.cos(math.pi * min(k, 8) / 8))
        assert opt.param_groups[0]["lr"] == pytest.approx(factor / sched.sharpness, rel=1e-12, abs=1e-15)


def test_errors():
    net, loss_fn, _ = small_net()
    opt = LayerwiseSGD(net.parameters(), lr=1.0)
    with pytest.raises(ValueError, match="tau"):
        SharpnessLR(opt, loss_fn, tau=0.0)
    with pytest.raises(ValueError, match="every"):
        SharpnessLR(opt, loss_fn, every=0)
    with pytest.raises(ValueError, match="iters"):
        SharpnessLR(opt, loss_fn, iters=0)
    with pytest.raises(ValueError, match="loss_fn"):
        SharpnessLR(opt, "loss")
    with pytest.raises(ValueError, match="cosine_steps"):
        SharpnessLR(opt, loss_fn, cosine_steps=0)
    w = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    concave = LayerwiseSGD([w], lr=1.0)
    with pytest.raises(ValueError, match="S > 0"):
        SharpnessLR(concave, lambda: -(w ** 2).sum())


def test_diverged_parameters_keep_the_rate_and_record_nan():
    net, loss_fn, _ = small_net()
    opt = LayerwiseSGD(net.parameters(), lr=1.0)
    sched = SharpnessLR(opt, loss_fn, every=1)
    lr = opt.param_groups[0]["lr"]
    with torch.no_grad():
        net[0].weight.fill_(math.nan)
    opt.step()
    sched.step()
    assert math.isnan(sched.records[-1]["sharpness"]) and opt.param_groups[0]["lr"] == lr
