"""Step throughput of torch_layerlr's fused optimizers against the same algorithms in ``torch._foreach_*`` ops,
those ops under ``torch.compile``, torch.optim's AdamW(fused=True) / SGD(foreach=True), and a memory copy.

Usage (from the repository root)::

    python benchmarks/step_throughput.py                      # full run: 1M, 10M, 50M, resnet50 layouts
    python benchmarks/step_throughput.py --quick              # smoke run: 1M layout, 3 repeats
    python benchmarks/step_throughput.py --check              # correctness only (5 steps, small sizes)
    python benchmarks/step_throughput.py --layouts 10M --optimizers DALS,LAMB --markdown out.md

What is compared, per layout (float32 parameters, fixed random gradients):

* ``fused``    -- our optimizer's ``opt.step()`` (the C++ engine);
* ``foreach``  -- the same algorithm written with ``torch._foreach_*`` ops (``benchmarks/foreach_recipes.py``);
* ``compiled`` -- that foreach function under ``torch.compile(fullgraph=True)`` (compile time reported apart);
* baselines: ``torch.optim.AdamW(fused=True)``, ``torch.optim.SGD(momentum=0.9, foreach=True)``,
  ``dst.copy_(src)`` of flat buffers moving the same bytes as an ideal AdamW step (the copy bandwidth) and,
  for information, an in-place ``a.add_(b)`` moving the same bytes.

Correctness first: ``--check`` (and, before timing, a quick pass on small sizes) runs every foreach version
(and in ``--check`` also the compiled versions and the torch.optim baselines) for 5 steps from the same start
as our fused optimizer and requires max rel err <= 1e-5 on params and every state buffer, where the error of
a tensor is max|a - b| / max|b| (max|a - b| if b is all zero). Every timed run is also checked at the end
against the fused run of the same layout (same start, same number of steps), so the timings are of equal work.

Bytes model: bytes read + written per parameter per step by an ideal implementation (float32, 4 B per value).
GB/s = params * B/param / time. The engine recomputes the pass-2 direction from state instead of storing it,
so for the two-pass recipes these are its real memory traffic.

    ============== ====== ==================================================================================
    optimizer      B/prm  traffic
    ============== ====== ==================================================================================
    LayerwiseSGD    20    read p, g, buf; write p, buf
    LayerwiseAdamW  28    read p, g, m, v; write p, m, v
    GrokfastAdamW   36    AdamW + read/write the filter
    LARS            28    pass 1 reads p, g (norms); pass 2 reads p, g, v, writes p, v
    LAMB            40    pass 1 reads p, g, m, v, writes m, v (norms); pass 2 reads p, m, v, writes p
                          (our engine: pass 1 also writes the direction into g, pass 2 reads p, g, writes p)
    DALS            40    pass 1 reads g, p, f, writes f (norms); pass 2 reads g, f, p, m, writes p, m
    AdamW (torch)   28    as LayerwiseAdamW
    SGD (torch)     20    as LayerwiseSGD
    copy            28    dst.copy_(src), 14 B/param each (read 14, write 14): the copy bandwidth
    stream          28    a.add_(b), 28/12 elements/param (read a, b; write a): for information
    ============== ====== ==================================================================================

The copy writes lines it never read, so the CPU reads each destination line first (read for ownership):
its DRAM traffic is 1.5x its nominal bytes. An optimizer step writes only lines it has just read, so it can
exceed 100% of the copy bandwidth; the read-modify-write ``stream`` row shows that ceiling.

Peak memory: for (optimizer, impl) on the 50M and 10M layouts a fresh subprocess builds params, grads and
state, runs one step (state created), resets the kernel's peak-RSS counter (``echo 5 >
/proc/self/clear_refs``), reads VmRSS, runs one step and reads VmHWM; the ratio printed is
``(state_bytes + VmHWM - VmRSS_before) / state_bytes`` with state_bytes = bytes of params + grads + optimizer
state. 1.00 means the step allocated nothing proportional to the model. The subprocesses run with a fixed
glibc mmap threshold (``MALLOC_MMAP_THRESHOLD_``) so that large temporaries are always mapped fresh and
returned on free: with glibc's dynamic threshold a temporary freed by the warm step could be reused from the
heap, already resident, and be invisible to the measurement. If clear_refs does not reset VmHWM on the
machine, a thread sampling VmRSS every 0.2 ms during the step is used instead and the output says so.

Timing: ``time.perf_counter`` around each ``step()`` individually; the median of the timed steps after the
warmup steps is reported (>= 7 timed steps except with ``--quick``), with the fastest step beside it. The
machine may be shared: the CPU time other processes used during each row's timed steps is measured (from
/proc/stat), a row disturbed by more than 10% is re-run from scratch (``--retries``, after waiting for idle
with ``--wait-idle``) and, if still disturbed, marked with * in the table.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# torch.compile's on-disk caches: a fresh directory per run (cold compile times) unless the caller set one
# or passed --warm-compile-cache. Memory subprocesses inherit it. Must happen before torch is imported.
_OWN_CACHE_DIR: Optional[str] = None
if "--warm-compile-cache" not in sys.argv and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _OWN_CACHE_DIR = tempfile.mkdtemp(prefix="layerlr_bench_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _OWN_CACHE_DIR

for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402

import foreach_recipes as R  # noqa: E402
from torch_layerlr.optim import DALS, LAMB, LARS, GrokfastAdamW, LayerwiseAdamW, LayerwiseSGD  # noqa: E402

F32 = torch.float32
CONTENDED = 0.10  # rows whose timed steps saw other processes use more than this share of the CPU get a *
CHECK_STEPS = 5
CHECK_TOL = 1e-5
HYPER_LEN = 3  # per-step host scalars handed to a foreach recipe (see foreach_fn)
DALS_TOTAL_STEPS = 10**9  # warmup 5e7 steps: lr is 0 on step 1 and tiny after, the work is the same
CHECK_DALS_TOTAL_STEPS = 20  # --check: a short schedule so DALS really moves the params

# ------------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------------
# torchvision's resnet50(): its 161 parameter tensors in registration order (25,557,032 parameters).
RESNET50_SHAPES: list[tuple[int, ...]] = [
    # stem: conv1, bn1 (weight, bias)
    (64, 3, 7, 7), (64,), (64,),
    # layer1.0: conv1, bn1, conv2, bn2, conv3, bn3, downsample conv, downsample bn
    (64, 64, 1, 1), (64,), (64,), (64, 64, 3, 3), (64,), (64,), (256, 64, 1, 1), (256,), (256,),
    (256, 64, 1, 1), (256,), (256,),
    # layer1.1: conv1, bn1, conv2, bn2, conv3, bn3
    (64, 256, 1, 1), (64,), (64,), (64, 64, 3, 3), (64,), (64,), (256, 64, 1, 1), (256,), (256,),
    # layer1.2: conv1, bn1, conv2, bn2, conv3, bn3
    (64, 256, 1, 1), (64,), (64,), (64, 64, 3, 3), (64,), (64,), (256, 64, 1, 1), (256,), (256,),
    # layer2.0: conv1, bn1, conv2, bn2, conv3, bn3, downsample conv, downsample bn
    (128, 256, 1, 1), (128,), (128,), (128, 128, 3, 3), (128,), (128,), (512, 128, 1, 1), (512,), (512,),
    (512, 256, 1, 1), (512,), (512,),
    # layer2.1: conv1, bn1, conv2, bn2, conv3, bn3
    (128, 512, 1, 1), (128,), (128,), (128, 128, 3, 3), (128,), (128,), (512, 128, 1, 1), (512,), (512,),
    # layer2.2: conv1, bn1, conv2, bn2, conv3, bn3
    (128, 512, 1, 1), (128,), (128,), (128, 128, 3, 3), (128,), (128,), (512, 128, 1, 1), (512,), (512,),
    # layer2.3: conv1, bn1, conv2, bn2, conv3, bn3
    (128, 512, 1, 1), (128,), (128,), (128, 128, 3, 3), (128,), (128,), (512, 128, 1, 1), (512,), (512,),
    # layer3.0: conv1, bn1, conv2, bn2, conv3, bn3, downsample conv, downsample bn
    (256, 512, 1, 1), (256,), (256,), (256, 256, 3, 3), (256,), (256,), (1024, 256, 1, 1), (1024,), (1024,),
    (1024, 512, 1, 1), (1024,), (1024,),
    # layer3.1: conv1, bn1, conv2, bn2, conv3, bn3
    (256, 1024, 1, 1), (256,), (256,), (256, 256, 3, 3), (256,), (256,), (1024, 256, 1, 1), (1024,), (1024,),
    # layer3.2: conv1, bn1, conv2, bn2, conv3, bn3
    (256, 1024, 1, 1), (256,), (256,), (256, 256, 3, 3), (256,), (256,), (1024, 256, 1, 1), (1024,), (1024,),
    # layer3.3: conv1, bn1, conv2, bn2, conv3, bn3
    (256, 1024, 1, 1), (256,), (256,), (256, 256, 3, 3), (256,), (256,), (1024, 256, 1, 1), (1024,), (1024,),
    # layer3.4: conv1, bn1, conv2, bn2, conv3, bn3
    (256, 1024, 1, 1), (256,), (256,), (256, 256, 3, 3), (256,), (256,), (1024, 256, 1, 1), (1024,), (1024,),
    # layer3.5: conv1, bn1, conv2, bn2, conv3, bn3
    (256, 1024, 1, 1), (256,), (256,), (256, 256, 3, 3), (256,), (256,), (1024, 256, 1, 1), (1024,), (1024,),
    # layer4.0: conv1, bn1, conv2, bn2, conv3, bn3, downsample conv, downsample bn
    (512, 1024, 1, 1), (512,), (512,), (512, 512, 3, 3), (512,), (512,), (2048, 512, 1, 1), (2048,), (2048,),
    (2048, 1024, 1, 1), (2048,), (2048,),
    # layer4.1: conv1, bn1, conv2, bn2, conv3, bn3
    (512, 2048, 1, 1), (512,), (512,), (512, 512, 3, 3), (512,), (512,), (2048, 512, 1, 1), (2048,), (2048,),
    # layer4.2: conv1, bn1, conv2, bn2, conv3, bn3
    (512, 2048, 1, 1), (512,), (512,), (512, 512, 3, 3), (512,), (512,), (2048, 512, 1, 1), (2048,), (2048,),
    # fc
    (1000, 2048), (1000,),
]
assert len(RESNET50_SHAPES) == 161 and sum(math.prod(s) for s in RESNET50_SHAPES) == 25_557_032


def block_shapes(d: int) -> list[tuple[int, ...]]:
    """12 tensors, 7 matrices and 5 vectors, of a transformer-like block of width d: 17 d^2 + 10 d params."""
    return [
        (2 * d, d), (d,), (d,),            # embedding, norm weight, norm bias
        (3 * d, d), (3 * d,),              # qkv
        (d, d), (d,),                      # attention output
        (4 * d, d), (4 * d,),              # mlp in
        (d, 4 * d),                        # mlp out
        (d, d),                            # mixer
        (2 * d, d),                        # head
    ]


LAYOUTS: dict[str, list[tuple[int, ...]]] = {
    "1M": block_shapes(240),        # 981,600 params
    "10M": block_shapes(768),       # 10,034,688 params
    "50M": block_shapes(1712),      # 49,843,168 params
    "resnet50": RESNET50_SHAPES,    # 25,557,032 params in 161 tensors
}
CHECK_LAYOUT = block_shapes(24)      # 12 tensors, 10,032 params: --check and the pre-timing check
MEMORY_LAYOUTS = ("50M", "10M")


def describe_layout(shapes: list[tuple[int, ...]]) -> str:
    n = sum(math.prod(s) for s in shapes)
    mats = sum(1 for s in shapes if len(s) >= 2)
    return f"{len(shapes)} tensors ({mats} matrices/conv kernels, {len(shapes) - mats} vectors), {n:,} params"


def make_layout(shapes: list[tuple[int, ...]], seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Deterministic float32 params and grads. Matrices ~ N(0, 1/fan_in); a vector right after a matrix ~ 1 +
    N(0, 0.01) (a norm weight), a vector right after a vector is 0 (a bias: exercises the ||w|| = 0 branch)."""
    gen = torch.Generator().manual_seed(seed)
    params, grads = [], []
    for i, s in enumerate(shapes):
        if len(s) >= 2:
            p = torch.randn(s, generator=gen, dtype=F32) / math.sqrt(math.prod(s[1:]))
        elif i > 0 and len(shapes[i - 1]) == 1:
            p = torch.zeros(s, dtype=F32)
        else:
            p = 1.0 + 0.1 * torch.randn(s, generator=gen, dtype=F32)
        params.append(p)
        grads.append(1e-3 * torch.randn(s, generator=gen, dtype=F32))
    return params, grads


