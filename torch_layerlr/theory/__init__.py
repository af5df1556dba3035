"""Closed forms (plain NumPy/SciPy, float64, no kernels): deep scalar chains and residual chains
(:mod:`~torch_layerlr.theory.scalar_chain`), deep matrix linear networks (:mod:`~torch_layerlr.theory.matrix`),
two-step layer balancing (:mod:`~torch_layerlr.theory.two_step`, imported as a module: ``theory.two_step``), and
multi-pathway deep linear networks (:mod:`~torch_layerlr.theory.multipath`: its functions below, and its
``mode_sharpness``, which would clash with the matrix one, as ``theory.multipath.mode_sharpness``).
"""

from torch_layerlr.theory.matrix import (DataMoments, aligned_hessian_spectrum, aligned_sharpness, data_moments,
                                         data_sharpness, mode_sharpness, sharpness_bound)
from torch_layerlr.theory import multipath, two_step
from torch_layerlr.theory.multipath import (Windows, flattest_split, gamma_wcr, predicted_split, sharpness_ratio,
                                            single_path_sharpness, step_size_windows)
from torch_layerlr.theory.scalar_chain import (ARCHS, agnostic_lr, alpha_at, balanced_weight, coefficient,
                                               max_stable_lr, plateau_duration, sharpness, time_to_reach)

__all__ = ["ARCHS", "DataMoments", "Windows", "agnostic_lr", "aligned_hessian_spectrum", "aligned_sharpness",
           "alpha_at", "balanced_weight", "coefficient", "data_moments", "data_sharpness", "flattest_split",
           "gamma_wcr", "max_stable_lr", "mode_sharpness", "multipath", "plateau_duration", "predicted_split", "sharpness", "sharpness_bound",
           "sharpness_ratio", "single_path_sharpness", "step_size_windows", "time_to_reach", "two_step"]
