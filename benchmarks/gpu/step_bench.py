"""CUDA step time of the fused optimizers against torch's fused AdamW / SGD and a device-to-device copy.

Usage (repository root)::

    python benchmarks/gpu/step_bench.py --markdown bench.md --json bench.json   # CUDA: every layout
    python benchmarks/gpu/step_bench.py --device cpu --quick                     # a tiny run anywhere

Layouts (float32 params; ``--quick`` keeps each layout's structure with small widths):

* ``10M``, ``100M``, ``1B``: ``block_shapes(d)`` of ``benchmarks/step_throughput.py`` (12 tensors of a
  transformer-like block, 17 d^2 + 10 d params) with d = 768, 2426, 7670; one param group;
* ``resnet50``: torchvision's ResNet-50, 161 tensors, 25.6M params; one param group;
* ``many-groups``: a 24-block pre-norm transformer (d = 768, vocabulary 32000; 291 tensors, 194.7M params)
  with one param group per block and per decay / no-decay split, as the HF Trainer builds them for layer-wise
  lr decay: matrices with weight decay, biases and norms without, the token embedding and the final norm in
  groups of their own; 50 groups, the group at depth i of 25 with lr x 0.9^(25 - i).

Rows: our six recipes and ``torch.optim.AdamW(fused=True)`` / ``torch.optim.SGD(momentum=0.9, fused=True)``,
with the hyperparameters of ``step_throughput.py`` (per group: its lr times the layout's factor, weight decay
0 in no-decay groups, DALS's depth ratio; lr_mult 1), and ``dst.copy_(src)`` of float32 buffers moving the
bytes of each bytes model (B/param of ``step_throughput.BYTES_PER_PARAM``: B/2 read and B/2 written per param).

Timing (CUDA): before each step the fixed gradients are copied back (our LAMB writes its direction into
``p.grad``) and a buffer of 4x the L2 cache is rewritten, so the step reads its data from device memory; then
the device is synchronized and CUDA events are recorded around ``step()``: the time includes the host's work
of launching the step, as a step that finds the queue empty sees it. ``ms`` is the median and ``min`` the
fastest of ``--repeats`` (>= 20) timed steps after ``--warmup``. ``queued`` is the time of ``--repeats``
back-to-back steps between two events (no restore, flush or sync between them) over ``--repeats``: the step
when the host runs ahead of the device. On the CPU the steps are timed with ``time.perf_counter`` and there is
no flush (a smoke run, not a measurement).

Derived columns: GB/s = params x B/param / ms; ``% copy`` = GB/s over the copy's GB/s for the same bytes;
``x AdamW`` / ``x SGD`` = ms over torch's fused AdamW / SGD ms of the layout; ``calls`` = engine calls (or
torch's fused op calls) in one step and ``launches`` = CUDA kernel launches in one step, both counted by
``torch.profiler`` in one extra step.

Equal work: every row starts from the same params and gradients and takes the same steps. LayerwiseAdamW and
torch's fused AdamW (and LayerwiseSGD and torch's fused SGD) run the same algorithm with the same groups, so
their params must agree to max rel err 1e-5 (max|a - b| / max|b| per tensor); every row's params must stay
finite. A failed check, or a row that raised, makes the exit status 1.

Acceptance of issue 17 (reported, not part of the exit status): at >= 100M params every recipe reaches >= 80%
of the copy bandwidth by its bytes model; LayerwiseAdamW takes <= 1.05x torch's fused AdamW; LAMB and DALS
<= 1.5x it. Each criterion is evaluated on ``ms`` (the count of criteria met) and, beside it, on ``queued``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
for _path in (ROOT, BENCH):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402

import step_throughput as st  # noqa: E402
from torch_layerlr.optim import DALS, LAMB, LARS, GrokfastAdamW, LayerwiseAdamW, LayerwiseSGD  # noqa: E402

# step_throughput makes an empty torch.compile cache directory for its own runs on import; nothing compiles here.
if st._OWN_CACHE_DIR:
    os.rmdir(st._OWN_CACHE_DIR)

F32 = torch.float32
OURS = ("LayerwiseSGD", "LayerwiseAdamW", "LARS", "LAMB", "DALS", "GrokfastAdamW")
TORCH_ADAMW, TORCH_SGD = "torch AdamW(fused)", "torch SGD(fused)"
#: torch rows first: each of our twins is compared with its torch row as soon as it has run
ROWS = (TORCH_ADAMW, "LayerwiseAdamW", TORCH_SGD, "LayerwiseSGD", "LARS", "LAMB", "DALS", "GrokfastAdamW")
TWIN = {"LayerwiseAdamW": TORCH_ADAMW, "LayerwiseSGD": TORCH_SGD}
BYTES = {**{name: st.BYTES_PER_PARAM[name] for name in OURS}, TORCH_ADAMW: 28, TORCH_SGD: 20}
HYPER = {"LayerwiseSGD": st.SGD_HP, "LayerwiseAdamW": st.ADAMW_HP, "LARS": st.LARS_HP, "LAMB": st.LAMB_HP,
         "DALS": st.DALS_HP, "GrokfastAdamW": st.GROK_HP, TORCH_ADAMW: st.ADAMW_HP, TORCH_SGD: st.SGD_HP}
#: the op one engine (or torch fused) call shows as in the profiler
OP_NAME = {**{name: "layerlr::fused_step_" for name in OURS}, TORCH_ADAMW: "aten::_fused_adamw_",
           TORCH_SGD: "aten::_fused_sgd_"}
LAUNCH_EVENTS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
TWIN_TOL = 1e-5
ACCEPT_COPY_SHARE, ACCEPT_MIN_PARAMS = 0.80, 100_000_000
ACCEPT_RATIO = {"LayerwiseAdamW": 1.05, "LAMB": 1.5, "DALS": 1.5}


# ------------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Group:
    """One param group of a layout: its tensors, whether they take weight decay, the factor on the recipe's
    lr, and DALS's depth ratio (one per tensor, or one for the whole group)."""

    shapes: list[tuple[int, ...]]
    decay: bool
    lr_scale: float
    depth: Any


