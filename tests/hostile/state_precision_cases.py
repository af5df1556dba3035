"""Hostile input around low-precision optimizer state (NOTE: [state precision]): op calls of the ``state``
overload with wrong codes, scales or precision, and crafted int8/bf16 checkpoints. Each must be refused naming the
argument or checkpoint key, with every tensor (params, state) as it was."""

from __future__ import annotations

import copy
import math

import torch

from hostile.harness import Case, refused
from hostile.optimizer_cases import _refused_unchanged
from torch_layerlr._ops import Recipe, fused_step_
from torch_layerlr.optim import LAMB, DALS

F64 = torch.float64
SHAPES = [(20, 30), (7,)]
ADAMW = Recipe(moment="adam", decay="decoupled")


class LowCall:
    """A valid int8 (or bf16) AdamW call of the op; cases edit it before the call."""

    def __init__(self, precision="int8"):
        g = torch.Generator().manual_seed(0)
        n = len(SHAPES)
        self.precision = precision
        self.params = [torch.randn(s, generator=g) for s in SHAPES]
        self.grads = [torch.randn(s, generator=g) for s in SHAPES]
        dtype = torch.uint8 if precision == "int8" else torch.bfloat16
        self.states = {k: [torch.zeros(s, dtype=dtype) for s in SHAPES] for k in ("exp_avg", "exp_avg_sq")}
        blocks = [(math.prod(s) + 255) // 256 for s in SHAPES]
        self.scales = {k: [torch.rand(b) for b in blocks] for k in self.states} if precision == "int8" else None
        self.steps = [torch.tensor(2.0) for _ in SHAPES]
        self.kwargs = dict(lr=torch.tensor(0.01, dtype=F64), lr_mult=torch.ones(n, dtype=F64),
                           weight_decay=torch.zeros(n, dtype=F64), blend=torch.zeros(n, dtype=F64),
                           trust_mask=torch.ones(n, dtype=F64))

    def tensors(self):
        out = self.params + self.grads + self.steps + [t for v in self.states.values() for t in v]
        return out + ([t for v in self.scales.values() for t in v] if self.scales else [])

    def __call__(self):
        fused_step_(self.params, self.grads, self.states, self.steps, ADAMW, state_precision=self.precision,
                    scales=self.scales, **self.kwargs)


def _op_case(label, edit, pattern, precision="int8"):
    def run():
        call = LowCall(precision)
        edit(call)
        return refused(call, call.tensors(), pattern)
    return Case("op low-precision state", f"{label} [{precision}]", run)


def op_cases():
    def codes(i, value):
        return lambda c: c.states["exp_avg"].__setitem__(i, value(c) if callable(value) else value)

    def scale(i, value):
        return lambda c: c.scales["exp_avg_sq"].__setitem__(i, value(c) if callable(value) else value)

    return [
        _op_case("codes float32", codes(0, torch.zeros(20, 30)), r"exp_avgs\[0\]"),
        _op_case("codes int8 (signed dtype)", codes(0, torch.zeros(20, 30, dtype=torch.int8)), r"exp_avgs\[0\]"),
        _op_case("codes of the wrong shape", codes(1, torch.zeros(8, dtype=torch.uint8)), r"exp_avgs\[1\]"),
        _op_case("codes transposed", codes(0, torch.zeros(30, 20, dtype=torch.uint8).t()), r"exp_avgs\[0\]"),
        _op_case("scales missing", lambda c: c.scales.pop("exp_avg_sq"), "exp_avg_sq_scales"),
        _op_case("scales one block long", scale(0, torch.ones(4)), r"exp_avg_sq_scales\[0\]"),
        _op_case("scales float64", scale(0, torch.ones(3, dtype=F64)), r"exp_avg_sq_scales\[0\]"),
        _op_case("scales [3, 1]", scale(0, torch.ones(3, 1)), r"exp_avg_sq_scales\[0\]"),
        _op_case("scales strided", scale(0, torch.ones(6)[::2]), r"exp_avg_sq_scales\[0\]"),
        _op_case("one scales tensor for two states",
                 lambda c: c.scales["exp_avg"].__setitem__(0, c.scales["exp_avg_sq"][0]), "scales"),
        _op_case("scales inside the codes' memory",
                 lambda c: c.scales["exp_avg"].__setitem__(0, c.states["exp_avg"][0].view(-1)[:12].view(torch.float32)),
                 "exp_avg"),
        _op_case("unknown precision", lambda c: setattr(c, "precision", "fp8"), "state_precision"),
        _op_case("bf16 state float32", codes(0, torch.zeros(20, 30)), r"exp_avgs\[0\]", "bf16"),
        _op_case("scales given to bf16",
                 lambda c: setattr(c, "scales", {"exp_avg": [torch.ones(3), torch.ones(1)]}), "exp_avg_scales", "bf16"),
        _op_case("uint8 codes with fp32 precision", lambda c: setattr(c, "precision", "fp32"), r"exp_avgs\[0\]"),
    ]


# ---- crafted checkpoints of an int8 optimizer ------------------------------------------------------------------
def _int8_optimizer(name):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(64, 80), (5,)]]
    opt = LAMB(params, lr=0.01, state_precision="int8") if name == "LAMB" else \
        DALS(params, total_steps=50, state_precision="int8")
    for k in range(3):
        gk = torch.Generator().manual_seed(100 + k)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gk)
        opt.step(loss=1.0 / (k + 1)) if name == "DALS" else opt.step()
    return opt, params


def _coded(sd):
    """The first param key with int8 state and the name of its first coded buffer."""
    for key, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor) and v.dtype == torch.uint8:
                return key, name
    raise AssertionError("no int8 state")


def _edit(fn):
    def edit(sd):
        key, name = _coded(sd)
        fn(sd["state"][key], name)
    return edit


CHECKPOINT_EDITS = {
    "absmax missing": (_edit(lambda st, n: st.pop(f"{n}_absmax")), "absmax"),
    "absmax one block short": (_edit(lambda st, n: st.__setitem__(f"{n}_absmax", st[f"{n}_absmax"][:-1])), "absmax"),
    "absmax float64": (_edit(lambda st, n: st.__setitem__(f"{n}_absmax", st[f"{n}_absmax"].double())), "absmax"),
    "absmax negative": (_edit(lambda st, n: st[f"{n}_absmax"].__setitem__(0, -1.0)), "absmax"),
    "absmax nan": (_edit(lambda st, n: st[f"{n}_absmax"].__setitem__(1, math.nan)), "absmax"),
    "absmax inf": (_edit(lambda st, n: st[f"{n}_absmax"].__setitem__(1, math.inf)), "absmax"),
    "codes int8 (signed)": (_edit(lambda st, n: st.__setitem__(n, st[n].to(torch.int8))), "unexpected entry"),
    "codes flattened": (_edit(lambda st, n: st.__setitem__(n, st[n].reshape(-1))), "shape"),
    "absmax beside float state": (_edit(lambda st, n: st.__setitem__(n, st[n].float())), "unexpected"),
}


def _checkpoint_case(name, label, edit, pattern):
    def run():
        opt, params = _int8_optimizer(name)
        sd = copy.deepcopy(opt.state_dict())
        edit(sd)
        return _refused_unchanged(lambda: opt.load_state_dict(sd), opt, params, pattern)
    return Case("checkpoints low-precision", f"{label} [{name}]", run)


def all_cases():
    out = op_cases()
    for name in ("LAMB", "DALS"):
        out += [_checkpoint_case(name, label, e, p) for label, (e, p) in CHECKPOINT_EDITS.items()]
    return out
