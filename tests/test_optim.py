"""Generic tests of the fused optimizers, run over every row of the optimizer table (tests/optim_db.py).

Every numerical expectation comes from the float64 reference optimizers in tests/reference or from a closed
form; nothing here is a number produced by the code under test. Tolerances are relative, per tensor:
``||fused - ref|| / ||ref||``.

* float64 params, 100 steps: 1e-12
* float32 params, 100 steps: 1e-5 (reference on the float64 values of the same float32 init and gradients)
* bfloat16 params, 20 steps: 1e-2 (reference on bfloat16 params holding the same init, float64 math and state,
  see test_fused_matches_reference_bfloat16)

The same tolerances apply to the optimizer state (moments, momentum buffers, filters), which is compared
with the reference's wherever both keep it. Tests other than the main comparison use small tensors.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from optim_db import OPTIM_IDS, PerParam, by_name, dals_losses, dals_schedule, optim_db  # noqa: E402

import torch_layerlr  # noqa: E402,F401
from torch_layerlr._ops import Recipe  # noqa: E402
from torch_layerlr.schedules import WarmupCosine  # noqa: E402

#: Devices of the device-generic tests; tests/test_cuda.py holds the CUDA-specific ones.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="needs a CUDA device"))]

F64 = torch.float64
DB = pytest.mark.parametrize("info", optim_db, ids=OPTIM_IDS)

#: (dtype, steps, relative tolerance) of the fused-vs-reference comparisons.
PRECISION = {
    torch.float64: (100, 1e-12),
    torch.float32: (100, 1e-5),
    torch.bfloat16: (20, 1e-2),
}

#: The mixed shapes of the main comparison: 2-D, a 1-D bias, zero-size, 3-D, a 75000-element tensor (5 engine
#: chunks of 16384, and more than 2 * 32768 elements in all, so the engine splits the work over 2 tasks), a
#: 0-d scalar and a tensor that starts at zero (trust ratio 1).
BIG = (300, 250)
SHAPES = [(7, 5), (5,), (0, 3), (3, 4, 5), BIG, (), (4, 3)]
ZERO_INIT = {6}
ZERO_INIT_BF16 = 5  # index of the zero tensor in BF16_SHAPES
#: The same without the big tensor, for the tests that do not need several chunks.
SMALL_SHAPES = [(7, 5), (5,), (0, 3), (3, 4, 5), (), (4, 3)]
SMALL_ZERO_INIT = {5}

#: How the reference state names map to the fused ones (the filter has a different name in each reference).
STATE_NAMES = {"step": ("step",), "exp_avg": ("exp_avg",), "exp_avg_sq": ("exp_avg_sq",),
               "momentum_buffer": ("momentum_buffer",), "filter": ("grokfast_ema", "filtered_grad")}


# ---------------------------------------------------------------------------------------------------------
# harness
# ---------------------------------------------------------------------------------------------------------
_GRAD_CACHE: dict = {}


class Problem:
    """Deterministic initial values and gradient sequence, exactly representable in ``dtype``.

    The fused optimizer gets them in ``dtype``, the reference the same values in float64. Gradients are
    cached across tests (the same problem runs for every row of the table).
    """

    def __init__(self, shapes, dtype, seed=0, zero_init=()):
        self.shapes, self.dtype, self.seed = [tuple(s) for s in shapes], dtype, seed
        gen = torch.Generator().manual_seed(seed)
        self.init = []
        for i, s in enumerate(self.shapes):
            x = torch.zeros(s, dtype=F64) if i in zero_init else torch.randn(s, generator=gen, dtype=F64)
            self.init.append(x.to(dtype))

    def grads(self, k):
        """The gradients of step k (k from 0), in ``dtype``."""
        key = (tuple(self.shapes), self.dtype, self.seed, k)
        if key not in _GRAD_CACHE:
            gen = torch.Generator().manual_seed(10_000 * (self.seed + 1) + k)
            _GRAD_CACHE[key] = [torch.randn(s, generator=gen, dtype=F64).to(self.dtype) for s in self.shapes]
        return _GRAD_CACHE[key]

    def params(self, dtype=None, device="cpu"):
        return [x.to(device=device, dtype=dtype or self.dtype, copy=True).requires_grad_(True) for x in self.init]


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.to(device=p.device, dtype=p.dtype, copy=True)


@contextlib.contextmanager
def num_threads(n):
    """torch.set_num_threads(n) inside, the previous count restored on the way out."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def take_step(info, opt, params, grads, k, loss=None):
    """Step k (from 0). Rotates the ways to step: plain step(), step(loss=...), step(closure).

    For DALS the loss of step k goes through update_phase (float), step(loss=<0-d tensor>) or the closure's
    return value; every way must give the same result as the reference fed the same way.
    """
    mode = k % 3
    if loss is None:
        loss = float(k)
    if mode == 0:
        set_grads(params, grads)
        if info.is_dals:
            opt.update_phase(loss)
        return opt.step()
    if mode == 1:
        set_grads(params, grads)
        return opt.step(loss=torch.tensor(loss, dtype=F64)) if info.is_dals else opt.step()
    expected = torch.tensor(loss, dtype=F64)

    def closure():
        set_grads(params, grads)
        return expected

    returned = opt.step(closure)
    assert returned is expected, "step(closure) must return the closure's loss"
    return returned


def rel_err(x, y):
    x, y = x.detach().to("cpu", F64), y.detach().to("cpu", F64)
    assert x.shape == y.shape, (x.shape, y.shape)
    num = torch.linalg.vector_norm(x - y).item()
    den = torch.linalg.vector_norm(y).item()
    return num / den if den > 0 else num


