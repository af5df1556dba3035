"""Sanity tests of the float64 reference optimizers (tests/reference) against torch.optim and closed forms.

The references are the oracles for the fused optimizers, so they are checked here against things that do
not share their code path: torch.optim.SGD / AdamW, and small hand-derived numbers.
"""

import math

import pytest
import torch

from reference import RefDALS, RefGrokfastAdamW, RefLAMB, RefLARS, RefLayerwiseAdamW, RefLayerwiseSGD  # noqa: E402

F64 = torch.float64


def _make_params(seed=0, shapes=((3, 4), (5,))):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=F64) for s in shapes]


def _make_grads(params, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=gen, dtype=F64) for p in params] for _ in range(steps)]


def _run(make_opt, init, grads):
    """Clone `init` into leaf params, build the optimizer with make_opt(params), feed `grads`."""
    params = [x.clone().requires_grad_(True) for x in init]
    opt = make_opt(params)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params], opt


def _assert_all_close(a, b, **kw):
    kw.setdefault("rtol", 1e-12)
    kw.setdefault("atol", 1e-14)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **kw)


# --------------------------------------------------------------------------------------------------
# LayerwiseSGD == torch.optim.SGD
# --------------------------------------------------------------------------------------------------
SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-3),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.9, maximize=True),
]


@pytest.mark.parametrize("cfg", SGD_CONFIGS)
def test_sgd_matches_torch(cfg):
    init = _make_params()
    grads = _make_grads(init, 6)
    ref, opt = _run(lambda ps: RefLayerwiseSGD(ps, **cfg), init, grads)
    exp, _ = _run(lambda ps: torch.optim.SGD(ps, **cfg), init, grads)
    _assert_all_close(ref, exp)
    assert all(int(opt.state[p]["step"]) == 6 for p in opt.param_groups[0]["params"])


def test_sgd_lr_mult_float_and_sequence():
    init = _make_params()
    grads = _make_grads(init, 4)
    ref, _ = _run(lambda ps: RefLayerwiseSGD([dict(params=ps, lr_mult=[1.0, 0.25])], lr=0.1, momentum=0.9),
                  init, grads)
    exp, _ = _run(lambda ps: torch.optim.SGD([dict(params=[ps[0]], lr=0.1), dict(params=[ps[1]], lr=0.025)],
                                             lr=0.1, momentum=0.9), init, grads)
    _assert_all_close(ref, exp)
    ref, _ = _run(lambda ps: RefLayerwiseSGD(ps, lr=0.1, lr_mult=0.5, momentum=0.5), init, grads)
    exp, _ = _run(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.5), init, grads)
    _assert_all_close(ref, exp)


def test_grad_none_is_skipped():
    init = _make_params()
    params = [x.clone().requires_grad_(True) for x in init]
    opt = RefLayerwiseSGD(params, lr=0.1, momentum=0.9)
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    assert len(opt.state[params[1]]) == 0
    torch.testing.assert_close(params[1].detach(), init[1], rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# LayerwiseAdamW == torch.optim.AdamW
# --------------------------------------------------------------------------------------------------
ADAMW_CONFIGS = [
    dict(lr=1e-2),
    dict(lr=1e-2, weight_decay=0.0),
    dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    dict(lr=1e-2, maximize=True),
]


@pytest.mark.parametrize("cfg", ADAMW_CONFIGS)
def test_adamw_matches_torch(cfg):
    init = _make_params()
    grads = _make_grads(init, 7)
    ref, _ = _run(lambda ps: RefLayerwiseAdamW(ps, **cfg), init, grads)
    exp, _ = _run(lambda ps: torch.optim.AdamW(ps, **cfg), init, grads)
    _assert_all_close(ref, exp)


def test_adamw_lr_mult_sequence():
    init = _make_params()
    grads = _make_grads(init, 5)
    ref, _ = _run(lambda ps: RefLayerwiseAdamW([dict(params=ps, lr_mult=(2.0, 0.5))], lr=1e-2, weight_decay=0.1),
                  init, grads)
    exp, _ = _run(lambda ps: torch.optim.AdamW([dict(params=[ps[0]], lr=2e-2), dict(params=[ps[1]], lr=5e-3)],
                                               lr=1e-2, weight_decay=0.1), init, grads)
    _assert_all_close(ref, exp)


def test_float32_param_math_in_float64():
    init32 = [x.float() for x in _make_params()]
    grads32 = [[g.float() for g in gs] for gs in _make_grads(init32, 1)]
    ref32, opt = _run(lambda ps: RefLayerwiseAdamW(ps, lr=1e-2), init32, grads32)
    ref64, _ = _run(lambda ps: RefLayerwiseAdamW(ps, lr=1e-2), [x.double() for x in init32],
                    [[g.double() for g in gs] for gs in grads32])
    for a, b in zip(ref32, ref64):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b.float(), rtol=0, atol=0)  # one step: float64 result, rounded once
    st = opt.state[opt.param_groups[0]["params"][0]]
    assert st["exp_avg"].dtype == F64 and st["step"].dtype == torch.float32


