// Small device tensors read and written inside kernels: lr, the steps, the 1-D per-tensor inputs, GradScaler's
// grad_scale and found_inf, the trust ratios out, the DALS detector.
//
// NOTE: [no host sync]
// None of these values is ever read on the host: an .item() (or a blocking copy to the host) would wait for
// every kernel queued before it, and a GradScaler step would stall the stream at every call. The kernels read
// them where they are, in whatever float dtype they come (as the CPU's read_scalar does), so most of them need
// no cast either. A tensor of another dtype (a bool trust mask, an integer loss) is cast to float64 on the
// device first; the cast is queued on the same stream, before the kernels that read it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace layerlr::cuda {

enum class Kind : int32_t { kFloat, kDouble, kHalf, kBFloat16 };

inline std::optional<Kind> kind_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return Kind::kFloat;
    case at::kDouble: return Kind::kDouble;
    case at::kHalf: return Kind::kHalf;
    case at::kBFloat16: return Kind::kBFloat16;
    default: return std::nullopt;
  }
}

__device__ __forceinline__ double load_value(const void* p, Kind kind) {
  switch (kind) {
    case Kind::kFloat: return static_cast<double>(*static_cast<const float*>(p));
    case Kind::kDouble: return *static_cast<const double*>(p);
    case Kind::kHalf: return static_cast<double>(static_cast<float>(*static_cast<const c10::Half*>(p)));
    case Kind::kBFloat16: return static_cast<double>(static_cast<float>(*static_cast<const c10::BFloat16*>(p)));
  }
  return 0.0;
}

__device__ __forceinline__ void store_value(void* p, Kind kind, double value) {
  switch (kind) {
    case Kind::kFloat: *static_cast<float*>(p) = static_cast<float>(value); return;
    case Kind::kDouble: *static_cast<double*>(p) = value; return;
    case Kind::kHalf: *static_cast<c10::Half*>(p) = static_cast<c10::Half>(static_cast<float>(value)); return;
    case Kind::kBFloat16:
      *static_cast<c10::BFloat16*>(p) = static_cast<c10::BFloat16>(static_cast<float>(value));
      return;
  }
}

// A 0-d or 1-D device tensor seen from a kernel: element i at ptr + i*stride (in elements of kind).
struct DeviceValues {
  void* ptr = nullptr;  // nullptr: absent (an optional input that was not given)
  int64_t stride = 0;
  Kind kind = Kind::kDouble;

  C10_HOST_DEVICE bool defined() const { return ptr != nullptr; }

  __device__ __forceinline__ void* address(int64_t i) const {
    const int64_t bytes = kind == Kind::kDouble ? 8 : (kind == Kind::kFloat ? 4 : 2);
    return static_cast<char*>(ptr) + i * stride * bytes;
  }
  __device__ __forceinline__ double operator[](int64_t i) const { return load_value(address(i), kind); }
  __device__ __forceinline__ void store(int64_t i, double value) const { store_value(address(i), kind, value); }
};

// The distance between consecutive elements of a tensor that is a vector in disguise (0-d, 1-D, or one
// dimension longer than 1, e.g. [1, 2]); nullopt for anything else.
inline std::optional<int64_t> vector_stride(const at::Tensor& t) {
  std::optional<int64_t> stride = 0;
  bool found = false;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) <= 1) continue;
    if (found) return std::nullopt;
    found = true;
    stride = t.stride(d);
  }
  return stride;
}

// Read-only view of t (on the device the kernels run on). Copies it (to float64, or to a contiguous vector)
// where the kernels could not read it as it is; the copy is appended to keep, which must outlive the launches.
inline DeviceValues device_values(const at::Tensor& t, std::vector<at::Tensor>& keep) {
  at::Tensor x = t;
  if (!kind_of(x.scalar_type())) x = x.to(at::kDouble);
  if (!vector_stride(x)) x = x.contiguous().view({-1});
  if (!x.is_same(t)) keep.push_back(x);
  return {x.data_ptr(), *vector_stride(x), *kind_of(x.scalar_type())};
}

inline DeviceValues device_values(const std::optional<at::Tensor>& t, std::vector<at::Tensor>& keep) {
  return t ? device_values(*t, keep) : DeviceValues{};
}

// Writable view of t: the kernels store into t itself, so it must be a float vector already.
inline DeviceValues writable_device_values(const at::Tensor& t, const char* name) {
  const std::optional<Kind> kind = kind_of(t.scalar_type());
  const std::optional<int64_t> stride = vector_stride(t);
  TORCH_CHECK_TYPE(kind.has_value(), name, " has dtype ", t.scalar_type(),
                   ": the CUDA kernels write float32, float64, float16 or bfloat16 values");
  TORCH_CHECK_VALUE(stride.has_value(), name, " must be a vector, got shape ", t.sizes());
  return {t.data_ptr(), *stride, *kind};
}

}  // namespace layerlr::cuda
