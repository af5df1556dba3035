"""Datasets without torchvision: Fashion-MNIST (IDX) and CIFAR-10 (python and binary versions) read from
local files, checksum-verified, into in-memory ``uint8`` tensors, and a synthetic stand-in; batched augmentation
on tensors, a train/validation split and a batch iterator. Nothing here downloads data or uses the fused kernels.

>>> import torch
>>> from torch_layerlr.data import fashion_mnist, split_train, batches, crop_and_flip, channel_stats
>>> data = split_train(fashion_mnist(), val_fraction=0.1, seed=0)
>>> mean, std = channel_stats(data.train_images)
>>> g = torch.Generator().manual_seed(0)
>>> for x, y in batches(data.train_images, data.train_labels, 128, shuffle=True, generator=g,
...                     augment=crop_and_flip(padding=2), mean=mean, std=std):
...     ...
"""

from torch_layerlr.data._files import ENV_VAR, ChecksumError, DataFormatError
from torch_layerlr.data.cifar import CIFAR10_BINARY_SHA1, CIFAR10_CLASSES, CIFAR10_PYTHON_MD5, cifar10
from torch_layerlr.data.dataset import ImageDataset, batches, split_train
from torch_layerlr.data.fashion import (DEBIAN_DIR, FASHION_MNIST_CLASSES, FASHION_MNIST_MD5, fashion_mnist,
                                              read_idx)
from torch_layerlr.data.synthetic import synthetic_images
from torch_layerlr.data.transforms import (channel_stats, crop_and_flip, crop_at, hflip, normalize, random_crop,
                                           random_flip)

__all__ = ["CIFAR10_BINARY_SHA1", "CIFAR10_CLASSES", "CIFAR10_PYTHON_MD5", "ChecksumError", "DEBIAN_DIR",
           "DataFormatError", "ENV_VAR", "FASHION_MNIST_CLASSES", "FASHION_MNIST_MD5", "ImageDataset", "batches",
           "channel_stats", "cifar10", "crop_and_flip", "crop_at", "fashion_mnist", "hflip", "normalize",
           "random_crop", "random_flip", "read_idx", "split_train", "synthetic_images"]