# --------------------------------------------------------------------------------------------------
# GrokfastAdamW == torch AdamW fed with hand-filtered gradients
# --------------------------------------------------------------------------------------------------
def test_grokfast_adamw_matches_adamw_on_filtered_grads():
    a, lam = 0.9, 1.5
    init = _make_params()
    grads = _make_grads(init, 6)
    filtered, mu = [], None
    for gs in grads:
        mu = [g.clone() for g in gs] if mu is None else [a * m + (1 - a) * g for m, g in zip(mu, gs)]
        filtered.append([g + lam * m for g, m in zip(gs, mu)])
    ref, _ = _run(lambda ps: RefGrokfastAdamW(ps, lr=1e-2, grokfast_alpha=a, grokfast_lambda=lam), init, grads)
    exp, _ = _run(lambda ps: torch.optim.AdamW(ps, lr=1e-2), init, filtered)
    _assert_all_close(ref, exp)


# --------------------------------------------------------------------------------------------------
# LARS by hand
# --------------------------------------------------------------------------------------------------
def _one_step(opt_cls, w, g, **kw):
    p = torch.tensor(w, dtype=F64, requires_grad=True)
    opt = opt_cls([p], **kw)
    p.grad = torch.tensor(g, dtype=F64)
    opt.step()
    return p.detach()


def test_lars_one_step_by_hand():
    # w = [3, 4] (||w|| = 5), g = [0.6, 0.8] (||g|| = 1), wd = 0.1, tc = 0.01, lr = 0.5
    # local = 0.01*5 / (1 + 0.1*5) = 1/30;  s = 0.5/30 = 1/60;  g + wd w = [0.9, 1.2];  v = [0.015, 0.02]
    kw = dict(lr=0.5, momentum=0.0, weight_decay=0.1, trust_coefficient=0.01)
    out = _one_step(RefLARS, [3.0, 4.0], [0.6, 0.8], exclude_1d=False, **kw)
    torch.testing.assert_close(out, torch.tensor([2.985, 3.98], dtype=F64), rtol=0, atol=1e-14)
    # the 1-D tensor is excluded by default: local = 1, wd = 0:  w - 0.5 g = [2.7, 3.6]
    out = _one_step(RefLARS, [3.0, 4.0], [0.6, 0.8], **kw)
    torch.testing.assert_close(out, torch.tensor([2.7, 3.6], dtype=F64), rtol=0, atol=1e-14)
    # nesterov, mu = 0.9, first step: v = u, w -= mu v + u = 1.9 u  (u = [0.015, 0.02])
    out = _one_step(RefLARS, [3.0, 4.0], [0.6, 0.8], exclude_1d=False, nesterov=True,
                    **{**kw, "momentum": 0.9})
    torch.testing.assert_close(out, torch.tensor([3 - 1.9 * 0.015, 4 - 1.9 * 0.02], dtype=F64),
                               rtol=0, atol=1e-14)
    # zero weight -> local = 1: w = -lr (g + wd*0) = [-0.3, -0.4]
    out = _one_step(RefLARS, [0.0, 0.0], [0.6, 0.8], exclude_1d=False, **kw)
    torch.testing.assert_close(out, torch.tensor([-0.3, -0.4], dtype=F64), rtol=0, atol=1e-14)


