r"""Which parameter tensors form a layer, and at what depth.

Layer-wise learning-rate methods need an ordering of the parameters from the input (depth 0) to the
output (depth 1).  Registration order (``model.parameters()``) is a guess: nothing stops a module from
registering ``head`` before ``encoder``, or calling its blocks in a different order than they were
created.  This module orders layers by **forward execution order** instead: one forward pass is run
with ``forward_pre_hook``\ s on the candidate modules, and a layer's position is the moment its module
is first called.

Grouping (``by``):

* ``by="auto"`` (default): ``"block"`` for a model with a block list, ``"module"`` otherwise.
* ``by="block"`` (transformers, ResNets): a *block list* is an ``nn.ModuleList`` or ``nn.Sequential`` of at
  least two children of one class, each with parameters (HF's ``encoder.layer`` / ``transformer.h``, timm's
  ``blocks``); the outermost ones count (a block list inside a block is part of that block).  Every block is
  one layer (all its parameters), and each run of other parameter-owning modules between them, in execution
  order, is one layer: ``embeddings -> block 1 .. block N -> head`` gives ``N + 2`` layers, the layer ids of
  BEiT/timm layer decay.  ``by="block"`` on a model without a block list is an error.
* ``by="module"`` (fine-grained): every submodule (including ``model`` itself) that owns
  parameters directly (``module.parameters(recurse=False)``) is one layer: typically each
  ``Linear``/``Conv``/``Norm``/``Embedding`` is a layer.
* ``by="children"`` (coarse; the DALS authors' grouping, research note A.2): every top-level child of
  ``model`` that has parameters is one layer (all its parameters, recursively), plus ``model``'s own
  direct parameters as one more layer if there are any.

Rules:

* A parameter shared between modules (tied weights) belongs to the first layer that runs it; a
  layer left with no parameters is dropped.
* Layers whose module never ran during the recorded forward pass (unused branches, heads that
  only run in training, modules whose weights are used without calling the module) come after all
  executed layers, in registration order.
* A module that owns direct parameters *and* has children (e.g. the root holding a ``pos_embed``)
  is placed when its own forward starts, i.e. before its children.
* Frozen parameters (``requires_grad=False``) are listed like any other; callers filter.
* Without example inputs (or before a recorder has seen a forward pass) the order is the
  registration order, whose concatenation equals ``list(model.parameters())``.
* Example inputs are passed as ``model(*example_inputs)``; a single mapping (an HF batch, a dict of
  tensors) is passed as keywords, ``model(**batch)``.

Depth ratio of layer ``i`` of ``N``: ``d_i = i / (N - 1)`` (0 = input side, 1 = output side).  For
``N = 1`` the DALS authors' code divides by zero; here the single layer gets ``d = 0.5``, the same
value DALS uses for a param group without a depth.

Discriminative fine-tuning (ULMFiT, Howard & Ruder 2018, section 3.2; research note D):
``eta_{l-1} = eta_l / 2.6``, i.e. the layer ``i`` of ``N`` gets the multiplier
``decay ** -(N - 1 - i)``.  Layer-wise lr decay in the BEiT/ELECTRA convention (factor 0.65-0.9) is the
same with ``decay = 1 / factor``: multiplier ``factor ** (N - 1 - i)``.  Both return one float per
parameter in ``model.parameters()`` order, ready for the per-tensor ``lr_mult`` group key::

    opt = LayerwiseSGD(model.parameters(), lr=0.05,
                       lr_mult=discriminative_multipliers(model, example_x))

(apply the multiplier through ``lr_mult`` only; a scheduler then scales ``lr`` on top, never the
multiplier again.)  :func:`llrd` gives the same decay as param groups, for any ``torch.optim`` optimizer.

No multiplier is smaller than ``min_mult`` (default ``1e-4``, a warning says how many layers were raised to
it): a decay compounded over many layers otherwise hands the input layers rates that are zero for every
purpose (2.6**-37 = 4e-16 for 38 layers), far below what any published recipe uses (BEiT-L's
0.75**25 = 7.5e-4 is among the smallest).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

__all__ = [
    "layer_order",
    "ForwardOrderRecorder",
    "depth_ratios",
    "discriminative_multipliers",
    "layerwise_lr_decay",
    "llrd",
    "block_lists",
]

_BY_VALUES = ("auto", "block", "module", "children")

#: The smallest multiplier handed out by default (see the module docstring).
MIN_MULT = 1e-4


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _check_by(by) -> str:
    if by not in _BY_VALUES:
        raise ValueError(f"by must be one of {_BY_VALUES}, got {by!r}")
    return by


def _has_params(module: nn.Module, recurse: bool = True) -> bool:
    return next(module.parameters(recurse=recurse), None) is not None


def _is_block_list(module: nn.Module) -> bool:
    """An ``nn.ModuleList``/``nn.Sequential`` of at least two children of one class, each with parameters."""
    if not isinstance(module, (nn.ModuleList, nn.Sequential)):
        return False
    children = list(module.children())
    return (len(children) >= 2 and len({type(c) for c in children}) == 1
            and all(_has_params(c) for c in children))


def block_lists(model: nn.Module) -> List[nn.Module]:
    """The outermost block lists of ``model`` (possibly ``model`` itself), in registration order.

    A block list is an ``nn.ModuleList`` or ``nn.Sequential`` of at least two children of one class, each
    with parameters: HF's ``encoder.layer``, GPT-2's ``h``, timm's ``blocks``, a ResNet stage.
    """
    _check_model(model)
    found: List[nn.Module] = []

    def visit(module: nn.Module) -> None:
        if _is_block_list(module):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    visit(model)
    return found


def _resolve_by(model: nn.Module, by: str) -> str:
    by = _check_by(by)
    if by == "auto":
        return "block" if block_lists(model) else "module"
    if by == "block" and not block_lists(model):
        raise ValueError(f"by='block' needs a model with a block list (an nn.ModuleList or nn.Sequential of at "
                         f"least two modules of one class); {type(model).__name__} has none: use by='module'")
    return by


class _Unit:
    """A candidate layer: a module, how to read its parameters, and whether it is a block of a block list."""

    __slots__ = ("module", "recurse", "block")

    def __init__(self, module: nn.Module, recurse: bool, block: bool = False) -> None:
        self.module = module
        self.recurse = recurse
        self.block = block

    def params(self) -> List[nn.Parameter]:
        return list(self.module.parameters(recurse=self.recurse))


def _block_units(model: nn.Module) -> List[_Unit]:
    """Blocks (whole) and the other modules owning direct parameters outside every block, registration order."""
    units: List[_Unit] = []

    def visit(module: nn.Module) -> None:
        if _has_params(module, recurse=False):
            units.append(_Unit(module, recurse=False))
        if _is_block_list(module):
            units.extend(_Unit(block, recurse=True, block=True) for block in module.children())
            return
        for child in module.children():
            visit(child)

    visit(model)
    return units


def _units(model: nn.Module, by: str) -> List[_Unit]:
    """Candidate layers in registration order (``by`` already resolved)."""
    if by == "block":
        return _block_units(model)
    if by == "module":
        return [
            _Unit(m, recurse=False)
            for _, m in model.named_modules()
            if _has_params(m, recurse=False)
        ]
    units = []
    if _has_params(model, recurse=False):
        units.append(_Unit(model, recurse=False))
    for _, child in model.named_children():
        if _has_params(child):
            units.append(_Unit(child, recurse=True))
    return units


def _assemble(units: Sequence[_Unit], order: Sequence[int]) -> List[List[nn.Parameter]]:
    """Layers from units visited in ``order`` then the rest in registration order; first owner wins.

    Every unit is a layer, except that consecutive non-block units of a block grouping form one layer
    (with no block among the units, ``by`` is not ``"block"`` and every unit stays a layer).
    """
    ran = set(order)
    sequence = list(order) + [i for i in range(len(units)) if i not in ran]
    merge_runs = any(u.block for u in units)
    seen = set()
    layers: List[List[nn.Parameter]] = []
    previous: Optional[_Unit] = None
    for i in sequence:
        unit = units[i]
        if not (merge_runs and not unit.block and previous is not None and not previous.block):
            layers.append([])
        for p in unit.params():
            if id(p) not in seen:
                seen.add(id(p))
                layers[-1].append(p)
        previous = unit
    return [layer for layer in layers if layer]


class ForwardOrderRecorder:
    """Record the order in which a model's layers run during its first forward pass.

    Hooks are installed at construction.  The next complete forward pass of ``model`` (a call of
    ``model(...)`` that returns) is recorded, after which the hooks remove themselves; a forward that
    raised is discarded and the next one is recorded instead.  Submodule calls made outside a
    ``model(...)`` call are ignored.  Works in any mode (training or not, with or without grad); the
    recorder never changes the model or the outputs.

    Args:
        model: the ``nn.Module``.
        by: ``"auto"``, ``"block"``, ``"module"`` or ``"children"`` (see the module docstring).

    Attributes:
        recorded (bool): whether a full forward pass has been recorded.
    """

    def __init__(self, model: nn.Module, by: str = "auto") -> None:
        _check_model(model)
        self.model = model
        self.by = _resolve_by(model, by)
        self._units = _units(model, self.by)
        self._order: List[int] = []
        self._seen: set = set()
        self._depth = 0  # nesting depth of model(...) calls in progress
        self.recorded = False
        self._handles = []

        root_index = next((i for i, u in enumerate(self._units) if u.module is model), None)
        self._handles.append(model.register_forward_pre_hook(self._make_root_pre_hook(root_index)))
        # Registered first, so on a normal return it runs before the always-called hook below;
        # it does not run at all when the forward raises.
        self._handles.append(model.register_forward_hook(self._root_done_hook))
        self._handles.append(model.register_forward_hook(self._root_exit_hook, always_call=True))
        for i, u in enumerate(self._units):
            if u.module is not model:
                self._handles.append(u.module.register_forward_pre_hook(self._make_pre_hook(i)))

    # -- hooks ---------------------------------------------------------------------------------
    def _visit(self, i: int) -> None:
        if self._depth > 0 and not self.recorded and i not in self._seen:
            self._seen.add(i)
            self._order.append(i)

    def _make_pre_hook(self, i: int):
        def hook(module, args):
            self._visit(i)

        return hook

    def _make_root_pre_hook(self, root_index):
        def hook(module, args):
            if self.recorded:
                return
            self._depth += 1
            if self._depth == 1:  # outermost call: start a fresh recording
                self._order, self._seen = [], set()
                if root_index is not None:
                    self._visit(root_index)

        return hook

    def _root_done_hook(self, module, args, output):
        if not self.recorded and self._depth == 1:
            self.recorded = True
            self.remove()

    def _root_exit_hook(self, module, args, output):
        # Runs after every model(...) call, also when it raised (always_call=True).
        if self._depth > 0:
            self._depth -= 1

    # -- public --------------------------------------------------------------------------------
    def layers(self) -> List[List[nn.Parameter]]:
        """The layers (lists of parameters), input first.

        Forward execution order once a forward pass has been recorded, registration order before.
        """
        order = self._order if self.recorded else []
        return _assemble(self._units, order)

    def remove(self) -> None:
        """Remove the hooks (idempotent).  Already recorded data stays available."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._depth = 0

    def __enter__(self) -> "ForwardOrderRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def layer_order(model: nn.Module, *example_inputs, by: str = "auto") -> List[List[nn.Parameter]]:
    """Layers of ``model`` (each a list of Parameters) in forward execution order, input first.

    With ``example_inputs``, runs ``model(*example_inputs)`` (``model(**batch)`` for a single mapping
    ``batch``) once under ``torch.no_grad()`` with temporary forward pre-hooks.  The pass runs in eval
    mode (dropout/stochastic depth off, BatchNorm running statistics untouched, a batch of one is fine);
    every module's ``training`` flag is restored afterwards, and the hooks are always removed.  Without
    ``example_inputs`` the registration order is returned.  See the module docstring for ``by`` and the
    rules for shared, unused and frozen parameters.
    """
    _check_model(model)
    by = _resolve_by(model, by)
    if not example_inputs:
        return _assemble(_units(model, by), [])
    modes = [(m, m.training) for m in model.modules()]
    recorder = ForwardOrderRecorder(model, by=by)
    try:
        model.eval()
        with torch.no_grad():
            if len(example_inputs) == 1 and isinstance(example_inputs[0], Mapping):
                model(**example_inputs[0])
            else:
                model(*example_inputs)
    finally:
        recorder.remove()
        for m, mode in modes:
            m.training = mode
    return recorder.layers()


