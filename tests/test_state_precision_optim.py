"""state_precision on the optimizers: the form each buffer takes (fp32 below 4096 elements under int8), bit-exact
resume from a checkpoint of each precision, and conversions between precisions on load, checked against the
float64 emulation of tests/reference/low_precision.py."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from optim_db import dals_losses, optim_db
from reference.low_precision import dequantize, quantize

F64 = torch.float64
SHAPES = [(64, 80), (3, 5), (4200,)]  # 5120 and 4200 elements: int8 state; 15: fp32 state under int8
LOW = ["bf16", "int8"]
STATEFUL = [i for i in optim_db if i.kwargs.get("momentum", 0.9) != 0.0 or i.fused_cls.__name__ != "LayerwiseSGD"]


def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).requires_grad_(True) for s in SHAPES]


def _run(info, opt, params, steps, start=0):
    losses, _ = dals_losses(start + steps, seed=1)
    for k in range(start, start + steps):
        gen = torch.Generator().manual_seed(100 + k)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        if info.is_dals:
            opt.step(loss=torch.tensor(losses[k], dtype=F64))
        else:
            opt.step()


def _buffers(opt, p):
    return {k: v for k, v in opt.state[p].items() if k != "step"}


@pytest.mark.parametrize("precision", LOW)
@pytest.mark.parametrize("info", STATEFUL, ids=repr)
def test_state_forms(info, precision):
    params = _params()
    opt = info.fused(params, state_precision=precision)
    _run(info, opt, params, 3)
    for p in params:
        small = p.numel() < 4096 and precision == "int8"
        for name, value in _buffers(opt, p).items():
            if name.endswith("_absmax"):
                assert precision == "int8" and not small
                assert value.dtype == torch.float32 and value.shape == ((p.numel() + 255) // 256,)
            elif small:
                assert value.dtype == p.dtype
            else:
                assert value.dtype == (torch.bfloat16 if precision == "bf16" else torch.uint8)
                assert value.shape == p.shape
                if precision == "int8":
                    assert f"{name}_absmax" in opt.state[p]
        assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("precision", ["fp32", *LOW])
@pytest.mark.parametrize("info", STATEFUL, ids=repr)
def test_bit_exact_resume(info, precision):
    params = _params()
    opt = info.fused(params, state_precision=precision)
    _run(info, opt, params, 4)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    saved_params = [p.detach().clone() for p in params]
    _run(info, opt, params, 3, start=4)

    params2 = [x.clone().requires_grad_(True) for x in saved_params]
    opt2 = info.fused(params2, state_precision=precision)
    opt2.load_state_dict(saved)
    _run(info, opt2, params2, 3, start=4)
    for a, b in zip(params, params2):
        assert torch.equal(a, b)
    for p, p2 in zip(params, params2):
        a, b = _buffers(opt, p), _buffers(opt2, p2)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _trained(info, precision):
    params = _params()
    opt = info.fused(params, state_precision=precision)
    _run(info, opt, params, 4)
    return params, opt


CONVERT = [i for i in STATEFUL if i.name in ("adamw", "lamb_grokfast", "dals", "lars", "sgd_momentum")]


@pytest.mark.parametrize("target", LOW)
@pytest.mark.parametrize("info", CONVERT, ids=repr)
def test_fp32_checkpoint_into_low_precision(info, target):
    params, opt = _trained(info, "fp32")
    saved = copy.deepcopy(opt.state_dict())
    params2 = [p.detach().clone().requires_grad_(True) for p in params]
    opt2 = info.fused(params2, state_precision=target)
    opt2.load_state_dict(saved)
    assert all(g["state_precision"] == target for g in opt2.param_groups)
    for p, p2 in zip(params, params2):
        for name, value in _buffers(opt, p).items():
            got = opt2.state[p2][name]
            if target == "int8" and p.numel() >= 4096:
                codes, absmax, margin = quantize(value, signed=name != "exp_avg_sq")
                torch.testing.assert_close(opt2.state[p2][f"{name}_absmax"].to(F64), absmax, rtol=1e-6, atol=0)
                far = margin > 1e-4
                assert torch.equal(got[far], codes[far])
            elif target == "int8":
                assert torch.equal(got, value)  # small tensors keep fp32 state
            else:
                # round to nearest: within half a bfloat16 gap of the value
                err = (got.to(F64) - value.to(F64)).abs()
                assert bool((err <= value.to(F64).abs() * 2.0 ** -8 * 1.0001).all())
    _run(info, opt2, params2, 2, start=4)  # and it steps on


@pytest.mark.parametrize("source", LOW)
@pytest.mark.parametrize("info", CONVERT, ids=repr)
def test_low_precision_checkpoint_into_fp32(info, source):
    params, opt = _trained(info, source)
    saved = copy.deepcopy(opt.state_dict())
    params2 = [p.detach().clone().requires_grad_(True) for p in params]
    opt2 = info.fused(params2)
    opt2.load_state_dict(saved)
    for p, p2 in zip(params, params2):
        state = opt.state[p]
        for name, value in _buffers(opt, p).items():
            if name.endswith("_absmax"):
                assert name not in opt2.state[p2]
                continue
            got = opt2.state[p2][name]
            assert got.dtype == p2.dtype
            if value.dtype == torch.uint8:
                want = dequantize(value, state[f"{name}_absmax"], signed=name != "exp_avg_sq")
                torch.testing.assert_close(got.to(F64), want, rtol=1e-6, atol=1e-30)
            else:
                assert torch.equal(got, value.to(got.dtype))  # bf16 -> fp32 is exact
    _run(info, opt2, params2, 2, start=4)


def test_state_precision_is_checked():
    with pytest.raises(ValueError, match="state_precision"):
        optim_db[0].fused(_params(), state_precision="fp8")
    opt = optim_db[0].fused(_params())
    with pytest.raises(ValueError, match="state_precision"):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "state_precision": "int4"})
    assert len(opt.param_groups) == 1


def test_complex_params_refuse_low_precision():
    info = next(i for i in optim_db if i.name == "adamw")
    p = torch.zeros(80, 80, dtype=torch.complex64, requires_grad=True)
    opt = info.fused([p], state_precision="bf16")
    p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="complex"):
        opt.step()
    assert not opt.state
