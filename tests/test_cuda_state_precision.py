"""Low-precision optimizer state on CUDA (NOTE: [state precision] in csrc/engine/state_precision.h) against the CPU
engine on the same inputs: every recipe shape of tests/test_state_precision.py in bf16 and int8, one step from the
same stored state, and the optimizers on top.

* int8: codes equal, except one code apart where the value before rounding lies near a decision midpoint (that
  value from a float32 step of the CPU engine on the decoded state, margins as in test_state_precision.py); absmax
  to rtol 1e-6, 1e-5 for trust-ratio recipes (each device sums their norms in its own order)
* bf16: each value the CPU's or a bfloat16 neighbour of it (both draw the same rounding bits, and a last-bit
  difference before rounding may carry), and the CPU's for all but 1% of the elements (other rounding bits would
  disagree on about half of them)
* trust ratios taken on the values before rounding, like the CPU's; a split trust step equal to one call
* launch splits: more tensors than one low-precision launch holds, a tensor over two chunks
* the optimizers: a few steps against the CPU, checkpoints CUDA -> CPU -> CUDA resuming bit for bit, conversions
  of CUDA values equal to the CPU's

A two-pass recipe's update reads its filter back as stored: the CPU's update then runs from the filter the CUDA
step stored (the CPU's own is compared before), so that one code either side of a midpoint there does not move
the momentum buffer. Everything is skipped where torch has no CUDA device.
"""

from __future__ import annotations

import io
import os
import sys
import zlib

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from optim_db import dals_losses  # noqa: E402
from reference.low_precision import BLOCK, quantize  # noqa: E402
from test_state_precision import GATES, RECIPES, _state_names, _stored  # noqa: E402
from test_state_precision_optim import SHAPES, STATEFUL  # noqa: E402

from torch_layerlr._ops import fused_step_  # noqa: E402
from torch_layerlr.optim import _state_precision as sp  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
F64 = torch.float64
LOW = ["bf16", "int8"]
CHUNK = 65536  # kChunkSize of csrc/cuda/multi_tensor_apply.cuh
#: partial last blocks, whole blocks, one partial block, empty, a tensor over two CUDA chunks
SIZES = [(17, 260), (3 * BLOCK,), (70,), (0,), (CHUNK + 300,)]
#: more tensors than one low-precision launch holds (20: kDepthToMaxTensors[7])
MANY = [(300 + 37 * t,) for t in range(25)]
SEED = 11


def _on(device, x):
    """x with every tensor in it copied to device (lists, tuples and dicts walked; None kept)."""
    if isinstance(x, torch.Tensor):
        return x.to(device, copy=True)
    if isinstance(x, (list, tuple)):
        return type(x)(_on(device, v) for v in x)
    if isinstance(x, dict):
        return {k: _on(device, v) for k, v in x.items()}
    return x


def _problem(case, precision, first_step, sizes):
    recipe, gate = (RECIPES[case], 1.0) if case in RECIPES else (RECIPES[GATES[case][0]], GATES[case][1])
    gen = torch.Generator().manual_seed(zlib.crc32(f"{case} {precision} {first_step} {len(sizes)}".encode()))
    n = len(sizes)
    stored = {k: [_stored(precision, k, s, gen) for s in sizes] for k in _state_names(recipe)}
    problem = dict(
        params=[torch.randn(s, generator=gen) for s in sizes],
        grads=[torch.randn(s, generator=gen) for s in sizes],
        states={k: [c for c, _ in v] for k, v in stored.items()},
        scales={k: [a for _, a in v] for k, v in stored.items()} if precision == "int8" else None,
        steps=[torch.tensor(0.0 if first_step else 4.0) for _ in sizes])
    kw = dict(lr=torch.tensor(0.01, dtype=F64), lr_mult=torch.linspace(0.5, 1.5, n, dtype=F64),
              weight_decay=torch.full((n,), 0.01, dtype=F64), blend=torch.linspace(0.2, 0.8, n, dtype=F64),
              trust_mask=(torch.arange(n) % 3 != 2).to(F64),
              filter_coef=torch.tensor([0.9, gate], dtype=F64) if recipe.filter != "none" else None)
    return recipe, problem, kw


