"""Batched augmentation and normalization of ``N x C x H x W`` image tensors.

Every random function takes an explicit ``torch.Generator`` (``None``: torch's global random state) and draws
one value per image from it, so a seeded generator gives the same augmentation on every run. The random
numbers are drawn on the generator's device and moved to the images', so a CPU generator can drive
augmentation of CUDA batches. Augmentations work on any dtype; use them on the ``uint8`` images, before
:func:`normalize`, so the padding is black like torchvision's ``RandomCrop(padding=...)`` on PIL images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["channel_stats", "crop_and_flip", "crop_at", "hflip", "normalize", "random_crop", "random_flip"]


def _check_images(images: Tensor, where: str) -> None:
    if images.dim() != 4:
        raise ValueError(f"{where}: expected an N x C x H x W batch, got shape {tuple(images.shape)}")


def _randint(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, high, (n,), generator=generator, device=gdev).to(device)


def hflip(images: Tensor) -> Tensor:
    """Mirror every image left to right (an involution: ``hflip(hflip(x)) == x``)."""
    _check_images(images, "hflip")
    return images.flip(-1)


def random_flip(images: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Mirror each image left to right independently with probability ``p``."""
    _check_images(images, "random_flip")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random_flip: p must be in [0, 1], got {p}")
    gdev = generator.device if generator is not None else torch.device("cpu")
    flip = torch.rand(images.shape[0], generator=generator, device=gdev).to(images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def crop_at(images: Tensor, top: Tensor, left: Tensor, size: tuple[int, int]) -> Tensor:
    """Cut an ``h x w`` window from each image, image ``i``'s starting at row ``top[i]``, column ``left[i]``."""
    _check_images(images, "crop_at")
    n, c, height, width = images.shape
    h, w = size
    top, left = top.to(images.device, torch.long), left.to(images.device, torch.long)
    if top.shape != (n,) or left.shape != (n,):
        raise ValueError(f"crop_at: top and left must have shape ({n},)")
    if n and (top.min() < 0 or left.min() < 0 or top.max() + h > height or left.max() + w > width):
        raise ValueError(f"crop_at: an {h}x{w} window does not fit in {height}x{width} at the given offsets")
    rows = top[:, None] + torch.arange(h, device=images.device)  # n x h
    cols = left[:, None] + torch.arange(w, device=images.device)  # n x w
    out = images.gather(2, rows[:, None, :, None].expand(n, c, h, width))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def random_crop(images: Tensor, padding: int = 0, generator: torch.Generator | None = None,
                size: tuple[int, int] | None = None) -> Tensor:
    """Zero-pad each image by ``padding`` pixels on every side, then cut a random ``size`` window (default:
    the original ``H x W``, so the shape is kept) at an offset drawn uniformly per image."""
    _check_images(images, "random_crop")
    if int(padding) != padding or padding < 0:
        raise ValueError(f"random_crop: padding must be a non-negative integer, got {padding}")
    h, w = size if size is not None else images.shape[-2:]
    padded = F.pad(images, (padding,) * 4) if padding else images
    ph, pw = padded.shape[-2:]
    if not (0 < h <= ph and 0 < w <= pw):
        raise ValueError(f"random_crop: size {h}x{w} does not fit in the padded {ph}x{pw} images")
    n = images.shape[0]
    top = _randint(ph - h + 1, n, generator, images.device)
    left = _randint(pw - w + 1, n, generator, images.device)
    return crop_at(padded, top, left, (h, w))


def crop_and_flip(padding: int = 4, flip: bool = True) -> Callable[[Tensor, torch.Generator | None], Tensor]:
    """The standard CIFAR augmentation as one ``augment(images, generator)`` function for
    :func:`~torch_layerlr.data.batches`: :func:`random_crop` with ``padding``, then :func:`random_flip`."""

    def augment(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        out = random_crop(images, padding, generator)
        return random_flip(out, generator) if flip else out

    return augment


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x - mean) / std`` per channel, as ``float32``. ``uint8`` images are first scaled to [0, 1]; float
    images are taken to be in [0, 1] already. ``mean`` and ``std`` are in [0, 1] units, one per channel
    (see :func:`channel_stats`)."""
    _check_images(images, "normalize")
    c = images.shape[1]
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).reshape(-1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).reshape(-1)
    if m.numel() != c or s.numel() != c:
        raise ValueError(f"normalize: {c} channels but {m.numel()} means and {s.numel()} stds")
    if (s <= 0).any():
        raise ValueError("normalize: std must be positive")
    x = images.to(torch.float32)
    if not images.is_floating_point():
        x = x.div_(255.0)
    return x.sub_(m[:, None, None]).div_(s[:, None, None])


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) standard deviation of ``uint8`` images, in [0, 1] units: the
    ``mean`` / ``std`` for :func:`normalize`. Computed from a 256-bin histogram per channel, so it needs no
    float copy of the dataset."""
    _check_images(images, "channel_stats")
    if images.dtype != torch.uint8:
        raise TypeError(f"channel_stats: expected uint8 images, got {images.dtype}")
    if images.shape[0] == 0 or images[0].numel() == 0:
        raise ValueError("channel_stats: no pixels")
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for ch in range(images.shape[1]):
        counts = torch.bincount(images[:, ch].reshape(-1).cpu(), minlength=256).to(torch.float64)
        total = counts.sum()
        mu = (counts * values).sum() / total
        var = (counts * (values - mu) ** 2).sum() / total
        means.append(float(mu))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)
