"""DALS: depth-aware layer scaling (Yao et al., arXiv:2604.27295), the published algorithm and its variants.

Paper-faithful by default, quirks included (they are the algorithm the paper measured):

* the schedule's first factor is 0 when there is a warmup, so the first step moves nothing;
* the gradient filter starts at zero (Grokfast starts it at the first gradient);
* the trust ratio is applied *after* momentum (LARS applies it before) and clamped to [0.2, 5];
* weight decay is coupled (added to the gradient before the ratio and the momentum);
* one global loss phase, from an EMA of the loss, picks the filter coefficient for every layer.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional, Union

import torch
from torch import Tensor, nn

from torch_layerlr import layers
from torch_layerlr._ops import Recipe, dals_advance_, dals_phase_
from torch_layerlr.distributed.checkpoint import put_in_groups, take_from_groups
from torch_layerlr.distributed.loss import global_mean
from torch_layerlr.optim._base import FusedOptimizer, check_float, to_device

__all__ = ["DALS", "VARIANTS"]

#: The published defaults of each variant (section A.6 of our notes; the authors' classes).
VARIANTS: dict[str, dict[str, Any]] = {
    "dals": dict(lr=0.03, momentum=0.9, weight_decay=1e-4, alpha=0.6, warmup_frac=0.05, thresholds=(0.01, 0.002)),
    "fast": dict(lr=0.05, momentum=0.85, weight_decay=1e-4, alpha=0.6, warmup_frac=0.02, thresholds=(0.01, 0.002)),
    "acc": dict(lr=0.03, momentum=0.9, weight_decay=5e-4, alpha=0.7, warmup_frac=None, thresholds=(0.01, 0.001)),
}

#: The clamp of the trust ratio, as published.
RATIO_CLAMP = (0.2, 5.0)


def phase_table(variant: str, alpha: float) -> tuple[list[float], list[float]]:
    """Filter coefficient and gate of phases 0 (loss falling fast), 1 (falling) and 2 (flat).

    DALS-Fast bypasses the filter in phase 0 (gate 0: the raw gradient goes through, the filter is frozen).
    """
    slow = min(0.9, alpha + 0.1)
    if variant == "dals":
        return [max(0.3, alpha - 0.3), alpha, slow], [1.0, 1.0, 1.0]
    if variant == "fast":
        return [1.0, alpha, slow], [0.0, 1.0, 1.0]
    return [max(0.4, alpha - 0.15), alpha, slow], [1.0, 1.0, 1.0]


class DALS(FusedOptimizer):
    r"""DALS (variants ``"dals"``, ``"fast"``, ``"acc"``), exactly as published.

    Per step :math:`k` (from 1), per tensor :math:`\theta` of depth ratio :math:`d` (0 at the input, 1 at the
    output), with :math:`b = 0.3 + 0.4 d`, filter :math:`f` and momentum :math:`m` starting at 0:

    .. math::
        \begin{aligned}
        f &\leftarrow \alpha_\phi f + (1-\alpha_\phi) g, \qquad \hat g = b\,g + (1-b) f + \lambda\theta \\
        r &= \operatorname{clamp}\Bigl(\frac{\gamma\|\theta\|}{\|\hat g\|}, 0.2, 5\Bigr)
            \quad (1 \text{ if } \|\theta\| = 0 \text{ or } \|\hat g\| = 0) \\
        m &\leftarrow \mu m + \hat g, \qquad \theta \leftarrow \theta - \eta_0\, s(k)\, m_l\, r\, m
        \end{aligned}

    Schedule :math:`s`: ``"dals"``/``"fast"``: with :math:`t = k-1`, :math:`W = \lfloor f_w T\rfloor`,
    :math:`s = t/W` for :math:`t < W`, else :math:`\frac12(1+\cos(\pi\min(1, \frac{t-W}{T-W})))`.
    ``"acc"``: SGDR without warmup; a cycle counter :math:`c` is advanced first, restarts to 0 when it reaches
    the cycle length :math:`T_i` (then :math:`T_i \leftarrow T_i \cdot` ``restart_mult``), and
    :math:`s = \frac12(1+\cos(\pi c/T_i))`, :math:`T_0` = ``restart_steps``.

    Phase :math:`\phi` from the loss (one for the whole model): the first loss seeds an EMA,
    :math:`\bar L \leftarrow 0.95\bar L + 0.05 L` after that, :math:`\Delta = (\bar L_{\rm prev} - \bar L)/
    \max(|\bar L_{\rm prev}|, 10^{-8})`; :math:`\phi = 0` if :math:`\Delta > \tau_1`, 1 if
    :math:`\tau_2 < \Delta \le \tau_1`, else 2. :math:`\alpha_\phi` is :math:`\max(0.3, \alpha_0 - 0.3),
    \alpha_0, \min(0.9, \alpha_0 + 0.1)` (``"acc"``: :math:`\max(0.4, \alpha_0 - 0.15)` in phase 0;
    ``"fast"``: phase 0 bypasses the filter, :math:`\hat g = g + \lambda\theta` and :math:`f` frozen).
    The loss reaches the detector through :meth:`update_phase` (called before :meth:`step`, as in the
    authors' code), the closure's return value, or ``step(loss=...)``; without any, the phase stays 0. Training
    loops that call ``step()`` themselves (the Hugging Face ``Trainer``) feed it with
    :class:`torch_layerlr.integrations.DALSLossCallback`.

    The warmup+cosine (SGDR) factor multiplies each group's ``lr``. With ``schedule=False`` the lr goes through
    unchanged, for an external LR scheduler (e.g. a Trainer's): otherwise both would act.

    Args:
        params: an ``nn.Module`` (its top-level children are the layers, ordered by forward execution, see
            :mod:`torch_layerlr.layers`), or parameters / param groups with a ``depth_ratio`` key (a float or
            one float per parameter; default 0.5).
        variant: ``"dals"``, ``"fast"`` or ``"acc"``.
        lr, momentum, weight_decay, alpha, warmup_frac: None takes the variant's published default.
        trust_coefficient: :math:`\gamma`.
        total_steps: :math:`T` of the warmup+cosine schedule.
        restart_steps, restart_mult: the SGDR cycle of ``"acc"``, in steps.
        schedule: apply the built-in schedule (default); False leaves the lr to an external scheduler.
        maximize: maximize the objective.
        state_precision: ``"fp32"`` (default), ``"bf16"`` or ``"int8"`` optimizer state (see
            :class:`~torch_layerlr.optim.FusedOptimizer`).
        global_loss: with torch.distributed initialised, feed the detector the mean loss over
            ``process_group`` (one all-reduce of 8 bytes per step), so that every replica of a data-parallel run
            is in the same phase; False: each rank its own loss.
        process_group: the group to average the loss over (default: the world).
    """

    per_param_keys = {"lr_mult": (0.0, math.inf), "depth_ratio": (0.0, 1.0)}

    def __init__(self, params: Union[nn.Module, Iterable], variant: str = "dals", lr: Optional[float] = None,
                 momentum: Optional[float] = None, weight_decay: Optional[float] = None,
                 trust_coefficient: float = 0.02, alpha: Optional[float] = None,
                 warmup_frac: Optional[float] = None, total_steps: int = 10000, restart_steps: int = 1000,
                 restart_mult: int = 2, *, schedule: bool = True, maximize: bool = False,
                 state_precision: str = "fp32", global_loss: bool = True,
                 process_group: Optional[Any] = None) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"Unknown DALS variant {variant!r}: expected one of {sorted(VARIANTS)}")
        published = VARIANTS[variant]
        lr = check_float("lr", published["lr"] if lr is None else lr, low=0.0)
        momentum = check_float("momentum", published["momentum"] if momentum is None else momentum,
                               low=0.0, high=1.0, high_open=True)
        weight_decay = check_float("weight_decay", published["weight_decay"] if weight_decay is None
                                   else weight_decay, low=0.0)
        check_float("trust_coefficient", trust_coefficient, low=0.0)
        self.alpha = check_float("alpha", published["alpha"] if alpha is None else alpha, low=0.0, high=1.0)
        if variant == "acc":
            if warmup_frac is not None:
                raise ValueError("warmup_frac does not apply to variant 'acc' (SGDR without warmup)")
            self.warmup_frac = 0.0
        else:
            self.warmup_frac = check_float("warmup_frac", published["warmup_frac"] if warmup_frac is None
                                           else warmup_frac, low=0.0, high=1.0, high_open=True)
        for name, value, low in (("total_steps", total_steps, 1), ("restart_steps", restart_steps, 1),
                                 ("restart_mult", restart_mult, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.variant = variant
        self.total_steps = total_steps
        self.restart_steps = restart_steps
        self.restart_mult = restart_mult
        if not isinstance(schedule, bool):
            raise ValueError(f"schedule must be True or False, got {schedule!r}")
        if not isinstance(global_loss, bool):
            raise ValueError(f"global_loss must be True or False, got {global_loss!r}")
        self.global_loss = global_loss
        self.process_group = process_group
        self.schedule = schedule
        self.thresholds = published["thresholds"]
        self.phase_alpha, self.phase_gate = phase_table(variant, self.alpha)

        self._recorder: Optional[layers.ForwardOrderRecorder] = None
        if isinstance(params, nn.Module):
            # Depths come from the first forward pass, which runs before the first step.
            self._recorder = layers.ForwardOrderRecorder(params, by="children")
            params = [{"params": list(params.parameters()), "depth_ratio": None}]
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        depth_ratio=0.5, maximize=maximize, state_precision=state_precision)
        super().__init__(params, defaults)
        self._global = self._initial_global_state()

    # ---- the global (not per-parameter) state: step, SGDR cycle, loss phase -------------------------------
    # NOTE: [DALS global state on the device]
    # The schedule clock, the step's lr factor, the phase detector and its filter coefficients are float64
    # tensors kept where the params are (moved there at the first step) and advanced by one engine op
    # (layerlr::dals_advance_), which also reads GradScaler's found_inf there: a DALS step never waits for the
    # device, can be captured in a CUDA graph, and a compiled step does not recompile as the step count grows.
    def _initial_global_state(self) -> dict[str, Tensor]:
        return {
            "clock": torch.tensor([0.0, 0.0, float(self.restart_steps)], dtype=torch.float64),  # step, cycle, length
            "scale": torch.ones(1, dtype=torch.float64),  # the last step's schedule factor
            "detector": torch.zeros(3, dtype=torch.float64),  # [loss EMA, losses seen, phase]
            "filter_coef": torch.tensor([self.phase_alpha[0], self.phase_gate[0]], dtype=torch.float64),
        }

    def _advance(self, loss: Optional[Tensor], found_inf: Optional[Tensor]) -> None:
        g = self._global
        dals_advance_(g["clock"], g["scale"], g["detector"], g["filter_coef"], loss, found_inf,
                      variant=self.variant, schedule=self.schedule, total_steps=self.total_steps,
                      warmup_frac=self.warmup_frac, restart_mult=self.restart_mult, tau1=self.thresholds[0],
                      tau2=self.thresholds[1], phase_alpha=self.phase_alpha, phase_gate=self.phase_gate)

    #: the forward-order recorder hooks the original's model: a copy does not take it (NOTE in _resolve_depths)
    _transient_attrs = FusedOptimizer._transient_attrs | {"_recorder"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_recorder", None)

    @property
    def phase(self) -> int:
        """The current loss phase: 0 (loss falling fast), 1 (falling), 2 (flat)."""
        return int(self._global["detector"][2])

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`FusedOptimizer.state_dict`, with DALS's global state under ``"dals"``, and a copy in the first
        param group, which ``torch.distributed.checkpoint`` carries (:mod:`torch_layerlr.distributed.checkpoint`)."""
        out = super().state_dict()
        step, cycle, cycle_len = (int(v) for v in self._global["clock"].tolist())
        out["dals"] = {"step": step, "cycle": cycle, "cycle_len": cycle_len,
                       "detector": self._global["detector"].detach().cpu().clone(),
                       "filter_coef": self._global["filter_coef"].detach().cpu().clone()}
        put_in_groups(out, "dals", out["dals"])
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As :meth:`FusedOptimizer.load_state_dict`, with DALS's global state under ``"dals"`` (required and
        checked: step, SGDR cycle, the phase detector and its filter coefficients)."""
        if isinstance(state_dict, dict):
            state_dict, carried = take_from_groups(state_dict, "dals")
            if "dals" not in state_dict and carried is not None:  # e.g. through set_optimizer_state_dict
                state_dict = {**state_dict, "dals": carried}
            if "dals" not in state_dict:
                raise ValueError("state_dict is missing 'dals' (DALS's schedule step and loss phase)")
            saved = self._checked_global(state_dict["dals"])
            state_dict = {k: v for k, v in state_dict.items() if k != "dals"}
        super().load_state_dict(state_dict)  # checks the rest before anything is assigned
        device = self._global["clock"].device
        self._global = {"clock": torch.tensor([saved["step"], saved["cycle"], saved["cycle_len"]],
                                              dtype=torch.float64, device=device),
                        "scale": torch.ones(1, dtype=torch.float64, device=device),
                        "detector": saved["detector"].to(device), "filter_coef": saved["filter_coef"].to(device)}

    def _checked_global(self, saved: Any) -> dict[str, Any]:
        """A copy of a checkpoint's ``"dals"`` entry, every value checked."""
        if not isinstance(saved, dict):
            raise ValueError(f"state_dict['dals'] must be a dict, got {type(saved).__name__}")
        expected = ("step", "cycle", "cycle_len", "detector", "filter_coef")
        for key in expected:
            if key not in saved:
                raise ValueError(f"state_dict['dals'] is missing {key!r}")
        for key in saved:
            if key not in expected:
                raise ValueError(f"state_dict['dals'] has an unexpected entry {key!r}")
        out: dict[str, Any] = {}
        for key, low in (("step", 0), ("cycle", 0), ("cycle_len", 1)):
            value = saved[key]
            if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"state_dict['dals'][{key!r}] must be an int >= {low}, got {value!r}")
            out[key] = value
        for key, length in (("detector", 3), ("filter_coef", 2)):
            value = saved[key]
            if not isinstance(value, Tensor) or value.layout != torch.strided or tuple(value.shape) != (length,) \
                    or not value.is_floating_point() or value.is_meta:
                raise ValueError(f"state_dict['dals'][{key!r}] must be a float tensor of shape ({length},), got "
                                 f"{value!r}")
            out[key] = value.detach().to(device="cpu", dtype=torch.float64, copy=True)
        ema, seen, phase = out["detector"].tolist()
        if phase not in (0.0, 1.0, 2.0):
            raise ValueError(f"state_dict['dals']['detector'][2] (the loss phase) is {phase}: expected 0, 1 or 2")
        if not (math.isfinite(seen) and seen >= 0 and seen == int(seen)):
            raise ValueError(f"state_dict['dals']['detector'][1] (losses seen) is {seen}: expected an integer >= 0")
        if not math.isfinite(ema) and seen > 0:
            raise ValueError(f"state_dict['dals']['detector'][0] (the loss EMA) is {ema}: expected a finite value")
        if not all(math.isfinite(v) for v in out["filter_coef"].tolist()):
            raise ValueError("state_dict['dals']['filter_coef'] must be finite")
        return out

    @torch.no_grad()
    def update_phase(self, loss: Union[float, Tensor]) -> None:
        """Feed the training loss of this step to the phase detector (before :meth:`step`)."""
        loss = loss.detach() if isinstance(loss, Tensor) else torch.tensor(float(loss), dtype=torch.float64)
        loss = self._global_loss(loss)
        dals_phase_(self._global["detector"], self._global["filter_coef"], loss, tau1=self.thresholds[0],
                    tau2=self.thresholds[1], phase_alpha=self.phase_alpha, phase_gate=self.phase_gate)

    def schedule_factor(self) -> float:
        """The factor s of the step about to be taken (advances the global step and the SGDR cycle); 1 with
        ``schedule=False``. (:meth:`step` does this on the device; this reads the factor back.)"""
        self._advance(None, None)
        return float(self._global["scale"])

    # ---- the step --------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None, *, loss: Optional[Union[float, Tensor]] = None):
        """One DALS step. The loss for the phase detector comes from ``closure`` or ``loss`` if given."""
        if closure is not None and loss is not None:
            raise ValueError("pass the loss either through closure or through loss=, not both")
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if loss is not None:
            loss = self._check_loss(loss)
        self._resolve_depths()
        plan, calls = self._prepare_step()  # every group and call checked (NOTE: [atomic steps] in _base.py)
        if calls:
            self._place_global(calls[0].params[0].device)
        # Only now does global state move (NOTE: [DALS global state on the device]); GradScaler's found_inf
        # stops it, and the step, where they are. The lr of each call is its groups' times the schedule factor.
        g = self._global
        saved = {k: v.clone() for k, v in g.items()}
        try:
            device = g["clock"].device
            loss_value = None if loss is None else (
                loss.detach() if isinstance(loss, Tensor) else torch.tensor(float(loss), dtype=torch.float64))
            loss_value = self._global_loss(loss_value)
            found_inf = getattr(self, "found_inf", None)
            self._advance(loss_value, None if found_inf is None else found_inf.to(device, non_blocking=True))
            for call in calls:
                here = call.params[0].device
                call.kwargs["lr"] = call.kwargs["lr"] * g["scale"].to(here, non_blocking=True)
                if call.kwargs["filter_coef"] is not None:
                    call.kwargs["filter_coef"] = g["filter_coef"].to(here, non_blocking=True)
            self._run_calls(plan, calls)
        except BaseException:
            self._global = saved
            raise
        return loss

    def _global_loss(self, loss: Optional[Tensor]) -> Optional[Tensor]:
        """The loss phase is one for the whole model, so in a data-parallel run it is the run's: with
        torch.distributed initialised, the mean of the ranks' losses over ``process_group`` (one all-reduce of 8
        bytes; every rank gets the same bits, so replicas stay identical), unless ``global_loss=False``."""
        if loss is None or not self.global_loss or not (torch.distributed.is_available()
                                                         and torch.distributed.is_initialized()):
            return loss
        return global_mean(loss, self.process_group)

    def _place_global(self, device: torch.device) -> None:
        """Moves the global state to the params' device (once: NOTE: [DALS global state on the device])."""
        if self._global["clock"].device != device:
            self._global = {k: v.to(device) for k, v in self._global.items()}

    @staticmethod
    def _check_loss(loss: Union[float, Tensor]) -> Union[float, Tensor]:
        if isinstance(loss, Tensor):
            if loss.numel() != 1:
                raise ValueError(f"loss must be a scalar, got shape {tuple(loss.shape)}")
            if loss.is_complex():
                raise ValueError(f"loss must be real, got dtype {loss.dtype}")
            return loss
        if isinstance(loss, (int, float)) and not isinstance(loss, bool):
            return loss
        raise ValueError(f"loss must be a number or a one-element tensor, got {type(loss).__name__}")

    def _resolve_depths(self) -> None:
        if self._recorder is None:
            if any(group.get("depth_ratio") is None for group in self.param_groups):
                raise ValueError("the depths of this DALS's layers are unknown: it is a copy made before the "
                                 "model's first forward pass, which sets them. Copy after the first step, or "
                                 "pass depth_ratio in the param groups")
            return
        depths = layers.depth_ratios(self._recorder.layers())
        for group in self.param_groups:
            if group.get("depth_ratio") is None:
                group["depth_ratio"] = [depths.get(p, 0.5) for p in group["params"]]
        self._recorder.remove()
        self._recorder = None

    def _recipe(self, group: dict[str, Any]) -> Recipe:
        return Recipe(filter="blend", moment="sgd", decay="coupled", trust="update", momentum=group["momentum"],
                      trust_coefficient=group["trust_coefficient"], ratio_min=RATIO_CLAMP[0],
                      ratio_max=RATIO_CLAMP[1], maximize=group["maximize"])

    def _tensor_settings(self, group: dict[str, Any], index: int, param: Tensor) -> tuple[float, float, bool]:
        depth = self._per_param(group, "depth_ratio", index)
        return float(group["weight_decay"]), 0.3 + 0.4 * depth, True

    def _filter_coef(self, group: dict[str, Any], device: torch.device) -> Optional[Tensor]:
        return to_device(self._global["filter_coef"], device)
