r"""Learning-rate schedules that work with any ``torch.optim`` optimizer.

Every scheduler here is an ordinary :class:`torch.optim.lr_scheduler.LRScheduler`: it sets each param
group's ``lr`` to ``base_lr * s(t)``, where ``base_lr`` is the group's initial lr (``base_lrs``,
stored as the group's ``initial_lr``) and ``t`` is the number of ``scheduler.step()`` calls made since
construction (``t = 0`` right after construction, ``self.last_epoch`` in torch's naming).  Call
``scheduler.step()`` once after each ``optimizer.step()``.

The schedules are closed-form in ``t`` (``get_lr`` and ``_get_closed_form_lr`` compute the same thing
from ``self.last_epoch``), so ``state_dict``/``load_state_dict`` and the deprecated
``step(epoch)`` form are exact, and no hidden counter can drift.

Discriminative (per-layer) multipliers are *not* a scheduler concern: the optimizers of this package
take a per-tensor ``lr_mult`` param-group key and use ``lr_eff = group["lr"] * lr_mult[i]``.  The
schedulers below only ever write ``group["lr"]`` and never read or write ``lr_mult``, so a
discriminative multiplier is applied exactly once (compare research note A.9-8: the DALS benchmark's
``STLRScheduler`` divided the already-decayed group lr by ``2.6**(N-1-i)`` a second time).

Formulas (``T`` = ``total_steps``):

``WarmupCosine(optimizer, total_steps, warmup_steps=0, min_lr_ratio=0.0)``, with ``W = warmup_steps``
and ``rho = min_lr_ratio``::

    s(t) = t / W                                                 if t < W
    s(t) = rho + (1 - rho) * 0.5 * (1 + cos(pi * min(1, (t - W) / (T - W))))   otherwise

(linear warmup from 0, then cosine from 1 down to ``rho``, held at ``rho`` for ``t >= T``).  With
``rho = 0`` and ``W = floor(warmup_frac * T)`` this is the warmup+cosine schedule of DALS
(arXiv:2604.27295, research note A.3 step 1; there ``t = k - 1`` for the k-th optimizer step, which is
what you get by calling ``scheduler.step()`` after every ``optimizer.step()``).

``SGDR(optimizer, T_0, T_mult=2, eta_min_ratio=0.0)`` -- Loshchilov & Hutter, "SGDR: Stochastic
Gradient Descent with Warm Restarts", ICLR 2017 (arXiv:1608.03983), eq. (5).  Cycle ``i`` has length
``T_i = T_0 * T_mult**i`` scheduler steps; with ``T_cur`` the steps taken since the last restart and
``eta_min = eta_min_ratio * base_lr``::

    lr(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2

Identical to ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0, T_mult,
eta_min=eta_min_ratio * base_lr)`` stepped once per step, but computed in closed form from ``t``.
(DALS-Acc's in-optimizer SGDR, research note A.6, increments its counter *before* computing the lr;
that is this schedule shifted by one step.)

``STLR(optimizer, total_steps, cut_frac=0.1, ratio=32)`` -- slanted triangular learning rates of
ULMFiT, Howard & Ruder, "Universal Language Model Fine-tuning for Text Classification", ACL 2018
(arXiv:1801.06146), eq. (3)::

    cut = floor(T * cut_frac)
    p   = t / cut                                      if t < cut
    p   = 1 - (t - cut) / (cut * (1 / cut_frac - 1))   otherwise
    p   = min(1, max(0, p))
    lr  = base_lr * (1 + p * (ratio - 1)) / ratio

Guard: when ``floor(T * cut_frac) == 0`` (fewer than ``1 / cut_frac`` steps) ``cut = 1`` is used,
as in the DALS authors' ``STLRScheduler`` (``cut = max(1, int(T * cut_frac))``); the formula above
otherwise divides by zero.  ``base_lr`` plays the role of the paper's ``eta_max``.
"""

from __future__ import annotations

import math
import numbers
import warnings

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupCosine", "SGDR", "STLR"]


