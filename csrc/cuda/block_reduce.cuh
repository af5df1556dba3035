// A deterministic block-wide sum: the same inputs give the same bits on every run, whatever the scheduling.
//
// NOTE: [deterministic sums]
// No atomics anywhere: each warp adds its lanes in a fixed tree (shuffles), then warp 0 adds the warp sums in a
// fixed tree. The order depends only on the block size, a compile-time constant. Per-chunk partials from
// block_sum, added per tensor by one block in a fixed order (sum_range), give norms that are bitwise
// reproducible from run to run (ATen's lpnorm_cleanup and apex's multi_tensor_l2norm do the same).
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace layerlr::cuda {

// The sum of v over the block, valid in thread 0. Every thread of the block must call it (it synchronizes),
// and the block must have exactly kThreads threads, a multiple of 32.
template <int kThreads>
__device__ __forceinline__ double block_sum(double v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block_sum: whole warps, at most 1024 threads");
  constexpr int kWarps = kThreads / 32;
  __shared__ double warp_sums[kWarps];
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // a previous call's warp 0 has read warp_sums
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? warp_sums[lane] : 0.0;
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// The sum of x[k * stride + component] for k in [begin, end), by one block of kThreads threads; valid in
// thread 0. Deterministic (NOTE: [deterministic sums]).
template <int kThreads>
__device__ __forceinline__ double sum_range(const double* x, int64_t begin, int64_t end, int stride, int component) {
  double acc = 0.0;
  for (int64_t k = begin + threadIdx.x; k < end; k += kThreads) acc += x[k * stride + component];
  return block_sum<kThreads>(acc);
}

}  // namespace layerlr::cuda
