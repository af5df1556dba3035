"""Low-precision optimizer state, emulated plainly in float64 from its documentation (NOTE: [state precision],
[dynamic quantization map], [stochastic rounding] in csrc/engine/): the oracle of tests/test_state_precision.py.

int8: the dynamic map of bitsandbytes' 8-bit optimizers (create_dynamic_map: per decade 10^-6..10^0 the midpoints of
2^i (signed) or 2^(i+1) (unsigned) equal parts of [0.1, 1], plus 0 and 1, the signed map adding the negated
midpoints), one absmax per 256 elements in row-major order, each value to the nearest code (the upper one only
strictly above the float32 midpoint of two neighbours). bf16: stochastic rounding, checked as "one of the two
bfloat16 neighbours" per element and as unbiased over many draws (the random bits are not emulated).

Nothing here imports torch_layerlr.
"""

from __future__ import annotations

import math

import torch

F64 = torch.float64
BLOCK = 256


def dynamic_map(signed: bool) -> list[float]:
    """The 256 code values in code order (ascending), as float32 numbers."""
    values = [0.0, 1.0]
    for i in range(7):
        parts = 2 ** i if signed else 2 ** (i + 1)
        bounds = [0.1 + 0.9 * j / parts for j in range(parts + 1)]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            m = 10.0 ** (i - 6) * (lo + hi) / 2
            values.append(m)
            if signed:
                values.append(-m)
    assert len(values) == 256
    return sorted(float(torch.tensor(v, dtype=torch.float32)) for v in values)


def quantize(values: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8, absmax float64 per block, margin): margin is how far each normalized value lies from the nearest
    decision midpoint, relative to it (small margins may round either way under float32 arithmetic)."""
    code_values = torch.tensor(dynamic_map(signed), dtype=F64)
    flat = values.detach().to(F64).reshape(-1)
    n = flat.numel()
    nblocks = (n + BLOCK - 1) // BLOCK
    padded = torch.zeros(nblocks * BLOCK, dtype=F64)
    padded[:n] = flat
    absmax = padded.reshape(nblocks, BLOCK).abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax)).repeat_interleave(BLOCK)[:n]
    x = torch.where(absmax.repeat_interleave(BLOCK)[:n] > 0, flat / scale, torch.zeros_like(flat))
    # candidates on the value's own side of zero (the signed map has no -1)
    allowed = torch.where(x[:, None] < 0, code_values[None, :] <= 0, code_values[None, :] >= 0)
    dist = torch.where(allowed, (x[:, None] - code_values[None, :]).abs(), torch.full((), math.inf, dtype=F64))
    codes = dist.argmin(dim=1)
    # margin: distance to the midpoints of the chosen code with its neighbours
    mids = (code_values[1:] + code_values[:-1]) / 2
    lo = torch.where(codes > 0, mids[(codes - 1).clamp(min=0)], torch.full((), -math.inf, dtype=F64))
    hi = torch.where(codes < 255, mids[codes.clamp(max=254)], torch.full((), math.inf, dtype=F64))
    margin = torch.minimum((x - lo).abs(), (hi - x).abs()) / x.abs().clamp(min=1e-30)
    return codes.to(torch.uint8).reshape(values.shape), absmax, margin.reshape(values.shape)


def dequantize(codes: torch.Tensor, absmax: torch.Tensor, signed: bool) -> torch.Tensor:
    code_values = torch.tensor(dynamic_map(signed), dtype=F64)
    flat = code_values[codes.reshape(-1).long()]
    return (flat * absmax.to(F64).repeat_interleave(BLOCK)[:flat.numel()]).reshape(codes.shape)


def bf16_neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bfloat16 values just below and above each float64 value (equal where it is representable)."""
    x32 = x.to(torch.float32)
    toward_zero = (x32.view(torch.int32) & ~0xFFFF).view(torch.float32).to(F64)
    away = torch.where(toward_zero.to(F64) == x, toward_zero,
                       ((x32.view(torch.int32) & ~0xFFFF) + 0x10000).view(torch.float32).to(F64))
    return torch.minimum(toward_zero, away), torch.maximum(toward_zero, away)
