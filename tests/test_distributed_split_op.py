"""The split trust-ratio step (``fused_step_.split``, NOTE: [split trust step] in csrc/engine/step_args.h), in
one process: the norms call then the update call equal the one-call step bit for bit; a tensor cut in
shards, stepped shard by shard with the shards' squared norms summed in between, equals the whole tensor
stepped at once (what FSDP2 does across ranks); bad arguments are refused by name with nothing written."""

from __future__ import annotations

import copy

import pytest
import torch

from torch_layerlr._ops import Recipe, fused_step_, fused_step_check

TRUST_RECIPES = {
    "lars": Recipe(trust="lars", momentum=0.9, trust_coefficient=0.02),
    "lamb": Recipe(moment="adam", decay="update", trust="update"),
    "dals": Recipe(filter="blend", trust="update", momentum=0.9, trust_coefficient=0.02, ratio_min=0.2,
                   ratio_max=5.0),
    "lars_grokfast": Recipe(filter="grokfast", trust="lars", momentum=0.9, filter_lambda=2.0),
}


def _problem(recipe: Recipe, dtype: torch.dtype, shapes, seed: int = 0, transposed: bool = False):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]
    if transposed:  # non-dense layouts run on copies: the grads must carry the direction across the two calls
        params = [p.t() if p.dim() == 2 else p for p in params]
    grads = [torch.randn(p.shape, generator=g, dtype=torch.float64).to(dtype) for p in params]
    states = {name: [torch.zeros_like(p) for p in params] for name in recipe.state_names}
    steps = [torch.tensor(0.0) for _ in params]
    n = len(params)
    f64 = dict(dtype=torch.float64)
    inputs = dict(lr=torch.tensor(0.1, **f64), lr_mult=torch.linspace(0.5, 1.5, n, **f64),
                  weight_decay=torch.full((n,), 1e-2, **f64), blend=torch.full((n,), 0.5, **f64),
                  trust_mask=torch.ones(n, **f64),
                  filter_coef=torch.tensor([0.9, 1.0], **f64) if recipe.filter != "none" else None)
    return [params, grads, states, steps], inputs


def _flat(tensors) -> list[torch.Tensor]:
    params, grads, states, steps = tensors
    return [*params, *grads, *[t for ts in states.values() for t in ts], *steps]


