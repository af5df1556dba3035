"""The in-memory dataset container, the train/validation split and the batch iterator."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from torch_layerlr.data.transforms import normalize

__all__ = ["ImageDataset", "batches", "split_train"]

Augment = Callable[[Tensor, "torch.Generator | None"], Tensor]


@dataclass(frozen=True, repr=False)
class ImageDataset:
    """A whole image-classification dataset in memory.

    Images are ``uint8`` tensors of shape ``N x C x H x W`` (values 0..255, as stored in the files), labels
    ``int64`` tensors of shape ``N``. ``val_images`` / ``val_labels`` are ``None`` until
    :func:`split_train` moves part of the training set there.
    """

    name: str
    classes: tuple[str, ...]
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    val_images: Tensor | None = None
    val_labels: Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.train_images.shape[1:])

    def __repr__(self) -> str:
        parts = [f"train={tuple(self.train_images.shape)}"]
        if self.val_images is not None:
            parts.append(f"val={tuple(self.val_images.shape)}")
        parts.append(f"test={tuple(self.test_images.shape)}")
        return f"ImageDataset({self.name!r}, {', '.join(parts)}, classes={self.num_classes})"


def split_train(data: ImageDataset, val_fraction: float, seed: int) -> ImageDataset:
    """Hold out ``round(val_fraction * N)`` training images as a validation set.

    The held-out images are a uniformly random subset drawn from ``torch.Generator().manual_seed(seed)``, so
    the split depends only on ``N``, ``val_fraction`` and ``seed`` (the same on every machine and torch
    version that keeps ``randperm``'s stream). Both parts keep the original order of the images. Returns a
    new :class:`ImageDataset` whose ``train_*`` are the rest and ``val_*`` the held-out part; the test set is
    untouched.
    """
    if not isinstance(data, ImageDataset):
        raise TypeError(f"split_train: expected an ImageDataset, got {type(data).__name__}")
    if data.val_images is not None:
        raise ValueError("split_train: this dataset already has a validation split")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"split_train: val_fraction must be in [0, 1), got {val_fraction}")
    n = data.train_images.shape[0]
    k = int(round(float(val_fraction) * n))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    val_idx = perm[:k].sort().values
    train_idx = perm[k:].sort().values
    return dataclasses.replace(
        data,
        train_images=data.train_images[train_idx], train_labels=data.train_labels[train_idx],
        val_images=data.train_images[val_idx], val_labels=data.train_labels[val_idx])


def batches(images: Tensor, labels: Tensor, batch_size: int, shuffle: bool = False,
            generator: torch.Generator | None = None, augment: Augment | None = None, *,
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
            drop_last: bool = False, device: torch.device | str | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Iterate over ``(images, labels)`` mini-batches of an in-memory dataset.

    One pass (an epoch). With ``shuffle`` the order is a fresh ``randperm`` from ``generator``; the same
    ``generator`` drives ``augment(batch, generator)``, which gets each batch as ``uint8`` (already on
    ``device`` if one is given), e.g. :func:`~torch_layerlr.data.transforms.crop_and_flip`. Yields
    ``float32`` images in [0, 1], or normalized per channel by ``mean`` / ``std`` (given in [0, 1] units)
    when those are given, and ``int64`` labels. The last, smaller batch is kept unless ``drop_last``.
    ``generator=None`` uses torch's global random state.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"batches: {images.shape[0]} images but {labels.shape[0]} labels")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batches: batch_size must be a positive integer, got {batch_size}")
    if (mean is None) != (std is None):
        raise ValueError("batches: give both mean and std, or neither")
    n = images.shape[0]
    if shuffle:
        order = torch.randperm(n, generator=generator,
                               device=generator.device if generator is not None else "cpu")
        order = order.to(images.device)
    else:
        order = None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            x, y = images[start:start + batch_size], labels[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            x, y = images[idx], labels[idx.to(labels.device)]
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if augment is not None:
            x = augment(x, generator)
        if mean is not None:
            x = normalize(x, mean, std)
        else:
            x = x.to(torch.float32).div_(255.0) if not x.is_floating_point() else x.to(torch.float32)
        yield x, y
