"""Models for validation and benchmarks: deep scalar / residual / matrix linear networks, and the nets of
two-step layer balancing (:mod:`~torch_layerlr.models.balancing`)."""

from torch_layerlr.models.balancing import (FixedHeadLinear, ThreeLayerLinear, TwoLayerLinear, haar_orthonormal,
                                            two_layer_target, unit_target, whitened_inputs)
from torch_layerlr.models.linear import (DeepLinear, ResidualChain, ScalarChain, balanced_factors,
                                         balanced_weight)

__all__ = ["DeepLinear", "FixedHeadLinear", "ResidualChain", "ScalarChain", "ThreeLayerLinear", "TwoLayerLinear",
           "balanced_factors", "balanced_weight", "haar_orthonormal", "two_layer_target", "unit_target",
           "whitened_inputs"]
