"""Models for validation and benchmarks: deep scalar / residual / matrix linear networks."""

from torch_layerlr.models.linear import (DeepLinear, ResidualChain, ScalarChain, balanced_factors,
                                         balanced_weight)

__all__ = ["DeepLinear", "ResidualChain", "ScalarChain", "balanced_factors", "balanced_weight"]