def assert_rel_close(actual, expected, tol, what="param"):
    for i, (x, y) in enumerate(zip(actual, expected, strict=True)):
        assert bool(torch.isfinite(x.detach().to(F64)).all()), f"{what} {i}: not finite"
        err = rel_err(x, y)
        assert err <= tol, f"{what} {i} of shape {tuple(y.shape)}: relative error {err:.3e} > {tol:.1e}"


def assert_state_close(fused, ref, params_fused, params_ref, tol):
    """Per-parameter state of the fused optimizer equals the reference's (same meaning, other names)."""
    for i, (pf, pr) in enumerate(zip(params_fused, params_ref)):
        sf, sr = fused.state.get(pf, {}), ref.state.get(pr, {})
        assert (len(sf) == 0) == (len(sr) == 0), f"param {i}: state presence differs"
        for name, ref_names in STATE_NAMES.items():
            ref_name = next((n for n in ref_names if n in sr), None)
            if name not in sf or ref_name is None:
                continue
            if name == "step":
                assert sf["step"].dtype == torch.float32 and float(sf["step"]) == float(sr["step"]), \
                    f"param {i}: step {float(sf['step'])} != {float(sr['step'])}"
            else:
                assert_rel_close([sf[name]], [sr[ref_name]], tol, what=f"state {name!r} of param {i}")


def assert_equal_tensors(a, b, what="param"):
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what} {i}: {x.dtype}{tuple(x.shape)} vs " \
                                                          f"{y.dtype}{tuple(y.shape)}"
        assert torch.equal(x.detach(), y.detach()), f"{what} {i} differs"


