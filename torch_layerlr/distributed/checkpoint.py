"""An optimizer's global (not per-parameter) state in a form torch.distributed.checkpoint carries.

``get_optimizer_state_dict`` keeps only ``state`` and ``param_groups`` of ``optimizer.state_dict()`` (it re-keys
both by parameter name), and ``set_optimizer_state_dict`` hands ``load_state_dict`` only those two: any other
top-level key, such as DALS's ``"dals"`` (its schedule step and loss phase), is lost. Every key of a param group
travels, though, in both directions and through ``dcp.save`` / ``dcp.load`` with any resharding. So the global
state is also written, as plain Python numbers, into the first param group under the same key, and read back
from there when the top-level key is missing. The values are the same on every rank (DALS's loss phase is
global), so DCP's deduplication of non-tensor values keeps the right one.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = ["put_in_groups", "take_from_groups"]


def put_in_groups(state_dict: dict[str, Any], key: str, value: dict[str, Any]) -> None:
    """Writes ``value`` (ints, floats and small tensors, stored as lists of floats) into the first param group of
    ``state_dict`` (a fresh dict from ``Optimizer.state_dict()``, not the live groups) under ``key``."""
    groups = state_dict.get("param_groups")
    if groups:
        groups[0][key] = {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in value.items()}


def take_from_groups(state_dict: dict[str, Any], key: str) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """``state_dict`` without ``key`` in its param groups (so it never lands in the live groups), and the first
    group's value under ``key`` with its lists as float64 tensors (None if no group has it)."""
    groups = state_dict.get("param_groups")
    if not isinstance(groups, list) or not any(isinstance(g, dict) and key in g for g in groups):
        return state_dict, None
    found = next(g[key] for g in groups if isinstance(g, dict) and key in g)
    stripped = [{k: v for k, v in g.items() if k != key} if isinstance(g, dict) else g for g in groups]
    if isinstance(found, dict):
        found = {k: _as_tensor(v, f"state_dict['param_groups'][...][{key!r}][{k!r}]") if isinstance(v, list) else v
                 for k, v in found.items()}
    return {**state_dict, "param_groups": stripped}, found


def _as_tensor(values: list, where: str) -> torch.Tensor:
    try:
        return torch.tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{where} must be a list of numbers: {exc}") from None
