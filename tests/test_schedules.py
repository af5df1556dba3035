"""torch_layerlr.schedules: closed forms, torch parity, lr_mult untouched, state_dict, argument checks."""

import math

import pytest
import torch

from torch_layerlr.schedules import SGDR, STLR, WarmupCosine


def _sgd(lr=0.1, groups=None):
    """Plain torch SGD with two groups; the second carries an lr_mult list that must stay untouched."""
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2))
    c = torch.nn.Parameter(torch.zeros(1))
    if groups is None:
        groups = [
            {"params": [a], "lr": lr},
            {"params": [b, c], "lr": 2 * lr, "lr_mult": [0.25, 0.5]},
        ]
    return torch.optim.SGD(groups, lr=lr)


def _run(sched_cls, n_steps, lr=0.1, **kw):
    """lr of each group after 0, 1, ..., n_steps-1 scheduler steps."""
    opt = _sgd(lr)
    sched = sched_cls(opt, **kw)
    out = []
    for _ in range(n_steps):
        out.append([g["lr"] for g in opt.param_groups])
        assert sched.get_last_lr() == out[-1]
        opt.step()
        sched.step()
    assert opt.param_groups[1]["lr_mult"] == [0.25, 0.5]
    assert "lr_mult" not in opt.param_groups[0]
    return out


# ------------------------------------------------------------------------------------------------
# WarmupCosine
# ------------------------------------------------------------------------------------------------
def test_warmup_cosine_hand_values():
    # T=10, W=2, rho=0.1, base lrs 0.1 and 0.2
    lrs = _run(WarmupCosine, 13, total_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    expected_factor = {
        0: 0.0,
        1: 0.5,
        2: 1.0,
        # t=4: progress (4-2)/8 = 1/4: 0.1 + 0.9 * 0.5 * (1 + cos(pi/4))
        4: 0.1 + 0.9 * 0.5 * (1 + math.sqrt(0.5)),
        6: 0.1 + 0.9 * 0.5,  # halfway: cos(pi/2) = 0
        10: 0.1,
        12: 0.1,  # clamped after T
    }
    for t, f in expected_factor.items():
        assert lrs[t][0] == pytest.approx(0.1 * f, rel=1e-12, abs=1e-15)
        assert lrs[t][1] == pytest.approx(0.2 * f, rel=1e-12, abs=1e-15)
    # monotone decay after the warmup
    assert all(lrs[t][0] >= lrs[t + 1][0] for t in range(2, 12))


def test_warmup_cosine_matches_dals_schedule_without_warmup():
    # W = 0, rho = 0: s(t) = 0.5 (1 + cos(pi min(1, t/T)))
    T = 7
    lrs = _run(WarmupCosine, 9, lr=1.0, total_steps=T)
    for t in range(9):
        assert lrs[t][0] == pytest.approx(0.5 * (1 + math.cos(math.pi * min(1.0, t / T))), abs=1e-15)


# ------------------------------------------------------------------------------------------------
# SGDR
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T_0,T_mult,ratio", [(3, 2, 0.0), (4, 1, 0.1), (2, 3, 0.05)])
def test_sgdr_equals_torch_cosine_warm_restarts(T_0, T_mult, ratio):
    base = [0.1, 0.2]
    ours = _run(SGDR, 40, lr=0.1, T_0=T_0, T_mult=T_mult, eta_min_ratio=ratio)
    # torch's scheduler takes one absolute eta_min for all groups: run it per group
    for g, lr in enumerate(base):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            opt, T_0=T_0, T_mult=T_mult, eta_min=ratio * lr
        )
        for t in range(40):
            assert ours[t][g] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-13, abs=1e-16)
            opt.step()
            ref.step()


def test_sgdr_hand_values():
    # T_0=2, T_mult=2: cycles [0,2), [2,6), [6,14)
    lrs = _run(SGDR, 15, lr=1.0, T_0=2)
    expected = {0: 1.0, 1: 0.5, 2: 1.0, 3: 0.5 * (1 + math.cos(math.pi / 4)), 4: 0.5, 6: 1.0, 14: 1.0}
    for t, v in expected.items():
        assert lrs[t][0] == pytest.approx(v, abs=1e-15)


# ------------------------------------------------------------------------------------------------
# STLR
# ------------------------------------------------------------------------------------------------
def _stlr_ref(t, T, cut_frac, ratio, lr_max):
    cut = math.floor(T * cut_frac)
    if t < cut:
        p = t / cut
    else:
        p = 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    p = min(1.0, max(0.0, p))
    return lr_max * (1 + p * (ratio - 1)) / ratio