def assert_state_dicts_equal(a, b, path="state_dict"):
    """Recursive bitwise equality of two state dicts (tensors with torch.equal and the same dtype)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            assert_state_dicts_equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_state_dicts_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), f"{path}: {a!r} != {b!r}"


def losses_for(info, steps, seed=0):
    return dals_losses(steps, seed) if info.is_dals else (None, None)


def run_pair(info, problem, steps, *, groups=None, overrides=None, scheduler=None, ref_dtype=F64, device="cpu"):
    """Run the reference (params in ``ref_dtype``, math and state in float64), then the fused optimizer (params
    in problem.dtype, on ``device``) on the same gradients (and DALS losses); returns (fused, ref, fused params,
    ref params).

    ``groups(params)`` may turn the param list into param groups. ``scheduler(opt)`` builds an lr scheduler
    that is stepped after every optimizer step (one for each optimizer); the lrs of every step must agree.
    DALS: the phase after every step must be the one the loss sequence was built for, in both.
    The reference runs on one thread: its thread count does not matter, and on a busy 2-core machine it is
    much faster so. (One optimizer after the other rather than interleaved, so that the thread pool is not
    switched on and off at every step.)
    """
    losses, phases = losses_for(info, steps)

    def drive(cls_build, params):
        opt = cls_build(groups(params) if groups else params, overrides)
        sched = scheduler(opt) if scheduler else None
        seen_phases, lrs = [], []
        for k in range(steps):
            take_step(info, opt, params, problem.grads(k), k, losses[k] if losses else None)
            if info.is_dals:
                seen_phases.append(opt.phase)
            if sched:
                sched.step()
                lrs.append([g["lr"] for g in opt.param_groups])
        return opt, seen_phases, lrs

    pr = problem.params(ref_dtype)
    with num_threads(1):
        ref, ref_phases, ref_lrs = drive(info.ref, pr)
    pf = problem.params(device=device)
    fused, fused_phases, fused_lrs = drive(info.fused, pf)
    if info.is_dals:
        assert ref_phases == phases, "the reference does not follow the loss sequence's phases"
        assert fused_phases == phases, f"phases {fused_phases} != expected {phases}"
    assert fused_lrs == ref_lrs
    return fused, ref, pf, pr


# ---------------------------------------------------------------------------------------------------------
# the table itself
# ---------------------------------------------------------------------------------------------------------
def test_table_covers_every_optimizer_and_option():
    families = {info.family for info in optim_db}
    assert families == {"LayerwiseSGD", "LayerwiseAdamW", "GrokfastAdamW", "LARS", "LAMB", "DALS"}
    assert sum(info.kwargs.get("maximize", False) for info in optim_db) >= 2
    variants = {info.kwargs.get("variant") for info in optim_db if info.is_dals}
    assert variants == {"dals", "fast", "acc"}
    # DALS rows: warmup (s(1) = 0 where W > 0), the end of the cosine and SGDR restarts within 100 steps
    for info in optim_db:
        if info.is_dals:
            s = [dals_schedule(info, k) for k in range(1, 101)]
            if info.kwargs["variant"] == "acc":
                assert sum(b > a for a, b in zip(s, s[1:])) >= 3, info.name  # restarts
            else:
                assert min(s) == 0.0 and max(s) == 1.0, info.name
    # the loss sequence visits all three phases, with every transition
    _, phases = dals_losses(100)
    assert {(a, b) for a, b in zip(phases, phases[1:]) if a != b} == {(a, b) for a in range(3) for b in range(3)
                                                                       if a != b}


# ---------------------------------------------------------------------------------------------------------
# fused vs reference
# ---------------------------------------------------------------------------------------------------------
@DB
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_fused_matches_reference(info, dtype):
    """100 steps on mixed shapes (incl. a 0-size, a 0-d, a zero and a 75000-element tensor): params and
    every state buffer equal the float64 reference on the float64 values of the same init and gradients."""
    steps, tol = PRECISION[dtype]
    problem = Problem(SHAPES, dtype, seed=1, zero_init=ZERO_INIT)
    fused, ref, pf, pr = run_pair(info, problem, steps)
    assert all(p.dtype == dtype for p in pf)
    assert_rel_close(pf, pr, tol)
    assert_state_close(fused, ref, pf, pr, tol)


#: bfloat16: the 0-d tensor is left out: one element has no averaging, a single ulp is 0.8% of it.
BF16_SHAPES = [s for s in SHAPES if s != ()]


@DB
def test_fused_matches_reference_bfloat16(info):
    """bfloat16 params, 20 steps. The reference runs on bfloat16 params too: it computes in float64 from the
    same bfloat16 values, keeps float64 state, and rounds the params to bfloat16 after each step exactly as
    the fused optimizer must (``p.copy_``). So the comparison measures the engine's own precision (float32
    math, state stored in the param dtype), not the rounding of the params that any bfloat16 optimizer
    without stochastic rounding has (against a float64-param reference that alone is 0.5-2.5% per tensor
    after 20 steps)."""
    steps, tol = PRECISION[torch.bfloat16]
    problem = Problem(BF16_SHAPES, torch.bfloat16, seed=1, zero_init={ZERO_INIT_BF16})
    fused, ref, pf, pr = run_pair(info, problem, steps, ref_dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in pf)
    assert all(s.dtype == torch.bfloat16 for p in pf for k, s in fused.state[p].items() if k != "step")
    assert_rel_close(pf, pr, tol)
    assert_state_close(fused, ref, pf, pr, math.inf)  # presence and step counts


@DB
def test_non_contiguous_params_and_grads(info):
    """Params that are transposed / strided / channels-last views, and grads whose strides differ from the
    param's (transposed, strided, expanded): same result as the reference, params stay the same views."""
    gen = torch.Generator().manual_seed(3)
    base_t = torch.randn(5, 7, generator=gen, dtype=F64)
    base_s = torch.randn(6, 10, generator=gen, dtype=F64)
    base_c = torch.randn(2, 3, 4, 5, generator=gen, dtype=F64)
    dense = torch.randn(7, 5, generator=gen, dtype=F64)
    bias = torch.randn(6, generator=gen, dtype=F64)

    def make():
        bs = base_s.clone()
        params = [
            torch.nn.Parameter(base_t.clone().t()),  # transposed view (dense, not contiguous)
            bs[:, ::2].requires_grad_(True),  # strided leaf view (not dense)
            torch.nn.Parameter(base_c.clone().contiguous(memory_format=torch.channels_last)),
            torch.nn.Parameter(dense.clone()),  # contiguous, transposed grad
            torch.nn.Parameter(bias.clone()),  # contiguous, strided grad
            torch.nn.Parameter(dense[:4].clone()),  # contiguous, expanded (stride 0) grad
        ]
        return params, bs

    pf, bf = make()
    pr = [p.detach().clone().requires_grad_(True) for p in pf]
    strides = [p.stride() for p in pf]
    fused, ref = info.fused(pf), info.ref(pr)
    losses, _ = losses_for(info, 20)

    def grads_with_odd_strides(k):
        g = torch.Generator().manual_seed(100 + k)
        return [
            torch.randn(7, 5, generator=g, dtype=F64),  # contiguous grad for the transposed param
            torch.randn(6, 5, generator=g, dtype=F64),  # contiguous grad for the strided param
            torch.randn(2, 3, 4, 5, generator=g, dtype=F64),  # contiguous grad for channels-last
            torch.randn(5, 7, generator=g, dtype=F64).t(),  # transposed grad
            torch.randn(12, generator=g, dtype=F64)[::2],  # strided grad
            torch.randn(4, 1, generator=g, dtype=F64).expand(4, 5),  # expanded grad
        ]

    def set_odd(params, grads):
        for p, g in zip(params, grads):
            p.grad = g  # keep the strides (set_grads would clone into a fresh layout)

    for k in range(20):
        grads = grads_with_odd_strides(k)
        if info.is_dals:
            fused.update_phase(losses[k])
            ref.update_phase(losses[k])
        set_odd(pf, grads)
        set_odd(pr, [g.clone() for g in grads])
        fused.step()
        ref.step()
    assert [p.stride() for p in pf] == strides, "params must keep their layout"
    assert_rel_close(pf, pr, 1e-12)
    assert_state_close(fused, ref, pf, pr, 1e-12)
    # the strided param writes through to its base, and only there
    assert torch.equal(bf[:, 1::2], base_s[:, 1::2])
    assert torch.equal(bf[:, ::2], pf[1].detach())


