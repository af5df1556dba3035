"""The CPU table's checks on a CUDA device (csrc/cuda/): every row of tests/optim_db.py, fused on ``cuda``.

* float32 params, 100 steps: 1e-5 against the float64 reference; float64: 1e-12; bfloat16, 20 steps: 1e-2
  (the tolerances of test_optim.py, same problems)
* CUDA against the CPU engine across launch splits (more tensors than one launch's table, a tensor longer than
  one launch's 320 chunks, per-tensor lr multipliers), and on non-contiguous params and grads
* bitwise identical results from two runs
* state_dict round trips CPU -> CUDA -> CPU
* the ops themselves (every recipe of test_optim's OP_RECIPES in four dtypes, steps on the host or the device,
  found_inf), tensor_norms and the DALS detector

Everything is skipped where torch has no CUDA device; build the extension on a machine whose torch has CUDA
(README, "CUDA") so that csrc/cuda/*.cu is compiled in. Device-generic tests in test_optim.py (GradScaler under
``torch.cuda.set_sync_debug_mode("error")``, zero-size params, LAMB's direction) run on CUDA there.
"""

from __future__ import annotations

import copy
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from optim_db import OPTIM_IDS, PerParam, by_name, dals_losses, optim_db  # noqa: E402
from test_optim import (  # noqa: E402
    BF16_SHAPES, F64, OP_RECIPES, PRECISION, SHAPES, SMALL_SHAPES, SMALL_ZERO_INIT, ZERO_INIT, ZERO_INIT_BF16,
    Problem, _fused_run, assert_equal_tensors, assert_rel_close, assert_state_close, assert_state_dicts_equal,
    losses_for, op_call, rel_err, run_pair, take_step)

import torch_layerlr  # noqa: E402,F401

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
DB = pytest.mark.parametrize("info", optim_db, ids=OPTIM_IDS)

#: multi_tensor_apply's per-launch limits (csrc/cuda/multi_tensor_apply.cuh): a tensor of more than kMaxBlocks
#: chunks of kChunkSize is cut between two launches, and a fused step launch holds at most 30 tensors.
CHUNK, MAX_BLOCKS = 65536, 320


def to_cuda(x):
    """x with every tensor in it copied to the CUDA device (lists, tuples and dicts walked)."""
    if isinstance(x, torch.Tensor):
        return x.to(CUDA, copy=True)
    if isinstance(x, (list, tuple)):
        return type(x)(to_cuda(v) for v in x)
    if isinstance(x, dict):
        return {k: to_cuda(v) for k, v in x.items()}
    return x


# ---------------------------------------------------------------------------------------------------------
# fused (CUDA) vs reference
# ---------------------------------------------------------------------------------------------------------
@DB
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_fused_matches_reference_cuda(info, dtype):
    """test_optim.test_fused_matches_reference with the fused optimizer on CUDA: 100 steps on mixed shapes (a
    0-size, a 0-d, a zero and a 75000-element tensor, two CUDA chunks)."""
    steps, tol = PRECISION[dtype]
    problem = Problem(SHAPES, dtype, seed=1, zero_init=ZERO_INIT)
    fused, ref, pf, pr = run_pair(info, problem, steps, device=CUDA)
    assert all(p.device.type == "cuda" and p.dtype == dtype for p in pf)
    assert all(fused.state[p]["step"].device == p.device for p in pf), "steps live on the param's device"
    assert_rel_close(pf, pr, tol)
    assert_state_close(fused, ref, pf, pr, tol)


@DB
def test_fused_matches_reference_bfloat16_cuda(info):
    """test_optim.test_fused_matches_reference_bfloat16 on CUDA (float32 math, bfloat16 state)."""
    steps, tol = PRECISION[torch.bfloat16]
    problem = Problem(BF16_SHAPES, torch.bfloat16, seed=1, zero_init={ZERO_INIT_BF16})
    fused, ref, pf, pr = run_pair(info, problem, steps, ref_dtype=torch.bfloat16, device=CUDA)
    assert all(s.dtype == torch.bfloat16 for p in pf for k, s in fused.state[p].items() if k != "step")
    assert_rel_close(pf, pr, tol)
    assert_state_close(fused, ref, pf, pr, math.inf)  # presence and step counts