def test_stlr_hand_values():
    # T=100, cut_frac=0.1 -> cut=10; decay length 10*(10-1) = 90
    lrs = _run(STLR, 105, lr=0.01, total_steps=100)
    lo = 0.01 / 32
    assert lrs[0][0] == pytest.approx(lo, rel=1e-12)
    assert lrs[5][0] == pytest.approx(0.01 * (1 + 0.5 * 31) / 32, rel=1e-12)
    assert lrs[10][0] == pytest.approx(0.01, rel=1e-12)  # t == cut: p = 1
    assert lrs[55][0] == pytest.approx(0.01 * (1 + 0.5 * 31) / 32, rel=1e-12)
    assert lrs[100][0] == pytest.approx(lo, rel=1e-12)
    assert lrs[104][0] == pytest.approx(lo, rel=1e-12)  # clamped past T
    for t in range(105):
        assert lrs[t][0] == pytest.approx(_stlr_ref(t, 100, 0.1, 32, 0.01), rel=1e-12)
        assert lrs[t][1] == pytest.approx(_stlr_ref(t, 100, 0.1, 32, 0.02), rel=1e-12)


def test_stlr_non_integer_cut_and_other_ratio():
    for t, (lr0, lr1) in enumerate(_run(STLR, 60, lr=0.5, total_steps=47, cut_frac=0.3, ratio=8)):
        assert lr0 == pytest.approx(_stlr_ref(t, 47, 0.3, 8, 0.5), rel=1e-12)
        assert lr1 == pytest.approx(_stlr_ref(t, 47, 0.3, 8, 1.0), rel=1e-12)


def test_stlr_cut_zero_guard():
    # floor(5 * 0.1) = 0 -> cut = 1: lr_max/ratio at t=0, lr_max at t=1, then linear decay over 9 steps
    lrs = _run(STLR, 12, lr=1.0, total_steps=5)
    assert lrs[0][0] == pytest.approx(1 / 32)
    assert lrs[1][0] == pytest.approx(1.0)
    assert lrs[2][0] == pytest.approx((1 + (1 - 1 / 9) * 31) / 32)
    assert lrs[10][0] == pytest.approx(1 / 32)
    assert all(math.isfinite(v[0]) for v in lrs)


# ------------------------------------------------------------------------------------------------
# generic behaviour
# ------------------------------------------------------------------------------------------------
SCHEDULES = [
    (WarmupCosine, dict(total_steps=20, warmup_steps=4, min_lr_ratio=0.05)),
    (SGDR, dict(T_0=3, T_mult=2, eta_min_ratio=0.01)),
    (STLR, dict(total_steps=20, cut_frac=0.2, ratio=16)),
]


@pytest.mark.parametrize("cls,kw", SCHEDULES)
def test_state_dict_round_trip(cls, kw):
    opt = _sgd()
    sched = cls(opt, **kw)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt_state = opt.state_dict()

    opt2 = _sgd()
    sched2 = cls(opt2, **kw)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 7
    for _ in range(10):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]
        assert sched.get_last_lr() == sched2.get_last_lr()
    assert opt2.param_groups[1]["lr_mult"] == [0.25, 0.5]


@pytest.mark.parametrize("cls,kw", SCHEDULES)
def test_closed_form_and_resume_with_last_epoch(cls, kw):
    opt = _sgd()
    sched = cls(opt, **kw)
    history = []
    for _ in range(12):
        history.append([g["lr"] for g in opt.param_groups])
        assert sched._get_closed_form_lr() == history[-1]
        opt.step()
        sched.step()
    # resume from a checkpointed step count (initial_lr is kept in the groups)
    sched_b = cls(opt, last_epoch=4, **kw)
    assert [g["lr"] for g in opt.param_groups] == history[5]
    del sched_b