# ---------------------------------------------------------------------------------------------------------
# state_dict: bit-exact resume
# ---------------------------------------------------------------------------------------------------------
@DB
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("how", ["deepcopy", "torch.save"])
def test_bit_exact_resume(info, dtype, how):
    n_first, n_more = 12, 13  # DALS: past the warmup, through phase changes and SGDR restarts
    problem = Problem(SMALL_SHAPES, dtype, seed=5, zero_init=SMALL_ZERO_INIT)
    losses, _ = losses_for(info, n_first + n_more, seed=2)
    loss = (lambda k: losses[k]) if losses else (lambda k: None)

    params = problem.params()
    opt = info.fused(params)
    for k in range(n_first):
        take_step(info, opt, params, problem.grads(k), k, loss(k))
    saved_params = [p.detach().clone() for p in params]
    if how == "deepcopy":
        saved = copy.deepcopy(opt.state_dict())
    else:
        buffer = io.BytesIO()
        torch.save(opt.state_dict(), buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
    phases = []
    for k in range(n_first, n_first + n_more):
        take_step(info, opt, params, problem.grads(k), k, loss(k))
        phases.append(opt.phase if info.is_dals else None)

    params2 = [x.clone().requires_grad_(True) for x in saved_params]
    opt2 = info.fused(params2)
    opt2.load_state_dict(saved)
    phases2 = []
    for k in range(n_first, n_first + n_more):
        take_step(info, opt2, params2, problem.grads(k), k, loss(k))
        phases2.append(opt2.phase if info.is_dals else None)
    assert phases2 == phases
    assert_equal_tensors(params2, params)
    assert_state_dicts_equal(opt2.state_dict(), opt.state_dict())


def test_dals_resume_keeps_global_step_phase_and_cycle():
    """The DALS global state (step, phase, SGDR cycle) survives the round trip: the resumed optimizer's next
    step uses the schedule factor and the phase of step N+1, not those of step 1."""
    info = by_name("dals_acc")
    problem = Problem([(6, 4)], F64, seed=7)
    losses, phases = dals_losses(30, seed=4)
    params, ref_params = problem.params(), problem.params()
    opt, ref = info.fused(params), info.ref(ref_params)
    for k in range(17):  # restarts after steps 5 and 15
        for o, p in ((opt, params), (ref, ref_params)):
            set_grads(p, problem.grads(k))
            o.step(loss=losses[k])
    saved = copy.deepcopy(opt.state_dict())
    params2 = [p.detach().clone().requires_grad_(True) for p in params]
    opt2 = info.fused(params2)
    opt2.load_state_dict(saved)
    assert opt2.phase == ref.phase == phases[16]
    for k in range(17, 30):
        for o, p in ((opt2, params2), (ref, ref_params)):
            set_grads(p, problem.grads(k))
            o.step(loss=losses[k])
        assert opt2.phase == ref.phase == phases[k]
    assert_rel_close(params2, ref_params, 1e-12)


# ---------------------------------------------------------------------------------------------------------
# lr schedulers
# ---------------------------------------------------------------------------------------------------------
SCHEDULERS = {
    "LambdaLR": lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.9 ** k + 0.1 * (k % 3)),
    "StepLR": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5),
    "WarmupCosine": lambda opt: WarmupCosine(opt, total_steps=15, warmup_steps=3, min_lr_ratio=0.1),
}


@DB
@pytest.mark.parametrize("scheduler", list(SCHEDULERS), ids=str)
def test_lr_scheduler(info, scheduler):
    problem = Problem(SMALL_SHAPES, F64, seed=11, zero_init=SMALL_ZERO_INIT)
    fused, ref, pf, pr = run_pair(info, problem, 20, scheduler=SCHEDULERS[scheduler])
    assert_rel_close(pf, pr, 1e-12)
    assert_state_close(fused, ref, pf, pr, 1e-12)


# ---------------------------------------------------------------------------------------------------------
# param groups
# ---------------------------------------------------------------------------------------------------------
def group_overrides(info):
    """A second param group that differs in every setting the optimizer has."""
    defaults = info.fused([torch.zeros(1, requires_grad=True)]).defaults
    o = {"lr": defaults["lr"] * 0.5, "weight_decay": 0.02, "lr_mult": PerParam(lambda i, n: 0.5 + i, "0.5+i")}
    if "momentum" in defaults:
        o["momentum"] = 0.6
    if "betas" in defaults:
        o["betas"] = (0.7, 0.9)
    if "depth_ratio" in defaults:
        o["depth_ratio"] = PerParam(lambda i, n: 0.9 - 0.3 * i, "0.9-0.3i")
    if "grokfast_lambda" in defaults and defaults.get("grokfast_alpha") is not None:
        o["grokfast_lambda"] = 0.5
    return o


@DB
def test_param_groups_with_different_settings(info):
    problem = Problem([(7, 5), (5,), (3, 4), (2, 3, 2), (6,)], F64, seed=13)
    second = group_overrides(info)

    def groups(params):
        return [{"params": params[:2]}, dict(second, params=params[2:])]

    fused, ref, pf, pr = run_pair(info, problem, 30, groups=groups)
    # the groups really differ: the expanded settings are in the fused optimizer's groups
    g0, g1 = fused.param_groups
    assert g1["lr"] == second["lr"] and g1["lr_mult"] == [0.5, 1.5, 2.5]
    assert g0["lr"] != g1["lr"]
    assert_rel_close(pf, pr, 1e-12)
    assert_state_close(fused, ref, pf, pr, 1e-12)


@DB
def test_settings_changed_between_steps(info):
    """Group settings are read at every step, as in torch.optim: lr, weight decay and lr_mult changed
    by hand after some steps."""
    problem = Problem([(4, 3), (3,), (2, 2, 2)], F64, seed=17)
    losses, _ = losses_for(info, 12)
    pf, pr = problem.params(), problem.params()
    fused, ref = info.fused(pf), info.ref(pr)
    for k in range(12):
        if k == 5:
            for o in (fused, ref):
                g = o.param_groups[0]
                g.update(lr=g["lr"] * 0.3, weight_decay=0.05, lr_mult=[2.0, 0.5, 1.5])
        for o, p in ((fused, pf), (ref, pr)):
            take_step(info, o, p, problem.grads(k), k, losses[k] if losses else None)
    assert_rel_close(pf, pr, 1e-12)


