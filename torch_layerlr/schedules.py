r"""Learning-rate schedules that work with any ``torch.optim`` optimizer.

Every scheduler here is an ordinary :class:`torch.optim.lr_scheduler.LRScheduler`: it sets each param
group's ``lr`` to ``base_lr * s(t)``, where ``base_lr`` is the group's initial lr (``base_lrs``,
stored as the group's ``initial_lr``) and ``t`` is the number of ``scheduler.step()`` calls made since
construction (``t = 0`` right after construction, ``self.last_epoch`` in torch's naming).  Call
``scheduler.step()`` once after each ``optimizer.step()``.

Each schedule is a factor ``s(t)`` with two forms, as torch's own schedulers have:

* ``get_lr`` (what ``step()`` uses) is *recursive*: it rescales the group's current lr,
  ``lr_t = lr_{t-1} * s(t) / s(t-1)`` (``s(-1) = 1``), so the schedules compound with other chainable
  schedulers in :class:`~torch.optim.lr_scheduler.ChainedScheduler` and
  :class:`~torch.optim.lr_scheduler.SequentialLR`: chained with torch's ``ExponentialLR(gamma)`` the lr is
  ``base_lr * s(t) * gamma**t``.  When the current lr is exactly the schedule's own value ``base_lr * s(t-1)``
  (no other scheduler has scaled it) the exact closed form ``base_lr * s(t)`` is written instead of the
  ratio, so a schedule alone never drifts by rounding.  A factor of 0 (``WarmupCosine``'s first warmup step,
  its end with ``min_lr_ratio=0``) cannot be divided out: after it the schedule restarts from
  ``base_lr * s(t)``, as torch's ``CosineAnnealingLR`` does at its zero.
* ``_get_closed_form_lr`` is ``base_lr * s(t)``, used by the deprecated ``step(epoch)`` form, by
  ``SequentialLR`` at a milestone, and when a scheduler is constructed with ``last_epoch >= 0`` (resume), so
  ``state_dict``/``load_state_dict`` resume exactly.

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

**Per-layer multiplier schedules** (two-step layer balancing, arXiv 2606.00340; research note
``layer_balancing.md``) are the one exception to "schedulers only write ``lr``": they own each group's
``lr_mult`` instead, one float per parameter, and never touch ``lr``, so they compose with any of the lr
schedulers above (or torch's) and work with every optimizer of this package.  A *layer* is a parameter tensor,
in the order of ``optimizer.param_groups`` (all groups, in order), unless ``layers`` gives one layer index per
parameter (tensors of one layer share its multiplier).  Call ``step()`` once after each ``optimizer.step()``.

``LayerMultSequence(optimizer, [[m_1, ..., m_L], ...])``: the t-th list at step t (the last one after the end).

``UnequalThenEqual(optimizer, first=(m_1, ..., m_L) | "optimal", budget=B)``: ``first`` for the first
``unequal_steps`` steps (default 1), then ``B/L`` for every layer (the per-step budget ``sum m_l = B`` is
kept).  ``"optimal"`` takes the one-step optimum of the two-layer theory,
``theory.two_step.optimal_split(B * lr, h, steps=1)``, which is ``(0, B)``: train only the last layer first.
Note (research note 3.6): given that first step, the equal split is *not* the best second step under the
theory; the alternating split is better (``python -m torch_layerlr validate`` prints the comparison).

``NormBalancedLR(optimizer)``: the paper's Frobenius-norm balancing rule (section 3.7),
``eta_i = 2 ||W_j|| / (||W_1|| + ||W_2||) * lr`` for two layers (``j != i``), generalised to L layers as
``m_l = L * (1/||W_l||) / sum_k (1/||W_k||)`` (``rule="inverse"``, the default) or
``m_l = L/(L-1) * (S - ||W_l||) / S`` with ``S = sum_k ||W_k||`` (``rule="complement"``): both are the paper's
rule at L = 2, average 1 over the layers, and are all 1 when the norms are equal.  Only layers with a nonzero
norm take part (a zero-initialised layer would get an infinite rate); with the default ``layers=None`` only
matrices do (tensors of two or more dimensions: biases and norm gains are not the paper's layers).  The others
keep the multiplier 1 (``scale``).  Recomputed from the current weights at construction and after every step.
"""

