// Deterministic per-tensor L2 norms on CUDA: one partial sum of squares per chunk (multi-tensor apply), then
// one block per tensor adds its partials in a fixed order (NOTE: [deterministic sums] in block_reduce.cuh).
// Squares are summed in the math type (float32 for float32/bfloat16/float16, float64 for float64) per thread,
// in float64 across threads and chunks; the result has the math type, like the CPU op's.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "c10_cuda.cuh"
#include "../engine/op_entry.h"
#include "block_reduce.cuh"
#include "multi_tensor_apply.cuh"
#include "tensor_groups.cuh"

namespace layerlr::cuda {
namespace {

template <typename scalar_t>
struct SumOfSquaresFunctor {
  using T = at::opmath_type<scalar_t>;

  __device__ __forceinline__ void operator()(const TensorListMetadata<1>& tl, double* partials) const {
    const ChunkInfo ch = chunk_info(tl);
    const scalar_t* x = static_cast<const scalar_t*>(tl.addresses[0][ch.slot]) + ch.offset;
    T acc = 0;
    if (ch.size % kILP == 0 && is_aligned(x)) {
      T r[kILP];
      for (int64_t v = threadIdx.x; v * kILP < ch.size; v += kBlockSize) {
        load_vector(r, x, v);
#pragma unroll
        for (int ii = 0; ii < kILP; ++ii) acc = acc + r[ii] * r[ii];
      }
    } else {
      for (int64_t i = threadIdx.x; i < ch.size; i += kBlockSize) {
        const T v = static_cast<T>(x[i]);
        acc = acc + v * v;
      }
    }
    // NOTE: [global chunk index] in multi_tensor_apply.cuh
    const double sum = block_sum<kBlockSize>(static_cast<double>(acc));
    if (threadIdx.x == 0) partials[ch.chunk] = sum;
  }
};

static_assert(sizeof(TensorGroup) + 32 <= kMaxKernelArgBytes, "NOTE: [kernel argument budget]");

template <typename out_t>
__global__ void __launch_bounds__(kFinishThreads)
    norms_finish_kernel(const TensorGroup group, const double* partials, out_t* out) {
  const int j = blockIdx.x;
  const double sum = sum_range<kFinishThreads>(partials, group.chunk_begin[j], group.chunk_begin[j + 1], 1, 0);
  if (threadIdx.x == 0) out[group.first + j] = static_cast<out_t>(::sqrt(sum));
}

at::Tensor tensor_norms(at::TensorList tensors) {
  check_tensor_norms_args(tensors);
  const int64_t n = static_cast<int64_t>(tensors.size());
  TORCH_CHECK_VALUE(n > 0, "tensor_norms (CUDA): no tensors");
  const at::Device device = tensors[0].device();
  TORCH_CHECK_VALUE(device.is_cuda(), "tensor_norms (CUDA): tensors[0] is on ", device);
  for (int64_t t = 0; t < n; ++t) {
    TORCH_CHECK_VALUE(tensors[t].device() == device, "tensors[", t, "] is on ", tensors[t].device(),
                      " but tensors[0] is on ", device, ": one call takes tensors on one device");
  }
  const c10::cuda::CUDAGuard guard(device);
  const at::ScalarType dtype = tensors[0].scalar_type();
  at::Tensor out = at::empty({n}, tensors[0].options().dtype(at::toOpMathType(dtype)));

  // The sum of squares does not care about the order of the elements: any dense layout is read as it is.
  std::vector<at::Tensor> dense(n);
  for (int64_t t = 0; t < n; ++t)
    dense[t] = tensors[t].is_non_overlapping_and_dense() ? tensors[t] : tensors[t].contiguous();
  const std::vector<int64_t> chunk_begin = chunk_offsets(dense, 1);
  at::Tensor partials = at::empty({chunk_begin[n]}, out.options().dtype(at::kDouble));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "layerlr_tensor_norms_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    multi_tensor_apply<1>(dense, SumOfSquaresFunctor<scalar_t>{}, partials.data_ptr<double>());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    for (const TensorGroup& g : tensor_groups(n, {}, chunk_begin)) {
      norms_finish_kernel<T><<<g.count, kFinishThreads, 0, stream>>>(g, partials.data_ptr<double>(),
                                                                      out.data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

}  // namespace
}  // namespace layerlr::cuda

TORCH_LIBRARY_IMPL(layerlr, CUDA, m) {
  m.impl("tensor_norms", &layerlr::cuda::tensor_norms);
}
