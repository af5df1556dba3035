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


def to_float(name: str, state: dict[str, Any], shape: torch.Size) -> Tensor:
    """Buffer ``name`` of ``state`` as float32 values, whatever its form."""
    value = state[name]
    if value.dtype != torch.uint8:
        return value.detach().float()
    # the engine's own map and decoder (NOTE: [dynamic quantization map] in csrc/engine/quant_map.h), on the CPU
    absmax = state[f"{name}_absmax"].detach().float().cpu().contiguous()
    values = torch.ops.layerlr.dequantize_blockwise(value.detach().cpu().contiguous(), absmax,
                                                    name not in SECOND_MOMENTS)
    return values.to(value.device).reshape(shape)


def from_float(name: str, values: Tensor, param: Tensor, precision: str) -> dict[str, Tensor]:
    """float32 ``values`` of buffer ``name`` in the form ``precision`` (bf16 rounds to nearest, int8 to the nearest
    code: a checkpoint converts deterministically)."""
    if precision == "fp32":
        return {name: values.to(param.dtype).reshape(param.shape).clone()}
    if precision == "bf16":
        return {name: values.to(torch.bfloat16).reshape(param.shape).contiguous()}
    codes, absmax = torch.ops.layerlr.quantize_blockwise(values.detach().float().cpu().contiguous(),
                                                         name not in SECOND_MOMENTS)
    return {name: codes.reshape(param.shape).to(param.device), f"{name}_absmax": absmax.to(param.device)}
