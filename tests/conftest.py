"""pytest configuration shared by the test files of this directory.

OpenMP (torch's intra-op pool and the fused engine's at::parallel_for) spins while it waits at the end of
each parallel region by default. On a busy machine (the 2-core CI box running other jobs) a spinning thread
waits for a descheduled one for a whole time slice, and the suite runs 3-4 times slower. Passive waiting
(threads sleep instead) changes no result, only that. It must be set before torch loads libgomp, i.e. here,
before any test module imports torch; a value set by the caller wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_configure(config):
    # `pytest -m distributed` runs the multi-process torch.distributed tests alone (gloo on 127.0.0.1).
    config.addinivalue_line("markers", "distributed: multi-process torch.distributed tests (gloo, loopback only)")
