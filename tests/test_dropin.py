"""Drop-in behaviour of every optimizer where a torch optimizer goes: copies (deepcopy, pickle), complex
parameters, torch.compile without recompilation, and torch.optim's API edges.

References: a copy must step exactly as its original; complex params must match the float64 reference run on
their real views (how torch.optim defines complex support); a compiled step must match the eager step.
"""

from __future__ import annotations

import copy
import os
import pickle
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from optim_db import OPTIM_IDS, optim_db  # noqa: E402
from test_optim import Problem, assert_equal_tensors, assert_rel_close, losses_for, set_grads, take_step  # noqa: E402

from torch_layerlr.optim import DALS, LARS, DepthScaledSGD, LayerwiseSGD  # noqa: E402
from torch_layerlr.optim._base import _TORCH_ATTRS  # noqa: E402

F64 = torch.float64
DB = pytest.mark.parametrize("info", optim_db, ids=OPTIM_IDS)
SHAPES = [(4, 3), (3,), (2, 3, 2)]


def _run(info, opt, params, problem, first, last, losses):
    for k in range(first, last):
        set_grads(params, problem.grads(k))
        take_step(info, opt, params, problem.grads(k), k, None if losses is None else losses[k])


# ---- copies ---------------------------------------------------------------------------------------------------
@DB
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copy_steps_as_the_original(info, how):
    problem = Problem(SHAPES, torch.float32)
    losses, _ = losses_for(info, 12)
    params = problem.params()
    opt = info.fused(params)
    _run(info, opt, params, problem, 0, 6, losses)
    pair = (params, opt)
    params2, opt2 = copy.deepcopy(pair) if how == "deepcopy" else pickle.loads(pickle.dumps(pair))
    assert opt2._step_supports_amp_scaling
    assert {k: v for k, v in opt2.defaults.items() if k != "differentiable"} == opt.defaults  # torch adds it
    settings = [k for k in vars(opt) if k not in _TORCH_ATTRS and k not in opt._transient_attrs]
    assert settings and all(hasattr(opt2, k) for k in settings)
    for k in settings:
        if isinstance(getattr(opt, k), (int, float, str, tuple, list, bool)):
            assert getattr(opt2, k) == getattr(opt, k), k
    _run(info, opt, params, problem, 6, 12, losses)
    _run(info, opt2, params2, problem, 6, 12, losses)
    assert_equal_tensors(params2, params)
    if info.is_dals:
        assert opt2.phase == opt.phase


def test_depth_scaled_sgd_copy_keeps_its_rule():
    p = torch.nn.Parameter(torch.ones(3))
    opt = DepthScaledSGD([p], mu_xx=1.0, mu_yx=2.0, depth=4)
    for copied in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert copied.depth_scaling == opt.depth_scaling


def test_dals_copied_before_its_first_forward_says_why_it_cannot_step():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    copied = copy.deepcopy(DALS(model))
    for p in copied.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="first forward"):
        copied.step()


# ---- complex params ---------------------------------------------------------------------------------------------
@DB
def test_complex_params_step_as_their_real_views(info):
    """A complex param's trajectory is the float64 reference's on its real view (norms included). The shapes
    are 2-D so that rules on ``ndim`` (LARS's ``exclude_1d``) see the same for the param and its real view."""
    gen = torch.Generator().manual_seed(5)
    shapes = [(4, 3), (2, 5)]
    init = [torch.randn(s, dtype=torch.complex128, generator=gen) for s in shapes]
    grads = [[torch.randn(s, dtype=torch.complex128, generator=gen) for s in shapes] for _ in range(15)]
    losses, _ = losses_for(info, 15)
    fused_params = [torch.nn.Parameter(x.clone()) for x in init]
    ref_params = [torch.nn.Parameter(torch.view_as_real(x).clone()) for x in init]
    fused, ref = info.fused(fused_params), info.ref(ref_params)
    for k in range(15):
        loss = None if losses is None else losses[k]
        take_step(info, fused, fused_params, grads[k], k, loss)
        take_step(info, ref, ref_params, [torch.view_as_real(g) for g in grads[k]], k, loss)
    assert_rel_close([torch.view_as_real(p) for p in fused_params], ref_params, 1e-12)
    assert all(v.is_complex() for st in fused.state.values() for k, v in st.items() if k != "step")