@dataclasses.dataclass
class Layout:
    name: str
    groups: list[Group]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [s for g in self.groups for s in g.shapes]

    @property
    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def describe(self) -> str:
        return f"{len(self.groups)} param group(s), {st.describe_layout(self.shapes)}"


def one_group(name: str, shapes: list[tuple[int, ...]]) -> Layout:
    n = len(shapes)
    return Layout(name, [Group(shapes, True, 1.0, [i / max(1, n - 1) for i in range(n)])])


def transformer_block(d: int) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """(matrices, vectors) of a pre-norm transformer block of width d: 12 d^2 + 13 d params."""
    matrices = [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)]  # qkv, attention out, mlp in, mlp out
    vectors = [(d,), (d,), (3 * d,), (d,), (d,), (d,), (4 * d,), (d,)]  # norm 1, qkv/out biases, norm 2, mlp biases
    return matrices, vectors


def many_groups(name: str, d: int, blocks: int, vocab: int, decay: float = 0.9) -> Layout:
    """The token embedding (depth 0), then per block a decay group and a no-decay group, then the final norm
    (depth blocks + 1); lr x decay^(blocks + 1 - depth)."""
    top = blocks + 1

    def group(shapes, with_decay, depth):
        return Group(shapes, with_decay, decay ** (top - depth), depth / top)

    groups = [group([(vocab, d)], True, 0)]
    for b in range(1, blocks + 1):
        matrices, vectors = transformer_block(d)
        groups += [group(matrices, True, b), group(vectors, False, b)]
    groups.append(group([(d,), (d,)], False, top))
    return Layout(name, groups)


