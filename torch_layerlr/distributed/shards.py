"""What a sharded param looks like to the engine: its local shard (DTensor), or a refusal (FSDP1 flat shard)."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.distributed.tensor import DTensor

__all__ = ["is_sharded", "local", "is_flat_shard", "local_list"]


def is_sharded(t: Any) -> bool:
    """Whether ``t`` is a DTensor (FSDP2's params, grads and state; tensor parallel's too)."""
    return isinstance(t, DTensor)


def local(t: Tensor) -> Tensor:
    """The tensor the kernel runs on: a DTensor's local shard (same storage, so in-place updates are the
    DTensor's), anything else as it is. ``_local_tensor`` rather than ``to_local()``: the step runs under
    ``no_grad`` and needs no autograd node per tensor (as ``torch.optim``'s foreach paths see DTensors)."""
    return t._local_tensor if isinstance(t, DTensor) else t


def local_list(tensors: list[Tensor]) -> list[Tensor]:
    return [local(t) for t in tensors]


def is_flat_shard(t: Any) -> bool:
    """Whether ``t`` is (a view into) an FSDP1 ``FlatParameter`` shard: ``FullyShardedDataParallel`` marks both
    its flat params and, with ``use_orig_params=True``, the original params it turns into views of them."""
    return bool(getattr(t, "_fsdp_flattened", False))
