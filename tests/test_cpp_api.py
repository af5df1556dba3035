"""The C++ optimizers (csrc/api) against the Python classes: the same trajectories, bit for bit.

Every case of ``tests/cpp/cases.h`` is built here with the Python class and the same options (``CASES``, by
name). Both sides get the same initial parameters, 20 gradients and 20 losses (through a closure, so DALS's
phase detector sees them) written by this file; the C++ driver ``layerlr_trajectory`` runs the C++ optimizers
on them and writes the parameters after every step. The Python classes are checked against the float64
references of ``tests/reference`` elsewhere (test_optim.py); here the C++ API must equal them exactly, in every
``state_precision`` (the low-precision cases: bf16 stochastic rounding and int8 codes included), and across a
checkpoint of one precision loaded into an optimizer of another (``CONVERSIONS``: the C++ archive against the
Python ``state_dict``, each converted by its own side's load).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torch_layerlr.optim import DALS, LAMB, LARS, DepthScaledSGD, GrokfastAdamW, LayerwiseAdamW, LayerwiseSGD
from torch_layerlr.optim import _state_precision as sp

sys.path.insert(0, str(Path(__file__).parent / "cpp"))
from cpp_build import build_cpp  # noqa: E402

STEPS = 20
SHAPES = [(4, 3), (3,), (2, 3, 2), (5,)]
# The low-precision cases (names ending in _bf16 or _int8; kLowPrecisionShapes of cases.h): int8 state applies to
# the first and third tensor (>= INT8_MIN_NUMEL elements, the third ending in a partial block), the others keep
# their fp32 fallback.
LOW_PRECISION_SHAPES = [(64, 72), (3,), (4100,), (5,)]

# The Python twin of each case in tests/cpp/cases.h. A C++ group's options object is complete, so a Python group
# states every option in which it differs from the optimizer's defaults.
CASES = {
    "sgd": lambda p: LayerwiseSGD(p, lr=0.1, momentum=0.9, weight_decay=0.01, lr_mult=[1.0, 0.5, 2.0, 0.25]),
    "sgd_nesterov_grokfast": lambda p: LayerwiseSGD(p, lr=0.05, momentum=0.8, nesterov=True, grokfast_alpha=0.9,
                                                    grokfast_lambda=1.5, maximize=True),
    "sgd_groups": lambda p: LayerwiseSGD(
        [{"params": p[:2]},
         {"params": p[2:], "lr": 0.02, "weight_decay": 0.1, "lr_mult": [3.0, 0.5], "momentum": 0.0, "dampening": 0.0}],
        lr=0.1, momentum=0.5, dampening=0.3),
    "adamw": lambda p: LayerwiseAdamW(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05,
                                      lr_mult=[1.0, 2.0, 0.5, 0.0]),
    "grokfast_adamw": lambda p: GrokfastAdamW(p, lr=0.01),
    "lars": lambda p: LARS(p, lr=0.5, momentum=0.9, weight_decay=1e-3, trust_coefficient=0.01, eps=1e-8),
    "lars_nesterov_grokfast": lambda p: LARS(p, lr=0.2, nesterov=True, exclude_1d=False, grokfast_alpha=0.8,
                                             weight_decay=1e-2),
    "lamb": lambda p: LAMB(p, lr=0.02),
    "lamb_groups_clamp": lambda p: LAMB(
        [{"params": p[:2]},
         {"params": p[2:], "lr": 0.005, "betas": (0.7, 0.9), "exclude_1d": True, "clamp_value": None,
          "bias_correction": True, "grokfast_alpha": None, "maximize": False}],
        lr=0.02, clamp_value=0.5, bias_correction=False, grokfast_alpha=0.9, maximize=True),
    "lamb_groups_lr": lambda p: LAMB([{"params": p[:2]}, {"params": p[2:], "lr": 0.005}], lr=0.02),
    "dals": lambda p: DALS([{"params": p, "depth_ratio": [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]}], total_steps=20),
    "dals_fast": lambda p: DALS([{"params": p, "lr_mult": [1.0, 0.5, 2.0, 1.5], "depth_ratio": 0.25}],
                                variant="fast", total_steps=30),
    "dals_acc": lambda p: DALS(p, variant="acc", restart_steps=5, restart_mult=2, lr=0.05),
    "dals_no_schedule": lambda p: DALS(p, lr=0.01, schedule=False),
    "lars_default_lr": lambda p: LARS(p),
    "depth_scaled_res2": lambda p: DepthScaledSGD(p, 1.3, 2.1, arch="res2", tau=2.0, momentum=0.5),
    "depth_scaled_chain": lambda p: DepthScaledSGD(p, 0.7, 1.9, weight_decay=0.01),
    **{name: case for precision in ("bf16", "int8") for name, case in {
        f"sgd_{precision}": lambda p, s=precision: LayerwiseSGD(p, lr=0.1, momentum=0.9, weight_decay=0.01,
                                                                state_precision=s),
        f"adamw_{precision}": lambda p, s=precision: LayerwiseAdamW(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.05,
                                                                    lr_mult=[1.0, 2.0, 0.5, 1.5], state_precision=s),
        f"lamb_{precision}": lambda p, s=precision: LAMB(p, lr=0.02, state_precision=s),
        f"dals_{precision}": lambda p, s=precision: DALS(
            [{"params": p, "depth_ratio": [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]}], total_steps=20, state_precision=s),
    }.items()},
    "grokfast_adamw_int8": lambda p: GrokfastAdamW(p, lr=0.01, state_precision="int8"),
    "lars_int8": lambda p: LARS(p, lr=0.5, momentum=0.9, weight_decay=1e-3, trust_coefficient=0.01,
                                state_precision="int8"),
    "lamb_groups_int8": lambda p: LAMB([{"params": p[:2]}, {"params": p[2:], "lr": 0.005, "state_precision": "int8"}],
                                       lr=0.02, state_precision="bf16"),
}

# (source, target) cases: the source's checkpoint after LOAD_AT steps is loaded into the target's optimizer over the
# same parameters (another state_precision: its state is converted), which takes the remaining steps. The
# loaded options are the source's but for the precision, which the target keeps. All on LOW_PRECISION_SHAPES.
LOAD_AT = 8
CONVERSIONS = [
    *((f"{family}{source}", f"{family}{target}") for family in ("adamw", "lamb") for source, target in (
        ("", "_int8"), ("_int8", ""), ("_bf16", "_int8"), ("_int8", "_bf16"), ("", "_bf16"), ("_bf16", ""))),
    ("sgd_bf16", "sgd_int8"),  # the momentum buffer
    ("dals", "dals_int8"),  # the filter
    ("dals_int8", "dals_bf16"),
]
FORMS = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.uint8}

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def losses() -> list[float]:
    """Fast fall, slow fall, then flat: DALS's detector visits phases 0, 1 and 2."""
    out, value = [], 2.0
    for k in range(STEPS):
        value *= 0.8 if k < 8 else (0.995 if k < 14 else 1.0)
        out.append(value)
    return out


