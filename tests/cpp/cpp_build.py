"""The C++ build the C++ tests need: ``make cpp`` (configure, build, install; incremental, so a built tree costs a
few seconds), or a skip with the reason when cmake is not installed (CI installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "cpp"
INSTALL = ROOT / "install"


def build_cpp() -> Path:
    """Run ``make cpp`` once and return the build directory (skip if cmake is absent, fail if the build fails)."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed (Debian: apt-get install cmake): the C++ API is not built")
    done = subprocess.run(["make", "-s", "cpp"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"make cpp failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return BUILD
