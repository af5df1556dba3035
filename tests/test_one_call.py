"""One engine call per (recipe, device, dtype) across param groups: many-group layouts (layer-wise LR decay,
decay/no-decay splits) run in one call with each group's lr as a per-tensor input, with the same numbers as
one call per group; and DALS's global state advanced on the params' device by one op.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from optim_db import OPTIM_IDS, optim_db  # noqa: E402
from reference import RefDALS  # noqa: E402
from test_optim import assert_equal_tensors, assert_rel_close  # noqa: E402

import torch_layerlr.optim._base as base  # noqa: E402
from torch_layerlr.optim import DALS, GrokfastAdamW, LayerwiseSGD  # noqa: E402

SHAPES = [(6, 4), (6,), (5, 6), (5,), (3, 5), (3,)]


def _params(dtypes=None):
    gen = torch.Generator().manual_seed(0)
    dtypes = dtypes or [torch.float32] * len(SHAPES)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(d)) for s, d in zip(SHAPES, dtypes)]


def _llrd_groups(params, info=None):
    """One group per tensor: layer-wise decayed lr, weight decay on matrices only (the Trainer's split)."""
    groups = []
    for i, p in enumerate(params):
        g = {"params": [p], "lr": 0.05 * 0.7 ** (len(params) - i)}
        if info is not None and "weight_decay" in info.fused_cls.__init__.__code__.co_varnames:
            g["weight_decay"] = 0.01 if p.ndim > 1 else 0.0
        groups.append(g)
    return groups


def _steps(opt, params, n=8, dals=False):
    gen = torch.Generator().manual_seed(1)
    for k in range(n):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
        if dals:
            opt.step(loss=1.0 / (k + 1))
        else:
            opt.step()


@pytest.fixture
def calls(monkeypatch):
    """Counts the engine calls of each step."""
    seen = []
    real = base.fused_step_

    def counting(*args, **kwargs):
        seen.append(len(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(base, "fused_step_", counting)
    return seen


@pytest.mark.parametrize("info", optim_db, ids=OPTIM_IDS)
def test_many_groups_one_call_same_numbers(info, calls):
    """Six groups with six lrs: one call per step, bit for bit the result of one optimizer per group."""
    together = _params()
    opt = info.fused(_llrd_groups(together, info))
    _steps(opt, together, dals=info.is_dals)
    assert calls == [len(SHAPES)] * 8

    apart = _params()
    singles = [info.fused([g]) for g in _llrd_groups(apart, info)]
    gen = torch.Generator().manual_seed(1)
    for k in range(8):
        for p in apart:
            p.grad = torch.randn(p.shape, generator=gen)
        for o in singles:
            o.step(loss=1.0 / (k + 1)) if info.is_dals else o.step()
    assert_equal_tensors(together, apart)


def test_calls_split_by_dtype_recipe_and_filter(calls):
    params = _params([torch.float32, torch.float32, torch.float64, torch.float64, torch.float32, torch.float32])
    opt = LayerwiseSGD([{"params": params[:2], "lr": 0.1}, {"params": params[2:4], "lr": 0.2},
                        {"params": params[4:], "momentum": 0.9}], lr=0.05)
    _steps(opt, params, n=1)
    assert sorted(calls) == [2, 2, 2]  # float32 plain, float64 plain, float32 with momentum (another recipe)
    calls.clear()
    grok = _params()
    opt = GrokfastAdamW([{"params": grok[:3], "grokfast_alpha": 0.9}, {"params": grok[3:]}])
    _steps(opt, grok, n=1)
    assert sorted(calls) == [3, 3]  # two filter coefficients, two calls


def test_tensor_lrs_of_several_groups():
    """Tensor lrs (capturable style) of several groups in one call equal float lrs."""
    a, b = _params(), _params()
    opt_a = LayerwiseSGD([{"params": a[:3], "lr": 0.1}, {"params": a[3:], "lr": 0.02}], momentum=0.9)
    opt_b = LayerwiseSGD([{"params": b[:3], "lr": torch.tensor(0.1, dtype=torch.float64)},
                          {"params": b[3:], "lr": torch.tensor(0.02, dtype=torch.float64)}], momentum=0.9)
    _steps(opt_a, a)
    _steps(opt_b, b)
    assert_equal_tensors(a, b)


# ---- DALS's global state on the device ----------------------------------------------------------------------
def test_dals_without_schedule_is_the_constant_lr_algorithm():
    """schedule=False: the reference with a schedule factor of exactly 1 (no warmup, T so large that
    cos(pi t / T) rounds to 1)."""
    fused_params, ref_params = _params(), [p.detach().double().requires_grad_(True) for p in _params()]
    fused = DALS(fused_params, schedule=False, total_steps=50)
    ref = RefDALS(ref_params, warmup_frac=0.0, total_steps=10**15)
    gen = torch.Generator().manual_seed(3)
    for k in range(20):
        for pf, pr in zip(fused_params, ref_params):
            g = torch.randn(pf.shape, generator=gen)
            pf.grad, pr.grad = g.clone(), g.double()
        fused.step(loss=2.0 / (k + 1))
        ref.step(loss=2.0 / (k + 1))
    assert_rel_close(fused_params, ref_params, 1e-5)
    assert fused.state_dict()["dals"]["step"] == 20


def test_dals_found_inf_moves_nothing_without_reading_it():
    """GradScaler's found_inf stops the clock, the detector and the step inside the engine (no host read)."""
    params = _params()
    opt = DALS(params, total_steps=10)
    _steps(opt, params, n=3, dals=True)
    before = opt.state_dict()
    snapshot = [p.detach().clone() for p in params]
    opt.found_inf = torch.ones(())
    opt.grad_scale = torch.full((), 2.0)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step(loss=0.1)
    del opt.found_inf, opt.grad_scale
    assert_equal_tensors(params, snapshot)
    after = opt.state_dict()
    assert after["dals"]["step"] == before["dals"]["step"]
    assert torch.equal(after["dals"]["detector"], before["dals"]["detector"])
