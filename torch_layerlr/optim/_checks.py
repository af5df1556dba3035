"""Checks of everything that reaches an optimizer from outside: hyperparameters, param groups, the state a user
edits in ``opt.state``, and loaded checkpoints (untrusted input: every value is checked before any is used).

Each check raises ``ValueError`` / ``TypeError`` naming the argument or the checkpoint key, and changes nothing.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["check_float", "check_betas", "check_unique_params", "check_step_value", "check_state_tensor",
           "check_param_state", "check_state_dict_layout"]


def check_float(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` naming ``name`` if it is not in the range."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a one-element tensor, got shape {tuple(value.shape)}")
        number = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"{name} must be a number, got {value!r}")
    below = number <= low if low_open else number < low
    above = number >= high if high_open else number > high
    if math.isnan(number) or below or above:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"Invalid {name}: {value!r} (expected a value in {lo}{low}, {high}{hi})")
    return number


def check_betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return (check_float("betas[0]", betas[0], low=0.0, high=1.0, high_open=True),
            check_float("betas[1]", betas[1], low=0.0, high=1.0, high_open=True))


def check_unique_params(params: Sequence[Any], where: str) -> None:
    """A parameter listed twice would be stepped twice per step, by two threads at once: refuse it.

    (``torch.optim`` only warns; the fused kernels would race on the shared memory.)"""
    seen: dict[int, int] = {}
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: params[{i}] is a {type(p).__name__}, expected a Tensor")
        j = seen.setdefault(id(p), i)
        if j != i:
            raise ValueError(f"{where}: params[{i}] is the same tensor as params[{j}]: each parameter may appear "
                             f"only once in an optimizer")


def check_step_value(name: str, step: Any) -> float:
    """A step count: a number or a one-element real tensor, finite and >= 0."""
    if isinstance(step, Tensor):
        if step.numel() != 1 or step.is_complex() or step.dtype == torch.bool:
            raise ValueError(f"{name} must be a one-element real tensor or a number, got "
                             f"{step.dtype} of shape {tuple(step.shape)}")
        if step.is_meta:
            raise ValueError(f"{name} is a meta tensor: a step count needs a value")
        value = float(step)
    elif isinstance(step, (int, float)) and not isinstance(step, bool):
        value = float(step)
    else:
        raise ValueError(f"{name} must be a number or a one-element tensor, got {type(step).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} is {value}: a step count must be finite and >= 0")
    return value


_LOW_DTYPES = {"bf16": torch.bfloat16, "int8": torch.uint8}


def check_state_tensor(name: str, value: Any, param: Tensor, *, same_device: bool = True,
                       precision: str = "fp32") -> None:
    """A per-parameter state buffer: a strided float tensor shaped like its param (and, for state the kernels
    use as it is, with its param's dtype and device). Low-precision state (``precision`` 'bf16' or 'int8') is a
    contiguous bfloat16 or uint8 tensor shaped like its param; 'absmax' is an int8 buffer's float32 scales, one
    per block of 256 elements."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(value).__name__}")
    if value.layout != torch.strided:
        raise ValueError(f"{name} has layout {value.layout}: optimizer state must be a dense tensor")
    if precision != "fp32":
        _check_low_state_tensor(name, value, param, same_device, precision)
        return
    if tuple(value.shape) != tuple(param.shape):
        raise ValueError(f"{name} has shape {tuple(value.shape)} but its parameter has shape {tuple(param.shape)}")
    if not (value.is_floating_point() or value.is_complex()) or value.is_complex() != param.is_complex():
        raise ValueError(f"{name} has dtype {value.dtype}, which cannot hold the state of a {param.dtype} parameter")
    if same_device:
        if value.dtype != param.dtype:
            raise ValueError(f"{name} has dtype {value.dtype} but its parameter has dtype {param.dtype}")
        if value.device != param.device:
            raise ValueError(f"{name} is on {value.device} but its parameter is on {param.device}")