@pytest.mark.parametrize("name", list(TRUST_RECIPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("transposed", [False, True])
def test_two_calls_equal_one(name, dtype, transposed):
    recipe = TRUST_RECIPES[name]
    shapes = [(33, 7), (5,), (0,), (300, 40)]
    one, inputs = _problem(recipe, dtype, shapes, transposed=transposed)
    two = copy.deepcopy(one)
    n = len(shapes)
    ratios_one, ratios_two = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for k in range(3):
        for g_one, g_two in zip(one[1], two[1]):  # a fresh gradient each step (LAMB leaves its direction there)
            g_one.copy_(torch.randn(g_one.shape, generator=torch.Generator().manual_seed(k)).to(dtype))
            g_two.copy_(g_one)
        fused_step_(*one, recipe, trust_ratios=ratios_one, **inputs)
        sq = torch.full((n, 2), float("nan"), dtype=torch.float64)
        params_before = [p.clone() for p in two[0]]
        fused_step_(*two, recipe, trust_ratios=ratios_two, sq_norms=sq, trust_pass="norms", **inputs)
        assert all(torch.equal(a, b) for a, b in zip(params_before, two[0])), "the norms call wrote a param"
        assert [s.item() for s in two[3]] == [k] * n, "the norms call advanced a step"
        expected = torch.tensor([[p.double().pow(2).sum().item(), 0.0] for p in params_before], dtype=torch.float64)
        torch.testing.assert_close(sq[:, 0], expected[:, 0], rtol=1e-5, atol=0)
        fused_step_(*two, recipe, trust_ratios=ratios_two, sq_norms=sq, trust_pass="update", **inputs)
        for a, b in zip(_flat(one), _flat(two)):
            assert torch.equal(a, b)
        assert torch.equal(ratios_one, ratios_two)


@pytest.mark.parametrize("name", list(TRUST_RECIPES))
def test_shards_with_summed_norms_equal_whole_tensor(name):
    """Each tensor cut in row shards (one of them empty), as ranks hold them under FSDP2: the norms calls on
    the shards, their squared norms summed per tensor, the update calls = the whole tensors in one call."""
    recipe = TRUST_RECIPES[name]
    shapes = [(7, 5), (7,), (2, 7), (2,)]
    whole, inputs = _problem(recipe, torch.float64, shapes)
    cuts = [(0, 3, 6, 7), (0, 3, 6, 7), (0, 1, 2, 2), (0, 1, 2, 2)]
    shards = []
    for r in range(3):
        params, grads, states, steps = copy.deepcopy(whole)
        take = lambda ts: [t[c[r]:c[r + 1]].clone() for t, c in zip(ts, cuts)]  # noqa: E731
        shards.append([take(params), take(grads), {k: take(v) for k, v in states.items()}, steps])
    n = len(shapes)
    ratios = torch.zeros(n, dtype=torch.float64)
    ratios_shards = torch.zeros(n, dtype=torch.float64)
    for _ in range(3):
        fused_step_(*whole, recipe, trust_ratios=ratios, **inputs)
        partial = [torch.zeros(n, 2, dtype=torch.float64) for _ in shards]
        for shard, sq in zip(shards, partial):
            fused_step_(*shard, recipe, sq_norms=sq, trust_pass="norms", **inputs)
        total = sum(partial)
        for shard in shards:
            fused_step_(*shard, recipe, trust_ratios=ratios_shards, sq_norms=total.clone(), trust_pass="update",
                        **inputs)
    for t, p in enumerate(whole[0]):
        joined = torch.cat([shard[0][t] for shard in shards])
        torch.testing.assert_close(joined, p, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(ratios_shards, ratios, rtol=1e-12, atol=0)


def _bad_calls():
    f64 = torch.float64
    return {
        "shape": (dict(sq_norms=torch.zeros(3, 2, dtype=f64), trust_pass="norms"), ValueError,
                  "sq_norms must have shape"),
        "dtype": (dict(sq_norms=torch.zeros(4, 2), trust_pass="update"), TypeError, "sq_norms has dtype"),
        "missing": (dict(sq_norms=None, trust_pass="update"), ValueError, "needs sq_norms"),
        "pass": (dict(sq_norms=torch.zeros(4, 2, dtype=f64), trust_pass="both"), ValueError, "trust_pass must be"),
        "all": (dict(sq_norms=torch.zeros(4, 2, dtype=f64), trust_pass="all"), ValueError, "trust_pass is 'all'"),
        "meta": (dict(sq_norms=torch.zeros(4, 2, dtype=f64, device="meta"), trust_pass="norms"), ValueError, "meta"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
@pytest.mark.parametrize("op", [fused_step_, fused_step_check])
def test_bad_split_arguments_refused_by_name(case, op):
    recipe = TRUST_RECIPES["lamb"]
    tensors, inputs = _problem(recipe, torch.float32, [(3, 2), (4,), (0,), (2, 2)])
    before = [t.clone() for t in _flat(tensors)]
    kwargs, error, message = _bad_calls()[case]
    with pytest.raises(error, match=message):
        op(*tensors, recipe, **kwargs, **inputs)
    assert all(torch.equal(a, b) for a, b in zip(before, _flat(tensors)))


def test_element_wise_recipe_is_not_split():
    recipe = Recipe(moment="adam", decay="decoupled")
    tensors, inputs = _problem(recipe, torch.float32, [(3, 2)])
    with pytest.raises(ValueError, match="element-wise recipe runs in one call"):
        fused_step_(*tensors, recipe, sq_norms=torch.zeros(1, 2, dtype=torch.float64), trust_pass="norms", **inputs)


@pytest.mark.parametrize("trust_pass", ["norms", "update"])
def test_skipped_step_writes_nothing(trust_pass):
    """GradScaler's found_inf: neither call of a split step writes anything (sq_norms included)."""
    recipe = TRUST_RECIPES["lamb"]
    tensors, inputs = _problem(recipe, torch.float32, [(3, 2), (4,)])
    before = [t.clone() for t in _flat(tensors)]
    sq = torch.full((2, 2), 7.0, dtype=torch.float64)
    fused_step_(*tensors, recipe, sq_norms=sq, trust_pass=trust_pass, found_inf=torch.ones(()), **inputs)
    assert all(torch.equal(a, b) for a, b in zip(before, _flat(tensors)))
    assert bool((sq == 7.0).all())


@pytest.mark.parametrize("name", ["lars", "lamb", "dals"])
@pytest.mark.parametrize("trust_pass", ["norms", "update"])
def test_opcheck_split_overload(name, trust_pass):
    """torch.library.opcheck on fused_step_.split (schema and mutation annotations, fake kernel, autograd
    registration, aot_dispatch_dynamic), as on the default overload in test_optim.py."""
    from torch_layerlr._ops import _fused_step_args

    recipe = TRUST_RECIPES[name]
    (params, grads, states, steps), inputs = _problem(recipe, torch.float32, [(4, 5), (7,), (0,), (3, 2, 2)])
    args, kwargs = _fused_step_args(params, grads, states, steps, recipe, dict(
        inputs, trust_ratios=torch.zeros(4, dtype=torch.float64),
        sq_norms=torch.rand(4, 2, dtype=torch.float64), trust_pass=trust_pass))
    torch.library.opcheck(torch.ops.layerlr.fused_step_.split, args, kwargs)