# ----------------------------------------------------------------------------------------------
# argument validation
# ----------------------------------------------------------------------------------------------
def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _check_positive_int(name: str, value) -> int:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_ratio_01(name: str, value) -> float:
    if not _is_real(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a float in [0, 1], got {value!r}")
    return float(value)


def _check_last_epoch(value) -> int:
    if not _is_int(value) or value < -1:
        raise ValueError(f"last_epoch must be an int >= -1, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------
# base class
# ----------------------------------------------------------------------------------------------
class _ClosedFormLR(LRScheduler):
    """``lr_g(t) = base_lr_g * factor(t)``, computed from ``self.last_epoch`` only."""

    def factor(self, t) -> float:  # pragma: no cover - abstract
        """Multiplicative factor applied to every group's ``base_lr`` at scheduler step ``t``."""
        raise NotImplementedError

    def _lr_at(self, base_lr, t):
        return base_lr * self.factor(t)

    def get_lr(self):
        if not getattr(self, "_get_lr_called_within_step", True):
            warnings.warn(
                "To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
                UserWarning,
                stacklevel=2,
            )
        return self._get_closed_form_lr()

    def _get_closed_form_lr(self):
        t = self.last_epoch
        return [self._lr_at(base_lr, t) for base_lr in self.base_lrs]


# ----------------------------------------------------------------------------------------------
# schedules
# ----------------------------------------------------------------------------------------------
class WarmupCosine(_ClosedFormLR):
    r"""Linear warmup for ``warmup_steps`` steps, then cosine decay to ``min_lr_ratio * base_lr``.

    ``s(t) = t/W`` for ``t < W``; otherwise
    ``s(t) = rho + (1-rho) * (1 + cos(pi * min(1, (t-W)/(T-W)))) / 2`` (see the module docstring).
    With ``warmup_steps > 0`` the first step (``t = 0``) uses lr 0, as in DALS.

    Args:
        optimizer: any :class:`torch.optim.Optimizer`.
        total_steps (int): ``T``, the number of scheduler steps after which the lr stays at the minimum.
        warmup_steps (int): ``W``, ``0 <= W < T``. Default 0 (no warmup).
        min_lr_ratio (float): ``rho`` in ``[0, 1]``; final lr as a fraction of ``base_lr``. Default 0.
        last_epoch (int): as in torch (``-1`` starts a new schedule).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.total_steps = _check_positive_int("total_steps", total_steps)
        if not _is_int(warmup_steps) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
        if warmup_steps >= total_steps:
            raise ValueError(
                f"warmup_steps must be smaller than total_steps ({total_steps}), got {warmup_steps!r}"
            )
        self.warmup_steps = int(warmup_steps)
        self.min_lr_ratio = _check_ratio_01("min_lr_ratio", min_lr_ratio)
        super().__init__(optimizer, _check_last_epoch(last_epoch))

    def factor(self, t) -> float:
        T, W, rho = self.total_steps, self.warmup_steps, self.min_lr_ratio
        if t < W:
            return max(0.0, t / W)
        progress = min(1.0, (t - W) / (T - W))
        return rho + (1.0 - rho) * 0.5 * (1.0 + math.cos(math.pi * progress))


class SGDR(_ClosedFormLR):
    r"""Cosine annealing with warm restarts (Loshchilov & Hutter 2017), counted in scheduler steps.

    Cycle lengths ``T_0, T_0*T_mult, T_0*T_mult**2, ...``; within a cycle
    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2`` with
    ``eta_min = eta_min_ratio * base_lr``.  Same values as torch's ``CosineAnnealingWarmRestarts``.

    Args:
        optimizer: any :class:`torch.optim.Optimizer`.
        T_0 (int): length of the first cycle, in scheduler steps (positive).
        T_mult (int): cycle-length multiplier, ``>= 1``. Default 2.
        eta_min_ratio (float): minimum lr as a fraction of ``base_lr``, in ``[0, 1]``. Default 0.
        last_epoch (int): as in torch.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_0: int,
        T_mult: int = 2,
        eta_min_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.T_0 = _check_positive_int("T_0", T_0)
        if not _is_int(T_mult) or T_mult < 1:
            raise ValueError(f"T_mult must be an int >= 1, got {T_mult!r}")
        self.T_mult = int(T_mult)
        self.eta_min_ratio = _check_ratio_01("eta_min_ratio", eta_min_ratio)
        super().__init__(optimizer, _check_last_epoch(last_epoch))

    def cycle_position(self, t):
        """``(T_cur, T_i)`` at scheduler step ``t >= 0``: steps into the current cycle and its length."""
        if t < 0:
            t = 0
        if self.T_mult == 1:
            return t % self.T_0, self.T_0
        start, T_i = 0, self.T_0
        while t >= start + T_i:  # O(log t) iterations, exact integer arithmetic
            start += T_i
            T_i *= self.T_mult
        return t - start, T_i

    def factor(self, t) -> float:
        T_cur, T_i = self.cycle_position(t)
        r = self.eta_min_ratio
        return r + (1.0 - r) * (1.0 + math.cos(math.pi * T_cur / T_i)) / 2

    def _lr_at(self, base_lr, t):
        # Same operation order as torch's CosineAnnealingWarmRestarts, so the values agree bit for bit.
        T_cur, T_i = self.cycle_position(t)
        eta_min = self.eta_min_ratio * base_lr
        return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2


class STLR(_ClosedFormLR):
    r"""Slanted triangular learning rate of ULMFiT (Howard & Ruder 2018, eq. 3).

    Linear increase from ``base_lr/ratio`` to ``base_lr`` over the first ``cut = floor(T*cut_frac)``
    steps, then linear decay back to ``base_lr/ratio``; ``p`` is clamped to ``[0, 1]`` so the lr
    stays at ``base_lr/ratio`` beyond the schedule.  If ``floor(T*cut_frac) == 0``, ``cut = 1``.

    Args:
        optimizer: any :class:`torch.optim.Optimizer`.
        total_steps (int): ``T`` = epochs x updates per epoch (positive).
        cut_frac (float): fraction of steps spent increasing the lr, in ``(0, 1)``. Default 0.1.
        ratio (float): how much smaller the lowest lr is than ``base_lr`` (``>= 1``). Default 32.
        last_epoch (int): as in torch.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        cut_frac: float = 0.1,
        ratio: float = 32,
        last_epoch: int = -1,
    ) -> None:
        self.total_steps = _check_positive_int("total_steps", total_steps)
        if not _is_real(cut_frac) or not 0.0 < cut_frac < 1.0:
            raise ValueError(f"cut_frac must be a float in (0, 1), got {cut_frac!r}")
        self.cut_frac = float(cut_frac)
        if not _is_real(ratio) or ratio < 1:
            raise ValueError(f"ratio must be a number >= 1, got {ratio!r}")
        self.ratio = ratio
        self.cut = max(1, math.floor(self.total_steps * self.cut_frac))
        super().__init__(optimizer, _check_last_epoch(last_epoch))

    def factor(self, t) -> float:
        cut, cut_frac, ratio = self.cut, self.cut_frac, self.ratio
        if t < cut:
            p = t / cut
        else:
            p = 1 - (t - cut) / (cut * (1 / cut_frac - 1))
        p = min(1.0, max(0.0, p))
        return (1 + p * (ratio - 1)) / ratio