# ---------------------------------------------------------------------------------------------------------
# CUDA vs the CPU engine where the launch layout matters
# ---------------------------------------------------------------------------------------------------------
#: 70 tensors (more than two launches' tensor tables), zero-size ones among them, then one tensor cut between
#: two launches (more than MAX_BLOCKS chunks, and not a multiple of the vector width), then small ones again.
SPLIT_SHAPES = ([(1 + (7 * i) % 97,) if i % 9 else (0,) for i in range(70)] + [(MAX_BLOCKS * CHUNK + 12345,)]
                + [(3, 5), (64, 33), ()])
SPREAD = PerParam(lambda i, n: 0.5 + (i % 7) / 4, "0.5+(i%7)/4")


@DB
def test_cuda_matches_cpu_across_launch_splits(info):
    """float64, 3 steps: params, state and trust ratios equal the CPU engine's, each tensor with its own lr
    multiplier, so that a per-tensor input read at the wrong index after a launch split would show."""
    steps = 3
    problem = Problem(SPLIT_SHAPES, F64, seed=43)
    losses, _ = losses_for(info, steps)
    runs = []
    for device in ("cpu", CUDA):
        params = problem.params(device=device)
        opt = info.fused(params, overrides={"lr_mult": SPREAD})
        for k in range(steps):
            take_step(info, opt, params, problem.grads(k), k, losses[k] if losses else None)
        runs.append((opt, params, list(opt.trust_ratios().values())))
    (cpu_opt, pc, rc), (cuda_opt, pg, rg) = runs
    assert_rel_close(pg, pc, 1e-10)
    assert_state_close(cuda_opt, cpu_opt, pg, pc, 1e-10)
    assert len(rg) == len(rc)
    assert all(math.isclose(a, b, rel_tol=1e-10, abs_tol=0.0) for a, b in zip(rg, rc)), "trust ratios differ"


@DB
def test_non_contiguous_params_and_grads_cuda(info):
    """Transposed, strided and channels-last params, grads with other strides (transposed, strided, expanded):
    the CUDA result equals the CPU engine's and the params keep their layout."""
    gen = torch.Generator().manual_seed(3)
    base_t = torch.randn(5, 7, generator=gen, dtype=F64)
    base_s = torch.randn(6, 10, generator=gen, dtype=F64)
    base_c = torch.randn(2, 3, 4, 5, generator=gen, dtype=F64)
    dense = torch.randn(7, 5, generator=gen, dtype=F64)

    def make(device):
        bs = base_s.to(device, copy=True)
        params = [
            torch.nn.Parameter(base_t.to(device, copy=True).t()),
            bs[:, ::2].requires_grad_(True),
            torch.nn.Parameter(base_c.to(device, copy=True).contiguous(memory_format=torch.channels_last)),
            torch.nn.Parameter(dense.to(device, copy=True)),
            torch.nn.Parameter(dense[:4].to(device, copy=True)),
        ]
        return params, bs

    def grads(k, device):
        g = torch.Generator().manual_seed(100 + k)
        out = [torch.randn(7, 5, generator=g, dtype=F64), torch.randn(6, 5, generator=g, dtype=F64),
               torch.randn(2, 3, 4, 5, generator=g, dtype=F64), torch.randn(5, 7, generator=g, dtype=F64).t(),
               torch.randn(4, 1, generator=g, dtype=F64).expand(4, 5)]
        return [x.to(device) for x in out]

    losses, _ = losses_for(info, 6)
    runs = []
    for device in ("cpu", CUDA):
        params, base = make(device)
        strides = [p.stride() for p in params]
        opt = info.fused(params)
        for k in range(6):
            if info.is_dals:
                opt.update_phase(losses[k])
            for p, g in zip(params, grads(k, device)):
                p.grad = g
            opt.step()
        assert [p.stride() for p in params] == strides, "params must keep their layout"
        runs.append((opt, params, base))
    (cpu_opt, pc, bc), (cuda_opt, pg, bg) = runs
    assert_rel_close(pg, pc, 1e-10)
    assert_state_close(cuda_opt, cpu_opt, pg, pc, 1e-10)
    assert torch.equal(bg[:, 1::2].cpu(), base_s[:, 1::2]), "the strided param writes through to its base only"


