#!/usr/bin/env bash
# The test suite against the AddressSanitizer + UndefinedBehaviorSanitizer build of the extension (make asan-test):
# any report aborts the run, so a green job means no report.
set -euo pipefail
make asan-test