def test_lars_momentum_two_steps_by_hand():
    # no weight decay, excluded (local = 1): v1 = lr g1, v2 = mu v1 + lr g2, w2 = w0 - v1 - v2
    p = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    opt = RefLARS([p], lr=0.1, momentum=0.5)
    for g in ([1.0, 1.0], [2.0, -1.0]):
        p.grad = torch.tensor(g, dtype=F64)
        opt.step()
    v1 = [0.1, 0.1]
    v2 = [0.5 * 0.1 + 0.2, 0.5 * 0.1 - 0.1]
    torch.testing.assert_close(p.detach(), torch.tensor([1 - v1[0] - v2[0], -2 - v1[1] - v2[1]], dtype=F64))


def test_lars_and_lamb_grokfast_first_step_is_scaled_grad():
    # first step of the filter: mu = g, ghat = (1 + lam) g
    for cls, kw in ((RefLARS, dict(lr=0.5, momentum=0.0, weight_decay=0.1, exclude_1d=False)),
                    (RefLAMB, dict(lr=0.1, weight_decay=0.01))):
        a = _one_step(cls, [3.0, 4.0], [0.6, -0.8], grokfast_alpha=0.9, grokfast_lambda=1.5, **kw)
        b = _one_step(cls, [3.0, 4.0], [1.5, -2.0], **kw)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


# --------------------------------------------------------------------------------------------------
# LAMB by hand
# --------------------------------------------------------------------------------------------------
def test_lamb_one_step_by_hand():
    # w = [3, 4], g = [0.6, -0.8], t = 1 with bias correction and eps = 0: mh/sqrt(vh) = sign(g) = [1, -1]
    # r = [1, -1] + 0.01 [3, 4] = [1.03, -0.96];  ||r|| = sqrt(1.9825);  phi = ||w|| = 5
    w = torch.tensor([3.0, 4.0], dtype=F64)
    r = torch.tensor([1.03, -0.96], dtype=F64)
    rn = math.sqrt(1.03 ** 2 + 0.96 ** 2)
    kw = dict(lr=0.1, eps=0.0, weight_decay=0.01)
    out = _one_step(RefLAMB, [3.0, 4.0], [0.6, -0.8], **kw)
    torch.testing.assert_close(out, w - 0.1 * (5.0 / rn) * r)
    # clamp_value = 2: phi = min(5, 2) = 2
    out = _one_step(RefLAMB, [3.0, 4.0], [0.6, -0.8], clamp_value=2.0, **kw)
    torch.testing.assert_close(out, w - 0.1 * (2.0 / rn) * r)
    # excluded 1-D tensor: ratio 1
    out = _one_step(RefLAMB, [3.0, 4.0], [0.6, -0.8], exclude_1d=True, **kw)
    torch.testing.assert_close(out, w - 0.1 * r)
    # no bias correction: m = 0.1 g, v = 0.001 g^2 -> m/sqrt(v) = sign(g) * 0.1/sqrt(0.001)
    r2 = torch.tensor([1.0, -1.0], dtype=F64) * (0.1 / math.sqrt(0.001)) + 0.01 * w
    out = _one_step(RefLAMB, [3.0, 4.0], [0.6, -0.8], bias_correction=False, **kw)
    torch.testing.assert_close(out, w - 0.1 * (5.0 / float(r2.norm())) * r2)
    # zero weights: ratio 1, r = sign(g) (wd * 0 = 0)
    out = _one_step(RefLAMB, [0.0, 0.0], [0.6, -0.8], **kw)
    torch.testing.assert_close(out, torch.tensor([-0.1, 0.1], dtype=F64))


