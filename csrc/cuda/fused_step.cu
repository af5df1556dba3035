// CUDA backend of the fused step: the per-tensor coefficients in a one-thread-per-tensor kernel, the element
// loops in multi-tensor-apply kernels, float32 math for float32/bfloat16/float16 params (float64 for float64).
//
// One step on the current stream, with no host sync (NOTE: [no host sync] in device_values.cuh):
//   coef_kernel          per tensor: Coef from lr, lr_mult, weight_decay, blend, trust, step, filter_coef,
//                        grad_scale (make_coef, the CPU's code); advances the step
//   FusedStepFunctor     one-pass recipes: the whole update
//   two-pass recipes (trust ratio on):
//   FusedStepFunctor     pass 1 (kNorms): filter and moments, one pair of squared-norm partials per chunk
//   trust_finish_kernel  per tensor: adds its partials in a fixed order, the ratio into its Coef (and out)
//   FusedStepFunctor     pass 2 (kUpdate): the update
// Low-precision state runs the same kernels with LowPrecisionFunctor around FusedStepFunctor's math
// (low_precision.cuh).
// Every kernel reads found_inf first and returns when it is set, so a step GradScaler skips changes nothing,
// steps included.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>
#include <torch/library.h>

#include <vector>

#include "c10_cuda.cuh"
#include "../engine/op_entry.h"
#include "../engine/dense_views.h"
#include "../engine/dispatch.h"
#include "../engine/step_math.h"
#include "block_reduce.cuh"
#include "device_values.cuh"
#include "low_precision.cuh"
#include "multi_tensor_apply.cuh"
#include "tensor_groups.cuh"