from __future__ import annotations

import math
import numbers
import warnings

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupCosine", "SGDR", "STLR", "LayerMultSchedule", "LayerMultSequence", "UnequalThenEqual",
           "NormBalancedLR"]


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
class _FactorLR(LRScheduler):
    """``lr_g(t) = base_lr_g * factor(t)`` alone; ``lr_g(t) = lr_g(t-1) * factor(t) / factor(t-1)`` in a chain."""

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
        t = self.last_epoch
        if self._is_initial and t > 0:  # constructed with last_epoch >= 0: resume at the closed form
            return self._get_closed_form_lr()
        return [self._rescale(group["lr"], base_lr, t) for group, base_lr in zip(self.optimizer.param_groups,
                                                                                 self.base_lrs)]

    def _rescale(self, lr, base_lr, t):
        """One recursive step of one group: its current ``lr`` times ``factor(t) / factor(t - 1)``."""
        prev = base_lr if t == 0 else self._lr_at(base_lr, t - 1)
        cur = self._lr_at(base_lr, t)
        if float(lr) == float(prev) or prev == 0:
            # the lr is this schedule's own value (exact closed form, no rounding drift), or a 0 factor that
            # cannot be divided out (restart from base_lr)
            return cur
        return lr * (cur / prev)

    def _get_closed_form_lr(self):
        t = self.last_epoch
        return [self._lr_at(base_lr, t) for base_lr in self.base_lrs]


# ----------------------------------------------------------------------------------------------
# schedules
# ----------------------------------------------------------------------------------------------
class WarmupCosine(_FactorLR):
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


class SGDR(_FactorLR):
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


class STLR(_FactorLR):
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


# ----------------------------------------------------------------------------------------------
# per-layer multiplier schedules (two-step layer balancing)
# ----------------------------------------------------------------------------------------------
def _check_multipliers(name: str, values, count: int) -> list[float]:
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of {count} numbers, got {values!r}") from exc
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries but there are {count} layers")
    for i, v in enumerate(values):
        if not (math.isfinite(v) and v >= 0.0):
            raise ValueError(f"{name}[{i}] must be a finite number >= 0, got {v!r}")
    return values


class LayerMultSchedule:
    """Base of the per-layer multiplier schedules: writes every param group's ``lr_mult`` as one float per
    parameter from per-layer multipliers (:meth:`multipliers`), at construction and after each :meth:`step`.

    Args:
        optimizer: an optimizer whose param groups take an ``lr_mult`` list (every optimizer of this package).
        layers: ``None`` (every parameter tensor is a layer, in ``param_groups`` order) or one layer index
            ``0..L-1`` per parameter, in that order (every index must be used).
        last_epoch: ``-1`` starts a new schedule; otherwise the step to resume at.
    """

    def __init__(self, optimizer, layers=None, last_epoch: int = -1) -> None:
        self._bind(optimizer, layers)
        self._start(last_epoch)

    def _bind(self, optimizer, layers) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        count = sum(len(g["params"]) for g in optimizer.param_groups)
        if layers is None:
            layers = list(range(count))
        layers = list(layers)
        if len(layers) != count or not all(_is_int(i) and i >= 0 for i in layers):
            raise ValueError(f"layers must give one layer index >= 0 per parameter ({count} parameters), "
                             f"got {layers!r}")
        self.layers = [int(i) for i in layers]
        self.num_layers = max(self.layers, default=-1) + 1
        if set(self.layers) != set(range(self.num_layers)):
            raise ValueError(f"layers must use every index 0..{self.num_layers - 1}, got {sorted(set(self.layers))}")

    def _start(self, last_epoch: int) -> None:
        self.last_epoch = _check_last_epoch(last_epoch)
        self._last_mult: list[float] = []
        self.step()

    def multipliers(self, t: int) -> list[float]:  # pragma: no cover - abstract
        """The per-layer multipliers for step ``t`` (``t = 0`` is the first optimizer step)."""
        raise NotImplementedError

    def layer_params(self) -> list[list]:
        """The parameter tensors of each layer."""
        out: list[list] = [[] for _ in range(self.num_layers)]
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        for p, i in zip(params, self.layers):
            out[i].append(p)
        return out

    def _apply(self, mult: list[float]) -> None:
        mult = _check_multipliers("multipliers", mult, self.num_layers)
        k = 0
        for group in self.optimizer.param_groups:
            n = len(group["params"])
            group["lr_mult"] = [mult[i] for i in self.layers[k:k + n]]
            k += n
        self._last_mult = mult

    def step(self) -> None:
        """Advance one step and write the multipliers of the new step into every group's ``lr_mult``."""
        self.last_epoch += 1
        self._apply(self.multipliers(self.last_epoch))

    def get_last_mult(self) -> list[float]:
        """The per-layer multipliers last written."""
        return list(self._last_mult)

    def state_dict(self) -> dict:
        """Everything but the optimizer (as torch's schedulers). The optimizer's own state dict holds the
        ``lr_mult`` lists, so loading both resumes exactly."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the attributes saved by :meth:`state_dict` (does not rewrite ``lr_mult``; load the optimizer's
        state dict for that, as with torch's schedulers)."""
        self.__dict__.update(state_dict)


