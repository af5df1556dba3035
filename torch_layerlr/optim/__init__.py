"""Layer-wise learning-rate optimizers, each a ``torch.optim.Optimizer`` over the fused engine."""

from torch_layerlr.optim._base import FusedOptimizer
from torch_layerlr.optim.dals import DALS
from torch_layerlr.optim.depth_scaled import DepthScaledSGD
from torch_layerlr.optim.grokfast import GrokfastAdamW
from torch_layerlr.optim.lamb import LAMB
from torch_layerlr.optim.lars import LARS
from torch_layerlr.optim.layerwise import LayerwiseAdamW, LayerwiseSGD
from torch_layerlr.optim.sharpness_rate import SharpnessLR

__all__ = ["DALS", "DepthScaledSGD", "FusedOptimizer", "GrokfastAdamW", "LAMB", "LARS", "LayerwiseAdamW",
           "LayerwiseSGD", "SharpnessLR"]