# ---- torch.compile ---------------------------------------------------------------------------------------------
def _compiled_run(make, steps=20, dals=False):
    """Graphs compiled and graph breaks inside our code over ``steps`` compiled steps under a torch scheduler
    with a Python-float lr; and the params, next to an eager twin's."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    results = []
    for compiled in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
        opt = make(model)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.9)

        def step(loss):
            if dals:
                opt.step(loss=loss)
            else:
                opt.step()

        run = torch.compile(step, backend="aot_eager") if compiled else step
        gen = torch.Generator().manual_seed(1)
        for k in range(steps):
            x = torch.randn(16, 4, generator=gen)
            model.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            run(loss.detach())
            sched.step()
        results.append([p.detach().clone() for p in model.parameters()])
    ours = {reason: n for reason, n in counters["graph_break"].items()
            if "lr_scheduler.py" not in reason}  # the scheduler's step wrapper is skipped for torch's own too
    return counters["stats"]["unique_graphs"], ours, results


COMPILE_CASES = {
    "LayerwiseSGD": lambda m: LayerwiseSGD(m.parameters(), lr=0.1, momentum=0.9),
    "LARS": lambda m: LARS(m.parameters(), lr=0.1),
    "DepthScaledSGD": lambda m: DepthScaledSGD(m.parameters(), mu_xx=1.0, mu_yx=2.0),
}


@pytest.mark.parametrize("name", ["LayerwiseSGD", "LayerwiseAdamW", "GrokfastAdamW", "LARS", "LAMB", "DALS",
                                  "DepthScaledSGD"])
def test_compiled_step_no_recompilation(name):
    import torch_layerlr.optim as optim

    make = COMPILE_CASES.get(name) or (lambda m: getattr(optim, name)(m.parameters()) if name != "DALS"
                                       else DALS(m, total_steps=20))
    graphs, breaks, (compiled, eager) = _compiled_run(make, dals=name == "DALS")
    assert graphs <= 2, f"{graphs} graphs compiled over 20 steps"
    assert not breaks, f"graph breaks in our step: {list(breaks)}"
    assert_equal_tensors(compiled, eager)


# ---- API edges -------------------------------------------------------------------------------------------------
def test_lars_takes_lr_per_group_like_torch_sgd():
    a, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    opt = LARS([{"params": [a], "lr": 0.1}, {"params": [b]}])
    assert opt.param_groups[0]["lr"] == 0.1
    assert opt.param_groups[1]["lr"] == torch.optim.SGD([b]).param_groups[0]["lr"]


@pytest.mark.parametrize("make", [lambda t: DepthScaledSGD(t, mu_xx=1.0, mu_yx=2.0), lambda t: LayerwiseSGD(t),
                                  lambda t: LARS(t, lr=0.1)], ids=["DepthScaledSGD", "LayerwiseSGD", "LARS"])
def test_bare_tensor_raises_typeerror_like_torch(make):
    t = torch.nn.Parameter(torch.ones(3, 2))
    with pytest.raises(TypeError, match="iterable of Tensors"):
        make(t)


@pytest.mark.parametrize("name", ["LAMB", "DALS"])
def test_whole_train_step_compiles(name):
    """forward + backward + step in one compiled function equals the eager train step."""
    import torch._dynamo

    import torch_layerlr.optim as optim

    torch._dynamo.reset()
    results = []
    for compiled in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        opt = DALS(model, total_steps=10) if name == "DALS" else getattr(optim, name)(model.parameters())

        def train_step(x, y):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return opt.step(loss=loss.detach()) if name == "DALS" else opt.step() or loss

        run = torch.compile(train_step, backend="aot_eager") if compiled else train_step
        gen = torch.Generator().manual_seed(2)
        for _ in range(10):
            run(torch.randn(8, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen))
        results.append([p.detach().clone() for p in model.parameters()])
    assert_rel_close(results[0], results[1], 1e-6)
