"""CUDA-graph capture and replay of every optimizer of tests/optim_db.py, against an eager twin.

Per row: float32 params on CUDA in two param groups (45 tensors: more than one launch's tensor table, a 0-d,
a 0-size and a two-chunk tensor), each group's ``lr`` a float64 CUDA tensor (``torch.optim``'s capturable
convention: a schedule changes it in place, and a replay reads the new value). Two optimizers are built alike:

* the captured one takes WARMUP eager steps on a side stream (lazy state is made there, outside the capture,
  as ``torch.cuda.graphs`` asks), then one ``step()`` is captured in a ``torch.cuda.CUDAGraph`` and replayed
  REPLAYS times, each after the step's gradients are written into the captured gradient tensors (DALS: its
  loss into a captured loss tensor) and every group's lr tensor is multiplied by 0.9 in place;
* the eager twin takes the same WARMUP + REPLAYS steps with ``opt.step()`` on the same gradients, losses and
  lr tensors.

A replay runs the kernels of an eager step on the same inputs, so params, every state tensor, the trust ratios
and the state_dict must be bitwise equal; and every non-empty param must have moved during the replays (a
replay that did nothing, or reused the warmup's inputs, cannot pass). Four rows (LOW_PRECISION_ROWS) are run
again with bf16 and with int8 state.

DALS keeps its schedule clock and loss phase on the device (layerlr::dals_advance_): a captured host schedule
would replay one lr forever. So a DALS row first takes a step with a device loss under
``torch.cuda.set_sync_debug_mode("error")`` (after one plain step, which moves its state to the device); a step
that waits for the device fails the row. Everything is skipped where torch has no CUDA device.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from optim_db import OPTIM_IDS, by_name, dals_losses, optim_db  # noqa: E402
from test_optim import F64, Problem, assert_equal_tensors, assert_state_dicts_equal  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICE = torch.device("cuda")
CHUNK = 65536  # multi_tensor_apply's chunk (csrc/cuda/multi_tensor_apply.cuh)
#: 45 tensors, more than one fused-step launch holds (30), with a 0-d, a 0-size and a two-chunk tensor
SHAPES = [(64, 33), (7,), (), (0,), (2 * CHUNK + 5,)] + [(1 + (5 * i) % 23,) for i in range(40)]
FIRST_GROUP = 20  # params [0, 20) in group 0, the rest in group 1
WARMUP, REPLAYS = 3, 8
#: one row per recipe shape with state: adam, lamb, lars with a filter, dals
LOW_PRECISION_ROWS = ("adamw", "lamb", "lars_grokfast", "dals_fast")
LR_DECAY = 0.9


def build(info, params: list[torch.Tensor], precision: str = "fp32") -> torch.optim.Optimizer:
    """The row's optimizer over two groups, each group's lr a float64 tensor on the device."""
    groups = [{"params": params[:FIRST_GROUP]}, {"params": params[FIRST_GROUP:]}]
    opt = info.fused(groups, state_precision=precision)
    for k, group in enumerate(opt.param_groups):
        group["lr"] = torch.tensor(float(group["lr"]) * (1.0 + 0.5 * k), dtype=F64, device=DEVICE)
    return opt


def decay_lr(opt: torch.optim.Optimizer) -> None:
    for group in opt.param_groups:
        group["lr"].mul_(LR_DECAY)


def feed(grads: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    for g, v in zip(grads, values):
        g.copy_(v)


def host_sync(info, problem: Problem) -> Optional[str]:
    """The error of a step that waits for the device (a DALS step with a device loss, after a plain one), or
    None if it does not."""
    params = problem.params(device=DEVICE)
    for p, g in zip(params, problem.grads(0)):
        p.grad = g.to(DEVICE)
    opt = build(info, params)
    loss = torch.tensor(2.0, dtype=F64, device=DEVICE)
    opt.step(loss=loss)
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step(loss=loss)
    except RuntimeError as exc:
        if "synchroniz" not in str(exc):
            raise
        return str(exc).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode(before)
    return None


@pytest.mark.parametrize("info", optim_db, ids=OPTIM_IDS)
def test_graph_replay_matches_eager(info):
    graph_replay_matches_eager(info, "fp32")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("name", LOW_PRECISION_ROWS)
def test_graph_replay_matches_eager_low_precision(name, precision):
    """The same on low-precision state (the two-chunk tensor is the one large enough for int8 state). A replay
    draws the rounding bits of its own step, as the eager step does; the warmup uploads the int8 maps."""
    graph_replay_matches_eager(by_name(name), precision)


def graph_replay_matches_eager(info, precision: str) -> None:
    steps = WARMUP + REPLAYS
    problem = Problem(SHAPES, torch.float32, seed=61)
    if info.is_dals:
        why = host_sync(info, problem)
        assert why is None, f"a DALS step waits for the device, so it cannot be captured: {why}"
    step_grads = [[g.to(DEVICE) for g in problem.grads(k)] for k in range(steps)]
    losses = [torch.tensor(x, dtype=F64, device=DEVICE) for x in dals_losses(steps, seed=4)[0]]

    def make():
        params = problem.params(device=DEVICE)
        grads = [torch.zeros_like(p) for p in params]
        for p, g in zip(params, grads):
            p.grad = g
        return params, grads, build(info, params, precision)

    graph_params, graph_grads, graph_opt = make()
    eager_params, eager_grads, eager_opt = make()
    static_loss = losses[0].clone()

    def graph_step():
        return graph_opt.step(loss=static_loss) if info.is_dals else graph_opt.step()

    def graph_feed(k):
        feed(graph_grads, step_grads[k])
        static_loss.copy_(losses[k])

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for k in range(WARMUP):
            graph_feed(k)
            graph_step()
    torch.cuda.current_stream().wait_stream(side)
    after_warmup = [p.detach().clone() for p in graph_params]

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graph_step()
    for k in range(WARMUP, steps):
        graph_feed(k)
        decay_lr(graph_opt)
        graph.replay()

    for k in range(steps):
        feed(eager_grads, step_grads[k])
        if k >= WARMUP:
            decay_lr(eager_opt)
        if info.is_dals:
            eager_opt.step(loss=losses[k])
        else:
            eager_opt.step()
    torch.cuda.synchronize()

    assert_equal_tensors(graph_params, eager_params)
    assert_state_dicts_equal(graph_opt.state_dict(), eager_opt.state_dict())
    ratios_graph, ratios_eager = graph_opt.trust_ratios(), eager_opt.trust_ratios()
    assert [ratios_graph[p] for p in graph_params if p in ratios_graph] == \
        [ratios_eager[p] for p in eager_params if p in ratios_eager]
    assert len(ratios_graph) == len(ratios_eager)
    still = [i for i, (a, b) in enumerate(zip(after_warmup, graph_params)) if a.numel() and torch.equal(a, b)]
    assert not still, f"params {still} did not move during the replays"
