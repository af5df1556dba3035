"""Closed forms (plain NumPy/SciPy, float64, no kernels): deep scalar chains and residual chains
(:mod:`~torch_layerlr.theory.scalar_chain`), deep matrix linear networks (:mod:`~torch_layerlr.theory.matrix`), and
two-step layer balancing (:mod:`~torch_layerlr.theory.two_step`, imported as a module: ``theory.two_step``).
"""

from torch_layerlr.theory.matrix import (DataMoments, aligned_hessian_spectrum, aligned_sharpness, data_moments,
                                         data_sharpness, mode_sharpness, sharpness_bound)
from torch_layerlr.theory import two_step
from torch_layerlr.theory.scalar_chain import (ARCHS, agnostic_lr, alpha_at, balanced_weight, coefficient,
                                               max_stable_lr, plateau_duration, sharpness, time_to_reach)

__all__ = ["ARCHS", "DataMoments", "agnostic_lr", "aligned_hessian_spectrum", "aligned_sharpness", "alpha_at",
           "balanced_weight", "coefficient", "data_moments", "data_sharpness", "max_stable_lr", "mode_sharpness",
           "plateau_duration", "sharpness", "sharpness_bound", "time_to_reach", "two_step"]
