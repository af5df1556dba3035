r"""Squared norms of sharded tensors, summed over their mesh: one all-reduce per mesh for all tensors of a step.

A trust ratio needs :math:`\|p\|` and :math:`\|u\|` of the whole (logical) tensor. A rank holds a shard, so
each rank computes its shard's squared norms (the norms call of a split step) and

.. math:: \|p\|^2 = \sum_{\text{shards } s} \|p_s\|^2

is one sum over the ranks. All tensors of the step are packed into one float64 buffer of ``[tensors, 2]``
(16 bytes per tensor) and reduced by one ``all_reduce(SUM)``, as apex's ``DistributedFusedLAMB`` and Paddle's
``DistributedFusedLamb`` do, instead of one collective per tensor (what ``clip_grad_norm_`` on DTensor grads
costs per norm). A tensor replicated along a mesh dimension (``Replicate``: whole on each of those ranks)
contributes from coordinate 0 of that dimension only, so the sum counts it once and stays exact.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor

__all__ = ["reduce_sq_norms"]


def _contributes(p: DTensor) -> bool:
    """Whether this rank's shard of ``p`` enters the sum: on every mesh dimension ``p`` is sharded along, or
    replicated along with this rank at coordinate 0."""
    coordinate = p.device_mesh.get_coordinate()
    if coordinate is None:
        raise RuntimeError("a DTensor param's mesh does not include this rank")
    for dim, placement in enumerate(p.placements):
        if placement.is_shard():
            continue
        if placement.is_replicate():
            if coordinate[dim] != 0:
                return False
            continue
        raise ValueError(f"a param has placement {placement} on mesh dimension {dim}: params must be sharded "
                         f"(Shard) or replicated (Replicate), not partial")
    return True


def _group(mesh) -> dist.ProcessGroup:
    """The process group of all ranks of ``mesh`` (a flattened mesh for more than one dimension)."""
    return mesh.get_group() if mesh.ndim == 1 else mesh._flatten().get_group()


def reduce_sq_norms(entries: Sequence[tuple[Sequence[Tensor], Tensor]]) -> int:
    """Sum, in place, the rows of every DTensor param in ``entries`` over the ranks of its mesh.

    ``entries`` holds ``(params, sq_norms)`` pairs, ``sq_norms`` float64 ``[len(params), 2]`` with the local
    squared norms (the norms call of a split step). Rows of plain-tensor params (whole on this rank) are left
    as they are. Returns the number of collectives issued: one per distinct mesh, none without DTensors.
    """
    # per mesh: the (sq_norms, rows or None for all of them, this rank contributes) of each entry
    by_mesh: dict[object, list[tuple[Tensor, Optional[Tensor], Optional[Tensor]]]] = defaultdict(list)
    contributes: dict[tuple, bool] = {}  # by (mesh, placements): one look-up per layout, not per tensor
    for params, sq in entries:
        rows: dict[object, tuple[list[int], list[bool]]] = defaultdict(lambda: ([], []))
        for i, p in enumerate(params):
            if isinstance(p, DTensor):
                layout = (p.device_mesh, p.placements)
                if layout not in contributes:
                    contributes[layout] = _contributes(p)
                index, keep = rows[p.device_mesh]
                index.append(i)
                keep.append(contributes[layout])
        for mesh, (index, keep) in rows.items():
            if len(index) == len(params) and all(keep):  # the usual case (FSDP2): every row, as it is
                by_mesh[mesh].append((sq, None, None))
            else:
                by_mesh[mesh].append((sq, torch.tensor(index, device=sq.device),
                                      torch.tensor(keep, device=sq.device).unsqueeze(1)))
    for mesh, parts in by_mesh.items():
        if len(parts) == 1 and parts[0][1] is None:
            dist.all_reduce(parts[0][0], op=dist.ReduceOp.SUM, group=_group(mesh))
            continue
        packed = torch.cat([sq if index is None else torch.where(keep, sq.index_select(0, index), 0.0)
                            for sq, index, keep in parts])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=_group(mesh))
        offset = 0
        for sq, index, _ in parts:
            size = len(sq) if index is None else len(index)
            if index is None:
                sq.copy_(packed[offset:offset + size])
            else:
                sq.index_copy_(0, index, packed[offset:offset + size])
            offset += size
    return len(by_mesh)
