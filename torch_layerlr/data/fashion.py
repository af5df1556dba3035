"""Fashion-MNIST from its four IDX files, checksum-verified, into memory.

Checksums
---------
The official MD5s are those of the four ``.gz`` files published in the README of
https://github.com/zalandoresearch/fashion-mnist (the same table torchvision's ``FashionMNIST.resources``
uses). Debian's ``dataset-fashion-mnist`` package (0.0~git20200523.55506a9-1) ships the same compressed data,
but its build (dh_strip_nondeterminism) rewrote each gzip header: it dropped the stored file name and set the
time stamp to the package date, which changes the ``.gz`` MD5 although the deflate stream and the
decompressed bytes are the official ones. We checked that: putting the name and the original time stamp
(2017-08-31 10:50:06 UTC for the training files, 10:50:27 for the test files) back into Debian's headers
reproduces the four official MD5s exactly, byte for byte. So a file is also accepted when its
*decompressed* bytes have the MD5 of the official files' decompressed bytes (the second column below,
computed from those verified files); this also accepts the official files stored uncompressed.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from torch_layerlr.data._files import ENV_VAR, DataFormatError, checksum_table, env_root, verify
from torch_layerlr.data.dataset import ImageDataset

__all__ = ["DEBIAN_DIR", "FASHION_MNIST_CLASSES", "FASHION_MNIST_MD5", "fashion_mnist", "read_idx"]

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the four ``.gz`` files."""

