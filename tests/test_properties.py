"""Property tests (hypothesis): random shapes, dtypes and hyperparameters; a few fused steps equal the float64
reference (tests/reference) within the dtype's tolerance.

Shapes include 0-size tensors, 0-d tensors and sizes around the CPU vector widths (8 float32 / 4 float64 lanes:
7, 8, 9, 15, 16, 17) and around the engine's 16384-element chunk (16383, 16385), optionally as transposed
(non-contiguous) views. Hyperparameters are drawn from their valid ranges.

Tolerance: ``||fused - ref|| <= tol * scale`` per tensor with ``tol`` 1e-12 (float64) / 1e-5 (float32) and
``scale = ||ref|| + ||init|| + ||ref - init||``: the relative error of the spec, except that a tensor whose
update happens to cancel its initial value (a one-element tensor, say) is measured against the size of the
numbers that were rounded, not against the near-zero result.

The examples are derandomized (the same ones every run) so that the suite is reproducible; set
``HYPOTHESIS_PROFILE=explore`` for fresh random examples and more of them.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optim_db import dals_losses  # noqa: E402
from reference import RefDALS, RefGrokfastAdamW, RefLAMB, RefLARS, RefLayerwiseAdamW, RefLayerwiseSGD  # noqa: E402

from torch_layerlr.optim import DALS, LAMB, LARS, GrokfastAdamW, LayerwiseAdamW, LayerwiseSGD  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("explore", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

F64 = torch.float64
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
STEPS = 3

# ---------------------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------------------
EDGE_SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 16383, 16385]
shape_st = st.one_of(
    st.sampled_from(EDGE_SIZES).map(lambda n: (n,)),
    st.tuples(st.integers(0, 9), st.sampled_from([1, 7, 8, 9, 16, 17])),
    st.tuples(st.integers(1, 3), st.integers(0, 4), st.sampled_from([1, 5, 8, 9])),
    st.just(()),
)


@st.composite
def problem_st(draw):
    shapes = draw(st.lists(shape_st, min_size=1, max_size=3))
    return dict(
        shapes=shapes,
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        seed=draw(st.integers(0, 2 ** 16)),
        grad_scale=draw(st.sampled_from([1e-2, 1.0, 30.0])),
        zero_first=draw(st.booleans()),  # the first tensor starts at zero (trust ratio 1)
        transpose=draw(st.booleans()),  # 2-D tensors as transposed (non-contiguous) views
        lr_mult=draw(st.one_of(st.none(), nonneg(3.0, 1e-3),
                               st.lists(nonneg(3.0, 1e-3), min_size=len(shapes), max_size=len(shapes)))),
        maximize=draw(st.booleans()),
    )


def nonneg(high, low=1e-4):
    """0, or a float in [low, high]: no values so small that float32 cannot represent their effect at all."""
    return st.one_of(st.just(0.0), st.floats(low, high))


unit = nonneg(0.99)
beta = nonneg(0.999)
small_wd = nonneg(0.1)


@st.composite
def sgd_kwargs(draw):
    momentum = draw(st.one_of(st.just(0.0), unit))
    dampening = draw(nonneg(1.0))
    nesterov = draw(st.booleans()) and momentum > 0 and dampening == 0
    return dict(lr=draw(nonneg(0.5)), momentum=momentum, dampening=dampening,
                weight_decay=draw(small_wd), nesterov=nesterov, **draw(optional_grokfast()))


@st.composite
def adamw_kwargs(draw):
    return dict(lr=draw(st.floats(1e-4, 0.1)), betas=(draw(beta), draw(beta)), eps=draw(st.floats(1e-10, 1e-3)),
                weight_decay=draw(nonneg(1.0)))


@st.composite
def grokfast_kwargs(draw):
    return dict(draw(adamw_kwargs()), grokfast_alpha=draw(unit), grokfast_lambda=draw(nonneg(5.0)))


@st.composite
def optional_grokfast(draw):
    if not draw(st.booleans()):
        return {}
    return dict(grokfast_alpha=draw(unit), grokfast_lambda=draw(nonneg(5.0)))


@st.composite
def lars_kwargs(draw):
    momentum = draw(st.one_of(st.just(0.0), unit))
    return dict(lr=draw(st.floats(1e-3, 2.0)), momentum=momentum, weight_decay=draw(small_wd),
                trust_coefficient=draw(st.floats(1e-4, 0.1)), eps=draw(nonneg(1e-3, 1e-8)),
                nesterov=draw(st.booleans()) and momentum > 0, exclude_1d=draw(st.booleans()),
                **draw(optional_grokfast()))


@st.composite
def lamb_kwargs(draw):
    return dict(lr=draw(st.floats(1e-4, 0.1)), betas=(draw(beta), draw(beta)), eps=draw(st.floats(1e-8, 1e-3)),
                weight_decay=draw(small_wd), bias_correction=draw(st.booleans()),
                clamp_value=draw(st.one_of(st.none(), st.floats(0.05, 10.0))), exclude_1d=draw(st.booleans()),
                **draw(optional_grokfast()))


@st.composite
def dals_kwargs(draw):
    variant = draw(st.sampled_from(["dals", "fast", "acc"]))
    kwargs = dict(variant=variant, lr=draw(st.one_of(st.none(), st.floats(1e-3, 0.5))),
                  momentum=draw(st.one_of(st.none(), nonneg(0.95))),
                  weight_decay=draw(st.one_of(st.none(), nonneg(0.01, 1e-6))),
                  trust_coefficient=draw(st.floats(1e-3, 1.0)), alpha=draw(st.one_of(st.none(), nonneg(1.0))),
                  total_steps=draw(st.integers(1, 8)), restart_steps=draw(st.integers(1, 4)),
                  restart_mult=draw(st.integers(1, 3)))
    if variant != "acc":
        kwargs["warmup_frac"] = draw(st.one_of(st.none(), nonneg(0.9, 0.01)))
    return kwargs


# ---------------------------------------------------------------------------------------------------------
# the property
# ---------------------------------------------------------------------------------------------------------
def _check(fused_cls, ref_cls, problem, kwargs, group_extra=None, losses=None):
    dtype, shapes = problem["dtype"], problem["shapes"]
    gen = torch.Generator().manual_seed(problem["seed"])
    init = [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in shapes]
    if problem["zero_first"]:
        init[0] = torch.zeros_like(init[0])
    grads = [[(problem["grad_scale"] * torch.randn(s, generator=gen, dtype=F64)).to(dtype) for s in shapes]
             for _ in range(STEPS)]

    def leaf(x, target_dtype):
        x = x.to(target_dtype, copy=True)
        if problem["transpose"] and x.ndim == 2:
            x = x.t().contiguous().t()  # same values, column-major strides
        return x.requires_grad_(True)

    def build(cls, params):
        group = {"params": params}
        if problem["lr_mult"] is not None:
            group["lr_mult"] = problem["lr_mult"]
        group.update(group_extra or {})
        return cls([group], maximize=problem["maximize"], **kwargs)

    pf = [leaf(x, dtype) for x in init]
    pr = [leaf(x, F64) for x in init]
    fused, ref = build(fused_cls, pf), build(ref_cls, pr)
    for k in range(STEPS):
        for opt, params in ((fused, pf), (ref, pr)):
            for p, g in zip(params, grads[k]):
                p.grad = g.to(p.dtype, copy=True)
            if losses is not None:
                opt.step(loss=losses[k])
            else:
                opt.step()
    tol = TOL[dtype]
    for i, (x, y, x0) in enumerate(zip(pf, pr, init)):
        assert x.dtype == dtype and x.shape == y.shape
        x, y, x0 = x.detach().to(F64), y.detach(), x0.to(F64)
        norm = torch.linalg.vector_norm
        scale = (norm(y) + norm(x0) + norm(y - x0)).item()
        err = norm(x - y).item()
        assert err <= tol * scale, f"tensor {i} {tuple(y.shape)}: error {err:.3e} > {tol:.0e} * {scale:.3e}"
        assert float(fused.state[pf[i]]["step"]) == STEPS


@PROFILE
@given(problem=problem_st(), kwargs=sgd_kwargs())
def test_layerwise_sgd(problem, kwargs):
    _check(LayerwiseSGD, RefLayerwiseSGD, problem, kwargs)


@PROFILE
@given(problem=problem_st(), kwargs=adamw_kwargs())
def test_layerwise_adamw(problem, kwargs):
    _check(LayerwiseAdamW, RefLayerwiseAdamW, problem, kwargs)


@PROFILE
@given(problem=problem_st(), kwargs=grokfast_kwargs())
def test_grokfast_adamw(problem, kwargs):
    _check(GrokfastAdamW, RefGrokfastAdamW, problem, kwargs)


@PROFILE
@given(problem=problem_st(), kwargs=lars_kwargs())
def test_lars(problem, kwargs):
    _check(LARS, RefLARS, problem, kwargs)


@PROFILE
@given(problem=problem_st(), kwargs=lamb_kwargs())
def test_lamb(problem, kwargs):
    _check(LAMB, RefLAMB, problem, kwargs)


@PROFILE
@given(problem=problem_st(), kwargs=dals_kwargs(), depth=st.one_of(st.floats(0.0, 1.0), st.just("per_param")),
       loss_seed=st.integers(0, 1000))
def test_dals(problem, kwargs, depth, loss_seed):
    n = len(problem["shapes"])
    depth_ratio = [i / max(n - 1, 1) for i in range(n)] if depth == "per_param" else depth
    losses, _ = dals_losses(STEPS, seed=loss_seed)
    _check(DALS, RefDALS, problem, kwargs, group_extra={"depth_ratio": depth_ratio}, losses=losses)
