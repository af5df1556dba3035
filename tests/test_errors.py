"""Bad inputs raise a clear exception that names the offending argument, and change nothing.

Two levels: the optimizers' constructors / param groups / step, and the op torch.ops.layerlr.fused_step_
called directly with hand-built arguments (the argument mapping of torch_layerlr._ops.fused_step_).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re

import pytest
import torch

from torch_layerlr._ops import Recipe
from torch_layerlr.optim import DALS, LAMB, LARS, GrokfastAdamW, LayerwiseAdamW, LayerwiseSGD

F64 = torch.float64
NAN = math.nan
ALL = [LayerwiseSGD, LayerwiseAdamW, GrokfastAdamW, LARS, LAMB, DALS]
#: Arguments that a valid construction needs.
BASE = {LayerwiseSGD: dict(lr=0.1), LARS: dict(lr=0.1)}
ERRORS = (ValueError, TypeError, RuntimeError)


def _param(*shape, dtype=torch.float32):
    return torch.nn.Parameter(torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype))


def _names(cls):
    return cls.__name__


def _snapshot(opt):
    return [p.detach().clone() for g in opt.param_groups for p in g["params"]], copy.deepcopy(opt.state_dict())


def _assert_unchanged(opt, snapshot):
    params, state = snapshot
    now = [p.detach() for g in opt.param_groups for p in g["params"]]
    assert len(now) == len(params)
    for a, b in zip(now, params):
        assert torch.equal(a, b)
    _assert_same(opt.state_dict(), state)


def _assert_same(a, b, path="state_dict"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            _assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _named(name):
    """A regex that finds the argument's name as a word (``lr`` does not match ``lr_mult``)."""
    return rf"(?<![\w\[]){re.escape(name)}(?![\w])"


# ---------------------------------------------------------------------------------------------------------
# constructor arguments
# ---------------------------------------------------------------------------------------------------------
BAD_HYPERPARAMETERS = (
    [(cls, "lr", -0.1) for cls in ALL]
    + [(cls, "lr", NAN) for cls in ALL]
    + [(cls, "weight_decay", NAN) for cls in ALL]
    + [(cls, "weight_decay", -1e-3) for cls in ALL]
    + [(cls, "momentum", NAN) for cls in (LayerwiseSGD, LARS, DALS)]
    + [(cls, "momentum", -0.5) for cls in (LayerwiseSGD, LARS, DALS)]
    + [(cls, "momentum", 1.5) for cls in (LayerwiseSGD, LARS, DALS)]
    + [(LayerwiseSGD, "dampening", NAN), (LayerwiseSGD, "dampening", 2.0)]
    + [(cls, "eps", -1e-8) for cls in (LayerwiseAdamW, GrokfastAdamW, LARS, LAMB)]
    + [(cls, "eps", NAN) for cls in (LayerwiseAdamW, GrokfastAdamW, LAMB)]
    + [(LARS, "trust_coefficient", -1.0), (DALS, "trust_coefficient", NAN)]
    + [(LAMB, "clamp_value", 0.0), (LAMB, "clamp_value", NAN)]
    + [(GrokfastAdamW, "grokfast_alpha", 1.0), (LARS, "grokfast_alpha", -0.1), (LAMB, "grokfast_alpha", NAN)]
    + [(GrokfastAdamW, "grokfast_lambda", NAN), (LARS, "grokfast_lambda", -1.0)]
    + [(LayerwiseSGD, "grokfast_alpha", 1.0), (LayerwiseSGD, "grokfast_lambda", NAN)]
    + [(DALS, "alpha", 1.5), (DALS, "alpha", NAN), (DALS, "warmup_frac", 1.0), (DALS, "warmup_frac", NAN)]
    + [(cls, "lr", "0.1") for cls in (LayerwiseSGD, DALS)]
)


@pytest.mark.parametrize("cls,name,value", BAD_HYPERPARAMETERS,
                         ids=[f"{c.__name__}-{n}={v!r}" for c, n, v in BAD_HYPERPARAMETERS])
def test_bad_hyperparameter(cls, name, value):
    kwargs = dict(BASE.get(cls, {}), **{name: value})
    with pytest.raises(ValueError, match=_named(name)):
        cls([_param(3)], **kwargs)