namespace layerlr::cuda {
namespace {

// The tensor lists (the rows of multi_tensor_apply) are indexed by kParamIdx... of engine/dense_views.h.

enum class Pass { kNorms, kUpdate };

// The step's device inputs (NOTE: [no host sync]). Absent optionals are undefined DeviceValues.
struct StepInputs {
  DeviceValues lr, lr_mult, weight_decay, blend, trust, filter_coef, grad_scale, found_inf;
  Kind step_kind;  // dtype of every step counter (TensorGroup::steps)
};

static_assert(sizeof(TensorGroup) + sizeof(StepInputs) + sizeof(Recipe) + sizeof(DeviceValues) + 80 <=
                  kMaxKernelArgBytes,
              "the per-tensor kernels' arguments exceed 4 KB (NOTE: [kernel argument budget])");

__device__ __forceinline__ bool skipped(const DeviceValues& found_inf) {
  return found_inf.defined() && found_inf[0] != 0.0;
}

// The CPU's per-tensor host loop (cpu/fused_step.cpp, run()) as one thread per tensor. keys (bf16 state only,
// else nullptr): the rounding key of each state slot, from the step (NOTE: [stochastic rounding]).
template <typename T>
__global__ void __launch_bounds__(kGroupSize)
    coef_kernel(const TensorGroup group, const StepInputs in, const Recipe r, Coef<T>* coefs, const bool advance,
                const uint64_t seed, uint64_t* keys) {
  const int j = threadIdx.x;
  if (j >= group.count || skipped(in.found_inf)) return;
  const int64_t t = group.first + j;
  TensorInputs x;
  x.lr = in.lr[t] * in.lr_mult[t];  // a one-element lr has stride 0 (vector_stride): every t reads it
  x.weight_decay = in.weight_decay[t];
  x.blend = in.blend[t];
  x.trust = in.trust[t] != 0.0;
  x.step = load_value(group.steps[j], in.step_kind) + 1.0;
  x.filter_alpha = in.filter_coef.defined() ? in.filter_coef[0] : 0.0;
  x.filter_gate = in.filter_coef.defined() ? in.filter_coef[1] : 1.0;
  x.grad_scale = in.grad_scale.defined() ? in.grad_scale[0] : 1.0;
  coefs[t] = make_coef<T>(r, x);
  if (keys != nullptr) {
    for (int k = 0; k < kStateSlots; ++k)
      keys[kStateSlots * t + k] = rounding_key(seed, static_cast<uint64_t>(x.step), t, k);
  }
  // Safe to advance now: nothing after this kernel reads the step, and each step has one thread. The norms call
  // of a split step leaves it to the update call (NOTE: [split trust step] in engine/step_args.h).
  if (advance) store_value(group.steps[j], in.step_kind, x.step);
}

// Per-tensor finish of a two-pass step: one block per tensor. The squared norms are the tensor's partials added
// in a fixed order, or (the update call of a split step) the given ones, sq_given [n, 2]; the norms call of a
// split step writes them to sq_out [n, 2] and stops there. Both pointers are uniform over the grid.
template <typename T>
__global__ void __launch_bounds__(kFinishThreads)
    trust_finish_kernel(const TensorGroup group, const StepInputs in, const Recipe r, const double* partials,
                        const double* sq_given, double* sq_out, Coef<T>* coefs, const DeviceValues ratios) {
  if (skipped(in.found_inf)) return;
  const int j = blockIdx.x;
  const int64_t t = group.first + j;
  const int64_t begin = group.chunk_begin[j], end = group.chunk_begin[j + 1];
  double sq_param = 0.0, sq_dir = 0.0;
  if (sq_given == nullptr) {
    sq_param = sum_range<kFinishThreads>(partials, begin, end, 2, 0);
    sq_dir = sum_range<kFinishThreads>(partials, begin, end, 2, 1);
  }
  if (threadIdx.x != 0) return;
  if (sq_given != nullptr) {
    sq_param = sq_given[2 * t];
    sq_dir = sq_given[2 * t + 1];
  }
  if (sq_out != nullptr) {
    sq_out[2 * t] = sq_param;
    sq_out[2 * t + 1] = sq_dir;
    return;
  }
  TensorInputs x{};
  x.trust = in.trust[t] != 0.0;
  x.weight_decay = in.weight_decay[t];
  const double ratio = trust_ratio(r, x, sq_param, sq_dir);
  coefs[t].ratio = static_cast<T>(ratio);
  coefs[t].update_filter = false;  // pass 1 advanced the filter
  if (ratios.defined()) ratios.store(t, ratio);
}

// One recipe shape and pass. The per-element math is step_math.h's, on a register tile r[list][kILP] (of
// kPerLane elements under LowPrecisionFunctor).
template <typename scalar_t, Pass kPass, bool kFilter, Moment kMoment, bool kBuffer, Trust kTrust>
struct FusedStepFunctor {
  using scalar = scalar_t;
  using T = at::opmath_type<scalar_t>;
  static constexpr bool kNorms = kPass == Pass::kNorms;
  static constexpr bool kAdam = kMoment == Moment::kAdam;
  // Pass 2 of an adam recipe with a trust ratio reads its direction from the grad buffer and nothing else but
  // the param (NOTE: [adam direction in the grad buffer] in recipe.h).
  static constexpr bool kDirectionPass = kPass == Pass::kUpdate && kAdam && kTrust != Trust::kNone;

  // Which lists this pass reads. It writes the same ones, except: the param only in kUpdate, the grad only in
  // pass 1 of adam (the direction), the filter only when the coefficients say so (c.update_filter).
  C10_HOST_DEVICE static constexpr bool reads(int d) {
    switch (d) {
      case kParamIdx:
      case kGradIdx: return true;
      case kFilterIdx: return kFilter && !kDirectionPass;
      case kExpAvgIdx: return kAdam ? !kDirectionPass : (kBuffer && kPass == Pass::kUpdate);
      case kExpAvgSqIdx: return kAdam && !kDirectionPass;
    }
    return false;
  }
  C10_HOST_DEVICE static constexpr bool writes(int d) {
    switch (d) {
      case kParamIdx: return kPass == Pass::kUpdate;
      case kGradIdx: return kAdam && kPass == Pass::kNorms;
      default: return reads(d);
    }
  }

