"""CIFAR-10 from an extracted python-version or binary-version directory, checksum-verified, into memory.

Checksums
---------
- Python version (``cifar-10-batches-py/``): the per-file MD5s of torchvision's ``CIFAR10.train_list`` /
  ``test_list``, i.e. of the files inside the official ``cifar-10-python.tar.gz`` (whose MD5,
  c58f30108f718f92721af3b95e74349a, is the one https://www.cs.toronto.edu/~kriz/cifar.html publishes).
- Binary version (``cifar-10-batches-bin/``): the dataset authors publish only the archive's MD5
  (``cifar-10-binary.tar.gz``: c32a1d4ab5d03f1284b67883e8d87530), no per-file digest. The per-file digests
  here are the SHA-1s of Apache MXNet's Gluon ``CIFAR10`` dataset (python/mxnet/gluon/data/vision/datasets.py),
  which checks the extracted ``.bin`` files with them. They could not be checked against a copy of the data
  while writing this; if your genuine files are rejected, compare the archive's MD5 above and pass
  ``checksums=`` with your files' digests.

Safety: python batches are pickles. They are unpickled only after their checksum matched, and then with an
unpickler that resolves nothing but the few numpy names a CIFAR batch refers to, so even a file with a
forged digest cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from torch_layerlr.data._files import ENV_VAR, ChecksumError, DataFormatError, checksum_table, env_root, verify
from torch_layerlr.data.dataset import ImageDataset

__all__ = ["CIFAR10_BINARY_SHA1", "CIFAR10_CLASSES", "CIFAR10_PYTHON_MD5", "cifar10"]

CIFAR10_PYTHON_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}

CIFAR10_BINARY_SHA1 = {
    "data_batch_1.bin": "aadd24acce27caa71bf4b10992e9e7b2d74c2540",
    "data_batch_2.bin": "c0ba65cce70568cd57b4e03e9ac8d2a5367c1795",
    "data_batch_3.bin": "1dd00a74ab1d17a6e7d73e185b69dbf31242f295",
    "data_batch_4.bin": "aab85764eb3584312d3c7f65fd2fd016e36a258e",
    "data_batch_5.bin": "26e2849e66a845b7f1e4614ae70f4889ae604628",
    "test_batch.bin": "67eb016db431130d61cd03c7ad570b013799c88c",
}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_PY_DIR, _BIN_DIR = "cifar-10-batches-py", "cifar-10-batches-bin"
_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_PIXELS = 3 * 32 * 32
_HELP = ("Get CIFAR-10 from https://www.cs.toronto.edu/~kriz/cifar.html and extract it into ROOT: "
         "cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a) gives cifar-10-batches-py/, "
         "cifar-10-binary.tar.gz (md5 c32a1d4ab5d03f1284b67883e8d87530) gives cifar-10-batches-bin/; "
         "then call cifar10(ROOT). Nothing is downloaded.")


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _BatchUnpickler(pickle.Unpickler):
    """Resolves only the globals a CIFAR-10 batch pickle uses (numpy array reconstruction; ``_codecs.encode``,
    which Python 3 writes for bytes in protocol 2); anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: __import__("codecs").encode,
    }

    def find_class(self, module: str, name: str):
        resolve = self._ALLOWED.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch never refers to it")
        return resolve()


