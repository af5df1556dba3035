r"""Which parameter tensors form a layer, and at what depth.

Layer-wise learning-rate methods need an ordering of the parameters from the input (depth 0) to the
output (depth 1).  Registration order (``model.parameters()``) is a guess: nothing stops a module from
registering ``head`` before ``encoder``, or calling its blocks in a different order than they were
created.  This module orders layers by **forward execution order** instead: one forward pass is run
with ``forward_pre_hook``\ s on the candidate modules, and a layer's position is the moment its module
is first called.

Grouping (``by``):

* ``by="module"`` (default, fine-grained): every submodule (including ``model`` itself) that owns
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
multiplier again.)
"""

from __future__ import annotations

import math
import numbers
from typing import Dict, List, Sequence

import torch
from torch import nn

__all__ = [
    "layer_order",
    "ForwardOrderRecorder",
    "depth_ratios",
    "discriminative_multipliers",
    "layerwise_lr_decay",
]

_BY_VALUES = ("module", "children")


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _check_by(by) -> str:
    if by not in _BY_VALUES:
        raise ValueError(f"by must be 'module' or 'children', got {by!r}")
    return by


class _Unit:
    """A candidate layer: a module and how to read its parameters."""

    __slots__ = ("module", "recurse")

    def __init__(self, module: nn.Module, recurse: bool) -> None:
        self.module = module
        self.recurse = recurse

    def params(self) -> List[nn.Parameter]:
        return list(self.module.parameters(recurse=self.recurse))


def _units(model: nn.Module, by: str) -> List[_Unit]:
    """Candidate layers in registration order."""
    if by == "module":
        return [
            _Unit(m, recurse=False)
            for _, m in model.named_modules()
            if next(m.parameters(recurse=False), None) is not None
        ]
    units = []
    if next(model.parameters(recurse=False), None) is not None:
        units.append(_Unit(model, recurse=False))
    for _, child in model.named_children():
        if next(child.parameters(), None) is not None:
            units.append(_Unit(child, recurse=True))
    return units


def _assemble(units: Sequence[_Unit], order: Sequence[int]) -> List[List[nn.Parameter]]:
    """Layers from units visited in ``order`` then the rest in registration order; first owner wins."""
    ran = set(order)
    sequence = list(order) + [i for i in range(len(units)) if i not in ran]
    seen = set()
    layers = []
    for i in sequence:
        layer = []
        for p in units[i].params():
            if id(p) not in seen:
                seen.add(id(p))
                layer.append(p)
        if layer:
            layers.append(layer)
    return layers


class ForwardOrderRecorder:
    """Record the order in which a model's layers run during its first forward pass.

    Hooks are installed at construction.  The next complete forward pass of ``model`` (a call of
    ``model(...)`` that returns) is recorded, after which the hooks remove themselves; a forward that
    raised is discarded and the next one is recorded instead.  Submodule calls made outside a
    ``model(...)`` call are ignored.  Works in any mode (training or not, with or without grad); the
    recorder never changes the model or the outputs.

    Args:
        model: the ``nn.Module``.
        by: ``"module"`` or ``"children"`` (see the module docstring).

    Attributes:
        recorded (bool): whether a full forward pass has been recorded.
    """

    def __init__(self, model: nn.Module, by: str = "module") -> None:
        _check_model(model)
        self.model = model
        self.by = _check_by(by)
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


def layer_order(model: nn.Module, *example_inputs, by: str = "module") -> List[List[nn.Parameter]]:
    """Layers of ``model`` (each a list of Parameters) in forward execution order, input first.

    With ``example_inputs``, runs ``model(*example_inputs)`` once under ``torch.no_grad()`` with
    temporary forward pre-hooks.  The pass runs in eval mode (dropout/stochastic depth off, BatchNorm
    running statistics untouched, a batch of one is fine); every module's ``training`` flag is
    restored afterwards, and the hooks are always removed.  Without ``example_inputs`` the
    registration order is returned.  See the module docstring for ``by`` and the rules for shared,
    unused and frozen parameters.
    """
    _check_model(model)
    _check_by(by)
    if not example_inputs:
        return _assemble(_units(model, by), [])
    modes = [(m, m.training) for m in model.modules()]
    recorder = ForwardOrderRecorder(model, by=by)
    try:
        model.eval()
        with torch.no_grad():
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


def discriminative_multipliers(
    model: nn.Module, *example_inputs, decay: float = 2.6, by: str = "module"
) -> List[float]:
    """ULMFiT discriminative lr multipliers, one float per parameter in ``model.parameters()`` order.

    Layer ``i`` of ``N`` (from :func:`layer_order`) gets ``decay ** -(N - 1 - i)``: the output layer 1,
    each layer below it ``1/decay`` times the one above (Howard & Ruder 2018: ``eta_{l-1} = eta_l / 2.6``).
    Pass the list as the ``lr_mult`` group key.
    """
    decay = _check_positive_real("decay", decay)
    idx, n = _layer_index(model, example_inputs, _check_by(by))
    return [float(decay ** -(n - 1 - i)) for i in idx]


def layerwise_lr_decay(
    model: nn.Module, *example_inputs, factor: float = 0.65, by: str = "module"
) -> List[float]:
    """Layer-wise lr decay multipliers (BEiT/ELECTRA convention), one per parameter of ``model``.

    Layer ``i`` of ``N`` gets ``factor ** (N - 1 - i)`` (same as :func:`discriminative_multipliers`
    with ``decay = 1/factor``).  Pass the list as the ``lr_mult`` group key.
    """
    factor = _check_positive_real("factor", factor)
    idx, n = _layer_index(model, example_inputs, _check_by(by))
    return [float(factor ** (n - 1 - i)) for i in idx]
