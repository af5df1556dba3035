// Multi-tensor apply: one kernel launch over a list of tensors, one block per chunk of kChunkSize elements, in
// the style of ATen's native/cuda/MultiTensorApply.cuh (and of apex before it).
#pragma once

#include "c10_cuda.cuh"

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <climits>
#include <cstdint>
#include <memory>
#include <vector>

namespace layerlr::cuda {

static constexpr int64_t kChunkSize = 65536;
static constexpr int kILP = 4;
static constexpr int kBlockSize = 512;

// NOTE: [kernel argument budget]
// The metadata travels by value, as a kernel argument: no host-to-device copy, no pinned buffer, nothing for
// a CUDA graph to capture but the launch. Kernel arguments are limited to 4 KB (32 KB from CUDA 12.1 with a
// recent driver, which ATen checks at run time; we stay within 4 KB everywhere). So one launch covers at most
// kMaxBlocks chunks and kDepthToMaxTensors[depth - 1] tensors, ATen's numbers for a list of tensors with a
// scalar each: here the extra 4 bytes per tensor are its global index (NOTE: [global tensor index]). Depths 6 to
// 8 (low-precision state and its absmax lists) keep the same margin below 4 KB.
// multi_tensor_apply static_asserts the sum of its arguments against kMaxKernelArgBytes.
static constexpr size_t kMaxKernelArgBytes = 4096;
static constexpr int kMaxBlocks = 320;
static constexpr int kDepthToMaxTensors[8] = {96, 64, 48, 36, 30, 26, 23, 20};

// NOTE: [global tensor index]
// A launch sees the tensors it covers in slots 0, 1, ...; a tensor split between two launches sits in the
// last slot of the first and slot 0 of the next, and zero-size tensors take no slot at all. Per-tensor arrays
// (coefficients, norms, trust ratios) are indexed by the tensor's position in the op's lists, which each
// slot carries in tensor_index, so they are the same arrays whatever the launches look like.
//
// NOTE: [global chunk index]
// Chunks are numbered in launch order over the whole list: tensor 0's chunks, then tensor 1's, ... (zero-
// size tensors have none). Block b of a launch handles chunk first_chunk + b, so a kernel that writes one
// partial result per chunk writes it at that index, and tensor t's partials are the contiguous range
// [chunk_begin[t], chunk_begin[t + 1]) of chunk_offsets(). This is what makes the reductions deterministic
// without atomics: a per-tensor finish adds each tensor's partials in a fixed order.
template <int depth>
struct TensorListMetadata {
  static constexpr int kMaxTensors = kDepthToMaxTensors[depth - 1];
  void* addresses[depth][kMaxTensors];  // nullptr where the list is absent
  int64_t numel_for_tensor[kMaxTensors];
  int tensor_index[kMaxTensors];  // the tensor's position in the op's lists
  unsigned char block_to_tensor[kMaxBlocks];
  int block_to_chunk[kMaxBlocks];
  int64_t first_chunk;  // global index of the chunk of block 0
};

// The chunk a block works on.
struct ChunkInfo {
  int slot;        // in the launch's metadata
  int64_t tensor;  // global tensor index
  int64_t offset;  // first element of the chunk in its tensor (int64: tensors may exceed 2^31 elements)
  int size;        // elements in the chunk, at most kChunkSize
  int64_t chunk;   // global chunk index
};

template <int depth>
__device__ __forceinline__ ChunkInfo chunk_info(const TensorListMetadata<depth>& tl) {
  const int slot = tl.block_to_tensor[blockIdx.x];
  const int64_t offset = static_cast<int64_t>(tl.block_to_chunk[blockIdx.x]) * kChunkSize;
  const int64_t rest = tl.numel_for_tensor[slot] - offset;
  return {slot, tl.tensor_index[slot], offset, static_cast<int>(rest < kChunkSize ? rest : kChunkSize),
          tl.first_chunk + blockIdx.x};
}

// Vectorized access: kILP elements in one load (16 bytes for float32, 8 for bfloat16/float16, 32 for float64
// as two 16-byte loads). Only for chunks whose size is a multiple of kILP and whose pointers are all aligned
// to kILP elements; every other chunk takes the element-wise path.
template <typename scalar_t, int N>
struct alignas(sizeof(scalar_t) * N) AlignedVector {
  scalar_t val[N];
};

template <typename scalar_t>
__device__ __forceinline__ bool is_aligned(const scalar_t* p) {
  return reinterpret_cast<uintptr_t>(p) % (kILP * sizeof(scalar_t)) == 0;
}

// dst[ii] = base[v*kILP + ii] for ii < kILP, converted to the math type T.
template <typename T, typename scalar_t>
__device__ __forceinline__ void load_vector(T (&dst)[kILP], const scalar_t* base, int64_t v) {
  using LT = AlignedVector<scalar_t, kILP>;
  const LT x = reinterpret_cast<const LT*>(base)[v];
#pragma unroll
  for (int ii = 0; ii < kILP; ++ii) dst[ii] = static_cast<T>(x.val[ii]);
}

template <typename T, typename scalar_t>
__device__ __forceinline__ void store_vector(scalar_t* base, int64_t v, const T (&src)[kILP]) {
  using LT = AlignedVector<scalar_t, kILP>;
  LT x;
#pragma unroll
  for (int ii = 0; ii < kILP; ++ii) x.val[ii] = static_cast<scalar_t>(src[ii]);
  reinterpret_cast<LT*>(base)[v] = x;
}

template <typename Meta, typename Functor, typename... Args>
C10_LAUNCH_BOUNDS_1(kBlockSize)
__global__ void multi_tensor_apply_kernel(Meta tl, Functor functor, Args... args) {
  functor(tl, args...);
}

// First global chunk index of each tensor of rows (laid out as in multi_tensor_apply), and the total at [n].
inline std::vector<int64_t> chunk_offsets(const std::vector<at::Tensor>& rows, int depth) {
  const int64_t n = static_cast<int64_t>(rows.size()) / depth;
  std::vector<int64_t> begin(n + 1, 0);
  for (int64_t t = 0; t < n; ++t) begin[t + 1] = begin[t] + (rows[t * depth].numel() + kChunkSize - 1) / kChunkSize;
  return begin;
}

template <typename Meta, typename Functor, typename... Args>
void launch_chunks(Meta& meta, int blocks, const Functor& functor, const Args&... args) {
  multi_tensor_apply_kernel<<<blocks, kBlockSize, 0, c10::cuda::getCurrentCUDAStream()>>>(meta, functor, args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  meta.first_chunk += blocks;
}

// Runs functor(tl, args...) once per chunk of every tensor. rows[t * depth + d] is the tensor of list d at
// position t (undefined where list d is absent); rows[t * depth] (list 0) gives the element count, and every
// defined row of position t must have it, dense and with the same strides (the caller's job). Launches on
// the current stream.
template <int depth, typename Functor, typename... Args>
void multi_tensor_apply(const std::vector<at::Tensor>& rows, const Functor& functor, const Args&... args) {
  using Meta = TensorListMetadata<depth>;
  static_assert(sizeof(Meta) + sizeof(Functor) + (sizeof(Args) + ... + 0) + 8 * (2 + sizeof...(Args)) <=
                    kMaxKernelArgBytes,
                "multi_tensor_apply: the kernel arguments exceed 4 KB (NOTE: [kernel argument budget])");
  const int64_t n = static_cast<int64_t>(rows.size()) / depth;
  auto meta = std::make_unique<Meta>();
  meta->first_chunk = 0;
  int loc_tensor = 0, loc_block = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t numel = rows[t * depth].numel();
    if (numel == 0) continue;
    TORCH_CHECK(numel / kChunkSize < INT_MAX, "multi_tensor_apply: a tensor of ", numel, " elements is too large");
    for (int d = 0; d < depth; ++d) {
      const at::Tensor& x = rows[t * depth + d];
      meta->addresses[d][loc_tensor] = x.defined() ? x.data_ptr() : nullptr;
    }
    meta->numel_for_tensor[loc_tensor] = numel;
    meta->tensor_index[loc_tensor] = static_cast<int>(t);
    ++loc_tensor;

    // NOTE: [chunking territory] (ATen's name): a launch goes out when the block table is full, or when the
    // tensor table is full and its last tensor has all its chunks in. A tensor cut by a launch moves to slot 0
    // of the next one, which goes on with its next chunk.
    const int64_t chunks = (numel + kChunkSize - 1) / kChunkSize;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      meta->block_to_tensor[loc_block] = static_cast<unsigned char>(loc_tensor - 1);
      meta->block_to_chunk[loc_block] = static_cast<int>(chunk);
      ++loc_block;
      const bool last_chunk = chunk == chunks - 1;
      if (loc_block == kMaxBlocks || (loc_tensor == Meta::kMaxTensors && last_chunk)) {
        launch_chunks(*meta, loc_block, functor, args...);
        loc_block = 0;
        if (last_chunk) {
          loc_tensor = 0;
        } else {
          for (int d = 0; d < depth; ++d) meta->addresses[d][0] = meta->addresses[d][loc_tensor - 1];
          meta->numel_for_tensor[0] = meta->numel_for_tensor[loc_tensor - 1];
          meta->tensor_index[0] = meta->tensor_index[loc_tensor - 1];
          loc_tensor = 1;
        }
      }
    }
  }
  // note: [finishing what we started]
  if (loc_block > 0) launch_chunks(*meta, loc_block, functor, args...);
}

}  // namespace layerlr::cuda
