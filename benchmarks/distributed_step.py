"""Optimizer step time under FSDP2 on 2 ranks, and the collectives each step adds.

Usage (from the repository root)::

    python benchmarks/distributed_step.py             # 2 ranks (gloo, CPU), 16.8 M params in 16 Linear layers
    python benchmarks/distributed_step.py --quick     # smaller model, fewer steps
    python benchmarks/distributed_step.py --markdown out.md

Per optimizer (float32, ``fully_shard`` on every layer and the root, mesh of 2 CPU ranks on gloo): the median
time of ``opt.step()`` over the timed steps (forward and backward untimed), its ratio to ``torch.optim.AdamW``
(foreach) on the same sharded params, and the collectives the step issues (logged by
``torch_layerlr.distributed.comms.CollectiveLog`` on one extra, untimed step): expected none for element-wise
recipes, one all-reduce of 16 B x tensors (two float64 squared norms each) for LARS / LAMB, plus DALS's
all-reduce of its 8-byte loss. The header times that all-reduce alone (median of 200, same buffer, same group):
the latency a trust-ratio step adds on this transport. Rank 0 reports; the ranks step in lockstep.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

NAMES = ["AdamW (torch)", "LayerwiseSGD", "LayerwiseAdamW", "GrokfastAdamW", "LARS", "LAMB", "DALS"]


def _optimizer(name: str, params: list):
    from torch_layerlr.optim import DALS, LAMB, LARS, GrokfastAdamW, LayerwiseAdamW, LayerwiseSGD

    if name == "AdamW (torch)":
        return torch.optim.AdamW(params, lr=1e-3)
    cls = dict(LayerwiseSGD=LayerwiseSGD, LayerwiseAdamW=LayerwiseAdamW, GrokfastAdamW=GrokfastAdamW, LARS=LARS,
               LAMB=LAMB, DALS=DALS)[name]
    if cls is DALS:
        return DALS([{"params": params, "depth_ratio": 0.5}], total_steps=1000)
    if cls is LARS:
        return LARS(params, lr=0.1)
    if cls is LayerwiseSGD:
        return LayerwiseSGD(params, lr=0.1, momentum=0.9)
    return cls(params, lr=1e-3)


def _model(width: int, layers: int) -> nn.Sequential:
    blocks = []
    for _ in range(layers // 2):
        blocks += [nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)]
    return nn.Sequential(*blocks)


def _rank(rank: int, world_size: int, port: int, args: argparse.Namespace, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from torch_layerlr.distributed.comms import CollectiveLog
    from torch_layerlr.optim import DALS

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=300))
    mesh = init_device_mesh("cpu", (world_size,))
    rows = []
    for name in NAMES:
        torch.manual_seed(0)
        model = _model(args.width, args.layers)
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        params = list(model.parameters())
        opt = _optimizer(name, params)
        x = torch.randn(8, args.width)
        times = []
        for k in range(args.warmup + args.steps + 1):
            opt.zero_grad()
            loss = model(x).square().mean()
            loss.backward()
            dist.barrier()
            logged = k == args.warmup + args.steps  # the last step: under the log (which slows every op down)
            start = time.perf_counter()
            with CollectiveLog() if logged else contextlib.nullcontext() as collectives:
                opt.step(loss=loss.detach()) if isinstance(opt, DALS) else opt.step()
            if args.warmup <= k and not logged:
                times.append(time.perf_counter() - start)
        log = collectives.collectives
        rows.append(dict(name=name, step_ms=1e3 * statistics.median(times), tensors=len(params),
                         params=sum(p.numel() for p in params), collectives=[(c.op, c.bytes) for c in log]))
    # the reduction alone: the buffer of a trust-ratio step, timed on the same group
    buffer = torch.zeros(len(params), 2, dtype=torch.float64)
    latencies = []
    for _ in range(200):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buffer)
        latencies.append(time.perf_counter() - start)
    if rank == 0:
        torch.save(dict(rows=rows, allreduce_us=1e6 * statistics.median(latencies)), out)
    dist.destroy_process_group()


def _table(result: dict, args: argparse.Namespace) -> str:
    rows = result["rows"]
    adamw = next(r["step_ms"] for r in rows if r["name"] == "AdamW (torch)")
    lines = [f"{rows[0]['params'] / 1e6:.1f} M params in {rows[0]['tensors']} tensors, FSDP2 over 2 ranks (gloo, "
             f"CPU, {args.threads} thread(s) each), float32; median of {args.steps} steps after {args.warmup}; "
             f"all-reduce of the norms buffer alone: {result['allreduce_us']:.0f} us",
             "",
             "| optimizer | step (ms) | / AdamW (torch) | collectives per step | bytes per step |",
             "|---|---:|---:|---|---:|"]
    for r in rows:
        ops = ", ".join(f"{op} {b} B" for op, b in r["collectives"]) or "none"
        lines.append(f"| {r['name']} | {r['step_ms']:.2f} | {r['step_ms'] / adamw:.2f} | {ops} | "
                     f"{sum(b for _, b in r['collectives'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, few steps")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    args.width, args.layers, args.warmup, args.steps = (256, 4, 2, 5) if args.quick else (512, 16, 3, 20)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"distributed_step_{os.getpid()}.pt"
    mp.start_processes(_rank, args=(2, port, args, str(out)), nprocs=2, start_method="spawn")
    table = _table(torch.load(out), args)
    out.unlink()
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    sys.exit(main())