def depth_ratios(layers: Sequence[Sequence[nn.Parameter]]) -> Dict[nn.Parameter, float]:
    """``{param: i / (N - 1)}`` for each parameter of layer ``i`` of ``N`` (0 at the input, 1 at the output).

    A single layer gets 0.5 (guard: the DALS authors' ``i/(N-1)`` divides by zero for ``N = 1``).
    Empty layers still count towards ``N``.  A parameter listed twice keeps its first depth.
    """
    layers = list(layers)
    n = len(layers)
    out: Dict[nn.Parameter, float] = {}
    for i, layer in enumerate(layers):
        d = 0.5 if n == 1 else i / (n - 1)
        for p in layer:
            out.setdefault(p, d)
    return out


def _layer_index(model: nn.Module, example_inputs, by: str):
    layers = layer_order(model, *example_inputs, by=by)
    index = {}
    for i, layer in enumerate(layers):
        for p in layer:
            index.setdefault(id(p), i)
    return [index[id(p)] for p in model.parameters()], len(layers)


def _check_positive_real(name: str, value) -> float:
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(float(value))
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_unit_interval(name: str, value) -> float:
    value = _check_positive_real(name, value)
    if value > 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return value


def _layer_multipliers(raw: List[float], min_mult: float) -> List[float]:
    """``max(m, min_mult)`` for each layer's multiplier ``m``; warns when the floor is used."""
    n = len(raw)
    raised = sum(1 for m in raw if m < min_mult)
    if raised:
        warnings.warn(f"{raised} of {n} layers had a learning-rate multiplier below min_mult={min_mult:g} "
                      f"(smallest {min(raw):.3g}) and were raised to it; use a milder decay or fewer layers",
                      UserWarning, stacklevel=3)
    return [float(max(m, min_mult)) for m in raw]