class LayerMultSequence(LayerMultSchedule):
    """Per-layer multipliers given step by step: ``sequence[t]`` at step ``t`` and the last entry afterwards,
    e.g. ``[[0, B], [B, 0]]`` (alternating) or a split found by :func:`theory.two_step.best_two_step_schedule`."""

    def __init__(self, optimizer, sequence, layers=None, last_epoch: int = -1) -> None:
        self._bind(optimizer, layers)
        sequence = list(sequence)
        if not sequence:
            raise ValueError("sequence must hold at least one list of per-layer multipliers")
        self.sequence = [_check_multipliers(f"sequence[{i}]", m, self.num_layers) for i, m in enumerate(sequence)]
        self._start(last_epoch)

    def multipliers(self, t: int) -> list[float]:
        return list(self.sequence[min(t, len(self.sequence) - 1)])


class UnequalThenEqual(LayerMultSchedule):
    r"""Unequal per-layer multipliers ``first`` for ``unequal_steps`` steps, then the equal split ``budget / L``.

    Args:
        optimizer: any optimizer of this package.
        first: per-layer multipliers ``(m_1, ..., m_L)`` summing to ``budget``, or ``"optimal"``: the one-step
            optimum of the two-layer theory (two layers only), :func:`theory.two_step.optimal_split` of the
            budget in learning-rate units (``budget * lr`` of the first parameter's group), which is
            ``(0, budget)`` at every width.
        budget: the per-step sum of the multipliers (default ``sum(first)``; required with ``"optimal"``).
        unequal_steps: how many steps use ``first`` (default 1).
        layers: as in :class:`LayerMultSchedule`.
        h: the hidden width for ``"optimal"`` (default: the last dimension of the first parameter).
        net: the theory's net for ``"optimal"``: 2 (1/h two-layer) or 3 (1/sqrt(h), fixed head).
    """

    def __init__(self, optimizer, first="optimal", budget=None, *, unequal_steps: int = 1, layers=None,
                 h=None, net: int = 2, last_epoch: int = -1) -> None:
        if not _is_int(unequal_steps) or unequal_steps < 0:
            raise ValueError(f"unequal_steps must be an int >= 0, got {unequal_steps!r}")
        self.unequal_steps = int(unequal_steps)
        if budget is not None and (not _is_real(budget) or budget < 0):
            raise ValueError(f"budget must be a finite number >= 0, got {budget!r}")
        self._bind(optimizer, layers)
        L = self.num_layers
        if isinstance(first, str):
            if first != "optimal":
                raise ValueError(f"first must be per-layer multipliers or 'optimal', got {first!r}")
            if budget is None:
                raise ValueError("first='optimal' needs a budget")
            if L != 2:
                raise ValueError(f"first='optimal' is the two-layer theory's; this optimizer has {L} layers")
            from torch_layerlr.theory import two_step

            lr = float(self.optimizer.param_groups[0]["lr"])
            if h is None:
                h = int(self.layer_params()[0][0].shape[-1])
            if lr > 0 and budget > 0:
                split = two_step.optimal_split(float(budget) * lr, h, steps=1, layers=net)
                first = [split.eta1 / lr, float(budget) - split.eta1 / lr]
            else:
                first = [0.0, float(budget)]
        first = _check_multipliers("first", first, L)
        total = math.fsum(first)
        if budget is None:
            budget = total
        elif abs(total - budget) > 1e-12 * max(abs(budget), 1.0):
            raise ValueError(f"first sums to {total!r} but budget is {budget!r}")
        self.first, self.budget = first, float(budget)
        self._start(last_epoch)

    def multipliers(self, t: int) -> list[float]:
        if t < self.unequal_steps:
            return list(self.first)
        return [self.budget / self.num_layers] * self.num_layers


