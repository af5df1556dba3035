"""A synthetic image-classification task, for runs and tests on machines without a real dataset."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from torch_layerlr.data.dataset import ImageDataset

__all__ = ["synthetic_images"]


def synthetic_images(num_train: int = 6000, num_test: int = 2000, *, image_size: int = 28, channels: int = 1,
                     num_classes: int = 10, noise: float = 4.0, seed: int = 0) -> ImageDataset:
    """Noisy copies of ``num_classes`` smooth random prototypes, as ``uint8`` images like the real datasets.

    Each prototype is Gaussian noise blurred by a 7 x 7 box filter and scaled to unit variance; an image is its
    class prototype plus ``noise`` times fresh white noise, mapped to 0..255 (mean 128, 40 grey levels per unit)
    and clipped. With the default ``noise=4`` the MLP needs a few epochs to pass 80% validation accuracy.
    Labels are balanced in expectation. The same arguments give the same dataset on every machine.
    """
    for name, value in (("num_train", num_train), ("num_test", num_test), ("image_size", image_size),
                        ("channels", channels), ("num_classes", num_classes)):
        if int(value) != value or value < 1:
            raise ValueError(f"synthetic_images: {name} must be a positive integer, got {value!r}")
    if num_classes < 2:
        raise ValueError(f"synthetic_images: num_classes must be at least 2, got {num_classes}")
    if not noise >= 0:
        raise ValueError(f"synthetic_images: noise must be >= 0, got {noise!r}")
    g = torch.Generator().manual_seed(int(seed))
    raw = torch.randn(num_classes * channels, 1, image_size, image_size, generator=g)
    smooth = F.avg_pool2d(raw, 7, stride=1, padding=3, count_include_pad=False)
    smooth = smooth.view(num_classes, channels, image_size, image_size)
    prototypes = (smooth - smooth.mean(dim=(1, 2, 3), keepdim=True)) / smooth.std(dim=(1, 2, 3), keepdim=True)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, num_classes, (n,), generator=g)
        x = prototypes[labels] + noise * torch.randn(n, channels, image_size, image_size, generator=g)
        return (128.0 + 40.0 * x).round().clamp(0, 255).to(torch.uint8), labels

    train_images, train_labels = draw(num_train)
    test_images, test_labels = draw(num_test)
    classes = tuple(f"class {i}" for i in range(num_classes))
    return ImageDataset("synthetic", classes, train_images, train_labels, test_images, test_labels)
