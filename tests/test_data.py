"""torch_layerlr.data: Fashion-MNIST (IDX) and CIFAR-10 (python and binary) loaders, augmentation, split and
batches. Small files are written in the exact formats into tmp_path; the checksum check is pointed at their
own digests through the ``checksums=`` override. The real Fashion-MNIST is loaded when Debian's package is
installed."""

import gzip
import hashlib
import io
import pickle
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torch_layerlr.data import (
    CIFAR10_BINARY_SHA1,
    CIFAR10_PYTHON_MD5,
    DEBIAN_DIR,
    FASHION_MNIST_MD5,
    ChecksumError,
    DataFormatError,
    ImageDataset,
    batches,
    channel_stats,
    cifar10,
    crop_and_flip,
    crop_at,
    fashion_mnist,
    hflip,
    normalize,
    random_crop,
    random_flip,
    read_idx,
    split_train,
)
from torch_layerlr.data import fashion as fashion_module

FASHION_NAMES = list(FASHION_MNIST_MD5)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# IDX / Fashion-MNIST


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: 0, 0, 0x08, ndim, big-endian uint32 dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def gzip_like_official(payload: bytes, name: str, mtime: int = 1504176606) -> bytes:
    """gzip with the original file name and a time stamp in the header, as the Zalando files are."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=mtime) as f:
        f.write(payload)
    return buf.getvalue()


def make_fashion(rng, n_train=5, n_test=3):
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    return arrays


def write_fashion(directory, arrays, overrides=None):
    """Write the four files; ``overrides`` maps a file name to raw file bytes to write instead. Returns the
    files' own MD5s as a ``checksums=`` table."""
    directory.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, arr in arrays.items():
        raw = (overrides or {}).get(name, gzip_like_official(idx_bytes(arr), name[:-3]))
        (directory / name).write_bytes(raw)
        sums[name] = md5(raw)
    return sums


@pytest.fixture
def fashion_files(tmp_path):
    arrays = make_fashion(np.random.default_rng(0))
    sums = write_fashion(tmp_path / "fm", arrays)
    return tmp_path / "fm", arrays, sums