def _str_keys(d: dict) -> dict:
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _parse_python(raw: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        # encoding="bytes": the official batches are Python 2 pickles, their str objects stay bytes.
        entry = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # any unpickling failure means: not a CIFAR-10 python batch
        raise DataFormatError(f"{path}: not a CIFAR-10 python-version batch (pickle): "
                              f"{type(e).__name__}: {e}") from e
    if not isinstance(entry, dict):
        raise DataFormatError(f"{path}: not a CIFAR-10 python-version batch: holds a {type(entry).__name__}, "
                              "not a dict")
    entry = _str_keys(entry)
    if "data" not in entry or "labels" not in entry:
        hint = " (it looks like CIFAR-100: 'fine_labels')" if "fine_labels" in entry else ""
        raise DataFormatError(f"{path}: not a CIFAR-10 python-version batch: keys {sorted(entry)}, "
                              f"expected 'data' and 'labels'{hint}")
    data = entry["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataFormatError(f"{path}: 'data' is {desc}, expected uint8 (N, {_PIXELS})")
    try:
        labels = np.asarray(entry["labels"], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataFormatError(f"{path}: 'labels' is not a list of integers: {e}") from e
    if labels.shape != (data.shape[0],):
        raise DataFormatError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    return data, labels


def _parse_binary(raw: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    record = 1 + _PIXELS
    if len(raw) % record:
        hint = " (CIFAR-100's binary files have 3074-byte records)" if len(raw) % (record + 1) == 0 else ""
        raise DataFormatError(f"{path}: {len(raw)} bytes is not a whole number of {record}-byte records "
                              f"(1 label byte + {_PIXELS} pixel bytes): truncated or not a CIFAR-10 binary "
                              f"batch{hint}")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    return rows[:, 1:], rows[:, 0].astype(np.int64)


def _locate(root: Path, fmt: str) -> tuple[str, Path]:
    """The format and directory of the batches under ``root`` (root itself may be the batch directory)."""
    candidates = {
        "python": [root / _PY_DIR, root] if (root / "data_batch_1").is_file() else [root / _PY_DIR],
        "binary": [root / _BIN_DIR, root] if (root / "data_batch_1.bin").is_file() else [root / _BIN_DIR],
    }
    order = ["python", "binary"] if fmt == "auto" else [fmt]
    for f in order:
        for d in candidates[f]:
            if d.is_dir():
                return f, d
    wanted = " or ".join(f"{root / (_PY_DIR if f == 'python' else _BIN_DIR)}/" for f in order)
    archives = [a for a in ("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz") if (root / a).is_file()]
    hint = f" Found {', '.join(archives)} in {root}: extract it there (tar xzf)." if archives else ""
    raise FileNotFoundError(f"No CIFAR-10 batches: expected {wanted}.{hint} {_HELP}")


def cifar10(root: str | os.PathLike | None = None, *, format: str = "auto",
            checksums: Mapping[str, str | Sequence[str]] | None = None) -> ImageDataset:
    """Load CIFAR-10 (50 000 training and 10 000 test images, 3 x 32 x 32, 10 classes) into memory.

    ``root`` (default: the ``LAYERLR_DATA`` environment variable) holds the extracted official archive:
    ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (python version), or
    ``cifar-10-batches-bin/`` with ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin`` (binary
    version); ``root`` may also be that directory itself. ``format`` is ``"auto"`` (python if present, else
    binary), ``"python"`` or ``"binary"``. Nothing is downloaded.

    Every file is checked against :data:`CIFAR10_PYTHON_MD5` / :data:`CIFAR10_BINARY_SHA1` (see the module
    doc for their sources) before it is parsed; ``checksums`` replaces entries of those tables (file name ->
    accepted hex digests) for tests and for files you have verified yourself.

    Returns an :class:`ImageDataset` with ``uint8`` images ``N x 3 x 32 x 32`` (RGB) and ``int64`` labels
    0..9, the training batches concatenated in order.
    """
    if format not in ("auto", "python", "binary"):
        raise ValueError(f"cifar10: format must be 'auto', 'python' or 'binary', got {format!r}")
    if root is None:
        root = env_root()
        if root is None:
            raise FileNotFoundError(f"cifar10: no root given and {ENV_VAR} is not set. {_HELP}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"cifar10: root {root} is not a directory. {_HELP}")
    fmt, directory = _locate(root, format)
    suffix, parse = ("", _parse_python) if fmt == "python" else (".bin", _parse_binary)
    table = checksum_table({**CIFAR10_PYTHON_MD5, **CIFAR10_BINARY_SHA1}, checksums)

    def load(names: list[str]) -> tuple[Tensor, Tensor]:
        images, labels = [], []
        for name in names:
            path = directory / (name + suffix)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing from the CIFAR-10 {fmt} version. {_HELP}")
            raw = path.read_bytes()
            try:
                verify(path, table[path.name], raw)  # before unpickling anything
            except ChecksumError as e:
                if fmt != "binary":
                    raise
                raise ChecksumError(
                    f"{e} (The binary version's per-file SHA-1s are Apache MXNet's, not the dataset authors': "
                    "if your cifar-10-binary.tar.gz has the official md5 c32a1d4ab5d03f1284b67883e8d87530, pass "
                    "its files' digests as cifar10(..., checksums={name: digest}).)") from None
            data, lab = parse(raw, path)
            if lab.size and (lab.min() < 0 or lab.max() >= len(CIFAR10_CLASSES)):
                raise DataFormatError(f"{path}: label {int(lab.max() if lab.max() >= 10 else lab.min())} "
                                      "out of range 0..9")
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(lab)
        return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))

    train_images, train_labels = load(_TRAIN)
    test_images, test_labels = load(["test_batch"])
    return ImageDataset("cifar10", CIFAR10_CLASSES, train_images, train_labels, test_images, test_labels)
