"""Per-layer multiplier schedules (torch_layerlr.schedules: LayerMultSequence, UnequalThenEqual, NormBalancedLR)
on every optimizer of the table (tests/optim_db.py), each against its float64 reference optimizer
(tests/reference) whose ``lr_mult`` the test sets by hand from the multipliers it computes itself; and a GD
run against a plain float64 simulation written here."""

from __future__ import annotations

import copy
import math
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from optim_db import OPTIM_IDS, dals_losses, optim_db  # noqa: E402

from torch_layerlr.models import TwoLayerLinear, two_layer_target  # noqa: E402
from torch_layerlr.optim import LayerwiseSGD  # noqa: E402
from torch_layerlr.schedules import (LayerMultSequence, NormBalancedLR, UnequalThenEqual,  # noqa: E402
                                     WarmupCosine)
from torch_layerlr.theory import two_step  # noqa: E402

F64 = torch.float64
SHAPES = [(6, 5), (5,), (4, 3), (3,)]
LAYERS = [0, 0, 1, 2]  # a weight and its bias form layer 0


def make_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(*s, generator=g, dtype=F64) * (1 + i) for i, s in enumerate(SHAPES)]
    grads = [[torch.randn(*s, generator=g, dtype=F64) for s in SHAPES] for _ in range(6)]
    return params, grads


def norm_rule(params, layers, rule, scale=1.0):
    """The paper's rule, generalised (see torch_layerlr.schedules), computed here from the reference params."""
    L = max(layers) + 1
    norms = [math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p, i in zip(params, layers) if i == k)) for k in range(L)]
    if rule == "inverse":
        inv = [1 / n for n in norms]
        return [scale * L * v / sum(inv) for v in inv]
    S = sum(norms)
    return [scale * L / (L - 1) * (S - n) / S for n in norms]


def rel(x, y):
    return float((x.double() - y.double()).norm() / max(float(y.double().norm()), 1e-300))


def expected_mults(kind, t, ref_params):
    if kind == "unequal_then_equal":
        return [0.2, 1.3, 1.5] if t < 2 else [1.0, 1.0, 1.0]
    if kind == "sequence":
        seq = [[2.0, 0.0, 1.0], [0.0, 2.0, 1.0], [0.5, 0.5, 2.0]]
        return seq[min(t, 2)]
    return norm_rule(ref_params, LAYERS, kind.split("_")[1], scale=0.7)


def make_schedule(kind, opt):
    if kind == "unequal_then_equal":
        return UnequalThenEqual(opt, first=[0.2, 1.3, 1.5], budget=3.0, unequal_steps=2, layers=LAYERS)
    if kind == "sequence":
        return LayerMultSequence(opt, [[2.0, 0.0, 1.0], [0.0, 2.0, 1.0], [0.5, 0.5, 2.0]], layers=LAYERS)
    return NormBalancedLR(opt, rule=kind.split("_")[1], scale=0.7, layers=LAYERS)


@pytest.mark.parametrize("kind", ["unequal_then_equal", "sequence", "norm_inverse", "norm_complement"])
@pytest.mark.parametrize("info", optim_db, ids=OPTIM_IDS)
def test_schedules_on_every_optimizer(info, kind):
    """Fused optimizer + schedule == float64 reference with lr_mult set by hand, 5 steps, two param groups."""
    init, grads = make_params()
    pf = [p.clone().requires_grad_() for p in init]
    pr = [p.clone().requires_grad_() for p in init]
    fused = info.fused([{"params": pf[:2]}, {"params": pf[2:]}])
    ref = info.ref([{"params": pr[:2]}, {"params": pr[2:]}])
    sched = make_schedule(kind, fused)
    losses, _ = dals_losses(5) if info.is_dals else (None, None)
    for t in range(5):
        mult = expected_mults(kind, t, pr)
        assert sched.get_last_mult() == pytest.approx(mult, rel=1e-13)
        per_param = [mult[i] for i in LAYERS]
        ref.param_groups[0]["lr_mult"], ref.param_groups[1]["lr_mult"] = per_param[:2], per_param[2:]
        assert fused.param_groups[0]["lr_mult"] + fused.param_groups[1]["lr_mult"] == pytest.approx(per_param,
                                                                                                   rel=1e-13)
        for p, q, g in zip(pf, pr, grads[t]):
            p.grad, q.grad = g.clone(), g.clone()
        if info.is_dals:
            fused.step(loss=losses[t])
            ref.step(loss=losses[t])
        else:
            fused.step()
            ref.step()
        sched.step()
        for p, q in zip(pf, pr):
            assert rel(p.detach(), q.detach()) <= 1e-12


