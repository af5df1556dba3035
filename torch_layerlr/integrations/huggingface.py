r"""Hugging Face ``Trainer`` support: feed DALS the training loss of every optimizer step.

The ``Trainer`` calls ``optimizer.step()`` without a closure or a loss, so DALS's phase detector would stay
in phase 0.  :class:`DALSLossCallback` records the loss each training forward pass of the model returns
(``outputs.loss``, which HF models compute when the batch holds ``labels``), averages it over the micro-batches
of the step (gradient accumulation), and hands it to :meth:`DALS.update_phase` in ``on_pre_optimizer_step``,
i.e. before the step, as the DALS authors' loop does.  With one micro-batch per step that is exactly the loss
the ``Trainer`` logs for the step.  (The averaged value is one number per step; under gradient accumulation
with a model that normalises by the items of the whole step it is the step's loss divided by the number of
micro-batches, a constant factor to which the detector's relative change is blind.)

The ``Trainer`` also wraps the optimizer in its own lr scheduler (linear decay by default).  DALS's built-in
warmup+cosine would multiply it: build DALS with ``schedule=False`` so the ``Trainer``'s scheduler alone sets
the lr::

    from transformers import Trainer
    from torch_layerlr.optim import DALS
    from torch_layerlr.integrations.huggingface import DALSLossCallback

    opt = DALS(model, schedule=False)          # depths from the first forward pass
    trainer = Trainer(model=model, args=args, train_dataset=ds, optimizers=(opt, None),
                      callbacks=[DALSLossCallback()])
    trainer.train()

A ``Trainer`` that computes the loss outside the model (an overridden ``compute_loss``, label smoothing) gives
the callback nothing to record: it then warns once, and the loss must be fed with ``opt.update_phase(loss)``
(e.g. from the overridden ``compute_loss``).  The other optimizers of this package need no callback.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from torch import Tensor, nn
from transformers import TrainerCallback

__all__ = ["DALSLossCallback", "find_dals"]


def find_dals(optimizer: Any) -> Any:
    """The optimizer with ``update_phase`` (DALS) inside ``optimizer`` and its wrappers (accelerate's
    ``AcceleratedOptimizer`` keeps the real one in ``.optimizer``)."""
    seen = set()
    current = optimizer
    while current is not None and id(current) not in seen:
        if callable(getattr(current, "update_phase", None)):
            return current
        seen.add(id(current))
        current = getattr(current, "optimizer", None)
    raise TypeError(f"DALSLossCallback needs a DALS optimizer (one with update_phase), got "
                    f"{type(optimizer).__name__}")


def _loss_of(output: Any) -> Optional[Tensor]:
    """The loss a model's forward returned: ``output.loss`` (ModelOutput) or ``output["loss"]`` (dict)."""
    loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    if isinstance(loss, Tensor) and loss.numel() == 1:
        return loss
    return None


class DALSLossCallback(TrainerCallback):
    """Feeds :meth:`DALS.update_phase` the mean training loss of each optimizer step, before the step.

    The loss is taken from the model's training forward passes (grad enabled, ``model.training``) through a
    forward hook installed at ``on_train_begin`` and removed at ``on_train_end``; it stays a device tensor
    (no host sync).  ``losses_fed`` counts the steps that got a loss.
    """

    def __init__(self) -> None:
        self._handle = None
        self._sum: Optional[Tensor] = None
        self._count = 0
        self._warned = False
        self.losses_fed = 0

    def _record(self, module: nn.Module, args: Any, output: Any) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        loss = _loss_of(output)
        if loss is None:
            return
        loss = loss.detach().float().reshape(())
        self._sum = loss if self._sum is None else self._sum + loss
        self._count += 1

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        find_dals(optimizer)  # fail early, naming the optimizer, when it is not DALS
        if model is None:
            raise ValueError("DALSLossCallback needs the Trainer's model")
        self._remove_hook()
        self._handle = model.register_forward_hook(self._record)
        self._sum, self._count = None, 0

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if self._count == 0:
            if not self._warned:
                warnings.warn("DALSLossCallback: the model's forward returned no loss this step (no labels, or the "
                              "loss is computed outside the model); feed it with optimizer.update_phase(loss)",
                              UserWarning, stacklevel=2)
                self._warned = True
            return
        find_dals(optimizer).update_phase(self._sum / self._count)
        self.losses_fed += 1
        self._sum, self._count = None, 0

    def on_train_end(self, args, state, control, **kwargs):
        self._remove_hook()

    def _remove_hook(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
