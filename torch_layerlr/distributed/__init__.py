"""torch.distributed support: sharded params (DTensor / FSDP2), global trust ratios, DALS's global loss.

- :mod:`.shards`: a DTensor param runs the kernel on its local shard; FSDP1's flat shards are detected.
- :mod:`.norms`: the per-tensor squared norms of sharded tensors summed over their mesh, one collective per
  mesh for all tensors of a step.
- :mod:`.step`: an optimizer step over sharded params: element-wise recipes in one call per bucket, trust-ratio
  recipes split around that one collective (NOTE: [split trust step] in ``csrc/engine/step_args.h``).
- :mod:`.loss`: the mean of a scalar over a process group (DALS's loss phase is global).
- :mod:`.checkpoint`: an optimizer's global state in the first param group, where DCP carries it.
- :mod:`.data_parallel`: training runs under torchrun (DDP / FSDP2, each rank its share of every batch).
- :mod:`.comms`: a log of the collectives a piece of code issues (tests, benchmarks).
"""

from torch_layerlr.distributed.loss import global_mean
from torch_layerlr.distributed.norms import reduce_sq_norms
from torch_layerlr.distributed.shards import is_flat_shard, is_sharded, local
from torch_layerlr.distributed.step import check_calls, is_distributed_step, run_calls

__all__ = ["check_calls", "global_mean", "is_distributed_step", "is_flat_shard", "is_sharded", "local",
           "reduce_sq_norms", "run_calls"]