def test_lr_mult_scalar_key_untouched_and_used_once():
    """A scheduler scales group['lr'] only; the discriminative multiplier stays a separate factor."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 1.0, "lr_mult": 0.3}])
    sched = STLR(opt, total_steps=10)
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr_mult"] == 0.3
    assert opt.param_groups[0]["lr"] == pytest.approx(_stlr_ref(3, 10, 0.1, 32, 1.0))
    assert sched.base_lrs == [1.0]


@pytest.mark.parametrize(
    "cls,kw,name",
    [
        (WarmupCosine, dict(total_steps=-3), "total_steps"),
        (WarmupCosine, dict(total_steps=0), "total_steps"),
        (WarmupCosine, dict(total_steps=2.5), "total_steps"),
        (WarmupCosine, dict(total_steps=True), "total_steps"),
        (WarmupCosine, dict(total_steps=10, warmup_steps=-1), "warmup_steps"),
        (WarmupCosine, dict(total_steps=10, warmup_steps=10), "warmup_steps"),
        (WarmupCosine, dict(total_steps=10, min_lr_ratio=1.5), "min_lr_ratio"),
        (WarmupCosine, dict(total_steps=10, min_lr_ratio=float("nan")), "min_lr_ratio"),
        (WarmupCosine, dict(total_steps=10, last_epoch=-2), "last_epoch"),
        (SGDR, dict(T_0=0), "T_0"),
        (SGDR, dict(T_0=3.0), "T_0"),
        (SGDR, dict(T_0=3, T_mult=0), "T_mult"),
        (SGDR, dict(T_0=3, T_mult=1.5), "T_mult"),
        (SGDR, dict(T_0=3, eta_min_ratio=-0.1), "eta_min_ratio"),
        (STLR, dict(total_steps=-3), "total_steps"),
        (STLR, dict(total_steps=10, cut_frac=0.0), "cut_frac"),
        (STLR, dict(total_steps=10, cut_frac=1.0), "cut_frac"),
        (STLR, dict(total_steps=10, ratio=0.5), "ratio"),
        (STLR, dict(total_steps=10, ratio="32"), "ratio"),
    ],
)
def test_bad_arguments(cls, kw, name):
    with pytest.raises(ValueError, match=name):
        cls(_sgd(), **kw)


def test_error_message_format():
    with pytest.raises(ValueError, match=r"^total_steps must be a positive int, got -3$"):
        WarmupCosine(_sgd(), total_steps=-3)


# ------------------------------------------------------------------------------------------------
# chaining: ChainedScheduler / SequentialLR compose ours with torch's (recursive get_lr)
# ------------------------------------------------------------------------------------------------
def _warmup_cosine_ref(t, T, W, rho):
    if t < W:
        return t / W
    return rho + (1 - rho) * 0.5 * (1 + math.cos(math.pi * min(1.0, (t - W) / (T - W))))


def _sgdr_ref(t, T_0, T_mult, rho):
    T_i = T_0
    while t >= T_i:  # walk the cycles one by one
        t -= T_i
        T_i *= T_mult
    return rho + (1 - rho) * (1 + math.cos(math.pi * t / T_i)) / 2


FACTORS = [
    (WarmupCosine, dict(total_steps=20, warmup_steps=0, min_lr_ratio=0.05),
     lambda t: _warmup_cosine_ref(t, 20, 0, 0.05)),
    (SGDR, dict(T_0=3, T_mult=2, eta_min_ratio=0.01), lambda t: _sgdr_ref(t, 3, 2, 0.01)),
    (STLR, dict(total_steps=20, cut_frac=0.2, ratio=16), lambda t: _stlr_ref(t, 20, 0.2, 16, 1.0)),
]


def _chained_lrs(make, n_steps, lr=0.1):
    """lr of each group after 0 .. n_steps-1 steps of the ChainedScheduler of the schedulers ``make(opt)``."""
    opt = _sgd(lr)
    sched = torch.optim.lr_scheduler.ChainedScheduler(make(opt))
    out = []
    for _ in range(n_steps):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("ours_first", [True, False])
@pytest.mark.parametrize("cls,kw,s", FACTORS)
def test_chained_with_torch_exponential_compounds(cls, kw, s, ours_first):
    """ChainedScheduler([ours, ExponentialLR(0.9)]) (either order): lr = base_lr * s(t) * 0.9**t."""
    def make(opt):
        ours, exp = cls(opt, **kw), torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
        return [ours, exp] if ours_first else [exp, ours]

    for t, (lr0, lr1) in enumerate(_chained_lrs(make, 30)):
        assert lr0 == pytest.approx(0.1 * s(t) * 0.9**t, rel=1e-12, abs=1e-300)
        assert lr1 == pytest.approx(0.2 * s(t) * 0.9**t, rel=1e-12, abs=1e-300)


def test_two_of_ours_chained_multiply():
    stlr, sgdr = FACTORS[2], FACTORS[1]
    lrs = _chained_lrs(lambda opt: [stlr[0](opt, **stlr[1]), sgdr[0](opt, **sgdr[1])], 25)
    for t, (lr0, _) in enumerate(lrs):
        assert lr0 == pytest.approx(0.1 * stlr[2](t) * sgdr[2](t), rel=1e-12)


def test_chained_equals_torch_cosine_chain():
    """Our WarmupCosine without warmup and floor is torch's CosineAnnealingLR up to T: chained with torch's
    StepLR, both chains give the same lrs."""
    ours = _chained_lrs(lambda o: [WarmupCosine(o, total_steps=12),
                                   torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5)], 12)
    theirs = _chained_lrs(lambda o: [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12),
                                     torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5)], 12)
    for a, b in zip(ours, theirs):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-300)
    assert ours[5][0] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 5 / 12)) * 0.5, rel=1e-12)


def test_chained_warmup_from_zero_restarts_from_base():
    """A zero factor (warmup's first step) cannot be divided out: the next step starts again from base_lr,
    which is exact when ours comes first in the chain (the other scheduler's factor at t = 0 is 1)."""
    lrs = _chained_lrs(lambda o: [WarmupCosine(o, total_steps=10, warmup_steps=4),
                                  torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8)], 14)
    for t, (lr0, _) in enumerate(lrs):
        assert lr0 == pytest.approx(0.1 * _warmup_cosine_ref(t, 10, 4, 0.0) * 0.8**t, rel=1e-12, abs=1e-300)
    assert lrs[0][0] == 0.0 and lrs[-1][0] == 0.0


def test_alone_is_exactly_the_closed_form():
    """Without another scheduler the recursive step writes the closed form itself: no rounding drift."""
    for cls, kw, _ in FACTORS:
        opt = _sgd()
        sched = cls(opt, **kw)
        for _ in range(200):
            opt.step()
            sched.step()
            assert [g["lr"] for g in opt.param_groups] == sched._get_closed_form_lr()


def test_sequential_lr_torch_warmup_then_ours():
    """SequentialLR([LinearLR warmup, SGDR], milestones=[5]): torch's warmup, then our SGDR from its start."""
    opt = _sgd()
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=4)
    sgdr = SGDR(opt, T_0=3, T_mult=2, eta_min_ratio=0.01)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, sgdr], milestones=[5])
    for t in range(30):
        f = 0.1 + 0.9 * min(t, 4) / 4 if t < 5 else _sgdr_ref(t - 5, 3, 2, 0.01)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * f, 0.2 * f], rel=1e-12)
        opt.step()
        sched.step()