BAD_BETAS = [(1.0, 0.999), (0.9, 1.0), (-0.1, 0.999), (0.9, -0.5), (NAN, 0.9), (0.9, NAN), (0.9, 0.99, 0.999)]


@pytest.mark.parametrize("cls", [LayerwiseAdamW, GrokfastAdamW, LAMB], ids=_names)
@pytest.mark.parametrize("betas", BAD_BETAS, ids=repr)
def test_betas_out_of_range(cls, betas):
    with pytest.raises(ValueError, match=r"betas"):
        cls([_param(3)], betas=betas)


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="nesterov"):
        LayerwiseSGD([_param(3)], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        LayerwiseSGD([_param(3)], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        LARS([_param(3)], lr=0.1, momentum=0.0, nesterov=True)


def test_grokfast_adamw_needs_alpha():
    with pytest.raises(ValueError, match="grokfast_alpha"):
        GrokfastAdamW([_param(3)], grokfast_alpha=None)


@pytest.mark.parametrize("variant", ["DALS", "adam", "", None])
def test_unknown_dals_variant(variant):
    with pytest.raises(ValueError, match="variant"):
        DALS([_param(3)], variant=variant)


@pytest.mark.parametrize("name", ["total_steps", "restart_steps", "restart_mult"])
@pytest.mark.parametrize("value", [0, -5, 2.5, True, "100", None])
def test_bad_dals_step_counts(name, value):
    with pytest.raises(ValueError, match=_named(name)):
        DALS([_param(3)], variant="acc" if name != "total_steps" else "dals", **{name: value})


def test_warmup_frac_does_not_apply_to_acc():
    with pytest.raises(ValueError, match="warmup_frac"):
        DALS([_param(3)], variant="acc", warmup_frac=0.1)


# ---------------------------------------------------------------------------------------------------------
# per-parameter group values
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL, ids=_names)
def test_lr_mult_list_of_wrong_length(cls):
    params = [_param(3), _param(2)]
    if cls is not DALS:  # DALS takes lr_mult only as a param-group key
        with pytest.raises(ValueError, match=r"lr_mult"):
            cls(params, lr_mult=[1.0, 2.0, 3.0], **BASE.get(cls, {}))
    with pytest.raises(ValueError, match=r"lr_mult"):
        cls([{"params": params, "lr_mult": [0.5]}], **BASE.get(cls, {}))


@pytest.mark.parametrize("cls", ALL, ids=_names)
@pytest.mark.parametrize("lr_mult", [[1.0, -1.0], [1.0, NAN], -2.0, NAN, [1.0, "x"]], ids=repr)
def test_bad_lr_mult_values(cls, lr_mult):
    with pytest.raises(ValueError, match=r"lr_mult"):
        cls([{"params": [_param(3), _param(2)], "lr_mult": lr_mult}], **BASE.get(cls, {}))


@pytest.mark.parametrize("depth_ratio", [1.5, -0.1, NAN, [0.5], [0.2, 1.2]], ids=repr)
def test_bad_depth_ratio(depth_ratio):
    with pytest.raises(ValueError, match=r"depth_ratio"):
        DALS([{"params": [_param(3), _param(2)], "depth_ratio": depth_ratio}])


@pytest.mark.parametrize("cls,key,value", [(LayerwiseSGD, "lr_mult", [1.0, 2.0, 3.0]), (DALS, "depth_ratio", 1.5)],
                         ids=["LayerwiseSGD-lr_mult", "DALS-depth_ratio"])
def test_failed_add_param_group_adds_nothing(cls, key, value):
    """A param group that add_param_group rejects must not stay in the optimizer: the caller got an error, and
    the next step would otherwise run on the unchecked values."""
    opt = cls([_param(3)], **BASE.get(cls, {}))
    with pytest.raises(ValueError, match=_named(key)):
        opt.add_param_group({"params": [_param(2)], key: value})
    assert len(opt.param_groups) == 1


# ---------------------------------------------------------------------------------------------------------
# what step() refuses: sparse and complex gradients
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL, ids=_names)
def test_sparse_grad(cls):
    """torch.nn.Embedding(sparse=True): refused before anything of the step happens (the group also holds a
    dense param with state from an earlier step)."""
    emb = torch.nn.Embedding(10, 3, sparse=True)
    dense = _param(4)
    opt = cls([dense, emb.weight], **BASE.get(cls, {}))
    dense.grad = torch.ones_like(dense)
    opt.step()  # emb.weight has no grad yet
    emb(torch.tensor([1, 2, 2])).sum().backward()
    assert emb.weight.grad.is_sparse
    before = _snapshot(opt)
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()
    _assert_unchanged(opt, before)


