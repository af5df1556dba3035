"""torch_layerlr: layer-wise learning-rate optimizers on one fused C++ engine."""

import torch  # noqa: F401  (loads libtorch before the extension)

from torch_layerlr import _C  # noqa: F401  (loads the extension, which registers torch.ops.layerlr)
from torch_layerlr import _ops, layers, optim, schedules  # noqa: F401
from torch_layerlr._cmake import cmake_prefix_path  # noqa: F401  (the C++ package, after `make cpp`)

__version__ = "0.1.0"
