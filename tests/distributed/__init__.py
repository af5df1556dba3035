"""Helpers of tests/test_distributed*.py: starting process groups on 127.0.0.1 and the per-rank workers."""