def _step(device, recipe, problem, kw, precision, *, split=False, filter_for_update=None):
    """One step on device from copies of problem; returns them with the trust ratios. split: the trust step in two
    calls; filter_for_update: (states, scales) of the filter the update call reads instead of its own."""
    x = _on(device, problem)
    kw = _on(device, kw)
    n = len(x["params"])
    ratios = torch.ones(n, dtype=F64, device=device) if recipe.trust != "none" else None
    args = (x["params"], x["grads"], x["states"], x["steps"], recipe)
    common = dict(state_precision=precision, scales=x["scales"], seed=SEED, trust_ratios=ratios, **kw)
    if not split:
        fused_step_(*args, **common)
        return x, ratios
    sq = torch.zeros(n, 2, dtype=F64, device=device)
    fused_step_(*args, sq_norms=sq, trust_pass="norms", **common)
    x["filter_after_norms"] = _on(device, (x["states"].get("filter"), (x["scales"] or {}).get("filter")))
    if filter_for_update is not None and "filter" in x["states"]:
        states, scales = _on(device, filter_for_update)
        x["states"]["filter"][:] = states
        if scales is not None:
            x["scales"]["filter"][:] = scales
    fused_step_(*args, sq_norms=sq, trust_pass="update", **common)
    return x, ratios


def _decoded(name, state, scales, t, shape):
    form = {name: state[t]}
    if scales is not None:
        form[f"{name}_absmax"] = scales[t]
    return sp.to_float(name, form, shape)


def _unrounded(recipe, problem, kw, precision, cuda_filter):
    """The state before rounding: a float32 step of the CPU engine from the decoded state (a two-pass update from
    the filter CUDA stored)."""
    shapes = [p.shape for p in problem["params"]]
    decoded = {k: [_decoded(k, v, (problem["scales"] or {}).get(k), t, shapes[t]) for t in range(len(v))]
               for k, v in problem["states"].items()}
    fp32 = dict(problem, states=decoded, scales=None)
    if recipe.trust == "none":
        x, _ = _step(CPU, recipe, fp32, kw, "fp32")
        return x["states"]
    states, scales = cuda_filter
    filters = None if states is None else [_decoded("filter", states, scales, t, shapes[t])
                                           for t in range(len(states))]
    x, _ = _step(CPU, recipe, fp32, kw, "fp32", split=True, filter_for_update=(filters, None))
    if filters is not None:
        x["states"]["filter"] = x["filter_after_norms"][0]
    return x["states"]


def _check_int8(name, got, got_absmax, want, want_absmax, unrounded, rtol):
    torch.testing.assert_close(got_absmax.cpu(), want_absmax, rtol=rtol, atol=0, msg=f"{name} absmax")
    _, _, margin = quantize(unrounded, signed=not name.startswith("exp_avg_sq"))
    diff = (got.cpu().to(torch.int64) - want.to(torch.int64)).abs()
    assert bool((diff <= 1).all()), f"{name}: a code off by more than one"
    far = margin >= 1e-4
    assert bool((diff[far] == 0).all()), f"{name}: {int((diff[far] != 0).sum())} codes differ away from a midpoint"


def _ordered(x):
    """bfloat16 values as integers in value order (neighbours differ by one; +0 and -0 are both 0)."""
    bits = x.view(torch.int16).to(torch.int64)
    return torch.where(bits < 0, -(bits & 0x7FFF), bits)


