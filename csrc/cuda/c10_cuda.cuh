// The c10 CUDA headers the backend uses (streams, device guard, launch checks). Include them through this
// file only.
//
// NOTE: [compiling against a CPU-only torch]
// .ci/run compiles every .cu file with nvcc even where torch has no CUDA (compile only, nothing is linked).
// A CPU-only wheel ships the c10/cuda headers but not the header that CMake generates for them,
// c10/cuda/impl/cuda_cmake_macros.h, which only defines C10_CUDA_BUILD_SHARED_LIBS, a macro that matters on
// Windows alone. Where it is missing, CUDAMacros.h is told not to look for it; with a CUDA torch nothing
// changes.
#pragma once

#if !defined(C10_CUDA_NO_CMAKE_CONFIGURE_FILE) && !__has_include(<c10/cuda/impl/cuda_cmake_macros.h>)
#define C10_CUDA_NO_CMAKE_CONFIGURE_FILE
#endif

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
