"""The int8 codec of low-precision state as whole-tensor ops (quantize_blockwise / dequantize_blockwise, which
checkpoint conversion uses) against the float64 emulation of tests/reference/low_precision.py, and the codec's
vector widths (NOTE: [codec dispatch] in csrc/cpu/state_codec.h) against each other, bit for bit."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torch_layerlr  # noqa: F401  (registers the ops)
from reference.low_precision import BLOCK, dequantize, dynamic_map, quantize

HERE = Path(__file__).parent
MARGIN = 1e-4  # values this close (relative) to a decision midpoint may take either neighbour


def _spread(n: int, seed: int) -> torch.Tensor:
    """Values over the map's seven decades and beyond, with a zero block."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen) * torch.exp(torch.randn(n, generator=gen) * 4)
    x[: min(n, BLOCK)] = 0.0
    return x


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("shape", [(3 * BLOCK,), (17, 260), (70,), (0,), (2, 3, 300)])
def test_quantize_matches_reference(shape, signed):
    x = _spread(math.prod(shape), 0).reshape(shape)
    if not signed:
        x = x.abs()
    codes, absmax = torch.ops.layerlr.quantize_blockwise(x, signed)
    ref_codes, ref_absmax, margin = quantize(x, signed)
    assert codes.dtype == torch.uint8 and codes.shape == x.shape
    assert torch.equal(absmax.double(), ref_absmax)  # the max of float32 values is exact
    differ = codes != ref_codes
    assert bool((margin[differ] < MARGIN).all()), f"{int(differ.sum())} codes differ away from a midpoint"
    assert bool(((codes.long() - ref_codes.long()).abs() <= 1).all())


@pytest.mark.parametrize("signed", [True, False])
def test_every_code_value_encodes_to_itself(signed):
    values = torch.tensor(dynamic_map(signed), dtype=torch.float32)
    blocks = values.reshape(-1, 1).expand(-1, BLOCK).clone()
    blocks[:, 0] = 1.0  # absmax 1 in every block: the values are encoded as they are
    codes, absmax = torch.ops.layerlr.quantize_blockwise(blocks.reshape(-1), signed)
    if signed:  # -1 is not in the signed map: its block keeps absmax 1 and the nearest value, -0.993
        assert bool((absmax == 1).all())
    decoded = torch.tensor(dynamic_map(signed), dtype=torch.float32)[codes.long()].reshape(blocks.shape)
    assert torch.equal(decoded[:, 1:], blocks[:, 1:])


def test_dequantize_matches_reference():
    gen = torch.Generator().manual_seed(1)
    for signed in (True, False):
        codes = torch.randint(0, 256, (5, 130), generator=gen).to(torch.uint8)
        absmax = torch.rand(3, generator=gen) * 10
        values = torch.ops.layerlr.dequantize_blockwise(codes, absmax, signed)
        # one float32 product: the float64 product of two float32 numbers is exact, then rounded once
        assert torch.equal(values, dequantize(codes, absmax, signed).float())


def test_nan_poisons_its_block_only():
    x = _spread(3 * BLOCK, 2)
    x[BLOCK + 5] = math.nan
    codes, absmax = torch.ops.layerlr.quantize_blockwise(x, True)
    assert math.isnan(absmax[1]) and not absmax[[0, 2]].isnan().any()
    values = torch.ops.layerlr.dequantize_blockwise(codes, absmax, True)
    assert values[BLOCK:2 * BLOCK].isnan().all() and not values[:BLOCK].isnan().any()
    assert not values[2 * BLOCK:].isnan().any()


def test_infinities_take_the_code_of_one():
    x = torch.tensor([1.0, 0.5, math.inf, -math.inf] + [0.25] * 10)
    codes, _ = torch.ops.layerlr.quantize_blockwise(x / torch.tensor(math.inf), True)  # inf/inf = NaN, 1/inf = 0
    assert codes[2] == codes[3] == 255 and codes[0] == 127


@pytest.mark.parametrize("call, error, match", [
    (lambda: torch.ops.layerlr.quantize_blockwise(torch.zeros(4, dtype=torch.float64), True), TypeError, "values"),
    (lambda: torch.ops.layerlr.dequantize_blockwise(torch.zeros(4), torch.zeros(1), True), TypeError, "codes"),
    (lambda: torch.ops.layerlr.dequantize_blockwise(torch.zeros(300, dtype=torch.uint8), torch.zeros(1), True),
     ValueError, "absmax must hold one value per 256 codes"),
    (lambda: torch.ops.layerlr.dequantize_blockwise(torch.zeros(4, dtype=torch.uint8),
                                                    torch.zeros(1, dtype=torch.float16), True), TypeError, "absmax"),
])
def test_bad_arguments_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _cpu_has_avx512() -> bool:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags


@pytest.fixture(scope="module")
def scalar_results(tmp_path_factory):
    return _run_worker("default", tmp_path_factory.mktemp("codec"))


def _run_worker(capability: str, tmp: Path):
    out = tmp / f"{capability}.pt"
    env = {**os.environ, "LAYERLR_CPU_CAPABILITY": capability}
    subprocess.run([sys.executable, str(HERE / "codec_worker.py"), str(out)], env=env, check=True, timeout=300)
    return torch.load(out)


def _flatten(tree, prefix=""):
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}/{k}")
    elif isinstance(tree, (list, tuple)):
        for k, v in enumerate(tree):
            yield from _flatten(v, f"{prefix}/{k}")


@pytest.mark.parametrize("capability", ["avx2", "avx512"])
def test_vector_widths_match_scalar_codec(capability, scalar_results, tmp_path):
    """Quantization and 3 steps of AdamW, LAMB, SGD and DALS in bf16 and int8 under each width: bit for bit the
    scalar codec's results."""
    if capability == "avx512" and not _cpu_has_avx512():
        pytest.skip("this CPU has no AVX-512 F/BW/VL/DQ")
    results = dict(_flatten(_run_worker(capability, tmp_path)))
    expected = dict(_flatten(scalar_results))
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(results[key], value) or (value.isnan() == results[key].isnan()).all() and torch.equal(
            results[key].nan_to_num(), value.nan_to_num()), key


def test_unknown_capability_is_refused(tmp_path):
    env = {**os.environ, "LAYERLR_CPU_CAPABILITY": "sse9"}
    proc = subprocess.run([sys.executable, str(HERE / "codec_worker.py"), str(tmp_path / "x.pt")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "LAYERLR_CPU_CAPABILITY must be 'default', 'avx2' or 'avx512'" in proc.stderr
