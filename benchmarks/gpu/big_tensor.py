"""One parameter of more than 2^31 elements through the fused engine, checked element by element.

Usage (repository root)::

    python benchmarks/gpu/big_tensor.py --markdown big.md            # CUDA: (2^21 + 1) x 1024 = 2^31 + 1024
    python benchmarks/gpu/big_tensor.py --device cpu --rows 1025     # a small run of the same checks

The param is a bfloat16 matrix of ``--rows`` x 1024 elements: by default 2^31 + 1024 (4 GiB), so that the last
1024 elements lie past the largest int32 index. int32 arithmetic anywhere in the element loops, the chunk
tables or the norm reductions would leave elements not updated, or updated from the wrong place. The checks
cover every element, against a float64 reference computed chunk by chunk (about 3 GiB at a time), so memory
stays near 17 GiB: param, gradient, a copy of the start and one state buffer.

* LayerwiseSGD (one pass; momentum 0.9, lr 1, no weight decay), two steps with the same gradient g:
  :math:`p_1 = \\mathrm{bf16}(p_0 - g)`, :math:`b_2 = 0.9 g + g`, :math:`p_2 = \\mathrm{bf16}(p_1 - b_2)` and
  the stored buffer :math:`\\mathrm{bf16}(b_2)`.
* LARS (two passes; trust coefficient 1, weight decay 0.01, lr 1), one step:
  :math:`\\lambda = \\|w\\| / (\\|g\\| + 0.01 \\|w\\|)` from float64 norms, :math:`v = \\lambda (g + 0.01 w)`,
  :math:`w_1 = \\mathrm{bf16}(w - v)` and the stored buffer :math:`\\mathrm{bf16}(v)`; the engine's trust ratio
  against :math:`\\lambda` (rel 1e-5).
* ``tensor_norms`` of the param against its float64 norm (rel 1e-5).

Bound per element: the engine does float32 math and rounds each stored value to bfloat16 once, the reference
rounds at the same places, so the two may differ by one bfloat16 rounding per stored value on the way (a
bfloat16 ulp is at most 2^-7 of the value): |got - ref| <= 2^-6 (|a| + |b|) for a result a - b. A skipped or
misplaced update is off by about |b| itself, 60 times the bound. Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from torch_layerlr._ops import tensor_norms  # noqa: E402
from torch_layerlr.optim import LARS, LayerwiseSGD  # noqa: E402

COLS = 1024
FULL_ROWS = 2**21 + 1  # 2^31 + 1024 elements
ULP2 = 2.0**-6  # two bfloat16 roundings, relative
RATIO_TOL = 1e-5
F64, BF16 = torch.float64, torch.bfloat16


def chunks(n_rows: int, rows_per_chunk: int):
    for start in range(0, n_rows, rows_per_chunk):
        yield slice(start, min(n_rows, start + rows_per_chunk))


def bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(BF16).to(F64)


class Worst:
    """The largest |got - ref| / bound seen, over all elements and over the last 1024 alone."""

    def __init__(self) -> None:
        self.all = self.tail = 0.0
        self.checked = 0

    def add(self, got: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor, ends_param: bool) -> None:
        """got, ref, bound: one chunk of rows; ``ends_param``: its last row is the param's last (the tail)."""
        ratio = (got.to(F64) - ref).abs() / bound
        ratio = torch.where(torch.isfinite(got.to(F64)), ratio, torch.full_like(ratio, math.inf))
        self.all = max(self.all, ratio.max().item())
        if ends_param:
            self.tail = ratio[-1].max().item()
        self.checked += got.numel()

    @property
    def ok(self) -> bool:
        return self.all <= 1.0


def sq_norm(x: torch.Tensor, rows_per_chunk: int) -> float:
    return sum(x[s].to(F64).square().sum().item() for s in chunks(x.shape[0], rows_per_chunk))


