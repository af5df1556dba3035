"""Step time with many param groups: a 24-block transformer with one group per block and the usual
decay/no-decay split (layer-wise LR decay, as fine-tuning recipes and the Hugging Face Trainer build them).

Compares, on the same groups and gradients, in one run (paired and interleaved, median of the repeats):
  * ours: LayerwiseAdamW, one engine call per (recipe, device, dtype) for all groups;
  * ours, one call per group: one LayerwiseAdamW per group (what the engine did before groups were batched);
  * torch.optim.AdamW(fused=True) and AdamW(foreach=True) with the same groups.
Prints engine calls per step and step times with ratios, for a small width (call overhead dominates) and a
wider one (memory traffic dominates).

    python benchmarks/many_groups.py [--blocks 24] [--widths 64,256] [--repeats 31]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

# As in tests/conftest.py: OpenMP threads that spin at the end of each parallel region cost several times the
# step on a shared machine, and more for the optimizer with more parallel regions; sleeping changes no result.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import torch_layerlr.optim._base as base  # noqa: E402
from torch_layerlr.optim import LayerwiseAdamW  # noqa: E402


def transformer_shapes(d: int, blocks: int, vocab: int = 1000) -> list[tuple[str, tuple[int, ...]]]:
    """(kind, shape) of a pre-norm transformer: embeddings, blocks (attention, MLP, two norms), head."""
    out = [("embed", (vocab, d)), ("embed", (512, d))]
    for _ in range(blocks):
        out += [("norm", (d,)), ("norm", (d,)), ("matrix", (3 * d, d)), ("bias", (3 * d,)), ("matrix", (d, d)),
                ("bias", (d,)), ("norm", (d,)), ("norm", (d,)), ("matrix", (4 * d, d)), ("bias", (4 * d,)),
                ("matrix", (d, 4 * d)), ("bias", (d,))]
    out += [("norm", (d,)), ("norm", (d,)), ("matrix", (vocab, d))]
    return out


def llrd_groups(params: list[torch.Tensor], kinds: list[str], blocks: int, decay: float = 0.9
                ) -> list[dict]:
    """One group per (layer, decay/no-decay): embeddings, each block, the head; lr decayed towards the input."""
    per_block = 12
    layers = [list(range(2))] + [list(range(2 + b * per_block, 2 + (b + 1) * per_block)) for b in range(blocks)]
    layers.append(list(range(2 + blocks * per_block, len(params))))
    groups = []
    for depth, idx in enumerate(layers):
        lr = 1e-3 * decay ** (len(layers) - 1 - depth)
        decayed = [params[i] for i in idx if kinds[i] in ("matrix", "embed")]
        plain = [params[i] for i in idx if kinds[i] not in ("matrix", "embed")]
        for ps, wd in ((decayed, 0.01), (plain, 0.0)):
            if ps:
                groups.append({"params": ps, "lr": lr, "weight_decay": wd})
    return groups


class Setup:
    def __init__(self, name: str, params: list[torch.Tensor], make) -> None:
        self.name, self.params = name, params
        self.opts = make(params)

    def step(self) -> None:
        for opt in self.opts:
            opt.step()


def build(d: int, blocks: int) -> list[Setup]:
    shapes = transformer_shapes(d, blocks)
    kinds = [k for k, _ in shapes]
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen) * 0.02 for _, s in shapes]
    grads = [torch.randn(s, generator=gen) * 1e-3 for _, s in shapes]

    def params():
        ps = [torch.nn.Parameter(x.clone()) for x in init]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        return ps

    def groups_of(ps):
        return llrd_groups(ps, kinds, blocks)

    return [
        Setup("ours: LayerwiseAdamW", params(), lambda ps: [LayerwiseAdamW(groups_of(ps))]),
        Setup("ours, one call per group", params(), lambda ps: [LayerwiseAdamW([g]) for g in groups_of(ps)]),
        Setup("torch AdamW(fused=True)", params(), lambda ps: [torch.optim.AdamW(groups_of(ps), fused=True)]),
        Setup("torch AdamW(foreach=True)", params(), lambda ps: [torch.optim.AdamW(groups_of(ps), foreach=True)]),
    ]


def engine_calls(setup: Setup) -> int:
    """Engine calls in one step of ``setup`` (0 for torch's optimizers)."""
    count = [0]
    real = base.fused_step_

    def counting(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    base.fused_step_ = counting
    try:
        setup.step()
    finally:
        base.fused_step_ = real
    return count[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=24)
    ap.add_argument("--widths", default="64,256")
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    print(f"# Many param groups: {args.blocks}-block transformer, one group per layer x (decay, no decay)")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n")
    for d in (int(w) for w in args.widths.split(",")):
        setups = build(d, args.blocks)
        n_params = sum(p.numel() for p in setups[0].params)
        n_groups = len(setups[0].opts[0].param_groups)
        calls = {s.name: engine_calls(s) for s in setups}
        for _ in range(args.warmup):
            for s in setups:
                s.step()
        times: dict[str, list[float]] = {s.name: [] for s in setups}
        for _ in range(args.repeats):  # interleaved: every setup sees the same machine state
            for s in setups:
                t0 = time.perf_counter()
                s.step()
                times[s.name].append(time.perf_counter() - t0)
        ref = statistics.median(times["torch AdamW(fused=True)"])
        print(f"## width {d}: {n_params / 1e6:.2f} M params, {len(setups[0].params)} tensors, {n_groups} groups\n")
        print("| optimizer | engine calls / step | step (ms, median) | vs torch AdamW(fused) |")
        print("|---|---|---|---|")
        for s in setups:
            med = statistics.median(times[s.name])
            shown = str(calls[s.name]) if s.name.startswith("ours") else "-"
            print(f"| {s.name} | {shown} | {med * 1e3:.3f} | {med / ref:.2f}x |")
        print()


if __name__ == "__main__":
    main()
