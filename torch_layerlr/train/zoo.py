"""The strategy zoo: one table of learning-rate strategies, each a factory for an optimizer and its schedule.

Hyperparameters are the DALS benchmark's for the synthetic and CIFAR-10 runs (``Test_All.py``, research note
A.7), with its bugs left out (A.9):

* the discriminative multiplier is applied once (the benchmark's ``STLRScheduler`` divided the already-decayed
  group lr by ``2.6**(N-1-i)`` again) and STLR is stepped every step, not in bulk once per epoch;
* SGDR's first cycle is 10 epochs, like DALS-Acc's (the benchmark counted ``T_0 = 10`` in steps, so its cycles
  were 10, 20, 40, ... steps long);
* DALS runs with the benchmark's weight decay 5e-4 (the paper's text says 1e-4 for DALS and DALS-Fast), so its
  row is comparable with the paper's table.

Layer groups for the discriminative rules and DALS are the model's top-level children, as in the paper
(:mod:`torch_layerlr.layers`, ``by="children"``). Single-LR baselines are ``torch.optim``'s own optimizers.
Omitted from the paper's 18: AdaBound, Lion, Lookahead, SAM and SAM+Discriminative (not part of this library).
Added: LAMB and the layer-wise rules of this library's other papers: the sharpness rate (the depth-scaling paper's
rule with the sharpness measured on the network, :class:`~torch_layerlr.optim.SharpnessLR`) and norm-balanced SGD.
Outside ``"all"`` but available by name: the depth-scaling rule's linear-network closed form (``depth-scaled``)
and layer-wise LR decay for fine-tuning (``llrd``).

Every learning rate a row sets is its default times ``Setup.lr_scale``, which the LR sweep varies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from torch_layerlr import layers
from torch_layerlr.optim import DALS, LAMB, LARS, DepthScaledSGD, LayerwiseAdamW, LayerwiseSGD, SharpnessLR
from torch_layerlr.optim.dals import VARIANTS as DALS_VARIANTS
from torch_layerlr.schedules import SGDR, STLR, NormBalancedLR

__all__ = ["Setup", "Strategy", "STRATEGIES", "strategy", "parse_strategies"]


@dataclass(frozen=True)
class Setup:
    """What a strategy may look at when it builds its optimizer: the run's length and a sample of the
    (normalized) training inputs with their labels, e.g. to order the layers by a forward pass."""

    steps_per_epoch: int
    epochs: int
    sample: Tensor
    sample_labels: Tensor
    num_classes: int
    #: every learning rate the strategy sets is multiplied by this (its default is 1: the paper's rate); the LR
    #: sweep of :mod:`torch_layerlr.train.sweep` varies it
    lr_scale: float = 1.0

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


Built = tuple[torch.optim.Optimizer, Optional[Any]]


@dataclass(frozen=True)
class Strategy:
    """A row of the zoo. ``build(model, setup)`` returns the optimizer and a scheduler (anything with
    ``step()``, called after every optimizer step) or None. ``default``: part of ``"all"``."""

    name: str
    label: str
    layerwise: bool
    settings: str
    build: Callable[[nn.Module, Setup], Built]
    default: bool = True


SGD_WD = 5e-4  # the benchmark's weight decay for every SGD-family strategy


def _sgd(lr: float) -> Callable[[nn.Module, Setup], Built]:
    return lambda model, setup: (torch.optim.SGD(model.parameters(), lr=lr * setup.lr_scale, momentum=0.9,
                                                 weight_decay=SGD_WD), None)


def _cosine_sgd(model: nn.Module, setup: Setup) -> Built:
    opt = torch.optim.SGD(model.parameters(), lr=0.03 * setup.lr_scale, momentum=0.9, weight_decay=SGD_WD)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=setup.total_steps,
                                                           eta_min=1e-5 * setup.lr_scale)


def _sgdr(model: nn.Module, setup: Setup) -> Built:
    opt = torch.optim.SGD(model.parameters(), lr=0.05 * setup.lr_scale, momentum=0.9, weight_decay=SGD_WD)
    return opt, SGDR(opt, T_0=10 * setup.steps_per_epoch, T_mult=2)


def _torch_adam(kind: type, lr: float, **options: float) -> Callable[[nn.Module, Setup], Built]:
    return lambda model, setup: (kind(model.parameters(), lr=lr * setup.lr_scale, **options), None)


def _discriminative(model: nn.Module, setup: Setup) -> list[float]:
    return layers.discriminative_multipliers(model, setup.sample[:2], decay=2.6, by="children")


def _disc(model: nn.Module, setup: Setup) -> Built:
    return LayerwiseSGD(model.parameters(), lr=0.05 * setup.lr_scale, momentum=0.9, weight_decay=SGD_WD,
                        lr_mult=_discriminative(model, setup)), None


def _stlr_disc(model: nn.Module, setup: Setup) -> Built:
    opt = LayerwiseSGD(model.parameters(), lr=0.05 * setup.lr_scale, momentum=0.9, weight_decay=SGD_WD,
                       lr_mult=_discriminative(model, setup))
    return opt, STLR(opt, total_steps=setup.total_steps, cut_frac=0.1, ratio=32)


def _grokfast(model: nn.Module, setup: Setup) -> Built:
    return LayerwiseSGD(model.parameters(), lr=0.03 * setup.lr_scale, momentum=0.9, dampening=0.9, weight_decay=SGD_WD,
                        grokfast_alpha=0.98, grokfast_lambda=1.0), None


def _dals(variant: str) -> Callable[[nn.Module, Setup], Built]:
    def build(model: nn.Module, setup: Setup) -> Built:
        return DALS(model, variant=variant, lr=DALS_VARIANTS[variant]["lr"] * setup.lr_scale, weight_decay=SGD_WD,
                    total_steps=setup.total_steps, restart_steps=10 * setup.steps_per_epoch), None
    return build


def _weight_layers(model: nn.Module) -> int:
    return sum(1 for p in model.parameters() if p.ndim >= 2)


def _depth_scaled(model: nn.Module, setup: Setup) -> Built:
    x = setup.sample.flatten(1).double()
    y = F.one_hot(setup.sample_labels, setup.num_classes).double()
    return DepthScaledSGD.from_data(model.parameters(), x, y, depth=_weight_layers(model), tau=1.0 / setup.lr_scale,
                                    momentum=0.9, weight_decay=SGD_WD), None


#: The sharpness rule's settings: tau = 1 (the depth-scaling paper's one-step-optimal rate, eta S = 1) for plain
#: SGD (the method the rule is derived for: no momentum), the fixed batch it measures on (a training batch's
#: size) and how often it re-measures.
SHARPNESS_TAU = 1.0
SHARPNESS_BATCH = 128
SHARPNESS_EVERY = 100


def fixed_batch_loss(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], Tensor]:
    """A closure: the cross-entropy of ``model`` on (x, y), computed on copies of the model's buffers, so that
    the BatchNorm running statistics a train-mode forward would update stay as they were."""

    def loss_fn() -> Tensor:
        state = dict(model.named_parameters())
        state.update((name, b.clone()) for name, b in model.named_buffers())
        return F.cross_entropy(torch.func.functional_call(model, state, (x,)), y)

    return loss_fn


def _sharpness_rate(cosine: bool) -> Callable[[nn.Module, Setup], Built]:
    def build(model: nn.Module, setup: Setup) -> Built:
        loss_fn = fixed_batch_loss(model, setup.sample[:SHARPNESS_BATCH], setup.sample_labels[:SHARPNESS_BATCH])
        opt = LayerwiseSGD(model.parameters(), lr=1.0, momentum=0.0, weight_decay=SGD_WD)
        return opt, SharpnessLR(opt, loss_fn, tau=SHARPNESS_TAU / setup.lr_scale, every=SHARPNESS_EVERY,
                                cosine_steps=setup.total_steps if cosine else None)
    return build


def _llrd(model: nn.Module, setup: Setup) -> Built:
    """Layer-wise LR decay (Clark et al. 2020, ELECTRA; the fine-tuning rule of BEiT and others): AdamW with the
    top child at the base rate and each child below it at 0.75 times the one above."""
    mult = layers.discriminative_multipliers(model, setup.sample[:2], decay=1 / 0.75, by="children")
    return LayerwiseAdamW(model.parameters(), lr=1e-3 * setup.lr_scale, weight_decay=0.01, lr_mult=mult), None


def _norm_balanced(model: nn.Module, setup: Setup) -> Built:
    order = layers.layer_order(model, setup.sample[:2], by="children")
    index = {p: i for i, group in enumerate(order) for p in group}
    opt = LayerwiseSGD(model.parameters(), lr=0.01 * setup.lr_scale, momentum=0.9, weight_decay=SGD_WD)
    return opt, NormBalancedLR(opt, layers=[index[p] for p in model.parameters()])


_ROWS = [
    Strategy("fixed-sgd", "Fixed SGD", False, "SGD lr 0.01, momentum 0.9, wd 5e-4", _sgd(0.01)),
    Strategy("cosine-sgd", "Cosine SGD", False, "SGD lr 0.03 -> 1e-5 cosine over the run", _cosine_sgd),
    Strategy("sgdr", "SGDR", False, "SGD lr 0.05, warm restarts T_0 = 10 epochs, T_mult 2", _sgdr),
    Strategy("adam", "Adam", False, "torch Adam lr 3e-4", _torch_adam(torch.optim.Adam, 3e-4)),
    Strategy("adamw", "AdamW", False, "torch AdamW lr 3e-4, wd 0.01",
             _torch_adam(torch.optim.AdamW, 3e-4, weight_decay=0.01)),
    Strategy("radam", "RAdam", False, "torch RAdam lr 3e-4", _torch_adam(torch.optim.RAdam, 3e-4)),
    Strategy("lars", "LARS", True, "lr 0.03, trust 0.02, momentum 0.9, wd 5e-4 (You et al.: ratio before momentum)",
             lambda model, setup: (LARS(model.parameters(), lr=0.03 * setup.lr_scale, momentum=0.9,
                                        weight_decay=SGD_WD, trust_coefficient=0.02), None)),
    Strategy("lamb", "LAMB", True, "lr 1e-3, wd 0.01 (You et al. 2020)",
             lambda model, setup: (LAMB(model.parameters(), lr=1e-3 * setup.lr_scale, weight_decay=0.01), None)),
    Strategy("disc", "Discriminative LR", True, "SGD lr 0.05, momentum 0.9, x 2.6^-(N-1-i) per child", _disc),
    Strategy("stlr-disc", "STLR + Discriminative", True, "as Discriminative, STLR cut 0.1, ratio 32 (multiplier once)",
             _stlr_disc),
    Strategy("grokfast", "Grokfast", False, "Grokfast-EMA a 0.98, l 1; SGD lr 0.03, momentum 0.9 dampened 0.9",
             _grokfast),
    Strategy("dals", "DALS", True, "lr 0.03, momentum 0.9, alpha 0.6, warmup 5% + cosine", _dals("dals")),
    Strategy("dals-fast", "DALS-Fast", True, "lr 0.05, momentum 0.85, alpha 0.6, warmup 2% + cosine",
             _dals("fast")),
    Strategy("dals-acc", "DALS-Acc", True, "lr 0.03, momentum 0.9, alpha 0.7, SGDR T_0 = 10 epochs", _dals("acc")),
    Strategy("sharpness-rate", "Sharpness-rate SGD", False,
             "SGD lr = 1/S, S measured on a batch of 128 at steps 0, 1, 2, 4, ... then every 100; no momentum, wd 5e-4",
             _sharpness_rate(cosine=False)),
    Strategy("sharpness-cosine", "Sharpness-rate SGD + cosine", False,
             "as Sharpness-rate SGD, the rate annealed by a cosine over the run", _sharpness_rate(cosine=True)),
    Strategy("depth-scaled", "Depth-scaled SGD (linear rule)", True,
             "lr = 1/S of the deep linear chain bound (depth = weight layers), momentum 0.9", _depth_scaled,
             default=False),
    Strategy("norm-balanced", "Norm-balanced SGD", True,
             "SGD lr 0.01 x per-child 1/||W|| balancing (arXiv 2606.00340 sec. 3.7), momentum 0.9", _norm_balanced),
    Strategy("llrd", "Layer-wise LR decay", True, "AdamW lr 1e-3, wd 0.01, x 0.75 per child below the top",
             _llrd, default=False),
]

#: Every strategy, by name, in table order.
STRATEGIES: dict[str, Strategy] = {row.name: row for row in _ROWS}


def strategy(name: str) -> Strategy:
    """The zoo's row ``name``; a clear error lists the names."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: expected one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def parse_strategies(text: str) -> list[Strategy]:
    """``"all"`` or a comma-separated list of names, in the given order."""
    if text.strip() == "all":
        return [row for row in STRATEGIES.values() if row.default]
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("give at least one strategy name (or 'all')")
    if len(set(names)) != len(names):
        raise ValueError(f"a strategy is listed twice in {text!r}")
    return [strategy(n) for n in names]
