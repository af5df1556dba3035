"""Step time, state bytes and peak memory of our optimizers with ``state_precision`` fp32 / bf16 / int8, side by
side with torch.optim.AdamW(fused=True) and, where it runs, bitsandbytes' 8-bit AdamW / LAMB.

Usage (from the repository root; OMP_WAIT_POLICY=PASSIVE)::

    python benchmarks/state_precision_step.py                        # 10M and 50M, every optimizer
    python benchmarks/state_precision_step.py --layouts 50M --optimizers LayerwiseAdamW,LAMB --rounds 9
    python benchmarks/state_precision_step.py --markdown out.md --no-memory

Timing is paired and interleaved: per round every implementation of one optimizer takes one step (caches flushed
before each, the fixed gradients restored, as in step_throughput.py), in an order that rotates from round to
round, so a load change on a shared machine hits all of them alike. Reported: the median step time, and the
median over rounds of each implementation's time divided by the fp32 step's time of the same round.

Bytes model (B/param per step, 4 B per fp32 value; bf16 state 2 B, int8 state 1 B plus 4 B of absmax per 256
elements, i.e. 1.016 B): the state traffic of each recipe (step_throughput.BYTES_NOTE) scaled per precision,
params and grads unchanged. The predicted time ratio of a bandwidth-bound step is the ratio of those bytes.
State B/param is measured: the bytes of the optimizer's state tensors over the number of params (tensors of fewer
than 4096 elements keep fp32 state under int8). Peak memory: step_throughput's subprocess measurement (VmHWM over
params + grads + state), 1.00 = the step allocates nothing proportional to the model.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import step_throughput as ST  # noqa: E402  (sets up sys.path and the compile cache before torch)
import torch  # noqa: E402

PRECISIONS = ("fp32", "bf16", "int8")
INT8_STATE_B = 1 + 4 / 256
STATE_B = {"fp32": 4.0, "bf16": 2.0, "int8": INT8_STATE_B}
# per recipe: (B/param of params and grads, state values read + written per param) -- step_throughput's model
TRAFFIC = {
    "LayerwiseSGD": (12, 2),     # p r/w, g r; buf r/w
    "LayerwiseAdamW": (12, 4),   # p r/w, g r; m, v r/w
    "GrokfastAdamW": (12, 6),    # + filter r/w
    "LARS": (20, 2),             # pass 1 p, g r; pass 2 p r/w, g r; buf r/w
    "LAMB": (24, 4),             # pass 1 p, g r, u into g; pass 2 p r/w, g r; m, v r/w in pass 1
    "DALS": (20, 5),             # pass 1 g, p r, f r/w; pass 2 g, p r, p w, f r, buf r/w
}
BNB = {"LayerwiseAdamW": "AdamW8bit", "LAMB": "LAMB8bit"}


def bytes_per_param(name: str, precision: str) -> float:
    fixed, values = TRAFFIC[name]
    return fixed + values * STATE_B[precision]


def bnb_impl(name: str, params0, grads0):
    """bitsandbytes' 8-bit optimizer for ``name`` on clones of the layout, or the reason it cannot run."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return None, "bitsandbytes is not installed"
    try:
        import bitsandbytes as bnb  # noqa: PLC0415

        params = [p.clone().requires_grad_(True) for p in params0]
        grads = [g.clone() for g in grads0]
        for p, g in zip(params, grads):
            p.grad = g
        hp = ST.ADAMW_HP if name == "LayerwiseAdamW" else ST.LAMB_HP
        opt = getattr(bnb.optim, BNB[name])(params, **hp)
        opt.step()
        return ST.Impl(opt.step, lambda: params, lambda: [], lambda: None,
                       restore=lambda: torch._foreach_copy_(grads, grads0)), ""
    except Exception as exc:  # noqa: BLE001 -- any failure to run is reported, not fatal
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for st in opt.state.values() for k, v in st.items()
               if isinstance(v, torch.Tensor) and k != "step")


