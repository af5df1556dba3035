"""Counting the collectives a piece of code issues, with their payload (for tests and benchmarks)."""

from __future__ import annotations

import dataclasses

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["Collective", "CollectiveLog"]


@dataclasses.dataclass(frozen=True)
class Collective:
    op: str      # e.g. "allreduce_"
    bytes: int   # payload of its input tensors on this rank


class CollectiveLog(TorchDispatchMode):
    """A dispatch mode recording every ``c10d`` collective (``torch.distributed.all_reduce`` and friends, and
    the functional collectives DTensor uses) run inside it, in order::

        with CollectiveLog() as log:
            opt.step()
        log.collectives  # [Collective("allreduce_", 48)]
    """

    def __init__(self) -> None:
        super().__init__()
        self.collectives: list[Collective] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        namespace = func.namespace
        if namespace in ("c10d", "_c10d_functional", "c10d_functional"):
            name = func._opname
            if not name.startswith(("wait", "barrier")) and name != "monitored_barrier_":
                tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
                # c10d ops take (tensors, process group, ...): the payload is the first tensor argument(s)
                payload = tensors[:1] if not isinstance(args[0], (list, tuple)) else \
                    [t for t in args[0] if isinstance(t, torch.Tensor)]
                self.collectives.append(Collective(name, sum(t.numel() * t.element_size() for t in payload)))
        return func(*args, **kwargs)
