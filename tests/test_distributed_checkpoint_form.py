"""DALS's global state in the form torch.distributed.checkpoint carries: a copy in the first param group
(torch_layerlr.distributed.checkpoint), read back when the top-level ``"dals"`` key is gone, as
``set_optimizer_state_dict`` hands it over. One process; the multi-process DCP round trips are in
test_distributed.py."""

from __future__ import annotations

import copy

import pytest
import torch

from torch_layerlr.optim import DALS


def _run(opt: DALS, params: list[torch.Tensor], steps: range) -> None:
    for k in steps:
        g = torch.Generator().manual_seed(k)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        opt.step(loss=1.0 / (k + 1))


def _setup():
    torch.manual_seed(0)
    params = [torch.randn(4, 3, dtype=torch.float64, requires_grad=True),
              torch.randn(3, dtype=torch.float64, requires_grad=True)]
    return params, DALS([{"params": params, "depth_ratio": [0.0, 1.0]}], variant="acc", total_steps=20,
                        restart_steps=3)


def test_global_state_resumes_from_the_param_group_copy():
    params, opt = _setup()
    _run(opt, params, range(5))
    saved = opt.state_dict()
    assert saved["param_groups"][0]["dals"]["step"] == saved["dals"]["step"] == 5
    without_top = {k: v for k, v in copy.deepcopy(saved).items() if k != "dals"}  # what DCP hands back
    uninterrupted = copy.deepcopy((params, opt))
    _run(uninterrupted[1], uninterrupted[0], range(5, 9))

    resumed_params, resumed = _setup()
    with torch.no_grad():
        for p, q in zip(resumed_params, params):
            p.copy_(q)
    resumed.load_state_dict(without_top)
    assert all("dals" not in g for g in resumed.param_groups)  # the copy never lands in the live groups
    _run(resumed, resumed_params, range(5, 9))
    for a, b in zip(resumed_params, uninterrupted[0]):
        assert torch.equal(a, b)
    assert resumed.state_dict()["dals"]["step"] == 9


@pytest.mark.parametrize("bad,message", [
    ({"step": 5, "cycle": 0, "cycle_len": 3, "detector": ["x", 1, 0], "filter_coef": [0.5, 1.0]}, "list of numbers"),
    ({"step": -1, "cycle": 0, "cycle_len": 3, "detector": [0.0, 0.0, 0.0], "filter_coef": [0.5, 1.0]}, "step"),
    ({"step": 5, "cycle": 0, "cycle_len": 3, "detector": [0.0, 0.0, 7.0], "filter_coef": [0.5, 1.0]}, "phase"),
])
def test_crafted_param_group_copy_is_refused_by_name(bad, message):
    params, opt = _setup()
    _run(opt, params, range(2))
    saved = opt.state_dict()
    del saved["dals"]
    saved["param_groups"][0]["dals"] = bad
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(saved)
    after = opt.state_dict()
    assert after["dals"]["step"] == before["dals"]["step"] == 2
    assert torch.equal(after["dals"]["detector"], before["dals"]["detector"])