# ------------------------------------------------------------------------------------------------------
# Optimizers: the fused one, the foreach recipe, the bytes model
# ------------------------------------------------------------------------------------------------------
OPTIMIZERS = ("DALS", "LARS", "LAMB", "GrokfastAdamW", "LayerwiseSGD", "LayerwiseAdamW")
BASELINES = ("torch AdamW(fused)", "torch SGD(foreach)")
BYTES_PER_PARAM = {
    "DALS": 40, "LARS": 28, "LAMB": 40, "GrokfastAdamW": 36, "LayerwiseSGD": 20, "LayerwiseAdamW": 28,
    "torch AdamW(fused)": 28, "torch SGD(foreach)": 20, "copy": 28, "stream": 28,
}
BYTES_NOTE = {
    "LayerwiseSGD": "read p, g, buf; write p, buf",
    "LayerwiseAdamW": "read p, g, m, v; write p, m, v",
    "GrokfastAdamW": "AdamW + read/write the filter",
    "LARS": "pass 1 reads p, g (norms); pass 2 reads p, g, v, writes p, v",
    "LAMB": "pass 1 reads p, g, m, v, writes m, v (norms); pass 2 reads p, m, v, writes p. Our engine instead "
            "writes the direction into g in pass 1 and pass 2 reads p, g, writes p: also 40 B",
    "DALS": "pass 1 reads g, p, f, writes f (norms); pass 2 reads g, f, p, m, writes p, m",
    "torch AdamW(fused)": "as LayerwiseAdamW",
    "torch SGD(foreach)": "as LayerwiseSGD",
}
#: the fused optimizer's state keys, in the order of the foreach recipe's state lists (R.STATE_NAMES)
FUSED_STATE_KEYS = {
    "DALS": ("filter", "momentum_buffer"),
    "LARS": ("momentum_buffer",),
    "LAMB": ("exp_avg", "exp_avg_sq"),
    "GrokfastAdamW": ("filter", "exp_avg", "exp_avg_sq"),
    "LayerwiseSGD": ("momentum_buffer",),
    "LayerwiseAdamW": ("exp_avg", "exp_avg_sq"),
    "torch AdamW(fused)": ("exp_avg", "exp_avg_sq"),
    "torch SGD(foreach)": ("momentum_buffer",),
}
# Hyperparameters (shared by every implementation of an optimizer).
SGD_HP = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)
ADAMW_HP = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
LARS_HP = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, trust_coefficient=0.001, eps=0.0)
LAMB_HP = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
GROK_HP = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, grokfast_alpha=0.98, grokfast_lambda=2.0)
DALS_HP = dict(lr=0.03, momentum=0.9, weight_decay=1e-4, trust_coefficient=0.02, alpha=0.6, warmup_frac=0.05)