def test_sequential_lr_ours_then_torch():
    """SequentialLR([STLR, ExponentialLR], milestones=[8]): ours first, then torch's decay from base_lr."""
    opt = _sgd()
    stlr = STLR(opt, total_steps=8, cut_frac=0.25, ratio=4)
    exp = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.7)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [stlr, exp], milestones=[8])
    for t in range(15):
        f = _stlr_ref(t, 8, 0.25, 4, 1.0) if t < 8 else 0.7 ** (t - 8)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * f, 0.2 * f], rel=1e-12)
        opt.step()
        sched.step()


def test_chained_state_dict_resume():
    """A ChainedScheduler of ours and torch's resumes from state dicts exactly."""
    def make(opt):
        return torch.optim.lr_scheduler.ChainedScheduler(
            [STLR(opt, total_steps=20, cut_frac=0.2), torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95)])

    opt = _sgd()
    sched = make(opt)
    for _ in range(6):
        opt.step()
        sched.step()
    opt2 = _sgd()
    sched2 = make(opt2)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for _ in range(10):
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]


def test_chained_with_tensor_lr():
    """A tensor lr (torch's capturable/fused convention) is rescaled in place, chained as a float one is."""
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=torch.tensor(0.1, dtype=torch.float64))
    lr = opt.param_groups[0]["lr"]
    sched = torch.optim.lr_scheduler.ChainedScheduler(
        [STLR(opt, total_steps=20, cut_frac=0.2, ratio=16), torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)])
    for t in range(15):
        assert opt.param_groups[0]["lr"] is lr
        assert float(lr) == pytest.approx(0.1 * _stlr_ref(t, 20, 0.2, 16, 1.0) * 0.9**t, rel=1e-12)
        opt.step()
        sched.step()
