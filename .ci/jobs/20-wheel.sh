#!/usr/bin/env bash
# The package as a user installs it: a wheel built the torch-extension way (pip, no build isolation, against
# the project's torch), installed into a fresh venv that has only torch==2.13.0; then, from outside the source
# tree, import torch_layerlr.optim and take one step with each optimizer. NumPy/SciPy must not be needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "torch==2.13.0" > "$work/constraints.txt"

# A clean copy of the sources (tracked and new files, nothing ignored): no in-place build output gets in.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  if [ -f "$f" ]; then cp --parents -- "$f" "$work/src/"; fi
done
(cd "$work/src" && MAX_JOBS=2 "$repo/.venv/bin/python" -m pip wheel -q --no-build-isolation --no-deps . -w "$work/dist")
wheel=$(ls "$work"/dist/torch_layerlr-*.whl)
echo "built $(basename "$wheel")"

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q -c "$work/constraints.txt" torch==2.13.0
"$work/venv/bin/pip" install -q -c "$work/constraints.txt" "$wheel"

mkdir "$work/elsewhere"
cd "$work/elsewhere"
"$work/venv/bin/python" - "$work/venv" <<'PY'
import importlib.util
import sys

for name in ("numpy", "scipy", "matplotlib", "tqdm"):
    assert importlib.util.find_spec(name) is None, f"the fresh venv should hold torch only, but has {name}"

import torch
from torch import nn

import torch_layerlr
from torch_layerlr.optim import DALS, LAMB, LARS, DepthScaledSGD, GrokfastAdamW, LayerwiseAdamW, LayerwiseSGD

assert torch_layerlr.__file__.startswith(sys.argv[1]), f"imported {torch_layerlr.__file__}, not the wheel"

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

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
    m = model()
    opt = make(m)
    before = [p.detach().clone() for p in m.parameters()]
    loss = nn.functional.cross_entropy(m(x), y)
    loss.backward()
    opt.step(loss=loss) if name == "DALS" else opt.step()
    moved = any(not torch.equal(b, p) for b, p in zip(before, m.parameters()))
    finite = all(bool(torch.isfinite(p).all()) for p in m.parameters())
    assert moved and finite, f"{name}: moved={moved} finite={finite}"
    print(f"{name}: one step, loss {loss.item():.4f}")

try:
    DepthScaledSGD(model().parameters(), 1.0, 2.0)
except ImportError as exc:
    assert "torch_layerlr[theory]" in str(exc), exc
else:
    raise AssertionError("DepthScaledSGD's closed form should ask for the theory extra without NumPy")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("numpy", "scipy", "matplotlib", "tqdm"))
assert not loaded, loaded
print(f"torch_layerlr {torch_layerlr.__version__} from the wheel, torch {torch.__version__}: every optimizer steps")
PY
