"""Low-precision optimizer state (NOTE: [state precision] in csrc/engine/state_precision.h) against the float64
oracle with the rounding emulated there (tests/reference/low_precision.py): every recipe shape of the engine, one
step at a time from the same stored state, int8 exact to the code (up to values on a decision midpoint) and bf16 to
one of its two bfloat16 neighbours; stochastic rounding unbiased over many draws, reproducible, independent of
threads; the optimizers' state forms, checkpoints and conversions between precisions."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from optim_db import optim_db
from reference.low_precision import BLOCK, bf16_neighbours, dequantize, quantize
from reference.recipe_step import recipe_step
from torch_layerlr._ops import Recipe, fused_step_

F64 = torch.float64
SIZES = [(17, 260), (3 * BLOCK,), (70,), (0,)]  # partial last blocks, whole blocks, one partial block, empty

RECIPES = {
    "sgd_momentum": Recipe(moment="sgd", momentum=0.9, dampening=0.1),
    "sgd_nesterov": Recipe(moment="sgd", momentum=0.9, nesterov=True),
    "grokfast_sgd": Recipe(filter="grokfast", filter_lambda=2.0, moment="sgd", momentum=0.9),
    "adamw": Recipe(moment="adam", decay="decoupled", beta1=0.9, beta2=0.99, eps=1e-8),
    "adam_l2_grokfast": Recipe(filter="grokfast", filter_lambda=0.5, moment="adam", decay="coupled"),
    "lars": Recipe(moment="sgd", trust="lars", momentum=0.9, trust_coefficient=0.02),
    "lars_grokfast": Recipe(filter="grokfast", filter_lambda=2.0, moment="sgd", trust="lars", momentum=0.9,
                            trust_coefficient=0.02),
    "lamb": Recipe(moment="adam", decay="update", trust="update", eps=1e-6),
    "lamb_grokfast": Recipe(filter="grokfast", filter_lambda=2.0, moment="adam", decay="update", trust="update"),
    "dals": Recipe(filter="blend", moment="sgd", trust="update", momentum=0.9, trust_coefficient=0.02,
                   ratio_min=0.2, ratio_max=5.0),
}
GATES = {"dals_bypass": ("dals", 0.0)}  # a phase that bypasses the blend filter: f frozen, not rewritten


def _state_names(recipe):
    names = []
    if recipe.filter != "none":
        names.append("filter")
    if recipe.moment == "adam":
        names += ["exp_avg", "exp_avg_sq"]
    elif recipe.momentum != 0.0:
        names.append("exp_avg")
    return names


def _stored(precision, name, shape, gen):
    """Random stored state: bf16 values, or codes with absmax (second moments on the unsigned map)."""
    if precision == "bf16":
        x = torch.randn(shape, generator=gen) * 0.1
        return (x.abs() if name == "exp_avg_sq" else x).to(torch.bfloat16), None
    numel = math.prod(shape)
    codes = torch.randint(0, 256, shape, generator=gen, dtype=torch.int64).to(torch.uint8)
    absmax = torch.rand((numel + BLOCK - 1) // BLOCK, generator=gen) * 0.2 + 0.01
    return codes, absmax


def _values(precision, name, stored, absmax):
    if precision == "bf16":
        return stored.to(F64)
    return dequantize(stored, absmax, signed=name != "exp_avg_sq")


def _pass2_sgd(recipe, p, g, f, buf, step, eta, wd, ratio, blend, coef):
    """The update of a two-pass sgd recipe from the filter as stored (pass 2 reads it back; the norms of pass 1 used
    the value before rounding)."""
    if recipe.filter == "grokfast":
        g = g + recipe.filter_lambda * f
    else:
        keep_f = coef[1] * (1.0 - blend)
        g = (1.0 - keep_f) * g + keep_f * f
    u = g + wd * p
    x = eta * ratio * u if recipe.trust == "lars" else u
    buf = x if step == 1.0 else recipe.momentum * buf + (1 - recipe.dampening) * x
    d = x + recipe.momentum * buf if recipe.nesterov else buf
    return (p - d if recipe.trust == "lars" else p - eta * ratio * d), buf


def _check_int8(name, got_codes, got_absmax, want):
    codes, absmax, margin = quantize(want, signed=not name.startswith("exp_avg_sq"))
    torch.testing.assert_close(got_absmax.to(F64), absmax, rtol=1e-5, atol=1e-30, msg=f"{name} absmax")
    diff = (got_codes.to(torch.int64) - codes.to(torch.int64)).abs()
    near_midpoint = margin < 1e-4
    assert bool((diff[~near_midpoint] == 0).all()), f"{name}: {int((diff[~near_midpoint] != 0).sum())} codes differ"
    assert bool((diff <= 1).all()), f"{name}: a code off by more than one"


def _check_bf16(name, got, want):
    lo, hi = bf16_neighbours(want)
    # float32 arithmetic against float64: relative to the value, and to the tensor's scale where terms cancel
    slack = 1e-5 * want.abs() + 1e-6 * float(want.abs().amax()) if want.numel() else want
    got = got.to(F64)
    ok = (got >= lo - slack) & (got <= hi + slack)
    assert bool(ok.all()), f"{name}: {int((~ok).sum())} values are not a bfloat16 neighbour of the reference"


@pytest.mark.parametrize("precision", ["int8", "bf16"])
@pytest.mark.parametrize("case", [*RECIPES, *GATES])
@pytest.mark.parametrize("first_step", [False, True])
def test_step_matches_reference(case, precision, first_step):
    recipe, gate = (RECIPES[case], 1.0) if case in RECIPES else (RECIPES[GATES[case][0]], GATES[case][1])
    gen = torch.Generator().manual_seed(hash((case, precision, first_step)) % 2**31)
    names = _state_names(recipe)
    n = len(SIZES)
    params = [torch.randn(s, generator=gen) for s in SIZES]
    grads = [torch.randn(s, generator=gen) for s in SIZES]
    stored = {k: [_stored(precision, k, s, gen) for s in SIZES] for k in names}
    steps = [torch.tensor(0.0 if first_step else 4.0) for _ in SIZES]
    kw = dict(lr=torch.tensor(0.01, dtype=F64), lr_mult=torch.linspace(0.5, 1.5, n, dtype=F64),
              weight_decay=torch.full((n,), 0.01, dtype=F64), blend=torch.linspace(0.2, 0.8, n, dtype=F64),
              trust_mask=torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=F64),
              filter_coef=torch.tensor([0.9, gate], dtype=F64) if recipe.filter != "none" else None)
    before = {k: [_values(precision, k, c, a) for c, a in v] for k, v in stored.items()}
    ref = recipe_step(recipe, params, grads, before.get("filter", []), before.get("exp_avg", []),
                      before.get("exp_avg_sq", []), steps, **kw)

    p_run, g_run = [p.clone() for p in params], [g.clone() for g in grads]
    states = {k: [c.clone() for c, _ in v] for k, v in stored.items()}
    scales = {k: [a.clone() for _, a in v] for k, v in stored.items()} if precision == "int8" else None
    fused_step_(p_run, g_run, states, [s.clone() for s in steps], recipe, state_precision=precision, scales=scales,
                **kw)

    want = {"filter": ref["filters"], "exp_avg": ref["exp_avgs"], "exp_avg_sq": ref["exp_avg_sqs"]}
    want_params = ref["params"]
    two_pass_sgd = recipe.moment == "sgd" and recipe.trust != "none" and recipe.filter != "none"
    if two_pass_sgd:  # pass 2 reads the filter back as stored
        sign = -1.0 if recipe.maximize else 1.0
        want_params, want["exp_avg"] = [], []
        for t in range(n):
            f = _values(precision, "filter", states["filter"][t], scales["filter"][t] if scales else None)
            p, buf = _pass2_sgd(recipe, params[t].to(F64), sign * grads[t].to(F64), f, before["exp_avg"][t],
                                float(steps[t]) + 1, 0.01 * float(kw["lr_mult"][t]), 0.01, ref["ratios"][t],
                                float(kw["blend"][t]), kw["filter_coef"])
            want_params.append(p)
            want["exp_avg"].append(buf)
    for t in range(n):
        torch.testing.assert_close(p_run[t].to(F64), want_params[t], rtol=2e-5, atol=2e-6)
        for k in names:
            if k == "filter" and gate == 0.0:  # bypassed: not rewritten
                assert torch.equal(states[k][t], stored[k][t][0])
                continue
            if precision == "int8":
                _check_int8(f"{k}[{t}]", states[k][t], scales[k][t], want[k][t])
            else:
                _check_bf16(f"{k}[{t}]", states[k][t], want[k][t])


def _buffer_step(value: float, n: int, *, seed: int = 0, step: float = 4.0, momentum: float = 0.5):
    """One heavy-ball step with a zero bf16 buffer: buf <- value (exact in float32) stored stochastically."""
    p, g = torch.zeros(n), torch.full((n,), value)
    buf = torch.zeros(n, dtype=torch.bfloat16)
    one = torch.ones(1, dtype=F64)
    fused_step_([p], [g], {"exp_avg": [buf]}, [torch.tensor(step)], Recipe(moment="sgd", momentum=momentum),
                lr=torch.tensor(0.0, dtype=F64), lr_mult=one, weight_decay=one * 0, blend=one * 0,
                trust_mask=one * 0, state_precision="bf16", seed=seed)
    return buf


@pytest.mark.parametrize("value", [1.0 + 2.0 ** -10, -(1.0 + 3 * 2.0 ** -10), 3.1e-5])
def test_stochastic_rounding_is_unbiased(value):
    n = 200_000
    x = torch.tensor(value, dtype=torch.float32).to(F64)
    lo, hi = bf16_neighbours(x.reshape(1))
    buf = _buffer_step(value, n).to(F64)
    assert bool(((buf == lo) | (buf == hi)).all())
    p_up = float((x - lo) / (hi - lo))
    sigma = float(hi - lo) * math.sqrt(p_up * (1 - p_up) / n)
    assert abs(float(buf.mean()) - float(x)) < 5 * sigma  # unbiased: E[round(x)] = x
    # and not round-to-nearest: both neighbours are drawn, each about as often as its weight says
    frac_hi = float((buf == hi).double().mean())
    assert abs(frac_hi - p_up) < 5 * math.sqrt(p_up * (1 - p_up) / n)


def test_stochastic_rounding_is_keyed_by_seed_and_step_not_threads():
    value, n = 1.0 + 2.0 ** -9, 100_000
    a = _buffer_step(value, n, seed=7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b = _buffer_step(value, n, seed=7)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a, b)  # reproducible, whatever the threading
    assert not torch.equal(a, _buffer_step(value, n, seed=8))
    assert not torch.equal(a, _buffer_step(value, n, seed=7, step=5.0))
    # draws of different elements are independent: neighbouring elements agree about as often as chance says
    up = (a.to(F64) > value).double()
    p = float(up.mean())
    agree = float((up[1:] == up[:-1]).double().mean())
    assert abs(agree - (p * p + (1 - p) ** 2)) < 0.01


def test_split_trust_step_matches_one_call():
    """NOTE: [split trust step] on int8 state: the norms call writes the moments, the update call reads none."""
    recipe = RECIPES["lamb"]
    gen = torch.Generator().manual_seed(3)
    shape = (40, 100)
    p, g = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    stored = {k: _stored("int8", k, shape, gen) for k in ("exp_avg", "exp_avg_sq")}
    one = torch.ones(1, dtype=F64)
    kw = dict(lr=torch.tensor(0.01, dtype=F64), lr_mult=one, weight_decay=one * 0.01, blend=one * 0,
              trust_mask=one, state_precision="int8")
    runs = []
    for split in (False, True):
        pp, gg = p.clone(), g.clone()
        states = {k: [c.clone()] for k, (c, _) in stored.items()}
        scales = {k: [a.clone()] for k, (_, a) in stored.items()}
        steps = [torch.tensor(2.0)]
        if split:
            sq = torch.zeros(1, 2, dtype=F64)
            fused_step_([pp], [gg], states, steps, recipe, scales=scales, sq_norms=sq, trust_pass="norms", **kw)
            fused_step_([pp], [gg], states, steps, recipe, scales=scales, sq_norms=sq, trust_pass="update", **kw)
        else:
            fused_step_([pp], [gg], states, steps, recipe, scales=scales, **kw)
        runs.append((pp, states, scales, steps))
    (p1, s1, a1, t1), (p2, s2, a2, t2) = runs
    assert torch.equal(p1, p2) and torch.equal(t1[0], t2[0])
    for k in s1:
        assert torch.equal(s1[k][0], s2[k][0]) and torch.equal(a1[k][0], a2[k][0])
