"""Data-parallel training runs under ``torchrun``: the process group from the environment, the model wrapped
(DDP or FSDP2), each rank's share of every batch, sums over the ranks, one writer.

``torchrun --nproc-per-node N -m torch_layerlr train --parallel ddp|fsdp2 ...`` runs each step on the N shares
of the batch; the gradients are averaged over the ranks by DDP / FSDP2 (equal shares: the union batch's mean
gradient), so the run computes what one process computes on the whole batch, up to the order of the
floating-point reductions.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["MODES", "init_from_env", "is_main", "wrap", "share", "share_weight", "sum_over_ranks", "unwrap"]

MODES = ("none", "ddp", "fsdp2")


def init_from_env(device: str) -> bool:
    """Joins the process group torchrun describes (``WORLD_SIZE`` > 1 in the environment): gloo for the CPU, nccl
    for CUDA (on the device ``LOCAL_RANK``). Returns whether a process group is initialised."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    return True


def is_main() -> bool:
    """Whether this process writes the results (rank 0, or the only process)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def wrap(model: nn.Module, mode: str) -> nn.Module:
    """``model`` for data-parallel training: ``DistributedDataParallel`` (``"ddp"``), or FSDP2 (``"fsdp2"``:
    ``fully_shard`` on each top-level child with parameters, then the root), or as it is (``"none"``). Build the
    optimizer after this: FSDP2 replaces the params by sharded DTensors."""
    if mode not in MODES:
        raise ValueError(f"parallel mode must be one of {MODES}, got {mode!r}")
    if mode == "none":
        return model
    if not dist.is_initialized():
        raise RuntimeError(f"parallel mode {mode!r} needs torch.distributed: start the run with torchrun")
    if mode == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.fsdp import fully_shard

    for child in model.children():
        if any(True for _ in child.parameters()):
            fully_shard(child)
    fully_shard(model)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose children are the layers (DDP's ``module``; FSDP2 shards in place)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def share(*tensors: Tensor) -> tuple[Tensor, ...]:
    """This rank's rows of each batch tensor: contiguous shares, the first ranks one row more when the batch
    does not divide (``torch.tensor_split``)."""
    if not dist.is_initialized():
        return tensors
    rank, world = dist.get_rank(), dist.get_world_size()
    return tuple(torch.tensor_split(t, world)[rank] for t in tensors)


def share_weight(rows: int, total: int) -> float:
    r"""The factor :math:`c_r = n_r W / N` for the mean loss of a share of :math:`n_r` of :math:`N` rows on
    :math:`W` ranks: DDP and FSDP2 average the gradients over the ranks, and
    :math:`\frac1W\sum_r c_r \nabla L_r = \frac1N\sum_i \nabla\ell_i`, the union batch's mean gradient, also when
    the batch does not divide evenly. 1 without torch.distributed."""
    if not dist.is_initialized():
        return 1.0
    return rows * dist.get_world_size() / total


def sum_over_ranks(*tensors: Tensor) -> None:
    """In place: each tensor summed over the ranks (one all-reduce of all of them, packed)."""
    if not dist.is_initialized() or not tensors:
        return
    packed = torch.stack([t.to(torch.float64).reshape(()) for t in tensors])
    dist.all_reduce(packed)
    for t, value in zip(tensors, packed):
        t.copy_(value)