def check_sgd(p: torch.Tensor, g: torch.Tensor, p0: torch.Tensor, rows_per_chunk: int) -> list[tuple[str, Worst]]:
    p.grad = g
    opt = LayerwiseSGD([p], lr=1.0, momentum=0.9)
    for _ in range(2):
        opt.step()
    buf = opt.state[p]["momentum_buffer"]
    worst_p, worst_b = Worst(), Worst()
    n = p.shape[0]
    for s in chunks(n, rows_per_chunk):
        gc, pc = g[s].to(F64), p0[s].to(F64)
        p1 = bf16(pc - gc)
        b2 = 0.9 * gc + gc
        ends = s.stop == n  # the param's last row holds its last 1024 elements
        worst_p.add(p[s], bf16(p1 - b2), ULP2 * (p1.abs() + b2.abs()) + 1e-30, ends)
        worst_b.add(buf[s], bf16(b2), ULP2 * b2.abs() + 1e-30, ends)
    del opt, buf
    return [("LayerwiseSGD param after 2 steps", worst_p), ("LayerwiseSGD momentum buffer", worst_b)]


def check_lars(p: torch.Tensor, g: torch.Tensor, p0: torch.Tensor, rows_per_chunk: int
               ) -> tuple[list[tuple[str, Worst]], float, float]:
    wd = 0.01
    p.grad = g
    opt = LARS([p], lr=1.0, momentum=0.9, weight_decay=wd, trust_coefficient=1.0)
    opt.step()
    got_ratio = opt.trust_ratios()[p]
    w_norm, g_norm = math.sqrt(sq_norm(p0, rows_per_chunk)), math.sqrt(sq_norm(g, rows_per_chunk))
    ratio = w_norm / (g_norm + wd * w_norm)
    buf = opt.state[p]["momentum_buffer"]
    worst_p, worst_b = Worst(), Worst()
    n = p.shape[0]
    for s in chunks(n, rows_per_chunk):
        wc = p0[s].to(F64)
        v = ratio * (g[s].to(F64) + wd * wc)
        ends = s.stop == n
        worst_p.add(p[s], bf16(wc - v), ULP2 * (wc.abs() + v.abs()) + 1e-30, ends)
        worst_b.add(buf[s], bf16(v), ULP2 * v.abs() + 1e-30, ends)
    del opt, buf
    return [("LARS param after 1 step", worst_p), ("LARS momentum buffer", worst_b)], got_ratio, ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help=f"rows of {COLS} elements")
    parser.add_argument("--markdown", help="write the report here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("big_tensor: torch sees no CUDA device (use --device cpu for a small run)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    numel = args.rows * COLS
    rows_per_chunk = max(1, 2**26 // COLS)
    gen = torch.Generator(device=device).manual_seed(7)
    p0 = torch.randn(args.rows, COLS, generator=gen, dtype=BF16, device=device)
    g = torch.randn(args.rows, COLS, generator=gen, dtype=BF16, device=device)
    p = p0.clone().requires_grad_(True)

    results = check_sgd(p, g, p0, rows_per_chunk)
    with torch.no_grad():
        p.copy_(p0)
    p.grad = None
    lars_results, got_ratio, ratio = check_lars(p, g, p0, rows_per_chunk)
    results += lars_results
    ratio_err = abs(got_ratio - ratio) / ratio
    norm = tensor_norms([p0]).item()
    norm_ref = math.sqrt(sq_norm(p0, rows_per_chunk))
    norm_err = abs(norm - norm_ref) / norm_ref

    ok = all(w.ok for _, w in results) and ratio_err <= RATIO_TOL and norm_err <= RATIO_TOL
    lines = [f"bfloat16 param of shape ({args.rows}, {COLS}): {numel:,} elements "
             f"({'past' if numel > 2**31 - 1 else 'below'} the int32 range: the last 1024 elements are "
             f"{'past' if numel - COLS > 2**31 - 1 else 'not past'} index 2^31 - 1), on {device.type}; "
             f"{time.monotonic() - t0:.1f} s", "",
             "| check | worst err / bound, all elements | worst, last 1024 | elements checked | result |",
             "|---|---:|---:|---:|---|"]
    for name, w in results:
        lines.append(f"| {name} | {w.all:.3f} | {w.tail:.3f} | {w.checked:,} | {'ok' if w.ok else 'FAIL'} |")
    lines += ["", "| check | got | float64 reference | rel err | result |", "|---|---:|---:|---:|---|",
              f"| LARS trust ratio | {got_ratio:.8g} | {ratio:.8g} | {ratio_err:.1e} | "
              f"{'ok' if ratio_err <= RATIO_TOL else 'FAIL'} |",
              f"| tensor_norms | {norm:.8g} | {norm_ref:.8g} | {norm_err:.1e} | "
              f"{'ok' if norm_err <= RATIO_TOL else 'FAIL'} |"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