  // Element ii of the tile: cpu/fused_step.cpp's Kernel::norms (kNorms) and Kernel::update (kUpdate).
  template <int kWidth>
  static __device__ __forceinline__ void element(T (&r)[kDepth][kWidth], int ii, const Coef<T>& c, T& sq_p,
                                                 T& sq_u) {
    const T p = r[kParamIdx][ii];
    if constexpr (kPass == Pass::kNorms) {
      T u = filtered_grad<kFilter>(r[kGradIdx][ii], r[kFilterIdx][ii], c);
      if constexpr (kAdam) {
        u = u + c.wd_coupled * p;
        adam_moments(u, r[kExpAvgIdx][ii], r[kExpAvgSqIdx][ii], c);
        u = adam_direction(r[kExpAvgIdx][ii], r[kExpAvgSqIdx][ii], p, c);
        r[kGradIdx][ii] = u;
      } else if constexpr (kTrust != Trust::kLars) {
        u = u + c.wd_coupled * p;  // LARS takes ||g|| and adds wd*||p|| in the ratio instead
      }
      sq_p = sq_p + p * p;
      sq_u = sq_u + u * u;
    } else if constexpr (kDirectionPass) {
      r[kParamIdx][ii] = adam_update(p, r[kGradIdx][ii], c);
    } else if constexpr (kAdam) {
      const T g = filtered_grad<kFilter>(r[kGradIdx][ii], r[kFilterIdx][ii], c) + c.wd_coupled * p;
      adam_moments(g, r[kExpAvgIdx][ii], r[kExpAvgSqIdx][ii], c);
      r[kParamIdx][ii] = adam_update(p, adam_direction(r[kExpAvgIdx][ii], r[kExpAvgSqIdx][ii], p, c), c);
    } else {
      const T u = filtered_grad<kFilter>(r[kGradIdx][ii], r[kFilterIdx][ii], c) + c.wd_coupled * p;
      r[kParamIdx][ii] = sgd_update<kBuffer, kTrust == Trust::kLars>(p, u, r[kExpAvgIdx][ii], c);
    }
  }

  __device__ __forceinline__ void operator()(const TensorListMetadata<kDepth>& tl, const Coef<T>* coefs,
                                             const DeviceValues found_inf, double* partials) const {
    if (skipped(found_inf)) return;  // uniform over the block: no thread reaches block_sum
    const ChunkInfo ch = chunk_info(tl);
    const Coef<T> c = coefs[ch.tensor];
    scalar_t* ptr[kDepth];
    bool store[kDepth];
    bool aligned = ch.size % kILP == 0;
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      ptr[d] = reads(d) ? static_cast<scalar_t*>(tl.addresses[d][ch.slot]) + ch.offset : nullptr;
      store[d] = writes(d) && (d != kFilterIdx || c.update_filter);
      if (reads(d)) aligned = aligned && is_aligned(ptr[d]);
    }

    T r[kDepth][kILP] = {};
    T sq_p = 0, sq_u = 0;
    if (aligned) {
      for (int64_t v = threadIdx.x; v * kILP < ch.size; v += kBlockSize) {
#pragma unroll
        for (int d = 0; d < kDepth; ++d)
          if (reads(d)) load_vector(r[d], ptr[d], v);
#pragma unroll
        for (int ii = 0; ii < kILP; ++ii) element(r, ii, c, sq_p, sq_u);
#pragma unroll
        for (int d = 0; d < kDepth; ++d)
          if (store[d]) store_vector(ptr[d], v, r[d]);
      }
    } else {
      for (int64_t base = 0; base < ch.size; base += int64_t{kBlockSize} * kILP) {
#pragma unroll
        for (int ii = 0; ii < kILP; ++ii) {
          const int64_t i = base + threadIdx.x + int64_t{ii} * kBlockSize;
          if (i >= ch.size) continue;
#pragma unroll
          for (int d = 0; d < kDepth; ++d)
            if (reads(d)) r[d][ii] = static_cast<T>(ptr[d][i]);
          element(r, ii, c, sq_p, sq_u);
#pragma unroll
          for (int d = 0; d < kDepth; ++d)
            if (store[d]) ptr[d][i] = static_cast<scalar_t>(r[d][ii]);
        }
      }
    }