# --------------------------------------------------------------------------------------------------
# DALS
# --------------------------------------------------------------------------------------------------
def test_dals_unknown_variant():
    with pytest.raises(ValueError):
        RefDALS([torch.zeros(2, requires_grad=True)], variant="turbo")


def test_dals_variant_defaults():
    p = [torch.zeros(2, requires_grad=True)]
    g = RefDALS(p).param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"], g["alpha"], g["trust_coefficient"]) == (0.03, 0.9, 1e-4, 0.6, 0.02)
    assert g["depth_ratio"] == 0.5 and g["lr_mult"] == 1.0
    f = RefDALS(p, variant="fast")
    assert (f.param_groups[0]["lr"], f.param_groups[0]["momentum"], f.warmup_frac) == (0.05, 0.85, 0.02)
    a = RefDALS(p, variant="acc")
    assert (a.param_groups[0]["weight_decay"], a.param_groups[0]["alpha"], a.thresholds) == (5e-4, 0.7, (0.01, 0.001))


def test_dals_first_step_with_warmup_is_noop():
    p = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64, requires_grad=True)
    opt = RefDALS([p])  # warmup_frac 0.05 of 10000 -> W = 500
    p.grad = torch.ones_like(p)
    opt.step()
    assert opt.global_step == 1 and opt.lr_scale == 0.0
    torch.testing.assert_close(p.detach(), torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64), rtol=0, atol=0)
    assert int(opt.state[p]["step"]) == 1
    assert opt.state[p]["momentum_buffer"].abs().sum() > 0  # state did advance


def test_dals_warmup_cosine_by_hand():
    # T = 100, warmup_frac 0.1 -> W = 10;  s(t = k-1) = t/10 for t < 10, else 0.5(1+cos(pi min(1,(t-10)/90)))
    expected = {1: 0.0, 2: 0.1, 6: 0.5, 10: 0.9, 11: 1.0, 41: 0.75, 56: 0.5, 101: 0.0, 120: 0.0}
    # end to end: tc = 0 -> r = clamp(0, 0.2, 5) = 0.2;  momentum 0, wd 0, phase 0 (alpha = 0.3), b = 0.5,
    # constant g: f_k = (1 - 0.3^k) g, ghat_k = (1 - 0.5 * 0.3^k) g;  dtheta_k = -lr s_k 0.2 ghat_k
    lr, g = 0.01, torch.tensor([1.0, -3.0, 2.0], dtype=F64)
    p = torch.tensor([5.0, 1.0, -2.0], dtype=F64, requires_grad=True)
    opt = RefDALS([p], lr=lr, momentum=0.0, weight_decay=0.0, trust_coefficient=0.0,
                  warmup_frac=0.1, total_steps=100)
    for k in range(1, 121):
        before = p.detach().clone()
        p.grad = g.clone()
        opt.step()
        if k in expected:
            assert opt.lr_scale == pytest.approx(expected[k], abs=1e-15)
            s = expected[k]
            torch.testing.assert_close(p.detach() - before, -lr * s * 0.2 * (1 - 0.5 * 0.3 ** k) * g,
                                       rtol=1e-12, atol=1e-15)
    # default warmups: dals W = floor(0.05*10000) = 500, fast W = floor(0.02*10000) = 200
    for variant, k_half in (("dals", 251), ("fast", 101)):
        q = torch.zeros(1, dtype=F64, requires_grad=True)
        o = RefDALS([q], variant=variant)
        for _ in range(k_half):
            q.grad = torch.ones_like(q)
            o.step()
        assert o.lr_scale == pytest.approx(0.5, abs=1e-15)