def test_unequal_then_equal_values_and_optimal():
    model = TwoLayerLinear(16, dtype=F64)
    opt = LayerwiseSGD(model.parameters(), lr=2.5)
    sched = UnequalThenEqual(opt, "optimal", budget=400.0)
    split = two_step.optimal_split(400.0 * 2.5, 16, steps=1)
    assert opt.param_groups[0]["lr_mult"] == pytest.approx([split.eta1 / 2.5, split.eta2 / 2.5]) == [0.0, 400.0]
    sched.step()
    assert opt.param_groups[0]["lr_mult"] == [200.0, 200.0]
    sched.step()
    assert opt.param_groups[0]["lr_mult"] == [200.0, 200.0]
    # explicit first, budget by default its sum, several unequal steps
    sched = UnequalThenEqual(opt, first=(1.0, 3.0), unequal_steps=3)
    seen = [list(opt.param_groups[0]["lr_mult"])]
    for _ in range(4):
        sched.step()
        seen.append(list(opt.param_groups[0]["lr_mult"]))
    assert seen == [[1.0, 3.0]] * 3 + [[2.0, 2.0]] * 2
    # errors
    with pytest.raises(ValueError, match="sums to"):
        UnequalThenEqual(opt, first=(1.0, 3.0), budget=5.0)
    with pytest.raises(ValueError, match="needs a budget"):
        UnequalThenEqual(opt, "optimal")
    with pytest.raises(ValueError, match="'optimal'"):
        UnequalThenEqual(opt, "best", budget=1.0)
    with pytest.raises(ValueError, match="layers"):
        UnequalThenEqual(opt, first=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match=">= 0"):
        UnequalThenEqual(opt, first=(-1.0, 3.0))
    three = LayerwiseSGD([torch.zeros(2, requires_grad=True) for _ in range(3)], lr=1.0)
    with pytest.raises(ValueError, match="two-layer"):
        UnequalThenEqual(three, "optimal", budget=3.0)
    with pytest.raises(ValueError, match="every index"):
        LayerMultSequence(three, [[1.0, 1.0, 1.0]], layers=[0, 2, 2])
    with pytest.raises(ValueError, match="one layer index"):
        LayerMultSequence(three, [[1.0, 1.0]], layers=[0, 1])
    with pytest.raises(TypeError):
        NormBalancedLR(model)


def test_state_dict_resume():
    def run(resume_at=None):
        torch.manual_seed(0)
        model = TwoLayerLinear(8, dtype=F64, generator=torch.Generator().manual_seed(1))
        opt = LayerwiseSGD(model.parameters(), lr=0.5, momentum=0.9)
        sched = NormBalancedLR(opt)
        seq = []
        for t in range(6):
            if t == resume_at:
                o_sd, s_sd = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())
                m_sd = copy.deepcopy(model.state_dict())
                model = TwoLayerLinear(8, dtype=F64)
                model.load_state_dict(m_sd)
                opt = LayerwiseSGD(model.parameters(), lr=0.5, momentum=0.9)
                sched = NormBalancedLR(opt)
                opt.load_state_dict(o_sd)
                sched.load_state_dict(s_sd)
            opt.zero_grad()
            (model(torch.eye(8, dtype=F64)) - 0.3).pow(2).sum().backward()
            opt.step()
            sched.step()
            seq.append((sched.last_epoch, list(opt.param_groups[0]["lr_mult"]), model.w1.detach().clone()))
        return seq

    a, b = run(), run(resume_at=3)
    for (ta, ma, wa), (tb, mb, wb) in zip(a, b):
        assert ta == tb and ma == mb and torch.equal(wa, wb)
    sched = UnequalThenEqual(LayerwiseSGD([torch.zeros(1, requires_grad=True) for _ in range(2)], lr=1.0),
                             first=(1.0, 2.0))
    sd = sched.state_dict()
    assert "optimizer" not in sd and sd["first"] == [1.0, 2.0] and sd["last_epoch"] == 0