# ---------------------------------------------------------------------------------------------------------
# determinism, state_dict
# ---------------------------------------------------------------------------------------------------------
@DB
def test_deterministic_cuda(info):
    """Two runs give the same bits (no atomics: per-chunk norm partials added in a fixed order)."""
    problem = Problem([(300, 250), (7, 5), (5,), (3 * CHUNK + 3,), (0,)], torch.float32, seed=37)
    a, opt_a = _fused_run(info, problem, 6, device=CUDA)
    b, opt_b = _fused_run(info, problem, 6, device=CUDA)
    assert_equal_tensors(a, b)
    assert_state_dicts_equal(opt_a.state_dict(), opt_b.state_dict())


@DB
def test_state_dict_round_trip_cpu_cuda(info):
    """8 steps on the CPU, a state_dict into an optimizer on CUDA params, 8 steps there, its state_dict back
    into a CPU optimizer, 8 more steps: the same as 24 steps on the CPU (float64). The steps follow the params
    to their device."""
    n = 8
    problem = Problem(SMALL_SHAPES, F64, seed=5, zero_init=SMALL_ZERO_INIT)
    losses, _ = losses_for(info, 3 * n, seed=2)
    loss = (lambda k: losses[k]) if losses else (lambda k: None)

    ref_params = problem.params()
    ref = info.fused(ref_params)
    for k in range(3 * n):
        take_step(info, ref, ref_params, problem.grads(k), k, loss(k))

    params = problem.params()
    opt = info.fused(params)
    for stage, device in enumerate(["cpu", CUDA, "cpu"]):
        if stage > 0:
            saved = copy.deepcopy(opt.state_dict())
            params = [p.detach().to(device, copy=True).requires_grad_(True) for p in params]
            opt = info.fused(params)
            opt.load_state_dict(saved)
        for k in range(stage * n, (stage + 1) * n):
            take_step(info, opt, params, problem.grads(k), k, loss(k))
        assert all(opt.state[p]["step"].device == p.device for p in params if opt.state[p])
    assert all(p.device.type == "cpu" for p in params)
    assert_rel_close(params, ref_params, 1e-10)
    assert_state_close(opt, ref, params, ref_params, 1e-10)
    if info.is_dals:
        assert opt.phase == ref.phase


# ---------------------------------------------------------------------------------------------------------
# the ops
# ---------------------------------------------------------------------------------------------------------
OP_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
OP_CASES = [(name, dtype, steps_on) for name in OP_RECIPES for dtype in OP_TOL for steps_on in ("cuda", "cpu")]


@pytest.mark.parametrize("recipe,dtype,steps_on", OP_CASES,
                         ids=[f"{r}-{str(d)[6:]}-steps_{s}" for r, d, s in OP_CASES])
def test_fused_step_op_cuda_matches_cpu(recipe, dtype, steps_on):
    """One call of the op on CUDA against the same call on the CPU: every tensor it may write (params, grads,
    states, steps, trust ratios) agrees; a set found_inf leaves them all alone. Steps on the host take the
    backend's fallback (device copies written back)."""
    r, options = OP_RECIPES[recipe]
    args, kwargs = op_call(r, dtype=dtype, **options)
    cuda_args, cuda_kwargs = to_cuda(args), to_cuda(kwargs)
    if steps_on == "cpu":
        cuda_args = (*cuda_args[:5], [s.clone() for s in args[5]])
    before = copy.deepcopy(args)
    torch.ops.layerlr.fused_step_(*args, **kwargs)
    torch.ops.layerlr.fused_step_(*cuda_args, **cuda_kwargs)
    for name, got_list, want_list in zip(["params", "grads", "filters", "exp_avgs", "exp_avg_sqs", "steps"],
                                         cuda_args, args):
        assert len(got_list) == len(want_list)
        for i, (got, want) in enumerate(zip(got_list, want_list)):
            assert got.dtype == want.dtype and got.shape == want.shape, f"{name}[{i}]"
            if name == "steps":
                assert got.device.type == steps_on and float(got) == float(want), f"steps[{i}]"
            else:
                assert rel_err(got, want) <= OP_TOL[dtype], f"{name}[{i}]: {rel_err(got, want):.3e}"
    if kwargs["trust_ratios"] is not None:
        got, want = cuda_kwargs["trust_ratios"].cpu(), kwargs["trust_ratios"]
        assert torch.allclose(got, want, rtol=1e-5 if dtype != F64 else 1e-12, atol=0), (got, want)
    if recipe == "skipped_found_inf":
        for got, want in zip(cuda_args, before):
            assert_equal_tensors([x.cpu() for x in got], want)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6), (torch.bfloat16, 1e-5),
                                       (torch.float16, 1e-5)], ids=str)