@dataclass
class Ctx:
    """Per-tensor settings of a layout."""

    shapes: list[tuple[int, ...]]
    total_steps: int = DALS_TOTAL_STEPS
    uniform_lr_mult: bool = False  # --check of the torch.optim baselines against LayerwiseSGD/AdamW
    state_precision: str = "fp32"  # of our optimizers (benchmarks/state_precision_step.py)

    @property
    def n(self) -> int:
        return len(self.shapes)

    @property
    def depth(self) -> list[float]:  # DALS depth ratio: tensor i of n
        return [i / max(1, self.n - 1) for i in range(self.n)]

    @property
    def lr_mult(self) -> list[float]:  # LayerwiseSGD/AdamW: discriminative decay 0.98 per tensor from the top
        return [1.0] * self.n if self.uniform_lr_mult else [0.98 ** (self.n - 1 - i) for i in range(self.n)]

    @property
    def is_vector(self) -> list[bool]:
        return [len(s) <= 1 for s in self.shapes]


def make_fused(name: str, params: list[torch.Tensor], ctx: Ctx) -> torch.optim.Optimizer:
    prec = dict(state_precision=ctx.state_precision)
    if name == "DALS":
        hp = DALS_HP
        return DALS([{"params": params, "depth_ratio": ctx.depth}], lr=hp["lr"], momentum=hp["momentum"],
                    weight_decay=hp["weight_decay"], trust_coefficient=hp["trust_coefficient"], alpha=hp["alpha"],
                    warmup_frac=hp["warmup_frac"], total_steps=ctx.total_steps, **prec)
    if name == "LARS":
        return LARS(params, **LARS_HP, **prec)  # exclude_1d=True: vectors get ratio 1 and no weight decay
    if name == "LAMB":
        return LAMB(params, **LAMB_HP, **prec)
    if name == "GrokfastAdamW":
        return GrokfastAdamW(params, **GROK_HP, **prec)
    if name == "LayerwiseSGD":
        return LayerwiseSGD([{"params": params, "lr_mult": ctx.lr_mult}], **SGD_HP, **prec)
    if name == "LayerwiseAdamW":
        return LayerwiseAdamW([{"params": params, "lr_mult": ctx.lr_mult}], **ADAMW_HP, **prec)
    if name == "torch AdamW(fused)":
        return torch.optim.AdamW(params, fused=True, **ADAMW_HP)
    if name == "torch SGD(foreach)":
        return torch.optim.SGD(params, foreach=True, **SGD_HP)
    raise KeyError(name)


def foreach_fn(name: str, ctx: Ctx) -> tuple[Callable, Callable[[int], list[float]]]:
    """(fn(params, grads, state, hyper), hyper_values(k)): one step of the foreach recipe of ``name``.

    ``hyper`` is a float64 tensor of HYPER_LEN per-step scalars that the host computes from its step count k
    (1 on the first step): DALS [eta]; Adam family [1/bc1, 1/sqrt(bc2)] (+ Grokfast's filter weight). All
    other settings are baked in as constants.
    """
    n = ctx.n
    if name == "DALS":
        hp = DALS_HP
        kw = dict(alpha=max(0.3, hp["alpha"] - 0.3),  # phase 0 (update_phase is never called)
                  blend=[0.3 + 0.4 * d for d in ctx.depth], lr_mult=[1.0] * n, momentum=hp["momentum"],
                  weight_decay=hp["weight_decay"], trust_coefficient=hp["trust_coefficient"])
        total = ctx.total_steps

        def fn(params, grads, state, hyper):
            return R.dals_foreach(params, grads, state["filters"], state["bufs"], hyper[0], **kw)

        return fn, lambda k: [hp["lr"] * R.dals_schedule(k, total, hp["warmup_frac"])]
    if name == "LARS":
        hp = LARS_HP
        kw = dict(lr=hp["lr"], lr_mult=[1.0] * n, momentum=hp["momentum"],
                  weight_decay=[0.0 if v else hp["weight_decay"] for v in ctx.is_vector],
                  trust=[not v for v in ctx.is_vector], trust_coefficient=hp["trust_coefficient"], eps=hp["eps"])

        def fn(params, grads, state, hyper):
            return R.lars_foreach(params, grads, state["bufs"], **kw)

        return fn, lambda k: []
    if name == "LAMB":
        hp = LAMB_HP
        b1, b2 = hp["betas"]
        kw = dict(lr=hp["lr"], lr_mult=[1.0] * n, beta1=b1, beta2=b2, eps=hp["eps"],
                  weight_decay=hp["weight_decay"], trust=[True] * n)

        def fn(params, grads, state, hyper):
            return R.lamb_foreach(params, grads, state["exp_avgs"], state["exp_avg_sqs"], hyper, **kw)

        return fn, lambda k: R.adam_bias(k, b1, b2)
    if name == "GrokfastAdamW":
        hp = GROK_HP
        b1, b2 = hp["betas"]
        a = hp["grokfast_alpha"]
        kw = dict(lr=hp["lr"], lr_mult=[1.0] * n, beta1=b1, beta2=b2, eps=hp["eps"],
                  weight_decay=hp["weight_decay"], lam=hp["grokfast_lambda"])

        def fn(params, grads, state, hyper):
            R.grokfast_adamw_foreach(params, grads, state["filters"], state["exp_avgs"], state["exp_avg_sqs"],
                                     hyper, hyper[2].to(F32), **kw)

        return fn, lambda k: R.adam_bias(k, b1, b2) + [1.0 if k == 1 else 1.0 - a]
    if name == "LayerwiseSGD":
        kw = dict(lr=SGD_HP["lr"], lr_mult=ctx.lr_mult, momentum=SGD_HP["momentum"],
                  weight_decay=SGD_HP["weight_decay"])

        def fn(params, grads, state, hyper):
            R.sgd_foreach(params, grads, state["bufs"], **kw)

        return fn, lambda k: []
    if name == "LayerwiseAdamW":
        hp = ADAMW_HP
        b1, b2 = hp["betas"]
        kw = dict(lr=hp["lr"], lr_mult=ctx.lr_mult, beta1=b1, beta2=b2, eps=hp["eps"],
                  weight_decay=hp["weight_decay"])

        def fn(params, grads, state, hyper):
            R.adamw_foreach(params, grads, state["exp_avgs"], state["exp_avg_sqs"], hyper, **kw)

        return fn, lambda k: R.adam_bias(k, b1, b2)
    raise KeyError(name)