def test_norm_balanced_is_the_papers_rule_for_two_layers():
    """eta_{W_i} = 2 ||W_j|| / (||W_1|| + ||W_2||) * lr, j != i (both generalisations)."""
    w1 = torch.randn(5, 4, dtype=F64) * 3
    w2 = torch.randn(4, 4, dtype=F64)
    n1, n2 = float(w1.norm()), float(w2.norm())
    for rule in ("inverse", "complement"):
        opt = LayerwiseSGD([w1.requires_grad_(), w2.requires_grad_()], lr=0.1)
        NormBalancedLR(opt, rule=rule)
        assert opt.param_groups[0]["lr_mult"] == pytest.approx([2 * n2 / (n1 + n2), 2 * n1 / (n1 + n2)], rel=1e-14)
    # equal norms: all ones
    eq = [torch.ones(3, 2, dtype=F64, requires_grad=True) for _ in range(3)]
    opt = LayerwiseSGD(eq, lr=1.0)
    assert NormBalancedLR(opt).get_last_mult() == pytest.approx([1.0, 1.0, 1.0], rel=1e-15)
    with pytest.raises(ValueError, match="rule"):
        NormBalancedLR(opt, rule="harmonic")


@pytest.mark.parametrize("rule", ["inverse", "complement"])
def test_norm_balanced_leaves_zero_norm_and_vectors_at_one(rule):
    """A linear net with zero-initialised biases: the matrices are balanced among themselves (the two-layer rule
    computed here from their norms), every bias keeps multiplier 1 (scale), with or without a norm."""
    g = torch.Generator().manual_seed(3)
    w1, w2 = torch.randn(6, 4, generator=g, dtype=F64) * 3, torch.randn(2, 6, generator=g, dtype=F64)
    b1, b2 = torch.zeros(6, dtype=F64), torch.randn(2, generator=g, dtype=F64)
    n1, n2 = float(w1.norm()), float(w2.norm())
    params = [t.requires_grad_() for t in (w1, b1, w2, b2)]
    sched = NormBalancedLR(LayerwiseSGD(params, lr=0.1), rule=rule, scale=0.5)
    expected = [0.5 * 2 * n2 / (n1 + n2), 0.5, 0.5 * 2 * n1 / (n1 + n2), 0.5]
    assert sched.get_last_mult() == pytest.approx(expected, rel=1e-14)
    # explicit layers: every layer with a nonzero norm is balanced (vectors too), a zero-norm one keeps scale
    zero = torch.zeros(3, 3, dtype=F64, requires_grad=True)
    a, b = torch.full((3,), 2.0, dtype=F64, requires_grad=True), torch.ones(3, 3, dtype=F64, requires_grad=True)
    sched = NormBalancedLR(LayerwiseSGD([a, zero, b], lr=1.0), rule=rule, layers=[0, 1, 2])
    na, nb = math.sqrt(12.0), 3.0
    assert sched.get_last_mult() == pytest.approx([2 * nb / (na + nb), 1.0, 2 * na / (na + nb)], rel=1e-14)
    # all zero, or one balanced layer: nothing to balance
    assert NormBalancedLR(LayerwiseSGD([zero], lr=1.0), rule=rule).get_last_mult() == [1.0]
    assert NormBalancedLR(LayerwiseSGD([zero, b], lr=1.0), rule=rule).get_last_mult() == [1.0, 1.0]
    # eps > 0 makes a zero layer's norm eps: it is balanced, and learns fastest
    assert NormBalancedLR(LayerwiseSGD([zero, b], lr=1.0), eps=1e-3).get_last_mult()[0] > 1.9


