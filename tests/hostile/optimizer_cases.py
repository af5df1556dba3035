"""Hostile use of the optimizers: crafted checkpoints, failing steps (atomicity), edited state, duplicates,
and the autograd contract. Every optimizer of the library is tried.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from hostile.harness import Case, bits, unchanged
from torch_layerlr.optim import DALS, LAMB, LARS, DepthScaledSGD, GrokfastAdamW, LayerwiseAdamW, LayerwiseSGD

F64 = torch.float64
ERRORS = (ValueError, TypeError, RuntimeError, KeyError)

#: name -> factory(params) of every optimizer, with settings that keep every state buffer in use
OPTIMIZERS = {
    "LayerwiseSGD": lambda ps: LayerwiseSGD(ps, lr=0.1, momentum=0.9, lr_mult=1.0),
    "LayerwiseAdamW": lambda ps: LayerwiseAdamW(ps, lr=0.01),
    "GrokfastAdamW": lambda ps: GrokfastAdamW(ps, lr=0.01),
    "LARS": lambda ps: LARS(ps, lr=0.1, weight_decay=1e-3),
    "LAMB": lambda ps: LAMB(ps, lr=0.01),
    "DALS": lambda ps: DALS(ps, total_steps=50),
    "DepthScaledSGD": lambda ps: DepthScaledSGD(ps, mu_xx=1.0, mu_yx=2.0, momentum=0.5),
}


def _params(seed=0, dtypes=(F64, F64, F64, F64)):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (3,), (2, 3), (2,)]
    return [nn.Parameter(torch.randn(s, generator=g, dtype=d)) for s, d in zip(shapes, dtypes)]


def _grads(params, k):
    g = torch.Generator().manual_seed(1000 + k)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=F64).to(p.dtype)


def _trained(name, steps=3, seed=0, groups=False):
    params = _params(seed)
    opt = OPTIMIZERS[name]([{"params": params[:2]}, {"params": params[2:]}] if groups else params)
    for k in range(steps):
        _grads(params, k)
        _step(opt, k)
    return opt, params


def _step(opt, k):
    if isinstance(opt, DALS):
        opt.step(loss=2.0 / (k + 1))
    else:
        opt.step()


def _snapshot(opt, params):
    """Everything an error must leave alone: params, the state dict, DALS's global state."""
    sd = copy.deepcopy(opt.state_dict())
    return [bits(p) for p in params], sd