# ------------------------------------------------------------------------------------------------------
# Implementations: a step callable and the tensors to compare
# ------------------------------------------------------------------------------------------------------
@dataclass
class Impl:
    step: Callable[[], None]
    snapshot: Callable[[], list[torch.Tensor]]  # params, then the state lists in FUSED_STATE_KEYS order
    state_tensors: Callable[[], list[torch.Tensor]]
    ratios: Callable[[], Optional[list[float]]]  # trust ratios of the last step (recipes with a trust ratio)
    restore: Callable[[], None] = lambda: None   # put the fixed gradients back (untimed, before every step)
    grads_changed: Callable[[], bool] = lambda: False  # did the last step write into the gradients?


def build_impl(opt_name: str, impl: str, params0: list[torch.Tensor], grads0: list[torch.Tensor], ctx: Ctx) -> Impl:
    """A fresh implementation on clones of ``params0`` and its own copy of the gradients ``grads0``.

    The fixed gradients are copied back into the implementation's gradient tensors before every step
    (``Impl.restore``, untimed, for every implementation alike): our LAMB reuses ``p.grad``'s memory for its
    update direction (documented in ``LAMB``), so without it its later steps would not see the same
    gradients. It also puts the gradients in cache before each step for everyone, as a backward pass would.
    """
    params = [p.clone() for p in params0]
    grads = [g.clone() for g in grads0]
    impl_obj = _build_impl(opt_name, impl, params, grads, ctx)
    impl_obj.restore = lambda: torch._foreach_copy_(grads, grads0)
    impl_obj.grads_changed = lambda: any(not torch.equal(g, g0) for g, g0 in zip(grads, grads0))
    return impl_obj


def _build_impl(opt_name: str, impl: str, params: list[torch.Tensor], grads: list[torch.Tensor], ctx: Ctx) -> Impl:
    if impl.startswith("fused:"):  # our optimizer with low-precision state: "fused:bf16", "fused:int8"
        ctx = dataclasses.replace(ctx, state_precision=impl.split(":", 1)[1])
        impl = "fused"
    if impl in ("fused", "torch"):
        for p, g in zip(params, grads):
            p.requires_grad_(True)
            p.grad = g
        opt = make_fused(opt_name, params, ctx)
        keys = FUSED_STATE_KEYS[opt_name]

        def snapshot():
            return [p.detach() for p in params] + [opt.state[p][k] for k in keys for p in params]

        def state_tensors():
            return [v for p in params for v in opt.state[p].values() if isinstance(v, torch.Tensor)]

        def ratios():
            got = opt.trust_ratios() if hasattr(opt, "trust_ratios") else {}
            return [got[p] for p in params] if got else None

        return Impl(opt.step, snapshot, state_tensors, ratios)

    fn, hyper_values = foreach_fn(opt_name, ctx)
    state = R.init_state(opt_name, params)
    hyper = torch.zeros(HYPER_LEN, dtype=torch.float64)
    if impl == "compiled":
        fn = torch.compile(fn, fullgraph=True)
    counter = [0]
    last = [None]

    def step():
        counter[0] += 1
        values = hyper_values(counter[0])
        hyper[: len(values)] = torch.tensor(values, dtype=torch.float64)
        with torch.no_grad():
            last[0] = fn(params, grads, state, hyper)

    def snapshot():
        return list(params) + [t for k in R.STATE_NAMES[opt_name] for t in state[k]]

    def state_tensors():
        return [t for k in R.STATE_NAMES[opt_name] for t in state[k]]

    def ratios():
        return None if last[0] is None else last[0].tolist()

    return Impl(step, snapshot, state_tensors, ratios)