def is_low_precision(name: str) -> bool:
    return name.endswith(("_bf16", "_int8"))


def shapes_of(name: str) -> list[tuple[int, ...]]:
    return LOW_PRECISION_SHAPES if is_low_precision(name) else SHAPES


def inputs(shapes: list[tuple[int, ...]], dtype: torch.dtype, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes] for _ in range(STEPS)]
    return {"params": params, "grads": grads, "losses": losses()}


def conversion_inputs(source: str, target: str, dtype: torch.dtype, seed: int) -> dict:
    return {**inputs(LOW_PRECISION_SHAPES, dtype, seed), "load_into": target, "load_at": LOAD_AT}


def python_trajectory(name: str, data: dict) -> list[list[torch.Tensor]]:
    params = [p.clone().requires_grad_(True) for p in data["params"]]
    opt = CASES[name](params)
    out = []
    for k, (grads, loss) in enumerate(zip(data["grads"], data["losses"])):
        if k == data.get("load_at"):
            checkpoint = opt.state_dict()
            opt = CASES[data["load_into"]](params)
            opt.load_state_dict(checkpoint)
        for p, g in zip(params, grads):
            p.grad = g.clone()  # LAMB writes its update direction into the grad buffer
        opt.step(lambda loss=loss: torch.tensor(loss, dtype=torch.float32))
        out.append([p.detach().clone() for p in params])
    return out


@pytest.fixture(scope="module")
def cpp_trajectories(tmp_path_factory) -> tuple[dict, dict]:
    build = build_cpp()
    data = {f"{name}@{dtype}": inputs(shapes_of(name), DTYPES[dtype], seed=i)
            for i, name in enumerate(CASES) for dtype in DTYPES}
    data.update({f"{source}>{target}@{dtype}": conversion_inputs(source, target, DTYPES[dtype], seed=len(CASES) + i)
                 for i, (source, target) in enumerate(CONVERSIONS) for dtype in DTYPES})
    tmp = tmp_path_factory.mktemp("cpp_api")
    torch.save(data, tmp / "inputs.pt")
    subprocess.run([str(build / "tests" / "cpp" / "layerlr_trajectory"), str(tmp / "inputs.pt"),
                    str(tmp / "outputs.pt")], check=True, timeout=300)
    # torch::pickle_save rebuilds typed containers through torch.jit._pickle helpers, which the weights-only
    # unpickler refuses; the file is the one the driver just wrote.
    return data, torch.load(tmp / "outputs.pt", weights_only=False)