def _same_state(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(bits(a), bits(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _refused_unchanged(fn, opt, params, pattern):
    before_params, before_sd = _snapshot(opt, params)
    try:
        fn()
    except ERRORS as exc:
        message = str(exc).splitlines()[0]
        if unchanged(params, before_params) is not None:
            return "wrong", f"partial update: a param changed ({message})"
        if not _same_state(opt.state_dict(), before_sd):
            return "wrong", f"partial update: the state changed ({message})"
        if pattern and pattern not in str(exc):
            return "wrong", f"error does not name {pattern!r}: {message}"
        return "refused", message
    return "wrong", "accepted"


# ---- crafted checkpoints -------------------------------------------------------------------------------------
def _first_key(sd):
    return next(iter(sd["state"]))


def _buffer_name(sd):
    return next(k for k in sd["state"][_first_key(sd)] if k != "step")


def _edit_state(fn):
    def edit(sd):
        fn(sd["state"][_first_key(sd)], sd)
    return edit


CHECKPOINT_EDITS = {
    "no 'state'": (lambda sd: sd.pop("state"), "'state'"),
    "no 'param_groups'": (lambda sd: sd.pop("param_groups"), "'param_groups'"),
    "one group too many": (lambda sd: sd["param_groups"].append(copy.deepcopy(sd["param_groups"][0])), "param_groups"),
    "a group one param short": (lambda sd: sd["param_groups"][0]["params"].pop(), "param_groups"),
    "state for an unknown param": (lambda sd: sd["state"].__setitem__(999, {}), "999"),
    "param listed twice": (lambda sd: sd["param_groups"][0]["params"].__setitem__(1, sd["param_groups"][0]["params"][0]),
                           "twice"),
    "state missing 'step'": (_edit_state(lambda st, sd: st.pop("step")), "'step'"),
    "state missing its buffer": (_edit_state(lambda st, sd: st.pop(_buffer_name(sd))), "missing"),
    "state with an extra entry": (_edit_state(lambda st, sd: st.__setitem__("max_exp_avg_sq", st["step"])), "max_exp_avg_sq"),
    "buffer reshaped [1, ...]": (_edit_state(lambda st, sd: st.__setitem__(_buffer_name(sd), st[_buffer_name(sd)][None])),
                                 "shape"),
    "buffer flattened": (_edit_state(lambda st, sd: st.__setitem__(_buffer_name(sd), st[_buffer_name(sd)].reshape(-1))),
                         "shape"),
    "buffer int64": (_edit_state(lambda st, sd: st.__setitem__(_buffer_name(sd), st[_buffer_name(sd)].long())), "dtype"),
    "buffer a list": (_edit_state(lambda st, sd: st.__setitem__(_buffer_name(sd), st[_buffer_name(sd)].tolist())),
                      "tensor"),
    "buffer sparse": (_edit_state(lambda st, sd: st.__setitem__(_buffer_name(sd), st[_buffer_name(sd)].to_sparse())),
                      "layout"),
    "step -1": (_edit_state(lambda st, sd: st.__setitem__("step", torch.tensor(-1.0))), "step"),
    "step nan": (_edit_state(lambda st, sd: st.__setitem__("step", torch.tensor(math.nan))), "step"),
    "step inf": (_edit_state(lambda st, sd: st.__setitem__("step", math.inf)), "step"),
    "step a string": (_edit_state(lambda st, sd: st.__setitem__("step", "3")), "step"),
    "step of 2 elements": (_edit_state(lambda st, sd: st.__setitem__("step", torch.ones(2))), "step"),
    "group lr nan": (lambda sd: sd["param_groups"][0].__setitem__("lr", math.nan), "lr"),
    "group lr -1": (lambda sd: sd["param_groups"][0].__setitem__("lr", -1.0), "lr"),
    "group lr_mult list too long": (lambda sd: sd["param_groups"][0].__setitem__("lr_mult", [1.0] * 9), "lr_mult"),
    "group lr_mult nan": (lambda sd: sd["param_groups"][0].__setitem__("lr_mult", math.nan), "lr_mult"),
    "state not a dict": (lambda sd: sd.__setitem__("state", [1, 2]), "state"),
}

DALS_EDITS = {
    "no 'dals'": (lambda sd: [sd.pop("dals")] + [g.pop("dals", None) for g in sd["param_groups"]], "'dals'"),
    "the group copy of 'dals' only, phase 7": (lambda sd: sd.pop("dals") and
                                               sd["param_groups"][0]["dals"]["detector"].__setitem__(2, 7.0),
                                               "phase"),
    "dals detector [1, 3]": (lambda sd: sd["dals"].__setitem__("detector", sd["dals"]["detector"][None]), "detector"),
    "dals detector [4]": (lambda sd: sd["dals"].__setitem__("detector", torch.zeros(4, dtype=F64)), "detector"),
    "dals phase 5": (lambda sd: sd["dals"]["detector"].__setitem__(2, 5.0), "phase"),
    "dals phase 0.5": (lambda sd: sd["dals"]["detector"].__setitem__(2, 0.5), "phase"),
    "dals phase nan": (lambda sd: sd["dals"]["detector"].__setitem__(2, math.nan), "phase"),
    "dals losses seen -1": (lambda sd: sd["dals"]["detector"].__setitem__(1, -1.0), "seen"),
    "dals filter_coef [1, 2]": (lambda sd: sd["dals"].__setitem__("filter_coef", sd["dals"]["filter_coef"][None]),
                                "filter_coef"),
    "dals cycle_len 0": (lambda sd: sd["dals"].__setitem__("cycle_len", 0), "cycle_len"),
    "dals step -1": (lambda sd: sd["dals"].__setitem__("step", -1), "step"),
    "dals step 2.5": (lambda sd: sd["dals"].__setitem__("step", 2.5), "step"),
    "dals missing 'cycle'": (lambda sd: sd["dals"].pop("cycle"), "cycle"),
    "dals extra entry": (lambda sd: sd["dals"].__setitem__("phase", 1), "phase"),
    "dals not a dict": (lambda sd: sd.__setitem__("dals", [0]), "dals"),
}


def _checkpoint_case(name, label, edit, pattern):
    def run():
        opt, params = _trained(name)
        twin, twin_params = _trained(name)
        sd = copy.deepcopy(opt.state_dict())
        edit(sd)
        outcome = _refused_unchanged(lambda: opt.load_state_dict(sd), opt, params, pattern)
        if outcome[0] != "refused":
            return outcome
        # the optimizer still steps exactly as one that never saw the bad checkpoint
        for o, ps in ((opt, params), (twin, twin_params)):
            _grads(ps, 50)
            _step(o, 50)
        if unchanged(params, [bits(p) for p in twin_params]) is not None:
            return "wrong", "after the refused load, the step differs from an untouched optimizer's"
        return outcome
    return Case("checkpoints", f"{label} [{name}]", run)


def checkpoint_cases():
    out = []
    for name in OPTIMIZERS:
        for label, (edit, pattern) in CHECKPOINT_EDITS.items():
            out.append(_checkpoint_case(name, label, edit, pattern))
    for label, (edit, pattern) in DALS_EDITS.items():
        out.append(_checkpoint_case("DALS", label, edit, pattern))
    return out


# ---- atomic steps ----------------------------------------------------------------------------------------------
def atomic_cases():
    out = []

    def failing_step(name, breaker, pattern, mixed=False):
        def run():
            params = _params(dtypes=(F64, F64, torch.float32, F64) if mixed else (F64,) * 4)
            opt = OPTIMIZERS[name]([{"params": params[:2]}, {"params": params[2:]}])
            for k in range(2):
                _grads(params, k)
                _step(opt, k)
            _grads(params, 2)
            breaker(opt, params)
            global_before = copy.deepcopy(getattr(opt, "_global", None))
            outcome = _refused_unchanged(lambda: _step(opt, 2), opt, params, pattern)
            if outcome[0] == "refused" and global_before is not None and not _same_state(opt._global, global_before):
                return "wrong", "DALS's schedule or loss phase moved on a refused step"
            return outcome
        return run

    def bad_state_shape(opt, params):
        st = opt.state[params[3]]
        name = next(k for k in st if k != "step")
        st[name] = torch.zeros(7, dtype=F64)

    def expanded_state(opt, params):
        st = opt.state[params[3]]
        name = next(k for k in st if k != "step")
        st[name] = torch.zeros(1, dtype=F64).expand(params[3].shape)

    def resized_grad(opt, params):
        params[3].grad.set_(torch.zeros(5, dtype=F64))

    def grad_is_param(opt, params):
        params[3].grad = params[3].detach()  # shares the param's memory

    def step_negative(opt, params):
        opt.state[params[3]]["step"] = torch.tensor(-2.0)

    def state_other_dtype(opt, params):
        st = opt.state[params[2]]
        name = next(k for k in st if k != "step")
        st[name] = st[name].to(torch.float16)

    for name in OPTIMIZERS:
        out.append(Case("atomic steps", f"group 1 state of the wrong shape [{name}]",
                        failing_step(name, bad_state_shape, "shape")))
        out.append(Case("atomic steps", f"group 1 state expanded [{name}]",
                        failing_step(name, expanded_state, "overlaps itself")))
        out.append(Case("atomic steps", f"group 1 state expanded, two dtypes (two calls) [{name}]",
                        failing_step(name, expanded_state, "overlaps itself", mixed=True)))
        out.append(Case("atomic steps", f"group 1 grad resized [{name}]", failing_step(name, resized_grad, "grads")))
        out.append(Case("atomic steps", f"group 1 grad is its param [{name}]",
                        failing_step(name, grad_is_param, "share memory")))
        out.append(Case("atomic steps", f"group 1 step -2 [{name}]", failing_step(name, step_negative, "step")))
        out.append(Case("atomic steps", f"group 1 state float16 [{name}]",
                        failing_step(name, state_other_dtype, "dtype", mixed=True)))
    return out


# ---- state is the truth ---------------------------------------------------------------------------------------
def _loaded_twin(name, opt, params, sd):
    """An optimizer on copies of ``params`` with ``sd`` loaded: what ``opt`` must do after a state edit."""
    twin_params = [nn.Parameter(p.detach().clone()) for p in params]
    twin = OPTIMIZERS[name](twin_params)
    twin.load_state_dict(sd)
    return twin, twin_params


def state_truth_cases():
    out = []

    def edited(name, edit, label, twin_state=None):
        def run():
            opt, params = _trained(name)
            edit(opt, params)
            sd = copy.deepcopy(opt.state_dict())
            if twin_state is not None:
                twin_state(sd, params)
            twin, twin_params = _loaded_twin(name, opt, params, sd) if sd["state"] else (None, None)
            if twin is None:  # cleared state: the twin is a fresh optimizer with DALS's global state carried over
                twin_params = [nn.Parameter(p.detach().clone()) for p in params]
                twin = OPTIMIZERS[name](twin_params)
                if isinstance(opt, DALS):
                    twin._global = copy.deepcopy(opt._global)
            for o, ps in ((opt, params), (twin, twin_params)):
                _grads(ps, 60)
                _step(o, 60)
            if unchanged(params, [bits(p) for p in twin_params]) is not None:
                return "wrong", f"{label}: the step did not use the edited state"
            if not _same_state(opt.state_dict()["state"], twin.state_dict()["state"]):
                return "wrong", f"{label}: state_dict() differs from the tensors the step used"
            return "ok", f"{label}: honoured"
        return Case("state edits", f"{label} [{name}]", run)

    def clear(opt, params):
        opt.state.clear()

    def replace_buffer(opt, params):
        st = opt.state[params[0]]
        name = next(k for k in st if k != "step")
        st[name] = torch.full_like(st[name], 0.25)

    def replace_dict(opt, params):
        opt.state[params[1]] = {k: v.clone() * (1.5 if k != "step" else 1) for k, v in opt.state[params[1]].items()}

    def int_step(opt, params):
        opt.state[params[2]]["step"] = 7

    def delete_buffer(opt, params):
        st = opt.state[params[2]]
        del st[next(k for k in st if k != "step")]

    def zero_deleted_buffer(sd, params):
        """What a deleted buffer must come back as: zeros (the twin is loaded with them)."""
        names = {k for st in sd["state"].values() for k in st}
        st = sd["state"][2]
        for name in names - set(st):
            st[name] = torch.zeros_like(params[2])

    for name in OPTIMIZERS:
        for edit, label in ((clear, "opt.state.clear()"), (replace_buffer, "a buffer replaced"),
                            (replace_dict, "a param's state dict replaced"), (int_step, "step set to the int 7")):
            out.append(edited(name, edit, label))
        out.append(edited(name, delete_buffer, "a buffer deleted", zero_deleted_buffer))

    def swapped_param(name):
        def run():
            opt, params = _trained(name)
            new = nn.Parameter(torch.randn(3, 4, dtype=F64))
            opt.param_groups[0]["params"][0] = new
            _grads([new] + params[1:], 70)
            before = new.detach().clone()
            _step(opt, 70)
            if torch.equal(before, new.detach()) or new not in opt.state:
                return "wrong", "the swapped-in param was not stepped"
            return "ok", "swapped-in param stepped with fresh state"
        return Case("state edits", f"a param swapped in the group [{name}]", run)

    out += [swapped_param(name) for name in OPTIMIZERS]
    return out


# ---- duplicates, aliases, autograd ------------------------------------------------------------------------------
def construction_cases():
    out = []

    def refuse(fn, pattern):
        try:
            fn()
        except ValueError as exc:
            return ("refused", str(exc)) if pattern in str(exc) else ("wrong", f"unclear: {exc}")
        return "wrong", "accepted"

    for name, make in OPTIMIZERS.items():
        p = _params()
        out.append(Case("duplicates", f"a param twice in one group [{name}]",
                        lambda make=make, p=p: refuse(lambda: make([p[0], p[1], p[0]]), "same tensor")))
        out.append(Case("duplicates", f"a param in two groups [{name}]",
                        lambda make=make, p=p: refuse(lambda: make([{"params": [p[0]]}, {"params": [p[0], p[1]]}]),
                                                      "more than one")))

        def add_group_dup(make=make, p=p):
            opt = make([p[0]])
            outcome = refuse(lambda: opt.add_param_group({"params": [p[1], p[1]]}), "same tensor")
            if len(opt.param_groups) != 1:
                return "wrong", "a refused group stayed behind"
            return outcome
        out.append(Case("duplicates", f"add_param_group with a param twice [{name}]", add_group_dup))

        def aliased_params(make=make):
            buf = torch.randn(12, dtype=F64)
            a = nn.Parameter(buf[:6].view(2, 3))
            b = nn.Parameter(buf[3:9])
            opt = make([a, b])
            a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
            return _refused_unchanged(lambda: _step(opt, 0), opt, [a, b], "share memory")
        out.append(Case("duplicates", f"two params sharing memory [{name}]", aliased_params))

        def saved_graph(make=make):
            w = nn.Parameter(torch.randn(3, dtype=F64))
            x = torch.randn(3, dtype=F64)
            opt = make([w])
            y = (w * w * x).sum()  # saves w for backward
            w.grad = torch.ones_like(w)
            _step(opt, 0)
            try:
                y.backward()
            except RuntimeError as exc:
                if "modified by an inplace operation" in str(exc):
                    return "refused", "backward through a stepped param raises, as with torch.optim"
                return "wrong", f"unexpected error {exc}"
            return "wrong", "backward silently used the updated weights"
        out.append(Case("autograd", f"backward after step through a saved param [{name}]", saved_graph))
    return out


def all_cases():
    return checkpoint_cases() + atomic_cases() + state_truth_cases() + construction_cases()