FASHION_MNIST_MD5: dict[str, tuple[str, str]] = {
    # file name:                   (official .gz MD5 (Zalando README),     MD5 of the decompressed IDX bytes)
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")

_IDX_UBYTE = 0x08


def _parse_idx(payload: bytes, path: Path, ndim: int | None) -> np.ndarray:
    """The array of an IDX file's bytes (big-endian header: 0, 0, type code, number of dimensions, then one
    uint32 per dimension; then the data). Only unsigned-byte data, the MNIST family's, is supported."""
    if len(payload) < 4:
        raise DataFormatError(f"{path}: {len(payload)} bytes, too short for an IDX header")
    magic = int.from_bytes(payload[:4], "big")
    zero, code, nd = int.from_bytes(payload[:2], "big"), payload[2], payload[3]
    if zero != 0 or code != _IDX_UBYTE or nd == 0 or (ndim is not None and nd != ndim):
        want = f"0x{0x800 + ndim:08x}" if ndim is not None else "0x000008NN"
        hint = ""
        if payload[:2] == b"\x1f\x8b":
            hint = " (it is gzip-compressed: name it *.gz)"
        raise DataFormatError(f"{path}: wrong magic number 0x{magic:08x}, expected {want} "
                              f"(IDX, unsigned bytes, {ndim if ndim is not None else 'N'} dimensions){hint}")
    header = 4 + 4 * nd
    if len(payload) < header:
        raise DataFormatError(f"{path}: truncated IDX header ({len(payload)} of {header} bytes)")
    dims = tuple(int.from_bytes(payload[4 + 4 * i:8 + 4 * i], "big") for i in range(nd))
    size = int(np.prod(dims, dtype=np.int64))
    body = len(payload) - header
    if body < size:
        raise DataFormatError(f"{path}: truncated: the header promises {size} data bytes {dims}, "
                              f"the file has {body}")
    if body > size:
        raise DataFormatError(f"{path}: {body - size} bytes after the {size} data bytes the header {dims} "
                              "announces")
    return np.frombuffer(payload, dtype=np.uint8, count=size, offset=header).reshape(dims)


def read_idx(path: str | os.PathLike, accepted: Sequence[str] | None = None, ndim: int | None = None) -> Tensor:
    """Read one IDX file (gzip-compressed if its name ends in ``.gz``) into a ``uint8`` tensor.

    When ``accepted`` digests are given, the file's bytes or its decompressed bytes must have one of them
    (:class:`~torch_layerlr.data.ChecksumError` otherwise); ``ndim`` checks the number of dimensions.
    """
    path = Path(path)
    raw = path.read_bytes()
    payload, gz_error = raw, None
    if path.name.endswith(".gz"):
        try:
            payload = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            payload, gz_error = None, e
    if accepted is not None:
        verify(path, accepted, raw, payload if payload is not raw else None)
    if gz_error is not None:
        kind = "truncated" if isinstance(gz_error, EOFError) else "corrupt"
        hint = " (it looks like an uncompressed IDX file: drop the .gz)" if raw[:2] == b"\0\0" else ""
        raise DataFormatError(f"{path}: not a valid gzip file, {kind}: {gz_error}{hint}")
    return torch.from_numpy(_parse_idx(payload, path, ndim).copy())


def _find(name: str, dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        for candidate in (d / name, d / name[:-3]):  # the .gz file, or the same file decompressed
            if candidate.is_file():
                return candidate
    return None


def _search_dirs(base: Path) -> list[Path]:
    return [base, base / "fashion-mnist", base / "FashionMNIST" / "raw"]


def fashion_mnist(root: str | os.PathLike | None = None, *,
                  checksums: Mapping[str, str | Sequence[str]] | None = None) -> ImageDataset:
    """Load Fashion-MNIST (60 000 training and 10 000 test images, 1 x 28 x 28, 10 classes) into memory.

    The four files ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``
    and ``t10k-labels-idx1-ubyte.gz`` (or the same files decompressed, without ``.gz``) are looked up in
    ``root``, else in the directory named by the ``LAYERLR_DATA`` environment variable, else in Debian's
    ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``); in each place also in a
    ``fashion-mnist/`` or torchvision-style ``FashionMNIST/raw/`` subdirectory. Nothing is downloaded.

    Every file is checked against :data:`FASHION_MNIST_MD5` (see the module doc for the two columns).
    ``checksums`` replaces entries of that table (file name -> accepted hex digests); it exists for tests and
    for files you have verified yourself.

    Returns an :class:`ImageDataset` with ``uint8`` images ``N x 1 x 28 x 28`` and ``int64`` labels 0..9.
    """
    table = checksum_table(FASHION_MNIST_MD5, checksums)
    if root is not None:
        bases, source = [Path(root).expanduser()], f"root={str(root)!r}"
    elif env_root() is not None:
        bases, source = [env_root()], f"{ENV_VAR}={str(env_root())!r}"
    else:
        bases, source = [DEBIAN_DIR], f"Debian's default location {DEBIAN_DIR}"
    dirs = [d for b in bases for d in _search_dirs(b)]
    found = {name: _find(name, dirs) for name in FASHION_MNIST_MD5}
    missing = [name for name, p in found.items() if p is None]
    if missing:
        where = ", ".join(str(d) for d in dirs)
        what = "Fashion-MNIST not found" if len(missing) == len(found) else \
            f"Fashion-MNIST incomplete: {', '.join(missing)} missing"
        raise FileNotFoundError(
            f"{what} ({source}; looked in {where}). Install Debian's package with "
            f"`apt-get install dataset-fashion-mnist` (files under {DEBIAN_DIR}), or download the four files "
            "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            "t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist into a directory "
            f"and pass fashion_mnist(root=DIR) or set {ENV_VAR}=DIR.")

    def load(prefix: str) -> tuple[Tensor, Tensor]:
        img_name, lab_name = f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"
        images = read_idx(found[img_name], table[img_name], ndim=3)
        labels = read_idx(found[lab_name], table[lab_name], ndim=1)
        if tuple(images.shape[1:]) != (28, 28):
            raise DataFormatError(f"{found[img_name]}: images are {tuple(images.shape[1:])}, expected 28x28")
        if images.shape[0] != labels.shape[0]:
            raise DataFormatError(f"{found[img_name]} has {images.shape[0]} images but {found[lab_name]} has "
                                  f"{labels.shape[0]} labels")
        if labels.numel() and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
            raise DataFormatError(f"{found[lab_name]}: label {int(labels.max())} out of range 0..9")
        return images.unsqueeze(1), labels.to(torch.int64)

    train_images, train_labels = load("train")
    test_images, test_labels = load("t10k")
    return ImageDataset("fashion-mnist", FASHION_MNIST_CLASSES, train_images, train_labels, test_images,
                        test_labels)
