"""An optimizer step whose params are sharded (DTensor) or flat shards (FSDP1).

The engine runs on local shards. Element-wise recipes need nothing else. Trust-ratio recipes run each call in
two (NOTE: [split trust step] in ``csrc/engine/step_args.h``): the norms calls of all calls of the step, one
all-reduce of all their squared norms per mesh (:func:`~torch_layerlr.distributed.norms.reduce_sq_norms`),
then the update calls, which compute the ratios of the whole tensors. Every call (both passes of a split one)
is checked before any runs, so a refused step changes nothing (NOTE: [atomic steps] in ``optim/_base.py``).

A *call* here is any object with ``params``, ``grads``, ``states``, ``steps``, ``recipe`` and ``kwargs``
(the optimizer base's ``_Call``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as dist

from torch_layerlr._ops import fused_step_, fused_step_check
from torch_layerlr.distributed.norms import reduce_sq_norms
from torch_layerlr.distributed.shards import is_flat_shard, is_sharded, local, local_list

__all__ = ["is_distributed_step", "check_calls", "run_calls"]


def is_distributed_step(calls: Sequence[Any]) -> bool:
    """Whether any call of the step has a DTensor or FSDP1-flattened param (never without torch.distributed
    initialised, so a one-process step pays one ``is_initialized()``)."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return any(is_sharded(p) or is_flat_shard(p) for call in calls for p in call.params)


def _split(call: Any) -> bool:
    return call.recipe.trust != "none" and any(is_sharded(p) for p in call.params)


def _refuse_flat_shards(call: Any, who: str) -> None:
    if call.recipe.trust != "none" and any(is_flat_shard(p) for p in call.params):
        raise RuntimeError(
            f"{who} computes a trust ratio from each parameter tensor's norm, but its params are FSDP1 "
            f"(FullyShardedDataParallel) flat shards, which mix pieces of several tensors: the ratios would be "
            f"those of each rank's shard, not of the tensors. Shard the model with FSDP2 "
            f"(torch.distributed.fsdp.fully_shard), whose DTensor params keep tensor boundaries; element-wise "
            f"optimizers (LayerwiseSGD, LayerwiseAdamW, GrokfastAdamW, DepthScaledSGD) work under FSDP1.")


def _local_args(call: Any) -> tuple:
    states = {name: local_list(tensors) for name, tensors in call.states.items()}
    kwargs = {k: local(v) if isinstance(v, torch.Tensor) else v for k, v in call.kwargs.items()}
    return local_list(call.params), local_list(call.grads), states, local_list(call.steps), call.recipe, kwargs


def _sq_norms(call: Any) -> torch.Tensor:
    n = len(call.params)
    device = local(call.params[0]).device if n else torch.device("cpu")
    return torch.zeros(n, 2, dtype=torch.float64, device=device)


def check_calls(calls: Sequence[Any], who: str) -> None:
    """Every check the step's engine calls make (both passes of a split call), before any runs; FSDP1 flat
    shards refused for trust-ratio recipes (``RuntimeError`` naming FSDP2)."""
    for call in calls:
        _refuse_flat_shards(call, who)
        params, grads, states, steps, recipe, kwargs = _local_args(call)
        if _split(call):
            sq = _sq_norms(call)
            for trust_pass in ("norms", "update"):
                fused_step_check(params, grads, states, steps, recipe, sq_norms=sq, trust_pass=trust_pass,
                                 **kwargs)
        else:
            fused_step_check(params, grads, states, steps, recipe, **kwargs)


def run_calls(calls: Sequence[Any]) -> None:
    """Runs the (checked) calls of one step on local shards; the split ones around one reduction of their
    squared norms per mesh."""
    split = [(call, _sq_norms(call)) for call in calls if _split(call)]
    for call, sq in split:
        params, grads, states, steps, recipe, kwargs = _local_args(call)
        fused_step_(params, grads, states, steps, recipe, sq_norms=sq, trust_pass="norms", **kwargs)
    if split:
        reduce_sq_norms([(call.params, sq) for call, sq in split])
    norms = {id(call): sq for call, sq in split}
    for call in calls:
        params, grads, states, steps, recipe, kwargs = _local_args(call)
        if id(call) in norms:
            fused_step_(params, grads, states, steps, recipe, sq_norms=norms[id(call)], trust_pass="update",
                        **kwargs)
        else:
            fused_step_(params, grads, states, steps, recipe, **kwargs)
