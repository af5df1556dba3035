r"""A learning rate from the data for any network: :math:`\eta = 1/(\tau S)` with :math:`S` the sharpness measured
on a fixed batch, re-measured as training moves.

The depth-scaling rule of :class:`~torch_layerlr.optim.DepthScaledSGD` sets :math:`\eta = 1/(\tau S^*)` with
:math:`S^*` the closed-form sharpness of a deep linear network's balanced global minimum (eq. 5 chain, eq. 28
res1, eq. 34 res2). A nonlinear network has no closed form, so :class:`SharpnessLR` measures the quantity the
rule is made of, :math:`S = \lambda_{\max}(\nabla^2\mathcal L)` (:func:`torch_layerlr.sharpness.top_eigenvalue`,
Lanczos on Hessian-vector products), and sets

.. math:: \eta_k = \frac{1-\beta}{1-d}\cdot\frac{1}{\tau\,S(\theta_{k_j})},\qquad k_j \le k < k_{j+1},

re-measured at the steps
:math:`k_j` = 0, 1, 2, 4, ..., then every ``every`` steps. Sharpness grows fast early in training (progressive
sharpening), hence the doubling schedule before the period. At a balanced global minimum of a deep linear
network :math:`S(\theta) = S^*`, so the rule is the closed-form one there, and it tends to it as training
converges (``tests/test_sharpness_rate.py``). :math:`\tau > 1/2` keeps plain gradient descent below the edge of
stability :math:`\eta S = 2`.

The factor :math:`(1-\beta)/(1-d)` carries the rule, derived for plain gradient descent, over to heavy-ball
momentum :math:`\beta` with dampening :math:`d` (a param group's ``momentum`` and ``dampening``): along a direction
of curvature :math:`S` the momentum step accumulates to the effective rate :math:`\eta(1-d)/(1-\beta)`, which
the rule sets to :math:`1/(\tau S)`; ``momentum_correction=False`` sets :math:`\eta` itself. Multipliers on top
of a group's ``lr`` (``lr_mult``) are kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional

import torch
from torch import Tensor
from torch.optim.lr_scheduler import LRScheduler

from torch_layerlr.optim._base import check_float

__all__ = ["SharpnessLR", "measure_sharpness", "MEASURE_ITERS", "MEASURE_TOL"]

#: Lanczos products and the relative residual of one measurement. The first measurement starts from a random
#: vector; each later one from the previous top eigenvector, so it usually stops after a few products.
MEASURE_ITERS = 20
MEASURE_TOL = 1e-2
#: The relative size of the random part added to a warm start (see :meth:`SharpnessLR._start`).
START_NOISE = 0.05


def measure_sharpness(loss_fn: Callable[[], Tensor], params: Sequence[Tensor], *, iters: int = MEASURE_ITERS,
                      tol: float = MEASURE_TOL, seed: int = 0, start: Optional[Sequence[Tensor]] = None) -> Any:
    """:func:`torch_layerlr.sharpness.top_eigenvalue` (imported here: it needs NumPy and SciPy, the optimizers
    themselves only torch). A non-positive or non-finite top eigenvalue is refused: no rate follows from it."""
    from torch_layerlr.sharpness import top_eigenvalue

    pair = top_eigenvalue(loss_fn, params, iters=iters, tol=tol, seed=seed, start=start)
    if not (math.isfinite(pair.value) and pair.value > 0):
        raise ValueError(f"the measured sharpness is {pair.value!r}: a rate 1/(tau*S) needs S > 0 (is the loss "
                         "locally concave, or not finite, on the measuring batch?)")
    return pair


def _measure_steps(every: int) -> Callable[[int], bool]:
    """Whether step ``k`` re-measures: 0, 1, 2, 4, ... below ``every``, then every ``every``-th step."""
    return lambda k: k % every == 0 if k >= every else (k & (k - 1)) == 0


class SharpnessLR(LRScheduler):
    r"""Sets every param group's ``lr`` to :math:`(1-\beta)/((1-d)\,\tau S)` (see the module doc), :math:`S` the
    top Hessian eigenvalue of ``loss_fn()`` (a closure computing the loss on a fixed batch) over ``params``
    (default: every parameter of the optimizer). ``cosine_steps`` = T anneals the rule's rate by the cosine factor
    :math:`\tfrac12(1 + \cos(\pi\min(k, T)/T))` at step k (a shape, not a rate: there is still no learning rate
    to choose).

    Call :meth:`step` after every optimizer step, as with any LR scheduler; the measurements happen inside it (so a
    training loop that times ``scheduler.step()`` counts their cost). Construction measures once and sets the
    rate for the first step. :attr:`records` holds one dict per measurement: ``step``, ``sharpness``, ``lr``
    (:math:`1/(\tau S)`, before the momentum factor), ``products`` (Hessian-vector products), ``residual``
    (relative), ``seconds``.

    The schedule's state (the step count, the last sharpness and eigenvector) is saved by :meth:`state_dict`; the
    closure is not, so a restored scheduler is built with its closure first and then loaded. Once a parameter is
    not finite (the run has diverged) a measurement keeps the rate and records a NaN sharpness; a finite
    non-positive sharpness raises ``ValueError``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, loss_fn: Callable[[], Tensor],
                 params: Optional[Iterable[Tensor]] = None, *, tau: float = 1.0, every: int = 100,
                 iters: int = MEASURE_ITERS, tol: float = MEASURE_TOL, seed: int = 0,
                 momentum_correction: bool = True, cosine_steps: Optional[int] = None, last_epoch: int = -1) -> None:
        if not callable(loss_fn):
            raise ValueError("loss_fn must be callable")
        self.tau = check_float("tau", tau, low=0.0, low_open=True)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            raise ValueError(f"iters must be a positive integer, got {iters!r}")
        self.every, self.iters, self.tol, self.seed = every, iters, check_float("tol", tol, low=0.0), seed
        if cosine_steps is not None and (isinstance(cosine_steps, bool) or not isinstance(cosine_steps, int)
                                         or cosine_steps < 1):
            raise ValueError(f"cosine_steps must be a positive integer or None, got {cosine_steps!r}")
        self.loss_fn, self.momentum_correction, self.cosine_steps = loss_fn, bool(momentum_correction), cosine_steps
        self.params = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
        if not self.params:
            raise ValueError("SharpnessLR got no parameters to measure")
        self.sharpness: Optional[float] = None
        self.vector: Optional[list[Tensor]] = None
        self.records: list[dict[str, Any]] = []
        super().__init__(optimizer, last_epoch)

    def _measure(self) -> None:
        t0 = time.perf_counter()
        if self.sharpness is not None and not all(bool(torch.isfinite(p).all()) for p in self.params):
            # the run has diverged: keep the rate (the training loop sees the loss), record that nothing was measured
            self.records.append(dict(step=self.last_epoch, sharpness=math.nan, lr=self.optimizer.param_groups[0]["lr"],
                                     products=0, residual=math.nan, seconds=time.perf_counter() - t0))
            return
        pair = measure_sharpness(self.loss_fn, self.params, iters=self.iters, tol=self.tol, seed=self.seed,
                                 start=self._start())
        self.sharpness, self.vector = float(pair.value), [v.detach() for v in pair.vector]
        self.records.append(dict(step=self.last_epoch, sharpness=self.sharpness, lr=1.0 / (self.tau * self.sharpness),
                                 products=pair.iterations, residual=pair.residual / pair.value,
                                 seconds=time.perf_counter() - t0))

    def _start(self) -> Optional[list[Tensor]]:
        """The previous top eigenvector plus a random part of relative size :data:`START_NOISE` (drawn from
        (seed, step)): a start with no component along the new top eigenvector would never find it (e.g. when the
        top of the spectrum changes places, as on a linear chain nearing its minimum)."""
        if self.vector is None:
            return None
        g = torch.Generator(device=self.vector[0].device).manual_seed(self.seed * 1_000_003 + self.last_epoch)
        noise = [torch.randn(v.shape, generator=g, dtype=v.dtype, device=v.device) for v in self.vector]
        scale = START_NOISE * torch.cat([v.reshape(-1) for v in self.vector]).norm() / torch.cat(
            [n.reshape(-1) for n in noise]).norm()
        return [v + scale * n for v, n in zip(self.vector, noise)]

    def get_lr(self) -> list[float]:
        if self.sharpness is None or _measure_steps(self.every)(self.last_epoch):
            self._measure()
        lr = self._anneal() / (self.tau * self.sharpness)
        return [lr * self._factor(group) for group in self.optimizer.param_groups]

    def _anneal(self) -> float:
        if self.cosine_steps is None:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(self.last_epoch, self.cosine_steps) / self.cosine_steps))

    def _factor(self, group: dict[str, Any]) -> float:
        if not self.momentum_correction:
            return 1.0
        momentum = float(group.get("momentum", 0.0))
        return (1.0 - momentum) / (1.0 - float(group.get("dampening", 0.0))) if momentum else 1.0

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "loss_fn", "params")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in ("optimizer", "loss_fn", "params")})
