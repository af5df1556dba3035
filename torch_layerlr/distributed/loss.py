"""A scalar averaged over a process group (DALS's loss phase is global in a data-parallel run)."""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["global_mean"]


def global_mean(value: Union[float, Tensor], group: Optional[dist.ProcessGroup] = None) -> Tensor:
    r"""The mean :math:`\frac1W\sum_r x_r` of one scalar over the ``W`` ranks of ``group`` (default: the world),
    as a float64 tensor: one all-reduce of 8 bytes. Every rank gets the same bits (the sum is computed once and
    broadcast by the collective; the division is the same on every rank), so replicas fed this value stay
    identical. Sums and divides rather than ``ReduceOp.AVG``, which gloo lacks."""
    if isinstance(value, Tensor):
        x = value.detach().reshape(()).to(torch.float64, copy=True)
    else:
        x = torch.tensor(float(value), dtype=torch.float64)
    if dist.get_backend(group) == dist.Backend.NCCL and x.device.type != "cuda":
        x = x.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
    return x / dist.get_world_size(group)
