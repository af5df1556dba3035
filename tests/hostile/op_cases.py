"""Hostile calls of the ops themselves (torch.ops.layerlr.*): shapes, strides, dtypes, devices, overlaps, values.

Each case builds a valid call, breaks one thing, and says what must happen: a clean refusal naming the argument
(with every tensor unchanged), or, for inputs that are valid in disguise (a strided per-tensor input, read-only
aliases), the same result as the plain call.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from hostile.harness import Case, refused, same_result
from torch_layerlr._ops import Recipe

F32 = torch.float32
RECIPES = {
    "sgd": Recipe(moment="sgd", momentum=0.9),
    "adamw": Recipe(moment="adam", decay="decoupled"),
    "lamb": Recipe(moment="adam", decay="update", trust="update"),
    "lars": Recipe(moment="sgd", trust="lars", momentum=0.9, trust_coefficient=0.01),
    "dals": Recipe(filter="blend", moment="sgd", trust="update", momentum=0.9, trust_coefficient=0.02,
                   ratio_min=0.2, ratio_max=5.0),
    "grokfast": Recipe(filter="grokfast", moment="adam", decay="decoupled", filter_lambda=2.0),
}
SHAPES = [(4, 3), (5,), (2, 3, 2)]


@dataclasses.dataclass
class OpCall:
    """The arguments of one fused_step_ call, built valid; cases edit them before the call."""

    recipe: Recipe
    lists: dict
    kwargs: dict

    @classmethod
    def valid(cls, recipe_name: str, seed: int = 0, dtype=F32) -> "OpCall":
        recipe = RECIPES[recipe_name]
        g = torch.Generator().manual_seed(seed)
        n = len(SHAPES)

        def tensors(scale=1.0):
            return [scale * torch.randn(s, generator=g, dtype=dtype) for s in SHAPES]

        has_buf = recipe.moment == "adam" or recipe.momentum != 0
        lists = dict(params=tensors(), grads=tensors(), filters=tensors(0.1) if recipe.filter != "none" else [],
                     exp_avgs=tensors(0.1) if has_buf else [],
                     exp_avg_sqs=[t.abs() for t in tensors(0.1)] if recipe.moment == "adam" else [],
                     steps=[torch.tensor(3.0) for _ in range(n)])
        kwargs = dict(lr=torch.tensor(0.01, dtype=torch.float64), lr_mult=torch.linspace(0.5, 1.5, n, dtype=torch.float64),
                      weight_decay=torch.full((n,), 1e-2, dtype=torch.float64),
                      blend=torch.linspace(0.3, 0.7, n, dtype=torch.float64), trust_mask=torch.ones(n, dtype=torch.float64),
                      filter_coef=torch.tensor([0.6, 1.0], dtype=torch.float64) if recipe.filter != "none" else None,
                      trust_ratios=torch.ones(n, dtype=torch.float64) if recipe.trust != "none" else None)
        return cls(recipe, lists, kwargs)

    def tensors(self) -> list:
        out = [t for v in self.lists.values() for t in v]
        out += [v for v in self.kwargs.values() if isinstance(v, torch.Tensor)]
        return out

    def __call__(self) -> None:
        L = self.lists
        torch.ops.layerlr.fused_step_(L["params"], L["grads"], L["filters"], L["exp_avgs"], L["exp_avg_sqs"],
                                      L["steps"], **self.kwargs, **dataclasses.asdict(self.recipe))


def _bad(family, name, recipe, edit, pattern):
    """A case: the valid call of ``recipe`` with ``edit`` applied must be refused with ``pattern``."""
    def run():
        call = OpCall.valid(recipe)
        edit(call)
        return refused(call, call.tensors(), pattern)
    return Case(family, f"{name} [{recipe}]", run)


def _set(**changes):
    def edit(call):
        for key, value in changes.items():
            (call.kwargs if key in call.kwargs or key in ("grad_scale", "found_inf") else call.lists)[key] = \
                value(call) if callable(value) else value
    return edit


def _item(list_name, i, value):
    def edit(call):
        call.lists[list_name][i] = value(call) if callable(value) else value
    return edit


def _n(call):
    return len(call.lists["params"])


def shape_cases():
    fam = "op shapes"
    out = []
    per_tensor = ["lr_mult", "weight_decay", "blend", "trust_mask"]
    for key in per_tensor:
        for label, make in [("one too many", lambda c: torch.ones(_n(c) + 1, dtype=torch.float64)),
                            ("one too few", lambda c: torch.ones(_n(c) - 1, dtype=torch.float64)),
                            ("2-D [1, n]", lambda c: torch.ones(1, _n(c), dtype=torch.float64)),
                            ("2-D [n, 1]", lambda c: torch.ones(_n(c), 1, dtype=torch.float64)),
                            ("0-d", lambda c: torch.tensor(1.0, dtype=torch.float64)),
                            ("empty", lambda c: torch.ones(0, dtype=torch.float64))]:
            out.append(_bad(fam, f"{key} {label}", "lamb", _set(**{key: make}), key))
    for recipe in ("dals", "grokfast"):
        for label, value in [("[1, 2]", torch.ones(1, 2, dtype=torch.float64)),
                             ("[3]", torch.ones(3, dtype=torch.float64)), ("[]", torch.ones(0, dtype=torch.float64)),
                             ("0-d", torch.tensor(0.5, dtype=torch.float64)), ("missing", None)]:
            out.append(_bad(fam, f"filter_coef {label}", recipe, _set(filter_coef=value), "filter_coef"))
    out.append(_bad(fam, "filter_coef empty without a filter", "sgd",
                    _set(filter_coef=torch.ones(0, dtype=torch.float64)), "filter_coef"))
    for key in ("lr", "grad_scale", "found_inf"):
        for label, value in [("[2]", torch.ones(2)), ("[0]", torch.ones(0)), ("[2, 2]", torch.ones(2, 2))]:
            out.append(_bad(fam, f"{key} {label}", "adamw", _set(**{key: value}), key))
    for recipe in ("lamb", "dals"):
        out.append(_bad(fam, "trust_ratios [n, 1]", recipe, _set(trust_ratios=lambda c: torch.ones(_n(c), 1,
                                                                   dtype=torch.float64)), "trust_ratios"))
        out.append(_bad(fam, "trust_ratios [n+1]", recipe, _set(trust_ratios=lambda c: torch.ones(_n(c) + 1,
                                                                   dtype=torch.float64)), "trust_ratios"))
    for list_name in ("grads", "filters", "exp_avgs", "exp_avg_sqs"):
        recipe = "dals" if list_name == "filters" else "adamw"
        out.append(_bad(fam, f"{list_name}[1] wrong shape", recipe, _item(list_name, 1, torch.ones(7)),
                        rf"{list_name}\[1\]"))
        out.append(_bad(fam, f"{list_name} one short", recipe,
                        lambda c, ln=list_name: c.lists[ln].pop(), list_name))
    out.append(_bad(fam, "steps[2] with 2 elements", "adamw", _item("steps", 2, torch.zeros(2)), r"steps\[2\]"))
    out.append(_bad(fam, "steps one short", "sgd", lambda c: c.lists["steps"].pop(), "steps"))
    out.append(_bad(fam, "exp_avgs given to plain sgd", "sgd",
                    lambda c: c.lists.update(exp_avgs=c.lists["exp_avgs"]) or setattr(
                        c, "recipe", Recipe(moment="sgd")), "exp_avgs"))
    return out


def stride_cases():
    fam = "op strides"
    out = []

    def strided_input(key):
        def run():
            plain = OpCall.valid("lamb", seed=1)
            odd = OpCall.valid("lamb", seed=1)
            n = _n(odd)
            wide = torch.zeros(2 * n, dtype=torch.float64)
            wide[::2] = odd.kwargs[key]
            odd.kwargs[key] = wide[::2]  # a 1-D view with stride 2
            return same_result(plain, odd)
        return Case(fam, f"{key} as a stride-2 view (valid)", run)

    for key in ("lr_mult", "weight_decay", "blend", "trust_mask"):
        out.append(strided_input(key))

    def expanded_input():
        plain = OpCall.valid("adamw", seed=2)
        odd = OpCall.valid("adamw", seed=2)
        plain.kwargs["lr_mult"] = torch.full((_n(plain),), 0.7, dtype=torch.float64)
        odd.kwargs["lr_mult"] = torch.tensor([0.7], dtype=torch.float64).expand(_n(odd))
        return same_result(plain, odd)
    out.append(Case(fam, "lr_mult expanded from one value (valid, read only)", expanded_input))

    def transposed_state():
        plain = OpCall.valid("adamw", seed=3)
        odd = OpCall.valid("adamw", seed=3)
        odd.lists["exp_avgs"][0] = odd.lists["exp_avgs"][0].t().contiguous().t()
        return same_result(plain, odd)
    out.append(Case(fam, "exp_avgs[0] transposed layout (valid)", transposed_state))

    for list_name, recipe in (("params", "sgd"), ("exp_avgs", "adamw"), ("exp_avg_sqs", "lamb"), ("filters", "dals")):
        out.append(_bad(fam, f"{list_name}[0] expanded (stride 0)", recipe,
                        _item(list_name, 0, torch.ones(1, 3).expand(4, 3)), rf"{list_name}\[0\] overlaps itself"))
        out.append(_bad(fam, f"{list_name}[2] self-overlapping as_strided", recipe,
                        _item(list_name, 2, torch.zeros(20).as_strided((2, 3, 2), (1, 1, 1))),
                        rf"{list_name}\[2\] overlaps itself"))
    out.append(_bad(fam, "trust_ratios expanded", "lamb",
                    _set(trust_ratios=lambda c: torch.ones(1, dtype=torch.float64).expand(_n(c))), "trust_ratios"))
    return out


def dtype_cases():
    fam = "op dtypes"
    out = []
    for label, dtype in [("int64", torch.int64), ("complex64", torch.complex64), ("bool", torch.bool),
                         ("uint8", torch.uint8)]:
        out.append(_bad(fam, f"params[1] {label}", "sgd", _item("params", 1, torch.zeros(5, dtype=dtype)),
                        r"params\[1\]"))
    out.append(_bad(fam, "params[1] float64 among float32", "adamw",
                    _item("params", 1, torch.zeros(5, dtype=torch.float64)), r"params\[1\]"))
    for list_name, recipe in (("grads", "sgd"), ("exp_avgs", "adamw"), ("exp_avg_sqs", "adamw"), ("filters", "dals")):
        out.append(_bad(fam, f"{list_name}[0] float16 for a float32 param", recipe,
                        _item(list_name, 0, torch.zeros(4, 3, dtype=torch.float16)), rf"{list_name}\[0\]"))
    out.append(_bad(fam, "steps[0] int64", "adamw", _item("steps", 0, torch.tensor(3)), r"steps\[0\]"))
    for key in ("lr_mult", "weight_decay", "blend", "lr"):
        out.append(_bad(fam, f"{key} complex", "lamb",
                        _set(**{key: lambda c, k=key: c.kwargs[k].to(torch.complex128)}), key))
    out.append(_bad(fam, "trust_ratios int64", "lamb", _set(trust_ratios=lambda c: torch.ones(_n(c),
                                                             dtype=torch.int64)), "trust_ratios"))
    out.append(_bad(fam, "filter_coef int64", "dals", _set(filter_coef=torch.tensor([1, 1])), "filter_coef"))
    out.append(_bad(fam, "grads[0] sparse", "sgd", _item("grads", 0, torch.zeros(4, 3).to_sparse()), r"grads\[0\]"))
    return out


def device_cases():
    fam = "op devices"
    out = []

    def meta_like(t):
        return torch.empty_like(t, device="meta")

    for list_name, recipe in (("params", "sgd"), ("grads", "lamb"), ("exp_avgs", "adamw"), ("filters", "dals"),
                              ("steps", "adamw")):
        out.append(_bad(fam, f"{list_name}[1] on meta among cpu", recipe,
                        lambda c, ln=list_name: c.lists[ln].__setitem__(1, meta_like(c.lists[ln][1])), "meta"))
    for key in ("lr", "lr_mult", "trust_mask", "filter_coef", "trust_ratios"):
        recipe = "dals"
        out.append(_bad(fam, f"{key} on meta among cpu", recipe,
                        _set(**{key: lambda c, k=key: meta_like(c.kwargs[k])}), "meta"))

    def all_meta():
        call = OpCall.valid("lamb")
        for v in call.lists.values():
            v[:] = [meta_like(t) for t in v]
        for k, v in list(call.kwargs.items()):
            if isinstance(v, torch.Tensor):
                call.kwargs[k] = meta_like(v)
        call()  # shape propagation only: valid, nothing to compare
        return "ok", "all-meta call accepted"
    out.append(Case(fam, "every tensor on meta (valid shape propagation)", all_meta))
    return out


def overlap_cases():
    fam = "op overlaps"
    out = []

    def same_param_twice(call):
        call.lists["params"][1] = call.lists["params"][0]
        call.lists["grads"][1] = call.lists["grads"][0].clone()
        for name in ("exp_avgs", "exp_avg_sqs", "filters"):
            if call.lists[name]:
                call.lists[name][1] = call.lists[name][0].clone()
    for recipe in ("sgd", "lamb", "dals"):
        out.append(_bad(fam, "the same param twice", recipe, same_param_twice, "share memory"))
        out.append(_bad(fam, "state aliasing its param", recipe,
                        lambda c: c.lists["exp_avgs"].__setitem__(0, c.lists["params"][0]), "share memory"))
        out.append(_bad(fam, "grad aliasing its param", recipe,
                        lambda c: c.lists["grads"].__setitem__(2, c.lists["params"][2]), "share memory"))

    def overlapping_views(call):
        buf = torch.randn(30)
        call.lists["params"][0] = buf[:12].view(4, 3)
        call.lists["params"][1] = buf[8:13]
    out.append(_bad(fam, "two params overlapping views of one buffer", "adamw", overlapping_views, "share memory"))

    def interleaved(call):
        buf = torch.randn(10)
        call.lists["params"][1] = buf[::2]
        call.lists["exp_avgs"][1] = buf[1::2]
    out.append(_bad(fam, "param and state interleaved in one buffer", "adamw", interleaved, "may share memory"))
    out.append(_bad(fam, "exp_avg aliasing exp_avg_sq", "adamw",
                    lambda c: c.lists["exp_avg_sqs"].__setitem__(0, c.lists["exp_avgs"][0]), "share memory"))
    out.append(_bad(fam, "one step tensor for two params", "adamw",
                    lambda c: c.lists["steps"].__setitem__(1, c.lists["steps"][0]), "share memory"))
    def shared_grads(call):
        buf = torch.randn(20)
        call.lists["grads"][0] = buf[:12].view(4, 3)
        call.lists["grads"][1] = buf[10:15]
    out.append(_bad(fam, "LAMB grads sharing memory (written)", "lamb", shared_grads, "share memory"))
    out.append(_bad(fam, "trust_ratios aliasing lr_mult", "lamb",
                    _set(trust_ratios=lambda c: c.kwargs["lr_mult"]), "share memory"))

    def shared_read_only():
        plain = OpCall.valid("sgd", seed=4)
        odd = OpCall.valid("sgd", seed=4)
        shared = torch.linspace(0.5, 1.5, _n(odd), dtype=torch.float64)
        for call in (plain, odd):
            call.kwargs["blend"] = shared.clone()
            call.kwargs["lr_mult"] = shared.clone()
        odd.kwargs["blend"] = odd.kwargs["lr_mult"]  # one tensor read twice
        return same_result(plain, odd)
    out.append(Case(fam, "one read-only tensor as two inputs (valid)", shared_read_only))
    return out


def value_cases():
    fam = "op values"
    out = []
    for label, value in [("-1", -1.0), ("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)]:
        out.append(_bad(fam, f"steps[1] = {label}", "adamw", _item("steps", 1, torch.tensor(value)), r"steps\[1\]"))

    def dals_phase(detector, filter_coef, pattern, loss=torch.tensor(1.0)):
        def run():
            return refused(lambda: torch.ops.layerlr.dals_phase_(detector, filter_coef, loss, tau1=0.01, tau2=0.002,
                                                                 phase_alpha=[0.3, 0.6, 0.7],
                                                                 phase_gate=[1.0, 1.0, 1.0]),
                           [detector, filter_coef, loss], pattern)
        return run

    d64 = dict(dtype=torch.float64)
    coef = torch.tensor([0.6, 1.0], **d64)
    for phase in (3.0, -1.0, 0.5, math.nan, 1e300):
        out.append(Case(fam, f"DALS phase {phase} (first loss)", dals_phase(
            torch.tensor([0.0, 0.0, phase], **d64), coef.clone(), "phase")))
    out.append(Case(fam, "DALS detector [1, 3]", dals_phase(torch.zeros(1, 3, **d64), coef.clone(), "detector")))
    out.append(Case(fam, "DALS detector [4]", dals_phase(torch.zeros(4, **d64), coef.clone(), "detector")))
    out.append(Case(fam, "DALS detector float32", dals_phase(torch.zeros(3), coef.clone(), "detector")))
    out.append(Case(fam, "DALS filter_coef [1, 2]", dals_phase(torch.zeros(3, **d64), torch.ones(1, 2, **d64),
                                                               "filter_coef")))
    out.append(Case(fam, "DALS filter_coef [0]", dals_phase(torch.zeros(3, **d64), torch.ones(0, **d64),
                                                            "filter_coef")))
    out.append(Case(fam, "DALS loss [2]", dals_phase(torch.zeros(3, **d64), coef.clone(), "loss", torch.ones(2))))
    buf = torch.zeros(4, **d64)
    out.append(Case(fam, "DALS detector aliasing filter_coef", dals_phase(buf[:3], buf[2:], "share memory")))
    out.append(Case(fam, "DALS detector on meta, loss on cpu", dals_phase(torch.zeros(3, device="meta", **d64),
                                                                         torch.ones(2, device="meta", **d64), "meta")))
    return out


def strided_detector_ok():
    """A detector that is a strided view is valid and must give the contiguous detector's result."""
    d64 = dict(dtype=torch.float64)
    wide = torch.zeros(6, **d64)
    plain = torch.zeros(3, **d64)
    coefs = [torch.zeros(2, **d64), torch.zeros(2, **d64)]
    for loss in (2.0, 1.5, 1.49):
        for det, coef in ((wide[::2], coefs[0]), (plain, coefs[1])):
            torch.ops.layerlr.dals_phase_(det, coef, torch.tensor(loss), tau1=0.01, tau2=0.002,
                                          phase_alpha=[0.3, 0.6, 0.7], phase_gate=[0.0, 1.0, 1.0])
    if torch.equal(wide[::2], plain) and torch.equal(coefs[0], coefs[1]) and wide[1::2].eq(0).all():
        return "ok", "strided detector matches"
    return "wrong", f"strided detector {wide[::2].tolist()} vs {plain.tolist()}"


def norms_cases():
    fam = "op values"
    out = [Case(fam, "DALS detector [3] stride 2 (valid)", strided_detector_ok)]

    def norms(tensors, pattern):
        return lambda: refused(lambda: torch.ops.layerlr.tensor_norms(tensors), list(tensors), pattern)
    out.append(Case(fam, "tensor_norms int64", norms([torch.ones(3, dtype=torch.int64)], r"tensors\[0\]")))
    out.append(Case(fam, "tensor_norms meta among cpu", norms([torch.ones(3), torch.ones(3, device="meta")], "meta")))
    out.append(Case(fam, "tensor_norms sparse", norms([torch.ones(3).to_sparse()], r"tensors\[0\]")))
    return out


def all_cases():
    cases = shape_cases() + stride_cases() + dtype_cases() + device_cases() + overlap_cases() + value_cases()
    return cases + norms_cases()
