"""Run by tests/test_state_codec.py in a fresh process per codec width (LAYERLR_CPU_CAPABILITY is read once per
process): quantizes fixed data and takes low-precision optimizer steps, then saves every resulting tensor to the
path given as the only argument, for a bitwise comparison across widths."""

from __future__ import annotations

import sys

import torch

from torch_layerlr.optim import DALS, LAMB, LayerwiseAdamW, LayerwiseSGD

OPTIMIZERS = {
    "adamw": lambda p, prec: LayerwiseAdamW(p, lr=1e-2, weight_decay=0.1, state_precision=prec),
    "lamb": lambda p, prec: LAMB(p, lr=1e-2, state_precision=prec),
    "sgd": lambda p, prec: LayerwiseSGD(p, lr=0.1, momentum=0.9, state_precision=prec),
    "dals": lambda p, prec: DALS(p, lr=0.1, total_steps=10, state_precision=prec),
}


def data(seed: int) -> torch.Tensor:
    """Values spanning the map's seven decades, with partial blocks, zero blocks and signed zeros."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5 * 256 + 77, generator=gen) * torch.exp(torch.randn(5 * 256 + 77, generator=gen) * 4)
    x[256:512] = 0.0
    x[600:620] = -0.0
    return x


def main(path: str) -> None:
    torch.set_num_threads(2)
    out = {}
    x = data(0)
    for signed in (True, False):
        codes, absmax = torch.ops.layerlr.quantize_blockwise(x if signed else x.abs(), signed)
        out[f"quantize/{signed}"] = (codes, absmax)
        out[f"dequantize/{signed}"] = torch.ops.layerlr.dequantize_blockwise(codes, absmax, signed)
    for name, make in OPTIMIZERS.items():
        for precision in ("bf16", "int8"):
            params = [torch.nn.Parameter(data(1).reshape(-1)[:4096 + 300].clone()), torch.nn.Parameter(data(2))]
            opt = make(params, precision)
            for step in range(3):
                for k, p in enumerate(params):
                    p.grad = data(10 * step + k + 3)[: p.numel()].reshape(p.shape) * 1e-2
                if name == "dals":
                    opt.step(loss=1.0 / (step + 1))
                else:
                    opt.step()
            out[f"{name}/{precision}"] = ([p.detach() for p in params], opt.state_dict()["state"])
    torch.save(out, path)


if __name__ == "__main__":
    main(sys.argv[1])
