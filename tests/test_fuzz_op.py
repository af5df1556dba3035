"""Hypothesis fuzz of the op boundary (torch.ops.layerlr.fused_step_): random recipes, tensor counts, shapes,
layouts (contiguous, transposed, sliced, channels-last), dtypes and hyperparameters; then, half the time, one
random defect (a wrong shape or length, an expanded or aliased written tensor, a dtype or device mix-up, a bad
step count).

Valid calls must match the float64 oracle (tests/reference/recipe_step.py); defective ones must raise a clean
exception and leave every tensor bit for bit as it was. CI runs a modest number of examples; ``make fuzz`` runs
LAYERLR_FUZZ_EXAMPLES (>= 5000) and prints how many it ran.
"""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile.harness import bits, unchanged
from reference.recipe_step import recipe_step
from torch_layerlr._ops import Recipe

EXAMPLES = int(os.environ.get("LAYERLR_FUZZ_EXAMPLES", "150"))
F64 = torch.float64
TOL = {torch.float64: 1e-9, torch.float32: 2e-4, torch.bfloat16: 4e-2}
ERRORS = (ValueError, TypeError, RuntimeError)
RAN = {"valid": 0, "defective": 0}


@st.composite
def recipes(draw):
    kind = draw(st.sampled_from(["sgd", "lars", "adamw", "adam_l2", "lamb", "dals", "grokfast_sgd", "grokfast_adamw"]))
    maximize = draw(st.booleans())
    eps = draw(st.sampled_from([1e-8, 1e-6, 1e-3]))
    beta1 = draw(st.sampled_from([0.0, 0.5, 0.9]))
    beta2 = draw(st.sampled_from([0.9, 0.999]))
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
    if kind == "sgd":
        damp = draw(st.sampled_from([0.0, 0.3]))
        nesterov = momentum > 0 and damp == 0 and draw(st.booleans())
        return Recipe(moment="sgd", momentum=momentum, dampening=damp, nesterov=nesterov, maximize=maximize)
    if kind == "lars":
        return Recipe(moment="sgd", trust="lars", momentum=momentum, trust_coefficient=draw(st.sampled_from(
            [1e-3, 0.02, 1.0])), trust_eps=draw(st.sampled_from([0.0, 1e-8])), maximize=maximize)
    if kind in ("adamw", "adam_l2"):
        return Recipe(moment="adam", decay="decoupled" if kind == "adamw" else "coupled", beta1=beta1, beta2=beta2,
                      eps=eps, bias_correction=draw(st.booleans()), maximize=maximize)
    if kind == "lamb":
        return Recipe(moment="adam", decay="update", trust="update", beta1=beta1, beta2=beta2, eps=eps,
                      norm_max=draw(st.sampled_from([math.inf, 0.5])), maximize=maximize)
    if kind == "dals":
        return Recipe(filter="blend", moment="sgd", trust="update", momentum=momentum, trust_coefficient=0.02,
                      ratio_min=0.2, ratio_max=5.0, maximize=maximize)
    recipe = Recipe(moment="sgd", momentum=momentum) if kind == "grokfast_sgd" else \
        Recipe(moment="adam", decay="decoupled", beta1=beta1, beta2=beta2, eps=eps)
    return dataclasses.replace(recipe, filter="grokfast", filter_lambda=draw(st.sampled_from([0.5, 2.0])),
                               maximize=maximize)


LAYOUTS = ["contiguous", "transposed", "sliced", "channels_last"]


def _make(shape, dtype, layout, gen, scale=1.0, positive=False):
    """A tensor of ``shape`` laid out as ``layout`` (where the shape allows it)."""
    def rand(s):
        x = scale * torch.randn(s, generator=gen, dtype=F64)
        return (x.abs() if positive else x).to(dtype)

    if layout == "transposed" and len(shape) >= 2:
        return rand(tuple(reversed(shape))).permute(*reversed(range(len(shape))))
    if layout == "sliced" and len(shape) >= 1:
        wide = rand((*shape[:-1], 2 * shape[-1] + 1))
        return wide[..., 1::2]
    if layout == "channels_last" and len(shape) == 4:
        return rand(shape).contiguous(memory_format=torch.channels_last)
    return rand(shape)


