"""Builds torch_layerlr._C from csrc/: C++ always, CUDA sources whenever nvcc is found.

NOTE: CUDA is gated on nvcc (CUDA_HOME) and TORCH_CUDA_ARCH_LIST, never on torch.cuda.is_available(), so a
machine without a GPU still compiles every .cu file. The .cu files are linked only when torch itself has
CUDA; otherwise `.ci/run` compiles them standalone (compile only) so they cannot rot unseen.
"""

import glob
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("DEBUG", "0") == "1"


def sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern), recursive=True))


def host_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return {"avx2", "fma", "f16c"} <= set(flags)


# NOTE: [CPU vector width]
# at::vec::Vectorized picks its width from CPU_CAPABILITY macros, as in ATen's per-ISA kernel builds. The
# extension is built on the machine that runs it (`make build`), so it targets AVX2 when that machine has
# it, and the portable default otherwise. LAYERLR_CPU_ISA=default|avx2 overrides the detection.
isa = os.environ.get("LAYERLR_CPU_ISA") or ("avx2" if host_has_avx2() else "default")
if isa not in ("default", "avx2"):
    raise SystemExit(f"LAYERLR_CPU_ISA must be 'default' or 'avx2', got {isa!r}")
isa_flags = ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"] if isa == "avx2" else []

cxx_flags = ["-O0", "-g"] if DEBUG else ["-O3"]
# NOTE: [sanitizer build] LAYERLR_SANITIZE=1 (make asan-test) builds with AddressSanitizer and
# UndefinedBehaviorSanitizer into a separate build directory; any report aborts the process.
SANITIZE = os.environ.get("LAYERLR_SANITIZE", "0") == "1"
sanitize_flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
if SANITIZE:
    cxx_flags = ["-O3", "-g"] + sanitize_flags  # the release optimizations: the same floating-point code
# NOTE: at::parallel_for is a header template around `#pragma omp parallel`: without -fopenmp it runs on one
# thread. The extension then shares libtorch's libgomp (same soname, already loaded by `import torch`).
cxx_flags += ["-Wno-unknown-pragmas", "-fopenmp"] + isa_flags
link_flags = ["-fopenmp"] + (sanitize_flags if SANITIZE else [])
# csrc/api/ is the LibTorch C++ optimizer API (CMakeLists.txt): the Python classes do not need it.
cpp_sources = [s for s in sources("csrc/**/*.cpp") if not s.startswith(os.path.join("csrc", "api", ""))]
cuda_sources = sources("csrc/**/*.cu")
with_cuda = bool(cuda_sources) and CUDA_HOME is not None and torch.version.cuda is not None

if with_cuda:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    ext = CUDAExtension(
        "torch_layerlr._C",
        cpp_sources + cuda_sources,
        include_dirs=[os.path.join(HERE, "csrc")],
        define_macros=[("LAYERLR_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++20", "--expt-relaxed-constexpr"]},
        extra_link_args=link_flags,
    )
else:
    ext = CppExtension(
        "torch_layerlr._C",
        cpp_sources,
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
    )

# Metadata, dependencies and the package list are in pyproject.toml; this call adds the extension.
setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension},
)
