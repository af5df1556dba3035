"""A short workload of every kernel path, for ``compute-sanitizer --tool memcheck`` (benchmarks/gpu/check.sh).

Usage (repository root)::

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 86 \\
        python benchmarks/gpu/sanitize_steps.py
    python benchmarks/gpu/sanitize_steps.py --device cpu        # the same workload on the CPU engine

Without the caching allocator every tensor is its own allocation, so an access past a tensor's end is an
access past an allocation, which memcheck reports. The workload (each optimizer of tests/optim_db.py, a few
steps each):

* every row: 70 float32 tensors of odd sizes (0-size and 0-d among them, more than one launch's tensor table),
  two param groups with different lrs, 3 steps (DALS: a loss each step);
* one row per recipe shape (SHAPE_ROWS): a tensor cut between two launches (320 chunks of 65536 and 4099 more
  elements); bfloat16, float16 and float64; non-contiguous params and grads; GradScaler steps, one of them
  skipped for an inf gradient;
* low-precision state: each SHAPE_ROWS row with bf16 and with int8 state (partial absmax blocks, a tensor over two
  chunks, one small enough to keep fp32 state under int8);
* the ops on their own: ``tensor_norms`` over odd sizes and a split tensor, ``dals_phase_`` on the device.

Every param must stay finite (and a skipped step must change nothing). Exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _path in (ROOT, os.path.join(ROOT, "tests")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402

from optim_db import by_name, dals_losses, optim_db  # noqa: E402
from torch_layerlr._ops import tensor_norms  # noqa: E402

CHUNK, MAX_BLOCKS = 65536, 320  # csrc/cuda/multi_tensor_apply.cuh
SMALL = [(0,), ()] + [(1 + (7 * i) % 97,) if i % 5 else (3, 1 + i % 7) for i in range(68)]
SPLIT = [(5, 3), (MAX_BLOCKS * CHUNK + 4099,), (7,)]
#: one row per recipe shape: sgd with a buffer (and Grokfast), adam (and Grokfast), lars, lamb, dals
SHAPE_ROWS = ("sgd_nesterov_wd", "sgd_grokfast", "adamw_wd_betas_lr_mult", "grokfast_adamw", "lars_grokfast",
              "lamb_clamp", "dals_per_param_depth", "dals_fast")
LOW_PRECISION = [(4099,), (64, 80), (CHUNK + 300,), (3,)]


def tensors(shapes, dtype, device, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype) for s in shapes]


def build(info, params, precision="fp32"):
    """The row's optimizer over two param groups, the second at half the lr (per-tensor lrs in one call)."""
    half = len(params) // 2
    opt = info.fused([{"params": params[:half]}, {"params": params[half:]}], state_precision=precision)
    opt.param_groups[1]["lr"] = 0.5 * float(opt.param_groups[1]["lr"])
    return opt


def run_steps(info, params, grads_of_step, steps, scaler=None, precision="fp32"):
    """``steps`` steps of the row's optimizer; grads_of_step(k) gives step k's gradients."""
    opt = build(info, params, precision)
    losses = dals_losses(steps, seed=1)[0]
    for k in range(steps):
        for p, g in zip(params, grads_of_step(k)):
            p.grad = g
        if info.is_dals:
            opt.step(loss=losses[k])
        else:
            opt.step()
    return opt


def check_finite(name, params):
    bad = [i for i, p in enumerate(params) if not bool(torch.isfinite(p.detach()).all())]
    if bad:
        raise AssertionError(f"{name}: params {bad[:5]} not finite")


def case_rows(device):
    for info in optim_db:
        params = [p.requires_grad_(True) for p in tensors(SMALL, torch.float32, device, 1)]
        run_steps(info, params, lambda k: tensors(SMALL, torch.float32, device, 100 + k), 3)
        check_finite(info.name, params)
        yield f"{info.name} float32 x{len(SMALL)}"


def case_split(device):
    for name in SHAPE_ROWS:
        info = by_name(name)
        params = [p.requires_grad_(True) for p in tensors(SPLIT, torch.float32, device, 2)]
        grads = tensors(SPLIT, torch.float32, device, 200)
        run_steps(info, params, lambda k: [g.clone() for g in grads], 2)
        check_finite(name, params)
        yield f"{name} launch split"


