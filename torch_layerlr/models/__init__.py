"""Models for validation and benchmarks: deep scalar / residual / matrix linear networks, the nets of
two-step layer balancing (:mod:`~torch_layerlr.models.balancing`), the multi-pathway linear network
(:mod:`~torch_layerlr.models.multipath`), and the image classifiers of the training
comparisons (:mod:`~torch_layerlr.models.vision`)."""

from torch_layerlr.models.balancing import (FixedHeadLinear, ThreeLayerLinear, TwoLayerLinear, haar_orthonormal,
                                            two_layer_target, unit_target, whitened_inputs)
from torch_layerlr.models.linear import (DeepLinear, ResidualChain, ScalarChain, balanced_factors,
                                         balanced_weight)
from torch_layerlr.models.multipath import MultiPathLinear
from torch_layerlr.models.vision import MLP, ConvNet, DeepMLP, ResNet, build_model

__all__ = ["MLP", "ConvNet", "DeepMLP", "ResNet", "build_model", "DeepLinear", "FixedHeadLinear", "MultiPathLinear",
           "ResidualChain", "ScalarChain", "ThreeLayerLinear", "TwoLayerLinear",
           "balanced_factors", "balanced_weight", "haar_orthonormal", "two_layer_target", "unit_target",
           "whitened_inputs"]