def max_rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max over tensors of max|a - b| / max|b| (max|a - b| where b is all zero). b is the reference."""
    assert len(a) == len(b)
    worst = 0.0
    for x, y in zip(a, b):
        x, y = x.detach().double(), y.detach().double()
        diff = (x - y).abs().max().item() if x.numel() else 0.0
        scale = y.abs().max().item() if y.numel() else 0.0
        if not math.isfinite(diff):
            return math.inf
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


# ------------------------------------------------------------------------------------------------------
# Correctness
# ------------------------------------------------------------------------------------------------------
def run_check(opt_names: list[str], impls: tuple[str, ...], baselines: bool, report: "Report") -> bool:
    """Each impl vs our fused optimizer, CHECK_STEPS steps from the same start on CHECK_LAYOUT."""
    shapes = CHECK_LAYOUT
    params0, grads = make_layout(shapes, seed=1)
    ctx = Ctx(shapes, total_steps=CHECK_DALS_TOTAL_STEPS)
    ok = True
    rows = []
    pairs = [(name, impl, name) for name in opt_names for impl in impls]
    if baselines:
        pairs += [("torch AdamW(fused)", "torch", "LayerwiseAdamW"), ("torch SGD(foreach)", "torch", "LayerwiseSGD")]
    for name, impl, ref_name in pairs:
        uniform = impl == "torch"
        rctx = Ctx(shapes, total_steps=CHECK_DALS_TOTAL_STEPS, uniform_lr_mult=uniform)
        ref = build_impl(ref_name, "fused", params0, grads, rctx)
        other = build_impl(name, impl, params0, grads, rctx if uniform else ctx)
        for _ in range(CHECK_STEPS):
            ref.restore()
            ref.step()
            other.restore()
            other.step()
        mutated = [x for x, imp in ((ref_name + " fused", ref), (name + " " + impl, other)) if imp.grads_changed()]
        err = max_rel_err(other.snapshot(), ref.snapshot())
        n = len(shapes)
        moved = max_rel_err(ref.snapshot()[:n], params0)  # how far the params went
        # the update itself (p_final - p_0): float32 rounding of p limits this to ~1e-7 * |p| / |update|
        upd = max_rel_err([a - b for a, b in zip(other.snapshot()[:n], params0)],
                          [a - b for a, b in zip(ref.snapshot()[:n], params0)])
        r_ref, r_other = ref.ratios(), other.ratios()
        ratio_err = None
        if r_ref is not None and r_other is not None:
            ratio_err = max(abs(a - b) / abs(b) for a, b in zip(r_other, r_ref))
        good = err <= CHECK_TOL and (ratio_err is None or ratio_err <= CHECK_TOL)
        ok &= good
        rows.append([name, impl, f"{ref_name} (fused)", f"{err:.2e}", "-" if ratio_err is None else f"{ratio_err:.2e}",
                     f"{upd:.1e}", f"{moved:.1e}", ", ".join(mutated) or "-", "ok" if good else "FAIL"])
        torch._dynamo.reset()
    report.table(["optimizer", "impl", "reference", "max rel err", "trust ratio err", "update err",
                  "param change", "step writes p.grad", "status"], rows,
                 title=f"Check: {CHECK_STEPS} steps on {describe_layout(shapes)}, tolerance {CHECK_TOL:g} "
                           "on params + state ('max rel err') and on the last step's trust ratios; 'update err' "
                           "(rel err of p_5 - p_0) and 'param change' (max |p_5 - p_0| / max |p_0|) for "
                           "information")
    return ok


# ------------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------------
@dataclass
class Result:
    opt: str
    impl: str
    ms: float
    times: list[float]
    compile_s: Optional[float] = None
    err: Optional[float] = None
    mem_ratio: Optional[float] = None
    others: float = 0.0  # CPU share used by other processes during the timed steps


class CpuMonitor:
    """CPU time used by *other* processes over an interval, as a share of all cores (from /proc/stat)."""

    HZ = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
        return (sum(v[:8]) - idle) / CpuMonitor.HZ

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self):
        self.t0, self.b0, self.o0 = time.perf_counter(), self._busy(), self._own()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.t0
        others = (self._busy() - self.b0) - (self._own() - self.o0)
        self.others = max(0.0, others / max(wall * (os.cpu_count() or 1), 1e-9))


def wait_idle(max_wait: float, log: Callable[[str], None], threshold: float = 0.05) -> float:
    """Wait (up to max_wait s) until other processes use < threshold of the CPU over 0.5 s; their share."""
    deadline = time.perf_counter() + max_wait
    warned = False
    while True:
        with CpuMonitor() as mon:
            time.sleep(0.5)
        if mon.others < threshold or time.perf_counter() > deadline:
            return mon.others
        if not warned:
            log(f"  (other processes use {mon.others:.0%} of the CPU: waiting up to {max_wait:.0f} s for idle)")
            warned = True


def last_level_cache_bytes() -> int:
    for index in range(4, -1, -1):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size") as f:
                text = f.read().strip()
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        return int(text.rstrip("KMG")) * scale
    return 64 * 2**20


class Evictor:
    """Flushes the CPU caches (writes a buffer of twice the last-level cache) before each timed step, so that
    every implementation and the copy start from DRAM, as an optimizer step does in training, where the
    forward and backward passes run between two steps. Off (a no-op) with ``--no-evict``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.llc = last_level_cache_bytes()
        self.buf = torch.empty(max(2 * self.llc, 64 * 2**20) // 4, dtype=F32) if enabled else None
        self.k = 0

    def __call__(self) -> None:
        if self.buf is not None:
            self.k += 1
            self.buf.fill_(float(self.k))


EVICT = Evictor(False)  # replaced in main()


def time_impl(imp: Impl, warmup: int, repeats: int) -> tuple[list[float], list[float], float]:
    """(warmup step times, timed step times, other processes' CPU share during the timed steps).

    Before every step, untimed: the fixed gradients are restored and the caches flushed (EVICT)."""
    warm = []
    for _ in range(warmup):
        imp.restore()
        EVICT()
        t0 = time.perf_counter()
        imp.step()
        warm.append(time.perf_counter() - t0)
    times = []
    with CpuMonitor() as mon:
        for _ in range(repeats):
            imp.restore()
            EVICT()
            t0 = time.perf_counter()
            imp.step()
            times.append(time.perf_counter() - t0)
    return warm, times, mon.others


def time_copy(n_params: int, warmup: int, repeats: int) -> list[float]:
    """dst.copy_(src) of flat float32 buffers of 14 B/param each: 28 B/param read + written, as AdamW."""
    numel = (BYTES_PER_PARAM["copy"] // 2) * n_params // 4
    src = torch.randn(numel, dtype=F32)
    dst = torch.empty_like(src)
    for _ in range(warmup):
        EVICT()
        dst.copy_(src)
    times = []
    for _ in range(repeats):
        EVICT()
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return times


def time_rmw(n_params: int, warmup: int, repeats: int) -> list[float]:
    """a.add_(b) of flat float32 buffers moving 28 B/param (read a, b; write a: 12 B per element)."""
    numel = BYTES_PER_PARAM["copy"] * n_params // 12
    a = torch.randn(numel, dtype=F32)
    b = torch.randn(numel, dtype=F32)
    for _ in range(warmup):
        EVICT()
        a.add_(b)
    times = []
    for _ in range(repeats):
        EVICT()
        t0 = time.perf_counter()
        a.add_(b)
        times.append(time.perf_counter() - t0)
    return times


def bench_layout(layout: str, opt_names: list[str], impls: tuple[str, ...], baselines: bool, warmup: int,
                 repeats: int, idle_wait: float, retries: int,
                 log: Callable[[str], None]) -> tuple[list[Result], int, tuple[float, float]]:
    """Time every (optimizer, impl) of one layout. A row whose timed steps saw other processes take more than
    CONTENDED of the CPU is re-run from scratch (same start, same steps) up to ``retries`` times, after waiting
    up to ``idle_wait`` s for the CPU to be idle; the least disturbed attempt is kept."""
    shapes = LAYOUTS[layout]
    params0, grads = make_layout(shapes)
    n_params = sum(p.numel() for p in params0)
    ctx = Ctx(shapes)
    results: list[Result] = []

    def attempts(run_once: Callable[[], Result]) -> Result:
        best = None
        for attempt in range(retries + 1):
            if idle_wait > 0:
                wait_idle(idle_wait, log)
            res = run_once()
            if best is None or res.others < best.others:
                if best is not None and best.compile_s is not None:
                    res.compile_s = best.compile_s  # the first attempt's compile is the cold one
                best = res
            if best.others <= CONTENDED:
                break
            if attempt < retries:
                log(f"  ({res.opt} {res.impl}: other processes took {res.others:.0%} of the CPU, re-running)")
        return best

    def run_copy() -> Result:
        with CpuMonitor() as mon:
            copy_times = time_copy(n_params, warmup, repeats)
        return Result("copy", "dst.copy_(src)", statistics.median(copy_times) * 1e3, copy_times, others=mon.others)

    results.append(attempts(run_copy))

    def run_rmw() -> Result:
        with CpuMonitor() as mon:
            rmw_times = time_rmw(n_params, warmup, repeats)
        return Result("stream", "a.add_(b)", statistics.median(rmw_times) * 1e3, rmw_times, others=mon.others)

    results.append(attempts(run_rmw))

    def log_row(layout, res):
        log(f"  {layout:>8} {res.opt:<18} {res.impl:<11} {res.ms:10.3f} ms"
            + (f"  (compile {res.compile_s:.1f} s)" if res.compile_s is not None else "")
            + (f"  err vs fused {res.err:.1e}" if res.err is not None else "")
            + (f"  [others {res.others:.0%} CPU]" if res.others > 0.02 else ""))

    log_row(layout, results[0])
    log_row(layout, results[1])
    for name in opt_names:
        ref_snapshot: list[torch.Tensor] = []
        for impl in ("fused",) + tuple(i for i in impls if i != "fused"):
            def run_once() -> Result:
                torch._dynamo.reset()
                imp = build_impl(name, impl, params0, grads, ctx)
                warm, times, others = time_impl(imp, warmup, repeats)
                res = Result(name, impl, statistics.median(times) * 1e3, times, others=others)
                if impl == "compiled":  # warmup time beyond the cost of the steps: tracing + compiling
                    res.compile_s = max(0.0, sum(warm) - len(warm) * statistics.median(times))
                if impl == "fused":
                    ref_snapshot[:] = [t.detach().clone() for t in imp.snapshot()]
                    res.err = 0.0
                else:
                    res.err = max_rel_err(imp.snapshot(), ref_snapshot)
                del imp
                gc.collect()
                return res

            res = attempts(run_once)
            results.append(res)
            log_row(layout, res)
        ref_snapshot.clear()
        torch._dynamo.reset()
        gc.collect()
    if baselines:
        for name in BASELINES:
            def run_once() -> Result:
                imp = build_impl(name, "torch", params0, grads, ctx)
                _, times, others = time_impl(imp, warmup, repeats)
                del imp
                gc.collect()
                return Result(name, "torch.optim", statistics.median(times) * 1e3, times, others=others)

            res = attempts(run_once)
            results.append(res)
            log_row(layout, res)
    return results, n_params, norm_accuracy(params0)


# ------------------------------------------------------------------------------------------------------
# Peak memory (subprocesses)
# ------------------------------------------------------------------------------------------------------
def _proc_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def clear_refs_works() -> bool:
    """Grow RSS by 64 MiB, free it, reset the peak: VmHWM must fall back to about VmRSS."""
    x = torch.ones(16 * 2**20, dtype=F32)
    del x
    if not _reset_peak():
        return False
    s = _proc_status()
    return s["VmHWM"] - s["VmRSS"] < 8 * 2**20


class _RssSampler:
    """Fallback peak tracker: a thread reading VmRSS every 0.2 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _proc_status()["VmRSS"])
            time.sleep(0.0002)

    def __enter__(self):
        self.peak = _proc_status()["VmRSS"]
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _proc_status()["VmRSS"])


def memory_child(opt_name: str, impl: str, layout: str, method: str) -> dict[str, Any]:
    """Runs in a fresh subprocess: peak RSS growth of one step over params + grads + state."""
    shapes = LAYOUTS[layout]
    params0, grads = make_layout(shapes)
    ctx = Ctx(shapes)
    if impl == "probe":  # self-test of the method: a step that allocates and touches 25% of state_bytes
        imp = build_impl("LayerwiseSGD", "fused", params0, grads, ctx)
        inner = imp.step
        state = sum(p.numel() for p in params0) * 4 * 3  # params, grads, momentum buffers

        def probe_step():
            inner()
            torch.ones(state // 4 // 4, dtype=F32).sum()  # allocated, touched, freed

        imp.step = probe_step
    else:
        imp = build_impl(opt_name, impl, params0, grads, ctx)
    del params0
    imp.step()  # state created, compiled code ready
    gc.collect()
    params_grads = imp.snapshot()[: len(shapes)]
    state_bytes = sum(p.numel() * p.element_size() for p in params_grads) * 2  # params + grads
    state_bytes += sum(t.numel() * t.element_size() for t in imp.state_tensors())
    imp.restore()
    gc.collect()
    if method == "clear_refs":
        _reset_peak()
        before = _proc_status()["VmRSS"]
        imp.step()
        peak = _proc_status()["VmHWM"]
    else:
        before = _proc_status()["VmRSS"]
        with _RssSampler() as sampler:
            imp.step()
        peak = sampler.peak
    return dict(state_bytes=state_bytes, rss_before=before, peak=peak,
                ratio=(state_bytes + peak - before) / state_bytes)


def measure_memory(opt_name: str, impl: str, layout: str, method: str) -> Optional[float]:
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)  # fixed: large temporaries always mmap'd, unmapped on free
    env["MALLOC_TRIM_THRESHOLD_"] = str(128 * 1024)
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", json.dumps([opt_name, impl, layout, method])]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"memory subprocess failed for {opt_name}/{impl}/{layout}:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["ratio"]


# ------------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------------
class Report:
    def __init__(self, markdown: Optional[str]) -> None:
        self.markdown = markdown
        self.md: list[str] = []

    def text(self, s: str = "") -> None:
        print(s, flush=True)
        self.md.append(s)

    def header(self, title: str) -> None:
        """The title, the command line that made the report and the machine it ran on."""
        self.text(f"# {title}\n")
        self.text("Command: `" + " ".join(["python", os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]) + "`\n")
        for line in machine_lines():
            self.text(line)
        self.text()

    def log(self, s: str) -> None:  # progress lines: console only
        print(s, flush=True)

    def table(self, headers: list[str], rows: list[list[str]], title: str = "") -> None:
        print(render_table(headers, rows, title), flush=True)
        if title:
            self.md.append(f"**{title}**\n")
        self.md.append("| " + " | ".join(headers) + " |")
        self.md.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(headers))) + "|")
        for r in rows:
            self.md.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
        self.md.append("")

    def write(self) -> None:
        if self.markdown:
            with open(self.markdown, "w") as f:
                f.write("\n".join(self.md).rstrip() + "\n")


def render_table(headers: list[str], rows: list[list[str]], title: str = "") -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def fmt(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    lines = ([title] if title else []) + [fmt(headers), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    return "\n".join(lines) + "\n"


def machine_lines() -> list[str]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", "csrc",
                                "torch_layerlr"], capture_output=True, text=True).stdout.strip()
        commit += " (+ uncommitted changes in csrc/ or torch_layerlr/)" if dirty else ""
    except OSError:
        commit = "?"
    import torch_layerlr._C as ext  # noqa: PLC0415
    sources = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(ROOT, "csrc")) for f in fs]
    if sources and max(os.path.getmtime(f) for f in sources) > os.path.getmtime(ext.__file__):
        commit += "; WARNING: the built extension is older than csrc/ (run `make build`)"
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"- date: {now}",
        f"- CPU: {cpu}, {os.cpu_count()} cores, {mem} RAM",
        f"- torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, Python {platform.python_version()}",
        f"- torch_layerlr commit {commit}",
    ]


def norm_accuracy(params: list[torch.Tensor]) -> tuple[float, float]:
    """Max rel err vs float64 of torch._foreach_norm and of the engine's tensor_norms on these tensors."""
    from torch_layerlr._ops import tensor_norms  # noqa: PLC0415

    ref = torch.stack([p.double().norm() for p in params])
    fe = torch.stack(torch._foreach_norm(params)).double()
    en = tensor_norms(params).double()
    ok = ref > 0
    return ((fe - ref).abs()[ok] / ref[ok]).max().item(), ((en - ref).abs()[ok] / ref[ok]).max().item()


def layout_table(report: Report, layout: str, n_params: int, results: list[Result], mem_note: str,
                 norm_err: Optional[tuple[float, float]] = None, steps: int = 0) -> None:
    by = {(r.opt, r.impl): r for r in results}
    copy = by[("copy", "dst.copy_(src)")]
    copy_gbs = BYTES_PER_PARAM["copy"] * n_params / (copy.ms * 1e-3) / 1e9
    stream = by.get(("stream", "a.add_(b)"))
    stream_gbs = BYTES_PER_PARAM["stream"] * n_params / (stream.ms * 1e-3) / 1e9 if stream else None
    adamw = by.get(("torch AdamW(fused)", "torch.optim"))
    refs = {"torch AdamW(fused)": "LayerwiseAdamW", "torch SGD(foreach)": "LayerwiseSGD"}
    rows = []
    for r in results:
        bpp = BYTES_PER_PARAM[r.opt]
        gbs = bpp * n_params / (r.ms * 1e-3) / 1e9
        ours = by.get((refs.get(r.opt, r.opt), "fused"))
        rows.append([
            r.opt, r.impl, str(bpp), f"{r.ms:.3f}" + ("*" if r.others > CONTENDED else ""),
            f"{min(r.times) * 1e3:.3f}", f"{gbs:.1f}", f"{gbs / copy_gbs:.2f}",
            f"{gbs / stream_gbs:.2f}" if stream_gbs else "-",
            f"{r.ms / ours.ms:.2f}" if ours else "-",
            f"{r.ms / adamw.ms:.2f}" if adamw else "-",
            f"{r.mem_ratio:.3f}" if r.mem_ratio is not None else "-",
            f"{r.compile_s:.1f}" if r.compile_s is not None else "",
            f"{r.err:.1e}" if r.err is not None else "",
        ])
    title = (f"Layout {layout}: {describe_layout(LAYOUTS[layout])}, float32 -- copy bandwidth "
             f"{copy_gbs:.1f} GB/s ({copy.ms:.3f} ms for {BYTES_PER_PARAM['copy'] * n_params / 1e9:.3f} GB)")
    headers = ["optimizer", "impl", "B/param", "ms", "min ms", "GB/s", "of copy BW", "of stream BW", "x our fused",
               "x AdamW(fused)", "peak mem", "compile s", "err vs fused"]
    report.table(headers, rows, title)
    worst = max(r.others for r in results)
    report.text(f"Other processes used at most {worst:.0%} of the CPU during a row's timed steps"
                + (f" (rows marked * above {CONTENDED:.0%}: their timings are disturbed)" if worst > CONTENDED else "")
                + ".\n")
    if norm_err is not None:
        report.text(f"'err vs fused': after the {steps} steps of the row, from the same start as the fused row. For "
                    f"the trust-ratio recipes (DALS, LARS, LAMB) it is mostly torch's: torch._foreach_norm of this "
                    f"layout's params has max rel err {norm_err[0]:.1e} vs float64 (the engine's norms: "
                    f"{norm_err[1]:.1e}).\n")
    if mem_note:
        report.text(mem_note + "\n")


def acceptance(report: Report, all_results: dict[str, tuple[list[Result], int]]) -> None:
    def get(layout, opt, impl):
        if layout not in all_results:
            return None
        return next((r for r in all_results[layout][0] if r.opt == opt and r.impl == impl), None)

    lines = []

    def verdict(ok):
        return "PASS" if ok else "FAIL"

    fused, fe, co = get("10M", "DALS", "fused"), get("10M", "DALS", "foreach"), get("10M", "DALS", "compiled")
    if fused and fe and co:
        s1, s2 = fe.ms / fused.ms, co.ms / fused.ms
        lines.append(f"- DALS fused >= 2.5x faster than foreach and not slower than compiled at 10M: "
                     f"{verdict(s1 >= 2.5 and s2 >= 1.0)} (foreach/fused = {s1:.2f}x, compiled/fused = {s2:.2f}x)")
    for layout in ("10M", "50M"):
        lamb, adamw = get(layout, "LAMB", "fused"), get(layout, "torch AdamW(fused)", "torch.optim")
        if lamb and adamw:
            q = lamb.ms / adamw.ms
            lines.append(f"- LAMB fused <= 1.6x torch AdamW(fused) at {layout}: {verdict(q <= 1.6)} "
                         f"({lamb.ms:.2f} ms vs {adamw.ms:.2f} ms = {q:.2f}x)")
    if "50M" in all_results:
        results, n = all_results["50M"]
        copy = get("50M", "copy", "dst.copy_(src)")
        copy_gbs = BYTES_PER_PARAM["copy"] * n / copy.ms
        fr = {r.opt: BYTES_PER_PARAM[r.opt] * n / r.ms / copy_gbs for r in results if r.impl == "fused"}
        if fr:
            lines.append(f"- every fused recipe >= 50% of copy bandwidth at 50M: {verdict(min(fr.values()) >= 0.5)} ("
                         + ", ".join(f"{k} {v:.0%}" for k, v in fr.items()) + ")")
        mr = {r.opt: r.mem_ratio for r in results if r.impl == "fused" and r.mem_ratio is not None}
        if mr:
            lines.append(f"- fused peak memory ratio <= 1.05 at 50M: {verdict(max(mr.values()) <= 1.05)} ("
                         + ", ".join(f"{k} {v:.3f}" for k, v in mr.items()) + ")")
    if lines:
        report.text("## Acceptance\n")
        for line in lines:
            report.text(line)
        report.text()


# ------------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1M layout only, 3 repeats")
    ap.add_argument("--check", action="store_true", help="correctness only: every impl vs fused, 5 steps")
    ap.add_argument("--layouts", default=None, help=f"comma list of {','.join(LAYOUTS)}")
    ap.add_argument("--optimizers", default=None, help=f"comma list of {','.join(OPTIMIZERS)}")
    ap.add_argument("--impls", default="fused,foreach,compiled", help="comma list of fused,foreach,compiled")
    ap.add_argument("--no-baselines", action="store_true", help="skip torch.optim AdamW/SGD")
    ap.add_argument("--repeats", type=int, default=None, help="timed steps per impl (default 11, 50M: 9)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per impl before timing")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="before each row, wait up to S seconds for other processes to leave the CPU idle")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-run a row up to this many times when other processes disturbed its timing")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--memory-compiled", action="store_true", help="also measure peak memory of compiled impls")
    ap.add_argument("--markdown", default=None, help="also write the tables as markdown to this file")
    ap.add_argument("--warm-compile-cache", action="store_true",
                    help="use torch.compile's default on-disk cache (warm compile times)")
    ap.add_argument("--no-evict", action="store_true",
                    help="do not flush the CPU caches before each timed step (steady-state warm-cache timings)")
    ap.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.memory_child:
        opt_name, impl, layout, method = json.loads(args.memory_child)
        print(json.dumps(memory_child(opt_name, impl, layout, method)))
        return 0

    opt_names = args.optimizers.split(",") if args.optimizers else list(OPTIMIZERS)
    for o in opt_names:
        if o not in OPTIMIZERS:
            ap.error(f"unknown optimizer {o!r}: choose from {', '.join(OPTIMIZERS)}")
    impls = tuple(args.impls.split(","))
    if "fused" not in impls:
        impls = ("fused",) + impls
    layouts = args.layouts.split(",") if args.layouts else (["1M"] if args.quick else list(LAYOUTS))
    for lay in layouts:
        if lay not in LAYOUTS:
            ap.error(f"unknown layout {lay!r}: choose from {', '.join(LAYOUTS)}")

    report = Report(args.markdown)
    report.header("torch_layerlr step throughput")

    if args.check:
        ok = run_check(opt_names, tuple(i for i in impls if i != "fused"), not args.no_baselines, report)
        report.write()
        return 0 if ok else 1

    # quick correctness pass (eager foreach only) before timing
    if not run_check(opt_names, ("foreach",), False, report):
        report.text("foreach recipes disagree with the fused optimizers: not timing.")
        report.write()
        return 1

    report.text("Bytes model (B/param = bytes read + written per parameter per step, ideal implementation, "
                "float32); GB/s = params x B/param / median time; 'of copy BW' = GB/s / copy GB/s of the same "
                "layout (copy of 14 B/param = 28 B/param moved, same as AdamW). Columns 'x our fused' (torch "
                "baselines: vs LayerwiseAdamW / LayerwiseSGD fused) and 'x AdamW(fused)' are time ratios. "
                "'err vs fused': max rel err of params and state after the same steps from the same start. "
                "The engine recomputes the pass-2 direction from state instead of storing it (LAMB keeps it in "
                "p.grad's memory instead, also 40 B), so these are its real traffic. "
                "'ms' is the median step, 'min ms' the fastest; * marks a row whose timed steps other processes "
                "disturbed (they took more than 10% of the CPU).\n")
    for name in list(opt_names) + (list(BASELINES) if not args.no_baselines else []):
        report.text(f"- {name}: {BYTES_PER_PARAM[name]} B/param ({BYTES_NOTE[name]})")
    report.text(f"- copy: {BYTES_PER_PARAM['copy']} B/param (dst.copy_(src), 14 B/param each; the copy bandwidth)")
    report.text(f"- stream: {BYTES_PER_PARAM['stream']} B/param (a.add_(b): read a, b, write a). The copy also reads "
                "each destination line before writing it (read for ownership), 1.5x its nominal traffic; an "
                "optimizer step writes only lines it has read, so it can exceed 100% of the copy bandwidth, up to "
                "about the stream row.\n")

    global EVICT
    EVICT = Evictor(not args.no_evict)
    report.text(("Caches flushed before every timed step (and copy): a write of "
                 f"{EVICT.buf.numel() * 4 / 2**20:.0f} MiB, twice the {EVICT.llc / 2**20:.0f} MiB last-level "
                 "cache, so every row starts from DRAM as an optimizer step does in training."
                 if EVICT.enabled else "Caches NOT flushed between steps (--no-evict): steady-state warm-cache "
                 "timings; small layouts run from cache.")
                + " The fixed gradients are copied back into each implementation's gradient tensors before every "
                  "step (untimed, for all alike): our LAMB writes its update direction into p.grad.\n")
    if "compiled" in impls:  # one-time costs of the first torch.compile in a process, kept out of the rows
        t0 = time.perf_counter()
        torch.compile(lambda x: x * 2 + 1, fullgraph=True)(torch.ones(64))
        torch._dynamo.reset()
        report.text(f"torch.compile start-up (first compile of a trivial function in this process): "
                    f"{time.perf_counter() - t0:.1f} s, not counted in the rows' compile times.\n")
    method = "clear_refs" if clear_refs_works() else "sampler"
    mem_note_method = ("peak mem = (state_bytes + VmHWM - VmRSS_before) / state_bytes over one step in a fresh "
                       "subprocess; state_bytes = params + grads + optimizer state; peak reset with "
                       "/proc/self/clear_refs (verified working on this machine)"
                       if method == "clear_refs" else
                       "peak mem: /proc/self/clear_refs does NOT reset VmHWM here; measured with a thread "
                       "sampling VmRSS every 0.2 ms during the step (may miss short peaks)")

    all_results: dict[str, tuple[list[Result], int]] = {}
    baselines = not args.no_baselines
    for layout in layouts:
        repeats = args.repeats or (3 if args.quick else (9 if layout == "50M" else 11))
        report.log(f"== layout {layout}: {describe_layout(LAYOUTS[layout])}")
        results, n_params, norm_err = bench_layout(layout, opt_names, impls, baselines, args.warmup, repeats,
                                         args.wait_idle, args.retries, report.log)
        note = ""
        if layout in MEMORY_LAYOUTS and not args.no_memory and not args.quick:
            mem_impls = {"fused", "foreach"} | ({"compiled"} if args.memory_compiled else set())
            probe = measure_memory("probe", "probe", layout, method)
            for r in results:
                if r.impl in mem_impls and r.opt in OPTIMIZERS:
                    r.mem_ratio = measure_memory(r.opt, r.impl, layout, method)
                elif r.impl == "torch.optim":
                    r.mem_ratio = measure_memory(r.opt, "torch", layout, method)
                if r.mem_ratio is not None:
                    report.log(f"  {layout:>8} {r.opt:<15} {r.impl:<9} peak mem ratio {r.mem_ratio:.3f}")
            note = (f"{mem_note_method}. Self-test: a step that allocates a temporary of 25% of state_bytes "
                    f"measured {probe:.3f} (expected 1.25)." if probe is not None else mem_note_method)
        all_results[layout] = (results, n_params)
        layout_table(report, layout, n_params, results, note, norm_err, args.warmup + repeats)
        report.text(f"({repeats} timed steps per row after {args.warmup} warmup steps; median reported. "
                    f"compile s = warmup time beyond {args.warmup} steps: tracing + inductor compile, cold cache"
                    f"{'' if _OWN_CACHE_DIR else ' (cache dir given by the caller)'}.)\n")
    acceptance(report, all_results)
    report.write()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        if _OWN_CACHE_DIR and "--_memory-child" not in sys.argv:
            shutil.rmtree(_OWN_CACHE_DIR, ignore_errors=True)