def test_every_cpp_case_has_a_python_twin():
    cases_h = (Path(__file__).parent / "cpp" / "cases.h").read_text()
    assert set(re.findall(r'\{"(\w+)",\s*\n?\s*\[', cases_h)) == set(CASES)


def assert_same_trajectory(cpp_trajectories, name: str, key: str) -> None:
    data, outputs = cpp_trajectories
    expected = python_trajectory(name, data[key])
    got = outputs[key]
    assert len(got) == STEPS
    moved = False
    for k, (want_step, got_step) in enumerate(zip(expected, got)):
        for i, (want, have) in enumerate(zip(want_step, got_step)):
            assert have.dtype == want.dtype and have.shape == want.shape
            assert torch.equal(have, want), (
                f"{key}: step {k + 1}, param {i} differs by up to {(have.double() - want.double()).abs().max():.3e}")
            moved = moved or not torch.equal(want, data[key]["params"][i])
    assert moved, f"{key}: the parameters never moved, the comparison would prove nothing"


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(CASES))
def test_cpp_trajectory_equals_python_bit_for_bit(cpp_trajectories, name, dtype):
    assert_same_trajectory(cpp_trajectories, name, f"{name}@{dtype}")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(("source", "target"), CONVERSIONS)
def test_cpp_load_of_another_precision_equals_python_bit_for_bit(cpp_trajectories, source, target, dtype):
    assert_same_trajectory(cpp_trajectories, source, f"{source}>{target}@{dtype}")


def forms(opt) -> dict[int, set[torch.dtype]]:
    """The dtypes of each param's state buffers (absmax and step aside), by the param's position."""
    params = [p for group in opt.param_groups for p in group["params"]]
    return {i: {v.dtype for k, v in opt.state[p].items() if k != "step" and not k.endswith("_absmax")}
            for i, p in enumerate(params)}


def expected_forms(opt) -> dict[int, set[torch.dtype]]:
    params = [(group["state_precision"], p) for group in opt.param_groups for p in group["params"]]
    return {i: {FORMS[sp.tensor_precision(precision, p)]} for i, (precision, p) in enumerate(params)}


@pytest.mark.parametrize(("source", "target"), CONVERSIONS)
def test_conversion_cases_change_the_form_of_the_state(source, target):
    """The Python twin of each conversion loads state of one form into an optimizer of another, so the bit-for-bit
    comparison covers the conversion (int8's small tensors keep their fp32 fallback on both sides)."""
    data = conversion_inputs(source, target, torch.float32, seed=0)
    params = [p.clone().requires_grad_(True) for p in data["params"]]
    opt = CASES[source](params)
    for p, g in zip(params, data["grads"][0]):
        p.grad = g.clone()
    opt.step(lambda: torch.tensor(data["losses"][0]))
    assert forms(opt) == expected_forms(opt)
    loaded = CASES[target](params)
    loaded.load_state_dict(opt.state_dict())
    assert forms(loaded) == expected_forms(loaded) != forms(opt)


@pytest.mark.parametrize("name", [n for n in CASES if is_low_precision(n)])
def test_low_precision_cases_keep_the_low_precision_state(name):
    """The Python twin of each low-precision case keeps the state its name says (int8: codes for the large
    tensors, the fp32 fallback for the small ones), so the bit-for-bit comparison covers those forms."""
    data = inputs(shapes_of(name), torch.float32, seed=0)
    params = [p.clone().requires_grad_(True) for p in data["params"]]
    opt = CASES[name](params)
    for p, g in zip(params, data["grads"][0]):
        p.grad = g.clone()
    opt.step(lambda: torch.tensor(data["losses"][0]))
    forms = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.uint8}
    for group in opt.param_groups:
        for p in group["params"]:
            want = forms[sp.tensor_precision(group["state_precision"], p)]
            state = {k: v for k, v in opt.state[p].items() if k != "step" and not k.endswith("_absmax")}
            assert state and all(v.dtype == want for v in state.values()), (name, tuple(p.shape), state.keys())