@st.composite
def calls(draw):
    recipe = draw(recipes())
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
    n = draw(st.integers(1, 4))
    shapes = draw(st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple), min_size=n, max_size=n))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    layout = lambda: draw(st.sampled_from(LAYOUTS))  # noqa: E731
    has_buf = recipe.moment == "adam" or recipe.momentum != 0
    lists = dict(
        params=[_make(s, dtype, layout(), gen) for s in shapes],
        grads=[_make(s, dtype, layout(), gen) for s in shapes],
        filters=[_make(s, dtype, layout(), gen, 0.1) for s in shapes] if recipe.filter != "none" else [],
        exp_avgs=[_make(s, dtype, layout(), gen, 0.1) for s in shapes] if has_buf else [],
        exp_avg_sqs=[_make(s, dtype, layout(), gen, 0.1, positive=True) for s in shapes]
        if recipe.moment == "adam" else [],
        steps=[torch.tensor(float(draw(st.integers(0, 5)))) for _ in shapes],
    )
    per_tensor = lambda lo, hi: torch.tensor([draw(st.floats(lo, hi)) for _ in shapes], dtype=F64)  # noqa: E731
    kwargs = dict(lr=torch.tensor(draw(st.floats(1e-4, 0.5)), dtype=F64), lr_mult=per_tensor(0.0, 2.0),
                  weight_decay=per_tensor(0.0, 0.1), blend=per_tensor(0.3, 0.7),
                  trust_mask=torch.tensor([float(draw(st.booleans())) for _ in shapes], dtype=F64),
                  filter_coef=torch.tensor([draw(st.floats(0.0, 0.95)), float(draw(st.booleans()))], dtype=F64)
                  if recipe.filter != "none" else None,
                  grad_scale=torch.tensor(draw(st.sampled_from([1.0, 1024.0]))) if draw(st.booleans()) else None,
                  found_inf=torch.tensor(float(draw(st.integers(0, 1)))) if draw(st.booleans()) else None,
                  trust_ratios=torch.ones(n, dtype=F64) if recipe.trust != "none" else None)
    if draw(st.booleans()):  # a per-tensor input as a strided view: valid
        wide = torch.zeros(2 * n, dtype=F64)
        wide[::2] = kwargs["lr_mult"]
        kwargs["lr_mult"] = wide[::2]
    defect = draw(st.sampled_from([None] * 6 + DEFECTS))
    return recipe, lists, kwargs, defect, draw(st.integers(0, n - 1))


def _d_length(recipe, lists, kwargs, i):
    key = ["lr_mult", "weight_decay", "blend", "trust_mask"][i % 4]
    kwargs[key] = torch.ones(len(lists["params"]) + 1, dtype=F64)


def _d_shape(recipe, lists, kwargs, i):
    lists["grads"][i] = torch.zeros(7, dtype=lists["params"][i].dtype)


def _d_expanded_state(recipe, lists, kwargs, i):
    name = "exp_avgs" if lists["exp_avgs"] else ("filters" if lists["filters"] else "params")
    shape = lists["params"][i].shape
    lists[name][i] = torch.zeros(1, dtype=lists["params"][i].dtype).expand(shape) if shape.numel() > 1 else \
        torch.zeros(2, dtype=lists["params"][i].dtype).as_strided((2, 2), (0, 1))


def _d_alias(recipe, lists, kwargs, i):
    name = "exp_avgs" if lists["exp_avgs"] else "grads"  # either way the param, which is written, is aliased
    lists[name][i] = lists["params"][i]
    if lists["params"][i].numel() == 0:  # empty tensors share nothing: make a real alias
        lists["params"][i] = torch.zeros(3, dtype=lists["params"][i].dtype)
        for other in ("grads", "filters", "exp_avgs", "exp_avg_sqs"):
            if lists[other]:
                lists[other][i] = lists["params"][i] if other == name else torch.zeros(3, dtype=lists["params"][i].dtype)