def time_paired(impls: dict[str, ST.Impl], rounds: int, warmup: int) -> dict[str, tuple[float, float, float]]:
    """name -> (median ms, median ratio to fp32 over rounds, other processes' CPU share)."""
    names = list(impls)
    for _ in range(warmup):
        for n in names:
            impls[n].restore()
            impls[n].step()
    times = {n: [] for n in names}
    with ST.CpuMonitor() as mon:
        for r in range(rounds):
            for n in names[r % len(names):] + names[:r % len(names)]:
                impls[n].restore()
                ST.EVICT()
                t0 = time.perf_counter()
                impls[n].step()
                times[n].append(time.perf_counter() - t0)
    base = times["fp32"]
    return {n: (1e3 * statistics.median(t), statistics.median(a / b for a, b in zip(t, base)), mon.others)
            for n, t in times.items()}


def bench(layout: str, names: list[str], rounds: int, warmup: int, memory: bool, report: ST.Report) -> None:
    shapes = ST.LAYOUTS[layout]
    params0, grads0 = ST.make_layout(shapes)
    n_params = sum(p.numel() for p in params0)
    ctx = ST.Ctx(shapes)
    rows, notes = [], []
    for name in names:
        impls, state = {}, {}
        for prec in PRECISIONS:
            imp = ST.build_impl(name, "fused" if prec == "fp32" else f"fused:{prec}", params0, grads0, ctx)
            imp.step()  # state made
            impls[prec] = imp
            state[prec] = sum(t.numel() * t.element_size() for t in imp.state_tensors()
                              if t.dim() > 0) / n_params
        if name == "LayerwiseAdamW":
            impls["torch AdamW(fused)"] = ST.build_impl("torch AdamW(fused)", "torch", params0, grads0, ctx)
        if name in BNB:
            imp, why = bnb_impl(name, params0, grads0)
            if imp is None:
                notes.append(f"bitsandbytes {BNB[name]}: cannot run here ({why})")
            else:
                impls[f"bnb {BNB[name]}"] = imp
        report.log(f"  {layout} {name}: timing {', '.join(impls)}")
        timed = time_paired(impls, rounds, warmup)
        del impls
        for impl, (ms, ratio, others) in timed.items():
            prec = impl if impl in PRECISIONS else None
            model = bytes_per_param(name, prec) if prec else None
            mem = ST.measure_memory(name, "fused" if prec == "fp32" else f"fused:{prec}", layout, "clear_refs") \
                if memory and prec else None
            rows.append([name, impl,
                         f"{model:.2f}" if model else "",
                         f"{model / bytes_per_param(name, 'fp32'):.2f}" if model else "",
                         f"{state[prec]:.2f}" if prec else "",
                         f"{state[prec] / state['fp32']:.3f}" if prec else "",
                         f"{ms:.2f}", f"{ratio:.2f}",
                         f"{n_params * model / ms / 1e6:.1f}" if model else "",
                         f"{mem:.3f}" if mem else "",
                         "*" if others > ST.CONTENDED else ""])
    report.table(["optimizer", "impl", "B/param model", "model ratio", "state B/param", "state ratio",
                  "ms (median)", "time ratio vs fp32 (paired)", "GB/s (model)", "peak mem ratio", "load"], rows,
                 f"{layout}: {ST.describe_layout(shapes)}")
    for line in notes:
        report.text(f"- {line}")
    report.text()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layouts", default="10M,50M")
    ap.add_argument("--optimizers", default=",".join(ST.OPTIMIZERS))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-evict", action="store_true")
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args()
    ST.EVICT = ST.Evictor(not args.no_evict)
    report = ST.Report(args.markdown)
    report.header("torch_layerlr: low-precision optimizer state, step time and memory")
    for layout in args.layouts.split(","):
        bench(layout, args.optimizers.split(","), args.rounds, args.warmup, not args.no_memory, report)
    report.text("`load` * : other processes used more than 10% of the CPU during the row's timed rounds.")
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