@pytest.mark.parametrize("dampening", [0.0])
def test_sgd_momentum_switched_on_later(dampening):
    """Momentum 0 for the first steps, then 0.9: the buffer starts from zero when it is created late, which equals
    torch.optim.SGD (``buf = g`` when there is no buffer yet) when dampening is 0 (documented in LayerwiseSGD;
    with dampening the late buffer starts at ``(1 - dampening) * g``)."""
    info = by_name("sgd_dampening_wd")
    problem = Problem([(4, 3), (3,)], F64, seed=17)
    pf, pr = problem.params(), problem.params()
    fused = info.fused(pf, momentum=0.0, dampening=dampening)
    ref = info.ref(pr, momentum=0.0, dampening=dampening)
    for k in range(8):
        if k == 3:
            for o in (fused, ref):
                o.param_groups[0]["momentum"] = 0.9
        for o, p in ((fused, pf), (ref, pr)):
            set_grads(p, problem.grads(k))
            o.step()
    assert_rel_close(pf, pr, 1e-12)


# ---------------------------------------------------------------------------------------------------------
# GradScaler
# ---------------------------------------------------------------------------------------------------------
def scaled_backward(scaler, params, grads, inf_at=None):
    """backward of sum(p * G) through the scaler: p.grad = scale * G (exact: the scale is a power of 2)."""
    for p in params:
        p.grad = None
    loss = sum((p * g.to(device=p.device, dtype=p.dtype)).sum() for p, g in zip(params, grads))
    scaler.scale(loss).backward()
    if inf_at is not None:
        params[inf_at].grad.view(-1)[0] = float("inf")


@contextlib.contextmanager
def no_host_sync(device, info):
    """On CUDA a host sync inside raises (``torch.cuda.set_sync_debug_mode("error")``). DALS is exempt: its
    schedule and loss phase are host state, so its step reads found_inf on the host (a documented sync)."""
    if device == "cpu" or info.is_dals:
        yield
        return
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


@DB
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_grad_scaler(info, dtype, device):
    tol = PRECISION[dtype][1]
    steps = 12
    shapes = [(7, 5), (5,), (0, 3), (3, 4, 5)]
    problem = Problem(shapes, dtype, seed=19)
    losses, _ = losses_for(info, steps + 1, seed=3)
    loss = (lambda k: losses[k]) if losses else (lambda k: None)
    skip_at = 7  # the inf step; the references never see it

    scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 12, growth_interval=3)
    ps, pu, pr = problem.params(device=device), problem.params(device=device), problem.params(F64)
    scaled, unscaled, ref = info.fused(ps), info.fused(pu), info.ref(pr)
    k_ref = 0
    for k in range(steps + 1):
        grads = problem.grads(k)
        if k == skip_at:
            scaled_backward(scaler, ps, grads, inf_at=3)
            before_params = [p.detach().clone() for p in ps]
            before_state = copy.deepcopy(scaled.state_dict())
            scale = scaler.get_scale()
            with no_host_sync(device, info):
                scaler.step(scaled)
            scaler.update()
            assert_equal_tensors(ps, before_params)
            assert_state_dicts_equal(scaled.state_dict(), before_state)
            assert scaler.get_scale() < scale
            continue
        scaled_backward(scaler, ps, grads)
        if info.is_dals:
            scaled.update_phase(loss(k_ref))
        with no_host_sync(device, info):
            scaler.step(scaled)
        scaler.update()
        take_step(info, unscaled, pu, grads, k_ref, loss(k_ref))
        take_step(info, ref, pr, grads, k_ref, loss(k_ref))
        k_ref += 1
    # the growth interval makes the scale change during the run: unscaling is by the current scale
    assert scaler.get_scale() != 2.0 ** 12
    assert all(float(scaled.state[p]["step"]) == steps for p in ps)
    assert_equal_tensors(ps, pu)  # power-of-two scaling is exact
    assert_rel_close(ps, pr, tol)


def test_dals_grad_scaler_skip_leaves_detector_alone():
    """A step that GradScaler skips (inf grads) leaves every part of the DALS state unchanged, also when the
    loss is handed to that step as step(loss=...): torch would not call step() at all for such a step."""
    info = by_name("dals")
    problem = Problem([(4, 3)], torch.float32, seed=23)
    params = problem.params()
    opt = info.fused(params)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    losses, _ = dals_losses(5)
    for k in range(4):
        scaled_backward(scaler, params, problem.grads(k))
        scaler.step(opt, loss=losses[k])
        scaler.update()
    before = copy.deepcopy(opt.state_dict())
    phase = opt.phase
    scaled_backward(scaler, params, problem.grads(4), inf_at=0)
    scaler.step(opt, loss=losses[4])
    assert opt.phase == phase
    assert_state_dicts_equal(opt.state_dict(), before)


def test_grad_scaler_after_unscale():
    """scaler.unscale_(opt) before scaler.step(opt): no second unscale in the engine."""
    info = by_name("lamb")
    problem = Problem([(5, 4), (4,)], torch.float32, seed=29)
    ps, pr = problem.params(), problem.params(F64)
    scaled, ref = info.fused(ps), info.ref(pr)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    for k in range(6):
        scaled_backward(scaler, ps, problem.grads(k))
        scaler.unscale_(scaled)
        scaler.step(scaled)
        scaler.update()
        set_grads(pr, problem.grads(k))
        ref.step()
    assert_rel_close(ps, pr, 1e-5)


