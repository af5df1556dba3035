"""Validation of the depth-scaling theory against autograd Hessians and gradient descent, and of two-step layer
balancing (:mod:`~torch_layerlr.validate.balancing`, check groups ``balance_*``) (``python -m torch_layerlr
validate``): :mod:`~torch_layerlr.validate.checks` (shared with the tests),
:mod:`~torch_layerlr.validate.figures` (matplotlib, imported only when figures are drawn) and
:mod:`~torch_layerlr.validate.report`."""

from torch_layerlr.validate.checks import CHECKS, record, run_all

__all__ = ["CHECKS", "record", "run_all"]
