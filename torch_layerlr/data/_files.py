"""File integrity checks and the errors shared by the dataset loaders.

A checksum table maps a file name to the hex digests accepted for it. The algorithm follows from the digest's
length (32 hex digits: MD5, 40: SHA-1, 64: SHA-256), so one table can mix the MD5s that Fashion-MNIST and
CIFAR-10's python version publish with the SHA-1s that are all that exists per file for CIFAR-10's binary
version. Nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ChecksumError", "DataFormatError", "ENV_VAR", "checksum_table", "verify"]

ENV_VAR = "LAYERLR_DATA"
"""Environment variable naming a data directory, used when a loader gets no ``root``."""

_ALGORITHMS = {32: "md5", 40: "sha1", 64: "sha256"}


class ChecksumError(ValueError):
    """A data file's checksum is not one of the official ones: the file is corrupted, truncated or not the
    official release."""


class DataFormatError(ValueError):
    """A data file passed its checksum (or was given an explicit one) but is not in the expected format."""


def _digests(value: str | Sequence[str], name: str) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else tuple(value)
    if not values:
        raise ValueError(f"checksums[{name!r}] is empty")
    out = []
    for v in values:
        v = str(v).lower()
        if len(v) not in _ALGORITHMS or any(c not in "0123456789abcdef" for c in v):
            raise ValueError(f"checksums[{name!r}]: {v!r} is not an MD5, SHA-1 or SHA-256 hex digest")
        out.append(v)
    return tuple(out)


def checksum_table(official: Mapping[str, str | Sequence[str]],
                   override: Mapping[str, str | Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """The official table with ``override``'s entries replacing (not adding to) those of the same file name."""
    table = {k: _digests(v, k) for k, v in official.items()}
    for k, v in (override or {}).items():
        if k not in table:
            raise ValueError(f"checksums: unknown file name {k!r}; known: {', '.join(sorted(table))}")
        table[k] = _digests(v, k)
    return table


def _hexdigest(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()


def verify(path: str | os.PathLike, accepted: Sequence[str], data: bytes, payload: bytes | None = None) -> None:
    """Raise :class:`ChecksumError` unless the file's bytes ``data`` or, when given, its decompressed
    ``payload`` have one of the ``accepted`` digests (the payload is only hashed when the file's bytes did not
    match)."""
    algorithms = sorted({_ALGORITHMS[len(d)] for d in accepted})
    got = []
    for what, blob in (("file", data), ("decompressed", payload)):
        if blob is None:
            continue
        for algorithm in algorithms:
            h = _hexdigest(blob, algorithm)
            if h in accepted:
                return
            got.append(f"{algorithm} {h}" + (f" ({what})" if payload is not None else ""))
    raise ChecksumError(
        f"{Path(path)}: checksum mismatch: expected {' or '.join(accepted)}, got {', '.join(got)} "
        f"({len(data)} bytes). The file is corrupted, truncated or not the official release; "
        "replace it with the official file.")


def env_root() -> Path | None:
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None