def case_dtypes(device):
    for name in SHAPE_ROWS:
        for dtype in (torch.bfloat16, torch.float16, torch.float64):
            info = by_name(name)
            params = [p.requires_grad_(True) for p in tensors(SMALL, dtype, device, 3)]
            run_steps(info, params, lambda k: tensors(SMALL, dtype, device, 300 + k), 2)
            check_finite(name, params)
            yield f"{name} {str(dtype)[6:]}"


def case_strided(device):
    for name in SHAPE_ROWS:
        info = by_name(name)
        base = tensors([(9, 13), (6, 10), (2, 3, 4, 5)], torch.float32, device, 4)
        params = [base[0].t().requires_grad_(True), base[1][:, ::2].requires_grad_(True),
                  base[2].contiguous(memory_format=torch.channels_last).requires_grad_(True)]
        raw = tensors([(9, 13), (6, 5), (2, 3, 4, 5)], torch.float32, device, 400)
        grads = [raw[0].t(), raw[1], raw[2]]  # one transposed like its param, one dense, one of other strides
        run_steps(info, params, lambda k: [g.clone() for g in grads], 2)
        check_finite(name, params)
        yield f"{name} non-contiguous"


def case_grad_scaler(device):
    for name in SHAPE_ROWS:
        info = by_name(name)
        params = [p.requires_grad_(True) for p in tensors(SMALL, torch.float32, device, 5)]
        weights = tensors(SMALL, torch.float32, device, 500)
        opt = build(info, params)
        scaler = torch.amp.GradScaler(device.type, init_scale=2.0**10)
        for k in range(3):
            opt.zero_grad()
            loss = sum((p * w).sum() for p, w in zip(params, weights))
            scaler.scale(loss).backward()
            if k == 2:
                params[5].grad[0] = float("inf")
            before = [p.detach().clone() for p in params]
            scaler.step(opt, **({"loss": loss.detach()} if info.is_dals else {}))
            scaler.update()
            if k == 2 and any(not torch.equal(a, b) for a, b in zip(before, params)):
                raise AssertionError(f"{name}: a step GradScaler skipped changed a param")
        check_finite(name, params)
        yield f"{name} GradScaler (last step skipped)"


def case_low_precision(device):
    for name in SHAPE_ROWS:
        for precision in ("bf16", "int8"):
            info = by_name(name)
            params = [p.requires_grad_(True) for p in tensors(LOW_PRECISION, torch.float32, device, 6)]
            run_steps(info, params, lambda k: tensors(LOW_PRECISION, torch.float32, device, 600 + k), 2,
                      precision=precision)
            check_finite(name, params)
            yield f"{name} {precision} state"


def case_ops(device):
    shapes = [(0,), (1,), (3,), (5,), (CHUNK - 1,), (CHUNK + 1,), (), (2, 0, 3)] + \
        [(1 + i,) for i in range(100)] + [(MAX_BLOCKS * CHUNK + 5,)]
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        norms = tensor_norms(tensors(shapes, dtype, device, 6))
        if not bool(torch.isfinite(norms).all()):
            raise AssertionError(f"tensor_norms {dtype}: not finite")
        yield f"tensor_norms {str(dtype)[6:]} x{len(shapes)}"
    detector = torch.zeros(3, dtype=torch.float64, device=device)
    coef = torch.tensor([0.3, 1.0], dtype=torch.float64, device=device)
    for loss in dals_losses(20, seed=3)[0]:
        torch.ops.layerlr.dals_phase_(detector, coef, torch.tensor(loss, dtype=torch.float64, device=device),
                                      tau1=0.01, tau2=0.002, phase_alpha=[0.3, 0.6, 0.7], phase_gate=[0.0, 1.0, 1.0])
    yield "dals_phase_ x20"


#: the most telling first: under memcheck a run may stop at its time budget
CASES = (case_rows, case_split, case_strided, case_grad_scaler, case_low_precision, case_dtypes, case_ops)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="start no case after this many seconds (the last line says how many ran)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("sanitize_steps: torch sees no CUDA device (use --device cpu)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    done, stopped = 0, ""
    for case in CASES:
        for what in case(device):
            done += 1
            print(f"ok {done:3d} {time.monotonic() - t0:6.1f} s  {what}", flush=True)
            if time.monotonic() - t0 > args.budget_s:
                stopped = f", then stopped at the time budget of {args.budget_s:.0f} s (in {case.__name__})"
                break
        if stopped:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(f"sanitize_steps: {done} cases ran on {device.type} in {time.monotonic() - t0:.1f} s{stopped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