def test_dals_acc_sgdr_restarts():
    q = torch.zeros(1, dtype=F64, requires_grad=True)
    opt = RefDALS([q], variant="acc", restart_steps=4, restart_mult=2)
    scales = []
    for _ in range(40):
        q.grad = torch.ones_like(q)
        opt.step()
        scales.append(opt.lr_scale)
    assert scales[0] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))  # first s = 0.5(1+cos(pi/T0))
    assert scales[1] == pytest.approx(0.5)
    # restarts (s = 1) at k = T0 = 4, then after cycles of 8 and 16: k = 12, 28
    assert [k for k, s in enumerate(scales, 1) if s == 1.0] == [4, 12, 28]
    assert scales[4] == pytest.approx(0.5 * (1 + math.cos(math.pi / 8)))  # k = 5: c = 1, Ti = 8
    assert scales[12] == pytest.approx(0.5 * (1 + math.cos(math.pi / 16)))  # k = 13: c = 1, Ti = 16
    # default restart_steps = 1000: first s = 0.5(1+cos(pi/1000))
    o = RefDALS([q], variant="acc")
    q.grad = torch.ones_like(q)
    o.step()
    assert o.lr_scale == pytest.approx(0.5 * (1 + math.cos(math.pi / 1000)), abs=1e-15)


def test_dals_phase_detector_sequence():
    opt = RefDALS([torch.zeros(1, requires_grad=True)])
    # delta_t = 0.05 (ema_{t-1} - L_t)/|ema_{t-1}|
    assert opt.phase == 0
    assert opt.update_phase(10.0) == 0 and opt.loss_ema == 10.0             # first call: ema = loss
    assert opt.update_phase(10.0) == 2 and opt.loss_ema == 10.0             # delta = 0
    assert opt.update_phase(torch.tensor(9.0)) == 1                         # delta = 0.05*1/10 = 0.005
    assert opt.loss_ema == pytest.approx(9.95)
    assert opt.update_phase(5.0) == 0                                       # delta = 0.05*4.95/9.95 = 0.0249
    assert opt.loss_ema == pytest.approx(9.7025)
    assert opt.update_phase(20.0) == 2                                      # loss above the ema
    # the acc variant's tau2 = 0.001: delta = 0.0015 is phase 2 for dals, phase 1 for acc
    d = RefDALS([torch.zeros(1, requires_grad=True)])
    a = RefDALS([torch.zeros(1, requires_grad=True)], variant="acc")
    for o in (d, a):
        o.update_phase(10.0)
    assert d.update_phase(9.7) == 2 and a.update_phase(9.7) == 1
    # negative losses use |prev|: -10 -> -11 is a decrease, delta = 0.05*1/10 = 0.005 (phase 1)
    n = RefDALS([torch.zeros(1, requires_grad=True)])
    n.update_phase(-10.0)
    assert n.update_phase(-11.0) == 1                                       # delta = 0.005


def test_dals_step_feeds_loss_and_closure():
    p = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    opt = RefDALS([p])
    p.grad = torch.ones_like(p)
    assert opt.step(loss=3.0) is None
    assert opt.loss_ema == 3.0

    seen = {}

    def closure():
        seen["grad_enabled"] = torch.is_grad_enabled()
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    out = opt.step(closure)
    assert seen["grad_enabled"] and out.item() == pytest.approx(5.0)
    assert opt.loss_ema == pytest.approx(0.95 * 3.0 + 0.05 * 5.0)
    assert opt.global_step == 2