def test_tensor_norms_cuda(dtype, tol):
    """Per-tensor norms on CUDA against torch.linalg.vector_norm in float64: empty, 0-d, odd sizes around the
    vector width and the chunk, non-contiguous, more tensors than one launch holds, a tensor longer than one
    launch; and the same bits on a second call."""
    gen = torch.Generator().manual_seed(1)
    shapes = [(0,), (1,), (3,), (4,), (5,), (CHUNK - 1,), (CHUNK,), (CHUNK + 1,), (0, 5), (3, 4, 5), (),
              (2, 0, 3)] + [(1 + i,) for i in range(100)] + [(MAX_BLOCKS * CHUNK + 5,)]
    tensors = [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in shapes]
    tensors.append(torch.randn(9, 13, generator=gen, dtype=F64).to(dtype).t())
    tensors.append(torch.randn(10, 40, generator=gen, dtype=F64).to(dtype)[::3, 1::2])
    tensors.append(torch.zeros(12, dtype=dtype))
    tensors = [t.to(CUDA) for t in tensors]
    out = torch_layerlr._ops.tensor_norms(tensors)
    assert out.device.type == "cuda" and out.dtype == (F64 if dtype == F64 else torch.float32)
    assert torch.equal(out, torch_layerlr._ops.tensor_norms(tensors))
    for i, (t, got) in enumerate(zip(tensors, out.tolist())):
        want = torch.linalg.vector_norm(t.to(F64)).item()
        err = abs(got - want) / want if want > 0 else abs(got)
        assert err <= tol, f"tensor {i} {tuple(t.shape)}: {got} vs {want}"


def test_dals_phase_op_cuda():
    """The detector kernel (detector, coefficients and loss on the device) follows the CPU op, call by call."""
    losses, _ = dals_losses(60, seed=9)
    alphas, gates = [0.3, 0.6, 0.7], [0.0, 1.0, 1.0]
    detector, coef = torch.zeros(3, dtype=F64), torch.tensor([alphas[0], gates[0]], dtype=F64)
    detector_cuda, coef_cuda = detector.to(CUDA), coef.to(CUDA)
    for loss in losses:
        for det, c, dev in ((detector, coef, "cpu"), (detector_cuda, coef_cuda, CUDA)):
            torch.ops.layerlr.dals_phase_(det, c, torch.tensor(loss, dtype=F64, device=dev), tau1=0.01,
                                          tau2=0.002, phase_alpha=alphas, phase_gate=gates)
        got = detector_cuda.cpu()
        assert math.isclose(got[0].item(), detector[0].item(), rel_tol=1e-14, abs_tol=0.0)
        assert got[1:].tolist() == detector[1:].tolist()
        assert coef_cuda.cpu().tolist() == coef.tolist()


def test_dals_loss_on_the_device():
    """DALS keeps its detector on the host; a loss on the device (step(loss=...)) gives the same step as the
    same loss on the host."""
    info = by_name("dals")
    problem = Problem([(6, 4), (4,)], torch.float32, seed=23)
    losses, _ = dals_losses(12)
    runs = []
    for loss_device in ("cpu", CUDA):
        params = problem.params(device=CUDA)
        opt = info.fused(params)
        for k in range(12):
            for p, g in zip(params, problem.grads(k)):
                p.grad = g.to(CUDA, copy=True)
            opt.step(loss=torch.tensor(losses[k], dtype=F64, device=loss_device))
        runs.append((params, opt.phase))
    assert runs[0][1] == runs[1][1]
    assert_equal_tensors(runs[0][0], runs[1][0])