def test_norm_balanced_zero_bias_model_trains_against_float64_simulation():
    """nn.Linear layers with zero biases: LayerwiseSGD + NormBalancedLR == plain float64 GD with the matrices'
    multipliers applied by hand and the biases at multiplier 1."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
    with torch.no_grad():
        model[0].bias.zero_()
        model[2].bias.zero_()
        model[2].weight.mul_(4.0)
    x, y = torch.randn(16, 4, dtype=F64), torch.randn(16, 1, dtype=F64)
    ref = [p.detach().clone().requires_grad_() for p in model.parameters()]
    opt = LayerwiseSGD(model.parameters(), lr=0.05)
    sched = NormBalancedLR(opt)
    for _ in range(5):
        w1, b1, w2, b2 = ref
        n1, n2 = float(w1.detach().norm()), float(w2.detach().norm())
        mult = [2 * n2 / (n1 + n2), 1.0, 2 * n1 / (n1 + n2), 1.0]
        loss = ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()
        grads = torch.autograd.grad(loss, ref)
        ref = [(p - 0.05 * m * g).detach().requires_grad_() for p, m, g in zip(ref, mult, grads)]
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        sched.step()
        for p, q in zip(model.parameters(), ref):
            assert rel(p.detach(), q.detach()) <= 1e-12
    assert float(model[0].bias.detach().abs().sum()) > 0  # the zero biases train


def test_norm_balanced_gd_against_float64_simulation():
    """Two-layer net, imbalanced start (W2 scaled by 3): LayerwiseSGD + NormBalancedLR == plain NumPy GD with
    the rule applied by hand each step; the norm gap shrinks while the loss falls."""
    h, lr = 12, 0.5 * 12 ** 1.5
    g = torch.Generator().manual_seed(4)
    model = TwoLayerLinear(h, dtype=F64, generator=g)
    beta = two_layer_target(h, h, g, F64)
    with torch.no_grad():
        model.w2.mul_(3.0)
    w1, w2, b = model.w1.detach().numpy().copy(), model.w2.detach().numpy().copy(), beta.numpy()
    opt = LayerwiseSGD(model.parameters(), lr=lr)
    sched = NormBalancedLR(opt)
    gap0, loss0 = abs(np.linalg.norm(w1) - np.linalg.norm(w2)), np.sum((w1 @ w2 / h - b) ** 2)
    for _ in range(8):
        n1, n2 = np.linalg.norm(w1), np.linalg.norm(w2)
        m1, m2 = 2 * n2 / (n1 + n2), 2 * n1 / (n1 + n2)
        r = w1 @ w2 / h - b
        w1, w2 = w1 - lr * m1 * r @ w2.T / h, w2 - lr * m2 * w1.T @ r / h
        opt.zero_grad()
        model.whitened_train_loss(beta).backward()
        opt.step()
        sched.step()
        assert np.abs(model.w1.detach().numpy() - w1).max() <= 1e-12 * np.abs(w1).max()
        assert np.abs(model.w2.detach().numpy() - w2).max() <= 1e-12 * np.abs(w2).max()
    assert abs(np.linalg.norm(w1) - np.linalg.norm(w2)) < gap0 and np.sum((w1 @ w2 / h - b) ** 2) < loss0


def test_layer_mult_schedules_compose_with_lr_schedulers():
    params = [torch.zeros(3, dtype=F64, requires_grad=True) for _ in range(2)]
    opt = LayerwiseSGD(params, lr=1.0)
    lr_sched = WarmupCosine(opt, total_steps=10, warmup_steps=2)
    mult = UnequalThenEqual(opt, first=(0.5, 1.5))
    lrs, mults = [], []
    for _ in range(4):
        for p in params:
            p.grad = torch.ones(3, dtype=F64)
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
        mults.append(list(opt.param_groups[0]["lr_mult"]))
        lr_sched.step()
        mult.step()
    assert lrs == [0.0, 0.5, 1.0, pytest.approx(0.5 * (1 + math.cos(math.pi / 8)))]
    assert mults == [[0.5, 1.5], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    # parameters moved by lr * mult: steps 2..4 with lr 0.5, 1.0, cos and mult 1.0
    assert float(params[1].detach()[0]) == pytest.approx(-(0.5 + 1.0 + 0.5 * (1 + math.cos(math.pi / 8))), rel=1e-14)