def _check_low_state_tensor(name: str, value: Tensor, param: Tensor, same_device: bool, precision: str) -> None:
    if precision == "absmax":
        blocks = (param.numel() + 255) // 256
        if value.dtype != torch.float32 or tuple(value.shape) != (blocks,):
            raise ValueError(f"{name} must be a float32 tensor of shape ({blocks},) (one absmax per 256 elements of "
                             f"its parameter), got {value.dtype} of shape {tuple(value.shape)}")
    else:
        if value.dtype != _LOW_DTYPES[precision]:
            raise ValueError(f"{name} has dtype {value.dtype}: state_precision={precision!r} keeps "
                             f"{_LOW_DTYPES[precision]} state")
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"{name} has shape {tuple(value.shape)} but its parameter has shape "
                             f"{tuple(param.shape)}")
    if value.is_meta:
        raise ValueError(f"{name} is a meta tensor: optimizer state needs values")
    if precision == "absmax" and not same_device and not bool(((value >= 0) & value.isfinite()).all()):
        raise ValueError(f"{name} holds a negative or non-finite absmax")  # a crafted checkpoint
    if same_device:
        if not value.is_contiguous():
            raise ValueError(f"{name} is not contiguous: low-precision state must be")
        if value.device != param.device:
            raise ValueError(f"{name} is on {value.device} but its parameter is on {param.device}")


def check_param_state(where: str, state: Any, param: Tensor, names: Iterable[str], *,
                      same_device: bool = True) -> None:
    """The state of one parameter: a dict with a valid ``step`` and exactly the buffers ``names`` of its recipe,
    or empty (not stepped yet). A buffer is in any form (NOTE: [state precision]): values (float, bfloat16), or
    uint8 codes with their ``<name>_absmax`` scales."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{where} must be a dict, got {type(state).__name__}")
    if not state:
        return
    names = tuple(names)
    coded = tuple(n for n in names if isinstance(state.get(n), Tensor) and state[n].dtype == torch.uint8)
    keeps = ["step", *names, *(f"{n}_absmax" for n in coded)]
    for key in state:
        if key not in keeps:
            raise ValueError(f"{where} has an unexpected entry {key!r}: this parameter's state keeps {keeps}")
    for key in keeps:
        if key not in state:
            raise ValueError(f"{where} is missing {key!r}: this parameter's state keeps {keeps}")
    check_step_value(f"{where}['step']", state["step"])
    for key in names:
        form = "int8" if key in coded else "fp32"
        check_state_tensor(f"{where}[{key!r}]", state[key], param, same_device=same_device, precision=form)
        if key in coded:
            check_state_tensor(f"{where}[{key + '_absmax'!r}]", state[f"{key}_absmax"], param,
                               same_device=same_device, precision="absmax")


def check_state_dict_layout(state_dict: Any, groups: Sequence[Mapping[str, Any]]) -> dict[Any, Tensor]:
    """The top level of a checkpoint: ``state`` and ``param_groups``, groups matching ours in number and size.

    Returns the map from the checkpoint's parameter keys to our parameters (``torch.optim``'s mapping: by
    position in the groups)."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    for key in ("state", "param_groups"):
        if key not in state_dict:
            raise ValueError(f"state_dict is missing {key!r}")
    saved_groups = state_dict["param_groups"]
    if not isinstance(saved_groups, (list, tuple)):
        raise ValueError(f"state_dict['param_groups'] must be a list, got {type(saved_groups).__name__}")
    if not isinstance(state_dict["state"], Mapping):
        raise ValueError(f"state_dict['state'] must be a dict, got {type(state_dict['state']).__name__}")
    if len(saved_groups) != len(groups):
        raise ValueError(f"state_dict['param_groups'] has {len(saved_groups)} groups, the optimizer has {len(groups)}")
    id_map: dict[Any, Tensor] = {}
    for i, (saved, group) in enumerate(zip(saved_groups, groups)):
        if not isinstance(saved, Mapping) or not isinstance(saved.get("params"), (list, tuple)):
            raise ValueError(f"state_dict['param_groups'][{i}] must be a dict with a 'params' list")
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(f"state_dict['param_groups'][{i}] has {len(saved['params'])} params, the optimizer's "
                             f"group {i} has {len(group['params'])}")
        for key, p in zip(saved["params"], group["params"]):
            if key in id_map:
                raise ValueError(f"state_dict['param_groups'][{i}] lists param key {key!r} twice")
            id_map[key] = p
    for key in state_dict["state"]:
        if key not in id_map:
            raise ValueError(f"state_dict['state'] has an entry for param key {key!r}, which no param group lists")
    return id_map
