"""Low-precision optimizer state on the Python side (NOTE: [state precision] in ``csrc/engine/state_precision.h``):
which form a parameter's state takes, making it, and converting a checkpoint's state from one form to another.

Forms of one state buffer (``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, ``filter``):
  fp32: a tensor in the param's dtype (the kernels' full-precision state, as before low-precision state existed)
  bf16: a bfloat16 tensor, written by the engine with stochastic rounding
  int8: uint8 codes (the dynamic map of bitsandbytes' 8-bit optimizers) and ``<name>_absmax``, one float32 absmax
        per block of ``QUANT_BLOCK`` elements of the row-major order
Tensors with fewer than ``INT8_MIN_NUMEL`` elements keep fp32 state under ``"int8"``, as bitsandbytes' 8-bit
optimizers do (their ``min_8bit_size``): their state is too small to matter and quantizing it costs accuracy.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

__all__ = ["PRECISIONS", "QUANT_BLOCK", "INT8_MIN_NUMEL", "check_precision", "tensor_precision", "form_of",
           "new_state", "to_float", "from_float", "SECOND_MOMENTS"]

PRECISIONS = ("fp32", "bf16", "int8")
QUANT_BLOCK = 256  # kQuantBlock of the engine
INT8_MIN_NUMEL = 4096
SECOND_MOMENTS = ("exp_avg_sq",)  # the state that takes the unsigned map


def check_precision(value: Any) -> str:
    if value not in PRECISIONS:
        raise ValueError(f"state_precision must be one of {PRECISIONS}, got {value!r}")
    return value


def tensor_precision(group_precision: str, param: Tensor) -> str:
    """The form of ``param``'s state under its group's ``state_precision``."""
    if group_precision == "int8" and param.numel() < INT8_MIN_NUMEL:
        return "fp32"
    return group_precision


def form_of(name: str, state: dict[str, Any]) -> str:
    """The form a buffer is kept in (read from its dtype: the state records it)."""
    value = state[name]
    if value.dtype == torch.uint8:
        return "int8"
    return "bf16" if value.dtype == torch.bfloat16 else "fp32"


def blocks(numel: int) -> int:
    return (numel + QUANT_BLOCK - 1) // QUANT_BLOCK


def new_state(name: str, param: Tensor, precision: str) -> dict[str, Tensor]:
    """Zero state ``name`` (and its absmax for int8) for ``param``."""
    if precision == "fp32":
        return {name: torch.zeros_like(param, memory_format=torch.preserve_format)}
    if precision == "bf16":
        return {name: torch.zeros(param.shape, dtype=torch.bfloat16, device=param.device)}
    # all-zero absmax: every code decodes to 0
    return {name: torch.zeros(param.shape, dtype=torch.uint8, device=param.device),
            f"{name}_absmax": torch.zeros(blocks(param.numel()), dtype=torch.float32, device=param.device)}


@functools.lru_cache(maxsize=None)
def _dynamic_map(signed: bool) -> tuple[list[float], list[float], list[int], list[int]]:
    """The engine's map (quant_map.cpp): values by code, and for encoding the sorted magnitudes' midpoints and
    codes (positive side, negative side)."""
    decades = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    mags = [0.0, 1.0]
    for i, decade in enumerate(decades):
        parts = 2 ** i if signed else 2 ** (i + 1)
        for j in range(parts):
            lo, hi = 0.1 + 0.9 * j / parts, 0.1 + 0.9 * (j + 1) / parts
            mags.append(decade * ((lo + hi) / 2.0))
    mags.sort()
    f32 = [float(torch.tensor(m, dtype=torch.float32)) for m in mags]
    k = len(mags)
    values = [0.0] * 256
    pos = [127 + j if signed else j for j in range(k)]
    neg = [127 - min(j, k - 2) if signed else 0 for j in range(k)]
    for j in range(k):
        values[pos[j]] = f32[j]
        if signed and 1 <= j < k - 1:
            values[127 - j] = -f32[j]
    mids = [float(torch.tensor((f32[j] + f32[j + 1]) / 2.0, dtype=torch.float32)) for j in range(k - 1)]
    return values, mids, pos, neg


def to_float(name: str, state: dict[str, Any], shape: torch.Size) -> Tensor:
    """Buffer ``name`` of ``state`` as float32 values, whatever its form."""
    value = state[name]
    if value.dtype != torch.uint8:
        return value.detach().float()
    values = torch.tensor(_dynamic_map(name not in SECOND_MOMENTS)[0], dtype=torch.float32, device=value.device)
    flat = values[value.reshape(-1).long()]
    absmax = state[f"{name}_absmax"].detach().float().to(value.device)
    n = flat.numel()
    scale = absmax.repeat_interleave(QUANT_BLOCK)[:n]
    return (flat * scale).reshape(shape)


def from_float(name: str, values: Tensor, param: Tensor, precision: str) -> dict[str, Tensor]:
    """float32 ``values`` of buffer ``name`` in the form ``precision`` (bf16 rounds to nearest, int8 to the nearest
    code: a checkpoint converts deterministically)."""
    if precision == "fp32":
        return {name: values.to(param.dtype).reshape(param.shape).clone()}
    if precision == "bf16":
        return {name: values.to(torch.bfloat16).reshape(param.shape).contiguous()}
    table, mids, pos, neg = _dynamic_map(name not in SECOND_MOMENTS)
    flat = values.reshape(-1).float()
    n = flat.numel()
    padded = torch.zeros(blocks(n) * QUANT_BLOCK, dtype=torch.float32, device=flat.device)
    padded[:n] = flat
    absmax = padded.reshape(-1, QUANT_BLOCK).abs().amax(dim=1)
    inv = torch.where(absmax > 0, 1.0 / absmax, torch.zeros_like(absmax))
    x = (padded.reshape(-1, QUANT_BLOCK) * inv[:, None]).reshape(-1)[:n]
    # nearest magnitude: the upper one strictly above a midpoint (the engine's rule)
    j = torch.bucketize(x.abs(), torch.tensor(mids, dtype=torch.float32, device=x.device), right=False)
    codes = torch.where(x < 0, torch.tensor(neg, device=x.device)[j], torch.tensor(pos, device=x.device)[j])
    return {name: codes.to(torch.uint8).reshape(param.shape).contiguous(), f"{name}_absmax": absmax}