# ---------------------------------------------------------------------------------------------------------
# closures and missing gradients
# ---------------------------------------------------------------------------------------------------------
@DB
def test_closure_and_none_grads(info):
    """step(closure) returns the closure's loss; params whose grad is None are skipped (no state, unchanged);
    a param with a grad only on some steps has its own step count."""
    problem = Problem([(4, 5), (5,), (3, 3), (6,)], F64, seed=31)
    pf, pr = problem.params(), problem.params()
    fused, ref = info.fused(pf), info.ref(pr)
    losses, _ = losses_for(info, 15, seed=1)
    never = 1  # grad always None
    sometimes = 2  # grad on even steps only

    for k in range(15):
        grads = list(problem.grads(k))
        grads[never] = None
        if k % 2:
            grads[sometimes] = None
        loss_value = torch.tensor(losses[k] if losses else 1.0 + k, dtype=F64)
        for o, p in ((fused, pf), (ref, pr)):
            def closure(p=p):
                for q in p:
                    q.grad = None
                set_grads(p, grads)
                return loss_value
            assert o.step(closure) is loss_value
    assert pf[never] not in fused.state or len(fused.state[pf[never]]) == 0
    assert torch.equal(pf[never].detach(), problem.init[never])
    assert float(fused.state[pf[sometimes]]["step"]) == 8
    assert float(fused.state[pf[0]]["step"]) == 15
    assert_rel_close(pf, pr, 1e-12)
    assert_state_close(fused, ref, pf, pr, 1e-12)


@DB
def test_step_without_any_grad_changes_nothing(info):
    params = Problem([(3, 2)], F64).params()
    opt = info.fused(params)
    before = params[0].detach().clone()
    assert opt.step() is None
    assert torch.equal(params[0].detach(), before)
    assert len(opt.state) == 0


# ---------------------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------------------
def _fused_run(info, problem, steps, device="cpu"):
    params = problem.params(device=device)
    opt = info.fused(params)
    losses, _ = losses_for(info, steps)
    for k in range(steps):
        take_step(info, opt, params, problem.grads(k), k, losses[k] if losses else None)
    return params, opt


@DB
def test_deterministic_and_thread_count_independent(info):
    problem = Problem([BIG, (7, 5), (5,), (2 * 16384 + 3,)], torch.float32, seed=37)
    steps = 6
    a, opt_a = _fused_run(info, problem, steps)
    b, opt_b = _fused_run(info, problem, steps)
    assert_equal_tensors(a, b)
    assert_state_dicts_equal(opt_a.state_dict(), opt_b.state_dict())
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = _fused_run(info, problem, steps)
        torch.set_num_threads(2)
        two, _ = _fused_run(info, problem, steps)
    finally:
        torch.set_num_threads(threads)
    assert_equal_tensors(one, two)
    assert_equal_tensors(one, a)


