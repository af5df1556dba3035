#!/usr/bin/env bash
# The Hugging Face Trainer and Lightning integration tests (tests/test_integrations.py skips them without the
# frameworks): install transformers, accelerate and lightning into the project venv, pinned, with torch held at
# torch==2.13.0 by a constraints file (none of them may bring another torch), then run the tests, which here
# fail instead of skipping when a framework does not import.
set -euo pipefail
cd "$(dirname "$0")/../.."
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0" > "$constraints"
.venv/bin/python -m pip install -q -c "$constraints" transformers==5.24.0 accelerate==1.15.0 lightning==2.6.6
.venv/bin/python -c "import torch; assert torch.__version__.split('+')[0] == '2.13.0', torch.__version__"
LAYERLR_REQUIRE_INTEGRATIONS=1 .venv/bin/python -m pytest -q -rs tests/test_integrations.py
