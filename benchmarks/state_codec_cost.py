"""Where the time of an int8 step goes on this CPU: the int8 codec's cost per element at each vector width, and
the fp32 and int8 AdamW steps with the data in the last-level cache and out of it, at one thread and at all of them.

Usage (from the repository root; OMP_WAIT_POLICY=PASSIVE)::

    python benchmarks/state_codec_cost.py [--markdown out.md]

The codec is timed through the ops that share its code with the fused step (quantize_blockwise: absmax and
encode; dequantize_blockwise: decode), single-threaded on 64K elements (L2-resident), in one process per width
(LAYERLR_CPU_CAPABILITY=default|avx2|avx512, read once per process). Each figure is the best of 30 repeats, so
it is the cost with the data in cache and the core to itself. The steps: LayerwiseAdamW on one tensor, fp32 and
int8 state, 1 thread and all threads, each the best of 10 repeats, interleaved: in L3, the marginal cost per
param between 256K and 1M params (the step's fixed cost drops out); out of cache, 64M params (1 GB of fp32
params, grads and moments).

A step with int8 state moves 16.06 B/param against fp32's 28 (state_precision_step.py's bytes model: 0.57x), but
decodes and encodes two moments per element; where that compute costs more than the bytes it saves, the int8 step
is slower than fp32 however little it moves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import step_throughput as ST  # noqa: E402  (sets up sys.path before torch)
import torch  # noqa: E402

WIDTHS = ("default", "avx2", "avx512")
CODEC_N = 1 << 16


def best_ns_per_elem(fn, n: int, repeats: int, inner: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t) / inner)
    return best / n * 1e9


def codec_costs() -> dict[str, float]:
    """In a child process: ns/elem of quantize and dequantize, signed and unsigned map."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(CODEC_N, generator=gen) * torch.exp(torch.randn(CODEC_N, generator=gen) * 2)
    out = {}
    for signed in (True, False):
        values = x if signed else x.abs()
        codes, absmax = torch.ops.layerlr.quantize_blockwise(values, signed)
        map_name = "signed" if signed else "unsigned"
        out[f"encode+absmax {map_name}"] = best_ns_per_elem(
            lambda: torch.ops.layerlr.quantize_blockwise(values, signed), CODEC_N, 30, 20)
        out[f"decode {map_name}"] = best_ns_per_elem(
            lambda: torch.ops.layerlr.dequantize_blockwise(codes, absmax, signed), CODEC_N, 30, 20)
    return out


def step_times(n: int, threads: list[int]) -> dict[tuple[int, str], float]:
    """Best seconds per LayerwiseAdamW step on one tensor of n params, fp32 and int8 state, per thread count."""
    from torch_layerlr.optim import LayerwiseAdamW

    opts = {}
    for precision in ("fp32", "int8"):
        p = torch.nn.Parameter(torch.randn(n))
        p.grad = torch.randn(n) * 1e-2
        opts[precision] = LayerwiseAdamW([p], lr=1e-3, state_precision=precision)
    best = {}
    for t in threads:
        torch.set_num_threads(t)
        for _ in range(10):  # interleaved, so a load change hits both
            for k, opt in opts.items():
                best[t, k] = min(best.get((t, k), float("inf")), best_ns_per_elem(opt.step, n, 1, 5) * n * 1e-9)
    return best


def step_costs(threads: list[int]) -> dict[str, float]:
    """ns/param of a LayerwiseAdamW step: the marginal cost in L3 (the slope between two sizes, so the fixed cost
    of a step drops out), and the cost out of every cache (a step over 1 GB of fp32 params, grads and moments)."""
    small, large, huge = 1 << 18, 1 << 20, 1 << 26
    t_small, t_large, t_huge = step_times(small, threads), step_times(large, threads), step_times(huge, threads)
    out = {}
    for key in t_small:
        out[f"in L3 (marginal)|{key[0]}|{key[1]}"] = (t_large[key] - t_small[key]) / (large - small) * 1e9
        out[f"out of cache|{key[0]}|{key[1]}"] = t_huge[key] / huge * 1e9
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown")
    ap.add_argument("--child", choices=WIDTHS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(codec_costs()))
        return 0
    report = ST.Report(args.markdown)
    report.header("torch_layerlr: where the int8 step's time goes")
    costs = {}
    for width in WIDTHS:
        env = {**os.environ, "LAYERLR_CPU_CAPABILITY": width}
        proc = subprocess.run([sys.executable, __file__, "--child", width], env=env, capture_output=True,
                              text=True, check=True)
        costs[width] = json.loads(proc.stdout.strip().splitlines()[-1])
    ops = list(costs[WIDTHS[0]])
    report.table(["op", *WIDTHS, "speed-up default -> avx512"],
                 [[op, *(f"{costs[w][op]:.3f}" for w in WIDTHS), f"{costs['default'][op] / costs['avx512'][op]:.1f}x"]
                  for op in ops], "int8 codec, ns per element (1 thread, 64K elements in L2, best of 30)")
    adam = sum(costs["avx512"][op] for op in ops)  # exp_avg on the signed map, exp_avg_sq on the unsigned one
    report.text(f"AdamW's two moments (one signed, one unsigned) cost {adam:.2f} ns/elem of codec at avx512.\n")
    threads = sorted({1, torch.get_num_threads()})
    steps = step_costs(threads)
    rows = []
    for where in ("in L3 (marginal)", "out of cache"):
        for t in threads:
            fp32, int8 = steps[f"{where}|{t}|fp32"], steps[f"{where}|{t}|int8"]
            rows.append([where, str(t), f"{fp32:.3f}", f"{int8:.3f}", f"{int8 / fp32:.2f}"])
    report.table(["data", "threads", "fp32", "int8", "int8 / fp32"], rows,
                 "LayerwiseAdamW step, ns per param (best of 10, interleaved)")
    report.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
