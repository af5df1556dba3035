#!/usr/bin/env bash
# The C++ API: cmake and GoogleTest from Debian when missing, the library built and installed (make cpp), its
# GoogleTest suite (ctest), the example's one-epoch Fashion-MNIST run, and an outside CMake project that finds the
# installed package. `make test` has already built the tree, so the build steps here are incremental.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash cmake/install-build-deps.sh
make cpp
ctest --test-dir build/cpp --output-on-failure -j2
make cpp-example  # Fashion-MNIST from Debian's dataset-fashion-mnist, which .ci/run installs
.venv/bin/python -m pytest -q tests/test_cpp_package.py
