"""The hostile-case harness: a case is a named callable that reports what happened, judged here.

Outcomes: ``refused`` (a Python exception naming the argument, every tensor unchanged), ``ok`` (a valid input
in disguise gave the plain input's result), or ``wrong`` (accepted bad input, a silent no-op, a partial update,
an error that does not name its argument, or a valid input refused). A crash is what the runner sees when the
process dies in the middle of a case.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Iterable, Optional

import torch

ERRORS = (ValueError, TypeError, RuntimeError, KeyError, IndexError)


@dataclasses.dataclass
class Case:
    family: str
    name: str
    run: Callable[[], tuple[str, str]]


def bits(t: torch.Tensor) -> Optional[torch.Tensor]:
    """A copy of t's values that compares NaN to NaN (its bytes), or None for a tensor without data."""
    if t.is_meta or t.layout != torch.strided:
        return None
    c = t.detach().reshape(-1).clone(memory_format=torch.contiguous_format)
    return c.view(torch.uint8) if c.numel() and c.dtype != torch.bool else c


def unchanged(tensors: Iterable[torch.Tensor], before: list) -> Optional[int]:
    """The index of the first tensor whose values differ from ``before`` (from :func:`bits`), else None."""
    for i, (t, b) in enumerate(zip(tensors, before)):
        now = bits(t)
        if (now is None) != (b is None) or (now is not None and not torch.equal(now, b)):
            return i
    return None


def refused(fn: Callable[[], object], tensors: list, pattern: Optional[str]) -> tuple[str, str]:
    """``fn()`` must raise an exception whose message matches ``pattern`` and leave ``tensors`` as they were."""
    before = [bits(t) for t in tensors]
    try:
        fn()
    except ERRORS as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        changed = unchanged(tensors, before)
        if changed is not None:
            return "wrong", f"partial update: tensor {changed} changed before the error ({message})"
        if pattern is not None and not re.search(pattern, str(exc)):
            return "wrong", f"error does not name {pattern!r}: {message}"
        return "refused", message
    changed = unchanged(tensors, before)
    return "wrong", "accepted" + (" (a silent no-op)" if changed is None else " and stepped")


def same_result(plain: Callable[[], None], odd: Callable[[], None]) -> tuple[str, str]:
    """Both calls run; every tensor of ``odd`` must end equal to its counterpart in ``plain``."""
    plain()
    try:
        odd()
    except ERRORS as exc:
        return "wrong", f"valid input refused: {exc}"
    for a, b in zip(plain.tensors(), odd.tensors()):
        if a.shape != b.shape or not torch.equal(a.detach().double().nan_to_num(7.0), b.detach().double().nan_to_num(7.0)):
            return "wrong", "result differs from the plain call"
    return "ok", "same result as the plain call"