class NormBalancedLR(LayerMultSchedule):
    r"""The paper's Frobenius-norm layer balancing (arXiv 2606.00340, section 3.7 of the research note):
    two layers get :math:`\eta_{W_i} = 2\|W_j\|_F/(\|W_1\|_F + \|W_2\|_F)\cdot` ``lr`` (:math:`j \ne i`), so the
    layer with the smaller norm learns faster, and the rates become equal as the norms balance.  Over the
    :math:`L` balanced layers:

    * ``rule="inverse"`` (default): :math:`m_l = L\,\|W_l\|^{-1} / \sum_k\|W_k\|^{-1}`;
    * ``rule="complement"``: :math:`m_l = \frac{L}{L-1}\,(S - \|W_l\|)/S`, :math:`S = \sum_k\|W_k\|`.

    Both equal the paper's rule for two layers and average 1; ``scale`` multiplies them.  A layer's norm is over
    all its tensors; ``eps`` is added to each norm.  Balanced layers are those whose norm (plus ``eps``) is
    nonzero and, with ``layers=None`` (every tensor its own layer), that are matrices (``ndim >= 2``); every
    other layer, e.g. a zero-initialised bias, keeps the multiplier ``scale`` (1 by default), as does a lone
    balanced layer.  Recomputed from the current weights at construction and after every step.
    """

    RULES = ("inverse", "complement")

    def __init__(self, optimizer, rule: str = "inverse", scale: float = 1.0, eps: float = 0.0, layers=None,
                 last_epoch: int = -1) -> None:
        if rule not in self.RULES:
            raise ValueError(f"rule must be one of {self.RULES}, got {rule!r}")
        if not _is_real(scale) or scale < 0:
            raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
        if not _is_real(eps) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        self.rule, self.scale, self.eps = rule, float(scale), float(eps)
        self.matrices_only = layers is None
        super().__init__(optimizer, layers, last_epoch)

    def layer_norms(self) -> list[float]:
        """The Frobenius norm of each layer (over all its tensors), plus ``eps``."""
        out = []
        for params in self.layer_params():
            sq = math.fsum(float(p.detach().double().pow(2).sum()) for p in params)
            out.append(math.sqrt(sq) + self.eps)
        return out

    def balanced(self, norms: list[float]) -> list[bool]:
        """Which layers take part in the balance, given their norms."""
        params = self.layer_params()
        return [n > 0.0 and (not self.matrices_only or params[i][0].dim() >= 2) for i, n in enumerate(norms)]

    def multipliers(self, t: int) -> list[float]:
        norms = self.layer_norms()
        if not all(math.isfinite(n) for n in norms):
            raise ValueError(f"NormBalancedLR: non-finite layer norms {norms}")
        active = self.balanced(norms)
        mult = [self.scale] * len(norms)
        picked = [n for n, a in zip(norms, active) if a]
        L = len(picked)
        if L < 2:
            return mult
        if self.rule == "inverse":
            total = math.fsum(1.0 / n for n in picked)
            values = [self.scale * L * (1.0 / n) / total for n in picked]
        else:
            total = math.fsum(picked)
            values = [self.scale * L / (L - 1) * (total - n) / total for n in picked]
        slots = [i for i, a in enumerate(active) if a]
        for i, v in zip(slots, values):
            mult[i] = v
        return mult