def _check_bf16(name, got, want):
    diff = (_ordered(got.cpu()) - _ordered(want)).abs()
    assert bool((diff <= 1).all()), f"{name}: a value is not the CPU's or a bfloat16 neighbour of it"
    assert int((diff != 0).sum()) <= max(2, want.numel() // 100), f"{name}: other rounding bits than the CPU's"


def _compare(recipe, problem, kw, precision):
    cuda, cuda_ratios = _step(CUDA, recipe, problem, kw, precision)
    cuda_filter = (cuda["states"].get("filter"), (cuda["scales"] or {}).get("filter"))
    cpu, cpu_ratios = _step(CPU, recipe, problem, kw, precision, split=recipe.trust != "none",
                            filter_for_update=cuda_filter)
    if "filter_after_norms" in cpu and "filter" in cpu["states"]:
        cpu["states"]["filter"], filter_scales = cpu["filter_after_norms"]
        if filter_scales is not None:
            cpu["scales"]["filter"] = filter_scales
    unrounded = _unrounded(recipe, problem, kw, precision, cuda_filter) if precision == "int8" else None
    rtol = 1e-5 if recipe.trust != "none" else 1e-6
    if cpu_ratios is not None:
        torch.testing.assert_close(cuda_ratios.cpu(), cpu_ratios, rtol=rtol, atol=0)
    for t, (got, want) in enumerate(zip(cuda["params"], cpu["params"])):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5, msg=f"params[{t}]")
    assert all(torch.equal(a.cpu(), b) for a, b in zip(cuda["steps"], cpu["steps"]))
    for k, values in cpu["states"].items():
        for t, want in enumerate(values):
            got = cuda["states"][k][t]
            assert got.device.type == "cuda" and got.dtype == want.dtype
            if precision == "int8":
                _check_int8(f"{k}[{t}]", got, cuda["scales"][k][t], want, cpu["scales"][k][t], unrounded[k][t], rtol)
            else:
                _check_bf16(f"{k}[{t}]", got, want)


@pytest.mark.parametrize("precision", LOW)
@pytest.mark.parametrize("case", [*RECIPES, *GATES])
@pytest.mark.parametrize("first_step", [False, True])
def test_step_matches_cpu(case, precision, first_step):
    recipe, problem, kw = _problem(case, precision, first_step, SIZES)
    _compare(recipe, problem, kw, precision)


@pytest.mark.parametrize("precision", LOW)
@pytest.mark.parametrize("case", ["adamw", "lars", "lamb_grokfast", "dals"])
def test_launch_splits_match_cpu(case, precision):
    recipe, problem, kw = _problem(case, precision, False, MANY)
    _compare(recipe, problem, kw, precision)


@pytest.mark.parametrize("precision", LOW)
@pytest.mark.parametrize("case", ["lamb", "lars_grokfast"])
def test_split_trust_step_matches_one_call(case, precision):
    """NOTE: [split trust step] on low-precision CUDA state: bit for bit the one-call step."""
    recipe, problem, kw = _problem(case, precision, False, SIZES)
    one, r1 = _step(CUDA, recipe, problem, kw, precision)
    two, r2 = _step(CUDA, recipe, problem, kw, precision, split=True)
    assert torch.equal(r1, r2)
    for key in ("params", "steps"):
        assert all(torch.equal(a, b) for a, b in zip(one[key], two[key]))
    for k in one["states"]:
        assert all(torch.equal(a, b) for a, b in zip(one["states"][k], two["states"][k]))
        if one["scales"] is not None:
            assert all(torch.equal(a, b) for a, b in zip(one["scales"][k], two["scales"][k]))


@pytest.mark.parametrize("precision", LOW)
def test_skipped_step_changes_nothing(precision):
    """found_inf set (GradScaler): state, absmax and steps untouched on the device."""
    recipe, problem, kw = _problem("adamw", precision, False, SIZES)
    x, _ = _step(CUDA, recipe, problem, dict(kw, found_inf=torch.ones(1)), precision)
    for key in ("params", "steps"):
        assert all(torch.equal(a.cpu(), b) for a, b in zip(x[key], problem[key]))
    for k, values in problem["states"].items():
        assert all(torch.equal(a.cpu(), b) for a, b in zip(x["states"][k], values))
        if problem["scales"] is not None:
            assert all(torch.equal(a.cpu(), b) for a, b in zip(x["scales"][k], problem["scales"][k]))


# ---------------------------------------------------------------------------------------------------------
# the optimizers
# ---------------------------------------------------------------------------------------------------------
def _params(device):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen).to(device).requires_grad_(True) for s in SHAPES]


def _train(info, opt, params, steps, start=0):
    losses, _ = dals_losses(start + steps, seed=1)
    for k in range(start, start + steps):
        gen = torch.Generator().manual_seed(100 + k)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.device)
        if info.is_dals:
            opt.step(loss=torch.tensor(losses[k], dtype=F64, device=params[0].device))
        else:
            opt.step()


