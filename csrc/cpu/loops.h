// Shared pieces of the CPU loops: chunking, threading, vector I/O, small-tensor scalar access.
// NOTE: [chunking territory, CPU]
// Every tensor is cut into chunks of kChunk elements; work is spread over threads by chunk, balanced by
// element count. Pass 1 of a two-pass recipe writes one pair of squared-norm partials per chunk and the
// per-tensor finish adds them in chunk order, so norms (and therefore results) do not depend on the number
// of threads: runs are bitwise reproducible.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace layerlr::cpu {

constexpr int64_t kChunk = 16384;
constexpr int64_t kMinElementsPerTask = 32768;

// Load/store between scalar_t memory and the math type V (opmath scalar or Vectorized<opmath>).
template <typename scalar_t, typename V>
struct IO {
  static V load(const scalar_t* p) { return static_cast<V>(*p); }
  static void store(scalar_t* p, V x) { *p = static_cast<scalar_t>(x); }
};

template <typename scalar_t, typename T>
struct IO<scalar_t, at::vec::Vectorized<T>> {
  using Vec = at::vec::Vectorized<T>;
  static Vec load(const scalar_t* p) {
    if constexpr (std::is_same_v<scalar_t, T>) {
      return Vec::loadu(p);
    } else {
      __at_align__ T tmp[Vec::size()];
      for (int k = 0; k < Vec::size(); ++k) tmp[k] = static_cast<T>(p[k]);
      return Vec::loadu(tmp);
    }
  }
  static void store(scalar_t* p, Vec x) {
    if constexpr (std::is_same_v<scalar_t, T>) {
      x.store(p);
    } else {
      __at_align__ T tmp[Vec::size()];
      x.store(tmp);
      for (int k = 0; k < Vec::size(); ++k) p[k] = static_cast<scalar_t>(tmp[k]);
    }
  }
};

template <typename T>
T lane_sum(T x) {
  return x;
}
template <typename T>
T lane_sum(const at::vec::Vectorized<T>& x) {
  __at_align__ T tmp[at::vec::Vectorized<T>::size()];
  x.store(tmp);
  T s = 0;
  for (int k = 0; k < at::vec::Vectorized<T>::size(); ++k) s += tmp[k];
  return s;
}

struct Chunk {
  int64_t tensor, begin, end;
};

// Runs fn(chunk, chunk index) over chunks [first, last) on the intra-op pool, in tasks of about equal element
// counts (`elements` is their total).
template <typename Fn>
void for_each_chunk(const std::vector<Chunk>& chunks, size_t first, size_t last, int64_t elements, const Fn& fn) {
  const int64_t tasks = std::max<int64_t>(
      1, std::min<int64_t>(4 * at::get_num_threads(), elements / kMinElementsPerTask));
  std::vector<size_t> bounds{first};
  int64_t seen = 0;
  for (size_t k = first; k < last; ++k) {
    seen += chunks[k].end - chunks[k].begin;
    if (seen * tasks >= elements * static_cast<int64_t>(bounds.size()) && k + 1 < last) bounds.push_back(k + 1);
  }
  bounds.push_back(last);
  at::parallel_for(0, static_cast<int64_t>(bounds.size()) - 1, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      for (size_t k = bounds[t]; k < bounds[t + 1]; ++k) fn(chunks[k], static_cast<int64_t>(k));
  });
}

// Element i of a small (0-d or 1-D) CPU tensor, read and written without a dispatcher call: these run once
// per tensor per step, where an .item() each would cost more than a small tensor's update.
inline int64_t offset_of(const at::Tensor& t, int64_t i) {
  return t.dim() == 0 ? 0 : i * t.stride(0);
}

inline double read_scalar(const at::Tensor& t, int64_t i = 0) {
  double out = 0;
  AT_DISPATCH_ALL_TYPES_AND3(at::kBool, at::kBFloat16, at::kHalf, t.scalar_type(), "layerlr_read_scalar", [&] {
    out = static_cast<double>(t.const_data_ptr<scalar_t>()[offset_of(t, i)]);
  });
  return out;
}

inline void write_scalar(const at::Tensor& t, int64_t i, double value) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, t.scalar_type(), "layerlr_write_scalar", [&] {
    t.mutable_data_ptr<scalar_t>()[offset_of(t, i)] = static_cast<scalar_t>(value);
  });
}

}  // namespace layerlr::cpu
