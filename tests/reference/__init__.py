"""Plain float64 reference optimizers (test oracles for torch_layerlr's fused optimizers).

Nothing here imports torch_layerlr: these classes are an independent, literal transcription of the
shared API spec (issue 2) and the research doc (sections A.3-A.6, B.1, C.1, C.3).
"""

from .optimizers import RefDALS, RefGrokfastAdamW, RefLAMB, RefLARS, RefLayerwiseAdamW, RefLayerwiseSGD

__all__ = [
    "RefLayerwiseSGD",
    "RefLayerwiseAdamW",
    "RefGrokfastAdamW",
    "RefLARS",
    "RefLAMB",
    "RefDALS",
]