def test_dals_loss_must_be_scalar():
    opt = DALS([_param(3)])
    with pytest.raises(ValueError, match="loss"):
        opt.update_phase(torch.ones(2))
    with pytest.raises(ValueError, match="loss"):
        opt.step(closure=lambda: 1.0, loss=1.0)


# ---------------------------------------------------------------------------------------------------------
# the op, called directly
# ---------------------------------------------------------------------------------------------------------
def _op_args(recipe, n=3, dtype=torch.float32):
    """Valid (args, kwargs) of torch.ops.layerlr.fused_step_ for ``recipe`` over n small tensors."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5,), (2, 2, 2), (6,)][:n]

    def rand():
        return [torch.randn(s, generator=gen, dtype=F64).to(dtype) for s in shapes]

    names = recipe.state_names
    args = [
        rand(),  # params
        rand(),  # grads
        rand() if "filter" in names else [],  # filters
        rand() if ("exp_avg" in names or "momentum_buffer" in names) else [],  # exp_avgs (or momentum buffers)
        [x.abs() for x in rand()] if "exp_avg_sq" in names else [],  # exp_avg_sqs
        [torch.tensor(2.0) for _ in shapes],  # steps
    ]

    def per_tensor(v):
        return torch.full((n,), v, dtype=F64)

    kwargs = dict(lr=torch.tensor(0.1, dtype=F64), lr_mult=per_tensor(1.0), weight_decay=per_tensor(0.01),
                  blend=per_tensor(0.5), trust_mask=per_tensor(1.0),
                  filter_coef=torch.tensor([0.9, 1.0], dtype=F64) if recipe.filter != "none" else None,
                  grad_scale=None, found_inf=None,
                  trust_ratios=per_tensor(0.0) if recipe.trust != "none" else None,
                  **dataclasses.asdict(recipe))
    return args, kwargs


RECIPES = {
    "sgd_buffer": Recipe(moment="sgd", momentum=0.9),
    "adam": Recipe(moment="adam", decay="decoupled"),
    "lars": Recipe(moment="sgd", trust="lars", momentum=0.9),
    "dals": Recipe(filter="blend", moment="sgd", trust="update", momentum=0.9, ratio_min=0.2, ratio_max=5.0),
    "grokfast_lamb": Recipe(filter="grokfast", moment="adam", decay="update", trust="update", filter_lambda=2.0),
}


def _mixed_dtypes(args, kwargs):
    for lst in args[:5]:
        if lst:
            lst[1] = lst[1].double()


def _bad_grad_shape(args, kwargs):
    args[1][1] = torch.zeros(7)


def _short_grads(args, kwargs):
    args[1].pop()


def _short_steps(args, kwargs):
    args[5].pop()


def _long_state(args, kwargs):
    (args[3] if args[3] else args[2]).append(torch.zeros(3))


def _state_dtype(args, kwargs):
    (args[3] if args[3] else args[2])[0] = (args[3] or args[2])[0].double()


def _state_shape(args, kwargs):
    (args[3] if args[3] else args[2])[2] = torch.zeros(8)


def _per_tensor_length(name):
    def mutate(args, kwargs):
        kwargs[name] = torch.ones(len(args[0]) + 1, dtype=F64)
    return mutate


def _per_tensor_2d(name):
    def mutate(args, kwargs):
        kwargs[name] = torch.ones(1, len(args[0]), dtype=F64)
    return mutate


def _recipe_string(field, value):
    def mutate(args, kwargs):
        kwargs[field] = value
    return mutate


def _lr_two_elements(args, kwargs):
    kwargs["lr"] = torch.tensor([0.1, 0.2], dtype=F64)


def _grad_scale_shape(args, kwargs):
    kwargs["grad_scale"] = torch.ones(3)


def _found_inf_shape(args, kwargs):
    kwargs["found_inf"] = torch.zeros(2)


def _step_two_elements(args, kwargs):
    args[5][1] = torch.tensor([2.0, 2.0])


def _complex_param(args, kwargs):
    for lst in args[:5]:
        if lst:
            lst[0] = lst[0].to(torch.complex64)


def _lars_with_adam(args, kwargs):
    kwargs["moment"] = "adam"
    args[4].extend(x.abs() for x in args[0])  # the lists an adam recipe needs, so only the pairing is wrong


def _integer_steps(args, kwargs):
    args[5][0] = torch.tensor(2)


def _integer_trust_ratios(args, kwargs):
    kwargs["trust_ratios"] = torch.zeros(len(args[0]), dtype=torch.int64)


#: (name, how to break valid arguments, the name the message must contain, recipes it applies to)
OP_ERRORS = [
    ("mixed_dtypes", _mixed_dtypes, r"params\[1\]", list(RECIPES)),
    ("grad_shape", _bad_grad_shape, r"grads\[1\]", list(RECIPES)),
    ("grads_length", _short_grads, _named("grads"), list(RECIPES)),
    ("steps_length", _short_steps, _named("steps"), list(RECIPES)),
    ("state_length", _long_state, r"exp_avgs|filters", list(RECIPES)),
    ("state_dtype", _state_dtype, r"(exp_avgs|filters)\[0\]", list(RECIPES)),
    ("state_shape", _state_shape, r"(exp_avgs|filters)\[2\]", list(RECIPES)),
    ("lr_mult_length", _per_tensor_length("lr_mult"), _named("lr_mult"), list(RECIPES)),
    ("weight_decay_length", _per_tensor_length("weight_decay"), _named("weight_decay"), list(RECIPES)),
    ("blend_length", _per_tensor_length("blend"), _named("blend"), list(RECIPES)),
    ("trust_mask_2d", _per_tensor_2d("trust_mask"), _named("trust_mask"), list(RECIPES)),
    ("trust_ratios_length", _per_tensor_length("trust_ratios"), _named("trust_ratios"), ["lars", "dals"]),
    ("unknown_filter", _recipe_string("filter", "ema"), _named("filter"), list(RECIPES)),
    ("unknown_decay", _recipe_string("decay", "l2"), _named("decay"), list(RECIPES)),
    ("unknown_moment", _recipe_string("moment", "rmsprop"), _named("moment"), list(RECIPES)),
    ("unknown_trust", _recipe_string("trust", "lamb"), _named("trust"), list(RECIPES)),
    ("lr_two_elements", _lr_two_elements, _named("lr"), list(RECIPES)),
    ("grad_scale_shape", _grad_scale_shape, _named("grad_scale"), list(RECIPES)),
    ("found_inf_shape", _found_inf_shape, _named("found_inf"), list(RECIPES)),
    ("step_two_elements", _step_two_elements, r"steps\[1\]", list(RECIPES)),
    ("complex_param", _complex_param, r"params\[0\]", list(RECIPES)),
    ("filter_coef_missing", _recipe_string("filter_coef", None), _named("filter_coef"), ["dals", "grokfast_lamb"]),
    ("lars_with_adam", _lars_with_adam, r"trust='lars'", ["lars"]),
    # steps and trust_ratios are written by the op: a dtype it cannot write must be refused up front
    ("integer_steps", _integer_steps, r"steps\[0\]", ["sgd_buffer"]),
    ("integer_trust_ratios", _integer_trust_ratios, _named("trust_ratios"), ["dals"]),
]
OP_CASES = [(name, mutate, pattern, recipe) for name, mutate, pattern, recipes in OP_ERRORS for recipe in recipes]


@pytest.mark.parametrize("name,mutate,pattern,recipe", OP_CASES, ids=[f"{c[0]}-{c[3]}" for c in OP_CASES])
def test_op_rejects_bad_arguments(name, mutate, pattern, recipe):
    args, kwargs = _op_args(RECIPES[recipe])
    torch.ops.layerlr.fused_step_(*copy.deepcopy(args), **copy.deepcopy(kwargs))  # valid as built
    mutate(args, kwargs)
    before = copy.deepcopy((args, kwargs))
    with pytest.raises(ERRORS, match=pattern):
        torch.ops.layerlr.fused_step_(*args, **kwargs)
    for lst, old in zip(args, before[0]):
        assert len(lst) == len(old)
        for x, y in zip(lst, old):
            assert torch.equal(x, y), f"{name}: an input was modified by the failed call"
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, before[1][key]), f"{name}: {key} was modified by the failed call"