def discriminative_multipliers(
    model: nn.Module, *example_inputs, decay: float = 2.6, by: str = "auto", min_mult: float = MIN_MULT
) -> List[float]:
    """ULMFiT discriminative lr multipliers, one float per parameter in ``model.parameters()`` order.

    Layer ``i`` of ``N`` (from :func:`layer_order`, by blocks for a model with a block list) gets
    ``max(decay ** -(N - 1 - i), min_mult)``: the output layer 1, each layer below it ``1/decay`` times the
    one above (Howard & Ruder 2018: ``eta_{l-1} = eta_l / 2.6``).  Pass the list as the ``lr_mult`` group key.
    """
    decay = _check_positive_real("decay", decay)
    min_mult = _check_unit_interval("min_mult", min_mult)
    idx, n = _layer_index(model, example_inputs, by)
    mult = _layer_multipliers([decay ** -(n - 1 - i) for i in range(n)], min_mult)
    return [mult[i] for i in idx]


def layerwise_lr_decay(
    model: nn.Module, *example_inputs, factor: float = 0.65, by: str = "auto", min_mult: float = MIN_MULT
) -> List[float]:
    """Layer-wise lr decay multipliers (BEiT/ELECTRA convention), one per parameter of ``model``.

    Layer ``i`` of ``N`` gets ``max(factor ** (N - 1 - i), min_mult)`` (same as
    :func:`discriminative_multipliers` with ``decay = 1/factor``).  Pass the list as the ``lr_mult`` group
    key: one param group, the multipliers per tensor (the fused engine's fast path).  :func:`llrd` gives
    the same values as param groups.
    """
    factor = _check_positive_real("factor", factor)
    min_mult = _check_unit_interval("min_mult", min_mult)
    idx, n = _layer_index(model, example_inputs, by)
    mult = _layer_multipliers([factor ** (n - 1 - i) for i in range(n)], min_mult)
    return [mult[i] for i in idx]