def test_dals_fast_filter_frozen_in_phase0():
    # warmup 0 -> s = 1 on step 1; tc = 0 -> r = 0.2; wd = 0
    g = torch.tensor([1.0, -2.0], dtype=F64)
    p = torch.tensor([3.0, 4.0], dtype=F64, requires_grad=True)
    opt = RefDALS([p], variant="fast", lr=0.1, weight_decay=0.0, trust_coefficient=0.0, warmup_frac=0.0)
    p.grad = g.clone()
    opt.step()                                                              # phase 0: bypass, ghat = g
    assert torch.equal(opt.state[p]["filtered_grad"], torch.zeros(2, dtype=F64))
    torch.testing.assert_close(p.detach(), torch.tensor([3.0, 4.0], dtype=F64) - 0.1 * 0.2 * g)
    # phase 1 (alpha = a0 = 0.6): f = 0.4 g
    opt.update_phase(10.0)
    assert opt.update_phase(9.0) == 1
    p.grad = g.clone()
    opt.step()
    torch.testing.assert_close(opt.state[p]["filtered_grad"], 0.4 * g)
    # back to phase 0: f stays frozen at 0.4 g even with a different gradient
    assert opt.update_phase(1.0) == 0
    p.grad = 7.0 * g
    opt.step()
    torch.testing.assert_close(opt.state[p]["filtered_grad"], 0.4 * g, rtol=0, atol=0)


def test_dals_zero_param_ratio_one_and_clamp():
    # theta = 0: r = 1. Step 1, W = 0 -> s = 1; phase 0 alpha 0.3: f = 0.7 g; b = 0.5: ghat = 0.85 g
    g = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    p = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = RefDALS([p], lr=0.1, warmup_frac=0.0, trust_coefficient=0.02)
    p.grad = g.clone()
    opt.step()
    torch.testing.assert_close(p.detach(), -0.1 * 1.0 * 0.85 * g)
    # large trust coefficient: ratio clamped to 5 (wd = 0)
    w0 = torch.tensor([3.0, 4.0], dtype=F64)
    q = w0.clone().requires_grad_(True)
    o = RefDALS([q], lr=0.1, warmup_frac=0.0, weight_decay=0.0, trust_coefficient=100.0)
    q.grad = torch.tensor([1.0, 1.0], dtype=F64)
    o.step()
    torch.testing.assert_close(q.detach(), w0 - 0.1 * 5.0 * 0.85 * torch.tensor([1.0, 1.0], dtype=F64))


def test_dals_depth_ratio_lr_mult_and_weight_decay():
    # one step, W = 0 (s = 1), phase 0 (alpha 0.3: f = 0.7 g), tc = 0 (r = 0.2), m = ghat
    # depth 0 -> b = 0.3, ghat = 0.3 g + 0.7*0.7 g = 0.79 g;  depth 1 -> b = 0.7, ghat = 0.7 g + 0.3*0.7 g = 0.91 g
    # coupled wd 0.1: ghat += 0.1 theta
    w = [torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([-1.0, 0.5, 0.25], dtype=F64)]
    g = [torch.tensor([0.3, -0.2], dtype=F64), torch.tensor([1.0, 2.0, -1.0], dtype=F64)]
    params = [x.clone().requires_grad_(True) for x in w]
    opt = RefDALS([dict(params=params, depth_ratio=[0.0, 1.0], lr_mult=[1.0, 0.5])],
                  lr=0.2, weight_decay=0.1, trust_coefficient=0.0, warmup_frac=0.0)
    for p, gg in zip(params, g):
        p.grad = gg.clone()
    opt.step()
    torch.testing.assert_close(params[0].detach(), w[0] - 0.2 * 1.0 * 0.2 * (0.79 * g[0] + 0.1 * w[0]))
    torch.testing.assert_close(params[1].detach(), w[1] - 0.2 * 0.5 * 0.2 * (0.91 * g[1] + 0.1 * w[1]))


def test_dals_maximize_flips_gradient():
    init = _make_params()
    grads = _make_grads(init, 5)
    neg = [[-g for g in gs] for gs in grads]
    a, _ = _run(lambda ps: RefDALS(ps, warmup_frac=0.0, maximize=True), init, grads)
    b, _ = _run(lambda ps: RefDALS(ps, warmup_frac=0.0), init, neg)
    _assert_all_close(a, b, rtol=0, atol=0)
