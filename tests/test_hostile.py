"""The hostile catalogue (tests/hostile/): op-level abuse, crafted checkpoints for every optimizer, failing steps,
edited state, duplicates and the autograd contract. Each family runs in a child process, so a crash is counted
as a failed case instead of ending the test run; ``python -m hostile --table`` (from tests/) prints the table."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hostile.__main__ import families, run_in_subprocess


@pytest.mark.parametrize("family", families())
def test_hostile_family(family):
    results, code, stderr = run_in_subprocess(family)
    bad = [f"{r['outcome']}: {r['case']}: {r['detail']}" for r in results if r["outcome"] not in ("refused", "ok")]
    assert not bad, "\n".join(bad) + ("\n" + stderr[-3000:] if stderr else "")
    assert code == 0, f"the {family!r} process exited with {code}:\n{stderr[-3000:]}"
    assert results, f"no cases ran for {family!r}"


@pytest.mark.skipif(os.environ.get("LAYERLR_EXPECT_SANITIZER") != "1", reason="only under make asan-test")
def test_sanitizer_build_is_loaded():
    """make asan-test must run the instrumented extension, not the in-place one."""
    import torch_layerlr._C as ext

    assert os.path.join("build", "asan") in ext.__file__
    with open("/proc/self/maps") as maps:
        assert "libasan" in maps.read()
    # and so do the children that run the hostile families (started from tests/ as run_in_subprocess does)
    child = subprocess.run([sys.executable, "-c", "import torch_layerlr._C as e; print(e.__file__)"],
                           cwd=os.path.dirname(os.path.abspath(__file__)), capture_output=True, text=True, check=True)
    assert os.path.join("build", "asan") in child.stdout