def scaled_resnet50(divisor: int) -> list[tuple[int, ...]]:
    """ResNet-50's 161 tensors with every channel count but the input's 3 divided by ``divisor``."""
    return [tuple(x if x == 3 and i == 1 else max(1, x // divisor) if i < 2 else x for i, x in enumerate(s))
            for s in st.RESNET50_SHAPES]


def layouts(quick: bool) -> dict[str, Layout]:
    if quick:
        return {"10M": one_group("10M", st.block_shapes(16)), "100M": one_group("100M", st.block_shapes(48)),
                "1B": one_group("1B", st.block_shapes(96)), "resnet50": one_group("resnet50", scaled_resnet50(16)),
                "many-groups": many_groups("many-groups", 32, 24, 256)}
    return {"10M": one_group("10M", st.block_shapes(768)), "100M": one_group("100M", st.block_shapes(2426)),
            "1B": one_group("1B", st.block_shapes(7670)), "resnet50": one_group("resnet50", st.RESNET50_SHAPES),
            "many-groups": many_groups("many-groups", 768, 24, 32000)}


def make_tensors(layout: Layout, device: torch.device, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Params and gradients as in step_throughput.make_layout, drawn on the device: matrices ~ N(0, 1/fan_in),
    a vector after a matrix ~ 1 + N(0, 0.01) (a norm weight), a vector after a vector 0 (a bias: the ||w|| = 0
    branch of the trust ratios); gradients ~ N(0, 1e-6)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    shapes = layout.shapes
    params, grads = [], []
    for i, s in enumerate(shapes):
        if len(s) >= 2:
            p = torch.randn(s, generator=gen, device=device, dtype=F32) / math.sqrt(math.prod(s[1:]))
        elif i > 0 and len(shapes[i - 1]) == 1:
            p = torch.zeros(s, device=device, dtype=F32)
        else:
            p = 1.0 + 0.1 * torch.randn(s, generator=gen, device=device, dtype=F32)
        params.append(p)
        grads.append(1e-3 * torch.randn(s, generator=gen, device=device, dtype=F32))
    return params, grads


def split_by_group(layout: Layout, tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    out, k = [], 0
    for g in layout.groups:
        out.append(tensors[k:k + len(g.shapes)])
        k += len(g.shapes)
    return out


def make_optimizer(name: str, layout: Layout, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    hp = dict(HYPER[name])
    lr, wd = hp.pop("lr"), hp.pop("weight_decay")
    groups = []
    for spec, ps in zip(layout.groups, split_by_group(layout, params)):
        group = {"params": ps, "lr": lr * spec.lr_scale, "weight_decay": wd if spec.decay else 0.0}
        if name == "DALS":
            group["depth_ratio"] = spec.depth
        groups.append(group)
    if name == TORCH_ADAMW:
        return torch.optim.AdamW(groups, lr=lr, fused=True, **hp)
    if name == TORCH_SGD:
        return torch.optim.SGD(groups, lr=lr, fused=True, **hp)
    if name == "DALS":
        return DALS(groups, lr=lr, total_steps=st.DALS_TOTAL_STEPS, **hp)
    cls = {"LayerwiseSGD": LayerwiseSGD, "LayerwiseAdamW": LayerwiseAdamW, "LARS": LARS, "LAMB": LAMB,
           "GrokfastAdamW": GrokfastAdamW}[name]
    return cls(groups, lr=lr, **hp)


# ------------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------------
class Clock:
    """Times one call at a time (CUDA events after a sync, or perf_counter on the CPU) and runs of calls."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.flush_buf = None
        if self.cuda:
            l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 64 << 20
            self.flush_buf = torch.empty(l2, dtype=torch.int32, device=device)  # 4 B each: 4x the L2

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def each(self, fn: Callable[[], None], prepare: Callable[[], None], warmup: int, repeats: int) -> list[float]:
        """ms of each of ``repeats`` calls of fn after ``warmup`` untimed ones, prepare() before every call."""
        times, events = [], []
        for k in range(warmup + repeats):
            prepare()
            if self.flush_buf is not None:
                self.flush_buf.add_(1)
            self.sync()
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                if k >= warmup:
                    events.append((start, end))
            else:
                t0 = time.perf_counter()
                fn()
                if k >= warmup:
                    times.append(1e3 * (time.perf_counter() - t0))
        self.sync()
        return times + [s.elapsed_time(e) for s, e in events]

    def run(self, fn: Callable[[], None], repeats: int) -> float:
        """ms per call of ``repeats`` back-to-back calls."""
        self.sync()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / repeats
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return 1e3 * (time.perf_counter() - t0) / repeats


def count_calls(step: Callable[[], None], op_name: str, device: torch.device) -> tuple[Optional[int], Optional[int]]:
    """(op calls, CUDA kernel launches) in one call of step, from torch.profiler; None where it cannot tell."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    try:
        with torch.profiler.profile(activities=activities) as prof:
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        names = [e.name for e in prof.events()]
    except Exception as exc:  # a profiler that cannot start (no CUPTI) leaves the columns empty
        print(f"  profiler: {type(exc).__name__}: {exc}", flush=True)
        return None, None
    # every step launches kernels: none seen means the profiler saw no CUDA activity (CUPTI unavailable)
    launches = sum(n in LAUNCH_EVENTS for n in names) if device.type == "cuda" else 0
    return sum(n == op_name for n in names), launches or None


def max_rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max over tensors of max|a - b| / max|b| (max|a - b| where b is all zero); b is the reference."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if x.numel() == 0:
            continue
        diff = (x.double() - y.double()).abs().max().item()
        scale = y.double().abs().max().item()
        if not math.isfinite(diff):
            return math.inf
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


# ------------------------------------------------------------------------------------------------------
# One layout
# ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
    layout: str
    name: str
    bytes_per_param: int
    ms: Optional[float] = None
    min_ms: Optional[float] = None
    queued_ms: Optional[float] = None
    calls: Optional[int] = None
    launches: Optional[int] = None
    twin_err: Optional[float] = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and (self.twin_err is None or self.twin_err <= TWIN_TOL)


def bench_optimizer(name: str, layout: Layout, p0: list[torch.Tensor], g0: list[torch.Tensor], clock: Clock,
                    args: argparse.Namespace, device: torch.device) -> tuple[Row, list[torch.Tensor]]:
    """Times one optimizer; returns its row and its params after every step it took."""
    row = Row(layout.name, name, BYTES[name])
    params = [p.clone().requires_grad_(True) for p in p0]
    grads = [g.clone() for g in g0]
    for p, g in zip(params, grads):
        p.grad = g
    opt = make_optimizer(name, layout, params)
    times = clock.each(opt.step, lambda: torch._foreach_copy_(grads, g0), args.warmup, args.repeats)
    row.ms, row.min_ms = statistics.median(times), min(times)
    row.calls, row.launches = count_calls(opt.step, OP_NAME[name], device)
    row.queued_ms = clock.run(opt.step, args.repeats)
    if not all(bool(torch.isfinite(p).all()) for p in params):
        row.error = "params not finite"
    return row, [p.detach() for p in params]


def bench_copies(layout: Layout, byte_models: list[int], clock: Clock, args: argparse.Namespace,
                 device: torch.device) -> list[Row]:
    rows = []
    for b in byte_models:
        row = Row(layout.name, f"copy {b} B/param", b)
        numel = layout.n_params * b // 8  # B/2 bytes read and B/2 written per param, float32
        src = torch.rand(numel, device=device, dtype=F32)
        dst = torch.empty_like(src)
        times = clock.each(lambda: dst.copy_(src), lambda: None, args.warmup, args.repeats)
        row.ms, row.min_ms = statistics.median(times), min(times)
        row.queued_ms = clock.run(lambda: dst.copy_(src), args.repeats)
        rows.append(row)
        del src, dst
    return rows


def bench_layout(layout: Layout, names: list[str], clock: Clock, args: argparse.Namespace,
                 device: torch.device) -> list[Row]:
    p0, g0 = make_tensors(layout, device)
    rows: list[Row] = []
    kept: dict[str, list[torch.Tensor]] = {}  # torch rows' final params, until their twin has run
    for name in [n for n in ROWS if n in names]:
        print(f"  {layout.name} {name}", flush=True)
        try:
            row, final = bench_optimizer(name, layout, p0, g0, clock, args, device)
            if name in TWIN.values():
                kept[name] = final
            elif name in TWIN and TWIN[name] in kept:
                row.twin_err = max_rel_err(final, kept.pop(TWIN[name]))
            del final
        except Exception as exc:  # recorded; the remaining rows still run
            row = Row(layout.name, name, BYTES[name], error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    kept.clear()
    del p0, g0
    byte_models = sorted({BYTES[n] for n in names})
    try:
        rows += bench_copies(layout, byte_models, clock, args, device)
    except Exception as exc:
        rows.append(Row(layout.name, "copy", 0, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200]))
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------
def fmt(x: Optional[float], spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def layout_table(layout: Layout, rows: list[Row]) -> str:
    n = layout.n_params
    by_name = {r.name: r for r in rows}
    copy_gbs = {r.bytes_per_param: n * r.bytes_per_param / (r.ms * 1e6) for r in rows
                if r.name.startswith("copy") and r.ms}
    lines = ["| row | B/param | ms | min ms | queued ms | GB/s | % copy | x AdamW(fused) | x SGD(fused) | calls | "
             "launches | twin err | status |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        gbs = n * r.bytes_per_param / (r.ms * 1e6) if r.ms else None
        share = 100 * gbs / copy_gbs[r.bytes_per_param] if gbs and r.bytes_per_param in copy_gbs else None
        ratio = {}
        for base in (TORCH_ADAMW, TORCH_SGD):
            ref = by_name.get(base)
            ratio[base] = r.ms / ref.ms if r.ms and ref and ref.ms and not r.name.startswith("copy") else None
        status = r.error or ("ok" if r.ok else f"twin err > {TWIN_TOL:g}")
        lines.append(f"| {r.name} | {r.bytes_per_param} | {fmt(r.ms)} | {fmt(r.min_ms)} | {fmt(r.queued_ms)} | "
                     f"{fmt(gbs, '.0f')} | {fmt(share, '.0f')} | {fmt(ratio[TORCH_ADAMW], '.2f')} | "
                     f"{fmt(ratio[TORCH_SGD], '.2f')} | {fmt(r.calls, 'd')} | {fmt(r.launches, 'd')} | "
                     f"{fmt(r.twin_err, '.1e')} | {status} |")
    return "\n".join(lines)


def acceptance(all_layouts: dict[str, Layout], rows: list[Row]) -> tuple[str, int, int]:
    """The issue's speed criteria per layout, on the median step (``ms``) and, for information, on the
    back-to-back step (``queued``, host work hidden): (markdown table, met on ms, checked)."""
    lines = ["| layout | criterion | on ms | on queued ms | met (ms) | met (queued) |", "|---|---|---:|---:|---|---|"]
    met = checked = 0
    for lname, layout in all_layouts.items():
        mine = {r.name: r for r in rows if r.layout == lname}
        copies = {r.bytes_per_param: r for r in mine.values() if r.name.startswith("copy") and r.ms}
        base = mine.get(TORCH_ADAMW)
        checks = []  # (criterion, row, reference row, limit, at least?)
        if layout.n_params >= ACCEPT_MIN_PARAMS:
            checks += [(f"{name} >= {ACCEPT_COPY_SHARE:.0%} of copy BW", mine.get(name),
                        copies.get(BYTES[name]), ACCEPT_COPY_SHARE, True) for name in OURS]
        checks += [(f"{name} <= {limit}x AdamW(fused)", mine.get(name), base, limit, False)
                   for name, limit in ACCEPT_RATIO.items()]
        for text, r, ref, limit, at_least in checks:
            if not (r and r.ms and r.queued_ms and ref and ref.ms and ref.queued_ms):
                continue
            # copy share: copy time over the row's time (same bytes); ratio: the row's time over AdamW's
            values = [ref.ms / r.ms, ref.queued_ms / r.queued_ms]
            if not at_least:
                values = [1 / v for v in values]
            oks = [v >= limit if at_least else v <= limit for v in values]
            spec = ".0%" if at_least else ".2f"
            met += oks[0]
            checked += 1
            lines.append(f"| {lname} | {text} | {format(values[0], spec)} | {format(values[1], spec)} | "
                         f"{'yes' if oks[0] else 'NO'} | {'yes' if oks[1] else 'NO'} |")
    return "\n".join(lines), met, checked


def machine_lines(device: torch.device) -> list[str]:
    lines = [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- torch {torch.__version__} (CUDA {torch.version.cuda}), Python {sys.version.split()[0]}"]
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        lines.insert(0, f"- device: {torch.cuda.get_device_name(device)}, {prop.multi_processor_count} SMs, "
                        f"{prop.total_memory / 2**30:.0f} GiB, L2 {getattr(prop, 'L2_cache_size', 0) / 2**20:.0f} MiB")
    else:
        lines.insert(0, f"- device: CPU, {torch.get_num_threads()} threads (smoke run: no cache flush)")
    return lines


def write_outputs(args: argparse.Namespace, device: torch.device, all_layouts: dict[str, Layout],
                  rows: list[Row], notes: list[str]) -> tuple[int, int]:
    parts = ["### CUDA step benchmark" if device.type == "cuda" else "### Step benchmark (smoke run)", "",
             *machine_lines(device), f"- warmup {args.warmup}, repeats {args.repeats} (median and min over them)",
             f"- command: `python benchmarks/gpu/step_bench.py {' '.join(sys.argv[1:])}`", ""]
    for lname, layout in all_layouts.items():
        mine = [r for r in rows if r.layout == lname]
        if mine:
            parts += [f"**{lname}**: {layout.describe()}", "", layout_table(layout, mine), ""]
    table, met, checked = acceptance(all_layouts, rows)
    parts += [f"**Acceptance (issue 17): {met} of {checked} met**", "", table, ""]
    parts += [f"- {n}" for n in notes]
    text = "\n".join(parts) + "\n"
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": machine_lines(device), "notes": notes,
                       "layouts": {k: {"params": v.n_params, "groups": len(v.groups), "tensors": len(v.shapes)}
                                   for k, v in all_layouts.items()},
                       "rows": [dataclasses.asdict(r) for r in rows]}, f, indent=1)
    return met, checked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small layouts, 3 repeats: a smoke run")
    parser.add_argument("--layouts", default="10M,100M,1B,resnet50,many-groups")
    parser.add_argument("--optimizers", default=",".join(ROWS))
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--budget-s", type=float, default=math.inf,
                        help="start no layout after this many seconds (the report says which were left out)")
    parser.add_argument("--markdown", help="write the report here (rewritten after every layout)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("step_bench: torch sees no CUDA device (use --device cpu for a smoke run)", file=sys.stderr)
        return 2
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    args.repeats = args.repeats if args.repeats is not None else (3 if args.quick else 30)
    if not args.quick and args.repeats < 20:
        parser.error("--repeats must be >= 20 outside --quick (median of >= 20)")
    available = layouts(args.quick)
    wanted = [x for x in args.layouts.split(",") if x]
    names = [x for x in args.optimizers.split(",") if x]
    for x in wanted:
        if x not in available:
            parser.error(f"unknown layout {x!r}: expected some of {sorted(available)}")
    for x in names:
        if x not in ROWS:
            parser.error(f"unknown optimizer {x!r}: expected some of {list(ROWS)}")
    clock = Clock(device)
    start = time.monotonic()
    rows: list[Row] = []
    notes: list[str] = []
    done: dict[str, Layout] = {}
    for lname in wanted:
        if time.monotonic() - start > args.budget_s:
            notes.append(f"layout {lname} not run: past the time budget of {args.budget_s:.0f} s")
            continue
        layout = available[lname]
        t0 = time.monotonic()
        print(f"{lname}: {layout.describe()}", flush=True)
        rows += bench_layout(layout, names, clock, args, device)
        done[lname] = layout
        notes.append(f"layout {lname} took {time.monotonic() - t0:.1f} s")
        write_outputs(args, device, done, rows, notes)
    met, checked = write_outputs(args, device, done, rows, notes)
    bad = [r for r in rows if not r.ok]
    for r in rows:
        print(f"{r.layout:12s} {r.name:22s} {fmt(r.ms):>10s} ms  {r.error or ''}")
    print(f"acceptance: {met} of {checked} met; rows failing: {len(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
