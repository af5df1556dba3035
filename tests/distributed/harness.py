"""Runs a function on ``world_size`` fresh processes joined in a gloo process group on 127.0.0.1.

Each test starts and tears down its own group (spawned processes, a free port, a deadline), so the tests run
anywhere the suite runs, alone or in any order, and a hung collective fails the test instead of CI.
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

__all__ = ["run_world", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, out_dir: str, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # ranks share a small machine; results do not depend on it
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    except BaseException:
        (Path(out_dir) / f"rank{rank}.err").write_text(traceback.format_exc())
        dist.destroy_process_group()
        raise
    # NOTE: [orderly teardown] DDP reducers and ZeRO optimizers sit in reference cycles that hold the process
    # group; left to the interpreter's exit, they die after destroy_process_group, while gloo's threads still
    # hold their work, and the rank aborts ("terminate called without an active exception"). So: free them
    # now, wait for every rank to be past its last collective, destroy the group, and leave without running
    # the interpreter's finalizers again, as a forked multiprocessing child does (os._exit after run).
    del result
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_world(fn: Callable, world_size: int, tmp_path: Path, *args: Any, timeout: float = 120.0) -> list[Any]:
    """``fn(rank, world_size, *args)`` on each rank (``fn`` importable, ``args`` picklable); the ranks'
    return values, in rank order. Raises with the failing rank's traceback, or after ``timeout`` seconds."""
    out_dir = tmp_path / f"world{world_size}_{fn.__name__}_{time.monotonic_ns()}"
    out_dir.mkdir()
    context = mp.start_processes(_entry, args=(world_size, free_port(), str(out_dir), fn, args),
                                 nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{fn.__name__} on {world_size} ranks did not finish in {timeout} s")
    except ProcessException as exc:
        errors = sorted(out_dir.glob("rank*.err"))
        raise AssertionError("\n".join(e.read_text() for e in errors) or str(exc)) from None
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