def _d_dtype(recipe, lists, kwargs, i):
    p = lists["params"][i]
    other = torch.float16 if p.dtype != torch.float16 else torch.float32
    lists["grads"][i] = lists["grads"][i].to(other)


def _d_meta(recipe, lists, kwargs, i):
    lists["grads"][i] = torch.empty_like(lists["grads"][i], device="meta")


def _d_step(recipe, lists, kwargs, i):
    lists["steps"][i] = torch.tensor(-1.0 if i % 2 else math.nan)


def _d_filter_coef(recipe, lists, kwargs, i):
    kwargs["filter_coef"] = torch.ones(1, 2, dtype=F64) if recipe.filter != "none" else torch.ones(0, dtype=F64)


def _d_list_length(recipe, lists, kwargs, i):
    lists["steps"].append(torch.tensor(0.0))


DEFECTS = [_d_length, _d_shape, _d_expanded_state, _d_alias, _d_dtype, _d_meta, _d_step, _d_filter_coef,
           _d_list_length]


def _call(recipe, lists, kwargs):
    torch.ops.layerlr.fused_step_(lists["params"], lists["grads"], lists["filters"], lists["exp_avgs"],
                                  lists["exp_avg_sqs"], lists["steps"], **kwargs, **dataclasses.asdict(recipe))


def _all_tensors(lists, kwargs):
    return [t for v in lists.values() for t in v] + [v for v in kwargs.values() if isinstance(v, torch.Tensor)]


def _rel_err(actual, expected):
    a, e = actual.detach().to(F64), expected
    if a.numel() == 0:
        return 0.0
    return float((a - e).abs().max()) / max(1.0, float(e.abs().max()))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(calls())
def test_op_boundary_fuzz(case):
    recipe, lists, kwargs, defect, index = case
    if defect is not None:
        defect(recipe, lists, kwargs, index)
        tensors = _all_tensors(lists, kwargs)
        before = [bits(t) for t in tensors]
        with pytest.raises(ERRORS):
            _call(recipe, lists, kwargs)
        assert unchanged(tensors, before) is None, f"{defect.__name__}: a tensor changed before the error"
        RAN["defective"] += 1
        return
    expected = recipe_step(recipe, lists["params"], lists["grads"], lists["filters"], lists["exp_avgs"],
                           lists["exp_avg_sqs"], lists["steps"], **{k: v for k, v in kwargs.items()
                                                                    if k != "trust_ratios"})
    strides = [p.stride() for p in lists["params"]]
    _call(recipe, lists, kwargs)
    dtype = lists["params"][0].dtype
    tol = TOL[dtype]
    for name in ("params", "filters", "exp_avgs", "exp_avg_sqs"):
        for t, (a, e) in enumerate(zip(lists[name], expected[name])):
            err = _rel_err(a, e)
            assert err <= tol, f"{name}[{t}] ({dtype}, {tuple(a.shape)}): relative error {err:.3g} > {tol}"
    assert [float(s) for s in lists["steps"]] == expected["steps"]
    assert [p.stride() for p in lists["params"]] == strides  # updated in place, layout kept
    if kwargs["trust_ratios"] is not None and dtype != torch.bfloat16:
        for t, (a, e) in enumerate(zip(kwargs["trust_ratios"].tolist(), expected["ratios"])):
            assert abs(a - e) <= 1e-3 * max(1.0, abs(e)), f"trust ratio {t}: {a} vs {e}"
    RAN["valid"] += 1


def test_fuzz_report():
    """Says how many examples the fuzz ran (make fuzz prints it with -s)."""
    print(f"\nop-boundary fuzz: {RAN['valid']} valid calls matched the float64 oracle, {RAN['defective']} defective "
          f"calls refused with every tensor unchanged ({EXAMPLES} examples requested)")
    assert RAN["valid"] + RAN["defective"] > 0