def _buffers(opt, p):
    return {k: v for k, v in opt.state[p].items() if k != "step"}


def _saved(opt):
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("precision", LOW)
@pytest.mark.parametrize("info", STATEFUL, ids=repr)
def test_optimizer_matches_cpu(info, precision):
    """Three steps on CUDA and on the CPU from the same params and grads: state made on the device, in the same
    forms, params close (their updates differ only where rounding did)."""
    runs = {}
    for device in (CPU, CUDA):
        params = _params(device)
        opt = info.fused(params, state_precision=precision)
        _train(info, opt, params, 3)
        runs[device.type] = params, opt
    (pc, oc), (pg, og) = runs["cpu"], runs["cuda"]
    for a, b in zip(pg, pc):
        torch.testing.assert_close(a.detach().cpu(), b.detach(), rtol=1e-3, atol=1e-3)
        got, want = _buffers(og, a), _buffers(oc, b)
        assert got.keys() == want.keys()
        for k in got:
            assert got[k].device == a.device and got[k].dtype == want[k].dtype and got[k].shape == want[k].shape


@pytest.mark.parametrize("precision", LOW)
@pytest.mark.parametrize("info", STATEFUL, ids=repr)
def test_checkpoint_round_trip(info, precision):
    """A CUDA checkpoint loaded on the CPU keeps every buffer bit for bit; loaded back on CUDA, it resumes bit for
    bit as the optimizer that saved it."""
    params = _params(CUDA)
    opt = info.fused(params, state_precision=precision)
    _train(info, opt, params, 3)
    saved = _saved(opt)
    saved_params = [p.detach().clone() for p in params]

    on_cpu = [p.to(CPU, copy=True).requires_grad_(True) for p in saved_params]
    opt_cpu = info.fused(on_cpu, state_precision=precision)
    opt_cpu.load_state_dict(saved)
    for p, q in zip(params, on_cpu):
        got, want = _buffers(opt_cpu, q), _buffers(opt, p)
        assert got.keys() == want.keys()
        assert all(got[k].device.type == "cpu" and torch.equal(got[k], want[k].cpu()) for k in got)

    back = [p.clone().requires_grad_(True) for p in saved_params]
    opt_back = info.fused(back, state_precision=precision)
    opt_back.load_state_dict(_saved(opt_cpu))
    _train(info, opt, params, 2, start=3)
    _train(info, opt_back, back, 2, start=3)
    for p, q in zip(params, back):
        assert torch.equal(p, q)
        a, b = _buffers(opt, p), _buffers(opt_back, q)
        assert a.keys() == b.keys() and all(b[k].device == q.device and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("target", LOW)
def test_conversions_on_device_match_cpu(target):
    """_state_precision's conversions of CUDA values (the map made on their device) give the CPU's forms and
    values; an fp32 checkpoint loaded into a low-precision CUDA optimizer keeps them on the device."""
    info = next(i for i in STATEFUL if i.name == "adamw")
    params = _params(CPU)
    opt = info.fused(params)
    _train(info, opt, params, 2)
    for p in params:
        for name, value in _buffers(opt, p).items():
            want = sp.from_float(name, value, p, target)
            got = sp.from_float(name, value.to(CUDA), p.to(CUDA), target)
            assert got.keys() == want.keys()
            assert all(got[k].device.type == "cuda" and torch.equal(got[k].cpu(), want[k]) for k in got)
            assert torch.equal(sp.to_float(name, got, p.shape).cpu(), sp.to_float(name, want, p.shape))
    saved = _saved(opt)
    converted = {}
    for device in (CPU, CUDA):
        mine = [p.detach().to(device).requires_grad_(True) for p in params]
        o = info.fused(mine, state_precision=target)
        o.load_state_dict(saved)
        converted[device.type] = [_buffers(o, p) for p in mine]
    for got, want in zip(converted["cuda"], converted["cpu"]):
        assert got.keys() == want.keys()
        assert all(got[k].device.type == "cuda" and torch.equal(got[k].cpu(), want[k]) for k in got)