def test_fashion_round_trip(fashion_files):
    root, arrays, sums = fashion_files
    data = fashion_mnist(root, checksums=sums)
    assert isinstance(data, ImageDataset) and data.name == "fashion-mnist" and data.num_classes == 10
    assert data.train_images.shape == (5, 1, 28, 28) and data.test_images.shape == (3, 1, 28, 28)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert np.array_equal(data.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte.gz"])
    assert np.array_equal(data.train_labels.numpy(), arrays["train-labels-idx1-ubyte.gz"])
    assert np.array_equal(data.test_images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte.gz"])
    assert np.array_equal(data.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    assert data.train_images.is_contiguous() and data.image_shape == (1, 28, 28)
    data.train_images[0, 0, 0, 0] = 7  # writable, owns its memory
    assert "train=(5, 1, 28, 28)" in repr(data)


def test_fashion_env_var_and_subdirectory(fashion_files, monkeypatch, tmp_path):
    root, arrays, sums = fashion_files
    monkeypatch.setenv("LAYERLR_DATA", str(root))
    assert fashion_mnist(checksums=sums).train_images.shape[0] == 5
    # a parent directory holding fashion-mnist/ works too, for root= and for the variable
    sub = tmp_path / "parent" / "fashion-mnist"
    write_fashion(sub, arrays)
    monkeypatch.setenv("LAYERLR_DATA", str(tmp_path / "parent"))
    assert fashion_mnist(checksums=sums).test_images.shape[0] == 3
    assert fashion_mnist(tmp_path / "parent", checksums=sums).test_images.shape[0] == 3


def test_fashion_missing_gives_instructions(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as e:
        fashion_mnist(tmp_path)
    assert "root=" in str(e.value) and "LAYERLR_DATA" in str(e.value) and str(tmp_path) in str(e.value)
    # default location: nothing given, no variable, Debian's directory absent
    monkeypatch.delenv("LAYERLR_DATA", raising=False)
    monkeypatch.setattr(fashion_module, "DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="Debian's default location"):
        fashion_mnist()


def test_fashion_incomplete_names_missing_file(fashion_files):
    root, _, sums = fashion_files
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz missing"):
        fashion_mnist(root, checksums=sums)


def test_fashion_official_checksums_reject_other_files(fashion_files):
    root, _, _ = fashion_files
    with pytest.raises(ChecksumError) as e:
        fashion_mnist(root)  # the official table: these small files are not the release
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and FASHION_MNIST_MD5["train-images-idx3-ubyte.gz"][0] in msg


def test_fashion_bad_md5_names_file(fashion_files):
    root, _, sums = fashion_files
    raw = bytearray((root / "t10k-images-idx3-ubyte.gz").read_bytes())
    raw[-10] ^= 0xFF  # one flipped byte (breaks the CRC as well)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match=r"t10k-images-idx3-ubyte\.gz: checksum mismatch"):
        fashion_mnist(root, checksums=sums)


def test_fashion_recompressed_header_accepted_by_payload_digest(fashion_files):
    """Debian's files differ from the official ones only in the gzip header; a file is accepted when its
    decompressed bytes have an accepted digest (the second column of FASHION_MNIST_MD5)."""
    root, arrays, sums = fashion_files
    name = "train-images-idx3-ubyte.gz"
    payload = idx_bytes(arrays[name])
    restamped = gzip.compress(payload, mtime=1591347949)  # no file name, other time stamp
    assert md5(restamped) != sums[name]
    (root / name).write_bytes(restamped)
    with pytest.raises(ChecksumError, match="decompressed"):
        fashion_mnist(root, checksums=sums)
    data = fashion_mnist(root, checksums={**sums, name: (sums[name], md5(payload))})
    assert np.array_equal(data.train_images[:, 0].numpy(), arrays[name])


def test_fashion_uncompressed_files(fashion_files):
    root, arrays, sums = fashion_files
    name = "t10k-labels-idx1-ubyte.gz"
    payload = idx_bytes(arrays[name])
    (root / name).unlink()
    (root / name[:-3]).write_bytes(payload)
    data = fashion_mnist(root, checksums={**sums, name: (sums[name], md5(payload))})
    assert np.array_equal(data.test_labels.numpy(), arrays[name])


def test_fashion_official_table_shape():
    for name, (gz, payload) in FASHION_MNIST_MD5.items():
        assert name.endswith(".gz") and len(gz) == len(payload) == 32 and gz != payload
    assert FASHION_MNIST_MD5["train-images-idx3-ubyte.gz"][0] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"


def test_idx_truncated_gzip(fashion_files):
    root, _, sums = fashion_files
    name = "train-labels-idx1-ubyte.gz"
    raw = (root / name).read_bytes()[:-12]
    (root / name).write_bytes(raw)
    with pytest.raises(DataFormatError, match=r"train-labels-idx1-ubyte\.gz: not a valid gzip file, truncated"):
        fashion_mnist(root, checksums={**sums, name: md5(raw)})


def test_idx_truncated_payload(fashion_files):
    root, arrays, sums = fashion_files
    name = "train-images-idx3-ubyte.gz"
    raw = gzip_like_official(idx_bytes(arrays[name])[:-100], name[:-3])
    (root / name).write_bytes(raw)
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte\.gz: truncated: the header promises 3920"):
        fashion_mnist(root, checksums={**sums, name: md5(raw)})


def test_idx_trailing_bytes(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(idx_bytes(np.arange(4, dtype=np.uint8)) + b"\0\0")
    with pytest.raises(DataFormatError, match="2 bytes after the 4 data bytes"):
        read_idx(path)


@pytest.mark.parametrize("magic", [b"\0\0\x08\x01", b"\0\0\x0d\x03", b"\x01\0\x08\x03"])
def test_idx_wrong_magic(fashion_files, magic):
    """Labels where images belong, float data, a non-zero first byte: all rejected by the magic number."""
    root, arrays, sums = fashion_files
    name = "t10k-images-idx3-ubyte.gz"
    payload = magic + idx_bytes(arrays[name])[4:]
    raw = gzip_like_official(payload, name[:-3])
    (root / name).write_bytes(raw)
    with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte\.gz: wrong magic number .* expected 0x00000803"):
        fashion_mnist(root, checksums={**sums, name: md5(raw)})


def test_idx_not_gzip_named_gz(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(np.arange(3, dtype=np.uint8)))
    with pytest.raises(DataFormatError, match="uncompressed IDX file"):
        read_idx(path)


def test_fashion_label_range_and_counts(fashion_files):
    root, arrays, sums = fashion_files
    name = "train-labels-idx1-ubyte.gz"
    bad = arrays[name].copy()
    bad[0] = 10
    raw = gzip_like_official(idx_bytes(bad), name[:-3])
    (root / name).write_bytes(raw)
    with pytest.raises(DataFormatError, match="label 10 out of range"):
        fashion_mnist(root, checksums={**sums, name: md5(raw)})
    raw = gzip_like_official(idx_bytes(arrays[name][:4]), name[:-3])
    (root / name).write_bytes(raw)
    with pytest.raises(DataFormatError, match="has 5 images but .* has 4 labels"):
        fashion_mnist(root, checksums={**sums, name: md5(raw)})


def test_checksum_override_validation(fashion_files):
    root, _, sums = fashion_files
    with pytest.raises(ValueError, match="unknown file name"):
        fashion_mnist(root, checksums={"train-images.gz": "0" * 32})
    with pytest.raises(ValueError, match="not an MD5"):
        fashion_mnist(root, checksums={**sums, "train-images-idx3-ubyte.gz": "xyz"})


_REAL = all((DEBIAN_DIR / n).is_file() for n in FASHION_NAMES)


@pytest.mark.skipif(not _REAL, reason=f"real Fashion-MNIST not installed in {DEBIAN_DIR} "
                                      "(apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
    data = fashion_mnist(DEBIAN_DIR)  # official checksums
    assert data.train_images.shape == (60000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    assert data.train_images.dtype == torch.uint8 and data.test_labels.dtype == torch.int64
    assert int(data.train_labels.min()) == 0 and int(data.train_labels.max()) == 9
    assert torch.equal(torch.bincount(data.train_labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(data.test_labels), torch.full((10,), 1000))
    mean, std = channel_stats(data.train_images)
    assert mean[0] == pytest.approx(0.2860, abs=1e-4) and std[0] == pytest.approx(0.3530, abs=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# CIFAR-10

CIFAR_PY = list(CIFAR10_PYTHON_MD5)
CIFAR_BIN = list(CIFAR10_BINARY_SHA1)


def make_cifar(rng, per_batch=2, n_test=3):
    batches_ = {}
    for name in CIFAR_PY:
        n = n_test if name == "test_batch" else per_batch
        batches_[name] = (rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist())
    return batches_


def cifar_pickle(name, data, labels) -> bytes:
    """A batch as the official files hold it: a protocol-2 pickle of a dict with bytes keys."""
    entry = {b"batch_label": f"{name} of 5".encode(), b"labels": list(labels), b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    return pickle.dumps(entry, protocol=2)


def _short_binstring(b: bytes) -> bytes:
    return b"U" + bytes([len(b)]) + b


def cifar_pickle_py2(name, data, labels) -> bytes:
    """A batch byte for byte as Python 2's cPickle (protocol 2) with numpy 1.x wrote the official files: py2
    ``str`` objects (SHORT_BINSTRING / BINSTRING), ``numpy.core.multiarray._reconstruct``."""
    n = data.shape[0]
    return b"".join([
        b"\x80\x02}(", _short_binstring(b"data"),
        b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n", b"K\x00\x85", _short_binstring(b"b"),
        b"\x87R(K\x01", b"J" + struct.pack("<i", n), b"M" + struct.pack("<H", 3072), b"\x86",
        b"cnumpy\ndtype\n", _short_binstring(b"u1"), b"K\x00K\x01\x87R",
        b"(K\x03", _short_binstring(b"|"), b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
        b"\x89", b"T" + struct.pack("<I", data.nbytes) + data.tobytes(), b"tb",
        _short_binstring(b"labels"), b"](" + b"".join(b"K" + bytes([int(v)]) for v in labels) + b"e",
        _short_binstring(b"batch_label"), _short_binstring(f"{name} of 5".encode()),
        b"u."])


def cifar_binary(data, labels) -> bytes:
    rows = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], data], axis=1)
    return rows.tobytes()


def write_cifar(root, content, fmt):
    """Write all six batches of ``content`` in ``fmt``; return their MD5s as a ``checksums=`` table."""
    sums = {}
    sub = root / ("cifar-10-batches-bin" if fmt == "binary" else "cifar-10-batches-py")
    sub.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in content.items():
        writer = {"python": cifar_pickle, "python2": cifar_pickle_py2}.get(fmt)
        raw = writer(name, data, labels) if writer else cifar_binary(data, labels)
        fname = name + ".bin" if fmt == "binary" else name
        (sub / fname).write_bytes(raw)
        sums[fname] = md5(raw)
    return sub, sums


@pytest.fixture
def cifar_content():
    return make_cifar(np.random.default_rng(1))


def expected_cifar(content):
    train = [content[n] for n in CIFAR_PY if n != "test_batch"]
    x = np.concatenate([d for d, _ in train]).reshape(-1, 3, 32, 32)
    y = np.concatenate([np.asarray(l) for _, l in train])
    tx, ty = content["test_batch"]
    return x, y, tx.reshape(-1, 3, 32, 32), np.asarray(ty)


@pytest.mark.parametrize("fmt", ["python", "python2", "binary"])
def test_cifar_round_trip(tmp_path, cifar_content, fmt):
    sub, sums = write_cifar(tmp_path, cifar_content, fmt)
    x, y, tx, ty = expected_cifar(cifar_content)
    for root, kwargs in [(tmp_path, {}), (tmp_path, {"format": fmt.rstrip("2")}), (sub, {})]:
        data = cifar10(root, checksums=sums, **kwargs)
        assert data.name == "cifar10" and data.classes[0] == "airplane" and data.num_classes == 10
        assert data.train_images.shape == (10, 3, 32, 32) and data.test_images.shape == (3, 3, 32, 32)
        assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
        assert np.array_equal(data.train_images.numpy(), x) and np.array_equal(data.train_labels.numpy(), y)
        assert np.array_equal(data.test_images.numpy(), tx) and np.array_equal(data.test_labels.numpy(), ty)


def test_cifar_formats_agree_and_auto_prefers_python(tmp_path, cifar_content, monkeypatch):
    _, py_sums = write_cifar(tmp_path, cifar_content, "python")
    _, bin_sums = write_cifar(tmp_path, cifar_content, "binary")
    sums = {**py_sums, **bin_sums}
    a = cifar10(tmp_path, format="python", checksums=sums)
    b = cifar10(tmp_path, format="binary", checksums=sums)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").unlink()
    cifar10(tmp_path, checksums=sums)  # auto: python, so the missing binary file does not matter
    monkeypatch.setenv("LAYERLR_DATA", str(tmp_path))
    assert cifar10(checksums=sums).test_images.shape[0] == 3


def test_cifar_missing_root_and_batches(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"root .*nope is not a directory.*cifar-10-python\.tar\.gz"):
        cifar10(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py/ or .*cifar-10-batches-bin/"):
        cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"expected .*cifar-10-batches-bin/\."):
        cifar10(tmp_path, format="binary")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="Found cifar-10-python.tar.gz .* extract it"):
        cifar10(tmp_path)
    monkeypatch.delenv("LAYERLR_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="no root given and LAYERLR_DATA is not set"):
        cifar10()
    with pytest.raises(ValueError, match="format must be"):
        cifar10(tmp_path, format="matlab")


@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_cifar_missing_file_named(tmp_path, cifar_content, fmt):
    sub, sums = write_cifar(tmp_path, cifar_content, fmt)
    name = "data_batch_3" + ("" if fmt == "python" else ".bin")
    (sub / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{name}: missing from the CIFAR-10 {fmt} version"):
        cifar10(tmp_path, checksums=sums)


@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_cifar_official_checksums(tmp_path, cifar_content, fmt):
    write_cifar(tmp_path, cifar_content, fmt)
    name, digest = ("data_batch_1", CIFAR10_PYTHON_MD5["data_batch_1"]) if fmt == "python" else \
        ("data_batch_1.bin", CIFAR10_BINARY_SHA1["data_batch_1.bin"])
    with pytest.raises(ChecksumError, match=rf"{name}: checksum mismatch: expected {digest}") as e:
        cifar10(tmp_path)
    assert ("checksums=" in str(e.value)) == (fmt == "binary")  # the binary SHA-1s are MXNet's: say so


@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_cifar_bad_md5(tmp_path, cifar_content, fmt):
    sub, sums = write_cifar(tmp_path, cifar_content, fmt)
    name = "test_batch" + ("" if fmt == "python" else ".bin")
    raw = bytearray((sub / name).read_bytes())
    raw[len(raw) // 2] ^= 1
    (sub / name).write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match=rf"{name}: checksum mismatch"):
        cifar10(tmp_path, checksums=sums)


def test_cifar_binary_truncated_and_bad_label(tmp_path, cifar_content):
    sub, sums = write_cifar(tmp_path, cifar_content, "binary")
    raw = (sub / "data_batch_2.bin").read_bytes()[:-5]
    (sub / "data_batch_2.bin").write_bytes(raw)
    with pytest.raises(DataFormatError, match=r"data_batch_2\.bin: 6141 bytes is not a whole number of 3073-byte"):
        cifar10(tmp_path, checksums={**sums, "data_batch_2.bin": md5(raw)})
    data, _ = cifar_content["data_batch_2"]
    raw = cifar_binary(data, [3, 12])
    (sub / "data_batch_2.bin").write_bytes(raw)
    with pytest.raises(DataFormatError, match=r"data_batch_2\.bin: label 12 out of range"):
        cifar10(tmp_path, checksums={**sums, "data_batch_2.bin": md5(raw)})


@pytest.mark.parametrize("entry, match", [
    ({b"data": np.zeros((2, 3072), np.uint8)}, "expected 'data' and 'labels'"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [1, 2]}, "looks like CIFAR-100"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, r"'data' is uint8 \(2, 100\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "2 images but labels of shape"),
    ([1, 2, 3], "holds a list, not a dict"),
])
def test_cifar_python_wrong_structure(tmp_path, cifar_content, entry, match):
    sub, sums = write_cifar(tmp_path, cifar_content, "python")
    raw = pickle.dumps(entry, protocol=2)
    (sub / "data_batch_1").write_bytes(raw)
    with pytest.raises(DataFormatError, match=rf"data_batch_1: .*{match}"):
        cifar10(tmp_path, checksums={**sums, "data_batch_1": md5(raw)})


def test_cifar_python_not_a_pickle(tmp_path, cifar_content):
    sub, sums = write_cifar(tmp_path, cifar_content, "python")
    raw = cifar_binary(*cifar_content["data_batch_1"])  # binary batch under the python name
    (sub / "data_batch_1").write_bytes(raw)
    with pytest.raises(DataFormatError, match="data_batch_1: not a CIFAR-10 python-version batch"):
        cifar10(tmp_path, checksums={**sums, "data_batch_1": md5(raw)})


class _Payload:
    """Unpickling this would create a file: the loader must never do it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cifar_pickle_never_runs_code(tmp_path, cifar_content):
    sub, sums = write_cifar(tmp_path, cifar_content, "python")
    marker = tmp_path / "pwned"
    raw = pickle.dumps({b"data": _Payload(str(marker)), b"labels": [0]}, protocol=2)
    (sub / "data_batch_1").write_bytes(raw)
    with pytest.raises(ChecksumError):  # unverified: not even unpickled
        cifar10(tmp_path, checksums={k: v for k, v in sums.items() if k != "data_batch_1"})
    assert not marker.exists()
    with pytest.raises(DataFormatError, match=r"refusing to load (builtins|io)\.open"):  # forged digest: still refused
        cifar10(tmp_path, checksums={**sums, "data_batch_1": md5(raw)})
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# augmentation and normalization


def rand_images(shape, seed=0, dtype=torch.uint8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.int64).to(dtype)


def find_offset(padded, out):
    h, w = out.shape[-2:]
    for t in range(padded.shape[-2] - h + 1):
        for l in range(padded.shape[-1] - w + 1):
            if torch.equal(padded[:, t:t + h, l:l + w], out):
                return t, l
    return None


def test_crop_at_matches_slicing():
    x = rand_images((4, 3, 8, 9))
    top, left = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 0, 2, 1])
    out = crop_at(x, top, left, (5, 4))
    for i in range(4):
        assert torch.equal(out[i], x[i, :, top[i]:top[i] + 5, left[i]:left[i] + 4])
    with pytest.raises(ValueError, match="does not fit"):
        crop_at(x, top + 1, left, (5, 4))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 4), c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
       padding=st.integers(0, 3), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.uint8, torch.float32]))
def test_random_crop_properties(n, c, h, w, padding, seed, dtype):
    x = rand_images((n, c, h, w), seed, dtype)
    out = random_crop(x, padding, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.dtype == x.dtype  # crop keeps shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    for i in range(n):
        assert find_offset(padded[i], out[i]) is not None  # a window of the zero-padded image
    again = random_crop(x, padding, torch.Generator().manual_seed(seed))
    assert torch.equal(out, again)  # deterministic given the generator
    if padding == 0:
        assert torch.equal(out, x)


def test_random_crop_pads_with_zeros():
    x = torch.full((300, 1, 8, 8), 255, dtype=torch.uint8)
    out = random_crop(x, 3, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) <= {0, 255}
    shifted = 0
    for img in out[:, 0]:
        mask = img != 0
        rows, cols = mask.any(1), mask.any(0)
        assert torch.equal(mask, rows[:, None] & cols[None, :])  # the image is one rectangle, zeros around it
        assert int(rows.sum()) >= 5 and int(cols.sum()) >= 5  # shifted by at most the padding
        for line in (rows, cols):  # the zero strip sits at one edge
            k = int(line.sum())
            assert line[:k].all() or line[-k:].all()
        shifted += int(not mask.all())
    assert shifted > 250  # 1 in 49 offsets leaves the image in place


def test_random_crop_size_and_errors():
    x = rand_images((2, 3, 8, 8))
    assert random_crop(x, 0, None, size=(5, 6)).shape == (2, 3, 5, 6)
    with pytest.raises(ValueError, match="does not fit"):
        random_crop(x, 1, None, size=(11, 4))
    with pytest.raises(ValueError, match="non-negative"):
        random_crop(x, -1)
    with pytest.raises(ValueError, match="N x C x H x W"):
        random_crop(x[0], 1)


def test_flip_involution_and_random_flip():
    x = rand_images((64, 3, 5, 7))
    assert torch.equal(hflip(hflip(x)), x) and not torch.equal(hflip(x), x)
    assert torch.equal(hflip(x)[..., 0], x[..., -1])
    out = random_flip(x, torch.Generator().manual_seed(3))
    flipped = [torch.equal(out[i], hflip(x)[i]) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(a or b for a, b in zip(flipped, kept)) and 10 < sum(flipped) < 54
    # the same draws twice undo each other: random_flip with one seed is an involution too
    assert torch.equal(random_flip(out, torch.Generator().manual_seed(3)), x)
    assert torch.equal(random_flip(x, None, p=0.0), x) and torch.equal(random_flip(x, None, p=1.0), hflip(x))


def test_crop_and_flip_deterministic():
    x = rand_images((16, 3, 32, 32))
    aug = crop_and_flip(padding=4)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_normalize_and_channel_stats():
    x = rand_images((20, 3, 6, 6))
    mean, std = channel_stats(x)
    ref = x.to(torch.float64) / 255
    assert np.allclose(mean, ref.mean((0, 2, 3)).numpy(), atol=1e-12)
    assert np.allclose(std, ref.std((0, 2, 3), correction=0).numpy(), atol=1e-12)
    y = normalize(x, mean, std)
    assert y.dtype == torch.float32
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std((0, 2, 3), correction=0), torch.ones(3), atol=1e-5)
    assert torch.allclose(normalize(x.float() / 255, mean, std), y)  # float input is taken as [0, 1]
    with pytest.raises(ValueError, match="3 channels but 1 means"):
        normalize(x, [0.5], [0.5])
    with pytest.raises(TypeError, match="uint8"):
        channel_stats(x.float())


# ---------------------------------------------------------------------------------------------------------------
# split and batches


def toy_dataset(n=1000):
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    labels = torch.arange(n)  # the label identifies the sample
    test = torch.zeros(7, 1, 2, 2, dtype=torch.uint8)
    classes = tuple(str(i) for i in range(10))
    return ImageDataset("toy", classes, images, labels, test, torch.zeros(7, dtype=torch.int64))


def test_split_disjoint_and_deterministic():
    data = toy_dataset()
    s = split_train(data, 0.1, seed=0)
    train, val = set(s.train_labels.tolist()), set(s.val_labels.tolist())
    assert len(val) == 100 and len(train) == 900 and not (train & val) and train | val == set(range(1000))
    assert s.val_images.shape == (100, 1, 2, 2) and s.test_images is data.test_images
    assert torch.equal(s.val_labels, s.val_labels.sort().values)  # original order kept
    assert torch.equal(split_train(data, 0.1, seed=0).val_labels, s.val_labels)
    assert not torch.equal(split_train(data, 0.1, seed=1).val_labels, s.val_labels)
    assert split_train(data, 0.0, seed=0).val_images.shape[0] == 0
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="val_fraction"):
            split_train(data, bad, seed=0)
    with pytest.raises(ValueError, match="already has a validation split"):
        split_train(s, 0.1, seed=0)


def indexed_images(n):
    """Image i is filled with the value i, label i % 10."""
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 1, 3, 3).contiguous()
    return images, torch.arange(n) % 10


def test_batches_cover_once_with_labels_aligned():
    images, labels = indexed_images(103)
    g = torch.Generator().manual_seed(0)
    out = list(batches(images, labels, 10, shuffle=True, generator=g))
    assert [x.shape[0] for x, _ in out] == [10] * 10 + [3]
    seen = []
    for x, y in out:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (1, 3, 3)
        idx = (x[:, 0, 0, 0] * 255).round().long()
        assert torch.equal(y, idx % 10)
        seen += idx.tolist()
    assert sorted(seen) == list(range(103)) and seen != list(range(103))
    assert len(list(batches(images, labels, 10, drop_last=True))) == 10
    plain = torch.cat([x for x, _ in batches(images, labels, 32)])
    assert torch.equal(plain, images.float() / 255)  # no shuffle: original order, [0, 1]


def test_batches_deterministic_augment_and_normalize():
    images, labels = indexed_images(50)

    def run(seed, **kw):
        g = torch.Generator().manual_seed(seed)
        return [(x, y) for x, y in batches(images, labels, 8, True, g, **kw)]

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not all(torch.equal(y1, y2) for (_, y1), (_, y2) in zip(a, c))
    calls = []

    def augment(x, generator):
        calls.append((x.dtype, generator))
        return hflip(x)

    run(0, augment=augment)
    assert len(calls) == 7 and all(d == torch.uint8 and isinstance(g, torch.Generator) for d, g in calls)
    normed = run(0, mean=[0.1], std=[0.2])
    for (x, _), (xn, _) in zip(a, normed):
        assert torch.allclose(xn, (x - 0.1) / 0.2, atol=1e-6)
    with pytest.raises(ValueError, match="both mean and std"):
        next(batches(images, labels, 8, mean=[0.1]))
    with pytest.raises(ValueError, match="50 images but 49 labels"):
        next(batches(images, labels[:49], 8))
    with pytest.raises(ValueError, match="positive integer"):
        next(batches(images, labels, 0))