# ---------------------------------------------------------------------------------------------------------
# zero-size and zero tensors
# ---------------------------------------------------------------------------------------------------------
@DB
def test_zero_size_and_zero_tensors(info):
    """Zero-size params stay empty and still count steps; a zero param (||w|| = 0) and a param with a zero
    gradient get the trust-ratio special cases of the spec (ratio 1 where the norm is 0)."""
    shapes = [(0,), (0, 4), (4, 3), (3, 3), (5,)]
    zero_param, zero_grad = 2, 3
    problem = Problem(shapes, F64, seed=41, zero_init={zero_param})
    pf, pr = problem.params(), problem.params()
    fused, ref = info.fused(pf), info.ref(pr)
    losses, _ = losses_for(info, 4)
    for k in range(4):
        grads = list(problem.grads(k))
        grads[zero_grad] = torch.zeros(shapes[zero_grad], dtype=F64)
        take_step(info, fused, pf, grads, k, losses[k] if losses else None)
        take_step(info, ref, pr, grads, k, losses[k] if losses else None)
        if k == 0:
            ratios = fused.trust_ratios()
            trust = info.family in ("LARS", "LAMB", "DALS")
            assert bool(ratios) == trust
            if trust:
                assert ratios[pf[0]] == 1.0 and ratios[pf[1]] == 1.0  # zero-size: ||w|| = 0
                assert ratios[pf[zero_param]] == 1.0  # ||w|| = 0 on the first step
    assert pf[0].shape == (0,) and pf[1].shape == (0, 4)
    assert all(float(fused.state[p]["step"]) == 4 for p in pf)
    assert_rel_close(pf, pr, 1e-12)
    assert_state_close(fused, ref, pf, pr, 1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_only_zero_size_params(device):
    for info in optim_db:
        params = [torch.zeros(0, device=device, requires_grad=True),
                  torch.zeros(0, 3, device=device, requires_grad=True)]
        opt = info.fused(params)
        for p in params:
            p.grad = torch.zeros_like(p)
        if info.is_dals:
            opt.update_phase(1.0)
        opt.step()
        assert all(float(opt.state[p]["step"]) == 1 for p in params), info.name


def test_lars_zero_param_first_step_closed_form():
    """LARS on a zero tensor: local rate 1, so the first step is w = -lr * lr_mult * g (v starts at 0)."""
    from torch_layerlr.optim import LARS

    g = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    p = torch.zeros(4, 3, dtype=F64, requires_grad=True)
    opt = LARS([{"params": [p], "lr_mult": 0.5}], lr=0.3, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01)
    p.grad = g.clone()
    opt.step()
    torch.testing.assert_close(p.detach(), -0.3 * 0.5 * g, rtol=1e-15, atol=0)
    assert opt.trust_ratios()[p] == 1.0


# ---------------------------------------------------------------------------------------------------------
# the ops: opcheck
# ---------------------------------------------------------------------------------------------------------
def op_call(recipe, shapes=((4, 5), (7,), (0,), (3, 2, 2)), dtype=torch.float32, *, steps_done=0, seed=0,
            filter_coef=None, blend=0.5, grad_scale=None, found_inf=None, trust_ratios=False):
    """Positional and keyword arguments of torch.ops.layerlr.fused_step_ for ``recipe`` (see _ops.fused_step_)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(shapes)

    def rand():
        return [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in shapes]

    params, grads = rand(), rand()
    names = recipe.state_names
    filters = rand() if "filter" in names else []
    exp_avgs = rand() if ("exp_avg" in names or "momentum_buffer" in names) else []
    exp_avg_sqs = [x.abs() for x in rand()] if "exp_avg_sq" in names else []
    steps = [torch.tensor(float(steps_done)) for _ in range(n)]
    per_tensor = lambda values: torch.tensor(values, dtype=F64)  # noqa: E731
    kwargs = dict(
        lr=torch.tensor(0.01, dtype=F64),
        lr_mult=per_tensor([1.0 + 0.5 * i for i in range(n)]),
        weight_decay=per_tensor([0.01] * n),
        blend=per_tensor([blend] * n),
        trust_mask=per_tensor([1.0 if i % 2 == 0 else 0.0 for i in range(n)]),
        filter_coef=filter_coef,
        grad_scale=grad_scale,
        found_inf=found_inf,
        trust_ratios=per_tensor([0.0] * n) if trust_ratios else None,
        **dataclasses.asdict(recipe),
    )
    return (params, grads, filters, exp_avgs, exp_avg_sqs, steps), kwargs


OP_RECIPES = {
    "sgd_buffer": (Recipe(moment="sgd", momentum=0.9, dampening=0.1), {}),
    "sgd_nesterov_first_step": (Recipe(moment="sgd", momentum=0.9, nesterov=True), {"steps_done": 0}),
    "adam": (Recipe(moment="adam", decay="decoupled", beta1=0.8, beta2=0.99), {"steps_done": 3}),
    "lars_trust": (Recipe(moment="sgd", trust="lars", momentum=0.9, trust_coefficient=0.01, trust_eps=1e-6),
                   {"trust_ratios": True, "steps_done": 2}),
    "update_trust_blend": (Recipe(filter="blend", moment="sgd", trust="update", momentum=0.9,
                                  trust_coefficient=0.02, ratio_min=0.2, ratio_max=5.0),
                           {"filter_coef": torch.tensor([0.6, 1.0], dtype=F64), "trust_ratios": True}),
    "blend_bypass": (Recipe(filter="blend", moment="sgd", trust="update", momentum=0.85, ratio_min=0.2,
                            ratio_max=5.0),
                     {"filter_coef": torch.tensor([1.0, 0.0], dtype=F64)}),
    "grokfast_adam": (Recipe(filter="grokfast", filter_lambda=2.0, moment="adam", decay="decoupled"),
                      {"filter_coef": torch.tensor([0.98, 1.0], dtype=F64), "steps_done": 1}),
    "lamb_grad_scale": (Recipe(moment="adam", decay="update", trust="update", norm_max=2.0, maximize=True),
                        {"grad_scale": torch.tensor(4.0), "found_inf": torch.tensor(0.0), "trust_ratios": True}),
    "skipped_found_inf": (Recipe(moment="adam", decay="decoupled"),
                          {"grad_scale": torch.tensor(4.0), "found_inf": torch.tensor(1.0)}),
}


OPCHECK_CASES = [(name, torch.float32) for name in OP_RECIPES] + [
    ("sgd_buffer", torch.float64), ("update_trust_blend", torch.bfloat16), ("lamb_grad_scale", torch.bfloat16)]


@pytest.mark.parametrize("recipe,dtype", OPCHECK_CASES, ids=[f"{r}-{d}" for r, d in OPCHECK_CASES])
def test_opcheck_fused_step(recipe, dtype):
    """torch.library.opcheck (schema incl. mutation annotations, fake kernel, autograd registration,
    aot_dispatch_dynamic) on the recipes of every optimizer, with and without GradScaler inputs."""
    r, options = OP_RECIPES[recipe]
    args, kwargs = op_call(r, dtype=dtype, **options)
    torch.library.opcheck(torch.ops.layerlr.fused_step_.default, args, kwargs)


def test_fused_step_op_mutates_only_what_the_schema_says():
    """A real call (not opcheck): params, states, steps and trust_ratios change; grads and inputs do not."""
    r, options = OP_RECIPES["update_trust_blend"]
    args, kwargs = op_call(r, **options)
    params, grads, filters, exp_avgs, exp_avg_sqs, steps = args
    before = copy.deepcopy((args, {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}))
    torch.ops.layerlr.fused_step_(*args, **kwargs)
    assert_equal_tensors(grads, before[0][1], "grad")
    for k, v in before[1].items():
        if k != "trust_ratios":
            assert torch.equal(kwargs[k], v), k
    assert all(float(s) == 1.0 for s in steps)
    assert not torch.equal(params[0], before[0][0][0])
    assert not torch.equal(exp_avgs[0], before[0][3][0])
    assert not torch.equal(filters[0], before[0][2][0])
    assert not torch.equal(kwargs["trust_ratios"], before[1]["trust_ratios"])


def test_found_inf_op_skips_everything():
    r, options = OP_RECIPES["skipped_found_inf"]
    args, kwargs = op_call(r, **options)
    before = copy.deepcopy(args)
    torch.ops.layerlr.fused_step_(*args, **kwargs)
    for got, want in zip(args, before):
        assert_equal_tensors(got, want)


def test_opcheck_tensor_norms():
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        tensors = [torch.randn(s, generator=gen).to(dtype) for s in [(3, 4), (0,), (17,), (16385,)]]
        torch.library.opcheck(torch.ops.layerlr.tensor_norms.default, (tensors,))
    torch.library.opcheck(torch.ops.layerlr.tensor_norms.default, ([torch.randn(5, 3).t()],))


def test_opcheck_dals_phase():
    for loss in (torch.tensor(1.5, dtype=F64), torch.tensor(0.7), torch.tensor([2.0])):
        detector = torch.tensor([2.0, 3.0, 1.0], dtype=F64)
        coef = torch.tensor([0.6, 1.0], dtype=F64)
        torch.library.opcheck(torch.ops.layerlr.dals_phase_.default, (detector, coef, loss),
                              dict(tau1=0.01, tau2=0.002, phase_alpha=[0.3, 0.6, 0.7], phase_gate=[0.0, 1.0, 1.0]))


def test_dals_phase_op_closed_form():
    """The detector op follows the spec's EMA / threshold rule and writes the phase's [alpha, gate]."""
    losses, phases = dals_losses(60, seed=9)
    alphas, gates = [0.3, 0.6, 0.7], [0.0, 1.0, 1.0]
    detector = torch.zeros(3, dtype=F64)
    coef = torch.tensor([alphas[0], gates[0]], dtype=F64)
    ema = None
    for i, (loss, phase) in enumerate(zip(losses, phases)):
        torch.ops.layerlr.dals_phase_(detector, coef, torch.tensor(loss, dtype=F64), tau1=0.01, tau2=0.002,
                                      phase_alpha=alphas, phase_gate=gates)
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        assert math.isclose(detector[0].item(), ema, rel_tol=1e-14, abs_tol=0.0)  # (the op may fuse a*b+c)
        assert detector[1:].tolist() == [float(i + 1), float(phase)]
        assert coef.tolist() == [alphas[phase], gates[phase]]


# ---------------------------------------------------------------------------------------------------------
# tensor_norms
# ---------------------------------------------------------------------------------------------------------
#: bfloat16 inputs are summed in float32 like float32 ones; their squares are short, so the float32 rounding
#: of the running sums does not average out as well as for float32 inputs: 1e-5 there.
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6), (torch.bfloat16, 1e-5)],
                         ids=str)
def test_tensor_norms(dtype, tol):
    """Per-tensor norms of many tensors (empty, 0-d, odd sizes around the vector width and the 16384-element
    chunk, multi-chunk, non-contiguous, constant, zero) against torch.linalg.vector_norm in float64."""
    gen = torch.Generator().manual_seed(1)
    shapes = [(0,), (1,), (7,), (8,), (9,), (15,), (16,), (17,), (0, 5), (3, 4, 5), (16383,), (16384,),
              (16385,), (40001,), (), (2, 0, 3)]
    tensors = [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in shapes]
    tensors.append(torch.randn(9, 13, generator=gen, dtype=F64).to(dtype).t())  # dense, not contiguous
    tensors.append(torch.randn(10, 40, generator=gen, dtype=F64).to(dtype)[::3, 1::2])  # not dense
    tensors.append(torch.full((33,), 1e3, dtype=dtype))
    tensors.append(torch.zeros(12, dtype=dtype))
    out = torch_layerlr._ops.tensor_norms(tensors)
    assert out.dtype == (F64 if dtype == F64 else torch.float32) and out.shape == (len(tensors),)
    for i, (t, got) in enumerate(zip(tensors, out)):
        want = torch.linalg.vector_norm(t.to(F64)).item()
        err = abs(got.item() - want) / want if want > 0 else abs(got.item())
        assert err <= tol, f"tensor {i} {tuple(t.shape)}: {got.item()} vs {want}"


def test_tensor_norms_of_no_tensors():
    """An empty list gives an empty float32 result (what the CPU kernel and the fake kernel both implement)."""
    out = torch_layerlr._ops.tensor_norms([])
    assert out.shape == (0,) and out.dtype == torch.float32


def test_tensor_norms_thread_count_independent():
    gen = torch.Generator().manual_seed(2)
    tensors = [torch.randn(s, generator=gen) for s in [(70000,), (5,), (40000,), (0,)]]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch_layerlr._ops.tensor_norms(tensors)
        torch.set_num_threads(2)
        two = torch_layerlr._ops.tensor_norms(tensors)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@pytest.mark.parametrize("device", DEVICES)
def test_lamb_leaves_its_direction_in_the_grad(device):
    """LAMB reuses the grad buffer for its direction (NOTE: [adam direction in the grad buffer]). After the first
    step m^ = g and v^ = g^2, so the grad must hold r = g / (|g| + eps) + wd * w_old (closed form)."""
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(7, 3, dtype=F64, generator=gen).to(device)
    g = torch.randn(7, 3, dtype=F64, generator=gen).to(device)
    p = torch.nn.Parameter(w.clone())
    p.grad = g.clone()
    eps, wd = 1e-6, 0.01
    torch_layerlr.optim.LAMB([p], lr=0.1, eps=eps, weight_decay=wd).step()
    expected = g / (g.abs() + eps) + wd * w
    assert torch.allclose(p.grad, expected, rtol=1e-12, atol=0)
