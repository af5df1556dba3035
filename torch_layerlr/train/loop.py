"""One training run of one strategy: the loop, the evaluation, what each epoch records, and (optionally) the
sharpness of the loss on a fixed batch every N steps (:class:`~torch_layerlr.sharpness.SharpnessMonitor`)."""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from torch_layerlr.data import ImageDataset, batches, crop_and_flip, normalize
from torch_layerlr.distributed.data_parallel import MODES, share, share_weight, sum_over_ranks, unwrap, wrap
from torch_layerlr.models.vision import build_model
from torch_layerlr.optim import DALS
from torch_layerlr.sharpness import MONITOR_BATCH, SharpnessMonitor
from torch_layerlr.train.zoo import Setup, Strategy, fixed_batch_loss

__all__ = ["RunSpec", "train_run", "evaluate", "sharpness_monitoring", "fixed_batch_loss"]

#: How many training images a strategy gets to look at when it builds its optimizer.
SAMPLE_SIZE = 4096

#: The fixed batch (the first training images) on which the sharpness monitor measures: a training batch.
SHARPNESS_BATCH = MONITOR_BATCH

_SHARPNESS_EVERY: contextvars.ContextVar[int] = contextvars.ContextVar("sharpness_every", default=0)


@contextlib.contextmanager
def sharpness_monitoring(every: int) -> Iterator[None]:
    """Within the block, runs whose :class:`RunSpec` leaves ``sharpness_every`` at 0 measure the sharpness every
    ``every`` steps (0: off), e.g. the runs of :func:`~torch_layerlr.train.compare`."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"every must be a non-negative integer, got {every!r}")
    token = _SHARPNESS_EVERY.set(every)
    try:
        yield
    finally:
        _SHARPNESS_EVERY.reset(token)


@dataclass(frozen=True)
class RunSpec:
    """Everything about a run but the strategy and the seed. ``data`` must carry a validation split."""

    data: ImageDataset
    model: str
    epochs: int
    batch_size: int = 128
    augment: bool = False
    device: str = "cpu"
    #: measure the global and per-layer sharpness every this many steps (0: off)
    sharpness_every: int = 0
    #: data-parallel over the ranks of torch.distributed: "none", "ddp" or "fsdp2" (each rank its share of
    #: every batch; see torch_layerlr.distributed.data_parallel)
    parallel: str = "none"
    #: ``init(model, seed)`` after the model is built and before the optimizer is, e.g. to load pretrained
    #: weights and re-initialise a head for fine-tuning (None: the model's own initialisation)
    init: Optional[Callable[[nn.Module, int], None]] = None
    #: evaluate on the validation and test sets every this many epochs and after the last (the other epochs record
    #: NaN there), e.g. for short fine-tuning runs whose evaluation would cost more than their training
    eval_every: int = 1

    def __post_init__(self) -> None:
        if self.data.val_images is None:
            raise ValueError("RunSpec: the dataset needs a validation split (torch_layerlr.data.split_train)")
        for name in ("epochs", "batch_size", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        every = self.sharpness_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"sharpness_every must be a non-negative integer, got {every!r}")
        if self.parallel not in MODES:
            raise ValueError(f"parallel must be one of {MODES}, got {self.parallel!r}")


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, mean: Sequence[float], std: Sequence[float],
             device: str, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) of ``model`` in eval mode over a whole image set."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for x, y in batches(images, labels, batch_size, mean=mean, std=std, device=device):
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = images.shape[0]
    return loss_sum / n, 100.0 * correct / n


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _monitor(model: nn.Module, optimizer: torch.optim.Optimizer, data: ImageDataset, mean: Sequence[float],
             std: Sequence[float], device: str, every: int) -> SharpnessMonitor:
    """Sharpness on the first :data:`SHARPNESS_BATCH` training images (normalized, not augmented), per layer =
    per top-level child (the layer groups of the DALS authors, e.g. the MLP's four ``Linear``)."""
    x = normalize(data.train_images[:SHARPNESS_BATCH], mean, std).to(device)
    y = data.train_labels[:SHARPNESS_BATCH].to(device)
    return SharpnessMonitor.for_module(model, x, y, every, batch_size=SHARPNESS_BATCH, by="children",
                                       optimizer=optimizer)


def train_run(strategy: Strategy, spec: RunSpec, seed: int, mean: Sequence[float], std: Sequence[float],
              progress: Optional[Callable[[int, int], Any]] = None, lr_scale: float = 1.0) -> dict[str, Any]:
    """Train ``spec.model`` from scratch with ``strategy`` and return the run's record.

    The seed fixes the initialisation, the batch order and the augmentation. Each epoch records the mean
    training loss and accuracy over its batches, validation and test loss and accuracy, the wall time of the
    training loop so far (evaluation excluded) and of ``optimizer.step()`` plus the scheduler's step so far,
    and the learning rate of the first param group. A non-finite training loss ends the run (``diverged``).
    ``progress(epoch, batch)`` is called after every step (for a progress bar). ``lr_scale`` multiplies every
    learning rate the strategy sets (:attr:`Setup.lr_scale`); the record keeps it.

    With ``spec.sharpness_every`` = N > 0 (or N set by :func:`sharpness_monitoring`), every N-th step measures the
    global and per-layer sharpness of the loss on a fixed batch; the run's record then holds the measurements
    under ``sharpness`` (:class:`~torch_layerlr.sharpness.SharpnessMonitor` records, ``step`` counted from the
    start of the run), and each epoch its cumulative measuring time ``sharpness_s``, which ``wall_s`` excludes.
    """
    data, device = spec.data, spec.device
    torch.manual_seed(seed)
    channels, size, _ = data.image_shape
    model = build_model(spec.model, channels, size, data.num_classes).to(device)
    if spec.init is not None:
        spec.init(model, seed)
    model = wrap(model, spec.parallel)
    generator = torch.Generator().manual_seed(seed)
    sample = normalize(data.train_images[:SAMPLE_SIZE], mean, std).to(device)
    steps_per_epoch = math.ceil(data.train_images.shape[0] / spec.batch_size)
    setup = Setup(steps_per_epoch, spec.epochs, sample, data.train_labels[:SAMPLE_SIZE].to(device),
                  data.num_classes, lr_scale)
    optimizer, scheduler = strategy.build(unwrap(model), setup)
    feeds_loss = isinstance(optimizer, DALS)  # DALS's phase detector reads the training loss
    augment = crop_and_flip(padding=4) if spec.augment else None
    every = spec.sharpness_every or _SHARPNESS_EVERY.get()
    parallel = spec.parallel != "none"
    if every and parallel:
        raise ValueError("the sharpness monitor runs in one process: it does not take parallel runs")
    monitor = _monitor(model, optimizer, data, mean, std, device, every) if every else None

    epochs: list[dict[str, Any]] = []
    train_time = step_time = sharpness_time = 0.0
    diverged = False
    for epoch in range(1, spec.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        epoch_sharpness = 0.0
        _sync(device)
        start = time.perf_counter()
        for i, (x, y) in enumerate(batches(data.train_images, data.train_labels, spec.batch_size, shuffle=True,
                                           generator=generator, augment=augment, mean=mean, std=std,
                                           device=device)):
            rows = y.shape[0]
            if parallel:
                x, y = share(x, y)  # this rank's rows
            logits = model(x)
            share_loss = F.cross_entropy(logits, y)
            # weighted so that the mean over the ranks is the union batch's mean (weight 1 for even shares)
            weight = share_weight(y.shape[0], rows) if parallel else 1.0
            loss = share_loss if weight == 1.0 else share_loss * weight
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            _sync(device)
            t0 = time.perf_counter()
            if feeds_loss:
                optimizer.step(loss=loss.detach())
            else:
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            _sync(device)
            step_time += time.perf_counter() - t0
            loss_sum += share_loss.detach() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.shape[0]
            if monitor is not None:
                t0 = time.perf_counter()
                monitor.step()
                _sync(device)
                epoch_sharpness += time.perf_counter() - t0
            if progress is not None:
                progress(epoch, i + 1)
        _sync(device)
        train_time += time.perf_counter() - start - epoch_sharpness
        if parallel:
            seen_t = torch.tensor(seen, dtype=torch.int64, device=device)
            sum_over_ranks(loss_sum, correct, seen_t)
            seen = int(seen_t)
        sharpness_time += epoch_sharpness
        train_loss = float(loss_sum) / seen
        val_loss = val_acc = test_loss = test_acc = math.nan
        if epoch % spec.eval_every == 0 or epoch == spec.epochs:
            val_loss, val_acc = evaluate(model, data.val_images, data.val_labels, mean, std, device)
            test_loss, test_acc = evaluate(model, data.test_images, data.test_labels, mean, std, device)
        epochs.append(dict(epoch=epoch, train_loss=train_loss, train_acc=100.0 * int(correct) / seen,
                           val_loss=val_loss, val_acc=val_acc, test_loss=test_loss, test_acc=test_acc,
                           wall_s=train_time, step_s=step_time, steps=epoch * steps_per_epoch,
                           lr=float(optimizer.param_groups[0]["lr"])))
        if monitor is not None:
            epochs[-1]["sharpness_s"] = sharpness_time
        if not math.isfinite(train_loss):
            diverged = True
            break
    run = dict(strategy=strategy.name, seed=seed, lr_scale=lr_scale, diverged=diverged, epochs=epochs)
    if monitor is not None:
        run["sharpness"] = monitor.records
    return run
