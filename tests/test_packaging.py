"""Packaging: torch_layerlr and its optimizers, schedules and layer groups need torch only (a subprocess
whose path lacks NumPy, SciPy, matplotlib and tqdm); every third-party import of the package is declared in
pyproject.toml. (.ci/jobs/20-wheel.sh builds the wheel and runs the same smoke test in a venv with torch only.)"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONAL = ("numpy", "scipy", "matplotlib", "tqdm")

SMOKE = textwrap.dedent('''
    import importlib.util
    import sys

    for name in OPTIONAL:
        assert importlib.util.find_spec(name) is None, f"{name} should be absent here"

    import torch
    from torch import nn

    import torch_layerlr
    from torch_layerlr.layers import discriminative_multipliers, llrd
    from torch_layerlr.optim import (DALS, LAMB, LARS, DepthScaledSGD, GrokfastAdamW, LayerwiseAdamW,
                                     LayerwiseSGD)
    from torch_layerlr.schedules import SGDR, STLR, NormBalancedLR, WarmupCosine

    makers = {
        "LayerwiseSGD": lambda m: LayerwiseSGD(m.parameters(), lr=0.1, momentum=0.9),
        "LayerwiseAdamW": lambda m: LayerwiseAdamW(m.parameters(), lr=1e-2),
        "GrokfastAdamW": lambda m: GrokfastAdamW(m.parameters(), lr=1e-2),
        "LARS": lambda m: LARS(m.parameters(), lr=0.1),
        "LAMB": lambda m: LAMB(m.parameters(), lr=1e-2),
        "DALS": lambda m: DALS(m, total_steps=10, warmup_frac=0.0),
        "DepthScaledSGD": lambda m: DepthScaledSGD(m.parameters(), None, None, sharpness=10.0),
    }
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for name, make in makers.items():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        opt = make(m)
        sched = WarmupCosine(opt, total_steps=5)
        before = [p.detach().clone() for p in m.parameters()]
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step(loss=loss) if name == "DALS" else opt.step()
        sched.step()
        assert any(not torch.equal(b, p) for b, p in zip(before, m.parameters())), name
        print("stepped", name)

    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = LayerwiseSGD(llrd(m, 0.8, x), lr=0.1)
    opt2 = LayerwiseSGD(m.parameters(), lr=0.1, lr_mult=discriminative_multipliers(m, x))
    NormBalancedLR(opt2).step()
    SGDR(opt, T_0=3).step()
    STLR(opt2, total_steps=4).step()
    try:
        DepthScaledSGD(m.parameters(), 1.0, 2.0)
    except ImportError as exc:
        assert "torch_layerlr[theory]" in str(exc), exc
        print("closed form asks for the theory extra")
    loaded = sorted(n for n in sys.modules if n.split(".")[0] in OPTIONAL)
    assert not loaded, loaded
    print("no optional package loaded")
''')


def _site_without_optional(tmp_path) -> str:
    """A copy of torch's site-packages folder (links to its entries) without the optional packages."""
    import torch

    site = os.path.dirname(os.path.dirname(torch.__file__))
    shadow = tmp_path / "site"
    shadow.mkdir()
    for entry in os.listdir(site):
        top = re.split(r"[-.]", entry, maxsplit=1)[0].lower()
        if top not in OPTIONAL and not entry.endswith(".pth"):
            os.symlink(os.path.join(site, entry), shadow / entry)
    return str(shadow)


def test_optimizers_need_torch_only(tmp_path):
    """In a Python whose path holds torch's site-packages without NumPy, SciPy, matplotlib and tqdm (``-S``:
    no site folders), import the package, step every optimizer, use the layer groups and the schedules."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, _site_without_optional(tmp_path)]))
    code = f"OPTIONAL = {OPTIONAL!r}\n" + SMOKE
    run = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines == [f"stepped {n}" for n in ("LayerwiseSGD", "LayerwiseAdamW", "GrokfastAdamW", "LARS", "LAMB",
                                              "DALS", "DepthScaledSGD")] + [
        "closed form asks for the theory extra", "no optional package loaded"]


def test_depth_scaled_archs_are_the_theorys():
    from torch_layerlr.optim.depth_scaled import ARCHS
    from torch_layerlr.theory.scalar_chain import ARCHS as THEORY_ARCHS

    assert ARCHS == THEORY_ARCHS


def _third_party_imports() -> dict[str, set[str]]:
    """{top-level module: files} of every absolute import in torch_layerlr/ outside the standard library."""
    found: dict[str, set[str]] = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "torch_layerlr")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods = [node.module]
                else:
                    continue
                for mod in mods:
                    top = mod.split(".")[0]
                    if top not in sys.stdlib_module_names and top != "torch_layerlr":
                        found.setdefault(top, set()).add(os.path.relpath(path, ROOT))
    return found


# Import names whose distribution name differs, and the integrations' frameworks (never dependencies).
DISTRIBUTION = {"lightning": None, "transformers": None}


def test_every_import_is_declared():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]

    def names(reqs):
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}

    required = names(project["dependencies"])
    extras = {k: names(v) for k, v in project["optional-dependencies"].items()}
    assert required == {"torch"}
    assert {"numpy", "scipy"} <= extras["theory"]
    assert {"numpy", "scipy", "matplotlib", "tqdm"} <= extras["train"] <= extras["test"]
    assert {"pytest", "hypothesis"} <= extras["test"]
    declared = required.union(*extras.values())
    for module, files in sorted(_third_party_imports().items()):
        dist = DISTRIBUTION.get(module, module)
        if dist is None:
            assert all(f.startswith(os.path.join("torch_layerlr", "integrations")) for f in files), (module, files)
            continue
        assert dist in declared, f"{module} is imported by {sorted(files)} but not declared in pyproject.toml"