def llrd(
    model: nn.Module,
    decay: float,
    *example_inputs,
    lr: Optional[float] = None,
    weight_decay: Optional[float] = None,
    by: str = "auto",
    min_mult: float = MIN_MULT,
) -> List[dict]:
    r"""Layer-wise learning-rate decay (BERT/ELECTRA/BEiT fine-tuning) as param groups, input layer first.

    Layer ``i`` of ``N`` (:func:`layer_order`; for a transformer ``embeddings, block 1 .. block N-2, head``)
    gets the multiplier :math:`m_i = \max(\mathrm{decay}^{N-1-i}, \mathrm{min\_mult})`, ``0 < decay <= 1``
    (the head 1, the embeddings :math:`\mathrm{decay}^{N-1}`), the ``layer_decay`` of timm and BEiT.

    * ``lr`` given: each group's ``"lr"`` is ``lr * m_i``, for any ``torch.optim`` optimizer (the groups HF
      fine-tuning scripts build by hand); a torch scheduler then scales every group in proportion.
    * ``lr=None``: each group's ``"lr_mult"`` is ``m_i``, for this package's optimizers (the optimizer's
      ``lr`` and any scheduler apply on top).  Other optimizers ignore ``lr_mult``: pass ``lr`` for them.
    * ``weight_decay`` given: the group of a layer's matrices (``ndim >= 2``) takes it, and its vectors
      (biases, norm gains) go to a second group with ``weight_decay=0`` (the timm/HF convention); ``None``
      leaves the optimizer's default to every tensor.

    Every parameter is in a group once (frozen ones too, so unfreezing later trains them).  One float per
    tensor in a single group, the fused engine's fast path, is :func:`layerwise_lr_decay` with
    ``factor=decay``.  ``example_inputs`` (a tensor, several, or one dict batch passed as ``**batch``) give
    the forward order; without them the registration order is used.

    Example::

        groups = llrd(model, 0.75, batch, lr=5e-5, weight_decay=0.05)
        opt = torch.optim.AdamW(groups)          # or LAMB(llrd(model, 0.75, batch), lr=5e-5)
    """
    decay = _check_unit_interval("decay", decay)
    min_mult = _check_unit_interval("min_mult", min_mult)
    if lr is not None:
        lr = _check_positive_real("lr", lr)
    if weight_decay is not None and (not isinstance(weight_decay, numbers.Real) or isinstance(weight_decay, bool)
                                     or not math.isfinite(float(weight_decay)) or weight_decay < 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    layers = layer_order(model, *example_inputs, by=by)
    n = len(layers)
    mult = _layer_multipliers([decay ** (n - 1 - i) for i in range(n)], min_mult)
    groups = []
    for layer, m in zip(layers, mult):
        rate = {"lr_mult": m} if lr is None else {"lr": lr * m}
        if weight_decay is None:
            groups.append({"params": list(layer), **rate})
            continue
        matrices = [p for p in layer if p.dim() >= 2]
        vectors = [p for p in layer if p.dim() < 2]
        if matrices:
            groups.append({"params": matrices, **rate, "weight_decay": float(weight_decay)})
        if vectors:
            groups.append({"params": vectors, **rate, "weight_decay": 0.0})
    return groups