    if constexpr (kPass == Pass::kNorms) {
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

template <typename scalar_t, bool kFilter, Moment kMoment, bool kBuffer, Trust kTrust>
void run(const StepArgs& a, const std::vector<at::Tensor>& rows, const std::vector<at::Tensor>& low_rows,
         const StepInputs& in, const std::vector<void*>& steps, const DeviceValues& ratios) {
  using T = at::opmath_type<scalar_t>;
  const int64_t n = static_cast<int64_t>(a.params.size());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto options = a.params[0].options();
  const std::vector<int64_t> chunk_begin = chunk_offsets(rows, kDepth);
  const std::vector<TensorGroup> groups = tensor_groups(n, steps, chunk_begin);

  // Coef<T> is trivially copyable; the caching allocator's blocks are aligned far beyond alignof(Coef<T>).
  at::Tensor coef_storage = at::empty({n * static_cast<int64_t>(sizeof(Coef<T>))}, options.dtype(at::kByte));
  Coef<T>* coefs = reinterpret_cast<Coef<T>*>(coef_storage.data_ptr());
  at::Tensor key_storage;  // NOTE: [stochastic rounding]: bf16 state only
  if (a.precision == StatePrecision::kBf16) key_storage = at::empty({n * kStateSlots}, options.dtype(at::kLong));
  uint64_t* keys = key_storage.defined() ? reinterpret_cast<uint64_t*>(key_storage.data_ptr()) : nullptr;
  for (const TensorGroup& g : groups) {
    coef_kernel<T><<<1, kGroupSize, 0, stream>>>(g, in, a.recipe, coefs, a.pass != TrustPass::kNorms,
                                                 static_cast<uint64_t>(a.seed), keys);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  // One pass of the functor Math over every chunk, on the state as it is stored.
  const bool int8 = a.precision == StatePrecision::kInt8;
  auto apply = [&]<typename Math>(double* partials) {
    if (a.precision == StatePrecision::kFull) {
      multi_tensor_apply<kDepth>(rows, Math{}, static_cast<const Coef<T>*>(coefs), in.found_inf, partials);
    } else {
      multi_tensor_apply<kLowDepth>(low_rows, LowPrecisionFunctor<Math>{}, static_cast<const Coef<T>*>(coefs),
                                    in.found_inf, partials, int8, static_cast<const uint64_t*>(keys));
    }
  };

  using Update = FusedStepFunctor<scalar_t, Pass::kUpdate, kFilter, kMoment, kBuffer, kTrust>;
  if constexpr (kTrust == Trust::kNone) {
    apply.template operator()<Update>(nullptr);
  } else {
    // pass 1 does not touch the momentum buffer: one instantiation for both kBuffer values
    // NOTE: [split trust step] in engine/step_args.h: a norms call stops after the finish wrote sq_norms, an
    // update call skips pass 1 and reads them.
    using Norms = FusedStepFunctor<scalar_t, Pass::kNorms, kFilter, kMoment, false, kTrust>;
    at::Tensor partials, sq_given, sq_out;
    if (a.pass != TrustPass::kUpdate) {
      partials = at::empty({2 * chunk_begin[n]}, options.dtype(at::kDouble));
      apply.template operator()<Norms>(partials.data_ptr<double>());
    } else {
      sq_given = a.sq_norms->contiguous();
    }
    if (a.pass == TrustPass::kNorms)
      sq_out = a.sq_norms->is_contiguous() ? *a.sq_norms : at::empty({n, 2}, options.dtype(at::kDouble));
    for (const TensorGroup& g : groups) {
      trust_finish_kernel<T><<<g.count, kFinishThreads, 0, stream>>>(
          g, in, a.recipe, partials.defined() ? partials.data_ptr<double>() : nullptr,
          sq_given.defined() ? sq_given.const_data_ptr<double>() : nullptr,
          sq_out.defined() ? sq_out.data_ptr<double>() : nullptr, coefs, ratios);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (a.pass == TrustPass::kNorms) {
      if (!sq_out.is_same(*a.sq_norms)) a.sq_norms->copy_(sq_out);
      return;
    }
    apply.template operator()<Update>(nullptr);
  }
}


}  // namespace

void fused_step(const StepArgs& a) {
  const int64_t n = static_cast<int64_t>(a.params.size());
  if (n == 0) return;
  const at::Device device = a.params[0].device();
  TORCH_CHECK_VALUE(device.is_cuda(), "fused_step_ (CUDA): params[0] is on ", device);
  const c10::cuda::CUDAGuard guard(device);

  DenseViews dense(a);  // NOTE: [strided tensors]
  const std::vector<at::Tensor>& rows = dense.views;
  // NOTE: [low-precision rows] in low_precision.cuh
  const std::vector<at::Tensor> low_rows =
      a.precision == StatePrecision::kFull ? std::vector<at::Tensor>{} : low_precision_rows(rows, a);
  if (a.precision == StatePrecision::kInt8) upload_quant_maps(device.index(), c10::cuda::getCurrentCUDAStream());

  std::vector<at::Tensor> keep;  // device copies the kernels read (NOTE: [no host sync])
  StepInputs in;
  in.lr = device_values(a.lr, keep);
  in.lr_mult = device_values(a.lr_mult, keep);
  in.weight_decay = device_values(a.weight_decay, keep);
  in.blend = device_values(a.blend, keep);
  in.trust = device_values(a.trust, keep);
  // filter_coef is read only by a recipe with a filter (the op boundary checked its shape either way)
  if (a.recipe.filter != Filter::kNone) in.filter_coef = device_values(a.filter_coef, keep);
  in.grad_scale = device_values(a.grad_scale, keep);
  in.found_inf = device_values(a.found_inf, keep);

  // The kernels advance the step counters in place where they are float tensors of one dtype on the device,
  // the usual case. Otherwise (a step on the host, mixed dtypes) they advance float64 device copies, which
  // are copied back after: the copy to the host then waits for the step.
  const at::ScalarType step_dtype = a.steps[0].scalar_type();
  bool steps_in_place = kind_of(step_dtype).has_value();
  for (const at::Tensor& s : a.steps)
    steps_in_place = steps_in_place && s.device() == device && s.scalar_type() == step_dtype;
  at::Tensor packed_steps;
  std::vector<void*> steps(n);
  if (steps_in_place) {
    for (int64_t t = 0; t < n; ++t) steps[t] = a.steps[t].data_ptr();
    in.step_kind = *kind_of(step_dtype);
  } else {
    std::vector<at::Tensor> values(n);
    for (int64_t t = 0; t < n; ++t) values[t] = a.steps[t].reshape({}).to(device, at::kDouble);
    packed_steps = at::stack(values);
    for (int64_t t = 0; t < n; ++t) steps[t] = static_cast<double*>(packed_steps.data_ptr()) + t;
    in.step_kind = Kind::kDouble;
  }

  const DeviceValues ratios =
      a.trust_ratios ? writable_device_values(*a.trust_ratios, "trust_ratios") : DeviceValues{};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.params[0].scalar_type(), "layerlr_fused_step_cuda", [&] {
    dispatch_recipe(a.recipe, [&]<bool kFilter, Moment kMoment, bool kBuffer, Trust kTrust>() {
      run<scalar_t, kFilter, kMoment, kBuffer, kTrust>(a, rows, low_rows, in, steps, ratios);
    });
  });

  dense.finish();
  if (!steps_in_place && a.pass != TrustPass::kNorms)
    for (int64_t t = 0; t < n; ++t) a.steps[t].copy_(packed_steps[t]);
}

}  // namespace layerlr::cuda

TORCH_LIBRARY_IMPL(layerlr, CUDA, m) {
  m.impl("fused_step_", &layerlr::fused_step_<layerlr::cuda::fused_step>);
  m.impl("fused_step_.split", &layerlr::fused_step_split_<layerlr::cuda::fused_step>);
  m.impl("fused_step_.state", &layerlr::fused_step_state_<layerlr::cuda::fused_step>);
}
