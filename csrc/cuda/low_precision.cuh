// The CUDA loops of low-precision state (NOTE: [state precision] in engine/state_precision.h): the CPU's
// BlockKernel (cpu/low_precision.h) as a multi-tensor-apply functor. Each block of kQuantBlock elements of a
// tensor is decoded into registers, the recipe's element math runs on them unchanged, and what the pass wrote is
// encoded back, in the same pass over memory. Included by fused_step.cu only.
#pragma once

#include <c10/util/Exception.h>
#include <math_constants.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "../engine/coef.h"
#include "../engine/dense_views.h"
#include "../engine/quant_map.h"
#include "../engine/state_precision.h"
#include "../engine/step_args.h"
#include "block_reduce.cuh"
#include "c10_cuda.cuh"
#include "device_values.cuh"
#include "multi_tensor_apply.cuh"

namespace layerlr::cuda {

// NOTE: [low-precision rows]
// A low-precision launch walks kLowDepth lists per tensor: the kDepth lists of engine/dense_views.h (the state
// lists hold bfloat16 values or uint8 codes), then the float32 absmax of each state list (int8 only; absent
// rows are nullptr). The absmax pointers travel in the launch's metadata like the others, so a launch needs no
// host-to-device copy and stays capturable in a CUDA graph.
constexpr int kFilterAbsmaxIdx = kDepth, kLowDepth = kDepth + 3;
constexpr int kStateSlots = 3;  // filter, exp_avg, exp_avg_sq: row kFilterIdx + k, absmax row kFilterAbsmaxIdx + k
constexpr int kExpAvgSqSlot = kExpAvgSqIdx - kFilterIdx;

// NOTE: [one warp per absmax block]
// A block of kQuantBlock elements is one warp's: lane l holds elements l, l + 32, ... (kPerLane of them), so
// every load and store of the warp is coalesced and the block's absmax is a warp reduction in registers, with no
// shared memory and no block-wide barrier. The warps of a CUDA block take the absmax blocks of its chunk in
// turn. An absmax block never straddles two chunks: chunks start at multiples of kChunkSize.
constexpr int kPerLane = static_cast<int>(kQuantBlock) / 32;
constexpr int kWarpsPerBlock = kBlockSize / 32;
static_assert(kQuantBlock % 32 == 0 && kBlockSize % 32 == 0, "NOTE: [one warp per absmax block]");
static_assert(kChunkSize % kQuantBlock == 0, "an absmax block must not straddle two chunks");

// NOTE: [quantization maps on the device]
// The two maps of quant_map.h (3 KB together) live in global memory, read through the caches: too large for
// kernel arguments, and constant memory would serialize a warp whose lanes read different codes. They are copied
// from the host's maps once per device, before the first int8 step there; that copy waits for the device
// once, and cannot happen while the stream is captured into a CUDA graph (a graph is captured after a warm-up
// step, which uploads them).
static __device__ QuantMap device_quant_maps[2];  // [0] signed, [1] unsigned

__device__ __forceinline__ const QuantMap& slot_map(int slot) { return device_quant_maps[slot == kExpAvgSqSlot]; }

inline void upload_quant_maps(c10::DeviceIndex device, cudaStream_t stream) {
  static std::mutex mutex;
  static std::vector<bool> uploaded;
  const std::lock_guard<std::mutex> lock(mutex);
  const size_t d = static_cast<size_t>(device);
  if (d < uploaded.size() && uploaded[d]) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  TORCH_CHECK(capture == cudaStreamCaptureStatusNone,
              "fused_step_ (CUDA): the first int8 step on a device uploads the quantization maps and cannot be "
              "captured in a CUDA graph; run one step before capturing");
  for (int k = 0; k < 2; ++k) {
    C10_CUDA_CHECK(cudaMemcpyToSymbolAsync(device_quant_maps, &quant_map(k == 0), sizeof(QuantMap),
                                           k * sizeof(QuantMap), cudaMemcpyHostToDevice, stream));
  }
  C10_CUDA_CHECK(cudaStreamSynchronize(stream));  // complete before any other stream's kernels read them
  if (uploaded.size() <= d) uploaded.resize(d + 1, false);
  uploaded[d] = true;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

// One recipe shape and pass over low-precision state. Math is fused_step.cu's FusedStepFunctor of the same shape
// and pass: its reads()/writes() say which rows this pass loads and stores, its element() is the math.
// keys: per tensor, the rounding key of each state slot (bf16; NOTE: [stochastic rounding]), written by the
// coefficient kernel because they depend on the step, which lives on the device.
template <typename Math>
struct LowPrecisionFunctor {
  using scalar_t = typename Math::scalar;
  using T = typename Math::T;

  __device__ __forceinline__ void operator()(const TensorListMetadata<kLowDepth>& tl, const Coef<T>* coefs,
                                             const DeviceValues found_inf, double* partials, const bool int8,
                                             const uint64_t* keys) const {
    if (found_inf.defined() && found_inf[0] != 0.0) return;  // uniform over the block: no thread reaches block_sum
    const ChunkInfo ch = chunk_info(tl);
    const Coef<T> c = coefs[ch.tensor];
    scalar_t* param = static_cast<scalar_t*>(tl.addresses[kParamIdx][ch.slot]) + ch.offset;
    scalar_t* grad = static_cast<scalar_t*>(tl.addresses[kGradIdx][ch.slot]) + ch.offset;
    bool load[kStateSlots], store[kStateSlots];
#pragma unroll
    for (int k = 0; k < kStateSlots; ++k) {
      load[k] = Math::reads(kFilterIdx + k);
      store[k] = Math::writes(kFilterIdx + k) && (k != 0 || c.update_filter);
    }
    const int lane = threadIdx.x % 32;

    T r[kDepth][kPerLane] = {};
    T sq_p = 0, sq_u = 0;
    for (int base = (threadIdx.x / 32) * static_cast<int>(kQuantBlock); base < ch.size;
         base += kWarpsPerBlock * static_cast<int>(kQuantBlock)) {
      const int len = min(static_cast<int>(kQuantBlock), ch.size - base);
      const int64_t block = (ch.offset + base) / kQuantBlock;  // the absmax index in the tensor
#pragma unroll
      for (int k = 0; k < kStateSlots; ++k) {
        if (!load[k]) continue;
        const void* state = tl.addresses[kFilterIdx + k][ch.slot];
        const float* absmaxes = static_cast<const float*>(tl.addresses[kFilterAbsmaxIdx + k][ch.slot]);
        const float absmax = int8 ? absmaxes[block] : 0.0f;
#pragma unroll
        for (int ii = 0; ii < kPerLane; ++ii) {
          const int i = lane + 32 * ii;
          if (i >= len) continue;
          const int64_t e = ch.offset + base + i;
          // cpu/state_codec.h: decode_int8, decode_bf16 (float64 math goes through float, as there)
          const float x = int8 ? quant_decode(slot_map(k), static_cast<const uint8_t*>(state)[e]) * absmax
                               : bf16_bits_to_float(static_cast<const uint16_t*>(state)[e]);
          r[kFilterIdx + k][ii] = static_cast<T>(x);
        }
      }
#pragma unroll
      for (int ii = 0; ii < kPerLane; ++ii) {
        const int i = base + lane + 32 * ii;
        if (i >= ch.size) continue;
        r[kParamIdx][ii] = static_cast<T>(param[i]);
        r[kGradIdx][ii] = static_cast<T>(grad[i]);
        Math::element(r, ii, c, sq_p, sq_u);
        if constexpr (Math::writes(kParamIdx)) param[i] = static_cast<scalar_t>(r[kParamIdx][ii]);
        if constexpr (Math::writes(kGradIdx)) grad[i] = static_cast<scalar_t>(r[kGradIdx][ii]);
      }
#pragma unroll
      for (int k = 0; k < kStateSlots; ++k) {
        if (!store[k]) continue;
        float x[kPerLane];
        float m = 0.0f;
        bool nan = false;
#pragma unroll
        for (int ii = 0; ii < kPerLane; ++ii) {
          x[ii] = static_cast<float>(r[kFilterIdx + k][ii]);
          // the CPU's AbsMax (csrc/cpu/codec_absmax.h): the max over the non-NaN values (fmaxf ignores a NaN),
          // NaN when the block holds one
          if (lane + 32 * ii < len) {
            m = fmaxf(m, fabsf(x[ii]));
            nan = nan || isnan(x[ii]);
          }
        }
        void* state = tl.addresses[kFilterIdx + k][ch.slot];
        if (int8) {
          // every lane of the warp is here (the loop bounds are uniform over the warp): NOTE: [one warp per
          // absmax block]
          const float absmax = __any_sync(0xffffffffu, nan) ? CUDART_NAN_F : warp_max(m);
          const float inv = quant_inverse_scale(absmax);
#pragma unroll
          for (int ii = 0; ii < kPerLane; ++ii) {
            const int i = lane + 32 * ii;
            if (i < len) {
              static_cast<uint8_t*>(state)[ch.offset + base + i] =
                  quant_encode(k != kExpAvgSqSlot, slot_map(k), x[ii] * inv);
            }
          }
          if (lane == 0) static_cast<float*>(tl.addresses[kFilterAbsmaxIdx + k][ch.slot])[block] = absmax;
        } else {
          const uint64_t key = keys[kStateSlots * ch.tensor + k];
#pragma unroll
          for (int ii = 0; ii < kPerLane; ++ii) {
            const int i = lane + 32 * ii;
            if (i >= len) continue;
            const int64_t e = ch.offset + base + i;
            static_cast<uint16_t*>(state)[e] = bf16_round_stochastic(x[ii], rounding_bits(key, e));
          }
        }
      }
    }

    if constexpr (Math::kNorms) {
      // NOTE: [global chunk index] in multi_tensor_apply.cuh: one pair of partials per chunk, no atomics.
      const double block_p = block_sum<kBlockSize>(static_cast<double>(sq_p));
      const double block_u = block_sum<kBlockSize>(static_cast<double>(sq_u));
      if (threadIdx.x == 0) {
        partials[2 * ch.chunk] = block_p;
        partials[2 * ch.chunk + 1] = block_u;
      }
    }
  }
};

// The rows of a low-precision launch (NOTE: [low-precision rows]) from the kDepth dense views and the absmax
// lists (empty for bf16 state, and for a list the recipe does not keep).
inline std::vector<at::Tensor> low_precision_rows(const std::vector<at::Tensor>& views, const StepArgs& a) {
  const at::TensorList scales[kStateSlots] = {a.filter_scales, a.exp_avg_scales, a.exp_avg_sq_scales};
  const size_t n = a.params.size();
  std::vector<at::Tensor> rows(n * kLowDepth);
  for (size_t t = 0; t < n; ++t) {
    for (int d = 0; d < kDepth; ++d) rows[t * kLowDepth + d] = views[t * kDepth + d];
    for (int k = 0; k < kStateSlots; ++k)
      if (!scales[k].empty()) rows[t * kLowDepth + kFilterAbsmaxIdx + k] = scales[k][t];
  }
  return rows;
}

}  // namespace layerlr::cuda
